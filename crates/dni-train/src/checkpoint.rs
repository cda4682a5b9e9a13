//! Checkpoints (safetensors) and the per-step control of a run: when to write a checkpoint, a
//! resume to restore, a Ctrl-C / SIGTERM to honour, a loss that has diverged.
//!
//! A checkpoint is `checkpoint.safetensors` in the run directory: every training-state buffer of
//! the run group (`RunGroup::export_state`: parameters, gradients, optimiser moments and step
//! counts, the carried recurrent state, metric sums) as F32 / U64 tensors, and in the metadata the
//! format, the step, the resolved config (as `config.toml` holds it) and the experiment's host
//! state as JSON (task streams with their RNG states, curricula, counters).
//!
//! Writing is atomic: the bytes go to `checkpoint.safetensors.tmp`, which is fsynced and renamed
//! over the previous checkpoint (then the directory is fsynced), so a kill at any moment leaves
//! the previous complete checkpoint or the new one.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context};
use dni_graph::recurrent::{RunGroup, StateBuf};
use safetensors::tensor::{Dtype, TensorView};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::interrupt::{self, Signal};

/// The checkpoint's file name in the run directory.
pub const FILE: &str = "checkpoint.safetensors";
const FORMAT: &str = "dni-checkpoint-1";

/// Test hook: `DNI_TEST_ABORT_IN_CHECKPOINT=N` aborts the process half-way through writing the
/// N-th checkpoint (1-based) of this process, as a kill -9 during the write would.
const ABORT_ENV: &str = "DNI_TEST_ABORT_IN_CHECKPOINT";
static WRITES: AtomicU64 = AtomicU64::new(0);

/// One checkpoint, in memory.
#[derive(Debug)]
pub struct Checkpoint {
    /// Training steps completed.
    pub step: u64,
    /// The resolved config, as the run directory's `config.toml` holds it.
    pub config: String,
    /// The experiment's host state (task streams, curricula, counters).
    pub host: serde_json::Value,
    /// The run group's buffers and counters (`RunGroup::export_state`).
    pub state: Vec<(String, StateBuf)>,
}

fn encode(ck: &Checkpoint) -> anyhow::Result<Vec<u8>> {
    let bytes: Vec<(String, Dtype, Vec<u8>, usize)> = ck
        .state
        .iter()
        .map(|(name, buf)| match buf {
            StateBuf::F32(v) => (
                name.clone(),
                Dtype::F32,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                v.len(),
            ),
            StateBuf::U64(v) => (
                name.clone(),
                Dtype::U64,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                v.len(),
            ),
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, d, b, len)| Ok((n.clone(), TensorView::new(*d, vec![*len], b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .context("laying out the checkpoint's tensors")?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), FORMAT.to_string());
    meta.insert("step".to_string(), ck.step.to_string());
    meta.insert("config".to_string(), ck.config.clone());
    meta.insert(
        "host".to_string(),
        serde_json::to_string(&ck.host).context("serialising the checkpoint's host state")?,
    );
    safetensors::tensor::serialize(views, Some(meta)).context("serialising the checkpoint")
}

/// Writes `ck` as `dir/checkpoint.safetensors`, atomically (see the module docs).
pub fn write(dir: &Path, ck: &Checkpoint) -> anyhow::Result<PathBuf> {
    let bytes = encode(ck)?;
    let path = dir.join(FILE);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let n = WRITES.fetch_add(1, Ordering::SeqCst) + 1;
    let abort_at = std::env::var(ABORT_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    if abort_at == Some(n) {
        let _ = f.write_all(&bytes[..bytes.len() / 2]);
        let _ = f.sync_all();
        eprintln!(
            "{ABORT_ENV}={n}: aborting half-way through writing {}",
            tmp.display()
        );
        std::process::abort();
    }
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    // Make the rename itself durable (best effort: not every platform can fsync a directory).
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(path)
}

/// Reads a checkpoint back; a truncated, damaged or foreign file is an error naming it.
pub fn read(path: &Path) -> anyhow::Result<Checkpoint> {
    if path.is_dir() {
        bail!("{} is a directory, not a checkpoint file", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "cannot read the checkpoint {} (a run writes it every run.checkpoint_every steps \
             and at its end)",
            path.display()
        )
    })?;
    let damaged = |what: String| {
        anyhow::anyhow!(
            "{} is not a complete dni checkpoint ({what}); it may have been cut short",
            path.display()
        )
    };
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| damaged(e.to_string()))?;
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| damaged(e.to_string()))?;
    let meta = header
        .metadata()
        .clone()
        .ok_or_else(|| damaged("no metadata".into()))?;
    let get = |k: &str| {
        meta.get(k)
            .cloned()
            .ok_or_else(|| damaged(format!("no {k:?} in the metadata")))
    };
    let format = get("format")?;
    if format != FORMAT {
        bail!(
            "{}: checkpoint format {format:?}, this dni-train reads {FORMAT:?}",
            path.display()
        );
    }
    let step = get("step")?
        .parse::<u64>()
        .map_err(|e| damaged(format!("step: {e}")))?;
    let config = get("config")?;
    let host = serde_json::from_str(&get("host")?).map_err(|e| damaged(format!("host: {e}")))?;
    let mut state = Vec::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let buf = match view.dtype() {
            Dtype::F32 => StateBuf::F32(
                data.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            Dtype::U64 => StateBuf::U64(
                data.chunks_exact(8)
                    .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            ),
            other => return Err(damaged(format!("{name} has dtype {other:?}"))),
        };
        state.push((name, buf));
    }
    Ok(Checkpoint {
        step,
        config,
        host,
        state,
    })
}

/// Checks that `ck` was written by a run of `cfg` (any step budget): a mismatch names the keys.
pub fn check_config(ck: &Checkpoint, cfg: &Config, path: &Path) -> anyhow::Result<()> {
    let saved: Config = toml::from_str(&ck.config)
        .with_context(|| format!("{}: the config stored in it does not parse", path.display()))?;
    let as_value = |c: &Config| -> anyhow::Result<toml::Value> {
        let mut c = c.clone();
        // The step budget may change on resume.
        for steps in [
            c.rnn.as_mut().map(|r| &mut r.steps),
            c.mnist.as_mut().map(|m| &mut m.steps),
            c.timescale.as_mut().map(|t| &mut t.steps),
        ]
        .into_iter()
        .flatten()
        {
            *steps = 0;
        }
        toml::Value::try_from(&c).context("serialising a config")
    };
    let (a, b) = (as_value(&saved)?, as_value(cfg)?);
    let mut diffs = Vec::new();
    diff_keys(&a, &b, "", &mut diffs);
    if !diffs.is_empty() {
        bail!(
            "{} was written by another config: {} differ{} (the run directory's config.toml \
             was changed?)",
            path.display(),
            diffs.join(", "),
            if diffs.len() == 1 { "s" } else { "" }
        );
    }
    Ok(())
}

/// Dotted keys (`rnn.hidden`) whose values differ between `a` and `b`.
fn diff_keys(a: &toml::Value, b: &toml::Value, prefix: &str, out: &mut Vec<String>) {
    match (a, b) {
        (toml::Value::Table(x), toml::Value::Table(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => diff_keys(p, q, &key, out),
                    _ => out.push(key),
                }
            }
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

/// SHA-256 of every run's parameters in a fixed order: for run 0, 1, ...; for each parameter in
/// `param_names` order, its name, then its values as little-endian f32 bytes.
pub fn params_sha256(group: &RunGroup) -> anyhow::Result<String> {
    let mut params = Vec::new();
    for run in 0..group.runs() {
        for name in group.param_names(run)? {
            params.push((name.to_string(), group.read_param(run, name)?));
        }
    }
    Ok(sha256_named(params))
}

/// SHA-256 of named parameters in the order given: each name, then its values as little-endian
/// f32 bytes (what [`params_sha256`] hashes for a run group, for any other model).
pub fn sha256_named(params: impl IntoIterator<Item = (String, Vec<f32>)>) -> String {
    let mut h = Sha256::new();
    for (name, values) in params {
        h.update(name.as_bytes());
        for x in values {
            h.update(x.to_le_bytes());
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A loss that became NaN or infinite.
#[derive(Debug, thiserror::Error)]
#[error(
    "training diverged at step {step}: {metric} is {value}{}; lower the learning rate or resume \
     from an earlier checkpoint",
    match checkpoint {
        Some((s, p)) => format!(" (last good checkpoint: {} at step {s})", p.display()),
        None => " (no checkpoint was written before it)".to_string(),
    }
)]
pub struct Diverged {
    pub step: u64,
    pub metric: String,
    pub value: f64,
    pub checkpoint: Option<(u64, PathBuf)>,
}

/// What the training loop asks at the top of each step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    Continue,
    /// A signal asked to stop: write the final checkpoint and end the loop.
    Stop,
}

/// The per-step control of one run: checkpoints, resume, interrupts, divergence checks, and what
/// they leave for the summary.
#[derive(Debug, Default)]
pub struct RunControl {
    /// The run directory (None: no checkpoints, e.g. sweeps and tests).
    dir: Option<PathBuf>,
    every: u64,
    config: String,
    resume: Option<Checkpoint>,
    /// The newest complete checkpoint (step, path).
    pub last_checkpoint: Option<(u64, PathBuf)>,
    /// The signal that stopped the run early.
    pub stopped_by: Option<Signal>,
    /// Hash of the final parameters (see [`params_sha256`]).
    pub params_sha256: Option<String>,
    /// The step the run resumed from.
    pub resumed_from: Option<u64>,
    /// Whether a resumed run continues bit-exactly (false for the threaded schedule).
    pub bit_exact: Option<bool>,
}

impl RunControl {
    /// No checkpoints, no resume; signals are still honoured where a handler is installed.
    pub fn none() -> Self {
        RunControl::default()
    }

    /// Checkpoints into `dir` every `cfg.run.checkpoint_every` steps and at the end; `resume`
    /// is the checkpoint to continue from.
    pub fn for_run(dir: &Path, cfg: &Config, resume: Option<Checkpoint>) -> anyhow::Result<Self> {
        let mut saved = cfg.clone();
        saved.run.name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        Ok(RunControl {
            dir: Some(dir.to_path_buf()),
            every: cfg.run.checkpoint_every,
            config: saved.to_toml_string()?,
            last_checkpoint: resume.as_ref().map(|c| (c.step, dir.join(FILE))),
            resumed_from: resume.as_ref().map(|c| c.step),
            resume,
            ..Default::default()
        })
    }

    /// The checkpoint to restore, once.
    pub fn take_resume(&mut self) -> Option<Checkpoint> {
        self.resume.take()
    }

    /// Whether checkpoints are written.
    pub fn checkpoints(&self) -> bool {
        self.dir.is_some()
    }

    /// Called at the top of every step (or block of steps) with the steps done so far: writes a
    /// checkpoint when one is due (a multiple of `run.checkpoint_every` reached since the last) (`snapshot` gives the host state and the group's buffers) and stops on a signal.
    pub fn poll(
        &mut self,
        step: u64,
        snapshot: impl FnOnce() -> anyhow::Result<(serde_json::Value, Vec<(String, StateBuf)>)>,
    ) -> anyhow::Result<Poll> {
        if let Some(sig) = interrupt::requested() {
            self.stopped_by = Some(sig);
            return Ok(Poll::Stop);
        }
        // Due when a multiple of `every` was reached since the last checkpoint: at the multiple
        // itself for loops of one step, at the first block boundary past it for blocks of steps.
        let last = self.last_checkpoint.as_ref().map_or(0, |(s, _)| *s);
        let due = self.every > 0 && step > last && step / self.every > last / self.every;
        if due {
            self.save(step, snapshot)?;
        }
        Ok(Poll::Continue)
    }

    /// Writes a checkpoint at `step` (when checkpoints are on and none was written at it).
    pub fn save(
        &mut self,
        step: u64,
        snapshot: impl FnOnce() -> anyhow::Result<(serde_json::Value, Vec<(String, StateBuf)>)>,
    ) -> anyhow::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        if self
            .last_checkpoint
            .as_ref()
            .is_some_and(|(s, _)| *s == step)
        {
            return Ok(());
        }
        let (host, state) = snapshot()?;
        let ck = Checkpoint {
            step,
            config: self.config.clone(),
            host,
            state,
        };
        let path =
            write(dir, &ck).with_context(|| format!("writing the checkpoint at step {step}"))?;
        self.last_checkpoint = Some((step, path));
        Ok(())
    }

    /// An error when `value` (a loss read back at a logging step) is NaN or infinite.
    pub fn check_finite(&self, step: u64, metric: &str, value: Option<f64>) -> anyhow::Result<()> {
        match value {
            Some(v) if !v.is_finite() => Err(Diverged {
                step,
                metric: metric.to_string(),
                value: v,
                checkpoint: self.last_checkpoint.clone(),
            }
            .into()),
            _ => Ok(()),
        }
    }

    /// Fields for `summary.json`.
    pub fn summary_fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        if let Some(h) = &self.params_sha256 {
            m.insert("params_sha256".into(), h.clone().into());
        }
        if let Some((s, p)) = &self.last_checkpoint {
            m.insert("checkpoint".into(), p.display().to_string().into());
            m.insert("checkpoint_step".into(), (*s).into());
        }
        if let Some(s) = self.resumed_from {
            m.insert("resumed_from_step".into(), s.into());
        }
        if let Some(b) = self.bit_exact {
            m.insert("resume_bit_exact".into(), b.into());
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            step: 7,
            config: "task = \"copy\"\n".into(),
            host: serde_json::json!({"a": [1, 2.5]}),
            state: vec![
                (
                    "fused.params".into(),
                    StateBuf::F32(vec![1.0, -2.5, f32::MIN_POSITIVE]),
                ),
                (
                    "fused.windows_total".into(),
                    StateBuf::U64(vec![u64::MAX, 3]),
                ),
            ],
        }
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dni-ckpt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn round_trips_and_replaces_atomically() {
        let dir = scratch("rt");
        let p = write(&dir, &sample()).unwrap();
        let back = read(&p).unwrap();
        assert_eq!(back.step, 7);
        assert_eq!(back.config, sample().config);
        assert_eq!(back.host, sample().host);
        let mut want = sample().state;
        let mut got = back.state;
        want.sort_by(|a, b| a.0.cmp(&b.0));
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, want);
        assert!(!dir.join(format!("{FILE}.tmp")).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_truncated_or_foreign_file_is_a_clear_error() {
        let dir = scratch("trunc");
        let p = write(&dir, &sample()).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        for cut in [0, 5, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let e = format!("{:#}", read(&p).unwrap_err());
            assert!(
                e.contains("not a complete dni checkpoint"),
                "cut {cut}: {e}"
            );
            assert!(e.contains(FILE), "{e}");
        }
        let e = format!("{:#}", read(&dir).unwrap_err());
        assert!(e.contains("is a directory"), "{e}");
        let e = format!("{:#}", read(&dir.join("none")).unwrap_err());
        assert!(e.contains("cannot read the checkpoint"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn config_mismatch_names_the_keys_and_ignores_the_budget() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let load = |sets: &[&str]| {
            let o = crate::config::Overrides {
                set: sets.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            };
            Config::load_with_base(&root.join("configs/copy.toml"), &o, &root).unwrap()
        };
        let a = load(&["rnn.steps=100"]);
        let ck = Checkpoint {
            step: 1,
            config: a.to_toml_string().unwrap(),
            host: serde_json::Value::Null,
            state: vec![],
        };
        check_config(&ck, &load(&["rnn.steps=200"]), Path::new("x")).unwrap();
        let e = check_config(&ck, &load(&["rnn.hidden=9"]), Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rnn.hidden") && !e.contains("rnn.steps"), "{e}");
    }

    #[test]
    fn divergence_names_step_metric_and_checkpoint() {
        let mut c = RunControl::none();
        c.check_finite(3, "loss", Some(1.0)).unwrap();
        c.check_finite(3, "loss", None).unwrap();
        c.last_checkpoint = Some((100, PathBuf::from("runs/x/checkpoint.safetensors")));
        let e = c.check_finite(150, "sg_loss", Some(f64::NAN)).unwrap_err();
        let d = e.downcast_ref::<Diverged>().expect("a Diverged error");
        assert_eq!((d.step, d.metric.as_str()), (150, "sg_loss"));
        let msg = e.to_string();
        assert!(
            msg.contains("step 150")
                && msg.contains("sg_loss")
                && msg.contains("NaN")
                && msg.contains("runs/x/checkpoint.safetensors"),
            "{msg}"
        );
    }
}
