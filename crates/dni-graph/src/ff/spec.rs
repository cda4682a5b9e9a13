//! What a decoupled feed-forward network is: its layers, how they are grouped into blocks, and what
//! each interface between two blocks does with gradients. Every training algorithm of paper 3.3 is a
//! value of [`FfSpec`]; see [`FfSpec::backprop`], [`FfSpec::no_backprop`], [`FfSpec::dni`].

use dni_kernels::ops::optim::OptimConfig;

use crate::error::{Error, Result};
use crate::layers::LayerSpec;

/// A synthetic-gradient model `M(h)` or, conditioned, `M(h, onehot(y))`.
#[derive(Clone, Debug, PartialEq)]
pub struct SgSpec {
    /// The layers before the zero-initialised output Linear: empty for a linear model; the paper's
    /// DNI model is [`SgSpec::mlp`]`([1024, 1024])` (batch norm and ReLU); any layers, the user's
    /// own included. A conditioned model's first layer must be a Linear (it reads the label).
    pub hidden_layers: Vec<LayerSpec>,
    /// cDNI: the one-hot label is a second input (`[h, onehot(y)]`).
    pub conditioned: bool,
}

impl SgSpec {
    /// A linear model, zero-initialised (`M(h) = 0` at the start).
    pub fn linear(conditioned: bool) -> Self {
        Self {
            hidden_layers: Vec::new(),
            conditioned,
        }
    }

    /// Hidden layers of the given widths with batch norm and ReLU, then a zero-initialised Linear.
    pub fn mlp(hidden: Vec<usize>, conditioned: bool) -> Self {
        Self {
            hidden_layers: hidden
                .iter()
                .flat_map(|&h| LayerSpec::hidden(h, true))
                .collect(),
            conditioned,
        }
    }
}

/// The connection from block `i` to block `i + 1`, seen from the sender `i`.
///
/// The gradient block `i` updates with is `λ·δ + (1−λ)·δ̂` when the synthetic gradient is applied,
/// else `λ·δ`, where `δ` is the gradient block `i + 1` sends back and `δ̂ = M(h_i)`. With `λ > 0` the
/// sender waits for `δ` (it is update-locked); with `λ = 0` it never waits. `λ = 1` without an applied
/// SG is plain backprop, `λ = 0` without one cuts the gradient (the sender does not learn).
#[derive(Clone, Debug, PartialEq)]
pub struct InterfaceSpec {
    pub sg: Option<SgSpec>,
    /// Update the sender with `δ̂`.
    pub apply_sg: bool,
    /// Regress `δ̂` on `δ` (so the receiver sends `δ` back even when the sender does not wait).
    pub train_sg: bool,
    /// BP(λ) weight of the true gradient, in [0, 1].
    pub lambda: f32,
}

impl InterfaceSpec {
    /// Plain backprop: wait for the true gradient.
    pub fn backprop() -> Self {
        Self {
            sg: None,
            apply_sg: false,
            train_sg: false,
            lambda: 1.0,
        }
    }

    /// No gradient crosses: the sender never learns (paper's "no backprop" lower bound).
    pub fn cut() -> Self {
        Self {
            sg: None,
            apply_sg: false,
            train_sg: false,
            lambda: 0.0,
        }
    }

    /// DNI: update with the synthetic gradient at once, train it on the gradient sent back later.
    pub fn dni(sg: SgSpec) -> Self {
        Self {
            sg: Some(sg),
            apply_sg: true,
            train_sg: true,
            lambda: 0.0,
        }
    }

    /// Whether the receiver must send back the gradient at its input.
    pub fn wants_grad(&self) -> bool {
        self.lambda > 0.0 || (self.sg.is_some() && self.train_sg)
    }

    /// Whether the sender evaluates `M(h)` on an active step.
    pub fn predicts(&self) -> bool {
        self.sg.is_some() && ((self.apply_sg && self.lambda < 1.0) || self.train_sg)
    }

    /// Whether the sender's update waits for the receiver.
    pub fn waits(&self) -> bool {
        self.lambda > 0.0
    }
}

/// The synthetic-input model `I_i(x)` of complete unlock: predicts block `i`'s input from the data.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthInputSpec {
    /// Hidden widths (ReLU, no batch norm); empty is a linear model.
    pub hidden: Vec<usize>,
}

/// A feed-forward classifier trained block by block.
#[derive(Clone, Debug, PartialEq)]
pub struct FfSpec {
    /// Input features (784 for MNIST).
    pub input: usize,
    /// The hidden blocks, in order: each a sequence of layers (Linear, BatchNorm, activations) with
    /// its own optimiser and, in the threaded schedule, its own worker. The output block (a Linear to
    /// `classes` under softmax cross-entropy) follows them. [`FfSpec::mlp_blocks`] builds the
    /// paper's `Linear → [BatchNorm] → ReLU` layouts; any other sequence of layers is as welcome.
    pub hidden_blocks: Vec<Vec<LayerSpec>>,
    pub classes: usize,
    pub batch: usize,
    /// Every block gets its own optimiser with this config.
    pub optim: OptimConfig,
    /// The SG and synthetic-input models' optimisers (one each); `None` uses `optim`. Their targets
    /// move and arrive late, so they may want a smaller step than the blocks.
    pub sg_optim: Option<OptimConfig>,
    /// One per pair of consecutive blocks (`blocks() - 1`).
    pub interfaces: Vec<InterfaceSpec>,
    /// Probability that a block does its backward pass and update after a forward pass (with
    /// complete unlock: that it does anything at all on a step).
    pub p_update: f32,
    /// Complete unlock: every block but the first trains on `I_i(x)` instead of waiting for its input.
    pub synthetic_input: Option<SynthInputSpec>,
    pub seed: u64,
    /// Buffers per ring (activations, input gradients, SG workspaces): how far a block may run ahead
    /// of the blocks it feeds before it waits. At least 2.
    pub ring: usize,
}

impl FfSpec {
    /// A network of the given hidden blocks with plain backprop on every interface; see
    /// [`FfSpec::dni`] and [`FfSpec::with_interfaces`] to decouple it.
    pub fn new(
        input: usize,
        hidden_blocks: Vec<Vec<LayerSpec>>,
        classes: usize,
        batch: usize,
        optim: OptimConfig,
    ) -> Self {
        let mut s = Self {
            input,
            hidden_blocks,
            classes,
            batch,
            optim,
            sg_optim: None,
            interfaces: Vec::new(),
            p_update: 1.0,
            synthetic_input: None,
            seed: 1,
            ring: 2,
        };
        s.interfaces = vec![InterfaceSpec::backprop(); s.blocks() - 1];
        s
    }

    /// The paper's MLP: hidden layers `Linear → BatchNorm → ReLU` of the given widths, one per block,
    /// with plain backprop on every interface.
    pub fn backprop(
        input: usize,
        hidden: Vec<usize>,
        classes: usize,
        batch: usize,
        optim: OptimConfig,
    ) -> Self {
        let blocks = hidden.iter().map(|&h| LayerSpec::hidden(h, true)).collect();
        Self::new(input, blocks, classes, batch, optim)
    }

    /// Hidden blocks of `Linear → [BatchNorm] → ReLU` layers of the given widths, grouped
    /// `layers_per_block` to a block (the last block takes what is left). Without batch norm the
    /// Linears carry biases; with it, batch norm's shift stands in for them.
    pub fn mlp_blocks(
        hidden: &[usize],
        batchnorm: bool,
        layers_per_block: usize,
    ) -> Result<Vec<Vec<LayerSpec>>> {
        if layers_per_block == 0 {
            return Err(Error::config("layers_per_block", 0, "must be at least 1"));
        }
        Ok(hidden
            .chunks(layers_per_block)
            .map(|group| {
                group
                    .iter()
                    .flat_map(|&h| LayerSpec::hidden(h, batchnorm))
                    .collect()
            })
            .collect())
    }

    /// Only the output layer learns.
    pub fn no_backprop(self) -> Self {
        self.with_interfaces(InterfaceSpec::cut())
    }

    /// The same synthetic-gradient model on every interface.
    pub fn dni(self, sg: SgSpec) -> Self {
        self.with_interfaces(InterfaceSpec::dni(sg))
    }

    /// Sets every interface to `iface`.
    pub fn with_interfaces(mut self, iface: InterfaceSpec) -> Self {
        self.interfaces = vec![iface; self.blocks() - 1];
        self
    }

    /// Number of blocks: the hidden blocks plus the output.
    pub fn blocks(&self) -> usize {
        self.hidden_blocks.len() + 1
    }

    /// The layers of block `i` (the output block is a Linear to `classes`).
    pub fn block_layers(&self, i: usize) -> Vec<LayerSpec> {
        match self.hidden_blocks.get(i) {
            Some(layers) => layers.clone(),
            None => vec![LayerSpec::linear(self.classes)],
        }
    }

    /// The first of [`problems`](Self::problems), as an error.
    pub fn validate(&self) -> Result<()> {
        crate::error::first_problem(self.problems())
    }

    /// Every value, and every inconsistency between values, that cannot work; each an
    /// [`Error::Config`] naming its field (`hidden`, `batch`, `interfaces.lambda`, ...).
    pub fn problems(&self) -> Vec<Error> {
        let mut out = Vec::new();
        let mut cfg = |field, value: &dyn std::fmt::Display, reason| {
            out.push(Error::config(field, value, reason))
        };
        if self.input == 0 {
            cfg("input", &self.input, "needs at least one feature");
        }
        if self.classes < 2 {
            cfg("classes", &self.classes, "needs at least two classes");
        }
        for (i, layers) in self.hidden_blocks.iter().enumerate() {
            let blame = format!("block {i}: {layers:?}");
            if layers.iter().any(|l| {
                matches!(
                    l,
                    LayerSpec::Linear { out: 0, .. }
                        | LayerSpec::Lstm { hidden: 0, .. }
                        | LayerSpec::Lstm { steps: 0, .. }
                )
            }) {
                cfg(
                    "hidden_blocks",
                    &blame,
                    "every Linear and LSTM needs at least one output, and an LSTM one step",
                );
            } else if !layers
                .iter()
                .any(|l| matches!(l, LayerSpec::Linear { .. } | LayerSpec::Lstm { .. }))
            {
                cfg(
                    "hidden_blocks",
                    &blame,
                    "a block needs a Linear or LSTM layer, or nothing in it learns",
                );
            }
        }
        if self.interfaces.len() + 1 != self.blocks() {
            cfg(
                "interfaces",
                &self.interfaces.len(),
                "needs exactly one interface per pair of consecutive blocks",
            );
        }
        if self.batch < 2 {
            cfg(
                "batch",
                &self.batch,
                "batch norm and the SG regression need at least 2 rows",
            );
        }
        if self.ring < 2 {
            cfg("ring", &self.ring, "a ring needs at least 2 buffers");
        }
        if !(self.p_update > 0.0 && self.p_update <= 1.0) {
            cfg(
                "p_update",
                &self.p_update,
                "is a probability: must be in (0, 1]",
            );
        }
        // One problem per kind, not one per interface: they share their settings.
        if let Some(l) = self
            .interfaces
            .iter()
            .map(|i| i.lambda)
            .find(|l| !(0.0..=1.0).contains(l))
        {
            cfg("interfaces.lambda", &l, "must be in [0, 1]");
        } else if let Some(l) = self
            .interfaces
            .iter()
            .map(|i| i.lambda)
            .find(|&l| self.synthetic_input.is_some() && l > 0.0)
        {
            cfg(
                "interfaces.lambda",
                &l,
                "complete unlock never waits for a true gradient: lambda must be 0",
            );
        }
        if let Some(h) = self
            .interfaces
            .iter()
            .filter_map(|i| i.sg.as_ref())
            .find(|sg| {
                sg.hidden_layers
                    .iter()
                    .any(|l| matches!(l, LayerSpec::Linear { out: 0, .. }))
            })
            .map(|sg| format!("{:?}", sg.hidden_layers))
        {
            cfg(
                "interfaces.sg.hidden_layers",
                &h,
                "every hidden layer needs a unit",
            );
        }
        if let Some(first) = self
            .interfaces
            .iter()
            .filter_map(|i| i.sg.as_ref())
            .filter(|sg| sg.conditioned)
            .filter_map(|sg| sg.hidden_layers.first())
            .find(|l| !matches!(l, LayerSpec::Linear { .. }))
        {
            cfg(
                "interfaces.sg.hidden_layers",
                &format!("{first:?}"),
                "a conditioned SG reads the label in its first layer, which must be a Linear",
            );
        }
        if self
            .interfaces
            .iter()
            .any(|i| i.sg.is_none() && (i.apply_sg || i.train_sg))
        {
            cfg(
                "interfaces.sg",
                &"none",
                "apply_sg and train_sg need an SG model",
            );
        }
        if let Some(si) = &self.synthetic_input {
            if si.hidden.contains(&0) {
                cfg(
                    "synthetic_input.hidden",
                    &format!("{:?}", si.hidden),
                    "every hidden layer needs a unit",
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(spec: &FfSpec) -> Vec<String> {
        spec.problems().iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn mlp_blocks_group_the_papers_layers() {
        let blocks = FfSpec::mlp_blocks(&[5, 4, 3], true, 2).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].len(), 6);
        assert_eq!(blocks[1][1], LayerSpec::BatchNorm);
        let plain = FfSpec::mlp_blocks(&[5], false, 1).unwrap();
        assert_eq!(plain, vec![vec![LayerSpec::linear(5), LayerSpec::RELU]]);
        let e = FfSpec::mlp_blocks(&[5], true, 0).unwrap_err().to_string();
        assert!(e.contains("layers_per_block"), "{e}");
    }

    #[test]
    fn a_layout_is_checked_block_by_block() {
        let optim = OptimConfig::adam(1e-3);
        let ok = FfSpec::new(
            3,
            vec![vec![LayerSpec::linear(4), LayerSpec::TANH]],
            2,
            4,
            optim,
        );
        assert!(ok.problems().is_empty(), "{:?}", fields(&ok));
        assert_eq!(ok.blocks(), 2);
        assert_eq!(ok.block_layers(1), vec![LayerSpec::linear(2)]);

        let no_linear = FfSpec::new(3, vec![vec![LayerSpec::TANH]], 2, 4, optim);
        let p = fields(&no_linear);
        assert!(
            p.len() == 1 && p[0].contains("hidden_blocks") && p[0].contains("block 0"),
            "{p:?}"
        );
        let empty_linear = FfSpec::new(3, vec![vec![LayerSpec::linear(0)]], 2, 4, optim);
        assert!(fields(&empty_linear)[0].contains("at least one output"));
        // A conditioned SG reads the label in its first layer.
        let tanh_first = SgSpec {
            hidden_layers: vec![LayerSpec::TANH, LayerSpec::linear(4)],
            conditioned: true,
        };
        let p = fields(&ok.clone().dni(tanh_first.clone()));
        assert!(p.len() == 1 && p[0].contains("first layer"), "{p:?}");
        let plain = SgSpec {
            conditioned: false,
            ..tanh_first
        };
        assert!(ok.clone().dni(plain).problems().is_empty());
        let zero_wide = fields(&ok.clone().dni(SgSpec::mlp(vec![0], false)));
        assert!(
            zero_wide[0].contains("interfaces.sg.hidden_layers"),
            "{zero_wide:?}"
        );
        let mut short = ok.clone();
        short.interfaces.clear();
        assert!(fields(&short)[0].contains("interfaces"));
    }
}
