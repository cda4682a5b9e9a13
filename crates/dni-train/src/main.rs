//! `dni-train`: runs the DNI experiments described by TOML configs (see `configs/`).

mod checkpoint;
mod commands;
mod config;
mod experiments;
mod interrupt;
mod plot;
mod progress;
mod run_dir;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::checkpoint::RunControl;
use crate::config::{Backend, Config, Overrides};
use crate::progress::Progress;
use crate::run_dir::RunDir;

#[derive(Parser, Debug)]
#[command(
    name = "dni-train",
    version,
    about = "Train networks with Decoupled Neural Interfaces (synthetic gradients) on the GPU",
    after_help = "Examples:\n  dni-train --config configs/copy.toml\n  dni-train --config configs/charlm.toml --set rnn.T=8 --steps 500\n  dni-train --resume runs/copy-dni-T5-20260101-120000 --steps 20000\n  dni-train plot runs/A runs/B\n  dni-train devices"
)]
struct Cli {
    /// Continue the run in DIR from its checkpoint (with --steps N to extend its step budget).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "set", "out", "backend"])]
    resume: Option<PathBuf>,
    /// Experiment config (TOML); examples in configs/.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Override one config value, e.g. --set rnn.T=8 (repeatable; VALUE is read as TOML, else a string).
    #[arg(long = "set", value_name = "KEY=VALUE", global = true)]
    set: Vec<String>,
    /// Step budget (overrides rnn.steps or mnist.steps).
    #[arg(long, value_name = "N", global = true)]
    steps: Option<u64>,
    /// Directory the run directory is created in (overrides run.out_dir).
    #[arg(long, value_name = "DIR", global = true)]
    out: Option<PathBuf>,
    /// GPU backend (overrides run.backend).
    #[arg(long, global = true, value_parser = backend_parser())]
    backend: Option<Backend>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train the experiment given by --config (the default when --config is given).
    Train,
    /// List the GPU adapters.
    Devices,
    /// Train a grid under one step budget: truncation lengths × methods on a Copy / Repeat Copy
    /// config (the largest episode length solved, the paper's Table 1), or depths × methods on an
    /// MNIST config (the test error, Table 2)
    Sweep {
        /// Truncation lengths (Copy / Repeat Copy), e.g. --t 2,3,4,5,8.
        #[arg(long = "t", value_name = "T,..", value_delimiter = ',')]
        t: Vec<usize>,
        /// Hidden layers (MNIST), e.g. --layers 3,6.
        #[arg(long, value_name = "L,..", value_delimiter = ',')]
        layers: Vec<usize>,
        /// Methods, e.g. --methods bptt,dni,dni_aux (default) or, on MNIST, bp,dni,cdni (default);
        /// an MNIST method may carry [mnist] settings: cdni+p_update=0.2.
        #[arg(long, value_name = "M,..", value_delimiter = ',')]
        methods: Vec<String>,
        /// Seeds per cell (the config's seed, seed + 1, ...); a T's cells train as one run group.
        #[arg(long, value_name = "N", default_value_t = 1)]
        seeds: u64,
        /// One config key to vary across rows, e.g. --vary rnn.sg_scale=0.1,1 (each value is a row
        /// per method, trained in the same run group as the others).
        #[arg(long, value_name = "KEY=V1,V2,..")]
        vary: Option<String>,
    },
    /// Time kernels and training steps (the workloads of docs/BENCHMARKS.md).
    Bench {
        /// Fewer sizes and samples: a quick smoke run.
        #[arg(long)]
        quick: bool,
        /// Workloads to run (docs/WORKLOADS.md), e.g. --workload w5 or --workload w1,w5.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
        workload: Vec<commands::bench::Workload>,
    },
    /// Plot the learning curves of runs (SVG and PNG): bits per character and curriculum level
    /// (Copy), validation BPC (character LM), test error (MNIST); several runs share one chart. Given
    /// one sweep directory, redraws the sweep's charts in it.
    Plot {
        /// Run directories (each holds metrics.jsonl and config.toml).
        #[arg(value_name = "RUN_DIR", required = true)]
        runs: Vec<PathBuf>,
    },
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Train => "train",
            Command::Devices => "devices",
            Command::Sweep { .. } => "sweep",
            Command::Bench { .. } => "bench",
            Command::Plot { .. } => "plot",
        }
    }
}

/// The global options a subcommand does not use are an error, not silently ignored.
fn reject_unused(cli: &Cli) -> anyhow::Result<()> {
    let Some(cmd) = &cli.command else {
        return Ok(());
    };
    let given: [(&str, bool); 6] = [
        ("--config", cli.config.is_some()),
        ("--set", !cli.set.is_empty()),
        ("--steps", cli.steps.is_some()),
        ("--out", cli.out.is_some()),
        ("--backend", cli.backend.is_some()),
        ("--resume", cli.resume.is_some()),
    ];
    let uses: &[&str] = match cmd {
        Command::Train => &["--config", "--set", "--steps", "--out", "--backend"],
        Command::Devices => &["--backend"],
        Command::Bench { .. } => &["--backend"],
        Command::Sweep { .. } => &["--config", "--set", "--steps", "--out", "--backend"],
        Command::Plot { .. } => &["--out"],
    };
    let unused: Vec<&str> = given
        .iter()
        .filter(|(opt, on)| *on && !uses.contains(opt))
        .map(|(opt, _)| *opt)
        .collect();
    if !unused.is_empty() {
        anyhow::bail!(
            "`dni-train {}` does not use {} (it takes {}); remove {}",
            cmd.name(),
            unused.join(", "),
            if uses.is_empty() {
                "none of the global options".to_string()
            } else {
                uses.join(", ")
            },
            if unused.len() == 1 { "it" } else { "them" }
        );
    }
    Ok(())
}

/// `--backend`: one of the kernel library's backend names (listed in `--help`).
fn backend_parser() -> impl clap::builder::TypedValueParser<Value = Backend> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Backend::NAMES).try_map(|s| s.parse::<Backend>())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    reject_unused(&cli)?;
    if let Some(dir) = cli.resume.clone() {
        return resume(&dir, cli.steps);
    }
    let ok = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
    match cli.command {
        Some(Command::Devices) => ok(commands::devices::run(cli.backend.unwrap_or_default())),
        Some(Command::Plot { ref runs }) => {
            let out = match (&cli.out, runs.as_slice()) {
                (Some(o), _) => o.clone(),
                (None, [one]) => one.clone(),
                (None, _) => PathBuf::from("plots"),
            };
            // A sweep's directory: redraw its charts in place.
            let written = match runs.as_slice() {
                [one] if cli.out.is_none() && plot::is_sweep_dir(one) => plot::replot_sweep(one)?,
                _ => plot::plot_runs(runs, &out)?,
            };
            for p in written {
                println!("{}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Bench {
            quick,
            ref workload,
        }) => ok(commands::bench::run(commands::bench::BenchOptions {
            backend: cli.backend.unwrap_or_default(),
            quick,
            workloads: workload.clone(),
        })),
        Some(Command::Train) => train(cli),
        Some(Command::Sweep {
            ref t,
            ref layers,
            ref methods,
            seeds,
            ref vary,
        }) => {
            let path = cli
                .config
                .clone()
                .context("sweep needs --config FILE (e.g. configs/copy.toml)")?;
            let overrides = Overrides {
                set: cli.set.clone(),
                steps: cli.steps,
                out_dir: cli.out.clone(),
                backend: cli.backend,
            };
            let task = config::Config::load(&path, &overrides)?.task;
            if task == config::Task::Mnist {
                if !t.is_empty() || vary.is_some() {
                    anyhow::bail!(
                        "an MNIST sweep takes --layers and --methods (with settings such as \
                         cdni+p_update=0.2), not --t or --vary"
                    );
                }
                let rows = match methods.as_slice() {
                    [] => vec!["bp".to_string(), "dni".into(), "cdni".into()],
                    given => given.to_vec(),
                };
                let opts = experiments::mnist_sweep::MnistSweepOptions {
                    layers: layers.clone(),
                    rows: rows
                        .iter()
                        .map(|r| experiments::mnist_sweep::RowSpec::parse(r))
                        .collect::<anyhow::Result<_>>()?,
                    seeds,
                };
                return ok(experiments::mnist_sweep::run(&path, &overrides, &opts));
            }
            if !layers.is_empty() {
                anyhow::bail!("--layers is for MNIST sweeps; a Copy sweep takes --t");
            }
            let opts = experiments::sweep::SweepOptions {
                ts: t.clone(),
                methods: match methods.as_slice() {
                    [] => vec!["bptt".to_string(), "dni".into(), "dni_aux".into()],
                    given => given.to_vec(),
                },
                seeds,
                vary: vary
                    .as_deref()
                    .map(experiments::sweep::Vary::parse)
                    .transpose()?,
            };
            ok(experiments::sweep::run(&path, &overrides, &opts))
        }
        None if cli.config.is_some() => train(cli),
        None => anyhow::bail!(
            "nothing to do: give --config FILE to train (examples in configs/), or a command \
             (devices, bench); see dni-train --help"
        ),
    }
}

/// `dni-train --resume DIR [--steps N]`.
fn resume(dir: &std::path::Path, steps: Option<u64>) -> anyhow::Result<ExitCode> {
    if !dir.is_dir() {
        anyhow::bail!(
            "--resume {}: not a run directory (give the directory a run created, e.g. runs/NAME)",
            dir.display()
        );
    }
    let cfg_path = dir.join("config.toml");
    let overrides = Overrides {
        steps,
        ..Default::default()
    };
    let cfg = Config::load(&cfg_path, &overrides)
        .with_context(|| format!("--resume {}", dir.display()))?;
    if !experiments::checkpoints(cfg.task) {
        anyhow::bail!(
            "--resume {}: task {} does not write checkpoints",
            dir.display(),
            cfg.task.name()
        );
    }
    let ck_path = dir.join(checkpoint::FILE);
    let ck = checkpoint::read(&ck_path)?;
    checkpoint::check_config(&ck, &cfg, &ck_path)?;
    if ck.step >= cfg.steps() {
        anyhow::bail!(
            "--resume {}: the checkpoint is at step {} and the step budget is {}; give \
             --steps N with N > {} to train further",
            dir.display(),
            ck.step,
            cfg.steps(),
            ck.step
        );
    }
    eprintln!(
        "resuming {} from step {} (budget {})",
        dir.display(),
        ck.step,
        cfg.steps()
    );
    let run_dir = RunDir::reopen(dir, &cfg, ck.step)?;
    let control = RunControl::for_run(dir, &cfg, Some(ck))?;
    run_training(&cfg, run_dir, control)
}

fn train(cli: Cli) -> anyhow::Result<ExitCode> {
    let path = cli
        .config
        .context("train needs --config FILE (examples in configs/)")?;
    let overrides = Overrides {
        set: cli.set,
        steps: cli.steps,
        out_dir: cli.out,
        backend: cli.backend,
    };
    let cfg = Config::load(&path, &overrides)?;
    let run_dir = RunDir::create(&cfg)?;
    eprintln!("run directory: {}", run_dir.path().display());
    let control = if experiments::checkpoints(cfg.task) {
        RunControl::for_run(run_dir.path(), &cfg, None)?
    } else {
        RunControl::none()
    };
    run_training(&cfg, run_dir, control)
}

/// Trains `cfg` into `run_dir` and writes the summary: `ok`, `interrupted` (exit 130 / 143),
/// `diverged` or `failed`.
fn run_training(
    cfg: &Config,
    mut run_dir: RunDir,
    mut control: RunControl,
) -> anyhow::Result<ExitCode> {
    if experiments::stops_on_signals(cfg.task) {
        interrupt::install()?;
    }
    let title = run_dir
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| cfg.run_label());
    let mut progress = Progress::new(&title, cfg.steps());
    let result = experiments::run(cfg, &mut run_dir, &mut progress, &mut control);
    // Curves of whatever was logged, also for runs that stopped early.
    if let Err(e) = plot::plot_runs(&[run_dir.path().to_path_buf()], run_dir.path()) {
        eprintln!("warning: no curves.svg: {e:#}");
    }
    match result {
        Ok(mut summary) => {
            let status = match control.stopped_by {
                Some(_) => "interrupted",
                None => "ok",
            };
            if let Some(obj) = summary.as_object_mut() {
                obj.entry("status").or_insert(status.into());
                obj.extend(control.summary_fields());
            }
            run_dir.write_summary(summary)?;
            if let Some(sig) = control.stopped_by {
                let at = control
                    .last_checkpoint
                    .as_ref()
                    .map_or("no checkpoint".to_string(), |(s, p)| {
                        format!("checkpoint at step {s} in {}", p.display())
                    });
                progress.finish(&format!("interrupted by {}", sig.name()));
                if control.checkpoints() {
                    eprintln!(
                        "interrupted by {}: {at}\nresume with: dni-train --resume {}",
                        sig.name(),
                        run_dir.path().display()
                    );
                } else {
                    eprintln!(
                        "interrupted by {}: task {} writes no checkpoints; the results so far are \
                         in {}",
                        sig.name(),
                        cfg.task.name(),
                        run_dir.path().display()
                    );
                }
                return Ok(ExitCode::from(sig.exit_code()));
            }
            progress.finish(&format!("results in {}", run_dir.path().display()));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            // Keep a record of the failure next to the config that caused it.
            let mut record = serde_json::json!({ "status": "failed", "error": format!("{e:#}") });
            if let Some(d) = e.downcast_ref::<checkpoint::Diverged>() {
                record = serde_json::json!({
                    "status": "diverged",
                    "error": format!("{e:#}"),
                    "diverged_at_step": d.step,
                    "diverged_metric": d.metric,
                });
            }
            if let Some(obj) = record.as_object_mut() {
                obj.extend(control.summary_fields());
            }
            if let Err(write_err) = run_dir.write_summary(record) {
                eprintln!("warning: {write_err:#}");
            }
            Err(e)
        }
    }
}
