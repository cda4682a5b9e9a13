//! Experiment configuration: TOML file + command-line overrides -> typed, validated [`Config`].
//!
//! Every struct denies unknown fields so that a typo is an error, not a silently ignored setting. Errors
//! name the file and the key; values set on the command line say so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use dni_graph::recurrent::OutputLoss;
use dni_tasks::{CurriculumConfig, DataError};
use serde::{Deserialize, Serialize};

pub use crate::experiments::charlm::CharLmConfig;
pub use crate::experiments::mnist::MnistSettings;
pub use crate::experiments::two_timescale::TimescaleSettings;

/// Task-specific sections of the file.
const SECTIONS: [&str; 5] = ["rnn", "copy", "charlm", "mnist", "timescale"];

/// Which experiment to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Copy,
    RepeatCopy,
    Charlm,
    Mnist,
    /// Two LSTMs at two timescales on an MNIST stream (paper 3.2).
    TwoTimescale,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Copy => "copy",
            Task::RepeatCopy => "repeat_copy",
            Task::Charlm => "charlm",
            Task::Mnist => "mnist",
            Task::TwoTimescale => "two_timescale",
        }
    }

    /// The config sections this task reads.
    pub fn sections(self) -> &'static [&'static str] {
        match self {
            Task::Copy | Task::RepeatCopy => &["rnn", "copy"],
            Task::Charlm => &["rnn", "charlm"],
            Task::Mnist => &["mnist"],
            Task::TwoTimescale => &["timescale"],
        }
    }

    /// The Copy-task flavour, for the two copy tasks.
    pub fn copy_kind(self) -> Option<dni_tasks::CopyKind> {
        match self {
            Task::Copy => Some(dni_tasks::CopyKind::Copy),
            Task::RepeatCopy => Some(dni_tasks::CopyKind::RepeatCopy),
            Task::Charlm | Task::Mnist | Task::TwoTimescale => None,
        }
    }
}

/// GPU backend selection: the kernel library's own choice (`run.backend`, `--backend`).
pub use dni_kernels::BackendChoice as Backend;

/// The whole experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub task: Task,
    /// Seed of every random stream in the run.
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default)]
    pub run: RunConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rnn: Option<RecurrentSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<CurriculumConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charlm: Option<CharLmConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mnist: Option<MnistSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timescale: Option<TimescaleSettings>,
    /// Where the values came from, for error messages; not part of the TOML.
    #[serde(skip)]
    pub origin: Origin,
}

/// The file a config was read from and the keys the command line set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Origin {
    pub path: PathBuf,
    /// Key (`rnn.T`) -> the argument that set it (`--set rnn.T=0`).
    pub overridden: BTreeMap<String, String>,
}

/// `[run]`: bookkeeping of the run, not of the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Runs are created under this directory.
    #[serde(default = "default_out_dir")]
    pub out_dir: PathBuf,
    /// Directory name of the run; default `<task>-<method>[-T<T>]-<timestamp>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Steps between metric read-backs (each one stalls the GPU queue, so not every step).
    #[serde(default = "default_log_every")]
    pub log_every: u64,
    #[serde(default)]
    pub backend: Backend,
    /// Steps between checkpoints (`checkpoint.safetensors` in the run directory); one is also
    /// written at the end and on an interrupt. 0: only those.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
}

fn default_checkpoint_every() -> u64 {
    1000
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            out_dir: default_out_dir(),
            name: None,
            log_every: default_log_every(),
            backend: Backend::Auto,
            checkpoint_every: default_checkpoint_every(),
        }
    }
}

/// `[rnn]`: the LSTM and its training (copy, repeat_copy, charlm): the library's own settings.
pub use dni_graph::recurrent::{MethodKind, RecurrentSettings};

fn default_seed() -> u64 {
    1
}
fn default_out_dir() -> PathBuf {
    PathBuf::from("runs")
}
fn default_log_every() -> u64 {
    50
}

/// Command-line changes to a config file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `KEY=VALUE` pairs (`rnn.T=8`); VALUE is read as a TOML value, else as a string.
    pub set: Vec<String>,
    /// Step budget of the task's section (`rnn.steps` or `mnist.steps`).
    pub steps: Option<u64>,
    pub out_dir: Option<PathBuf>,
    pub backend: Option<Backend>,
}

/// ` (key `section.key`, line N)` for the key whose value covers `span` in a TOML text.
fn key_at(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span.filter(|s| s.start <= text.len()) else {
        return String::new();
    };
    let before = &text[..span.start];
    let line_no = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let mut section = String::new();
    for l in before.lines() {
        let l = l.trim();
        if l.starts_with('[') && l.ends_with(']') {
            section = l.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
    }
    match line.split_once('=') {
        Some((k, _)) if !k.trim().is_empty() && !line.trim_start().starts_with('[') => {
            let k = k.trim();
            let key = if section.is_empty() {
                k.to_string()
            } else {
                format!("{section}.{k}")
            };
            format!(" (key `{key}`, line {line_no})")
        }
        _ => format!(" (line {line_no})"),
    }
}

/// Splits `KEY=VALUE` and reads VALUE as a TOML value (`8`, `1e-3`, `true`, `"x"`), else as a string.
fn parse_set(arg: &str) -> anyhow::Result<(String, toml::Value)> {
    let (key, raw) = arg
        .split_once('=')
        .ok_or_else(|| anyhow!("--set {arg}: expected KEY=VALUE, e.g. --set rnn.T=8"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        bail!("--set {arg}: the key must be a dotted path such as rnn.T or task");
    }
    let raw = raw.trim();
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    Ok((key.to_string(), value))
}

/// Sets `key` (dotted) in `table`, creating sections on the way.
fn set_key(
    table: &mut toml::Table,
    key: &str,
    value: toml::Value,
    arg: &str,
) -> anyhow::Result<()> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or(key);
    let mut at = table;
    let mut walked = String::new();
    for part in parts {
        if !walked.is_empty() {
            walked.push('.');
        }
        walked.push_str(part);
        let entry = at
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        at = match entry {
            toml::Value::Table(t) => t,
            other => bail!(
                "{arg}: `{walked}` is a {}, not a section, so it has no key `{}`",
                other.type_str(),
                &key[walked.len() + 1..]
            ),
        };
    }
    at.insert(last.to_string(), value);
    Ok(())
}

/// What replaces a key that earlier versions of the config had, for the error that rejects it.
fn removed_key_hint(msg: &str) -> &'static str {
    if msg.contains("unknown field `sg_model`") {
        "; mnist.sg_model was replaced by sg_hidden: 0 (the default) is a linear SG model, N > 0 an \
         MLP of sg_layers hidden layers of N units"
    } else {
        ""
    }
}

impl Config {
    /// Reads `path`, applies `overrides`, and validates; relative data paths are checked from the current
    /// directory.
    pub fn load(path: &Path, overrides: &Overrides) -> anyhow::Result<Config> {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        Config::load_with_base(path, overrides, &cwd)
    }

    /// [`Config::load`] with relative data paths resolved from `base` (tests use the repository root).
    pub fn load_with_base(
        path: &Path,
        overrides: &Overrides,
        base: &Path,
    ) -> anyhow::Result<Config> {
        if path.is_dir() {
            bail!(
                "--config {}: is a directory; give a TOML file (examples in configs/)",
                path.display()
            );
        }
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read config file {}; see configs/ for examples",
                path.display()
            )
        })?;
        let mut cfg = Config::parse(&text, path, &overrides.set)?;
        cfg.apply_typed(overrides);
        cfg.resolve_defaults();
        cfg.validate(base)?;
        Ok(cfg)
    }

    /// TOML text + `--set` overrides -> Config, with errors attributed to the file or to the override.
    fn parse(text: &str, path: &Path, sets: &[String]) -> anyhow::Result<Config> {
        let file = path.display();
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| anyhow!("{file}: {}", e.to_string().trim_end()))?;
        let mut origin = Origin {
            path: path.to_path_buf(),
            overridden: BTreeMap::new(),
        };
        let mut parsed = Vec::with_capacity(sets.len());
        for arg in sets {
            let (key, value) = parse_set(arg)?;
            let label = format!("--set {arg}");
            set_key(&mut table, &key, value.clone(), &label)?;
            origin.overridden.insert(key.clone(), label.clone());
            parsed.push((key, value, label));
        }
        // A section the task does not use would fail below as "missing field"; say what is wrong instead.
        if let Some(task) = table
            .get("task")
            .and_then(|v| v.clone().try_into::<Task>().ok())
        {
            for (key, _, label) in &parsed {
                let top = key.split('.').next().unwrap_or(key);
                if SECTIONS.contains(&top) && !task.sections().contains(&top) {
                    bail!(
                        "{label}: section [{top}] is not used by task = \"{}\" (in {file}); it uses [{}]",
                        task.name(),
                        task.sections().join("], [")
                    );
                }
            }
        }
        let all_err = match table.clone().try_into::<Config>() {
            Ok(mut cfg) => {
                cfg.origin = origin;
                return Ok(cfg);
            }
            Err(e) => e,
        };
        // Parsing the text keeps line numbers, so blame the file when its own problem persists.
        let file_err = toml::from_str::<Config>(text).err();
        if let Some(e) = &file_err {
            if e.message() == all_err.message() || sets.is_empty() {
                bail!(
                    "{file}{}: {}{}",
                    key_at(text, e.span()),
                    e.to_string().trim_end(),
                    removed_key_hint(e.message())
                );
            }
        }
        // Otherwise blame the first override that changes the outcome.
        let mut partial: toml::Table = toml::from_str(text)?;
        let mut previous = file_err.map(|e| e.message().to_string());
        for (key, value, label) in parsed {
            set_key(&mut partial, &key, value, &label)?;
            let now = partial
                .clone()
                .try_into::<Config>()
                .err()
                .map(|e| e.message().to_string());
            if let Some(msg) = &now {
                if now != previous {
                    bail!(
                        "{label}: {} (in {file}){}",
                        msg.trim_end(),
                        removed_key_hint(msg)
                    );
                }
            }
            previous = now;
        }
        bail!(
            "{file} (with the --set overrides): {}{}",
            all_err.message().trim_end(),
            removed_key_hint(all_err.message())
        )
    }

    fn apply_typed(&mut self, o: &Overrides) {
        if let Some(steps) = o.steps {
            let label = format!("--steps {steps}");
            if let Some(ts) = self.timescale.as_mut() {
                ts.steps = steps;
                self.origin
                    .overridden
                    .insert("timescale.steps".into(), label);
            } else if let Some(rnn) = self.rnn.as_mut().filter(|_| self.task != Task::Mnist) {
                rnn.steps = steps;
                self.origin.overridden.insert("rnn.steps".into(), label);
            } else if let Some(mnist) = self.mnist.as_mut() {
                mnist.steps = steps;
                self.origin.overridden.insert("mnist.steps".into(), label);
            }
        }
        if let Some(dir) = &o.out_dir {
            self.run.out_dir = dir.clone();
            self.origin
                .overridden
                .insert("run.out_dir".into(), format!("--out {}", dir.display()));
        }
        if let Some(b) = o.backend {
            self.run.backend = b;
            self.origin.overridden.insert(
                "run.backend".into(),
                format!("--backend {b:?}").to_lowercase(),
            );
        }
    }

    /// Fills in defaults that depend on other settings, so the saved config shows what ran.
    fn resolve_defaults(&mut self) {
        if self.task.copy_kind().is_some() && self.copy.is_none() {
            self.copy = Some(CurriculumConfig::default());
        }
    }

    /// Checks for impossible or contradictory values; reports all of them at once.
    pub fn validate(&self, base: &Path) -> anyhow::Result<()> {
        let mut v = Validator {
            cfg: self,
            problems: Vec::new(),
        };
        v.check_sections();
        v.check_run();
        if let Some(rnn) = &self.rnn {
            v.check_rnn(rnn);
        }
        let sections: [Option<&dyn Section>; 4] = [
            self.copy.as_ref().map(|s| s as &dyn Section),
            self.charlm.as_ref().map(|s| s as &dyn Section),
            self.mnist.as_ref().map(|s| s as &dyn Section),
            self.timescale.as_ref().map(|s| s as &dyn Section),
        ];
        for section in sections.into_iter().flatten() {
            section.check(&mut v, base);
        }
        if v.problems.is_empty() {
            Ok(())
        } else {
            bail!("{}", v.problems.join("\n"))
        }
    }

    /// Step budget of the task's section (0 if the section is missing; `validate` rejects that).
    pub fn steps(&self) -> u64 {
        match self.task {
            Task::Mnist => self.mnist.as_ref().map_or(0, |m| m.steps),
            Task::TwoTimescale => self.timescale.as_ref().map_or(0, |t| t.steps),
            _ => self.rnn.as_ref().map_or(0, |r| r.steps),
        }
    }

    /// Default run name without timestamp, e.g. `copy-dni-T5` or `mnist-cdni`.
    pub fn run_label(&self) -> String {
        if let Some(ts) = &self.timescale {
            return format!("{}-{}-T{}", self.task.name(), serde_name(&ts.method), ts.t);
        }
        match (&self.rnn, &self.mnist) {
            (Some(rnn), _) if self.task != Task::Mnist => {
                let method = serde_name(&rnn.method);
                format!("{}-{method}-T{}", self.task.name(), rnn.t)
            }
            (_, Some(m)) => {
                let mut label = format!("{}-{}", self.task.name(), serde_name(&m.method));
                if m.p_update < 1.0 {
                    label.push_str(&format!("-p{}", m.p_update));
                }
                if m.unlock {
                    label.push_str("-unlocked");
                }
                label
            }
            _ => self.task.name().to_string(),
        }
    }

    /// The resolved config as TOML (what `config.toml` in the run directory holds).
    pub fn to_toml_string(&self) -> anyhow::Result<String> {
        toml::to_string_pretty(self).context("cannot serialise the config to TOML")
    }
}

/// The name serde gives an enum value (`dni_aux`).
pub(crate) fn serde_name<T: Serialize>(v: &T) -> String {
    match toml::Value::try_from(v) {
        Ok(toml::Value::String(s)) => s,
        _ => String::from("?"),
    }
}

/// A section of the file that checks its own values (each experiment's section sits beside its
/// experiment); `base` is the directory relative paths start at.
pub(crate) trait Section {
    fn check(&self, v: &mut Validator, base: &Path);
}

/// A library's complaint about a config it was given.
pub(crate) trait FieldProblem: std::fmt::Display {
    /// `(field, value, reason)` when it is about one field.
    fn field(&self) -> Option<(&'static str, &str, &str)>;
}

impl FieldProblem for dni_graph::Error {
    fn field(&self) -> Option<(&'static str, &str, &str)> {
        match self {
            dni_graph::Error::Config {
                field,
                value,
                reason,
            } => Some((field, value, reason)),
            _ => None,
        }
    }
}

impl FieldProblem for DataError {
    fn field(&self) -> Option<(&'static str, &str, &str)> {
        match self {
            DataError::InvalidParameter {
                name,
                value,
                reason,
            } => Some((name, value, reason)),
            _ => None,
        }
    }
}

/// Collects every problem of a config, each naming the file and `section.key`.
pub(crate) struct Validator<'a> {
    cfg: &'a Config,
    problems: Vec<String>,
}

impl Validator<'_> {
    /// Records `<file>: <key> = <value>: <reason>` when `ok` is false.
    pub(crate) fn check(
        &mut self,
        ok: bool,
        key: &str,
        value: impl std::fmt::Display,
        reason: &str,
    ) {
        if !ok {
            let from = match self.cfg.origin.overridden.get(key) {
                Some(arg) => format!(" (set by {arg})"),
                None => String::new(),
            };
            self.problems.push(format!(
                "{}: {key} = {value}: {reason}{from}",
                self.cfg.origin.path.display()
            ));
        }
    }

    /// The limits a library states for its config types (their `problems()`), each blamed on
    /// `<section>.<key>`, where `key` maps a library field to the section's key.
    pub(crate) fn check_library<P: FieldProblem>(
        &mut self,
        section: &str,
        problems: Vec<P>,
        key: fn(&'static str) -> &'static str,
    ) {
        for p in problems {
            match p.field() {
                Some((field, value, reason)) => {
                    self.check(false, &format!("{section}.{}", key(field)), value, reason)
                }
                None => self.problem(format!("[{section}]: {p}")),
            }
        }
    }

    pub(crate) fn problem(&mut self, msg: String) {
        self.problems
            .push(format!("{}: {msg}", self.cfg.origin.path.display()));
    }

    fn check_sections(&mut self) {
        let task = self.cfg.task;
        let present: [(&str, bool); SECTIONS.len()] = [
            ("rnn", self.cfg.rnn.is_some()),
            ("copy", self.cfg.copy.is_some()),
            ("charlm", self.cfg.charlm.is_some()),
            ("mnist", self.cfg.mnist.is_some()),
            ("timescale", self.cfg.timescale.is_some()),
        ];
        let needed = task.sections();
        for (section, is_present) in present {
            let used = needed.contains(&section);
            if used && !is_present {
                self.problem(format!(
                    "task = \"{}\" needs a [{section}] section; see configs/ for an example",
                    task.name()
                ));
            } else if !used && is_present {
                self.problem(format!(
                    "section [{section}] is not used by task = \"{}\"; remove it (or fix `task`)",
                    task.name()
                ));
            }
        }
    }

    fn check_run(&mut self) {
        let run = &self.cfg.run;
        self.check(
            run.log_every >= 1,
            "run.log_every",
            run.log_every,
            "must be at least 1 step",
        );
        if let Some(name) = &run.name {
            let ok = !name.trim().is_empty()
                && !name.contains(['/', '\\'])
                && name != "."
                && name != "..";
            self.check(
                ok,
                "run.name",
                format!("{name:?}"),
                "must be a plain directory name (no path separators)",
            );
        }
    }

    fn check_rnn(&mut self, r: &RecurrentSettings) {
        // The trainer's and the probe's limits (sizes at least 1 and no larger than a GPU buffer
        // holds, sg_scale, aux_weight, clip, the SG model, target normalisation, the probe's
        // ranges), as the library states them. The widths of the task's input and readout do not
        // matter to them.
        let (loss, width) = match self.cfg.task.copy_kind() {
            Some(_) => (OutputLoss::SigmoidBits, 1),
            None => (OutputLoss::Softmax, 2),
        };
        self.check_library("rnn", r.problems(width, width, loss), |field| field);
        self.check_f32_rates("rnn", r.lr, r.momentum);
        self.check_f32("rnn.sg_scale", r.sg_scale);
        self.check_f32("rnn.aux_weight", r.aux_weight);
        self.check_f32("rnn.sg_lr (default lr)", r.sg_lr());
    }

    /// The networks' rate and momentum as the GPU holds them, in f32 (their ranges are the
    /// library's): a rate must not vanish, and a momentum must not round up to 1.
    pub(crate) fn check_f32_rates(&mut self, section: &str, lr: f64, momentum: f64) {
        self.check_f32(&format!("{section}.lr"), lr);
        self.check(
            !(0.0..1.0).contains(&momentum) || (momentum as f32) < 1.0,
            &format!("{section}.momentum"),
            momentum,
            "rounds to 1 in f32 (the GPU's precision), which never forgets; use at most 0.9999999",
        );
    }

    /// The GPU computes in f32: a value must keep its meaning there (not become 0 or infinite).
    pub(crate) fn check_f32(&mut self, key: &str, v: f64) {
        if !v.is_finite() {
            return; // reported by the range checks
        }
        let f = v as f32;
        self.check(
            f.is_finite() && (v == 0.0 || f != 0.0),
            key,
            v,
            &format!(
                "becomes {f} in f32 (the GPU's precision); use a value between {:e} and {:e}",
                f32::MIN_POSITIVE,
                f32::MAX
            ),
        );
    }

    pub(crate) fn check_file(&mut self, key: &str, path: &Path, base: &Path) {
        if base.join(path).is_dir() {
            self.check(
                false,
                key,
                format!("{:?}", path.display().to_string()),
                "is a directory; give a file",
            );
        } else if !base.join(path).is_file() {
            self.check(
                false,
                key,
                format!("{:?}", path.display().to_string()),
                &format!(
                    "no such file (relative paths start at {}); fix the path",
                    base.display()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use dni_kernels::ops::optim::OptimKind;
    use dni_tasks::testing::TempDir;

    use super::*;
    use crate::experiments::charlm::CorpusFormat;

    fn repo_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// `text` as `test.toml` in a temp dir of its own (removed when the guard drops).
    fn temp_config(tag: &str, text: &str) -> (TempDir, PathBuf) {
        let dir = TempDir::new(&format!("train-cfg-{tag}"));
        let p = dir.join("test.toml");
        std::fs::write(&p, text).expect("write config");
        (dir, p)
    }

    fn load(tag: &str, text: &str, sets: &[&str]) -> anyhow::Result<Config> {
        let (_dir, p) = temp_config(tag, text);
        let o = Overrides {
            set: sets.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        Config::load_with_base(&p, &o, &repo_root())
    }

    fn err(tag: &str, text: &str, sets: &[&str]) -> String {
        match load(tag, text, sets) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    const COPY: &str = r#"
task = "copy"
[rnn]
hidden = 16
batch = 4
T = 3
method = "dni"
lr = 1e-3
steps = 100
"#;

    #[test]
    fn every_shipped_config_parses_and_validates() {
        let dir = repo_root().join("configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("configs/ exists") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                let cfg = Config::load_with_base(&path, &Overrides::default(), &repo_root())
                    .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                // The resolved config must itself load again unchanged.
                let again: Config = toml::from_str(&cfg.to_toml_string().unwrap()).unwrap();
                assert_eq!(
                    Config {
                        origin: Origin::default(),
                        ..cfg
                    },
                    again
                );
                n += 1;
            }
        }
        assert!(n >= 10, "only {n} configs found in {}", dir.display());
    }

    #[test]
    fn defaults_and_resolution() {
        let c = load("defaults", COPY, &[]).unwrap();
        assert_eq!(c.seed, 1);
        assert_eq!(c.run.log_every, 50);
        assert_eq!(c.run.out_dir, PathBuf::from("runs"));
        let rnn = c.rnn.as_ref().unwrap();
        // The one rule for SG defaults: injected as is, at the core's rate and optimiser.
        assert_eq!(
            (
                rnn.t,
                rnn.sg_scale,
                rnn.optimizer,
                rnn.sg_lr(),
                rnn.sg_optimizer
            ),
            (3, 1.0, OptimKind::Adam, rnn.lr, None)
        );
        assert_eq!(c.copy, Some(CurriculumConfig::default()));
        assert_eq!(c.copy.as_ref().unwrap().window_chars, 1000);
        assert_eq!(c.run_label(), "copy-dni-T3");

        let mnist = r#"
task = "mnist"
[mnist]
steps = 10
lr = 3e-4
method = "cdni"
"#;
        let c = load("mnist-defaults", mnist, &[]).unwrap();
        let m = c.mnist.as_ref().unwrap();
        // The one rule for SG defaults: linear, at the network's own rate and optimiser.
        assert_eq!(
            (m.layers, m.hidden, m.batch, m.sg_hidden, m.sg_layers),
            (4, 256, 256, 0, 1)
        );
        assert!(!m.sg_is_mlp());
        assert_eq!((m.sg_lr, m.sg_optimizer), (None, None));
        assert!(m.threads && !m.unlock);
        assert_eq!(c.run_label(), "mnist-cdni");
        let c = load(
            "mnist-dni",
            mnist,
            &["mnist.method=dni", "mnist.sg_hidden=64"],
        )
        .unwrap();
        assert!(c.mnist.unwrap().sg_is_mlp());
    }

    #[test]
    fn the_removed_sg_model_key_says_what_replaced_it() {
        let mnist = r#"
task = "mnist"
[mnist]
steps = 10
lr = 3e-4
method = "dni"
sg_model = "mlp"
"#;
        for (text, sets) in [
            (mnist, vec![]),
            (
                &*mnist.replace("sg_model = \"mlp\"\n", ""),
                vec!["mnist.sg_model=\"linear\""],
            ),
        ] {
            let msg = err("removed-sg-model", text, &sets);
            assert!(msg.contains("sg_model"), "{msg}");
            assert!(msg.contains("replaced by sg_hidden"), "{msg}");
        }
    }

    #[test]
    fn unknown_key_in_file_names_file_key_and_line() {
        let text = COPY.replace("hidden = 16", "hiden = 16");
        let msg = err("unknown", &text, &[]);
        assert!(msg.contains("test.toml"), "{msg}");
        assert!(msg.contains("hiden"), "{msg}");
        assert!(msg.contains("line 4"), "{msg}");
    }

    #[test]
    fn sg_and_probe_keys_are_checked() {
        let c = load(
            "sgkeys",
            COPY,
            &[
                "rnn.clip=0.25",
                "rnn.sg_optimizer=sgd",
                "rnn.sg_momentum=0.5",
                "rnn.probe_every=100",
                "rnn.sg_apply=false",
            ],
        )
        .unwrap();
        let r = c.rnn.unwrap();
        assert_eq!(
            (r.clip, r.sg_optimizer, r.sg_momentum),
            (Some(0.25), Some(OptimKind::Sgd), Some(0.5))
        );
        assert_eq!(
            (r.probe_every, r.probe_steps(), r.sg_apply),
            (100, 24, false)
        );
        for (set, key) in [
            ("rnn.clip=0", "rnn.clip"),
            ("rnn.clip=1e300", "rnn.clip"),
            ("rnn.sg_momentum=1", "rnn.sg_momentum"),
            ("rnn.probe_steps=0", "rnn.probe_steps"),
            ("rnn.probe_samples=0", "rnn.probe_samples"),
            // The SG model's own limits, stated once in the library.
            ("rnn.sg_discount=1.5", "rnn.sg_discount = 1.5"),
            ("rnn.sg_hidden=70000", "rnn.sg_hidden = 70000"),
        ] {
            let msg = err("sgbad", COPY, &[set]);
            assert!(msg.contains(key), "{set}: {msg}");
        }
        // Target normalisation is on the fused kernels, which have the paper's SG only.
        let r = load("norm", COPY, &["rnn.sg_normalise=true"])
            .unwrap()
            .rnn
            .unwrap();
        assert!(r.sg_normalise);
        for other in [
            "rnn.sg_hidden=16",
            "rnn.sg_input=\"hidden\"",
            "rnn.sg_discount=0.5",
            "rnn.sg_optimizer=sgd",
        ] {
            let msg = err("normbad", COPY, &["rnn.sg_normalise=true", other]);
            assert!(msg.contains("rnn.sg_normalise"), "{other}: {msg}");
        }
    }

    /// The `[rnn]` section's limits are the library's own (`RecurrentSettings::problems`): the CLI
    /// reports the library's reason, blamed on the key, instead of a second statement of the rule.
    #[test]
    fn the_rnn_limits_are_the_trainers_own() {
        let good = load("rnn-good", COPY, &["rnn.method=dni_aux"]).unwrap();
        let good = good.rnn.unwrap();
        type Change = fn(&mut RecurrentSettings);
        let cases: [(&str, Change); 12] = [
            ("rnn.steps=0", |r| r.steps = 0),
            ("rnn.lr=0", |r| r.lr = 0.0),
            ("rnn.momentum=1", |r| r.momentum = 1.0),
            ("rnn.hidden=0", |r| r.hidden = 0),
            ("rnn.T=0", |r| r.t = 0),
            ("rnn.sg_scale=-1", |r| r.sg_scale = -1.0),
            ("rnn.aux_weight=-2", |r| r.aux_weight = -2.0),
            ("rnn.clip=-1", |r| r.clip = Some(-1.0)),
            ("rnn.sg_momentum=1", |r| r.sg_momentum = Some(1.0)),
            ("rnn.probe_samples=0", |r| r.probe_samples = 0),
            ("rnn.probe_steps=0", |r| r.probe_steps = Some(0)),
            ("rnn.lr_half_life=0", |r| r.lr_half_life = Some(0)),
        ];
        for (set, change) in cases {
            let mut bad = good.clone();
            change(&mut bad);
            let problems = bad.problems(1, 1, OutputLoss::SigmoidBits);
            let Some(dni_graph::Error::Config { field, reason, .. }) = problems.first() else {
                panic!("{set}: the library accepts it");
            };
            let msg = err("rnn-lib", COPY, &["rnn.method=dni_aux", set]);
            let key = set.split('=').next().unwrap();
            assert_eq!(key, format!("rnn.{field}"), "{set}");
            assert!(
                msg.contains(&format!("{key} = ")) && msg.contains(reason),
                "{set}: {msg}"
            );
        }
        // The aux task at every step: a Copy task takes it, the character LM is told why not.
        let every = ["rnn.method=dni_aux", "rnn.aux_every_step=true"];
        assert!(
            load("rnn-every", COPY, &every)
                .unwrap()
                .rnn
                .unwrap()
                .aux_every_step
        );
        let lm = repo_root().join("configs/charlm.toml");
        let o = Overrides {
            set: every.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let msg = format!(
            "{:#}",
            Config::load_with_base(&lm, &o, &repo_root()).unwrap_err()
        );
        assert!(
            msg.contains("rnn.aux_every_step = true") && msg.contains("bit-vector tasks"),
            "{msg}"
        );
        // Every problem at once, not the first only.
        let msg = err("rnn-all", COPY, &["rnn.hidden=0", "rnn.sg_scale=-1"]);
        assert!(
            msg.contains("rnn.hidden = 0") && msg.contains("rnn.sg_scale = -1"),
            "{msg}"
        );
    }

    /// `[copy]` is the library's `CurriculumConfig`: its defaults, and its rules blamed on the keys,
    /// every problem at once.
    #[test]
    fn the_copy_section_is_the_librarys_curriculum() {
        let c = load("copy-lib", COPY, &[]).unwrap();
        assert_eq!(c.copy, Some(CurriculumConfig::default()));
        let msg = err("copy-bad", COPY, &["copy.start_n=0", "copy.window_chars=0"]);
        for problem in (CurriculumConfig {
            start_n: 0,
            window_chars: 0,
            ..Default::default()
        })
        .problems()
        {
            let Some((field, value, reason)) = problem.field() else {
                panic!("{problem}");
            };
            let want = format!("copy.{field} = {value}: {reason}");
            assert!(msg.contains(&want), "{want} not in {msg}");
        }
    }

    #[test]
    fn bad_enum_value_lists_choices() {
        let msg = err("enum", &COPY.replace("\"dni\"", "\"dnii\""), &[]);
        assert!(msg.contains("dnii") && msg.contains("dni_aux"), "{msg}");
    }

    #[test]
    fn overrides_apply_with_toml_types() {
        let c = load(
            "sets",
            COPY,
            &[
                "rnn.T=8",
                "rnn.lr=0.5",
                "rnn.method=bptt",
                "seed=7",
                "run.name=my-run",
                "copy.max_n=9",
            ],
        )
        .unwrap();
        let rnn = c.rnn.as_ref().unwrap();
        assert_eq!((rnn.t, rnn.lr, rnn.method), (8, 0.5, MethodKind::Bptt));
        assert_eq!(c.seed, 7);
        assert_eq!(c.run.name.as_deref(), Some("my-run"));
        assert_eq!(c.copy.unwrap().max_n, Some(9));
    }

    #[test]
    fn override_of_unknown_key_names_the_override() {
        let msg = err("set-unknown", COPY, &["rnn.T=4", "rnn.hiddden=3"]);
        assert!(msg.contains("--set rnn.hiddden=3"), "{msg}");
        assert!(msg.contains("hiddden"), "{msg}");
        let msg = err("set-type", COPY, &["rnn.T=four"]);
        assert!(msg.contains("--set rnn.T=four"), "{msg}");
        let msg = err("set-path", COPY, &["task.x=1"]);
        assert!(msg.contains("`task` is a string, not a section"), "{msg}");
        let msg = err("set-section", COPY, &["mnist.lr=1"]);
        assert!(
            msg.contains("--set mnist.lr=1: section [mnist] is not used by task = \"copy\""),
            "{msg}"
        );
        let msg = err("set-noeq", COPY, &["rnn.T"]);
        assert!(msg.contains("KEY=VALUE"), "{msg}");
    }

    #[test]
    fn override_can_supply_a_missing_key() {
        let c = load(
            "set-fix",
            &COPY.replace("steps = 100", ""),
            &["rnn.steps=5"],
        )
        .unwrap();
        assert_eq!(c.rnn.unwrap().steps, 5);
    }

    #[test]
    fn impossible_values_name_file_key_and_reason() {
        let msg = err("t0", &COPY.replace("T = 3", "T = 0"), &[]);
        assert!(
            msg.contains("test.toml: rnn.T = 0: must be at least 1"),
            "{msg}"
        );
        let msg = err("several", COPY, &["rnn.batch=0", "rnn.lr=-1"]);
        assert!(
            msg.contains("rnn.batch = 0: must be at least 1 (set by --set rnn.batch=0)"),
            "{msg}"
        );
        assert!(msg.contains("rnn.lr = -1"), "{msg}");
        // The CLI's limits are the library's: an MNIST batch of 1 (batch norm needs 2 rows) and a
        // momentum of 1 (never forgets) are refused here, naming the key.
        let mnist = std::fs::read_to_string(repo_root().join("configs/mnist_dni.toml")).unwrap();
        let msg = err("mnist1", &mnist, &["mnist.batch=1", "mnist.momentum=1"]);
        assert!(
            msg.contains("mnist.batch = 1: batch norm and the SG regression need at least 2 rows"),
            "{msg}"
        );
        assert!(msg.contains("mnist.momentum = 1"), "{msg}");
    }

    #[test]
    fn typed_overrides() {
        let (_dir, p) = temp_config("typed", COPY);
        let o = Overrides {
            steps: Some(0),
            out_dir: Some(PathBuf::from("elsewhere")),
            backend: Some(Backend::Vulkan),
            ..Default::default()
        };
        let msg = format!(
            "{:#}",
            Config::load_with_base(&p, &o, &repo_root()).unwrap_err()
        );
        assert!(
            msg.contains("rnn.steps = 0") && msg.contains("(set by --steps 0)"),
            "{msg}"
        );
        let o = Overrides {
            steps: Some(9),
            ..o
        };
        let c = Config::load_with_base(&p, &o, &repo_root()).unwrap();
        assert_eq!(c.rnn.unwrap().steps, 9);
        assert_eq!(c.run.out_dir, PathBuf::from("elsewhere"));
        assert_eq!(c.run.backend, Backend::Vulkan);
    }

    #[test]
    fn sections_must_match_the_task() {
        let msg = err(
            "unused",
            &format!("{COPY}\n[mnist]\nsteps = 1\nlr = 1.0\nmethod = \"bp\"\n"),
            &[],
        );
        assert!(
            msg.contains("section [mnist] is not used by task = \"copy\""),
            "{msg}"
        );
        let msg = err("missing", "task = \"charlm\"\n", &[]);
        assert!(
            msg.contains("needs a [rnn] section") && msg.contains("needs a [charlm] section"),
            "{msg}"
        );
    }

    #[test]
    fn charlm_paths_are_checked() {
        let lm = r#"
task = "charlm"
[rnn]
hidden = 8
batch = 2
T = 5
method = "dni_aux"
lr = 1e-3
steps = 10
[charlm]
train = "data/text/nope.txt"
"#;
        let msg = err("lm-missing", lm, &[]);
        assert!(
            msg.contains("charlm.train = \"data/text/nope.txt\": no such file"),
            "{msg}"
        );
        let msg = err(
            "lm-pair",
            lm,
            &[
                "charlm.train=data/text/tinyshakespeare.txt",
                "charlm.valid=data/text/ptb.char.valid.txt",
            ],
        );
        assert!(msg.contains("go together"), "{msg}");
        let c = load("lm-ok", lm, &["charlm.train=data/text/tinyshakespeare.txt"]).unwrap();
        assert_eq!(c.charlm.unwrap().format, CorpusFormat::Plain);
    }

    #[test]
    fn mnist_checks() {
        let m = r#"
task = "mnist"
[mnist]
steps = 10
lr = 3e-4
method = "bp"
"#;
        let msg = err("m-unlock", m, &["mnist.unlock=true", "mnist.p_update=0.5"]);
        assert!(
            msg.contains("mnist.unlock = true: only applies to methods dni and cdni"),
            "{msg}"
        );
        assert!(msg.contains("mnist.p_update = 0.5"), "{msg}");
        let msg = err("m-p", m, &["mnist.method=cdni", "mnist.p_update=0"]);
        assert!(
            msg.contains("mnist.p_update = 0: is a probability: must be in (0, 1]"),
            "{msg}"
        );
        let msg = err("m-dir", m, &["mnist.data_dir=nowhere"]);
        assert!(
            msg.contains("mnist.data_dir = \"nowhere\": no such directory"),
            "{msg}"
        );
    }
}
