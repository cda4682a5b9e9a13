//! The two-timescale system: network A (an LSTM over the input stream), network B (an LSTM that
//! ticks once per window of A and reads A's message), and the A→B connection, trained end to end,
//! with a synthetic gradient, or decoupled without one.
//!
//! One call of [`TwoTimescale::train_block`] covers `T²` steps of every lane and records them into
//! one command buffer, submitted without waiting:
//!
//! - **Decoupled (DNI, no DNI)**, for each of the `T` windows of A: forward `T` steps from A's
//!   carried state; readout, loss and gradient at the window's last step; the message (h at that
//!   step) is stored as B's input for this tick; with DNI, `(sg_scale / B)·M(message)` joins the
//!   gradient at that h; backward through the window; update A. Then B: forward its `T` ticks over
//!   the stored messages; readout and loss at the last tick; backward (with DNI also down to the
//!   messages, `δ = ∂L_B/∂message`); update B; with DNI, `M(messages)` regresses onto `B·δ`.
//! - **End to end**: A is one window of `T²` steps with an answer at every `T`-th step; its `T`
//!   messages feed B; B's forward and backward give `δ` for each message, which joins A's gradient at
//!   those steps; A's backward then runs through all `T²` steps; A and B update once.
//!
//! B's input on a tick is `[message | first-tick flag]`, the flag being B's clock like A's input flag.
//! It is assembled as `messages·[I | 0] + flags` (one product, no strided copy), and `δ` is taken
//! back out as `dx_B·[I | 0]ᵀ`.
//!
//! Losses are averaged over the lanes, so the gradients the kernels produce are `1/B` of one lane's.
//! The SG model works in one lane's units: it is trained on `B·δ` and injected as
//! `(sg_scale / B)·M(message)`, so its targets do not change with the batch size.

use dni_kernels::ops::elementwise::axpy;
use dni_kernels::ops::loss::softmax_xent;
use dni_kernels::ops::matmul::{matmul, Matmul};
use dni_kernels::ops::optim::{Optimizer, Param};
use dni_kernels::{Encoder, Gpu, Tensor};
use dni_tasks::Rng;

use super::config::{Method, TimescaleConfig};
use super::metrics::{Evaluation, Metrics, Scores};
use super::TaskBlock;
use crate::error::{check_len, Error, Result};
use crate::in_flight::InFlight;
use crate::linear::Linear;
use crate::lstm::Lstm;
use crate::recurrent::StateBuf;
use crate::sg::model::{SgShape, Synthesizer};
use crate::sg::{fidelity, Fidelity, SgConfig};

/// One LSTM (with its carried training state) and its readout, optimiser and buffers.
struct Net {
    lstm: Lstm,
    readout: Linear,
    optimizer: Optimizer,
    /// Carried state `[B, 2H]` of evaluation (zeroed per evaluation).
    eval_state: Tensor,
    /// `[steps·B, classes]`.
    logits: Tensor,
    dlogits: Tensor,
    /// `[steps, B, H]`: the loss gradient at every output.
    dh: Tensor,
    /// `[nats, wrong]` of training and of evaluation.
    metrics: Tensor,
    eval_metrics: Tensor,
}

impl Net {
    #[allow(clippy::too_many_arguments)]
    fn new(
        gpu: &Gpu,
        rng: &mut Rng,
        cfg: &TimescaleConfig,
        input: usize,
        hidden: usize,
        classes: usize,
        steps: usize,
    ) -> Result<Self> {
        let b = cfg.batch;
        Ok(Self {
            lstm: Lstm::new(gpu, input, hidden, b, steps, rng)?,
            readout: Linear::uniform(gpu, rng, hidden, classes)?,
            optimizer: Optimizer::new(gpu, cfg.optim)?,
            eval_state: Tensor::zeros(gpu, &[b, 2 * hidden])?,
            logits: Tensor::zeros(gpu, &[steps * b, classes])?,
            dlogits: Tensor::zeros(gpu, &[steps * b, classes])?,
            dh: Tensor::zeros(gpu, &[steps, b, hidden])?,
            metrics: Tensor::zeros(gpu, &[2])?,
            eval_metrics: Tensor::zeros(gpu, &[2])?,
        })
    }

    /// The window's outputs as `[steps·B, H]` rows.
    fn h_rows(&self) -> Result<Tensor> {
        self.lstm.h_rows()
    }

    /// Forward over `x` from `state` (training or evaluation state), then readout and loss at the
    /// rows `labels` scores. The state is not advanced yet: [`Net::finish`] does that.
    fn forward(
        &self,
        enc: &mut Encoder,
        x: &Tensor,
        labels: &Tensor,
        eval: bool,
        loss_scale: f32,
    ) -> Result<()> {
        let state = if eval {
            &self.eval_state
        } else {
            self.lstm.state()
        };
        let metrics = if eval {
            &self.eval_metrics
        } else {
            &self.metrics
        };
        self.lstm.forward_from(enc, x, state)?;
        let h = self.h_rows()?;
        self.readout.forward(enc, &h, &self.logits)?;
        softmax_xent(
            enc,
            &self.logits,
            labels,
            &self.dlogits,
            loss_scale,
            metrics,
        )?;
        Ok(())
    }

    /// The readout's gradients, and the loss gradient at every output into `dh`.
    fn readout_backward(&self, enc: &mut Encoder) -> Result<()> {
        let h = self.h_rows()?;
        self.readout.backward_params(enc, &h, &self.dlogits)?;
        Ok(self.readout.backward_input(
            enc,
            &self.dlogits,
            &self.dh.reshape(&[h.shape()[0], h.shape()[1]])?,
            false,
        )?)
    }

    /// Backward through the window (from `dh`), then one update of the core and the readout.
    fn backward_and_update(
        &self,
        enc: &mut Encoder,
        x: &Tensor,
        dx: Option<&Tensor>,
    ) -> Result<()> {
        let dh = self
            .dh
            .reshape(&[self.lstm.steps() * self.lstm.batch(), self.lstm.hidden()])?;
        self.lstm.backward(enc, x, &dh, None, dx)?;
        self.optimizer.step(enc, &self.all_params())?;
        Ok(())
    }

    /// Carries the state on to the next window.
    fn finish(&self, enc: &mut Encoder, eval: bool) -> Result<()> {
        match eval {
            true => Ok(enc.copy(self.lstm.last_state(), &self.eval_state)?),
            false => self.lstm.carry(enc),
        }
    }

    fn all_params(&self) -> Vec<&Param> {
        let [w, b] = self.readout.params();
        let [w_x, w_h, bias] = self.lstm.param_list();
        vec![w_x, w_h, bias, w, b]
    }
}

/// The link's synthetic gradient: the shared SG module on A's message (`H_A → H_A`, linear,
/// zero-initialised), with the message buffer it is evaluated on and its metric sums.
struct Sg {
    model: Synthesizer,
    /// `[B, H_A]`: one window's message.
    msg: Tensor,
    /// With `sg_conditioned`: B's answer for the block one-hot, for one window's message
    /// `[B, classes_b]` and for all the block's `[T·B, classes_b]` (tick-major, as the messages'
    /// rows).
    labels: Option<(Tensor, Tensor)>,
    loss: Tensor,
    zero_loss: Tensor,
}

/// Two LSTMs at two timescales, trained end to end, with DNI, or decoupled without it. See the
/// module docs for one block.
pub struct TwoTimescale {
    gpu: Gpu,
    cfg: TimescaleConfig,
    a: Net,
    b: Net,
    sg: Option<Sg>,
    apply_sg: bool,
    train_sg: bool,

    /// A's inputs for one block: `T` tensors `[T, B, I]` (decoupled) or one `[T², B, I]` (end to end).
    xa: Vec<Tensor>,
    /// A's targets, one per tensor of `xa`: `[steps·B]` class ids, -1 (not scored) except on the
    /// last step of each window.
    la: Vec<Tensor>,
    /// B's targets `[T·B]`: -1 except on the last tick.
    lb: Tensor,
    /// `[T, B, H_A]`: the block's messages, and B's gradient for them (in one lane's units with DNI).
    msgs: Tensor,
    dmsgs: Tensor,
    /// `[H_A, H_A + 1]` = `[I | 0]` and `[T·B, H_A + 1]` with 1 in the last column on tick 0: B's input
    /// is `msgs·embed + flags`.
    embed: Tensor,
    flags: Tensor,
    /// `[T, B, H_A + 1]`: B's input and its gradient.
    xb: Tensor,
    dxb: Tensor,
    /// `[steps, B, H_A]`: the gradient the message rows of A's window receive from B (end to end) or
    /// from the SG model (DNI); zero on every other row.
    dm: Tensor,

    host_x: Vec<f32>,
    host_la: Vec<f32>,
    host_lb: Vec<f32>,
    blocks_unread: u64,
    sg_blocks_unread: u64,
    blocks_total: u64,
    /// Whether the last block trained the SG, so that its predictions and B's gradients for that
    /// block's messages are both on the GPU for [`probe_sg`](TwoTimescale::probe_sg).
    probe_ready: bool,
    in_flight: InFlight,
}

impl TwoTimescale {
    /// Builds both networks (seeded weights, forget-gate bias 1; the SG model at zero) and every
    /// buffer a block needs, so that blocks allocate nothing.
    pub fn new(gpu: &Gpu, cfg: TimescaleConfig) -> Result<Self> {
        cfg.validate()?;
        let (t, b, ha, i) = (cfg.t, cfg.batch, cfg.hidden_a, cfg.input);
        let mut rng = Rng::new(cfg.seed);
        let steps_a = if cfg.method.locked() { t * t } else { t };
        let a = Net::new(gpu, &mut rng, &cfg, i, ha, cfg.classes_a, steps_a)?;
        let b_net = Net::new(gpu, &mut rng, &cfg, ha + 1, cfg.hidden_b, cfg.classes_b, t)?;
        let sg = if cfg.method == Method::Dni {
            Some(Sg {
                model: Synthesizer::new(
                    gpu,
                    SgConfig {
                        hidden: cfg.sg_hidden,
                        ..SgConfig::default()
                    },
                    cfg.sg_scale,
                    SgShape {
                        width: ha,
                        out: ha,
                        context: if cfg.sg_conditioned { cfg.classes_b } else { 0 },
                        predict_rows: b,
                        fit_rows: t * b,
                    },
                    Optimizer::new(gpu, cfg.sg_optim)?,
                    // After both networks, so that the SG's draws (an MLP's; a linear model has
                    // none) leave their weights as they were.
                    &mut |n, bound| rng.symmetric(n, bound),
                )?,
                msg: Tensor::zeros(gpu, &[b, ha])?,
                labels: match cfg.sg_conditioned {
                    true => Some((
                        Tensor::zeros(gpu, &[b, cfg.classes_b])?,
                        Tensor::zeros(gpu, &[t * b, cfg.classes_b])?,
                    )),
                    false => None,
                },
                loss: Tensor::zeros(gpu, &[1])?,
                zero_loss: Tensor::zeros(gpu, &[1])?,
            })
        } else {
            None
        };
        let n_xa = t * t / steps_a;
        let mut embed = vec![0.0; ha * (ha + 1)];
        for k in 0..ha {
            embed[k * (ha + 1) + k] = 1.0;
        }
        let mut flags = vec![0.0; t * b * (ha + 1)];
        for lane in 0..b {
            flags[lane * (ha + 1) + ha] = 1.0;
        }
        let on = sg.is_some();
        Ok(Self {
            xa: (0..n_xa)
                .map(|_| Tensor::zeros(gpu, &[steps_a, b, i]))
                .collect::<Result<_, _>>()?,
            la: (0..n_xa)
                .map(|_| Tensor::zeros(gpu, &[steps_a * b]))
                .collect::<Result<_, _>>()?,
            lb: Tensor::zeros(gpu, &[t * b])?,
            msgs: Tensor::zeros(gpu, &[t, b, ha])?,
            dmsgs: Tensor::zeros(gpu, &[t, b, ha])?,
            embed: Tensor::from_slice(gpu, &[ha, ha + 1], &embed)?,
            flags: Tensor::from_slice(gpu, &[t * b, ha + 1], &flags)?,
            xb: Tensor::zeros(gpu, &[t, b, ha + 1])?,
            dxb: Tensor::zeros(gpu, &[t, b, ha + 1])?,
            dm: Tensor::zeros(gpu, &[steps_a, b, ha])?,
            host_x: Vec::with_capacity(t * t * b * i),
            host_la: vec![0.0; steps_a * b],
            host_lb: vec![0.0; t * b],
            blocks_unread: 0,
            sg_blocks_unread: 0,
            blocks_total: 0,
            probe_ready: false,
            in_flight: InFlight::default(),
            a,
            b: b_net,
            sg,
            apply_sg: on,
            train_sg: on,
            gpu: gpu.clone(),
            cfg,
        })
    }

    pub fn config(&self) -> &TimescaleConfig {
        &self.cfg
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Blocks (of `T²` steps) trained so far.
    pub fn blocks_trained(&self) -> u64 {
        self.blocks_total
    }

    /// Updates of A so far: `T` per block when decoupled, 1 end to end.
    pub fn a_updates(&self) -> u64 {
        self.blocks_total * self.xa.len() as u64
    }

    /// Whether A receives the synthetic gradient for its message (DNI only; default on).
    pub fn set_sg_apply(&mut self, on: bool) {
        self.apply_sg = on && self.sg.is_some();
    }

    /// Whether B's message gradients train the SG model (DNI only; default on).
    pub fn set_sg_train(&mut self, on: bool) {
        self.train_sg = on && self.sg.is_some();
    }

    /// Every parameter by name: `a.lstm.w_x`, `a.lstm.w_h`, `a.lstm.bias`, `a.readout.w`,
    /// `a.readout.b`, the same for `b.`, then `sg.w`, `sg.b` with DNI. Gradients hold the last
    /// update's.
    pub fn params(&self) -> Vec<(&'static str, &Param)> {
        const A: [&str; 5] = [
            "a.lstm.w_x",
            "a.lstm.w_h",
            "a.lstm.bias",
            "a.readout.w",
            "a.readout.b",
        ];
        const B: [&str; 5] = [
            "b.lstm.w_x",
            "b.lstm.w_h",
            "b.lstm.bias",
            "b.readout.w",
            "b.readout.b",
        ];
        let mut v: Vec<(&'static str, &Param)> = A.into_iter().zip(self.a.all_params()).collect();
        v.extend(B.into_iter().zip(self.b.all_params()));
        if let Some(sg) = &self.sg {
            v.extend(sg.model.params());
        }
        v
    }

    /// Every GPU buffer that carries training state from one block to the next, by name: for each
    /// parameter of [`params`](Self::params) `NAME.value`, `.grad`, `.m`, `.v` (optimiser moments);
    /// `a.optim`, `b.optim`, `sg.optim` (step counts, bias corrections, learning rate); the carried
    /// states `a.state`, `b.state`; the unread metric sums `a.metrics`, `b.metrics`, `sg.loss`,
    /// `sg.zero_loss`; the last block's link `link.msgs`, `link.dmsgs`.
    fn state_tensors(&self) -> Vec<(String, &Tensor)> {
        let mut v: Vec<(String, &Tensor)> = Vec::new();
        for (name, p) in self.params() {
            crate::state::push_param_state(&mut v, name, p);
        }
        v.push(("a.optim".into(), self.a.optimizer.state_tensor()));
        v.push(("b.optim".into(), self.b.optimizer.state_tensor()));
        v.push(("a.state".into(), self.a.lstm.state()));
        v.push(("b.state".into(), self.b.lstm.state()));
        v.push(("a.metrics".into(), &self.a.metrics));
        v.push(("b.metrics".into(), &self.b.metrics));
        if let Some(sg) = &self.sg {
            v.push(("sg.optim".into(), sg.model.optimizer().state_tensor()));
            v.push(("sg.loss".into(), &sg.loss));
            v.push(("sg.zero_loss".into(), &sg.zero_loss));
        }
        v.push(("link.msgs".into(), &self.msgs));
        v.push(("link.dmsgs".into(), &self.dmsgs));
        v
    }

    /// Host counters and switches: `blocks` = `[trained, unread, sg_unread]`, `sg_switches` =
    /// `[apply, train]`.
    fn state_counters(&self) -> Vec<(&'static str, Vec<u64>)> {
        vec![
            (
                "blocks",
                vec![self.blocks_total, self.blocks_unread, self.sg_blocks_unread],
            ),
            (
                "sg_switches",
                vec![u64::from(self.apply_sg), u64::from(self.train_sg)],
            ),
        ]
    }

    /// The training state (see `state_tensors` and `state_counters` in the source: parameters,
    /// gradients, optimiser moments and step counts, carried states, unread metric sums, block
    /// counters, SG switches), by name, for a checkpoint. Blocking: one read-back per buffer. The
    /// data stream's position is the caller's ([`DigitStream::shuffler`](super::DigitStream)).
    pub fn export_state(&self) -> Result<Vec<(String, StateBuf)>> {
        let mut out = Vec::new();
        for (name, t) in self.state_tensors() {
            out.push((name, StateBuf::F32(self.gpu.read(t)?)));
        }
        for (name, v) in self.state_counters() {
            out.push((name.to_string(), StateBuf::U64(v)));
        }
        Ok(out)
    }

    /// Restores what [`export_state`](Self::export_state) wrote into a system built from the same
    /// config. Every name must be present with its exact length and nothing else may be: a
    /// checkpoint of another shape or method is refused before anything is written.
    pub fn import_state(&mut self, state: &[(String, StateBuf)]) -> Result<()> {
        let find = |name: &str| state.iter().find(|(n, _)| n == name).map(|(_, b)| b);
        let tensors = self.state_tensors();
        let counters = self.state_counters();
        let want_t: Vec<(String, usize)> =
            tensors.iter().map(|(n, t)| (n.clone(), t.len())).collect();
        let want_c: Vec<(String, usize)> = counters
            .iter()
            .map(|(n, c)| (n.to_string(), c.len()))
            .collect();
        crate::state::check(state, &want_t, &want_c).map_err(Error::Checkpoint)?;
        // Everything checked: write.
        for (name, t) in &tensors {
            if let Some(StateBuf::F32(v)) = find(name) {
                t.write(&self.gpu, v)?;
            }
        }
        let u64s = |name: &str| match find(name) {
            Some(StateBuf::U64(v)) => v.clone(),
            _ => Vec::new(),
        };
        if let [total, unread, sg_unread] = u64s("blocks")[..] {
            self.blocks_total = total;
            self.blocks_unread = unread;
            self.sg_blocks_unread = sg_unread;
        }
        if let [apply, train] = u64s("sg_switches")[..] {
            self.apply_sg = apply != 0 && self.sg.is_some();
            self.train_sg = train != 0 && self.sg.is_some();
        }
        self.gpu.sync()?;
        self.in_flight.clear();
        // The last block's predictions are not part of a checkpoint.
        self.probe_ready = false;
        Ok(())
    }

    /// The link's fidelity probe: how well A's synthetic gradients of the last block predicted the
    /// gradients B then sent back for the same messages — the cosine and the explained fraction
    /// between `M(m)` (the SG before its update at the block's end, so exactly what A was given,
    /// up to `sg_scale`) and B's true `δ`, over the block's `T·B` messages, in one lane's units.
    /// `None` without DNI, or when the last block did not train the SG (none yet, SG training
    /// off, or just after [`import_state`](Self::import_state)). Blocking: one read-back.
    pub fn probe_sg(&self) -> Result<Option<Fidelity>> {
        let sg = match (&self.sg, self.probe_ready) {
            (Some(sg), true) => sg,
            _ => return Ok(None),
        };
        let vals = self.gpu.read_many(&[sg.model.fitted()?, &self.dmsgs])?;
        let wide = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
        Ok(Some(fidelity(&wide(&vals[0]), &wide(&vals[1]))))
    }

    /// The block's messages `[T, B, H_A]` and B's gradient for them (one lane's units with DNI,
    /// `1/B` of that end to end), as of the last block.
    #[doc(hidden)]
    pub fn debug_link(&self) -> (&Tensor, &Tensor) {
        (&self.msgs, &self.dmsgs)
    }

    /// The carried states `[B, 2H]` = `[h | c]` of A and B.
    pub fn states(&self) -> (&Tensor, &Tensor) {
        (self.a.lstm.state(), self.b.lstm.state())
    }

    /// Trains on one block of the stream (see [`TwoTimescale::train_block`]).
    pub fn train(&mut self, block: &impl TaskBlock) -> Result<()> {
        self.train_block(block.inputs(), block.targets_a(), block.targets_b())
    }

    /// One block of `T²` steps. `inputs` is `[T², B, input]` (time-major), `targets_a` `[T, B]` the
    /// answer A must give at the end of each of its windows (`0..classes_a`), `targets_b` `[B]` the
    /// answer B must give at the block's end (`0..classes_b`). Records and submits without waiting.
    pub fn train_block(
        &mut self,
        inputs: &[f32],
        targets_a: &[u32],
        targets_b: &[u32],
    ) -> Result<()> {
        self.upload(inputs, targets_a, targets_b)?;
        let mut enc = self.gpu.encoder();
        let inv_b = 1.0 / self.cfg.batch as f32;
        if self.cfg.method.locked() {
            self.record_locked(&mut enc, inv_b)?;
        } else {
            self.record_decoupled(&mut enc, inv_b)?;
        }
        let submission = self.gpu.submit(enc);
        let sg_trained = self.sg.is_some() && self.train_sg;
        self.probe_ready = sg_trained;
        self.blocks_total += 1;
        self.blocks_unread += 1;
        self.sg_blocks_unread += u64::from(sg_trained);
        Ok(self.in_flight.submitted(&self.gpu, submission)?)
    }

    /// Reads the metrics summed since the previous call and clears them (one read-back).
    pub fn read_metrics(&mut self) -> Result<Metrics> {
        let mut ts = vec![&self.a.metrics, &self.b.metrics];
        if let Some(sg) = &self.sg {
            ts.push(&sg.loss);
            ts.push(&sg.zero_loss);
        }
        let vals = self.gpu.read_many(&ts)?;
        let (t, b) = (self.cfg.t as u64, self.cfg.batch as u64);
        let n = self.blocks_unread;
        let m = Metrics {
            blocks: n,
            a: scores(&vals[0], n * t * b),
            b: scores(&vals[1], n * b),
            sg_blocks: self.sg_blocks_unread,
            sg_loss: vals.get(2).map_or(0.0, |v| v[0] as f64),
            sg_zero_loss: vals.get(3).map_or(0.0, |v| v[0] as f64),
        };
        let mut enc = self.gpu.encoder();
        for t in ts {
            enc.clear(t);
        }
        self.gpu.submit(enc);
        self.blocks_unread = 0;
        self.sg_blocks_unread = 0;
        self.in_flight.clear();
        Ok(m)
    }

    /// Forward-only pass over `blocks` held-out blocks that `next` fills, from zero states of its own;
    /// the training state and the parameters are untouched.
    pub fn evaluate<B: TaskBlock + Default>(
        &mut self,
        blocks: usize,
        mut next: impl FnMut(&mut B),
    ) -> Result<Evaluation> {
        let mut enc = self.gpu.encoder();
        for t in [
            &self.a.eval_state,
            &self.b.eval_state,
            &self.a.eval_metrics,
            &self.b.eval_metrics,
        ] {
            enc.clear(t);
        }
        self.gpu.submit(enc);
        let mut blk = B::default();
        for _ in 0..blocks {
            next(&mut blk);
            self.upload(blk.inputs(), blk.targets_a(), blk.targets_b())?;
            let mut enc = self.gpu.encoder();
            for k in 0..self.xa.len() {
                self.a
                    .forward(&mut enc, &self.xa[k], &self.la[k], true, 0.0)?;
                self.gather_messages(&mut enc, k)?;
                self.a.finish(&mut enc, true)?;
            }
            self.b_forward(&mut enc, true, 0.0)?;
            self.b.finish(&mut enc, true)?;
            self.in_flight.submitted(&self.gpu, self.gpu.submit(enc))?;
        }
        let vals = self
            .gpu
            .read_many(&[&self.a.eval_metrics, &self.b.eval_metrics])?;
        let (t, b, n) = (self.cfg.t as u64, self.cfg.batch as u64, blocks as u64);
        Ok(Evaluation {
            blocks: n,
            a: scores(&vals[0], n * t * b),
            b: scores(&vals[1], n * b),
        })
    }

    /// Decoupled: T windows of A, each updating A at once, then B.
    fn record_decoupled(&self, enc: &mut Encoder, inv_b: f32) -> Result<()> {
        let (t, b, ha) = (self.cfg.t, self.cfg.batch, self.cfg.hidden_a);
        let row = b * ha;
        for k in 0..t {
            self.a
                .forward(enc, &self.xa[k], &self.la[k], false, inv_b)?;
            self.gather_messages(enc, k)?;
            self.a.readout_backward(enc)?;
            if let (Some(sg), true) = (&self.sg, self.apply_sg) {
                // δ̂ = M(message) at once, as the gradient of the window's last h.
                enc.copy_region(&self.msgs, k * row, &sg.msg, 0, row)?;
                let labels = sg.labels.as_ref().map(|(window, _)| window);
                sg.model.predict(enc, &sg.msg, labels)?;
                let injected = sg.model.inject(enc, inv_b)?;
                enc.copy_region(injected, 0, &self.dm, (t - 1) * row, row)?;
                axpy(enc, 1.0, &self.dm, &self.a.dh)?;
            }
            self.a.backward_and_update(enc, &self.xa[k], None)?;
            self.a.finish(enc, false)?;
        }
        let want_delta = self.sg.is_some() && self.train_sg;
        self.b_forward(enc, false, inv_b)?;
        self.b.readout_backward(enc)?;
        self.b_backward(enc, want_delta, self.cfg.batch as f32)?;
        if let (Some(sg), true) = (&self.sg, want_delta) {
            // M(messages) regresses onto B's true gradients (one lane's units), a constant target.
            let msgs = self.msgs.reshape(&[t * b, ha])?;
            let target = self.dmsgs.reshape(&[t * b, ha])?;
            sg.model.fit(
                enc,
                &msgs,
                sg.labels.as_ref().map(|(_, block)| block),
                &target,
                inv_b,
                &sg.loss,
                &sg.zero_loss,
            )?;
            sg.model.step(enc, true, &[])?;
        }
        self.b.optimizer.step(enc, &self.b.all_params())?;
        self.b.finish(enc, false)
    }

    /// End to end: A over all T² steps, B, B's message gradients into A, then both update.
    fn record_locked(&self, enc: &mut Encoder, inv_b: f32) -> Result<()> {
        let (t, b, ha) = (self.cfg.t, self.cfg.batch, self.cfg.hidden_a);
        let row = b * ha;
        self.a
            .forward(enc, &self.xa[0], &self.la[0], false, inv_b)?;
        self.gather_messages(enc, 0)?;
        self.a.readout_backward(enc)?;
        self.b_forward(enc, false, inv_b)?;
        self.b.readout_backward(enc)?;
        self.b_backward(enc, true, 1.0)?;
        for j in 0..t {
            enc.copy_region(&self.dmsgs, j * row, &self.dm, (j * t + t - 1) * row, row)?;
        }
        axpy(enc, 1.0, &self.dm, &self.a.dh)?;
        self.a.backward_and_update(enc, &self.xa[0], None)?;
        self.a.finish(enc, false)?;
        self.b.optimizer.step(enc, &self.b.all_params())?;
        self.b.finish(enc, false)
    }

    /// Copies the messages (h on the last step of each window) of A's window `k` into `msgs`.
    fn gather_messages(&self, enc: &mut Encoder, k: usize) -> Result<()> {
        let (t, b, ha) = (self.cfg.t, self.cfg.batch, self.cfg.hidden_a);
        let row = b * ha;
        let per = self.a.lstm.steps() / t;
        for w in 0..per {
            let step = w * t + t - 1;
            enc.copy_region(
                self.a.lstm.h_seq(),
                step * row,
                &self.msgs,
                (k * per + w) * row,
                row,
            )?;
        }
        Ok(())
    }

    /// B's input from the messages, then B's forward, readout and loss on the last tick.
    fn b_forward(&self, enc: &mut Encoder, eval: bool, loss_scale: f32) -> Result<()> {
        let (t, b, ha) = (self.cfg.t, self.cfg.batch, self.cfg.hidden_a);
        let xb = self.xb.reshape(&[t * b, ha + 1])?;
        enc.copy(&self.flags, &xb)?;
        let msgs = self.msgs.reshape(&[t * b, ha])?;
        matmul(
            enc,
            &msgs,
            &self.embed,
            &xb,
            Matmul::default().accumulate(1.0),
        )?;
        self.b.forward(enc, &xb, &self.lb, eval, loss_scale)
    }

    /// B's backward; with `delta`, also the message gradients `dmsgs = alpha·dx_B·[I | 0]ᵀ`.
    fn b_backward(&self, enc: &mut Encoder, delta: bool, alpha: f32) -> Result<()> {
        let (t, b, ha) = (self.cfg.t, self.cfg.batch, self.cfg.hidden_a);
        let xb = self.xb.reshape(&[t * b, ha + 1])?;
        let dxb = self.dxb.reshape(&[t * b, ha + 1])?;
        let dh = self.b.dh.reshape(&[t * b, self.cfg.hidden_b])?;
        self.b
            .lstm
            .backward(enc, &xb, &dh, None, delta.then_some(&dxb))?;
        if delta {
            let dmsgs = self.dmsgs.reshape(&[t * b, ha])?;
            matmul(
                enc,
                &dxb,
                &self.embed,
                &dmsgs,
                Matmul::default().tb().alpha(alpha),
            )?;
        }
        Ok(())
    }

    /// Checks the host data and writes it into the block's input and target tensors.
    fn upload(&mut self, inputs: &[f32], targets_a: &[u32], targets_b: &[u32]) -> Result<()> {
        let (t, b, i) = (self.cfg.t, self.cfg.batch, self.cfg.input);
        check_len("inputs", inputs.len(), t * t * b * i)?;
        check_len("A's targets", targets_a.len(), t * b)?;
        check_len("B's targets", targets_b.len(), b)?;
        check_targets("A's targets", targets_a, self.cfg.classes_a - 1)?;
        check_targets("B's targets", targets_b, self.cfg.classes_b - 1)?;
        let steps_a = self.a.lstm.steps();
        let per = steps_a / t;
        for (k, (x, l)) in self.xa.iter().zip(&self.la).enumerate() {
            let span = steps_a * b * i;
            self.host_x.clear();
            self.host_x
                .extend_from_slice(&inputs[k * span..(k + 1) * span]);
            x.write(&self.gpu, &self.host_x)?;
            self.host_la.fill(-1.0);
            for w in 0..per {
                let step = w * t + t - 1;
                for lane in 0..b {
                    self.host_la[step * b + lane] = targets_a[(k * per + w) * b + lane] as f32;
                }
            }
            l.write(&self.gpu, &self.host_la)?;
        }
        self.host_lb.fill(-1.0);
        for (dst, &v) in self.host_lb[(t - 1) * b..].iter_mut().zip(targets_b) {
            *dst = v as f32;
        }
        self.lb.write(&self.gpu, &self.host_lb)?;
        if let Some((window, block)) = self.sg.as_ref().and_then(|sg| sg.labels.as_ref()) {
            // Every tick's rows hold the lanes' one answer; reuse the x buffer (written above).
            let c = self.cfg.classes_b;
            self.host_x.clear();
            self.host_x.resize(t * b * c, 0.0);
            for tick in 0..t {
                for (lane, &y) in targets_b.iter().enumerate() {
                    self.host_x[(tick * b + lane) * c + y as usize] = 1.0;
                }
            }
            window.write(&self.gpu, &self.host_x[..b * c])?;
            block.write(&self.gpu, &self.host_x)?;
        }
        Ok(())
    }
}

fn scores(v: &[f32], answers: u64) -> Scores {
    Scores {
        answers,
        loss_nats: v[0] as f64,
        errors: v[1] as f64,
    }
}

fn check_targets(what: &'static str, v: &[u32], max: usize) -> Result<()> {
    match v.iter().find(|&&x| x as usize > max) {
        Some(&value) => Err(Error::Target { what, value, max }),
        None => Ok(()),
    }
}
