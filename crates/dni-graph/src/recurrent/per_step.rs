//! The per-step recurrent trainer: an LSTM core with a linear readout, run continuously over `batch` streams
//! and trained window by window with truncated BPTT, optionally bridged by a synthetic gradient.
//!
//! The path for shapes the fused kernels (`group.rs`) do not fit, and their reference in tests: one
//! dispatch per kernel, 2T + 2 for the window's forward and 2T + 5 for its backward. One call of
//! `train_window` is one training step. It uploads the window's data
//! and records everything into one encoder, then submits without waiting:
//!
//! 1. forward `T` steps from the carried state `s0`, giving `h_1..h_T` and `s_last`;
//! 2. readout, task loss and its gradient (metrics accumulate on the GPU);
//! 3. DNI: `δ̂ = M(s_last)`; when applied, `(sg_scale / B)·δ̂` is the gradient at `s_last`;
//! 4. DNI + Aux: `A(h_1)` regresses onto `δ̂` (a constant); its gradient joins `dh_1`. At every
//!    step instead: the next window's inputs run forward from `s_last` (same weights, nothing
//!    kept), and each `A(h_t)` regresses onto `M(s_{t+T})` from that run; the gradients join `dh_t`;
//! 5. backward through the window, giving the parameter gradients and `ds0`, the gradient at `s0`;
//! 6. DNI: `M(s0)` (the SG the previous window used at its end, recomputed with the current `M`)
//!    regresses onto `B·ds0` (a constant), skipped on the very first window;
//! 7. one optimiser update of every parameter that received a gradient;
//! 8. `s_last` becomes the next window's `s0`: the state is never reset.
//!
//! The task loss is averaged over the batch, so `ds0` is `1/B` of each lane's own gradient. The SG
//! model works in per-lane units: it is trained on `B·ds0` and injected as `(sg_scale / B)·M(s)`, so
//! its targets do not shrink with the batch size.

use dni_kernels::ops::elementwise::{axpy, scale};
use dni_kernels::ops::loss::{sg_l2, sigmoid_xent, softmax_xent};
use dni_kernels::ops::lstm::{state_join, LstmGrads, LstmWindow};
use dni_kernels::ops::optim::{Optimizer, Param};
use dni_kernels::{Gpu, Tensor};

use super::config::{OutputLoss, RecurrentConfig};
use super::error::{check_eval_steps, check_len, one_hot, Result};
use super::metrics::{EvalResult, Metrics};
use crate::in_flight::InFlight;
use crate::linear::Linear;
use crate::lstm::Lstm;
use crate::sg::model::{SgPass, SgShape, Synthesizer};
use crate::Error;
use dni_tasks::Rng;

/// What the bootstrap's discount needs when it differs from what was injected: a second backward
/// pass of `Jᵀ·M(s_last)` alone (zero loss gradients, parameter gradients into scratch).
struct DiscountBuffers {
    dh_zero: Tensor,
    dw_x: Tensor,
    dw_h: Tensor,
    dbias: Tensor,
    /// `((γ − applied scale)/B)·M(s_last)`, and what it sends back to `s0`.
    inj: Tensor,
    ds0: Tensor,
}

/// Buffers of the aux head `A: h → 2H`.
struct AuxBuffers {
    weight: f32,
    /// `h_1`: rows `0..B` of the window's hidden states (first-step aux only).
    h1: Tensor,
    /// Gradient rows `0..B` of `dh_seq`, where the first-step aux gradient is added.
    dh1: Tensor,
    /// `A`'s output and its gradient: `[B, 2H]` at the first step, `[T·B, 2H]` at every step.
    pred: Tensor,
    dpred: Tensor,
    /// The aux task at every step: where its targets are computed.
    ahead: Option<Lookahead>,
}

/// The next window run forward from `s_last`, for the every-step aux targets `M(s_{t+T})`.
struct Lookahead {
    window: LstmWindow,
    /// The next window's inputs `[T, B, input]`.
    x: Tensor,
    /// `c_{T+1}..c_{2T}` and the states `[h | c]` built from them, `[T·B, H]` and `[T·B, 2H]`.
    c: Tensor,
    states: Tensor,
    /// `M` over those `T·B` states: the targets.
    targets: SgPass,
}

/// Per-step truncated-BPTT trainer of an LSTM with optional DNI / DNI + Aux. See the module docs for one step.
pub(crate) struct PerStepTrainer {
    gpu: Gpu,
    cfg: RecurrentConfig,
    lstm: Lstm,
    readout: Linear,
    /// The SG model, with its own optimiser (which also updates the aux head: a separate instance
    /// even with the core's settings, so that skipped SG updates do not advance the core's Adam
    /// step count).
    sg: Option<Synthesizer>,
    discount: Option<DiscountBuffers>,
    aux: Option<(Linear, AuxBuffers)>,
    optimizer: Optimizer,
    apply_sg: bool,
    train_sg: bool,

    /// `[T, B, input]`.
    x: Tensor,
    /// `[T, B, output]` bits (sigmoid) or `[T·B]` class ids (softmax).
    targets: Tensor,
    /// `[T, B, output]` (sigmoid only).
    mask: Option<Tensor>,
    logits: Tensor,
    dlogits: Tensor,
    dh_seq: Tensor,

    /// `[3]` (nats, wrong bits, scored rows) for sigmoid; `[2]` (nats, wrong) for softmax.
    task_metrics: Tensor,
    sg_loss: Tensor,
    sg_zero_loss: Tensor,
    aux_loss: Tensor,
    windows_unread: u64,
    sg_windows_unread: u64,
    windows_total: u64,
    in_flight: InFlight,
    /// Dispatches the last training step recorded.
    last_dispatches: usize,

    host_x: Vec<f32>,
    host_labels: Vec<f32>,
    eval_s0: Tensor,
    eval_metrics: Tensor,
}

impl PerStepTrainer {
    /// Builds the model (seeded initial weights, forget-gate bias 1, SG model and aux head at zero)
    /// and every buffer a step needs, so that steps allocate nothing.
    pub fn new(gpu: &Gpu, cfg: RecurrentConfig) -> Result<Self> {
        cfg.validate()?;
        if cfg.sg.normalise && cfg.method.has_sg() {
            return Err(Error::Config {
                field: "sg_normalise",
                value: "true".into(),
                reason: "target normalisation runs on the fused kernels only: they need \
                         subgroups of 8 to 64 lanes (a Vulkan, Metal or DX12 adapter; see \
                         `dni-train devices`) and the paper's linear SG on [h; c] with the default \
                         discount",
            });
        }
        let (i, h, o, b, t) = (cfg.input, cfg.hidden, cfg.output, cfg.batch, cfg.t);
        let mut rng = Rng::new(cfg.seed);
        let lstm = Lstm::new(gpu, i, h, b, t, &mut rng)?;
        let readout = Linear::uniform(gpu, &mut rng, h, o)?;
        let sg = match cfg.method.has_sg() {
            true => Some(Synthesizer::new(
                gpu,
                cfg.sg,
                cfg.method.sg_scale(),
                SgShape {
                    width: 2 * h,
                    out: 2 * h,
                    context: 0,
                    predict_rows: b,
                    fit_rows: b,
                },
                Optimizer::with_clip(gpu, cfg.sg_optim.unwrap_or(cfg.optim), cfg.clip)?,
                &mut |n, bound| rng.symmetric(n, bound),
            )?),
            false => None,
        };
        // The bootstrap is discounted by what was injected unless the discount says otherwise.
        let discount = match &sg {
            Some(_) if cfg.sg.discount.is_some() => Some(DiscountBuffers {
                dh_zero: Tensor::zeros(gpu, &[t * b, h])?,
                dw_x: Tensor::zeros(gpu, &[i, 4 * h])?,
                dw_h: Tensor::zeros(gpu, &[h, 4 * h])?,
                dbias: Tensor::zeros(gpu, &[4 * h])?,
                inj: Tensor::zeros(gpu, &[b, 2 * h])?,
                ds0: Tensor::zeros(gpu, &[b, 2 * h])?,
            }),
            _ => None,
        };
        let aux = match (cfg.method.aux_weight(), &sg) {
            (Some(weight), Some(m)) => {
                let every = cfg.method.aux_every_step();
                let rows = if every { t * b } else { b };
                let ahead = match every {
                    true => Some(Lookahead {
                        window: LstmWindow::new(gpu, i, h, b, t)?,
                        x: Tensor::zeros(gpu, &[t, b, i])?,
                        c: Tensor::zeros(gpu, &[t * b, h])?,
                        states: Tensor::zeros(gpu, &[t * b, 2 * h])?,
                        targets: m.pass(gpu, t * b)?,
                    }),
                    false => None,
                };
                Some((
                    Linear::zeros(gpu, h, 2 * h)?,
                    AuxBuffers {
                        weight,
                        h1: Tensor::zeros(gpu, &[b, h])?,
                        dh1: Tensor::zeros(gpu, &[b, h])?,
                        pred: Tensor::zeros(gpu, &[rows, 2 * h])?,
                        dpred: Tensor::zeros(gpu, &[rows, 2 * h])?,
                        ahead,
                    },
                ))
            }
            _ => None,
        };
        let (targets, mask, task_width) = match cfg.loss {
            OutputLoss::SigmoidBits => (
                Tensor::zeros(gpu, &[t, b, o])?,
                Some(Tensor::zeros(gpu, &[t, b, o])?),
                3,
            ),
            OutputLoss::Softmax => (Tensor::zeros(gpu, &[t * b])?, None, 2),
        };
        Ok(Self {
            lstm,
            readout,
            sg,
            discount,
            aux,
            optimizer: Optimizer::with_clip(gpu, cfg.optim, cfg.clip)?,
            apply_sg: cfg.method.has_sg(),
            train_sg: cfg.method.has_sg(),
            x: Tensor::zeros(gpu, &[t, b, i])?,
            targets,
            mask,
            logits: Tensor::zeros(gpu, &[t * b, o])?,
            dlogits: Tensor::zeros(gpu, &[t * b, o])?,
            dh_seq: Tensor::zeros(gpu, &[t * b, h])?,
            task_metrics: Tensor::zeros(gpu, &[task_width])?,
            sg_loss: Tensor::zeros(gpu, &[1])?,
            sg_zero_loss: Tensor::zeros(gpu, &[1])?,
            aux_loss: Tensor::zeros(gpu, &[1])?,
            windows_unread: 0,
            sg_windows_unread: 0,
            windows_total: 0,
            in_flight: InFlight::default(),
            last_dispatches: 0,
            host_x: vec![0.0; t * b * i],
            host_labels: vec![0.0; t * b],
            eval_s0: Tensor::zeros(gpu, &[b, 2 * h])?,
            eval_metrics: Tensor::zeros(gpu, &[2])?,
            gpu: gpu.clone(),
            cfg,
        })
    }

    pub fn config(&self) -> &RecurrentConfig {
        &self.cfg
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Windows trained so far.
    pub fn windows_trained(&self) -> u64 {
        self.windows_total
    }

    /// Whether the synthetic gradient is injected at the window's end (default: on for DNI methods).
    /// Off while still training it is, e.g., a BPTT warm-up during which the SG model learns.
    pub fn set_sg_apply(&mut self, on: bool) {
        self.apply_sg = on && self.sg.is_some();
    }

    /// Whether the SG model is trained on the bootstrapped gradient (default: on for DNI methods).
    pub fn set_sg_train(&mut self, on: bool) {
        self.train_sg = on && self.sg.is_some();
    }

    pub fn sg_applied(&self) -> bool {
        self.apply_sg
    }

    pub fn sg_trained(&self) -> bool {
        self.train_sg
    }

    /// The carried state `[B, 2H]` = `[h | c]` that the next window starts from.
    pub fn state(&self) -> &Tensor {
        self.lstm.state()
    }

    /// Every parameter by name: `lstm.w_x`, `lstm.w_h`, `lstm.bias`, `readout.w`, `readout.b`,
    /// then `sg.w`, `sg.b` and `aux.w`, `aux.b` when present. Gradients hold the last step's.
    pub fn params(&self) -> Vec<(&'static str, &Param)> {
        let mut v = vec![
            ("lstm.w_x", self.lstm.params()[0].1),
            ("lstm.w_h", self.lstm.params()[1].1),
            ("lstm.bias", self.lstm.params()[2].1),
            ("readout.w", &self.readout.w),
            ("readout.b", &self.readout.b),
        ];
        if let Some(m) = &self.sg {
            v.extend(m.params());
        }
        if let Some((a, _)) = &self.aux {
            v.push(("aux.w", &a.w));
            v.push(("aux.b", &a.b));
        }
        v
    }

    /// Dispatches the last training step recorded (0 before the first).
    pub fn dispatches_per_window(&self) -> usize {
        self.last_dispatches
    }

    /// A parameter's value (or its last gradient) by name, read back.
    pub fn read_param(&self, name: &str, grad: bool) -> Result<Vec<f32>> {
        let params = self.params();
        let Some((_, p)) = params.iter().find(|(n, _)| *n == name) else {
            return Err(Error::UnknownParam(name.to_string()));
        };
        Ok(self.gpu.read(if grad { &p.grad } else { &p.value })?)
    }

    /// Changes the core's learning rate (takes effect from the next step).
    pub fn set_lr(&self, lr: f32) -> Result<()> {
        self.optimizer.set_lr(&self.gpu, lr)?;
        Ok(())
    }

    /// One training step on a window of bit vectors (`SigmoidBits` models). All three slices are laid out
    /// `[T][B][width]`: `inputs` with the input width, `targets` and `mask` with the output width.
    /// `next_inputs`, the next window's inputs laid out as `inputs`, is read by the aux task at
    /// every step (and required there); other methods ignore it.
    pub fn train_window(
        &mut self,
        inputs: &[f32],
        targets: &[f32],
        mask: &[f32],
        next_inputs: Option<&[f32]>,
    ) -> Result<()> {
        let Some(mask_t) = &self.mask else {
            return Err(Error::Mode(
                "train_window needs a SigmoidBits model; use train_window_tokens for softmax",
            ));
        };
        let (t, b) = (self.cfg.t, self.cfg.batch);
        check_len("inputs", inputs.len(), t * b * self.cfg.input)?;
        check_len("targets", targets.len(), t * b * self.cfg.output)?;
        check_len("mask", mask.len(), t * b * self.cfg.output)?;
        if let Some((
            _,
            AuxBuffers {
                ahead: Some(ahead), ..
            },
        )) = &self.aux
        {
            let Some(next) = next_inputs else {
                return Err(Error::Mode(
                    "the aux task at every step needs the next window's inputs \
                     (BitWindow::next_inputs)",
                ));
            };
            check_len("next_inputs", next.len(), t * b * self.cfg.input)?;
            ahead.x.write(&self.gpu, next)?;
        }
        self.x.write(&self.gpu, inputs)?;
        self.targets.write(&self.gpu, targets)?;
        mask_t.write(&self.gpu, mask)?;
        self.step()
    }

    /// One training step on token ids (`Softmax` models with one-hot input of width `input`). Both
    /// slices are laid out `[T][B]`; `targets[s][b]` is the token that should follow `inputs[s][b]`.
    pub fn train_window_tokens(&mut self, inputs: &[u32], targets: &[u32]) -> Result<()> {
        if self.cfg.loss != OutputLoss::Softmax {
            return Err(Error::Mode(
                "train_window_tokens needs a Softmax model; use train_window for bit targets",
            ));
        }
        self.upload_tokens(inputs, targets)?;
        self.step()
    }

    /// Reads the metrics accumulated since the previous call and clears them (one read-back).
    pub fn read_metrics(&mut self) -> Result<Metrics> {
        let vals = self.gpu.read_many(&[
            &self.task_metrics,
            &self.sg_loss,
            &self.sg_zero_loss,
            &self.aux_loss,
        ])?;
        let task = &vals[0];
        let scored = match self.cfg.loss {
            OutputLoss::SigmoidBits => task[2] as f64,
            OutputLoss::Softmax => {
                (self.windows_unread * (self.cfg.t * self.cfg.batch) as u64) as f64
            }
        };
        let m = Metrics {
            windows: self.windows_unread,
            loss_nats: task[0] as f64,
            errors: task[1] as f64,
            scored,
            sg_windows: self.sg_windows_unread,
            sg_loss: vals[1][0] as f64,
            sg_zero_loss: vals[2][0] as f64,
            aux_windows: if self.aux.is_some() {
                self.windows_unread
            } else {
                0
            },
            aux_loss: vals[3][0] as f64,
            sg_target_rms: None,
        };
        let mut enc = self.gpu.encoder();
        for t in [
            &self.task_metrics,
            &self.sg_loss,
            &self.sg_zero_loss,
            &self.aux_loss,
        ] {
            enc.clear(t);
        }
        self.gpu.submit(enc);
        self.windows_unread = 0;
        self.sg_windows_unread = 0;
        self.in_flight.clear();
        Ok(m)
    }

    /// Waits for every submitted step by reading back one scalar (the running task-loss sum) and returns
    /// it; metrics are left as they are. Benchmarks end each timed step with this.
    pub fn finish(&mut self) -> Result<f32> {
        let v = self.gpu.read(&self.task_metrics)?;
        self.in_flight.clear();
        Ok(v[0])
    }

    /// Zeroes the carried state (the next window starts from `h = c = 0`).
    pub fn reset_state(&mut self) {
        let mut enc = self.gpu.encoder();
        self.lstm.reset(&mut enc);
        self.gpu.submit(enc);
    }

    /// Forward-only pass over held-out tokens (`Softmax` models), with its own state that starts at 0;
    /// training state and parameters are untouched. `next` fills one `[T][B]` window of inputs and
    /// targets and returns how many of its `T` steps are real (the rest is padding and is not scored),
    /// or `None` when the data is exhausted; `dni_tasks::EvalStream::next_window` has this shape.
    pub fn evaluate_tokens(
        &mut self,
        mut next: impl FnMut(&mut Vec<u32>, &mut Vec<u32>) -> Option<usize>,
    ) -> Result<EvalResult> {
        if self.cfg.loss != OutputLoss::Softmax {
            return Err(Error::Mode("evaluate_tokens needs a Softmax model"));
        }
        let (t, b) = (self.cfg.t, self.cfg.batch);
        let mut enc = self.gpu.encoder();
        enc.clear(&self.eval_s0);
        enc.clear(&self.eval_metrics);
        self.gpu.submit(enc);
        let (mut ins, mut tgts) = (Vec::new(), Vec::new());
        let mut chars = 0u64;
        let mut queued = InFlight::default();
        while let Some(steps) = next(&mut ins, &mut tgts) {
            if steps == 0 {
                continue;
            }
            check_eval_steps(steps, t)?;
            self.upload_tokens(&ins, &tgts)?;
            if steps < t {
                // Time-major: the padding is rows steps·B.. ; a label of -1 is not scored.
                self.host_labels[steps * b..].fill(-1.0);
                self.targets.write(&self.gpu, &self.host_labels)?;
            }
            let mut enc = self.gpu.encoder();
            self.lstm.forward_from(&mut enc, &self.x, &self.eval_s0)?;
            enc.copy(self.lstm.last_state(), &self.eval_s0)?;
            let h_seq = self.lstm.h_rows()?;
            self.readout.forward(&mut enc, &h_seq, &self.logits)?;
            softmax_xent(
                &mut enc,
                &self.logits,
                &self.targets,
                &self.dlogits,
                0.0,
                &self.eval_metrics,
            )?;
            queued.submitted(&self.gpu, self.gpu.submit(enc))?;
            chars += (steps * b) as u64;
        }
        let m = self.gpu.read(&self.eval_metrics)?;
        Ok(EvalResult {
            loss_nats: m[0] as f64,
            errors: m[1] as f64,
            chars,
        })
    }

    /// One-hot inputs and float class ids, built on the host and written into the persistent tensors.
    fn upload_tokens(&mut self, inputs: &[u32], targets: &[u32]) -> Result<()> {
        let (t, b, v) = (self.cfg.t, self.cfg.batch, self.cfg.input);
        check_len("token inputs", inputs.len(), t * b)?;
        check_len("token targets", targets.len(), t * b)?;
        one_hot("input", inputs, v, &mut self.host_x)?;
        for (dst, &id) in self.host_labels.iter_mut().zip(targets) {
            if id as usize >= self.cfg.output {
                return Err(Error::Token {
                    what: "target",
                    id,
                    vocab: self.cfg.output,
                });
            }
            *dst = id as f32;
        }
        self.x.write(&self.gpu, &self.host_x)?;
        self.targets.write(&self.gpu, &self.host_labels)?;
        Ok(())
    }

    /// Records and submits one training step on the uploaded window.
    fn step(&mut self) -> Result<()> {
        let (b, h) = (self.cfg.batch, self.cfg.hidden);
        let inv_b = 1.0 / b as f32;
        let mut enc = self.gpu.encoder();
        // 1-2. Forward, readout, task loss and the readout's gradients.
        self.lstm.forward(&mut enc, &self.x)?;
        let h_seq = self.lstm.h_rows()?;
        self.readout.forward(&mut enc, &h_seq, &self.logits)?;
        match &self.mask {
            Some(mask) => sigmoid_xent(
                &mut enc,
                &self.logits,
                &self.targets,
                mask,
                &self.dlogits,
                inv_b,
                &self.task_metrics,
            )?,
            None => softmax_xent(
                &mut enc,
                &self.logits,
                &self.targets,
                &self.dlogits,
                inv_b,
                &self.task_metrics,
            )?,
        }
        self.readout
            .backward_params(&mut enc, &h_seq, &self.dlogits)?;
        self.readout
            .backward_input(&mut enc, &self.dlogits, &self.dh_seq, false)?;

        // 3. The synthetic gradient at the window's end.
        let aux_on = self.aux.is_some();
        let mut injected = None;
        if let Some(m) = &self.sg {
            if self.apply_sg || aux_on || self.discount.is_some() {
                m.predict(&mut enc, self.lstm.last_state(), None)?;
            }
            if self.apply_sg {
                injected = Some(m.inject(&mut enc, inv_b)?);
            }
        }

        // 4. Aux. At every step: the next window forward from s_last with the same weights gives
        //    s_{T+1}..s_{2T}; A(h_t) regresses onto M(s_{t+T}) and its gradient joins dh_seq. At the
        //    first step: A(h_1) regresses onto M(s_last); its gradient joins dh_seq rows 0..B.
        if let (Some((a, ab)), Some(m)) = (&self.aux, &self.sg) {
            match &ab.ahead {
                Some(ahead) => {
                    let rows = self.cfg.t * b;
                    ahead.window.forward(
                        &mut enc,
                        self.lstm.values(),
                        &ahead.x,
                        self.lstm.last_state(),
                    )?;
                    // The lookahead's c_seq starts with its own first state's c (s_last's): skip it.
                    enc.copy_region(ahead.window.c_seq(), b * h, &ahead.c, 0, rows * h)?;
                    let h_ahead = ahead.window.h_seq().reshape(&[rows, h])?;
                    state_join(&mut enc, &h_ahead, &ahead.c, &ahead.states)?;
                    m.evaluate(&mut enc, &ahead.targets, &ahead.states, None)?;
                    // Averaged over the T steps: the same total weight a window's aux task has at
                    // the first step (summed, it ran away at T = 5; docs/RECURRENT.md).
                    a.forward(&mut enc, &h_seq, &ab.pred)?;
                    sg_l2(
                        &mut enc,
                        &ab.pred,
                        &ahead.targets.out,
                        &ab.dpred,
                        ab.weight * inv_b / self.cfg.t as f32,
                        Some(&self.aux_loss),
                    )?;
                    a.backward_params(&mut enc, &h_seq, &ab.dpred)?;
                    a.backward_input(&mut enc, &ab.dpred, &self.dh_seq, true)?;
                }
                None => {
                    enc.copy_region(self.lstm.h_seq(), 0, &ab.h1, 0, b * h)?;
                    a.forward(&mut enc, &ab.h1, &ab.pred)?;
                    sg_l2(
                        &mut enc,
                        &ab.pred,
                        m.prediction()?,
                        &ab.dpred,
                        ab.weight * inv_b,
                        Some(&self.aux_loss),
                    )?;
                    a.backward_params(&mut enc, &ab.h1, &ab.dpred)?;
                    enc.copy_region(&self.dh_seq, 0, &ab.dh1, 0, b * h)?;
                    a.backward_input(&mut enc, &ab.dpred, &ab.dh1, true)?;
                    enc.copy_region(&ab.dh1, 0, &self.dh_seq, 0, b * h)?;
                }
            }
        }

        // 5. Backward through the window.
        let ds0 = self
            .lstm
            .backward(&mut enc, &self.x, &self.dh_seq, injected, None)?;

        // 6. Train M(s0) on the bootstrapped gradient that reached s0 (not on the first window: no
        //    window before it used M there). With a discount of its own, the bootstrap's share is
        //    corrected by a second pass of Jᵀ·M(s_last) alone: ds0 += ((γ − applied scale)/B)·Jᵀ·M.
        let [w_x, w_h, bias] = self.lstm.param_list();
        let params: Vec<&Param> = vec![w_x, w_h, bias, &self.readout.w, &self.readout.b];
        let sg_trained = self.train_sg && self.windows_total > 0;
        if let (Some(m), true) = (&self.sg, sg_trained) {
            if let Some(d) = &self.discount {
                let applied = if self.apply_sg {
                    self.cfg.method.sg_scale()
                } else {
                    0.0
                };
                let extra = self.cfg.sg.discount_or(applied) - applied;
                if extra != 0.0 {
                    enc.copy(m.prediction()?, &d.inj)?;
                    scale(&mut enc, extra * inv_b, &d.inj)?;
                    let scratch = LstmGrads {
                        dw_x: &d.dw_x,
                        dw_h: &d.dw_h,
                        dbias: &d.dbias,
                    };
                    self.lstm.backward_into(
                        &mut enc,
                        &self.x,
                        &d.dh_zero,
                        Some(&d.inj),
                        scratch,
                        &d.ds0,
                        None,
                    )?;
                    axpy(&mut enc, 1.0, &d.ds0, ds0)?;
                }
            }
            scale(&mut enc, b as f32, ds0)?;
            m.fit(
                &mut enc,
                self.lstm.state(),
                None,
                ds0,
                inv_b,
                &self.sg_loss,
                &self.sg_zero_loss,
            )?;
        }
        let aux_params: Vec<&Param> = match &self.aux {
            Some((a, _)) => vec![&a.w, &a.b],
            None => Vec::new(),
        };

        // 7-8. Update, and carry the state on.
        self.optimizer.step(&mut enc, &params)?;
        if let Some(m) = &self.sg {
            m.step(&mut enc, sg_trained, &aux_params)?;
        }
        self.lstm.carry(&mut enc)?;
        self.last_dispatches = enc.dispatches();
        let submission = self.gpu.submit(enc);

        self.windows_total += 1;
        self.windows_unread += 1;
        self.sg_windows_unread += sg_trained as u64;
        self.in_flight.submitted(&self.gpu, submission)?;
        Ok(())
    }
}

/// Checkpoints: everything that carries training state from one window to the next, by name.
impl PerStepTrainer {
    /// Every GPU buffer that carries state across windows: parameters with their gradients and
    /// optimiser moments, the optimisers' step counters, the carried state and the metric sums.
    /// Buffers every window rewrites before reading are not listed. A new buffer that carries
    /// state needs one line here.
    pub(crate) fn state_tensors(&self) -> Vec<(String, &Tensor)> {
        let mut v: Vec<(String, &Tensor)> = Vec::new();
        for (name, p) in self.params() {
            crate::state::push_param_state(&mut v, name, p);
        }
        v.push(("optimizer".into(), self.optimizer.state_tensor()));
        if let Some(m) = &self.sg {
            v.push(("sg_optimizer".into(), m.optimizer().state_tensor()));
        }
        v.push(("s0".into(), self.lstm.state()));
        v.push(("task_metrics".into(), &self.task_metrics));
        v.push(("sg_loss".into(), &self.sg_loss));
        v.push(("sg_zero_loss".into(), &self.sg_zero_loss));
        v.push(("aux_loss".into(), &self.aux_loss));
        v
    }

    /// The host-side counters and switches, by name (one line each, as in `state_tensors`).
    pub(crate) fn state_counters(&self) -> Vec<(&'static str, Vec<u64>)> {
        vec![
            ("windows_total", vec![self.windows_total]),
            ("windows_unread", vec![self.windows_unread]),
            ("sg_windows_unread", vec![self.sg_windows_unread]),
            ("apply_sg", vec![self.apply_sg as u64]),
            ("train_sg", vec![self.train_sg as u64]),
        ]
    }

    /// Sets one of `state_counters` (same name, one value).
    pub(crate) fn set_state_counter(&mut self, name: &str, v: &[u64]) -> Result<()> {
        check_len("checkpoint counter", v.len(), 1)?;
        match name {
            "windows_total" => self.windows_total = v[0],
            "windows_unread" => self.windows_unread = v[0],
            "sg_windows_unread" => self.sg_windows_unread = v[0],
            "apply_sg" => self.apply_sg = v[0] != 0 && self.sg.is_some(),
            "train_sg" => self.train_sg = v[0] != 0 && self.sg.is_some(),
            _ => return Err(Error::Checkpoint(format!("unknown counter {name:?}"))),
        }
        self.in_flight.clear();
        Ok(())
    }
}
