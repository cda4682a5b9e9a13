//! A recurrent training run as a config file states it (`dni-train`'s `[rnn]` section, with the
//! `serde` feature): the trainer's sizes, method and optimisers in flat keys, the step budget and
//! the probe. The task supplies the rest (input and output widths, the loss, the seed) when it
//! builds the trainer's [`RecurrentConfig`] with [`RecurrentSettings::trainer_config`].
//!
//! Why a file form beside the trainer's config: they say different things. The file's keys are
//! flat and few (an optimiser is a kind, a rate and a momentum; the method is a name and its
//! numbers sit beside it) and it holds what a run needs around the trainer (the budget, the rate's
//! half-life, the probe); the trainer's config is structured and complete (any
//! [`OptimConfig`](dni_kernels::ops::optim::OptimConfig), betas included; [`Method`] with its
//! settings inside; the task's widths and loss) and knows nothing of budgets. One maps onto the
//! other in one function, [`trainer_config`](RecurrentSettings::trainer_config), and every limit
//! is stated once, by the trainer's [`problems`](RecurrentConfig::problems), which
//! [`problems`](RecurrentSettings::problems) reports under the file's keys. The feed-forward
//! (`MnistSettings` → `FfSpec`) and two-timescale (`TimescaleSettings` → `TimescaleConfig`) file
//! forms are built the same way.

use dni_kernels::ops::optim::OptimKind;

use super::config::{Method, OutputLoss, RecurrentConfig};
use crate::error::Error;
use crate::sg::{SgConfig, SgInput};

/// [`Method`] without its settings: what a config file names (`bptt`, `dni`, `dni_aux`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum MethodKind {
    /// [`Method::Bptt`].
    Bptt,
    /// [`Method::Dni`].
    Dni,
    /// [`Method::DniAux`].
    DniAux,
}

impl Method {
    /// The method without its settings.
    pub fn kind(&self) -> MethodKind {
        match self {
            Method::Bptt => MethodKind::Bptt,
            Method::Dni { .. } => MethodKind::Dni,
            Method::DniAux { .. } => MethodKind::DniAux,
        }
    }
}

/// Everything a file sets of a recurrent run (`[rnn]`); see the module docs.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct RecurrentSettings {
    /// LSTM units.
    pub hidden: usize,
    /// Parallel streams.
    pub batch: usize,
    /// Truncation length: steps per forward/backward window.
    #[cfg_attr(feature = "serde", serde(rename = "T"))]
    pub t: usize,
    pub method: MethodKind,
    /// Factor applied to the synthetic gradient when it is injected (default 1; the paper's
    /// recurrent cores use 0.1, as `charlm.toml` does; the Copy configs set 0.5, measured in
    /// docs/RECURRENT.md).
    #[cfg_attr(feature = "serde", serde(default = "crate::defaults::one"))]
    pub sg_scale: f64,
    /// Weight of the aux loss for `dni_aux`.
    #[cfg_attr(feature = "serde", serde(default = "crate::defaults::one"))]
    pub aux_weight: f64,
    /// `dni_aux` at every step of the window, each onto the SG `T` steps later (the paper's Fig.
    /// 2b; the trainer reads the next window's inputs for those targets), instead of at the
    /// window's first step only (the default). Per-step kernels; Copy and Repeat Copy only.
    #[cfg_attr(feature = "serde", serde(default))]
    pub aux_every_step: bool,
    #[cfg_attr(feature = "serde", serde(default))]
    pub optimizer: OptimKind,
    pub lr: f64,
    /// SGD momentum (ignored by Adam).
    #[cfg_attr(feature = "serde", serde(default = "crate::defaults::momentum"))]
    pub momentum: f64,
    /// Step budget (one step = one window of `T` steps).
    pub steps: u64,
    /// Half-life of the core's learning rate, in windows: window `w` trains at
    /// `lr · 2^(−w / lr_half_life)` (the SG model and the aux head keep `sg_lr`). Absent: constant,
    /// the paper's.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub lr_half_life: Option<u64>,
    /// Learning rate of the synthetic-gradient model and the aux head (default `lr`; the committed
    /// Copy configs set 3× the core, measured in docs/RECURRENT.md).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub sg_lr: Option<f64>,
    /// The SG model's and aux head's optimiser kind (default: `optimizer`). Adam moves every weight
    /// by about its learning rate whatever the gradient's size, which can exceed tiny targets; SGD
    /// steps in proportion to them. A kind other than the core's trains on the per-step kernels.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub sg_optimizer: Option<OptimKind>,
    /// SGD momentum of the SG model when `sg_optimizer = "sgd"` (default: `momentum`).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub sg_momentum: Option<f64>,
    /// Global-norm gradient clipping: each window the core's gradient and, separately, the SG
    /// model's (with the aux head's) are scaled down to this L2 norm when above it. Off when absent.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub clip: Option<f64>,
    /// What the SG model reads: `"state"` (`[h; c]`, the paper's) or `"hidden"` (`h` alone: `c` is
    /// unbounded on an endless stream and dominates a linear map of `[h; c]`).
    #[cfg_attr(feature = "serde", serde(default))]
    pub sg_input: SgInput,
    /// Width of the SG model's hidden ReLU layer; 0 (the default) is the paper's linear model.
    #[cfg_attr(feature = "serde", serde(default))]
    pub sg_hidden: usize,
    /// Discount of the bootstrapped part of the SG's target, apart from the injection scale
    /// (default: `sg_scale`, the paper's rule; other implementations inject unscaled and discount
    /// by 0.9). Anything but the default SG (linear, `state`, no discount) trains on the per-step
    /// kernels.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub sg_discount: Option<f64>,
    /// Target normalisation: the SG model regresses onto its targets divided by their running RMS
    /// `σ`, and `σ·M` is injected (Adam's steps are the same size whatever the targets' size, so
    /// without it a fast SG overshoots small targets). Fused kernels only: the default SG, the
    /// core's optimiser kind, an adapter with subgroups.
    #[cfg_attr(feature = "serde", serde(default))]
    pub sg_normalise: bool,
    /// Whether the synthetic gradient is injected (DNI methods). `false` trains the SG model without
    /// applying it: the core learns exactly as BPTT does, and the probe can score the SG it would get.
    #[cfg_attr(feature = "serde", serde(default = "crate::defaults::yes"))]
    pub sg_apply: bool,
    /// Run the SG fidelity probe every this many steps (0: never). It reads the parameters back and
    /// runs a long BPTT on the host, so it is a diagnostic, not something to run every step.
    #[cfg_attr(feature = "serde", serde(default))]
    pub probe_every: u64,
    /// How many steps past the window the probe unrolls (default 8·T).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub probe_steps: Option<usize>,
    /// Futures the Copy probe averages the true gradient over (the unread characters drawn afresh
    /// for each): an estimate of the expected future gradient, which is what an SG can predict.
    #[cfg_attr(feature = "serde", serde(default = "probe_samples"))]
    pub probe_samples: usize,
}

#[cfg(feature = "serde")]
fn probe_samples() -> usize {
    8
}

impl RecurrentSettings {
    /// The SG model's learning rate in effect.
    pub fn sg_lr(&self) -> f64 {
        self.sg_lr.unwrap_or(self.lr)
    }

    /// The core's learning rate for window `window` (counted from 0): `lr`, halved every
    /// `lr_half_life` windows when that is set.
    pub fn lr_at(&self, window: u64) -> f64 {
        match self.lr_half_life {
            Some(h) if h > 0 => self.lr * 0.5f64.powf(window as f64 / h as f64),
            _ => self.lr,
        }
    }

    /// Steps the probe unrolls past the window.
    pub fn probe_steps(&self) -> usize {
        self.probe_steps.unwrap_or(self.t.saturating_mul(8))
    }

    /// The method with its settings.
    pub fn method(&self) -> Method {
        let sg_scale = self.sg_scale as f32;
        match self.method {
            MethodKind::Bptt => Method::Bptt,
            MethodKind::Dni => Method::Dni { sg_scale },
            MethodKind::DniAux => Method::DniAux {
                sg_scale,
                aux_weight: self.aux_weight as f32,
                every_step: self.aux_every_step,
            },
        }
    }

    /// The trainer these settings give for a task of `input` and `output` widths scored by `loss`,
    /// with initial weights from `seed`.
    pub fn trainer_config(
        &self,
        input: usize,
        output: usize,
        loss: OutputLoss,
        seed: u64,
    ) -> RecurrentConfig {
        let sg_optim = self.sg_optimizer.unwrap_or(self.optimizer).config(
            self.sg_lr() as f32,
            self.sg_momentum.unwrap_or(self.momentum) as f32,
        );
        RecurrentConfig {
            input,
            hidden: self.hidden,
            output,
            batch: self.batch,
            t: self.t,
            loss,
            method: self.method(),
            optim: self.optimizer.config(self.lr as f32, self.momentum as f32),
            sg_optim: Some(sg_optim),
            clip: self.clip.map(|c| c as f32),
            sg: SgConfig {
                input: self.sg_input,
                hidden: self.sg_hidden,
                discount: self.sg_discount.map(|g| g as f32),
                normalise: self.sg_normalise,
            },
            seed,
        }
    }

    /// Every limit these settings break, each naming its key: the run's (a step budget, learning
    /// rates, momentum), the trainer's own ([`RecurrentConfig::problems`], for a task of
    /// `input`/`output` widths and `loss`), sizes no adapter could hold, and the probe's.
    pub fn problems(&self, input: usize, output: usize, loss: OutputLoss) -> Vec<Error> {
        let mut out =
            crate::error::training_problems(self.steps, self.lr, self.momentum, self.sg_lr);
        out.extend(self.trainer_config(input, output, loss, 0).problems());
        // Sizes no adapter could hold, unless the trainer's own arithmetic already named the key.
        let sizes = crate::error::size_problems(
            &[("hidden", self.hidden)],
            input.max(output),
            self.batch,
            self.t,
        );
        for p in sizes {
            if !out.iter().any(|q| q.config_field() == p.config_field()) {
                out.push(p);
            }
        }
        if let Some(m) = self.sg_momentum.filter(|m| !(0.0..1.0).contains(m)) {
            out.push(Error::config(
                "sg_momentum",
                m,
                "momentum must be in [0, 1)",
            ));
        }
        if self.lr_half_life == Some(0) {
            out.push(Error::config(
                "lr_half_life",
                0,
                "the rate halves every this many windows: at least 1 (remove it for a constant rate)",
            ));
        }
        if !(1..=1000).contains(&self.probe_samples) {
            out.push(Error::config(
                "probe_samples",
                self.probe_samples,
                "the probe averages over 1 to 1000 futures (default 8)",
            ));
        }
        if let Some(n) = self.probe_steps.filter(|n| !(1..=100_000).contains(n)) {
            out.push(Error::config(
                "probe_steps",
                n,
                "the probe unrolls 1 to 100000 steps past the window (remove it for 8·T)",
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use dni_kernels::ops::optim::OptimConfig;

    use super::*;

    fn settings() -> RecurrentSettings {
        RecurrentSettings {
            hidden: 64,
            batch: 16,
            t: 2,
            method: MethodKind::DniAux,
            sg_scale: 0.1,
            aux_weight: 0.5,
            aux_every_step: false,
            optimizer: OptimKind::Sgd,
            lr: 1e-3,
            momentum: 0.9,
            steps: 10,
            lr_half_life: None,
            sg_lr: Some(3e-3),
            sg_optimizer: None,
            sg_momentum: None,
            clip: Some(1.0),
            sg_input: SgInput::State,
            sg_hidden: 0,
            sg_discount: None,
            sg_normalise: false,
            sg_apply: true,
            probe_every: 0,
            probe_steps: None,
            probe_samples: 8,
        }
    }

    #[test]
    fn the_trainer_follows_the_settings() {
        let r = settings().trainer_config(10, 10, OutputLoss::SigmoidBits, 4);
        assert_eq!(
            r.method,
            Method::DniAux {
                sg_scale: 0.1,
                aux_weight: 0.5,
                every_step: false,
            }
        );
        assert_eq!(r.method.kind(), MethodKind::DniAux);
        assert_eq!(r.optim, OptimConfig::sgd(1e-3, 0.9));
        assert_eq!(r.sg_optim, Some(OptimConfig::sgd(3e-3, 0.9)));
        assert_eq!(r.sg, SgConfig::default());
        assert_eq!((r.hidden, r.batch, r.t, r.seed), (64, 16, 2, 4));
        assert_eq!((r.input, r.output, r.clip), (10, 10, Some(1.0)));
        let s = RecurrentSettings {
            sg_optimizer: Some(OptimKind::Adam),
            sg_lr: None,
            ..settings()
        };
        assert_eq!(
            s.trainer_config(1, 1, OutputLoss::SigmoidBits, 0).sg_optim,
            Some(OptimConfig::adam(1e-3))
        );
        assert_eq!(s.probe_steps(), 16);
        assert_eq!(s.lr_at(5000), 1e-3);
        let halving = RecurrentSettings {
            lr_half_life: Some(100),
            ..settings()
        };
        assert_eq!(halving.lr_at(0), 1e-3);
        assert!((halving.lr_at(100) - 5e-4).abs() < 1e-12);
        assert!((halving.lr_at(250) - 1e-3 / 2f64.powf(2.5)).abs() < 1e-12);
    }

    #[test]
    fn each_broken_limit_names_its_key() {
        let bad = RecurrentSettings {
            steps: 0,
            lr: 0.0,
            momentum: 1.0,
            sg_lr: Some(-1.0),
            hidden: 0,
            sg_momentum: Some(1.0),
            probe_samples: 0,
            probe_steps: Some(0),
            lr_half_life: Some(0),
            ..settings()
        };
        let fields: Vec<&str> = bad
            .problems(1, 1, OutputLoss::SigmoidBits)
            .iter()
            .filter_map(Error::config_field)
            .collect();
        assert_eq!(
            fields,
            [
                "steps",
                "lr",
                "momentum",
                "sg_lr",
                "hidden",
                "sg_momentum",
                "lr_half_life",
                "probe_samples",
                "probe_steps"
            ]
        );
        assert!(settings()
            .problems(1, 1, OutputLoss::SigmoidBits)
            .is_empty());
    }
}
