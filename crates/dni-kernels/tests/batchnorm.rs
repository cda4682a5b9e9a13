//! Batch norm: GPU forward (training and eval) and backward against the CPU reference at odd
//! shapes, the reference backward against finite differences of the f64 reference forward, and
//! the GPU backward against finite differences of the GPU forward.

use dni_kernels::ops::batchnorm::{batchnorm_backward, batchnorm_forward, BatchNormParams};
use dni_kernels::reference::batchnorm as reference;
use dni_kernels::testing::{assert_close, gpu, Lcg};
use dni_kernels::{Gpu, Tensor};

/// (batch, features): the smallest trainable batch, odd sizes, and more features than one
/// 64-wide workgroup.
const SHAPES: &[(usize, usize)] = &[(2, 1), (3, 17), (17, 3), (127, 5), (300, 7), (33, 300)];

const P: BatchNormParams = BatchNormParams {
    eps: 1e-5,
    momentum: 0.1,
};

fn t(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_slice(gpu, shape, data).unwrap()
}

struct Layer {
    x: Tensor,
    gamma: Tensor,
    beta: Tensor,
    y: Tensor,
    mean: Tensor,
    invstd: Tensor,
    rmean: Tensor,
    rvar: Tensor,
}

impl Layer {
    #[allow(clippy::too_many_arguments)]
    fn new(
        gpu: &Gpu,
        rows: usize,
        cols: usize,
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        rm: &[f32],
        rv: &[f32],
    ) -> Self {
        Self {
            x: t(gpu, &[rows, cols], x),
            gamma: t(gpu, &[cols], gamma),
            beta: t(gpu, &[cols], beta),
            y: t(gpu, &[rows, cols], &vec![f32::NAN; rows * cols]),
            mean: t(gpu, &[cols], &vec![f32::NAN; cols]),
            invstd: t(gpu, &[cols], &vec![f32::NAN; cols]),
            rmean: t(gpu, &[cols], rm),
            rvar: t(gpu, &[cols], rv),
        }
    }

    fn forward(&self, gpu: &Gpu, training: bool) {
        let mut enc = gpu.encoder();
        batchnorm_forward(
            &mut enc,
            &self.x,
            &self.gamma,
            &self.beta,
            &self.y,
            &self.mean,
            &self.invstd,
            &self.rmean,
            &self.rvar,
            training,
            P,
        )
        .unwrap();
        gpu.submit(enc);
    }
}

/// x, gamma, beta, running mean, running var.
type Inputs = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

/// Inputs with a per-feature offset and spread, so the statistics are not trivially 0 and 1.
fn inputs(rows: usize, cols: usize, seed: u64) -> Inputs {
    let mut rng = Lcg::new(seed);
    let x: Vec<f32> = (0..rows * cols)
        .map(|i| {
            let j = (i % cols) as f32;
            0.3 * j - 1.0 + (1.0 + 0.2 * j) * rng.sym()
        })
        .collect();
    let gamma: Vec<f32> = rng.vec(cols).iter().map(|v| 1.0 + 0.5 * v).collect();
    let beta = rng.vec(cols);
    let rm = rng.vec(cols);
    let rv: Vec<f32> = rng.vec(cols).iter().map(|v| 1.5 + v).collect();
    (x, gamma, beta, rm, rv)
}

#[test]
fn forward_train_matches_reference() {
    let gpu = gpu();
    for &(rows, cols) in SHAPES {
        let (x, gamma, beta, mut rm, mut rv) = inputs(rows, cols, (rows * 100 + cols) as u64);
        let layer = Layer::new(&gpu, rows, cols, &x, &gamma, &beta, &rm, &rv);
        layer.forward(&gpu, true);
        let got = gpu
            .read_many(&[
                &layer.y,
                &layer.mean,
                &layer.invstd,
                &layer.rmean,
                &layer.rvar,
            ])
            .unwrap();
        let want = reference::forward_train(
            &x, &gamma, &beta, rows, cols, P.eps, P.momentum, &mut rm, &mut rv,
        );
        let what = format!("bn train {rows}x{cols}");
        assert_close(&got[0], &want.y, 1e-4, 1e-5, &format!("{what} y"));
        assert_close(&got[1], &want.mean, 1e-5, 1e-6, &format!("{what} mean"));
        assert_close(&got[2], &want.invstd, 1e-4, 1e-6, &format!("{what} invstd"));
        assert_close(&got[3], &rm, 1e-5, 1e-6, &format!("{what} running mean"));
        assert_close(&got[4], &rv, 1e-5, 1e-6, &format!("{what} running var"));
    }
}

#[test]
fn forward_train_statistics_are_right_on_a_hand_made_case() {
    // One feature, x = [1, 3]: mean 2, biased var 1, unbiased var 2.
    let gpu = gpu();
    let layer = Layer::new(&gpu, 2, 1, &[1.0, 3.0], &[2.0], &[0.5], &[0.0], &[1.0]);
    layer.forward(&gpu, true);
    let got = gpu
        .read_many(&[
            &layer.y,
            &layer.mean,
            &layer.invstd,
            &layer.rmean,
            &layer.rvar,
        ])
        .unwrap();
    let is = 1.0 / (1.0f32 + P.eps).sqrt();
    assert_close(&got[0], &[0.5 - 2.0 * is, 0.5 + 2.0 * is], 1e-6, 1e-6, "y");
    assert_close(&got[1], &[2.0], 0.0, 0.0, "mean");
    assert_close(&got[2], &[is], 1e-6, 0.0, "invstd");
    assert_close(&got[3], &[0.2], 1e-6, 0.0, "running mean = 0.9·0 + 0.1·2");
    assert_close(
        &got[4],
        &[1.1],
        1e-6,
        0.0,
        "running var = 0.9·1 + 0.1·2 (unbiased)",
    );
}

#[test]
fn forward_eval_matches_reference_and_leaves_state_alone() {
    let gpu = gpu();
    for &(rows, cols) in &[(1, 1), (1, 17), (3, 5), (300, 130)] {
        let (x, gamma, beta, rm, rv) = inputs(rows, cols, (rows + cols) as u64);
        let layer = Layer::new(&gpu, rows, cols, &x, &gamma, &beta, &rm, &rv);
        layer.forward(&gpu, false);
        let got = gpu
            .read_many(&[&layer.y, &layer.mean, &layer.rmean, &layer.rvar])
            .unwrap();
        let want = reference::forward_eval(&x, &gamma, &beta, rows, cols, P.eps, &rm, &rv);
        let what = format!("bn eval {rows}x{cols}");
        assert_close(&got[0], &want, 1e-5, 1e-5, &format!("{what} y"));
        assert!(
            got[1].iter().all(|v| v.is_nan()),
            "{what}: eval wrote the saved mean"
        );
        assert_eq!(got[2], rm, "{what}: running mean changed");
        assert_eq!(got[3], rv, "{what}: running var changed");
    }
}

#[test]
fn backward_matches_reference() {
    let gpu = gpu();
    for &(rows, cols) in SHAPES {
        let (x, gamma, beta, rm, rv) = inputs(rows, cols, (rows * 7 + cols) as u64);
        let dy = Lcg::new(99).vec(rows * cols);
        let layer = Layer::new(&gpu, rows, cols, &x, &gamma, &beta, &rm, &rv);
        let gdy = t(&gpu, &[rows, cols], &dy);
        let dx = t(&gpu, &[rows, cols], &vec![f32::NAN; rows * cols]);
        // Overwritten, not accumulated: start them at garbage.
        let dgamma = t(&gpu, &[cols], &vec![7.0; cols]);
        let dbeta = t(&gpu, &[cols], &vec![7.0; cols]);
        let mut enc = gpu.encoder();
        batchnorm_forward(
            &mut enc,
            &layer.x,
            &layer.gamma,
            &layer.beta,
            &layer.y,
            &layer.mean,
            &layer.invstd,
            &layer.rmean,
            &layer.rvar,
            true,
            P,
        )
        .unwrap();
        batchnorm_backward(
            &mut enc,
            &layer.x,
            &gdy,
            &layer.gamma,
            &layer.mean,
            &layer.invstd,
            &dx,
            &dgamma,
            &dbeta,
        )
        .unwrap();
        gpu.submit(enc);
        let got = gpu
            .read_many(&[&dx, &dgamma, &dbeta, &layer.mean, &layer.invstd])
            .unwrap();
        // The reference backward runs from the GPU's saved statistics, so this checks backward alone.
        let want = reference::backward(&x, &dy, &gamma, &got[3], &got[4], rows, cols);
        let what = format!("bn backward {rows}x{cols}");
        let scale = (rows as f32).sqrt();
        assert_close(&got[0], &want.dx, 1e-3, 1e-5 * scale, &format!("{what} dx"));
        assert_close(
            &got[1],
            &want.dgamma,
            1e-4,
            1e-5 * scale,
            &format!("{what} dgamma"),
        );
        assert_close(
            &got[2],
            &want.dbeta,
            1e-4,
            1e-5 * scale,
            &format!("{what} dbeta"),
        );
    }
}

/// L = Σ w ⊙ y over the training-mode output, in f64.
fn weighted_output(
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    w: &[f32],
    rows: usize,
    cols: usize,
) -> f64 {
    let y = reference::normalize_f64(x, gamma, beta, rows, cols, P.eps as f64);
    y.iter().zip(w).map(|(y, &w)| y * w as f64).sum()
}

fn central(v: &[f64], h: f64, f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut p = v.to_vec();
    (0..v.len())
        .map(|i| {
            p[i] = v[i] + h;
            let up = f(&p);
            p[i] = v[i] - h;
            let down = f(&p);
            p[i] = v[i];
            (up - down) / (2.0 * h)
        })
        .collect()
}

fn close64(got: &[f32], want: &[f64], tol: f64, what: &str) {
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tol * (1.0 + w.abs()),
            "{what}: element {i} got {g} want {w}"
        );
    }
}

#[test]
fn reference_backward_matches_finite_differences() {
    for &(rows, cols) in &[(2, 1), (3, 2), (5, 3), (8, 4)] {
        let (x, gamma, beta, mut rm, mut rv) = inputs(rows, cols, (rows * 3 + cols) as u64);
        let w = Lcg::new(5).vec(rows * cols);
        let f = reference::forward_train(
            &x, &gamma, &beta, rows, cols, P.eps, P.momentum, &mut rm, &mut rv,
        );
        let got = reference::backward(&x, &w, &gamma, &f.mean, &f.invstd, rows, cols);
        let (x64, g64, b64): (Vec<f64>, Vec<f64>, Vec<f64>) = (
            x.iter().map(|&v| v as f64).collect(),
            gamma.iter().map(|&v| v as f64).collect(),
            beta.iter().map(|&v| v as f64).collect(),
        );
        let h = 1e-5;
        let what = format!("bn FD {rows}x{cols}");
        let fdx = central(&x64, h, |x| weighted_output(x, &g64, &b64, &w, rows, cols));
        close64(&got.dx, &fdx, 1e-5, &format!("{what} dx"));
        let fdg = central(&g64, h, |g| weighted_output(&x64, g, &b64, &w, rows, cols));
        close64(&got.dgamma, &fdg, 1e-5, &format!("{what} dgamma"));
        let fdb = central(&b64, h, |b| weighted_output(&x64, &g64, b, &w, rows, cols));
        close64(&got.dbeta, &fdb, 1e-5, &format!("{what} dbeta"));
    }
}

#[test]
fn gpu_backward_matches_finite_differences_of_gpu_forward() {
    let gpu = gpu();
    let (rows, cols) = (4, 3);
    let (x, gamma, beta, rm, rv) = inputs(rows, cols, 17);
    let w = Lcg::new(23).vec(rows * cols);
    let loss = |x: &[f32], gamma: &[f32], beta: &[f32]| -> f32 {
        let layer = Layer::new(&gpu, rows, cols, x, gamma, beta, &rm, &rv);
        layer.forward(&gpu, true);
        let y = gpu.read(&layer.y).unwrap();
        y.iter()
            .zip(&w)
            .map(|(y, w)| *y as f64 * *w as f64)
            .sum::<f64>() as f32
    };

    let layer = Layer::new(&gpu, rows, cols, &x, &gamma, &beta, &rm, &rv);
    let dy = t(&gpu, &[rows, cols], &w);
    let dx = Tensor::zeros(&gpu, &[rows, cols]).unwrap();
    let dgamma = Tensor::zeros(&gpu, &[cols]).unwrap();
    let dbeta = Tensor::zeros(&gpu, &[cols]).unwrap();
    layer.forward(&gpu, true);
    let mut enc = gpu.encoder();
    batchnorm_backward(
        &mut enc,
        &layer.x,
        &dy,
        &layer.gamma,
        &layer.mean,
        &layer.invstd,
        &dx,
        &dgamma,
        &dbeta,
    )
    .unwrap();
    gpu.submit(enc);
    let got = gpu.read_many(&[&dx, &dgamma, &dbeta]).unwrap();

    let h = 1e-2f32;
    let fd = |v: &[f32], which: usize| -> Vec<f32> {
        (0..v.len())
            .map(|i| {
                let mut p = v.to_vec();
                p[i] = v[i] + h;
                let args = |p: &[f32]| match which {
                    0 => loss(p, &gamma, &beta),
                    1 => loss(&x, p, &beta),
                    _ => loss(&x, &gamma, p),
                };
                let up = args(&p);
                p[i] = v[i] - h;
                (up - args(&p)) / (2.0 * h)
            })
            .collect()
    };
    assert_close(&got[0], &fd(&x, 0), 0.02, 5e-3, "gpu dx vs gpu FD");
    assert_close(&got[1], &fd(&gamma, 1), 0.02, 5e-3, "gpu dgamma vs gpu FD");
    assert_close(&got[2], &fd(&beta, 2), 0.02, 5e-3, "gpu dbeta vs gpu FD");
}

#[test]
fn bad_shapes_and_single_row_training_are_errors() {
    let gpu = gpu();
    let z = |s: &[usize]| Tensor::zeros(&gpu, s).unwrap();
    let (x, y, f) = (z(&[4, 3]), z(&[4, 3]), || z(&[3]));
    let (g, b, m, s, rm, rv) = (f(), f(), f(), f(), f(), f());
    let short = z(&[2]);
    let mut enc = gpu.encoder();
    assert!(batchnorm_forward(&mut enc, &x, &short, &b, &y, &m, &s, &rm, &rv, true, P).is_err());
    assert!(batchnorm_forward(&mut enc, &x, &g, &b, &y, &m, &s, &rm, &short, false, P).is_err());
    assert!(
        batchnorm_forward(&mut enc, &x, &g, &b, &z(&[4, 2]), &m, &s, &rm, &rv, true, P).is_err()
    );
    assert!(
        batchnorm_forward(&mut enc, &x, &g, &b, &x, &m, &s, &rm, &rv, true, P).is_err(),
        "in place"
    );
    let one = z(&[1, 3]);
    let one_y = z(&[1, 3]);
    let err =
        batchnorm_forward(&mut enc, &one, &g, &b, &one_y, &m, &s, &rm, &rv, true, P).unwrap_err();
    assert!(err.to_string().contains("2 rows"), "{err}");
    let (dx, dg, db) = (z(&[4, 3]), f(), f());
    assert!(batchnorm_backward(&mut enc, &x, &y, &g, &m, &s, &dx, &short, &db).is_err());
    assert!(
        batchnorm_backward(&mut enc, &x, &y, &g, &m, &s, &y, &dg, &db).is_err(),
        "dx aliasing dy"
    );
    assert_eq!(enc.dispatches(), 0);
    // One row is fine in eval mode; read-only inputs may repeat.
    batchnorm_forward(&mut enc, &one, &g, &b, &one_y, &m, &s, &rm, &rv, false, P).unwrap();
    batchnorm_backward(&mut enc, &x, &x, &g, &m, &s, &dx, &dg, &db).unwrap();
    assert_eq!(enc.dispatches(), 2);
}
