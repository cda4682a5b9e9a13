//! The one linear map of the crate, `y = x·W (+ c·Wc) (+ b)`, with its parameters: the readouts,
//! the synthetic-gradient models, the aux head and every Linear layer of a feed-forward
//! [`Stack`](crate::layers::Stack).
//!
//! The bias is a type parameter so that the many users that always have one read `lin.b` as a
//! [`Param`], while a feed-forward layer followed by batch norm (which cancels a bias) has none.

use dni_kernels::ops::matmul::{matmul, Matmul};
use dni_kernels::ops::optim::Param;
use dni_kernels::ops::reduce::col_sum;
use dni_kernels::{Encoder, Gpu, Result, Tensor};
use dni_tasks::Rng;

/// A bias that is always there ([`Param`]) or optional (`Option<Param>`). Sealed: those two are
/// the only kinds.
pub trait Bias: sealed::Sealed {
    fn param(&self) -> Option<&Param>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for dni_kernels::ops::optim::Param {}
    impl Sealed for Option<dni_kernels::ops::optim::Param> {}
}

impl Bias for Param {
    fn param(&self) -> Option<&Param> {
        Some(self)
    }
}

impl Bias for Option<Param> {
    fn param(&self) -> Option<&Param> {
        self.as_ref()
    }
}

/// A linear map's initial weights, row-major `[inputs, outputs]`, uniform in `±1/√inputs` from
/// `rng`: [`Linear::uniform`]'s, and the fused recurrent kernels' readout. A count that cannot be
/// addressed is an error.
pub fn uniform_weights(rng: &mut Rng, inputs: usize, outputs: usize) -> Result<Vec<f32>> {
    let Some(n) = inputs.checked_mul(outputs) else {
        return Err(dni_kernels::Error::Shape {
            op: "uniform_weights",
            detail: format!("inputs {inputs} × outputs {outputs} weights cannot be addressed"),
        });
    };
    let bound = 1.0 / (inputs as f32).sqrt();
    Ok(rng.symmetric(n, bound))
}

/// `y = x·W (+ c·Wc) (+ b)`; see the module docs.
pub struct Linear<B: Bias = Param> {
    /// `[in, out]`.
    pub w: Param,
    /// `[out]`.
    pub b: B,
    /// `[context, out]`: a second input mixed in without concatenating it (cDNI's one-hot label).
    pub wc: Option<Param>,
}

impl Linear {
    /// Weights from `w` (row-major `[inputs, outputs]`), zero bias.
    pub fn new(gpu: &Gpu, inputs: usize, outputs: usize, w: &[f32]) -> Result<Self> {
        Ok(Self {
            w: Param::new(gpu, Tensor::from_slice(gpu, &[inputs, outputs], w)?)?,
            b: Param::new(gpu, Tensor::zeros(gpu, &[outputs])?)?,
            wc: None,
        })
    }

    /// Weights of [`uniform_weights`], zero bias.
    pub fn uniform(gpu: &Gpu, rng: &mut Rng, inputs: usize, outputs: usize) -> Result<Self> {
        Self::new(
            gpu,
            inputs,
            outputs,
            &uniform_weights(rng, inputs, outputs)?,
        )
    }

    /// Zero weight and zero bias: the output starts at exactly 0 (the SG model's required init).
    pub fn zeros(gpu: &Gpu, inputs: usize, outputs: usize) -> Result<Self> {
        Ok(Self {
            w: Param::new(gpu, Tensor::zeros(gpu, &[inputs, outputs])?)?,
            b: Param::new(gpu, Tensor::zeros(gpu, &[outputs])?)?,
            wc: None,
        })
    }

    pub fn params(&self) -> [&Param; 2] {
        [&self.w, &self.b]
    }
}

impl Linear<Option<Param>> {
    /// A feed-forward layer: `W`, then `Wc` when `context > 0`, then `b` when `bias`, drawn in that
    /// order uniform in `±1/√(inputs + context)` — or all exactly zero with `zero_init` (an SG
    /// model's output layer).
    pub fn layer(
        gpu: &Gpu,
        uniform: &mut dyn FnMut(usize, f32) -> Vec<f32>,
        inputs: usize,
        context: usize,
        outputs: usize,
        bias: bool,
        zero_init: bool,
    ) -> Result<Self> {
        let bound = 1.0 / ((inputs + context) as f32).sqrt();
        let mut param = |shape: &[usize]| -> Result<Param> {
            let n = shape.iter().product();
            let v: Vec<f32> = if zero_init {
                vec![0.0; n]
            } else {
                uniform(n, bound)
            };
            Param::new(gpu, Tensor::from_slice(gpu, shape, &v)?)
        };
        let w = param(&[inputs, outputs])?;
        let wc = if context > 0 {
            Some(param(&[context, outputs])?)
        } else {
            None
        };
        let b = if bias { Some(param(&[outputs])?) } else { None };
        Ok(Self { w, b, wc })
    }
}

impl<B: Bias> Linear<B> {
    /// `y = x·W (+ b)`.
    pub fn forward(&self, enc: &mut Encoder, x: &Tensor, y: &Tensor) -> Result<()> {
        let mut o = Matmul::default();
        if let Some(b) = self.b.param() {
            o = o.bias(&b.value);
        }
        matmul(enc, x, &self.w.value, y, o)
    }

    /// `y = x·W (+ c·Wc) (+ b)`: the context term only when the layer has `Wc` and `c` is given.
    pub fn forward_ctx(
        &self,
        enc: &mut Encoder,
        x: &Tensor,
        c: Option<&Tensor>,
        y: &Tensor,
    ) -> Result<()> {
        self.forward(enc, x, y)?;
        if let (Some(wc), Some(c)) = (&self.wc, c) {
            matmul(enc, c, &wc.value, y, Matmul::default().accumulate(1.0))?;
        }
        Ok(())
    }

    /// Overwrites the parameter gradients with those of `dy` at input `x`.
    pub fn backward_params(&self, enc: &mut Encoder, x: &Tensor, dy: &Tensor) -> Result<()> {
        self.backward_params_ctx(enc, x, None, dy)
    }

    /// [`Linear::backward_params`] with the context input `c` (for `Wc`'s gradient).
    pub fn backward_params_ctx(
        &self,
        enc: &mut Encoder,
        x: &Tensor,
        c: Option<&Tensor>,
        dy: &Tensor,
    ) -> Result<()> {
        matmul(enc, x, dy, &self.w.grad, Matmul::default().ta())?;
        if let (Some(wc), Some(c)) = (&self.wc, c) {
            matmul(enc, c, dy, &wc.grad, Matmul::default().ta())?;
        }
        if let Some(b) = self.b.param() {
            col_sum(enc, dy, &b.grad, 1.0, 0.0)?;
        }
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
        matmul(enc, dy, &self.w.value, dx, o)
    }

    /// Every parameter with its name suffix, in checkpoint order: `w`, `wc`, `b`.
    pub fn named_params(&self) -> Vec<(&'static str, &Param)> {
        let mut v = vec![("w", &self.w)];
        if let Some(wc) = &self.wc {
            v.push(("wc", wc));
        }
        if let Some(b) = self.b.param() {
            v.push(("b", b));
        }
        v
    }
}
