//! # dni-graph
//!
//! Decoupled training on top of `dni-kernels`:
//! - [`ff`]: feed-forward networks whose blocks run as workers on their own threads and command
//!   streams, joined by interfaces that own synthetic-gradient (and synthetic-input) models: DNI,
//!   cDNI, `p_update`, complete unlock, BP(λ), and the locked backprop baseline on the same machinery;
//! - [`recurrent`]: an LSTM trained by truncated BPTT whose windows end in a synthetic gradient
//!   (DNI, DNI + Aux), for the Copy tasks and character-level language modelling;
//! - [`lstm`] and [`linear`]: the pieces every recurrent model here is built from, public so that a
//!   user composes their own (an LSTM, a readout and an [`sg::SgInterface`] on its state);
//! - [`sg`]: what every synthetic gradient shares: the explained-fraction baseline and the fidelity
//!   probe against the true long-range gradient;
//! - [`timescale`]: two LSTMs ticking at two timescales, joined end-to-end, by DNI, or not at all.
//!
//! Training algorithms are configurations of these pieces, not separate code paths.

#[cfg(feature = "serde")]
mod defaults;
mod error;
pub mod ff;
mod in_flight;
pub mod layers;
pub mod linear;
pub mod lstm;
pub mod recurrent;
pub mod sg;
mod state;
pub mod timescale;

pub use error::{Error, Result};
