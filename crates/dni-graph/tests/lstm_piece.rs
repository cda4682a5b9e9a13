//! `lstm::Lstm`, the public LSTM piece: it carries its state from window to window, its backward
//! returns the gradient at the window's first state for a loss on the outputs and on the last state
//! (checked by central differences at an odd shape), and it refuses data of the wrong shape. Its
//! initial values are `LstmInit`'s, which the fused recurrent kernels pack too.

use dni_graph::lstm::{Lstm, LstmInit};
use dni_kernels::testing::{gpu, Lcg};
use dni_kernels::{Gpu, Tensor};
use dni_tasks::Rng;

const INPUT: usize = 3;
const HIDDEN: usize = 5;
const BATCH: usize = 2;
const STEPS: usize = 3;

fn lstm(gpu: &Gpu) -> Lstm {
    Lstm::new(gpu, INPUT, HIDDEN, BATCH, STEPS, &mut Rng::new(4)).unwrap()
}

/// `L(s0) = Σ dh·h_seq + Σ ds_last·s_last` for a forward from `s0`, in f64.
fn loss(gpu: &Gpu, net: &Lstm, x: &Tensor, s0: &[f32], dh: &[f32], ds_last: &[f32]) -> f64 {
    net.state().write(gpu, s0).unwrap();
    let mut enc = gpu.encoder();
    net.forward(&mut enc, x).unwrap();
    gpu.submit(enc);
    let v = gpu.read_many(&[net.h_seq(), net.last_state()]).unwrap();
    let dot = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(p, q)| *p as f64 * *q as f64)
            .sum::<f64>()
    };
    dot(&v[0], dh) + dot(&v[1], ds_last)
}

#[test]
fn backward_gives_the_gradient_at_the_first_state() {
    let gpu = gpu();
    let net = lstm(&gpu);
    let mut lcg = Lcg::new(11);
    let x = Tensor::from_slice(
        &gpu,
        &[STEPS, BATCH, INPUT],
        &lcg.vec(STEPS * BATCH * INPUT),
    )
    .unwrap();
    let s0 = lcg.vec(BATCH * 2 * HIDDEN);
    let dh = lcg.vec(STEPS * BATCH * HIDDEN);
    let ds_last = lcg.vec(BATCH * 2 * HIDDEN);
    let dh_rows = Tensor::from_slice(&gpu, &[STEPS * BATCH, HIDDEN], &dh).unwrap();
    let ds_last_t = Tensor::from_slice(&gpu, &[BATCH, 2 * HIDDEN], &ds_last).unwrap();

    net.state().write(&gpu, &s0).unwrap();
    let mut enc = gpu.encoder();
    net.forward(&mut enc, &x).unwrap();
    let ds0 = net
        .backward(&mut enc, &x, &dh_rows, Some(&ds_last_t), None)
        .unwrap();
    gpu.submit(enc);
    let got = gpu.read(ds0).unwrap();

    let eps = 1e-2f32;
    for k in 0..s0.len() {
        let (mut up, mut down) = (s0.clone(), s0.clone());
        up[k] += eps;
        down[k] -= eps;
        let fd = (loss(&gpu, &net, &x, &up, &dh, &ds_last)
            - loss(&gpu, &net, &x, &down, &dh, &ds_last))
            / (2.0 * eps as f64);
        assert!(
            (got[k] as f64 - fd).abs() <= 2e-3 + 2e-2 * fd.abs(),
            "dL/ds0[{k}]: backward {} against central differences {fd}",
            got[k]
        );
    }
    // Without a last-state gradient the result changes: ds_last is really used.
    let mut enc = gpu.encoder();
    net.state().write(&gpu, &s0).unwrap();
    net.forward(&mut enc, &x).unwrap();
    let plain = net.backward(&mut enc, &x, &dh_rows, None, None).unwrap();
    gpu.submit(enc);
    let plain = gpu.read(plain).unwrap();
    assert!(plain.iter().zip(&got).any(|(a, b)| (a - b).abs() > 1e-4));
}

#[test]
fn the_state_is_carried_until_reset() {
    let gpu = gpu();
    let net = lstm(&gpu);
    let mut lcg = Lcg::new(5);
    let x = Tensor::from_slice(
        &gpu,
        &[STEPS, BATCH, INPUT],
        &lcg.vec(STEPS * BATCH * INPUT),
    )
    .unwrap();
    // A fresh LSTM starts from h = c = 0.
    assert!(gpu.read(net.state()).unwrap().iter().all(|v| *v == 0.0));
    let mut enc = gpu.encoder();
    net.forward(&mut enc, &x).unwrap();
    net.carry(&mut enc).unwrap();
    gpu.submit(enc);
    let carried = gpu.read(net.state()).unwrap();
    assert_eq!(carried, gpu.read(net.last_state()).unwrap());
    assert!(carried.iter().any(|v| *v != 0.0));
    // The next window starts where the last one ended: its outputs differ from a window from zero.
    let mut enc = gpu.encoder();
    net.forward(&mut enc, &x).unwrap();
    gpu.submit(enc);
    let from_carried = gpu.read(net.h_seq()).unwrap();
    let mut enc = gpu.encoder();
    net.reset(&mut enc);
    net.forward(&mut enc, &x).unwrap();
    gpu.submit(enc);
    assert!(gpu.read(net.state()).unwrap().iter().all(|v| *v == 0.0));
    let from_zero = gpu.read(net.h_seq()).unwrap();
    assert_ne!(from_carried, from_zero);
    // The parameters are named.
    let names: Vec<&str> = net.params().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["w_x", "w_h", "bias"]);
}

#[test]
fn data_of_the_wrong_shape_is_an_error() {
    let gpu = gpu();
    let net = lstm(&gpu);
    let x = Tensor::zeros(&gpu, &[STEPS, BATCH, INPUT + 1]).unwrap();
    let mut enc = gpu.encoder();
    let err = net.forward(&mut enc, &x).unwrap_err().to_string();
    assert!(err.contains('x'), "{err}");
    assert!(Lstm::new(&gpu, INPUT, 0, BATCH, STEPS, &mut Rng::new(1)).is_err());
    let huge = Lstm::new(&gpu, usize::MAX / 4, HIDDEN, BATCH, STEPS, &mut Rng::new(1));
    let err = huge
        .err()
        .expect("an input too wide to address")
        .to_string();
    assert!(err.contains("input"), "{err}");
}

#[test]
fn the_piece_starts_from_its_init() {
    let gpu = gpu();
    let net = lstm(&gpu);
    let init = LstmInit::draw(&mut Rng::new(4), INPUT, HIDDEN).unwrap();
    for ((name, param), (init_name, values)) in net.params().into_iter().zip(init.named()) {
        assert_eq!(name, init_name);
        assert_eq!(gpu.read(&param.value).unwrap(), values, "{name}");
    }
    // Weights within ±1/√H and not all equal; the forget gate's bias (the second quarter) at 1.
    let bound = 1.0 / (HIDDEN as f32).sqrt();
    for w in [&init.w_x, &init.w_h] {
        assert!(w.iter().all(|v| v.abs() <= bound));
        assert!(w.iter().any(|v| *v != w[0]));
    }
    let h = HIDDEN;
    assert!(init.bias[h..2 * h].iter().all(|&b| b == 1.0));
    assert!(init.bias[..h]
        .iter()
        .chain(&init.bias[2 * h..])
        .all(|&b| b == 0.0));
    // A size whose weight count overflows is an error, not a panic or a huge allocation.
    assert!(LstmInit::draw(&mut Rng::new(4), usize::MAX / 2, 3).is_err());
    assert!(LstmInit::draw(&mut Rng::new(4), 1, usize::MAX / 2).is_err());
}
