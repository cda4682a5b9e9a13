//! Feed-forward training steps: W2 (docs/WORKLOADS.md) and the paper's 4-layer FCN under the three
//! schedules of dni-graph, locked backprop on one thread, locked backprop with a thread per block,
//! and decoupled (cDNI, DNI) with a thread per block. One sample is a `train` call of a few steps
//! followed by a read-back of the output block's metrics, so the device has finished; the figure is
//! the median over samples after warm-up, per step. The threaded rows also give the command
//! buffers submitted and the times a block waited for another one, per step.

use std::time::Instant;

use dni_graph::ff::{FfNet, FfSpec, Schedule, SgSpec, StepStats};
use dni_kernels::bench::median;
use dni_kernels::ops::optim::OptimConfig;
use dni_kernels::testing::Lcg;
use dni_kernels::Gpu;

use super::bench_rows::BenchRow;

/// W2 and the FCN rows. `quick`: 1 warm-up sample and 5 samples, else 2 and 7.
pub fn run(gpu: &Gpu, quick: bool) -> anyhow::Result<Vec<BenchRow>> {
    let (warmup, samples) = if quick { (1, 5) } else { (2, 7) };
    let mut rows = Vec::new();

    // W2: MLP 784→256→256→256→10, ReLU, softmax cross-entropy, batch 256, plain SGD; one step per
    // sample, as the workload is defined.
    let w2 = FfSpec::new(
        784,
        FfSpec::mlp_blocks(&[256; 3], false, 1)?,
        10,
        256,
        OptimConfig::sgd(0.01, 0.0),
    );
    let (row, _) = time_steps(
        gpu,
        "W2",
        "backprop, single-thread",
        w2,
        Schedule::SingleThread,
        1,
        warmup,
        samples,
    )?;
    rows.push(row);

    // The FCN of paper 3.3: 4 hidden layers of 256 with batch norm, batch 256, Adam.
    let fcn = || FfSpec::backprop(784, vec![256; 4], 10, 256, OptimConfig::adam(3e-4));
    let per_sample = if quick { 4 } else { 8 };
    let mut variants: Vec<(&str, FfSpec, Schedule)> = vec![
        ("backprop, single-thread", fcn(), Schedule::SingleThread),
        ("backprop, thread per block", fcn(), Schedule::Threaded),
        (
            "cDNI (linear SG), single-thread",
            fcn().dni(SgSpec::linear(true)),
            Schedule::SingleThread,
        ),
        (
            "cDNI (linear SG), thread per block",
            fcn().dni(SgSpec::linear(true)),
            Schedule::Threaded,
        ),
    ];
    if !quick {
        variants.push((
            "DNI (SG MLP 1024x2), thread per block",
            fcn().dni(SgSpec::mlp(vec![1024, 1024], false)),
            Schedule::Threaded,
        ));
    }
    for (name, spec, schedule) in variants {
        let (mut row, stats) = time_steps(
            gpu,
            "FCN 4x256 BN",
            name,
            spec,
            schedule,
            per_sample,
            warmup,
            samples,
        )?;
        row.variant = format!(
            "{name} ({:.1} submissions/step, {:.1} waits/step: {} input, {} gradient, {} ring over {} steps)",
            stats.submissions_per_step(),
            stats.host_waits_per_step(),
            stats.waits_input,
            stats.waits_grad,
            stats.waits_ring,
            stats.steps
        );
        rows.push(row);
    }
    Ok(rows)
}

/// Median ms per step of `steps` training steps per sample on fixed random batches, with the
/// counters summed over the timed samples.
#[allow(clippy::too_many_arguments)]
fn time_steps(
    gpu: &Gpu,
    workload: &str,
    variant: &str,
    spec: FfSpec,
    schedule: Schedule,
    steps: u64,
    warmup: usize,
    samples: usize,
) -> anyhow::Result<(BenchRow, StepStats)> {
    let batch = spec.batch;
    let (input, classes) = (spec.input, spec.classes);
    let mut net = FfNet::new(gpu, spec)?;
    let mut rng = Lcg::new(23);
    let batches: Vec<(Vec<f32>, Vec<u32>)> = (0..4)
        .map(|_| {
            let x = (0..batch * input).map(|_| 0.5 + 0.5 * rng.sym()).collect();
            let y = (0..batch)
                .map(|_| (rng.next_u64() % classes as u64) as u32)
                .collect();
            (x, y)
        })
        .collect();
    let mut k = 0usize;
    let mut source = |x: &mut Vec<f32>, y: &mut Vec<u32>| {
        let (bx, by) = &batches[k % batches.len()];
        k += 1;
        x.clone_from(bx);
        y.clone_from(by);
    };
    let mut secs = Vec::with_capacity(samples);
    let mut stats = StepStats::default();
    for i in 0..warmup + samples {
        let t0 = Instant::now();
        let s = net.train(steps, &mut source, schedule)?;
        net.finish()?;
        if i >= warmup {
            secs.push(t0.elapsed().as_secs_f64() / steps as f64);
            stats.add(&s);
        }
    }
    let s = median(secs);
    Ok((
        BenchRow {
            workload: workload.to_string(),
            variant: variant.to_string(),
            ms_per_step: s * 1e3,
            per_sec: batch as f64 / s,
            unit: "samples/s",
            ..BenchRow::default()
        },
        stats,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quick bench produces W2 and the four FCN rows with sane figures. Slow on lavapipe
    /// (about a minute): `cargo test -p dni-train bench_ff -- --ignored`.
    #[test]
    #[ignore]
    fn quick_bench_rows() {
        let gpu = dni_kernels::testing::gpu();
        let rows = run(&gpu, true).unwrap();
        for r in &rows {
            eprintln!(
                "| {} | {} | {:.2} | {:.0} {} |",
                r.workload, r.variant, r.ms_per_step, r.per_sec, r.unit
            );
        }
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[0].workload, "W2");
        for r in &rows {
            assert!(r.ms_per_step.is_finite() && r.ms_per_step > 0.0, "{r:?}");
            assert!(
                (r.per_sec * r.ms_per_step / 1e3 - 256.0).abs() < 1e-6,
                "{r:?}"
            );
        }
        // The locked threaded schedule waits for true gradients; the decoupled one never does.
        assert!(
            !rows[2].variant.contains(" 0 gradient"),
            "{}",
            rows[2].variant
        );
        assert!(
            rows[4].variant.contains(" 0 gradient"),
            "{}",
            rows[4].variant
        );
    }
}
