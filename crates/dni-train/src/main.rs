//! `dni-train`: runs the DNI experiments described by TOML configs (see `configs/`).

mod commands;
mod config;
mod experiments;
mod progress;
mod run_dir;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Backend, Config, Overrides};
use crate::progress::Progress;
use crate::run_dir::RunDir;

#[derive(Parser, Debug)]
#[command(
    name = "dni-train",
    version,
    about = "Train networks with Decoupled Neural Interfaces (synthetic gradients) on the GPU",
    after_help = "Examples:\n  dni-train --config configs/copy.toml\n  dni-train --config configs/charlm.toml --set rnn.T=8 --steps 500\n  dni-train devices"
)]
struct Cli {
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
    #[arg(long, value_enum, global = true)]
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
    /// Train a grid of truncation lengths × methods on a Copy / Repeat Copy config under one step
    /// budget and print the largest episode length solved (the paper's Table 1).
    Sweep {
        /// Truncation lengths, e.g. --t 2,3,4,5,8.
        #[arg(
            long = "t",
            value_name = "T,..",
            value_delimiter = ',',
            required = true
        )]
        t: Vec<usize>,
        /// Methods, e.g. --methods bptt,dni,dni_aux.
        #[arg(
            long,
            value_name = "M,..",
            value_delimiter = ',',
            default_value = "bptt,dni,dni_aux"
        )]
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Devices) => commands::devices::run(cli.backend.unwrap_or_default()),
        Some(Command::Bench {
            quick,
            ref workload,
        }) => commands::bench::run(commands::bench::BenchOptions {
            backend: cli.backend.unwrap_or_default(),
            quick,
            workloads: workload.clone(),
        }),
        Some(Command::Train) => train(cli),
        Some(Command::Sweep {
            ref t,
            ref methods,
            seeds,
            ref vary,
        }) => {
            let opts = experiments::sweep::SweepOptions {
                ts: t.clone(),
                methods: methods.clone(),
                seeds,
                vary: vary
                    .as_deref()
                    .map(experiments::sweep::Vary::parse)
                    .transpose()?,
            };
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
            experiments::sweep::run(&path, &overrides, &opts)
        }
        None if cli.config.is_some() => train(cli),
        None => anyhow::bail!(
            "nothing to do: give --config FILE to train (examples in configs/), or a command \
             (devices, bench); see dni-train --help"
        ),
    }
}

fn train(cli: Cli) -> anyhow::Result<()> {
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
    let mut run_dir = RunDir::create(&cfg)?;
    let title = run_dir
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| cfg.run_label());
    eprintln!("run directory: {}", run_dir.path().display());
    let mut progress = Progress::new(&title, cfg.steps());
    match experiments::run(&cfg, &mut run_dir, &mut progress) {
        Ok(mut summary) => {
            if let Some(obj) = summary.as_object_mut() {
                obj.entry("status").or_insert("ok".into());
            }
            run_dir.write_summary(summary)?;
            progress.finish(&format!("results in {}", run_dir.path().display()));
            Ok(())
        }
        Err(e) => {
            // Keep a record of the failure next to the config that caused it.
            let failed = serde_json::json!({ "status": "failed", "error": format!("{e:#}") });
            if let Err(write_err) = run_dir.write_summary(failed) {
                eprintln!("warning: {write_err:#}");
            }
            Err(e)
        }
    }
}
