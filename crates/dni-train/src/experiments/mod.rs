//! The experiments behind `dni-train train`.

pub mod charlm;
pub mod copy;
pub mod mnist;
pub mod sweep;
pub mod two_timescale;

use crate::config::{Config, Task};
use crate::progress::Progress;
use crate::run_dir::RunDir;

/// Runs the experiment `cfg` describes, logging into `run_dir`; returns the summary fields.
pub fn run(
    cfg: &Config,
    run_dir: &mut RunDir,
    progress: &mut Progress,
) -> anyhow::Result<serde_json::Value> {
    match cfg.task {
        Task::Copy | Task::RepeatCopy => {
            let gpu = crate::commands::open_gpu(cfg.run.backend)?;
            progress.println(&format!("adapter: {}", gpu.adapter()));
            copy::run(&gpu, cfg, run_dir, progress)
        }
        Task::Charlm => {
            let gpu = crate::commands::open_gpu(cfg.run.backend)?;
            progress.println(&format!("adapter: {}", gpu.adapter()));
            charlm::run(&gpu, cfg, run_dir, progress)
        }
        Task::Mnist => {
            let gpu = crate::commands::open_gpu(cfg.run.backend)?;
            progress.println(&format!("adapter: {}", gpu.adapter()));
            mnist::run(&gpu, cfg, run_dir, progress)
        }
        Task::TwoTimescale => {
            let gpu = crate::commands::open_gpu(cfg.run.backend)?;
            progress.println(&format!("adapter: {}", gpu.adapter()));
            two_timescale::run(&gpu, cfg, run_dir, progress)
        }
    }
}
