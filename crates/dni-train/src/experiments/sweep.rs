//! `dni-train sweep`: a grid of truncation lengths × methods (× seeds) on a Copy / Repeat Copy config,
//! all under the config's one step budget, summarised as the paper's Table 1 (largest episode length
//! solved). Every T's cells (all methods and seeds) train as one run group: on the fused kernels one
//! set of dispatches per window trains all of them. Cells that only the per-step kernels can train
//! (e.g. the aux task at every step) form a second group of that T, so that the others keep the
//! fused kernels.

use std::path::Path;

use anyhow::{bail, Context};
use serde::Serialize;

use super::copy::{self, CopyOutcome};
use crate::config::{Config, Overrides};
use crate::progress::{Mode, Progress};
use crate::run_dir::RunDir;

/// How often the sweep probes each run's SG when the config does not say (`rnn.probe_every`).
const SWEEP_PROBE_EVERY: u64 = 1000;

/// What to sweep.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// Truncation lengths (`rnn.T`).
    pub ts: Vec<usize>,
    /// Methods as spelled in configs: `bptt`, `dni`, `dni_aux`.
    pub methods: Vec<String>,
    /// Seeds per cell: the config's seed, seed + 1, ...
    pub seeds: u64,
    /// A config key whose values become extra rows.
    pub vary: Option<Vary>,
}

/// `--vary KEY=V1,V2,..`: one config key and the values it takes, one table row per method and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Vary {
    pub key: String,
    pub values: Vec<String>,
}

impl Vary {
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        let (key, values) = spec.split_once('=').with_context(|| {
            format!("--vary {spec:?}: expected KEY=V1,V2,.. (e.g. rnn.sg_scale=0.1,1)")
        })?;
        let key = key.trim();
        let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
        if key.is_empty() || values.iter().any(String::is_empty) {
            bail!("--vary {spec:?}: expected KEY=V1,V2,.. with no empty key or value");
        }
        if matches!(
            key,
            "rnn.T" | "rnn.method" | "rnn.steps" | "run.log_every" | "seed"
        ) {
            bail!(
                "--vary {key}: the sweep sets this itself (use --t, --methods, --steps, --seeds)"
            );
        }
        Ok(Vary {
            key: key.to_string(),
            values,
        })
    }

    /// The row label of one value: `key=value`, without the section.
    fn label(&self, value: &str) -> String {
        let short = self.key.rsplit('.').next().unwrap_or(&self.key);
        format!("{short}={value}")
    }
}

#[derive(Serialize)]
struct Cell<'a> {
    #[serde(flatten)]
    outcome: &'a CopyOutcome,
}

/// Runs the grid and prints the Markdown table; everything is also written to a run directory
/// (`metrics.jsonl`: one record per finished run; `curves/`: every run's records, one file per run;
/// `table.md`; `summary.json`).
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
    // Rows: each method, or each method × varied value (labelled `method key=value`).
    let values: Vec<Option<&String>> = match &opts.vary {
        Some(v) => v.values.iter().map(Some).collect(),
        None => vec![None],
    };
    let mut rows: Vec<String> = Vec::new();
    let mut groups: Vec<(usize, Vec<(Config, String)>)> = Vec::new();
    for &t in &opts.ts {
        let mut cells = Vec::new();
        for method in &opts.methods {
            for value in &values {
                let row = match (&opts.vary, value) {
                    (Some(v), Some(value)) => format!("{method} {}", v.label(value)),
                    _ => method.clone(),
                };
                if !rows.contains(&row) {
                    rows.push(row.clone());
                }
                for s in 0..opts.seeds {
                    let mut o = overrides.clone();
                    o.set.push(format!("rnn.T={t}"));
                    o.set.push(format!("rnn.method={method}"));
                    if let (Some(v), Some(value)) = (&opts.vary, value) {
                        o.set.push(format!("{}={value}", v.key));
                    }
                    let mut cfg = Config::load(config, &o)
                        .with_context(|| format!("sweep cell {row}, T = {t}"))?;
                    // The probe is on in a sweep: its curves are what the sweep is for.
                    if let Some(rnn) = cfg.rnn.as_mut().filter(|r| r.probe_every == 0) {
                        rnn.probe_every = SWEEP_PROBE_EVERY;
                    }
                    cfg.seed = cfg
                        .seed
                        .checked_add(s)
                        .context("seed + --seeds overflows a u64")?;
                    cells.push((cfg, row.clone()));
                }
            }
        }
        groups.push((t, cells));
    }
    let gpu = crate::commands::open_gpu(base.run.backend)?;
    let groups = split_by_path(&gpu, groups);
    let runs: usize = groups.iter().map(|(_, g)| g.len()).sum();
    let mut dir_cfg = base.clone();
    dir_cfg.run.name = Some(format!("sweep-{}", base.task.name()));
    let mut run_dir = RunDir::create(&dir_cfg)?;
    let rnn = base
        .rnn
        .as_ref()
        .context("the copy tasks need an [rnn] section")?;
    eprintln!(
        "sweep: {runs} runs of {} steps each ({} seed(s) per cell, {} run group(s): one per T and kernel path), hidden {}, batch {}",
        rnn.steps, opts.seeds, groups.len(), rnn.hidden, rnn.batch
    );
    eprintln!("adapter: {}", gpu.adapter());
    eprintln!("results in {}", run_dir.path().display());

    let mut results: Vec<CopyOutcome> = Vec::new();
    let mut curves: Vec<crate::plot::SweepRun> = Vec::new();
    for (t, cells) in &groups {
        let title = format!("T={t}: {} runs", cells.len());
        // Each run's level and length solved: a bar on a terminal, else a line every 30 s.
        let mut progress = Progress::with_mode(&title, base.steps(), Mode::Auto)
            .every(std::time::Duration::from_secs(30));
        let cfgs: Vec<Config> = cells.iter().map(|(c, _)| c.clone()).collect();
        // Every run's learning curve: curves/<row>-T<t>-seed<s>.jsonl, one record per log interval
        // (written as it trains), and kept for the charts.
        let curves_dir = run_dir.file("curves");
        std::fs::create_dir_all(&curves_dir)
            .with_context(|| format!("cannot create {}", curves_dir.display()))?;
        let mut curve_files = Vec::with_capacity(cells.len());
        for (cfg, row) in cells {
            let path = curves_dir.join(crate::plot::sweep_curve_name(row, *t, cfg.seed));
            let f = std::fs::File::create(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            curve_files.push((path, std::io::BufWriter::new(f)));
        }
        let mut records: Vec<Vec<serde_json::Value>> = vec![Vec::new(); cells.len()];
        let outcomes = copy::train_group(&gpu, &cfgs, &mut progress, |k, rec| {
            use std::io::Write;
            let (path, w) = &mut curve_files[k];
            serde_json::to_writer(&mut *w, rec)
                .map_err(std::io::Error::from)
                .and_then(|()| w.write_all(b"\n"))
                .and_then(|()| w.flush())
                .with_context(|| format!("cannot write {}", path.display()))?;
            records[k].push(serde_json::to_value(rec)?);
            Ok(())
        })
        .with_context(|| format!("sweep group {title}"))?;
        for ((mut outcome, (_, row)), recs) in outcomes.into_iter().zip(cells).zip(records) {
            outcome.row = Some(row.clone());
            curves.push(crate::plot::SweepRun {
                method: row.clone(),
                t: outcome.t,
                seed: outcome.seed,
                largest_solved: outcome.largest_solved,
                records: recs,
            });
            eprintln!(
                "{} T={} seed {}: {} (whole group)",
                row,
                outcome.t,
                outcome.seed,
                outcome.summary_line()
            );
            run_dir.log(&Cell { outcome: &outcome })?;
            results.push(outcome);
        }
    }

    let table = table(&base, &opts.ts, &rows, &results);
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
        "vary": opts.vary.as_ref().map(|v| &v.key),
        "runs": results,
    }))?;
    Ok(())
}

/// Splits each T's cells into those the fused kernels could train alone and those only the
/// per-step kernels can (two groups of that T when both kinds are there), so that one per-step
/// cell does not take the others off the fused kernels. Where nothing fuses (an adapter without
/// the fused kernels' features), each T stays one group.
fn split_by_path(
    gpu: &dni_kernels::Gpu,
    groups: Vec<(usize, Vec<(Config, String)>)>,
) -> Vec<(usize, Vec<(Config, String)>)> {
    let fuses = |cfg: &Config| {
        cfg.rnn.as_ref().is_some_and(|rnn| {
            let rc = rnn.trainer_config(
                dni_tasks::copy::WIDTH,
                dni_tasks::copy::WIDTH,
                dni_graph::recurrent::OutputLoss::SigmoidBits,
                cfg.seed,
            );
            dni_graph::recurrent::fused_unavailable(gpu, &[rc]).is_none()
        })
    };
    let mut out = Vec::with_capacity(groups.len());
    for (t, cells) in groups {
        let (fused, per_step): (Vec<_>, Vec<_>) = cells.into_iter().partition(|(c, _)| fuses(c));
        for part in [fused, per_step] {
            if !part.is_empty() {
                out.push((t, part));
            }
        }
    }
    out
}

/// Largest episode length solved, one row per method (or method and varied value), one column per
/// T; with several seeds the
/// mean and the range over seeds ("–" counts as 0 in the mean; a cell where no seed solved
/// anything stays "–").
fn table(base: &Config, ts: &[usize], rows: &[String], results: &[CopyOutcome]) -> String {
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
    for m in rows {
        s.push_str(&format!("| {m} |"));
        for &t in ts {
            let runs: Vec<&CopyOutcome> = results
                .iter()
                .filter(|r| r.row.as_deref().unwrap_or(r.method) == m.as_str() && r.t == t)
                .collect();
            let solved: Vec<Option<usize>> = runs.iter().map(|r| r.largest_solved).collect();
            let mark = match runs.iter().any(|r| r.diverged_at_step.is_some()) {
                true => DIVERGED_MARK,
                false => "",
            };
            s.push_str(&format!(" {}{mark} |", cell(&solved)));
        }
        s.push('\n');
    }
    if results.iter().any(|r| r.diverged_at_step.is_some()) {
        s.push_str(&format!(
            "\n{DIVERGED_MARK} a run of this cell diverged (NaN or infinite loss) before the budget \
             ended; the cell holds what it had solved by then (`diverged_at_step` in summary.json)\n"
        ));
    }
    s
}

/// Marks a table cell with a diverged run.
const DIVERGED_MARK: &str = "†";

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
            row: None,
            t,
            seed,
            hidden: 8,
            batch: 2,
            largest_solved: solved,
            final_level: "N=1".into(),
            final_bits_per_char: None,
            steps: 10,
            step_budget: 10,
            diverged_at_step: None,
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

    /// A cell that only the per-step kernels can train (the aux task at every step) gets a group of
    /// its own, so the others of its T stay on the fused kernels where the adapter has them.
    #[test]
    fn per_step_cells_form_their_own_group() {
        let gpu = dni_kernels::testing::gpu();
        let base = copy_config();
        let mut every = base.clone();
        let rnn = every.rnn.as_mut().unwrap();
        rnn.method = crate::config::MethodKind::DniAux;
        rnn.aux_every_step = true;
        let cells = vec![
            (base.clone(), "dni".to_string()),
            (every, "dni_aux every".to_string()),
            (base.clone(), "bptt".to_string()),
        ];
        let groups = split_by_path(&gpu, vec![(3, cells.clone()), (5, cells)]);
        let shape: Vec<(usize, Vec<&str>)> = groups
            .iter()
            .map(|(t, g)| (*t, g.iter().map(|(_, row)| row.as_str()).collect()))
            .collect();
        let rc = base.rnn.as_ref().unwrap().trainer_config(
            dni_tasks::copy::WIDTH,
            dni_tasks::copy::WIDTH,
            dni_graph::recurrent::OutputLoss::SigmoidBits,
            1,
        );
        let all = vec!["dni", "dni_aux every", "bptt"];
        let want = match dni_graph::recurrent::fused_unavailable(&gpu, &[rc]) {
            None => vec![
                (3, vec!["dni", "bptt"]),
                (3, vec!["dni_aux every"]),
                (5, vec!["dni", "bptt"]),
                (5, vec!["dni_aux every"]),
            ],
            Some(_) => vec![(3, all.clone()), (5, all)],
        };
        assert_eq!(shape, want);
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

    #[test]
    fn a_diverged_run_marks_its_cell_and_the_table_says_why() {
        let base = copy_config();
        let mut gone = outcome("dni", 2, Some(4));
        gone.diverged_at_step = Some(1234);
        let results = [outcome("bptt", 2, None), gone];
        let methods = ["bptt".to_string(), "dni".to_string()];
        let t = table(&base, &[2], &methods, &results);
        assert!(t.contains("| bptt | – |\n| dni | 4† |\n"), "{t}");
        assert!(t.contains("† a run of this cell diverged"), "{t}");
        assert!(!table(&base, &[2], &methods, &results[..1]).contains('†'));
    }

    #[test]
    fn vary_parses_and_labels_rows() {
        let v = Vary::parse("rnn.sg_scale=0.1, 1").unwrap();
        assert_eq!(
            (v.key.as_str(), v.values.clone()),
            ("rnn.sg_scale", vec!["0.1".to_string(), "1".to_string()])
        );
        assert_eq!(v.label("1"), "sg_scale=1");
        for bad in ["rnn.sg_scale", "=1", "rnn.sg_scale=1,", "rnn.T=2,3"] {
            assert!(Vary::parse(bad).is_err(), "{bad}");
        }
        let base = copy_config();
        let mut a = outcome("dni", 3, Some(5));
        a.row = Some("dni sg_scale=1".into());
        let b = outcome("dni", 3, Some(4));
        let rows = ["dni".to_string(), "dni sg_scale=1".to_string()];
        let t = table(&base, &[3], &rows, &[a, b]);
        assert!(t.contains("| dni | 4 |\n| dni sg_scale=1 | 5 |\n"), "{t}");
    }
}
