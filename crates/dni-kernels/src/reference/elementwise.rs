//! Reference activations, their derivatives and reductions.

use crate::ops::elementwise::Activation;

pub fn act(a: Activation, x: f32) -> f32 {
    match a {
        Activation::Identity => x,
        Activation::Relu => x.max(0.0),
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
    }
}

/// Derivative in terms of the output `y = act(x)`.
pub fn act_grad_from_output(a: Activation, y: f32) -> f32 {
    match a {
        Activation::Identity => 1.0,
        Activation::Relu => {
            if y > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Activation::Tanh => 1.0 - y * y,
        Activation::Sigmoid => y * (1.0 - y),
    }
}

/// Column sums of a `rows x cols` matrix.
pub fn col_sum(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; cols];
    for i in 0..rows {
        for j in 0..cols {
            out[j] += x[i * cols + j];
        }
    }
    out
}

/// `x` of shape `[a, b, c]` with its two leading axes swapped: `[b, a, c]`.
pub fn swap_leading(x: &[f32], a: usize, b: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; a * b * c];
    for i in 0..a {
        for j in 0..b {
            let (src, dst) = ((i * b + j) * c, (j * a + i) * c);
            out[dst..dst + c].copy_from_slice(&x[src..src + c]);
        }
    }
    out
}
