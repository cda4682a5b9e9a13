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
    matmul_gflops_mkn(gpu, n, n, n, variant, samples)
}

/// GFLOP/s of `[m, k]·[k, n]` (median sample), e.g. the skinny products of an LSTM step.
pub fn matmul_gflops_mkn(
    gpu: &Gpu,
    m: usize,
    k: usize,
    n: usize,
    variant: MatmulVariant,
    samples: usize,
) -> Result<f64> {
    let a = Tensor::from_slice(gpu, &[m, k], &vec![0.5; m * k])?;
    let b = Tensor::from_slice(gpu, &[k, n], &vec![0.25; k * n])?;
    let c = Tensor::zeros(gpu, &[m, n])?;
    let flop = 2.0 * m as f64 * k as f64 * n as f64;
    // Several products per sample when one is small, so the fixed submit/read-back cost does not
    // dominate: at least 2^28 flop per sample, at most 16 products.
    let reps = ((f64::from(1u32 << 28) / flop).ceil() as usize).clamp(1, 16);
    let secs = time_samples(gpu, 2, samples, &c, |enc| {
        for _ in 0..reps {
            matmul(enc, &a, &b, &c, Matmul::default().variant(variant))?;
        }
        Ok(())
    })?;
    let t = median(secs) / reps as f64;
    Ok(flop / t / 1e9)
}
