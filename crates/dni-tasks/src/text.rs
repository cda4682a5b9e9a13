//! Character-level corpora: loading, vocabulary, and the streams a recurrent language model trains and
//! evaluates on.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use crate::error::DataError;

/// How a text file is cut into symbols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextFormat {
    /// Every Unicode character is a symbol (newlines included).
    Plain,
    /// Character-level Penn Treebank: symbols are separated by spaces (`_` marks a word boundary), one
    /// sentence a line; every space-separated token is a symbol and each non-blank line ends with the
    /// symbol `"\n"`.
    PtbChar,
}

/// The symbol a PTB line end maps to.
pub const NEWLINE: &str = "\n";

/// Symbol <-> id mapping; ids follow the sorted order of the symbols, so a corpus always gets the same ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocab {
    symbols: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Vocab {
    fn from_set(set: BTreeSet<String>) -> Vocab {
        let symbols: Vec<String> = set.into_iter().collect();
        let ids = symbols
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u32))
            .collect();
        Vocab { symbols, ids }
    }

    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    pub fn id(&self, symbol: &str) -> Option<u32> {
        self.ids.get(symbol).copied()
    }

    pub fn symbol(&self, id: u32) -> Option<&str> {
        self.symbols.get(id as usize).map(String::as_str)
    }

    /// All symbols in id order.
    pub fn symbols(&self) -> &[String] {
        &self.symbols
    }

    /// Concatenates the symbols of `ids` (unknown ids are skipped), e.g. to print samples.
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter().filter_map(|&i| self.symbol(i)).collect()
    }
}

/// Fractions of one file used for train, valid and test when no separate files are given.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fractions {
    pub train: f64,
    pub valid: f64,
    pub test: f64,
}

impl Default for Fractions {
    fn default() -> Self {
        Fractions {
            train: 0.9,
            valid: 0.05,
            test: 0.05,
        }
    }
}

/// A text file and what it is for the caller (e.g. the config key `charlm.valid`), for error messages.
#[derive(Clone, Copy, Debug)]
pub struct TextFile<'a> {
    pub path: &'a Path,
    pub what: &'a str,
}

/// Token ids of the three splits, all encoded with one vocabulary.
#[derive(Clone, Debug)]
pub struct Corpus {
    pub vocab: Vocab,
    pub train: Vec<u32>,
    pub valid: Vec<u32>,
    pub test: Vec<u32>,
}

/// Splits smaller than this cannot give one (input, target) pair.
const MIN_SPLIT: usize = 2;

impl Corpus {
    /// Loads one file and splits it contiguously by the default fractions (0.9 / 0.05 / 0.05).
    pub fn load(path: &Path, format: TextFormat, what: &str) -> Result<Corpus, DataError> {
        Corpus::load_split(path, format, what, Fractions::default())
    }

    /// Loads one file and splits it contiguously (train first, then valid, then test).
    ///
    /// The vocabulary comes from the whole file: the splits share one alphabet, and a rare character that
    /// happens to fall only in the held-out part must not abort the run.
    pub fn load_split(
        path: &Path,
        format: TextFormat,
        what: &str,
        fractions: Fractions,
    ) -> Result<Corpus, DataError> {
        let f = fractions;
        let parts_ok = [f.train, f.valid, f.test]
            .iter()
            .all(|&x| x > 0.0 && x < 1.0);
        if !parts_ok || (f.train + f.valid + f.test - 1.0).abs() > 1e-6 {
            return Err(DataError::invalid(
                "fractions",
                format!("{}/{}/{}", f.train, f.valid, f.test),
                "train, valid and test fractions must each be in (0, 1) and sum to 1",
            ));
        }
        let text = read_text(path, what)?;
        let vocab = build_vocab(&text, format)?;
        let all = encode(&text, format, &vocab, path, path)?;
        let n = all.len();
        let n_train = (n as f64 * f.train) as usize;
        let n_valid = (n as f64 * f.valid) as usize;
        let n_test = n - n_train - n_valid;
        if n_train.min(n_valid).min(n_test) < MIN_SPLIT {
            return Err(DataError::TooShort {
                what: format!("{what} ({})", path.display()),
                need: format!(
                    "each of the train/valid/test parts ({n_train}/{n_valid}/{n_test} symbols) needs at \
                     least {MIN_SPLIT}"
                ),
                got: n,
            });
        }
        let test = all[n_train + n_valid..].to_vec();
        let valid = all[n_train..n_train + n_valid].to_vec();
        let mut train = all;
        train.truncate(n_train);
        Ok(Corpus {
            vocab,
            train,
            valid,
            test,
        })
    }

    /// Loads three separate files; the vocabulary comes from `train`, and a symbol of `valid` or `test`
    /// that is not in it is an error (rather than a silent `<unk>`).
    pub fn load_files(
        train: TextFile<'_>,
        valid: TextFile<'_>,
        test: TextFile<'_>,
        format: TextFormat,
    ) -> Result<Corpus, DataError> {
        let train_text = read_text(train.path, train.what)?;
        let vocab = build_vocab(&train_text, format)?;
        let mut splits = Vec::with_capacity(3);
        for (file, text) in [(train, Some(train_text)), (valid, None), (test, None)] {
            let text = match text {
                Some(t) => t,
                None => read_text(file.path, file.what)?,
            };
            let ids = encode(&text, format, &vocab, file.path, train.path)?;
            if ids.len() < MIN_SPLIT {
                return Err(DataError::TooShort {
                    what: format!("{} ({})", file.what, file.path.display()),
                    need: format!("at least {MIN_SPLIT}"),
                    got: ids.len(),
                });
            }
            splits.push(ids);
        }
        let test = splits.pop().unwrap_or_default();
        let valid = splits.pop().unwrap_or_default();
        let train = splits.pop().unwrap_or_default();
        Ok(Corpus {
            vocab,
            train,
            valid,
            test,
        })
    }
}

fn read_text(path: &Path, what: &str) -> Result<String, DataError> {
    if !path.exists() {
        return Err(DataError::MissingFile {
            path: path.to_path_buf(),
            what: what.to_string(),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| DataError::NotUtf8 {
        path: path.to_path_buf(),
        what: what.to_string(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    if text.trim().is_empty() {
        return Err(DataError::EmptyFile {
            path: path.to_path_buf(),
            what: what.to_string(),
        });
    }
    Ok(text)
}

/// Calls `f(symbol, line)` for every symbol of `text` in order (lines count from 1).
fn for_each_symbol(
    text: &str,
    format: TextFormat,
    mut f: impl FnMut(&str, usize) -> Result<(), DataError>,
) -> Result<(), DataError> {
    match format {
        TextFormat::Plain => {
            let mut line = 1;
            for (i, c) in text.char_indices() {
                f(&text[i..i + c.len_utf8()], line)?;
                if c == '\n' {
                    line += 1;
                }
            }
        }
        TextFormat::PtbChar => {
            for (i, sentence) in text.lines().enumerate() {
                // Blank lines are not sentences (the PTB files end with a stray " " after the last
                // newline), so they get no newline symbol.
                let mut tokens = sentence.split_whitespace().peekable();
                if tokens.peek().is_none() {
                    continue;
                }
                for token in tokens {
                    f(token, i + 1)?;
                }
                f(NEWLINE, i + 1)?;
            }
        }
    }
    Ok(())
}

fn build_vocab(text: &str, format: TextFormat) -> Result<Vocab, DataError> {
    let mut set = BTreeSet::new();
    for_each_symbol(text, format, |s, _| {
        if !set.contains(s) {
            set.insert(s.to_string());
        }
        Ok(())
    })?;
    Ok(Vocab::from_set(set))
}

fn encode(
    text: &str,
    format: TextFormat,
    vocab: &Vocab,
    path: &Path,
    train_path: &Path,
) -> Result<Vec<u32>, DataError> {
    let mut ids = Vec::with_capacity(text.len());
    for_each_symbol(text, format, |s, line| match vocab.id(s) {
        Some(id) => {
            ids.push(id);
            Ok(())
        }
        None => Err(DataError::UnknownSymbol {
            symbol: s.to_string(),
            path: path.to_path_buf(),
            line,
            train: train_path.to_path_buf(),
        }),
    })?;
    Ok(ids)
}

/// Cuts `len` tokens into `batch` contiguous lanes; returns the lane length (at least 2).
fn lane_len(len: usize, batch: usize, what: &str) -> Result<usize, DataError> {
    if batch == 0 {
        return Err(DataError::invalid("batch", batch, "must be at least 1"));
    }
    let lane = len / batch;
    if lane < 2 {
        return Err(DataError::TooShort {
            what: what.to_string(),
            need: format!("{batch} lanes of at least 2 symbols need {}", 2 * batch),
            got: len,
        });
    }
    Ok(lane)
}

/// Endless training stream: the tokens are cut into `batch` contiguous lanes that are read in parallel,
/// so lane `b`'s state carries over from one window to the next (truncated BPTT). When the lanes reach
/// their end they wrap to their start together; that is one epoch. The last `len % batch` tokens are
/// not used.
#[derive(Clone, Debug)]
pub struct CharStream {
    tokens: Vec<u32>,
    batch: usize,
    lane_len: usize,
    pos: usize,
    epoch: u64,
}

impl CharStream {
    pub fn new(tokens: &[u32], batch: usize) -> Result<CharStream, DataError> {
        let lane_len = lane_len(tokens.len(), batch, "training text")?;
        Ok(CharStream {
            tokens: tokens.to_vec(),
            batch,
            lane_len,
            pos: 0,
            epoch: 0,
        })
    }

    /// Fills `inputs_out` and `targets_out` (cleared first) with `t` steps laid out `[t][batch]`;
    /// `targets[s][b]` is the symbol after `inputs[s][b]`. Returns true when an epoch ended inside this
    /// window.
    pub fn next_window(
        &mut self,
        t: usize,
        inputs_out: &mut Vec<u32>,
        targets_out: &mut Vec<u32>,
    ) -> bool {
        inputs_out.clear();
        targets_out.clear();
        let pairs = self.lane_len - 1;
        let mut wrapped = false;
        for _ in 0..t {
            for b in 0..self.batch {
                let at = b * self.lane_len + self.pos;
                inputs_out.push(self.tokens[at]);
                targets_out.push(self.tokens[at + 1]);
            }
            self.pos += 1;
            if self.pos == pairs {
                self.pos = 0;
                self.epoch += 1;
                wrapped = true;
            }
        }
        wrapped
    }

    /// Completed epochs.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// (input, target) pairs per epoch over all lanes.
    pub fn chars_per_epoch(&self) -> usize {
        (self.lane_len - 1) * self.batch
    }

    /// Where the stream is: (position in its lanes, completed epochs), for checkpoints.
    pub fn position(&self) -> (usize, u64) {
        (self.pos, self.epoch)
    }

    /// Continues from a [`position`](Self::position) of a stream over the same text and batch.
    pub fn seek(&mut self, pos: usize, epoch: u64) -> Result<(), DataError> {
        if pos >= self.lane_len - 1 {
            return Err(DataError::invalid(
                "stream position",
                pos,
                format!(
                    "must be below {} for this text and batch",
                    self.lane_len - 1
                ),
            ));
        }
        self.pos = pos;
        self.epoch = epoch;
        Ok(())
    }
}

/// Walks a split once, in windows of `t` steps over `batch` contiguous lanes (state carried between
/// windows, like training). Start the model from a zero state before the first window.
#[derive(Clone, Debug)]
pub struct EvalStream {
    tokens: Vec<u32>,
    batch: usize,
    t: usize,
    lane_len: usize,
    pairs: usize,
    pos: usize,
}

impl EvalStream {
    /// `max_chars` caps the number of scored characters (rounded up to a multiple of `batch`).
    pub fn new(
        tokens: &[u32],
        batch: usize,
        t: usize,
        max_chars: Option<usize>,
    ) -> Result<EvalStream, DataError> {
        if t == 0 {
            return Err(DataError::invalid("T", t, "must be at least 1"));
        }
        let lane_len = lane_len(tokens.len(), batch, "evaluation text")?;
        let mut pairs = lane_len - 1;
        if let Some(m) = max_chars {
            pairs = pairs.min(m.div_ceil(batch).max(1));
        }
        Ok(EvalStream {
            tokens: tokens.to_vec(),
            batch,
            t,
            lane_len,
            pairs,
            pos: 0,
        })
    }

    /// Fills the next window (`[t][batch]`, cleared first) and returns how many of its `t` steps are real;
    /// the rest of the last window is padding (id 0) to keep a fixed shape and must not be scored.
    /// `None` once the split is done.
    pub fn next_window(
        &mut self,
        inputs_out: &mut Vec<u32>,
        targets_out: &mut Vec<u32>,
    ) -> Option<usize> {
        if self.pos >= self.pairs {
            return None;
        }
        inputs_out.clear();
        targets_out.clear();
        let steps = self.t.min(self.pairs - self.pos);
        for s in 0..self.t {
            for b in 0..self.batch {
                if s < steps {
                    let at = b * self.lane_len + self.pos + s;
                    inputs_out.push(self.tokens[at]);
                    targets_out.push(self.tokens[at + 1]);
                } else {
                    inputs_out.push(0);
                    targets_out.push(0);
                }
            }
        }
        self.pos += steps;
        Some(steps)
    }

    /// Characters scored over the whole walk.
    pub fn total_chars(&self) -> usize {
        self.pairs * self.batch
    }

    /// Back to the start, for the next evaluation.
    pub fn reset(&mut self) {
        self.pos = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::temp_dir;
    use std::path::PathBuf;

    fn write(dir: &Path, name: &str, text: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write temp file");
        p
    }

    fn err_string<T: std::fmt::Debug>(r: Result<T, DataError>) -> String {
        match r {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn plain_vocab_is_sorted_and_split_is_contiguous() {
        let dir = temp_dir("text-plain");
        let text = "hello world\nthe quick brown fox\n".repeat(10);
        let p = write(&dir, "a.txt", text.as_bytes());
        let c = Corpus::load(&p, TextFormat::Plain, "charlm.train").unwrap();
        let syms = c.vocab.symbols();
        assert!(syms.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(syms[0], "\n");
        assert_eq!(c.vocab.len(), 19);
        let n = text.chars().count();
        assert_eq!(c.train.len() + c.valid.len() + c.test.len(), n);
        assert_eq!(c.train.len(), (n as f64 * 0.9) as usize);
        let joined: Vec<u32> = [c.train.clone(), c.valid.clone(), c.test.clone()].concat();
        assert_eq!(c.vocab.decode(&joined), text);
    }

    #[test]
    fn ptb_tokens_and_newline_symbol() {
        let dir = temp_dir("text-ptb");
        let train = write(&dir, "train.txt", b" a b _ c d \n \n c _ < u n k > \n ");
        let valid = write(&dir, "valid.txt", b"a _ b\n");
        let test = write(&dir, "test.txt", b"d _ c\n");
        let c = Corpus::load_files(
            TextFile {
                path: &train,
                what: "charlm.train",
            },
            TextFile {
                path: &valid,
                what: "charlm.valid",
            },
            TextFile {
                path: &test,
                what: "charlm.test",
            },
            TextFormat::PtbChar,
        )
        .unwrap();
        assert_eq!(
            c.vocab.symbols(),
            ["\n", "<", ">", "_", "a", "b", "c", "d", "k", "n", "u"]
        );
        assert_eq!(c.vocab.decode(&c.train), "ab_cd\nc_<unk>\n");
        assert_eq!(c.vocab.decode(&c.valid), "a_b\n");
        assert_eq!(c.valid.len(), 4);
        assert_eq!(c.test, vec![7, 3, 6, 0]);
    }

    #[test]
    fn unknown_symbol_names_char_file_and_line() {
        let dir = temp_dir("text-unk");
        let train = write(&dir, "train.txt", b"abc\nabc\n");
        let valid = write(&dir, "valid.txt", b"abc\nabz\n");
        let test = write(&dir, "test.txt", b"abc\n");
        let msg = err_string(Corpus::load_files(
            TextFile {
                path: &train,
                what: "charlm.train",
            },
            TextFile {
                path: &valid,
                what: "charlm.valid",
            },
            TextFile {
                path: &test,
                what: "charlm.test",
            },
            TextFormat::Plain,
        ));
        assert!(msg.contains("\"z\""), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        assert!(
            msg.contains("valid.txt") && msg.contains("train.txt"),
            "{msg}"
        );
    }

    #[test]
    fn missing_empty_and_bad_files() {
        let dir = temp_dir("text-bad");
        let missing = dir.join("nope.txt");
        let msg = err_string(Corpus::load(&missing, TextFormat::Plain, "charlm.train"));
        assert!(
            msg.contains("charlm.train") && msg.contains("nope.txt"),
            "{msg}"
        );
        assert!(msg.contains("does not exist"), "{msg}");

        let empty = write(&dir, "empty.txt", b"");
        let msg = err_string(Corpus::load(&empty, TextFormat::Plain, "charlm.train"));
        assert!(msg.contains("empty") && msg.contains("empty.txt"), "{msg}");

        let blank = write(&dir, "blank.txt", b" \n \n");
        assert!(Corpus::load(&blank, TextFormat::PtbChar, "charlm.train").is_err());

        let latin1 = write(&dir, "latin1.txt", b"caf\xe9 au lait");
        let msg = err_string(Corpus::load(&latin1, TextFormat::Plain, "charlm.train"));
        assert!(msg.contains("UTF-8") && msg.contains("offset 3"), "{msg}");

        let tiny = write(&dir, "tiny.txt", b"abcdefghij");
        let msg = err_string(Corpus::load(&tiny, TextFormat::Plain, "charlm.train"));
        assert!(msg.contains("too few"), "{msg}");

        let ok = write(&dir, "ok.txt", "x".repeat(100).as_bytes());
        let bad = Fractions {
            train: 0.9,
            valid: 0.2,
            test: 0.05,
        };
        assert!(Corpus::load_split(&ok, TextFormat::Plain, "t", bad).is_err());
    }

    #[test]
    fn char_stream_windows_are_consecutive_and_wrap() {
        // Two lanes of 5 tokens: 0..5 and 5..10 (token 10 is dropped), 4 pairs per lane.
        let tokens: Vec<u32> = (0..11).collect();
        let mut s = CharStream::new(&tokens, 2).unwrap();
        assert_eq!(s.chars_per_epoch(), 8);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        assert!(!s.next_window(3, &mut x, &mut y));
        assert_eq!(x, vec![0, 5, 1, 6, 2, 7]);
        assert_eq!(y, vec![1, 6, 2, 7, 3, 8]);
        // Step 4 of the lanes, then wrap to the start.
        assert!(s.next_window(3, &mut x, &mut y));
        assert_eq!(x, vec![3, 8, 0, 5, 1, 6]);
        assert_eq!(y, vec![4, 9, 1, 6, 2, 7]);
        assert_eq!(s.epoch(), 1);
        assert!(CharStream::new(&tokens, 6).is_err());
        assert!(CharStream::new(&tokens, 0).is_err());
    }

    #[test]
    fn eval_stream_visits_each_pair_once_with_padding() {
        let tokens: Vec<u32> = (0..12).collect();
        // Two lanes of 6: 5 pairs each; windows of 2 steps -> 2, 2, 1 (+1 padding step).
        let mut e = EvalStream::new(&tokens, 2, 2, None).unwrap();
        assert_eq!(e.total_chars(), 10);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let mut pairs = Vec::new();
        let mut steps_seen = Vec::new();
        while let Some(steps) = e.next_window(&mut x, &mut y) {
            assert_eq!(x.len(), 4);
            steps_seen.push(steps);
            for i in 0..steps * 2 {
                pairs.push((x[i], y[i]));
            }
            assert!(x[steps * 2..].iter().all(|&v| v == 0));
        }
        assert_eq!(steps_seen, vec![2, 2, 1]);
        pairs.sort_unstable();
        let expected: Vec<(u32, u32)> = (0..5).chain(6..11).map(|i| (i, i + 1)).collect();
        assert_eq!(pairs, expected);

        e.reset();
        assert_eq!(e.next_window(&mut x, &mut y), Some(2));

        let capped = EvalStream::new(&tokens, 2, 2, Some(3)).unwrap();
        assert_eq!(capped.total_chars(), 4);
    }

    #[test]
    fn loads_repository_corpora() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/text");
        let shakespeare = data.join("tinyshakespeare.txt");
        let c = Corpus::load(&shakespeare, TextFormat::Plain, "charlm.train").unwrap();
        assert_eq!(c.vocab.len(), 65);
        assert_eq!(c.train.len() + c.valid.len() + c.test.len(), 1_115_394);
        assert!(c.vocab.decode(&c.train[..9]).starts_with("First Cit"));

        let valid = data.join("ptb.char.valid.txt");
        let c = Corpus::load(&valid, TextFormat::PtbChar, "charlm.train").unwrap();
        assert_eq!(c.vocab.id("_"), c.vocab.id("_"));
        assert!(c.vocab.id("_").is_some() && c.vocab.id(NEWLINE).is_some());
        assert!(
            c.vocab.id(" ").is_none(),
            "spaces are separators, not symbols"
        );
        assert!((45..=55).contains(&c.vocab.len()), "{}", c.vocab.len());
        let newlines = [&c.train, &c.valid, &c.test]
            .iter()
            .map(|s| {
                s.iter()
                    .filter(|&&i| Some(i) == c.vocab.id(NEWLINE))
                    .count()
            })
            .sum::<usize>();
        assert_eq!(newlines, 3370);
    }
}
