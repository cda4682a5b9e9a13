//! A synthetic-gradient interface for a tensor of the user's own model (the idea of the PyTorch DNI
//! library's `BackwardInterface`): the crate's one SG module, `sg::model::Synthesizer`, with the buffers of
//! one prediction, behind a public API.
//!
//! A model that produces `h` (`[rows, width]`) and would wait for `∂L/∂h` from whatever consumes `h`:
//!
//! 1. [`synthesize`](SgInterface::synthesize) records `δ̂ = M(h[, c])` in the units of that gradient
//!    (a batch-mean loss's), and the producer backpropagates `δ̂` and updates at once;
//! 2. when the true gradient `δ` arrives, [`fit`](SgInterface::fit) records one regression step of
//!    `M(h)` onto it and the model's update.
//!
//! `M` starts at exactly zero, so the first `δ̂` is 0. Internally `M` predicts one row's own
//! gradient, `rows·δ` (O(1) whatever the batch), and `δ̂` is that divided by `rows`.
//!
//! ```no_run
//! use dni_graph::sg::{SgInterface, SgInterfaceConfig};
//! use dni_kernels::{ops::optim::OptimConfig, Gpu, Tensor};
//! let gpu = Gpu::default_adapter()?;
//! let mut sg = SgInterface::new(&gpu, SgInterfaceConfig::linear(32, 64, OptimConfig::adam(1e-3)))?;
//! let h = Tensor::zeros(&gpu, &[32, 64])?; // the producer's output
//! let true_grad = Tensor::zeros(&gpu, &[32, 64])?; // ∂L/∂h, when it arrives
//! let mut enc = gpu.encoder();
//! let dh = sg.synthesize(&mut enc, &h, None)?; // backpropagate this through the producer now
//! sg.fit(&mut enc, &h, None, &true_grad)?;
//! gpu.submit(enc);
//! println!("the SG explains {:?} of the true gradient", sg.take_explained()?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use dni_kernels::ops::elementwise::scale;
use dni_kernels::ops::optim::{OptimConfig, Optimizer, Param};
use dni_kernels::{Encoder, Gpu, Tensor};
use dni_tasks::Rng;

use super::model::{SgPass, Synthesizer};
use super::SgInput;
use crate::error::{Error, Result};
use crate::layers::{LayerSpec, StackSpec};

/// The shape and training of an [`SgInterface`].
#[derive(Clone, Debug, PartialEq)]
pub struct SgInterfaceConfig {
    /// Rows of `h` (the batch).
    pub rows: usize,
    /// Features of `h`; the SG has the same width.
    pub width: usize,
    /// Width of a context the SG also reads, e.g. a one-hot label (cDNI); 0 for none.
    pub context: usize,
    /// The SG model's layers before its output Linear (which starts at exactly zero, so `M` does):
    /// empty for the paper's linear SG, `LayerSpec::hidden(w, batchnorm)` per layer of an MLP like
    /// the paper's feed-forward SG models, or any layers, your own
    /// ([`LayerSpec::Custom`]) included. With a context, the
    /// first layer must be a Linear (it reads `[h, c]`).
    pub hidden_layers: Vec<LayerSpec>,
    pub optim: OptimConfig,
    /// Global-norm clip of each of the SG model's updates (`None`: unclipped).
    pub clip: Option<f32>,
    /// Seed of the hidden layers' initial weights (the output layer starts at zero).
    pub seed: u64,
}

impl SgInterfaceConfig {
    /// A linear SG of `h` (`[rows, width]`), without context.
    pub fn linear(rows: usize, width: usize, optim: OptimConfig) -> Self {
        Self {
            rows,
            width,
            context: 0,
            hidden_layers: Vec::new(),
            optim,
            clip: None,
            seed: 1,
        }
    }
}

/// One synthetic-gradient interface: [`synthesize`](Self::synthesize) the gradient of `h` at once,
/// [`fit`](Self::fit) the SG when the true one arrives.
pub struct SgInterface {
    gpu: Gpu,
    model: Synthesizer,
    pass: SgPass,
    rows: usize,
    /// `δ̂ = M(h)/rows`, the gradient handed to the producer.
    grad: Tensor,
    /// Regression loss and the zero predictor's, summed on the GPU since the last read.
    loss: Tensor,
    zero_loss: Tensor,
}

impl SgInterface {
    pub fn new(gpu: &Gpu, cfg: SgInterfaceConfig) -> Result<Self> {
        if cfg.rows == 0 || cfg.width == 0 {
            return Err(Error::config(
                "SgInterfaceConfig rows/width",
                format!("{} x {}", cfg.rows, cfg.width),
                "h needs at least one row and one feature",
            ));
        }
        if cfg.hidden_layers.contains(&LayerSpec::BatchNorm) && cfg.rows < 2 {
            return Err(Error::config(
                "SgInterfaceConfig rows",
                cfg.rows,
                "batch norm needs at least 2 rows",
            ));
        }
        let spec =
            StackSpec::with_output(cfg.width, cfg.context, &cfg.hidden_layers, cfg.width, true);
        let mut rng = Rng::new(cfg.seed);
        let model = Synthesizer::from_stack(
            gpu,
            &spec,
            SgInput::State,
            1.0,
            cfg.rows,
            Optimizer::with_clip(gpu, cfg.optim, cfg.clip)?,
            &mut |n, bound| rng.symmetric(n, bound),
        )?;
        Ok(Self {
            gpu: gpu.clone(),
            pass: model.pass(gpu, cfg.rows)?,
            model,
            rows: cfg.rows,
            grad: Tensor::zeros(gpu, &[cfg.rows, cfg.width])?,
            loss: Tensor::zeros(gpu, &[1])?,
            zero_loss: Tensor::zeros(gpu, &[1])?,
        })
    }

    /// Records `δ̂ = M(h[, ctx])` in the units of a batch-mean loss's gradient at `h` and returns
    /// it (valid once the encoder is submitted; rewritten by the next call).
    pub fn synthesize(
        &self,
        enc: &mut Encoder,
        h: &Tensor,
        ctx: Option<&Tensor>,
    ) -> Result<&Tensor> {
        self.model.evaluate(enc, &self.pass, h, ctx)?;
        enc.copy(&self.pass.out, &self.grad)?;
        scale(enc, 1.0 / self.rows as f32, &self.grad)?;
        Ok(&self.grad)
    }

    /// Records one regression step of `M(h[, ctx])` onto `true_grad` (the gradient that arrived for
    /// the same `h`, in the units [`synthesize`](Self::synthesize) returns) and the SG's update.
    /// Evaluates `M` again, so it needs no earlier `synthesize` of this `h`.
    pub fn fit(
        &mut self,
        enc: &mut Encoder,
        h: &Tensor,
        ctx: Option<&Tensor>,
        true_grad: &Tensor,
    ) -> Result<()> {
        if true_grad.len() != self.grad.len() {
            return Err(Error::shape(
                "SgInterface::fit",
                format!(
                    "the true gradient {:?} should be {:?}, like h",
                    true_grad.shape(),
                    self.grad.shape()
                ),
            ));
        }
        self.model.evaluate(enc, &self.pass, h, ctx)?;
        let inv_rows = 1.0 / self.rows as f32;
        self.model.regress(
            enc,
            &self.pass,
            h,
            ctx,
            true_grad,
            self.rows as f32,
            inv_rows,
            &self.loss,
            Some(&self.zero_loss),
        )?;
        self.model.step(enc, true, &[])
    }

    /// The fraction of the true gradients' energy the SG explained over the fits since the last
    /// call (`1 − ‖M − rows·δ‖² / ‖rows·δ‖²`; `None` before any fit or for all-zero targets), and
    /// resets the sums. Blocking: one read-back.
    pub fn take_explained(&mut self) -> Result<Option<f64>> {
        let v = self.gpu.read_many(&[&self.loss, &self.zero_loss])?;
        let mut enc = self.gpu.encoder();
        enc.clear(&self.loss);
        enc.clear(&self.zero_loss);
        self.gpu.submit(enc);
        Ok(super::explained(v[0][0] as f64, v[1][0] as f64))
    }

    /// The SG model's parameters by name (`l0.w`, `l0.wc`, `l0.b`, ... in layer order).
    pub fn params(&self) -> Vec<(String, &Param)> {
        let s = self.model.stack();
        s.param_names().into_iter().zip(s.params()).collect()
    }

    /// Sets the SG optimiser's learning rate.
    pub fn set_lr(&self, lr: f32) -> Result<()> {
        Ok(self.model.optimizer().set_lr(&self.gpu, lr)?)
    }
}
