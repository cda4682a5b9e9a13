//! What a recurrent trainer is: sizes, output loss, training method and optimiser.

use dni_kernels::ops::optim::OptimConfig;

use super::error::{config_err, Result};
use crate::error::first_problem;
use crate::sg::SgConfig;

/// How the readout is scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputLoss {
    /// Independent bits (Copy / Repeat Copy): sigmoid cross-entropy under a mask; the error metric is
    /// wrong bits per scored row ("bits per output character").
    SigmoidBits,
    /// One class per step (character-level LM): softmax cross-entropy; targets are token ids and the
    /// metric is bits per character.
    Softmax,
}

/// The training algorithm. All three run the same code path; they differ only in what is injected at
/// the window's end and which extra heads exist.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// Truncated BPTT: the gradient arriving at the window's last state is taken to be 0.
    Bptt,
    /// A synthetic gradient `sg_scale · M(s_last)` is injected at the window's last state; `M` is
    /// trained on the bootstrapped gradient that reaches the next window's first state.
    Dni { sg_scale: f32 },
    /// DNI plus the auxiliary task: a linear head `A` predicts a synthetic gradient of the future
    /// from the core's hidden state; its L2 loss × `aux_weight` trains the core (and `A`).
    /// `every_step = false`: from `h_1` only, whose target `M(s_last)` (`T − 1` steps later) the
    /// window itself produces. `every_step = true` (the paper's Fig. 2b): from every `h_t` of the
    /// window onto `M(s_{t+T})`, exactly `T` steps later; those states lie in the next window, so
    /// the trainer runs the next window's inputs forward from `s_last` with the same weights to
    /// read them (`BitWindow::next_inputs`; per-step kernels, bit-vector tasks). The loss is
    /// averaged over the window's `T` steps, so that `aux_weight` gives a window's aux task the
    /// same total weight either way.
    DniAux {
        sg_scale: f32,
        aux_weight: f32,
        every_step: bool,
    },
}

impl Method {
    /// The paper's DNI (SG scaled by 0.1 when injected).
    pub fn dni() -> Self {
        Method::Dni { sg_scale: 0.1 }
    }

    /// The paper's DNI + Aux.
    pub fn dni_aux() -> Self {
        Method::DniAux {
            sg_scale: 0.1,
            aux_weight: 1.0,
            every_step: false,
        }
    }

    pub fn has_sg(&self) -> bool {
        !matches!(self, Method::Bptt)
    }

    pub fn sg_scale(&self) -> f32 {
        match *self {
            Method::Bptt => 0.0,
            Method::Dni { sg_scale } | Method::DniAux { sg_scale, .. } => sg_scale,
        }
    }

    /// Weight of the aux loss (0 without the aux task).
    pub fn aux_weight(&self) -> Option<f32> {
        match *self {
            Method::DniAux { aux_weight, .. } => Some(aux_weight),
            _ => None,
        }
    }

    /// Whether the aux task predicts from every step of the window (see [`Method::DniAux`]).
    pub fn aux_every_step(&self) -> bool {
        matches!(
            self,
            Method::DniAux {
                every_step: true,
                ..
            }
        )
    }

    /// Short name used in logs and file names.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Bptt => "bptt",
            Method::Dni { .. } => "dni",
            Method::DniAux { .. } => "dni_aux",
        }
    }
}

/// Everything that fixes a [`RecurrentTrainer`](super::RecurrentTrainer).
#[derive(Clone, Debug)]
pub struct RecurrentConfig {
    /// Input width per step (the vocabulary size for token input).
    pub input: usize,
    /// LSTM units.
    pub hidden: usize,
    /// Readout width (bits, or the vocabulary size).
    pub output: usize,
    /// Parallel streams; each keeps its own state across windows.
    pub batch: usize,
    /// Truncation length: time steps per window.
    pub t: usize,
    pub loss: OutputLoss,
    pub method: Method,
    pub optim: OptimConfig,
    /// Optimiser of the SG model and the aux head; `None` uses `optim`. These are regressions onto
    /// targets that shrink as the task is learnt, so a smaller step than the core's usually helps.
    pub sg_optim: Option<OptimConfig>,
    /// Global-norm gradient clipping: each window, the core's gradient (LSTM and readout) and,
    /// separately, the SG model's and aux head's are scaled by `min(1, clip / ‖g‖)`. `None`: off.
    pub clip: Option<f32>,
    /// The SG model's input, shape and bootstrap discount ([`SgConfig::default`]: the paper's
    /// linear model on `[h; c]`, bootstrap discounted by the injection scale). Anything else
    /// trains on the per-step kernels.
    pub sg: SgConfig,
    /// Seed of the initial weights.
    pub seed: u64,
}

impl RecurrentConfig {
    /// The first of [`problems`](Self::problems), as an error; trainers call it before allocating.
    pub fn validate(&self) -> Result<()> {
        first_problem(self.problems())
    }

    /// Every limit of a recurrent trainer that does not depend on the adapter that this config
    /// breaks, each an [`Error::Config`](crate::Error::Config) naming the field as `dni-train`'s
    /// `[rnn]` section spells it (`hidden`, `T`, `sg_scale`, ...), so that the CLI blames these
    /// rules on its keys instead of stating them again.
    pub fn problems(&self) -> Vec<crate::Error> {
        let mut out = Vec::new();
        let mut bad = |field, value: &dyn std::fmt::Display, reason| {
            out.push(crate::Error::config(field, value, reason))
        };
        for (field, v) in [
            ("input", self.input),
            ("hidden", self.hidden),
            ("output", self.output),
            ("batch", self.batch),
            ("T", self.t),
        ] {
            if v == 0 {
                bad(field, &v, "must be at least 1");
            }
        }
        if self.loss == OutputLoss::Softmax && self.output == 1 {
            bad("output", &self.output, "softmax needs at least 2 classes");
        }
        let s = self.method.sg_scale();
        if !(s.is_finite() && s >= 0.0) {
            bad("sg_scale", &s, "must be a finite number >= 0 (paper: 0.1)");
        }
        if let Some(c) = self.clip.filter(|c| !(c.is_finite() && *c > 0.0)) {
            bad(
                "clip",
                &c,
                "must be a finite number > 0 (or None: no clipping)",
            );
        }
        if let Some(w) = self
            .method
            .aux_weight()
            .filter(|w| !(w.is_finite() && *w >= 0.0))
        {
            bad("aux_weight", &w, "must be a finite number >= 0");
        }
        if self.method.aux_every_step() && self.loss != OutputLoss::SigmoidBits {
            bad(
                "aux_every_step",
                &true,
                "the aux task at every step reads the next window's inputs, which only the \
                 bit-vector tasks (Copy, Repeat Copy) hand over; use the first-step aux task",
            );
        }
        let same_kind = |o: OptimConfig| o.kind() == self.optim.kind();
        if self.sg.normalise && !(self.sg.is_fused() && self.sg_optim.is_none_or(same_kind)) {
            bad(
                "sg_normalise",
                &true,
                "target normalisation runs on the fused kernels, which have the paper's SG only: \
                 remove sg_input, sg_hidden, sg_discount and sg_optimizer, or sg_normalise",
            );
        }
        out.extend(self.sg.problems());
        out.extend(self.largest_buffers().err());
        out
    }

    /// The element counts of the largest buffers a run allocates (on the host and the GPU), as
    /// `(field to blame, elements)`, with the arithmetic checked: sizes whose products overflow
    /// are an error naming the field, never a wrapped size.
    pub(crate) fn largest_buffers(&self) -> Result<[(&'static str, usize); 3]> {
        let (i, h, o, b, t) = (self.input, self.hidden, self.output, self.batch, self.t);
        let mul = |xs: &[usize]| xs.iter().try_fold(1usize, |acc, &x| acc.checked_mul(x));
        // Weights [I + H, 4H] (and the SG model's [2H, 2H]); window data and activations
        // [T·B, max(I, O, 4H)].
        let weights = i
            .checked_add(h)
            .and_then(|ih| mul(&[ih, 4, h]))
            .filter(|_| mul(&[4, h, h]).is_some());
        let Some(weights) = weights else {
            // Name the input only where it tips the product over: a caller checking the hidden
            // size alone passes a placeholder input.
            let value = match mul(&[4, h, h]) {
                Some(_) => format!("{h} (input {i})"),
                None => h.to_string(),
            };
            return config_err(
                "hidden",
                value,
                "(input + hidden)·4·hidden overflows the address space",
            );
        };
        let widest = i.max(o).max(h.saturating_mul(4));
        let Some(window) = mul(&[t, b, widest]) else {
            return config_err(
                "batch",
                format!("{b} (T {t}, widest row {widest})"),
                "T·batch·max(input, output, 4·hidden) overflows the address space",
            );
        };
        Ok([
            ("hidden", weights),
            ("batch", window),
            ("output", o.saturating_mul(h)),
        ])
    }

    /// Checks that every large buffer fits the adapter's storage-buffer limits before anything is
    /// allocated (an error naming the field, instead of a failed allocation).
    pub(crate) fn check_fits(&self, gpu: &dni_kernels::Gpu) -> Result<()> {
        let l = gpu.limits();
        let max = l.max_storage_buffer_binding_size.min(l.max_buffer_size);
        for (field, n) in self.largest_buffers()? {
            let bytes = (n as u64).saturating_mul(4);
            if bytes > max {
                return Err(crate::Error::Config {
                    field,
                    value: format!("{} (a buffer of {bytes} bytes)", self.field_value(field)),
                    reason: "exceeds the adapter's largest storage buffer \
                             (see `dni-train devices`); make the model or the batch smaller",
                });
            }
        }
        Ok(())
    }

    fn field_value(&self, field: &str) -> usize {
        match field {
            "hidden" => self.hidden,
            "batch" => self.batch,
            _ => self.output,
        }
    }
}
