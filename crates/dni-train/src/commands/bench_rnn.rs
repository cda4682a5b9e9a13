//! Whole recurrent training windows (docs/WORKLOADS.md W3, W4 and W5), on the fused kernels and on
//! the per-step kernels side by side, plus a run group of 12 against single runs.
//!
//! Two ways to time a window:
//! - `sync`: one sample is one `train_window` followed by a one-scalar read-back, so the device
//!   has finished (docs/WORKLOADS.md, and how the JAX peer times a step);
//! - `stream`: a sample is 50 windows submitted back to back with one read-back at the end, as a
//!   training run submits them (it reads metrics every `run.log_every` windows).

use std::time::Instant;

use dni_graph::recurrent::{
    BitWindow, Method, OutputLoss, RecurrentConfig, RecurrentTrainer, RunGroup, StepPath,
};
use dni_kernels::bench::median;
use dni_kernels::ops::optim::OptimConfig;
use dni_kernels::testing::Lcg;
use dni_kernels::Gpu;

use super::bench_rows::BenchRow;

/// Windows per `stream` sample.
const STREAM: usize = 50;

/// The Copy main job's window (configs/copy.toml): W5.
fn w5(method: Method) -> RecurrentConfig {
    RecurrentConfig {
        input: 10,
        hidden: 64,
        output: 10,
        batch: 16,
        t: 5,
        loss: OutputLoss::SigmoidBits,
        method,
        optim: OptimConfig::adam(3e-3),
        sg_optim: Some(OptimConfig::adam(3e-4)),
        clip: None,
        sg: Default::default(),
        seed: 1,
    }
}

fn w3(method: Method, t: usize) -> RecurrentConfig {
    RecurrentConfig {
        input: 10,
        hidden: 256,
        output: 10,
        batch: 16,
        t,
        loss: OutputLoss::SigmoidBits,
        method,
        optim: OptimConfig::sgd(0.1, 0.9),
        sg_optim: None,
        clip: None,
        sg: Default::default(),
        seed: 1,
    }
}

fn w4(method: Method) -> RecurrentConfig {
    RecurrentConfig {
        input: 50,
        hidden: 1024,
        output: 50,
        batch: 32,
        t: 20,
        loss: OutputLoss::Softmax,
        method,
        optim: OptimConfig::sgd(0.1, 0.9),
        sg_optim: None,
        clip: None,
        sg: Default::default(),
        seed: 1,
    }
}

fn path_name(p: StepPath) -> &'static str {
    match p {
        StepPath::FusedCached => "fused-cached",
        StepPath::FusedStreaming => "fused-streaming",
        StepPath::Fused => "fused",
        StepPath::PerStep => "per-step",
        StepPath::Auto => "auto",
    }
}

/// Random bit data for a `SigmoidBits` config, or token ids for a softmax one.
struct Data {
    x: Vec<f32>,
    y: Vec<f32>,
    mask: Vec<f32>,
    ids_x: Vec<u32>,
    ids_y: Vec<u32>,
}

impl Data {
    fn new(cfg: &RecurrentConfig) -> Self {
        let mut rng = Lcg::new(17);
        let tb = cfg.t * cfg.batch;
        let mut bits =
            |n: usize| -> Vec<f32> { (0..n).map(|_| (rng.next_u64() & 1) as f32).collect() };
        let (x, y) = (bits(tb * cfg.input), bits(tb * cfg.output));
        let mut rng = Lcg::new(18);
        let mut ids = |n: usize| -> Vec<u32> {
            (0..tb)
                .map(|_| (rng.next_u64() % n as u64) as u32)
                .collect()
        };
        Self {
            x,
            y,
            mask: vec![1.0; tb * cfg.output],
            ids_x: ids(cfg.input),
            ids_y: ids(cfg.output),
        }
    }

    fn train(&self, tr: &mut RecurrentTrainer) -> anyhow::Result<()> {
        match tr.config().loss {
            OutputLoss::SigmoidBits => tr.train_window(&self.x, &self.y, &self.mask)?,
            OutputLoss::Softmax => tr.train_window_tokens(&self.ids_x, &self.ids_y)?,
        }
        Ok(())
    }
}

/// Median seconds per window of `per_sample` windows then a read-back, after `warmup` samples.
fn time_windows(
    warmup: usize,
    samples: usize,
    per_sample: usize,
    mut window: impl FnMut() -> anyhow::Result<()>,
    mut finish: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let mut secs = Vec::with_capacity(samples);
    for i in 0..warmup + samples {
        let t0 = Instant::now();
        for _ in 0..per_sample {
            window()?;
        }
        finish()?;
        if i >= warmup {
            secs.push(t0.elapsed().as_secs_f64() / per_sample as f64);
        }
    }
    Ok(median(secs))
}

fn single(
    gpu: &Gpu,
    workload: &str,
    cfg: RecurrentConfig,
    path: StepPath,
    stream: bool,
    samples: usize,
) -> anyhow::Result<BenchRow> {
    let data = Data::new(&cfg);
    let tokens = (cfg.t * cfg.batch) as f64;
    let method = cfg.method.name();
    let mut tr = RecurrentTrainer::with_path(gpu, cfg, path)?;
    let variant = format!("{method}-{}", path_name(tr.path()));
    let tr = std::cell::RefCell::new(&mut tr);
    let per_sample = if stream { STREAM } else { 1 };
    let s = time_windows(
        2,
        samples,
        per_sample,
        || data.train(&mut tr.borrow_mut()),
        || tr.borrow_mut().finish().map(|_| ()).map_err(Into::into),
    )?;
    let dispatches = tr.borrow().dispatches_per_window();
    Ok(BenchRow {
        workload: workload.to_string(),
        variant,
        mode: if stream { "stream" } else { "sync" },
        ms_per_step: s * 1e3,
        per_sec: 1.0 / s,
        unit: "windows/s",
        tokens_per_sec: Some(tokens / s),
        dispatches: Some(dispatches),
        runs: 1,
    })
}

/// A group of 12 runs (BPTT, DNI and DNI + Aux × 4 seeds) of the W5 shape, streamed: aggregate
/// windows per second over all runs. On the per-step path the 12 runs train one after another
/// within each window.
fn group12(gpu: &Gpu, samples: usize, path: StepPath) -> anyhow::Result<BenchRow> {
    let cfgs: Vec<RecurrentConfig> = (0..12)
        .map(|k| {
            let method = [Method::Bptt, Method::dni(), Method::dni_aux()][k % 3];
            RecurrentConfig {
                clip: None,
                seed: 1 + k as u64 / 3,
                ..w5(method)
            }
        })
        .collect();
    let data = Data::new(&cfgs[0]);
    let mut group = RunGroup::with_path(gpu, cfgs, path)?;
    let variant = format!("group12-{}", path_name(group.path()));
    let one = BitWindow {
        inputs: &data.x,
        targets: &data.y,
        mask: &data.mask,
        next_inputs: None,
    };
    let windows = vec![one; 12];
    let group = std::cell::RefCell::new(&mut group);
    let s = time_windows(
        2,
        samples,
        STREAM,
        || {
            group
                .borrow_mut()
                .train_window(&windows)
                .map_err(Into::into)
        },
        || group.borrow_mut().finish().map(|_| ()).map_err(Into::into),
    )?;
    let dispatches = group.borrow().dispatches_per_window();
    Ok(BenchRow {
        workload: "W5".into(),
        variant,
        mode: "stream",
        ms_per_step: s * 1e3,
        per_sec: 12.0 / s,
        unit: "windows/s",
        tokens_per_sec: Some(12.0 * 80.0 / s),
        dispatches: Some(dispatches),
        runs: 12,
    })
}

/// Which recurrent workloads to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RnnWorkload {
    W3,
    W4,
    W5,
}

/// The rows of one workload. `quick`: 5 samples, else 9.
pub fn run(gpu: &Gpu, which: RnnWorkload, quick: bool) -> anyhow::Result<Vec<BenchRow>> {
    let samples = if quick { 5 } else { 9 };
    let mut rows = Vec::new();
    match which {
        RnnWorkload::W5 => {
            for method in [Method::Bptt, Method::dni()] {
                for path in [StepPath::Fused, StepPath::FusedStreaming, StepPath::PerStep] {
                    for stream in [false, true] {
                        rows.push(single(gpu, "W5", w5(method), path, stream, samples)?);
                    }
                }
            }
            rows.push(group12(gpu, samples, StepPath::Fused)?);
            rows.push(group12(gpu, samples, StepPath::PerStep)?);
        }
        RnnWorkload::W3 => {
            for t in [5, 20] {
                for method in [Method::Bptt, Method::dni()] {
                    for path in [StepPath::Fused, StepPath::PerStep] {
                        let name = format!("W3 T={t}");
                        rows.push(single(gpu, &name, w3(method, t), path, false, samples)?);
                    }
                }
            }
        }
        RnnWorkload::W4 => {
            // The path RecurrentTrainer picks by itself (on CPU adapters: per-step, since only
            // the fused kernels' streaming variant fits hidden 1024 and it is slower there).
            for method in [Method::Bptt, Method::dni()] {
                let n = if quick { 3 } else { samples };
                rows.push(single(gpu, "W4", w4(method), StepPath::Auto, false, n)?);
            }
        }
    }
    Ok(rows)
}
