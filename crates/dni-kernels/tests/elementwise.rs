//! Elementwise and reduction launchers against plain loops at odd sizes, plus one tensor past
//! 65535 workgroups of 256 so that grid_1d's two-dimensional folding is exercised.

use dni_kernels::ops::elementwise::{
    activate, activate_backward, axpby, axpy, fill, mul, scale, swap_leading_axes, Activation,
};
use dni_kernels::ops::reduce::{col_sum, sum_all};
use dni_kernels::reference::elementwise as reference;
use dni_kernels::testing::{assert_close, gpu, Lcg};
use dni_kernels::{grid_1d, Encoder, Gpu, Tensor};

/// Odd sizes, and one past 256 workgroups.
const SIZES: &[usize] = &[1, 3, 17, 127, 300, 65_537];
const ACTS: [Activation; 4] = [
    Activation::Identity,
    Activation::Relu,
    Activation::Tanh,
    Activation::Sigmoid,
];

fn t(gpu: &Gpu, data: &[f32]) -> Tensor {
    Tensor::from_slice(gpu, &[data.len()], data).unwrap()
}

/// Records with `f`, submits, and reads `out` back.
fn run(gpu: &Gpu, out: &Tensor, f: impl FnOnce(&mut Encoder)) -> Vec<f32> {
    let mut enc = gpu.encoder();
    f(&mut enc);
    assert!(enc.dispatches() > 0);
    gpu.submit(enc);
    gpu.read(out).unwrap()
}

fn data(n: usize, seed: u64, amp: f32) -> Vec<f32> {
    Lcg::new(seed).vec(n).iter().map(|v| v * amp).collect()
}

#[test]
fn activate_matches_reference() {
    let gpu = gpu();
    for &n in SIZES {
        // Exact zeros too, where relu's derivative switches.
        let mut x = data(n, n as u64, 4.0);
        x[0] = 0.0;
        for act in ACTS {
            let gx = t(&gpu, &x);
            let gy = t(&gpu, &vec![f32::NAN; n]);
            let got = run(&gpu, &gy, |e| activate(e, act, &gx, &gy).unwrap());
            let want: Vec<f32> = x.iter().map(|&v| reference::act(act, v)).collect();
            assert_close(&got, &want, 1e-5, 1e-6, &format!("activate {act:?} n={n}"));
        }
    }
}

#[test]
fn activate_backward_matches_reference() {
    let gpu = gpu();
    for &n in SIZES {
        let mut x = data(n, 7 + n as u64, 3.0);
        x[0] = 0.0;
        let dy = data(n, 8 + n as u64, 1.0);
        let dx0 = data(n, 9 + n as u64, 1.0);
        for act in ACTS {
            let y: Vec<f32> = x.iter().map(|&v| reference::act(act, v)).collect();
            for accumulate in [false, true] {
                let (gy, gdy) = (t(&gpu, &y), t(&gpu, &dy));
                let gdx = t(&gpu, &dx0);
                let got = run(&gpu, &gdx, |e| {
                    activate_backward(e, act, &gy, &gdy, &gdx, accumulate).unwrap()
                });
                let want: Vec<f32> = (0..n)
                    .map(|i| {
                        let g = dy[i] * reference::act_grad_from_output(act, y[i]);
                        if accumulate {
                            g + dx0[i]
                        } else {
                            g
                        }
                    })
                    .collect();
                let what = format!("activate_backward {act:?} accumulate={accumulate} n={n}");
                assert_close(&got, &want, 1e-5, 1e-6, &what);
            }
        }
    }
}

#[test]
fn activation_derivatives_match_finite_differences() {
    // The reference derivative (from the output) against central differences of the activation.
    let h = 1e-3f64;
    for act in ACTS {
        for &x in &[-2.5f32, -0.7, 0.3, 1.9] {
            let f = |v: f64| reference::act(act, v as f32) as f64;
            let fd = (f(x as f64 + h) - f(x as f64 - h)) / (2.0 * h);
            let g = reference::act_grad_from_output(act, reference::act(act, x)) as f64;
            assert!((g - fd).abs() < 1e-3, "{act:?}'({x}) = {g}, FD {fd}");
        }
    }
}

#[test]
fn axpy_axpby_mul_match_reference() {
    let gpu = gpu();
    for &n in SIZES {
        let x = data(n, 1 + n as u64, 2.0);
        let y = data(n, 2 + n as u64, 2.0);
        let (gx, gy0) = (t(&gpu, &x), t(&gpu, &y));

        let gy = t(&gpu, &y);
        let got = run(&gpu, &gy, |e| axpy(e, -0.75, &gx, &gy).unwrap());
        let want: Vec<f32> = (0..n).map(|i| y[i] - 0.75 * x[i]).collect();
        assert_close(&got, &want, 1e-6, 1e-6, &format!("axpy n={n}"));

        let gz = t(&gpu, &vec![f32::NAN; n]);
        let got = run(&gpu, &gz, |e| axpby(e, 1.5, &gx, -0.25, &gy0, &gz).unwrap());
        let want: Vec<f32> = (0..n).map(|i| 1.5 * x[i] - 0.25 * y[i]).collect();
        assert_close(&got, &want, 1e-6, 1e-6, &format!("axpby n={n}"));

        let got = run(&gpu, &gz, |e| mul(e, -2.0, &gx, &gy0, &gz).unwrap());
        let want: Vec<f32> = (0..n).map(|i| -2.0 * x[i] * y[i]).collect();
        assert_close(&got, &want, 1e-6, 1e-6, &format!("mul n={n}"));
    }
}

#[test]
fn scale_and_fill_match_reference() {
    let gpu = gpu();
    for &n in SIZES {
        let x = data(n, 3 + n as u64, 2.0);
        let gx = t(&gpu, &x);
        let got = run(&gpu, &gx, |e| scale(e, -0.5, &gx).unwrap());
        let want: Vec<f32> = x.iter().map(|v| -0.5 * v).collect();
        assert_close(&got, &want, 0.0, 0.0, &format!("scale n={n}"));
        let got = run(&gpu, &gx, |e| fill(e, 3.25, &gx).unwrap());
        assert!(got.iter().all(|&v| v == 3.25), "fill n={n}");
    }
}

#[test]
fn grid_1d_folding_covers_every_element() {
    // Past 65535 workgroups of 256 the grid folds into two dimensions; every element must still be
    // touched exactly once (scale after fill would show a double or a missed visit).
    let gpu = gpu();
    let n = 65_536 * 256 + 3;
    let groups = grid_1d(n, 256);
    assert!(groups[1] > 1, "{groups:?} did not fold");
    let limit = gpu.limits().max_storage_buffer_binding_size as usize;
    assert!(
        n * 4 <= limit,
        "adapter binding limit {limit} too small for this test"
    );
    let y = Tensor::zeros(&gpu, &[n]).unwrap();
    let got = run(&gpu, &y, |e| {
        fill(e, 2.0, &y).unwrap();
        scale(e, 1.5, &y).unwrap();
    });
    let bad = got.iter().position(|&v| v != 3.0);
    assert_eq!(
        bad,
        None,
        "element {bad:?} of {n} is {:?}",
        bad.map(|i| got[i])
    );
}

#[test]
fn col_sum_matches_reference() {
    let gpu = gpu();
    for &(rows, cols) in &[(1, 1), (3, 17), (127, 3), (300, 65), (5, 300), (1, 1000)] {
        let x = data(rows * cols, (rows * cols) as u64, 1.0);
        let out0 = data(cols, 5, 1.0);
        let gx = Tensor::from_slice(&gpu, &[rows, cols], &x).unwrap();
        let sums = reference::col_sum(&x, rows, cols);
        for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25)] {
            let gout = t(&gpu, &out0);
            let got = run(&gpu, &gout, |e| {
                col_sum(e, &gx, &gout, alpha, beta).unwrap()
            });
            let want: Vec<f32> = (0..cols)
                .map(|j| alpha * sums[j] + beta * out0[j])
                .collect();
            let what = format!("col_sum {rows}x{cols} alpha={alpha} beta={beta}");
            assert_close(&got, &want, 1e-5, 1e-5 * (rows as f32).sqrt(), &what);
        }
    }
}

#[test]
fn sum_all_matches_reference() {
    let gpu = gpu();
    for &n in SIZES {
        let x = data(n, 11 + n as u64, 1.0);
        let gx = t(&gpu, &x);
        let sum: f64 = x.iter().map(|&v| v as f64).sum();
        for (alpha, beta) in [(1.0f32, 0.0f32), (0.5, 1.0), (-1.0, -0.5)] {
            let gout = t(&gpu, &[2.0]);
            let got = run(&gpu, &gout, |e| {
                sum_all(e, &gx, &gout, alpha, beta).unwrap()
            });
            let want = (alpha as f64 * sum + beta as f64 * 2.0) as f32;
            let what = format!("sum_all n={n} alpha={alpha} beta={beta}");
            assert_close(&got, &[want], 1e-5, 1e-5 + 1e-7 * n as f32, &what);
        }
    }
}

#[test]
fn swap_leading_axes_matches_reference_and_undoes_itself() {
    let gpu = gpu();
    // Odd shapes, one of a single step, and one past 256 workgroups.
    for [a, b, c] in [[3, 5, 7], [1, 4, 2], [7, 1, 3], [2, 3, 1], [129, 33, 17]] {
        let x = data(a * b * c, (a * 100 + b) as u64, 1.0);
        let xt = t(&gpu, &x);
        let y = Tensor::zeros(&gpu, &[b, a, c]).unwrap();
        let got = run(&gpu, &y, |e| {
            swap_leading_axes(e, &xt, [a, b, c], &y).unwrap()
        });
        assert_eq!(got, reference::swap_leading(&x, a, b, c), "[{a}, {b}, {c}]");
        let back = Tensor::zeros(&gpu, &[a, b, c]).unwrap();
        let again = run(&gpu, &back, |e| {
            swap_leading_axes(e, &y, [b, a, c], &back).unwrap()
        });
        assert_eq!(again, x, "[{a}, {b}, {c}] and back");
    }
    // Sizes that do not hold the shape, and a tensor bound as both operands, are errors.
    let x = Tensor::zeros(&gpu, &[6]).unwrap();
    let y = Tensor::zeros(&gpu, &[5]).unwrap();
    let mut enc = gpu.encoder();
    assert!(swap_leading_axes(&mut enc, &x, [2, 3, 1], &y).is_err());
    assert!(swap_leading_axes(&mut enc, &x, [2, 3, 1], &x).is_err());
    assert!(swap_leading_axes(&mut enc, &x, [usize::MAX, 2, 1], &x).is_err());
    assert_eq!(enc.dispatches(), 0);
}

#[test]
fn mismatched_sizes_are_errors() {
    let gpu = gpu();
    let a = Tensor::zeros(&gpu, &[5]).unwrap();
    let b = Tensor::zeros(&gpu, &[6]).unwrap();
    let c = Tensor::zeros(&gpu, &[5]).unwrap();
    let m = Tensor::zeros(&gpu, &[2, 3]).unwrap();
    let mut enc = gpu.encoder();
    assert!(activate(&mut enc, Activation::Relu, &a, &b).is_err());
    assert!(activate_backward(&mut enc, Activation::Tanh, &a, &b, &c, false).is_err());
    assert!(axpy(&mut enc, 1.0, &a, &b).is_err());
    assert!(axpby(&mut enc, 1.0, &a, 1.0, &b, &c).is_err());
    assert!(mul(&mut enc, 1.0, &a, &c, &b).is_err());
    assert!(col_sum(&mut enc, &m, &a, 1.0, 0.0).is_err());
    assert!(sum_all(&mut enc, &m, &a, 1.0, 0.0).is_err());
    assert_eq!(enc.dispatches(), 0);
}

#[test]
fn f16_host_data_uploads_as_f32() {
    let gpu = dni_kernels::testing::gpu();
    let src = [0.5f32, -1.25, 3.0, 1.0e-3, 65504.0];
    let halves: Vec<half::f16> = src.iter().map(|&x| half::f16::from_f32(x)).collect();
    let t = dni_kernels::Tensor::from_f16(&gpu, &[5], &halves).unwrap();
    let back = gpu.read(&t).unwrap();
    let want: Vec<f32> = halves.iter().map(|h| h.to_f32()).collect();
    assert_eq!(back, want);
    assert!(
        (back[3] - 1.0e-3).abs() < 1e-6,
        "f16 rounding of 1e-3: {}",
        back[3]
    );
    eprintln!("SHADER_F16 on this adapter: {}", gpu.has_shader_f16());
}
