//! The data of paper 3.2: an endless stream of MNIST digits, one per step and lane, cut into blocks
//! of `T²` steps with A's targets (odd digits in each window of `T` steps) and B's target (threes in
//! the block). Used by `dni_graph::timescale`.

use crate::error::DataError;
use crate::mnist::{EpochShuffler, MnistSplit};

type Result<T> = std::result::Result<T, DataError>;

/// Features per step for digits of `pixels` pixels: the pixels in [0, 1], then a flag that is 1 on
/// the first step of each window of `T`. The flag is A's clock: its state runs on across windows,
/// and without it A could not tell where the window it must count over begins.
pub fn input_width(pixels: usize) -> usize {
    pixels + 1
}

/// `T²` steps of the stream for every lane.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DigitBlock {
    /// `[T², B, pixels + 1]`, time-major.
    pub inputs: Vec<f32>,
    /// `[T², B]`: the digit shown at each step.
    pub digits: Vec<u8>,
    /// `[T, B]`: odd digits in each window of `T` steps, A's targets (`0..=T`).
    pub odd: Vec<u32>,
    /// `[B]`: threes in the block's `T²` steps, B's target (`0..=T²`).
    pub threes: Vec<u32>,
}

impl DigitBlock {
    /// Recomputes `odd` and `threes` from `digits` (laid out `[T², B]`).
    pub fn count(&mut self, t: usize, batch: usize) {
        self.odd.clear();
        self.odd.resize(t * batch, 0);
        self.threes.clear();
        self.threes.resize(batch, 0);
        for (step, row) in self.digits.chunks(batch).enumerate() {
            for (lane, &d) in row.iter().enumerate() {
                self.odd[(step / t) * batch + lane] += u32::from(d % 2 == 1);
                self.threes[lane] += u32::from(d == 3);
            }
        }
    }
}

/// Random digits of one MNIST split (reshuffled every epoch), `batch` lanes side by side.
pub struct DigitStream<'a> {
    split: &'a MnistSplit,
    t: usize,
    batch: usize,
    shuffler: EpochShuffler,
}

impl<'a> DigitStream<'a> {
    /// A stream over `split` for windows of `t` steps and `batch` lanes; `seed` fixes the order.
    pub fn new(split: &'a MnistSplit, t: usize, batch: usize, seed: u64) -> Result<Self> {
        if t < 2 {
            return Err(DataError::invalid(
                "T",
                t,
                "the digit stream needs windows of at least 2 steps",
            ));
        }
        Ok(Self {
            split,
            t,
            batch,
            shuffler: EpochShuffler::new(split.n, batch, seed)?,
        })
    }

    /// Features per step (pixels + the window-start flag).
    pub fn input_width(&self) -> usize {
        input_width(self.split.pixels())
    }

    /// The stream's position (shuffled order, position, epoch, RNG state), for checkpoints.
    pub fn shuffler(&self) -> &EpochShuffler {
        &self.shuffler
    }

    /// Continues from a position [`shuffler`](Self::shuffler) gave (read from a checkpoint);
    /// refused when it does not fit this split and batch.
    pub fn restore_shuffler(&mut self, saved: EpochShuffler) -> Result<()> {
        saved.check_restored(&self.shuffler)?;
        self.shuffler = saved;
        Ok(())
    }

    /// Fills `block` with the next `T²` steps (its buffers are reused).
    pub fn next_block(&mut self, block: &mut DigitBlock) {
        let (t, b, p) = (self.t, self.batch, self.split.pixels());
        let width = p + 1;
        block.inputs.clear();
        block.inputs.reserve(t * t * b * width);
        block.digits.clear();
        for step in 0..t * t {
            let flag = if step % t == 0 { 1.0 } else { 0.0 };
            for &i in self.shuffler.next_batch() {
                block.inputs.extend_from_slice(self.split.image(i));
                block.inputs.push(flag);
                block.digits.push(self.split.labels[i]);
            }
        }
        block.count(t, b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_window_and_block() {
        // T = 2, B = 2: steps 0..4, lane 0 sees 3 3 8 1, lane 1 sees 2 4 5 7.
        let mut b = DigitBlock {
            digits: vec![3, 2, 3, 4, 8, 5, 1, 7],
            ..Default::default()
        };
        b.count(2, 2);
        assert_eq!(b.odd, vec![2, 0, 1, 2]);
        assert_eq!(b.threes, vec![2, 0]);
    }

    #[test]
    fn stream_layout_and_flags() {
        let (n, p) = (10, 4);
        let split = MnistSplit {
            images: (0..n * p).map(|v| (v / p) as f32 / 10.0).collect(),
            labels: (0..n as u8).collect(),
            n,
            rows: 2,
            cols: 2,
        };
        let (t, b) = (3, 2);
        let mut s = DigitStream::new(&split, t, b, 5).unwrap();
        let mut blk = DigitBlock::default();
        s.next_block(&mut blk);
        assert_eq!(blk.inputs.len(), t * t * b * (p + 1));
        assert_eq!(blk.digits.len(), t * t * b);
        for step in 0..t * t {
            for lane in 0..b {
                let row = &blk.inputs[(step * b + lane) * (p + 1)..][..p + 1];
                // Image i has every pixel i/10 and label i.
                let d = blk.digits[step * b + lane];
                assert!(row[..p].iter().all(|&v| v == d as f32 / 10.0));
                assert_eq!(row[p], if step % t == 0 { 1.0 } else { 0.0 });
            }
        }
        let odd: u32 = blk.digits.iter().map(|&d| u32::from(d % 2 == 1)).sum();
        assert_eq!(blk.odd.iter().sum::<u32>(), odd);
        assert!(DigitStream::new(&split, 1, b, 5).is_err());
    }
}
