//! Subcommands other than training.

pub mod bench;
pub mod bench_ff;
pub mod bench_rnn;
pub mod bench_rows;
pub mod devices;

use anyhow::Context;
use dni_kernels::{BackendChoice, Gpu, GpuOptions};

use crate::config::Backend;

/// Maps the CLI/config backend onto the kernel library's choice.
pub fn backend_choice(b: Backend) -> BackendChoice {
    match b {
        Backend::Auto => BackendChoice::Auto,
        Backend::Vulkan => BackendChoice::Vulkan,
        Backend::Metal => BackendChoice::Metal,
        Backend::Dx12 => BackendChoice::Dx12,
        Backend::Gl => BackendChoice::Gl,
    }
}

/// Opens the GPU for a command, with the adapter named in the error when it fails.
pub fn open_gpu(b: Backend) -> anyhow::Result<Gpu> {
    Gpu::new(&GpuOptions {
        backend: backend_choice(b),
        ..Default::default()
    })
    .with_context(|| format!("opening a GPU (backend {b:?})"))
}
