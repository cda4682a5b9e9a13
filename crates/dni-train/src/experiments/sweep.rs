//! `dni-train sweep`: a grid of truncation lengths × methods (× seeds) on a Copy / Repeat Copy config,
//! all under the config's one step budget, summarised as the paper's Table 1 (largest episode length
//! solved). Every T's cells (all methods and seeds) train as one run group: on the fused kernels one
//! set of dispatches per window trains all of them.

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
    /// Seeds per cell: the config's seed, seed + 1, ...
    pub seeds: u64,
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
    if opts.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    let base = Config::load(config, overrides)?;
    if base.task.copy_kind().is_none() {
        bail!(
            "{}: sweep runs the copy tasks (task = \"copy\" or \"repeat_copy\"), not {:?}",
            config.display(),
            base.task.name()
        );
    }
    // Every cell's config loads (and validates) before the first one trains. One group per T.
    let mut groups: Vec<(usize, Vec<Config>)> = Vec::new();
    for &t in &opts.ts {
        let mut cells = Vec::new();
        for method in &opts.methods {
            for s in 0..opts.seeds {
                let mut o = overrides.clone();
                o.set.push(format!("rnn.T={t}"));
                o.set.push(format!("rnn.method={method}"));
                let mut cfg = Config::load(config, &o)
                    .with_context(|| format!("sweep cell method {method}, T = {t}"))?;
                cfg.seed = cfg
                    .seed
                    .checked_add(s)
                    .context("seed + --seeds overflows a u64")?;
                cells.push(cfg);
            }
        }
        groups.push((t, cells));
    }
    let runs: usize = groups.iter().map(|(_, g)| g.len()).sum();
    let mut dir_cfg = base.clone();
    dir_cfg.run.name = Some(format!("sweep-{}", base.task.name()));
    let mut run_dir = RunDir::create(&dir_cfg)?;
    let gpu = crate::commands::open_gpu(base.run.backend)?;
    let rnn = base
        .rnn
        .as_ref()
        .context("the copy tasks need an [rnn] section")?;
    eprintln!(
        "sweep: {runs} runs of {} steps each ({} seed(s) per cell, one run group per T), hidden {}, batch {}",
        rnn.steps, opts.seeds, rnn.hidden, rnn.batch
    );
    eprintln!("adapter: {}", gpu.adapter());
    eprintln!("results in {}", run_dir.path().display());

    let mut results: Vec<CopyOutcome> = Vec::new();
    let mut curves: Vec<crate::plot::SweepRun> = Vec::new();
    for (t, cells) in &groups {
        let title = format!("T={t}: {} runs", cells.len());
        let mut progress = Progress::with_mode(&title, base.steps(), Mode::Quiet);
        let mut records: Vec<Vec<serde_json::Value>> = vec![Vec::new(); cells.len()];
        let outcomes = copy::train_group(&gpu, cells, &mut progress, |k, rec| {
            records[k].push(serde_json::to_value(rec)?);
            Ok(())
        })
        .with_context(|| format!("sweep group {title}"))?;
        for (outcome, recs) in outcomes.iter().zip(records) {
            curves.push(crate::plot::SweepRun {
                method: outcome.method.to_string(),
                t: outcome.t,
                seed: outcome.seed,
                largest_solved: outcome.largest_solved,
                records: recs,
            });
        }
        for outcome in outcomes {
            eprintln!(
                "{} T={} seed {}: {} (whole group)",
                outcome.method,
                outcome.t,
                outcome.seed,
                outcome.summary_line()
            );
            run_dir.log(&Cell { outcome: &outcome })?;
            results.push(outcome);
        }
    }

    let table = table(&base, &opts.ts, &opts.methods, &results);
    println!("{table}");
    std::fs::write(run_dir.file("table.md"), &table)
        .with_context(|| format!("cannot write {}", run_dir.file("table.md").display()))?;
    let charts = crate::plot::sweep_charts(run_dir.path(), base.task.name(), &curves)
        .context("drawing the sweep's charts")?;
    eprintln!(
        "charts: {}",
        charts
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    run_dir.write_summary(serde_json::json!({
        "task": base.task.name(),
        "adapter": gpu.adapter().to_string(),
        "step_budget": rnn.steps,
        "seeds": opts.seeds,
        "hidden": rnn.hidden,
        "batch": rnn.batch,
        "table": table,
        "runs": results,
    }))?;
    Ok(())
}

/// Largest episode length solved, one row per method, one column per T; with several seeds the
/// mean and the range over seeds ("–" counts as 0 in the mean; a cell where no seed solved
/// anything stays "–").
fn table(base: &Config, ts: &[usize], methods: &[String], results: &[CopyOutcome]) -> String {
    let seeds: std::collections::BTreeSet<u64> = results.iter().map(|r| r.seed).collect();
    let mut s = format!(
        "Largest {} episode length solved within {} steps (one step = one window of T steps){}\n\n| method |",
        base.task.name(),
        base.steps(),
        if seeds.len() > 1 {
            format!("; mean (min–max) over {} seeds", seeds.len())
        } else {
            String::new()
        }
    );
    for t in ts {
        s.push_str(&format!(" T={t} |"));
    }
    s.push_str("\n|---|");
    s.push_str(&"---|".repeat(ts.len()));
    s.push('\n');
    for m in methods {
        s.push_str(&format!("| {m} |"));
        for &t in ts {
            let solved: Vec<Option<usize>> = results
                .iter()
                .filter(|r| r.method == m.as_str() && r.t == t)
                .map(|r| r.largest_solved)
                .collect();
            s.push_str(&format!(" {} |", cell(&solved)));
        }
        s.push('\n');
    }
    s
}

fn cell(solved: &[Option<usize>]) -> String {
    let values: Vec<usize> = solved.iter().map(|v| v.unwrap_or(0)).collect();
    match values.as_slice() {
        [] => String::new(),
        _ if solved.iter().all(Option::is_none) => "–".to_string(),
        [one] => one.to_string(),
        many => {
            let mean = many.iter().sum::<usize>() as f64 / many.len() as f64;
            let (lo, hi) = (
                many.iter().min().unwrap_or(&0),
                many.iter().max().unwrap_or(&0),
            );
            format!("{mean:.1} ({lo}–{hi})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(method: &'static str, t: usize, solved: Option<usize>) -> CopyOutcome {
        outcome_seed(method, t, 1, solved)
    }

    fn outcome_seed(
        method: &'static str,
        t: usize,
        seed: u64,
        solved: Option<usize>,
    ) -> CopyOutcome {
        CopyOutcome {
            task: "copy",
            method,
            t,
            seed,
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

    fn copy_config() -> Config {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        Config::load_with_base(
            &root.join("configs/copy.toml"),
            &Overrides::default(),
            &root,
        )
        .unwrap()
    }

    #[test]
    fn table_has_a_row_per_method_and_a_column_per_t() {
        let base = copy_config();
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

    #[test]
    fn several_seeds_give_mean_and_range() {
        let base = copy_config();
        let results = [
            outcome_seed("dni", 5, 1, Some(6)),
            outcome_seed("dni", 5, 2, Some(9)),
            outcome_seed("dni", 5, 3, None),
            outcome_seed("bptt", 5, 1, None),
            outcome_seed("bptt", 5, 2, None),
            outcome_seed("bptt", 5, 3, None),
        ];
        let methods = ["bptt".to_string(), "dni".to_string()];
        let t = table(&base, &[5], &methods, &results);
        assert!(t.contains("mean (min–max) over 3 seeds"), "{t}");
        assert!(t.contains("| bptt | – |\n| dni | 5.0 (0–9) |\n"), "{t}");
    }
}
