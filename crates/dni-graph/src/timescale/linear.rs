//! `y = x·W + b` with its parameters: the readouts of A and B and the synthetic-gradient model.

use dni_kernels::ops::matmul::{matmul, Matmul};
use dni_kernels::ops::optim::Param;
use dni_kernels::ops::reduce::col_sum;
use dni_kernels::{Encoder, Gpu, Tensor};
use dni_tasks::Rng;

use super::error::Result;

pub(crate) struct Linear {
    /// `[in, out]`.
    pub w: Param,
    /// `[out]`.
    pub b: Param,
}

impl Linear {
    /// Weights uniform in `±1/√inputs`, zero bias.
    pub fn uniform(gpu: &Gpu, rng: &mut Rng, inputs: usize, outputs: usize) -> Result<Self> {
        let bound = 1.0 / (inputs as f32).sqrt();
        let w: Vec<f32> = (0..inputs * outputs)
            .map(|_| rng.uniform_range(-bound, bound))
            .collect();
        Ok(Self {
            w: Param::new(gpu, Tensor::from_slice(gpu, &[inputs, outputs], &w)?)?,
            b: Param::new(gpu, Tensor::zeros(gpu, &[outputs])?)?,
        })
    }

    /// Zero weight and zero bias: the synthetic-gradient model starts at exactly 0.
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

    /// `dx = dy·Wᵀ`.
    pub fn backward_input(&self, enc: &mut Encoder, dy: &Tensor, dx: &Tensor) -> Result<()> {
        matmul(enc, dy, &self.w.value, dx, Matmul::default().tb())?;
        Ok(())
    }

    pub fn params(&self) -> [&Param; 2] {
        [&self.w, &self.b]
    }
}
