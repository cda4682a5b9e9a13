//! Subcommands other than training.

/// `dni-train devices`: list the GPU adapters wgpu can see.
pub mod devices {
    use crate::config::Backend;

    pub fn run(backend: Backend) -> anyhow::Result<()> {
        anyhow::bail!("`dni-train devices` (backend {backend:?}) is not yet built")
    }
}

/// `dni-train bench`: kernel and step timings.
pub mod bench {
    use crate::config::Backend;

    pub fn run(backend: Backend) -> anyhow::Result<()> {
        anyhow::bail!("`dni-train bench` (backend {backend:?}) is not yet built")
    }
}
