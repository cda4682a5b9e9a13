//! The two-timescale system (paper 3.2) on the GPU: end to end, its gradients equal those of the
//! joint graph computed on the CPU (so B's gradient really reaches A's messages); a zero-initialised
//! SG changes nothing until B has trained it; with DNI, A learns its MNIST task and the SG model learns
//! B's message gradients; end to end and without DNI run; bad input is an error.

use std::time::Instant;

use dni_graph::recurrent::StateBuf;
use dni_graph::timescale::{
    BlockData, DigitBlock, DigitStream, Evaluation, Method, TimescaleConfig, TwoTimescale,
};
use dni_graph::Error;
use dni_kernels::ops::optim::OptimConfig;
use dni_kernels::reference::loss::softmax_xent_loss;
use dni_kernels::reference::lstm::{window_forward, Dims, Params};
use dni_kernels::testing::{assert_close, gpu, Lcg};
use dni_tasks::Mnist;

fn config(
    t: usize,
    input: usize,
    ha: usize,
    hb: usize,
    batch: usize,
    method: Method,
) -> TimescaleConfig {
    let (classes_a, classes_b) = TimescaleConfig::digit_counts(t);
    TimescaleConfig {
        t,
        input,
        classes_a,
        classes_b,
        hidden_a: ha,
        hidden_b: hb,
        batch,
        method,
        optim: OptimConfig::adam(1e-3),
        sg_optim: OptimConfig::adam(1e-3),
        sg_scale: 1.0,
        sg_conditioned: false,
        sg_hidden: 0,
        seed: 7,
    }
}

/// Parameter values read back from the GPU, by name.
fn read_params(sys: &TwoTimescale) -> Vec<(String, Vec<f64>)> {
    let gpu = sys.gpu().clone();
    sys.params()
        .into_iter()
        .map(|(n, p)| {
            let v = gpu.read(&p.value).unwrap();
            (n.to_string(), v.into_iter().map(f64::from).collect())
        })
        .collect()
}

fn get<'a>(ps: &'a [(String, Vec<f64>)], name: &str) -> &'a [f64] {
    &ps.iter().find(|(n, _)| n == name).unwrap().1
}

/// A's part of the joint loss on the CPU in f64, from a zero state: A over `T²` steps with an answer
/// at every `T`-th step; returns `Σ A losses / batch` and the messages (h at those steps),
/// `[T, B, H_A]`.
fn a_loss(
    cfg: &TimescaleConfig,
    ps: &[(String, Vec<f64>)],
    x: &[f64],
    odd: &[u32],
) -> (f64, Vec<f64>) {
    let (t, b, ha) = (cfg.t, cfg.batch, cfg.hidden_a);
    let da = Dims {
        input: cfg.input,
        hidden: ha,
        batch: b,
        steps: t * t,
    };
    let pa = Params {
        w_x: get(ps, "a.lstm.w_x"),
        w_h: get(ps, "a.lstm.w_h"),
        bias: get(ps, "a.lstm.bias"),
    };
    let fa = window_forward(da, pa, x, &vec![0.0; b * 2 * ha]);
    let (ra_w, ra_b) = (get(ps, "a.readout.w"), get(ps, "a.readout.b"));
    let mut loss = 0.0;
    let mut msgs = Vec::with_capacity(t * b * ha);
    for j in 0..t {
        let step = j * t + t - 1;
        let h = &fa.h_seq[step * b * ha..(step + 1) * b * ha];
        let logits = linear(h, ra_w, ra_b, b, ha, cfg.classes_a);
        let labels: Vec<f32> = odd[j * b..(j + 1) * b].iter().map(|&v| v as f32).collect();
        loss += softmax_xent_loss(&logits, &labels, b, cfg.classes_a);
        msgs.extend_from_slice(h);
    }
    (loss / b as f64, msgs)
}

/// B's loss on the CPU in f64, from a zero state: inputs `[message | first-tick flag]` over `T`
/// ticks, the answer at the last tick; `B loss / batch`.
fn b_loss(cfg: &TimescaleConfig, ps: &[(String, Vec<f64>)], msgs: &[f64], threes: &[u32]) -> f64 {
    let (t, b, ha, hb) = (cfg.t, cfg.batch, cfg.hidden_a, cfg.hidden_b);
    let mut xb = vec![0.0; t * b * (ha + 1)];
    for r in 0..t * b {
        xb[r * (ha + 1)..][..ha].copy_from_slice(&msgs[r * ha..(r + 1) * ha]);
        xb[r * (ha + 1) + ha] = if r < b { 1.0 } else { 0.0 };
    }
    let db = Dims {
        input: ha + 1,
        hidden: hb,
        batch: b,
        steps: t,
    };
    let pb = Params {
        w_x: get(ps, "b.lstm.w_x"),
        w_h: get(ps, "b.lstm.w_h"),
        bias: get(ps, "b.lstm.bias"),
    };
    let fb = window_forward(db, pb, &xb, &vec![0.0; b * 2 * hb]);
    let h = &fb.h_seq[(t - 1) * b * hb..];
    let cb = cfg.classes_b;
    let logits = linear(h, get(ps, "b.readout.w"), get(ps, "b.readout.b"), b, hb, cb);
    let labels: Vec<f32> = threes.iter().map(|&v| v as f32).collect();
    softmax_xent_loss(&logits, &labels, b, cb) / b as f64
}

/// The joint loss of one block end to end: A's losses plus, with `with_b`, B's on A's messages.
fn joint_loss(
    cfg: &TimescaleConfig,
    ps: &[(String, Vec<f64>)],
    x: &[f64],
    odd: &[u32],
    threes: &[u32],
    with_b: bool,
) -> f64 {
    let (la, msgs) = a_loss(cfg, ps, x, odd);
    if with_b {
        la + b_loss(cfg, ps, &msgs, threes)
    } else {
        la
    }
}

fn linear(x: &[f64], w: &[f64], bias: &[f64], rows: usize, k: usize, n: usize) -> Vec<f64> {
    let mut y = vec![0.0; rows * n];
    for r in 0..rows {
        for j in 0..n {
            y[r * n + j] = bias[j] + (0..k).map(|i| x[r * k + i] * w[i * n + j]).sum::<f64>();
        }
    }
    y
}

/// Central differences of `f` w.r.t. every entry of parameter `name`.
fn fd(ps: &[(String, Vec<f64>)], name: &str, f: impl Fn(&[(String, Vec<f64>)]) -> f64) -> Vec<f32> {
    let eps = 1e-6;
    let idx = ps.iter().position(|(n, _)| n == name).unwrap();
    let mut work = ps.to_vec();
    (0..ps[idx].1.len())
        .map(|e| {
            let v = ps[idx].1[e];
            work[idx].1[e] = v + eps;
            let up = f(&work);
            work[idx].1[e] = v - eps;
            let down = f(&work);
            work[idx].1[e] = v;
            ((up - down) / (2.0 * eps)) as f32
        })
        .collect()
}

#[test]
fn end_to_end_gradients_are_those_of_the_joint_graph() {
    let gpu = gpu();
    let started = Instant::now();
    let cfg = config(2, 3, 3, 2, 2, Method::EndToEnd);
    let (t, b) = (cfg.t, cfg.batch);
    let mut sys = TwoTimescale::new(&gpu, cfg.clone()).unwrap();
    let ps = read_params(&sys);
    let mut rng = Lcg::new(5);
    let x: Vec<f32> = rng
        .vec(t * t * b * cfg.input)
        .iter()
        .map(|v| 2.0 * v)
        .collect();
    let odd = [2, 0, 1, 2];
    let threes = [3, 1];
    sys.train_block(&x, &odd, &threes).unwrap();
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let full = |p: &[(String, Vec<f64>)]| joint_loss(&cfg, p, &x64, &odd, &threes, true);
    let a_only = |p: &[(String, Vec<f64>)]| joint_loss(&cfg, p, &x64, &odd, &threes, false);
    let mut b_reaches_a = 0.0f32;
    for (name, p) in sys.params() {
        let got = gpu.read(&p.grad).unwrap();
        let want = fd(&ps, name, full);
        assert_close(&got, &want, 1e-3, 2e-5, name);
        if name.starts_with("a.lstm") {
            let without_b = fd(&ps, name, a_only);
            for (w, o) in want.iter().zip(&without_b) {
                b_reaches_a = b_reaches_a.max((w - o).abs());
            }
        }
    }
    // The test can only tell a missing B→A path apart if B's share of A's gradient is well above
    // the tolerance.
    assert!(
        b_reaches_a > 1e-3,
        "B's gradient barely reaches A ({b_reaches_a:e}): the test would not notice it missing"
    );
    eprintln!("gradient check: {:.1}s", started.elapsed().as_secs_f64());
}

#[test]
fn dni_trains_the_sg_on_bs_true_message_gradients() {
    let gpu = gpu();
    let cfg = config(2, 3, 3, 2, 2, Method::Dni);
    let (t, b, ha) = (cfg.t, cfg.batch, cfg.hidden_a);
    let mut sys = TwoTimescale::new(&gpu, cfg.clone()).unwrap();
    // B's parameters only change after its backward, at the block's end: read them before.
    let ps = read_params(&sys);
    let mut rng = Lcg::new(6);
    let x = rng.vec(t * t * b * cfg.input);
    let threes = [4, 1];
    sys.train_block(&x, &[1, 2, 0, 1], &threes).unwrap();
    let (msgs, dmsgs) = sys.debug_link();
    let (msgs, dmsgs) = (gpu.read(msgs).unwrap(), gpu.read(dmsgs).unwrap());
    assert!(msgs.iter().any(|&v| v != 0.0), "no messages reached B");
    // δ = ∂L_B/∂message by central differences of the CPU model of B, in one lane's units (×B).
    let m64: Vec<f64> = msgs.iter().map(|&v| v as f64).collect();
    let eps = 1e-6;
    let want: Vec<f32> = (0..m64.len())
        .map(|e| {
            let mut m = m64.clone();
            m[e] += eps;
            let up = b_loss(&cfg, &ps, &m, &threes);
            m[e] -= 2.0 * eps;
            let down = b_loss(&cfg, &ps, &m, &threes);
            ((up - down) / (2.0 * eps) * b as f64) as f32
        })
        .collect();
    assert!(
        want.iter().any(|v| v.abs() > 1e-3),
        "degenerate check: δ is ~0"
    );
    assert_close(
        &dmsgs,
        &want,
        1e-3,
        2e-5,
        "SG target = B's message gradient",
    );
    // M starts at 0, so its first regression gradient is -messagesᵀ·δ / B (and -Σδ / B for the bias).
    let mut gw = vec![0.0f32; ha * ha];
    let mut gb = vec![0.0f32; ha];
    for r in 0..t * b {
        for j in 0..ha {
            gb[j] -= want[r * ha + j] / b as f32;
            for i in 0..ha {
                gw[i * ha + j] -= msgs[r * ha + i] * want[r * ha + j] / b as f32;
            }
        }
    }
    let params = sys.params();
    let grad = |name: &str| {
        gpu.read(&params.iter().find(|p| p.0 == name).unwrap().1.grad)
            .unwrap()
    };
    assert_close(&grad("sg.w"), &gw, 1e-3, 2e-5, "sg.w gradient");
    assert_close(&grad("sg.b"), &gb, 1e-3, 2e-5, "sg.b gradient");
}

#[test]
fn zero_sg_changes_nothing_until_b_has_trained_it() {
    let gpu = gpu();
    let (t, b, i) = (2, 3, 5);
    let mut rng = Lcg::new(9);
    let blocks: Vec<(Vec<f32>, Vec<u32>, Vec<u32>)> = (0..2)
        .map(|_| {
            let x = rng.vec(t * t * b * i);
            let odd = (0..t * b).map(|_| (rng.next_u64() % 3) as u32).collect();
            let threes = (0..b).map(|_| (rng.next_u64() % 5) as u32).collect();
            (x, odd, threes)
        })
        .collect();
    let mut dni = TwoTimescale::new(&gpu, config(t, i, 4, 3, b, Method::Dni)).unwrap();
    let mut nodni = TwoTimescale::new(&gpu, config(t, i, 4, 3, b, Method::NoDni)).unwrap();
    let a_weights = |s: &TwoTimescale| gpu.read(&s.params()[1].1.value).unwrap();
    let (x, o, th) = &blocks[0];
    dni.train_block(x, o, th).unwrap();
    nodni.train_block(x, o, th).unwrap();
    assert_eq!(
        a_weights(&dni),
        a_weights(&nodni),
        "M = 0 must inject exactly 0"
    );
    let sg_w = gpu.read(&dni.params()[10].1.value).unwrap();
    assert!(
        sg_w.iter().any(|&v| v != 0.0),
        "B's message gradients did not train M"
    );
    let (x, o, th) = &blocks[1];
    dni.train_block(x, o, th).unwrap();
    nodni.train_block(x, o, th).unwrap();
    let (d, n) = (a_weights(&dni), a_weights(&nodni));
    assert!(
        d.iter().zip(&n).any(|(p, q)| (p - q).abs() > 1e-7),
        "the trained SG did not change A's update"
    );
    // Switching the SG off makes DNI the decoupled control again.
    let mut off = TwoTimescale::new(&gpu, config(t, i, 4, 3, b, Method::Dni)).unwrap();
    off.set_sg_apply(false);
    let mut ctl = TwoTimescale::new(&gpu, config(t, i, 4, 3, b, Method::NoDni)).unwrap();
    for (x, o, th) in &blocks {
        off.train_block(x, o, th).unwrap();
        ctl.train_block(x, o, th).unwrap();
    }
    assert_eq!(a_weights(&off), a_weights(&ctl));
}

/// A stream of random symbols `0..4` (one-hot, plus the window-start flag): A counts the symbols
/// `>= 2` in each window; B counts the windows that end on a 0 — what A's message says most directly,
/// so B's message gradient is predictable from the message and a linear SG can learn it.
/// `sg_conditioned`: M also reads B's answer for the block, one-hot, on every message row of the
/// lane; its first context gradient is `−onehot(y)ᵀ·δ / B`. Without DNI the key is refused.
#[test]
fn the_conditioned_sg_reads_bs_answer() {
    let gpu = gpu();
    let mut cfg = config(2, 3, 3, 2, 2, Method::Dni);
    cfg.sg_conditioned = true;
    let (t, b, ha, c) = (cfg.t, cfg.batch, cfg.hidden_a, cfg.classes_b);
    let mut sys = TwoTimescale::new(&gpu, cfg.clone()).unwrap();
    let mut rng = Lcg::new(6);
    let x = rng.vec(t * t * b * cfg.input);
    let threes = [4, 1];
    sys.train_block(&x, &[1, 2, 0, 1], &threes).unwrap();
    let dmsgs = gpu.read(sys.debug_link().1).unwrap();
    assert!(
        dmsgs.iter().any(|v| v.abs() > 1e-4),
        "degenerate check: δ ~0"
    );
    let mut want = vec![0.0f32; c * ha];
    for r in 0..t * b {
        let y = threes[r % b] as usize;
        for j in 0..ha {
            want[y * ha + j] -= dmsgs[r * ha + j] / b as f32;
        }
    }
    let params = sys.params();
    let wc = params.iter().find(|p| p.0 == "sg.wc").expect("sg.wc");
    assert_close(
        &gpu.read(&wc.1.grad).unwrap(),
        &want,
        1e-4,
        1e-6,
        "sg.wc gradient",
    );
    assert!(sys.probe_sg().unwrap().is_some());
    let state = sys.export_state().unwrap();
    assert!(state.iter().any(|(n, _)| n.starts_with("sg.wc")));
    sys.import_state(&state).unwrap();
    // An MLP SG reads the label in its hidden layer, and starts at exactly 0 like the linear one.
    let mut mlp_cfg = cfg.clone();
    mlp_cfg.sg_hidden = 4;
    let mut mlp = TwoTimescale::new(&gpu, mlp_cfg).unwrap();
    let names: Vec<&str> = mlp.params().iter().map(|p| p.0).collect();
    assert!(
        names.ends_with(&["sg.w_in", "sg.wc_in", "sg.b_in", "sg.w", "sg.b"]),
        "{names:?}"
    );
    mlp.train_block(&x, &[1, 2, 0, 1], &threes).unwrap();
    let first = mlp.probe_sg().unwrap().unwrap();
    assert_eq!(first.sg_rms, 0.0, "the first SG is not exactly 0");
    mlp.train_block(&x, &[1, 2, 0, 1], &threes).unwrap();
    let second = mlp.probe_sg().unwrap().unwrap();
    assert!(
        second.sg_rms > 0.0 && second.cosine.is_finite(),
        "{second:?}"
    );
    cfg.method = Method::EndToEnd;
    let err = TwoTimescale::new(&gpu, cfg).err().expect("refused");
    assert!(err.to_string().contains("sg_conditioned"), "{err}");
}

fn symbol_block(rng: &mut Lcg, t: usize, b: usize) -> (Vec<f32>, Vec<u32>, Vec<u32>) {
    let mut x = Vec::with_capacity(t * t * b * 5);
    let (mut odd, mut zeros) = (vec![0u32; t * b], vec![0u32; b]);
    for step in 0..t * t {
        for lane in 0..b {
            let s = (rng.next_u64() % 4) as usize;
            let mut row = [0.0f32; 5];
            row[s] = 1.0;
            row[4] = if step % t == 0 { 1.0 } else { 0.0 };
            x.extend_from_slice(&row);
            odd[(step / t) * b + lane] += u32::from(s >= 2);
            zeros[lane] += u32::from(s == 0 && step % t == t - 1);
        }
    }
    (x, odd, zeros)
}

#[test]
fn sg_regression_loss_falls_on_stationary_gradients() {
    let gpu = gpu();
    let (t, b) = (2, 32);
    let mut cfg = config(t, 5, 16, 16, b, Method::Dni);
    // A and B held (almost) still: B's message gradients are then a fixed function of the stream,
    // and M, trained but not applied, must regress onto them.
    cfg.optim = OptimConfig::adam(1e-9);
    let mut sys = TwoTimescale::new(&gpu, cfg).unwrap();
    sys.set_sg_apply(false);
    let mut rng = Lcg::new(3);
    let mut train = |sys: &mut TwoTimescale, blocks: usize| {
        for _ in 0..blocks {
            let (x, o, z) = symbol_block(&mut rng, t, b);
            sys.train_block(&x, &o, &z).unwrap();
        }
        sys.read_metrics().unwrap()
    };
    let first = train(&mut sys, 1);
    train(&mut sys, 200);
    let last = train(&mut sys, 50);
    let (f, l) = (first.sg_explained().unwrap(), last.sg_explained().unwrap());
    eprintln!(
        "SG loss per block {:.4} -> {:.4}, explained {f:.3} -> {l:.3}",
        first.sg_loss_per_block().unwrap(),
        last.sg_loss_per_block().unwrap()
    );
    assert_eq!((first.sg_blocks, last.sg_blocks), (1, 50));
    // M starts at exactly 0, the zero predictor; the best linear fit explains about 0.4 here.
    assert_eq!(f, 0.0, "the zero-initialised SG is not the zero predictor");
    assert!(
        l > 0.3,
        "the SG did not learn B's message gradient: explains {f:.3} -> {l:.3}"
    );
    assert!(last.sg_loss_per_block().unwrap() < 0.8 * first.sg_loss_per_block().unwrap());
    // What A would be given points along B's gradient (explaining 0.3+ means a cosine near 0.6).
    let probe = sys.probe_sg().unwrap().unwrap();
    eprintln!("probe cosine {:.3}", probe.cosine);
    assert!(probe.cosine > 0.4, "probe: {probe:?}");
}

/// The link's probe scores exactly the SGs A was given in the last block (`M` before its update at
/// the block's end) against the gradients B then sent back for those messages, and says nothing where
/// there is nothing to score.
#[test]
fn the_probe_scores_the_sgs_a_was_given_against_bs_gradients() {
    let gpu = gpu();
    let (t, b) = (2, 8);
    let mut cfg = config(t, 5, 6, 5, b, Method::Dni);
    cfg.sg_optim = OptimConfig::adam(1e-2);
    let mut sys = TwoTimescale::new(&gpu, cfg.clone()).unwrap();
    assert!(sys.probe_sg().unwrap().is_none(), "no block trained yet");
    let mut rng = Lcg::new(11);
    for _ in 0..6 {
        let (x, o, z) = symbol_block(&mut rng, t, b);
        sys.train_block(&x, &o, &z).unwrap();
    }
    // The SG A is given in the next block is M with the parameters as they are now.
    let ps = read_params(&sys);
    let (x, o, z) = symbol_block(&mut rng, t, b);
    sys.train_block(&x, &o, &z).unwrap();
    let (msgs, dmsgs) = sys.debug_link();
    let wide = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<f64>>();
    let (msgs, dmsgs) = (
        wide(gpu.read(msgs).unwrap()),
        wide(gpu.read(dmsgs).unwrap()),
    );
    let ha = cfg.hidden_a;
    let sg = linear(&msgs, get(&ps, "sg.w"), get(&ps, "sg.b"), t * b, ha, ha);
    let want = dni_graph::sg::fidelity(&sg, &dmsgs);
    let got = sys
        .probe_sg()
        .unwrap()
        .expect("a DNI block that trained the SG");
    eprintln!(
        "probe: cosine {:.4}, explained {:.4}",
        got.cosine, got.explained
    );
    assert!(
        want.cosine.abs() > 0.05 && want.sg_rms > 0.0,
        "degenerate check: the SG is ~0 or orthogonal to δ ({want:?})"
    );
    assert!(
        (got.cosine - want.cosine).abs() < 1e-4,
        "{got:?} vs {want:?}"
    );
    assert!(
        (got.explained - want.explained).abs() < 1e-3,
        "{got:?} vs {want:?}"
    );
    assert!((got.sg_rms - want.sg_rms).abs() < 1e-4 * want.sg_rms.max(1.0));

    // Nothing to score: the SG not trained in the last block, a restored system, or no DNI.
    sys.set_sg_train(false);
    sys.train_block(&x, &o, &z).unwrap();
    assert!(
        sys.probe_sg().unwrap().is_none(),
        "the last block did not train the SG"
    );
    sys.set_sg_train(true);
    sys.train_block(&x, &o, &z).unwrap();
    assert!(sys.probe_sg().unwrap().is_some());
    let state = sys.export_state().unwrap();
    sys.import_state(&state).unwrap();
    assert!(
        sys.probe_sg().unwrap().is_none(),
        "predictions are not restored"
    );
    let mut nodni = TwoTimescale::new(&gpu, config(t, 5, 6, 5, b, Method::NoDni)).unwrap();
    nodni.train_block(&x, &o, &z).unwrap();
    assert!(nodni.probe_sg().unwrap().is_none());
}

fn mnist() -> Mnist {
    Mnist::load_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/mnist")).unwrap()
}

/// Trains `blocks` blocks of the MNIST stream and returns the test-split evaluation.
fn mnist_run(data: &Mnist, method: Method, t: usize, blocks: usize) -> (TwoTimescale, Evaluation) {
    let gpu = gpu();
    let batch = 16;
    let mut stream = DigitStream::new(&data.train, t, batch, 1).unwrap();
    let mut cfg = config(t, stream.input_width(), 32, 32, batch, method);
    cfg.optim = OptimConfig::adam(3e-3);
    cfg.sg_optim = OptimConfig::adam(1e-4);
    let mut sys = TwoTimescale::new(&gpu, cfg).unwrap();
    let mut block = DigitBlock::default();
    for _ in 0..blocks {
        stream.next_block(&mut block);
        sys.train(&block).unwrap();
    }
    let m = sys.read_metrics().unwrap();
    assert_eq!(m.blocks, blocks as u64);
    assert!(m.a.loss().unwrap().is_finite() && m.b.loss().unwrap().is_finite());
    let mut test = DigitStream::new(&data.test, t, batch, 2).unwrap();
    let ev = sys.evaluate(20, |b| test.next_block(b)).unwrap();
    assert_eq!(
        (ev.blocks, ev.a.answers, ev.b.answers),
        (20, (20 * t * batch) as u64, 20 * batch as u64)
    );
    (sys, ev)
}

#[test]
fn dni_learns_a_on_mnist_and_every_method_runs() {
    let data = mnist();
    let started = Instant::now();
    let (t, blocks) = (3, 120);
    let (dni, ev) = mnist_run(&data, Method::Dni, t, blocks);
    // A answers 0..=3 odd digits in 3 random digits; the most frequent count (1 or 2) is right 37.5%
    // of the time, which is the best an untrained A can do.
    let a = ev.a.accuracy().unwrap();
    eprintln!("dni: test A {a:.3}, B {:.3}", ev.b.accuracy().unwrap());
    assert!(
        a > 0.5,
        "A did not learn to count odd digits with DNI: test accuracy {a:.3}"
    );
    assert_eq!(dni.a_updates(), (blocks * t) as u64);
    let sg_w = dni.gpu().read(&dni.params()[10].1.value).unwrap();
    assert!(sg_w.iter().all(|v| v.is_finite()) && sg_w.iter().any(|&v| v != 0.0));
    for method in [Method::EndToEnd, Method::NoDni] {
        let (sys, ev) = mnist_run(&data, method, t, 40);
        let updates = if method == Method::EndToEnd {
            40
        } else {
            40 * t as u64
        };
        assert_eq!(sys.a_updates(), updates);
        eprintln!(
            "{}: test A {:.3}, B {:.3}",
            method.name(),
            ev.a.accuracy().unwrap(),
            ev.b.accuracy().unwrap()
        );
    }
    eprintln!("MNIST runs: {:.1}s", started.elapsed().as_secs_f64());
}

/// A task of the user's own, not the digits: four symbols one-hot plus a window-start flag per step;
/// A answers the symbol its window started with (4 classes), B whether the block started with symbol
/// 0 or 1 (2 classes). Neither class count is the digit task's (`T + 1`, `T² + 1`).
fn echo_block(block: &mut BlockData, rng: &mut Lcg, t: usize, b: usize) {
    block.clear();
    for step in 0..t * t {
        for _ in 0..b {
            let s = (rng.next_u64() % 4) as usize;
            let mut row = [0.0f32; 5];
            row[s] = 1.0;
            row[4] = if step % t == 0 { 1.0 } else { 0.0 };
            block.inputs.extend_from_slice(&row);
            if step % t == 0 {
                block.targets_a.push(s as u32);
            }
            if step == 0 {
                block.targets_b.push(u32::from(s < 2));
            }
        }
    }
}

/// The system is not tied to the digit task: with class counts of the user's choosing, A and B both
/// learn a task of the user's own, end to end and with DNI, and a class count below 2 is refused.
#[test]
fn a_task_of_the_users_own_is_learnt() {
    let gpu = gpu();
    let started = Instant::now();
    let (t, b) = (2, 32);
    for method in [Method::EndToEnd, Method::Dni] {
        let mut cfg = config(t, 5, 16, 16, b, method);
        (cfg.classes_a, cfg.classes_b) = (4, 2);
        cfg.optim = OptimConfig::adam(1e-2);
        let mut sys = TwoTimescale::new(&gpu, cfg).unwrap();
        let mut rng = Lcg::new(11);
        let mut block = BlockData::default();
        for _ in 0..300 {
            echo_block(&mut block, &mut rng, t, b);
            sys.train(&block).unwrap();
        }
        let ev = sys
            .evaluate(20, |blk: &mut BlockData| echo_block(blk, &mut rng, t, b))
            .unwrap();
        let (a, bb) = (ev.a.accuracy().unwrap(), ev.b.accuracy().unwrap());
        eprintln!("{}: A {a:.3}, B {bb:.3}", method.name());
        // Untrained, A is right a quarter of the time and B half.
        assert!(
            a > 0.7,
            "{}: A did not learn its echo: {a:.3}",
            method.name()
        );
        assert!(
            bb > 0.7,
            "{}: B did not learn its answer: {bb:.3}",
            method.name()
        );
    }
    let mut bad = config(t, 5, 4, 4, b, Method::Dni);
    bad.classes_b = 1;
    assert!(matches!(
        TwoTimescale::new(&gpu, bad),
        Err(Error::Config {
            field: "classes_b",
            ..
        })
    ));
    eprintln!("echo task: {:.1}s", started.elapsed().as_secs_f64());
}

#[test]
fn bad_input_is_an_error() {
    let gpu = gpu();
    let (t, b, i) = (2, 3, 4);
    let mut bad = config(1, i, 4, 4, b, Method::Dni);
    assert!(matches!(
        TwoTimescale::new(&gpu, bad.clone()),
        Err(Error::Config { field: "T", .. })
    ));
    // A window length whose block size overflows is a config error, not a wrapped size.
    bad.t = 1 << 33;
    assert!(matches!(
        TwoTimescale::new(&gpu, bad.clone()),
        Err(Error::Config { field: "T", .. })
    ));
    bad.t = t;
    bad.hidden_b = 0;
    assert!(matches!(
        TwoTimescale::new(&gpu, bad),
        Err(Error::Config {
            field: "hidden_b",
            ..
        })
    ));
    let mut sys = TwoTimescale::new(&gpu, config(t, i, 4, 4, b, Method::EndToEnd)).unwrap();
    let x = vec![0.0; t * t * b * i];
    let err = sys.train_block(&x[1..], &[0; 6], &[0; 3]).unwrap_err();
    assert!(matches!(err, Error::Input { what: "inputs", .. }), "{err}");
    let err = sys.train_block(&x, &[0; 5], &[0; 3]).unwrap_err();
    assert!(matches!(err, Error::Input { .. }), "{err}");
    let err = sys
        .train_block(&x, &[0, 0, 3, 0, 0, 0], &[0; 3])
        .unwrap_err();
    assert!(
        err.to_string().contains("target 3 is outside 0..=2"),
        "{err}"
    );
    let err = sys.train_block(&x, &[0; 6], &[0, 5, 0]).unwrap_err();
    assert!(
        err.to_string().contains("target 5 is outside 0..=4"),
        "{err}"
    );
    assert_eq!(sys.blocks_trained(), 0);
    sys.train_block(&x, &[0; 6], &[0; 3]).unwrap();
    assert_eq!(sys.blocks_trained(), 1);
}

/// Every parameter's value, gradient and optimiser moments, bit for bit.
fn bits(sys: &TwoTimescale) -> Vec<(String, Vec<u32>)> {
    let gpu = sys.gpu().clone();
    let mut out = Vec::new();
    for (n, p) in sys.params() {
        let (m, v) = p.state();
        for (what, t) in [("value", &p.value), ("grad", &p.grad), ("m", m), ("v", v)] {
            let x = gpu.read(t).unwrap();
            out.push((
                format!("{n}.{what}"),
                x.iter().map(|f| f.to_bits()).collect(),
            ));
        }
    }
    out
}

#[test]
fn export_import_continues_bit_exactly() {
    let gpu = gpu();
    let (t, b) = (2, 3);
    for method in [Method::Dni, Method::EndToEnd, Method::NoDni] {
        let cfg = config(t, 5, 6, 5, b, method);
        let blocks: Vec<_> = {
            let mut rng = Lcg::new(11);
            (0..6).map(|_| symbol_block(&mut rng, t, b)).collect()
        };
        let train = |sys: &mut TwoTimescale, range: std::ops::Range<usize>| {
            for (x, odd, threes) in &blocks[range] {
                sys.train_block(x, odd, threes).unwrap();
            }
        };
        let mut whole = TwoTimescale::new(&gpu, cfg.clone()).unwrap();
        train(&mut whole, 0..6);
        let m_whole = whole.read_metrics().unwrap();

        let mut first = TwoTimescale::new(&gpu, cfg.clone()).unwrap();
        train(&mut first, 0..3);
        let state = first.export_state().unwrap();
        drop(first);
        // A fresh system has other weights (another seed) until the import overwrites them.
        let mut other = cfg.clone();
        other.seed = 99;
        let mut resumed = TwoTimescale::new(&gpu, other).unwrap();
        resumed.import_state(&state).unwrap();
        assert_eq!(resumed.blocks_trained(), 3);
        train(&mut resumed, 3..6);
        let m_resumed = resumed.read_metrics().unwrap();
        assert_eq!(
            bits(&whole),
            bits(&resumed),
            "{method:?}: parameters differ"
        );
        let (s1, s2) = (whole.states(), resumed.states());
        assert_eq!(gpu.read(s1.0).unwrap(), gpu.read(s2.0).unwrap());
        assert_eq!(gpu.read(s1.1).unwrap(), gpu.read(s2.1).unwrap());
        assert_eq!(
            format!("{m_whole:?}"),
            format!("{m_resumed:?}"),
            "{method:?}"
        );

        // A checkpoint that lacks a buffer, holds an extra one or one of another size is refused.
        for k in 0..state.len() {
            let mut short = state.clone();
            let (name, _) = short.remove(k);
            let mut fresh = TwoTimescale::new(&gpu, cfg.clone()).unwrap();
            let e = fresh.import_state(&short).unwrap_err().to_string();
            assert!(e.contains(&name), "{e}");
        }
        let mut extra = state.clone();
        extra.push(("x.y".into(), StateBuf::F32(vec![0.0])));
        let mut fresh = TwoTimescale::new(&gpu, cfg.clone()).unwrap();
        let e = fresh.import_state(&extra).unwrap_err().to_string();
        assert!(e.contains("x.y"), "{e}");
        let mut resized = state.clone();
        if let StateBuf::F32(v) = &mut resized[0].1 {
            v.push(0.0);
        }
        let e = fresh.import_state(&resized).unwrap_err().to_string();
        assert!(e.contains(&state[0].0) && e.contains("values"), "{e}");
    }
}
