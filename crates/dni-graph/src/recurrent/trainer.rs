//! [`RecurrentTrainer`]: one recurrent run, a [`RunGroup`] of one (fused kernels where the adapter
//! allows: 4 dispatches a window; per-step kernels elsewhere).
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
use super::error::Result;
use super::group::{BitWindow, RunGroup, StepPath, TokenWindow};
use super::metrics::{EvalResult, Metrics};
use crate::sg::Fidelity;

/// Truncated-BPTT trainer of one LSTM with optional DNI / DNI + Aux. See the module docs for one
/// step.
pub struct RecurrentTrainer {
    group: RunGroup,
}

impl RecurrentTrainer {
    /// Builds the model (seeded initial weights, forget-gate bias 1, SG model and aux head at zero)
    /// and every buffer a step needs, on the fastest path the adapter supports.
    pub fn new(gpu: &Gpu, cfg: RecurrentConfig) -> Result<Self> {
        Self::with_path(gpu, cfg, StepPath::Auto)
    }

    /// As [`new`](Self::new), on the chosen path.
    pub fn with_path(gpu: &Gpu, cfg: RecurrentConfig, path: StepPath) -> Result<Self> {
        Ok(Self {
            group: RunGroup::with_path(gpu, vec![cfg], path)?,
        })
    }

    /// The one-run group underneath (checkpoints use its `export_state` / `import_state`).
    pub fn group(&self) -> &RunGroup {
        &self.group
    }

    pub fn group_mut(&mut self) -> &mut RunGroup {
        &mut self.group
    }

    /// The path this trainer runs on.
    pub fn path(&self) -> StepPath {
        self.group.path()
    }

    /// Dispatches one training window records.
    pub fn dispatches_per_window(&self) -> usize {
        self.group.dispatches_per_window()
    }

    pub fn config(&self) -> &RecurrentConfig {
        self.group
            .config(0)
            .expect("a RecurrentTrainer holds exactly one run")
    }

    pub fn gpu(&self) -> &Gpu {
        self.group.gpu()
    }

    /// Windows trained so far.
    pub fn windows_trained(&self) -> u64 {
        self.group.windows_trained()
    }

    /// Whether the synthetic gradient is injected at the window's end (default: on for DNI methods).
    /// Off while still training it is, e.g., a BPTT warm-up during which the SG model learns.
    pub fn set_sg_apply(&mut self, on: bool) -> Result<()> {
        self.group.set_sg_apply(0, on)
    }

    /// Whether the SG model is trained on the bootstrapped gradient (default: on for DNI methods).
    pub fn set_sg_train(&mut self, on: bool) -> Result<()> {
        self.group.set_sg_train(0, on)
    }

    pub fn sg_applied(&self) -> bool {
        self.group.sg_applied(0)
    }

    pub fn sg_trained(&self) -> bool {
        self.group.sg_trained(0)
    }

    /// The carried state `[B, 2H]` = `[h | c]` that the next window starts from (a read-back).
    pub fn read_state(&self) -> Result<Vec<f32>> {
        self.group.read_state(0)
    }

    /// The SG fidelity probe on bit data ([`RunGroup::probe_bits`]); `None` without an SG model.
    pub fn probe_bits(&self, futures: &[BitWindow], steps: usize) -> Result<Option<Fidelity>> {
        self.group.probe_bits(0, futures, steps)
    }

    /// The SG fidelity probe on tokens ([`RunGroup::probe_tokens`]); `None` without an SG model.
    pub fn probe_tokens(&self, future: &TokenWindow, steps: usize) -> Result<Option<Fidelity>> {
        self.group.probe_tokens(0, future, steps)
    }

    /// Every parameter name: `lstm.w_x`, `lstm.w_h`, `lstm.bias`, `readout.w`, `readout.b`, then
    /// `sg.w`, `sg.b` and `aux.w`, `aux.b` when present.
    pub fn param_names(&self) -> Vec<&'static str> {
        self.group.param_names(0).unwrap_or_default()
    }

    /// A parameter's value, row-major in its usual shape (`lstm.w_x` is `[I, 4H]`, ...).
    pub fn read_param(&self, name: &str) -> Result<Vec<f32>> {
        self.group.read_param(0, name)
    }

    /// A parameter's gradient from the last step.
    pub fn read_grad(&self, name: &str) -> Result<Vec<f32>> {
        self.group.read_grad(0, name)
    }

    /// Changes the core's learning rate (takes effect from the next step).
    pub fn set_lr(&self, lr: f32) -> Result<()> {
        self.group.set_lr(0, lr)
    }

    /// One training step on a window of bit vectors (`SigmoidBits` models). All three slices are
    /// laid out `[T][B][width]`: `inputs` with the input width, `targets` and `mask` with the
    /// output width.
    pub fn train_window(&mut self, inputs: &[f32], targets: &[f32], mask: &[f32]) -> Result<()> {
        self.group.train_window(&[BitWindow {
            inputs,
            targets,
            mask,
            next_inputs: None,
        }])
    }

    /// [`train_window`](Self::train_window) with the next window's inputs (laid out as `inputs`),
    /// which the aux task at every step needs ([`Method::DniAux`](super::Method::DniAux)).
    pub fn train_window_ahead(
        &mut self,
        inputs: &[f32],
        targets: &[f32],
        mask: &[f32],
        next_inputs: &[f32],
    ) -> Result<()> {
        self.group.train_window(&[BitWindow {
            inputs,
            targets,
            mask,
            next_inputs: Some(next_inputs),
        }])
    }

    /// One training step on token ids (`Softmax` models with one-hot input of width `input`). Both
    /// slices are laid out `[T][B]`; `targets[s][b]` is the token that should follow `inputs[s][b]`.
    pub fn train_window_tokens(&mut self, inputs: &[u32], targets: &[u32]) -> Result<()> {
        self.group
            .train_window_tokens(&[TokenWindow { inputs, targets }])
    }

    /// Reads the metrics accumulated since the previous call and clears them (one read-back).
    pub fn read_metrics(&mut self) -> Result<Metrics> {
        Ok(self.group.read_metrics()?.remove(0))
    }

    /// Waits for every submitted step by reading back one scalar and returns it; metrics are left
    /// as they are. Benchmarks end each timed step with this.
    pub fn finish(&mut self) -> Result<f32> {
        self.group.finish()
    }

    /// Zeroes the carried state (the next window starts from `h = c = 0`).
    pub fn reset_state(&mut self) -> Result<()> {
        self.group.reset_state(0)
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
        Ok(self.group.evaluate_tokens(next)?.remove(0))
    }
}
