//! End-to-end tests of the `dni-train` binary: a short Copy run writes its run directory and
//! learns something; bad input is a clear error that names the key and the file.

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dni-train"));
    // Configs name data paths relative to the repository root.
    c.current_dir(repo());
    c
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dni-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn copy_run_writes_its_run_directory_and_learns() {
    let out = scratch("copy");
    let res = bin()
        .args(["--config", "configs/copy.toml", "--steps", "300", "--out"])
        .arg(&out)
        .args(["--set", "run.name=e2e", "--set", "run.log_every=50"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "dni-train failed:\n{stderr}");
    let run = out.join("e2e");
    for f in [
        "config.toml",
        "command.txt",
        "metrics.jsonl",
        "summary.json",
    ] {
        assert!(run.join(f).is_file(), "{f} missing in {}", run.display());
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["status"], "ok", "{summary}");
    // Bits error per output character: an untrained net scores about half of the 9 bits wrong;
    // 300 windows of training must bring the logged error well below that.
    let bits: Vec<f64> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["bits_per_char"].as_f64())
        .collect();
    assert!(bits.len() >= 5, "too few metric records: {bits:?}");
    let last = *bits.last().unwrap();
    assert!(
        last < 3.0,
        "no learning in 300 windows: bits per char {bits:?}"
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn bad_config_names_the_key_and_the_file() {
    let dir = scratch("bad");
    let path = dir.join("bad.toml");
    std::fs::write(&path, "task = \"copy\"\n[rnn]\nhidden = 8\nbatch = 2\nT = 3\nmethod = \"dni\"\nlr = 0.001\nsteps = 5\nhiden = 3\n").unwrap();
    let res = bin().arg("--config").arg(&path).output().unwrap();
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("bad.toml") && err.contains("hiden"), "{err}");

    let res = bin()
        .args(["--config", "configs/copy.toml", "--set", "rnn.T=0"])
        .output()
        .unwrap();
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("rnn.T") && err.contains("copy.toml"), "{err}");

    let res = bin()
        .args([
            "--config",
            "configs/charlm.toml",
            "--set",
            "charlm.train=data/none.txt",
        ])
        .output()
        .unwrap();
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("charlm.train") && err.contains("none.txt"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn devices_lists_the_adapter() {
    let res = bin().arg("devices").output().unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(
        res.status.success(),
        "{}\nfix: install Mesa's lavapipe (scripts/install-lavapipe.sh)",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(stdout.contains("selected:"), "{stdout}");
}
