//! Optimisers: GPU Adam and SGD-momentum against the CPU reference over several steps (the step
//! counter advancing on the GPU), independent optimisers, and learning-rate changes.

use dni_kernels::ops::optim::{OptimConfig, Optimizer, Param};
use dni_kernels::reference::optim as reference;
use dni_kernels::testing::{assert_close, gpu, Lcg};
use dni_kernels::{Gpu, Tensor};

/// Parameter sizes: odd, and one past several 256-wide workgroups.
const SIZES: &[&[usize]] = &[&[1], &[3], &[17, 3], &[127], &[300, 7]];

/// The host mirror of one parameter.
struct Mirror {
    value: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
}

fn make(gpu: &Gpu, rng: &mut Lcg, shape: &[usize]) -> (Param, Mirror) {
    let n: usize = shape.iter().product();
    let value = rng.vec(n);
    let p = Param::new(gpu, Tensor::from_slice(gpu, shape, &value).unwrap()).unwrap();
    let mirror = Mirror {
        value,
        m: vec![0.0; n],
        v: vec![0.0; n],
    };
    (p, mirror)
}

/// Writes fresh gradients, records one step on the GPU and on the host mirrors.
fn step_both(
    gpu: &Gpu,
    rng: &mut Lcg,
    opt: &Optimizer,
    t: u64,
    params: &[Param],
    mirrors: &mut [Mirror],
) {
    for (p, m) in params.iter().zip(mirrors.iter_mut()) {
        // Mixed magnitudes, so Adam's normalisation and eps both matter.
        let g: Vec<f32> = rng
            .vec(p.grad.len())
            .iter()
            .enumerate()
            .map(|(i, g)| if i % 5 == 0 { g * 1e-3 } else { *g })
            .collect();
        p.grad.write(gpu, &g).unwrap();
        reference::step(opt.config(), t, &mut m.value, &g, &mut m.m, &mut m.v);
    }
    let mut enc = gpu.encoder();
    let refs: Vec<&Param> = params.iter().collect();
    opt.step(&mut enc, &refs).unwrap();
    assert_eq!(
        enc.dispatches(),
        1 + params.len(),
        "one advance plus one update per param"
    );
    gpu.submit(enc);
}

fn compare(gpu: &Gpu, params: &[Param], mirrors: &[Mirror], what: &str, adam: bool) {
    for (i, (p, m)) in params.iter().zip(mirrors).enumerate() {
        let (sm, sv) = p.state();
        let got = gpu.read_many(&[&p.value, sm, sv]).unwrap();
        assert_close(
            &got[0],
            &m.value,
            1e-5,
            1e-6,
            &format!("{what} param {i} value"),
        );
        assert_close(
            &got[1],
            &m.m,
            1e-5,
            1e-6,
            &format!("{what} param {i} first moment"),
        );
        if adam {
            assert_close(
                &got[2],
                &m.v,
                1e-5,
                1e-9,
                &format!("{what} param {i} second moment"),
            );
        }
    }
}

fn run(cfg: OptimConfig, steps: u64, seed: u64) {
    let gpu = gpu();
    let mut rng = Lcg::new(seed);
    let (params, mut mirrors): (Vec<Param>, Vec<Mirror>) =
        SIZES.iter().map(|s| make(&gpu, &mut rng, s)).unzip();
    let start: Vec<Vec<f32>> = mirrors.iter().map(|m| m.value.clone()).collect();
    let opt = Optimizer::new(&gpu, cfg).unwrap();
    assert_eq!(opt.steps(&gpu).unwrap(), 0);
    for t in 1..=steps {
        step_both(&gpu, &mut rng, &opt, t, &params, &mut mirrors);
        let adam = matches!(cfg, OptimConfig::Adam { .. });
        compare(&gpu, &params, &mirrors, &format!("{cfg:?} step {t}"), adam);
    }
    assert_eq!(opt.steps(&gpu).unwrap(), steps, "GPU step counter");
    // The comparison means something only if the parameters moved well past the tolerance.
    let moved = mirrors
        .iter()
        .zip(&start)
        .flat_map(|(m, s)| m.value.iter().zip(s).map(|(a, b)| (a - b).abs()))
        .fold(0.0f32, f32::max);
    assert!(moved > 1e-2, "parameters moved at most {moved}");
}

#[test]
fn adam_matches_reference_over_steps() {
    run(OptimConfig::adam(1e-2), 5, 1);
    run(
        OptimConfig::Adam {
            lr: 3e-3,
            beta1: 0.5,
            beta2: 0.9,
            eps: 1e-3,
        },
        5,
        2,
    );
}

#[test]
fn sgd_momentum_matches_reference_over_steps() {
    run(OptimConfig::sgd(0.1, 0.9), 5, 3);
    run(OptimConfig::sgd(0.05, 0.0), 3, 4);
}

#[test]
fn two_optimizers_keep_their_own_counters() {
    let gpu = gpu();
    let mut rng = Lcg::new(10);
    let (pa, mut ma) = make(&gpu, &mut rng, &[33]);
    let (pb, mut mb) = make(&gpu, &mut rng, &[33]);
    let a = Optimizer::new(&gpu, OptimConfig::adam(1e-2)).unwrap();
    let b = Optimizer::new(&gpu, OptimConfig::adam(3e-2)).unwrap();
    let (pa, pb) = ([pa], [pb]);
    // a steps every time, b every other time: bias corrections differ per optimiser.
    let mut tb = 0;
    for ta in 1..=6u64 {
        step_both(&gpu, &mut rng, &a, ta, &pa, std::slice::from_mut(&mut ma));
        if ta % 2 == 0 {
            tb += 1;
            step_both(&gpu, &mut rng, &b, tb, &pb, std::slice::from_mut(&mut mb));
        }
    }
    assert_eq!(a.steps(&gpu).unwrap(), 6);
    assert_eq!(b.steps(&gpu).unwrap(), 3);
    compare(&gpu, &pa, std::slice::from_ref(&ma), "optimizer a", true);
    compare(&gpu, &pb, std::slice::from_ref(&mb), "optimizer b", true);
}

#[test]
fn set_lr_takes_effect_from_the_next_submission() {
    for cfg in [OptimConfig::sgd(0.1, 0.5), OptimConfig::adam(1e-2)] {
        let gpu = gpu();
        let mut rng = Lcg::new(12);
        let (p, mut m) = make(&gpu, &mut rng, &[19]);
        let opt = Optimizer::new(&gpu, cfg).unwrap();
        let p = [p];
        for t in 1..=4u64 {
            if t == 3 {
                opt.set_lr(&gpu, 1e-3).unwrap();
                assert_eq!(opt.config().lr(), 1e-3);
            }
            // The host mirror uses opt.config(), so it follows the new rate from step 3 on.
            step_both(&gpu, &mut rng, &opt, t, &p, std::slice::from_mut(&mut m));
            compare(
                &gpu,
                &p,
                std::slice::from_ref(&m),
                &format!("{cfg:?} set_lr step {t}"),
                true,
            );
        }
        // A rate that was not applied would leave the values where the old rate puts them.
        let mut stale = Lcg::new(12);
        let (_, mut old) = make(&gpu, &mut stale, &[19]);
        for t in 1..=4u64 {
            let g: Vec<f32> = stale
                .vec(19)
                .iter()
                .enumerate()
                .map(|(i, g)| if i % 5 == 0 { g * 1e-3 } else { *g })
                .collect();
            reference::step(cfg, t, &mut old.value, &g, &mut old.m, &mut old.v);
        }
        let got = gpu.read(&p[0].value).unwrap();
        let differs = got
            .iter()
            .zip(&old.value)
            .any(|(a, b)| (a - b).abs() > 1e-4);
        assert!(differs, "{cfg:?}: the new learning rate made no difference");
    }
}

#[test]
fn param_starts_at_zero_and_zero_grad_clears() {
    let gpu = gpu();
    let p = Param::new(&gpu, Tensor::from_slice(&gpu, &[2, 3], &[1.0; 6]).unwrap()).unwrap();
    assert_eq!(p.grad.shape(), &[2, 3]);
    let (m, v) = p.state();
    assert_eq!(
        gpu.read_many(&[&p.grad, m, v]).unwrap(),
        vec![vec![0.0; 6]; 3]
    );
    p.grad.write(&gpu, &[2.0; 6]).unwrap();
    let opt = Optimizer::new(&gpu, OptimConfig::sgd(0.5, 0.9)).unwrap();
    let mut enc = gpu.encoder();
    opt.step(&mut enc, &[&p]).unwrap();
    p.zero_grad(&mut enc);
    opt.step(&mut enc, &[&p]).unwrap(); // zero gradient: the velocity alone moves it
    gpu.submit(enc);
    let got = gpu.read_many(&[&p.value, &p.grad, p.state().0]).unwrap();
    // step 1: vel 2, value 1 - 1 = 0; step 2: vel 1.8, value -0.9.
    assert_close(&got[0], &[-0.9; 6], 1e-6, 0.0, "value");
    assert_eq!(got[1], vec![0.0; 6]);
    assert_close(&got[2], &[1.8; 6], 1e-6, 0.0, "velocity");
    let mut enc = gpu.encoder();
    p.reset_state(&mut enc);
    gpu.submit(enc);
    assert_eq!(gpu.read(p.state().0).unwrap(), vec![0.0; 6]);
}

#[test]
fn bad_configs_and_mismatched_params_are_errors() {
    let gpu = gpu();
    let bad = [
        OptimConfig::Adam {
            lr: 1e-3,
            beta1: 1.0,
            beta2: 0.999,
            eps: 1e-8,
        },
        OptimConfig::Adam {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 0.0,
        },
        OptimConfig::sgd(f32::NAN, 0.9),
        OptimConfig::sgd(0.1, 1.5),
        // 1 never forgets: the CLI and the library refuse it alike.
        OptimConfig::sgd(0.1, 1.0),
    ];
    for cfg in bad {
        assert!(Optimizer::new(&gpu, cfg).is_err(), "{cfg:?} accepted");
    }
    let opt = Optimizer::new(&gpu, OptimConfig::adam(1e-3)).unwrap();
    let mut p = Param::new(&gpu, Tensor::zeros(&gpu, &[4]).unwrap()).unwrap();
    p.grad = Tensor::zeros(&gpu, &[5]).unwrap();
    let mut enc = gpu.encoder();
    assert!(
        opt.step(&mut enc, &[&p]).is_err(),
        "gradient of another size"
    );
    p.grad = p.value.clone();
    assert!(
        opt.step(&mut enc, &[&p]).is_err(),
        "gradient aliasing the value"
    );
    assert_eq!(enc.dispatches(), 0);
    assert!(opt.set_lr(&gpu, f32::INFINITY).is_err());
    assert_eq!(opt.config(), OptimConfig::adam(1e-3));
}

#[test]
fn set_steps_resumes_the_counter_and_bias_corrections() {
    let gpu = gpu();
    let mut rng = Lcg::new(30);
    let (p, mut m) = make(&gpu, &mut rng, &[40]);
    let cfg = OptimConfig::Adam {
        lr: 1e-2,
        beta1: 0.8,
        beta2: 0.9,
        eps: 1e-8,
    };
    let opt = Optimizer::new(&gpu, cfg).unwrap();
    opt.set_steps(&gpu, 10);
    assert_eq!(opt.steps(&gpu).unwrap(), 10);
    let p = [p];
    for t in 11..=12u64 {
        step_both(&gpu, &mut rng, &opt, t, &p, std::slice::from_mut(&mut m));
    }
    compare(
        &gpu,
        &p,
        std::slice::from_ref(&m),
        "resumed at step 10",
        true,
    );
    assert_eq!(opt.steps(&gpu).unwrap(), 12);
}

/// Global-norm clipping: every gradient of the step is scaled by clip / ‖g‖ (the norm over all the
/// params together) when that norm exceeds the threshold, and left alone below it; both rules.
#[test]
fn global_norm_clipping_matches_reference() {
    let gpu = gpu();
    for cfg in [OptimConfig::sgd(0.1, 0.9), OptimConfig::adam(0.01)] {
        for (clip, scale) in [(0.5f32, 1.0f32), (1e3, 1.0), (0.5, 1e-3)] {
            let mut rng = Lcg::new(11);
            let opt = Optimizer::with_clip(&gpu, cfg, Some(clip)).unwrap();
            assert_eq!(opt.clip(), Some(clip));
            let (params, mut mirrors): (Vec<Param>, Vec<Mirror>) =
                SIZES.iter().map(|s| make(&gpu, &mut rng, s)).unzip();
            for t in 1..=3u64 {
                let grads: Vec<Vec<f32>> = params
                    .iter()
                    .map(|p| rng.vec(p.grad.len()).iter().map(|g| g * scale).collect())
                    .collect();
                let norm = grads
                    .iter()
                    .flatten()
                    .map(|g| (*g as f64) * (*g as f64))
                    .sum::<f64>()
                    .sqrt() as f32;
                let factor = if norm > clip { clip / norm } else { 1.0 };
                for ((p, m), g) in params.iter().zip(mirrors.iter_mut()).zip(&grads) {
                    p.grad.write(&gpu, g).unwrap();
                    let clipped: Vec<f32> = g.iter().map(|v| v * factor).collect();
                    reference::step(cfg, t, &mut m.value, &clipped, &mut m.m, &mut m.v);
                }
                let mut enc = gpu.encoder();
                let refs: Vec<&Param> = params.iter().collect();
                opt.step(&mut enc, &refs).unwrap();
                assert_eq!(
                    enc.dispatches(),
                    1 + 2 * params.len(),
                    "advance, a norm dispatch and an update per param"
                );
                gpu.submit(enc);
            }
            let adam = matches!(cfg, OptimConfig::Adam { .. });
            compare(
                &gpu,
                &params,
                &mirrors,
                &format!("clip {clip}, grads ×{scale}"),
                adam,
            );
        }
    }
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(Optimizer::with_clip(&gpu, OptimConfig::adam(0.1), Some(bad)).is_err());
    }
}
