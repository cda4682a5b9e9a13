//! The two-timescale MNIST run as a config file states it (`dni-train`'s `[timescale]` section,
//! with the `serde` feature): the system's sizes, method and rates in flat keys (A and B share a
//! width), where its digits come from, the step budget and the evaluation. The stream supplies the
//! input width and the run its seed when [`TimescaleSettings::system_config`] builds the
//! [`TimescaleConfig`].

use std::path::PathBuf;

use dni_kernels::ops::optim::{OptimConfig, OptimKind};

use super::config::{Method, TimescaleConfig};
use crate::error::Error;

/// Everything a file sets of a two-timescale run (`[timescale]`); see the module docs.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct TimescaleSettings {
    /// Directory with the four MNIST IDX files (gzipped or not); default `data/mnist`.
    #[cfg_attr(feature = "serde", serde(default = "crate::defaults::mnist_dir"))]
    pub data_dir: PathBuf,
    /// A answers every T steps; B ticks every T steps and answers every T ticks.
    #[cfg_attr(feature = "serde", serde(rename = "T"))]
    pub t: usize,
    /// LSTM units of A and of B.
    pub hidden: usize,
    pub batch: usize,
    /// Step budget in steps of the digit stream (rounded up to whole blocks of T² steps).
    pub steps: u64,
    /// `e2e`, `dni` or `nodni`.
    pub method: Method,
    /// Adam learning rate of A and B.
    pub lr: f64,
    /// Optimiser of the synthetic-gradient model (default `adam`, the networks' optimiser; `sgd`
    /// has momentum 0.9).
    #[cfg_attr(feature = "serde", serde(default))]
    pub sg_optimizer: OptimKind,
    /// Learning rate of the synthetic-gradient model; default `lr`. B's message gradients are
    /// mostly label noise, and Adam at the networks' rate fits the noise (the SG then explains less
    /// than the zero predictor): `configs/two_timescale.toml` sets `lr / 100`.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub sg_lr: Option<f64>,
    /// Factor on the synthetic gradient when A receives it.
    #[cfg_attr(feature = "serde", serde(default = "crate::defaults::one"))]
    pub sg_scale: f64,
    /// Condition the SG on B's answer for the block, one-hot (cDNI on the link; method dni).
    #[cfg_attr(feature = "serde", serde(default))]
    pub sg_conditioned: bool,
    /// Units of the SG model's hidden ReLU layer; 0 (the default): linear.
    #[cfg_attr(feature = "serde", serde(default))]
    pub sg_hidden: usize,
    /// Steps between test-split evaluations.
    #[cfg_attr(feature = "serde", serde(default = "eval_every"))]
    pub eval_every: u64,
    /// Blocks of T² steps per evaluation (each has `batch` lanes).
    #[cfg_attr(feature = "serde", serde(default = "eval_blocks"))]
    pub eval_blocks: usize,
}

#[cfg(feature = "serde")]
fn eval_every() -> u64 {
    2000
}

#[cfg(feature = "serde")]
fn eval_blocks() -> usize {
    50
}

/// SGD's momentum when the SG model trains with `sg_optimizer = "sgd"`.
const SG_SGD_MOMENTUM: f32 = 0.9;

impl TimescaleSettings {
    /// The system these settings give for a stream of `input` features per step, with initial
    /// weights from `seed`.
    pub fn system_config(&self, input: usize, seed: u64) -> TimescaleConfig {
        let sg_lr = self.sg_lr.unwrap_or(self.lr);
        let (classes_a, classes_b) = TimescaleConfig::digit_counts(self.t);
        TimescaleConfig {
            t: self.t,
            input,
            classes_a,
            classes_b,
            hidden_a: self.hidden,
            hidden_b: self.hidden,
            batch: self.batch,
            method: self.method,
            optim: OptimConfig::adam(self.lr as f32),
            sg_optim: self.sg_optimizer.config(sg_lr as f32, SG_SGD_MOMENTUM),
            sg_scale: self.sg_scale as f32,
            sg_conditioned: self.sg_conditioned,
            sg_hidden: self.sg_hidden,
            seed,
        }
    }

    /// Every limit these settings break, each naming its key: the system's own
    /// ([`TimescaleConfig::problems`], blamed on the key that sets the field: `hidden` for A's and
    /// B's widths, `lr` and `sg_lr` for the two optimisers) and the run's (a step budget and
    /// evaluations of at least 1).
    pub fn problems(&self) -> Vec<Error> {
        // Without its own sg_lr the SG's rate is lr, whose problem is reported already; A and B
        // share `hidden`; the class counts follow from `T`, whose own limit (at least 2) covers
        // theirs.
        let mut out = crate::error::by_key(
            self.system_config(1, 0).problems(),
            |p| match p.config_field() {
                Some("sg_optim") => self.sg_lr.is_some(),
                Some("classes_a" | "classes_b") => false,
                _ => true,
            },
            |field| match field {
                "hidden_a" | "hidden_b" => "hidden",
                "optim" => "lr",
                "sg_optim" => "sg_lr",
                other => other,
            },
        );
        out.extend(crate::error::size_problems(
            &[("hidden", self.hidden)],
            crate::ff::MNIST_PIXELS + 1,
            self.batch,
            self.t,
        ));
        for (field, n) in [("steps", self.steps), ("eval_every", self.eval_every)] {
            if n == 0 {
                out.push(Error::config(field, n, "must be at least 1 step"));
            }
        }
        if self.eval_blocks == 0 {
            out.push(Error::config(
                "eval_blocks",
                self.eval_blocks,
                "must be at least 1",
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TimescaleSettings {
        TimescaleSettings {
            data_dir: PathBuf::from("data/mnist"),
            t: 4,
            hidden: 16,
            batch: 8,
            steps: 100,
            method: Method::Dni,
            lr: 1e-3,
            sg_optimizer: OptimKind::Sgd,
            sg_lr: Some(1e-5),
            sg_scale: 0.5,
            sg_conditioned: true,
            sg_hidden: 32,
            eval_every: 10,
            eval_blocks: 5,
        }
    }

    #[test]
    fn the_system_follows_the_settings() {
        let s = settings().system_config(785, 3);
        assert_eq!(
            (s.t, s.input, s.hidden_a, s.hidden_b, s.batch, s.seed),
            (4, 785, 16, 16, 8, 3)
        );
        assert_eq!(s.method, Method::Dni);
        assert_eq!(s.optim, OptimConfig::adam(1e-3));
        assert_eq!(s.sg_optim, OptimConfig::sgd(1e-5, 0.9));
        assert_eq!((s.sg_scale, s.sg_conditioned, s.sg_hidden), (0.5, true, 32));
        let default_rate = TimescaleSettings {
            sg_lr: None,
            sg_optimizer: OptimKind::Adam,
            ..settings()
        };
        assert_eq!(
            default_rate.system_config(1, 0).sg_optim,
            OptimConfig::adam(1e-3)
        );
    }

    #[test]
    fn each_broken_limit_names_its_key() {
        let fields = |s: TimescaleSettings| -> Vec<&'static str> {
            s.problems()
                .iter()
                .filter_map(Error::config_field)
                .collect()
        };
        assert!(fields(settings()).is_empty());
        let bad = TimescaleSettings {
            hidden: 0,
            lr: 0.0,
            sg_lr: None,
            steps: 0,
            eval_blocks: 0,
            method: Method::NoDni,
            ..settings()
        };
        assert_eq!(
            fields(bad),
            ["hidden", "sg_conditioned", "lr", "steps", "eval_blocks"]
        );
    }
}
