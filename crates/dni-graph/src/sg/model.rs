//! The synthetic-gradient model on the GPU: `M`, what it reads, how its output is injected and how
//! its bootstrapped target is discounted, its optimiser and its switches.
//!
//! [`SgConfig`] is the part a user chooses; [`Synthesizer`] owns the parameters and buffers of one
//! model for a batch of `B` lanes and records its three jobs into an encoder:
//!
//! - [`predict`](Synthesizer::predict): `M(s)` at the state where the gradient is needed;
//! - [`inject`](Synthesizer::inject): the gradient to use there, `(scale / B)·M(s)`;
//! - [`fit`](Synthesizer::fit): one regression step of `M(s)` onto a target (the bootstrapped
//!   gradient), with the zero-predictor baseline behind `sg_explained` accumulated beside its loss.
//!
//! The model works in per-lane units: the task loss is a batch mean, so a lane's own gradient is
//! `B` times the gradient that reaches it, and `M` predicts the former.

use dni_kernels::ops::elementwise::{activate, activate_backward, scale, Activation};
use dni_kernels::ops::loss::sg_l2;
use dni_kernels::ops::lstm::state_split;
use dni_kernels::ops::optim::{Optimizer, Param};
use dni_kernels::{Encoder, Gpu, Tensor};

use crate::linear::Linear;
use crate::recurrent::{RecurrentError, Result};

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
}

impl Default for SgConfig {
    fn default() -> Self {
        SgConfig {
            input: SgInput::State,
            hidden: 0,
            discount: None,
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
        self.input == SgInput::State && self.hidden == 0 && self.discount.is_none()
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if let Some(g) = self.discount {
            if !(g.is_finite() && (0.0..=1.0).contains(&g)) {
                return Err(RecurrentError::Config {
                    field: "sg_discount",
                    value: g.to_string(),
                    reason: "must be in [0, 1] (other implementations use 0.9)",
                });
            }
        }
        if self.hidden > 1 << 16 {
            return Err(RecurrentError::Config {
                field: "sg_hidden",
                value: self.hidden.to_string(),
                reason: "must be at most 65536 (0: a linear SG model)",
            });
        }
        Ok(())
    }
}

/// Buffers of one evaluation of `M` over some rows: its input (when it is a slice of the state),
/// hidden layer and output.
struct Pass {
    /// `h` and `c` of the state, `[rows, width/2]` each (only for `SgInput::Hidden`).
    x: Option<Tensor>,
    c: Option<Tensor>,
    /// The MLP's hidden layer `[B, hidden]` before and after the ReLU.
    pre: Option<Tensor>,
    act: Option<Tensor>,
    out: Tensor,
}

/// The sizes a [`Synthesizer`] works at.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SgShape {
    /// Width of the rows `M` is given: `2H` for a recurrent state `[h | c]`, or a message's width.
    pub width: usize,
    /// Width of the gradient `M` predicts.
    pub out: usize,
    /// Rows of [`Synthesizer::predict`] (the lanes) and of [`Synthesizer::fit`].
    pub predict_rows: usize,
    pub fit_rows: usize,
}

/// One synthetic-gradient model: the recurrent core's (rows = lanes, `[h | c]` → `[dh | dc]`) or
/// the two-timescale link's (a message → its gradient).
pub(crate) struct Synthesizer {
    /// `[in → hidden]` of an MLP; `None` for a linear model.
    first: Option<Linear>,
    /// The output layer, zero-initialised.
    last: Linear,
    scale: f32,
    at_end: Pass,
    at_start: Pass,
    /// `(scale·factor)·M(s)` at the predicted rows.
    injected: Tensor,
    d_out: Tensor,
    d_act: Option<Tensor>,
    d_pre: Option<Tensor>,
    /// A zero predictor and a sink for its unused gradient: the baseline loss of `sg_explained`.
    zeros: Tensor,
    sink: Tensor,
    optimizer: Optimizer,
}

impl Synthesizer {
    /// A model with a zero last layer, updated by `optimizer` (which it owns from here on); an
    /// MLP's first layer is uniform in `±1/√inputs` drawn by `uniform(n, bound)`.
    pub(crate) fn new(
        gpu: &Gpu,
        cfg: SgConfig,
        scale_: f32,
        shape: SgShape,
        optimizer: Optimizer,
        uniform: &mut dyn FnMut(usize, f32) -> Vec<f32>,
    ) -> dni_kernels::Result<Self> {
        let SgShape {
            width,
            out,
            predict_rows,
            fit_rows,
        } = shape;
        let inputs = match cfg.input {
            SgInput::State => width,
            SgInput::Hidden if width % 2 == 0 => width / 2,
            SgInput::Hidden => {
                return Err(dni_kernels::Error::InvalidArgument {
                    op: "Synthesizer::new",
                    detail: format!(
                        "sg_input = hidden reads the first half of a state [h | c], not a row of \
                         {width}; use `state`"
                    ),
                })
            }
        };
        let first = match cfg.hidden {
            0 => None,
            n => Some(Linear::new(
                gpu,
                inputs,
                n,
                &uniform(inputs * n, 1.0 / (inputs as f32).sqrt()),
            )?),
        };
        let last_in = if cfg.hidden == 0 { inputs } else { cfg.hidden };
        let split = cfg.input == SgInput::Hidden;
        let pass = |rows: usize| -> dni_kernels::Result<Pass> {
            let buf = |on: bool, cols: usize| -> dni_kernels::Result<Option<Tensor>> {
                Ok(match on {
                    true => Some(Tensor::zeros(gpu, &[rows, cols])?),
                    false => None,
                })
            };
            Ok(Pass {
                x: buf(split, inputs)?,
                c: buf(split, inputs)?,
                pre: buf(cfg.hidden > 0, cfg.hidden)?,
                act: buf(cfg.hidden > 0, cfg.hidden)?,
                out: Tensor::zeros(gpu, &[rows, out])?,
            })
        };
        let (p, f) = (predict_rows, fit_rows);
        Ok(Synthesizer {
            first,
            last: Linear::zeros(gpu, last_in, out)?,
            scale: scale_,
            at_end: pass(p)?,
            at_start: pass(f)?,
            injected: Tensor::zeros(gpu, &[p, out])?,
            d_out: Tensor::zeros(gpu, &[f, out])?,
            d_act: match cfg.hidden {
                0 => None,
                n => Some(Tensor::zeros(gpu, &[f, n])?),
            },
            d_pre: match cfg.hidden {
                0 => None,
                n => Some(Tensor::zeros(gpu, &[f, n])?),
            },
            zeros: Tensor::zeros(gpu, &[f, out])?,
            sink: Tensor::zeros(gpu, &[f, out])?,
            optimizer,
        })
    }

    /// Records `M(state)` into `pass.out`.
    fn run(&self, enc: &mut Encoder, state: &Tensor, at_end: bool) -> dni_kernels::Result<()> {
        let pass = if at_end { &self.at_end } else { &self.at_start };
        let x = match (&pass.x, &pass.c) {
            (Some(x), Some(c)) => {
                state_split(enc, state, x, c)?;
                x
            }
            _ => state,
        };
        match (&self.first, &pass.pre, &pass.act) {
            (Some(first), Some(pre), Some(act)) => {
                first.forward(enc, x, pre)?;
                activate(enc, Activation::Relu, pre, act)?;
                self.last.forward(enc, act, &pass.out)?;
            }
            _ => self.last.forward(enc, x, &pass.out)?,
        }
        Ok(())
    }

    /// Records `M(s)` at the state where the gradient is needed (the window's last state).
    pub(crate) fn predict(&self, enc: &mut Encoder, s: &Tensor) -> dni_kernels::Result<()> {
        self.run(enc, s, true)
    }

    /// `M(s)` from the last [`predict`](Self::predict), per-lane units.
    pub(crate) fn prediction(&self) -> &Tensor {
        &self.at_end.out
    }

    /// Records `(scale·factor)·M(s)` from the last [`predict`](Self::predict) into the injection
    /// buffer and returns it (`factor` is `1/B` where the task loss is a batch mean).
    pub(crate) fn inject(&self, enc: &mut Encoder, factor: f32) -> dni_kernels::Result<&Tensor> {
        enc.copy(&self.at_end.out, &self.injected)?;
        scale(enc, self.scale * factor, &self.injected)?;
        Ok(&self.injected)
    }

    /// Records one regression step of `M(s)` onto `target` (per-lane units; a constant): the
    /// loss `0.5·‖M(s) − target‖²` and the zero predictor's are added to `loss` and `zero_loss`
    /// (`[1]` sums, the two halves of `sg_explained`), and the
    /// parameter gradients (scaled by `factor`) are written. The optimiser step is separate
    /// ([`step`](Self::step)), so that other heads can share it.
    pub(crate) fn fit(
        &self,
        enc: &mut Encoder,
        s: &Tensor,
        target: &Tensor,
        factor: f32,
        loss: &Tensor,
        zero_loss: &Tensor,
    ) -> dni_kernels::Result<()> {
        self.run(enc, s, false)?;
        let pass = &self.at_start;
        sg_l2(enc, &pass.out, target, &self.d_out, factor, Some(loss))?;
        sg_l2(enc, &self.zeros, target, &self.sink, 0.0, Some(zero_loss))?;
        let x = pass.x.as_ref().unwrap_or(s);
        match (&self.first, &pass.act, &self.d_act, &self.d_pre) {
            (Some(first), Some(act), Some(d_act), Some(d_pre)) => {
                self.last.backward_params(enc, act, &self.d_out)?;
                self.last.backward_input(enc, &self.d_out, d_act, false)?;
                activate_backward(enc, Activation::Relu, act, d_act, d_pre, false)?;
                first.backward_params(enc, x, d_pre)?;
            }
            _ => self.last.backward_params(enc, x, &self.d_out)?,
        }
        Ok(())
    }

    /// The parameters by name: `sg.w_in`, `sg.b_in` (an MLP's first layer), `sg.w`, `sg.b`.
    pub(crate) fn params(&self) -> Vec<(&'static str, &Param)> {
        let mut v = Vec::new();
        if let Some(f) = &self.first {
            v.push(("sg.w_in", &f.w));
            v.push(("sg.b_in", &f.b));
        }
        v.push(("sg.w", &self.last.w));
        v.push(("sg.b", &self.last.b));
        v
    }

    /// One optimiser step over the model's parameters and `extra` (e.g. the aux head).
    pub(crate) fn step(
        &self,
        enc: &mut Encoder,
        with_model: bool,
        extra: &[&Param],
    ) -> dni_kernels::Result<()> {
        let mut ps: Vec<&Param> = Vec::new();
        if with_model {
            ps.extend(self.params().into_iter().map(|(_, p)| p));
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
