//! CPU references for every kernel: plain loops, written to be obviously right rather than fast.
//! Tests compare the GPU kernels against these.

pub mod matmul;
pub mod elementwise;
