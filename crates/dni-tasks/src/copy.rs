//! The Copy and Repeat Copy tasks (DNI paper 3.1) as endless streams for truncated-BPTT training,
//! with the curriculum that makes them harder as they are solved.
//!
//! Every step carries an input vector and a target vector of [`WIDTH`] channels:
//!
//! | channel | input | target |
//! |---|---|---|
//! | 0..8 | bits of a character (bit `i` of the byte in channel `i`) | bits of the character to output |
//! | 8 ([`STOP`]) | 1 on the stop step | 1 on the final stop step |
//! | 9 ([`REPEAT`]) | Repeat Copy: `R / REPEAT_SCALE` on the repeat-count step | never used |
//!
//! Copy episode, `N` characters (`2N + 2` steps): `N` input characters, one stop step, then `N` output
//! steps whose targets are the characters, then one output step whose target is the stop flag.
//!
//! Repeat Copy episode (`N + 3 + N·R` steps): `N` input characters, a stop step, a step carrying the repeat
//! count `R`, then the sequence `R` times, then the final stop.
//!
//! Only output steps are scored: their mask is 1 on channels 0..9 (the 8 bits and the stop flag); input
//! steps have mask 0 and target 0. Each scored step is one "output character" for the bits-per-character
//! error that drives the curriculum.

use std::collections::VecDeque;
use std::fmt;

use crate::error::DataError;
use crate::rng::Rng;

/// Channels per step, for inputs, targets and mask.
pub const WIDTH: usize = 10;
/// Channels 0..BITS hold a character's bits.
pub const BITS: usize = 8;
/// Stop-flag channel.
pub const STOP: usize = 8;
/// Repeat-count channel (inputs only).
pub const REPEAT: usize = 9;
/// Channels 0..SCORED are scored on output steps.
pub const SCORED: usize = 9;
/// The repeat count is fed as `R / REPEAT_SCALE`: a fixed scale keeps the input's meaning constant as the
/// curriculum raises `R`, and keeps it of order 1 for the counts reached in practice (R up to ~10-20).
pub const REPEAT_SCALE: f32 = 10.0;

/// Default curriculum threshold, in bits per output character (paper: 0.15).
pub const DEFAULT_THRESHOLD_BITS: f64 = 0.15;
/// Default number of recent output characters averaged by the curriculum: enough that one lucky window
/// cannot pass a level (1000 characters = 9000 scored bits).
pub const DEFAULT_WINDOW_CHARS: u64 = 1000;

/// Longest episode a curriculum may start at (steps); far beyond anything trainable, far below
/// where the step arithmetic could wrap.
pub const MAX_EPISODE_STEPS: usize = 1 << 32;

/// Which task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CopyKind {
    Copy,
    RepeatCopy,
}

/// A curriculum level: `n` characters, repeated `r` times (`r` is 1 and unused for Copy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Level {
    pub n: usize,
    pub r: usize,
}

impl Level {
    /// The paper's "episode length" for this level: `N + 3` for Copy, `N·R + 3` for Repeat Copy.
    pub fn episode_length_metric(&self, kind: CopyKind) -> usize {
        match kind {
            CopyKind::Copy => self.n + 3,
            CopyKind::RepeatCopy => self.n * self.r + 3,
        }
    }

    /// Number of time steps an episode at this level occupies in the stream.
    pub fn episode_steps(&self, kind: CopyKind) -> usize {
        match kind {
            CopyKind::Copy => 2 * self.n + 2,
            CopyKind::RepeatCopy => self.n + 3 + self.n * self.r,
        }
    }

    /// Number of scored (output) steps in one episode.
    pub fn output_chars(&self, kind: CopyKind) -> usize {
        match kind {
            CopyKind::Copy => self.n + 1,
            CopyKind::RepeatCopy => self.n * self.r + 1,
        }
    }
}

/// Curriculum settings; also `dni-train`'s `[copy]` section, whose absent keys take the defaults.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CurriculumConfig {
    /// First `N` (at least 1).
    pub start_n: usize,
    /// First `R` for Repeat Copy (at least 1; ignored for Copy).
    pub start_r: usize,
    /// Advance when the average error is below this many bits per output character.
    pub threshold_bits: f64,
    /// The average is taken over (at least) this many of the most recent output characters, all at the
    /// current level; a level cannot pass before that many have been observed.
    pub window_chars: u64,
    /// Stop advancing once the next level would need `N > max_n`; [`Curriculum::finished`] then says so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_n: Option<usize>,
}

impl Default for CurriculumConfig {
    fn default() -> Self {
        CurriculumConfig {
            start_n: 1,
            start_r: 1,
            threshold_bits: DEFAULT_THRESHOLD_BITS,
            window_chars: DEFAULT_WINDOW_CHARS,
            max_n: None,
        }
    }
}

impl CurriculumConfig {
    /// The first of [`problems`](Self::problems), as an error.
    pub fn validate(&self) -> Result<(), DataError> {
        match self.problems().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every setting that cannot work, each a [`DataError::InvalidParameter`] naming its field.
    pub fn problems(&self) -> Vec<DataError> {
        let mut out = Vec::new();
        if self.start_n == 0 {
            out.push(DataError::invalid(
                "start_n",
                self.start_n,
                "an episode needs at least 1 character",
            ));
        }
        if self.start_r == 0 {
            out.push(DataError::invalid(
                "start_r",
                self.start_r,
                "the sequence must be repeated at least once",
            ));
        }
        if !(self.threshold_bits > 0.0 && self.threshold_bits.is_finite()) {
            out.push(DataError::invalid(
                "threshold_bits",
                self.threshold_bits,
                "must be a positive number of bits per character (paper: 0.15)",
            ));
        }
        if self.window_chars == 0 {
            out.push(DataError::invalid(
                "window_chars",
                self.window_chars,
                "must be at least 1 character",
            ));
        }
        // An episode of the first level must have a length that neither wraps nor could be
        // played (n + 3 + n·r steps); later levels grow by one.
        let steps = self
            .start_n
            .checked_mul(self.start_r)
            .and_then(|nr| nr.checked_add(self.start_n))
            .and_then(|x| x.checked_add(3));
        if self.start_n > 0 && steps.is_none_or(|s| s > MAX_EPISODE_STEPS) {
            out.push(DataError::invalid(
                "start_n",
                format!("{} (start_r {})", self.start_n, self.start_r),
                format!(
                    "an episode of N + 3 + N·R steps must stay below {MAX_EPISODE_STEPS} steps"
                ),
            ));
        }
        if let Some(max_n) = self.max_n.filter(|&m| m < self.start_n) {
            out.push(DataError::invalid(
                "max_n",
                max_n,
                format!("must be at least start_n = {}", self.start_n),
            ));
        }
        out
    }
}

/// Which parameter Repeat Copy raises next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Raise {
    R,
    N,
}

/// Tracks the running error and decides when the task gets harder.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Curriculum {
    kind: CopyKind,
    cfg: CurriculumConfig,
    level: Level,
    next_raise: Raise,
    /// Recent `(bits, chars)` observations at the current level, oldest first.
    recent: VecDeque<(f64, u64)>,
    recent_bits: f64,
    recent_chars: u64,
    largest_solved: Option<usize>,
    finished: bool,
    generation: u64,
}

impl Curriculum {
    pub fn new(kind: CopyKind, cfg: CurriculumConfig) -> Result<Self, DataError> {
        cfg.validate()?;
        let level = Level {
            n: cfg.start_n,
            r: match kind {
                CopyKind::Copy => 1,
                CopyKind::RepeatCopy => cfg.start_r,
            },
        };
        Ok(Curriculum {
            kind,
            cfg,
            level,
            next_raise: Raise::R,
            recent: VecDeque::new(),
            recent_bits: 0.0,
            recent_chars: 0,
            largest_solved: None,
            finished: false,
            generation: 0,
        })
    }

    /// Adds the error of some output characters at the current level (`bits_sum` wrong bits over `chars`
    /// characters) and advances when the running average is below the threshold. Returns true when the
    /// level was passed.
    pub fn observe(&mut self, bits_sum: f64, chars: u64) -> bool {
        if self.finished || chars == 0 {
            return false;
        }
        self.recent.push_back((bits_sum, chars));
        self.recent_bits += bits_sum;
        self.recent_chars += chars;
        // Drop the oldest observations as long as the rest still cover the window.
        while let Some(&(_, c)) = self.recent.front() {
            if self.recent_chars - c >= self.cfg.window_chars {
                self.recent.pop_front();
                self.recent_chars -= c;
            } else {
                break;
            }
        }
        // Re-summed rather than subtracted, so rounding cannot drift over a long run.
        self.recent_bits = self.recent.iter().map(|&(b, _)| b).sum();
        let passed = self.recent_chars >= self.cfg.window_chars
            && self
                .average_bits()
                .is_some_and(|avg| avg < self.cfg.threshold_bits);
        if passed {
            self.advance();
        }
        passed
    }

    fn advance(&mut self) {
        self.largest_solved = Some(self.level.episode_length_metric(self.kind));
        self.recent.clear();
        self.recent_bits = 0.0;
        self.recent_chars = 0;
        let mut next = self.level;
        let raise = match self.kind {
            CopyKind::Copy => Raise::N,
            CopyKind::RepeatCopy => self.next_raise,
        };
        match raise {
            Raise::N => next.n += 1,
            Raise::R => next.r += 1,
        }
        if self.cfg.max_n.is_some_and(|max_n| next.n > max_n) {
            self.finished = true;
            return;
        }
        self.next_raise = match raise {
            Raise::N => Raise::R,
            Raise::R => Raise::N,
        };
        self.level = next;
        self.generation += 1;
    }

    /// The level episodes are started at now.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Episode-length metric of the current level.
    pub fn episode_length_metric(&self) -> usize {
        self.level.episode_length_metric(self.kind)
    }

    /// Episode-length metric of the last level passed (the paper's "largest episode length solved").
    pub fn largest_solved(&self) -> Option<usize> {
        self.largest_solved
    }

    /// True once `max_n` was reached and its level passed.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Average bits per output character over the recent observations at this level.
    pub fn average_bits(&self) -> Option<f64> {
        (self.recent_chars > 0).then(|| self.recent_bits / self.recent_chars as f64)
    }

    /// Number of levels passed so far (changes exactly when the level does).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn kind(&self) -> CopyKind {
        self.kind
    }

    pub fn config(&self) -> &CurriculumConfig {
        &self.cfg
    }

    /// Short text for progress displays, e.g. `N=4` or `N=3 R=2`.
    pub fn level_label(&self) -> String {
        LevelLabel(self.kind, self.level).to_string()
    }
}

struct LevelLabel(CopyKind, Level);

impl fmt::Display for LevelLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            CopyKind::Copy => write!(f, "N={}", self.1.n),
            CopyKind::RepeatCopy => write!(f, "N={} R={}", self.1.n, self.1.r),
        }
    }
}

/// One batch lane: plays episodes back to back.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Lane {
    rng: Rng,
    level: Level,
    generation: u64,
    chars: Vec<u8>,
    pos: usize,
    steps: usize,
}

impl Lane {
    fn start_episode(&mut self, kind: CopyKind, level: Level, generation: u64) {
        self.level = level;
        self.generation = generation;
        self.chars.clear();
        for _ in 0..level.n {
            self.chars.push(self.rng.next_u32() as u8);
        }
        self.pos = 0;
        self.steps = level.episode_steps(kind);
    }

    /// Writes the current step into the zeroed slices; returns true when it is scored.
    fn write_step(
        &self,
        kind: CopyKind,
        input: &mut [f32],
        target: &mut [f32],
        mask: &mut [f32],
    ) -> bool {
        let n = self.level.n;
        let p = self.pos;
        // First output step and the one carrying the final stop.
        let (out_start, stop_out) = match kind {
            CopyKind::Copy => (n + 1, 2 * n + 1),
            CopyKind::RepeatCopy => (n + 2, n + 2 + n * self.level.r),
        };
        if p < n {
            write_bits(self.chars[p], input);
            false
        } else if p == n {
            input[STOP] = 1.0;
            false
        } else if p < out_start {
            // Repeat Copy only: the repeat-count step.
            input[REPEAT] = self.level.r as f32 / REPEAT_SCALE;
            false
        } else {
            if p < stop_out {
                write_bits(self.chars[(p - out_start) % n], target);
            } else {
                target[STOP] = 1.0;
            }
            mask[..SCORED].fill(1.0);
            true
        }
    }
}

fn write_bits(c: u8, out: &mut [f32]) {
    for (i, v) in out[..BITS].iter_mut().enumerate() {
        *v = ((c >> i) & 1) as f32;
    }
}

/// One window of the stream, laid out `[t][batch][WIDTH]` row-major (time-major: step `s`, lane `b`,
/// channel `c` is at `(s * batch + b) * WIDTH + c`). Reuse one `Window` across calls: the buffers keep
/// their capacity.
#[derive(Clone, Debug, Default)]
pub struct Window {
    pub t: usize,
    pub batch: usize,
    pub inputs: Vec<f32>,
    pub targets: Vec<f32>,
    pub mask: Vec<f32>,
    /// Scored steps × lanes in this window: the denominator of bits per character.
    pub output_chars: usize,
    /// Sequence number of this window in its stream (0 for the first); pass it to
    /// [`TaskStream::observe`].
    pub index: u64,
}

/// What [`TaskStream::observe`] did with an observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// Added to the curriculum's running average.
    Counted,
    /// Added, and the level was passed.
    Advanced,
    /// Dropped: it covers windows that still held episodes of an earlier level.
    Ignored,
}

/// `batch` lanes each playing episodes back to back forever; a lane starts its next episode at the
/// curriculum's current level when its episode ends, so the recurrent state runs on across episodes.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TaskStream {
    kind: CopyKind,
    batch: usize,
    lanes: Vec<Lane>,
    curriculum: Curriculum,
    next_index: u64,
    /// For each curriculum generation, the last window that held a scored step of that generation.
    last_window_of_generation: Vec<Option<u64>>,
    episodes_started: u64,
}

impl TaskStream {
    pub fn new(
        kind: CopyKind,
        batch: usize,
        seed: u64,
        cfg: CurriculumConfig,
    ) -> Result<Self, DataError> {
        if batch == 0 {
            return Err(DataError::invalid("batch", batch, "must be at least 1"));
        }
        let curriculum = Curriculum::new(kind, cfg)?;
        let level = curriculum.level();
        let lanes = (0..batch)
            .map(|b| {
                let mut lane = Lane {
                    rng: Rng::for_stream(seed, b as u64),
                    level,
                    generation: 0,
                    chars: Vec::new(),
                    pos: 0,
                    steps: 0,
                };
                lane.start_episode(kind, level, 0);
                lane
            })
            .collect();
        Ok(TaskStream {
            kind,
            batch,
            lanes,
            curriculum,
            next_index: 0,
            last_window_of_generation: vec![None],
            episodes_started: batch as u64,
        })
    }

    /// Fills `out` with the next `t` steps of every lane and returns the number of output characters
    /// (scored steps × lanes) in it.
    pub fn next_window(&mut self, t: usize, out: &mut Window) -> usize {
        let (batch, kind) = (self.batch, self.kind);
        let len = t * batch * WIDTH;
        for buf in [&mut out.inputs, &mut out.targets, &mut out.mask] {
            buf.clear();
            buf.resize(len, 0.0);
        }
        out.t = t;
        out.batch = batch;
        out.index = self.next_index;
        out.output_chars = 0;
        for s in 0..t {
            for (b, lane) in self.lanes.iter_mut().enumerate() {
                if lane.pos == lane.steps {
                    lane.start_episode(kind, self.curriculum.level(), self.curriculum.generation());
                    self.episodes_started += 1;
                }
                let at = (s * batch + b) * WIDTH;
                let scored = lane.write_step(
                    kind,
                    &mut out.inputs[at..at + WIDTH],
                    &mut out.targets[at..at + WIDTH],
                    &mut out.mask[at..at + WIDTH],
                );
                if scored {
                    out.output_chars += 1;
                    let g = lane.generation as usize;
                    if self.last_window_of_generation.len() <= g {
                        self.last_window_of_generation.resize(g + 1, None);
                    }
                    self.last_window_of_generation[g] = Some(self.next_index);
                }
                lane.pos += 1;
            }
        }
        self.next_index += 1;
        out.output_chars
    }

    /// Feeds the curriculum the error summed over the windows `first_window..` (up to the latest one
    /// generated). The observation is ignored when any of those windows scored an episode started before
    /// the current level, so the average only ever mixes characters of the current level.
    pub fn observe(&mut self, first_window: u64, bits_sum: f64, chars: u64) -> Observed {
        let current = self.curriculum.generation() as usize;
        let stale = self.last_window_of_generation
            [..current.min(self.last_window_of_generation.len())]
            .iter()
            .flatten()
            .any(|&w| w >= first_window);
        if stale {
            return Observed::Ignored;
        }
        if self.curriculum.observe(bits_sum, chars) {
            Observed::Advanced
        } else {
            Observed::Counted
        }
    }

    pub fn curriculum(&self) -> &Curriculum {
        &self.curriculum
    }

    pub fn kind(&self) -> CopyKind {
        self.kind
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Index the next window will carry.
    pub fn next_window_index(&self) -> u64 {
        self.next_index
    }

    /// Episodes begun so far over all lanes (including the ones in progress).
    pub fn episodes_started(&self) -> u64 {
        self.episodes_started
    }

    /// A copy of this stream whose unseen randomness is drawn afresh from `seed`: the characters of
    /// each lane's current episode that it has not read yet, and every later episode. What a lane has
    /// already read stays, so the copies' futures are the ones a model in this state could face (the
    /// SG probe averages over them).
    pub fn resampled(&self, seed: u64) -> TaskStream {
        let mut copy = self.clone();
        for (b, lane) in copy.lanes.iter_mut().enumerate() {
            lane.rng = Rng::for_stream(seed, b as u64);
            let read = lane.pos.min(lane.chars.len());
            for c in &mut lane.chars[read..] {
                *c = lane.rng.next_u32() as u8;
            }
        }
        copy
    }

    /// Checks a stream read back from a checkpoint against `fresh`, the stream the run's config
    /// builds: same task, batch and curriculum settings, and every lane in a state `next_window`
    /// can continue from (a damaged or edited checkpoint is an error here, not a panic later).
    pub fn check_restored(&self, fresh: &TaskStream) -> Result<(), DataError> {
        if self.kind != fresh.kind || self.batch != fresh.batch || self.lanes.len() != self.batch {
            return Err(DataError::invalid(
                "task stream",
                format!(
                    "{:?} batch {} ({} lanes)",
                    self.kind,
                    self.batch,
                    self.lanes.len()
                ),
                format!(
                    "the run's config has {:?} batch {}",
                    fresh.kind, fresh.batch
                ),
            ));
        }
        if self.curriculum.cfg != fresh.curriculum.cfg || self.curriculum.kind != fresh.kind {
            return Err(DataError::invalid(
                "curriculum",
                format!("{:?}", self.curriculum.cfg),
                format!("the run's config has {:?}", fresh.curriculum.cfg),
            ));
        }
        let generations = self.curriculum.generation;
        for (b, lane) in self.lanes.iter().enumerate() {
            let ok = lane.level.n >= 1
                && lane.level.r >= 1
                && lane.chars.len() == lane.level.n
                && lane
                    .level
                    .n
                    .checked_mul(lane.level.r)
                    .is_some_and(|nr| nr < 1 << 40)
                && lane.steps == lane.level.episode_steps(self.kind)
                && lane.pos <= lane.steps
                && lane.generation <= generations;
            if !ok {
                return Err(DataError::invalid(
                    "task stream lane",
                    b,
                    "its episode state is inconsistent",
                ));
            }
        }
        let level = self.curriculum.level;
        if level.n < 1 || level.r < 1 || self.last_window_of_generation.is_empty() {
            return Err(DataError::invalid(
                "curriculum level",
                format!("{level:?}"),
                "is inconsistent",
            ));
        }
        Ok(())
    }
}

/// How [`bits_error`] reads predictions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredScale {
    /// Sigmoid outputs: a bit is predicted set when `pred > 0.5`.
    Probabilities,
    /// Pre-sigmoid logits: set when `pred > 0` (the same decision as probability > 0.5).
    Logits,
}

/// Reference (CPU) bits error over buffers laid out like a [`Window`]: a bit is wrong when the predicted
/// bit (`pred > 0.5`, or `> 0` for logits) differs from `target > 0.5`, counted over channels whose mask is
/// non-zero. Returns `(wrong bits, chars)` where chars is the number of `WIDTH`-rows (steps × lanes) with
/// any masked channel. Used by tests to check the GPU metric.
///
/// Panics if the three slices differ in length or are not a multiple of `WIDTH`.
pub fn bits_error(pred: &[f32], targets: &[f32], mask: &[f32], scale: PredScale) -> (f64, u64) {
    assert_eq!(pred.len(), targets.len(), "pred and targets lengths differ");
    assert_eq!(pred.len(), mask.len(), "pred and mask lengths differ");
    assert_eq!(pred.len() % WIDTH, 0, "length is not a multiple of WIDTH");
    let cut = match scale {
        PredScale::Probabilities => 0.5,
        PredScale::Logits => 0.0,
    };
    let (mut bits, mut chars) = (0u64, 0u64);
    for ((p, t), m) in pred
        .chunks_exact(WIDTH)
        .zip(targets.chunks_exact(WIDTH))
        .zip(mask.chunks_exact(WIDTH))
    {
        let mut scored = false;
        for c in 0..WIDTH {
            if m[c] != 0.0 {
                scored = true;
                if (p[c] > cut) != (t[c] > 0.5) {
                    bits += 1;
                }
            }
        }
        chars += scored as u64;
    }
    (bits as f64, chars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resampled_streams_keep_what_was_read_and_redraw_the_rest() {
        let cfg = CurriculumConfig {
            start_n: 4,
            ..Default::default()
        };
        let mut s = TaskStream::new(CopyKind::Copy, 3, 9, cfg).unwrap();
        let mut w = Window::default();
        s.next_window(2, &mut w); // two of the four characters read
        let (mut a, mut b, mut same) = (Window::default(), Window::default(), Window::default());
        s.resampled(1).next_window(30, &mut a);
        s.resampled(2).next_window(30, &mut b);
        s.resampled(1).next_window(30, &mut same);
        assert_eq!(a.inputs, same.inputs, "one seed, one future");
        // Steps 0-1 of the copies are the episodes' characters 3-4: unread, so redrawn. The outputs
        // of characters 1-2 (steps 3-4 of the copies) were read, so they stay.
        let row = |w: &Window, s: usize| w.inputs[s * 3 * WIDTH..(s * 3 + 1) * WIDTH].to_vec();
        let trow = |w: &Window, s: usize| w.targets[s * 3 * WIDTH..(s * 3 + 1) * WIDTH].to_vec();
        assert_ne!((row(&a, 0), row(&a, 1)), (row(&b, 0), row(&b, 1)));
        assert_eq!((trow(&a, 3), trow(&a, 4)), (trow(&b, 3), trow(&b, 4)));
        let mut orig = Window::default();
        s.clone().next_window(30, &mut orig);
        assert_eq!((trow(&a, 3), trow(&a, 4)), (trow(&orig, 3), trow(&orig, 4)));
    }

    fn row(w: &Window, buf: &[f32], s: usize, b: usize) -> Vec<f32> {
        let at = (s * w.batch + b) * WIDTH;
        buf[at..at + WIDTH].to_vec()
    }

    fn char_of(v: &[f32]) -> u8 {
        (0..BITS).map(|i| (v[i] as u8) << i).sum()
    }

    fn cfg(n: usize, r: usize) -> CurriculumConfig {
        CurriculumConfig {
            start_n: n,
            start_r: r,
            ..Default::default()
        }
    }

    #[test]
    fn a_first_level_whose_length_wraps_is_refused() {
        for (n, r) in [(usize::MAX / 2, 3), (1 << 20, 1 << 20), (usize::MAX, 1)] {
            let cfg = CurriculumConfig {
                start_n: n,
                start_r: r,
                ..Default::default()
            };
            let e = TaskStream::new(CopyKind::RepeatCopy, 2, 1, cfg)
                .expect_err("refused")
                .to_string();
            assert!(e.contains("start_n") && e.contains("N·R"), "{e}");
        }
    }

    #[test]
    fn copy_episode_layout() {
        let mut s = TaskStream::new(CopyKind::Copy, 1, 9, cfg(3, 1)).unwrap();
        let mut w = Window::default();
        // 2N + 2 = 8 steps.
        assert_eq!(s.next_window(8, &mut w), 4);
        let chars: Vec<u8> = (0..3).map(|p| char_of(&row(&w, &w.inputs, p, 0))).collect();
        for p in 0..3 {
            let inp = row(&w, &w.inputs, p, 0);
            assert_eq!(&inp[8..], &[0.0, 0.0], "step {p}");
            assert!(inp[..8].iter().all(|&x| x == 0.0 || x == 1.0));
            assert_eq!(row(&w, &w.targets, p, 0), vec![0.0; WIDTH]);
            assert_eq!(row(&w, &w.mask, p, 0), vec![0.0; WIDTH]);
        }
        let mut stop = vec![0.0; WIDTH];
        stop[STOP] = 1.0;
        assert_eq!(row(&w, &w.inputs, 3, 0), stop);
        assert_eq!(row(&w, &w.mask, 3, 0), vec![0.0; WIDTH]);
        let mut scored = vec![1.0; WIDTH];
        scored[REPEAT] = 0.0;
        for p in 4..7 {
            assert_eq!(row(&w, &w.inputs, p, 0), vec![0.0; WIDTH]);
            let tgt = row(&w, &w.targets, p, 0);
            assert_eq!(char_of(&tgt), chars[p - 4]);
            assert_eq!(&tgt[8..], &[0.0, 0.0]);
            assert_eq!(row(&w, &w.mask, p, 0), scored);
        }
        assert_eq!(row(&w, &w.targets, 7, 0), stop);
        assert_eq!(row(&w, &w.mask, 7, 0), scored);
        assert_eq!(row(&w, &w.inputs, 7, 0), vec![0.0; WIDTH]);
        assert_eq!(s.curriculum().episode_length_metric(), 6);
        // The next window starts a new episode: an input character, nothing scored.
        assert_eq!(s.next_window(1, &mut w), 0);
        assert_eq!(s.episodes_started(), 2);
    }

    #[test]
    fn repeat_copy_episode_layout() {
        let mut s = TaskStream::new(CopyKind::RepeatCopy, 1, 3, cfg(2, 3)).unwrap();
        let mut w = Window::default();
        // N + 3 + N·R = 2 + 3 + 6 = 11 steps, 7 scored.
        assert_eq!(s.next_window(11, &mut w), 7);
        let chars: Vec<u8> = (0..2).map(|p| char_of(&row(&w, &w.inputs, p, 0))).collect();
        assert_eq!(row(&w, &w.inputs, 2, 0)[STOP], 1.0);
        let rep = row(&w, &w.inputs, 3, 0);
        assert_eq!(rep[REPEAT], 3.0 / REPEAT_SCALE);
        assert_eq!(rep.iter().filter(|&&x| x != 0.0).count(), 1);
        assert_eq!(row(&w, &w.mask, 3, 0), vec![0.0; WIDTH]);
        for p in 4..10 {
            let tgt = row(&w, &w.targets, p, 0);
            assert_eq!(char_of(&tgt), chars[(p - 4) % 2], "step {p}");
            assert_eq!(tgt[STOP], 0.0);
            assert_eq!(row(&w, &w.mask, p, 0)[..SCORED], [1.0; SCORED]);
            assert_eq!(row(&w, &w.mask, p, 0)[REPEAT], 0.0);
        }
        assert_eq!(row(&w, &w.targets, 10, 0)[STOP], 1.0);
        assert_eq!(char_of(&row(&w, &w.targets, 10, 0)), 0);
        assert_eq!(s.curriculum().episode_length_metric(), 2 * 3 + 3);
    }

    #[test]
    fn windows_straddle_episode_boundaries() {
        let mut whole = TaskStream::new(CopyKind::RepeatCopy, 3, 11, cfg(2, 2)).unwrap();
        let mut pieces = TaskStream::new(CopyKind::RepeatCopy, 3, 11, cfg(2, 2)).unwrap();
        let (mut w, mut p) = (Window::default(), Window::default());
        // 9 steps per episode; windows of 4 cut episodes at varying offsets.
        let chars_whole = whole.next_window(36, &mut w);
        let mut chars_pieces = 0;
        let (mut inputs, mut targets, mut mask) = (Vec::new(), Vec::new(), Vec::new());
        for k in 0..9 {
            chars_pieces += pieces.next_window(4, &mut p);
            assert_eq!(p.index, k);
            inputs.extend_from_slice(&p.inputs);
            targets.extend_from_slice(&p.targets);
            mask.extend_from_slice(&p.mask);
        }
        assert_eq!(inputs, w.inputs);
        assert_eq!(targets, w.targets);
        assert_eq!(mask, w.mask);
        assert_eq!(chars_whole, chars_pieces);
        // 4 episodes per lane, 5 scored steps each.
        assert_eq!(chars_whole, 3 * 4 * 5);
    }

    #[test]
    fn deterministic_by_seed_and_lanes_differ() {
        let mut a = TaskStream::new(CopyKind::Copy, 4, 5, cfg(6, 1)).unwrap();
        let mut b = TaskStream::new(CopyKind::Copy, 4, 5, cfg(6, 1)).unwrap();
        let mut c = TaskStream::new(CopyKind::Copy, 4, 6, cfg(6, 1)).unwrap();
        let (mut wa, mut wb, mut wc) = (Window::default(), Window::default(), Window::default());
        a.next_window(14, &mut wa);
        b.next_window(14, &mut wb);
        c.next_window(14, &mut wc);
        assert_eq!(wa.inputs, wb.inputs);
        assert_ne!(wa.inputs, wc.inputs);
        let lane0: Vec<f32> = (0..6).flat_map(|s| row(&wa, &wa.inputs, s, 0)).collect();
        let lane1: Vec<f32> = (0..6).flat_map(|s| row(&wa, &wa.inputs, s, 1)).collect();
        assert_ne!(lane0, lane1);
    }

    #[test]
    fn buffers_are_reused() {
        let mut s = TaskStream::new(CopyKind::Copy, 2, 1, cfg(2, 1)).unwrap();
        let mut w = Window::default();
        s.next_window(5, &mut w);
        let ptr = w.inputs.as_ptr();
        s.next_window(5, &mut w);
        assert_eq!(ptr, w.inputs.as_ptr());
        assert_eq!(w.inputs.len(), 5 * 2 * WIDTH);
    }

    #[test]
    fn curriculum_advances_on_low_error_only_after_window() {
        let mut c = Curriculum::new(
            CopyKind::Copy,
            CurriculumConfig {
                start_n: 2,
                window_chars: 100,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.largest_solved(), None);
        // High error never advances.
        for _ in 0..50 {
            assert!(!c.observe(1.0 * 40.0, 40));
        }
        assert_eq!(c.level().n, 2);
        // The old high-error observations age out; low error advances once 100 chars are averaged.
        // The average covers the last 120 chars: 2/3, then 1/3 of them high-error.
        assert!(!c.observe(0.0, 40));
        assert!(!c.observe(0.0, 40));
        assert!(c.observe(0.0, 40));
        assert_eq!(c.level().n, 3, "120 low-error chars cover the window");
        assert_eq!(c.largest_solved(), Some(5));
        assert_eq!(c.generation(), 1);
        // A new level needs a full window of its own.
        assert!(!c.observe(0.0, 99));
        assert!(c.observe(0.0, 1));
        assert_eq!(c.level().n, 4);
        assert_eq!(c.largest_solved(), Some(6));
    }

    #[test]
    fn curriculum_threshold_is_strict_average() {
        let mut c = Curriculum::new(
            CopyKind::Copy,
            CurriculumConfig {
                window_chars: 10,
                threshold_bits: 0.15,
                ..Default::default()
            },
        )
        .unwrap();
        // 0.2 bits per char: above threshold.
        assert!(!c.observe(2.0, 10));
        assert!((c.average_bits().unwrap() - 0.2).abs() < 1e-12);
        // 0.1 bits per char replaces it (the older one is dropped as the newer covers the window).
        assert!(c.observe(1.0, 10));
    }

    #[test]
    fn repeat_copy_raises_r_and_n_in_turn_and_stops_at_max_n() {
        let mut c = Curriculum::new(
            CopyKind::RepeatCopy,
            CurriculumConfig {
                start_n: 1,
                start_r: 1,
                window_chars: 1,
                max_n: Some(3),
                ..Default::default()
            },
        )
        .unwrap();
        let mut levels = vec![(c.level().n, c.level().r)];
        while c.observe(0.0, 1) {
            if !c.finished() {
                levels.push((c.level().n, c.level().r));
            }
        }
        assert_eq!(levels, vec![(1, 1), (1, 2), (2, 2), (2, 3), (3, 3), (3, 4)]);
        assert!(c.finished());
        assert_eq!(c.largest_solved(), Some(3 * 4 + 3));
        assert_eq!(c.level_label(), "N=3 R=4");
        assert!(!c.observe(0.0, 1000), "a finished curriculum stays put");
    }

    #[test]
    fn invalid_curriculum_rejected() {
        for bad in [
            cfg(0, 1),
            cfg(1, 0),
            CurriculumConfig {
                threshold_bits: 0.0,
                ..Default::default()
            },
            CurriculumConfig {
                window_chars: 0,
                ..Default::default()
            },
            CurriculumConfig {
                start_n: 5,
                max_n: Some(4),
                ..Default::default()
            },
        ] {
            assert!(
                Curriculum::new(CopyKind::Copy, bad.clone()).is_err(),
                "{bad:?}"
            );
        }
        assert!(TaskStream::new(CopyKind::Copy, 0, 1, cfg(1, 1)).is_err());
    }

    #[test]
    fn bits_error_counts_wrong_masked_bits() {
        let mut s = TaskStream::new(CopyKind::Copy, 2, 4, cfg(3, 1)).unwrap();
        let mut w = Window::default();
        let chars = s.next_window(8, &mut w);
        // Perfect probabilities.
        assert_eq!(
            bits_error(&w.targets, &w.targets, &w.mask, PredScale::Probabilities),
            (0.0, chars as u64)
        );
        // Flip two scored bits and one unscored channel.
        let mut pred = w.targets.clone();
        let scored: Vec<usize> = (0..pred.len()).filter(|&i| w.mask[i] != 0.0).collect();
        for &i in &scored[..2] {
            pred[i] = 1.0 - pred[i];
        }
        pred[REPEAT] = 1.0;
        pred[0] = 1.0 - pred[0]; // step 0 is an input step: unscored
        assert_eq!(
            bits_error(&pred, &w.targets, &w.mask, PredScale::Probabilities),
            (2.0, 8)
        );
        // Logits: the sign decides.
        let logits: Vec<f32> = w
            .targets
            .iter()
            .map(|&t| if t > 0.5 { 3.0 } else { -3.0 })
            .collect();
        assert_eq!(
            bits_error(&logits, &w.targets, &w.mask, PredScale::Logits).0,
            0.0
        );
        assert_eq!(
            bits_error(&logits, &w.targets, &w.mask, PredScale::Probabilities).0,
            0.0
        );
        let zeros = vec![0.0; pred.len()];
        let all_wrong_stops = bits_error(&zeros, &w.targets, &w.mask, PredScale::Logits).0;
        let ones_in_targets = (0..pred.len())
            .filter(|&i| w.mask[i] != 0.0 && w.targets[i] > 0.5)
            .count();
        assert_eq!(all_wrong_stops, ones_in_targets as f64);
    }

    /// Drives the stream the way a trainer does, with a perfect and a constant predictor.
    fn run_trainer(perfect: bool, windows: usize, observe_every: u64) -> TaskStream {
        let mut s = TaskStream::new(
            CopyKind::Copy,
            4,
            7,
            CurriculumConfig {
                start_n: 1,
                window_chars: 50,
                ..Default::default()
            },
        )
        .unwrap();
        let mut w = Window::default();
        let (mut bits, mut chars, mut first) = (0.0, 0u64, 0u64);
        for _ in 0..windows {
            s.next_window(5, &mut w);
            let pred = if perfect {
                w.targets.clone()
            } else {
                vec![0.0; w.targets.len()]
            };
            let (b, c) = bits_error(&pred, &w.targets, &w.mask, PredScale::Probabilities);
            bits += b;
            chars += c;
            if (w.index + 1) % observe_every == 0 {
                s.observe(first, bits, chars);
                (bits, chars, first) = (0.0, 0, w.index + 1);
            }
        }
        s
    }

    #[test]
    fn perfect_predictor_climbs_constant_predictor_does_not() {
        let good = run_trainer(true, 400, 3);
        assert!(
            good.curriculum().level().n > 5,
            "{:?}",
            good.curriculum().level()
        );
        let bad = run_trainer(false, 400, 3);
        assert_eq!(bad.curriculum().level().n, 1);
        assert_eq!(bad.curriculum().largest_solved(), None);
    }

    #[test]
    fn observations_spanning_old_level_episodes_are_ignored() {
        let mut s = TaskStream::new(
            CopyKind::Copy,
            1,
            2,
            CurriculumConfig {
                start_n: 2,
                window_chars: 3,
                ..Default::default()
            },
        )
        .unwrap();
        let mut w = Window::default();
        // Episodes at N=2 take 6 steps, steps 3..6 scored. Windows of 3 steps: window 1 holds the
        // first episode's outputs, window 2 the second episode's inputs.
        for _ in 0..3 {
            s.next_window(3, &mut w);
        }
        assert_eq!(s.observe(0, 0.0, 3), Observed::Advanced);
        assert_eq!(s.curriculum().level().n, 3);
        // Window 3 scores the rest of the second episode, still at N=2: ignored.
        assert_eq!(s.next_window(3, &mut w), 3);
        assert_eq!(s.observe(2, 0.0, 3), Observed::Ignored);
        assert_eq!(s.observe(3, 0.0, 3), Observed::Ignored);
        // Windows 4 and 5 are the first N=3 episode (8 steps, outputs from step 4).
        assert_eq!(s.next_window(3, &mut w), 0);
        assert_eq!(s.next_window(3, &mut w), 2);
        assert_eq!(s.observe(4, 1.0, 2), Observed::Counted);
        assert_eq!(s.curriculum().average_bits(), Some(0.5));
    }
}
