//! Data sets and tasks for `dni`, in pure Rust (no GPU):
//!
//! - [`mnist`]: the MNIST IDX reader (gzipped or not), batching and epoch shuffling;
//! - [`copy`]: the Copy and Repeat Copy tasks as endless streams with their curriculum;
//! - [`digits`]: the two-timescale task's endless MNIST digit stream (paper 3.2);
//! - [`text`]: character-level corpora and the streams a language model trains and evaluates on;
//! - [`rng`]: the project's small deterministic RNG (no `rand` dependency).
//!
//! Every loader reports bad input through [`DataError`], whose messages name the problem, the file and
//! the fix.

pub mod copy;
pub mod digits;
pub mod error;
pub mod mnist;
pub mod rng;
pub mod testing;
pub mod text;

pub use copy::{
    bits_error, CopyKind, Curriculum, CurriculumConfig, Level, Observed, PredScale, TaskStream,
    Window,
};
pub use digits::{DigitBlock, DigitStream};
pub use error::DataError;
pub use mnist::{EpochShuffler, Mnist, MnistSplit};
pub use rng::Rng;
pub use text::{CharStream, Corpus, EvalStream, Fractions, TextFile, TextFormat, Vocab};

#[cfg(test)]
pub(crate) mod test_util {
    use crate::testing::TempDir;

    /// A fresh empty directory, unique per test tag and process, removed when dropped.
    pub(crate) fn temp_dir(tag: &str) -> TempDir {
        TempDir::new(&format!("tasks-{tag}"))
    }
}
