//! The crate's one LSTM piece: parameters, the workspace of one truncated-BPTT window, and the
//! state `[h | c]` carried from one window to the next. The recurrent trainer's per-step path and
//! both networks of the two-timescale system are built from it, and a user composes it with a
//! [`Linear`](crate::linear::Linear) readout and an [`SgInterface`](crate::sg::SgInterface) on its
//! state to train a recurrent model of their own with DNI (`examples/sg_on_lstm.rs`). Its initial
//! values ([`LstmInit`]) also start the fused recurrent kernels' runs and the feed-forward stacks'
//! LSTM layers ([`LayerSpec::Lstm`](crate::layers::LayerSpec::Lstm), which read each row as a
//! sequence from a zero state and keep no state between batches).
//!
//! One window of `steps` steps over `batch` streams:
//!
//! 1. [`forward`](Lstm::forward) from the carried state gives `h_1..h_T` ([`h_rows`](Lstm::h_rows))
//!    and the window's last state ([`last_state`](Lstm::last_state));
//! 2. [`backward`](Lstm::backward) takes the loss gradient at every output and, optionally, a
//!    gradient at the last state (the synthetic gradient; `None` is plain truncated BPTT). It writes
//!    the parameters' gradients and returns the gradient at the window's first state (the
//!    bootstrapped target of the SG the previous window used at its end);
//! 3. the caller updates [`params`](Lstm::params) with its optimiser;
//! 4. [`carry`](Lstm::carry) makes the last state the next window's first: the state is never reset
//!    unless the caller [`reset`](Lstm::reset)s it.
//!
//! Gates are `[i, f, g, o]` along the `4H` axis, as the LSTM kernels read them.

use dni_kernels::ops::lstm::{LstmGrads, LstmParams, LstmWindow};
use dni_kernels::ops::optim::Param;
use dni_kernels::{Encoder, Gpu, Tensor};
use dni_tasks::Rng;

use crate::error::Result;

/// An LSTM layer over windows of `steps` steps of `batch` streams, with its carried state.
pub struct Lstm {
    /// `[input, 4H]`.
    w_x: Param,
    /// `[H, 4H]`.
    w_h: Param,
    /// `[4H]`.
    bias: Param,
    window: LstmWindow,
    /// `[B, 2H]` = `[h | c]`: where the next window starts.
    state: Tensor,
    /// `[B, 2H]`: the gradient at the last backward's first state.
    ds0: Tensor,
}

/// An LSTM's initial parameter values on the host: what [`Lstm::new`] uploads, and what the
/// recurrent trainer's fused kernels pack for each of their runs, so that both paths start from
/// the same weights for the same seed.
#[derive(Clone, Debug, PartialEq)]
pub struct LstmInit {
    /// `[input, 4H]`.
    pub w_x: Vec<f32>,
    /// `[H, 4H]`.
    pub w_h: Vec<f32>,
    /// `[4H]`.
    pub bias: Vec<f32>,
}

impl LstmInit {
    /// Weights uniform in `±1/√hidden` from `rng` (`w_x`, then `w_h`), the forget gate's bias at 1
    /// (so that the cell state is kept until the gates learn otherwise), the others at 0. Sizes
    /// whose weight counts cannot be addressed are an error.
    pub fn draw(rng: &mut Rng, input: usize, hidden: usize) -> Result<Self> {
        Self::draw_with(&mut |n, bound| rng.symmetric(n, bound), input, hidden)
    }

    /// [`draw`](Self::draw) with the weights from `uniform(n, bound)` (`n` values uniform in
    /// `±bound`): a feed-forward stack's generator, for its LSTM layers.
    pub fn draw_with(
        uniform: &mut dyn FnMut(usize, f32) -> Vec<f32>,
        input: usize,
        hidden: usize,
    ) -> Result<Self> {
        let (i, h) = (input, hidden);
        let h4 = h.checked_mul(4);
        let (Some(n_x), Some(n_h)) = (
            h4.and_then(|h4| i.checked_mul(h4)),
            h4.and_then(|h4| h.checked_mul(h4)),
        ) else {
            return Err(crate::Error::shape(
                "LstmInit::draw",
                format!("input {i} and hidden {h}: (input + hidden)·4·hidden weights cannot be addressed"),
            ));
        };
        let bound = 1.0 / (h as f32).sqrt();
        let w_x = uniform(n_x, bound);
        let w_h = uniform(n_h, bound);
        let mut bias = vec![0.0; 4 * h];
        bias[h..2 * h].fill(1.0);
        Ok(Self { w_x, w_h, bias })
    }

    /// The values by name, as [`Lstm::params`] names them.
    pub fn named(&self) -> [(&'static str, &[f32]); 3] {
        [("w_x", &self.w_x), ("w_h", &self.w_h), ("bias", &self.bias)]
    }
}

impl Lstm {
    /// The initial values of [`LstmInit::draw`]; the carried state at zero.
    pub fn new(
        gpu: &Gpu,
        input: usize,
        hidden: usize,
        batch: usize,
        steps: usize,
        rng: &mut Rng,
    ) -> Result<Self> {
        // Checked first, so that bad sizes are an error and not a huge allocation.
        let window = LstmWindow::new(gpu, input, hidden, batch, steps)?;
        let (i, h) = (input, hidden);
        let init = LstmInit::draw(rng, i, h)?;
        Ok(Self {
            w_x: Param::new(gpu, Tensor::from_slice(gpu, &[i, 4 * h], &init.w_x)?)?,
            w_h: Param::new(gpu, Tensor::from_slice(gpu, &[h, 4 * h], &init.w_h)?)?,
            bias: Param::new(gpu, Tensor::from_slice(gpu, &[4 * h], &init.bias)?)?,
            window,
            state: Tensor::zeros(gpu, &[batch, 2 * h])?,
            ds0: Tensor::zeros(gpu, &[batch, 2 * h])?,
        })
    }

    pub fn input(&self) -> usize {
        self.window.input()
    }
    pub fn hidden(&self) -> usize {
        self.window.hidden()
    }
    pub fn batch(&self) -> usize {
        self.window.batch()
    }
    pub fn steps(&self) -> usize {
        self.window.steps()
    }

    /// Records the window's forward over `x` `[T, B, input]` from the carried state.
    pub fn forward(&self, enc: &mut Encoder, x: &Tensor) -> Result<()> {
        self.forward_from(enc, x, &self.state)
    }

    /// Records the window's forward from another state `s0` `[B, 2H]` (an evaluation's, say); the
    /// carried state is untouched. [`backward`](Self::backward) may follow either forward.
    pub fn forward_from(&self, enc: &mut Encoder, x: &Tensor, s0: &Tensor) -> Result<()> {
        Ok(self.window.forward(enc, self.values(), x, s0)?)
    }

    /// The window's outputs `h_1..h_T`, `[T, B, H]`.
    pub fn h_seq(&self) -> &Tensor {
        self.window.h_seq()
    }

    /// The window's outputs as `[T·B, H]` rows (a readout's input).
    pub fn h_rows(&self) -> Result<Tensor> {
        let (t, b, h) = (self.steps(), self.batch(), self.hidden());
        Ok(self.window.h_seq().reshape(&[t * b, h])?)
    }

    /// Cell states `c_0..c_T`, `[T+1, B, H]`.
    pub fn c_seq(&self) -> &Tensor {
        self.window.c_seq()
    }

    /// The state after the window's last step, `[B, 2H]` = `[h | c]`: where a synthetic gradient
    /// is evaluated.
    pub fn last_state(&self) -> &Tensor {
        self.window.s_last()
    }

    /// The carried state `[B, 2H]`: the first state of the next [`forward`](Self::forward).
    pub fn state(&self) -> &Tensor {
        &self.state
    }

    /// Records the backward through the window last run forward over `x`: `dh_rows` `[T·B, H]` is the
    /// loss gradient at every output, `ds_last` `[B, 2H]` the gradient arriving at the last state
    /// (`None`: zero, plain truncated BPTT), `dx` `[T, B, input]` receives the input's gradient if
    /// given. Overwrites the parameters' gradients and returns the gradient at the window's first
    /// state, `[B, 2H]`.
    pub fn backward(
        &self,
        enc: &mut Encoder,
        x: &Tensor,
        dh_rows: &Tensor,
        ds_last: Option<&Tensor>,
        dx: Option<&Tensor>,
    ) -> Result<&Tensor> {
        self.backward_into(enc, x, dh_rows, ds_last, self.grads(), &self.ds0, dx)?;
        Ok(&self.ds0)
    }

    /// [`backward`](Self::backward) into gradient buffers of the caller's (a second pass whose
    /// parameter gradients are scratch).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_into(
        &self,
        enc: &mut Encoder,
        x: &Tensor,
        dh_rows: &Tensor,
        ds_last: Option<&Tensor>,
        grads: LstmGrads,
        ds0: &Tensor,
        dx: Option<&Tensor>,
    ) -> Result<()> {
        Ok(self.window.backward(
            enc,
            self.values(),
            x,
            &self.state,
            dh_rows,
            ds_last,
            grads,
            ds0,
            dx,
        )?)
    }

    /// The gradient at the first state of the last [`backward`](Self::backward).
    pub fn first_state_grad(&self) -> &Tensor {
        &self.ds0
    }

    /// Records: the window's last state becomes the carried state.
    pub fn carry(&self, enc: &mut Encoder) -> Result<()> {
        Ok(enc.copy(self.window.s_last(), &self.state)?)
    }

    /// Records: the carried state becomes `h = c = 0`.
    pub fn reset(&self, enc: &mut Encoder) {
        enc.clear(&self.state);
    }

    /// The parameters by name: `w_x`, `w_h`, `bias`.
    pub fn params(&self) -> [(&'static str, &Param); 3] {
        [("w_x", &self.w_x), ("w_h", &self.w_h), ("bias", &self.bias)]
    }

    /// The parameters, for an optimiser step.
    pub fn param_list(&self) -> [&Param; 3] {
        [&self.w_x, &self.w_h, &self.bias]
    }

    /// The values, as the LSTM kernels take them.
    pub(crate) fn values(&self) -> LstmParams<'_> {
        LstmParams {
            w_x: &self.w_x.value,
            w_h: &self.w_h.value,
            bias: &self.bias.value,
        }
    }

    fn grads(&self) -> LstmGrads<'_> {
        LstmGrads {
            dw_x: &self.w_x.grad,
            dw_h: &self.w_h.grad,
            dbias: &self.bias.grad,
        }
    }
}
