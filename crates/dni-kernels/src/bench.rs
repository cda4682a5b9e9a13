//! Timing helpers behind `dni-train bench`: fixed workloads from docs/BENCHMARKS.md, each sample
//! ending in a read-back of one scalar so the device has really finished.

use std::time::Instant;

use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::matmul::{matmul, Matmul, MatmulVariant};
use crate::tensor::Tensor;

/// Median of the samples (the WORKLOADS.md convention).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Times `body` (which records work into an encoder) `samples` times after `warmup` runs; each
/// sample is one submission followed by a one-element read-back of `probe`. Returns seconds.
pub fn time_samples(
    gpu: &Gpu,
    warmup: usize,
    samples: usize,
    probe: &Tensor,
    mut body: impl FnMut(&mut crate::gpu::Encoder) -> Result<()>,
) -> Result<Vec<f64>> {
    let scalar = Tensor::zeros(gpu, &[1])?;
    let mut out = Vec::with_capacity(samples);
    for i in 0..warmup + samples {
        let t0 = Instant::now();
        let mut enc = gpu.encoder();
        body(&mut enc)?;
        enc.copy_region(probe, 0, &scalar, 0, 1)?;
        gpu.submit(enc);
        gpu.read(&scalar)?;
        if i >= warmup {
            out.push(t0.elapsed().as_secs_f64());
        }
    }
    Ok(out)
}

/// W1: GFLOP/s of a square `n x n` product (median sample).
pub fn matmul_gflops(gpu: &Gpu, n: usize, variant: MatmulVariant, samples: usize) -> Result<f64> {
    let a = Tensor::from_slice(gpu, &[n, n], &vec![0.5; n * n])?;
    let b = Tensor::from_slice(gpu, &[n, n], &vec![0.25; n * n])?;
    let c = Tensor::zeros(gpu, &[n, n])?;
    // Several products per sample at small n so the fixed submit/read-back cost does not dominate.
    let reps = (512 / n).max(1).pow(2).min(16);
    let secs = time_samples(gpu, 2, samples, &c, |enc| {
        for _ in 0..reps {
            matmul(enc, &a, &b, &c, Matmul::default().variant(variant))?;
        }
        Ok(())
    })?;
    let t = median(secs) / reps as f64;
    Ok(2.0 * (n as f64).powi(3) / t / 1e9)
}
