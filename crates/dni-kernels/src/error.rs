//! The one error type of the kernel library.

/// Everything the GPU runtime and the kernel launchers can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter matched: the usual cause is a machine without a GPU driver.
    #[error(
        "no GPU adapter found{0}. On Linux without a GPU install Mesa's lavapipe \
         (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers`, or run scripts/install-lavapipe.sh); \
         `dni-train devices` lists what wgpu can see"
    )]
    NoAdapter(String),
    /// The adapter refused to open a device.
    #[error("could not open a device on adapter '{adapter}': {source}")]
    RequestDevice {
        adapter: String,
        #[source]
        source: wgpu::RequestDeviceError,
    },
    /// A backend name that is not one of ours.
    #[error("unknown backend '{0}': expected auto, vulkan, metal, dx12 or gl")]
    UnknownBackend(String),
    /// A launcher was handed tensors whose shapes do not fit the kernel.
    #[error("shape mismatch in {op}: {detail}")]
    Shape { op: &'static str, detail: String },
    /// A WGSL module failed to compile or a pipeline failed validation.
    #[error("shader '{kernel}' entry '{entry}' failed to compile: {message}")]
    Shader {
        kernel: &'static str,
        entry: String,
        message: String,
    },
    /// wgpu reported a validation error while recording or submitting work.
    #[error("GPU validation error: {0}")]
    Validation(String),
    /// The device ran out of memory.
    #[error("GPU out of memory: {0}")]
    OutOfMemory(String),
    /// The device was lost (driver reset, hang, or the process is shutting down).
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
    /// Mapping a staging buffer for read-back failed.
    #[error("reading back from the GPU failed: {0}")]
    ReadBack(String),
    /// An argument outside its valid range (a learning rate that is not finite, beta >= 1, ...).
    #[error("invalid argument to {op}: {detail}")]
    InvalidArgument { op: &'static str, detail: String },
    /// A tensor would exceed what one storage binding may hold on this adapter.
    #[error("tensor of {bytes} bytes exceeds this adapter's max storage binding of {limit} bytes")]
    TooLarge { bytes: u64, limit: u64 },
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand for a shape error.
pub(crate) fn shape_err<T>(op: &'static str, detail: impl Into<String>) -> Result<T> {
    Err(Error::Shape {
        op,
        detail: detail.into(),
    })
}

/// A kernel may not read and write the same buffer in one dispatch (WGSL storage bindings cannot
/// alias); say so at record time instead of leaving wgpu to fail later.
pub(crate) fn no_alias(
    op: &'static str,
    reads: &[&crate::tensor::Tensor],
    writes: &[&crate::tensor::Tensor],
) -> Result<()> {
    for (i, w) in writes.iter().enumerate() {
        let others = reads.iter().chain(writes.iter().skip(i + 1));
        if others.into_iter().any(|t| t.id() == w.id()) {
            return shape_err(
                op,
                format!("written tensor {w:?} is also bound as another operand"),
            );
        }
    }
    Ok(())
}
