//! Inference over a fixed data set: uploaded once, run in batches on the real chain, one read-back.

use dni_kernels::{Gpu, Tensor};

use super::block::EvalBuffers;
use super::FfNet;
use crate::error::{Error, Result};

/// A data set uploaded to the GPU in batches; the last batch is padded with rows labelled -1,
/// which the loss ignores.
pub struct EvalSet {
    batches: Vec<(Tensor, Tensor)>,
    n: usize,
    batch: usize,
    input: usize,
}

impl EvalSet {
    /// `x` holds `labels.len()` rows of `input` features.
    pub fn new(gpu: &Gpu, input: usize, x: &[f32], labels: &[u32], batch: usize) -> Result<Self> {
        let n = labels.len();
        if n == 0 || batch == 0 || input == 0 {
            return Err(Error::shape(
                "EvalSet::new",
                format!("{n} examples, batch {batch}, {input} features"),
            ));
        }
        if x.len() != n * input {
            return Err(Error::shape(
                "EvalSet::new",
                format!(
                    "{n} labels need {} input values, got {}",
                    n * input,
                    x.len()
                ),
            ));
        }
        let batch = batch.min(n);
        let mut batches = Vec::new();
        for start in (0..n).step_by(batch) {
            let rows = batch.min(n - start);
            let mut xb = vec![0.0; batch * input];
            xb[..rows * input].copy_from_slice(&x[start * input..(start + rows) * input]);
            let mut lb = vec![-1.0; batch];
            for (r, &l) in labels[start..start + rows].iter().enumerate() {
                lb[r] = l as f32;
            }
            batches.push((
                Tensor::from_slice(gpu, &[batch, input], &xb)?,
                Tensor::from_slice(gpu, &[batch], &lb)?,
            ));
        }
        Ok(Self {
            batches,
            n,
            batch,
            input,
        })
    }

    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// Test error and mean cross-entropy of the classifier over an [`EvalSet`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClassifierEval {
    pub examples: usize,
    pub error: f64,
    pub loss: f64,
    /// Misclassified examples.
    pub wrong: u64,
}

/// Every block's inference buffers at one batch size, built on the first evaluation.
pub(crate) struct EvalBuffersSet {
    batch: usize,
    blocks: Vec<EvalBuffers>,
    metrics: Tensor,
}

pub(crate) fn evaluate(net: &mut FfNet, set: &EvalSet) -> Result<ClassifierEval> {
    if set.input != net.spec.input {
        return Err(Error::shape(
            "FfNet::evaluate",
            format!(
                "the set has {} features, the net {}",
                set.input, net.spec.input
            ),
        ));
    }
    let gpu = net.gpu.clone();
    if net.eval.as_ref().is_none_or(|e| e.batch != set.batch) {
        let blocks = net
            .blocks
            .iter()
            .map(|b| b.eval_buffers(&gpu, set.batch))
            .collect::<Result<Vec<_>>>()?;
        net.eval = Some(EvalBuffersSet {
            batch: set.batch,
            blocks,
            metrics: Tensor::zeros(&gpu, &[2])?,
        });
    }
    let ev = net
        .eval
        .as_ref()
        .ok_or_else(|| Error::Internal("eval buffers missing".into()))?;
    let mut enc = gpu.encoder();
    enc.clear(&ev.metrics);
    for (x, labels) in &set.batches {
        for (i, (block, eb)) in net.blocks.iter().zip(&ev.blocks).enumerate() {
            let input = if i == 0 { x } else { &ev.blocks[i - 1].out };
            block.forward_eval(&mut enc, eb, input, labels, &ev.metrics)?;
        }
    }
    gpu.submit(enc);
    let m = gpu.read(&ev.metrics)?;
    let n = set.n as f64;
    Ok(ClassifierEval {
        examples: set.n,
        error: m[1] as f64 / n,
        loss: m[0] as f64 / n,
        wrong: m[1].round() as u64,
    })
}
