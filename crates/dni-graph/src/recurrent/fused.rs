//! The fused engine of a run group: K runs of one shape in four dispatches per window
//! (`dni_kernels::ops::rnn_step`), with every run's parameters, optimiser state, carried state,
//! step counters and metrics in flat buffers laid out run after run.

use dni_kernels::ops::optim::OptimConfig;
use dni_kernels::ops::rnn_step::{
    self, ctl, metric, RnnLayout, RnnShape, RnnStep, RnnVariant, StepRule, CTL, METRICS,
};
use dni_kernels::{Gpu, Tensor};

use super::config::{OutputLoss, RecurrentConfig};
use super::error::{check_eval_steps, check_len, one_hot};
use super::group::{BitWindow, TokenWindow};
use super::metrics::{EvalResult, Metrics};
use crate::error::{Error, Result};
use crate::in_flight::InFlight;
use crate::lstm::LstmInit;
use dni_tasks::Rng;

/// Parameter names, in the order of [`RunGroup::param_names`].
const NAMES: [&str; 9] = [
    "lstm.w_x",
    "lstm.w_h",
    "lstm.bias",
    "readout.w",
    "readout.b",
    "sg.w",
    "sg.b",
    "aux.w",
    "aux.b",
];

/// Why two configurations cannot share a group (`None` when they can): their shapes differ.
pub fn group_mismatch(a: &RecurrentConfig, b: &RecurrentConfig) -> Option<String> {
    let shape = |c: &RecurrentConfig| (c.input, c.hidden, c.output, c.batch, c.t, c.loss);
    if shape(a) != shape(b) {
        return Some(format!(
            "shapes differ: (input, hidden, output, batch, T, loss) {:?} vs {:?}",
            shape(a),
            shape(b)
        ));
    }
    None
}

/// Why two runs cannot share the fused kernels' one update rule (`None` when they can).
fn rule_mismatch(a: &RecurrentConfig, b: &RecurrentConfig) -> Option<String> {
    let ra = rule(a);
    if ra.is_err() || ra.ok() != rule(b).ok() {
        return Some("the optimiser rules (kind, betas, eps, momentum) differ".into());
    }
    None
}

/// The update rule a configuration asks for; the core and the SG model must share it (their
/// learning rates may differ).
fn rule(c: &RecurrentConfig) -> Result<StepRule, String> {
    let r = |o: OptimConfig| match o {
        OptimConfig::Adam {
            beta1, beta2, eps, ..
        } => StepRule::Adam { beta1, beta2, eps },
        OptimConfig::Sgd { momentum, .. } => StepRule::Sgd { momentum },
    };
    let core = r(c.optim);
    match c.sg_optim.map(r) {
        Some(sg) if sg != core => {
            Err("the SG optimiser differs from the core's in more than its learning rate".into())
        }
        _ => Ok(core),
    }
}

pub(crate) fn shape_of(cfgs: &[RecurrentConfig]) -> RnnShape {
    let c = &cfgs[0];
    RnnShape {
        input: c.input,
        hidden: c.hidden,
        output: c.output,
        batch: c.batch,
        steps: c.t,
        runs: cfgs.len(),
        softmax: c.loss == OutputLoss::Softmax,
        has_sg: cfgs.iter().any(|c| c.method.has_sg()),
        has_aux: cfgs.iter().any(|c| c.method.aux_weight().is_some()),
    }
}

/// Why these runs cannot share the fused kernels of this adapter (`None` when they can).
pub fn fused_unavailable(gpu: &Gpu, cfgs: &[RecurrentConfig]) -> Option<String> {
    let first = cfgs.first()?;
    if let Err(why) = rule(first) {
        return Some(why);
    }
    if cfgs.iter().any(|c| !c.sg.is_fused()) {
        return Some(
            "the fused kernels implement the linear SG model on [h; c] with the bootstrap \
             discounted by the injection scale; another SG input, an MLP or a discount of its own \
             trains on the per-step kernels"
                .into(),
        );
    }
    if cfgs.iter().any(|c| c.method.aux_every_step()) {
        return Some(
            "the fused kernels have the aux task at the window's first step only; the aux task \
             at every step trains on the per-step kernels"
                .into(),
        );
    }
    if let Some(why) = cfgs
        .iter()
        .find_map(|c| group_mismatch(first, c).or_else(|| rule_mismatch(first, c)))
    {
        return Some(why);
    }
    rnn_step::does_not_fit(gpu, &shape_of(cfgs))
}

/// Where the parameter `name` (one of [`NAMES`]) lies in one run's block of the packed layout, for
/// a core of `(input, hidden, output)`: `(start, rows, cols)`, row-major.
fn param_range(
    lay: &RnnLayout,
    (i, h, o): (usize, usize, usize),
    name: &str,
) -> (usize, usize, usize) {
    match name {
        // [W_x; W_h; b], rows of 4H: the LSTM piece's three parameters back to back.
        "lstm.w_x" => (0, i, 4 * h),
        "lstm.w_h" => (i * 4 * h, h, 4 * h),
        "lstm.bias" => ((i + h) * 4 * h, 1, 4 * h),
        "readout.w" => (lay.off_r, h, o),
        "readout.b" => (lay.off_r + h * o, 1, o),
        "sg.w" => (lay.off_s, 2 * h, 2 * h),
        "sg.b" => (lay.off_s + 4 * h * h, 1, 2 * h),
        "aux.w" => (lay.off_a, h, 2 * h),
        _ => (lay.off_a + 2 * h * h, 1, 2 * h),
    }
}

/// K recurrent runs trained in one set of dispatches per window.
pub(crate) struct FusedGroup {
    gpu: Gpu,
    cfgs: Vec<RecurrentConfig>,
    step: RnnStep,
    apply_sg: Vec<bool>,
    train_sg: Vec<bool>,
    windows_total: u64,
    windows_unread: u64,
    sg_windows_unread: Vec<u64>,
    in_flight: InFlight,
    host_input: Vec<f32>,
}

impl FusedGroup {
    /// Builds every run's initial weights from its seed (as the per-step trainer does: uniform
    /// `±1/√H`, forget-gate bias 1, SG model and aux head at zero) and all buffers.
    pub fn new(gpu: &Gpu, cfgs: Vec<RecurrentConfig>, variant: RnnVariant) -> Result<Self> {
        let Some(first) = cfgs.first() else {
            return Err(Error::Mode("a run group needs at least one run"));
        };
        for c in &cfgs {
            c.validate()?;
            if let Some(why) = group_mismatch(first, c) {
                return Err(Error::Group(why));
            }
        }
        let rule = rule(first).map_err(Error::Group)?;
        let shape = shape_of(&cfgs);
        let mut step = RnnStep::with_variant(gpu, shape, rule, variant)?;
        let normalising = cfgs.iter().any(|c| c.sg.normalise);
        step.set_clipping(normalising || cfgs.iter().any(|c| c.clip.is_some()));
        step.set_normalising(normalising);
        let lay = *step.layout();
        let (i, h, o) = (shape.input, shape.hidden, shape.output);
        let mut params = vec![0.0f32; lay.p_run * cfgs.len()];
        let mut control = vec![0.0f32; CTL * cfgs.len()];
        for (r, c) in cfgs.iter().enumerate() {
            let p = &mut params[r * lay.p_run..(r + 1) * lay.p_run];
            // The per-step trainer's draws, in its order: the LSTM piece's, then the readout's
            // (the SG model and the aux head start at zero).
            let mut rng = Rng::new(c.seed);
            let lstm = LstmInit::draw(&mut rng, i, h)?;
            let readout = crate::linear::uniform_weights(&mut rng, h, o)?;
            for (name, values) in [
                ("lstm.w_x", &lstm.w_x),
                ("lstm.w_h", &lstm.w_h),
                ("lstm.bias", &lstm.bias),
                ("readout.w", &readout),
            ] {
                let (start, rows, cols) = param_range(&lay, (i, h, o), name);
                p[start..start + rows * cols].copy_from_slice(values);
            }
            let k = &mut control[r * CTL..(r + 1) * CTL];
            k[ctl::INJECT] = c.method.sg_scale();
            k[ctl::TRAIN_SG] = c.method.has_sg() as u8 as f32;
            k[ctl::AUX_WEIGHT] = c.method.aux_weight().unwrap_or(0.0);
            k[ctl::LR] = c.optim.lr();
            k[ctl::SG_LR] = c.sg_optim.unwrap_or(c.optim).lr();
            k[ctl::HAS_SG] = c.method.has_sg() as u8 as f32;
            k[ctl::HAS_AUX] = c.method.aux_weight().is_some() as u8 as f32;
            k[ctl::CLIP] = c.clip.unwrap_or(0.0);
            k[ctl::NORMALISE] = c.sg.normalise as u8 as f32;
            k[ctl::SG_TARGET_RMS] = 1.0;
        }
        step.write_params(gpu, &params)?;
        step.ctl.write(gpu, &control)?;
        let k = cfgs.len();
        Ok(Self {
            gpu: gpu.clone(),
            apply_sg: cfgs.iter().map(|c| c.method.has_sg()).collect(),
            train_sg: cfgs.iter().map(|c| c.method.has_sg()).collect(),
            windows_total: 0,
            windows_unread: 0,
            sg_windows_unread: vec![0; k],
            in_flight: InFlight::default(),
            host_input: vec![0.0; lay.in_run * k],
            step,
            cfgs,
        })
    }

    pub fn runs(&self) -> usize {
        self.cfgs.len()
    }

    pub fn config(&self, run: usize) -> Result<&RecurrentConfig> {
        self.cfgs.get(run).ok_or(Error::Run {
            run,
            runs: self.cfgs.len(),
        })
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Windows trained so far (every run trains every window).
    pub fn windows_trained(&self) -> u64 {
        self.windows_total
    }

    /// Dispatches one training window records, whatever K is.
    pub fn dispatches_per_window(&self) -> usize {
        self.step.train_dispatches()
    }

    /// The kernel variant in use.
    pub fn variant(&self) -> RnnVariant {
        self.step.variant()
    }

    fn check_run(&self, run: usize) -> Result<&RecurrentConfig> {
        self.config(run)
    }

    fn write_ctl(&self, run: usize, slot: usize, v: f32) -> Result<()> {
        self.step.ctl.write_at(&self.gpu, run * CTL + slot, &[v])?;
        Ok(())
    }

    /// Whether run `run` injects its synthetic gradient (see `RecurrentTrainer::set_sg_apply`).
    pub fn set_sg_apply(&mut self, run: usize, on: bool) -> Result<()> {
        let c = self.check_run(run)?;
        let on = on && c.method.has_sg();
        let scale = if on { c.method.sg_scale() } else { 0.0 };
        self.write_ctl(run, ctl::INJECT, scale)?;
        self.apply_sg[run] = on;
        Ok(())
    }

    /// Whether run `run` trains its SG model.
    pub fn set_sg_train(&mut self, run: usize, on: bool) -> Result<()> {
        let on = on && self.check_run(run)?.method.has_sg();
        self.write_ctl(run, ctl::TRAIN_SG, on as u8 as f32)?;
        self.train_sg[run] = on;
        Ok(())
    }

    pub fn sg_applied(&self, run: usize) -> bool {
        self.apply_sg.get(run).copied().unwrap_or(false)
    }

    pub fn sg_trained(&self, run: usize) -> bool {
        self.train_sg.get(run).copied().unwrap_or(false)
    }

    /// Run `run`'s core learning rate, from the next window on.
    pub fn set_lr(&self, run: usize, lr: f32) -> Result<()> {
        self.check_run(run)?;
        if !lr.is_finite() {
            return Err(Error::Config {
                field: "lr",
                value: lr.to_string(),
                reason: "must be finite",
            });
        }
        self.write_ctl(run, ctl::LR, lr)
    }

    /// One training window for every run: `windows[r]` is run r's data.
    pub fn train_window(&mut self, windows: &[BitWindow]) -> Result<()> {
        let c = &self.cfgs[0];
        if c.loss != OutputLoss::SigmoidBits {
            return Err(Error::Mode(
                "train_window needs a SigmoidBits model; use train_window_tokens for softmax",
            ));
        }
        self.check_runs(windows.len())?;
        let (tb, i, o) = (c.t * c.batch, c.input, c.output);
        let lay = *self.step.layout();
        for (r, w) in windows.iter().enumerate() {
            check_len("inputs", w.inputs.len(), tb * i)?;
            check_len("targets", w.targets.len(), tb * o)?;
            check_len("mask", w.mask.len(), tb * o)?;
            let base = r * lay.in_run;
            self.host_input[base..base + tb * i].copy_from_slice(w.inputs);
            self.host_input[base + lay.in_t..base + lay.in_t + tb * o].copy_from_slice(w.targets);
            self.host_input[base + lay.in_m..base + lay.in_m + tb * o].copy_from_slice(w.mask);
        }
        self.step.input.write(&self.gpu, &self.host_input)?;
        self.submit_train()
    }

    /// One training window of token ids for every run (`Softmax` models, one-hot input).
    pub fn train_window_tokens(&mut self, windows: &[TokenWindow]) -> Result<()> {
        if self.cfgs[0].loss != OutputLoss::Softmax {
            return Err(Error::Mode(
                "train_window_tokens needs a Softmax model; use train_window for bit targets",
            ));
        }
        self.check_runs(windows.len())?;
        for (r, w) in windows.iter().enumerate() {
            self.fill_tokens(r, w.inputs, w.targets)?;
        }
        self.step.input.write(&self.gpu, &self.host_input)?;
        self.submit_train()
    }

    fn check_runs(&self, got: usize) -> Result<()> {
        check_len("windows (one per run)", got, self.cfgs.len())
    }

    fn fill_tokens(&mut self, run: usize, inputs: &[u32], targets: &[u32]) -> Result<()> {
        let c = &self.cfgs[0];
        let (tb, v, o) = (c.t * c.batch, c.input, c.output);
        check_len("token inputs", inputs.len(), tb)?;
        check_len("token targets", targets.len(), tb)?;
        let lay = *self.step.layout();
        let base = run * lay.in_run;
        let x = &mut self.host_input[base..base + tb * v];
        one_hot("input", inputs, v, x)?;
        let labels = &mut self.host_input[base + lay.in_t..base + lay.in_t + tb];
        for (dst, &id) in labels.iter_mut().zip(targets) {
            if id as usize >= o {
                return Err(Error::Token {
                    what: "target",
                    id,
                    vocab: o,
                });
            }
            *dst = id as f32;
        }
        Ok(())
    }

    fn submit_train(&mut self) -> Result<()> {
        let mut enc = self.gpu.encoder();
        self.step.record_train(&mut enc)?;
        let submission = self.gpu.submit(enc);
        for r in 0..self.cfgs.len() {
            if self.train_sg[r] && self.windows_total > 0 {
                self.sg_windows_unread[r] += 1;
            }
        }
        self.windows_total += 1;
        self.windows_unread += 1;
        self.in_flight.submitted(&self.gpu, submission)?;
        Ok(())
    }

    /// Each run's metrics since the previous call, then clears them (one read-back; two when a
    /// run normalises its SG's targets, whose scale is read too).
    pub fn read_metrics(&mut self) -> Result<Vec<Metrics>> {
        let all = self.gpu.read(&self.step.metrics)?;
        let ctl_now = match self.cfgs.iter().any(|c| c.sg.normalise) {
            true => Some(self.gpu.read(&self.step.ctl)?),
            false => None,
        };
        let c = &self.cfgs[0];
        let b = c.batch;
        let out = (0..self.cfgs.len())
            .map(|r| {
                let lane_sum = |slot: usize| -> f64 {
                    (0..b)
                        .map(|l| all[(r * b + l) * METRICS + slot] as f64)
                        .sum()
                };
                Metrics {
                    windows: self.windows_unread,
                    loss_nats: lane_sum(metric::NATS),
                    errors: lane_sum(metric::ERRORS),
                    scored: lane_sum(metric::SCORED),
                    sg_windows: self.sg_windows_unread[r],
                    sg_loss: lane_sum(metric::SG_LOSS),
                    sg_zero_loss: lane_sum(metric::SG_ZERO_LOSS),
                    aux_windows: if self.cfgs[r].method.aux_weight().is_some() {
                        self.windows_unread
                    } else {
                        0
                    },
                    aux_loss: lane_sum(metric::AUX_LOSS),
                    sg_target_rms: ctl_now
                        .as_ref()
                        .filter(|_| self.cfgs[r].sg.normalise && self.cfgs[r].method.has_sg())
                        .map(|k| k[r * CTL + ctl::SG_TARGET_RMS] as f64),
                }
            })
            .collect();
        let mut enc = self.gpu.encoder();
        enc.clear(&self.step.metrics);
        self.gpu.submit(enc);
        self.windows_unread = 0;
        self.sg_windows_unread.fill(0);
        self.in_flight.clear();
        Ok(out)
    }

    /// Waits for every submitted window by reading back the metric sums (K·B·16 floats) and
    /// returns run 0's first loss sum; metrics are left as they are.
    pub fn finish(&mut self) -> Result<f32> {
        let v = self.gpu.read(&self.step.metrics)?;
        self.in_flight.clear();
        Ok(v[0])
    }

    /// Zeroes run `run`'s carried state.
    pub fn reset_state(&mut self, run: usize) -> Result<()> {
        let c = self.check_run(run)?;
        let n = 2 * c.hidden * c.batch;
        let lay = self.step.layout();
        self.step
            .work
            .write_at(&self.gpu, run * lay.w_run + lay.state(), &vec![0.0; n])?;
        Ok(())
    }

    /// Run `run`'s carried state `[B, 2H]` = `[h | c]` (a read-back).
    pub fn read_state(&self, run: usize) -> Result<Vec<f32>> {
        let c = self.check_run(run)?;
        let n = 2 * c.hidden * c.batch;
        let lay = self.step.layout();
        let start = run * lay.w_run + lay.state();
        let all = self.gpu.read(&self.step.work)?;
        Ok(all[start..start + n].to_vec())
    }

    /// The scale `σ` of run `run`'s SG output: the running RMS of its targets when it normalises
    /// them (`SgConfig::normalise`), else 1 (a read-back).
    pub fn sg_target_scale(&self, run: usize) -> Result<f32> {
        self.check_run(run)?;
        let ctl = self.gpu.read(&self.step.ctl)?;
        Ok(ctl[run * CTL + ctl::SG_TARGET_RMS])
    }

    /// Every parameter name a run has: `lstm.w_x`, `lstm.w_h`, `lstm.bias`, `readout.w`,
    /// `readout.b`, then `sg.w`, `sg.b` and `aux.w`, `aux.b` when the run has them.
    pub fn param_names(&self, run: usize) -> Result<Vec<&'static str>> {
        let c = self.check_run(run)?;
        let n = if c.method.aux_weight().is_some() {
            9
        } else if c.method.has_sg() {
            7
        } else {
            5
        };
        Ok(NAMES[..n].to_vec())
    }

    /// Where a named parameter lies in one run's block ([`param_range`]).
    fn param_range(&self, run: usize, name: &str) -> Result<(usize, usize, usize)> {
        if !self.param_names(run)?.contains(&name) {
            return Err(Error::UnknownParam(name.to_string()));
        }
        let c = &self.cfgs[0];
        Ok(param_range(
            self.step.layout(),
            (c.input, c.hidden, c.output),
            name,
        ))
    }

    fn read_named(&self, t: &Tensor, run: usize, name: &str) -> Result<Vec<f32>> {
        let (start, rows, cols) = self.param_range(run, name)?;
        let base = run * self.step.layout().p_run + start;
        let all = self.gpu.read(t)?;
        Ok(all[base..base + rows * cols].to_vec())
    }

    /// A parameter's value in its usual row-major shape (a read-back).
    pub fn read_param(&self, run: usize, name: &str) -> Result<Vec<f32>> {
        self.read_named(&self.step.params, run, name)
    }

    /// A parameter's gradient from the last window (a read-back).
    pub fn read_grad(&self, run: usize, name: &str) -> Result<Vec<f32>> {
        self.read_named(&self.step.grads, run, name)
    }

    /// Forward-only pass of every run over the same held-out tokens (`Softmax` models), from an
    /// evaluation state that starts at 0; training state and parameters are untouched. `next` is
    /// as in `RecurrentTrainer::evaluate_tokens`.
    pub fn evaluate_tokens(
        &mut self,
        mut next: impl FnMut(&mut Vec<u32>, &mut Vec<u32>) -> Option<usize>,
    ) -> Result<Vec<EvalResult>> {
        let c = self.cfgs[0].clone();
        if c.loss != OutputLoss::Softmax {
            return Err(Error::Mode("evaluate_tokens needs a Softmax model"));
        }
        let (t, b, k) = (c.t, c.batch, self.cfgs.len());
        let lay = *self.step.layout();
        let zeros = vec![0.0; 2 * c.hidden * b];
        for r in 0..k {
            self.step
                .work
                .write_at(&self.gpu, r * lay.w_run + lay.eval_state(), &zeros)?;
        }
        let half = k * b * METRICS;
        self.step
            .metrics
            .write_at(&self.gpu, half, &vec![0.0; half])?;
        let (mut ins, mut tgts) = (Vec::new(), Vec::new());
        let mut queued = InFlight::default();
        while let Some(steps) = next(&mut ins, &mut tgts) {
            if steps == 0 {
                continue;
            }
            check_eval_steps(steps, t)?;
            for r in 0..k {
                self.fill_tokens(r, &ins, &tgts)?;
                if steps < t {
                    // Time-major: the padding is rows steps·B.. ; a label of -1 is not scored.
                    let base = r * lay.in_run + lay.in_t;
                    self.host_input[base + steps * b..base + t * b].fill(-1.0);
                }
            }
            self.step.input.write(&self.gpu, &self.host_input)?;
            let mut enc = self.gpu.encoder();
            self.step.record_eval(&mut enc)?;
            queued.submitted(&self.gpu, self.gpu.submit(enc))?;
        }
        let all = self.gpu.read(&self.step.metrics)?;
        Ok((0..k)
            .map(|r| {
                let lane_sum = |slot: usize| -> f64 {
                    (0..b)
                        .map(|l| all[half + (r * b + l) * METRICS + slot] as f64)
                        .sum()
                };
                EvalResult {
                    loss_nats: lane_sum(metric::NATS),
                    errors: lane_sum(metric::ERRORS),
                    chars: lane_sum(metric::SCORED).round() as u64,
                }
            })
            .collect())
    }
}

/// Checkpoints: everything that carries training state from one window to the next, by name.
impl FusedGroup {
    /// Every GPU buffer that carries state across windows (the per-window input is rewritten by
    /// each step and is not listed). A new buffer that carries state needs one line here.
    pub(crate) fn state_tensors(&self) -> Vec<(&'static str, &Tensor)> {
        let s = &self.step;
        vec![
            ("params", &s.params),
            ("grads", &s.grads),
            ("moment1", &s.moment1),
            ("moment2", &s.moment2),
            ("wht", &s.wht),
            ("work", &s.work),
            ("metrics", &s.metrics),
            ("ctl", &s.ctl),
        ]
    }

    /// The host-side counters and switches, by name (one line each, as in `state_tensors`).
    pub(crate) fn state_counters(&self) -> Vec<(&'static str, Vec<u64>)> {
        let flags = |v: &[bool]| v.iter().map(|&b| b as u64).collect();
        vec![
            ("windows_total", vec![self.windows_total]),
            ("windows_unread", vec![self.windows_unread]),
            ("sg_windows_unread", self.sg_windows_unread.clone()),
            ("apply_sg", flags(&self.apply_sg)),
            ("train_sg", flags(&self.train_sg)),
        ]
    }

    /// Sets one of `state_counters` (same name and length).
    pub(crate) fn set_state_counter(&mut self, name: &str, v: &[u64]) -> Result<()> {
        let k = self.cfgs.len();
        let want = if matches!(name, "windows_total" | "windows_unread") {
            1
        } else {
            k
        };
        check_len("checkpoint counter", v.len(), want)?;
        let flags = |v: &[u64]| v.iter().map(|&x| x != 0).collect();
        match name {
            "windows_total" => self.windows_total = v[0],
            "windows_unread" => self.windows_unread = v[0],
            "sg_windows_unread" => self.sg_windows_unread = v.to_vec(),
            "apply_sg" => self.apply_sg = flags(v),
            "train_sg" => self.train_sg = flags(v),
            _ => return Err(Error::Checkpoint(format!("unknown counter {name:?}"))),
        }
        self.in_flight.clear();
        Ok(())
    }
}
