//! Fused per-tensor optimiser updates: SGD with momentum and Adam.
//!
//! Each [`Optimizer`] owns a four-float state buffer on the GPU (step count, learning rate, Adam's
//! two bias corrections). `step` first advances it with one tiny dispatch, then updates every
//! parameter in one dispatch each. The uniform parameters never change, so after the first step
//! nothing is created again, and independent optimisers (one per decoupled block) each keep their
//! own counter.

use std::sync::atomic::{AtomicU32, Ordering};

use bytemuck::{Pod, Zeroable};

use crate::error::{shape_err, Result};
use crate::gpu::{grid_1d, Encoder, Gpu};
use crate::pipeline::{Entry, Kernel, Slot};
use crate::tensor::Tensor;

const S_ADVANCE: &[Slot] = &[Slot::Uniform, Slot::ReadWrite];
const S_SUMSQ: &[Slot] = &[Slot::Uniform, Slot::ReadWrite, Slot::Read];
const S_UPDATE: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,
    Slot::ReadWrite,
    Slot::Read,
    Slot::ReadWrite,
    Slot::ReadWrite,
];
const ADVANCE: Entry = Entry::new(Kernel::Optim, "advance", S_ADVANCE);
const SUMSQ: Entry = Entry::new(Kernel::Optim, "sumsq", S_SUMSQ);
const SGD: Entry = Entry::new(Kernel::Optim, "sgd", S_UPDATE);
const ADAM: Entry = Entry::new(Kernel::Optim, "adam", S_UPDATE);

/// Every entry point these launchers dispatch, for the contract test.
pub const ENTRIES: &[Entry] = &[ADVANCE, SUMSQ, SGD, ADAM];

/// Layout of the state buffer (see shaders/optim.wgsl).
const STATE_STEP: usize = 0;
const STATE_LR: usize = 1;
/// `1 - beta1^t`, then `1 - beta2^t`.
const STATE_BIAS: usize = 2;
/// This step's squared gradient norm, then the clip threshold (0: off).
const STATE_CLIP: usize = 5;
const STATE_LEN: usize = 8;

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Params {
    n: u32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    momentum: f32,
    _pad: [u32; 3],
}

/// Which update rule, without its hyper-parameters: what a config file names (`adam`, `sgd`, the
/// `serde` feature). [`OptimKind::config`] gives the rule with them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum OptimKind {
    /// [`OptimConfig::adam`].
    #[default]
    Adam,
    /// [`OptimConfig::sgd`].
    Sgd,
}

impl OptimKind {
    /// The rule at learning rate `lr`; `momentum` is SGD's (Adam has its betas instead).
    pub fn config(self, lr: f32, momentum: f32) -> OptimConfig {
        match self {
            Self::Adam => OptimConfig::adam(lr),
            Self::Sgd => OptimConfig::sgd(lr, momentum),
        }
    }
}

/// Which update rule, with its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimConfig {
    /// `vel = momentum·vel + g; θ -= lr·vel` (PyTorch's form, no dampening).
    Sgd { lr: f32, momentum: f32 },
    /// `θ -= lr·m̂/(√v̂ + eps)` with bias-corrected moments (Kingma & Ba).
    Adam {
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
    },
}

impl OptimConfig {
    /// Adam with beta1 0.9, beta2 0.999, eps 1e-8.
    pub fn adam(lr: f32) -> Self {
        Self::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    pub fn sgd(lr: f32, momentum: f32) -> Self {
        Self::Sgd { lr, momentum }
    }

    /// The rule without its hyper-parameters.
    pub fn kind(&self) -> OptimKind {
        match self {
            Self::Sgd { .. } => OptimKind::Sgd,
            Self::Adam { .. } => OptimKind::Adam,
        }
    }

    pub fn lr(&self) -> f32 {
        match *self {
            Self::Sgd { lr, .. } | Self::Adam { lr, .. } => lr,
        }
    }

    fn with_lr(self, new: f32) -> Self {
        match self {
            Self::Sgd { momentum, .. } => Self::Sgd { lr: new, momentum },
            Self::Adam {
                beta1, beta2, eps, ..
            } => Self::Adam {
                lr: new,
                beta1,
                beta2,
                eps,
            },
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |detail: String| -> Result<()> {
            Err(crate::error::Error::InvalidArgument {
                op: "Optimizer::new",
                detail,
            })
        };
        if !self.lr().is_finite() {
            return bad(format!("learning rate {} is not finite", self.lr()));
        }
        match *self {
            // 1 would never forget a gradient: the velocity grows without bound.
            Self::Sgd { momentum, .. } if !(0.0..1.0).contains(&momentum) => {
                bad(format!("momentum {momentum} must be in [0, 1)"))
            }
            Self::Adam {
                beta1, beta2, eps, ..
            } => {
                if !(0.0..1.0).contains(&beta1) || !(0.0..1.0).contains(&beta2) {
                    bad(format!("Adam betas ({beta1}, {beta2}) must be in [0, 1)"))
                } else if !(eps > 0.0 && eps.is_finite()) {
                    bad(format!("Adam eps {eps} must be positive"))
                } else {
                    Ok(())
                }
            }
            Self::Sgd { .. } => Ok(()),
        }
    }
}

/// One parameter tensor with its gradient and optimiser state buffers.
#[derive(Clone, Debug)]
pub struct Param {
    pub value: Tensor,
    pub grad: Tensor,
    /// Adam's first moment, or SGD's velocity.
    m: Tensor,
    /// Adam's second moment (unused by SGD).
    v: Tensor,
}

impl Param {
    /// Wraps `value`; the gradient and the optimiser state start at zero, with the same shape.
    pub fn new(gpu: &Gpu, value: Tensor) -> Result<Param> {
        let shape = value.shape().to_vec();
        Ok(Param {
            grad: Tensor::zeros(gpu, &shape)?,
            m: Tensor::zeros(gpu, &shape)?,
            v: Tensor::zeros(gpu, &shape)?,
            value,
        })
    }

    /// The optimiser state (first moment or velocity, second moment), e.g. for checkpoints.
    pub fn state(&self) -> (&Tensor, &Tensor) {
        (&self.m, &self.v)
    }

    /// Records zeroing of the gradient.
    pub fn zero_grad(&self, enc: &mut Encoder) {
        enc.clear(&self.grad);
    }

    /// Records zeroing of the optimiser state (moments / velocity).
    pub fn reset_state(&self, enc: &mut Encoder) {
        enc.clear(&self.m);
        enc.clear(&self.v);
    }
}

/// An optimiser with its step counter and learning rate on the GPU.
#[derive(Debug)]
pub struct Optimizer {
    cfg: OptimConfig,
    /// The current learning rate's bits (set_lr takes `&self`).
    lr: AtomicU32,
    state: Tensor,
    params: Params,
    /// Global-norm clip threshold over every parameter of a step, if any.
    clip: Option<f32>,
}

impl Optimizer {
    /// Checks the hyper-parameters and allocates the state buffer (step 0).
    pub fn new(gpu: &Gpu, cfg: OptimConfig) -> Result<Optimizer> {
        Self::with_clip(gpu, cfg, None)
    }

    /// As [`new`](Self::new), and with `clip`, every step first scales all the gradients it updates
    /// by `min(1, clip / ‖g‖)`, `‖g‖` being their global L2 norm (computed on the GPU: one extra
    /// dispatch per parameter, nothing read back).
    pub fn with_clip(gpu: &Gpu, cfg: OptimConfig, clip: Option<f32>) -> Result<Optimizer> {
        cfg.validate()?;
        if let Some(c) = clip {
            if !(c.is_finite() && c > 0.0) {
                return Err(crate::error::Error::InvalidArgument {
                    op: "Optimizer::with_clip",
                    detail: format!("clip threshold {c} must be a finite number > 0"),
                });
            }
        }
        // Step 0: 1 - beta^0 = 0 for both corrections; `advance` runs before any update reads them.
        let mut init = [0.0f32; STATE_LEN];
        init[STATE_LR] = cfg.lr();
        init[STATE_CLIP] = clip.unwrap_or(0.0);
        let state = Tensor::from_slice(gpu, &[STATE_LEN], &init)?;
        let params = match cfg {
            OptimConfig::Sgd { momentum, .. } => Params {
                n: 0,
                beta1: 0.0,
                beta2: 0.0,
                eps: 0.0,
                momentum,
                _pad: [0; 3],
            },
            OptimConfig::Adam {
                beta1, beta2, eps, ..
            } => Params {
                n: 0,
                beta1,
                beta2,
                eps,
                momentum: 0.0,
                _pad: [0; 3],
            },
        };
        Ok(Optimizer {
            cfg,
            lr: AtomicU32::new(cfg.lr().to_bits()),
            state,
            params,
            clip,
        })
    }

    /// Records: advance the step counter (one tiny dispatch), with clipping one norm dispatch per
    /// param, then one fused update dispatch per param (reads p.grad).
    pub fn step(&self, enc: &mut Encoder, params: &[&Param]) -> Result<()> {
        for p in params {
            let n = p.value.len();
            if [&p.grad, &p.m, &p.v].iter().any(|t| t.len() != n) {
                return shape_err(
                    "Optimizer::step",
                    format!(
                        "param {:?} has a gradient {:?} of another size",
                        p.value.shape(),
                        p.grad.shape()
                    ),
                );
            }
            let ids = [
                p.value.id(),
                p.grad.id(),
                p.m.id(),
                p.v.id(),
                self.state.id(),
            ];
            if (1..ids.len()).any(|i| ids[..i].contains(&ids[i])) {
                return shape_err(
                    "Optimizer::step",
                    format!(
                        "param {:?}: value, grad and state must be separate tensors",
                        p.value.shape()
                    ),
                );
            }
        }
        let gpu = enc.gpu().clone();
        let advance = gpu.pipeline_for(&ADVANCE, &[])?;
        let bind = gpu.bind(&advance, bytemuck::bytes_of(&self.params), &[&self.state])?;
        enc.dispatch(&advance, &bind, [1, 1, 1]);
        if self.clip.is_some() {
            let sumsq = gpu.pipeline_for(&SUMSQ, &[])?;
            for p in params {
                let n = Params {
                    n: p.value.len() as u32,
                    ..self.params
                };
                let bind = gpu.bind(&sumsq, bytemuck::bytes_of(&n), &[&self.state, &p.grad])?;
                enc.dispatch(&sumsq, &bind, [1, 1, 1]);
            }
        }
        let entry = match self.cfg {
            OptimConfig::Sgd { .. } => &SGD,
            OptimConfig::Adam { .. } => &ADAM,
        };
        let update = gpu.pipeline_for(entry, &[])?;
        for p in params {
            let n = p.value.len();
            let params = Params {
                n: n as u32,
                ..self.params
            };
            let bind = gpu.bind(
                &update,
                bytemuck::bytes_of(&params),
                &[&self.state, &p.value, &p.grad, &p.m, &p.v],
            )?;
            enc.dispatch(&update, &bind, grid_1d(n, 256));
        }
        Ok(())
    }

    /// Changes the learning rate (queue.write_buffer; takes effect from the next submission).
    pub fn set_lr(&self, gpu: &Gpu, lr: f32) -> Result<()> {
        if !lr.is_finite() {
            return shape_err(
                "Optimizer::set_lr",
                format!("learning rate {lr} is not finite"),
            );
        }
        self.lr.store(lr.to_bits(), Ordering::Relaxed);
        gpu.queue().write_buffer(
            self.state.buffer(),
            (STATE_LR * 4) as u64,
            bytemuck::bytes_of(&lr),
        );
        Ok(())
    }

    /// The global-norm clip threshold, if any.
    pub fn clip(&self) -> Option<f32> {
        self.clip
    }

    /// The configuration, with the learning rate last set.
    pub fn config(&self) -> OptimConfig {
        self.cfg
            .with_lr(f32::from_bits(self.lr.load(Ordering::Relaxed)))
    }

    /// The state buffer (step count, bias corrections, learning rate), e.g. for checkpoints.
    pub fn state_tensor(&self) -> &Tensor {
        &self.state
    }

    /// Reads the step count back (blocking: for checkpoints and tests, not the hot loop).
    pub fn steps(&self, gpu: &Gpu) -> Result<u64> {
        Ok(gpu.read(&self.state)?[STATE_STEP] as u64)
    }

    /// Sets the step count, e.g. when resuming from a checkpoint; takes effect from the next
    /// submission. Exact up to 2^24 steps (it is stored as f32).
    pub fn set_steps(&self, gpu: &Gpu, steps: u64) {
        let (b1, b2) = match self.cfg {
            OptimConfig::Sgd { .. } => (0.0, 0.0),
            OptimConfig::Adam { beta1, beta2, .. } => (beta1 as f64, beta2 as f64),
        };
        let t = steps.min(i32::MAX as u64) as i32;
        let bias = [(1.0 - b1.powi(t)) as f32, (1.0 - b2.powi(t)) as f32];
        let q = gpu.queue();
        q.write_buffer(
            self.state.buffer(),
            (STATE_STEP * 4) as u64,
            bytemuck::bytes_of(&(steps as f32)),
        );
        q.write_buffer(
            self.state.buffer(),
            (STATE_BIAS * 4) as u64,
            bytemuck::cast_slice(&bias),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_gives_its_rule_and_a_rule_its_kind() {
        assert_eq!(OptimKind::Adam.config(0.01, 0.5), OptimConfig::adam(0.01));
        assert_eq!(
            OptimKind::Sgd.config(0.01, 0.5),
            OptimConfig::sgd(0.01, 0.5)
        );
        for kind in [OptimKind::Adam, OptimKind::Sgd] {
            assert_eq!(kind.config(0.1, 0.9).kind(), kind);
        }
        assert_eq!(OptimKind::default(), OptimKind::Adam);
    }
}
