//! The experiments behind `dni-train train`.

pub mod charlm;
pub mod copy;
pub mod mnist;
pub mod mnist_sweep;
pub mod sweep;
pub mod two_timescale;

use crate::checkpoint::RunControl;
use crate::config::{Config, Task};
use crate::progress::Progress;
use crate::run_dir::RunDir;

/// Runs the experiment `cfg` describes, logging into `run_dir`; returns the summary fields.
pub fn run(
    cfg: &Config,
    run_dir: &mut RunDir,
    progress: &mut Progress,
    control: &mut RunControl,
) -> anyhow::Result<serde_json::Value> {
    match cfg.task {
        Task::Copy | Task::RepeatCopy => {
            let gpu = crate::commands::open_gpu(cfg.run.backend)?;
            progress.println(&format!("adapter: {}", gpu.adapter()));
            copy::run(&gpu, cfg, run_dir, progress, control)
        }
        Task::Charlm => {
            let gpu = crate::commands::open_gpu(cfg.run.backend)?;
            progress.println(&format!("adapter: {}", gpu.adapter()));
            charlm::run(&gpu, cfg, run_dir, progress, control)
        }
        Task::Mnist => {
            let gpu = crate::commands::open_gpu(cfg.run.backend)?;
            progress.println(&format!("adapter: {}", gpu.adapter()));
            mnist::run(&gpu, cfg, run_dir, progress, control)
        }
        Task::TwoTimescale => {
            let gpu = crate::commands::open_gpu(cfg.run.backend)?;
            progress.println(&format!("adapter: {}", gpu.adapter()));
            two_timescale::run(&gpu, cfg, run_dir, progress, control)
        }
    }
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
