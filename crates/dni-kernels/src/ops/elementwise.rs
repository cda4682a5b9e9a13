//! Elementwise launchers: activations and their derivatives, axpy, axpby, scale, mul, fill, and
//! the swap of a tensor's two leading axes.

use bytemuck::{Pod, Zeroable};

use crate::error::{no_alias, shape_err, Result};
use crate::gpu::{grid_1d, Encoder};
use crate::pipeline::{Entry, Kernel, Slot};
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    alpha: f32,
    beta: f32,
    _pad: u32,
}

/// An activation function; the derivative is computed from the activation's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    Identity,
    Relu,
    Tanh,
    Sigmoid,
}

impl Activation {
    fn code(self) -> f64 {
        match self {
            Activation::Identity => 0.0,
            Activation::Relu => 1.0,
            Activation::Tanh => 2.0,
            Activation::Sigmoid => 3.0,
        }
    }
}

fn same_len(op: &'static str, ts: &[&Tensor]) -> Result<usize> {
    let n = ts[0].len();
    for t in &ts[1..] {
        if t.len() != n {
            return shape_err(
                op,
                format!(
                    "operands differ in size: {:?} vs {:?}",
                    ts[0].shape(),
                    t.shape()
                ),
            );
        }
    }
    Ok(n)
}

fn launch(
    enc: &mut Encoder,
    entry: &Entry,
    overrides: &[(&'static str, f64)],
    params: Params,
    tensors: &[&Tensor],
) -> Result<()> {
    let gpu = enc.gpu().clone();
    let pipeline = gpu.pipeline_for(entry, overrides)?;
    let bind = gpu.bind(&pipeline, bytemuck::bytes_of(&params), tensors)?;
    enc.dispatch(&pipeline, &bind, grid_1d(params.n as usize, 256));
    Ok(())
}

const S_IN_OUT: &[Slot] = &[Slot::Uniform, Slot::Read, Slot::ReadWrite];
const S_2IN_OUT: &[Slot] = &[Slot::Uniform, Slot::Read, Slot::Read, Slot::ReadWrite];
const S_INPLACE: &[Slot] = &[Slot::Uniform, Slot::ReadWrite];

const fn entry(name: &'static str, slots: &'static [Slot]) -> Entry {
    Entry::new(Kernel::Elementwise, name, slots)
}
const UNARY: Entry = entry("unary", S_IN_OUT);
const UNARY_GRAD: Entry = entry("unary_grad", S_2IN_OUT);
const AXPY: Entry = entry("axpy", S_IN_OUT);
const AXPBY: Entry = entry("axpby", S_2IN_OUT);
const MUL: Entry = entry("mul", S_2IN_OUT);
const SCALE: Entry = entry("scale", S_INPLACE);
const FILL: Entry = entry("fill", S_INPLACE);
const SWAP_LEADING: Entry = entry("swap_leading", S_IN_OUT);

/// Every entry point these launchers dispatch, for the contract test.
pub const ENTRIES: &[Entry] = &[
    UNARY,
    UNARY_GRAD,
    AXPY,
    AXPBY,
    MUL,
    SCALE,
    FILL,
    SWAP_LEADING,
];

fn params(n: usize, alpha: f32, beta: f32) -> Params {
    Params {
        n: n as u32,
        alpha,
        beta,
        _pad: 0,
    }
}

/// `y = act(x)`.
pub fn activate(enc: &mut Encoder, act: Activation, x: &Tensor, y: &Tensor) -> Result<()> {
    let n = same_len("activate", &[x, y])?;
    launch(
        enc,
        &UNARY,
        &[("ACT", act.code())],
        params(n, 1.0, 0.0),
        &[x, y],
    )
}

/// `dx = dy · act'(y)`, where `y = act(x)` is the forward output; with `accumulate`, adds to dx.
pub fn activate_backward(
    enc: &mut Encoder,
    act: Activation,
    y: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
    accumulate: bool,
) -> Result<()> {
    let n = same_len("activate_backward", &[y, dy, dx])?;
    let beta = if accumulate { 1.0 } else { 0.0 };
    launch(
        enc,
        &UNARY_GRAD,
        &[("ACT", act.code())],
        params(n, 1.0, beta),
        &[y, dy, dx],
    )
}

/// `y += alpha·x`.
pub fn axpy(enc: &mut Encoder, alpha: f32, x: &Tensor, y: &Tensor) -> Result<()> {
    let n = same_len("axpy", &[x, y])?;
    launch(enc, &AXPY, &[], params(n, alpha, 0.0), &[x, y])
}

/// `z = alpha·x + beta·y` (add: 1, 1; subtract: 1, -1). `z` must be a third tensor.
pub fn axpby(
    enc: &mut Encoder,
    alpha: f32,
    x: &Tensor,
    beta: f32,
    y: &Tensor,
    z: &Tensor,
) -> Result<()> {
    let n = same_len("axpby", &[x, y, z])?;
    launch(enc, &AXPBY, &[], params(n, alpha, beta), &[x, y, z])
}

/// `z = alpha·x⊙y`.
pub fn mul(enc: &mut Encoder, alpha: f32, x: &Tensor, y: &Tensor, z: &Tensor) -> Result<()> {
    let n = same_len("mul", &[x, y, z])?;
    launch(enc, &MUL, &[], params(n, alpha, 0.0), &[x, y, z])
}

/// `y = alpha·y`.
pub fn scale(enc: &mut Encoder, alpha: f32, y: &Tensor) -> Result<()> {
    launch(enc, &SCALE, &[], params(y.len(), alpha, 0.0), &[y])
}

/// `y = value` everywhere.
pub fn fill(enc: &mut Encoder, value: f32, y: &Tensor) -> Result<()> {
    launch(enc, &FILL, &[], params(y.len(), value, 0.0), &[y])
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct SwapParams {
    n: u32,
    a: u32,
    b: u32,
    c: u32,
}

/// `y[j, i, k] = x[i, j, k]` for `x` of shape `[a, b, c]` (`y` is `[b, a, c]`): a batch of rows of
/// `steps · features` becomes the `[steps, batch, features]` an LSTM reads, and back.
pub fn swap_leading_axes(
    enc: &mut Encoder,
    x: &Tensor,
    [a, b, c]: [usize; 3],
    y: &Tensor,
) -> Result<()> {
    const OP: &str = "swap_leading_axes";
    let n = a.checked_mul(b).and_then(|ab| ab.checked_mul(c));
    let n = match n.and_then(|n| u32::try_from(n).ok()) {
        Some(n) if x.len() == n as usize && y.len() == n as usize => n,
        _ => {
            return shape_err(
                OP,
                format!(
                    "x {:?} and y {:?} must both hold [{a}, {b}, {c}] (fewer than 2^32 elements)",
                    x.shape(),
                    y.shape()
                ),
            )
        }
    };
    no_alias(OP, &[x], &[y])?;
    let gpu = enc.gpu().clone();
    let pipeline = gpu.pipeline_for(&SWAP_LEADING, &[])?;
    let params = SwapParams {
        n,
        a: a as u32,
        b: b as u32,
        c: c as u32,
    };
    let bind = gpu.bind(&pipeline, bytemuck::bytes_of(&params), &[x, y])?;
    enc.dispatch(&pipeline, &bind, grid_1d(n as usize, 256));
    Ok(())
}
