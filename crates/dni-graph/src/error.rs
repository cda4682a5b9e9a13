//! The crate's one error type: a bad configuration, badly sized input, a stalled or failed worker, a
//! checkpoint that does not fit, or a GPU failure — whichever trainer (feed-forward, recurrent,
//! two-timescale) raised it.

/// What building or training any of the crate's models can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value that cannot work; names the field and why.
    #[error("config: {field} = {value}: {reason}")]
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
    /// Tensors of the wrong size for an operation.
    #[error("{op}: {detail}")]
    Shape { op: &'static str, detail: String },
    /// A layer of the user's own ([`crate::layers::CustomLayer`]) that cannot be built or run as
    /// asked; `layer` is its `Debug` form.
    #[error("layer {layer}: {why}")]
    Layer { layer: String, why: String },
    /// A token id outside the vocabulary.
    #[error("{what}: token id {id} is outside the vocabulary of {vocab}")]
    Token {
        what: &'static str,
        id: u32,
        vocab: usize,
    },
    /// A two-timescale target outside its classes (A: `0..=T`, B: `0..=T²`).
    #[error("{what}: target {value} is outside 0..={max}")]
    Target {
        what: &'static str,
        value: u32,
        max: usize,
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
    /// A checkpoint that does not fit this model (a missing, extra or differently sized buffer, or
    /// another engine or run count).
    #[error("checkpoint: {0}")]
    Checkpoint(String),
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
    #[error(transparent)]
    Data(#[from] dni_tasks::DataError),
    #[error(transparent)]
    Gpu(#[from] dni_kernels::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The field a [`Error::Config`] names (`hidden`, `sg_lr`, ...); `None` for other errors.
    pub fn config_field(&self) -> Option<&'static str> {
        match self {
            Error::Config { field, .. } => Some(field),
            _ => None,
        }
    }

    pub(crate) fn config(
        field: &'static str,
        value: impl std::fmt::Display,
        reason: &'static str,
    ) -> Self {
        Error::Config {
            field,
            value: value.to_string(),
            reason,
        }
    }

    pub(crate) fn shape(op: &'static str, detail: String) -> Self {
        Error::Shape { op, detail }
    }
}

/// The first of a config's problems as an error (`validate()` beside `problems()`).
pub(crate) fn first_problem(problems: Vec<Error>) -> Result<()> {
    match problems.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A config's problems as the settings that set its fields name them: those `keep` accepts, each
/// field renamed by `key`, and the first of each run naming the same key only (several blocks or
/// networks that share one setting break it together; say it once).
pub(crate) fn by_key(
    problems: Vec<Error>,
    keep: impl Fn(&Error) -> bool,
    key: impl Fn(&'static str) -> &'static str,
) -> Vec<Error> {
    let mut out: Vec<Error> = problems
        .into_iter()
        .filter(|p| keep(p))
        .map(|p| match p {
            Error::Config {
                field,
                value,
                reason,
            } => Error::Config {
                field: key(field),
                value,
                reason,
            },
            other => other,
        })
        .collect();
    out.dedup_by(|a, b| a.config_field().is_some() && a.config_field() == b.config_field());
    out
}

/// The rules every trained settings section shares, by key: a step budget of at least 1, a
/// learning rate above 0, SGD momentum in `[0, 1)` (1 never forgets a gradient), and the SG
/// model's own rate, when set, above 0.
pub(crate) fn training_problems(
    steps: u64,
    lr: f64,
    momentum: f64,
    sg_lr: Option<f64>,
) -> Vec<Error> {
    let mut out = Vec::new();
    if steps == 0 {
        out.push(Error::config("steps", steps, "steps must be at least 1"));
    }
    if !(lr.is_finite() && lr > 0.0) {
        out.push(Error::config("lr", lr, "the learning rate must be > 0"));
    }
    if !(0.0..1.0).contains(&momentum) {
        out.push(Error::config("momentum", momentum, "must be in [0, 1)"));
    }
    if let Some(lr) = sg_lr.filter(|lr| !(lr.is_finite() && *lr > 0.0)) {
        out.push(Error::config(
            "sg_lr",
            lr,
            "the SG model's learning rate must be > 0 (remove it for the default, lr)",
        ));
    }
    out
}

/// More floats than any GPU buffer holds: wgpu binds at most `u32::MAX` bytes (2^30 floats) of
/// storage on any adapter, and 2^32 is far below where `usize` products could wrap.
pub(crate) const MAX_BUFFER_FLOATS: usize = 1 << 32;

/// The sizes no adapter could hold, by key, before anything is allocated: each width key's
/// `8·w²` floats of weights (an LSTM's `[w + w, 4w]`, or the widest pair of layers), and the
/// `T·batch·max(input, widths)·8` floats of a window's activations (`t` is 1 for feed-forward
/// nets), blamed on `batch`. Each adapter's own, smaller limit is checked when the model is
/// built (`check_fits`).
pub(crate) fn size_problems(
    widths: &[(&'static str, usize)],
    input: usize,
    batch: usize,
    t: usize,
) -> Vec<Error> {
    let fits = |n: Option<usize>| n.filter(|&n| n <= MAX_BUFFER_FLOATS);
    let floats = |n: Option<usize>| n.map_or("more than 2^64".to_string(), |n| n.to_string());
    let mut widest = input;
    for &(key, w) in widths {
        let weights = w.checked_mul(w).and_then(|x| x.checked_mul(8));
        if fits(weights).is_none() {
            return vec![Error::config(
                key,
                format!("{w} (8·{key}² = {} floats of weights)", floats(weights)),
                "more than any GPU buffer holds (2^32 floats); make the model smaller",
            )];
        }
        widest = widest.max(w);
    }
    let acts = [t, batch, widest, 8]
        .iter()
        .try_fold(1usize, |acc, &x| acc.checked_mul(x));
    if fits(acts).is_none() {
        let with_t = if t > 1 {
            format!(" with T = {t}")
        } else {
            String::new()
        };
        return vec![Error::config(
            "batch",
            format!(
                "{batch}{with_t} (T·batch·{widest}·8 = {} floats of activations)",
                floats(acts)
            ),
            "more than any GPU buffer holds (2^32 floats); make the batch smaller",
        )];
    }
    Vec::new()
}

pub(crate) fn config_err<T>(
    field: &'static str,
    value: impl std::fmt::Display,
    reason: &'static str,
) -> Result<T> {
    Err(Error::config(field, value, reason))
}

/// Host data of the wrong length for the configured shapes.
pub(crate) fn check_len(what: &'static str, got: usize, expected: usize) -> Result<()> {
    if got != expected {
        return Err(Error::Input {
            what,
            expected,
            got,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_no_adapter_holds_name_their_key() {
        let field = |p: Vec<Error>| p.iter().map(|e| e.config_field()).collect::<Vec<_>>();
        // The committed configs' sizes pass.
        assert!(size_problems(&[("hidden", 256), ("sg_hidden", 1024)], 784, 256, 1).is_empty());
        assert!(size_problems(&[("hidden", 64)], 10, 16, 5).is_empty());
        // 8·w² past 2^32, or wrapping: the width's key, the first one only.
        for w in [23_171, usize::MAX / 2] {
            let p = size_problems(&[("hidden", 8), ("sg_hidden", w)], 784, 2, 1);
            assert_eq!(field(p), [Some("sg_hidden")], "{w}");
        }
        assert_eq!(field(size_problems(&[("hidden", 23_170)], 1, 1, 1)), []);
        // Activations past 2^32 or wrapping: `batch`, with T in its value.
        let p = size_problems(&[("hidden", 64)], 784, 1 << 20, 1000);
        assert_eq!(field(p), [Some("batch")]);
        let p = size_problems(&[("hidden", 64)], 784, 16, usize::MAX / 4);
        assert!(p[0].to_string().contains("with T = "), "{}", p[0]);
    }
}
