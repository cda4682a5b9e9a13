//! The synthetic gradient's shared pieces: how well it fits its target, and how well it predicts the
//! gradient it stands in for.
//!
//! - [`explained`]: the fraction of a target's energy a prediction explains, against a predictor that
//!   always says 0 (the SG model's starting point). Both `sg_explained` (against the bootstrapped
//!   training target) and the probe's `explained` (against the true future gradient) use it.
//! - [`SgInterface`]: the one SG model (`model::Synthesizer`, which every trainer here uses) for
//!   a tensor of the user's own model.
//! - [`probe`]: the fidelity probe, which scores the injected SG against the gradient that the future
//!   beyond the window really sends back.

pub mod interface;
pub mod model;
pub mod probe;

pub use interface::{SgInterface, SgInterfaceConfig};
pub use model::{SgConfig, SgInput};
pub use probe::{fidelity, Fidelity, FutureTargets, ProbeModel};

/// `1 − err / zero`: the fraction of the target's energy (`zero`, the squared error of always saying 0)
/// that a prediction with squared error `err` explains. `None` when the target is exactly 0.
pub fn explained(err: f64, zero: f64) -> Option<f64> {
    (zero > 0.0).then(|| 1.0 - err / zero)
}
