//! `dni-train devices`: every adapter wgpu can see, and the one dni would pick.

use crate::config::Backend;

pub fn run(backend: Backend) -> anyhow::Result<()> {
    super::check_choice(backend)?;
    let choice = backend;
    let adapters = dni_kernels::list_adapters(choice);
    if adapters.is_empty() {
        return Err(super::no_adapter(
            backend,
            format!(" for backend {backend:?}"),
        ));
    }
    println!("adapters ({backend:?}):");
    for (i, a) in adapters.iter().enumerate() {
        println!("  [{i}] {a}");
    }
    let gpu = super::open_gpu(backend)?;
    println!("selected: {}", gpu.adapter());
    println!("  (WGPU_BACKEND and WGPU_ADAPTER_NAME, or --backend, change the choice)");
    Ok(())
}
