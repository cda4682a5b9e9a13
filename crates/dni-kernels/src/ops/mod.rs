//! Typed kernel launchers. Each checks shapes, fetches its cached pipeline and bind group, and
//! records one or more dispatches into an [`Encoder`](crate::Encoder); nothing here waits.

pub mod batchnorm;
pub mod elementwise;
pub mod loss;
pub mod lstm;
pub mod matmul;
pub mod optim;
pub mod reduce;
pub mod rnn_step;

use crate::pipeline::Entry;

/// Every entry point the launchers above dispatch, each with the bind group it is given: what
/// `tests/shader_contracts.rs` checks against the WGSL.
pub fn entries() -> Vec<Entry> {
    [
        batchnorm::ENTRIES,
        elementwise::ENTRIES,
        loss::ENTRIES,
        lstm::ENTRIES,
        matmul::ENTRIES,
        optim::ENTRIES,
        reduce::ENTRIES,
        rnn_step::ENTRIES,
    ]
    .concat()
}
