//! Training metrics accumulated on the GPU and read back every few windows.

/// Sums over the windows since the previous [`read_metrics`](super::RecurrentTrainer::read_metrics).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    /// Training windows covered.
    pub windows: u64,
    /// Task loss in nats: masked binary cross-entropy summed over bits, or cross-entropy summed over
    /// tokens.
    pub loss_nats: f64,
    /// Wrong bits (sigmoid output) or wrong arg-max predictions (softmax output).
    pub errors: f64,
    /// Scored rows: output characters (rows with any masked bit), or tokens.
    pub scored: f64,
    /// Windows whose SG model was trained.
    pub sg_windows: u64,
    /// SG regression loss `0.5‖M(s) − δ‖²` summed over those windows, in per-lane units (the
    /// gradient of one lane's own loss).
    pub sg_loss: f64,
    /// The same loss for a predictor that always says 0: what the SG model has to beat.
    pub sg_zero_loss: f64,
    /// Windows that trained the aux head (DNI + Aux only).
    pub aux_windows: u64,
    /// Aux loss `0.5‖A(h₁) − M(s_last)‖²` (at every step: `0.5‖A(h_t) − M(s_{t+T})‖²` summed over
    /// the window's steps, unweighted) summed over those windows.
    pub aux_loss: f64,
    /// The scale `σ` of the SG's output when the run normalises its targets
    /// ([`crate::sg::SgConfig::normalise`]): their running RMS, per-lane units, at the read.
    pub sg_target_rms: Option<f64>,
}

impl Metrics {
    /// Wrong bits per output character (the Copy curriculum's measure).
    pub fn bits_per_char(&self) -> Option<f64> {
        (self.scored > 0.0).then(|| self.errors / self.scored)
    }

    /// Bits per character of a softmax model: cross-entropy in bits per scored token.
    pub fn bpc(&self) -> Option<f64> {
        (self.scored > 0.0).then(|| self.loss_nats / self.scored / std::f64::consts::LN_2)
    }

    /// Task loss in nats per scored row.
    pub fn loss_per_row(&self) -> Option<f64> {
        (self.scored > 0.0).then(|| self.loss_nats / self.scored)
    }

    /// Average SG regression loss per trained window.
    pub fn sg_loss_per_window(&self) -> Option<f64> {
        (self.sg_windows > 0).then(|| self.sg_loss / self.sg_windows as f64)
    }

    /// Fraction of the target's energy the SG model explains: `1 − sg_loss / sg_zero_loss` (0 for the
    /// zero predictor it starts as, 1 for a perfect one).
    pub fn sg_explained(&self) -> Option<f64> {
        crate::sg::explained(self.sg_loss, self.sg_zero_loss)
    }

    /// Average aux loss per window.
    pub fn aux_loss_per_window(&self) -> Option<f64> {
        (self.aux_windows > 0).then(|| self.aux_loss / self.aux_windows as f64)
    }
}

/// Result of one pass over held-out token data.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EvalResult {
    /// Cross-entropy in nats summed over the scored tokens.
    pub loss_nats: f64,
    /// Wrong arg-max predictions.
    pub errors: f64,
    /// Scored tokens.
    pub chars: u64,
}

impl EvalResult {
    pub fn bpc(&self) -> f64 {
        if self.chars == 0 {
            return f64::NAN;
        }
        self.loss_nats / self.chars as f64 / std::f64::consts::LN_2
    }
}
