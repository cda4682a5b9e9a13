//! Reference losses and their gradients, computed in f64. The `*_loss` functions take f64 inputs
//! so the tests can take finite differences of them.

/// What a loss kernel writes and accumulates.
#[derive(Clone, Debug, PartialEq)]
pub struct LossOut {
    /// `scale · ∂loss/∂input`.
    pub grad: Vec<f32>,
    /// The metric sums the kernel adds to its metrics tensor, in order.
    pub metrics: Vec<f64>,
}

/// The class index of a label stored as f32, or `None` for a row to ignore.
fn class(label: f32, cols: usize) -> Option<usize> {
    let li = label.round();
    (li >= 0.0 && li < cols as f32).then_some(li as usize)
}

/// Sum over rows of `-ln softmax(logits)[label]`; rows with an out-of-range label are skipped.
pub fn softmax_xent_loss(logits: &[f64], labels: &[f32], rows: usize, cols: usize) -> f64 {
    let mut total = 0.0;
    for r in 0..rows {
        let Some(label) = class(labels[r], cols) else {
            continue;
        };
        let row = &logits[r * cols..(r + 1) * cols];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
        total += s.ln() - (row[label] - m);
    }
    total
}

/// Softmax cross-entropy: grad = scale·(softmax − onehot(label)); metrics = [nll sum, argmax errors].
pub fn softmax_xent(
    logits: &[f32],
    labels: &[f32],
    rows: usize,
    cols: usize,
    scale: f32,
) -> LossOut {
    let mut grad = vec![0.0f32; rows * cols];
    let x: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
    let mut errors = 0.0;
    for r in 0..rows {
        let Some(label) = class(labels[r], cols) else {
            continue;
        };
        let row = &x[r * cols..(r + 1) * cols];
        // First index of the maximum.
        let mut arg = 0;
        for j in 1..cols {
            if row[j] > row[arg] {
                arg = j;
            }
        }
        let m = row[arg];
        let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
        for j in 0..cols {
            let p = (row[j] - m).exp() / s;
            let onehot = if j == label { 1.0 } else { 0.0 };
            grad[r * cols + j] = (scale as f64 * (p - onehot)) as f32;
        }
        if arg != label {
            errors += 1.0;
        }
    }
    LossOut {
        grad,
        metrics: vec![softmax_xent_loss(&x, labels, rows, cols), errors],
    }
}

/// Σ mask·BCE(sigmoid(x), target).
pub fn sigmoid_xent_loss(logits: &[f64], targets: &[f32], mask: &[f32]) -> f64 {
    logits
        .iter()
        .zip(targets.iter().zip(mask))
        .filter(|(_, (_, &w))| w > 0.0)
        .map(|(&x, (&t, &w))| {
            let t = t as f64;
            let s = 1.0 / (1.0 + (-x).exp());
            // The textbook form; fine in f64 for the moderate logits the tests use.
            w as f64 * -(t * s.ln() + (1.0 - t) * (1.0 - s).ln())
        })
        .sum()
}

/// Masked sigmoid cross-entropy: grad = scale·mask·(sigmoid(x) − t);
/// metrics = [Σ mask·BCE, bit errors where mask > 0, rows with any mask > 0].
pub fn sigmoid_xent(
    logits: &[f32],
    targets: &[f32],
    mask: &[f32],
    rows: usize,
    cols: usize,
    scale: f32,
) -> LossOut {
    let mut grad = vec![0.0f32; rows * cols];
    let mut bce = 0.0;
    let mut bits = 0.0;
    let mut scored = 0.0;
    for r in 0..rows {
        let mut hit = false;
        for j in 0..cols {
            let i = r * cols + j;
            let (x, t, w) = (logits[i] as f64, targets[i] as f64, mask[i] as f64);
            let s = 1.0 / (1.0 + (-x).exp());
            grad[i] = (scale as f64 * w * (s - t)) as f32;
            if w > 0.0 {
                hit = true;
                bce += w * (x.max(0.0) - x * t + (-x.abs()).exp().ln_1p());
                if (s > 0.5) != (t > 0.5) {
                    bits += 1.0;
                }
            }
        }
        if hit {
            scored += 1.0;
        }
    }
    LossOut {
        grad,
        metrics: vec![bce, bits, scored],
    }
}

/// 0.5·Σ(pred − target)².
pub fn sg_l2_loss(pred: &[f64], target: &[f32]) -> f64 {
    pred.iter()
        .zip(target)
        .map(|(&p, &t)| 0.5 * (p - t as f64).powi(2))
        .sum()
}

/// SG regression: grad = scale·(pred − target); metrics = [0.5·Σ(pred − target)²].
pub fn sg_l2(pred: &[f32], target: &[f32], scale: f32) -> LossOut {
    let grad = pred
        .iter()
        .zip(target)
        .map(|(&p, &t)| (scale as f64 * (p as f64 - t as f64)) as f32)
        .collect();
    let p64: Vec<f64> = pred.iter().map(|&v| v as f64).collect();
    LossOut {
        grad,
        metrics: vec![sg_l2_loss(&p64, target)],
    }
}
