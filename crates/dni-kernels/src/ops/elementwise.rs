//! Elementwise launchers: activations and their derivatives, axpy, axpby, scale, mul, fill.

use bytemuck::{Pod, Zeroable};

use crate::error::{shape_err, Result};
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

/// Every entry point these launchers dispatch, for the contract test.
pub const ENTRIES: &[Entry] = &[UNARY, UNARY_GRAD, AXPY, AXPBY, MUL, SCALE, FILL];

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
