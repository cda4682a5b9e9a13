//! Reductions: column sums (bias gradients) and whole-tensor sums (losses, metrics).

use bytemuck::{Pod, Zeroable};

use crate::error::{shape_err, Result};
use crate::gpu::Encoder;
use crate::pipeline::{Entry, Kernel, Slot};
use crate::tensor::Tensor;

const SLOTS: &[Slot] = &[Slot::Uniform, Slot::Read, Slot::ReadWrite];
const COL_SUM: Entry = Entry::new(Kernel::Reduce, "col_sum", SLOTS);
const SUM_ALL: Entry = Entry::new(Kernel::Reduce, "sum_all", SLOTS);

/// Every entry point these launchers dispatch, for the contract test.
pub const ENTRIES: &[Entry] = &[COL_SUM, SUM_ALL];

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    alpha: f32,
    beta: f32,
}

/// `out[j] = alpha·Σ_i x[i,j] + beta·out[j]`; `x` is viewed as a matrix, `out` has its columns.
pub fn col_sum(enc: &mut Encoder, x: &Tensor, out: &Tensor, alpha: f32, beta: f32) -> Result<()> {
    let (rows, cols) = x.as_matrix();
    if out.len() != cols {
        return shape_err(
            "col_sum",
            format!("x is {rows}x{cols} but out has {} elements", out.len()),
        );
    }
    let gpu = enc.gpu().clone();
    let pipeline = gpu.pipeline_for(&COL_SUM, &[])?;
    let params = Params {
        rows: rows as u32,
        cols: cols as u32,
        alpha,
        beta,
    };
    let bind = gpu.bind(&pipeline, bytemuck::bytes_of(&params), &[x, out])?;
    enc.dispatch(&pipeline, &bind, [cols.div_ceil(64) as u32, 1, 1]);
    Ok(())
}

/// `out[0] = alpha·Σ x + beta·out[0]`; `out` has one element.
pub fn sum_all(enc: &mut Encoder, x: &Tensor, out: &Tensor, alpha: f32, beta: f32) -> Result<()> {
    if out.len() != 1 {
        return shape_err(
            "sum_all",
            format!("out must have 1 element, has {}", out.len()),
        );
    }
    let gpu = enc.gpu().clone();
    let pipeline = gpu.pipeline_for(&SUM_ALL, &[])?;
    let params = Params {
        rows: 1,
        cols: x.len() as u32,
        alpha,
        beta,
    };
    let bind = gpu.bind(&pipeline, bytemuck::bytes_of(&params), &[x, out])?;
    enc.dispatch(&pipeline, &bind, [1, 1, 1]);
    Ok(())
}
