//! Errors of feed-forward training: a bad specification, bad host data, a stalled or failed
//! worker, or a GPU error.

/// What building or training an [`FfNet`](super::FfNet) can fail with.
#[derive(Debug, thiserror::Error)]
pub enum FfError {
    /// A specification value that cannot work; names the field and why.
    #[error("feed-forward spec: {field} = {value}: {reason}")]
    Config {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    /// Tensors or host data of the wrong size.
    #[error("{op}: {detail}")]
    Shape { op: &'static str, detail: String },
    /// A worker waited this long for a message that never came: a scheduler bug, not a user error.
    #[error("block {block} stalled for {secs} s waiting for {what}")]
    Stalled {
        block: usize,
        what: &'static str,
        secs: u64,
    },
    /// Another worker failed first; this one stopped.
    #[error("stopped because another worker failed")]
    Aborted,
    /// A broken scheduler invariant (reported, never a panic).
    #[error("internal scheduler error: {0}")]
    Internal(String),
    /// A checkpoint that does not fit this network (a missing, extra or differently sized buffer).
    #[error("feed-forward checkpoint: {0}")]
    Checkpoint(String),
    #[error(transparent)]
    Gpu(#[from] dni_kernels::Error),
}

pub type Result<T, E = FfError> = std::result::Result<T, E>;

impl FfError {
    pub(crate) fn config(
        field: &'static str,
        value: impl std::fmt::Display,
        reason: &'static str,
    ) -> Self {
        FfError::Config {
            field,
            value: value.to_string(),
            reason,
        }
    }

    pub(crate) fn shape(op: &'static str, detail: String) -> Self {
        FfError::Shape { op, detail }
    }
}
