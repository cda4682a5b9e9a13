//! MNIST with decoupled layers (paper 3.3): an FCN of `layers` hidden layers (Linear, batch norm,
//! ReLU) trained by backprop, no backprop, DNI or cDNI, optionally with `p_update`, BP(λ) or complete
//! unlock; every layer is a block of its own. Training metrics are read back every `log_every`
//! steps, the test error every `eval_every` steps; the result is the final test error.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use dni_graph::ff::{EvalSet, FfNet, Schedule, StepStats};
use dni_kernels::Gpu;
use dni_tasks::{mnist::CLASSES, EpochShuffler, Mnist};
use serde::Serialize;

use super::Experiment;
use crate::checkpoint::{self, Checkpoint, Poll, RunControl};
use crate::config::{Config, Section, Validator};
use crate::progress::{Metrics as Shown, Progress};

/// `[mnist]`: the feed-forward MNIST experiments, the library's own settings.
pub use dni_graph::ff::MnistSettings;

impl Section for MnistSettings {
    fn check(&self, v: &mut Validator, base: &Path) {
        let m = self;
        v.check_f32("mnist.p_update", m.p_update);
        v.check_f32("mnist.lambda", m.lambda);
        if let Some(lr) = m.sg_lr {
            v.check_f32("mnist.sg_lr", lr);
        }
        if !base.join(&m.data_dir).is_dir() {
            v.check(
                false,
                "mnist.data_dir",
                format!("{:?}", m.data_dir.display().to_string()),
                &format!(
                    "no such directory (relative paths start at {}); it must hold the four MNIST IDX files",
                    base.display()
                ),
            );
        }
        // The network's and the run's own limits, as the library states them, by key.
        v.check_library("mnist", m.problems(), |field| field);
        v.check_f32_rates("mnist", m.lr, m.momentum);
    }
}

/// One `metrics.jsonl` record, written at every log and evaluation step.
#[derive(Debug, Serialize)]
pub struct MnistRecord {
    pub step: u64,
    pub wall_s: f64,
    /// Mean cross-entropy and error of the training batches since the last record (with complete
    /// unlock the output block scores its synthetic input).
    pub train_loss: Option<f64>,
    pub train_error: Option<f64>,
    pub test_error: Option<f64>,
    pub test_loss: Option<f64>,
    /// Per interface: mean per-example ½‖M(h) − batch·δ‖².
    pub sg_loss: Vec<Option<f64>>,
    /// Per block but the first (complete unlock): mean per-example ½‖I(x) − h‖².
    pub input_loss: Vec<Option<f64>>,
    /// Per interface, at a probe step (`mnist.probe_every`): cosine and explained fraction of the
    /// gradient the sender updates with against backprop's true gradient, and the SG model's own
    /// cosine (None without an SG model), on a fixed training batch.
    pub probe_cosine: Option<Vec<f64>>,
    pub probe_explained: Option<Vec<f64>>,
    pub probe_sg_cosine: Option<Vec<Option<f64>>>,
    /// Per interface: cosine of the sender's parameter gradient from the delivered gradient
    /// against backprop's (the batch's sum, where per-example label noise averages out).
    pub probe_update_cosine: Option<Vec<f64>>,
    pub ms_per_step: f64,
    pub submissions_per_step: f64,
    pub host_waits_per_step: f64,
    pub sg_staleness: f64,
}

/// The summary of a run.
#[derive(Debug, Serialize)]
pub struct MnistOutcome {
    pub task: &'static str,
    pub method: &'static str,
    pub layers: usize,
    pub hidden: usize,
    pub batch: usize,
    pub sg_model: Option<&'static str>,
    pub p_update: f64,
    pub unlock: bool,
    pub lambda: f64,
    pub schedule: &'static str,
    pub steps: u64,
    pub train_examples: usize,
    pub test_examples: usize,
    /// Test error before training and at the end.
    pub initial_test_error: f64,
    pub final_test_error: f64,
    pub best_test_error: f64,
    pub final_train_error: Option<f64>,
    pub wall_clock_s: f64,
    pub ms_per_step: f64,
    pub submissions_per_step: f64,
    pub host_waits_per_step: f64,
    pub waits_input: u64,
    pub waits_grad: u64,
    pub waits_ring: u64,
    pub gpu_waits: u64,
    pub sg_staleness: f64,
    /// The last probe's delivered-gradient and parameter-update cosines per interface (when
    /// `mnist.probe_every` > 0).
    pub final_probe_cosine: Option<Vec<f64>>,
    pub final_probe_update_cosine: Option<Vec<f64>>,
    pub adapter: String,
}

/// This task as an [`Experiment`].
pub struct MnistExperiment;

impl Experiment for MnistExperiment {
    type Record = MnistRecord;
    type Outcome = MnistOutcome;

    fn train_with(
        gpu: &Gpu,
        cfg: &Config,
        progress: &mut Progress,
        control: &mut RunControl,
        on_log: &mut dyn FnMut(&MnistRecord) -> anyhow::Result<()>,
    ) -> anyhow::Result<MnistOutcome> {
        train_with(gpu, cfg, progress, control, on_log)
    }

    fn summary_line(outcome: &MnistOutcome) -> String {
        format!(
        "test error {:.2}% after {} steps (best {:.2}%, untrained {:.2}%), {:.0} s, {:.1} ms/step",
        100.0 * outcome.final_test_error,
        outcome.steps,
        100.0 * outcome.best_test_error,
        100.0 * outcome.initial_test_error,
        outcome.wall_clock_s,
        outcome.ms_per_step
    )
    }
}

/// Trains per `cfg`, calling `on_log` with every record, with checkpoints, resume and interrupts
/// (checked at every logging or evaluation point, where the blocks' work is submitted; a
/// checkpoint is written at the first such point past each multiple of `run.checkpoint_every`, at
/// the end and on an interrupt) and divergence checks per `control`. The single-thread schedule
/// resumes bit-exactly; the threaded one resumes but is not bit-exact (`resume_bit_exact: false`).
pub fn train_with(
    gpu: &Gpu,
    cfg: &Config,
    progress: &mut Progress,
    control: &mut RunControl,
    mut on_log: impl FnMut(&MnistRecord) -> anyhow::Result<()>,
) -> anyhow::Result<MnistOutcome> {
    let m = cfg
        .mnist
        .as_ref()
        .context("task = \"mnist\" needs an [mnist] section")?;
    let data = Mnist::load_dir(&m.data_dir)
        .with_context(|| format!("loading MNIST from {}", m.data_dir.display()))?;
    let input = data.train.pixels();
    let spec = m.spec(input, CLASSES, cfg.seed);
    let mut net = FfNet::new(gpu, spec).context("building the network")?;
    let test_labels: Vec<u32> = data.test.labels.iter().map(|&l| l as u32).collect();
    let test = EvalSet::new(gpu, input, &data.test.images, &test_labels, 1000)
        .context("uploading the test set")?;
    let schedule = if m.threads {
        Schedule::Threaded
    } else {
        Schedule::SingleThread
    };
    let mut shuffler =
        EpochShuffler::new(data.train.n, m.batch, cfg.seed).context("batching the training set")?;
    let train_set = &data.train;
    // The probe's fixed batch: the first `batch` training digits, apart from the shuffled stream.
    let (mut probe_x, mut probe_y) = (Vec::new(), Vec::new());
    if m.probe_every > 0 {
        let first: Vec<usize> = (0..m.batch.min(train_set.n)).collect();
        train_set.batch(&first, &mut probe_x, &mut probe_y);
    }
    let mut last_probe: Option<Vec<f64>> = None;
    let mut last_update: Option<Vec<f64>> = None;

    let mut step = 0u64;
    let mut host = match control.take_resume() {
        Some(ck) => {
            let h = restore(&mut net, &mut shuffler, &ck)?;
            step = ck.step;
            progress.set_step(step);
            if m.threads {
                progress.println(
                    "resuming the threaded schedule: its SG regressions depend on thread timing, \
                     so the resumed run is not bit-exact (resume_bit_exact: false)",
                );
            }
            h
        }
        None => {
            let initial = net
                .evaluate(&test)
                .context("evaluating the untrained network")?;
            progress.println(&format!(
                "untrained test error {:.2}%",
                100.0 * initial.error
            ));
            HostState {
                stream: shuffler.clone(),
                initial_test_error: initial.error,
                best_test_error: initial.error,
                last_test_error: initial.error,
                last_train_error: None,
            }
        }
    };
    // The single-thread schedule is deterministic; the threaded one is not.
    control.bit_exact = Some(!m.threads);
    let log_every = cfg.run.log_every.max(1);
    let started = Instant::now();
    let mut totals = StepStats::default();
    let initial_error = host.initial_test_error;
    let (mut best, mut last_test, mut last_train) = (
        host.best_test_error,
        host.last_test_error,
        host.last_train_error,
    );
    while step < m.steps {
        host.best_test_error = best;
        host.last_test_error = last_test;
        host.last_train_error = last_train;
        if control.poll(step, || snapshot(&net, &shuffler, &host))? == Poll::Stop {
            break;
        }
        let mut source =
            |x: &mut Vec<f32>, y: &mut Vec<u32>| train_set.batch(shuffler.next_batch(), x, y);
        // Run up to the next log or evaluation point; each call ends with every block's work submitted.
        let next = [
            (step / log_every + 1) * log_every,
            (step / m.eval_every + 1) * m.eval_every,
            match m.probe_every {
                0 => m.steps,
                k => (step / k + 1) * k,
            },
            m.steps,
        ]
        .into_iter()
        .min()
        .unwrap_or(m.steps);
        let stats = net
            .train(next - step, &mut source, schedule)
            .with_context(|| format!("training steps {}..{}", step + 1, next))?;
        totals.add(&stats);
        step = next;
        progress.set_step(step);
        let log_now = step.is_multiple_of(log_every) || step == m.steps;
        let eval_now = step.is_multiple_of(m.eval_every) || step == m.steps;
        let tm = if log_now {
            Some(net.take_metrics().context("reading the metrics back")?)
        } else {
            None
        };
        let ev = if eval_now {
            Some(net.evaluate(&test).context("evaluating")?)
        } else {
            None
        };
        let probed = if m.probe_every > 0 && (step.is_multiple_of(m.probe_every) || step == m.steps)
        {
            Some(
                net.probe_sg(&probe_x, &probe_y)
                    .context("probing the synthetic gradients")?,
            )
        } else {
            None
        };
        if let Some(e) = &ev {
            best = best.min(e.error);
            last_test = e.error;
        }
        let train_error = tm.as_ref().filter(|t| t.examples > 0).map(|t| t.error);
        if train_error.is_some() {
            last_train = train_error;
        }
        let wall = started.elapsed().as_secs_f64();
        let record = MnistRecord {
            step,
            wall_s: wall,
            train_loss: tm.as_ref().filter(|t| t.examples > 0).map(|t| t.loss),
            train_error,
            test_error: ev.map(|e| e.error),
            test_loss: ev.map(|e| e.loss),
            sg_loss: tm.as_ref().map(|t| t.sg_loss.clone()).unwrap_or_default(),
            input_loss: tm
                .as_ref()
                .map(|t| t.input_loss.clone())
                .unwrap_or_default(),
            probe_cosine: probed
                .as_ref()
                .map(|p| p.iter().map(|f| f.delivered.cosine).collect()),
            probe_explained: probed
                .as_ref()
                .map(|p| p.iter().map(|f| f.delivered.explained).collect()),
            probe_sg_cosine: probed
                .as_ref()
                .map(|p| p.iter().map(|f| f.sg.map(|s| s.cosine)).collect()),
            probe_update_cosine: probed
                .as_ref()
                .map(|p| p.iter().map(|f| f.update.cosine).collect()),
            ms_per_step: 1e3 * wall / step as f64,
            submissions_per_step: totals.submissions_per_step(),
            host_waits_per_step: totals.host_waits_per_step(),
            sg_staleness: totals.mean_sg_staleness(),
        };
        let mut shown = Shown::new();
        if let (Some(l), Some(e)) = (record.train_loss, record.train_error) {
            shown.push("loss", format!("{l:.3}"));
            shown.push("train err", format!("{:.2}%", 100.0 * e));
        }
        shown.push("test err", format!("{:.2}%", 100.0 * last_test));
        if let Some(c) = &record.probe_cosine {
            last_probe = Some(c.clone());
            last_update = record.probe_update_cosine.clone();
        }
        let each = |c: &[f64]| {
            c.iter()
                .map(|v| format!("{v:.2}"))
                .collect::<Vec<_>>()
                .join("/")
        };
        if let Some(c) = &last_probe {
            shown.push("sg cos", each(c));
        }
        if let Some(c) = &last_update {
            shown.push("update cos", each(c));
        }
        progress.update(step, &shown);
        if let Some(e) = record.test_error {
            progress.println(&format!("step {step}: test error {:.2}%", 100.0 * e));
        }
        on_log(&record)?;
        control.check_finite(step, "train_loss", record.train_loss)?;
        control.check_finite(step, "test_loss", record.test_loss)?;
        for (i, l) in record.sg_loss.iter().enumerate() {
            control.check_finite(step, &format!("sg_loss[{i}]"), *l)?;
        }
    }
    host.best_test_error = best;
    host.last_test_error = last_test;
    host.last_train_error = last_train;
    control.save(step, || snapshot(&net, &shuffler, &host))?;
    if control.checkpoints() {
        control.params_sha256 = Some(params_sha256(&net)?);
    }
    let wall = started.elapsed().as_secs_f64();
    Ok(MnistOutcome {
        task: cfg.task.name(),
        method: m.method.name(),
        layers: m.layers,
        hidden: m.hidden,
        batch: m.batch,
        sg_model: m.method.uses_sg().then_some(match m.sg_is_mlp() {
            true => "mlp",
            false => "linear",
        }),
        p_update: m.p_update,
        unlock: m.unlock,
        lambda: m.lambda,
        schedule: if m.threads {
            "threaded"
        } else {
            "single-thread"
        },
        steps: step,
        train_examples: data.train.n,
        test_examples: data.test.n,
        initial_test_error: initial_error,
        final_test_error: last_test,
        best_test_error: best,
        final_train_error: last_train,
        wall_clock_s: wall,
        ms_per_step: 1e3 * wall / step.max(1) as f64,
        submissions_per_step: totals.submissions_per_step(),
        host_waits_per_step: totals.host_waits_per_step(),
        waits_input: totals.waits_input,
        waits_grad: totals.waits_grad,
        waits_ring: totals.waits_ring,
        gpu_waits: totals.gpu_waits,
        sg_staleness: totals.mean_sg_staleness(),
        final_probe_cosine: last_probe,
        final_probe_update_cosine: last_update,
        adapter: gpu.adapter().to_string(),
    })
}

/// The host part of a checkpoint: the batches' order and the evaluations so far. (Throughput
/// counters restart at a resume.)
#[derive(Serialize, serde::Deserialize)]
struct HostState {
    stream: EpochShuffler,
    initial_test_error: f64,
    best_test_error: f64,
    last_test_error: f64,
    last_train_error: Option<f64>,
}

type Snapshot = (
    serde_json::Value,
    Vec<(String, dni_graph::recurrent::StateBuf)>,
);

/// The host state and the network's buffers, for a checkpoint.
fn snapshot(net: &FfNet, shuffler: &EpochShuffler, host: &HostState) -> anyhow::Result<Snapshot> {
    let mut value = serde_json::to_value(host).context("serialising the MNIST host state")?;
    value["stream"] =
        serde_json::to_value(shuffler).context("serialising the MNIST batch order")?;
    let state = net
        .export_state()
        .context("reading the training state back")?;
    Ok((serde_json::json!({ "mnist": value }), state))
}

/// Restores a checkpoint [`snapshot`] wrote; returns its host state.
fn restore(
    net: &mut FfNet,
    shuffler: &mut EpochShuffler,
    ck: &Checkpoint,
) -> anyhow::Result<HostState> {
    let host: HostState = serde_json::from_value(ck.host["mnist"].clone())
        .context("the checkpoint's MNIST state does not parse")?;
    host.stream
        .check_restored(shuffler)
        .context("the checkpoint's batch order")?;
    net.import_state(&ck.state)
        .context("restoring the feed-forward network")?;
    if net.step() != ck.step {
        anyhow::bail!(
            "the checkpoint is at step {} but its network trained {} steps",
            ck.step,
            net.step()
        );
    }
    *shuffler = host.stream.clone();
    Ok(host)
}

/// SHA-256 of every parameter (blocks, then SG and synthetic-input models), as
/// [`checkpoint::sha256_named`] hashes them.
fn params_sha256(net: &FfNet) -> anyhow::Result<String> {
    let gpu = net.gpu().clone();
    let mut params = Vec::new();
    for i in 0..net.num_blocks() {
        for (kind, ps) in [
            ("block", net.block_params(i)),
            ("sg", net.sg_params(i)),
            ("synth", net.synth_params(i)),
        ] {
            for (n, p) in ps {
                let v = gpu.read(&p.value).context("reading the parameters back")?;
                params.push((format!("{kind}{i}.{n}"), v));
            }
        }
    }
    Ok(checkpoint::sha256_named(params))
}
