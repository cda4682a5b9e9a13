//! Default values that the config files' settings types (`RecurrentSettings`, `TimescaleSettings`,
//! `MnistSettings`) share, for serde's `default = "..."`.

use std::path::PathBuf;

pub(crate) fn one() -> f64 {
    1.0
}

pub(crate) fn one_usize() -> usize {
    1
}

/// SGD's momentum unless a file says otherwise.
pub(crate) fn momentum() -> f64 {
    0.9
}

pub(crate) fn yes() -> bool {
    true
}

/// Where the MNIST IDX files are in a clone of the repository.
pub(crate) fn mnist_dir() -> PathBuf {
    PathBuf::from("data/mnist")
}
