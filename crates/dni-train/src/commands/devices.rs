//! `dni-train devices`: every adapter wgpu can see, and the one dni would pick.

use crate::config::Backend;

pub fn run(backend: Backend) -> anyhow::Result<()> {
    let choice = super::backend_choice(backend);
    let adapters = dni_kernels::list_adapters(choice);
    if adapters.is_empty() {
        // Same wording as the library error, so the fix is printed.
        return Err(dni_kernels::Error::NoAdapter(format!(" for backend {backend:?}")).into());
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
