//! Training and evaluation scores, summed on the GPU and read back every few blocks.

/// Scores of one network's answers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Scores {
    /// Answers scored (A: `T` per lane and block, B: 1 per lane and block).
    pub answers: u64,
    /// Cross-entropy in nats summed over the answers.
    pub loss_nats: f64,
    /// Wrong answers (arg-max ≠ target).
    pub errors: f64,
}

impl Scores {
    /// Fraction of right answers.
    pub fn accuracy(&self) -> Option<f64> {
        (self.answers > 0).then(|| 1.0 - self.errors / self.answers as f64)
    }

    /// Cross-entropy in nats per answer.
    pub fn loss(&self) -> Option<f64> {
        (self.answers > 0).then(|| self.loss_nats / self.answers as f64)
    }
}

/// Sums over the blocks trained since the previous
/// [`read_metrics`](super::TwoTimescale::read_metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    /// Blocks (of `T²` steps) covered.
    pub blocks: u64,
    /// Network A: the count of odd digits in each window of `T` steps.
    pub a: Scores,
    /// Network B: the count of threes in each block of `T²` steps.
    pub b: Scores,
    /// Blocks whose B update trained the SG model.
    pub sg_blocks: u64,
    /// SG regression loss `0.5‖M(m) − δ‖²` over those blocks' messages, per lane (δ in one lane's
    /// units).
    pub sg_loss: f64,
    /// The same loss for a predictor that always says 0: what the SG model has to beat.
    pub sg_zero_loss: f64,
}

impl Metrics {
    /// SG loss per trained block.
    pub fn sg_loss_per_block(&self) -> Option<f64> {
        (self.sg_blocks > 0).then(|| self.sg_loss / self.sg_blocks as f64)
    }

    /// Fraction of the true message gradient's energy the SG model explains, `1 − loss / zero_loss`:
    /// 0 for the zero predictor it starts as, 1 for a perfect one.
    pub fn sg_explained(&self) -> Option<f64> {
        (self.sg_zero_loss > 0.0).then(|| 1.0 - self.sg_loss / self.sg_zero_loss)
    }
}

/// Scores of a forward-only pass over held-out blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Evaluation {
    pub blocks: u64,
    pub a: Scores,
    pub b: Scores,
}
