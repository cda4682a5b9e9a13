//! Loss kernels: GPU against the CPU reference at odd shapes, the reference gradients against
//! finite differences of the f64 reference losses, the GPU gradients against finite differences
//! of the GPU losses, metric values on hand-made cases, masks and ignored rows.

use dni_kernels::ops::loss::{sg_l2, sigmoid_xent, softmax_xent};
use dni_kernels::reference::loss as reference;
use dni_kernels::testing::{assert_close, gpu, Lcg};
use dni_kernels::{Gpu, Tensor};

/// (rows, cols): single elements, odd sizes, and more rows than the 256 invocations of the
/// workgroup (so invocations own several rows).
const SHAPES: &[(usize, usize)] = &[
    (1, 1),
    (1, 3),
    (3, 17),
    (17, 10),
    (127, 5),
    (300, 3),
    (300, 127),
    (513, 11),
];

fn t(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_slice(gpu, shape, data).unwrap()
}

/// Runs softmax_xent on fresh tensors; metrics start at `m0`. Returns (dlogits, metrics).
fn gpu_softmax(
    logits: &[f32],
    labels: &[f32],
    rows: usize,
    cols: usize,
    scale: f32,
    m0: [f32; 2],
) -> (Vec<f32>, Vec<f32>) {
    let gpu = gpu();
    let x = t(&gpu, &[rows, cols], logits);
    let l = t(&gpu, &[rows], labels);
    let dx = t(&gpu, &[rows, cols], &vec![f32::NAN; rows * cols]);
    let m = t(&gpu, &[2], &m0);
    let mut enc = gpu.encoder();
    softmax_xent(&mut enc, &x, &l, &dx, scale, &m).unwrap();
    gpu.submit(enc);
    let mut out = gpu.read_many(&[&dx, &m]).unwrap();
    let metrics = out.pop().unwrap();
    (out.pop().unwrap(), metrics)
}

#[allow(clippy::too_many_arguments)]
fn gpu_sigmoid(
    logits: &[f32],
    targets: &[f32],
    mask: &[f32],
    rows: usize,
    cols: usize,
    scale: f32,
    m0: [f32; 3],
) -> (Vec<f32>, Vec<f32>) {
    let gpu = gpu();
    let x = t(&gpu, &[rows, cols], logits);
    let y = t(&gpu, &[rows, cols], targets);
    let w = t(&gpu, &[rows, cols], mask);
    let dx = t(&gpu, &[rows, cols], &vec![f32::NAN; rows * cols]);
    let m = t(&gpu, &[3], &m0);
    let mut enc = gpu.encoder();
    sigmoid_xent(&mut enc, &x, &y, &w, &dx, scale, &m).unwrap();
    gpu.submit(enc);
    let mut out = gpu.read_many(&[&dx, &m]).unwrap();
    let metrics = out.pop().unwrap();
    (out.pop().unwrap(), metrics)
}

fn gpu_l2(pred: &[f32], target: &[f32], scale: f32, loss0: Option<f32>) -> (Vec<f32>, Option<f32>) {
    let gpu = gpu();
    let n = pred.len();
    let p = t(&gpu, &[n], pred);
    let y = t(&gpu, &[n], target);
    let d = t(&gpu, &[n], &vec![f32::NAN; n]);
    let loss = loss0.map(|v| t(&gpu, &[1], &[v]));
    let mut enc = gpu.encoder();
    sg_l2(&mut enc, &p, &y, &d, scale, loss.as_ref()).unwrap();
    gpu.submit(enc);
    let grad = gpu.read(&d).unwrap();
    (grad, loss.map(|l| gpu.read(&l).unwrap()[0]))
}

fn labels_for(rng: &mut Lcg, rows: usize, cols: usize, ignore_every: usize) -> Vec<f32> {
    (0..rows)
        .map(|r| {
            if ignore_every > 0 && r % ignore_every == ignore_every - 1 {
                -1.0
            } else {
                (rng.next_u64() % cols as u64) as f32
            }
        })
        .collect()
}

fn metrics_close(got: &[f32], want: &[f64], m0: &[f32], what: &str) {
    let want: Vec<f32> = want
        .iter()
        .zip(m0)
        .map(|(w, a)| (*w + *a as f64) as f32)
        .collect();
    assert_close(got, &want, 1e-4, 1e-4, what);
}

/// Central differences of `f` at `x`, in f64.
fn finite_diff(x: &[f64], h: f64, f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            xp[i] = x[i] + h;
            let up = f(&xp);
            xp[i] = x[i] - h;
            let down = f(&xp);
            xp[i] = x[i];
            (up - down) / (2.0 * h)
        })
        .collect()
}

fn assert_close64(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tol * (1.0 + w.abs()),
            "{what}: element {i} got {g} want {w}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// softmax cross-entropy

#[test]
fn softmax_xent_matches_reference() {
    for &(rows, cols) in SHAPES {
        let mut rng = Lcg::new((rows * 1000 + cols) as u64);
        let logits: Vec<f32> = rng.vec(rows * cols).iter().map(|v| v * 4.0).collect();
        let labels = labels_for(&mut rng, rows, cols, 7);
        let scale = 1.0 / rows as f32;
        let m0 = [0.25, 3.0];
        let (grad, metrics) = gpu_softmax(&logits, &labels, rows, cols, scale, m0);
        let want = reference::softmax_xent(&logits, &labels, rows, cols, scale);
        let what = format!("softmax_xent {rows}x{cols}");
        assert_close(
            &grad,
            &want.grad,
            1e-4,
            1e-6 * scale,
            &format!("{what} dlogits"),
        );
        metrics_close(&metrics, &want.metrics, &m0, &format!("{what} metrics"));
    }
}

#[test]
fn softmax_xent_is_stable_for_large_logits() {
    let (rows, cols) = (5, 9);
    let mut rng = Lcg::new(3);
    let logits: Vec<f32> = rng.vec(rows * cols).iter().map(|v| v * 200.0).collect();
    let labels = labels_for(&mut rng, rows, cols, 0);
    let (grad, metrics) = gpu_softmax(&logits, &labels, rows, cols, 1.0, [0.0, 0.0]);
    let want = reference::softmax_xent(&logits, &labels, rows, cols, 1.0);
    assert_close(&grad, &want.grad, 1e-4, 1e-6, "large-logit dlogits");
    metrics_close(&metrics, &want.metrics, &[0.0, 0.0], "large-logit metrics");
}

#[test]
fn softmax_xent_reference_gradient_matches_finite_differences() {
    for &(rows, cols) in &[(1, 1), (1, 3), (3, 7), (6, 5)] {
        let mut rng = Lcg::new((rows + cols) as u64);
        let logits: Vec<f32> = rng.vec(rows * cols).iter().map(|v| v * 3.0).collect();
        let labels = labels_for(&mut rng, rows, cols, 4);
        let x64: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
        let fd = finite_diff(&x64, 1e-5, |x| {
            reference::softmax_xent_loss(x, &labels, rows, cols)
        });
        let got = reference::softmax_xent(&logits, &labels, rows, cols, 1.0);
        assert_close64(&got.grad, &fd, 1e-6, &format!("softmax FD {rows}x{cols}"));
    }
}

#[test]
fn softmax_xent_gpu_gradient_matches_gpu_finite_differences() {
    let (rows, cols) = (3, 5);
    let mut rng = Lcg::new(11);
    let logits: Vec<f32> = rng.vec(rows * cols).iter().map(|v| v * 2.0).collect();
    let labels = labels_for(&mut rng, rows, cols, 0);
    let (grad, _) = gpu_softmax(&logits, &labels, rows, cols, 1.0, [0.0, 0.0]);
    let h = 1e-2f32;
    let mut x = logits.clone();
    for i in 0..x.len() {
        x[i] = logits[i] + h;
        let up = gpu_softmax(&x, &labels, rows, cols, 1.0, [0.0, 0.0]).1[0];
        x[i] = logits[i] - h;
        let down = gpu_softmax(&x, &labels, rows, cols, 1.0, [0.0, 0.0]).1[0];
        x[i] = logits[i];
        let fd = (up - down) / (2.0 * h);
        assert!(
            (grad[i] - fd).abs() < 2e-3,
            "element {i}: gpu grad {} vs gpu FD {fd}",
            grad[i]
        );
    }
}

#[test]
fn softmax_xent_metrics_on_a_hand_made_case() {
    // Row 0: uniform over 2 → nll ln 2; argmax is the first of the tie (0) = label: no error.
    // Row 1: argmax 2, label 0 → an error; nll = ln(1 + e + e²) − 0.
    // Row 2: label -1 → ignored (zero gradient, no metrics) even though its argmax is "wrong".
    // Row 3: label 3.0 (out of range for 3 classes) → ignored as well.
    let logits = [0.0, 0.0, -50.0, 0.0, 1.0, 2.0, 5.0, 0.0, 0.0, 1.0, 2.0, 3.0];
    let labels = [0.0, 0.0, -1.0, 3.0];
    let (grad, metrics) = gpu_softmax(&logits, &labels, 4, 3, 1.0, [1.0, 10.0]);
    let e = std::f64::consts::E;
    let nll = 2f64.ln() + (1.0 + e + e * e).ln();
    assert!(
        (metrics[0] as f64 - (1.0 + nll)).abs() < 1e-5,
        "nll sum {} want {}",
        metrics[0],
        1.0 + nll
    );
    assert_eq!(metrics[1], 11.0, "argmax errors");
    assert_eq!(&grad[6..], &[0.0; 6], "ignored rows must get zero gradient");
    assert!(
        (grad[0] + 0.5).abs() < 1e-6 && (grad[1] - 0.5).abs() < 1e-6,
        "row 0 grad {:?}",
        &grad[..3]
    );
}

#[test]
fn softmax_xent_accumulates_across_calls() {
    let gpu = gpu();
    let (rows, cols) = (9, 4);
    let mut rng = Lcg::new(5);
    let logits = rng.vec(rows * cols);
    let labels = labels_for(&mut rng, rows, cols, 0);
    let x = t(&gpu, &[rows, cols], &logits);
    let l = t(&gpu, &[rows], &labels);
    let dx = Tensor::zeros(&gpu, &[rows, cols]).unwrap();
    let m = Tensor::zeros(&gpu, &[2]).unwrap();
    let mut enc = gpu.encoder();
    for _ in 0..3 {
        softmax_xent(&mut enc, &x, &l, &dx, 1.0, &m).unwrap();
    }
    gpu.submit(enc);
    let got = gpu.read(&m).unwrap();
    let want = reference::softmax_xent(&logits, &labels, rows, cols, 1.0).metrics;
    metrics_close(
        &got,
        &[want[0] * 3.0, want[1] * 3.0],
        &[0.0, 0.0],
        "3 calls",
    );
}

#[test]
fn softmax_xent_rejects_bad_shapes() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[4, 3]).unwrap();
    let dx = Tensor::zeros(&gpu, &[4, 3]).unwrap();
    let l = Tensor::zeros(&gpu, &[4]).unwrap();
    let m = Tensor::zeros(&gpu, &[2]).unwrap();
    let l_bad = Tensor::zeros(&gpu, &[3]).unwrap();
    let m_bad = Tensor::zeros(&gpu, &[3]).unwrap();
    let dx_bad = Tensor::zeros(&gpu, &[4, 4]).unwrap();
    let mut enc = gpu.encoder();
    assert!(softmax_xent(&mut enc, &x, &l_bad, &dx, 1.0, &m).is_err());
    assert!(softmax_xent(&mut enc, &x, &l, &dx, 1.0, &m_bad).is_err());
    assert!(softmax_xent(&mut enc, &x, &l, &dx_bad, 1.0, &m).is_err());
    let err = softmax_xent(&mut enc, &x, &l, &x, 1.0, &m).unwrap_err();
    assert!(err.to_string().contains("softmax_xent"), "{err}");
    assert_eq!(enc.dispatches(), 0);
    softmax_xent(&mut enc, &x, &l, &dx, 1.0, &m).unwrap();
    assert_eq!(enc.dispatches(), 1);
}

// ---------------------------------------------------------------------------------------------
// sigmoid cross-entropy

/// A mask with zeros, ones, a fractional weight, and every third row fully masked.
fn mask_for(rng: &mut Lcg, rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols)
        .map(|i| {
            if (i / cols) % 3 == 2 {
                0.0
            } else {
                match rng.next_u64() % 4 {
                    0 => 0.0,
                    1 => 0.5,
                    _ => 1.0,
                }
            }
        })
        .collect()
}

fn bits(rng: &mut Lcg, n: usize) -> Vec<f32> {
    (0..n).map(|_| (rng.next_u64() % 2) as f32).collect()
}

#[test]
fn sigmoid_xent_matches_reference() {
    for &(rows, cols) in SHAPES {
        let mut rng = Lcg::new((rows * 77 + cols) as u64);
        let logits: Vec<f32> = rng.vec(rows * cols).iter().map(|v| v * 5.0).collect();
        let targets = bits(&mut rng, rows * cols);
        let mask = mask_for(&mut rng, rows, cols);
        let scale = 0.5 / rows as f32;
        let m0 = [1.5, 2.0, 4.0];
        let (grad, metrics) = gpu_sigmoid(&logits, &targets, &mask, rows, cols, scale, m0);
        let want = reference::sigmoid_xent(&logits, &targets, &mask, rows, cols, scale);
        let what = format!("sigmoid_xent {rows}x{cols}");
        assert_close(
            &grad,
            &want.grad,
            1e-4,
            1e-6 * scale,
            &format!("{what} dlogits"),
        );
        metrics_close(&metrics, &want.metrics, &m0, &format!("{what} metrics"));
    }
}

#[test]
fn sigmoid_xent_is_stable_for_large_logits() {
    let logits = [90.0, -90.0, 40.0, -40.0];
    let targets = [0.0, 1.0, 1.0, 0.0];
    let mask = [1.0; 4];
    let (grad, metrics) = gpu_sigmoid(&logits, &targets, &mask, 1, 4, 1.0, [0.0; 3]);
    let want = reference::sigmoid_xent(&logits, &targets, &mask, 1, 4, 1.0);
    assert_close(&grad, &want.grad, 1e-5, 1e-6, "large-logit grad");
    metrics_close(&metrics, &want.metrics, &[0.0; 3], "large-logit metrics");
    assert!((metrics[0] - 180.0).abs() < 1e-3, "bce {}", metrics[0]);
}

#[test]
fn sigmoid_xent_reference_gradient_matches_finite_differences() {
    let (rows, cols) = (4, 6);
    let mut rng = Lcg::new(21);
    let logits: Vec<f32> = rng.vec(rows * cols).iter().map(|v| v * 3.0).collect();
    // Soft targets too: the gradient formula holds for any target in [0, 1].
    let targets: Vec<f32> = rng.vec(rows * cols).iter().map(|v| 0.5 + 0.5 * v).collect();
    let mask = mask_for(&mut rng, rows, cols);
    let x64: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
    let fd = finite_diff(&x64, 1e-5, |x| {
        reference::sigmoid_xent_loss(x, &targets, &mask)
    });
    let got = reference::sigmoid_xent(&logits, &targets, &mask, rows, cols, 1.0);
    assert_close64(&got.grad, &fd, 1e-6, "sigmoid FD");
    // The stable BCE the kernel sums equals the textbook one.
    let total = reference::sigmoid_xent_loss(&x64, &targets, &mask);
    assert!(
        (got.metrics[0] - total).abs() < 1e-9 * (1.0 + total),
        "{} vs {total}",
        got.metrics[0]
    );
}

#[test]
fn sigmoid_xent_gpu_gradient_matches_gpu_finite_differences() {
    let (rows, cols) = (3, 4);
    let mut rng = Lcg::new(8);
    let logits: Vec<f32> = rng.vec(rows * cols).iter().map(|v| v * 2.0).collect();
    let targets = bits(&mut rng, rows * cols);
    let mask: Vec<f32> = (0..rows * cols).map(|i| [1.0, 0.5, 0.0][i % 3]).collect();
    let (grad, _) = gpu_sigmoid(&logits, &targets, &mask, rows, cols, 1.0, [0.0; 3]);
    let h = 1e-2f32;
    let mut x = logits.clone();
    for i in 0..x.len() {
        x[i] = logits[i] + h;
        let up = gpu_sigmoid(&x, &targets, &mask, rows, cols, 1.0, [0.0; 3]).1[0];
        x[i] = logits[i] - h;
        let down = gpu_sigmoid(&x, &targets, &mask, rows, cols, 1.0, [0.0; 3]).1[0];
        x[i] = logits[i];
        let fd = (up - down) / (2.0 * h);
        assert!(
            (grad[i] - fd).abs() < 2e-3,
            "element {i}: gpu grad {} vs gpu FD {fd}",
            grad[i]
        );
    }
}

#[test]
fn sigmoid_xent_metrics_and_mask_on_a_hand_made_case() {
    // Row 0 (scored): x=2,t=1 right; x=-2,t=1 wrong; x=0 → sigmoid 0.5, not > 0.5 → 0 = t right.
    // Row 1 (masked out): all wrong, yet no bits, no BCE, zero gradient, not a scored row.
    // Row 2 (scored through one element of weight 0.5): x=3, t=0 wrong.
    let logits = [2.0, -2.0, 0.0, 5.0, 5.0, -5.0, 3.0, 1.0, 1.0];
    let targets = [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0];
    let mask = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0];
    let (grad, metrics) = gpu_sigmoid(&logits, &targets, &mask, 3, 3, 1.0, [0.0; 3]);
    assert_eq!(metrics[1], 2.0, "bit errors");
    assert_eq!(metrics[2], 2.0, "scored rows");
    let sp = |x: f64| (1.0 + x.exp()).ln(); // softplus
    let bce = sp(-2.0) + sp(2.0) + 2f64.ln() + 0.5 * sp(3.0);
    assert!(
        (metrics[0] as f64 - bce).abs() < 1e-5,
        "bce {} want {bce}",
        metrics[0]
    );
    assert_eq!(&grad[3..6], &[0.0; 3], "masked row gradient");
    assert_eq!(&grad[7..], &[0.0; 2], "masked elements");
    let s3 = 1.0 / (1.0 + (-3.0f32).exp());
    assert!(
        (grad[6] - 0.5 * s3).abs() < 1e-6,
        "weighted gradient {}",
        grad[6]
    );
}

#[test]
fn sigmoid_xent_rejects_bad_shapes() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[2, 3]).unwrap();
    let y = Tensor::zeros(&gpu, &[2, 3]).unwrap();
    let w = Tensor::zeros(&gpu, &[2, 3]).unwrap();
    let d = Tensor::zeros(&gpu, &[2, 3]).unwrap();
    let m = Tensor::zeros(&gpu, &[3]).unwrap();
    let short = Tensor::zeros(&gpu, &[2, 2]).unwrap();
    let m2 = Tensor::zeros(&gpu, &[2]).unwrap();
    let mut enc = gpu.encoder();
    assert!(sigmoid_xent(&mut enc, &x, &short, &w, &d, 1.0, &m).is_err());
    assert!(sigmoid_xent(&mut enc, &x, &y, &short, &d, 1.0, &m).is_err());
    assert!(sigmoid_xent(&mut enc, &x, &y, &w, &short, 1.0, &m).is_err());
    assert!(sigmoid_xent(&mut enc, &x, &y, &w, &d, 1.0, &m2).is_err());
    assert!(
        sigmoid_xent(&mut enc, &x, &y, &w, &y, 1.0, &m).is_err(),
        "dlogits aliasing targets"
    );
    assert_eq!(enc.dispatches(), 0);
}

// ---------------------------------------------------------------------------------------------
// synthetic-gradient L2

#[test]
fn sg_l2_matches_reference() {
    for &n in &[1usize, 3, 17, 127, 300, 70_001] {
        let mut rng = Lcg::new(n as u64);
        let pred = rng.vec(n);
        let target = rng.vec(n);
        let scale = 0.3;
        let want = reference::sg_l2(&pred, &target, scale);
        let (grad, loss) = gpu_l2(&pred, &target, scale, Some(0.75));
        assert_close(&grad, &want.grad, 1e-6, 1e-7, &format!("sg_l2 n={n} grad"));
        let loss = loss.unwrap();
        let expect = 0.75 + want.metrics[0];
        assert!(
            ((loss as f64) - expect).abs() <= 1e-5 * expect,
            "sg_l2 n={n} loss {loss} want {expect}"
        );
        let (grad2, none) = gpu_l2(&pred, &target, scale, None);
        assert!(none.is_none());
        assert_eq!(grad, grad2, "with and without the loss");
    }
}

#[test]
fn sg_l2_reference_gradient_matches_finite_differences() {
    let mut rng = Lcg::new(4);
    let pred = rng.vec(13);
    let target = rng.vec(13);
    let p64: Vec<f64> = pred.iter().map(|&v| v as f64).collect();
    let fd = finite_diff(&p64, 1e-4, |p| reference::sg_l2_loss(p, &target));
    assert_close64(
        &reference::sg_l2(&pred, &target, 1.0).grad,
        &fd,
        1e-6,
        "sg_l2 FD",
    );
}

#[test]
fn sg_l2_gpu_gradient_matches_gpu_finite_differences() {
    let mut rng = Lcg::new(6);
    let pred = rng.vec(7);
    let target = rng.vec(7);
    let (grad, _) = gpu_l2(&pred, &target, 1.0, None);
    let h = 1e-2f32;
    let mut p = pred.clone();
    for i in 0..p.len() {
        p[i] = pred[i] + h;
        let up = gpu_l2(&p, &target, 1.0, Some(0.0)).1.unwrap();
        p[i] = pred[i] - h;
        let down = gpu_l2(&p, &target, 1.0, Some(0.0)).1.unwrap();
        p[i] = pred[i];
        let fd = (up - down) / (2.0 * h);
        assert!(
            (grad[i] - fd).abs() < 1e-3,
            "element {i}: gpu grad {} vs gpu FD {fd}",
            grad[i]
        );
    }
}

#[test]
fn sg_l2_rejects_bad_shapes() {
    let gpu = gpu();
    let p = Tensor::zeros(&gpu, &[4, 5]).unwrap();
    let y = Tensor::zeros(&gpu, &[4, 5]).unwrap();
    let d = Tensor::zeros(&gpu, &[4, 5]).unwrap();
    let short = Tensor::zeros(&gpu, &[19]).unwrap();
    let loss2 = Tensor::zeros(&gpu, &[2]).unwrap();
    let mut enc = gpu.encoder();
    assert!(sg_l2(&mut enc, &p, &short, &d, 1.0, None).is_err());
    assert!(sg_l2(&mut enc, &p, &y, &short, 1.0, None).is_err());
    assert!(sg_l2(&mut enc, &p, &y, &d, 1.0, Some(&loss2)).is_err());
    assert!(
        sg_l2(&mut enc, &p, &y, &p, 1.0, None).is_err(),
        "dpred aliasing pred"
    );
    assert_eq!(enc.dispatches(), 0);
}
