//! Loss launchers, each writing its gradient and accumulating its sums on the GPU: softmax
//! cross-entropy, masked sigmoid cross-entropy with the bit-error metric, and the synthetic-gradient
//! L2 regression. The metric tensors are only added to, so a caller sums a whole window or many
//! steps on the GPU and reads back once.

use bytemuck::{Pod, Zeroable};

use crate::error::{no_alias, shape_err, Result};
use crate::gpu::{grid_1d, Encoder};
use crate::pipeline::{Entry, Kernel, Slot};
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    scale: f32,
    _pad: u32,
}

const S_SOFTMAX: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,
    Slot::Read,
    Slot::ReadWrite,
    Slot::ReadWrite,
];
const S_SIGMOID: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::ReadWrite,
    Slot::ReadWrite,
];
const S_L2: &[Slot] = &[Slot::Uniform, Slot::Read, Slot::Read, Slot::ReadWrite];

const SOFTMAX_XENT: Entry = Entry::new(Kernel::Loss, "softmax_xent", S_SOFTMAX);
const SIGMOID_XENT: Entry = Entry::new(Kernel::Loss, "sigmoid_xent", S_SIGMOID);
const SG_L2_LOSS: Entry = Entry::new(Kernel::Loss, "sg_l2_loss", S_L2);
const SG_L2_GRAD: Entry = Entry::new(Kernel::Loss, "sg_l2_grad", S_L2);

/// Every entry point these launchers dispatch, for the contract test.
pub const ENTRIES: &[Entry] = &[SOFTMAX_XENT, SIGMOID_XENT, SG_L2_LOSS, SG_L2_GRAD];

fn record(
    enc: &mut Encoder,
    entry: &Entry,
    params: Params,
    tensors: &[&Tensor],
    groups: [u32; 3],
) -> Result<()> {
    let gpu = enc.gpu().clone();
    let pipeline = gpu.pipeline_for(entry, &[])?;
    let bind = gpu.bind(&pipeline, bytemuck::bytes_of(&params), tensors)?;
    enc.dispatch(&pipeline, &bind, groups);
    Ok(())
}

/// Softmax cross-entropy over rows of logits [R, C]. Writes dlogits = scale * (softmax - onehot(label)).
/// Accumulates into metrics (a [2]-tensor, added to, never overwritten): metrics[0] += sum of -ln p(label) (nats), metrics[1] += number of rows whose argmax != label.
///
/// `labels` holds R class indices as f32. A label outside `[0, C)` (e.g. -1) marks a row to
/// ignore: its gradient is zero and it adds nothing to the metrics. The argmax takes the first of
/// equal maxima. One workgroup does all rows, so the sums are reproducible.
pub fn softmax_xent(
    enc: &mut Encoder,
    logits: &Tensor,
    labels: &Tensor,
    dlogits: &Tensor,
    scale: f32,
    metrics: &Tensor,
) -> Result<()> {
    let (rows, cols) = logits.as_matrix();
    if labels.len() != rows {
        return shape_err(
            "softmax_xent",
            format!(
                "logits {:?} have {rows} rows but labels have {} elements",
                logits.shape(),
                labels.len()
            ),
        );
    }
    if dlogits.len() != logits.len() {
        return shape_err(
            "softmax_xent",
            format!(
                "dlogits {:?} do not match logits {:?}",
                dlogits.shape(),
                logits.shape()
            ),
        );
    }
    if metrics.len() != 2 {
        return shape_err(
            "softmax_xent",
            format!("metrics must have 2 elements, has {}", metrics.len()),
        );
    }
    no_alias("softmax_xent", &[logits, labels], &[dlogits, metrics])?;
    let params = Params {
        rows: rows as u32,
        cols: cols as u32,
        scale,
        _pad: 0,
    };
    record(
        enc,
        &SOFTMAX_XENT,
        params,
        &[logits, labels, dlogits, metrics],
        [1, 1, 1],
    )
}

/// Sigmoid cross-entropy with a mask (all [R, C]). dlogits = scale * mask * (sigmoid(x) - target).
/// metrics (a [3]-tensor, accumulated): [0] += sum of masked BCE (nats), [1] += masked bit errors ((sigmoid(x) > 0.5) != (target > 0.5)), [2] += number of scored rows (rows with any mask > 0) — i.e. output characters for the Copy tasks.
///
/// The mask weighs both the gradient and the BCE; bit errors count elements whose mask is > 0.
pub fn sigmoid_xent(
    enc: &mut Encoder,
    logits: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    dlogits: &Tensor,
    scale: f32,
    metrics: &Tensor,
) -> Result<()> {
    let (rows, cols) = logits.as_matrix();
    for (name, t) in [("targets", targets), ("mask", mask), ("dlogits", dlogits)] {
        if t.len() != logits.len() {
            return shape_err(
                "sigmoid_xent",
                format!(
                    "{name} {:?} do not match logits {:?}",
                    t.shape(),
                    logits.shape()
                ),
            );
        }
    }
    if metrics.len() != 3 {
        return shape_err(
            "sigmoid_xent",
            format!("metrics must have 3 elements, has {}", metrics.len()),
        );
    }
    no_alias(
        "sigmoid_xent",
        &[logits, targets, mask],
        &[dlogits, metrics],
    )?;
    let params = Params {
        rows: rows as u32,
        cols: cols as u32,
        scale,
        _pad: 0,
    };
    record(
        enc,
        &SIGMOID_XENT,
        params,
        &[logits, targets, mask, dlogits, metrics],
        [1, 1, 1],
    )
}

/// Synthetic-gradient regression: loss = 0.5 * ||pred - target||^2 (target treated as constant).
/// dpred = scale * (pred - target); if loss is Some (a [1]-tensor), loss[0] += 0.5*sum((pred-target)^2).
pub fn sg_l2(
    enc: &mut Encoder,
    pred: &Tensor,
    target: &Tensor,
    dpred: &Tensor,
    scale: f32,
    loss: Option<&Tensor>,
) -> Result<()> {
    let n = pred.len();
    if target.len() != n || dpred.len() != n {
        return shape_err(
            "sg_l2",
            format!(
                "pred {:?}, target {:?} and dpred {:?} must have the same size",
                pred.shape(),
                target.shape(),
                dpred.shape()
            ),
        );
    }
    no_alias("sg_l2", &[pred, target], &[dpred])?;
    let params = Params {
        rows: n as u32,
        cols: 1,
        scale,
        _pad: 0,
    };
    if let Some(loss) = loss {
        if loss.len() != 1 {
            return shape_err(
                "sg_l2",
                format!("loss must have 1 element, has {}", loss.len()),
            );
        }
        no_alias("sg_l2", &[pred, target, dpred], &[loss])?;
        record(enc, &SG_L2_LOSS, params, &[pred, target, loss], [1, 1, 1])?;
    }
    record(
        enc,
        &SG_L2_GRAD,
        params,
        &[pred, target, dpred],
        grid_1d(n, 256),
    )
}
