//! Copy and Repeat Copy (paper 3.1, Table 1): an LSTM trained window by window on an endless task
//! stream whose curriculum lengthens the episodes each time the error averages below the threshold.
//! The result is the largest episode length solved within the step budget.

use std::time::Instant;

use anyhow::Context;
use dni_graph::recurrent::{Method, OutputLoss, RecurrentConfig, RecurrentTrainer};
use dni_kernels::ops::optim::OptimConfig;
use dni_kernels::Gpu;
use dni_tasks::{copy::WIDTH, Observed, TaskStream, Window};
use serde::Serialize;

use crate::config::{Config, Optimizer, RnnConfig, RnnMethod};
use crate::progress::{Metrics as Shown, Progress};
use crate::run_dir::RunDir;

/// The trainer's configuration from `[rnn]`.
pub(crate) fn recurrent_config(
    rnn: &RnnConfig,
    input: usize,
    output: usize,
    loss: OutputLoss,
    seed: u64,
) -> RecurrentConfig {
    let sg_scale = rnn.sg_scale as f32;
    let method = match rnn.method {
        RnnMethod::Bptt => Method::Bptt,
        RnnMethod::Dni => Method::Dni { sg_scale },
        RnnMethod::DniAux => Method::DniAux {
            sg_scale,
            aux_weight: rnn.aux_weight as f32,
        },
    };
    let optim = |lr: f64| match rnn.optimizer {
        Optimizer::Adam => OptimConfig::adam(lr as f32),
        Optimizer::Sgd => OptimConfig::sgd(lr as f32, rnn.momentum as f32),
    };
    RecurrentConfig {
        input,
        hidden: rnn.hidden,
        output,
        batch: rnn.batch,
        t: rnn.t,
        loss,
        method,
        optim: optim(rnn.lr),
        sg_optim: Some(optim(rnn.sg_lr())),
        seed,
    }
}

/// One `metrics.jsonl` record, written every `run.log_every` steps.
#[derive(Debug, Serialize)]
pub struct CopyRecord {
    pub step: u64,
    pub wall_s: f64,
    /// Curriculum level the stream plays now, e.g. `N=4`.
    pub level: String,
    pub n: usize,
    pub r: usize,
    /// Largest episode length solved so far (the paper's metric).
    pub largest_solved: Option<usize>,
    /// Wrong bits per output character over the windows since the last record.
    pub bits_per_char: Option<f64>,
    /// Masked cross-entropy in nats per output character.
    pub loss_per_char: Option<f64>,
    pub output_chars: u64,
    /// What the curriculum did with this interval: counted, advanced, or ignored (it still held
    /// episodes of an earlier level).
    pub curriculum: &'static str,
    /// SG regression loss per trained window, and the fraction of its target it explains.
    pub sg_loss: Option<f64>,
    pub sg_explained: Option<f64>,
    pub aux_loss: Option<f64>,
}

/// How a Copy run ended.
#[derive(Clone, Debug, Serialize)]
pub struct CopyOutcome {
    pub task: &'static str,
    pub method: &'static str,
    #[serde(rename = "T")]
    pub t: usize,
    pub hidden: usize,
    pub batch: usize,
    /// The paper's metric: the largest episode length solved (`N + 3`, or `N·R + 3`).
    pub largest_solved: Option<usize>,
    /// Level being played when the run ended.
    pub final_level: String,
    /// Bits error per output character of the last logged interval.
    pub final_bits_per_char: Option<f64>,
    pub steps: u64,
    pub step_budget: u64,
    /// True when the curriculum passed `copy.max_n` and the run stopped early.
    pub reached_max_n: bool,
    pub wall_clock_s: f64,
    pub adapter: String,
}

/// Trains on Copy / Repeat Copy per `cfg` and calls `on_log` with every record; `progress` shows
/// them.
pub fn train(
    gpu: &Gpu,
    cfg: &Config,
    progress: &mut Progress,
    mut on_log: impl FnMut(&CopyRecord) -> anyhow::Result<()>,
) -> anyhow::Result<CopyOutcome> {
    let kind = cfg
        .task
        .copy_kind()
        .context("the copy experiment needs task = \"copy\" or \"repeat_copy\"")?;
    let rnn = cfg
        .rnn
        .as_ref()
        .context("the copy tasks need an [rnn] section")?;
    let copy = cfg.copy.clone().unwrap_or_default();
    let rcfg = recurrent_config(rnn, WIDTH, WIDTH, OutputLoss::SigmoidBits, cfg.seed);
    let method = rcfg.method.name();
    let mut trainer = RecurrentTrainer::new(gpu, rcfg).context("building the LSTM trainer")?;
    let mut stream = TaskStream::new(kind, rnn.batch, cfg.seed, copy.to_curriculum())
        .context("setting up the task stream")?;
    let mut window = Window::default();
    let log_every = cfg.run.log_every;
    let started = Instant::now();
    let mut first_unread = 0u64;
    let mut final_bits = None;
    let mut step = 0u64;
    while step < rnn.steps && !stream.curriculum().finished() {
        stream.next_window(rnn.t, &mut window);
        trainer
            .train_window(&window.inputs, &window.targets, &window.mask)
            .with_context(|| format!("training step {}", step + 1))?;
        step += 1;
        progress.set_step(step);
        if !step.is_multiple_of(log_every) && step != rnn.steps {
            continue;
        }
        // The read-back that drives the curriculum (the only sync of the loop).
        let m = trainer.read_metrics().context("reading the metrics back")?;
        let chars = m.scored as u64;
        let observed = stream.observe(first_unread, m.errors, chars);
        first_unread = window.index + 1;
        if m.bits_per_char().is_some() {
            final_bits = m.bits_per_char();
        }
        let cur = stream.curriculum();
        let record = CopyRecord {
            step,
            wall_s: started.elapsed().as_secs_f64(),
            level: cur.level_label(),
            n: cur.level().n,
            r: cur.level().r,
            largest_solved: cur.largest_solved(),
            bits_per_char: m.bits_per_char(),
            loss_per_char: m.loss_per_row(),
            output_chars: chars,
            curriculum: match observed {
                Observed::Counted => "counted",
                Observed::Advanced => "advanced",
                Observed::Ignored => "ignored",
            },
            sg_loss: m.sg_loss_per_window(),
            sg_explained: m.sg_explained(),
            aux_loss: m.aux_loss_per_window(),
        };
        if observed == Observed::Advanced {
            progress.println(&format!(
                "step {step}: solved episode length {} -> now {}",
                cur.largest_solved().unwrap_or(0),
                cur.level_label()
            ));
        }
        let mut shown = Shown::new();
        shown.push("level", &record.level);
        if let Some(b) = record.bits_per_char {
            shown.push("bits/char", format!("{b:.3}"));
        }
        shown.push(
            "solved",
            record
                .largest_solved
                .map_or("-".to_string(), |s| s.to_string()),
        );
        if let Some(e) = record.sg_explained {
            shown.push("sg R²", format!("{e:.2}"));
        }
        progress.update(step, &shown);
        on_log(&record)?;
    }
    let cur = stream.curriculum();
    Ok(CopyOutcome {
        task: cfg.task.name(),
        method,
        t: rnn.t,
        hidden: rnn.hidden,
        batch: rnn.batch,
        largest_solved: cur.largest_solved(),
        final_level: cur.level_label(),
        final_bits_per_char: final_bits,
        steps: step,
        step_budget: rnn.steps,
        reached_max_n: cur.finished(),
        wall_clock_s: started.elapsed().as_secs_f64(),
        adapter: gpu.adapter().to_string(),
    })
}

/// `dni-train --config configs/copy.toml`: one run with its run directory.
pub fn run(
    gpu: &Gpu,
    cfg: &Config,
    run_dir: &mut RunDir,
    progress: &mut Progress,
) -> anyhow::Result<serde_json::Value> {
    let outcome = train(gpu, cfg, progress, |rec| run_dir.log(rec))?;
    progress.println(&format!(
        "largest episode length solved: {} (level {} at the end, {:.3} bits/char, {} steps, {:.0} s)",
        outcome
            .largest_solved
            .map_or("none".to_string(), |s| s.to_string()),
        outcome.final_level,
        outcome.final_bits_per_char.unwrap_or(f64::NAN),
        outcome.steps,
        outcome.wall_clock_s
    ));
    serde_json::to_value(&outcome).context("serialising the summary")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Overrides;
    use crate::progress::Mode;

    fn config(sets: &[&str]) -> Config {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let o = Overrides {
            set: sets.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        Config::load_with_base(&root.join("configs/copy.toml"), &o, &root)
            .expect("configs/copy.toml")
    }

    #[test]
    fn recurrent_config_follows_the_rnn_section() {
        let cfg = config(&[
            "rnn.method=dni_aux",
            "rnn.aux_weight=0.5",
            "rnn.optimizer=sgd",
        ]);
        let r = recurrent_config(
            cfg.rnn.as_ref().unwrap(),
            10,
            10,
            OutputLoss::SigmoidBits,
            4,
        );
        assert_eq!(
            r.method,
            Method::DniAux {
                sg_scale: 0.1,
                aux_weight: 0.5
            }
        );
        assert_eq!(r.optim, OptimConfig::sgd(3e-3, 0.9));
        assert_eq!(r.sg_optim, Some(OptimConfig::sgd(3e-4, 0.9)));
        assert_eq!((r.hidden, r.batch, r.t, r.seed), (64, 16, 5, 4));
    }

    #[test]
    fn a_short_copy_run_logs_every_interval_and_learns() {
        let gpu = dni_kernels::testing::gpu();
        let cfg = config(&[
            "rnn.steps=600",
            "rnn.hidden=32",
            "rnn.lr=0.01",
            "run.log_every=100",
        ]);
        let mut progress = Progress::with_mode("test", 600, Mode::Quiet);
        let mut records = Vec::new();
        let out = train(&gpu, &cfg, &mut progress, |r| {
            records.push((r.step, r.bits_per_char.unwrap_or(f64::NAN), r.sg_loss));
            Ok(())
        })
        .unwrap();
        assert_eq!(out.steps, 600);
        assert_eq!(
            records.iter().map(|r| r.0).collect::<Vec<_>>(),
            [100, 200, 300, 400, 500, 600]
        );
        assert!(
            records.iter().skip(1).all(|r| r.2.is_some()),
            "DNI reports its SG loss"
        );
        let (first, last) = (records[0].1, records[5].1);
        // N = 1: an untrained model is wrong on ~4 of 9 bits per output character.
        assert!(
            first > 1.5 && last < first - 1.0,
            "bits/char {first:.3} -> {last:.3}"
        );
        assert!(out.adapter.contains(&gpu.adapter().name));
    }
}
