//! The synthetic-gradient model on the GPU, the crate's only one: `M`, what it reads, how its output
//! is injected and how its bootstrapped target is discounted, its optimiser and its switches.
//!
//! [`SgConfig`] is the part a recurrent user chooses; `Synthesizer` (crate-private;
//! [`SgInterface`](super::SgInterface) is its public face) owns the parameters (a [`Stack`]:
//! linear, or hidden layers with optional batch norm and a cDNI context) and records its jobs into
//! an encoder:
//!
//! - `evaluate` / `predict`: `M(s)` at the state where the gradient is needed;
//! - `inject`: the gradient to use there, `(scale / B)·M(s)`;
//! - `regress` / `fit`: one regression step of `M(s)` onto a target that arrived later, with the
//!   zero-predictor baseline behind `sg_explained` accumulated beside its loss;
//! - `step`: its optimiser's update.
//!
//! Its users: the recurrent core (`[h | c]` → `[dh | dc]`, two passes), the two-timescale link (a
//! message → its gradient), and each feed-forward interface (`h` → `δ`, a ring of passes in
//! flight; `ff::block::Regressor`), which also trains complete unlock's synthetic-input model
//! with it, and [`SgInterface`](super::SgInterface), an SG for a tensor of the user's own model.
//!
//! The model works in per-example units: the task loss is a batch mean, so an example's own
//! gradient is `B` times the gradient that reaches it, and `M` predicts the former.

use dni_kernels::ops::elementwise::{axpby, scale};
use dni_kernels::ops::loss::sg_l2;
use dni_kernels::ops::lstm::state_split;
use dni_kernels::ops::optim::{Optimizer, Param};
use dni_kernels::{Encoder, Gpu, Tensor};

use crate::error::{Error, Result};
use crate::layers::{Acts, Grads, Stack, StackSpec};

/// What the SG model reads of a recurrent state `[h | c]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum SgInput {
    /// The whole state `[h; c]` (the paper's choice).
    #[default]
    State,
    /// `h` alone. `h` is bounded by the output gate's tanh; `c` is not, and on an endless stream it
    /// can grow far larger than `h`, so a linear map of `[h; c]` is dominated by `c`.
    Hidden,
}

impl SgInput {
    pub fn name(self) -> &'static str {
        match self {
            SgInput::State => "state",
            SgInput::Hidden => "hidden",
        }
    }
}

/// The synthetic-gradient model's shape and training, beside the injection scale and aux weight
/// that [`crate::recurrent::Method`] carries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgConfig {
    /// What `M` reads.
    pub input: SgInput,
    /// Width of the hidden ReLU layer of an MLP `M`; 0 for a linear `M`. Either way the last
    /// layer starts at zero, so the first SG is exactly 0.
    pub hidden: usize,
    /// Discount of the bootstrapped part of `M`'s target: the target is the gradient of the next
    /// window's loss plus `discount·Jᵀ·M(s_end)`. `None`: the injection scale (the paper's rule,
    /// where the target holds the SG exactly as it was injected).
    pub discount: Option<f32>,
    /// Target normalisation: `M` regresses onto its targets divided by their running RMS `σ` (a
    /// mean square over about 100 windows, bias-corrected like Adam's), and `σ·M` is what is
    /// injected and what the aux head predicts. Adam moves each weight by about its learning rate
    /// whatever the targets' size, so without it a rate fast enough to follow the core
    /// overshoots targets that are small (early, and once the task is learnt). Fused kernels only.
    pub normalise: bool,
}

impl Default for SgConfig {
    fn default() -> Self {
        SgConfig {
            input: SgInput::State,
            hidden: 0,
            discount: None,
            normalise: false,
        }
    }
}

impl SgConfig {
    /// The discount applied to the bootstrap, given the injection scale.
    pub fn discount_or(&self, scale: f32) -> f32 {
        self.discount.unwrap_or(scale)
    }

    /// Whether this is the model the fused recurrent kernels implement: linear, on `[h; c]`, with
    /// the bootstrap discounted by the injection scale.
    pub fn is_paper_linear(&self) -> bool {
        self.input == SgInput::State
            && self.hidden == 0
            && self.discount.is_none()
            && !self.normalise
    }

    /// Whether the fused recurrent kernels implement this model: the paper's linear one, with or
    /// without target normalisation.
    pub fn is_fused(&self) -> bool {
        SgConfig {
            normalise: false,
            ..*self
        }
        .is_paper_linear()
    }

    /// The first of [`problems`](Self::problems), as an error.
    pub fn validate(&self) -> Result<()> {
        crate::error::first_problem(self.problems())
    }

    /// The model's limits that this config breaks, each naming its field (`sg_discount`,
    /// `sg_hidden`).
    pub fn problems(&self) -> Vec<Error> {
        let mut out = Vec::new();
        if let Some(g) = self.discount {
            if !(g.is_finite() && (0.0..=1.0).contains(&g)) {
                out.push(Error::Config {
                    field: "sg_discount",
                    value: g.to_string(),
                    reason: "must be in [0, 1] (other implementations use 0.9)",
                });
            }
        }
        if self.hidden > 1 << 16 {
            out.push(Error::Config {
                field: "sg_hidden",
                value: self.hidden.to_string(),
                reason: "must be at most 65536 (0: a linear SG model)",
            });
        }
        out
    }
}

/// The buffers of one evaluation of `M` over some rows: the slices of a state it reads (only for
/// [`SgInput::Hidden`]), its model's activations and its output. A caller keeps as many as it has
/// predictions in flight (the recurrent core two, a feed-forward interface a ring).
#[derive(Clone)]
pub(crate) struct SgPass {
    /// `h` and `c` of a state `[rows, width]`, `[rows, width/2]` each.
    split: Option<(Tensor, Tensor)>,
    acts: Acts,
    /// `M`'s output, `[rows, out]`, in per-example units.
    pub(crate) out: Tensor,
}

/// The sizes a recurrent [`Synthesizer`] works at.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SgShape {
    /// Width of the rows `M` is given: `2H` for a recurrent state `[h | c]`, or a message's width.
    pub width: usize,
    /// Width of the gradient `M` predicts.
    pub out: usize,
    /// Width of a context `M` also reads (a one-hot label; 0: none).
    pub context: usize,
    /// Rows of [`Synthesizer::predict`] (the lanes) and of [`Synthesizer::fit`].
    pub predict_rows: usize,
    pub fit_rows: usize,
}

/// The one synthetic-gradient model of the crate (and, with a non-zero last layer, the
/// synthetic-input model of complete unlock, which is trained the same way): a [`Stack`] with its
/// optimiser, the regression onto targets that arrive later with the zero-predictor baseline
/// beside its loss, and the injection scale. Every user — the recurrent core, the two-timescale
/// link and each feed-forward interface — records its jobs through these functions.
///
/// Units: `M` predicts one example's own gradient. Where the task loss is a batch mean over `B`
/// rows, that is `B` times the gradient that reaches the row; [`fit`](Self::fit) takes the factor
/// that converts a target to those units, and [`inject`](Self::inject) the one back.
pub(crate) struct Synthesizer {
    model: Stack,
    input: SgInput,
    scale: f32,
    /// Backward scratch, the output gradient and the target in model units, at `fit_rows`.
    grads: Grads,
    d_out: Tensor,
    units_target: Tensor,
    /// A zero predictor and a sink for its unused gradient: the baseline loss of `sg_explained`.
    zeros: Tensor,
    sink: Tensor,
    optimizer: Optimizer,
    /// The recurrent users' two passes: at the state where the gradient is needed (`predict_rows`)
    /// and at the state whose target has arrived (`fit_rows`).
    at_end: Option<SgPass>,
    at_start: Option<SgPass>,
    injected: Option<Tensor>,
}

impl Synthesizer {
    /// A model of `spec` (the caller zero-initialises its last layer where the first SG must be
    /// exactly 0) reading `input` of its rows, fitted `fit_rows` rows at a time and updated by
    /// `optimizer` (which it owns from here on). `uniform(n, bound)` draws the initial weights.
    pub(crate) fn from_stack(
        gpu: &Gpu,
        spec: &StackSpec,
        input: SgInput,
        scale: f32,
        fit_rows: usize,
        optimizer: Optimizer,
        uniform: &mut dyn FnMut(usize, f32) -> Vec<f32>,
    ) -> Result<Self> {
        let model = Stack::with_init(gpu, spec, uniform)?;
        let out = model.output();
        Ok(Synthesizer {
            grads: model.grads(gpu, fit_rows)?,
            d_out: Tensor::zeros(gpu, &[fit_rows, out])?,
            units_target: Tensor::zeros(gpu, &[fit_rows, out])?,
            zeros: Tensor::zeros(gpu, &[fit_rows, out])?,
            sink: Tensor::zeros(gpu, &[fit_rows, out])?,
            model,
            input,
            scale,
            optimizer,
            at_end: None,
            at_start: None,
            injected: None,
        })
    }

    /// The recurrent core's or the two-timescale link's model (rows = lanes, `[h | c]` →
    /// `[dh | dc]`, or a message → its gradient): linear or one hidden ReLU layer, the last layer
    /// at zero, with its two passes and its injection buffer.
    pub(crate) fn new(
        gpu: &Gpu,
        cfg: SgConfig,
        scale: f32,
        shape: SgShape,
        optimizer: Optimizer,
        uniform: &mut dyn FnMut(usize, f32) -> Vec<f32>,
    ) -> Result<Self> {
        let SgShape {
            width,
            out,
            context,
            predict_rows,
            fit_rows,
        } = shape;
        let inputs = match cfg.input {
            SgInput::State => width,
            SgInput::Hidden if width % 2 == 0 => width / 2,
            SgInput::Hidden => {
                return Err(Error::Config {
                    field: "sg_input",
                    value: "hidden".into(),
                    reason: "reads the first half of a state [h | c], and this row is of odd \
                             width; use `state`",
                })
            }
        };
        let hidden: Vec<usize> = (cfg.hidden > 0).then_some(cfg.hidden).into_iter().collect();
        let spec = StackSpec::mlp(inputs, context, &hidden, false, out, true);
        let mut m = Self::from_stack(gpu, &spec, cfg.input, scale, fit_rows, optimizer, uniform)?;
        m.at_end = Some(m.pass(gpu, predict_rows)?);
        m.at_start = Some(m.pass(gpu, fit_rows)?);
        m.injected = Some(Tensor::zeros(gpu, &[predict_rows, out])?);
        Ok(m)
    }

    /// Buffers for one evaluation over `rows` rows.
    pub(crate) fn pass(&self, gpu: &Gpu, rows: usize) -> Result<SgPass> {
        let split = match self.input {
            SgInput::Hidden => {
                let half = self.model.input();
                Some((
                    Tensor::zeros(gpu, &[rows, half])?,
                    Tensor::zeros(gpu, &[rows, half])?,
                ))
            }
            SgInput::State => None,
        };
        Ok(SgPass {
            split,
            acts: self.model.acts(gpu, rows)?,
            out: Tensor::zeros(gpu, &[rows, self.model.output()])?,
        })
    }

    /// What the model reads of `s`: `s` itself, or the `h` half split off into the pass.
    fn model_input<'a>(
        &self,
        enc: &mut Encoder,
        pass: &'a SgPass,
        s: &'a Tensor,
    ) -> Result<&'a Tensor> {
        match &pass.split {
            Some((h, c)) => {
                state_split(enc, s, h, c)?;
                Ok(h)
            }
            None => Ok(s),
        }
    }

    /// Records `pass.out = M(s[, ctx])` (batch norm, if any, in training mode).
    pub(crate) fn evaluate(
        &self,
        enc: &mut Encoder,
        pass: &SgPass,
        s: &Tensor,
        ctx: Option<&Tensor>,
    ) -> Result<()> {
        let x = self.model_input(enc, pass, s)?;
        self.model.forward(enc, &pass.acts, x, ctx, &pass.out, true)
    }

    /// Records one regression step of `pass.out` (from [`evaluate`](Self::evaluate) of the same
    /// `s`) onto `units·target`, a constant: the loss `0.5·‖M(s) − units·target‖²` is added to
    /// `loss` and the zero predictor's to `zero_loss` when given (`[1]` sums, the two halves of
    /// `sg_explained`), and the parameter gradients, scaled by `factor`, are written. The optimiser
    /// step is separate ([`step`](Self::step)), so that other heads can share it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn regress(
        &self,
        enc: &mut Encoder,
        pass: &SgPass,
        s: &Tensor,
        ctx: Option<&Tensor>,
        target: &Tensor,
        units: f32,
        factor: f32,
        loss: &Tensor,
        zero_loss: Option<&Tensor>,
    ) -> Result<()> {
        let target = match units {
            1.0 => target,
            u => {
                axpby(enc, u, target, 0.0, target, &self.units_target)?;
                &self.units_target
            }
        };
        sg_l2(enc, &pass.out, target, &self.d_out, factor, Some(loss))?;
        if let Some(zero_loss) = zero_loss {
            sg_l2(enc, &self.zeros, target, &self.sink, 0.0, Some(zero_loss))?;
        }
        let x = match &pass.split {
            Some((h, _)) => h,
            None => s,
        };
        self.model.backward(
            enc,
            &pass.acts,
            &self.grads,
            x,
            ctx,
            &pass.out,
            &self.d_out,
            None,
        )
    }

    fn recurrent_pass(pass: &Option<SgPass>) -> Result<&SgPass> {
        pass.as_ref().ok_or_else(|| {
            Error::Internal("a feed-forward SG model has no recurrent passes".into())
        })
    }

    /// Records `M(s[, ctx])` at the state where the gradient is needed (the window's last state).
    pub(crate) fn predict(
        &self,
        enc: &mut Encoder,
        s: &Tensor,
        ctx: Option<&Tensor>,
    ) -> Result<()> {
        self.evaluate(enc, Self::recurrent_pass(&self.at_end)?, s, ctx)
    }

    /// `M(s)` from the last [`predict`](Self::predict), per-lane units.
    pub(crate) fn prediction(&self) -> Result<&Tensor> {
        Ok(&Self::recurrent_pass(&self.at_end)?.out)
    }

    /// Records `(scale·factor)·M(s)` from the last [`predict`](Self::predict) into the injection
    /// buffer and returns it (`factor` is `1/B` where the task loss is a batch mean).
    pub(crate) fn inject(&self, enc: &mut Encoder, factor: f32) -> Result<&Tensor> {
        let injected = self.injected.as_ref().ok_or_else(|| {
            Error::Internal("a feed-forward SG model has no injection buffer".into())
        })?;
        enc.copy(self.prediction()?, injected)?;
        scale(enc, self.scale * factor, injected)?;
        Ok(injected)
    }

    /// `M(s)` from the last [`fit`](Self::fit), per-lane units: what the model predicted for the
    /// rows whose targets it was then fitted to.
    pub(crate) fn fitted(&self) -> Result<&Tensor> {
        Ok(&Self::recurrent_pass(&self.at_start)?.out)
    }

    /// Records `M(s)` at the state whose target has arrived and one regression step onto `target`
    /// (per-lane units), as [`regress`](Self::regress).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fit(
        &self,
        enc: &mut Encoder,
        s: &Tensor,
        ctx: Option<&Tensor>,
        target: &Tensor,
        factor: f32,
        loss: &Tensor,
        zero_loss: &Tensor,
    ) -> Result<()> {
        let pass = Self::recurrent_pass(&self.at_start)?;
        self.evaluate(enc, pass, s, ctx)?;
        self.regress(
            enc,
            pass,
            s,
            ctx,
            target,
            1.0,
            factor,
            loss,
            Some(zero_loss),
        )
    }

    /// The model's layers, for feed-forward checkpoints and the probe.
    pub(crate) fn stack(&self) -> &Stack {
        &self.model
    }

    /// The parameters by name: `sg.w_in`, `sg.b_in` (an MLP's hidden layer), `sg.w`, `sg.wc` (a
    /// conditioned model's context weight), `sg.b` (the output layer). A model of
    /// [`new`](Self::new) has no other layers.
    pub(crate) fn params(&self) -> Vec<(&'static str, &Param)> {
        let names = self.model.param_names();
        let last_layer = names
            .last()
            .and_then(|n| n.split_once('.'))
            .map(|(layer, _)| layer.to_string());
        names
            .iter()
            .zip(self.model.params())
            .map(|(n, p)| {
                let (layer, suffix) = n.split_once('.').unwrap_or((n, ""));
                let out = Some(layer) == last_layer.as_deref();
                let name = match (suffix, out) {
                    ("w", true) => "sg.w",
                    ("wc", true) => "sg.wc",
                    ("b", true) => "sg.b",
                    ("w", false) => "sg.w_in",
                    ("wc", false) => "sg.wc_in",
                    ("b", false) => "sg.b_in",
                    _ => "sg.other",
                };
                (name, p)
            })
            .collect()
    }

    /// One optimiser step over the model's parameters and `extra` (e.g. the aux head).
    pub(crate) fn step(&self, enc: &mut Encoder, with_model: bool, extra: &[&Param]) -> Result<()> {
        let mut ps: Vec<&Param> = Vec::new();
        if with_model {
            ps.extend(self.model.params());
        }
        ps.extend_from_slice(extra);
        if !ps.is_empty() {
            self.optimizer.step(enc, &ps)?;
        }
        Ok(())
    }

    pub(crate) fn optimizer(&self) -> &Optimizer {
        &self.optimizer
    }
}
