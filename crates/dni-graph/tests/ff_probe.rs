//! The feed-forward SG fidelity probe (`FfNet::probe_sg`): its scores, its units, the gradient it
//! scores against, and that probing leaves training untouched.

use dni_graph::ff::{FfNet, FfSpec, InterfaceSpec, Schedule, SgSpec};
use dni_kernels::ops::optim::OptimConfig;
use dni_kernels::testing::{gpu, Lcg};

const INPUT: usize = 12;
const CLASSES: usize = 5;
const ROWS: usize = 16;

fn spec(optim: OptimConfig) -> FfSpec {
    let mut s = FfSpec::backprop(INPUT, vec![24, 20], CLASSES, ROWS, optim);
    s.seed = 7;
    s
}

fn batch(seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut rng = Lcg::new(seed);
    let x = rng.vec(ROWS * INPUT);
    let labels = (0..ROWS)
        .map(|_| (rng.next_u64() % CLASSES as u64) as u32)
        .collect();
    (x, labels)
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() < 1e-4, "{what}: {a} vs {b}");
}

#[test]
fn backprop_delivers_the_true_gradient_and_no_backprop_nothing() {
    let gpu = gpu();
    let (x, y) = batch(1);
    let mut bp = FfNet::new(&gpu, spec(OptimConfig::adam(1e-3))).unwrap();
    let probes = bp.probe_sg(&x, &y).unwrap();
    assert_eq!(probes.len(), 2, "one score per interface");
    for p in &probes {
        close(p.delivered.cosine, 1.0, "backprop cosine");
        close(p.delivered.explained, 1.0, "backprop explained");
        close(p.update.cosine, 1.0, "backprop update cosine");
        close(p.update.explained, 1.0, "backprop update explained");
        assert!(p.delivered.true_rms > 0.0, "{p:?}");
        assert!(p.sg.is_none(), "no SG model");
    }
    let mut nobp = FfNet::new(&gpu, spec(OptimConfig::adam(1e-3)).no_backprop()).unwrap();
    for p in nobp.probe_sg(&x, &y).unwrap() {
        assert_eq!(p.delivered.cosine, 0.0);
        assert_eq!(p.delivered.explained, 0.0);
        assert_eq!(p.update.cosine, 0.0, "no gradient, no update");
        assert!(p.update.true_rms > 0.0, "backprop would update it");
    }
}

/// BP(λ) delivers `λ·δ + (1 − λ)·M(h)/B`; with the zero-initialised SG that is `λ·δ`, which points
/// exactly along `δ` and explains `1 − (1 − λ)²` of it: this checks the mix and its units.
#[test]
fn bp_lambda_mixes_in_the_right_units() {
    let gpu = gpu();
    let (x, y) = batch(2);
    for (lambda, explained) in [(1.0f32, 1.0), (0.5, 0.75), (0.0, 0.0)] {
        let iface = InterfaceSpec {
            lambda,
            ..InterfaceSpec::dni(SgSpec::linear(true))
        };
        let mut net =
            FfNet::new(&gpu, spec(OptimConfig::adam(1e-3)).with_interfaces(iface)).unwrap();
        for p in net.probe_sg(&x, &y).unwrap() {
            let want_cos = if lambda > 0.0 { 1.0 } else { 0.0 };
            close(p.delivered.cosine, want_cos, "delivered cosine");
            close(p.delivered.explained, explained, "delivered explained");
            // The parameter gradient is linear in the output gradient.
            close(p.update.cosine, want_cos, "update cosine");
            close(p.update.explained, explained, "update explained");
            let sg = p.sg.expect("an SG model");
            assert_eq!(sg.cosine, 0.0, "the SG starts at zero");
            assert_eq!(sg.sg_rms, 0.0);
        }
    }
}

/// A conditioned linear SG, trained beside a frozen backprop network on one batch, fits that batch's
/// true gradients (it has more inputs than the batch has rows), so the probe must find it pointing
/// along the gradient it scores against. A probe that scored the wrong interface, the wrong units or
/// the wrong gradient would not.
#[test]
fn a_fitted_sg_scores_near_one() {
    let gpu = gpu();
    let (x, y) = batch(3);
    let mut s = spec(OptimConfig::sgd(0.0, 0.0)).with_interfaces(InterfaceSpec {
        apply_sg: false,
        ..InterfaceSpec {
            lambda: 1.0,
            ..InterfaceSpec::dni(SgSpec::linear(true))
        }
    });
    s.sg_optim = Some(OptimConfig::adam(3e-2));
    let mut net = FfNet::new(&gpu, s).unwrap();
    let before = net.probe_sg(&x, &y).unwrap();
    let mut source = |xs: &mut Vec<f32>, ys: &mut Vec<u32>| {
        xs.clone_from(&x);
        ys.clone_from(&y);
    };
    net.train(400, &mut source, Schedule::SingleThread).unwrap();
    let after = net.probe_sg(&x, &y).unwrap();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let (b, a) = (b.sg.unwrap(), a.sg.unwrap());
        eprintln!("interface {i}: before {b:?}, after {a:?}");
        assert_eq!(b.cosine, 0.0);
        assert!(a.cosine > 0.95, "interface {i}: cosine {}", a.cosine);
        assert!(
            a.explained > 0.9,
            "interface {i}: explained {}",
            a.explained
        );
        // Not applied: the sender gets the true gradient (λ = 1).
        close(after[i].delivered.cosine, 1.0, "delivered");
    }
}

/// Probing between training calls changes nothing that training reads: parameters, batch-norm
/// running statistics and the SG models end bit-identical to an unprobed run.
#[test]
fn probing_leaves_training_untouched() {
    let gpu = gpu();
    let make = || {
        let s = spec(OptimConfig::adam(1e-2)).dni(SgSpec::mlp(vec![16], false));
        FfNet::new(&gpu, s).unwrap()
    };
    let batches: Vec<(Vec<f32>, Vec<u32>)> = (0..4).map(|k| batch(10 + k)).collect();
    let run = |probe: bool| {
        let mut net = make();
        let mut k = 0;
        let mut source = |xs: &mut Vec<f32>, ys: &mut Vec<u32>| {
            let (x, y) = &batches[k % batches.len()];
            k += 1;
            xs.clone_from(x);
            ys.clone_from(y);
        };
        for _ in 0..3 {
            net.train(3, &mut source, Schedule::SingleThread).unwrap();
            if probe {
                let (x, y) = batch(99);
                net.probe_sg(&x, &y).unwrap();
            }
        }
        let metrics = net.take_metrics().unwrap();
        let mut state = Vec::new();
        for i in 0..net.num_blocks() {
            for (_, p) in net.block_params(i).into_iter().chain(net.sg_params(i)) {
                state.push(gpu.read(&p.value).unwrap());
            }
            for (m, v) in net.running_stats(i) {
                state.push(gpu.read(m).unwrap());
                state.push(gpu.read(v).unwrap());
            }
        }
        (state, metrics)
    };
    let (plain, plain_metrics) = run(false);
    let (probed, probed_metrics) = run(true);
    assert_eq!(plain, probed, "probing changed the training");
    assert_eq!(plain_metrics, probed_metrics, "probing changed the metrics");
}

#[test]
fn wrong_batch_sizes_are_errors() {
    let gpu = gpu();
    let mut net = FfNet::new(&gpu, spec(OptimConfig::adam(1e-3))).unwrap();
    let (x, y) = batch(4);
    let err = net.probe_sg(&x[1..], &y).unwrap_err().to_string();
    assert!(err.contains("probe_sg"), "{err}");
    let err = net.probe_sg(&x, &y[1..]).unwrap_err().to_string();
    assert!(err.contains("labels"), "{err}");
    let mut bad = y.clone();
    bad[3] = CLASSES as u32;
    let err = net.probe_sg(&x, &bad).unwrap_err().to_string();
    assert!(
        err.contains("probe_sg") && err.contains("not below"),
        "{err}"
    );
}
