//! The experiments behind `dni-train train`.

use crate::config::Config;
use crate::progress::Progress;
use crate::run_dir::RunDir;

/// Runs the experiment `cfg` describes, logging into `run_dir`; returns the summary fields.
pub fn run(
    cfg: &Config,
    run_dir: &mut RunDir,
    progress: &mut Progress,
) -> anyhow::Result<serde_json::Value> {
    let _ = (run_dir, progress);
    anyhow::bail!("training task {:?} is not yet built", cfg.task.name())
}
