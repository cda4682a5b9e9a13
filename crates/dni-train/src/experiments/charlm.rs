//! Character-level language modelling (paper 3.1): an LSTM reads one character per step and predicts
//! the next, trained with truncated BPTT (optionally DNI). Validation BPC every `eval_every` steps
//! drives early stopping; the reported test BPC is the one at the lowest validation BPC.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use dni_graph::recurrent::{OutputLoss, RecurrentTrainer, TokenWindow};
use dni_kernels::Gpu;
use dni_tasks::{CharStream, Corpus, EvalStream, TextFile};
use serde::{Deserialize, Serialize};

use super::Experiment;
use crate::checkpoint::{self, Poll, RunControl};
use crate::config::{Config, Section, Validator};
use crate::progress::{Metrics as Shown, Progress};

/// Text file format of the char-LM corpus.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorpusFormat {
    /// Every character is a symbol.
    #[default]
    Plain,
    /// Character-level Penn Treebank (space-separated symbols, one sentence a line).
    Ptb,
}

impl From<CorpusFormat> for dni_tasks::TextFormat {
    fn from(f: CorpusFormat) -> Self {
        match f {
            CorpusFormat::Plain => dni_tasks::TextFormat::Plain,
            CorpusFormat::Ptb => dni_tasks::TextFormat::PtbChar,
        }
    }
}

/// `[charlm]`: character-level language modelling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CharLmConfig {
    /// Training text. Without `valid` and `test` it is split 0.9 / 0.05 / 0.05.
    pub train: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<PathBuf>,
    #[serde(default)]
    pub format: CorpusFormat,
    /// Steps between validation runs.
    #[serde(default = "default_eval_every")]
    pub eval_every: u64,
    /// Evaluate on at most this many characters (the whole split when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_chars: Option<usize>,
    /// Stop after this many evaluations without a better validation BPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patience: Option<u32>,
    /// Stop, and report the wall-clock time, when validation BPC reaches this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_bpc: Option<f64>,
}

fn default_eval_every() -> u64 {
    500
}

impl Section for CharLmConfig {
    fn check(&self, v: &mut Validator, base: &Path) {
        let c = self;
        v.check_file("charlm.train", &c.train, base);
        match (&c.valid, &c.test) {
            (Some(valid), Some(test)) => {
                v.check_file("charlm.valid", valid, base);
                v.check_file("charlm.test", test, base);
            }
            (None, None) => {}
            _ => v.problem(
                "charlm.valid and charlm.test go together: give both, or neither to split charlm.train \
                 0.9/0.05/0.05"
                    .to_string(),
            ),
        }
        v.check(
            c.eval_every >= 1,
            "charlm.eval_every",
            c.eval_every,
            "must be at least 1 step",
        );
        if let Some(n) = c.eval_chars {
            v.check(
                n >= 1,
                "charlm.eval_chars",
                n,
                "must be at least 1 (remove it to evaluate everything)",
            );
        }
        if let Some(p) = c.patience {
            v.check(
                p >= 1,
                "charlm.patience",
                p,
                "must be at least 1 evaluation (remove it to disable early stopping)",
            );
        }
        if let Some(b) = c.target_bpc {
            v.check(
                b.is_finite() && b > 0.0,
                "charlm.target_bpc",
                b,
                "must be > 0 bits per character",
            );
        }
    }
}

/// One `metrics.jsonl` record: training metrics every `log_every` steps, plus validation (and test,
/// at a new best) after an evaluation.
#[derive(Debug, Default, Serialize)]
pub struct CharLmRecord {
    pub step: u64,
    pub wall_s: f64,
    /// Characters trained on so far (steps × T × batch).
    pub chars_seen: u64,
    pub epoch: u64,
    pub train_bpc: Option<f64>,
    pub sg_loss: Option<f64>,
    pub sg_explained: Option<f64>,
    pub aux_loss: Option<f64>,
    /// The SG fidelity probe (`rnn.probe_every`), when it ran since the last record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_cos: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_explained: Option<f64>,
    /// The SG targets' running RMS `σ` (`rnn.sg_normalise` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sg_target_rms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_bpc: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_bpc: Option<f64>,
}

/// How a char-LM run ended.
#[derive(Clone, Debug, Serialize)]
pub struct CharLmOutcome {
    pub method: &'static str,
    #[serde(rename = "T")]
    pub t: usize,
    pub hidden: usize,
    pub batch: usize,
    pub vocab: usize,
    pub best_valid_bpc: Option<f64>,
    /// Test BPC at the lowest validation BPC (the paper's number).
    pub test_bpc_at_best: Option<f64>,
    pub best_step: Option<u64>,
    pub steps: u64,
    pub step_budget: u64,
    pub chars_seen: u64,
    /// Why the run ended: `budget`, `patience` or `target_bpc`.
    pub stopped_by: &'static str,
    pub target_bpc: Option<f64>,
    /// Wall-clock seconds and steps until validation BPC first reached `target_bpc`.
    pub seconds_to_target: Option<f64>,
    pub steps_to_target: Option<u64>,
    pub wall_clock_s: f64,
    pub adapter: String,
}

/// This task as an [`Experiment`].
pub struct CharLmExperiment;

impl Experiment for CharLmExperiment {
    type Record = CharLmRecord;
    type Outcome = CharLmOutcome;

    fn train_with(
        gpu: &Gpu,
        cfg: &Config,
        progress: &mut Progress,
        control: &mut RunControl,
        on_log: &mut dyn FnMut(&CharLmRecord) -> anyhow::Result<()>,
    ) -> anyhow::Result<CharLmOutcome> {
        train_with(gpu, cfg, progress, control, on_log)
    }

    fn summary_line(outcome: &CharLmOutcome) -> String {
        format!(
            "test {} bpc at the best validation {} bpc (step {}); {} steps, {:.0} s, stopped by {}",
            fmt_opt(outcome.test_bpc_at_best),
            fmt_opt(outcome.best_valid_bpc),
            outcome.best_step.unwrap_or(0),
            outcome.steps,
            outcome.wall_clock_s,
            outcome.stopped_by
        )
    }
}

/// Trains per `cfg` and calls `on_log` with every record, with checkpoints, resume, interrupts and divergence checks per `control`.
pub fn train_with(
    gpu: &Gpu,
    cfg: &Config,
    progress: &mut Progress,
    control: &mut RunControl,
    mut on_log: impl FnMut(&CharLmRecord) -> anyhow::Result<()>,
) -> anyhow::Result<CharLmOutcome> {
    let rnn = cfg.rnn.as_ref().context("charlm needs an [rnn] section")?;
    let lm = cfg
        .charlm
        .as_ref()
        .context("charlm needs a [charlm] section")?;
    let format = lm.format.into();
    let corpus = match (&lm.valid, &lm.test) {
        (Some(valid), Some(test)) => Corpus::load_files(
            TextFile {
                path: &lm.train,
                what: "charlm.train",
            },
            TextFile {
                path: valid,
                what: "charlm.valid",
            },
            TextFile {
                path: test,
                what: "charlm.test",
            },
            format,
        ),
        _ => Corpus::load(&lm.train, format, "charlm.train"),
    }
    .context("loading the text corpus")?;
    let vocab = corpus.vocab.len();
    progress.println(&format!(
        "corpus: {} symbols; train {} / valid {} / test {} characters",
        vocab,
        corpus.train.len(),
        corpus.valid.len(),
        corpus.test.len()
    ));
    let rcfg = rnn.trainer_config(vocab, vocab, OutputLoss::Softmax, cfg.seed);
    let method = rcfg.method.name();
    let mut trainer = RecurrentTrainer::new(gpu, rcfg).context("building the LSTM trainer")?;
    trainer.set_sg_apply(rnn.sg_apply && trainer.config().method.has_sg())?;
    let (probe_every, probe_steps) = (rnn.probe_every, rnn.probe_steps());
    let mut probe = None;
    let (mut future_in, mut future_tgt) = (Vec::new(), Vec::new());
    let mut stream = CharStream::new(&corpus.train, rnn.batch).context("charlm.train")?;
    let mut valid = EvalStream::new(&corpus.valid, rnn.batch, rnn.t, lm.eval_chars)
        .context("charlm validation split")?;
    let mut test = EvalStream::new(&corpus.test, rnn.batch, rnn.t, lm.eval_chars)
        .context("charlm test split")?;

    let started = Instant::now();
    let (mut ins, mut tgts) = (Vec::new(), Vec::new());
    let mut best: Option<(f64, f64, u64)> = None; // (valid, test, step)
    let mut evals_since_best = 0u32;
    let mut to_target: Option<(f64, u64)> = None;
    let mut stopped_by = "budget";
    let mut step = 0u64;
    let chars_per_step = (rnn.t * rnn.batch) as u64;
    if let Some(ck) = control.take_resume() {
        let h: LmHost = serde_json::from_value(ck.host["charlm"].clone())
            .context("the checkpoint's character-LM state does not parse")?;
        stream
            .seek(h.pos, h.epoch)
            .context("the checkpoint's position in charlm.train")?;
        (best, evals_since_best, to_target) = (h.best, h.evals_since_best, h.to_target);
        trainer
            .group_mut()
            .import_state(&ck.state)
            .context("restoring the training state")?;
        step = ck.step;
        progress.set_step(step);
    }
    control.bit_exact = Some(true);
    let snapshot = |trainer: &RecurrentTrainer,
                    stream: &CharStream,
                    best: Option<(f64, f64, u64)>,
                    evals_since_best: u32,
                    to_target: Option<(f64, u64)>| {
        let (pos, epoch) = stream.position();
        let host = LmHost {
            pos,
            epoch,
            best,
            evals_since_best,
            to_target,
        };
        let state = trainer
            .group()
            .export_state()
            .context("reading the training state back")?;
        Ok((serde_json::json!({ "charlm": host }), state))
    };
    while step < rnn.steps {
        if control.poll(step, || {
            snapshot(&trainer, &stream, best, evals_since_best, to_target)
        })? == Poll::Stop
        {
            break;
        }
        stream.next_window(rnn.t, &mut ins, &mut tgts);
        if rnn.lr_half_life.is_some() {
            trainer.set_lr(rnn.lr_at(step) as f32)?;
        }
        trainer
            .train_window_tokens(&ins, &tgts)
            .with_context(|| format!("training step {}", step + 1))?;
        step += 1;
        progress.set_step(step);
        if probe_every > 0 && step.is_multiple_of(probe_every) {
            // The characters the run will see next, from a copy of its stream.
            stream
                .clone()
                .next_window(probe_steps, &mut future_in, &mut future_tgt);
            let future = TokenWindow {
                inputs: &future_in,
                targets: &future_tgt,
            };
            probe = trainer
                .probe_tokens(&future, probe_steps)
                .with_context(|| format!("probing the SG at step {step}"))?;
        }
        let log_now = step.is_multiple_of(cfg.run.log_every) || step == rnn.steps;
        let eval_now = step.is_multiple_of(lm.eval_every) || step == rnn.steps;
        if !log_now && !eval_now {
            continue;
        }
        let m = trainer.read_metrics().context("reading the metrics back")?;
        let probed = probe.take();
        let mut rec = CharLmRecord {
            step,
            chars_seen: step * chars_per_step,
            epoch: stream.epoch(),
            train_bpc: m.bpc(),
            sg_loss: m.sg_loss_per_window(),
            sg_explained: m.sg_explained(),
            aux_loss: m.aux_loss_per_window(),
            probe_cos: probed.map(|p| p.cosine),
            probe_explained: probed.map(|p| p.explained),
            sg_target_rms: m.sg_target_rms,
            ..Default::default()
        };
        if eval_now {
            valid.reset();
            let v = trainer
                .evaluate_tokens(|i, o| valid.next_window(i, o))
                .context("validation")?
                .bpc();
            rec.valid_bpc = Some(v);
            if best.is_none_or(|(b, _, _)| v < b) {
                test.reset();
                let t = trainer
                    .evaluate_tokens(|i, o| test.next_window(i, o))
                    .context("test evaluation")?
                    .bpc();
                rec.test_bpc = Some(t);
                best = Some((v, t, step));
                evals_since_best = 0;
            } else {
                evals_since_best += 1;
            }
            progress.println(&format!(
                "step {step}: valid {v:.4} bpc{}",
                rec.test_bpc
                    .map_or(String::new(), |t| format!(", test {t:.4} bpc (new best)"))
            ));
            if let (Some(target), None) = (lm.target_bpc, to_target) {
                if v <= target {
                    to_target = Some((started.elapsed().as_secs_f64(), step));
                }
            }
        }
        rec.wall_s = started.elapsed().as_secs_f64();
        let mut shown = Shown::new();
        if let Some(b) = rec.train_bpc {
            shown.push("train bpc", format!("{b:.3}"));
        }
        if let Some((v, t, _)) = best {
            shown.push("best valid", format!("{v:.3}"));
            shown.push("test", format!("{t:.3}"));
        }
        if let Some(c) = rec.probe_cos {
            shown.push("probe cos", format!("{c:.2}"));
        }
        progress.update(step, &shown);
        on_log(&rec)?;
        control.check_finite(step, "train_bpc", rec.train_bpc)?;
        control.check_finite(step, "sg_loss", rec.sg_loss)?;
        control.check_finite(step, "valid_bpc", rec.valid_bpc)?;
        if to_target.is_some() {
            stopped_by = "target_bpc";
            break;
        }
        if lm.patience.is_some_and(|p| evals_since_best >= p) {
            stopped_by = "patience";
            break;
        }
    }
    control.save(step, || {
        snapshot(&trainer, &stream, best, evals_since_best, to_target)
    })?;
    if control.checkpoints() {
        control.params_sha256 = Some(checkpoint::params_sha256(trainer.group())?);
    }
    Ok(CharLmOutcome {
        method,
        t: rnn.t,
        hidden: rnn.hidden,
        batch: rnn.batch,
        vocab,
        best_valid_bpc: best.map(|b| b.0),
        test_bpc_at_best: best.map(|b| b.1),
        best_step: best.map(|b| b.2),
        steps: step,
        step_budget: rnn.steps,
        chars_seen: step * chars_per_step,
        stopped_by,
        target_bpc: lm.target_bpc,
        seconds_to_target: to_target.map(|t| t.0),
        steps_to_target: to_target.map(|t| t.1),
        wall_clock_s: started.elapsed().as_secs_f64(),
        adapter: gpu.adapter().to_string(),
    })
}

/// The character LM's host state in a checkpoint.
#[derive(serde::Serialize, serde::Deserialize)]
struct LmHost {
    pos: usize,
    epoch: u64,
    best: Option<(f64, f64, u64)>,
    evals_since_best: u32,
    to_target: Option<(f64, u64)>,
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.4}"))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Overrides;
    use crate::progress::Mode;

    #[test]
    fn a_short_run_evaluates_and_reports_test_at_the_best_validation() {
        let gpu = dni_kernels::testing::gpu();
        let dir = dni_tasks::testing::TempDir::new("charlm");
        let text = dir.join("text.txt");
        std::fs::write(&text, "abcabd abcabd xyz. ".repeat(400)).unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let sets = [
            format!("charlm.train={}", text.display()),
            "rnn.hidden=16".into(),
            "rnn.batch=4".into(),
            "rnn.steps=300".into(),
            "rnn.lr=0.01".into(),
            "charlm.eval_every=100".into(),
            "run.log_every=50".into(),
        ];
        let o = Overrides {
            set: sets.to_vec(),
            ..Default::default()
        };
        let cfg = Config::load_with_base(&root.join("configs/charlm.toml"), &o, &root).unwrap();
        let mut progress = Progress::with_mode("test", 300, Mode::Quiet);
        let mut records = Vec::new();
        let out = CharLmExperiment::train(&gpu, &cfg, &mut progress, &mut |r| {
            records.push((r.step, r.train_bpc, r.valid_bpc, r.test_bpc));
            Ok(())
        })
        .unwrap();
        assert_eq!(out.steps, 300);
        assert_eq!(out.vocab, 9);
        assert_eq!(records.len(), 6);
        let valids: Vec<f64> = records.iter().filter_map(|r| r.2).collect();
        assert_eq!(valids.len(), 3, "validation at steps 100, 200, 300");
        let best = valids.iter().cloned().fold(f64::INFINITY, f64::min);
        assert_eq!(out.best_valid_bpc, Some(best));
        // A test evaluation accompanies every new best, and the summary keeps the one at the best.
        let at_best = records.iter().find(|r| r.2 == Some(best)).unwrap().3;
        assert_eq!(out.test_bpc_at_best, at_best);
        // Uniform over 9 symbols is 3.17 bits; the repeating text is far more predictable.
        assert!(best < 1.5, "validation BPC {best:.3}");
        assert_eq!(out.stopped_by, "budget");
    }
}
