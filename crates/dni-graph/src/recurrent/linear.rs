//! A linear map `y = x·W + b` with its parameters, as used by the readout, the SG model and the aux head.

use dni_kernels::ops::matmul::{matmul, Matmul};
use dni_kernels::ops::optim::Param;
use dni_kernels::ops::reduce::col_sum;
use dni_kernels::{Encoder, Gpu, Tensor};

use super::error::Result;

pub(crate) struct Linear {
    /// `[in, out]`.
    pub w: Param,
    /// `[out]`.
    pub b: Param,
}

impl Linear {
    /// Weights from `w` (row-major `[inputs, outputs]`), zero bias.
    pub fn new(gpu: &Gpu, inputs: usize, outputs: usize, w: &[f32]) -> Result<Self> {
        Ok(Self {
            w: Param::new(gpu, Tensor::from_slice(gpu, &[inputs, outputs], w)?)?,
            b: Param::new(gpu, Tensor::zeros(gpu, &[outputs])?)?,
        })
    }

    /// Zero weight and zero bias: the output starts at exactly 0 (the SG model's required init).
    pub fn zeros(gpu: &Gpu, inputs: usize, outputs: usize) -> Result<Self> {
        Ok(Self {
            w: Param::new(gpu, Tensor::zeros(gpu, &[inputs, outputs])?)?,
            b: Param::new(gpu, Tensor::zeros(gpu, &[outputs])?)?,
        })
    }

    /// `y = x·W + b`.
    pub fn forward(&self, enc: &mut Encoder, x: &Tensor, y: &Tensor) -> Result<()> {
        matmul(
            enc,
            x,
            &self.w.value,
            y,
            Matmul::default().bias(&self.b.value),
        )?;
        Ok(())
    }

    /// Overwrites the parameter gradients with those of `dy` at input `x`.
    pub fn backward_params(&self, enc: &mut Encoder, x: &Tensor, dy: &Tensor) -> Result<()> {
        matmul(enc, x, dy, &self.w.grad, Matmul::default().ta())?;
        col_sum(enc, dy, &self.b.grad, 1.0, 0.0)?;
        Ok(())
    }

    /// `dx = dy·Wᵀ`, or `dx += dy·Wᵀ` with `accumulate`.
    pub fn backward_input(
        &self,
        enc: &mut Encoder,
        dy: &Tensor,
        dx: &Tensor,
        accumulate: bool,
    ) -> Result<()> {
        let mut o = Matmul::default().tb();
        if accumulate {
            o = o.accumulate(1.0);
        }
        matmul(enc, dy, &self.w.value, dx, o)?;
        Ok(())
    }
}
