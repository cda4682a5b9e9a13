//! The crate's error type: every message names the problem, the file (or parameter) and a fix.

use std::path::PathBuf;

/// Errors from loading data sets and building task streams.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "missing data file: none of {tried} exists in {dir}; expected the standard MNIST file \
         {expected} (gzipped or not). Download MNIST into that directory or point the loader at the \
         directory that holds it"
    )]
    MissingMnistFile {
        dir: PathBuf,
        expected: String,
        tried: String,
    },

    #[error(
        "{path}: cannot decompress: {source}. The file starts with the gzip magic bytes but is not \
         valid gzip; download it again"
    )]
    Gzip {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{path}: wrong magic number: expected {expected:#010x} ({what}), found {found:#010x}. The file \
         may not be an IDX file, or images and labels may be swapped"
    )]
    BadMagic {
        path: PathBuf,
        what: &'static str,
        expected: u32,
        found: u32,
    },

    #[error(
        "{path}: truncated: the IDX header needs {expected} bytes, the file has {got}. Download it again"
    )]
    Truncated {
        path: PathBuf,
        expected: u64,
        got: u64,
    },

    #[error(
        "{}: the IDX header's dimensions {dims:?} multiply past 2^64 bytes; the file is corrupt or \
         not an IDX file. Download it again",
        path.display()
    )]
    Oversize { path: PathBuf, dims: Vec<usize> },

    #[error(
        "{path}: {got} bytes, but the IDX header describes {expected}; the file is corrupt or not an \
         IDX file. Download it again"
    )]
    TrailingBytes {
        path: PathBuf,
        expected: u64,
        got: u64,
    },

    #[error(
        "{images} holds {n_images} images but {labels} holds {n_labels} labels; they must come from the \
         same split (train-* with train-*, t10k-* with t10k-*)"
    )]
    CountMismatch {
        images: PathBuf,
        labels: PathBuf,
        n_images: usize,
        n_labels: usize,
    },

    #[error(
        "{path}: label {label} at index {index} is not a digit (0..=9); the file is corrupt or not an \
         MNIST label file"
    )]
    BadLabel {
        path: PathBuf,
        index: usize,
        label: u8,
    },

    #[error(
        "{train} has {train_rows}x{train_cols} images but {test} has {test_rows}x{test_cols}; train and \
         test images must have the same size"
    )]
    ShapeMismatch {
        train: PathBuf,
        test: PathBuf,
        train_rows: usize,
        train_cols: usize,
        test_rows: usize,
        test_cols: usize,
    },

    #[error("{what}: file {path} does not exist; fix the path (relative paths start at the current directory)")]
    MissingFile { path: PathBuf, what: String },

    #[error("{what}: file {path} is empty; point it at a text corpus")]
    EmptyFile { path: PathBuf, what: String },

    #[error("{what}: file {path} is not valid UTF-8 (first bad byte at offset {offset}); convert it to UTF-8")]
    NotUtf8 {
        path: PathBuf,
        what: String,
        offset: usize,
    },

    #[error(
        "{path}, line {line}: symbol {symbol:?} does not occur in the training text {train}, so it has \
         no id in the vocabulary; use splits of the same corpus, or drop the separate valid/test files \
         to split one file by fractions"
    )]
    UnknownSymbol {
        symbol: String,
        path: PathBuf,
        line: usize,
        train: PathBuf,
    },

    #[error("{what}: {got} symbols is too few: {need}; use a larger corpus or a smaller batch")]
    TooShort {
        what: String,
        need: String,
        got: usize,
    },

    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter {
        name: &'static str,
        value: String,
        reason: String,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(
        name: &'static str,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        DataError::InvalidParameter {
            name,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
