//! What a two-timescale system is: the two LSTMs' sizes, the window length `T`, the training method
//! and the optimisers.

use dni_kernels::ops::optim::OptimConfig;

use crate::error::Result;

/// How the A→B connection is trained. All three run the same forward; they differ in when A updates
/// and what gradient its message receives.
///
/// Written in configs as `e2e`, `dni`, `nodni` (the `serde` feature; [`Method::name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Method {
    /// One graph unrolled `T²` steps: A (one BPTT window of `T²` steps) and B (`T` ticks) update
    /// together once per block, and B's true gradient for each message flows back into A.
    #[cfg_attr(feature = "serde", serde(rename = "e2e"))]
    EndToEnd,
    /// A updates every `T` steps with a synthetic gradient `M(message)` for its message; B's true
    /// message gradients train `M` when B updates, every `T²` steps.
    #[cfg_attr(feature = "serde", serde(rename = "dni"))]
    Dni,
    /// Decoupled without DNI: A updates every `T` steps on its own task only (the message gets no
    /// gradient); B trains on the messages as they come.
    #[cfg_attr(feature = "serde", serde(rename = "nodni"))]
    NoDni,
}

impl Method {
    /// The name used in configs, logs and file names: `e2e`, `dni`, `nodni`.
    pub fn name(self) -> &'static str {
        match self {
            Method::EndToEnd => "e2e",
            Method::Dni => "dni",
            Method::NoDni => "nodni",
        }
    }

    /// The method called `name` (see [`Method::name`]).
    pub fn from_name(name: &str) -> Option<Method> {
        [Method::EndToEnd, Method::Dni, Method::NoDni]
            .into_iter()
            .find(|m| m.name() == name)
    }

    /// Whether A is one window of `T²` steps updated once per block (update-locked to B).
    pub fn locked(self) -> bool {
        self == Method::EndToEnd
    }
}

/// Everything that fixes a [`TwoTimescale`](super::TwoTimescale). The task is the caller's: A's
/// inputs, and how many answers A and B choose between (the paper's digit task is
/// [`TimescaleConfig::digit_counts`]).
#[derive(Clone, Debug)]
pub struct TimescaleConfig {
    /// A's window: A answers every `T` steps, B ticks every `T` steps and answers every `T` ticks.
    pub t: usize,
    /// Input features per step of A (784 pixels + 1 window-start flag for the MNIST stream).
    pub input: usize,
    /// Classes of A's answer at the end of each of its windows (softmax; at least 2).
    pub classes_a: usize,
    /// Classes of B's answer at the end of each block (softmax; at least 2). A conditioned SG reads
    /// this answer one-hot.
    pub classes_b: usize,
    /// LSTM units of A; A's message to B is its hidden state, so B reads `hidden_a + 1` features.
    pub hidden_a: usize,
    /// LSTM units of B.
    pub hidden_b: usize,
    /// Parallel streams (lanes).
    pub batch: usize,
    pub method: Method,
    /// Optimiser of A and of B (each has its own instance and step count).
    pub optim: OptimConfig,
    /// Optimiser of the synthetic-gradient model (DNI only).
    pub sg_optim: OptimConfig,
    /// Factor on the synthetic gradient when it is injected into A (1 = B's own units).
    pub sg_scale: f32,
    /// The SG also reads B's answer for the block (the count of threes, one-hot): `M(m, y)`, as cDNI
    /// conditions on the label (DNI only). The answer covers the whole block, so the SG that A gets
    /// in a window knows the threes of windows A has not yet read.
    pub sg_conditioned: bool,
    /// Width of the SG model's hidden ReLU layer; 0 (the default) for the paper's linear model.
    pub sg_hidden: usize,
    /// Seed of the initial weights.
    pub seed: u64,
}

impl TimescaleConfig {
    /// The answers' class counts of the paper's digit task at window length `t`:
    /// `(classes_a, classes_b)` = `(T + 1, T² + 1)`, for `0..=T` odd digits in a window of A and
    /// `0..=T²` threes in a block. Saturating: a `t` too large to square fails validation instead.
    pub fn digit_counts(t: usize) -> (usize, usize) {
        (t.saturating_add(1), t.saturating_mul(t).saturating_add(1))
    }

    /// Steps of one block, the unit of [`TwoTimescale::train_block`](super::TwoTimescale::train_block):
    /// `T²` (T windows of A, T ticks of B).
    pub fn block_steps(&self) -> usize {
        self.t * self.t
    }

    /// The first of [`problems`](Self::problems), as an error.
    pub fn validate(&self) -> Result<()> {
        crate::error::first_problem(self.problems())
    }

    /// The limits this config breaks, each an [`Error::Config`](crate::Error::Config) naming its
    /// field (`T`, `hidden_a`, `sg_optim`, ...).
    pub fn problems(&self) -> Vec<crate::Error> {
        let mut out = Vec::new();
        let mut bad = |field, value: &dyn std::fmt::Display, reason| {
            out.push(crate::Error::config(field, value, reason))
        };
        if self.t < 2 {
            bad("T", &self.t, "must be at least 2 (B ticks every T steps)");
        }
        for (field, v) in [
            ("input", self.input),
            ("hidden_a", self.hidden_a),
            ("hidden_b", self.hidden_b),
            ("batch", self.batch),
        ] {
            if v == 0 {
                bad(field, &v, "must be at least 1");
            }
        }
        // A block's inputs and activations, `T²·B` rows of up to `max(input, H_A + 1, H_B)`: sizes
        // whose products overflow are refused here, before any buffer is sized from them.
        let widest = self
            .input
            .max(self.hidden_a.saturating_add(1))
            .max(self.hidden_b);
        let block = [self.t, self.batch, widest]
            .iter()
            .try_fold(self.t, |acc, &x| acc.checked_mul(x));
        if block.is_none() {
            bad(
                "T",
                &self.t,
                "T²·batch·max(input, hidden_a + 1, hidden_b) overflows the address space",
            );
        }
        for (field, v) in [("classes_a", self.classes_a), ("classes_b", self.classes_b)] {
            if v < 2 {
                bad(field, &v, "a softmax answer needs at least 2 classes");
            }
        }
        if !(self.sg_scale.is_finite() && self.sg_scale >= 0.0) {
            bad("sg_scale", &self.sg_scale, "must be a number >= 0");
        }
        if self.sg_conditioned && self.method != super::Method::Dni {
            bad(
                "sg_conditioned",
                &true,
                "conditions the synthetic gradient, which only method dni has (remove it, or use \
                 method dni)",
            );
        }
        for (field, o) in [("optim", self.optim), ("sg_optim", self.sg_optim)] {
            let lr = o.lr();
            if !(lr.is_finite() && lr > 0.0) {
                bad(field, &lr, "the learning rate must be > 0");
            }
        }
        out.extend(
            crate::sg::SgConfig {
                hidden: self.sg_hidden,
                ..Default::default()
            }
            .problems(),
        );
        out
    }
}
