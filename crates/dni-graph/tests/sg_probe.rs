//! The SG fidelity probe on a run group: on a deterministic stream a trained SG points where the true
//! long-range gradient points; an untrained (zero) SG and a BPTT run score as they must.

use dni_graph::recurrent::{BitWindow, Method, OutputLoss, RecurrentConfig, RunGroup, StepPath};
use dni_kernels::ops::optim::OptimConfig;
use dni_kernels::testing::gpu;

const T: usize = 4;
const B: usize = 8;
const IN: usize = 3;
const OUT: usize = 2;

fn config(method: Method) -> RecurrentConfig {
    RecurrentConfig {
        input: IN,
        hidden: 16,
        output: OUT,
        batch: B,
        t: T,
        loss: OutputLoss::SigmoidBits,
        method,
        // The core barely moves, so the gradient the SG must learn is (nearly) stationary.
        optim: OptimConfig::sgd(1e-6, 0.0),
        sg_optim: Some(OptimConfig::adam(3e-3)),
        clip: None,
        sg: Default::default(),
        seed: 3,
    }
}

/// `steps` steps of a stream with period T (so every window sees the same data): lane b's input at
/// phase p is one-hot (p + b) mod 3, and its targets are fixed bits of (p, b); every output is
/// scored.
fn stream(steps: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (mut x, mut y) = (vec![0.0; steps * B * IN], vec![0.0; steps * B * OUT]);
    for s in 0..steps {
        let p = s % T;
        for b in 0..B {
            x[(s * B + b) * IN + (p + b) % IN] = 1.0;
            for o in 0..OUT {
                y[(s * B + b) * OUT + o] = (((p + b) % IN + o + p) % 2) as f32;
            }
        }
    }
    (x, y, vec![1.0; steps * B * OUT])
}

#[test]
fn a_trained_sg_points_along_the_true_future_gradient() {
    let gpu = gpu();
    // sg_scale 1: the SG's bootstrapped target is the undiscounted future gradient.
    let cfgs = vec![config(Method::Dni { sg_scale: 1.0 }), config(Method::Bptt)];
    let mut g = RunGroup::with_path(&gpu, cfgs, StepPath::PerStep).unwrap();
    let probe_steps = 8 * T;
    let (fx, fy, fm) = stream(probe_steps);
    let future = BitWindow {
        inputs: &fx,
        targets: &fy,
        mask: &fm,
        next_inputs: None,
    };
    // Before training the SG model is exactly zero: no direction, nothing explained.
    let before = g.probe_bits(0, &[future], probe_steps).unwrap().unwrap();
    assert_eq!((before.cosine, before.explained), (0.0, 0.0), "{before:?}");
    assert!(before.true_rms > 0.0, "the future sends a gradient back");
    assert!(g.probe_bits(1, &[future], probe_steps).unwrap().is_none());

    let (x, y, m) = stream(T);
    let w = BitWindow {
        inputs: &x,
        targets: &y,
        mask: &m,
        next_inputs: None,
    };
    for _ in 0..1500 {
        g.train_window(&[w, w]).unwrap();
    }
    let after = g.probe_bits(0, &[future], probe_steps).unwrap().unwrap();
    assert!(
        after.cosine > 0.9 && after.explained > 0.5,
        "trained SG against the true future gradient: {after:?}"
    );
}

#[test]
fn the_probe_checks_the_future_window_shape() {
    let gpu = gpu();
    let g = RunGroup::with_path(&gpu, vec![config(Method::dni())], StepPath::PerStep).unwrap();
    let (x, y, m) = stream(5);
    let short = BitWindow {
        inputs: &x[..x.len() - 1],
        targets: &y,
        mask: &m,
        next_inputs: None,
    };
    let err = g.probe_bits(0, &[short], 5).unwrap_err().to_string();
    assert!(err.contains("probe inputs"), "{err}");
}

/// What the SG model learns is set by its bootstrap: trained on the window's own gradient alone
/// (`sg_scale` 0: no bootstrap) it matches the gradient of the next T steps almost exactly, but only
/// part of the long-range one; bootstrapped undiscounted (`sg_scale` 1) it matches the gradient of
/// the whole future. The model `M` itself is scored here (scale 1 in the probe).
#[test]
fn the_bootstrap_sets_the_horizon_the_sg_learns() {
    use dni_graph::sg::{fidelity, FutureTargets};
    let gpu = gpu();
    let mut scores = Vec::new();
    for scale in [0.0f32, 1.0] {
        let mut g = RunGroup::with_path(
            &gpu,
            vec![config(Method::Dni { sg_scale: scale })],
            StepPath::PerStep,
        )
        .unwrap();
        let (x, y, m) = stream(T);
        let w = BitWindow {
            inputs: &x,
            targets: &y,
            mask: &m,
            next_inputs: None,
        };
        for _ in 0..1500 {
            g.train_window(&[w]).unwrap();
        }
        let mut model = g.probe_model(0).unwrap().unwrap();
        model.sg_scale = 1.0;
        let s = g.read_state(0).unwrap();
        let sg = model.injected_sg(&s);
        let at = |l: usize| {
            let (fx, fy, fm) = stream(l);
            let truth = model.future_gradient(
                &s,
                &fx,
                FutureTargets::Bits {
                    targets: &fy,
                    mask: &fm,
                },
                l,
            );
            fidelity(&sg, &truth)
        };
        scores.push((at(T), at(8 * T)));
    }
    let ((near0, far0), (_, far1)) = (scores[0], scores[1]);
    assert!(near0.cosine > 0.99, "no bootstrap, next T steps: {near0:?}");
    assert!(
        far1.cosine > 0.99,
        "undiscounted bootstrap, next 8T steps: {far1:?}"
    );
    assert!(
        far1.explained > far0.explained + 0.1,
        "the bootstrap carries the long range: {far1:?} vs {far0:?}"
    );
}
