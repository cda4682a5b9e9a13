//! Batch normalisation over the rows of `[B, F]` activations, per feature: the training forward
//! (batch statistics, saved for backward, running statistics updated), the eval forward (running
//! statistics), and the backward of the training forward.

use bytemuck::{Pod, Zeroable};

use crate::error::{no_alias, shape_err, Result};
use crate::gpu::Encoder;
use crate::pipeline::{Entry, Kernel, Slot};
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    momentum: f32,
}

const S_FORWARD: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::ReadWrite,
    Slot::ReadWrite,
    Slot::ReadWrite,
    Slot::ReadWrite,
    Slot::ReadWrite,
];
const S_BACKWARD: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::ReadWrite,
    Slot::ReadWrite,
    Slot::ReadWrite,
];

const FORWARD_TRAIN: Entry = Entry::new(Kernel::BatchNorm, "forward_train", S_FORWARD);
// The eval forward takes the training forward's bind group, so one launcher serves both.
const FORWARD_EVAL: Entry = Entry::new(Kernel::BatchNorm, "forward_eval", S_FORWARD);
const BACKWARD: Entry = Entry::new(Kernel::BatchNorm, "backward", S_BACKWARD);

/// Every entry point these launchers dispatch, for the contract test.
pub const ENTRIES: &[Entry] = &[FORWARD_TRAIN, FORWARD_EVAL, BACKWARD];

/// Hyper-parameters of a batch-norm layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormParams {
    /// Added to the variance before the square root.
    pub eps: f32,
    /// running = (1-momentum)*running + momentum*batch stat
    pub momentum: f32,
}

impl Default for BatchNormParams {
    /// PyTorch's defaults: eps 1e-5, momentum 0.1.
    fn default() -> Self {
        Self {
            eps: 1e-5,
            momentum: 0.1,
        }
    }
}

fn check_features(op: &'static str, cols: usize, named: &[(&str, &Tensor)]) -> Result<()> {
    for (name, t) in named {
        if t.len() != cols {
            return shape_err(
                op,
                format!(
                    "{name} {:?} must have {cols} elements (one per feature)",
                    t.shape()
                ),
            );
        }
    }
    Ok(())
}

/// training = true: normalise by batch statistics, save mean and inverse std (for backward), update running stats (unbiased var).
/// training = false: normalise by running stats.
///
/// Training needs at least 2 rows (the unbiased variance of one row is undefined).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward(
    enc: &mut Encoder,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    y: &Tensor,
    saved_mean: &Tensor,
    saved_invstd: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    training: bool,
    p: BatchNormParams,
) -> Result<()> {
    let op = "batchnorm_forward";
    let (rows, cols) = x.as_matrix();
    if y.len() != x.len() {
        return shape_err(
            op,
            format!("y {:?} does not match x {:?}", y.shape(), x.shape()),
        );
    }
    check_features(
        op,
        cols,
        &[
            ("gamma", gamma),
            ("beta", beta),
            ("saved_mean", saved_mean),
            ("saved_invstd", saved_invstd),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ],
    )?;
    if training && rows < 2 {
        return shape_err(
            op,
            format!("training mode needs at least 2 rows, x is {:?}", x.shape()),
        );
    }
    let tensors = [
        x,
        gamma,
        beta,
        y,
        saved_mean,
        saved_invstd,
        running_mean,
        running_var,
    ];
    no_alias(
        op,
        &[x, gamma, beta],
        &[y, saved_mean, saved_invstd, running_mean, running_var],
    )?;
    let params = Params {
        rows: rows as u32,
        cols: cols as u32,
        eps: p.eps,
        momentum: p.momentum,
    };
    let entry = if training {
        &FORWARD_TRAIN
    } else {
        &FORWARD_EVAL
    };
    let gpu = enc.gpu().clone();
    let pipeline = gpu.pipeline_for(entry, &[])?;
    let bind = gpu.bind(&pipeline, bytemuck::bytes_of(&params), &tensors)?;
    enc.dispatch(&pipeline, &bind, [cols.div_ceil(64) as u32, 1, 1]);
    Ok(())
}

/// Backward of training-mode forward. Writes dx, dgamma, dbeta (overwrites).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward(
    enc: &mut Encoder,
    x: &Tensor,
    dy: &Tensor,
    gamma: &Tensor,
    saved_mean: &Tensor,
    saved_invstd: &Tensor,
    dx: &Tensor,
    dgamma: &Tensor,
    dbeta: &Tensor,
) -> Result<()> {
    let op = "batchnorm_backward";
    let (rows, cols) = x.as_matrix();
    for (name, t) in [("dy", dy), ("dx", dx)] {
        if t.len() != x.len() {
            return shape_err(
                op,
                format!("{name} {:?} does not match x {:?}", t.shape(), x.shape()),
            );
        }
    }
    check_features(
        op,
        cols,
        &[
            ("gamma", gamma),
            ("saved_mean", saved_mean),
            ("saved_invstd", saved_invstd),
            ("dgamma", dgamma),
            ("dbeta", dbeta),
        ],
    )?;
    let tensors = [x, dy, gamma, saved_mean, saved_invstd, dx, dgamma, dbeta];
    no_alias(
        op,
        &[x, dy, gamma, saved_mean, saved_invstd],
        &[dx, dgamma, dbeta],
    )?;
    let params = Params {
        rows: rows as u32,
        cols: cols as u32,
        eps: 0.0,
        momentum: 0.0,
    };
    let gpu = enc.gpu().clone();
    let pipeline = gpu.pipeline_for(&BACKWARD, &[])?;
    let bind = gpu.bind(&pipeline, bytemuck::bytes_of(&params), &tensors)?;
    enc.dispatch(&pipeline, &bind, [cols.div_ceil(64) as u32, 1, 1]);
    Ok(())
}
