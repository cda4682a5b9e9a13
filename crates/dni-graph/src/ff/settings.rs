//! The paper's MNIST networks (section 3.3) as a config file states them (`dni-train`'s `[mnist]`
//! section, with the `serde` feature): an MLP of `layers` hidden layers of `hidden` units (Linear,
//! batch norm, ReLU), each a block of its own, trained by one of the paper's four methods, in flat
//! keys, with where its digits come from, the step budget, the evaluation and the probe.
//! [`MnistSettings::spec`] builds the [`FfSpec`].

use std::path::PathBuf;

use dni_kernels::ops::optim::OptimKind;

use super::spec::{FfSpec, InterfaceSpec, SgSpec, SynthInputSpec};
use crate::error::Error;

/// How the blocks of an MNIST network talk (paper 3.3): what a config file names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum FfMethod {
    /// No gradient crosses a block boundary: only the output block learns (a lower bound;
    /// [`InterfaceSpec::cut`]).
    Nobp,
    /// Ordinary backpropagation ([`InterfaceSpec::backprop`]).
    Bp,
    /// Synthetic gradients from the activations ([`InterfaceSpec::dni`]).
    Dni,
    /// Synthetic gradients conditioned on the label.
    Cdni,
}

impl FfMethod {
    /// The name a config file gives it.
    pub fn name(self) -> &'static str {
        match self {
            FfMethod::Nobp => "nobp",
            FfMethod::Bp => "bp",
            FfMethod::Dni => "dni",
            FfMethod::Cdni => "cdni",
        }
    }

    /// Whether its interfaces have a synthetic-gradient model.
    pub fn uses_sg(self) -> bool {
        matches!(self, FfMethod::Dni | FfMethod::Cdni)
    }
}

/// Features of an MNIST image (28 × 28 pixels): the widest input the settings' sizes are checked
/// against before the data is read.
pub const MNIST_PIXELS: usize = 28 * 28;

/// Everything a file sets of an MNIST run (`[mnist]`); see the module docs.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct MnistSettings {
    /// Directory with the four IDX files (gzipped or not); default `data/mnist`.
    #[cfg_attr(feature = "serde", serde(default = "crate::defaults::mnist_dir"))]
    pub data_dir: PathBuf,
    /// Hidden layers (default 4).
    #[cfg_attr(feature = "serde", serde(default = "layers"))]
    pub layers: usize,
    /// Units per hidden layer (default 256).
    #[cfg_attr(feature = "serde", serde(default = "width"))]
    pub hidden: usize,
    /// Examples per step (default 256).
    #[cfg_attr(feature = "serde", serde(default = "width"))]
    pub batch: usize,
    pub steps: u64,
    #[cfg_attr(feature = "serde", serde(default))]
    pub optimizer: OptimKind,
    pub lr: f64,
    /// SGD momentum (ignored by Adam).
    #[cfg_attr(feature = "serde", serde(default = "crate::defaults::momentum"))]
    pub momentum: f64,
    pub method: FfMethod,
    /// Units per hidden layer of the SG model (batch norm, ReLU; the paper's DNI model is 2 × 1024);
    /// 0 (the default) is a linear model. cDNI's model also reads the one-hot label.
    #[cfg_attr(feature = "serde", serde(default))]
    pub sg_hidden: usize,
    /// Hidden layers of the SG model when `sg_hidden` > 0.
    #[cfg_attr(feature = "serde", serde(default = "crate::defaults::one_usize"))]
    pub sg_layers: usize,
    /// Learning rate of the SG (and synthetic-input) models; default `lr`.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub sg_lr: Option<f64>,
    /// Optimiser kind of the SG (and synthetic-input) models; default `optimizer` (with
    /// `momentum` for SGD).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub sg_optimizer: Option<OptimKind>,
    /// Probability that a block runs its backward pass and update on a step.
    #[cfg_attr(feature = "serde", serde(default = "crate::defaults::one"))]
    pub p_update: f64,
    /// Complete unlock: synthetic inputs as well as synthetic gradients.
    #[cfg_attr(feature = "serde", serde(default))]
    pub unlock: bool,
    /// BP(λ): `λ·true + (1-λ)·synthetic` gradient; 0 = purely synthetic.
    #[cfg_attr(feature = "serde", serde(default))]
    pub lambda: f64,
    /// Steps between test-set evaluations (default 200).
    #[cfg_attr(feature = "serde", serde(default = "eval_every"))]
    pub eval_every: u64,
    /// Steps between SG fidelity probes (0: off): each interface's delivered gradient scored against
    /// backprop's true gradient on a fixed training batch (`probe_cosine` in metrics.jsonl).
    #[cfg_attr(feature = "serde", serde(default))]
    pub probe_every: u64,
    /// Run each block on its own worker thread.
    #[cfg_attr(feature = "serde", serde(default = "crate::defaults::yes"))]
    pub threads: bool,
}

#[cfg(feature = "serde")]
fn layers() -> usize {
    4
}

#[cfg(feature = "serde")]
fn width() -> usize {
    256
}

#[cfg(feature = "serde")]
fn eval_every() -> u64 {
    200
}

impl MnistSettings {
    /// Whether the SG model has hidden layers (an MLP) rather than being linear.
    pub fn sg_is_mlp(&self) -> bool {
        self.sg_hidden > 0 && self.sg_layers > 0
    }

    /// The network and training algorithm these settings describe, for `input` features and
    /// `classes` classes, with initial weights from `seed`.
    pub fn spec(&self, input: usize, classes: usize, seed: u64) -> FfSpec {
        let optim_of = |kind: OptimKind, lr: f64| kind.config(lr as f32, self.momentum as f32);
        let mut spec = FfSpec::backprop(
            input,
            vec![self.hidden; self.layers],
            classes,
            self.batch,
            optim_of(self.optimizer, self.lr),
        );
        spec.seed = seed;
        // One rule for SG defaults: the network's own optimiser and rate unless set.
        spec.sg_optim = match (self.sg_optimizer, self.sg_lr) {
            (None, None) => None,
            (kind, lr) => Some(optim_of(
                kind.unwrap_or(self.optimizer),
                lr.unwrap_or(self.lr),
            )),
        };
        let sg = |conditioned: bool| match self.sg_is_mlp() {
            true => SgSpec::mlp(vec![self.sg_hidden; self.sg_layers], conditioned),
            false => SgSpec::linear(conditioned),
        };
        // BP(λ) applies to the SG methods (`problems` rejects a λ on the others).
        let with_lambda = |iface: InterfaceSpec| InterfaceSpec {
            lambda: self.lambda as f32,
            ..iface
        };
        let iface = match self.method {
            FfMethod::Bp => InterfaceSpec::backprop(),
            FfMethod::Nobp => InterfaceSpec::cut(),
            FfMethod::Dni => with_lambda(InterfaceSpec::dni(sg(false))),
            FfMethod::Cdni => with_lambda(InterfaceSpec::dni(sg(true))),
        };
        spec = spec.with_interfaces(iface);
        spec.p_update = self.p_update as f32;
        if self.unlock {
            spec.synthetic_input = Some(SynthInputSpec { hidden: Vec::new() });
        }
        spec
    }

    /// Every limit these settings break, each naming its key: the network's own
    /// ([`FfSpec::problems`], blamed on the key that sets the field) and the run's (a step budget,
    /// learning rates, momentum, layers, the SG model's layers, evaluations, and the settings only
    /// the SG methods take).
    pub fn problems(&self) -> Vec<Error> {
        // bp's and nobp's interfaces have a λ of their own, not the file's (whose λ on those
        // methods is refused below); the hidden blocks share `hidden`.
        let mut out =
            crate::error::training_problems(self.steps, self.lr, self.momentum, self.sg_lr);
        out.extend(crate::error::by_key(
            self.spec(1, 2, 0).problems(),
            |p| self.method.uses_sg() || p.config_field() != Some("interfaces.lambda"),
            |field| match field {
                "hidden_blocks" => "hidden",
                "interfaces.lambda" => "lambda",
                "interfaces.sg.hidden_layers" => "sg_hidden",
                other => other,
            },
        ));
        out.extend(crate::error::size_problems(
            &[("hidden", self.hidden), ("sg_hidden", self.sg_hidden)],
            MNIST_PIXELS,
            self.batch,
            1,
        ));
        let mut bad = |field, value: &dyn std::fmt::Display, reason| {
            out.push(Error::config(field, value, reason))
        };
        if self.layers == 0 {
            bad("layers", &self.layers, "needs at least 1 hidden layer");
        }
        if self.sg_hidden > 0 && self.sg_layers == 0 {
            bad(
                "sg_layers",
                &self.sg_layers,
                "an SG model with sg_hidden > 0 needs at least 1 hidden layer (or set sg_hidden = 0 \
                 for a linear one)",
            );
        }
        if self.eval_every == 0 {
            bad("eval_every", &self.eval_every, "must be at least 1 step");
        }
        if !self.method.uses_sg() {
            let why = "only applies to methods dni and cdni (remove it, or change method)";
            if self.unlock {
                bad("unlock", &self.unlock, why);
            }
            if self.p_update != 1.0 {
                bad("p_update", &self.p_update, why);
            }
            if self.lambda != 0.0 {
                bad("lambda", &self.lambda, why);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use dni_kernels::ops::optim::OptimConfig;

    use super::*;

    fn settings() -> MnistSettings {
        MnistSettings {
            data_dir: PathBuf::from("data/mnist"),
            layers: 3,
            hidden: 32,
            batch: 16,
            steps: 10,
            optimizer: OptimKind::Sgd,
            lr: 0.1,
            momentum: 0.5,
            method: FfMethod::Cdni,
            sg_hidden: 8,
            sg_layers: 2,
            sg_lr: Some(0.01),
            sg_optimizer: None,
            p_update: 1.0,
            unlock: false,
            lambda: 0.25,
            eval_every: 5,
            probe_every: 0,
            threads: true,
        }
    }

    #[test]
    fn the_network_follows_the_settings() {
        let spec = settings().spec(7, 10, 3);
        assert_eq!((spec.input, spec.classes, spec.batch), (7, 10, 16));
        assert_eq!((spec.blocks(), spec.seed), (4, 3));
        assert_eq!(spec.optim, OptimConfig::sgd(0.1, 0.5));
        assert_eq!(spec.sg_optim, Some(OptimConfig::sgd(0.01, 0.5)));
        let iface = &spec.interfaces[0];
        assert_eq!(iface.lambda, 0.25);
        assert_eq!(iface.sg, Some(SgSpec::mlp(vec![8, 8], true)));
        let bp = MnistSettings {
            method: FfMethod::Bp,
            sg_lr: None,
            lambda: 0.0,
            unlock: false,
            ..settings()
        }
        .spec(7, 10, 3);
        assert_eq!(bp.interfaces[0], InterfaceSpec::backprop());
        assert_eq!(bp.sg_optim, None);
        let unlocked = MnistSettings {
            unlock: true,
            lambda: 0.0,
            sg_hidden: 0,
            ..settings()
        }
        .spec(7, 10, 3);
        assert!(unlocked.synthetic_input.is_some());
        assert_eq!(unlocked.interfaces[0].sg, Some(SgSpec::linear(true)));
    }

    #[test]
    fn each_broken_limit_names_its_key() {
        let fields = |s: MnistSettings| -> Vec<&'static str> {
            s.problems()
                .iter()
                .filter_map(Error::config_field)
                .collect()
        };
        assert!(fields(settings()).is_empty());
        let bad = MnistSettings {
            steps: 0,
            hidden: 0,
            batch: 1,
            lambda: 2.0,
            sg_layers: 0,
            eval_every: 0,
            ..settings()
        };
        assert_eq!(
            fields(bad),
            [
                "steps",
                "hidden",
                "batch",
                "lambda",
                "sg_layers",
                "eval_every"
            ]
        );
        let bp = MnistSettings {
            method: FfMethod::Bp,
            unlock: true,
            p_update: 0.5,
            ..settings()
        };
        assert_eq!(fields(bp), ["unlock", "p_update", "lambda"]);
    }
}
