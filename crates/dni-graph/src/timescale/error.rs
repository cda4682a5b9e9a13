//! Errors of the two-timescale system: a bad configuration, badly sized host data, or a GPU failure.

/// What [`TwoTimescale`](super::TwoTimescale) and [`DigitStream`](super::DigitStream) can fail with.
#[derive(Debug, thiserror::Error)]
pub enum TimescaleError {
    /// A configuration value that cannot work; names the field and why.
    #[error("two-timescale config: {field} = {value}: {reason}")]
    Config {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    /// Host data handed to a step did not match the configured shapes.
    #[error("{what}: expected {expected} values, got {got}")]
    Input {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A target outside its classes (A: `0..=T`, B: `0..=T²`).
    #[error("{what}: target {value} is outside 0..={max}")]
    Target {
        what: &'static str,
        value: u32,
        max: usize,
    },
    /// A checkpoint that does not fit this system (a missing, extra or differently sized buffer).
    #[error("two-timescale checkpoint: {0}")]
    Checkpoint(String),
    #[error(transparent)]
    Data(#[from] dni_tasks::DataError),
    #[error(transparent)]
    Gpu(#[from] dni_kernels::Error),
}

pub type Result<T, E = TimescaleError> = std::result::Result<T, E>;

pub(crate) fn config_err<T>(
    field: &'static str,
    value: impl std::fmt::Display,
    reason: &'static str,
) -> Result<T> {
    Err(TimescaleError::Config {
        field,
        value: value.to_string(),
        reason,
    })
}
