//! `dni-train sweep`: a grid of truncation lengths × methods on a Copy / Repeat Copy config, all under
//! the config's one step budget, summarised as the paper's Table 1 (largest episode length solved).

use std::path::Path;

use anyhow::{bail, Context};
use serde::Serialize;

use super::copy::{self, CopyOutcome};
use crate::config::{Config, Overrides};
use crate::progress::{Mode, Progress};
use crate::run_dir::RunDir;

/// What to sweep.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// Truncation lengths (`rnn.T`).
    pub ts: Vec<usize>,
    /// Methods as spelled in configs: `bptt`, `dni`, `dni_aux`.
    pub methods: Vec<String>,
}

#[derive(Serialize)]
struct Cell<'a> {
    #[serde(flatten)]
    outcome: &'a CopyOutcome,
}

/// Runs the grid and prints the Markdown table; everything is also written to a run directory
/// (`metrics.jsonl`: one record per finished run; `table.md`; `summary.json`).
pub fn run(config: &Path, overrides: &Overrides, opts: &SweepOptions) -> anyhow::Result<()> {
    if opts.ts.is_empty() || opts.methods.is_empty() {
        bail!("sweep needs at least one --t value and one method");
    }
    let base = Config::load(config, overrides)?;
    if base.task.copy_kind().is_none() {
        bail!(
            "{}: sweep runs the copy tasks (task = \"copy\" or \"repeat_copy\"), not {:?}",
            config.display(),
            base.task.name()
        );
    }
    // Every cell's config loads (and validates) before the first one trains.
    let mut grid = Vec::new();
    for method in &opts.methods {
        for &t in &opts.ts {
            let mut o = overrides.clone();
            o.set.push(format!("rnn.T={t}"));
            o.set.push(format!("rnn.method={method}"));
            let cfg = Config::load(config, &o)
                .with_context(|| format!("sweep cell method {method}, T = {t}"))?;
            grid.push((method.clone(), t, cfg));
        }
    }
    let mut dir_cfg = base.clone();
    dir_cfg.run.name = Some(format!("sweep-{}", base.task.name()));
    let mut run_dir = RunDir::create(&dir_cfg)?;
    let gpu = crate::commands::open_gpu(base.run.backend)?;
    let rnn = base
        .rnn
        .as_ref()
        .context("the copy tasks need an [rnn] section")?;
    eprintln!(
        "sweep: {} runs of {} steps each, hidden {}, batch {}",
        grid.len(),
        rnn.steps,
        rnn.hidden,
        rnn.batch
    );
    eprintln!("adapter: {}", gpu.adapter());
    eprintln!("results in {}", run_dir.path().display());

    let mut results: Vec<CopyOutcome> = Vec::new();
    for (method, t, cfg) in &grid {
        let title = format!("{method} T={t}");
        let mut progress = Progress::with_mode(&title, cfg.steps(), Mode::Quiet);
        let outcome = copy::train(&gpu, cfg, &mut progress, |_| Ok(()))
            .with_context(|| format!("sweep run {title}"))?;
        eprintln!(
            "{title}: largest solved {}, final level {} ({:.3} bits/char), {} steps, {:.0} s",
            outcome
                .largest_solved
                .map_or("none".to_string(), |s| s.to_string()),
            outcome.final_level,
            outcome.final_bits_per_char.unwrap_or(f64::NAN),
            outcome.steps,
            outcome.wall_clock_s
        );
        run_dir.log(&Cell { outcome: &outcome })?;
        results.push(outcome);
    }

    let table = table(&base, &opts.ts, &opts.methods, &results);
    println!("{table}");
    std::fs::write(run_dir.file("table.md"), &table)
        .with_context(|| format!("cannot write {}", run_dir.file("table.md").display()))?;
    run_dir.write_summary(serde_json::json!({
        "task": base.task.name(),
        "adapter": gpu.adapter().to_string(),
        "step_budget": rnn.steps,
        "hidden": rnn.hidden,
        "batch": rnn.batch,
        "table": table,
        "runs": results,
    }))?;
    Ok(())
}

/// Largest episode length solved, one row per method, one column per T.
fn table(base: &Config, ts: &[usize], methods: &[String], results: &[CopyOutcome]) -> String {
    let mut s = format!(
        "Largest {} episode length solved within {} steps (one step = one window of T steps)\n\n| method |",
        base.task.name(),
        base.steps()
    );
    for t in ts {
        s.push_str(&format!(" T={t} |"));
    }
    s.push_str("\n|---|");
    s.push_str(&"---|".repeat(ts.len()));
    s.push('\n');
    let mut cells = results.iter();
    for m in methods {
        s.push_str(&format!("| {m} |"));
        for _ in ts {
            let cell = cells
                .next()
                .map(|r| r.largest_solved.map_or("–".to_string(), |v| v.to_string()))
                .unwrap_or_default();
            s.push_str(&format!(" {cell} |"));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(method: &'static str, t: usize, solved: Option<usize>) -> CopyOutcome {
        CopyOutcome {
            task: "copy",
            method,
            t,
            hidden: 8,
            batch: 2,
            largest_solved: solved,
            final_level: "N=1".into(),
            final_bits_per_char: None,
            steps: 10,
            step_budget: 10,
            reached_max_n: false,
            wall_clock_s: 0.0,
            adapter: "x".into(),
        }
    }

    #[test]
    fn table_has_a_row_per_method_and_a_column_per_t() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let base = Config::load_with_base(
            &root.join("configs/copy.toml"),
            &Overrides::default(),
            &root,
        )
        .unwrap();
        let results = [
            outcome("bptt", 2, None),
            outcome("bptt", 5, Some(6)),
            outcome("dni", 2, Some(4)),
            outcome("dni", 5, Some(9)),
        ];
        let methods = ["bptt".to_string(), "dni".to_string()];
        let t = table(&base, &[2, 5], &methods, &results);
        assert!(t.contains("| method | T=2 | T=5 |\n|---|---|---|\n"), "{t}");
        assert!(t.contains("| bptt | – | 6 |\n| dni | 4 | 9 |\n"), "{t}");
        assert!(t.contains(&format!("within {} steps", base.steps())), "{t}");
    }
}
