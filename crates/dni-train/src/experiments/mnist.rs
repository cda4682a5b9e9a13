//! MNIST with decoupled layers (paper 3.3): an FCN of `layers` hidden layers (Linear, batch norm,
//! ReLU) trained by backprop, no backprop, DNI or cDNI, optionally with `p_update`, BP(λ) or complete
//! unlock; every layer is a block of its own. Training metrics are read back every `log_every`
//! steps, the test error every `eval_every` steps; the result is the final test error.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use dni_graph::ff::{
    EvalSet, FfNet, FfSpec, InterfaceSpec, Schedule, SgSpec, StepStats, SynthInputSpec,
};
use dni_kernels::Gpu;
use dni_tasks::{mnist::CLASSES, EpochShuffler, Mnist};
use serde::{Deserialize, Serialize};

use super::Experiment;
use crate::checkpoint::{self, Checkpoint, Poll, RunControl};
use crate::config::{
    default_mnist_dir, default_momentum, default_one, default_one_usize, default_true, serde_name,
    Config, OptimKind, Section, Validator,
};
use crate::progress::{Metrics as Shown, Progress};

/// Feed-forward training method (paper 3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MnistMethod {
    /// Only the output layer learns (a lower bound).
    Nobp,
    /// Ordinary backpropagation.
    Bp,
    /// Synthetic gradients from the activations.
    Dni,
    /// Synthetic gradients conditioned on the label.
    Cdni,
}

impl MnistMethod {
    pub fn uses_sg(self) -> bool {
        matches!(self, MnistMethod::Dni | MnistMethod::Cdni)
    }
}

/// `[mnist]`: the feed-forward MNIST experiments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MnistConfig {
    /// Directory with the four IDX files (gzipped or not).
    #[serde(default = "default_mnist_dir")]
    pub data_dir: PathBuf,
    /// Hidden layers.
    #[serde(default = "default_layers")]
    pub layers: usize,
    /// Units per hidden layer.
    #[serde(default = "default_hidden")]
    pub hidden: usize,
    #[serde(default = "default_hidden")]
    pub batch: usize,
    pub steps: u64,
    #[serde(default)]
    pub optimizer: OptimKind,
    pub lr: f64,
    /// SGD momentum (ignored by Adam).
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    pub method: MnistMethod,
    /// Units per hidden layer of the SG model (batch norm, ReLU; the paper's DNI model is 2 × 1024);
    /// 0 (the default) is a linear model. cDNI's model also reads the one-hot label.
    #[serde(default)]
    pub sg_hidden: usize,
    /// Hidden layers of the SG model when `sg_hidden` > 0.
    #[serde(default = "default_one_usize")]
    pub sg_layers: usize,
    /// Learning rate of the SG (and synthetic-input) models; default `lr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sg_lr: Option<f64>,
    /// Optimiser kind of the SG (and synthetic-input) models; default `optimizer` (with
    /// `momentum` for SGD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sg_optimizer: Option<OptimKind>,
    /// Probability that a block runs its backward pass and update on a step.
    #[serde(default = "default_one")]
    pub p_update: f64,
    /// Complete unlock: synthetic inputs as well as synthetic gradients.
    #[serde(default)]
    pub unlock: bool,
    /// BP(λ): `λ·true + (1-λ)·synthetic` gradient; 0 = purely synthetic.
    #[serde(default)]
    pub lambda: f64,
    /// Steps between test-set evaluations.
    #[serde(default = "default_mnist_eval_every")]
    pub eval_every: u64,
    /// Steps between SG fidelity probes (0: off): each interface's delivered gradient scored against
    /// backprop's true gradient on a fixed training batch (`probe_cosine` in metrics.jsonl).
    #[serde(default)]
    pub probe_every: u64,
    /// Run each block on its own worker thread.
    #[serde(default = "default_true")]
    pub threads: bool,
}

impl MnistConfig {
    /// Whether the SG model has hidden layers (an MLP) rather than being linear.
    pub fn sg_is_mlp(&self) -> bool {
        self.sg_hidden > 0 && self.sg_layers > 0
    }
}

fn default_layers() -> usize {
    4
}

fn default_hidden() -> usize {
    256
}

fn default_mnist_eval_every() -> u64 {
    200
}

impl Section for MnistConfig {
    fn check(&self, v: &mut Validator, base: &Path) {
        let m = self;
        v.check_sizes(
            "mnist",
            &[("mnist.hidden", m.hidden), ("mnist.sg_hidden", m.sg_hidden)],
            m.batch,
            1,
        );
        v.check_f32("mnist.p_update", m.p_update);
        v.check_f32("mnist.lambda", m.lambda);
        if let Some(lr) = m.sg_lr {
            v.check_f32("mnist.sg_lr", lr);
        }
        if !base.join(&m.data_dir).is_dir() {
            v.check(
                false,
                "mnist.data_dir",
                format!("{:?}", m.data_dir.display().to_string()),
                &format!(
                    "no such directory (relative paths start at {}); it must hold the four MNIST IDX files",
                    base.display()
                ),
            );
        }
        v.check(
            m.layers >= 1,
            "mnist.layers",
            m.layers,
            "needs at least 1 hidden layer",
        );
        // The network's own limits (sizes, batch, p_update, λ), as the library states them; the
        // input width does not matter to them.
        v.check_library(
            "mnist",
            crate::experiments::mnist::spec(m, 1, 0).problems(),
            |field| match field {
                "interfaces.lambda" => "lambda",
                "interfaces.sg.hidden_layers" => "sg_hidden",
                other => other,
            },
        );
        v.check_training("mnist", m.steps, m.lr, m.momentum, m.sg_lr);
        if m.sg_hidden > 0 {
            v.check(
                m.sg_layers >= 1,
                "mnist.sg_layers",
                m.sg_layers,
                "an SG model with sg_hidden > 0 needs at least 1 hidden layer (or set sg_hidden = 0 for a linear one)",
            );
        }
        v.check(
            m.eval_every >= 1,
            "mnist.eval_every",
            m.eval_every,
            "must be at least 1 step",
        );
        let method = serde_name(&m.method);
        if !m.method.uses_sg() {
            let why = format!("only applies to method dni or cdni, not {method}");
            v.check(!m.unlock, "mnist.unlock", m.unlock, &why);
            v.check(m.p_update == 1.0, "mnist.p_update", m.p_update, &why);
            v.check(m.lambda == 0.0, "mnist.lambda", m.lambda, &why);
        }
    }
}

/// The network and training algorithm `[mnist]` describes, for `input` features.
pub fn spec(m: &MnistConfig, input: usize, seed: u64) -> FfSpec {
    let optim_of = |kind: OptimKind, lr: f64| kind.config(lr as f32, m.momentum as f32);
    let optim = |lr: f64| optim_of(m.optimizer, lr);
    let mut spec = FfSpec::backprop(
        input,
        vec![m.hidden; m.layers],
        CLASSES,
        m.batch,
        optim(m.lr),
    );
    spec.seed = seed;
    // One rule for SG defaults: the network's own optimiser and rate unless set.
    spec.sg_optim = match (m.sg_optimizer, m.sg_lr) {
        (None, None) => None,
        (kind, lr) => Some(optim_of(kind.unwrap_or(m.optimizer), lr.unwrap_or(m.lr))),
    };
    let sg = |conditioned: bool| match m.sg_is_mlp() {
        true => SgSpec::mlp(vec![m.sg_hidden; m.sg_layers], conditioned),
        false => SgSpec::linear(conditioned),
    };
    // BP(λ) applies to the SG methods (the config rejects a λ on the others).
    let with_lambda = |iface: InterfaceSpec| InterfaceSpec {
        lambda: m.lambda as f32,
        ..iface
    };
    let iface = match m.method {
        MnistMethod::Bp => InterfaceSpec::backprop(),
        MnistMethod::Nobp => InterfaceSpec::cut(),
        MnistMethod::Dni => with_lambda(InterfaceSpec::dni(sg(false))),
        MnistMethod::Cdni => with_lambda(InterfaceSpec::dni(sg(true))),
    };
    spec = spec.with_interfaces(iface);
    spec.p_update = m.p_update as f32;
    if m.unlock {
        spec.synthetic_input = Some(SynthInputSpec { hidden: Vec::new() });
    }
    spec
}

/// One `metrics.jsonl` record, written at every log and evaluation step.
#[derive(Debug, Serialize)]
pub struct MnistRecord {
    pub step: u64,
    pub wall_s: f64,
    /// Mean cross-entropy and error of the training batches since the last record (with complete
    /// unlock the output block scores its synthetic input).
    pub train_loss: Option<f64>,
    pub train_error: Option<f64>,
    pub test_error: Option<f64>,
    pub test_loss: Option<f64>,
    /// Per interface: mean per-example ½‖M(h) − batch·δ‖².
    pub sg_loss: Vec<Option<f64>>,
    /// Per block but the first (complete unlock): mean per-example ½‖I(x) − h‖².
    pub input_loss: Vec<Option<f64>>,
    /// Per interface, at a probe step (`mnist.probe_every`): cosine and explained fraction of the
    /// gradient the sender updates with against backprop's true gradient, and the SG model's own
    /// cosine (None without an SG model), on a fixed training batch.
    pub probe_cosine: Option<Vec<f64>>,
    pub probe_explained: Option<Vec<f64>>,
    pub probe_sg_cosine: Option<Vec<Option<f64>>>,
    /// Per interface: cosine of the sender's parameter gradient from the delivered gradient
    /// against backprop's (the batch's sum, where per-example label noise averages out).
    pub probe_update_cosine: Option<Vec<f64>>,
    pub ms_per_step: f64,
    pub submissions_per_step: f64,
    pub host_waits_per_step: f64,
    pub sg_staleness: f64,
}

/// The summary of a run.
#[derive(Debug, Serialize)]
pub struct MnistOutcome {
    pub task: &'static str,
    pub method: &'static str,
    pub layers: usize,
    pub hidden: usize,
    pub batch: usize,
    pub sg_model: Option<&'static str>,
    pub p_update: f64,
    pub unlock: bool,
    pub lambda: f64,
    pub schedule: &'static str,
    pub steps: u64,
    pub train_examples: usize,
    pub test_examples: usize,
    /// Test error before training and at the end.
    pub initial_test_error: f64,
    pub final_test_error: f64,
    pub best_test_error: f64,
    pub final_train_error: Option<f64>,
    pub wall_clock_s: f64,
    pub ms_per_step: f64,
    pub submissions_per_step: f64,
    pub host_waits_per_step: f64,
    pub waits_input: u64,
    pub waits_grad: u64,
    pub waits_ring: u64,
    pub gpu_waits: u64,
    pub sg_staleness: f64,
    /// The last probe's delivered-gradient and parameter-update cosines per interface (when
    /// `mnist.probe_every` > 0).
    pub final_probe_cosine: Option<Vec<f64>>,
    pub final_probe_update_cosine: Option<Vec<f64>>,
    pub adapter: String,
}

fn method_name(m: MnistMethod) -> &'static str {
    match m {
        MnistMethod::Nobp => "nobp",
        MnistMethod::Bp => "bp",
        MnistMethod::Dni => "dni",
        MnistMethod::Cdni => "cdni",
    }
}

/// This task as an [`Experiment`].
pub struct MnistExperiment;

impl Experiment for MnistExperiment {
    type Record = MnistRecord;
    type Outcome = MnistOutcome;

    fn train_with(
        gpu: &Gpu,
        cfg: &Config,
        progress: &mut Progress,
        control: &mut RunControl,
        on_log: &mut dyn FnMut(&MnistRecord) -> anyhow::Result<()>,
    ) -> anyhow::Result<MnistOutcome> {
        train_with(gpu, cfg, progress, control, on_log)
    }

    fn summary_line(outcome: &MnistOutcome) -> String {
        format!(
        "test error {:.2}% after {} steps (best {:.2}%, untrained {:.2}%), {:.0} s, {:.1} ms/step",
        100.0 * outcome.final_test_error,
        outcome.steps,
        100.0 * outcome.best_test_error,
        100.0 * outcome.initial_test_error,
        outcome.wall_clock_s,
        outcome.ms_per_step
    )
    }
}

/// Trains per `cfg`, calling `on_log` with every record, with checkpoints, resume and interrupts
/// (checked at every logging or evaluation point, where the blocks' work is submitted; a
/// checkpoint is written at the first such point past each multiple of `run.checkpoint_every`, at
/// the end and on an interrupt) and divergence checks per `control`. The single-thread schedule
/// resumes bit-exactly; the threaded one resumes but is not bit-exact (`resume_bit_exact: false`).
pub fn train_with(
    gpu: &Gpu,
    cfg: &Config,
    progress: &mut Progress,
    control: &mut RunControl,
    mut on_log: impl FnMut(&MnistRecord) -> anyhow::Result<()>,
) -> anyhow::Result<MnistOutcome> {
    let m = cfg
        .mnist
        .as_ref()
        .context("task = \"mnist\" needs an [mnist] section")?;
    let data = Mnist::load_dir(&m.data_dir)
        .with_context(|| format!("loading MNIST from {}", m.data_dir.display()))?;
    let input = data.train.pixels();
    let spec = spec(m, input, cfg.seed);
    let mut net = FfNet::new(gpu, spec).context("building the network")?;
    let test_labels: Vec<u32> = data.test.labels.iter().map(|&l| l as u32).collect();
    let test = EvalSet::new(gpu, input, &data.test.images, &test_labels, 1000)
        .context("uploading the test set")?;
    let schedule = if m.threads {
        Schedule::Threaded
    } else {
        Schedule::SingleThread
    };
    let mut shuffler =
        EpochShuffler::new(data.train.n, m.batch, cfg.seed).context("batching the training set")?;
    let train_set = &data.train;
    // The probe's fixed batch: the first `batch` training digits, apart from the shuffled stream.
    let (mut probe_x, mut probe_y) = (Vec::new(), Vec::new());
    if m.probe_every > 0 {
        let first: Vec<usize> = (0..m.batch.min(train_set.n)).collect();
        train_set.batch(&first, &mut probe_x, &mut probe_y);
    }
    let mut last_probe: Option<Vec<f64>> = None;
    let mut last_update: Option<Vec<f64>> = None;

    let mut step = 0u64;
    let mut host = match control.take_resume() {
        Some(ck) => {
            let h = restore(&mut net, &mut shuffler, &ck)?;
            step = ck.step;
            progress.set_step(step);
            if m.threads {
                progress.println(
                    "resuming the threaded schedule: its SG regressions depend on thread timing, \
                     so the resumed run is not bit-exact (resume_bit_exact: false)",
                );
            }
            h
        }
        None => {
            let initial = net
                .evaluate(&test)
                .context("evaluating the untrained network")?;
            progress.println(&format!(
                "untrained test error {:.2}%",
                100.0 * initial.error
            ));
            HostState {
                stream: shuffler.clone(),
                initial_test_error: initial.error,
                best_test_error: initial.error,
                last_test_error: initial.error,
                last_train_error: None,
            }
        }
    };
    // The single-thread schedule is deterministic; the threaded one is not.
    control.bit_exact = Some(!m.threads);
    let log_every = cfg.run.log_every.max(1);
    let started = Instant::now();
    let mut totals = StepStats::default();
    let initial_error = host.initial_test_error;
    let (mut best, mut last_test, mut last_train) = (
        host.best_test_error,
        host.last_test_error,
        host.last_train_error,
    );
    while step < m.steps {
        host.best_test_error = best;
        host.last_test_error = last_test;
        host.last_train_error = last_train;
        if control.poll(step, || snapshot(&net, &shuffler, &host))? == Poll::Stop {
            break;
        }
        let mut source =
            |x: &mut Vec<f32>, y: &mut Vec<u32>| train_set.batch(shuffler.next_batch(), x, y);
        // Run up to the next log or evaluation point; each call ends with every block's work submitted.
        let next = [
            (step / log_every + 1) * log_every,
            (step / m.eval_every + 1) * m.eval_every,
            match m.probe_every {
                0 => m.steps,
                k => (step / k + 1) * k,
            },
            m.steps,
        ]
        .into_iter()
        .min()
        .unwrap_or(m.steps);
        let stats = net
            .train(next - step, &mut source, schedule)
            .with_context(|| format!("training steps {}..{}", step + 1, next))?;
        totals.add(&stats);
        step = next;
        progress.set_step(step);
        let log_now = step.is_multiple_of(log_every) || step == m.steps;
        let eval_now = step.is_multiple_of(m.eval_every) || step == m.steps;
        let tm = if log_now {
            Some(net.take_metrics().context("reading the metrics back")?)
        } else {
            None
        };
        let ev = if eval_now {
            Some(net.evaluate(&test).context("evaluating")?)
        } else {
            None
        };
        let probed = if m.probe_every > 0 && (step.is_multiple_of(m.probe_every) || step == m.steps)
        {
            Some(
                net.probe_sg(&probe_x, &probe_y)
                    .context("probing the synthetic gradients")?,
            )
        } else {
            None
        };
        if let Some(e) = &ev {
            best = best.min(e.error);
            last_test = e.error;
        }
        let train_error = tm.as_ref().filter(|t| t.examples > 0).map(|t| t.error);
        if train_error.is_some() {
            last_train = train_error;
        }
        let wall = started.elapsed().as_secs_f64();
        let record = MnistRecord {
            step,
            wall_s: wall,
            train_loss: tm.as_ref().filter(|t| t.examples > 0).map(|t| t.loss),
            train_error,
            test_error: ev.map(|e| e.error),
            test_loss: ev.map(|e| e.loss),
            sg_loss: tm.as_ref().map(|t| t.sg_loss.clone()).unwrap_or_default(),
            input_loss: tm
                .as_ref()
                .map(|t| t.input_loss.clone())
                .unwrap_or_default(),
            probe_cosine: probed
                .as_ref()
                .map(|p| p.iter().map(|f| f.delivered.cosine).collect()),
            probe_explained: probed
                .as_ref()
                .map(|p| p.iter().map(|f| f.delivered.explained).collect()),
            probe_sg_cosine: probed
                .as_ref()
                .map(|p| p.iter().map(|f| f.sg.map(|s| s.cosine)).collect()),
            probe_update_cosine: probed
                .as_ref()
                .map(|p| p.iter().map(|f| f.update.cosine).collect()),
            ms_per_step: 1e3 * wall / step as f64,
            submissions_per_step: totals.submissions_per_step(),
            host_waits_per_step: totals.host_waits_per_step(),
            sg_staleness: totals.mean_sg_staleness(),
        };
        let mut shown = Shown::new();
        if let (Some(l), Some(e)) = (record.train_loss, record.train_error) {
            shown.push("loss", format!("{l:.3}"));
            shown.push("train err", format!("{:.2}%", 100.0 * e));
        }
        shown.push("test err", format!("{:.2}%", 100.0 * last_test));
        if let Some(c) = &record.probe_cosine {
            last_probe = Some(c.clone());
            last_update = record.probe_update_cosine.clone();
        }
        let each = |c: &[f64]| {
            c.iter()
                .map(|v| format!("{v:.2}"))
                .collect::<Vec<_>>()
                .join("/")
        };
        if let Some(c) = &last_probe {
            shown.push("sg cos", each(c));
        }
        if let Some(c) = &last_update {
            shown.push("update cos", each(c));
        }
        progress.update(step, &shown);
        if let Some(e) = record.test_error {
            progress.println(&format!("step {step}: test error {:.2}%", 100.0 * e));
        }
        on_log(&record)?;
        control.check_finite(step, "train_loss", record.train_loss)?;
        control.check_finite(step, "test_loss", record.test_loss)?;
        for (i, l) in record.sg_loss.iter().enumerate() {
            control.check_finite(step, &format!("sg_loss[{i}]"), *l)?;
        }
    }
    host.best_test_error = best;
    host.last_test_error = last_test;
    host.last_train_error = last_train;
    control.save(step, || snapshot(&net, &shuffler, &host))?;
    if control.checkpoints() {
        control.params_sha256 = Some(params_sha256(&net)?);
    }
    let wall = started.elapsed().as_secs_f64();
    Ok(MnistOutcome {
        task: cfg.task.name(),
        method: method_name(m.method),
        layers: m.layers,
        hidden: m.hidden,
        batch: m.batch,
        sg_model: m.method.uses_sg().then_some(match m.sg_is_mlp() {
            true => "mlp",
            false => "linear",
        }),
        p_update: m.p_update,
        unlock: m.unlock,
        lambda: m.lambda,
        schedule: if m.threads {
            "threaded"
        } else {
            "single-thread"
        },
        steps: step,
        train_examples: data.train.n,
        test_examples: data.test.n,
        initial_test_error: initial_error,
        final_test_error: last_test,
        best_test_error: best,
        final_train_error: last_train,
        wall_clock_s: wall,
        ms_per_step: 1e3 * wall / step.max(1) as f64,
        submissions_per_step: totals.submissions_per_step(),
        host_waits_per_step: totals.host_waits_per_step(),
        waits_input: totals.waits_input,
        waits_grad: totals.waits_grad,
        waits_ring: totals.waits_ring,
        gpu_waits: totals.gpu_waits,
        sg_staleness: totals.mean_sg_staleness(),
        final_probe_cosine: last_probe,
        final_probe_update_cosine: last_update,
        adapter: gpu.adapter().to_string(),
    })
}

/// The host part of a checkpoint: the batches' order and the evaluations so far. (Throughput
/// counters restart at a resume.)
#[derive(Serialize, serde::Deserialize)]
struct HostState {
    stream: EpochShuffler,
    initial_test_error: f64,
    best_test_error: f64,
    last_test_error: f64,
    last_train_error: Option<f64>,
}

type Snapshot = (
    serde_json::Value,
    Vec<(String, dni_graph::recurrent::StateBuf)>,
);

/// The host state and the network's buffers, for a checkpoint.
fn snapshot(net: &FfNet, shuffler: &EpochShuffler, host: &HostState) -> anyhow::Result<Snapshot> {
    let mut value = serde_json::to_value(host).context("serialising the MNIST host state")?;
    value["stream"] =
        serde_json::to_value(shuffler).context("serialising the MNIST batch order")?;
    let state = net
        .export_state()
        .context("reading the training state back")?;
    Ok((serde_json::json!({ "mnist": value }), state))
}

/// Restores a checkpoint [`snapshot`] wrote; returns its host state.
fn restore(
    net: &mut FfNet,
    shuffler: &mut EpochShuffler,
    ck: &Checkpoint,
) -> anyhow::Result<HostState> {
    let host: HostState = serde_json::from_value(ck.host["mnist"].clone())
        .context("the checkpoint's MNIST state does not parse")?;
    host.stream
        .check_restored(shuffler)
        .context("the checkpoint's batch order")?;
    net.import_state(&ck.state)
        .context("restoring the feed-forward network")?;
    if net.step() != ck.step {
        anyhow::bail!(
            "the checkpoint is at step {} but its network trained {} steps",
            ck.step,
            net.step()
        );
    }
    *shuffler = host.stream.clone();
    Ok(host)
}

/// SHA-256 of every parameter (blocks, then SG and synthetic-input models), as
/// [`checkpoint::sha256_named`] hashes them.
fn params_sha256(net: &FfNet) -> anyhow::Result<String> {
    let gpu = net.gpu().clone();
    let mut params = Vec::new();
    for i in 0..net.num_blocks() {
        for (kind, ps) in [
            ("block", net.block_params(i)),
            ("sg", net.sg_params(i)),
            ("synth", net.synth_params(i)),
        ] {
            for (n, p) in ps {
                let v = gpu.read(&p.value).context("reading the parameters back")?;
                params.push((format!("{kind}{i}.{n}"), v));
            }
        }
    }
    Ok(checkpoint::sha256_named(params))
}
