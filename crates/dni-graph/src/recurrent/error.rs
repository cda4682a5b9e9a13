//! Errors of the recurrent trainer: a bad configuration, badly sized input, or a GPU failure.

/// What [`RecurrentTrainer`](super::RecurrentTrainer) can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RecurrentError {
    /// A configuration value that cannot work; names the field and why.
    #[error("recurrent config: {field} = {value}: {reason}")]
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
    /// A token id outside the vocabulary.
    #[error("{what}: token id {id} is outside the vocabulary of {vocab}")]
    Token {
        what: &'static str,
        id: u32,
        vocab: usize,
    },
    /// The operation needs the other output kind (e.g. token input on a sigmoid model).
    #[error("{0}")]
    Mode(&'static str),
    /// Runs that cannot share a run group, or a group that cannot be built.
    #[error("run group: {0}")]
    Group(String),
    /// A run index outside the group.
    #[error("run {run} does not exist: the group has {runs} runs")]
    Run { run: usize, runs: usize },
    /// A parameter name the model does not have.
    #[error("no parameter named '{0}' (see param_names)")]
    UnknownParam(String),
    /// A checkpoint that does not fit this group (other shapes, engine or run count).
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error(transparent)]
    Gpu(#[from] dni_kernels::Error),
}

pub type Result<T, E = RecurrentError> = std::result::Result<T, E>;

/// Host data of the wrong length for the configured shapes.
pub(crate) fn check_len(what: &'static str, got: usize, expected: usize) -> Result<()> {
    if got != expected {
        return Err(RecurrentError::Input {
            what,
            expected,
            got,
        });
    }
    Ok(())
}

/// Writes token `ids` as one-hot rows of width `vocab` into `out` (zeroed first; at least
/// `ids.len() · vocab` long); an id outside the vocabulary is an error naming `what`.
pub(crate) fn one_hot(
    what: &'static str,
    ids: &[u32],
    vocab: usize,
    out: &mut [f32],
) -> Result<()> {
    out.fill(0.0);
    for (row, &id) in ids.iter().enumerate() {
        if id as usize >= vocab {
            return Err(RecurrentError::Token { what, id, vocab });
        }
        out[row * vocab + id as usize] = 1.0;
    }
    Ok(())
}

/// An evaluation window may hold at most T real steps.
pub(crate) fn check_eval_steps(steps: usize, t: usize) -> Result<()> {
    if steps > t {
        return Err(RecurrentError::Input {
            what: "evaluation window steps",
            expected: t,
            got: steps,
        });
    }
    Ok(())
}

pub(crate) fn config_err<T>(
    field: &'static str,
    value: impl std::fmt::Display,
    reason: &'static str,
) -> Result<T> {
    Err(RecurrentError::Config {
        field,
        value: value.to_string(),
        reason,
    })
}
