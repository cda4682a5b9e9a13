//! The experiments behind `dni-train train`.

pub mod charlm;
pub mod copy;
pub mod mnist;
pub mod mnist_sweep;
pub mod sweep;
pub mod two_timescale;

use anyhow::Context;
use dni_kernels::Gpu;
use serde::Serialize;

use crate::checkpoint::RunControl;
use crate::config::{Config, Task};
use crate::progress::Progress;
use crate::run_dir::RunDir;

/// One experiment of `dni-train train`: how it trains from a [`Config`], what it logs per record
/// and what it ends with. Every task implements it, and [`run`] is the one run skeleton around it
/// (the adapter line, the records into `metrics.jsonl`, the closing line, the summary).
pub trait Experiment {
    /// One `metrics.jsonl` line.
    type Record: Serialize;
    /// The run's summary (`summary.json`).
    type Outcome: Serialize;

    /// Trains per `cfg`, calling `on_log` with every record, with checkpoints, resume, interrupts
    /// and divergence checks per `control`.
    fn train_with(
        gpu: &Gpu,
        cfg: &Config,
        progress: &mut Progress,
        control: &mut RunControl,
        on_log: &mut dyn FnMut(&Self::Record) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self::Outcome>;

    /// The closing line on the terminal.
    fn summary_line(outcome: &Self::Outcome) -> String;

    /// [`train_with`](Self::train_with) without checkpoints or interrupts (tests, sweeps).
    fn train(
        gpu: &Gpu,
        cfg: &Config,
        progress: &mut Progress,
        on_log: &mut dyn FnMut(&Self::Record) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self::Outcome> {
        Self::train_with(gpu, cfg, progress, &mut RunControl::none(), on_log)
    }
}

/// Runs experiment `E` per `cfg` on `gpu`, logging into `run_dir`; returns the summary fields.
fn run_experiment<E: Experiment>(
    gpu: &Gpu,
    cfg: &Config,
    run_dir: &mut RunDir,
    progress: &mut Progress,
    control: &mut RunControl,
) -> anyhow::Result<serde_json::Value> {
    progress.println(&format!("adapter: {}", gpu.adapter()));
    let outcome = E::train_with(gpu, cfg, progress, control, &mut |rec| run_dir.log(rec))?;
    progress.println(&E::summary_line(&outcome));
    serde_json::to_value(&outcome).context("serialising the summary")
}

/// Runs the experiment `cfg` describes, logging into `run_dir`; returns the summary fields.
pub fn run(
    cfg: &Config,
    run_dir: &mut RunDir,
    progress: &mut Progress,
    control: &mut RunControl,
) -> anyhow::Result<serde_json::Value> {
    let gpu = crate::commands::open_gpu(cfg.run.backend)?;
    let run = match cfg.task {
        Task::Copy | Task::RepeatCopy => run_experiment::<copy::CopyExperiment>,
        Task::Charlm => run_experiment::<charlm::CharLmExperiment>,
        Task::Mnist => run_experiment::<mnist::MnistExperiment>,
        Task::TwoTimescale => run_experiment::<two_timescale::TimescaleExperiment>,
    };
    run(&gpu, cfg, run_dir, progress, control)
}

/// Whether the task writes checkpoints, resumes and stops cleanly on Ctrl-C / SIGTERM.
pub fn checkpoints(task: Task) -> bool {
    matches!(
        task,
        Task::Copy | Task::RepeatCopy | Task::Charlm | Task::TwoTimescale | Task::Mnist
    )
}

/// Whether the task's loop stops cleanly on Ctrl-C / SIGTERM (all of them; MNIST at its next
/// logging point, the two-timescale task at its next block).
pub fn stops_on_signals(task: Task) -> bool {
    checkpoints(task) || matches!(task, Task::Mnist | Task::TwoTimescale)
}
