//! Subcommands other than training.

pub mod bench;
pub mod bench_ff;
pub mod bench_rnn;
pub mod bench_rows;
pub mod devices;

use anyhow::Context;
use dni_kernels::{Gpu, GpuOptions};

use crate::config::Backend;

/// Opens the GPU for a command, with the adapter named in the error when it fails. When the
/// backend was chosen by `--backend` / `run.backend` or by `WGPU_BACKEND`, the error names that
/// choice instead of advising a driver install.
pub fn open_gpu(b: Backend) -> anyhow::Result<Gpu> {
    check_choice(b)?;
    match Gpu::new(&GpuOptions {
        backend: b,
        ..Default::default()
    }) {
        Ok(gpu) => Ok(gpu),
        Err(dni_kernels::Error::NoAdapter(d)) => Err(no_adapter(b, d)),
        Err(e) => Err(e).with_context(|| format!("opening a GPU (backend {b:?})")),
    }
}

fn env_backend() -> Option<String> {
    std::env::var("WGPU_BACKEND")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// Refuses a `WGPU_BACKEND` wgpu does not know and a backend that cannot exist on this OS.
pub fn check_choice(b: Backend) -> anyhow::Result<()> {
    if let (Backend::Auto, Some(v)) = (b, env_backend()) {
        if let Some(bad) = unknown_backend_names(&v) {
            anyhow::bail!(
                "WGPU_BACKEND={v:?}: {bad:?} is not a wgpu backend (vulkan, metal, dx12, gl); \
                 fix or unset the variable"
            );
        }
    }
    if let Some(os) = unavailable_here(b) {
        anyhow::bail!(
            "--backend / run.backend = {}: that backend does not exist on {os}; use vulkan, gl \
             or auto (`dni-train devices` lists the adapters)",
            format!("{b:?}").to_lowercase()
        );
    }
    Ok(())
}

/// No adapter: name the choice that made it so (`WGPU_BACKEND`, `--backend`), else the library's
/// advice (install a driver).
pub fn no_adapter(b: Backend, detail: String) -> anyhow::Error {
    match (b, env_backend()) {
        (Backend::Auto, Some(v)) => anyhow::anyhow!(
            "no GPU adapter for WGPU_BACKEND={v:?} (set in the environment); unset it to try \
             every backend"
        ),
        (Backend::Auto, None) => dni_kernels::Error::NoAdapter(detail).into(),
        (b, _) => anyhow::anyhow!(
            "no GPU adapter for --backend / run.backend = {}; try --backend auto",
            format!("{b:?}").to_lowercase()
        ),
    }
}

/// The first name in a `WGPU_BACKEND` list that wgpu does not know.
fn unknown_backend_names(v: &str) -> Option<String> {
    const KNOWN: [&str; 11] = [
        "vulkan", "vk", "dx12", "d3d12", "metal", "mtl", "opengl", "gles", "gl", "webgpu", "noop",
    ];
    v.split(',')
        .map(|s| s.trim().to_lowercase())
        .find(|s| !KNOWN.contains(&s.as_str()))
}

/// The operating system, when backend `b` cannot exist on it.
fn unavailable_here(b: Backend) -> Option<&'static str> {
    let os = std::env::consts::OS;
    match b {
        Backend::Metal if !matches!(os, "macos" | "ios") => Some(os),
        Backend::Dx12 if os != "windows" => Some(os),
        _ => None,
    }
}
