//! One directory per run: the resolved config, the command line, metrics as JSON lines and a summary,
//! so every result can be traced back to exactly what produced it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::config::Config;

/// An open run directory `<out_dir>/<name>/`.
pub struct RunDir {
    path: PathBuf,
    metrics: File,
    command: Vec<String>,
    started: Instant,
}

impl RunDir {
    /// Creates the run directory for `cfg` and records the current process's command line.
    pub fn create(cfg: &Config) -> anyhow::Result<RunDir> {
        RunDir::create_with(cfg, std::env::args().collect(), SystemTime::now())
    }

    /// [`RunDir::create`] with an explicit command line and time (for tests).
    pub fn create_with(
        cfg: &Config,
        command: Vec<String>,
        now: SystemTime,
    ) -> anyhow::Result<RunDir> {
        let out = &cfg.run.out_dir;
        std::fs::create_dir_all(out)
            .with_context(|| format!("cannot create the runs directory {}", out.display()))?;
        let base = match &cfg.run.name {
            Some(name) => name.clone(),
            None => format!("{}-{}", cfg.run_label(), utc_timestamp(now)),
        };
        let (path, name) = create_unique(out, &base)?;

        // The saved config names the directory it produced.
        let mut resolved = cfg.clone();
        resolved.run.name = Some(name);
        write_file(&path.join("config.toml"), &resolved.to_toml_string()?)?;
        write_file(&path.join("command.txt"), &(shell_join(&command) + "\n"))?;

        let metrics_path = path.join("metrics.jsonl");
        let metrics = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .with_context(|| format!("cannot create {}", metrics_path.display()))?;
        Ok(RunDir {
            path,
            metrics,
            command,
            started: Instant::now(),
        })
    }

    /// Reopens an existing run directory to resume it from a checkpoint at `step`: records later
    /// than `step` (logged after that checkpoint) are dropped from `metrics.jsonl`, the config is
    /// rewritten with the new step budget and the command line is appended to `command.txt`.
    pub fn reopen(path: &Path, cfg: &Config, step: u64) -> anyhow::Result<RunDir> {
        let command: Vec<String> = std::env::args().collect();
        let metrics_path = path.join("metrics.jsonl");
        let old = std::fs::read_to_string(&metrics_path).unwrap_or_default();
        let kept: String = old
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_some_and(|s| s <= step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        write_file(&metrics_path, &kept)?;
        write_file(&path.join("config.toml"), &cfg.to_toml_string()?)?;
        let cmd_path = path.join("command.txt");
        let mut cmds = std::fs::read_to_string(&cmd_path).unwrap_or_default();
        cmds.push_str(&(shell_join(&command) + "\n"));
        write_file(&cmd_path, &cmds)?;
        let metrics = OpenOptions::new()
            .append(true)
            .open(&metrics_path)
            .with_context(|| format!("cannot open {}", metrics_path.display()))?;
        Ok(RunDir {
            path: path.to_path_buf(),
            metrics,
            command,
            started: Instant::now(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Path of a file inside the run directory (for other artifacts such as checkpoints).
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Appends one JSON object as a line of `metrics.jsonl` and flushes it, so a crash loses nothing
    /// already logged.
    pub fn log<T: Serialize>(&mut self, record: &T) -> anyhow::Result<()> {
        let mut line =
            serde_json::to_string(record).context("cannot serialise a metrics record")?;
        line.push('\n');
        let path = self.path.join("metrics.jsonl");
        self.metrics
            .write_all(line.as_bytes())
            .and_then(|()| self.metrics.flush())
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Writes `summary.json`: `summary` (a JSON object) plus the command line, the run directory and the
    /// wall-clock time since the directory was created.
    pub fn write_summary(&self, summary: serde_json::Value) -> anyhow::Result<()> {
        let mut obj = match summary {
            serde_json::Value::Object(m) => m,
            other => {
                let mut m = serde_json::Map::new();
                m.insert("result".into(), other);
                m
            }
        };
        obj.insert("command".into(), shell_join(&self.command).into());
        obj.insert("argv".into(), self.command.clone().into());
        obj.insert("run_dir".into(), self.path.display().to_string().into());
        obj.entry("wall_clock_s")
            .or_insert_with(|| self.started.elapsed().as_secs_f64().into());
        let text = serde_json::to_string_pretty(&serde_json::Value::Object(obj))
            .context("cannot serialise the summary")?;
        write_file(&self.path.join("summary.json"), &(text + "\n"))
    }
}

/// Creates `out/base`, or `out/base-2`, `-3`, ... if it exists: an earlier run is never overwritten.
fn create_unique(out: &Path, base: &str) -> anyhow::Result<(PathBuf, String)> {
    for k in 1..10_000 {
        let name = if k == 1 {
            base.to_string()
        } else {
            format!("{base}-{k}")
        };
        let path = out.join(&name);
        // create_dir (not _all) fails if the directory exists, so two runs cannot claim the same one.
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok((path, name)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot create run directory {}", path.display()))
            }
        }
    }
    bail!(
        "{}: 10000 runs named {base:?} already exist; set run.name or clean up",
        out.display()
    )
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The command line as a shell would need it typed (single-quoting what needs it).
fn shell_join(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `YYYYmmdd-HHMMSS` in UTC (no time-zone database needed, and sorts by time).
fn utc_timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;
    use std::time::Duration;

    fn copy_config(out: &Path) -> Config {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let o = Overrides {
            out_dir: Some(out.to_path_buf()),
            ..Default::default()
        };
        Config::load_with_base(&root.join("configs/copy.toml"), &o, &root)
            .expect("configs/copy.toml")
    }

    #[test]
    fn timestamps() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "19700101-000000");
        // 2024-02-29 13:45:07 UTC (a leap day).
        let t = UNIX_EPOCH + Duration::from_secs(1_709_214_307);
        assert_eq!(utc_timestamp(t), "20240229-134507");
    }

    #[test]
    fn quoting() {
        let args: Vec<String> = ["dni-train", "--set", "run.name=a b", "it's"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            shell_join(&args),
            r"dni-train --set 'run.name=a b' 'it'\''s'"
        );
    }

    #[test]
    fn creates_unique_dirs_and_writes_records() {
        let out = dni_tasks::testing::TempDir::new("train-runs");
        let cfg = copy_config(&out);
        let now = UNIX_EPOCH + Duration::from_secs(86_400);
        let argv = vec![
            "dni-train".to_string(),
            "--config".into(),
            "configs/copy.toml".into(),
        ];
        let mut a = RunDir::create_with(&cfg, argv.clone(), now).unwrap();
        let b = RunDir::create_with(&cfg, argv.clone(), now).unwrap();
        let name = format!("{}-19700102-000000", cfg.run_label());
        assert_eq!(a.path(), out.join(&name));
        assert_eq!(b.path(), out.join(format!("{name}-2")));

        a.log(&serde_json::json!({"step": 50, "bits": 0.5}))
            .unwrap();
        a.log(&serde_json::json!({"step": 100, "bits": 0.25}))
            .unwrap();
        let lines = std::fs::read_to_string(a.file("metrics.jsonl")).unwrap();
        let recs: Vec<serde_json::Value> = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1]["bits"], 0.25);

        a.write_summary(serde_json::json!({"largest_solved": 9}))
            .unwrap();
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(a.file("summary.json")).unwrap())
                .unwrap();
        assert_eq!(s["largest_solved"], 9);
        assert_eq!(s["command"], "dni-train --config configs/copy.toml");
        assert_eq!(s["argv"][2], "configs/copy.toml");
        assert!(s["wall_clock_s"].as_f64().is_some());

        assert_eq!(
            std::fs::read_to_string(a.file("command.txt")).unwrap(),
            "dni-train --config configs/copy.toml\n"
        );
        // The saved config loads back and names its directory.
        let saved: Config =
            toml::from_str(&std::fs::read_to_string(a.file("config.toml")).unwrap()).unwrap();
        assert_eq!(saved.run.name.as_deref(), Some(name.as_str()));
        assert_eq!(saved.rnn, cfg.rnn);
    }
}
