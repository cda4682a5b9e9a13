//! A linear map `y = x·W + b` with its parameters: readouts, linear synthetic-gradient models, the
//! aux head. Shared by the recurrent trainer and the two-timescale system.

use dni_kernels::ops::matmul::{matmul, Matmul};
use dni_kernels::ops::optim::Param;
use dni_kernels::ops::reduce::col_sum;
use dni_kernels::{Encoder, Gpu, Result, Tensor};
use dni_tasks::Rng;

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

    /// Weights uniform in `±1/√inputs`, zero bias.
    pub fn uniform(gpu: &Gpu, rng: &mut Rng, inputs: usize, outputs: usize) -> Result<Self> {
        let bound = 1.0 / (inputs as f32).sqrt();
        let w: Vec<f32> = (0..inputs * outputs)
            .map(|_| rng.uniform_range(-bound, bound))
            .collect();
        Self::new(gpu, inputs, outputs, &w)
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
        )
    }

    /// Overwrites the parameter gradients with those of `dy` at input `x`.
    pub fn backward_params(&self, enc: &mut Encoder, x: &Tensor, dy: &Tensor) -> Result<()> {
        matmul(enc, x, dy, &self.w.grad, Matmul::default().ta())?;
        col_sum(enc, dy, &self.b.grad, 1.0, 0.0)
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
        matmul(enc, dy, &self.w.value, dx, o)
    }

    pub fn params(&self) -> [&Param; 2] {
        [&self.w, &self.b]
    }
}
