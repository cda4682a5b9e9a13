//! A run group: K independent recurrent runs of one shape trained window by window together.
//!
//! Runs may differ in method (BPTT, DNI, DNI + Aux), SG scale and aux weight, optimisers and
//! seed; they share the input, hidden and output sizes, the batch, T and the loss (the fused
//! kernels also need one optimiser rule for every run's core and SG model). Each run has its own parameters, optimiser state, carried state, step counters and
//! metrics, and computes what it would compute alone.
//!
//! Where the adapter has the fused kernels' features (subgroups of a fixed size of 8 or more) the
//! whole group trains in four dispatches per window (`dni_kernels::ops::rnn_step`); elsewhere each
//! run has its own per-step trainer (one dispatch per kernel and time step). On CPU adapters the
//! fused kernels are taken only where their weight-caching variant fits (see `auto_fused`).

use dni_kernels::ops::rnn_step::{cached_unavailable, RnnVariant};
use dni_kernels::Gpu;

use super::config::{OutputLoss, RecurrentConfig};
use super::error::{check_len, one_hot};
use super::fused::{fused_unavailable, group_mismatch, shape_of, FusedGroup};
use super::metrics::{EvalResult, Metrics};
use super::per_step::PerStepTrainer;
use crate::error::{Error, Result};
use crate::sg::{fidelity, Fidelity, FutureTargets, ProbeModel};

/// One run's window of bit vectors: inputs `[T][B][input]`, targets and mask `[T][B][output]`.
#[derive(Clone, Copy, Debug)]
pub struct BitWindow<'a> {
    pub inputs: &'a [f32],
    pub targets: &'a [f32],
    pub mask: &'a [f32],
    /// The next window's inputs, laid out as `inputs`: what the aux task at every step reads its
    /// targets from (required there, ignored by every other method; `None` for probe futures).
    pub next_inputs: Option<&'a [f32]>,
}

/// One run's window of token ids, `[T][B]` each; `targets[s][b]` should follow `inputs[s][b]`.
#[derive(Clone, Copy, Debug)]
pub struct TokenWindow<'a> {
    pub inputs: &'a [u32],
    pub targets: &'a [u32],
}

/// Which kernels train the runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StepPath {
    /// Fused where the adapter and the shape allow it and it is the faster path (on CPU adapters
    /// only the weight-caching variant is), per-step otherwise.
    #[default]
    Auto,
    /// The fused whole-window kernels, in the variant that suits the adapter (an error where
    /// they do not fit).
    Fused,
    /// The fused kernels that stream the weights from storage every step (the GPU variant; also
    /// runs on CPU adapters, for tests).
    FusedStreaming,
    /// The fused kernels that cache the weights in private memory (CPU adapters, small models).
    FusedCached,
    /// One dispatch per kernel and time step: any adapter and shape, and the reference for the
    /// fused path.
    PerStep,
}

enum Engine {
    Fused(Box<FusedGroup>),
    PerStep(Vec<PerStepTrainer>),
}

/// K recurrent runs trained together.
pub struct RunGroup {
    engine: Engine,
}

/// Why `cfgs` cannot share one group (`None` when they can).
pub fn runs_mismatch(cfgs: &[RecurrentConfig]) -> Option<String> {
    let first = cfgs.first()?;
    cfgs.iter().find_map(|c| group_mismatch(first, c))
}

/// Whether `StepPath::Auto` takes the fused kernels: where they fit, except on CPU adapters when
/// only the streaming variant fits, which is slower there than the per-step kernels (measured on
/// lavapipe: W3, hidden 256, 66 against 42 ms a window; docs/BENCHMARKS.md).
fn auto_fused(gpu: &Gpu, cfgs: &[RecurrentConfig]) -> bool {
    if fused_unavailable(gpu, cfgs).is_some() {
        return false;
    }
    !gpu.adapter().is_cpu() || cached_unavailable(gpu, &shape_of(cfgs)).is_none()
}

impl RunGroup {
    /// Builds every run (seeded initial weights, forget-gate bias 1, SG model and aux head at
    /// zero) on the fastest path the adapter supports.
    pub fn new(gpu: &Gpu, cfgs: Vec<RecurrentConfig>) -> Result<Self> {
        Self::with_path(gpu, cfgs, StepPath::Auto)
    }

    /// As [`new`](Self::new), on the chosen path.
    pub fn with_path(gpu: &Gpu, cfgs: Vec<RecurrentConfig>, path: StepPath) -> Result<Self> {
        if cfgs.is_empty() {
            return Err(Error::Mode("a run group needs at least one run"));
        }
        for c in &cfgs {
            c.validate()?;
            c.check_fits(gpu)?;
        }
        if let Some(why) = runs_mismatch(&cfgs) {
            return Err(Error::Group(why));
        }
        let variant = match path {
            StepPath::PerStep => None,
            StepPath::Auto => auto_fused(gpu, &cfgs).then_some(RnnVariant::Auto),
            StepPath::Fused | StepPath::FusedStreaming | StepPath::FusedCached => {
                if let Some(why) = fused_unavailable(gpu, &cfgs) {
                    return Err(Error::Group(why));
                }
                Some(match path {
                    StepPath::FusedStreaming => RnnVariant::Streaming,
                    StepPath::FusedCached => RnnVariant::Cached,
                    _ => RnnVariant::Auto,
                })
            }
        };
        let engine = match variant {
            Some(v) => Engine::Fused(Box::new(FusedGroup::new(gpu, cfgs, v)?)),
            None => Engine::PerStep(
                cfgs.into_iter()
                    .map(|c| PerStepTrainer::new(gpu, c))
                    .collect::<Result<_>>()?,
            ),
        };
        Ok(Self { engine })
    }

    /// The path the runs train on (never `Auto` or `Fused`).
    pub fn path(&self) -> StepPath {
        match &self.engine {
            Engine::Fused(g) => match g.variant() {
                RnnVariant::Cached => StepPath::FusedCached,
                _ => StepPath::FusedStreaming,
            },
            Engine::PerStep(_) => StepPath::PerStep,
        }
    }

    pub fn runs(&self) -> usize {
        match &self.engine {
            Engine::Fused(g) => g.runs(),
            Engine::PerStep(v) => v.len(),
        }
    }

    fn run_err(&self, run: usize) -> Error {
        Error::Run {
            run,
            runs: self.runs(),
        }
    }

    fn per_step(&self, run: usize) -> Result<&PerStepTrainer> {
        match &self.engine {
            Engine::PerStep(v) => v.get(run).ok_or_else(|| self.run_err(run)),
            Engine::Fused(_) => Err(Error::Mode("not a per-step group")),
        }
    }

    fn per_step_mut(&mut self, run: usize) -> Result<&mut PerStepTrainer> {
        let err = self.run_err(run);
        match &mut self.engine {
            Engine::PerStep(v) => v.get_mut(run).ok_or(err),
            Engine::Fused(_) => Err(Error::Mode("not a per-step group")),
        }
    }

    /// Run `run`'s configuration.
    pub fn config(&self, run: usize) -> Result<&RecurrentConfig> {
        match &self.engine {
            Engine::Fused(g) => g.config(run),
            Engine::PerStep(_) => Ok(self.per_step(run)?.config()),
        }
    }

    pub fn gpu(&self) -> &Gpu {
        match &self.engine {
            Engine::Fused(g) => g.gpu(),
            Engine::PerStep(v) => v[0].gpu(),
        }
    }

    /// Windows trained so far (every run trains every window).
    pub fn windows_trained(&self) -> u64 {
        match &self.engine {
            Engine::Fused(g) => g.windows_trained(),
            Engine::PerStep(v) => v[0].windows_trained(),
        }
    }

    /// Dispatches one training window of all runs records (per-step: after the first window).
    pub fn dispatches_per_window(&self) -> usize {
        match &self.engine {
            Engine::Fused(g) => g.dispatches_per_window(),
            Engine::PerStep(v) => v.iter().map(|t| t.dispatches_per_window()).sum(),
        }
    }

    /// Whether run `run` injects its synthetic gradient at the window's end (default: on for
    /// DNI methods). Off while still training it is, e.g., a BPTT warm-up while the SG learns.
    pub fn set_sg_apply(&mut self, run: usize, on: bool) -> Result<()> {
        match &mut self.engine {
            Engine::Fused(g) => g.set_sg_apply(run, on),
            Engine::PerStep(_) => {
                self.per_step_mut(run)?.set_sg_apply(on);
                Ok(())
            }
        }
    }

    /// Whether run `run` trains its SG model on the bootstrapped gradient (default: on for DNI).
    pub fn set_sg_train(&mut self, run: usize, on: bool) -> Result<()> {
        match &mut self.engine {
            Engine::Fused(g) => g.set_sg_train(run, on),
            Engine::PerStep(_) => {
                self.per_step_mut(run)?.set_sg_train(on);
                Ok(())
            }
        }
    }

    pub fn sg_applied(&self, run: usize) -> bool {
        match &self.engine {
            Engine::Fused(g) => g.sg_applied(run),
            Engine::PerStep(v) => v.get(run).is_some_and(|t| t.sg_applied()),
        }
    }

    pub fn sg_trained(&self, run: usize) -> bool {
        match &self.engine {
            Engine::Fused(g) => g.sg_trained(run),
            Engine::PerStep(v) => v.get(run).is_some_and(|t| t.sg_trained()),
        }
    }

    /// Run `run`'s core learning rate, from the next window on.
    pub fn set_lr(&self, run: usize, lr: f32) -> Result<()> {
        match &self.engine {
            Engine::Fused(g) => g.set_lr(run, lr),
            Engine::PerStep(_) => self.per_step(run)?.set_lr(lr),
        }
    }

    /// One training window for every run: `windows[r]` is run r's data (`SigmoidBits` models).
    pub fn train_window(&mut self, windows: &[BitWindow]) -> Result<()> {
        match &mut self.engine {
            Engine::Fused(g) => g.train_window(windows),
            Engine::PerStep(v) => {
                check_runs(windows.len(), v.len())?;
                for (t, w) in v.iter_mut().zip(windows) {
                    t.train_window(w.inputs, w.targets, w.mask, w.next_inputs)?;
                }
                Ok(())
            }
        }
    }

    /// One training window of token ids for every run (`Softmax` models, one-hot input).
    pub fn train_window_tokens(&mut self, windows: &[TokenWindow]) -> Result<()> {
        match &mut self.engine {
            Engine::Fused(g) => g.train_window_tokens(windows),
            Engine::PerStep(v) => {
                check_runs(windows.len(), v.len())?;
                for (t, w) in v.iter_mut().zip(windows) {
                    t.train_window_tokens(w.inputs, w.targets)?;
                }
                Ok(())
            }
        }
    }

    /// Each run's metrics since the previous call, then clears them (one read-back).
    pub fn read_metrics(&mut self) -> Result<Vec<Metrics>> {
        match &mut self.engine {
            Engine::Fused(g) => g.read_metrics(),
            Engine::PerStep(v) => v.iter_mut().map(|t| t.read_metrics()).collect(),
        }
    }

    /// Waits for every submitted window by reading back one scalar and returns it; metrics are
    /// left as they are. Benchmarks end each timed sample with this.
    pub fn finish(&mut self) -> Result<f32> {
        match &mut self.engine {
            Engine::Fused(g) => g.finish(),
            Engine::PerStep(v) => {
                let mut last = 0.0;
                for t in v.iter_mut() {
                    last = t.finish()?;
                }
                Ok(last)
            }
        }
    }

    /// Zeroes run `run`'s carried state (its next window starts from `h = c = 0`).
    pub fn reset_state(&mut self, run: usize) -> Result<()> {
        match &mut self.engine {
            Engine::Fused(g) => g.reset_state(run),
            Engine::PerStep(_) => {
                self.per_step_mut(run)?.reset_state();
                Ok(())
            }
        }
    }

    /// Run `run`'s carried state `[B, 2H]` = `[h | c]` (a read-back).
    pub fn read_state(&self, run: usize) -> Result<Vec<f32>> {
        match &self.engine {
            Engine::Fused(g) => g.read_state(run),
            Engine::PerStep(_) => {
                let t = self.per_step(run)?;
                Ok(t.gpu().read(t.state())?)
            }
        }
    }

    /// Every parameter name run `run` has: `lstm.w_x`, `lstm.w_h`, `lstm.bias`, `readout.w`,
    /// `readout.b`, then `sg.w`, `sg.b` and `aux.w`, `aux.b` when present.
    pub fn param_names(&self, run: usize) -> Result<Vec<&'static str>> {
        match &self.engine {
            Engine::Fused(g) => g.param_names(run),
            Engine::PerStep(_) => Ok(self
                .per_step(run)?
                .params()
                .iter()
                .map(|(n, _)| *n)
                .collect()),
        }
    }

    /// A parameter's value, row-major in its usual shape (`lstm.w_x` is `[I, 4H]`, ...).
    pub fn read_param(&self, run: usize, name: &str) -> Result<Vec<f32>> {
        match &self.engine {
            Engine::Fused(g) => g.read_param(run, name),
            Engine::PerStep(_) => self.per_step(run)?.read_param(name, false),
        }
    }

    /// A parameter's gradient from the last window.
    pub fn read_grad(&self, run: usize, name: &str) -> Result<Vec<f32>> {
        match &self.engine {
            Engine::Fused(g) => g.read_grad(run, name),
            Engine::PerStep(_) => self.per_step(run)?.read_param(name, true),
        }
    }

    /// The scale `σ` of run `run`'s SG output (`M` predicts the gradient divided by `σ`): the
    /// running RMS of its targets when it normalises them ([`crate::sg::SgConfig::normalise`]),
    /// else 1. A read-back.
    pub fn sg_target_scale(&self, run: usize) -> Result<f32> {
        match &self.engine {
            Engine::Fused(g) => g.sg_target_scale(run),
            Engine::PerStep(_) => self.per_step(run).map(|_| 1.0),
        }
    }

    /// A host copy of run `run`'s LSTM, readout and SG model for the fidelity probe
    /// ([`crate::sg::probe`]); `None` when the run has no SG model (BPTT). Reads the parameters back.
    pub fn probe_model(&self, run: usize) -> Result<Option<ProbeModel>> {
        let c = self.config(run)?.clone();
        if !c.method.has_sg() {
            return Ok(None);
        }
        let read = |name: &str| self.read_param(run, name);
        // `σ·M` is the SG in the gradient's units: fold σ into the output layer.
        let sigma = self.sg_target_scale(run)?;
        let scaled = |name: &str| -> Result<Vec<f32>> {
            Ok(read(name)?.into_iter().map(|v| v * sigma).collect())
        };
        Ok(Some(ProbeModel {
            input: c.input,
            hidden: c.hidden,
            output: c.output,
            batch: c.batch,
            w_x: read("lstm.w_x")?,
            w_h: read("lstm.w_h")?,
            bias: read("lstm.bias")?,
            readout_w: read("readout.w")?,
            readout_b: read("readout.b")?,
            sg_input: c.sg.input,
            sg_w_in: match c.sg.hidden {
                0 => Vec::new(),
                _ => read("sg.w_in")?,
            },
            sg_b_in: match c.sg.hidden {
                0 => Vec::new(),
                _ => read("sg.b_in")?,
            },
            sg_w: scaled("sg.w")?,
            sg_b: scaled("sg.b")?,
            sg_scale: c.method.sg_scale(),
        }))
    }

    /// The SG fidelity probe on run `run` (a `SigmoidBits` model): each of `futures` holds `steps`
    /// steps that may follow the last trained window, `[steps][B][width]` like a training window.
    /// Scores the SG the run injects at its carried state against the true gradient those steps send
    /// back to it, averaged over the futures ([`crate::sg::probe`]): on a stochastic stream, several
    /// futures drawn from the same state estimate the expected gradient, which is what an SG can
    /// predict. `None` for a run without an SG model.
    pub fn probe_bits(
        &self,
        run: usize,
        futures: &[BitWindow],
        steps: usize,
    ) -> Result<Option<Fidelity>> {
        let c = self.config(run)?;
        if c.loss != OutputLoss::SigmoidBits {
            return Err(Error::Mode(
                "probe_bits needs a SigmoidBits model; use probe_tokens for softmax",
            ));
        }
        if futures.is_empty() {
            return Err(Error::Mode("the probe needs at least one future"));
        }
        let rows = steps.saturating_mul(c.batch);
        for f in futures {
            check_len("probe inputs", f.inputs.len(), rows.saturating_mul(c.input))?;
            check_len(
                "probe targets",
                f.targets.len(),
                rows.saturating_mul(c.output),
            )?;
            check_len("probe mask", f.mask.len(), rows.saturating_mul(c.output))?;
        }
        let Some(model) = self.probe_model(run)? else {
            return Ok(None);
        };
        let state = self.read_state(run)?;
        let mut truth = vec![0.0; state.len()];
        for f in futures {
            let targets = FutureTargets::Bits {
                targets: f.targets,
                mask: f.mask,
            };
            let g = model.future_gradient(&state, f.inputs, targets, steps);
            let share = 1.0 / futures.len() as f64;
            truth.iter_mut().zip(&g).for_each(|(t, v)| *t += v * share);
        }
        Ok(Some(fidelity(&model.injected_sg(&state), &truth)))
    }

    /// [`probe_bits`](Self::probe_bits) for a `Softmax` model with one-hot token input, against the
    /// one future of a text (the data is what it is: no futures to average over).
    pub fn probe_tokens(
        &self,
        run: usize,
        future: &TokenWindow,
        steps: usize,
    ) -> Result<Option<Fidelity>> {
        let c = self.config(run)?;
        if c.loss != OutputLoss::Softmax {
            return Err(Error::Mode("probe_tokens needs a Softmax model"));
        }
        let rows = steps.saturating_mul(c.batch);
        check_len("probe token inputs", future.inputs.len(), rows)?;
        check_len("probe token targets", future.targets.len(), rows)?;
        let mut x = vec![0.0; rows * c.input];
        one_hot("probe input", future.inputs, c.input, &mut x)?;
        let Some(model) = self.probe_model(run)? else {
            return Ok(None);
        };
        let state = self.read_state(run)?;
        let truth =
            model.future_gradient(&state, &x, FutureTargets::Classes(future.targets), steps);
        Ok(Some(fidelity(&model.injected_sg(&state), &truth)))
    }

    /// Forward-only pass of every run over the same held-out tokens (`Softmax` models), from an
    /// evaluation state that starts at 0; training state and parameters are untouched. `next`
    /// fills one `[T][B]` window of inputs and targets and returns how many of its `T` steps are
    /// real (the rest is padding and is not scored), or `None` when the data is exhausted;
    /// `dni_tasks::EvalStream::next_window` has this shape.
    pub fn evaluate_tokens(
        &mut self,
        mut next: impl FnMut(&mut Vec<u32>, &mut Vec<u32>) -> Option<usize>,
    ) -> Result<Vec<EvalResult>> {
        match &mut self.engine {
            Engine::Fused(g) => g.evaluate_tokens(next),
            Engine::PerStep(v) => {
                if v.len() == 1 {
                    return Ok(vec![v[0].evaluate_tokens(next)?]);
                }
                // Several runs see the same windows: buffer them once.
                let mut windows = Vec::new();
                let (mut ins, mut tgts) = (Vec::new(), Vec::new());
                while let Some(steps) = next(&mut ins, &mut tgts) {
                    windows.push((ins.clone(), tgts.clone(), steps));
                }
                v.iter_mut()
                    .map(|t| {
                        let mut it = windows.iter();
                        t.evaluate_tokens(|i, o| {
                            let (wi, wo, steps) = it.next()?;
                            i.clone_from(wi);
                            o.clone_from(wo);
                            Some(*steps)
                        })
                    })
                    .collect()
            }
        }
    }
}

fn check_runs(got: usize, runs: usize) -> Result<()> {
    check_len("windows (one per run)", got, runs)
}

/// One named piece of a run group's training state: a GPU buffer's floats or host counters.
#[derive(Clone, Debug, PartialEq)]
pub enum StateBuf {
    F32(Vec<f32>),
    U64(Vec<u64>),
}

/// Checkpoints.
impl RunGroup {
    /// Everything that carries training state from one window to the next (parameters,
    /// gradients, optimiser moments and step counts, carried recurrent state, metric sums, SG
    /// switches and window counters), by name; names start with the engine (`fused.` or
    /// `run<k>.` for the per-step trainers). Blocking: one read-back per buffer.
    pub fn export_state(&self) -> Result<Vec<(String, StateBuf)>> {
        let gpu = self.gpu();
        let mut out = Vec::new();
        match &self.engine {
            Engine::Fused(g) => {
                for (name, t) in g.state_tensors() {
                    out.push((format!("fused.{name}"), StateBuf::F32(gpu.read(t)?)));
                }
                for (name, v) in g.state_counters() {
                    out.push((format!("fused.{name}"), StateBuf::U64(v)));
                }
            }
            Engine::PerStep(v) => {
                for (r, t) in v.iter().enumerate() {
                    for (name, x) in t.state_tensors() {
                        out.push((format!("run{r}.{name}"), StateBuf::F32(gpu.read(x)?)));
                    }
                    for (name, c) in t.state_counters() {
                        out.push((format!("run{r}.{name}"), StateBuf::U64(c)));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Restores what [`export_state`](Self::export_state) wrote, into a group built from the same
    /// configs on the same path. Every name must be present with its exact length, and nothing
    /// else may be: a checkpoint of another shape, engine or run count is refused before anything
    /// is written.
    pub fn import_state(&mut self, state: &[(String, StateBuf)]) -> Result<()> {
        let gpu = self.gpu().clone();
        let find = |name: &str| state.iter().find(|(n, _)| n == name).map(|(_, b)| b);
        // (name, expected f32 length) for buffers, counters by name.
        let mut tensors: Vec<(String, usize)> = Vec::new();
        let mut counters: Vec<(String, usize)> = Vec::new();
        match &self.engine {
            Engine::Fused(g) => {
                for (n, t) in g.state_tensors() {
                    tensors.push((format!("fused.{n}"), t.len()));
                }
                for (n, c) in g.state_counters() {
                    counters.push((format!("fused.{n}"), c.len()));
                }
            }
            Engine::PerStep(v) => {
                for (r, t) in v.iter().enumerate() {
                    for (n, x) in t.state_tensors() {
                        tensors.push((format!("run{r}.{n}"), x.len()));
                    }
                    for (n, c) in t.state_counters() {
                        counters.push((format!("run{r}.{n}"), c.len()));
                    }
                }
            }
        }
        for (name, len) in &tensors {
            match find(name) {
                Some(StateBuf::F32(v)) if v.len() == *len => {}
                Some(StateBuf::F32(v)) => {
                    return Err(Error::Checkpoint(format!(
                        "{name} holds {} values, this model has {len} (a checkpoint of another \
                         model, or of an older dni)",
                        v.len()
                    )))
                }
                _ => {
                    return Err(Error::Checkpoint(format!(
                        "{name} is missing (the checkpoint was written by another engine ({}) or \
                         model)",
                        state
                            .first()
                            .map_or("empty", |(n, _)| n.split('.').next().unwrap_or(n))
                    )))
                }
            }
        }
        for (name, len) in &counters {
            match find(name) {
                Some(StateBuf::U64(v)) if v.len() == *len => {}
                _ => {
                    return Err(Error::Checkpoint(format!(
                        "counter {name} is missing or of another length"
                    )))
                }
            }
        }
        if let Some((extra, _)) = state.iter().find(|(n, _)| {
            !tensors.iter().any(|(t, _)| t == n) && !counters.iter().any(|(c, _)| c == n)
        }) {
            return Err(Error::Checkpoint(format!(
                "{extra} is not part of this group's state (another engine, method or run count)"
            )));
        }
        // Everything checked: write.
        match &mut self.engine {
            Engine::Fused(g) => {
                for (n, t) in g.state_tensors() {
                    if let Some(StateBuf::F32(v)) = find(&format!("fused.{n}")) {
                        t.write(&gpu, v)?;
                    }
                }
                for (n, _) in g.state_counters() {
                    if let Some(StateBuf::U64(v)) = find(&format!("fused.{n}")) {
                        g.set_state_counter(n, v)?;
                    }
                }
            }
            Engine::PerStep(v) => {
                for (r, t) in v.iter_mut().enumerate() {
                    for (n, x) in t.state_tensors() {
                        if let Some(StateBuf::F32(d)) = find(&format!("run{r}.{n}")) {
                            x.write(&gpu, d)?;
                        }
                    }
                    for (n, _) in t.state_counters() {
                        if let Some(StateBuf::U64(d)) = find(&format!("run{r}.{n}")) {
                            t.set_state_counter(n, d)?;
                        }
                    }
                }
            }
        }
        gpu.sync()?;
        Ok(())
    }
}
