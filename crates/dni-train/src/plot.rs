//! Learning curves as SVG and PNG (`plotters`): `dni-train plot`, every run's `curves.svg` and
//! the sweep's Table-1 chart.
//!
//! Text is laid out with DejaVu Sans, bundled in `assets/` (licence in
//! `assets/DejaVuSans-LICENSE.txt`), so no system font library is needed.

use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{anyhow, bail, Context};
use plotters::coord::Shift;
use plotters::prelude::*;

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// One line of a chart.
#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// One chart: a title, axis names and its lines.
#[derive(Clone, Debug)]
pub struct Panel {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub series: Vec<Series>,
    /// The legend's corner: upper left for rising curves, else upper right.
    pub legend_left: bool,
}

fn register_font() -> anyhow::Result<()> {
    static ONCE: Once = Once::new();
    let mut res = Ok(());
    ONCE.call_once(|| {
        res = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .map_err(|_| anyhow!("the bundled font assets/DejaVuSans.ttf does not load"));
    });
    res
}

fn draw_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the chart: {e:?}")
}

/// The data range of the finite points, padded so that a flat line is visible.
fn range(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = v
        .filter(|x| x.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        lo.abs().max(1.0) * 0.1
    };
    (lo - pad, hi + pad)
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
) -> anyhow::Result<()> {
    let pts = |f: fn(&(f64, f64)) -> f64| {
        panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(f))
            .collect::<Vec<_>>()
    };
    let (x0, x1) = range(pts(|p| p.0).into_iter());
    let (y0, y1) = range(pts(|p| p.1).into_iter());
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(draw_err)?;
    let fmt = |v: &f64| {
        if v.fract() == 0.0 || v.abs() >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.3}").trim_end_matches('0').to_string()
        }
    };
    chart
        .configure_mesh()
        .x_label_formatter(&fmt)
        .y_label_formatter(&fmt)
        .x_desc(&panel.x_desc)
        .y_desc(&panel.y_desc)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(draw_err)?;
    for (i, s) in panel.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(draw_err)?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        if points.len() <= 40 {
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(draw_err)?;
        }
    }
    if !panel.series.is_empty() {
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(if panel.legend_left {
                SeriesLabelPosition::UpperLeft
            } else {
                SeriesLabelPosition::UpperRight
            })
            .draw()
            .map_err(draw_err)?;
    }
    Ok(())
}

fn draw_all<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    panels: &[Panel],
) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(draw_err)?;
    let areas = root.split_evenly((panels.len(), 1));
    for (area, panel) in areas.iter().zip(panels) {
        draw_panel(area, panel)?;
    }
    root.present().map_err(draw_err)?;
    Ok(())
}

/// Writes `panels`, stacked, as `<stem>.svg` and `<stem>.png` in `dir`; returns both paths.
pub fn write_chart(dir: &Path, stem: &str, panels: &[Panel]) -> anyhow::Result<Vec<PathBuf>> {
    if panels.is_empty() {
        bail!("nothing to plot");
    }
    register_font()?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let size = (960u32, 420 * panels.len() as u32);
    let svg = dir.join(format!("{stem}.svg"));
    let png = dir.join(format!("{stem}.png"));
    draw_all(SVGBackend::new(&svg, size).into_drawing_area(), panels)
        .with_context(|| format!("writing {}", svg.display()))?;
    draw_all(BitMapBackend::new(&png, size).into_drawing_area(), panels)
        .with_context(|| format!("writing {}", png.display()))?;
    Ok(vec![svg, png])
}

/// What a run directory holds, for plotting.
struct RunData {
    dir: PathBuf,
    task: String,
    label: String,
    records: Vec<serde_json::Value>,
}

fn load_run(dir: &Path) -> anyhow::Result<RunData> {
    if !dir.is_dir() {
        bail!(
            "{}: not a run directory (give directories that runs created, e.g. runs/NAME)",
            dir.display()
        );
    }
    let cfg_path = dir.join("config.toml");
    let text = std::fs::read_to_string(&cfg_path)
        .with_context(|| format!("cannot read {}", cfg_path.display()))?;
    let cfg: toml::Table = toml::from_str(&text)
        .map_err(|e| anyhow!("{}: {}", cfg_path.display(), e.to_string().trim_end()))?;
    let task = cfg
        .get("task")
        .and_then(|t| t.as_str())
        .with_context(|| format!("{}: no task", cfg_path.display()))?
        .to_string();
    let section = match task.as_str() {
        "mnist" => "mnist",
        "two_timescale" => "timescale",
        _ => "rnn",
    };
    let sec = cfg.get(section).and_then(|s| s.as_table());
    let method = sec
        .and_then(|s| s.get("method"))
        .and_then(|m| m.as_str())
        .unwrap_or("?");
    let label = match sec.and_then(|s| s.get("T")).and_then(|t| t.as_integer()) {
        Some(t) => format!("{method} T={t}"),
        None => method.to_string(),
    };
    let m_path = dir.join("metrics.jsonl");
    let records = std::fs::read_to_string(&m_path)
        .with_context(|| format!("cannot read {}", m_path.display()))?
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    Ok(RunData {
        dir: dir.to_path_buf(),
        task,
        label,
        records,
    })
}

/// `(x, y)` of every record that has both keys as numbers.
fn xy(
    records: &[serde_json::Value],
    x: &str,
    y: impl Fn(&serde_json::Value) -> Option<f64>,
) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter_map(|r| Some((r[x].as_f64()?, y(r)?)))
        .collect()
}

fn field(name: &'static str) -> impl Fn(&serde_json::Value) -> Option<f64> {
    move |r| r[name].as_f64()
}

/// The curriculum level as an episode length parameter: `N` (Copy) or `N·R` (Repeat Copy).
fn level(r: &serde_json::Value) -> Option<f64> {
    let n = r["n"].as_f64()?;
    Some(n * r["r"].as_f64().unwrap_or(1.0))
}

/// `dni-train plot`: the learning curves of `runs` (one task) as `curves.svg` / `curves.png` in
/// `out`.
pub fn plot_runs(runs: &[PathBuf], out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut data = runs
        .iter()
        .map(|d| load_run(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let Some(first) = data.first() else {
        bail!("plot needs at least one run directory");
    };
    let task = first.task.clone();
    if let Some(other) = data.iter().find(|d| d.task != task) {
        bail!(
            "{} is a {} run and {} a {} run: plot runs of one task together",
            first.dir.display(),
            task,
            other.dir.display(),
            other.task
        );
    }
    // Same labels (e.g. two seeds): tell them apart by directory.
    for i in 0..data.len() {
        if data.iter().filter(|d| d.label == data[i].label).count() > 1 {
            let name = data[i]
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            data[i].label = format!("{} ({})", data[i].label, name.unwrap_or_default());
        }
    }
    let series = |x: &str, y: &dyn Fn(&serde_json::Value) -> Option<f64>| -> Vec<Series> {
        data.iter()
            .map(|d| Series {
                label: d.label.clone(),
                points: xy(&d.records, x, y),
            })
            .collect()
    };
    let panels = match task.as_str() {
        "copy" | "repeat_copy" => vec![
            Panel {
                title: format!("{task}: bits error per output character"),
                x_desc: "windows (training steps)".into(),
                y_desc: "bits / char".into(),
                series: series("step", &field("bits_per_char")),
                legend_left: false,
            },
            Panel {
                title: format!("{task}: curriculum level"),
                x_desc: "windows (training steps)".into(),
                y_desc: if task == "copy" { "N" } else { "N·R" }.into(),
                series: series("step", &level),
                legend_left: true,
            },
        ],
        "charlm" => vec![Panel {
            title: "character LM: validation BPC".into(),
            x_desc: "characters seen".into(),
            y_desc: "bits per character".into(),
            series: series("chars_seen", &field("valid_bpc")),
            legend_left: false,
        }],
        "mnist" => vec![Panel {
            title: "MNIST: test error".into(),
            x_desc: "steps".into(),
            y_desc: "test error".into(),
            series: series("step", &field("test_error")),
            legend_left: false,
        }],
        "two_timescale" => vec![Panel {
            title: "two timescales: accuracy of the slow network B".into(),
            x_desc: "steps".into(),
            y_desc: "accuracy".into(),
            series: series("step", &field("b_accuracy")),
            legend_left: false,
        }],
        other => bail!("plot: no curves defined for task {other:?}"),
    };
    write_chart(out, "curves", &panels)
}

/// The file a sweep writes one run's curve to, under `curves/`.
pub fn sweep_curve_name(row: &str, t: usize, seed: u64) -> String {
    format!("{}-T{t}-seed{seed}.jsonl", row.replace([' ', '='], "_"))
}

/// Whether `dir` is a sweep's directory (its `summary.json` and `curves/`).
pub fn is_sweep_dir(dir: &Path) -> bool {
    dir.join("curves").is_dir() && dir.join("summary.json").is_file()
}

/// Redraws a sweep's charts in its directory from `summary.json` (the runs) and `curves/` (their
/// records), e.g. after the sweep itself was stopped before drawing them.
pub fn replot_sweep(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let summary: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let task = summary["task"]
        .as_str()
        .with_context(|| format!("{}: no \"task\"", path.display()))?;
    if task == "mnist" {
        return crate::experiments::mnist_sweep::replot(dir, &summary);
    }
    let listed = summary["runs"]
        .as_array()
        .with_context(|| format!("{}: no \"runs\" list", path.display()))?;
    let mut runs = Vec::with_capacity(listed.len());
    for r in listed {
        let bad = || anyhow!("{}: a run without method, T or seed: {r}", path.display());
        let method = r["method"].as_str().ok_or_else(bad)?;
        let row = r["row"].as_str().unwrap_or(method).to_string();
        let t = r["T"].as_u64().ok_or_else(bad)? as usize;
        let seed = r["seed"].as_u64().ok_or_else(bad)?;
        let records = read_curve(&dir.join("curves").join(sweep_curve_name(&row, t, seed)))?;
        runs.push(SweepRun {
            method: row,
            t,
            seed,
            largest_solved: r["largest_solved"].as_u64().map(|v| v as usize),
            records,
        });
    }
    sweep_charts(dir, task, &runs)
}

/// One run's curve file of a sweep (`curves/*.jsonl`): a JSON record per line.
pub fn read_curve(curve: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(curve)
        .with_context(|| format!("cannot read {}", curve.display()))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{} line {}: not JSON", curve.display(), i + 1))
        })
        .collect()
}

/// One cell of a sweep, for its charts.
pub struct SweepRun {
    pub method: String,
    pub t: usize,
    pub seed: u64,
    pub largest_solved: Option<usize>,
    /// Its `metrics.jsonl`-style records.
    pub records: Vec<serde_json::Value>,
}

/// The sweep's charts in `dir`: `table1` (largest episode length solved against T, one line per
/// method, the mean over seeds; unsolved counts 0), and per T `levels-T<T>` (largest length
/// solved over windows, per method and seed) and, where the records carry `probe_cos`,
/// `probe-T<T>`.
pub fn sweep_charts(dir: &Path, task: &str, runs: &[SweepRun]) -> anyhow::Result<Vec<PathBuf>> {
    let mut methods: Vec<&str> = runs.iter().map(|r| r.method.as_str()).collect();
    methods.dedup();
    methods.sort();
    methods.dedup();
    let mut ts: Vec<usize> = runs.iter().map(|r| r.t).collect();
    ts.sort();
    ts.dedup();
    let grid = methods
        .iter()
        .map(|m| Series {
            label: m.to_string(),
            points: ts
                .iter()
                .filter_map(|&t| {
                    let cells: Vec<f64> = runs
                        .iter()
                        .filter(|r| r.method == *m && r.t == t)
                        .map(|r| r.largest_solved.unwrap_or(0) as f64)
                        .collect();
                    (!cells.is_empty())
                        .then(|| (t as f64, cells.iter().sum::<f64>() / cells.len() as f64))
                })
                .collect(),
        })
        .collect();
    let mut written = write_chart(
        dir,
        "table1",
        &[Panel {
            title: format!("{task}: largest episode length solved (Table 1)"),
            x_desc: "truncation length T".into(),
            y_desc: "largest length solved".into(),
            series: grid,
            legend_left: true,
        }],
    )?;
    for &t in &ts {
        let cells: Vec<&SweepRun> = runs.iter().filter(|r| r.t == t).collect();
        let multi_seed = cells.iter().any(|r| r.seed != cells[0].seed);
        let label = |r: &SweepRun| {
            if multi_seed {
                format!("{} seed {}", r.method, r.seed)
            } else {
                r.method.clone()
            }
        };
        let levels = cells
            .iter()
            .map(|r| Series {
                label: label(r),
                points: xy(&r.records, "step", |v| {
                    Some(v["largest_solved"].as_f64().unwrap_or(0.0))
                }),
            })
            .collect();
        written.extend(write_chart(
            dir,
            &format!("levels-T{t}"),
            &[Panel {
                title: format!("{task}, T={t}: largest episode length solved"),
                x_desc: "windows (training steps)".into(),
                y_desc: "largest length solved".into(),
                series: levels,
                legend_left: true,
            }],
        )?);
        let probes: Vec<Series> = cells
            .iter()
            .map(|r| Series {
                label: label(r),
                points: xy(&r.records, "step", field("probe_cos")),
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        if !probes.is_empty() {
            written.extend(write_chart(
                dir,
                &format!("probe-T{t}"),
                &[Panel {
                    title: format!("{task}, T={t}: cosine of the synthetic and the true gradient"),
                    x_desc: "windows (training steps)".into(),
                    y_desc: "probe_cos".into(),
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
    fn a_sweep_directory_is_redrawn_from_its_curves() {
        let dir = std::env::temp_dir().join(format!("dni-replot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("curves")).unwrap();
        let runs = serde_json::json!([
            {"method": "bptt", "T": 2, "seed": 1, "largest_solved": null},
            {"method": "dni", "row": "dni sg_scale=1", "T": 2, "seed": 1, "largest_solved": 4},
        ]);
        std::fs::write(
            dir.join("summary.json"),
            serde_json::json!({"task": "copy", "runs": runs}).to_string(),
        )
        .unwrap();
        assert!(is_sweep_dir(&dir));
        for (row, solved) in [("bptt", "null"), ("dni sg_scale=1", "4")] {
            let lines: String = (1..=3)
                .map(|k| {
                    format!(
                        "{{\"step\": {}, \"n\": 1, \"largest_solved\": {solved}, \"bits_per_char\": 1.0, \"probe_cos\": 0.5}}\n",
                        k * 50
                    )
                })
                .collect();
            std::fs::write(dir.join("curves").join(sweep_curve_name(row, 2, 1)), lines).unwrap();
        }
        let files = replot_sweep(&dir).unwrap();
        assert!(files.iter().any(|f| f.ends_with("table1.svg")), "{files:?}");
        let levels = std::fs::read_to_string(dir.join("levels-T2.svg")).unwrap();
        assert!(levels.contains("dni sg_scale=1"), "rows keep their labels");
        std::fs::remove_file(dir.join("curves").join(sweep_curve_name("bptt", 2, 1))).unwrap();
        let err = format!("{:#}", replot_sweep(&dir).unwrap_err());
        assert!(err.contains("bptt-T2-seed1.jsonl"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn writes_svg_and_png_with_labels() {
        let dir = std::env::temp_dir().join(format!("dni-plot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let panel = Panel {
            title: "t".into(),
            x_desc: "x".into(),
            y_desc: "y".into(),
            series: vec![
                Series {
                    label: "bptt".into(),
                    points: vec![(0.0, 1.0), (1.0, 0.5), (2.0, f64::NAN)],
                },
                Series {
                    label: "dni".into(),
                    points: vec![],
                },
            ],
            legend_left: false,
        };
        let files = write_chart(&dir, "c", &[panel.clone(), panel]).unwrap();
        let svg = std::fs::read_to_string(&files[0]).unwrap();
        assert!(
            svg.contains("bptt") && svg.contains("dni"),
            "legend missing"
        );
        let png = std::fs::read(&files[1]).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_run_or_mixed_tasks_are_errors() {
        let e = plot_runs(&[PathBuf::from("/nonexistent/run")], Path::new("/tmp"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a run directory"), "{e}");
    }
}
