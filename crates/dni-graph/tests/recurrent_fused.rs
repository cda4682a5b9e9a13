//! The fused recurrent kernels against the per-step ones, and runs inside a group against the same
//! runs alone. The per-step path is itself checked against a CPU reference and finite differences
//! (tests/recurrent.rs, dni-kernels' tests/lstm.rs).

use dni_graph::recurrent::{
    BitWindow, Method, OutputLoss, RecurrentConfig, RecurrentTrainer, RunGroup, StepPath,
};
use dni_kernels::ops::optim::OptimConfig;
use dni_kernels::testing::{assert_close, gpu, Lcg};

fn config(h: usize, b: usize, t: usize, method: Method, optim: OptimConfig) -> RecurrentConfig {
    RecurrentConfig {
        input: 5,
        hidden: h,
        output: 3,
        batch: b,
        t,
        loss: OutputLoss::SigmoidBits,
        method,
        optim,
        sg_optim: Some(match optim {
            OptimConfig::Sgd { lr, momentum } => OptimConfig::sgd(lr / 2.0, momentum),
            OptimConfig::Adam { lr, .. } => OptimConfig::adam(lr / 10.0),
        }),
        clip: None,
        sg: Default::default(),
        seed: 7,
    }
}

/// Random bits for `n` windows of a config: (inputs, targets, mask).
fn windows(c: &RecurrentConfig, n: usize, seed: u64) -> Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let mut rng = Lcg::new(seed);
    let tb = c.t * c.batch;
    (0..n)
        .map(|_| {
            let mut bits =
                |k: usize| -> Vec<f32> { (0..k).map(|_| (rng.next_u64() & 1) as f32).collect() };
            let (x, y) = (bits(tb * c.input), bits(tb * c.output));
            let m = (0..tb * c.output)
                .map(|k| if k % 4 == 3 { 0.0 } else { 1.0 })
                .collect();
            (x, y, m)
        })
        .collect()
}

fn compare(a: &RecurrentTrainer, b: &RecurrentTrainer, grads: bool, what: &str) {
    assert_eq!(a.param_names(), b.param_names());
    for name in a.param_names() {
        let (x, y) = if grads {
            (a.read_grad(name).unwrap(), b.read_grad(name).unwrap())
        } else {
            (a.read_param(name).unwrap(), b.read_param(name).unwrap())
        };
        let scale = y.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
        let kind = if grads { "gradient" } else { "value" };
        assert_close(
            &x,
            &y,
            1e-3,
            1e-4 * scale,
            &format!("{what}: {name} {kind}"),
        );
    }
}

/// Trains the same run on the per-step and a fused path for a few windows (SGD, so the updates
/// are linear in the gradients) and compares every gradient after each window, then the
/// parameters, the state and the metrics.
fn fused_matches_per_step(h: usize, b: usize, t: usize, method: Method, path: StepPath) {
    let cfg = config(h, b, t, method, OptimConfig::sgd(0.05, 0.9));
    let what = format!("H={h} B={b} T={t} {} {path:?}", method.name());
    matches_per_step(cfg, path, &what);
}

fn matches_per_step(cfg: RecurrentConfig, path: StepPath, what: &str) {
    let gpu = gpu();
    let mut reference = RecurrentTrainer::with_path(&gpu, cfg.clone(), StepPath::PerStep).unwrap();
    let mut fused = RecurrentTrainer::with_path(&gpu, cfg.clone(), path).unwrap();
    assert_eq!(fused.path(), path, "{what}");
    compare(&fused, &reference, false, &format!("{what}, initial"));
    let what = what.to_string();
    for (k, (x, y, m)) in windows(&cfg, 3, 5).iter().enumerate() {
        reference.train_window(x, y, m).unwrap();
        fused.train_window(x, y, m).unwrap();
        compare(
            &fused,
            &reference,
            true,
            &format!("{what}, window {}", k + 1),
        );
    }
    compare(
        &fused,
        &reference,
        false,
        &format!("{what}, after 3 windows"),
    );
    let (sf, sr) = (fused.read_state().unwrap(), reference.read_state().unwrap());
    assert_close(&sf, &sr, 1e-3, 1e-5, &format!("{what}: carried state"));
    let (mf, mr) = (
        fused.read_metrics().unwrap(),
        reference.read_metrics().unwrap(),
    );
    assert_eq!(
        (mf.windows, mf.sg_windows),
        (mr.windows, mr.sg_windows),
        "{what}"
    );
    assert_eq!(
        (mf.errors, mf.scored),
        (mr.errors, mr.scored),
        "{what}: metrics"
    );
    assert!(
        (mf.loss_nats - mr.loss_nats).abs() <= 1e-4 * mr.loss_nats.abs().max(1.0),
        "{what}: loss {} vs {}",
        mf.loss_nats,
        mr.loss_nats
    );
    assert!(
        (mf.sg_loss - mr.sg_loss).abs() <= 1e-3 * mr.sg_loss.abs().max(1e-6),
        "{what}: SG loss {} vs {}",
        mf.sg_loss,
        mr.sg_loss
    );
}

#[test]
fn streaming_kernels_match_per_step_at_odd_shapes() {
    // Every H of {1, 3, 17, 64, 100, 256}, B of {1, 3, 16} and T of {1, 2, 5, 20} at least once,
    // every method at least twice.
    for (h, b, t, method) in [
        (1, 1, 1, Method::dni_aux()),
        (3, 3, 2, Method::dni()),
        (17, 16, 5, Method::dni_aux()),
        (64, 3, 20, Method::Bptt),
        (100, 1, 5, Method::dni()),
        (256, 16, 2, Method::Bptt),
    ] {
        fused_matches_per_step(h, b, t, method, StepPath::FusedStreaming);
    }
}

#[test]
fn cached_kernels_match_per_step_at_odd_shapes() {
    // The cached (CPU) variant needs H a multiple of 8 whose weight columns fit its cache (64 here).
    for (h, b, t, method) in [
        (8, 1, 1, Method::dni_aux()),
        (16, 3, 20, Method::dni()),
        (64, 16, 5, Method::dni_aux()),
        (56, 3, 2, Method::Bptt),
    ] {
        fused_matches_per_step(h, b, t, method, StepPath::FusedCached);
    }
}

/// Global-norm clipping (core, and SG model with aux head, separately) on both fused variants
/// against the per-step path, with a threshold every window exceeds; and it does clip: the
/// parameters end elsewhere than without it.
#[test]
fn clipping_matches_per_step_and_changes_the_updates() {
    for (h, path, method) in [
        (16, StepPath::FusedCached, Method::dni_aux()),
        (17, StepPath::FusedStreaming, Method::Bptt),
    ] {
        {
            let mut cfg = config(h, 3, 4, method, OptimConfig::sgd(0.05, 0.9));
            cfg.clip = Some(0.02);
            let what = format!("clip 0.02, H={h} {} {path:?}", method.name());
            matches_per_step(cfg.clone(), path, &what);
            let gpu = gpu();
            let mut clipped = RecurrentTrainer::with_path(&gpu, cfg.clone(), path).unwrap();
            assert_eq!(
                clipped.dispatches_per_window(),
                5,
                "the clip kernel runs: {what}"
            );
            cfg.clip = None;
            let mut free = RecurrentTrainer::with_path(&gpu, cfg.clone(), path).unwrap();
            for (x, y, m) in &windows(&cfg, 2, 5) {
                clipped.train_window(x, y, m).unwrap();
                free.train_window(x, y, m).unwrap();
            }
            let (a, b) = (
                clipped.read_param("lstm.w_h").unwrap(),
                free.read_param("lstm.w_h").unwrap(),
            );
            let diff = a
                .iter()
                .zip(&b)
                .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(diff > 1e-4, "{what}: clipping changed nothing ({diff})");
        }
    }
}

/// With Adam the first window's gradients agree as above, and each parameter moves by at most
/// lr per step on both paths.
#[test]
fn fused_adam_matches_per_step() {
    let gpu = gpu();
    let cfg = config(16, 16, 5, Method::dni_aux(), OptimConfig::adam(1e-3));
    let mut reference = RecurrentTrainer::with_path(&gpu, cfg.clone(), StepPath::PerStep).unwrap();
    let mut fused = RecurrentTrainer::with_path(&gpu, cfg.clone(), StepPath::Fused).unwrap();
    for (k, (x, y, m)) in windows(&cfg, 3, 9).iter().enumerate() {
        reference.train_window(x, y, m).unwrap();
        fused.train_window(x, y, m).unwrap();
        if k == 0 {
            compare(&fused, &reference, true, "Adam, window 1");
        }
    }
    for name in reference.param_names() {
        let (x, y) = (
            fused.read_param(name).unwrap(),
            reference.read_param(name).unwrap(),
        );
        // A gradient near zero may flip sign between the paths and so move a weight by up to 2 lr
        // per step the other way; 3 windows at lr 1e-3.
        assert_close(
            &x,
            &y,
            0.0,
            6.1e-3,
            &format!("Adam: {name} after 3 windows"),
        );
    }
}

/// Three runs of different methods, seeds and learning rates in one group compute what each
/// computes alone.
#[test]
fn a_run_in_a_group_matches_the_same_run_alone() {
    let gpu = gpu();
    let cfgs: Vec<RecurrentConfig> = [
        (Method::Bptt, 1, 1e-2),
        (Method::dni(), 2, 3e-3),
        (Method::dni_aux(), 3, 5e-3),
    ]
    .into_iter()
    .map(|(method, seed, lr)| RecurrentConfig {
        clip: None,
        seed,
        ..config(24, 5, 4, method, OptimConfig::adam(lr))
    })
    .collect();
    for path in [StepPath::FusedStreaming, StepPath::FusedCached] {
        let mut group = RunGroup::with_path(&gpu, cfgs.clone(), path).unwrap();
        let mut alone: Vec<RecurrentTrainer> = cfgs
            .iter()
            .map(|c| RecurrentTrainer::with_path(&gpu, c.clone(), path).unwrap())
            .collect();
        let data: Vec<_> = cfgs
            .iter()
            .enumerate()
            .map(|(r, c)| windows(c, 6, 100 + r as u64))
            .collect();
        for k in 0..6 {
            let ws: Vec<BitWindow> = data
                .iter()
                .map(|d| BitWindow {
                    inputs: &d[k].0,
                    targets: &d[k].1,
                    mask: &d[k].2,
                    next_inputs: None,
                })
                .collect();
            group.train_window(&ws).unwrap();
            for (tr, w) in alone.iter_mut().zip(&ws) {
                tr.train_window(w.inputs, w.targets, w.mask).unwrap();
            }
        }
        let metrics = group.read_metrics().unwrap();
        for (r, tr) in alone.iter_mut().enumerate() {
            let what = format!("{path:?} run {r} ({})", cfgs[r].method.name());
            for name in tr.param_names() {
                let (x, y) = (
                    group.read_param(r, name).unwrap(),
                    tr.read_param(name).unwrap(),
                );
                assert_close(&x, &y, 1e-5, 1e-6, &format!("{what}: {name}"));
            }
            assert_eq!(metrics[r], tr.read_metrics().unwrap(), "{what}: metrics");
        }
        // The runs really differ from each other.
        assert_ne!(
            group.read_param(0, "lstm.w_h").unwrap(),
            group.read_param(1, "lstm.w_h").unwrap()
        );
    }
}

/// The softmax readout (character LM) on both fused variants against the per-step path: gradients
/// after every window, then a held-out evaluation whose last window is padded.
#[test]
fn fused_softmax_matches_per_step() {
    let gpu = gpu();
    let (vocab, b, t) = (11, 5, 4);
    for (h, path) in [(16, StepPath::FusedCached), (19, StepPath::FusedStreaming)] {
        let cfg = RecurrentConfig {
            input: vocab,
            output: vocab,
            loss: OutputLoss::Softmax,
            ..config(h, b, t, Method::dni_aux(), OptimConfig::sgd(0.05, 0.9))
        };
        let what = format!("softmax H={h} {path:?}");
        let mut reference =
            RecurrentTrainer::with_path(&gpu, cfg.clone(), StepPath::PerStep).unwrap();
        let mut fused = RecurrentTrainer::with_path(&gpu, cfg.clone(), path).unwrap();
        let mut rng = Lcg::new(31);
        let mut ids = |n: usize| -> Vec<u32> {
            (0..n)
                .map(|_| (rng.next_u64() % vocab as u64) as u32)
                .collect()
        };
        for k in 0..3 {
            let (x, y) = (ids(t * b), ids(t * b));
            reference.train_window_tokens(&x, &y).unwrap();
            fused.train_window_tokens(&x, &y).unwrap();
            compare(
                &fused,
                &reference,
                true,
                &format!("{what}, window {}", k + 1),
            );
        }
        let (mf, mr) = (
            fused.read_metrics().unwrap(),
            reference.read_metrics().unwrap(),
        );
        assert_eq!((mf.errors, mf.scored), (mr.errors, mr.scored), "{what}");
        assert!(
            (mf.loss_nats - mr.loss_nats).abs() <= 1e-4 * mr.loss_nats,
            "{what}"
        );
        // Three held-out windows, the last with 2 real steps of 4.
        let held: Vec<(Vec<u32>, Vec<u32>, usize)> = [4, 4, 2]
            .iter()
            .map(|&s| (ids(t * b), ids(t * b), s))
            .collect();
        let run = |tr: &mut RecurrentTrainer| {
            let mut it = held.iter();
            tr.evaluate_tokens(|i, o| {
                let (x, y, s) = it.next()?;
                i.clone_from(x);
                o.clone_from(y);
                Some(*s)
            })
            .unwrap()
        };
        let (ef, er) = (run(&mut fused), run(&mut reference));
        assert_eq!(er.chars, (4 + 4 + 2) * b as u64, "{what}");
        assert_eq!(
            (ef.chars, ef.errors),
            (er.chars, er.errors),
            "{what}: evaluation"
        );
        assert!(
            (ef.loss_nats - er.loss_nats).abs() <= 1e-4 * er.loss_nats,
            "{what}: evaluation loss {} vs {}",
            ef.loss_nats,
            er.loss_nats
        );
    }
}
