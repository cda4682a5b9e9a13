//! GPU matmul against the CPU reference at odd shapes, both variants, every transpose.

use dni_kernels::ops::matmul::{matmul, Matmul, MatmulVariant};
use dni_kernels::reference;
use dni_kernels::testing::{assert_close, gpu, Lcg};
use dni_kernels::Tensor;

#[allow(clippy::too_many_arguments)]
fn check(
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    bias: bool,
    beta: bool,
    v: MatmulVariant,
) {
    let gpu = gpu();
    let mut rng = Lcg::new((m * 31 + n * 7 + k) as u64);
    let a = rng.vec(m * k);
    let b = rng.vec(k * n);
    let bias_v = rng.vec(n);
    let c0 = rng.vec(m * n);
    let ash = if ta { [k, m] } else { [m, k] };
    let bsh = if tb { [n, k] } else { [k, n] };
    let ga = Tensor::from_slice(&gpu, &ash, &a).unwrap();
    let gb = Tensor::from_slice(&gpu, &bsh, &b).unwrap();
    let gbias = Tensor::from_slice(&gpu, &[n], &bias_v).unwrap();
    let gc = Tensor::from_slice(&gpu, &[m, n], &c0).unwrap();
    let mut o = Matmul::default().variant(v).alpha(0.5);
    o.trans_a = ta;
    o.trans_b = tb;
    if bias {
        o = o.bias(&gbias);
    }
    if beta {
        o = o.accumulate(0.75);
    }
    let mut enc = gpu.encoder();
    matmul(&mut enc, &ga, &gb, &gc, o).unwrap();
    gpu.submit(enc);
    let got = gpu.read(&gc).unwrap();
    let mut want = c0.clone();
    reference::matmul::matmul(
        &a,
        &b,
        &mut want,
        m,
        n,
        k,
        ta,
        tb,
        0.5,
        bias.then_some(&bias_v[..]),
        beta.then_some(0.75),
    );
    let what = format!("matmul {m}x{k}x{n} ta={ta} tb={tb} bias={bias} beta={beta} {v:?}");
    assert_close(&got, &want, 1e-4, 1e-4 * (k as f32).sqrt(), &what);
}

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (3, 17, 5),
    (17, 3, 127),
    (127, 33, 1),
    (300, 65, 17),
    (70, 130, 67), // larger than a 64x64 tile in every dimension
];

#[test]
fn register_variant_matches_reference() {
    for &(m, n, k) in SHAPES {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            check(m, n, k, ta, tb, false, false, MatmulVariant::Register);
        }
        check(m, n, k, false, false, true, true, MatmulVariant::Register);
    }
}

#[test]
fn tiled_variant_matches_reference() {
    for &(m, n, k) in SHAPES {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            check(m, n, k, ta, tb, false, false, MatmulVariant::Tiled);
        }
        check(m, n, k, true, false, true, true, MatmulVariant::Tiled);
    }
}

#[test]
fn subgroup_variant_matches_reference() {
    // Falls back to the register kernel where subgroups of 8 are unavailable; say which ran.
    eprintln!("subgroup size: {:?}", gpu().subgroup_size());
    for &(m, n, k) in SHAPES.iter().chain(&[(9, 129, 3), (300, 257, 40)]) {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            check(m, n, k, ta, tb, false, false, MatmulVariant::Subgroup8);
        }
        check(m, n, k, true, true, true, true, MatmulVariant::Subgroup8);
    }
}

#[test]
fn shape_mismatch_is_an_error() {
    let gpu = gpu();
    let a = Tensor::zeros(&gpu, &[3, 4]).unwrap();
    let b = Tensor::zeros(&gpu, &[5, 2]).unwrap();
    let c = Tensor::zeros(&gpu, &[3, 2]).unwrap();
    let mut enc = gpu.encoder();
    let err = matmul(&mut enc, &a, &b, &c, Matmul::default()).unwrap_err();
    assert!(err.to_string().contains("matmul"), "{err}");
    let c_bad = Tensor::zeros(&gpu, &[2, 2]).unwrap();
    let b_ok = Tensor::zeros(&gpu, &[4, 2]).unwrap();
    assert!(matmul(&mut enc, &a, &b_ok, &c_bad, Matmul::default()).is_err());
}
