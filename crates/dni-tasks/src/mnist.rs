//! MNIST in the standard IDX format (gzipped or not), plus batching and epoch shuffling.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::DataError;
use crate::rng::Rng;

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Standard file names, without the optional `.gz`.
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// Number of classes (digits).
pub const CLASSES: usize = 10;

/// One split of MNIST held in memory.
#[derive(Clone, Debug)]
pub struct MnistSplit {
    /// `n * rows * cols` pixels, row-major per image, scaled from bytes to [0, 1].
    pub images: Vec<f32>,
    /// `n` labels in 0..=9.
    pub labels: Vec<u8>,
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
}

/// The train and test splits.
#[derive(Clone, Debug)]
pub struct Mnist {
    pub train: MnistSplit,
    pub test: MnistSplit,
}

impl Mnist {
    /// Loads the four standard files from `dir`; each may be gzipped (`.gz`) or not.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Mnist, DataError> {
        let dir = dir.as_ref();
        let train_images = find_file(dir, TRAIN_IMAGES)?;
        let train_labels = find_file(dir, TRAIN_LABELS)?;
        let test_images = find_file(dir, TEST_IMAGES)?;
        let test_labels = find_file(dir, TEST_LABELS)?;
        let train = MnistSplit::load(&train_images, &train_labels)?;
        let test = MnistSplit::load(&test_images, &test_labels)?;
        if (train.rows, train.cols) != (test.rows, test.cols) {
            return Err(DataError::ShapeMismatch {
                train: train_images,
                test: test_images,
                train_rows: train.rows,
                train_cols: train.cols,
                test_rows: test.rows,
                test_cols: test.cols,
            });
        }
        Ok(Mnist { train, test })
    }
}

/// `dir/name`, else `dir/name.gz`, else an error naming both.
fn find_file(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let plain = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    if plain.is_file() {
        Ok(plain)
    } else if gz.is_file() {
        Ok(gz)
    } else {
        Err(DataError::MissingMnistFile {
            dir: dir.to_path_buf(),
            expected: name.to_string(),
            tried: format!("{} or {}", plain.display(), gz.display()),
        })
    }
}

/// The file's bytes, gunzipped when it starts with the gzip magic.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if raw.len() >= 2 && raw[..2] == GZIP_MAGIC {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|source| DataError::Gzip {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Checks the magic number and the size of an IDX file with `dims` dimensions; returns the dimensions.
fn parse_idx_header(
    path: &Path,
    bytes: &[u8],
    magic: u32,
    what: &'static str,
    dims: usize,
) -> Result<Vec<usize>, DataError> {
    let header = 4 + 4 * dims;
    if bytes.len() < 4 {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: header as u64,
            got: bytes.len() as u64,
        });
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            what,
            expected: magic,
            found,
        });
    }
    if bytes.len() < header {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: header as u64,
            got: bytes.len() as u64,
        });
    }
    let shape: Vec<usize> = (0..dims)
        .map(|d| be_u32(bytes, 4 + 4 * d) as usize)
        .collect();
    // Checked, so that a corrupt header cannot overflow the size computation.
    let expected = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .and_then(|n| n.checked_add(header as u64))
        .ok_or_else(|| DataError::Oversize {
            path: path.to_path_buf(),
            dims: shape.clone(),
        })?;
    let got = bytes.len() as u64;
    if got < expected {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected,
            got,
        });
    }
    if got > expected {
        return Err(DataError::TrailingBytes {
            path: path.to_path_buf(),
            expected,
            got,
        });
    }
    Ok(shape)
}

impl MnistSplit {
    /// Loads one split from an images file and a labels file (each gzipped or not).
    pub fn load(images_path: &Path, labels_path: &Path) -> Result<MnistSplit, DataError> {
        let image_bytes = read_maybe_gz(images_path)?;
        let shape = parse_idx_header(
            images_path,
            &image_bytes,
            IMAGES_MAGIC,
            "IDX unsigned-byte images, 3 dimensions",
            3,
        )?;
        let (n_images, rows, cols) = (shape[0], shape[1], shape[2]);

        let label_bytes = read_maybe_gz(labels_path)?;
        let shape = parse_idx_header(
            labels_path,
            &label_bytes,
            LABELS_MAGIC,
            "IDX unsigned-byte labels, 1 dimension",
            1,
        )?;
        let n_labels = shape[0];
        if n_images != n_labels {
            return Err(DataError::CountMismatch {
                images: images_path.to_path_buf(),
                labels: labels_path.to_path_buf(),
                n_images,
                n_labels,
            });
        }

        let labels = label_bytes[8..].to_vec();
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= CLASSES)
        {
            return Err(DataError::BadLabel {
                path: labels_path.to_path_buf(),
                index,
                label,
            });
        }
        let images = image_bytes[16..]
            .iter()
            .map(|&b| b as f32 / 255.0)
            .collect();
        Ok(MnistSplit {
            images,
            labels,
            n: n_images,
            rows,
            cols,
        })
    }

    /// Pixels per image.
    pub fn pixels(&self) -> usize {
        self.rows * self.cols
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        let p = self.pixels();
        &self.images[i * p..(i + 1) * p]
    }

    /// Gathers the images and labels at `indices` into the output buffers (cleared first, so they can be
    /// reused without reallocating). Panics if an index is `>= n`: indices come from the program, not input.
    pub fn batch(&self, indices: &[usize], images_out: &mut Vec<f32>, labels_out: &mut Vec<u32>) {
        images_out.clear();
        labels_out.clear();
        for &i in indices {
            images_out.extend_from_slice(self.image(i));
            labels_out.push(self.labels[i] as u32);
        }
    }
}

/// Hands out fixed-size batches of indices, reshuffling at each epoch.
///
/// The `n % batch` examples left over at the end of an epoch are skipped (they are reshuffled into
/// later epochs), so every batch has the same shape, which fixed-size GPU buffers need.
///
/// It serialises (order, position, epoch, RNG state) so that a checkpoint can continue the stream
/// exactly; [`EpochShuffler::check_restored`] checks a restored one against a fresh one.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct EpochShuffler {
    order: Vec<usize>,
    batch: usize,
    pos: usize,
    epoch: u64,
    rng: Rng,
}

impl EpochShuffler {
    /// Shuffler over `0..n` in batches of `batch` (1 <= batch <= n).
    pub fn new(n: usize, batch: usize, seed: u64) -> Result<Self, DataError> {
        if batch == 0 {
            return Err(DataError::invalid("batch", batch, "must be at least 1"));
        }
        if batch > n {
            return Err(DataError::invalid(
                "batch",
                batch,
                format!("larger than the {n} examples in the split; use a smaller batch"),
            ));
        }
        let mut rng = Rng::new(seed);
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        Ok(EpochShuffler {
            order,
            batch,
            pos: 0,
            epoch: 0,
            rng,
        })
    }

    /// The next batch of indices; starts a new (reshuffled) epoch when fewer than `batch` remain.
    pub fn next_batch(&mut self) -> &[usize] {
        if self.pos + self.batch > self.order.len() {
            self.rng.shuffle(&mut self.order);
            self.pos = 0;
            self.epoch += 1;
        }
        let start = self.pos;
        self.pos += self.batch;
        &self.order[start..self.pos]
    }

    /// Completed epochs (0 during the first).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Checks that `self` (read from a checkpoint) shuffles the same split in the same batches as
    /// `fresh`: the same examples, batch size and a position inside the order.
    pub fn check_restored(&self, fresh: &EpochShuffler) -> Result<(), DataError> {
        if self.batch != fresh.batch {
            return Err(DataError::invalid(
                "restored batch",
                self.batch,
                format!("this stream has batch {}", fresh.batch),
            ));
        }
        let mut sorted = self.order.clone();
        sorted.sort_unstable();
        if sorted.len() != fresh.order.len() || sorted.iter().enumerate().any(|(i, &x)| i != x) {
            return Err(DataError::invalid(
                "restored order",
                format!("{} indices", self.order.len()),
                format!(
                    "is not a permutation of this split's {} examples",
                    fresh.order.len()
                ),
            ));
        }
        if self.pos > self.order.len() {
            return Err(DataError::invalid(
                "restored position",
                self.pos,
                format!("past the end of {} examples", self.order.len()),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::temp_dir;
    use std::io::Write;

    fn idx_images(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [IMAGES_MAGIC, n, rows, cols] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend_from_slice(pixels);
        v
    }

    fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [LABELS_MAGIC, labels.len() as u32] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend_from_slice(labels);
        v
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).expect("gzip");
        enc.finish().expect("gzip")
    }

    /// Writes a valid 2x2 data set (3 train, 2 test images), train files gzipped, test files plain.
    fn write_tiny(dir: &Path) {
        let train_px: Vec<u8> = (0..12).map(|i| (i * 20) as u8).collect();
        std::fs::write(
            dir.join("train-images-idx3-ubyte.gz"),
            gzip(&idx_images(3, 2, 2, &train_px)),
        )
        .unwrap();
        std::fs::write(
            dir.join("train-labels-idx1-ubyte.gz"),
            gzip(&idx_labels(&[0, 9, 4])),
        )
        .unwrap();
        std::fs::write(
            dir.join("t10k-images-idx3-ubyte"),
            idx_images(2, 2, 2, &[0, 255, 51, 102, 1, 2, 3, 4]),
        )
        .unwrap();
        std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx_labels(&[7, 1])).unwrap();
    }

    #[test]
    fn loads_tiny_gz_and_plain() {
        let dir = temp_dir("tiny-ok");
        write_tiny(&dir);
        let m = Mnist::load_dir(&dir).unwrap();
        assert_eq!((m.train.n, m.train.rows, m.train.cols), (3, 2, 2));
        assert_eq!(m.train.labels, vec![0, 9, 4]);
        assert_eq!(
            m.train.image(1),
            &[80.0 / 255.0, 100.0 / 255.0, 120.0 / 255.0, 140.0 / 255.0]
        );
        assert_eq!(m.test.n, 2);
        assert_eq!(m.test.image(0), &[0.0, 1.0, 0.2, 0.4]);
        assert_eq!(m.test.labels, vec![7, 1]);

        let (mut xs, mut ys) = (vec![9.0; 100], Vec::new());
        m.train.batch(&[2, 0], &mut xs, &mut ys);
        assert_eq!(ys, vec![4, 0]);
        assert_eq!(xs.len(), 8);
        assert_eq!(&xs[..4], m.train.image(2));
        assert_eq!(&xs[4..], m.train.image(0));
    }

    fn expect_err(dir: &Path) -> String {
        match Mnist::load_dir(dir) {
            Ok(_) => panic!("loading {} should fail", dir.display()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn missing_file_names_path_and_expected_names() {
        let dir = temp_dir("missing");
        write_tiny(&dir);
        std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte")).unwrap();
        let msg = expect_err(&dir);
        assert!(msg.contains("t10k-labels-idx1-ubyte.gz"), "{msg}");
        assert!(msg.contains(&dir.display().to_string()), "{msg}");
    }

    #[test]
    fn wrong_magic_says_expected_and_found() {
        let dir = temp_dir("magic");
        write_tiny(&dir);
        // Labels where images belong.
        std::fs::write(dir.join("t10k-images-idx3-ubyte"), idx_labels(&[1, 2])).unwrap();
        let msg = expect_err(&dir);
        assert!(msg.contains("0x00000803"), "{msg}");
        assert!(msg.contains("0x00000801"), "{msg}");
        assert!(msg.contains("may not be an IDX file"), "{msg}");
        assert!(msg.contains("t10k-images-idx3-ubyte"), "{msg}");
    }

    #[test]
    fn truncated_says_expected_and_got() {
        let dir = temp_dir("trunc");
        write_tiny(&dir);
        // Header says 2 images of 2x2 = 8 pixels, only 5 present: 16 + 8 = 24 expected, 21 got.
        std::fs::write(
            dir.join("t10k-images-idx3-ubyte"),
            idx_images(2, 2, 2, &[1, 2, 3, 4, 5]),
        )
        .unwrap();
        let msg = expect_err(&dir);
        assert!(msg.contains("truncated"), "{msg}");
        assert!(msg.contains("24") && msg.contains("21"), "{msg}");

        // Shorter than the header itself.
        std::fs::write(
            dir.join("t10k-images-idx3-ubyte"),
            IMAGES_MAGIC.to_be_bytes(),
        )
        .unwrap();
        let msg = expect_err(&dir);
        assert!(msg.contains("16") && msg.contains("truncated"), "{msg}");
    }

    #[test]
    fn dimensions_that_multiply_past_2_64_are_an_error() {
        let dir = temp_dir("oversize");
        write_tiny(&dir);
        std::fs::write(
            dir.join("t10k-images-idx3-ubyte"),
            idx_images(u32::MAX, u32::MAX, u32::MAX, &[1, 2, 3]),
        )
        .unwrap();
        let msg = expect_err(&dir);
        assert!(msg.contains("multiply past 2^64"), "{msg}");
    }

    #[test]
    fn trailing_bytes_rejected() {
        let dir = temp_dir("trailing");
        write_tiny(&dir);
        std::fs::write(dir.join("t10k-labels-idx1-ubyte"), {
            let mut v = idx_labels(&[7, 1]);
            v.push(3);
            v
        })
        .unwrap();
        let msg = expect_err(&dir);
        assert!(msg.contains("11 bytes") && msg.contains("10"), "{msg}");
    }

    #[test]
    fn count_mismatch_names_both_files() {
        let dir = temp_dir("count");
        write_tiny(&dir);
        std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx_labels(&[7, 1, 2])).unwrap();
        let msg = expect_err(&dir);
        assert!(
            msg.contains("2 images") && msg.contains("3 labels"),
            "{msg}"
        );
        assert!(
            msg.contains("t10k-images-idx3-ubyte") && msg.contains("t10k-labels-idx1-ubyte"),
            "{msg}"
        );
    }

    #[test]
    fn label_above_nine_rejected() {
        let dir = temp_dir("label");
        write_tiny(&dir);
        std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx_labels(&[7, 10])).unwrap();
        let msg = expect_err(&dir);
        assert!(msg.contains("label 10 at index 1"), "{msg}");
    }

    #[test]
    fn corrupt_gzip_rejected() {
        let dir = temp_dir("gz");
        write_tiny(&dir);
        let mut bad = gzip(&idx_labels(&[0, 9, 4]));
        bad.truncate(bad.len() / 2);
        std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), bad).unwrap();
        let msg = expect_err(&dir);
        assert!(
            msg.contains("decompress") && msg.contains("train-labels"),
            "{msg}"
        );
    }

    #[test]
    fn shape_mismatch_between_splits() {
        let dir = temp_dir("shape");
        write_tiny(&dir);
        std::fs::write(
            dir.join("t10k-images-idx3-ubyte"),
            idx_images(2, 1, 4, &[0, 255, 51, 102, 1, 2, 3, 4]),
        )
        .unwrap();
        let msg = expect_err(&dir);
        assert!(msg.contains("2x2") && msg.contains("1x4"), "{msg}");
    }

    #[test]
    fn loads_repository_subset() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist");
        let m = Mnist::load_dir(&dir).unwrap();
        assert_eq!((m.train.n, m.test.n), (8000, 2000));
        for split in [&m.train, &m.test] {
            assert_eq!((split.rows, split.cols), (28, 28));
            assert_eq!(split.images.len(), split.n * 784);
            assert_eq!(split.labels.len(), split.n);
            assert!(split.labels.iter().all(|&l| l <= 9));
            // Every digit occurs, and pixels span the full [0, 1] range.
            for d in 0..10u8 {
                assert!(split.labels.contains(&d), "digit {d} missing");
            }
            let (lo, hi) = split
                .images
                .iter()
                .fold((f32::MAX, f32::MIN), |(lo, hi), &p| (lo.min(p), hi.max(p)));
            assert_eq!((lo, hi), (0.0, 1.0));
            // MNIST digits are mostly background: mean intensity is about 0.13.
            let mean = split.images.iter().sum::<f32>() / split.images.len() as f32;
            assert!((0.08..0.2).contains(&mean), "mean {mean}");
        }
    }

    #[test]
    fn a_restored_shuffler_continues_the_same_batches() {
        let mut s = EpochShuffler::new(10, 3, 4).unwrap();
        for _ in 0..4 {
            s.next_batch();
        }
        let mut back = s.clone();
        back.check_restored(&EpochShuffler::new(10, 3, 99).unwrap())
            .unwrap();
        for _ in 0..7 {
            assert_eq!(s.next_batch().to_vec(), back.next_batch().to_vec());
        }
        assert_eq!(s.epoch(), back.epoch());
        assert!(s
            .check_restored(&EpochShuffler::new(10, 2, 4).unwrap())
            .is_err());
        assert!(s
            .check_restored(&EpochShuffler::new(11, 3, 4).unwrap())
            .is_err());
    }

    #[test]
    fn shuffler_covers_epoch_without_repeats_and_reshuffles() {
        let mut s = EpochShuffler::new(10, 3, 42).unwrap();
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.extend_from_slice(s.next_batch());
        }
        assert_eq!(s.epoch(), 0);
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 9, "no index repeats within an epoch");
        let first_of_epoch1 = s.next_batch().to_vec();
        assert_eq!(s.epoch(), 1);
        assert_eq!(first_of_epoch1.len(), 3);

        let mut a = EpochShuffler::new(100, 10, 1).unwrap();
        let mut b = EpochShuffler::new(100, 10, 1).unwrap();
        let mut c = EpochShuffler::new(100, 10, 2).unwrap();
        let (xa, xb, xc) = (
            a.next_batch().to_vec(),
            b.next_batch().to_vec(),
            c.next_batch().to_vec(),
        );
        assert_eq!(xa, xb);
        assert_ne!(xa, xc);

        assert!(EpochShuffler::new(10, 0, 1).is_err());
        assert!(EpochShuffler::new(10, 11, 1).is_err());
    }
}
