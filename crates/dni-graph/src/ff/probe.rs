//! The feed-forward SG fidelity probe: does each interface hand its sender the gradient that
//! backprop would?
//!
//! `sg_loss` scores an SG model against its training target, which below the top interface is
//! itself bootstrapped from the next SG model, so it cannot say whether the SG points where the
//! true gradient points. The probe measures that directly, on one batch, with a diagnostic locked
//! pass through the current network:
//!
//! 1. every block runs forward in training mode (batch statistics, as in a training step), and every
//!    interface's SG model predicts from the block's output;
//! 2. the loss gradient is backpropagated through every block, locked, giving the true gradient
//!    `δ_i` at each block's output;
//! 3. each interface's delivered gradient, what its sender would update with, is scored against
//!    `δ_i`: `λ·δ + (1 − λ)·M(h)/B` when the SG is applied, `λ·δ` when it is not. For DNI (`λ = 0`)
//!    that is the SG itself; for backprop it is `δ` (cosine 1) and for no backprop 0 (cosine 0).
//!
//! Scores are [`Fidelity`] (cosine and explained fraction over the whole batch) in per-example
//! units, the units the SG model predicts in. Beside the gradient at the block's output, the probe
//! scores what the sender does with it: the parameter gradient of the sender's block from the
//! delivered gradient against backprop's, summed over the batch. An SG without the label can only
//! predict the part of `δ` that `h` determines, so per example it is swamped by label noise
//! (`delivered` near 0) while the batch's sum, where that noise averages out, can still point the
//! block's update the right way (`update`). The pass changes no parameter, optimiser moment,
//! batch-norm running statistic or training metric (parameter gradient buffers are scratch, written
//! before every use), so a probed run trains exactly as an unprobed one. It reads back, so it is a
//! diagnostic to run every few hundred steps.

use dni_kernels::ops::elementwise::axpby;
use dni_kernels::ops::loss::softmax_xent;
use dni_kernels::{Gpu, Tensor};

use super::block::DataSlot;
use super::FfNet;
use crate::error::{Error, Result};
use crate::layers::{Acts, Grads};
use crate::sg::{fidelity, Fidelity};

/// What the probe measured at one interface (between blocks `i` and `i + 1`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InterfaceProbe {
    /// The gradient the sender would update with, against the true gradient.
    pub delivered: Fidelity,
    /// The SG model's prediction `M(h)` alone, against the true gradient (also when the SG is
    /// trained but not applied); `None` without an SG model.
    pub sg: Option<Fidelity>,
    /// The sender block's parameter gradient from the delivered gradient against the one from the
    /// true gradient (all its parameters together, summed over the batch).
    pub update: Fidelity,
}

/// The probe's buffers, made on its first call.
pub(crate) struct ProbeBuffers {
    data: DataSlot,
    acts: Vec<Acts>,
    grads: Vec<Grads>,
    /// Each block's output (the head's: its logits).
    out: Vec<Tensor>,
    /// Each block's input gradient, except the first block's (nobody receives it).
    dx: Vec<Option<Tensor>>,
    dlogits: Tensor,
    metrics: Tensor,
    /// Copies of every batch-norm running statistic touched by the training-mode passes.
    saved: Vec<Tensor>,
    /// Per hidden block: the delivered gradient at its output, and its parameter gradients from
    /// the true gradient.
    delivered: Vec<Tensor>,
    true_param_grads: Vec<Vec<Tensor>>,
}

impl ProbeBuffers {
    fn new(net: &FfNet) -> Result<Self> {
        let gpu = &net.gpu;
        let spec = &net.spec;
        let b = spec.batch;
        let mut acts = Vec::new();
        let mut grads = Vec::new();
        let mut out = Vec::new();
        let mut dx = Vec::new();
        for (i, block) in net.blocks.iter().enumerate() {
            acts.push(block.stack.acts(gpu, b)?);
            grads.push(block.stack.grads(gpu, b)?);
            out.push(Tensor::zeros(gpu, &[b, block.stack.output()])?);
            dx.push(match i {
                0 => None,
                _ => Some(Tensor::zeros(gpu, &[b, block.stack.input()])?),
            });
        }
        let mut saved = Vec::new();
        for t in running_stats(net) {
            saved.push(Tensor::zeros(gpu, &[t.len()])?);
        }
        let hidden = &net.blocks[..net.blocks.len().saturating_sub(1)];
        let mut delivered = Vec::new();
        let mut true_param_grads = Vec::new();
        for block in hidden {
            delivered.push(Tensor::zeros(gpu, &[b, block.stack.output()])?);
            let mut v = Vec::new();
            for p in block.stack.params() {
                v.push(Tensor::zeros(gpu, &[p.grad.len()])?);
            }
            true_param_grads.push(v);
        }
        Ok(Self {
            data: DataSlot::new(gpu, b, spec.input, spec.classes)?,
            acts,
            grads,
            out,
            dx,
            dlogits: Tensor::zeros(gpu, &[b, spec.classes])?,
            metrics: Tensor::zeros(gpu, &[2])?,
            saved,
            delivered,
            true_param_grads,
        })
    }
}

/// How many read-backs precede the parameter gradients: each interface's true gradient, and its
/// SG prediction where there is an SG model.
fn reads_before_params(hidden: &[super::block::Block]) -> usize {
    hidden.iter().map(|b| 1 + b.sg.is_some() as usize).sum()
}

impl ProbeBuffers {
    /// Block `i`'s backward pass of the probe's forward, from `dout`.
    fn backward(
        &self,
        enc: &mut dni_kernels::Encoder,
        stack: &crate::layers::Stack,
        i: usize,
        input: &Tensor,
        dout: &Tensor,
        dx: Option<&Tensor>,
    ) -> Result<()> {
        stack.backward(
            enc,
            &self.acts[i],
            &self.grads[i],
            input,
            None,
            &self.out[i],
            dout,
            dx,
        )
    }
}

/// Every batch-norm running statistic of the blocks and of their SG models, in a fixed order.
fn running_stats(net: &FfNet) -> Vec<&Tensor> {
    let mut v = Vec::new();
    for block in &net.blocks {
        let stacks = std::iter::once(&block.stack).chain(block.sg.as_ref().map(|r| r.stack()));
        for stack in stacks {
            for (mean, var) in stack.running_stats() {
                v.push(mean);
                v.push(var);
            }
        }
    }
    v
}

impl FfNet {
    /// Scores the gradient each interface delivers to its sender against backprop's true gradient
    /// on one batch (`batch × input` features and `batch` labels): one entry per interface, between
    /// blocks `i` and `i + 1`. See the module docs of `ff::probe`. Blocking (one read-back); call it
    /// between calls of [`train`](Self::train).
    pub fn probe_sg(&mut self, x: &[f32], labels: &[u32]) -> Result<Vec<InterfaceProbe>> {
        let (batch, input) = (self.spec.batch, self.spec.input);
        if x.len() != batch * input {
            return Err(Error::Input {
                what: "FfNet::probe_sg features (batch × input)",
                expected: batch * input,
                got: x.len(),
            });
        }
        if labels.len() != batch {
            return Err(Error::Input {
                what: "FfNet::probe_sg labels (batch)",
                expected: batch,
                got: labels.len(),
            });
        }
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= self.spec.classes) {
            return Err(Error::shape(
                "FfNet::probe_sg",
                format!("label {bad} is not below {} classes", self.spec.classes),
            ));
        }
        if self.probe.is_none() {
            self.probe = Some(ProbeBuffers::new(self)?);
        }
        let mut pb = self
            .probe
            .take()
            .ok_or_else(|| Error::Internal("probe buffers".into()))?;
        let result = self.probe_with(&mut pb, x, labels);
        self.probe = Some(pb);
        result
    }

    fn probe_with(
        &mut self,
        pb: &mut ProbeBuffers,
        x: &[f32],
        labels: &[u32],
    ) -> Result<Vec<InterfaceProbe>> {
        let gpu: Gpu = self.gpu.clone();
        let n = self.blocks.len();
        let classes = self.spec.classes;
        let batch = self.spec.batch;
        pb.data.write(&gpu, x, labels, classes, &mut self.scratch)?;
        let mut enc = gpu.encoder();
        for (t, save) in running_stats(self).into_iter().zip(&pb.saved) {
            enc.copy(t, save)?;
        }
        // Forward through the real chain, and each SG model's prediction from its block's output.
        let mut slots = Vec::with_capacity(n);
        for i in 0..n {
            let input = if i == 0 { &pb.data.x } else { &pb.out[i - 1] };
            let block = &mut self.blocks[i];
            block
                .stack
                .forward(&mut enc, &pb.acts[i], input, None, &pb.out[i], true)?;
            let slot = match block.sg.as_mut() {
                Some(sg) => {
                    let slot = sg.take_slot()?;
                    sg.predict(&mut enc, &pb.out[i], &pb.data, &slot)?;
                    Some(slot)
                }
                None => None,
            };
            slots.push(slot);
        }
        // The locked backward pass: the true gradient at every block's input.
        softmax_xent(
            &mut enc,
            &pb.out[n - 1],
            &pb.data.labels,
            &pb.dlogits,
            1.0 / batch as f32,
            &pb.metrics,
        )?;
        for i in (0..n).rev() {
            let input = if i == 0 { &pb.data.x } else { &pb.out[i - 1] };
            let dout = if i + 1 == n {
                &pb.dlogits
            } else {
                pb.dx[i + 1]
                    .as_ref()
                    .ok_or_else(|| Error::Internal("probe gradient buffer".into()))?
            };
            let stack = &self.blocks[i].stack;
            pb.backward(&mut enc, stack, i, input, dout, pb.dx[i].as_ref())?;
            if let Some(saved) = pb.true_param_grads.get(i) {
                for (p, t) in stack.params().into_iter().zip(saved) {
                    enc.copy(&p.grad, t)?;
                }
            }
        }
        // Each hidden block's backward again, from the gradient its interface delivers; its
        // parameter gradients are left in the blocks' (scratch) gradient buffers.
        let inv_b = 1.0 / batch as f32;
        for (i, (block, slot)) in self.blocks[..n - 1].iter().zip(&slots).enumerate() {
            let iface = block
                .out_iface
                .as_ref()
                .ok_or_else(|| Error::Internal("hidden block without an interface".into()))?;
            let truth = pb.dx[i + 1]
                .as_ref()
                .ok_or_else(|| Error::Internal("probe gradient buffer".into()))?;
            let lambda = iface.lambda;
            match slot.as_ref().filter(|_| iface.apply_sg) {
                Some(slot) => axpby(
                    &mut enc,
                    lambda,
                    truth,
                    (1.0 - lambda) * inv_b,
                    &slot.out,
                    &pb.delivered[i],
                )?,
                None => axpby(&mut enc, lambda, truth, 0.0, truth, &pb.delivered[i])?,
            }
            let input = if i == 0 { &pb.data.x } else { &pb.out[i - 1] };
            pb.backward(&mut enc, &block.stack, i, input, &pb.delivered[i], None)?;
        }
        for (t, save) in running_stats(self).into_iter().zip(&pb.saved) {
            enc.copy(save, t)?;
        }
        gpu.submit(enc);

        // Interface i's true gradient is block i+1's input gradient.
        let mut reads: Vec<&Tensor> = Vec::new();
        for (dx, slot) in pb.dx[1..].iter().zip(&slots) {
            reads.push(
                dx.as_ref()
                    .ok_or_else(|| Error::Internal("probe gradient buffer".into()))?,
            );
            if let Some(slot) = slot {
                reads.push(&slot.out);
            }
        }
        // Then per hidden block its parameter gradients: from the truth, from the delivered one.
        for (block, saved) in self.blocks.iter().zip(&pb.true_param_grads) {
            reads.extend(saved.iter());
            reads.extend(block.stack.params().into_iter().map(|p| &p.grad));
        }
        let values = gpu.read_many(&reads);
        for (block, slot) in self.blocks.iter_mut().zip(slots) {
            if let (Some(sg), Some(slot)) = (block.sg.as_mut(), slot) {
                sg.free.push(slot);
            }
        }
        let values = values?;
        let mut k = 0;
        let mut updates = Vec::with_capacity(n - 1);
        {
            let mut j = reads_before_params(&self.blocks[..n - 1]);
            for block in &self.blocks[..n - 1] {
                let np = block.stack.params().len();
                let flat = |vs: &[Vec<f32>]| -> Vec<f64> {
                    vs.iter().flatten().map(|&v| v as f64).collect()
                };
                let truth = flat(&values[j..j + np]);
                let delivered = flat(&values[j + np..j + 2 * np]);
                updates.push(fidelity(&delivered, &truth));
                j += 2 * np;
            }
        }
        let mut out = Vec::with_capacity(n - 1);
        for (block, update) in self.blocks[..n - 1].iter().zip(updates) {
            let iface = block
                .out_iface
                .as_ref()
                .ok_or_else(|| Error::Internal("hidden block without an interface".into()))?;
            // Per-example units: the task loss is a batch mean.
            let truth: Vec<f64> = values[k].iter().map(|&v| v as f64 * batch as f64).collect();
            k += 1;
            let lambda = iface.lambda as f64;
            let pred = match block.sg {
                Some(_) => {
                    k += 1;
                    Some(&values[k - 1])
                }
                None => None,
            };
            let delivered: Vec<f64> = match pred.filter(|_| iface.apply_sg) {
                Some(p) => truth
                    .iter()
                    .zip(p)
                    .map(|(t, &p)| lambda * t + (1.0 - lambda) * p as f64)
                    .collect(),
                None => truth.iter().map(|t| lambda * t).collect(),
            };
            out.push(InterfaceProbe {
                delivered: fidelity(&delivered, &truth),
                sg: pred.map(|p| {
                    let p: Vec<f64> = p.iter().map(|&v| v as f64).collect();
                    fidelity(&p, &truth)
                }),
                update,
            });
        }
        Ok(out)
    }
}
