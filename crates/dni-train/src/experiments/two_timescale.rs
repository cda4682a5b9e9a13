//! Two networks at two timescales (paper 3.2, Fig. 5): A counts odd digits every `T` steps of an
//! MNIST stream, B counts threes every `T²` steps from A's messages; trained end to end (`e2e`), with
//! a synthetic gradient on the A→B message (`dni`), or decoupled without one (`nodni`). The result is
//! both networks' test accuracy over the course of training, at the same step budget.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use dni_graph::timescale::{DigitBlock, DigitStream, Evaluation, TimescaleConfig, TwoTimescale};
use dni_kernels::Gpu;
use dni_tasks::Mnist;
use serde::Serialize;

use super::Experiment;
use crate::checkpoint::{self, Checkpoint, Poll, RunControl};
use crate::config::{Config, Section, Validator};
use crate::progress::{Metrics as Shown, Progress};

/// `[timescale]`: the two-timescale MNIST system (paper 3.2), the library's own settings.
pub use dni_graph::timescale::TimescaleSettings;

impl Section for TimescaleSettings {
    fn check(&self, v: &mut Validator, base: &Path) {
        let ts = self;
        v.check_f32("timescale.lr", ts.lr);
        v.check_f32("timescale.sg_scale", ts.sg_scale);
        if let Some(lr) = ts.sg_lr {
            v.check_f32("timescale.sg_lr", lr);
        }
        if !base.join(&ts.data_dir).is_dir() {
            v.check(
                false,
                "timescale.data_dir",
                format!("{:?}", ts.data_dir.display().to_string()),
                &format!(
                    "no such directory (relative paths start at {}); it must hold the four MNIST IDX files",
                    base.display()
                ),
            );
        }
        // The system's and the run's own limits, as the library states them, by key.
        v.check_library("timescale", ts.problems(), |field| field);
    }
}

/// Test accuracies whose first crossing the summary reports, as `steps to reach`.
const MILESTONES: [f64; 6] = [0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// Offset of the test stream's seed from the run's, so test digits differ from the training order.
const TEST_SEED: u64 = 0x7E57;

/// One `metrics.jsonl` record: training scores every `run.log_every` steps (`split` = "train"),
/// test scores every `timescale.eval_every` steps and at the end (`split` = "test").
#[derive(Debug, Serialize)]
pub struct TimescaleRecord {
    /// Steps of the digit stream so far.
    pub step: u64,
    pub split: &'static str,
    /// Updates of A so far (T per block decoupled, 1 end to end).
    pub a_updates: u64,
    pub wall_s: f64,
    /// Accuracy and cross-entropy (nats) of A's answers (odd digits in T steps).
    pub a_accuracy: Option<f64>,
    pub a_loss: Option<f64>,
    /// Accuracy and cross-entropy of B's answers (threes in T² steps).
    pub b_accuracy: Option<f64>,
    pub b_loss: Option<f64>,
    /// SG regression loss per block and the fraction of B's message gradient it explains (dni).
    pub sg_loss: Option<f64>,
    pub sg_explained: Option<f64>,
    /// The link's probe on the last block before the record (dni): the cosine between the SGs A
    /// was given and B's true gradients for the same messages, and the fraction of them explained.
    pub probe_cosine: Option<f64>,
    pub probe_explained: Option<f64>,
}

/// How a run ended.
#[derive(Clone, Debug, Serialize)]
pub struct TimescaleOutcome {
    pub task: &'static str,
    pub method: &'static str,
    #[serde(rename = "T")]
    pub t: usize,
    pub hidden: usize,
    pub batch: usize,
    pub steps: u64,
    pub a_updates: u64,
    pub b_updates: u64,
    /// Test accuracies at the end.
    pub final_a_accuracy: Option<f64>,
    pub final_b_accuracy: Option<f64>,
    /// The step at which the test accuracy first reached each milestone (absent: never).
    pub a_steps_to: BTreeMap<String, u64>,
    pub b_steps_to: BTreeMap<String, u64>,
    /// Every evaluation: `[step, A accuracy, B accuracy]`.
    pub test_curve: Vec<(u64, f64, f64)>,
    /// Accuracy of always answering the most frequent count on the test digits: what chance is.
    pub a_majority_accuracy: f64,
    pub b_majority_accuracy: f64,
    /// The link probe's cosine at the last training record (dni; see [`TimescaleRecord`]).
    pub final_probe_cosine: Option<f64>,
    pub wall_clock_s: f64,
    pub adapter: String,
}

/// This task as an [`Experiment`].
pub struct TimescaleExperiment;

impl Experiment for TimescaleExperiment {
    type Record = TimescaleRecord;
    type Outcome = TimescaleOutcome;

    fn train_with(
        gpu: &Gpu,
        cfg: &Config,
        progress: &mut Progress,
        control: &mut RunControl,
        on_log: &mut dyn FnMut(&TimescaleRecord) -> anyhow::Result<()>,
    ) -> anyhow::Result<TimescaleOutcome> {
        train_with(gpu, cfg, progress, control, on_log)
    }

    fn summary_line(o: &TimescaleOutcome) -> String {
        let probe = o
            .final_probe_cosine
            .map(|c| format!(", SG·δ cosine {c:.3}"))
            .unwrap_or_default();
        format!(
            "{} T={}: test accuracy A {:.3} (chance {:.3}), B {:.3} (chance {:.3}) after {} steps \
         ({} updates of A){probe}, {:.0} s",
            o.method,
            o.t,
            o.final_a_accuracy.unwrap_or(f64::NAN),
            o.a_majority_accuracy,
            o.final_b_accuracy.unwrap_or(f64::NAN),
            o.b_majority_accuracy,
            o.steps,
            o.a_updates,
            o.wall_clock_s
        )
    }
}

/// Trains per `cfg` and calls `on_log` with every record, with checkpoints (every `run.checkpoint_every` steps, rounded to whole blocks of T²
/// steps, at the end and on an interrupt), resume, interrupts (checked before every block) and
/// divergence checks per `control`. The schedule is deterministic, so a resumed run is bit-exact.
pub fn train_with(
    gpu: &Gpu,
    cfg: &Config,
    progress: &mut Progress,
    control: &mut RunControl,
    mut on_log: impl FnMut(&TimescaleRecord) -> anyhow::Result<()>,
) -> anyhow::Result<TimescaleOutcome> {
    let ts = cfg
        .timescale
        .as_ref()
        .context("the two-timescale task needs a [timescale] section")?;
    let mnist = Mnist::load_dir(&ts.data_dir)
        .with_context(|| format!("loading MNIST from {}", ts.data_dir.display()))?;
    let mut stream = DigitStream::new(&mnist.train, ts.t, ts.batch, cfg.seed)?;
    let scfg = ts.system_config(stream.input_width(), cfg.seed);
    let method = scfg.method.name();
    let mut sys = TwoTimescale::new(gpu, scfg).context("building the two-timescale system")?;
    let block_steps = (ts.t * ts.t) as u64;
    let blocks = ts.steps.div_ceil(block_steps);
    let (a_major, b_major) = majority_accuracy(&mnist, ts, cfg.seed)?;
    let started = Instant::now();
    let mut block = DigitBlock::default();
    let mut curve = Vec::new();
    let (mut a_to, mut b_to) = (BTreeMap::new(), BTreeMap::new());
    let mut last_eval = None;
    let mut final_probe_cosine: Option<f64> = None;
    let mut done = 0u64;
    if let Some(ck) = control.take_resume() {
        done = restore(
            &mut sys,
            &mut stream,
            &mut curve,
            &mut a_to,
            &mut b_to,
            &ck,
            block_steps,
        )?;
        progress.set_step(done * block_steps);
    }
    control.bit_exact = Some(true);
    for k in done + 1..=blocks {
        let poll = control.poll((k - 1) * block_steps, || {
            snapshot(&sys, &stream, &curve, &a_to, &b_to)
        })?;
        if poll == Poll::Stop {
            break;
        }
        done = k;
        stream.next_block(&mut block);
        sys.train(&block)
            .with_context(|| format!("training block {k}"))?;
        let step = k * block_steps;
        progress.set_step(step);
        let crossed = |every: u64| step / every > (step - block_steps) / every;
        let end = k == blocks;
        if crossed(cfg.run.log_every) || end {
            let m = sys.read_metrics().context("reading the metrics back")?;
            let probe = sys.probe_sg().context("probing the synthetic gradient")?;
            let rec = TimescaleRecord {
                step,
                split: "train",
                a_updates: sys.a_updates(),
                wall_s: started.elapsed().as_secs_f64(),
                a_accuracy: m.a.accuracy(),
                a_loss: m.a.loss(),
                b_accuracy: m.b.accuracy(),
                b_loss: m.b.loss(),
                sg_loss: m.sg_loss_per_block(),
                sg_explained: m.sg_explained(),
                probe_cosine: probe.map(|p| p.cosine),
                probe_explained: probe.map(|p| p.explained),
            };
            if rec.probe_cosine.is_some() {
                final_probe_cosine = rec.probe_cosine;
            }
            let mut shown = Shown::new();
            if let (Some(a), Some(b)) = (rec.a_accuracy, rec.b_accuracy) {
                shown.push("train A", format!("{a:.3}"));
                shown.push("B", format!("{b:.3}"));
            }
            if let Some(e) = rec.sg_explained {
                shown.push("sg R²", format!("{e:.2}"));
            }
            if let Some(c) = rec.probe_cosine {
                shown.push("sg cos", format!("{c:.2}"));
            }
            if let Some(ev) = &last_eval {
                let ev: &Evaluation = ev;
                shown.push(
                    "test A",
                    format!("{:.3}", ev.a.accuracy().unwrap_or(f64::NAN)),
                );
                shown.push("B", format!("{:.3}", ev.b.accuracy().unwrap_or(f64::NAN)));
            }
            progress.update(step, &shown);
            on_log(&rec)?;
            control.check_finite(step, "a_loss", rec.a_loss)?;
            control.check_finite(step, "b_loss", rec.b_loss)?;
            control.check_finite(step, "sg_loss", rec.sg_loss)?;
        }
        if crossed(ts.eval_every) || end {
            let mut test = DigitStream::new(&mnist.test, ts.t, ts.batch, cfg.seed ^ TEST_SEED)?;
            let ev = sys
                .evaluate(ts.eval_blocks, |b| test.next_block(b))
                .context("evaluating on the test split")?;
            let (a, b) = (
                ev.a.accuracy().unwrap_or(f64::NAN),
                ev.b.accuracy().unwrap_or(f64::NAN),
            );
            curve.push((step, a, b));
            for m in MILESTONES {
                if a >= m {
                    a_to.entry(format!("{m:.1}")).or_insert(step);
                }
                if b >= m {
                    b_to.entry(format!("{m:.1}")).or_insert(step);
                }
            }
            on_log(&TimescaleRecord {
                step,
                split: "test",
                a_updates: sys.a_updates(),
                wall_s: started.elapsed().as_secs_f64(),
                a_accuracy: ev.a.accuracy(),
                a_loss: ev.a.loss(),
                b_accuracy: ev.b.accuracy(),
                b_loss: ev.b.loss(),
                sg_loss: None,
                sg_explained: None,
                probe_cosine: None,
                probe_explained: None,
            })?;
            last_eval = Some(ev);
        }
    }
    control.save(done * block_steps, || {
        snapshot(&sys, &stream, &curve, &a_to, &b_to)
    })?;
    if control.checkpoints() {
        let gpu = sys.gpu().clone();
        let params = sys
            .params()
            .into_iter()
            .map(|(n, p)| Ok((n.to_string(), gpu.read(&p.value)?)))
            .collect::<Result<Vec<_>, dni_kernels::Error>>()
            .context("reading the parameters back")?;
        control.params_sha256 = Some(checkpoint::sha256_named(params));
    }
    let last = curve.last().copied();
    Ok(TimescaleOutcome {
        task: cfg.task.name(),
        method,
        t: ts.t,
        hidden: ts.hidden,
        batch: ts.batch,
        steps: done * block_steps,
        a_updates: sys.a_updates(),
        b_updates: sys.blocks_trained(),
        final_a_accuracy: last.map(|c| c.1),
        final_b_accuracy: last.map(|c| c.2),
        a_steps_to: a_to,
        b_steps_to: b_to,
        test_curve: curve,
        a_majority_accuracy: a_major,
        b_majority_accuracy: b_major,
        final_probe_cosine,
        wall_clock_s: started.elapsed().as_secs_f64(),
        adapter: gpu.adapter().to_string(),
    })
}

/// The host part of a checkpoint: the training stream's position and the evaluations so far.
#[derive(Serialize, serde::Deserialize)]
struct HostState {
    stream: dni_tasks::EpochShuffler,
    test_curve: Vec<(u64, f64, f64)>,
    a_steps_to: BTreeMap<String, u64>,
    b_steps_to: BTreeMap<String, u64>,
}

type Snapshot = (
    serde_json::Value,
    Vec<(String, dni_graph::recurrent::StateBuf)>,
);

/// The host state and the system's buffers, for a checkpoint.
fn snapshot(
    sys: &TwoTimescale,
    stream: &DigitStream,
    curve: &[(u64, f64, f64)],
    a_to: &BTreeMap<String, u64>,
    b_to: &BTreeMap<String, u64>,
) -> anyhow::Result<Snapshot> {
    let host = HostState {
        stream: stream.shuffler().clone(),
        test_curve: curve.to_vec(),
        a_steps_to: a_to.clone(),
        b_steps_to: b_to.clone(),
    };
    let host = serde_json::json!({ "two_timescale": host });
    let state = sys
        .export_state()
        .context("reading the training state back")?;
    Ok((host, state))
}

/// Restores a checkpoint [`snapshot`] wrote; returns the blocks it had trained.
fn restore(
    sys: &mut TwoTimescale,
    stream: &mut DigitStream,
    curve: &mut Vec<(u64, f64, f64)>,
    a_to: &mut BTreeMap<String, u64>,
    b_to: &mut BTreeMap<String, u64>,
    ck: &Checkpoint,
    block_steps: u64,
) -> anyhow::Result<u64> {
    if !ck.step.is_multiple_of(block_steps) {
        anyhow::bail!(
            "the checkpoint is at step {}, not at the end of a block of {block_steps} steps",
            ck.step
        );
    }
    let host: HostState = serde_json::from_value(ck.host["two_timescale"].clone())
        .context("the checkpoint's two-timescale state does not parse")?;
    stream
        .restore_shuffler(host.stream)
        .context("the checkpoint's digit stream")?;
    sys.import_state(&ck.state)
        .context("restoring the two-timescale system")?;
    let blocks = ck.step / block_steps;
    if sys.blocks_trained() != blocks {
        anyhow::bail!(
            "the checkpoint is at step {} but its system trained {} blocks of {block_steps} steps",
            ck.step,
            sys.blocks_trained()
        );
    }
    *curve = host.test_curve;
    *a_to = host.a_steps_to;
    *b_to = host.b_steps_to;
    Ok(blocks)
}

/// Accuracy of the best constant answer for A and for B on the blocks an evaluation sees.
fn majority_accuracy(
    mnist: &Mnist,
    ts: &TimescaleSettings,
    seed: u64,
) -> anyhow::Result<(f64, f64)> {
    let mut test = DigitStream::new(&mnist.test, ts.t, ts.batch, seed ^ TEST_SEED)?;
    let mut block = DigitBlock::default();
    let (classes_a, classes_b) = TimescaleConfig::digit_counts(ts.t);
    let (mut a, mut b) = (vec![0u64; classes_a], vec![0u64; classes_b]);
    for _ in 0..ts.eval_blocks {
        test.next_block(&mut block);
        block.odd.iter().for_each(|&v| a[v as usize] += 1);
        block.threes.iter().for_each(|&v| b[v as usize] += 1);
    }
    let best = |h: &[u64]| {
        let n: u64 = h.iter().sum();
        h.iter().copied().max().unwrap_or(0) as f64 / n.max(1) as f64
    };
    Ok((best(&a), best(&b)))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Overrides;
    use crate::progress::Mode;
    use dni_graph::timescale::Method;

    fn config(sets: &[&str]) -> anyhow::Result<Config> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let o = Overrides {
            set: sets.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        Config::load_with_base(&root.join("configs/two_timescale.toml"), &o, &root)
    }

    #[test]
    fn config_maps_onto_the_system() {
        let cfg = config(&["timescale.method=nodni", "timescale.sg_lr=0.5"]).unwrap();
        let ts = cfg.timescale.as_ref().unwrap();
        let s = ts.system_config(785, 3);
        assert_eq!(s.method, Method::NoDni);
        assert_eq!(
            (s.t, s.hidden_a, s.hidden_b, s.batch),
            (ts.t, ts.hidden, ts.hidden, ts.batch)
        );
        assert_eq!(s.sg_optim.lr(), 0.5);
        let s = config(&[])
            .unwrap()
            .timescale
            .as_ref()
            .unwrap()
            .system_config(785, 3);
        // The config sets lr / 100 (the default is lr, the one rule for SG defaults).
        assert_eq!(s.sg_optim.lr(), (ts.lr / 100.0) as f32);
        assert_eq!(cfg.run_label(), format!("two_timescale-nodni-T{}", ts.t));
        let msg = format!("{:#}", config(&["timescale.method=bptt"]).unwrap_err());
        assert!(msg.contains("bptt") && msg.contains("e2e"), "{msg}");
        let msg = format!(
            "{:#}",
            config(&["timescale.T=1", "timescale.lr=0"]).unwrap_err()
        );
        assert!(msg.contains("timescale.T = 1: must be at least 2"), "{msg}");
        assert!(msg.contains("timescale.lr = 0"), "{msg}");
        let msg = format!(
            "{:#}",
            config(&[
                "timescale.method=e2e",
                "timescale.sg_conditioned=true",
                "timescale.sg_hidden=70000"
            ])
            .unwrap_err()
        );
        assert!(msg.contains("timescale.sg_conditioned = true"), "{msg}");
        assert!(msg.contains("timescale.sg_hidden = 70000"), "{msg}");
        let s = config(&["timescale.sg_conditioned=true", "timescale.sg_hidden=32"])
            .unwrap()
            .timescale
            .as_ref()
            .unwrap()
            .system_config(785, 3);
        assert!(s.sg_conditioned && s.sg_hidden == 32);
    }

    #[test]
    fn a_short_run_logs_and_summarises() {
        let gpu = dni_kernels::testing::gpu();
        let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/mnist");
        let data_dir = format!("timescale.data_dir={data}");
        let cfg = config(&[
            &data_dir,
            "timescale.T=2",
            "timescale.hidden=8",
            "timescale.batch=4",
            "timescale.steps=40",
            "timescale.eval_every=20",
            "timescale.eval_blocks=2",
            "run.log_every=8",
        ])
        .unwrap();
        let mut progress = Progress::with_mode("t", cfg.steps(), Mode::Quiet);
        let mut recs = Vec::new();
        let o = TimescaleExperiment::train(&gpu, &cfg, &mut progress, &mut |r| {
            recs.push((r.step, r.split, r.probe_cosine));
            Ok(())
        })
        .unwrap();
        assert_eq!((o.steps, o.b_updates, o.a_updates), (40, 10, 20));
        let tests: Vec<u64> = recs.iter().filter(|r| r.1 == "test").map(|r| r.0).collect();
        assert_eq!(tests, vec![20, 40]);
        let trains: Vec<_> = recs.iter().filter(|r| r.1 == "train").collect();
        assert_eq!(trains.len(), 5);
        // dni (the config's method): every training record carries the link probe.
        assert!(
            trains.iter().all(|r| r.2.is_some_and(f64::is_finite)),
            "{trains:?}"
        );
        assert_eq!(o.final_probe_cosine, trains[4].2);
        assert_eq!(o.test_curve.len(), 2);
        assert!(o.a_majority_accuracy > 0.0 && o.b_majority_accuracy > 0.0);
    }
}
