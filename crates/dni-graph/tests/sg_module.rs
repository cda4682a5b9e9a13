//! The shared SG module in the recurrent trainer: for every model shape (linear, MLP), input
//! (`[h; c]`, `h`), discount and apply switch, the gradient the SG model's output layer receives is
//! the one its definition gives: `M(s0)` regressed onto `ProbeModel::bootstrap_target` (the
//! window's own gradient plus the discounted `Jᵀ·M(s_end)`), computed independently on the host
//! from the f64 reference LSTM.

use dni_graph::recurrent::{Method, OutputLoss, RecurrentConfig, RecurrentTrainer, StepPath};
use dni_graph::sg::{FutureTargets, ProbeModel, SgConfig, SgInput};
use dni_kernels::ops::optim::OptimConfig;
use dni_kernels::testing::gpu;

const T: usize = 3;
const B: usize = 4;
const IN: usize = 3;
const OUT: usize = 2;
const H: usize = 5;

fn config(sg: SgConfig, method: Method) -> RecurrentConfig {
    RecurrentConfig {
        input: IN,
        hidden: H,
        output: OUT,
        batch: B,
        t: T,
        loss: OutputLoss::SigmoidBits,
        method,
        optim: OptimConfig::adam(1e-2),
        // Small enough that an MLP's ReLUs stay alive over the 7 windows.
        sg_optim: Some(OptimConfig::adam(3e-3)),
        clip: None,
        sg,
        seed: 11,
    }
}

/// Window `k` of a fixed pseudo-random stream: one-hot inputs, random bits, about 3/4 scored.
fn window(k: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut state = 0x2545_f491_4f6c_dd1d_u64 ^ (k as u64).wrapping_mul(0x9e37_79b9);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut x = vec![0.0; T * B * IN];
    for row in 0..T * B {
        x[row * IN + (next() % IN as u64) as usize] = 1.0;
    }
    let y = (0..T * B * OUT).map(|_| (next() % 2) as f32).collect();
    let m = (0..T * B * OUT)
        .map(|_| (next() % 4 != 0) as u8 as f32)
        .collect();
    (x, y, m)
}

/// The SG's target for a window from state `s0` (the window's own gradient plus
/// `discount·Jᵀ·M(s_end)`), from the host's f64 reference LSTM.
fn host_target(
    pm: &ProbeModel,
    s0: &[f32],
    (x, y, m): &(Vec<f32>, Vec<f32>, Vec<f32>),
    discount: f32,
) -> Vec<f64> {
    let bits = FutureTargets::Bits {
        targets: y,
        mask: m,
    };
    pm.bootstrap_target(s0, x, bits, T, discount)
}

/// Trains 7 windows, then checks the 8th window's gradient of `sg.w` and `sg.b`.
fn check(sg: SgConfig, method: Method, apply: bool, path: StepPath) {
    let gpu = gpu();
    let mut tr = RecurrentTrainer::with_path(&gpu, config(sg, method), path).unwrap();
    tr.set_sg_apply(apply).unwrap();
    for k in 0..7 {
        let (x, y, m) = window(k);
        tr.train_window(&x, &y, &m).unwrap();
    }
    let pm = tr.group().probe_model(0).unwrap().unwrap();
    // M predicts the target divided by σ (1 unless the run normalises its targets).
    let sigma = tr.group().sg_target_scale(0).unwrap() as f64;
    let s0 = tr.read_state().unwrap();
    let (x, y, m) = window(7);
    tr.train_window(&x, &y, &m).unwrap();
    let got_w = tr.read_grad("sg.w").unwrap();
    let got_b = tr.read_grad("sg.b").unwrap();

    let applied = if apply { method.sg_scale() } else { 0.0 };
    let discount = sg.discount_or(applied);
    let target = host_target(&pm, &s0, &window(7), discount);
    let pred = pm.sg_model(&s0);
    let s = 2 * H;
    // The output layer's input per lane: x (all of the state or h), or the MLP's ReLU layer.
    let feats: Vec<Vec<f64>> = (0..B)
        .map(|lane| {
            let width = if sg.input == SgInput::Hidden { H } else { s };
            let x: Vec<f64> = s0[lane * s..lane * s + width]
                .iter()
                .map(|&v| v as f64)
                .collect();
            if sg.hidden == 0 {
                return x;
            }
            (0..sg.hidden)
                .map(|j| {
                    let z = pm.sg_b_in[j] as f64
                        + x.iter()
                            .enumerate()
                            .map(|(k, v)| v * pm.sg_w_in[k * sg.hidden + j] as f64)
                            .sum::<f64>();
                    z.max(0.0)
                })
                .collect()
        })
        .collect();
    let a = feats[0].len();
    assert_eq!(got_w.len(), a * s);
    let mut want_w = vec![0.0; a * s];
    let mut want_b = vec![0.0; s];
    for lane in 0..B {
        for j in 0..s {
            let d = (pred[lane * s + j] - target[lane * s + j]) / (sigma * B as f64);
            want_b[j] += d;
            for k in 0..a {
                want_w[k * s + j] += feats[lane][k] * d;
            }
        }
    }
    let scale = want_w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(
        scale > 1e-4,
        "the SG gradient is too small to test: {scale}; feats {feats:?}, w_in {:?}, got {got_w:?}",
        pm.sg_w_in
    );
    for (name, got, want) in [("sg.w", &got_w, &want_w), ("sg.b", &got_b, &want_b)] {
        for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
            assert!(
                (*g as f64 - w).abs() < 2e-3 * scale + 1e-6,
                "{sg:?} apply {apply}: {name}[{i}] = {g}, want {w} (max {scale})"
            );
        }
    }
}

#[test]
fn the_paper_linear_sg_follows_its_definition_on_both_paths() {
    for path in [StepPath::PerStep, StepPath::Auto] {
        check(SgConfig::default(), Method::dni(), true, path);
    }
}

#[test]
fn a_normalised_sg_regresses_onto_its_targets_over_their_rms() {
    let sg = SgConfig {
        normalise: true,
        ..Default::default()
    };
    check(sg, Method::dni(), true, StepPath::Fused);
    check(sg, Method::dni(), false, StepPath::Fused);
}

/// `σ` is the bias-corrected running mean square (decay 0.99) of the targets `M` was regressed
/// onto, every window's target computed on the host from the model as it was before that window.
/// On both fused variants (the cached one needs a hidden size that is a multiple of 8), so that
/// each variant's injection `σ·M` and regression onto `target / σ` are checked.
#[test]
fn the_normalising_scale_is_the_running_rms_of_the_targets() {
    for path in [StepPath::FusedStreaming, StepPath::FusedCached] {
        normalising_scale_on(path);
    }
}

fn normalising_scale_on(path: StepPath) {
    let gpu = gpu();
    let sg = SgConfig {
        normalise: true,
        ..Default::default()
    };
    // Injected unscaled and learnt fast, so that σ·M is a large part of each later target and a
    // kernel that injected M alone would fail.
    let cfg = RecurrentConfig {
        hidden: 8,
        sg_optim: Some(OptimConfig::adam(0.05)),
        ..config(sg, Method::Dni { sg_scale: 1.0 })
    };
    let mut tr = RecurrentTrainer::with_path(&gpu, cfg, path).unwrap();
    assert_eq!(tr.path(), path);
    let (mut mean_sq, mut correction) = (0.0f64, 0.0f64);
    let mut sigmas = Vec::new();
    let mut bootstrap_share = 0.0f64;
    for k in 0..8 {
        let pm = tr.group().probe_model(0).unwrap().unwrap();
        let s0 = tr.read_state().unwrap();
        let (x, y, m) = window(k);
        tr.train_window(&x, &y, &m).unwrap();
        // Window 0 has no target yet (the state before it was not produced by a window).
        if k > 0 {
            let target = host_target(&pm, &s0, &(x, y, m), 1.0);
            let own = host_target(&pm, &s0, &window(k), 0.0);
            let norm = |v: &[f64]| v.iter().map(|t| t * t).sum::<f64>().sqrt();
            let diff: Vec<f64> = target.iter().zip(&own).map(|(a, b)| a - b).collect();
            bootstrap_share = bootstrap_share.max(norm(&diff) / norm(&target));
            let ms = target.iter().map(|t| t * t).sum::<f64>() / target.len() as f64;
            mean_sq = 0.99 * mean_sq + 0.01 * ms;
            correction = 0.99 * correction + 0.01;
        }
        let want = if k == 0 {
            1.0
        } else {
            (mean_sq / correction).sqrt()
        };
        let got = tr.group().sg_target_scale(0).unwrap() as f64;
        assert!(
            (got - want).abs() < 2e-3 * want,
            "{path:?}, window {k}: sigma {got}, want {want}"
        );
        sigmas.push(got);
    }
    // The targets are far from unit size, so σ = 1 would fail above.
    assert!(
        sigmas[1..].iter().all(|s| (s - 1.0).abs() > 0.05),
        "{sigmas:?}"
    );
    assert!(
        bootstrap_share > 0.1,
        "σ·M is too small a part of the targets: {bootstrap_share}"
    );
}

#[test]
fn a_discount_of_its_own_changes_the_target_as_defined() {
    let sg = SgConfig {
        discount: Some(0.9),
        ..Default::default()
    };
    // Applied at 0.1 and bootstrapped at 0.9; and trained but not applied (BPTT + shadow SG).
    check(sg, Method::dni(), true, StepPath::PerStep);
    check(sg, Method::dni(), false, StepPath::PerStep);
}

#[test]
fn an_mlp_on_h_alone_follows_its_definition() {
    let sg = SgConfig {
        input: SgInput::Hidden,
        hidden: 7,
        discount: Some(0.5),
        normalise: false,
    };
    check(sg, Method::Dni { sg_scale: 0.3 }, true, StepPath::PerStep);
    check(
        SgConfig {
            input: SgInput::State,
            hidden: 6,
            discount: None,
            normalise: false,
        },
        // Not DNI + Aux: its aux loss sends a gradient to s0 as well, which the host target leaves out.
        Method::dni(),
        true,
        StepPath::PerStep,
    );
}

#[test]
fn the_fused_kernels_refuse_what_they_do_not_implement() {
    let gpu = gpu();
    let sg = SgConfig {
        input: SgInput::Hidden,
        ..Default::default()
    };
    let err = RecurrentTrainer::with_path(&gpu, config(sg, Method::dni()), StepPath::Fused)
        .err()
        .expect("the fused path has only the paper's linear SG");
    assert!(err.to_string().contains("per-step"), "{err}");
    // And the per-step kernels refuse target normalisation, naming it.
    let norm = SgConfig {
        normalise: true,
        ..Default::default()
    };
    let err = RecurrentTrainer::with_path(&gpu, config(norm, Method::dni()), StepPath::PerStep)
        .err()
        .expect("target normalisation is fused only");
    assert!(err.to_string().contains("sg_normalise"), "{err}");
    // Auto falls back to the per-step kernels.
    let tr = RecurrentTrainer::with_path(&gpu, config(sg, Method::dni()), StepPath::Auto).unwrap();
    assert_eq!(tr.path(), StepPath::PerStep);
}
