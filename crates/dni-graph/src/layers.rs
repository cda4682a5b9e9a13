//! Feed-forward layers (Linear, BatchNorm, an activation, an LSTM over each row's steps) and
//! [`Stack`], a sequence of them with its parameters, that records its forward and backward passes
//! into an [`Encoder`].
//!
//! Activations live in an [`Acts`] and backward scratch in a [`Grads`], both separate from the
//! parameters, so one stack can run on several in-flight batches (a ring of [`Acts`]) or on an
//! evaluation batch of another size. The last layer writes into a tensor the caller passes in, which
//! is how a block's output lands directly in a buffer that is handed to the next block.
//!
//! A layer of the user's own is a [`CustomLayer`] (`LayerSpec::Custom`): it says its width and
//! builds its parameters, and what it builds ([`CustomParams`]) records its forward and backward
//! passes from the kernels' ops (or kernels of its own), with scratch the stack keeps per batch.

use dni_kernels::ops::batchnorm::{batchnorm_backward, batchnorm_forward, BatchNormParams};
pub use dni_kernels::ops::elementwise::Activation;
use dni_kernels::ops::elementwise::{activate, activate_backward, swap_leading_axes};
use dni_kernels::ops::lstm::{LstmGrads, LstmParams, LstmWindow};
use dni_kernels::ops::optim::Param;
use dni_kernels::{Encoder, Gpu, Tensor};
use dni_tasks::Rng;
use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::linear::Linear;
use crate::lstm::LstmInit;

/// One layer of a [`Stack`]. Non-exhaustive: a `match` outside this crate needs a `_` arm, so that a
/// new kind of layer is not a breaking change.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum LayerSpec {
    /// `y = x·W (+ c·Wc) (+ b)`; `c` is the stack's context (first layer only).
    Linear {
        out: usize,
        bias: bool,
        /// Start at exactly zero (the synthetic-gradient models' output layer); otherwise weights and
        /// bias are uniform in ±1/√fan_in.
        zero_init: bool,
    },
    /// Per-feature batch normalisation over the rows (batch statistics in training, running
    /// statistics in inference).
    BatchNorm,
    /// An elementwise activation (ReLU, tanh, sigmoid, identity); its backward reads its output.
    Activation(Activation),
    /// An LSTM that reads each row of `steps · f` features as a sequence of `steps` steps of `f`
    /// features (step-major: step 0's `f` features first), from a zero state, and outputs its last
    /// hidden state, `hidden` features: a sequence encoder (MNIST read row by row is `steps = 28`).
    /// Its backward runs BPTT through every step. Weights are [`LstmInit`]'s, as the recurrent
    /// trainers' LSTM starts.
    Lstm { hidden: usize, steps: usize },
    /// A layer of the user's own.
    Custom(Arc<dyn CustomLayer>),
}

impl PartialEq for LayerSpec {
    /// Built-in layers compare by value; custom layers are equal when they are the same object.
    fn eq(&self, other: &Self) -> bool {
        use LayerSpec::*;
        match (self, other) {
            (
                Linear {
                    out: a,
                    bias: b,
                    zero_init: z,
                },
                Linear {
                    out: a2,
                    bias: b2,
                    zero_init: z2,
                },
            ) => (a, b, z) == (a2, b2, z2),
            (BatchNorm, BatchNorm) => true,
            (Activation(a), Activation(b)) => a == b,
            (
                Lstm { hidden, steps },
                Lstm {
                    hidden: h2,
                    steps: s2,
                },
            ) => (hidden, steps) == (h2, s2),
            (Custom(a), Custom(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// What a layer of the user's own is before it has parameters: its width, and how to build them.
/// It sits in a [`LayerSpec::Custom`] like any other layer, in a stack, a feed-forward block or an
/// SG model.
pub trait CustomLayer: Send + Sync + fmt::Debug {
    /// Output features for `input` features in, or the reason it cannot take them.
    fn output(&self, input: usize) -> std::result::Result<usize, String>;
    /// Allocates and initialises the parameters for `input` features; `uniform(n, bound)` draws `n`
    /// values uniform in `±bound` from the network's seeded generator.
    fn build(
        &self,
        gpu: &Gpu,
        input: usize,
        uniform: &mut dyn FnMut(usize, f32) -> Vec<f32>,
    ) -> Result<Box<dyn CustomParams>>;
}

/// A built [`CustomLayer`]: its parameters and its passes. Tensors are `[rows, features]`; the
/// row count is the batch of the call (training and evaluation batches differ).
pub trait CustomParams: Send + Sync {
    /// Trainable parameters by name (unique within the layer); the block's optimiser updates them
    /// from their `grad`, and checkpoints save them under `l{layer}.{name}`.
    fn params(&self) -> Vec<(String, &Param)>;
    /// Buffers the passes need for batches of `batch` rows (kept by the stack, one set per batch
    /// in flight, and handed to both passes of that batch).
    fn scratch(&self, _gpu: &Gpu, _batch: usize) -> Result<Vec<Tensor>> {
        Ok(Vec::new())
    }
    /// Records `y = f(x)`.
    fn forward(&self, enc: &mut Encoder, x: &Tensor, y: &Tensor, scratch: &[Tensor]) -> Result<()>;
    /// Records the backward pass of the forward that wrote `y` (and `scratch`) from `x`: every
    /// parameter's `grad` from `dy`, and the gradient at `x` into `dx` when given (both overwritten,
    /// not accumulated).
    fn backward(
        &self,
        enc: &mut Encoder,
        x: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        dx: Option<&Tensor>,
        scratch: &[Tensor],
    ) -> Result<()>;
}

impl LayerSpec {
    pub const RELU: Self = LayerSpec::Activation(Activation::Relu);
    pub const TANH: Self = LayerSpec::Activation(Activation::Tanh);
    pub const SIGMOID: Self = LayerSpec::Activation(Activation::Sigmoid);

    /// One hidden layer of an MLP: `Linear → [BatchNorm] → ReLU`.
    pub fn hidden(width: usize, batchnorm: bool) -> Vec<LayerSpec> {
        let mut v = vec![LayerSpec::Linear {
            out: width,
            // A bias before batch norm is cancelled by the mean subtraction.
            bias: !batchnorm,
            zero_init: false,
        }];
        if batchnorm {
            v.push(LayerSpec::BatchNorm);
        }
        v.push(LayerSpec::RELU);
        v
    }

    /// `y = x·W + b`, weights uniform in ±1/√fan_in.
    pub fn linear(out: usize) -> Self {
        LayerSpec::Linear {
            out,
            bias: true,
            zero_init: false,
        }
    }
}

/// A stack of layers: `input` features in, optionally `context` features mixed into the first
/// (Linear) layer — the one-hot label of cDNI — without concatenating them.
#[derive(Clone, Debug, PartialEq)]
pub struct StackSpec {
    pub input: usize,
    pub context: usize,
    pub layers: Vec<LayerSpec>,
}

impl StackSpec {
    /// Hidden layers `Linear → [BatchNorm] → ReLU` of the given widths, then a Linear to `out`.
    pub fn mlp(
        input: usize,
        context: usize,
        hidden: &[usize],
        batchnorm: bool,
        out: usize,
        zero_last: bool,
    ) -> Self {
        let layers: Vec<LayerSpec> = hidden
            .iter()
            .flat_map(|&h| LayerSpec::hidden(h, batchnorm))
            .collect();
        Self::with_output(input, context, &layers, out, zero_last)
    }

    /// `hidden_layers`, then a Linear to `out` (with a bias; exactly zero at the start with
    /// `zero_last`, as every synthetic-gradient model's output layer is).
    pub fn with_output(
        input: usize,
        context: usize,
        hidden_layers: &[LayerSpec],
        out: usize,
        zero_last: bool,
    ) -> Self {
        let mut layers = hidden_layers.to_vec();
        layers.push(LayerSpec::Linear {
            out,
            bias: true,
            zero_init: zero_last,
        });
        Self {
            input,
            context,
            layers,
        }
    }

    /// Output features.
    pub fn output(&self) -> usize {
        let mut f = self.input;
        for l in &self.layers {
            match l {
                LayerSpec::Linear { out, .. } => f = *out,
                LayerSpec::Lstm { hidden, .. } => f = *hidden,
                _ => {}
            }
        }
        f
    }
}

/// Layer `l`'s LSTM buffers in `acts`.
fn lstm_scratch(acts: &Acts, l: usize) -> Result<&LstmScratch> {
    acts.lstm
        .get(l)
        .and_then(Option::as_deref)
        .ok_or_else(|| Error::Internal("LSTM layer buffers missing".into()))
}

pub(crate) struct BatchNorm {
    pub(crate) gamma: Param,
    pub(crate) beta: Param,
    pub(crate) running_mean: Tensor,
    pub(crate) running_var: Tensor,
}

pub(crate) enum Layer {
    Linear(Linear<Option<Param>>),
    BatchNorm(BatchNorm),
    Activation(Activation),
    Lstm(LstmLayer),
    Custom(Box<dyn CustomParams>),
}

/// A built [`LayerSpec::Lstm`]: its parameters. Each batch's window (the saved gates and states
/// that BPTT reads) lives in that batch's [`Acts`], so batches in flight do not share one.
pub(crate) struct LstmLayer {
    /// `[f, 4H]`, `[H, 4H]`, `[4H]`.
    w_x: Param,
    w_h: Param,
    bias: Param,
    /// Features per step.
    input: usize,
    hidden: usize,
    steps: usize,
}

/// One batch's buffers of an LSTM layer.
struct LstmScratch {
    window: LstmWindow,
    /// The rows as `[steps, batch, f]`, and their gradient.
    x_seq: Tensor,
    dx_seq: Tensor,
    /// `[batch, 2H]` zeros: every row starts from a zero state.
    s0: Tensor,
    /// `[steps, batch, H]`: the loss reaches only the last step's outputs; the others stay zero.
    dh_seq: Tensor,
    /// `[batch, 2H]`: the gradient at the zero first state (not used).
    ds0: Tensor,
}

impl LstmLayer {
    fn new(
        gpu: &Gpu,
        uniform: &mut dyn FnMut(usize, f32) -> Vec<f32>,
        features: usize,
        hidden: usize,
        steps: usize,
    ) -> Result<Self> {
        let layer = |why: String| Error::Layer {
            layer: format!("Lstm {{ hidden: {hidden}, steps: {steps} }}"),
            why,
        };
        if hidden == 0 || steps == 0 {
            return Err(layer("needs at least one unit and one step".into()));
        }
        if !features.is_multiple_of(steps) {
            return Err(layer(format!(
                "reads each row as {steps} steps of equal width; {features} input features do not \
                 divide into {steps}"
            )));
        }
        let input = features / steps;
        let init = LstmInit::draw_with(uniform, input, hidden)?;
        let h4 = 4 * hidden;
        Ok(Self {
            w_x: Param::new(gpu, Tensor::from_slice(gpu, &[input, h4], &init.w_x)?)?,
            w_h: Param::new(gpu, Tensor::from_slice(gpu, &[hidden, h4], &init.w_h)?)?,
            bias: Param::new(gpu, Tensor::from_slice(gpu, &[h4], &init.bias)?)?,
            input,
            hidden,
            steps,
        })
    }

    fn named_params(&self) -> [(&'static str, &Param); 3] {
        [("w_x", &self.w_x), ("w_h", &self.w_h), ("bias", &self.bias)]
    }

    fn values(&self) -> LstmParams<'_> {
        LstmParams {
            w_x: &self.w_x.value,
            w_h: &self.w_h.value,
            bias: &self.bias.value,
        }
    }

    fn scratch(&self, gpu: &Gpu, batch: usize) -> Result<LstmScratch> {
        let (i, h, t) = (self.input, self.hidden, self.steps);
        Ok(LstmScratch {
            window: LstmWindow::new(gpu, i, h, batch, t)?,
            x_seq: Tensor::zeros(gpu, &[t * batch, i])?,
            dx_seq: Tensor::zeros(gpu, &[t * batch, i])?,
            s0: Tensor::zeros(gpu, &[batch, 2 * h])?,
            dh_seq: Tensor::zeros(gpu, &[t * batch, h])?,
            ds0: Tensor::zeros(gpu, &[batch, 2 * h])?,
        })
    }

    /// `y` `[B, H]` = the last hidden state of the LSTM run over each row of `x` `[B, T·f]`.
    fn forward(&self, enc: &mut Encoder, s: &LstmScratch, x: &Tensor, y: &Tensor) -> Result<()> {
        let (b, h, t) = (s.window.batch(), self.hidden, self.steps);
        swap_leading_axes(enc, x, [b, t, self.input], &s.x_seq)?;
        s.window.forward(enc, self.values(), &s.x_seq, &s.s0)?;
        enc.copy_region(s.window.h_seq(), (t - 1) * b * h, y, 0, b * h)?;
        Ok(())
    }

    /// BPTT from `dy` at the last hidden state: every parameter's gradient (overwritten), and the
    /// gradient at `x` into `dx` when given.
    fn backward(
        &self,
        enc: &mut Encoder,
        s: &LstmScratch,
        dy: &Tensor,
        dx: Option<&Tensor>,
    ) -> Result<()> {
        let (b, h, t) = (s.window.batch(), self.hidden, self.steps);
        enc.copy_region(dy, 0, &s.dh_seq, (t - 1) * b * h, b * h)?;
        let grads = LstmGrads {
            dw_x: &self.w_x.grad,
            dw_h: &self.w_h.grad,
            dbias: &self.bias.grad,
        };
        s.window.backward(
            enc,
            self.values(),
            &s.x_seq,
            &s.s0,
            &s.dh_seq,
            None,
            grads,
            &s.ds0,
            dx.map(|_| &s.dx_seq),
        )?;
        if let Some(dx) = dx {
            swap_leading_axes(enc, &s.dx_seq, [t, b, self.input], dx)?;
        }
        Ok(())
    }
}

/// A stack's parameters. Build with [`Stack::new`].
pub struct Stack {
    spec: StackSpec,
    layers: Vec<Layer>,
    /// Output features of each layer.
    widths: Vec<usize>,
    bn: BatchNormParams,
}

/// The activations of one forward pass at one batch size: every layer's output but the last
/// (which goes to the caller's tensor), and batch norm's saved statistics.
#[derive(Clone)]
pub struct Acts {
    batch: usize,
    outs: Vec<Tensor>,
    bn_saved: Vec<Option<(Tensor, Tensor)>>,
    /// Each custom layer's scratch (empty for the others).
    custom: Vec<Vec<Tensor>>,
    /// Each LSTM layer's window and buffers (`None` for the others); a clone shares them, as it
    /// shares the tensors above.
    lstm: Vec<Option<Arc<LstmScratch>>>,
}

impl Acts {
    pub fn batch(&self) -> usize {
        self.batch
    }
}

/// Backward scratch: the gradient at every inner layer boundary, plus one for the stack's input
/// when the first layer needs somewhere to write it.
pub struct Grads {
    d: Vec<Tensor>,
    input_scratch: Option<Tensor>,
}

impl Stack {
    /// Allocates and initialises the parameters; `rng` draws the initial weights.
    pub fn new(gpu: &Gpu, spec: &StackSpec, rng: &mut Rng) -> Result<Self> {
        Self::with_init(gpu, spec, &mut |n, bound| rng.symmetric(n, bound))
    }

    /// [`Stack::new`] with the initial weights drawn by `uniform(n, bound)` (`n` values uniform in
    /// `±bound`), for a caller with a generator of its own.
    pub fn with_init(
        gpu: &Gpu,
        spec: &StackSpec,
        uniform: &mut dyn FnMut(usize, f32) -> Vec<f32>,
    ) -> Result<Self> {
        if spec.input == 0 {
            return Err(Error::config(
                "stack input",
                0,
                "needs at least one input feature",
            ));
        }
        if spec.layers.is_empty() {
            return Err(Error::config("stack layers", 0, "needs at least one layer"));
        }
        if spec.context > 0 && !matches!(spec.layers[0], LayerSpec::Linear { .. }) {
            return Err(Error::config(
                "stack context",
                spec.context,
                "a context input needs a Linear first layer",
            ));
        }
        let mut layers = Vec::with_capacity(spec.layers.len());
        let mut widths = Vec::with_capacity(spec.layers.len());
        let mut f = spec.input;
        for (i, l) in spec.layers.iter().enumerate() {
            match l.clone() {
                LayerSpec::Linear {
                    out,
                    bias,
                    zero_init,
                } => {
                    if out == 0 {
                        return Err(Error::config("Linear out", 0, "needs at least one output"));
                    }
                    let ctx = if i == 0 { spec.context } else { 0 };
                    layers.push(Layer::Linear(Linear::layer(
                        gpu, uniform, f, ctx, out, bias, zero_init,
                    )?));
                    f = out;
                }
                LayerSpec::BatchNorm => layers.push(Layer::BatchNorm(BatchNorm {
                    gamma: Param::new(gpu, Tensor::from_slice(gpu, &[f], &vec![1.0; f])?)?,
                    beta: Param::new(gpu, Tensor::zeros(gpu, &[f])?)?,
                    running_mean: Tensor::zeros(gpu, &[f])?,
                    running_var: Tensor::from_slice(gpu, &[f], &vec![1.0; f])?,
                })),
                LayerSpec::Activation(act) => layers.push(Layer::Activation(act)),
                LayerSpec::Lstm { hidden, steps } => {
                    layers.push(Layer::Lstm(LstmLayer::new(gpu, uniform, f, hidden, steps)?));
                    f = hidden;
                }
                LayerSpec::Custom(custom) => {
                    let out = custom.output(f).map_err(|why| Error::Layer {
                        layer: format!("{custom:?}"),
                        why: format!("cannot take {f} input features: {why}"),
                    })?;
                    if out == 0 {
                        return Err(Error::Layer {
                            layer: format!("{custom:?}"),
                            why: "has no output features".into(),
                        });
                    }
                    layers.push(Layer::Custom(custom.build(gpu, f, uniform)?));
                    f = out;
                }
            }
            widths.push(f);
        }
        Ok(Self {
            spec: spec.clone(),
            layers,
            widths,
            bn: BatchNormParams::default(),
        })
    }

    pub fn spec(&self) -> &StackSpec {
        &self.spec
    }
    pub fn input(&self) -> usize {
        self.spec.input
    }
    pub fn context(&self) -> usize {
        self.spec.context
    }
    pub fn output(&self) -> usize {
        self.widths.last().copied().unwrap_or(self.spec.input)
    }
    fn has_batchnorm(&self) -> bool {
        self.layers.iter().any(|l| matches!(l, Layer::BatchNorm(_)))
    }

    /// Activation buffers for batches of `batch` rows.
    pub fn acts(&self, gpu: &Gpu, batch: usize) -> Result<Acts> {
        let n = self.layers.len();
        let mut outs = Vec::with_capacity(n - 1);
        let mut bn_saved = Vec::with_capacity(n);
        let mut custom = Vec::with_capacity(n);
        let mut lstm = Vec::with_capacity(n);
        for (l, layer) in self.layers.iter().enumerate() {
            if l + 1 < n {
                outs.push(Tensor::zeros(gpu, &[batch, self.widths[l]])?);
            }
            custom.push(match layer {
                Layer::Custom(c) => c.scratch(gpu, batch)?,
                _ => Vec::new(),
            });
            lstm.push(match layer {
                Layer::Lstm(r) => Some(Arc::new(r.scratch(gpu, batch)?)),
                _ => None,
            });
            bn_saved.push(match layer {
                Layer::BatchNorm(_) => Some((
                    Tensor::zeros(gpu, &[self.widths[l]])?,
                    Tensor::zeros(gpu, &[self.widths[l]])?,
                )),
                _ => None,
            });
        }
        Ok(Acts {
            batch,
            outs,
            bn_saved,
            custom,
            lstm,
        })
    }

    /// Backward scratch for batches of `batch` rows.
    pub fn grads(&self, gpu: &Gpu, batch: usize) -> Result<Grads> {
        let n = self.layers.len();
        let mut d = Vec::with_capacity(n - 1);
        for l in 0..n - 1 {
            d.push(Tensor::zeros(gpu, &[batch, self.widths[l]])?);
        }
        // Batch norm writes its input gradient unconditionally; give a leading one somewhere to write.
        let input_scratch = if matches!(self.layers[0], Layer::BatchNorm(_)) {
            Some(Tensor::zeros(gpu, &[batch, self.spec.input])?)
        } else {
            None
        };
        Ok(Grads { d, input_scratch })
    }

    /// Every trainable parameter, in layer order.
    pub fn params(&self) -> Vec<&Param> {
        let mut v = Vec::new();
        for l in &self.layers {
            match l {
                Layer::Linear(lin) => v.extend(lin.named_params().into_iter().map(|(_, p)| p)),
                Layer::BatchNorm(bn) => {
                    v.push(&bn.gamma);
                    v.push(&bn.beta);
                }
                Layer::Activation(_) => {}
                Layer::Lstm(r) => v.extend(r.named_params().map(|(_, p)| p)),
                Layer::Custom(c) => v.extend(c.params().into_iter().map(|(_, p)| p)),
            }
        }
        v
    }

    /// Names matching [`Stack::params`] (`l0.w`, `l0.wc`, `l0.b`, `l1.gamma`, …).
    pub fn param_names(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            match l {
                Layer::Linear(lin) => v.extend(
                    lin.named_params()
                        .into_iter()
                        .map(|(name, _)| format!("l{i}.{name}")),
                ),
                Layer::BatchNorm(_) => {
                    v.push(format!("l{i}.gamma"));
                    v.push(format!("l{i}.beta"));
                }
                Layer::Activation(_) => {}
                Layer::Lstm(r) => v.extend(
                    r.named_params()
                        .into_iter()
                        .map(|(name, _)| format!("l{i}.{name}")),
                ),
                Layer::Custom(c) => v.extend(
                    c.params()
                        .into_iter()
                        .map(|(name, _)| format!("l{i}.{name}")),
                ),
            }
        }
        v
    }

    /// Batch norm's running statistics (mean, variance) per batch-norm layer, in layer order.
    pub fn running_stats(&self) -> Vec<(&Tensor, &Tensor)> {
        self.layers
            .iter()
            .filter_map(|l| match l {
                Layer::BatchNorm(bn) => Some((&bn.running_mean, &bn.running_var)),
                _ => None,
            })
            .collect()
    }

    fn check_io(
        &self,
        op: &'static str,
        acts: &Acts,
        input: &Tensor,
        ctx: Option<&Tensor>,
        out: &Tensor,
        training: bool,
    ) -> Result<()> {
        let b = acts.batch;
        let want = |t: &Tensor, cols: usize, what: &str| -> Result<()> {
            if t.len() != b * cols {
                return Err(Error::shape(
                    op,
                    format!("{what} {:?} should be [{b}, {cols}]", t.shape()),
                ));
            }
            Ok(())
        };
        want(input, self.spec.input, "input")?;
        want(out, self.output(), "output")?;
        match (ctx, self.spec.context) {
            (Some(c), n) if n > 0 => want(c, n, "context")?,
            (None, 0) => {}
            (Some(_), _) => {
                return Err(Error::shape(
                    op,
                    "context given to a stack without context input".into(),
                ))
            }
            (None, n) => {
                return Err(Error::shape(
                    op,
                    format!("stack needs a [{b}, {n}] context"),
                ))
            }
        }
        if training && self.has_batchnorm() && b < 2 {
            return Err(Error::shape(
                op,
                format!("batch norm in training needs 2+ rows, batch is {b}"),
            ));
        }
        Ok(())
    }

    /// Records the forward pass of `input` (and `ctx`) into `out`, keeping the intermediates in
    /// `acts`. `training` selects batch statistics (and updates the running ones) or running ones.
    pub fn forward(
        &self,
        enc: &mut Encoder,
        acts: &Acts,
        input: &Tensor,
        ctx: Option<&Tensor>,
        out: &Tensor,
        training: bool,
    ) -> Result<()> {
        self.check_io("Stack::forward", acts, input, ctx, out, training)?;
        let n = self.layers.len();
        for (l, layer) in self.layers.iter().enumerate() {
            let x = if l == 0 { input } else { &acts.outs[l - 1] };
            let y = if l + 1 == n { out } else { &acts.outs[l] };
            match layer {
                Layer::Linear(lin) => lin.forward_ctx(enc, x, ctx, y)?,
                Layer::BatchNorm(bn) => {
                    let (mean, invstd) = acts.bn_saved[l]
                        .as_ref()
                        .ok_or_else(|| Error::Internal("batch-norm statistics missing".into()))?;
                    batchnorm_forward(
                        enc,
                        x,
                        &bn.gamma.value,
                        &bn.beta.value,
                        y,
                        mean,
                        invstd,
                        &bn.running_mean,
                        &bn.running_var,
                        training,
                        self.bn,
                    )?;
                }
                Layer::Activation(act) => activate(enc, *act, x, y)?,
                Layer::Lstm(r) => r.forward(enc, lstm_scratch(acts, l)?, x, y)?,
                Layer::Custom(c) => c.forward(enc, x, y, &acts.custom[l])?,
            }
        }
        Ok(())
    }

    /// Records the backward pass of a training-mode forward that left `acts` and `out`: writes every
    /// parameter's gradient (overwriting) from `dout` (the gradient at `out`), and the gradient at
    /// `input` into `dx` when given. Does not touch the parameters.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        enc: &mut Encoder,
        acts: &Acts,
        grads: &Grads,
        input: &Tensor,
        ctx: Option<&Tensor>,
        out: &Tensor,
        dout: &Tensor,
        dx: Option<&Tensor>,
    ) -> Result<()> {
        self.check_io("Stack::backward", acts, input, ctx, out, true)?;
        if dout.len() != out.len() {
            return Err(Error::shape(
                "Stack::backward",
                format!("dout {:?} vs out {:?}", dout.shape(), out.shape()),
            ));
        }
        if let Some(dx) = dx {
            if dx.len() != input.len() {
                return Err(Error::shape(
                    "Stack::backward",
                    format!("dx {:?} vs input {:?}", dx.shape(), input.shape()),
                ));
            }
        }
        if grads.d.len() + 1 != self.layers.len()
            || grads
                .d
                .first()
                .is_some_and(|t| t.len() != acts.outs[0].len())
        {
            return Err(Error::shape(
                "Stack::backward",
                "grads were made for another batch size".into(),
            ));
        }
        let n = self.layers.len();
        for (l, layer) in self.layers.iter().enumerate().rev() {
            let x = if l == 0 { input } else { &acts.outs[l - 1] };
            let y = if l + 1 == n { out } else { &acts.outs[l] };
            let dy = if l + 1 == n { dout } else { &grads.d[l] };
            let dxl = if l == 0 { dx } else { Some(&grads.d[l - 1]) };
            match layer {
                Layer::Linear(lin) => {
                    lin.backward_params_ctx(enc, x, ctx, dy)?;
                    if let Some(dxl) = dxl {
                        lin.backward_input(enc, dy, dxl, false)?;
                    }
                }
                Layer::BatchNorm(bn) => {
                    let (mean, invstd) = acts.bn_saved[l]
                        .as_ref()
                        .ok_or_else(|| Error::Internal("batch-norm statistics missing".into()))?;
                    let target = match (dxl, &grads.input_scratch) {
                        (Some(t), _) | (None, Some(t)) => t,
                        (None, None) => {
                            return Err(Error::Internal(
                                "batch norm has no input-gradient buffer".into(),
                            ))
                        }
                    };
                    batchnorm_backward(
                        enc,
                        x,
                        dy,
                        &bn.gamma.value,
                        mean,
                        invstd,
                        target,
                        &bn.gamma.grad,
                        &bn.beta.grad,
                    )?;
                }
                Layer::Activation(act) => {
                    if let Some(dxl) = dxl {
                        activate_backward(enc, *act, y, dy, dxl, false)?;
                    }
                }
                Layer::Lstm(r) => r.backward(enc, lstm_scratch(acts, l)?, dy, dxl)?,
                Layer::Custom(c) => c.backward(enc, x, y, dy, dxl, &acts.custom[l])?,
            }
        }
        Ok(())
    }
}
