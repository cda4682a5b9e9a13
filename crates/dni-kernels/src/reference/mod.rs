//! CPU references for every kernel: plain loops, written to be obviously right rather than fast.
//! Tests compare the GPU kernels against these.

pub mod batchnorm;
pub mod elementwise;
pub mod loss;
pub mod lstm;
pub mod matmul;
pub mod optim;
