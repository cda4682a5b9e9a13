//! Two networks at two timescales (paper 3.2, Fig. 5): network A, an LSTM, reads one input per step
//! and answers every `T` steps; network B, an LSTM that ticks once every `T` steps on A's message (A's
//! hidden state at the window's last step), answers every `T` ticks. The task is the caller's: a
//! [`TaskBlock`] ([`BlockData`], or [`TwoTimescale::train_block`]'s slices) holds a block's inputs and both answers,
//! and [`TimescaleConfig`] how many classes each answer has. The paper's task, the digit stream, is
//! one such block: A reads one MNIST digit per step and counts the odd digits of its window, B counts
//! the threes of the last `T²` steps.
//!
//! [`Method`] chooses how the A→B connection is trained: [`Method::EndToEnd`] unrolls the joint
//! system `T²` steps before one update of both (A is update-locked to B); [`Method::Dni`] gives A a
//! synthetic gradient `M(message)` at once, so A updates every `T` steps, and trains `M` on B's true
//! message gradients when B updates; [`Method::NoDni`] decouples A without any gradient from B.
//! Both networks' states run on across windows and blocks; an input flag on the first step of each
//! window (A) and of each block (B) is their clock.
//!
//! ```no_run
//! use dni_graph::timescale::{DigitBlock, DigitStream, Method, TimescaleConfig, TwoTimescale};
//! use dni_kernels::{ops::optim::OptimConfig, Gpu};
//! let gpu = Gpu::default_adapter()?;
//! let mnist = dni_tasks::Mnist::load_dir("data/mnist")?;
//! let (t, batch) = (4, 32);
//! let mut stream = DigitStream::new(&mnist.train, t, batch, 1)?;
//! let (classes_a, classes_b) = TimescaleConfig::digit_counts(t);
//! let mut sys = TwoTimescale::new(&gpu, TimescaleConfig {
//!     t, input: stream.input_width(), classes_a, classes_b, hidden_a: 64, hidden_b: 64, batch,
//!     method: Method::Dni, optim: OptimConfig::adam(1e-3), sg_optim: OptimConfig::adam(1e-3),
//!     sg_scale: 1.0, sg_conditioned: false, sg_hidden: 0, seed: 1,
//! })?;
//! let mut block = DigitBlock::default();
//! for _ in 0..100 {
//!     stream.next_block(&mut block);
//!     sys.train(&block)?;
//! }
//! let m = sys.read_metrics()?;
//! println!("A {:?}, B {:?}, SG explains {:?}", m.a.accuracy(), m.b.accuracy(), m.sg_explained());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;

mod metrics;
mod settings;
mod system;

pub use crate::error::Result;
pub use config::{Method, TimescaleConfig};
pub use metrics::{Evaluation, Metrics, Scores};
pub use settings::TimescaleSettings;
// The digit stream lives with the other tasks; re-exported here, where it is used.
pub use dni_tasks::digits::{input_width, DigitBlock, DigitStream};
pub use system::TwoTimescale;

/// One block of `T²` steps of a two-timescale task, for [`TwoTimescale::train`] and
/// [`TwoTimescale::evaluate`]: A's inputs and the answers A and B must give.
pub trait TaskBlock {
    /// `[T², B, input]`, time-major.
    fn inputs(&self) -> &[f32];
    /// `[T, B]`: A's answer at the last step of each of its `T` windows (`0..classes_a`).
    fn targets_a(&self) -> &[u32];
    /// `[B]`: B's answer at the block's end (`0..classes_b`).
    fn targets_b(&self) -> &[u32];
}

/// A block of a task of your own in plain vectors: fill them, then [`TwoTimescale::train`] it (or
/// fill it in [`TwoTimescale::evaluate`]'s callback).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BlockData {
    /// `[T², B, input]`, time-major.
    pub inputs: Vec<f32>,
    /// `[T, B]`: A's answer at the last step of each of its windows.
    pub targets_a: Vec<u32>,
    /// `[B]`: B's answer at the block's end.
    pub targets_b: Vec<u32>,
}

impl BlockData {
    /// Empties the three vectors, keeping their memory, before a block is filled again.
    pub fn clear(&mut self) {
        self.inputs.clear();
        self.targets_a.clear();
        self.targets_b.clear();
    }
}

impl TaskBlock for BlockData {
    fn inputs(&self) -> &[f32] {
        &self.inputs
    }
    fn targets_a(&self) -> &[u32] {
        &self.targets_a
    }
    fn targets_b(&self) -> &[u32] {
        &self.targets_b
    }
}

/// The paper's task: A counts the odd digits of its window, B the threes of the block.
impl TaskBlock for DigitBlock {
    fn inputs(&self) -> &[f32] {
        &self.inputs
    }
    fn targets_a(&self) -> &[u32] {
        &self.odd
    }
    fn targets_b(&self) -> &[u32] {
        &self.threes
    }
}
