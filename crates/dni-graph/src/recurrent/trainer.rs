//! [`RecurrentTrainer`]: one recurrent run, on the fused kernels where its shape fits the adapter
//! (a [`RunGroup`] of one run: 4 dispatches a window) and on the per-step kernels elsewhere.
//!
//! One call of `train_window` is one training step:
//!
//! 1. forward `T` steps from the carried state `s0`, giving `h_1..h_T` and `s_last`;
//! 2. readout, task loss and its gradient (metrics accumulate on the GPU);
//! 3. DNI: `δ̂ = M(s_last)`; when applied, `(sg_scale / B)·δ̂` is the gradient at `s_last`;
//! 4. DNI + Aux: `A(h_1)` regresses onto `δ̂` (a constant); its gradient joins `dh_1`;
//! 5. backward through the window, giving the parameter gradients and `ds0`, the gradient at `s0`;
//! 6. DNI: `M(s0)` (the SG the previous window used at its end, recomputed with the current `M`)
//!    regresses onto `B·ds0` (a constant), skipped on the very first window;
//! 7. one optimiser update of every parameter that received a gradient;
//! 8. `s_last` becomes the next window's `s0`: the state is never reset.
//!
//! The task loss is averaged over the batch, so `ds0` is `1/B` of each lane's own gradient. The SG
//! model works in per-lane units: it is trained on `B·ds0` and injected as `(sg_scale / B)·M(s)`, so
//! its targets do not shrink with the batch size.

use dni_kernels::Gpu;

use super::config::RecurrentConfig;
use super::error::{RecurrentError, Result};
use super::group::{fused_unavailable, BitWindow, RunGroup, TokenWindow};
use super::metrics::{EvalResult, Metrics};
use super::per_step::PerStepTrainer;

/// Which kernels train the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StepPath {
    /// Fused where the shape fits the adapter, per-step otherwise.
    #[default]
    Auto,
    /// The fused whole-window kernels (an error where the shape does not fit).
    Fused,
    /// One dispatch per kernel and time step: any shape, and the reference for the fused path.
    PerStep,
}

enum Engine {
    Fused(Box<RunGroup>),
    PerStep(Box<PerStepTrainer>),
}

/// Truncated-BPTT trainer of one LSTM with optional DNI / DNI + Aux. See the module docs for one
/// step.
pub struct RecurrentTrainer {
    engine: Engine,
}

impl RecurrentTrainer {
    /// Builds the model (seeded initial weights, forget-gate bias 1, SG model and aux head at zero)
    /// and every buffer a step needs, on the fastest path the adapter supports.
    pub fn new(gpu: &Gpu, cfg: RecurrentConfig) -> Result<Self> {
        Self::with_path(gpu, cfg, StepPath::Auto)
    }

    /// As [`new`](Self::new), on the chosen path.
    pub fn with_path(gpu: &Gpu, cfg: RecurrentConfig, path: StepPath) -> Result<Self> {
        cfg.validate()?;
        let fused = match path {
            StepPath::PerStep => false,
            StepPath::Auto => fused_unavailable(gpu, &cfg).is_none(),
            StepPath::Fused => match fused_unavailable(gpu, &cfg) {
                None => true,
                Some(why) => return Err(RecurrentError::Group(why)),
            },
        };
        let engine = if fused {
            Engine::Fused(Box::new(RunGroup::new(gpu, vec![cfg])?))
        } else {
            Engine::PerStep(Box::new(PerStepTrainer::new(gpu, cfg)?))
        };
        Ok(Self { engine })
    }

    /// The path this trainer runs on (never `Auto`).
    pub fn path(&self) -> StepPath {
        match self.engine {
            Engine::Fused(_) => StepPath::Fused,
            Engine::PerStep(_) => StepPath::PerStep,
        }
    }

    /// Dispatches one training window records.
    pub fn dispatches_per_window(&self) -> usize {
        match &self.engine {
            Engine::Fused(g) => g.dispatches_per_window(),
            Engine::PerStep(p) => p.dispatches_per_window(),
        }
    }

    pub fn config(&self) -> &RecurrentConfig {
        match &self.engine {
            Engine::Fused(g) => &g.configs()[0],
            Engine::PerStep(p) => p.config(),
        }
    }

    pub fn gpu(&self) -> &Gpu {
        match &self.engine {
            Engine::Fused(g) => g.gpu(),
            Engine::PerStep(p) => p.gpu(),
        }
    }

    /// Windows trained so far.
    pub fn windows_trained(&self) -> u64 {
        match &self.engine {
            Engine::Fused(g) => g.windows_trained(),
            Engine::PerStep(p) => p.windows_trained(),
        }
    }

    /// Whether the synthetic gradient is injected at the window's end (default: on for DNI methods).
    /// Off while still training it is, e.g., a BPTT warm-up during which the SG model learns.
    pub fn set_sg_apply(&mut self, on: bool) -> Result<()> {
        match &mut self.engine {
            Engine::Fused(g) => g.set_sg_apply(0, on),
            Engine::PerStep(p) => {
                p.set_sg_apply(on);
                Ok(())
            }
        }
    }

    /// Whether the SG model is trained on the bootstrapped gradient (default: on for DNI methods).
    pub fn set_sg_train(&mut self, on: bool) -> Result<()> {
        match &mut self.engine {
            Engine::Fused(g) => g.set_sg_train(0, on),
            Engine::PerStep(p) => {
                p.set_sg_train(on);
                Ok(())
            }
        }
    }

    pub fn sg_applied(&self) -> bool {
        match &self.engine {
            Engine::Fused(g) => g.sg_applied(0),
            Engine::PerStep(p) => p.sg_applied(),
        }
    }

    pub fn sg_trained(&self) -> bool {
        match &self.engine {
            Engine::Fused(g) => g.sg_trained(0),
            Engine::PerStep(p) => p.sg_trained(),
        }
    }

    /// The carried state `[B, 2H]` = `[h | c]` that the next window starts from (a read-back).
    pub fn read_state(&self) -> Result<Vec<f32>> {
        match &self.engine {
            Engine::Fused(g) => g.read_state(0),
            Engine::PerStep(p) => Ok(p.gpu().read(p.state())?),
        }
    }

    /// Every parameter name: `lstm.w_x`, `lstm.w_h`, `lstm.bias`, `readout.w`, `readout.b`, then
    /// `sg.w`, `sg.b` and `aux.w`, `aux.b` when present.
    pub fn param_names(&self) -> Vec<&'static str> {
        match &self.engine {
            Engine::Fused(g) => g.param_names(0).unwrap_or_default(),
            Engine::PerStep(p) => p.params().iter().map(|(n, _)| *n).collect(),
        }
    }

    /// A parameter's value, row-major in its usual shape (`lstm.w_x` is `[I, 4H]`, ...).
    pub fn read_param(&self, name: &str) -> Result<Vec<f32>> {
        match &self.engine {
            Engine::Fused(g) => g.read_param(0, name),
            Engine::PerStep(p) => p.read_param(name, false),
        }
    }

    /// A parameter's gradient from the last step.
    pub fn read_grad(&self, name: &str) -> Result<Vec<f32>> {
        match &self.engine {
            Engine::Fused(g) => g.read_grad(0, name),
            Engine::PerStep(p) => p.read_param(name, true),
        }
    }

    /// Changes the core's learning rate (takes effect from the next step).
    pub fn set_lr(&self, lr: f32) -> Result<()> {
        match &self.engine {
            Engine::Fused(g) => g.set_lr(0, lr),
            Engine::PerStep(p) => p.set_lr(lr),
        }
    }

    /// One training step on a window of bit vectors (`SigmoidBits` models). All three slices are
    /// laid out `[T][B][width]`: `inputs` with the input width, `targets` and `mask` with the
    /// output width.
    pub fn train_window(&mut self, inputs: &[f32], targets: &[f32], mask: &[f32]) -> Result<()> {
        match &mut self.engine {
            Engine::Fused(g) => g.train_window(&[BitWindow {
                inputs,
                targets,
                mask,
            }]),
            Engine::PerStep(p) => p.train_window(inputs, targets, mask),
        }
    }

    /// One training step on token ids (`Softmax` models with one-hot input of width `input`). Both
    /// slices are laid out `[T][B]`; `targets[s][b]` is the token that should follow `inputs[s][b]`.
    pub fn train_window_tokens(&mut self, inputs: &[u32], targets: &[u32]) -> Result<()> {
        match &mut self.engine {
            Engine::Fused(g) => g.train_window_tokens(&[TokenWindow { inputs, targets }]),
            Engine::PerStep(p) => p.train_window_tokens(inputs, targets),
        }
    }

    /// Reads the metrics accumulated since the previous call and clears them (one read-back).
    pub fn read_metrics(&mut self) -> Result<Metrics> {
        match &mut self.engine {
            Engine::Fused(g) => Ok(g.read_metrics()?.remove(0)),
            Engine::PerStep(p) => p.read_metrics(),
        }
    }

    /// Waits for every submitted step by reading back one scalar and returns it; metrics are left
    /// as they are. Benchmarks end each timed step with this.
    pub fn finish(&mut self) -> Result<f32> {
        match &mut self.engine {
            Engine::Fused(g) => g.finish(),
            Engine::PerStep(p) => p.finish(),
        }
    }

    /// Zeroes the carried state (the next window starts from `h = c = 0`).
    pub fn reset_state(&mut self) -> Result<()> {
        match &mut self.engine {
            Engine::Fused(g) => g.reset_state(0),
            Engine::PerStep(p) => {
                p.reset_state();
                Ok(())
            }
        }
    }

    /// Forward-only pass over held-out tokens (`Softmax` models), with its own state that starts at
    /// 0; training state and parameters are untouched. `next` fills one `[T][B]` window of inputs
    /// and targets and returns how many of its `T` steps are real (the rest is padding and is not
    /// scored), or `None` when the data is exhausted; `dni_tasks::EvalStream::next_window` has this
    /// shape.
    pub fn evaluate_tokens(
        &mut self,
        next: impl FnMut(&mut Vec<u32>, &mut Vec<u32>) -> Option<usize>,
    ) -> Result<EvalResult> {
        match &mut self.engine {
            Engine::Fused(g) => Ok(g.evaluate_tokens(next)?.remove(0)),
            Engine::PerStep(p) => p.evaluate_tokens(next),
        }
    }
}
