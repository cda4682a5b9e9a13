//! Recurrent DNI (paper 2.1, 3.1): an LSTM core run continuously over `B` streams, trained with
//! truncated BPTT over windows of `T` steps, optionally bridged across window boundaries by a
//! synthetic gradient (DNI) and the auxiliary future-SG prediction task (DNI + Aux).
//!
//! The method is configuration ([`Method`]), not a separate code path: BPTT injects nothing at the
//! window's end, DNI injects `sg_scale·M(s_last)`, DNI + Aux also trains a head that predicts that SG
//! from the window's first step. Whether the SG is applied and whether it is trained are independent
//! switches ([`RecurrentTrainer::set_sg_apply`], [`RecurrentTrainer::set_sg_train`]).
//!
//! ```no_run
//! use dni_graph::recurrent::{Method, OutputLoss, RecurrentConfig, RecurrentTrainer};
//! use dni_kernels::{ops::optim::OptimConfig, Gpu};
//! let gpu = Gpu::default_adapter()?;
//! let mut tr = RecurrentTrainer::new(&gpu, RecurrentConfig {
//!     input: 10, hidden: 64, output: 10, batch: 16, t: 5,
//!     loss: OutputLoss::SigmoidBits, method: Method::dni(),
//!     optim: OptimConfig::adam(1e-3), sg_optim: Some(OptimConfig::adam(1e-4)), clip: None,
//!     sg: Default::default(), seed: 1,
//! })?;
//! let (x, y, m) = (vec![0.0; 5 * 16 * 10], vec![0.0; 5 * 16 * 10], vec![0.0; 5 * 16 * 10]);
//! for _ in 0..100 {
//!     tr.train_window(&x, &y, &m)?;
//! }
//! let metrics = tr.read_metrics()?;
//! println!("bits/char {:?}, SG explains {:?}", metrics.bits_per_char(), metrics.sg_explained());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod error;

mod fused;
mod group;
mod metrics;
mod per_step;
mod settings;
mod trainer;

pub use crate::error::Result;
pub use config::{Method, OutputLoss, RecurrentConfig};
pub use fused::fused_unavailable;
pub use group::{runs_mismatch, BitWindow, RunGroup, StateBuf, StepPath, TokenWindow};
pub use metrics::{EvalResult, Metrics};
pub use settings::{MethodKind, RecurrentSettings};
pub use trainer::RecurrentTrainer;
