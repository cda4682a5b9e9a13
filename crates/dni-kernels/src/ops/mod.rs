//! Typed kernel launchers. Each checks shapes, fetches its cached pipeline and bind group, and
//! records one or more dispatches into an [`Encoder`](crate::Encoder); nothing here waits.

pub mod batchnorm;
pub mod elementwise;
pub mod loss;
pub mod lstm;
pub mod matmul;
pub mod optim;
pub mod reduce;
pub mod rnn_step;
