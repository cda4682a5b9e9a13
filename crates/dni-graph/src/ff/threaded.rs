//! The threaded schedule: one worker thread per block, plus the calling thread feeding batches.
//!
//! Workers exchange GPU tensors, never host copies. A worker records and submits its own command
//! buffers and only then sends the tensors they wrote, so everything a receiver records later is
//! ordered after the producer's work by the one queue.
//!
//! Buffers come from rings owned by their producer: a block's outputs, its input gradients, the
//! feeder's batches. A lent buffer ([`Lent`]) goes back to its owner's inbox when the last holder
//! drops it, which every holder does only after submitting the work that reads it. A producer whose
//! ring is empty waits, which is the back-pressure; the channels themselves are sized so that a send
//! never blocks. Each worker has a single inbox for everything (inputs, gradients, returned buffers),
//! and any wait keeps handling whatever arrives, so two blocks never wait on each other's sends.
//!
//! Protocol per step `s` of block `i` (see docs/FEEDFORWARD.md):
//! - input: the batch (first block, or every block with complete unlock) or the previous block's
//!   activation; with complete unlock, `I_i(x)` stands in for the activation;
//! - forward into a ring buffer; if active, the SG prediction, the gradient mix, the backward pass
//!   and the update, all in one submission (when λ > 0: forward and prediction are submitted, the
//!   true gradient awaited, then backward and update);
//! - the output goes forward (`Fwd`), the input gradient backward (`Bwd`). Every `Fwd` that asks for
//!   a gradient (and, with complete unlock, every step) gets exactly one `Bwd` reply, possibly empty,
//!   so the sender's queue of predictions waiting for their targets always drains.
//! - targets arriving later train the SG model (and, with complete unlock, real activations train
//!   `I(x)`) in a side submission.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dni_kernels::{Encoder, Gpu, Tensor};

use super::block::{Block, DataSlot, HostScratch, PredSlot};
use super::{BatchSource, FfNet, StepStats};
use crate::error::{Error, Result};
use crate::in_flight::InFlight;

/// How often a waiting thread checks whether another one failed.
const POLL: Duration = Duration::from_millis(50);
/// A wait longer than this is a scheduler bug; report it instead of hanging.
const STALL: Duration = Duration::from_secs(300);

/// A ring buffer on its way back to its owner.
enum Item {
    H(Tensor),
    Dx(Tensor),
    Data(DataSlot),
}

/// A buffer lent out of its owner's ring; returned to the owner's inbox on drop.
struct Lent<T: Clone> {
    item: T,
    home: SyncSender<Msg>,
    wrap: fn(T) -> Item,
}

impl<T: Clone> Lent<T> {
    fn new(item: T, home: SyncSender<Msg>, wrap: fn(T) -> Item) -> Arc<Self> {
        Arc::new(Self { item, home, wrap })
    }
}

impl<T: Clone> Drop for Lent<T> {
    fn drop(&mut self) {
        // The owner may have finished and closed its inbox; the buffer is then simply dropped (the
        // net keeps every ring buffer and refills the rings at the start of the next call).
        let _ = self.home.send(Msg::Return((self.wrap)(self.item.clone())));
    }
}

type LentTensor = Arc<Lent<Tensor>>;
type LentData = Arc<Lent<DataSlot>>;

enum Msg {
    /// A batch from the feeder.
    Data {
        step: u64,
        data: LentData,
    },
    /// The previous block's output for `step` (none when it skipped the step under complete unlock).
    Fwd {
        step: u64,
        h: Option<LentTensor>,
        data: LentData,
        want_grad: bool,
    },
    /// The next block's gradient at this block's output for `step` (none when it has none).
    Bwd {
        step: u64,
        grad: Option<LentTensor>,
    },
    Return(Item),
}

#[derive(Clone, Copy)]
enum Wait {
    Input,
    Grad,
    Ring,
    Drain,
}

/// A prediction waiting for its target.
struct Pending {
    step: u64,
    slot: PredSlot,
    /// The model's input (the block's output for `M`, unused for `I`) and the batch.
    h: Option<LentTensor>,
    data: LentData,
}

/// Work recorded outside the step (regressions on arriving targets) and what it reads.
#[derive(Default)]
struct Side {
    enc: Option<Encoder>,
    keep: Vec<LentTensor>,
    keep_data: Vec<LentData>,
    sg_slots: Vec<PredSlot>,
    synth_slots: Vec<PredSlot>,
}

struct Worker<'a> {
    i: usize,
    last: bool,
    unlock: bool,
    p_update: f32,
    gpu: Gpu,
    block: &'a mut Block,
    inbox: Receiver<Msg>,
    me: SyncSender<Msg>,
    up: Option<SyncSender<Msg>>,
    down: Option<SyncSender<Msg>>,
    abort: &'a AtomicBool,
    h_free: Vec<Tensor>,
    dx_free: Vec<Tensor>,
    data_q: VecDeque<(u64, LentData)>,
    fwd_q: VecDeque<(u64, Option<LentTensor>, LentData, bool)>,
    bwd_q: VecDeque<(u64, Option<LentTensor>)>,
    sg_pending: VecDeque<Pending>,
    synth_pending: VecDeque<Pending>,
    /// Targets that came before this block reached their step (complete unlock lets a neighbour run
    /// ahead): SG targets from the next block, real inputs from the previous one.
    early_sg: VecDeque<(u64, Option<LentTensor>)>,
    early_input: VecDeque<(u64, Option<LentTensor>)>,
    /// The first step whose predictions are not yet made (or skipped).
    next_step: u64,
    side: Side,
    /// The step being (or last) run.
    current: u64,
    stats: StepStats,
}

fn internal(what: impl Into<String>) -> Error {
    Error::Internal(what.into())
}

fn send(to: &Option<SyncSender<Msg>>, m: Msg) {
    // A receiver that already finished does not need the message (see Lent::drop).
    if let Some(tx) = to {
        let _ = tx.send(m);
    }
}

impl Worker<'_> {
    fn run(&mut self, first: u64, steps: u64) -> Result<()> {
        for s in first..first + steps {
            let active = self.block.coin.bernoulli(self.p_update);
            self.current = s;
            self.step(s, active)?;
            self.next_step = s + 1;
            while self.early_sg.front().is_some_and(|(t, _)| *t <= s) {
                if let Some((step, grad)) = self.early_sg.pop_front() {
                    self.on_sg_target(step, grad)?;
                }
            }
            while self.early_input.front().is_some_and(|(t, _)| *t <= s) {
                if let Some((step, h)) = self.early_input.pop_front() {
                    self.on_input_target(step, h)?;
                }
            }
        }
        self.wait_until(Wait::Drain, |w| {
            w.sg_pending.is_empty() && w.synth_pending.is_empty()
        })?;
        self.flush();
        Ok(())
    }

    /// Handles messages until `cond` holds, submitting side work before every block so that the
    /// buffers it holds can go back to their owners.
    fn wait_until(&mut self, kind: Wait, cond: impl Fn(&Self) -> bool) -> Result<()> {
        let start = Instant::now();
        let mut blocked = false;
        loop {
            while let Ok(m) = self.inbox.try_recv() {
                self.handle(m)?;
            }
            self.flush();
            if cond(self) {
                break;
            }
            blocked = true;
            match self.inbox.recv_timeout(POLL) {
                Ok(m) => self.handle(m)?,
                Err(RecvTimeoutError::Timeout) => {
                    if self.abort.load(Ordering::Relaxed) {
                        return Err(Error::Aborted);
                    }
                    if start.elapsed() > STALL {
                        return Err(Error::Stalled {
                            block: self.i,
                            what: match kind {
                                Wait::Input => "its input",
                                Wait::Grad => "the true gradient",
                                Wait::Ring => "a free ring buffer",
                                Wait::Drain => "the last regression targets",
                            },
                            secs: STALL.as_secs(),
                        });
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Err(internal("inbox disconnected")),
            }
        }
        if blocked {
            match kind {
                Wait::Input => self.stats.waits_input += 1,
                Wait::Grad => self.stats.waits_grad += 1,
                Wait::Ring => self.stats.waits_ring += 1,
                Wait::Drain => self.stats.waits_drain += 1,
            }
        }
        Ok(())
    }

    fn handle(&mut self, m: Msg) -> Result<()> {
        match m {
            Msg::Return(Item::H(t)) => self.h_free.push(t),
            Msg::Return(Item::Dx(t)) => self.dx_free.push(t),
            Msg::Return(Item::Data(_)) => {
                return Err(internal("a batch buffer came back to a block"))
            }
            Msg::Data { step, data } => self.data_q.push_back((step, data)),
            Msg::Fwd {
                step,
                h,
                data,
                want_grad,
            } => {
                if self.unlock && self.i > 0 {
                    if step < self.next_step {
                        self.on_input_target(step, h)?;
                    } else {
                        self.early_input.push_back((step, h));
                    }
                } else {
                    self.fwd_q.push_back((step, h, data, want_grad));
                }
            }
            Msg::Bwd { step, grad } => {
                if self.block.waits() {
                    self.bwd_q.push_back((step, grad));
                } else if step < self.next_step {
                    self.on_sg_target(step, grad)?;
                } else {
                    self.early_sg.push_back((step, grad));
                }
            }
        }
        Ok(())
    }

    /// A gradient for step `step` came back: regress the SG prediction made for that step on it.
    fn on_sg_target(&mut self, step: u64, grad: Option<LentTensor>) -> Result<()> {
        // Replies come in step order; predictions older than this reply will get none.
        while self.sg_pending.front().is_some_and(|p| p.step < step) {
            if let (Some(p), Some(sg)) = (self.sg_pending.pop_front(), self.block.sg.as_mut()) {
                sg.free.push(p.slot);
            }
        }
        if self.sg_pending.front().is_none_or(|p| p.step != step) {
            return Ok(());
        }
        let p = self
            .sg_pending
            .pop_front()
            .ok_or_else(|| internal("pending prediction vanished"))?;
        let Some(grad) = grad else {
            if let Some(sg) = self.block.sg.as_mut() {
                sg.free.push(p.slot);
            }
            return Ok(());
        };
        let h =
            p.h.as_ref()
                .ok_or_else(|| internal("SG prediction without its input"))?;
        let sg = self
            .block
            .sg
            .as_mut()
            .ok_or_else(|| internal("SG target without an SG model"))?;
        let enc = self.side.enc.get_or_insert_with(|| self.gpu.encoder());
        sg.train(enc, &h.item, &p.data.item, &p.slot, &grad.item)?;
        self.stats.sg_regressions += 1;
        self.stats.sg_staleness += self.current.saturating_sub(step);
        self.side.keep.push(grad);
        self.side.keep.extend(p.h);
        self.side.keep_data.push(p.data);
        self.side.sg_slots.push(p.slot);
        Ok(())
    }

    /// The previous block's real output for `step` came: regress `I(x)` of that step on it.
    fn on_input_target(&mut self, step: u64, h: Option<LentTensor>) -> Result<()> {
        while self.synth_pending.front().is_some_and(|p| p.step < step) {
            if let (Some(p), Some(si)) = (self.synth_pending.pop_front(), self.block.synth.as_mut())
            {
                si.free.push(p.slot);
            }
        }
        if self.synth_pending.front().is_none_or(|p| p.step != step) {
            return Ok(());
        }
        let p = self
            .synth_pending
            .pop_front()
            .ok_or_else(|| internal("pending input vanished"))?;
        let si = self
            .block
            .synth
            .as_mut()
            .ok_or_else(|| internal("input target without a model"))?;
        let Some(h) = h else {
            si.free.push(p.slot);
            return Ok(());
        };
        let enc = self.side.enc.get_or_insert_with(|| self.gpu.encoder());
        si.train(enc, &p.data.item.x, &p.data.item, &p.slot, &h.item)?;
        self.side.keep.push(h);
        self.side.keep_data.push(p.data);
        self.side.synth_slots.push(p.slot);
        Ok(())
    }

    /// Submits the side work, then releases what it read.
    fn flush(&mut self) {
        if let Some(enc) = self.side.enc.take() {
            self.gpu.submit(enc);
            self.stats.submissions += 1;
        }
        self.side.keep.clear();
        self.side.keep_data.clear();
        if let Some(sg) = self.block.sg.as_mut() {
            sg.free.append(&mut self.side.sg_slots);
        }
        if let Some(si) = self.block.synth.as_mut() {
            si.free.append(&mut self.side.synth_slots);
        }
    }

    fn submit(&mut self, enc: Encoder) {
        self.gpu.submit(enc);
        self.stats.submissions += 1;
    }

    fn step(&mut self, s: u64, active: bool) -> Result<()> {
        let i = self.i;
        let synthetic = self.unlock && i > 0;
        // 1. The input.
        let (h_in, data, up_wants) = if i == 0 || self.unlock {
            self.wait_until(Wait::Input, |w| !w.data_q.is_empty())?;
            let (step, data) = self
                .data_q
                .pop_front()
                .ok_or_else(|| internal("batch vanished"))?;
            if step != s {
                return Err(internal(format!("block {i} got batch {step} at step {s}")));
            }
            // With complete unlock every step is answered, so the sender's queue drains.
            (None, data, synthetic)
        } else {
            self.wait_until(Wait::Input, |w| !w.fwd_q.is_empty())?;
            let (step, h, data, want) = self
                .fwd_q
                .pop_front()
                .ok_or_else(|| internal("input vanished"))?;
            if step != s {
                return Err(internal(format!(
                    "block {i} got activation {step} at step {s}"
                )));
            }
            let h = h.ok_or_else(|| internal("activation missing outside complete unlock"))?;
            (Some(h), data, want)
        };
        if self.unlock && !active {
            // Busy: no forward, no backward. Still answer both neighbours for this step.
            send(
                &self.down,
                Msg::Fwd {
                    step: s,
                    h: None,
                    data,
                    want_grad: false,
                },
            );
            send(
                &self.up,
                Msg::Bwd {
                    step: s,
                    grad: None,
                },
            );
            return Ok(());
        }

        // 2. Buffers from the rings.
        // The SG model belongs to the interface: it is evaluated whenever it will be trained, even on a
        // step where the block itself does not update.
        let predicts = self.block.predicts() && (active || self.block.trains_sg());
        let can_learn = active && (self.last || self.block.predicts() || self.block.waits());
        let need_dx = can_learn && up_wants && self.block.sends_grad();
        let last = self.last;
        self.wait_until(Wait::Ring, |w| {
            (last || !w.h_free.is_empty())
                && (!predicts || w.block.sg.as_ref().is_some_and(|r| !r.free.is_empty()))
                && (!synthetic || w.block.synth.as_ref().is_some_and(|r| !r.free.is_empty()))
                && (!need_dx || !w.dx_free.is_empty())
        })?;

        // 3. Forward (and the SG prediction).
        let mut enc = self.gpu.encoder();
        let synth_slot = match (synthetic, self.block.synth.as_mut()) {
            (true, Some(si)) => {
                let slot = si.take_slot()?;
                si.predict(&mut enc, &data.item.x, &data.item, &slot)?;
                Some(slot)
            }
            (true, None) => return Err(internal("complete unlock without an input model")),
            _ => None,
        };
        let input = match (&synth_slot, &h_in) {
            (Some(slot), _) => slot.out.clone(),
            (None, Some(h)) => h.item.clone(),
            (None, None) => data.item.x.clone(),
        };
        let out = if last {
            None
        } else {
            let t = self
                .h_free
                .pop()
                .ok_or_else(|| internal("activation ring empty"))?;
            Some(Lent::new(t, self.me.clone(), Item::H))
        };
        let out_t = out.as_ref().map(|o| &o.item);
        self.block.forward(&mut enc, &input, out_t, &data.item)?;
        let sg_slot = match (predicts, self.block.sg.as_mut(), out_t) {
            (true, Some(sg), Some(h)) => {
                let slot = sg.take_slot()?;
                sg.predict(&mut enc, h, &data.item, &slot)?;
                Some(slot)
            }
            _ => None,
        };
        let dx = if need_dx {
            let t = self
                .dx_free
                .pop()
                .ok_or_else(|| internal("gradient ring empty"))?;
            Some(Lent::new(t, self.me.clone(), Item::Dx))
        } else {
            None
        };
        let pred = sg_slot.as_ref().map(|s| &s.out);
        let trains = self.block.trains_sg();

        if !(active && self.block.waits()) {
            // 4a. Update-unlocked: everything in one submission, no waiting on the next block.
            let learned = can_learn
                && self.block.learn(
                    &mut enc,
                    &input,
                    out_t,
                    pred,
                    None,
                    dx.as_ref().map(|d| &d.item),
                )?;
            self.submit(enc);
            let want_grad = predicts && trains;
            if let Some(o) = &out {
                send(
                    &self.down,
                    Msg::Fwd {
                        step: s,
                        h: Some(o.clone()),
                        data: data.clone(),
                        want_grad,
                    },
                );
            }
            if up_wants {
                send(
                    &self.up,
                    Msg::Bwd {
                        step: s,
                        grad: if learned { dx } else { None },
                    },
                );
            }
            if let Some(slot) = sg_slot {
                if want_grad {
                    self.sg_pending.push_back(Pending {
                        step: s,
                        slot,
                        h: out.clone(),
                        data: data.clone(),
                    });
                } else if let Some(sg) = self.block.sg.as_mut() {
                    sg.free.push(slot);
                }
            }
            if let Some(slot) = synth_slot {
                self.synth_pending.push_back(Pending {
                    step: s,
                    slot,
                    h: None,
                    data,
                });
            }
            return Ok(());
        }

        // 4b. Update-locked (λ > 0): submit the forward, wait for the true gradient, then learn.
        self.submit(enc);
        if let Some(o) = &out {
            send(
                &self.down,
                Msg::Fwd {
                    step: s,
                    h: Some(o.clone()),
                    data: data.clone(),
                    want_grad: true,
                },
            );
        }
        self.wait_until(Wait::Grad, |w| !w.bwd_q.is_empty())?;
        let (step, grad) = self
            .bwd_q
            .pop_front()
            .ok_or_else(|| internal("gradient vanished"))?;
        if step != s {
            return Err(internal(format!(
                "block {i} got gradient {step} at step {s}"
            )));
        }
        let mut enc = self.gpu.encoder();
        let true_grad = grad.as_ref().map(|g| &g.item);
        let learned = self.block.learn(
            &mut enc,
            &input,
            out_t,
            pred,
            true_grad,
            dx.as_ref().map(|d| &d.item),
        )?;
        if let (true, Some(slot), Some(t), Some(h), Some(sg)) =
            (trains, &sg_slot, true_grad, out_t, self.block.sg.as_mut())
        {
            sg.train(&mut enc, h, &data.item, slot, t)?;
            self.stats.sg_regressions += 1;
        }
        self.submit(enc);
        if up_wants {
            send(
                &self.up,
                Msg::Bwd {
                    step: s,
                    grad: if learned { dx } else { None },
                },
            );
        }
        if let (Some(slot), Some(sg)) = (sg_slot, self.block.sg.as_mut()) {
            sg.free.push(slot);
        }
        Ok(())
    }
}

/// The feeder: uploads batches into its ring and hands them to the blocks, keeping at most a ring's
/// worth of steps submitted ahead of what the GPU has finished.
struct Feeder<'a> {
    gpu: Gpu,
    inbox: Receiver<Msg>,
    me: SyncSender<Msg>,
    free: Vec<DataSlot>,
    targets: Vec<SyncSender<Msg>>,
    abort: &'a AtomicBool,
    classes: usize,
    in_flight: InFlight,
    stats: StepStats,
}

impl Feeder<'_> {
    fn run(
        &mut self,
        first: u64,
        steps: u64,
        source: &mut dyn BatchSource,
        scratch: &mut HostScratch,
    ) -> Result<()> {
        for s in first..first + steps {
            let start = Instant::now();
            let mut blocked = false;
            loop {
                while let Ok(m) = self.inbox.try_recv() {
                    if let Msg::Return(Item::Data(d)) = m {
                        self.free.push(d);
                    }
                }
                if !self.free.is_empty() {
                    break;
                }
                blocked = true;
                match self.inbox.recv_timeout(POLL) {
                    Ok(Msg::Return(Item::Data(d))) => self.free.push(d),
                    Ok(_) => return Err(internal("feeder got a message meant for a block")),
                    Err(RecvTimeoutError::Timeout) => {
                        if self.abort.load(Ordering::Relaxed) {
                            return Err(Error::Aborted);
                        }
                        if start.elapsed() > STALL {
                            return Err(Error::Stalled {
                                block: usize::MAX,
                                what: "a free batch buffer (feeder)",
                                secs: STALL.as_secs(),
                            });
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        return Err(internal("feeder inbox disconnected"))
                    }
                }
            }
            if blocked {
                self.stats.waits_feeder += 1;
            }
            if self.in_flight.make_room(&self.gpu)? {
                self.stats.gpu_waits += 1;
            }
            let slot = self
                .free
                .pop()
                .ok_or_else(|| internal("batch ring empty"))?;
            source.fill(&mut scratch.x, &mut scratch.ids);
            let (x, ids) = (
                std::mem::take(&mut scratch.x),
                std::mem::take(&mut scratch.ids),
            );
            let written = slot.write(&self.gpu, &x, &ids, self.classes, scratch);
            (scratch.x, scratch.ids) = (x, ids);
            written?;
            // An empty submission flushes the upload and marks this point of the queue.
            self.in_flight
                .push(self.gpu.queue().submit(std::iter::empty()));
            self.stats.marker_submissions += 1;
            let lent = Lent::new(slot, self.me.clone(), Item::Data);
            for t in &self.targets {
                let _ = t.send(Msg::Data {
                    step: s,
                    data: lent.clone(),
                });
            }
        }
        Ok(())
    }
}

pub(crate) fn run(net: &mut FfNet, steps: u64, source: &mut dyn BatchSource) -> Result<StepStats> {
    let n = net.blocks.len();
    let unlock = net.spec.synthetic_input.is_some();
    let ring = net.spec.ring;
    let data_ring = net.data_ring.len();
    // Every message an inbox can hold at once is bounded by a ring (buffers lent out, or steps the
    // feeder can be ahead): with this capacity a send never blocks, so waits happen only on rings.
    let capacity = 4 * (ring + data_ring) + 16;
    let mut txs = Vec::with_capacity(n + 1);
    let mut rxs = Vec::with_capacity(n + 1);
    for _ in 0..=n {
        let (tx, rx) = sync_channel::<Msg>(capacity);
        txs.push(tx);
        rxs.push(rx);
    }
    let feeder_rx = rxs.pop().ok_or_else(|| internal("no feeder channel"))?;
    let abort = AtomicBool::new(false);
    let first = net.step();
    let gpu = net.gpu.clone();
    let p_update = net.spec.p_update;
    let classes = net.spec.classes;
    let FfNet {
        blocks,
        h_ring,
        dx_ring,
        data_ring,
        scratch,
        ..
    } = net;
    // Nothing is in flight between calls: every ring starts full (the lists kept by the net).
    for block in blocks.iter_mut() {
        for r in [&mut block.sg, &mut block.synth].into_iter().flatten() {
            r.reclaim();
        }
    }
    let mut feeder = Feeder {
        gpu: gpu.clone(),
        inbox: feeder_rx,
        me: txs[n].clone(),
        free: data_ring.clone(),
        targets: if unlock {
            txs[..n].to_vec()
        } else {
            vec![txs[0].clone()]
        },
        abort: &abort,
        classes,
        in_flight: InFlight::with_cap(data_ring.len()),
        stats: StepStats::default(),
    };
    let mut stats = StepStats::default();
    let mut first_error: Option<Error> = None;
    std::thread::scope(|sc| {
        let mut handles = Vec::with_capacity(n);
        for (i, (block, inbox)) in blocks.iter_mut().zip(rxs).enumerate() {
            let mut w = Worker {
                i,
                last: i + 1 == n,
                unlock,
                p_update,
                gpu: gpu.clone(),
                block,
                inbox,
                me: txs[i].clone(),
                up: (i > 0).then(|| txs[i - 1].clone()),
                down: txs.get(i + 1).filter(|_| i + 1 < n).cloned(),
                abort: &abort,
                h_free: h_ring[i].clone(),
                dx_free: dx_ring[i].clone(),
                data_q: VecDeque::new(),
                fwd_q: VecDeque::new(),
                bwd_q: VecDeque::new(),
                sg_pending: VecDeque::new(),
                synth_pending: VecDeque::new(),
                early_sg: VecDeque::new(),
                early_input: VecDeque::new(),
                next_step: first,
                side: Side::default(),
                current: first,
                stats: StepStats::default(),
            };
            let abort = &abort;
            handles.push(sc.spawn(move || {
                let r = w.run(first, steps);
                if r.is_err() {
                    abort.store(true, Ordering::Relaxed);
                }
                // Drop queued messages here, while the other inboxes still exist.
                let stats = std::mem::take(&mut w.stats);
                drop(w);
                (r, stats)
            }));
        }
        let fed = feeder.run(first, steps, source, scratch);
        if let Err(e) = fed {
            abort.store(true, Ordering::Relaxed);
            first_error = Some(e);
        }
        for h in handles {
            match h.join() {
                Ok((r, s)) => {
                    stats.add(&s);
                    if let Err(e) = r {
                        // Keep the root cause, not the "stopped because another failed" echoes.
                        if first_error
                            .as_ref()
                            .is_none_or(|f| matches!(f, Error::Aborted))
                        {
                            first_error = Some(e);
                        }
                    }
                }
                Err(_) => first_error = Some(internal("a block worker panicked")),
            }
        }
    });
    stats.add(&feeder.stats);
    match first_error {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}
