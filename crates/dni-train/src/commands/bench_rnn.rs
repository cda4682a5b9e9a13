//! Whole recurrent training steps (docs/WORKLOADS.md W3 and W4), BPTT and DNI side by side: one
//! sample is one `train_window` (upload, forward, loss, SG, backward, SGD update) followed by a
//! one-scalar read-back, so the device has finished; the median of the samples after warm-up.

use std::time::Instant;

use dni_graph::recurrent::{Method, OutputLoss, RecurrentConfig, RecurrentTrainer};
use dni_kernels::bench::median;
use dni_kernels::ops::optim::OptimConfig;
use dni_kernels::testing::Lcg;
use dni_kernels::Gpu;

use super::bench_rows::BenchRow;

/// W3 (T = 5 and 20) and W4, each with BPTT and DNI. `quick`: one warm-up and 5 samples, else 2 and 9.
pub fn run(gpu: &Gpu, quick: bool) -> anyhow::Result<Vec<BenchRow>> {
    let (warmup, samples) = if quick { (1, 5) } else { (2, 9) };
    let mut rows = Vec::new();
    for t in [5, 20] {
        for method in [Method::Bptt, Method::dni()] {
            let cfg = RecurrentConfig {
                input: 10,
                hidden: 256,
                output: 10,
                batch: 16,
                t,
                loss: OutputLoss::SigmoidBits,
                method,
                optim: OptimConfig::sgd(0.1, 0.9),
                sg_optim: None,
                seed: 1,
            };
            rows.push(time_steps(gpu, &format!("W3 T={t}"), cfg, warmup, samples)?);
        }
    }
    for method in [Method::Bptt, Method::dni()] {
        let cfg = RecurrentConfig {
            input: 50,
            hidden: 1024,
            output: 50,
            batch: 32,
            t: 20,
            loss: OutputLoss::Softmax,
            method,
            optim: OptimConfig::sgd(0.1, 0.9),
            sg_optim: None,
            seed: 1,
        };
        rows.push(time_steps(gpu, "W4", cfg, warmup, samples)?);
    }
    Ok(rows)
}

fn time_steps(
    gpu: &Gpu,
    workload: &str,
    cfg: RecurrentConfig,
    warmup: usize,
    samples: usize,
) -> anyhow::Result<BenchRow> {
    let (t, b) = (cfg.t, cfg.batch);
    let tokens = (t * b) as f64;
    let variant = cfg.method.name().to_string();
    let mut rng = Lcg::new(17);
    let mut trainer = RecurrentTrainer::new(gpu, cfg.clone())?;
    let mut secs = Vec::with_capacity(samples);
    match cfg.loss {
        OutputLoss::SigmoidBits => {
            let n = t * b * cfg.input;
            let bits = |rng: &mut Lcg| -> Vec<f32> {
                (0..n).map(|_| (rng.next_u64() & 1) as f32).collect()
            };
            let (x, y, mask) = (
                bits(&mut rng),
                bits(&mut rng),
                vec![1.0; t * b * cfg.output],
            );
            for i in 0..warmup + samples {
                let t0 = Instant::now();
                trainer.train_window(&x, &y, &mask)?;
                trainer.finish()?;
                if i >= warmup {
                    secs.push(t0.elapsed().as_secs_f64());
                }
            }
        }
        OutputLoss::Softmax => {
            let ids = |rng: &mut Lcg| -> Vec<u32> {
                (0..t * b)
                    .map(|_| (rng.next_u64() % cfg.input as u64) as u32)
                    .collect()
            };
            let (x, y) = (ids(&mut rng), ids(&mut rng));
            for i in 0..warmup + samples {
                let t0 = Instant::now();
                trainer.train_window_tokens(&x, &y)?;
                trainer.finish()?;
                if i >= warmup {
                    secs.push(t0.elapsed().as_secs_f64());
                }
            }
        }
    }
    let s = median(secs);
    Ok(BenchRow {
        workload: workload.to_string(),
        variant,
        ms_per_step: s * 1e3,
        per_sec: tokens / s,
        unit: "tokens/s",
    })
}
