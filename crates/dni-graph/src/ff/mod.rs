//! Decoupled training of feed-forward classifiers (paper 2.2 and 3.3).
//!
//! An [`FfNet`] is a chain of blocks (groups of `Linear → BatchNorm → ReLU` layers, then a softmax
//! output block), each with its own optimiser. Between two blocks sits an interface
//! ([`InterfaceSpec`]) that may own a synthetic-gradient model `M` (linear or MLP, zero-initialised
//! output, optionally conditioned on the label) and, with complete unlock, a synthetic-input model
//! `I(x)`. Backprop, no-backprop, DNI, cDNI, BP(λ), `p_update` and complete unlock are all values of
//! [`FfSpec`] run by the same code.
//!
//! [`FfNet::train`] runs steps under a [`Schedule`]:
//! - [`Schedule::Threaded`]: one thread per block; activations travel forward and gradients backward
//!   as GPU tensors over bounded channels, each block records and submits its own command buffers and
//!   waits for no other block unless its interface asks for the true gradient (λ > 0).
//! - [`Schedule::SingleThread`]: every block recorded into one command buffer per step, in the
//!   order of the synchronous algorithm. The locked (backprop) runs of both agree bit for bit.
//!
//! See docs/FEEDFORWARD.md for the protocol.

mod block;
mod eval;
mod probe;
mod settings;
mod single;
pub mod spec;
mod threaded;

use dni_kernels::ops::optim::Param;
use dni_kernels::{Gpu, Tensor};
use dni_tasks::Rng;

use crate::error::Error;
pub use crate::error::Result;
pub use eval::{ClassifierEval, EvalSet};
pub use probe::InterfaceProbe;
pub use settings::{FfMethod, MnistSettings, MNIST_PIXELS};
pub use spec::{FfSpec, InterfaceSpec, SgSpec, SynthInputSpec};

use crate::layers::StackSpec;
use crate::recurrent::StateBuf;
use block::{Block, DataSlot, HostScratch, Regressor};

/// How the blocks of a step are run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Schedule {
    /// One worker thread per block, each submitting its own command buffers.
    #[default]
    Threaded,
    /// Everything recorded on the calling thread into one command buffer per step.
    SingleThread,
}

/// Where training batches come from. Called on the thread that called [`FfNet::train`].
pub trait BatchSource {
    /// Replaces the contents of `x` with `batch × input` features (row-major) and of `labels` with
    /// `batch` class ids.
    fn fill(&mut self, x: &mut Vec<f32>, labels: &mut Vec<u32>);
}

impl<F: FnMut(&mut Vec<f32>, &mut Vec<u32>)> BatchSource for F {
    fn fill(&mut self, x: &mut Vec<f32>, labels: &mut Vec<u32>) {
        self(x, labels)
    }
}

/// Counters of a [`FfNet::train`] call. A "wait" is a worker thread blocking on a message from
/// another thread, counted once per blocking episode; none of them is a GPU round trip.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepStats {
    pub steps: u64,
    /// Command buffers submitted by the blocks (forward/backward/update and the SG and
    /// synthetic-input regressions).
    pub submissions: u64,
    /// Empty submissions by the data feeder that mark how far the GPU has got (run-ahead cap).
    pub marker_submissions: u64,
    /// A block waited for its input: the previous block's activation, or the next batch.
    pub waits_input: u64,
    /// A block waited for the true gradient of its output (update locking, λ > 0).
    pub waits_grad: u64,
    /// A block waited because one of its buffer rings was full (back-pressure).
    pub waits_ring: u64,
    /// Waits at the end of the call for the last regression targets.
    pub waits_drain: u64,
    /// The feeder waited for a free batch buffer.
    pub waits_feeder: u64,
    /// The host waited for the GPU to finish earlier steps (caps how far recording runs ahead).
    pub gpu_waits: u64,
    /// SG regressions done, and the sum over them of how many steps the sender had started since
    /// the prediction (0 in the single-thread schedule: the target of the same step).
    pub sg_regressions: u64,
    pub sg_staleness: u64,
}

impl StepStats {
    /// Adds `o`'s counts to these.
    pub fn add(&mut self, o: &StepStats) {
        self.steps += o.steps;
        self.submissions += o.submissions;
        self.marker_submissions += o.marker_submissions;
        self.waits_input += o.waits_input;
        self.waits_grad += o.waits_grad;
        self.waits_ring += o.waits_ring;
        self.waits_drain += o.waits_drain;
        self.waits_feeder += o.waits_feeder;
        self.gpu_waits += o.gpu_waits;
        self.sg_regressions += o.sg_regressions;
        self.sg_staleness += o.sg_staleness;
    }

    /// Mean steps between an SG prediction and its regression on the target.
    pub fn mean_sg_staleness(&self) -> f64 {
        self.sg_staleness as f64 / self.sg_regressions.max(1) as f64
    }

    /// Block submissions per step.
    pub fn submissions_per_step(&self) -> f64 {
        self.submissions as f64 / self.steps.max(1) as f64
    }

    /// Times per step that a block waited for another block (input, true gradient, ring).
    pub fn host_waits_per_step(&self) -> f64 {
        (self.waits_input + self.waits_grad + self.waits_ring) as f64 / self.steps.max(1) as f64
    }
}

/// Training metrics accumulated on the GPU since the last [`FfNet::take_metrics`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainMetrics {
    /// Examples the output block scored.
    pub examples: u64,
    /// Mean cross-entropy (nats) and error rate of those examples.
    pub loss: f64,
    pub error: f64,
    /// Per interface: mean per-example ½‖M(h) − batch·δ‖² over the regressions done (None when
    /// the interface has no SG model or did not train).
    pub sg_loss: Vec<Option<f64>>,
    /// Per block but the first: mean per-example ½‖I(x) − h‖² (complete unlock).
    pub input_loss: Vec<Option<f64>>,
}

/// A decoupled feed-forward classifier on one GPU. See the [module docs](self).
pub struct FfNet {
    gpu: Gpu,
    spec: FfSpec,
    pub(crate) blocks: Vec<Block>,
    /// Per block but the last: the ring its output is written into.
    pub(crate) h_ring: Vec<Vec<Tensor>>,
    /// Per block: the ring its input gradient is written into (empty when nobody wants it).
    pub(crate) dx_ring: Vec<Vec<Tensor>>,
    pub(crate) data_ring: Vec<DataSlot>,
    pub(crate) scratch: HostScratch,
    step: u64,
    eval: Option<eval::EvalBuffersSet>,
    probe: Option<probe::ProbeBuffers>,
}

impl FfNet {
    /// Builds the blocks, interfaces and rings; weights are drawn from `spec.seed`.
    pub fn new(gpu: &Gpu, spec: FfSpec) -> Result<Self> {
        spec.validate()?;
        let n = spec.blocks();
        let mut blocks = Vec::with_capacity(n);
        let mut in_features = Vec::with_capacity(n);
        let mut f = spec.input;
        for i in 0..n {
            let head = i + 1 == n;
            let layers = spec.block_layers(i);
            let stack = StackSpec {
                input: f,
                context: 0,
                layers,
            };
            in_features.push(f);
            let mut init = Rng::for_stream(spec.seed, 1000 + i as u64);
            let coin = Rng::for_stream(spec.seed, 2000 + i as u64);
            let out_iface = (!head).then(|| spec.interfaces[i].clone());
            let in_iface = (i > 0).then(|| spec.interfaces[i - 1].clone());
            let mut block = Block::new(
                gpu, &stack, head, spec.optim, spec.batch, out_iface, in_iface, &mut init, coin,
            )?;
            f = block.stack.output();
            if let Some(sg) = spec
                .interfaces
                .get(i)
                .filter(|_| !head)
                .and_then(|iface| iface.sg.as_ref())
            {
                let mut rng = Rng::for_stream(spec.seed, 3000 + i as u64);
                block.sg = Some(Regressor::sg(gpu, sg, f, &spec, &mut rng)?);
            }
            if let (Some(si), true) = (&spec.synthetic_input, i > 0) {
                let mut rng = Rng::for_stream(spec.seed, 4000 + i as u64);
                block.synth = Some(Regressor::synth(gpu, si, in_features[i], &spec, &mut rng)?);
            }
            blocks.push(block);
        }
        let mut h_ring = Vec::with_capacity(n);
        let mut dx_ring = Vec::with_capacity(n);
        for (i, b) in blocks.iter().enumerate() {
            let mut ring = Vec::new();
            if !b.head {
                for _ in 0..spec.ring {
                    ring.push(Tensor::zeros(gpu, &[spec.batch, b.stack.output()])?);
                }
            }
            h_ring.push(ring);
            let mut ring = Vec::new();
            if b.sends_grad() {
                for _ in 0..spec.ring {
                    ring.push(Tensor::zeros(gpu, &[spec.batch, in_features[i]])?);
                }
            }
            dx_ring.push(ring);
        }
        // Batches in flight: a ring's worth ahead plus one per block in the pipeline.
        let mut data_ring = Vec::new();
        for _ in 0..2 * spec.ring + n {
            data_ring.push(DataSlot::new(gpu, spec.batch, spec.input, spec.classes)?);
        }
        Ok(Self {
            gpu: gpu.clone(),
            spec,
            blocks,
            h_ring,
            dx_ring,
            data_ring,
            scratch: HostScratch::default(),
            step: 0,
            eval: None,
            probe: None,
        })
    }

    pub fn spec(&self) -> &FfSpec {
        &self.spec
    }
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
    /// Steps trained so far.
    pub fn step(&self) -> u64 {
        self.step
    }
    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Runs `steps` training steps on batches from `source`. Returns when every block has recorded
    /// and submitted its work for them (the GPU may still be running it).
    pub fn train(
        &mut self,
        steps: u64,
        source: &mut dyn BatchSource,
        schedule: Schedule,
    ) -> Result<StepStats> {
        let mut stats = match schedule {
            Schedule::SingleThread => single::run(self, steps, source)?,
            Schedule::Threaded => threaded::run(self, steps, source)?,
        };
        stats.steps = steps;
        self.step += steps;
        Ok(stats)
    }

    /// Waits until the GPU has finished everything submitted so far: a read-back of the output
    /// block's two metric scalars (for timing; training itself never waits).
    pub fn finish(&self) -> Result<()> {
        let head = self
            .blocks
            .last()
            .ok_or_else(|| Error::Internal("no blocks".into()))?;
        let metrics = head
            .metrics
            .as_ref()
            .ok_or_else(|| Error::Internal("head without metrics".into()))?;
        self.gpu.read(metrics)?;
        Ok(())
    }

    /// Sets every optimiser's learning rate (a GPU buffer write; no pipeline or bind group changes).
    pub fn set_lr(&self, lr: f32) -> Result<()> {
        for b in &self.blocks {
            b.opt.set_lr(&self.gpu, lr)?;
            for r in [&b.sg, &b.synth].into_iter().flatten() {
                r.optimizer().set_lr(&self.gpu, lr)?;
            }
        }
        Ok(())
    }

    /// Reads the training metrics accumulated on the GPU (one read-back) and resets them.
    pub fn take_metrics(&mut self) -> Result<TrainMetrics> {
        let head = self
            .blocks
            .last()
            .ok_or_else(|| Error::Internal("no blocks".into()))?;
        let metrics = head
            .metrics
            .as_ref()
            .ok_or_else(|| Error::Internal("head without metrics".into()))?;
        let mut tensors: Vec<&Tensor> = vec![metrics];
        for b in &self.blocks {
            for r in [&b.sg, &b.synth].into_iter().flatten() {
                tensors.push(&r.loss);
            }
        }
        let values = self.gpu.read_many(&tensors)?;
        let mut enc = self.gpu.encoder();
        for t in &tensors {
            enc.clear(t);
        }
        self.gpu.submit(enc);
        let examples = head.scored;
        let mut out = TrainMetrics {
            examples,
            loss: values[0][0] as f64 / examples.max(1) as f64,
            error: values[0][1] as f64 / examples.max(1) as f64,
            sg_loss: Vec::new(),
            input_loss: Vec::new(),
        };
        let mut k = 1;
        let batch = self.spec.batch as f64;
        for (i, b) in self.blocks.iter().enumerate() {
            let mut mean = |r: &Option<Regressor>| -> Option<f64> {
                let r = r.as_ref()?;
                let v = values[k][0] as f64;
                k += 1;
                (r.trained > 0).then(|| v / (r.trained as f64 * batch))
            };
            let sg = mean(&b.sg);
            let si = mean(&b.synth);
            if !b.head {
                out.sg_loss.push(sg);
            }
            if i > 0 {
                out.input_loss.push(si);
            }
        }
        for b in &mut self.blocks {
            b.scored = 0;
            for r in [&mut b.sg, &mut b.synth].into_iter().flatten() {
                r.trained = 0;
            }
        }
        Ok(out)
    }

    /// Every trainable parameter of the network by its full name: `block{i}.l0.w`, and the SG and
    /// synthetic-input models' as `block{i}.sg.l0.w`, `block{i}.synth.l0.w` (a checkpoint holds
    /// each as `{name}.value`, `.grad`, `.m`, `.v`), in block order.
    pub fn params(&self) -> Vec<(String, &Param)> {
        let mut v = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            let stacks = [
                (format!("block{i}"), Some(&b.stack)),
                (format!("block{i}.sg"), b.sg.as_ref().map(|r| r.stack())),
                (
                    format!("block{i}.synth"),
                    b.synth.as_ref().map(|r| r.stack()),
                ),
            ];
            for (pre, stack) in stacks {
                if let Some(s) = stack {
                    let names = s.param_names().into_iter().map(|n| format!("{pre}.{n}"));
                    v.extend(names.zip(s.params()));
                }
            }
        }
        v
    }

    /// The parameter called `name` (see [`params`](Self::params)).
    pub fn param(&self, name: &str) -> Result<&Param> {
        self.params()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
            .ok_or_else(|| Error::UnknownParam(name.to_string()))
    }

    /// The trainable parameters of block `i` by name (`l0.w`, `l1.gamma`, ...), in layer order.
    pub fn block_params(&self, i: usize) -> Vec<(String, &Param)> {
        self.blocks
            .get(i)
            .map(|b| {
                b.stack
                    .param_names()
                    .into_iter()
                    .zip(b.stack.params())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The parameters of the SG model of interface `i` (between blocks `i` and `i + 1`).
    pub fn sg_params(&self, i: usize) -> Vec<(String, &Param)> {
        match self.blocks.get(i).and_then(|b| b.sg.as_ref()) {
            Some(r) => r
                .stack()
                .param_names()
                .into_iter()
                .zip(r.stack().params())
                .collect(),
            None => Vec::new(),
        }
    }

    /// The parameters of block `i`'s synthetic-input model.
    pub fn synth_params(&self, i: usize) -> Vec<(String, &Param)> {
        match self.blocks.get(i).and_then(|b| b.synth.as_ref()) {
            Some(r) => r
                .stack()
                .param_names()
                .into_iter()
                .zip(r.stack().params())
                .collect(),
            None => Vec::new(),
        }
    }

    /// Batch norm's running (mean, variance) of block `i`, per batch-norm layer.
    pub fn running_stats(&self, i: usize) -> Vec<(&Tensor, &Tensor)> {
        self.blocks
            .get(i)
            .map(|b| b.stack.running_stats())
            .unwrap_or_default()
    }

    /// Every GPU buffer that carries training state from one call of [`train`](Self::train) to the
    /// next, by name: per block `block{i}.{param}.value` / `.grad` / `.m` / `.v`, batch norm's
    /// `block{i}.bn{k}.mean` / `.var`, the optimiser `block{i}.optim` (step count, bias
    /// corrections, learning rate), the head's metric sums `block{i}.metrics`; the same under
    /// `block{i}.sg.` and `block{i}.synth.` for the SG and synthetic-input models, with their
    /// regression loss sums `.loss`. (Predictions in flight are drained at the end of every call.)
    fn state_tensors(&self) -> Vec<(String, &Tensor)> {
        let mut v: Vec<(String, &Tensor)> = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            let pre = format!("block{i}");
            push_stack(&mut v, &pre, &b.stack);
            v.push((format!("{pre}.optim"), b.opt.state_tensor()));
            if let Some(m) = &b.metrics {
                v.push((format!("{pre}.metrics"), m));
            }
            for (what, r) in [("sg", &b.sg), ("synth", &b.synth)] {
                if let Some(r) = r {
                    let pre = format!("{pre}.{what}");
                    push_stack(&mut v, &pre, r.stack());
                    v.push((format!("{pre}.optim"), r.optimizer().state_tensor()));
                    v.push((format!("{pre}.loss"), &r.loss));
                }
            }
        }
        v
    }

    /// Host counters: `step`, per block `block{i}.coin` (the `p_update` RNG), `block{i}.scored`,
    /// `block{i}.sg.trained`, `block{i}.synth.trained`.
    fn state_counters(&self) -> Vec<(String, Vec<u64>)> {
        let mut v = vec![("step".to_string(), vec![self.step])];
        for (i, b) in self.blocks.iter().enumerate() {
            v.push((format!("block{i}.coin"), b.coin.state_words().to_vec()));
            v.push((format!("block{i}.scored"), vec![b.scored]));
            for (what, r) in [("sg", &b.sg), ("synth", &b.synth)] {
                if let Some(r) = r {
                    v.push((format!("block{i}.{what}.trained"), vec![r.trained]));
                }
            }
        }
        v
    }

    /// The training state (parameters, gradients, optimiser moments and step counts, batch-norm
    /// running statistics, SG and synthetic-input models, metric sums, `p_update` RNGs, step
    /// counter), by name, for a checkpoint. Blocking: one read-back per buffer; call it between
    /// calls of [`train`](Self::train). The batches' order is the caller's.
    pub fn export_state(&self) -> Result<Vec<(String, StateBuf)>> {
        let mut out = Vec::new();
        for (name, t) in self.state_tensors() {
            out.push((name, StateBuf::F32(self.gpu.read(t)?)));
        }
        for (name, v) in self.state_counters() {
            out.push((name, StateBuf::U64(v)));
        }
        Ok(out)
    }

    /// Restores what [`export_state`](Self::export_state) wrote into a network built from the
    /// same spec. Every name must be present with its exact length and nothing else may be: a
    /// checkpoint of another shape or method is refused before anything is written.
    pub fn import_state(&mut self, state: &[(String, StateBuf)]) -> Result<()> {
        let tensors: Vec<(String, usize)> = self
            .state_tensors()
            .into_iter()
            .map(|(n, t)| (n, t.len()))
            .collect();
        let counters: Vec<(String, usize)> = self
            .state_counters()
            .into_iter()
            .map(|(n, c)| (n, c.len()))
            .collect();
        crate::state::check(state, &tensors, &counters).map_err(Error::Checkpoint)?;
        for (name, t) in self.state_tensors() {
            if let Some(v) = crate::state::f32s(state, &name) {
                t.write(&self.gpu, v)?;
            }
        }
        let word = |name: &str| -> Result<&[u64]> {
            crate::state::u64s(state, name)
                .ok_or_else(|| Error::Checkpoint(format!("counter {name} is missing")))
        };
        self.step = word("step")?[0];
        for i in 0..self.blocks.len() {
            let coin = word(&format!("block{i}.coin"))?;
            let scored = word(&format!("block{i}.scored"))?[0];
            let sg = match self.blocks[i].sg {
                Some(_) => Some(word(&format!("block{i}.sg.trained"))?[0]),
                None => None,
            };
            let synth = match self.blocks[i].synth {
                Some(_) => Some(word(&format!("block{i}.synth.trained"))?[0]),
                None => None,
            };
            let b = &mut self.blocks[i];
            let mut w = [0u64; 5];
            w.copy_from_slice(coin);
            b.coin = Rng::from_state_words(w);
            b.scored = scored;
            if let (Some(r), Some(n)) = (&mut b.sg, sg) {
                r.trained = n;
            }
            if let (Some(r), Some(n)) = (&mut b.synth, synth) {
                r.trained = n;
            }
        }
        self.gpu.sync()?;
        Ok(())
    }

    /// Test error and loss of the real chain (every block on its predecessor's output, batch norm on
    /// running statistics), one read-back at the end.
    pub fn evaluate(&mut self, set: &EvalSet) -> Result<ClassifierEval> {
        eval::evaluate(self, set)
    }
}

/// A stack's parameters (value, gradient, optimiser moments) and batch-norm running statistics,
/// named under `pre`.
fn push_stack<'a>(v: &mut Vec<(String, &'a Tensor)>, pre: &str, s: &'a crate::layers::Stack) {
    for (name, p) in s.param_names().into_iter().zip(s.params()) {
        crate::state::push_param_state(v, &format!("{pre}.{name}"), p);
    }
    for (k, (mean, var)) in s.running_stats().into_iter().enumerate() {
        v.push((format!("{pre}.bn{k}.mean"), mean));
        v.push((format!("{pre}.bn{k}.var"), var));
    }
}
