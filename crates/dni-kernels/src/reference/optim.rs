//! Reference optimiser steps, one parameter tensor at a time, in f64 with f32 storage.

use crate::ops::optim::OptimConfig;

/// Applies step number `t` (1-based: the count after advancing) of `cfg` to `value`, with `m` the
/// first moment (or SGD velocity) and `v` the second moment.
pub fn step(
    cfg: OptimConfig,
    t: u64,
    value: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    match cfg {
        OptimConfig::Sgd { lr, momentum } => {
            for i in 0..value.len() {
                let vel = momentum as f64 * m[i] as f64 + grad[i] as f64;
                m[i] = vel as f32;
                value[i] = (value[i] as f64 - lr as f64 * vel) as f32;
            }
        }
        OptimConfig::Adam {
            lr,
            beta1,
            beta2,
            eps,
        } => {
            let (b1, b2) = (beta1 as f64, beta2 as f64);
            let c1 = 1.0 / (1.0 - b1.powi(t as i32));
            let c2 = 1.0 / (1.0 - b2.powi(t as i32));
            for i in 0..value.len() {
                let g = grad[i] as f64;
                let mi = b1 * m[i] as f64 + (1.0 - b1) * g;
                let vi = b2 * v[i] as f64 + (1.0 - b2) * g * g;
                m[i] = mi as f32;
                v[i] = vi as f32;
                let upd = lr as f64 * mi * c1 / ((vi * c2).sqrt() + eps as f64);
                value[i] = (value[i] as f64 - upd) as f32;
            }
        }
    }
}
