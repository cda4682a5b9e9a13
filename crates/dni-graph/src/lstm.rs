//! The LSTM's parameters, shared by the recurrent trainer and the two-timescale system: input and
//! recurrent weights and the gate bias, laid out as the LSTM kernels read them (gates `[i, f, g, o]`
//! along the `4H` axis).

use dni_kernels::ops::lstm::{LstmGrads, LstmParams};
use dni_kernels::ops::optim::Param;
use dni_kernels::{Gpu, Tensor};

/// One LSTM core's parameters: `w_x [input, 4H]`, `w_h [H, 4H]`, `bias [4H]`.
pub(crate) struct LstmCore {
    pub(crate) w_x: Param,
    pub(crate) w_h: Param,
    pub(crate) bias: Param,
}

impl LstmCore {
    /// Weights uniform in `±1/√hidden`, drawn by `uniform(n, bound)` (`w_x` first, then `w_h`, so
    /// each trainer keeps its own generator and its recorded initial weights), and the forget
    /// gate's bias at 1.
    pub(crate) fn new(
        gpu: &Gpu,
        input: usize,
        hidden: usize,
        uniform: &mut dyn FnMut(usize, f32) -> Vec<f32>,
    ) -> dni_kernels::Result<Self> {
        let (i, h) = (input, hidden);
        let bound = 1.0 / (h as f32).sqrt();
        let w_x = uniform(i * 4 * h, bound);
        let w_h = uniform(h * 4 * h, bound);
        let mut bias = vec![0.0; 4 * h];
        bias[h..2 * h].fill(1.0);
        Ok(Self {
            w_x: Param::new(gpu, Tensor::from_slice(gpu, &[i, 4 * h], &w_x)?)?,
            w_h: Param::new(gpu, Tensor::from_slice(gpu, &[h, 4 * h], &w_h)?)?,
            bias: Param::new(gpu, Tensor::from_slice(gpu, &[4 * h], &bias)?)?,
        })
    }

    /// The values, as the LSTM kernels take them.
    pub(crate) fn params(&self) -> LstmParams<'_> {
        LstmParams {
            w_x: &self.w_x.value,
            w_h: &self.w_h.value,
            bias: &self.bias.value,
        }
    }

    /// The gradient buffers, as the LSTM backward kernels write them.
    pub(crate) fn grads(&self) -> LstmGrads<'_> {
        LstmGrads {
            dw_x: &self.w_x.grad,
            dw_h: &self.w_h.grad,
            dbias: &self.bias.grad,
        }
    }

    /// The three parameters, for an optimiser step.
    pub(crate) fn param_list(&self) -> [&Param; 3] {
        [&self.w_x, &self.w_h, &self.bias]
    }
}
