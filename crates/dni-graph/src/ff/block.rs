//! A block (a stack of layers with its own optimiser) and the two models an interface owns: the
//! synthetic-gradient model `M` (driven by the sending block) and the synthetic-input model `I`
//! (driven by the receiving block). Both schedulers call these same recording functions.

use dni_kernels::ops::elementwise::axpby;
use dni_kernels::ops::loss::softmax_xent;
use dni_kernels::ops::optim::{OptimConfig, Optimizer};
use dni_kernels::{Encoder, Gpu, Tensor};
use dni_tasks::Rng;

use super::spec::{FfSpec, InterfaceSpec, SgSpec, SynthInputSpec};
use crate::error::{Error, Result};
use crate::layers::{Acts, Grads, Stack, StackSpec};
use crate::sg::model::{SgPass, Synthesizer};
use crate::sg::SgInput;

/// One training batch on the GPU: inputs, labels as f32 class ids, and their one-hot rows.
#[derive(Clone)]
pub(crate) struct DataSlot {
    pub(crate) x: Tensor,
    pub(crate) labels: Tensor,
    pub(crate) onehot: Tensor,
}

impl DataSlot {
    pub(crate) fn new(gpu: &Gpu, batch: usize, input: usize, classes: usize) -> Result<Self> {
        Ok(Self {
            x: Tensor::zeros(gpu, &[batch, input])?,
            labels: Tensor::zeros(gpu, &[batch])?,
            onehot: Tensor::zeros(gpu, &[batch, classes])?,
        })
    }

    /// Uploads a batch (`queue.write_buffer`: ordered after everything already submitted).
    pub(crate) fn write(
        &self,
        gpu: &Gpu,
        x: &[f32],
        labels: &[u32],
        classes: usize,
        scratch: &mut HostScratch,
    ) -> Result<()> {
        let batch = self.labels.len();
        if x.len() != self.x.len() || labels.len() != batch {
            return Err(Error::shape(
                "BatchSource::fill",
                format!(
                    "expected {} inputs and {batch} labels, got {} and {}",
                    self.x.len(),
                    x.len(),
                    labels.len()
                ),
            ));
        }
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(Error::shape(
                "BatchSource::fill",
                format!("label {bad} is not below {classes} classes"),
            ));
        }
        scratch.labels.clear();
        scratch.labels.extend(labels.iter().map(|&l| l as f32));
        scratch.onehot.clear();
        scratch.onehot.resize(batch * classes, 0.0);
        for (r, &l) in labels.iter().enumerate() {
            scratch.onehot[r * classes + l as usize] = 1.0;
        }
        self.x.write(gpu, x)?;
        self.labels.write(gpu, &scratch.labels)?;
        self.onehot.write(gpu, &scratch.onehot)?;
        Ok(())
    }
}

/// Host buffers reused for every batch.
#[derive(Default)]
pub(crate) struct HostScratch {
    pub(crate) x: Vec<f32>,
    pub(crate) ids: Vec<u32>,
    labels: Vec<f32>,
    onehot: Vec<f32>,
}

/// One SG or synthetic-input prediction's workspace, kept until its target arrives.
pub(crate) type PredSlot = SgPass;

/// An interface's model trained by L2 regression on targets that arrive later: the
/// synthetic-gradient model (input `h`, optional one-hot context, target `batch·δ`: one example's
/// own gradient) or the synthetic-input model (input `x`, target `h`). The model, its optimiser and
/// its regression are the shared [`Synthesizer`]; this adds the ring of prediction workspaces that
/// the threaded schedule keeps in flight, and the loss sum the metrics read.
pub(crate) struct Regressor {
    model: Synthesizer,
    /// Σ ½‖pred − target‖² over the trained steps, on the GPU.
    pub(crate) loss: Tensor,
    pub(crate) trained: u64,
    /// Every prediction workspace, and the ones not in use.
    ring: Vec<PredSlot>,
    pub(crate) free: Vec<PredSlot>,
    conditioned: bool,
    batch: usize,
    /// What a target is multiplied by to reach the model's units (`batch` for the SG model).
    units: f32,
}

impl Regressor {
    fn new(
        gpu: &Gpu,
        spec: &StackSpec,
        optim: OptimConfig,
        batch: usize,
        ring: usize,
        sg: bool,
        rng: &mut Rng,
    ) -> Result<Self> {
        let model = Synthesizer::from_stack(
            gpu,
            spec,
            SgInput::State,
            1.0,
            batch,
            Optimizer::new(gpu, optim)?,
            &mut |n, bound| rng.symmetric(n, bound),
        )?;
        let mut free = Vec::with_capacity(ring);
        for _ in 0..ring {
            free.push(model.pass(gpu, batch)?);
        }
        Ok(Self {
            loss: Tensor::zeros(gpu, &[1])?,
            trained: 0,
            ring: free.clone(),
            free,
            conditioned: spec.context > 0,
            model,
            batch,
            units: if sg { batch as f32 } else { 1.0 },
        })
    }

    /// The SG model `M(h[, onehot])` of an interface; its output layer starts at zero.
    pub(crate) fn sg(
        gpu: &Gpu,
        sg: &SgSpec,
        features: usize,
        net: &FfSpec,
        rng: &mut Rng,
    ) -> Result<Self> {
        let ctx = if sg.conditioned { net.classes } else { 0 };
        let spec = StackSpec::with_output(features, ctx, &sg.hidden_layers, features, true);
        Self::new(
            gpu,
            &spec,
            net.sg_optim.unwrap_or(net.optim),
            net.batch,
            net.ring,
            true,
            rng,
        )
    }

    /// The synthetic-input model `I(x)` predicting `features` from `input`.
    pub(crate) fn synth(
        gpu: &Gpu,
        si: &SynthInputSpec,
        features: usize,
        net: &FfSpec,
        rng: &mut Rng,
    ) -> Result<Self> {
        let spec = StackSpec::mlp(net.input, 0, &si.hidden, false, features, false);
        Self::new(
            gpu,
            &spec,
            net.sg_optim.unwrap_or(net.optim),
            net.batch,
            net.ring,
            false,
            rng,
        )
    }

    pub(crate) fn stack(&self) -> &Stack {
        self.model.stack()
    }

    pub(crate) fn optimizer(&self) -> &Optimizer {
        self.model.optimizer()
    }

    /// Marks every workspace free again (between two `train` calls nothing is in flight).
    pub(crate) fn reclaim(&mut self) {
        self.free = self.ring.clone();
    }

    /// Takes a free prediction workspace.
    pub(crate) fn take_slot(&mut self) -> Result<PredSlot> {
        self.free
            .pop()
            .ok_or_else(|| Error::Internal("no free prediction workspace".into()))
    }

    fn ctx<'a>(&self, data: &'a DataSlot) -> Option<&'a Tensor> {
        self.conditioned.then_some(&data.onehot)
    }

    /// Records `slot.out = model(input[, onehot])` (training-mode batch norm; statistics kept).
    pub(crate) fn predict(
        &self,
        enc: &mut Encoder,
        input: &Tensor,
        data: &DataSlot,
        slot: &PredSlot,
    ) -> Result<()> {
        self.model.evaluate(enc, slot, input, self.ctx(data))
    }

    /// Records one regression step of the prediction in `slot` towards `target` (averaged over the
    /// rows) and the update.
    pub(crate) fn train(
        &mut self,
        enc: &mut Encoder,
        input: &Tensor,
        data: &DataSlot,
        slot: &PredSlot,
        target: &Tensor,
    ) -> Result<()> {
        let inv_b = 1.0 / self.batch as f32;
        self.model.regress(
            enc,
            slot,
            input,
            self.ctx(data),
            target,
            self.units,
            inv_b,
            &self.loss,
            None,
        )?;
        self.model.step(enc, true, &[])?;
        self.trained += 1;
        Ok(())
    }
}

/// A group of layers with its own optimiser, plus the models of its interfaces that it drives.
pub(crate) struct Block {
    pub(crate) stack: Stack,
    pub(crate) head: bool,
    pub(crate) opt: Optimizer,
    acts: Acts,
    grads: Grads,
    /// Head: logits and their loss gradient (the block's output never leaves it).
    logits: Option<(Tensor, Tensor)>,
    /// Where a mixed or scaled gradient for the output is formed.
    dh: Option<Tensor>,
    /// Head: [nats sum, wrong count] accumulated over training steps.
    pub(crate) metrics: Option<Tensor>,
    /// Examples the head scored since the metrics were last read.
    pub(crate) scored: u64,
    /// The outgoing interface (none for the head) and its SG model.
    pub(crate) out_iface: Option<InterfaceSpec>,
    pub(crate) sg: Option<Regressor>,
    /// The incoming interface (none for the first block) and, with complete unlock, its `I(x)`.
    pub(crate) in_iface: Option<InterfaceSpec>,
    pub(crate) synth: Option<Regressor>,
    /// Draws the `p_update` coin, one per step.
    pub(crate) coin: Rng,
    pub(crate) batch: usize,
}

impl Block {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        gpu: &Gpu,
        spec: &StackSpec,
        head: bool,
        optim: OptimConfig,
        batch: usize,
        out_iface: Option<InterfaceSpec>,
        in_iface: Option<InterfaceSpec>,
        init: &mut Rng,
        coin: Rng,
    ) -> Result<Self> {
        let stack = Stack::new(gpu, spec, init)?;
        let out = stack.output();
        Ok(Self {
            acts: stack.acts(gpu, batch)?,
            grads: stack.grads(gpu, batch)?,
            logits: if head {
                Some((
                    Tensor::zeros(gpu, &[batch, out])?,
                    Tensor::zeros(gpu, &[batch, out])?,
                ))
            } else {
                None
            },
            dh: if head {
                None
            } else {
                Some(Tensor::zeros(gpu, &[batch, out])?)
            },
            metrics: if head {
                Some(Tensor::zeros(gpu, &[2])?)
            } else {
                None
            },
            scored: 0,
            opt: Optimizer::new(gpu, optim)?,
            stack,
            head,
            out_iface,
            sg: None,
            in_iface,
            synth: None,
            coin,
            batch,
        })
    }

    /// Whether an active step evaluates the outgoing SG model.
    pub(crate) fn predicts(&self) -> bool {
        self.sg.is_some() && self.out_iface.as_ref().is_some_and(|i| i.predicts())
    }

    /// Whether an active step waits for the true gradient of its output.
    pub(crate) fn waits(&self) -> bool {
        self.out_iface.as_ref().is_some_and(|i| i.waits())
    }

    /// Whether the SG model regresses on the targets sent back.
    pub(crate) fn trains_sg(&self) -> bool {
        self.sg.is_some() && self.out_iface.as_ref().is_some_and(|i| i.train_sg)
    }

    /// Whether the previous block wants this block's input gradient.
    pub(crate) fn sends_grad(&self) -> bool {
        self.in_iface.as_ref().is_some_and(|i| i.wants_grad())
    }

    /// Records the training forward pass of `input` into `out` (the head: into its logits, then the
    /// loss, its gradient and the metrics).
    pub(crate) fn forward(
        &mut self,
        enc: &mut Encoder,
        input: &Tensor,
        out: Option<&Tensor>,
        data: &DataSlot,
    ) -> Result<()> {
        match (&self.logits, out) {
            (Some((logits, dlogits)), _) => {
                self.stack
                    .forward(enc, &self.acts, input, None, logits, true)?;
                let metrics = self
                    .metrics
                    .as_ref()
                    .ok_or_else(|| Error::Internal("head without metrics".into()))?;
                softmax_xent(
                    enc,
                    logits,
                    &data.labels,
                    dlogits,
                    1.0 / self.batch as f32,
                    metrics,
                )?;
                self.scored += self.batch as u64;
                Ok(())
            }
            (None, Some(out)) => self.stack.forward(enc, &self.acts, input, None, out, true),
            (None, None) => Err(Error::Internal(
                "hidden block without an output buffer".into(),
            )),
        }
    }

    /// Records the backward pass and the update of the step whose forward pass was recorded last,
    /// writing the input gradient into `dx` when given. The output gradient is the loss gradient for
    /// the head, else BP(λ)'s mix of `true_grad` and the SG prediction `pred` (which predicts
    /// `batch·δ`). Returns false, recording nothing, when there is no gradient to learn from.
    pub(crate) fn learn(
        &self,
        enc: &mut Encoder,
        input: &Tensor,
        out: Option<&Tensor>,
        pred: Option<&Tensor>,
        true_grad: Option<&Tensor>,
        dx: Option<&Tensor>,
    ) -> Result<bool> {
        let (out, dh): (&Tensor, Tensor) = match (&self.logits, out) {
            (Some((logits, dlogits)), _) => (logits, dlogits.clone()),
            (None, Some(out)) => {
                let iface = self
                    .out_iface
                    .as_ref()
                    .ok_or_else(|| Error::Internal("hidden block without an interface".into()))?;
                let buf = self
                    .dh
                    .as_ref()
                    .ok_or_else(|| Error::Internal("no gradient buffer".into()))?;
                let lambda = iface.lambda;
                let inv_b = 1.0 / self.batch as f32;
                let pred = pred.filter(|_| iface.apply_sg);
                let dh = match (pred, true_grad) {
                    // Without the true gradient (none wanted, or the receiver skipped this step),
                    // the synthetic one stands alone.
                    (Some(p), None) => {
                        axpby(enc, inv_b, p, 0.0, p, buf)?;
                        buf.clone()
                    }
                    (Some(p), Some(t)) => {
                        axpby(enc, lambda, t, (1.0 - lambda) * inv_b, p, buf)?;
                        buf.clone()
                    }
                    (None, Some(t)) if lambda == 1.0 => t.clone(),
                    (None, Some(t)) => {
                        axpby(enc, lambda, t, 0.0, t, buf)?;
                        buf.clone()
                    }
                    (None, None) => return Ok(false),
                };
                (out, dh)
            }
            (None, None) => {
                return Err(Error::Internal(
                    "hidden block without an output buffer".into(),
                ))
            }
        };
        self.stack
            .backward(enc, &self.acts, &self.grads, input, None, out, &dh, dx)?;
        self.opt.step(enc, &self.stack.params())?;
        Ok(true)
    }
}

/// A block's buffers for inference at another batch size.
pub(crate) struct EvalBuffers {
    acts: Acts,
    /// The block's output (the logits for the head).
    pub(crate) out: Tensor,
    dlogits: Option<Tensor>,
}

impl Block {
    pub(crate) fn eval_buffers(&self, gpu: &Gpu, batch: usize) -> Result<EvalBuffers> {
        let out = self.stack.output();
        Ok(EvalBuffers {
            acts: self.stack.acts(gpu, batch)?,
            out: Tensor::zeros(gpu, &[batch, out])?,
            dlogits: if self.head {
                Some(Tensor::zeros(gpu, &[batch, out])?)
            } else {
                None
            },
        })
    }

    /// Records the inference forward pass (running batch-norm statistics); the head adds its loss
    /// and wrong count to `metrics` (rows labelled -1 are padding and count for nothing).
    pub(crate) fn forward_eval(
        &self,
        enc: &mut Encoder,
        eb: &EvalBuffers,
        input: &Tensor,
        labels: &Tensor,
        metrics: &Tensor,
    ) -> Result<()> {
        self.stack
            .forward(enc, &eb.acts, input, None, &eb.out, false)?;
        if let Some(dlogits) = &eb.dlogits {
            softmax_xent(enc, &eb.out, labels, dlogits, 1.0, metrics)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dni_kernels::testing::{assert_close, gpu, Lcg};

    /// One regression step of a conditioned linear SG model, `½‖h·W + c·Wc + b − batch·δ‖²` averaged
    /// over the rows: prediction and every gradient against plain loops.
    #[test]
    fn conditioned_sg_regression_matches_reference() {
        let gpu = gpu();
        let (rows, f, classes) = (5usize, 7usize, 3usize);
        let net = FfSpec::backprop(4, vec![f], classes, rows, OptimConfig::adam(1e-3));
        let mut rng = Rng::new(3);
        let mut sg = Regressor::sg(&gpu, &SgSpec::linear(true), f, &net, &mut rng).unwrap();
        let mut lcg = Lcg::new(41);
        let (w, wc, b) = (lcg.vec(f * f), lcg.vec(classes * f), lcg.vec(f));
        {
            let params = sg.stack().params();
            assert_eq!(params.len(), 3, "w, wc, b");
            for (p, v) in params.iter().zip([&w, &wc, &b]) {
                assert!(
                    gpu.read(&p.value).unwrap().iter().all(|&x| x == 0.0),
                    "SG starts at zero"
                );
                p.value.write(&gpu, v).unwrap();
            }
        }
        let h = lcg.vec(rows * f);
        let delta: Vec<f32> = lcg.vec(rows * f).iter().map(|v| v / rows as f32).collect();
        let labels: Vec<u32> = (0..rows as u32).map(|r| r % classes as u32).collect();
        let data = DataSlot::new(&gpu, rows, 4, classes).unwrap();
        data.write(
            &gpu,
            &vec![0.0; rows * 4],
            &labels,
            classes,
            &mut HostScratch::default(),
        )
        .unwrap();
        let h_t = Tensor::from_slice(&gpu, &[rows, f], &h).unwrap();
        let delta_t = Tensor::from_slice(&gpu, &[rows, f], &delta).unwrap();
        let slot = sg.take_slot().unwrap();
        let mut enc = gpu.encoder();
        sg.predict(&mut enc, &h_t, &data, &slot).unwrap();
        sg.train(&mut enc, &h_t, &data, &slot, &delta_t).unwrap();
        gpu.submit(enc);

        let mut pred = vec![0.0f32; rows * f];
        for r in 0..rows {
            for j in 0..f {
                let mut v = b[j] + wc[labels[r] as usize * f + j];
                for k in 0..f {
                    v += h[r * f + k] * w[k * f + j];
                }
                pred[r * f + j] = v;
            }
        }
        let resid: Vec<f32> = pred
            .iter()
            .zip(&delta)
            .map(|(p, d)| (p - rows as f32 * d) / rows as f32)
            .collect();
        let mut dw = vec![0.0f32; f * f];
        let mut dwc = vec![0.0f32; classes * f];
        let mut db = vec![0.0f32; f];
        for r in 0..rows {
            for j in 0..f {
                let g = resid[r * f + j];
                db[j] += g;
                dwc[labels[r] as usize * f + j] += g;
                for k in 0..f {
                    dw[k * f + j] += h[r * f + k] * g;
                }
            }
        }
        assert_close(
            &gpu.read(&slot.out).unwrap(),
            &pred,
            1e-5,
            1e-5,
            "SG prediction",
        );
        let params = sg.stack().params();
        for (p, (want, what)) in params.iter().zip([(&dw, "dW"), (&dwc, "dWc"), (&db, "db")]) {
            assert_close(&gpu.read(&p.grad).unwrap(), want, 1e-4, 1e-5, what);
        }
        let loss = 0.5
            * pred
                .iter()
                .zip(&delta)
                .map(|(p, d)| (p - rows as f32 * d).powi(2))
                .sum::<f32>();
        assert_close(&gpu.read(&sg.loss).unwrap(), &[loss], 1e-4, 1e-5, "SG loss");
        assert_eq!(sg.trained, 1);
    }
}
