//! A helper for tests of this crate and of crates built on it.

use std::ops::Deref;
use std::path::{Path, PathBuf};

/// A fresh, empty directory under the system temp dir, named `dni-<tag>-<process id>`, removed with
/// everything in it when dropped, so that test runs leave nothing behind.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates the directory (emptying one a crashed run of this process id left).
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("dni-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_lives_as_long_as_its_guard() {
        let path = {
            let dir = TempDir::new("testing-guard");
            std::fs::write(dir.join("f"), "x").unwrap();
            assert!(dir.join("f").is_file());
            dir.path().to_path_buf()
        };
        assert!(!path.exists(), "{} was left behind", path.display());
    }
}
