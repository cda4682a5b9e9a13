//! `dni-train sweep` on an MNIST config: a grid of depths × methods (× seeds), each run one after
//! the other under the config's one step budget, summarised as the paper's Table 2 (test error of
//! the MNIST FCNs). A method may carry settings of its own, `cdni+p_update=0.2`, so that the
//! `p_update` and complete-unlock rows sit in the same table.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use serde::Serialize;

use super::mnist::{MnistExperiment, MnistOutcome};
use super::Experiment;
use crate::config::{Config, Overrides};
use crate::plot::{Panel, Series};
use crate::progress::Progress;
use crate::run_dir::RunDir;

/// How often the sweep probes the SGs when the config does not say (`mnist.probe_every`).
const SWEEP_PROBE_EVERY: u64 = 200;

/// One row of the table: a method and the `[mnist]` settings it carries.
#[derive(Clone, Debug, PartialEq)]
pub struct RowSpec {
    /// As given, e.g. `cdni+p_update=0.2`: the row's label.
    pub label: String,
    pub method: String,
    /// `(key, value)` under `[mnist]`.
    pub settings: Vec<(String, String)>,
}

impl RowSpec {
    /// `METHOD[+KEY=VALUE...]`, keys of `[mnist]` without the section.
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        let mut parts = spec.split('+').map(str::trim);
        let method = parts.next().unwrap_or_default();
        if method.is_empty() {
            bail!("--methods {spec:?}: expected METHOD[+KEY=VALUE...] (e.g. cdni+p_update=0.2)");
        }
        let mut settings = Vec::new();
        for part in parts {
            let (k, v) = part.split_once('=').with_context(|| {
                format!("--methods {spec:?}: {part:?} is not KEY=VALUE (e.g. cdni+p_update=0.2)")
            })?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() || v.is_empty() {
                bail!("--methods {spec:?}: empty key or value in {part:?}");
            }
            if matches!(k, "layers" | "method" | "steps") {
                bail!("--methods {spec:?}: the sweep sets mnist.{k} itself (use --layers, the method, --steps)");
            }
            settings.push((k.to_string(), v.to_string()));
        }
        Ok(RowSpec {
            label: spec.trim().to_string(),
            method: method.to_string(),
            settings,
        })
    }
}

/// What to sweep.
#[derive(Clone, Debug)]
pub struct MnistSweepOptions {
    /// Hidden layers (`mnist.layers`), one column each.
    pub layers: Vec<usize>,
    pub rows: Vec<RowSpec>,
    /// Seeds per cell: the config's seed, seed + 1, ...
    pub seeds: u64,
}

/// One finished run, as `summary.json`'s `runs` list keeps it.
#[derive(Serialize)]
struct Cell<'a> {
    row: &'a str,
    seed: u64,
    #[serde(flatten)]
    outcome: &'a MnistOutcome,
}

fn curve_name(row: &str, layers: usize, seed: u64) -> String {
    format!(
        "{}-L{layers}-seed{seed}.jsonl",
        row.replace([' ', '=', '+'], "_")
    )
}

/// Runs the grid and prints the Markdown table; everything is also written to a run directory
/// (`metrics.jsonl`: one record per finished run; `curves/`: every run's records; `table.md`;
/// `summary.json`; the charts `test-error-L<layers>` and, with the probe, `probe-L<layers>`).
pub fn run(config: &Path, overrides: &Overrides, opts: &MnistSweepOptions) -> anyhow::Result<()> {
    if opts.layers.is_empty() || opts.rows.is_empty() {
        bail!("an MNIST sweep needs at least one --layers value and one method");
    }
    if opts.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    // A repeated value would train the same cells twice and write over their curves.
    for (i, l) in opts.layers.iter().enumerate() {
        if opts.layers[..i].contains(l) {
            bail!("--layers lists {l} twice; give each depth once");
        }
    }
    for (i, r) in opts.rows.iter().enumerate() {
        if opts.rows[..i].iter().any(|q| q.label == r.label) {
            bail!("--methods lists {} twice; give each method once", r.label);
        }
    }
    let base = Config::load(config, overrides)?;
    // Every cell's config loads (and validates) before the first one trains.
    let mut cells: Vec<(Config, &RowSpec, usize)> = Vec::new();
    for &layers in &opts.layers {
        for row in &opts.rows {
            for s in 0..opts.seeds {
                let mut o = overrides.clone();
                o.set.push(format!("mnist.layers={layers}"));
                o.set.push(format!("mnist.method=\"{}\"", row.method));
                for (k, v) in &row.settings {
                    o.set.push(format!("mnist.{k}={v}"));
                }
                let mut cfg = Config::load(config, &o)
                    .with_context(|| format!("sweep cell {}, {layers} layers", row.label))?;
                if let Some(m) = cfg.mnist.as_mut().filter(|m| m.probe_every == 0) {
                    m.probe_every = SWEEP_PROBE_EVERY;
                }
                cfg.seed = cfg
                    .seed
                    .checked_add(s)
                    .context("seed + --seeds overflows a u64")?;
                cells.push((cfg, row, layers));
            }
        }
    }
    let m = base
        .mnist
        .as_ref()
        .context("an MNIST sweep needs an [mnist] section")?;
    let mut dir_cfg = base.clone();
    dir_cfg.run.name = Some("sweep-mnist".into());
    let mut run_dir = RunDir::create(&dir_cfg)?;
    let gpu = crate::commands::open_gpu(base.run.backend)?;
    eprintln!(
        "sweep: {} runs of {} steps each, one after the other ({} seed(s) per cell), hidden {}, batch {}",
        cells.len(),
        m.steps,
        opts.seeds,
        m.hidden,
        m.batch
    );
    eprintln!("adapter: {}", gpu.adapter());
    eprintln!("results in {}", run_dir.path().display());
    let curves_dir = run_dir.file("curves");
    std::fs::create_dir_all(&curves_dir)
        .with_context(|| format!("cannot create {}", curves_dir.display()))?;

    let started = std::time::Instant::now();
    let mut results: Vec<(ChartRun, MnistOutcome)> = Vec::new();
    let total = cells.len();
    for (k, (cfg, row, layers)) in cells.iter().enumerate() {
        let title = format!(
            "{}/{total} {} L={layers} seed {}",
            k + 1,
            row.label,
            cfg.seed
        );
        let mut progress = Progress::new(&title, cfg.steps());
        let path = curves_dir.join(curve_name(&row.label, *layers, cfg.seed));
        let mut w = std::io::BufWriter::new(
            std::fs::File::create(&path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        );
        let mut records = Vec::new();
        let outcome = MnistExperiment::train(&gpu, cfg, &mut progress, &mut |rec| {
            serde_json::to_writer(&mut w, rec)
                .map_err(std::io::Error::from)
                .and_then(|()| w.write_all(b"\n"))
                .and_then(|()| w.flush())
                .with_context(|| format!("cannot write {}", path.display()))?;
            records.push(serde_json::to_value(rec)?);
            Ok(())
        })
        .with_context(|| format!("sweep run {title}"))?;
        progress.finish(&format!(
            "test error {:.2}% ({:.0} s)",
            100.0 * outcome.final_test_error,
            outcome.wall_clock_s
        ));
        run_dir.log(&Cell {
            row: &row.label,
            seed: cfg.seed,
            outcome: &outcome,
        })?;
        let run = ChartRun {
            row: row.label.clone(),
            layers: *layers,
            seed: cfg.seed,
            records,
        };
        results.push((run, outcome));
    }

    let labels: Vec<&str> = opts.rows.iter().map(|r| r.label.as_str()).collect();
    let errors: Vec<(&str, usize, f64)> = results
        .iter()
        .map(|(r, o)| (r.row.as_str(), r.layers, o.final_test_error))
        .collect();
    let table = table(m.steps, &opts.layers, &labels, &errors);
    let wall = started.elapsed().as_secs_f64();
    println!("{table}");
    eprintln!("sweep: {} runs in {:.1} min", results.len(), wall / 60.0);
    std::fs::write(run_dir.file("table.md"), &table)
        .with_context(|| format!("cannot write {}", run_dir.file("table.md").display()))?;
    let (chart_runs, outcomes): (Vec<ChartRun>, Vec<MnistOutcome>) = results.into_iter().unzip();
    let charts = charts(run_dir.path(), &opts.layers, &chart_runs)?;
    eprintln!(
        "charts: {}",
        charts
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let runs: Vec<serde_json::Value> = chart_runs
        .iter()
        .zip(&outcomes)
        .map(|(r, o)| {
            serde_json::to_value(Cell {
                row: &r.row,
                seed: r.seed,
                outcome: o,
            })
        })
        .collect::<Result<_, _>>()?;
    run_dir.write_summary(serde_json::json!({
        "task": "mnist",
        "adapter": gpu.adapter().to_string(),
        "step_budget": m.steps,
        "seeds": opts.seeds,
        "hidden": m.hidden,
        "batch": m.batch,
        "table": table,
        "wall_clock_s": wall,
        "runs": runs,
    }))?;
    Ok(())
}

/// Final test error in %, one row per method, one column per depth; with several seeds the mean and
/// the range.
fn table(steps: u64, layers: &[usize], rows: &[&str], errors: &[(&str, usize, f64)]) -> String {
    let mut s = format!(
        "MNIST test error (%) after {steps} steps\n\n| method |{}\n|---|{}\n",
        layers
            .iter()
            .map(|l| format!(" {l} layers |"))
            .collect::<String>(),
        "---|".repeat(layers.len())
    );
    for row in rows {
        s.push_str(&format!("| {row} |"));
        for &l in layers {
            let v: Vec<f64> = errors
                .iter()
                .filter(|(r, ll, _)| r == row && *ll == l)
                .map(|(_, _, e)| 100.0 * e)
                .collect();
            let cell = match v.as_slice() {
                [] => String::new(),
                [one] => format!("{one:.2}"),
                many => {
                    let mean = many.iter().sum::<f64>() / many.len() as f64;
                    let lo = many.iter().cloned().fold(f64::INFINITY, f64::min);
                    let hi = many.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    format!("{mean:.2} ({lo:.2}–{hi:.2})")
                }
            };
            s.push_str(&format!(" {cell} |"));
        }
        s.push('\n');
    }
    s
}

/// One run of an MNIST sweep, for its charts.
pub struct ChartRun {
    pub row: String,
    pub layers: usize,
    pub seed: u64,
    /// Its `metrics.jsonl`-style records.
    pub records: Vec<serde_json::Value>,
}

/// Redraws an MNIST sweep's charts in `dir` from its `summary.json` (`runs`) and `curves/`.
pub fn replot(dir: &Path, summary: &serde_json::Value) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let path = dir.join("summary.json");
    let listed = summary["runs"]
        .as_array()
        .with_context(|| format!("{}: no \"runs\" list", path.display()))?;
    let mut runs = Vec::with_capacity(listed.len());
    for r in listed {
        let bad = || anyhow::anyhow!("{}: a run without row, layers or seed: {r}", path.display());
        let row = r["row"].as_str().ok_or_else(bad)?.to_string();
        let layers = r["layers"].as_u64().ok_or_else(bad)? as usize;
        let seed = r["seed"].as_u64().ok_or_else(bad)?;
        let records =
            crate::plot::read_curve(&dir.join("curves").join(curve_name(&row, layers, seed)))?;
        runs.push(ChartRun {
            row,
            layers,
            seed,
            records,
        });
    }
    let mut layers: Vec<usize> = runs.iter().map(|r| r.layers).collect();
    layers.sort();
    layers.dedup();
    charts(dir, &layers, &runs)
}

/// Per depth: test error over steps per run, and the probe's update cosine (mean over the blocks).
fn charts(
    dir: &Path,
    layers: &[usize],
    results: &[ChartRun],
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut written = Vec::new();
    for &l in layers {
        let runs: Vec<&ChartRun> = results.iter().filter(|r| r.layers == l).collect();
        let multi_seed = runs.iter().any(|r| r.seed != runs[0].seed);
        let label = |r: &ChartRun| {
            if multi_seed {
                format!("{} seed {}", r.row, r.seed)
            } else {
                r.row.clone()
            }
        };
        let series = |f: &dyn Fn(&serde_json::Value) -> Option<f64>| -> Vec<Series> {
            runs.iter()
                .map(|r| Series {
                    label: label(r),
                    points: r
                        .records
                        .iter()
                        .filter_map(|v| Some((v["step"].as_f64()?, f(v)?)))
                        .collect(),
                })
                .filter(|s| !s.points.is_empty())
                .collect()
        };
        let errors = series(&|v| v["test_error"].as_f64().map(|e| 100.0 * e));
        written.extend(crate::plot::write_chart(
            dir,
            &format!("test-error-L{l}"),
            &[Panel {
                title: format!("MNIST FCN, {l} layers: test error"),
                x_desc: "steps".into(),
                y_desc: "test error (%)".into(),
                series: errors,
                legend_left: false,
            }],
        )?);
        let probes = series(&|v| {
            let c: Vec<f64> = v["probe_update_cosine"]
                .as_array()?
                .iter()
                .filter_map(|x| x.as_f64())
                .collect();
            (!c.is_empty()).then(|| c.iter().sum::<f64>() / c.len() as f64)
        });
        if !probes.is_empty() {
            written.extend(crate::plot::write_chart(
                dir,
                &format!("probe-L{l}"),
                &[Panel {
                    title: format!(
                        "MNIST FCN, {l} layers: cosine of each block's update and backprop's (mean over blocks)"
                    ),
                    x_desc: "steps".into(),
                    y_desc: "update cosine".into(),
                    series: probes,
                    legend_left: false,
                }],
            )?);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_parse_with_their_settings() {
        let r = RowSpec::parse("cdni+p_update=0.2").unwrap();
        assert_eq!(r.method, "cdni");
        assert_eq!(r.settings, vec![("p_update".into(), "0.2".into())]);
        assert_eq!(r.label, "cdni+p_update=0.2");
        let r = RowSpec::parse("cdni + unlock=true + p_update=1").unwrap();
        assert_eq!(r.settings.len(), 2);
        assert_eq!(RowSpec::parse("bp").unwrap().settings, vec![]);
        for bad in [
            "",
            "+p_update=1",
            "cdni+p_update",
            "cdni+=1",
            "dni+layers=3",
        ] {
            assert!(RowSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn table_has_a_row_per_method_and_a_column_per_depth() {
        let errs = [
            ("bp", 3, 0.02),
            ("bp", 6, 0.018),
            ("dni", 3, 0.05),
            ("dni", 3, 0.07),
        ];
        let t = table(100, &[3, 6], &["bp", "dni"], &errs);
        assert!(
            t.contains("| method | 3 layers | 6 layers |\n|---|---|---|\n"),
            "{t}"
        );
        assert!(t.contains("| bp | 2.00 | 1.80 |\n"), "{t}");
        assert!(t.contains("| dni | 6.00 (5.00–7.00) |  |\n"), "{t}");
        assert!(t.contains("after 100 steps"), "{t}");
    }

    #[test]
    fn a_sweep_directory_is_redrawn_from_its_curves() {
        let dir = std::env::temp_dir().join(format!("dni-mnist-replot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("curves")).unwrap();
        let runs = serde_json::json!([
            {"row": "bp", "layers": 3, "seed": 1},
            {"row": "cdni+p_update=0.2", "layers": 3, "seed": 1},
        ]);
        let summary = serde_json::json!({"task": "mnist", "runs": runs});
        std::fs::write(dir.join("summary.json"), summary.to_string()).unwrap();
        for row in ["bp", "cdni+p_update=0.2"] {
            let lines: String = (1..=3)
                .map(|k| {
                    format!(
                        "{{\"step\": {}, \"test_error\": 0.{k}, \"probe_update_cosine\": [0.5, 0.{k}]}}\n",
                        k * 100
                    )
                })
                .collect();
            std::fs::write(dir.join("curves").join(curve_name(row, 3, 1)), lines).unwrap();
        }
        assert!(crate::plot::is_sweep_dir(&dir));
        let files = crate::plot::replot_sweep(&dir).unwrap();
        for stem in ["test-error-L3", "probe-L3"] {
            assert!(
                files.iter().any(|f| f.ends_with(format!("{stem}.svg"))),
                "{stem}: {files:?}"
            );
        }
        std::fs::remove_file(dir.join("curves").join(curve_name("bp", 3, 1))).unwrap();
        let err = format!("{:#}", crate::plot::replot_sweep(&dir).unwrap_err());
        assert!(err.contains("cannot read"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
