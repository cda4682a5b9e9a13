//! Recurrent DNI end to end on the GPU: the LSTM learns Copy with BPTT, DNI and DNI + Aux; the SG
//! model learns the bootstrapped gradient; a zero-initialised SG changes nothing on the first step;
//! "apply" and "train" are independent; the softmax variant learns text and evaluates held-out BPC.

use dni_graph::recurrent::{Method, OutputLoss, RecurrentConfig, RecurrentTrainer, StepPath};
use dni_graph::Error;
use dni_kernels::ops::optim::OptimConfig;
use dni_kernels::testing::gpu;
use dni_kernels::Gpu;
use dni_tasks::{CopyKind, CurriculumConfig, EvalStream, TaskStream, Window};

const B: usize = 16;
const T: usize = 5;

fn copy_config(method: Method, hidden: usize, lr: f32) -> RecurrentConfig {
    RecurrentConfig {
        input: dni_tasks::copy::WIDTH,
        hidden,
        output: dni_tasks::copy::WIDTH,
        batch: B,
        t: T,
        loss: OutputLoss::SigmoidBits,
        method,
        optim: OptimConfig::adam(lr),
        // The SG regression wants a smaller step than the core: its targets shrink as Copy is learnt.
        sg_optim: Some(OptimConfig::adam(lr / 10.0)),
        clip: None,
        sg: Default::default(),
        seed: 3,
    }
}

/// Trains on Copy with N fixed at `n` (the curriculum is never fed) and returns the bits error per
/// output character of the first and of the last `span` windows.
fn copy_run(
    gpu: &Gpu,
    method: Method,
    windows: usize,
    n: usize,
    span: usize,
) -> (f64, f64, RecurrentTrainer) {
    let mut tr = RecurrentTrainer::new(gpu, copy_config(method, 64, 1e-2)).unwrap();
    let cur = CurriculumConfig {
        start_n: n,
        ..Default::default()
    };
    let mut stream = TaskStream::new(CopyKind::Copy, B, 11, cur).unwrap();
    let mut w = Window::default();
    let mut first = f64::NAN;
    for i in 1..=windows {
        stream.next_window(T, &mut w);
        tr.train_window(&w.inputs, &w.targets, &w.mask).unwrap();
        if i == span {
            first = tr.read_metrics().unwrap().bits_per_char().unwrap();
        } else if i == windows - span {
            tr.read_metrics().unwrap();
        }
    }
    let m = tr.read_metrics().unwrap();
    assert_eq!(m.windows as usize, span);
    (first, m.bits_per_char().unwrap(), tr)
}

#[test]
fn bptt_learns_copy() {
    let gpu = gpu();
    let (first, last, _) = copy_run(&gpu, Method::Bptt, 700, 2, 50);
    // Guessing each bit is wrong on ~4.5 of 9 bits; even the best input-blind guess (the bit
    // marginals) is wrong on ~4. Learning to copy brings it far below that.
    assert!(
        first > 2.5,
        "the untrained model already copies? {first:.3} bits/char"
    );
    assert!(
        last < 1.5,
        "BPTT did not learn Copy N=2: {first:.3} -> {last:.3} bits/char"
    );
}

#[test]
fn dni_aux_learns_copy_and_trains_its_heads() {
    let gpu = gpu();
    let (first, last, mut tr) = copy_run(&gpu, Method::dni_aux(), 700, 2, 50);
    assert!(first > 2.5, "{first:.3}");
    assert!(
        last < 1.5,
        "DNI+Aux did not learn Copy N=2: {first:.3} -> {last:.3} bits/char"
    );
    for name in ["sg.w", "aux.w"] {
        let v = tr.read_param(name).unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{name} is not finite");
        assert!(
            v.iter().any(|&x| x != 0.0),
            "{name} never left its zero init"
        );
    }
    // The metrics of a fresh read cover nothing.
    let m = tr.read_metrics().unwrap();
    assert_eq!((m.windows, m.sg_windows), (0, 0));
}

/// A deterministic periodic stream: every lane sees the phase `(clock + lane) mod 7` as a one-hot input
/// and a fixed bit pattern of it as the target, so the gradient reaching a window's first state is a
/// function of that state and the SG model can learn it.
#[test]
fn sg_model_learns_the_bootstrapped_gradient() {
    let gpu = gpu();
    let mut cfg = copy_config(Method::dni(), 32, 3e-3);
    cfg.sg_optim = Some(OptimConfig::adam(1e-3));
    let mut tr = RecurrentTrainer::new(&gpu, cfg).unwrap();
    let (w, p) = (dni_tasks::copy::WIDTH, 7);
    let (mut x, mut y) = (vec![0.0; T * B * w], vec![0.0; T * B * w]);
    let mask = vec![1.0; T * B * w];
    let mut early = None;
    for i in 0..600 {
        x.fill(0.0);
        y.fill(0.0);
        for s in 0..T {
            for lane in 0..B {
                let phase = (i * T + s + lane) % p;
                let row = (s * B + lane) * w;
                x[row + phase] = 1.0;
                let pattern = (phase * 37 + 11) % 1024;
                for c in 0..w {
                    y[row + c] = ((pattern >> c) & 1) as f32;
                }
            }
        }
        tr.train_window(&x, &y, &mask).unwrap();
        if i == 99 {
            early = Some(tr.read_metrics().unwrap());
        } else if i == 499 {
            tr.read_metrics().unwrap();
        }
    }
    let early = early.unwrap();
    let late = tr.read_metrics().unwrap();
    // The first window trains no SG (nothing used M before it).
    assert_eq!((early.windows, early.sg_windows), (100, 99));
    assert_eq!(late.sg_windows, 100);
    let (e, l) = (
        early.sg_loss_per_window().unwrap(),
        late.sg_loss_per_window().unwrap(),
    );
    assert!(
        l < 0.05 * e,
        "SG regression loss did not fall: {e:.4} -> {l:.6}"
    );
    let explained = late.sg_explained().unwrap();
    assert!(
        explained > 0.8,
        "the SG model explains only {explained:.3} of its target (a zero predictor: 0)"
    );
}

fn read_param(_gpu: &Gpu, tr: &RecurrentTrainer, name: &str, grad: bool) -> Vec<f32> {
    if grad {
        tr.read_grad(name).unwrap()
    } else {
        tr.read_param(name).unwrap()
    }
}

const CORE: [&str; 5] = [
    "lstm.w_x",
    "lstm.w_h",
    "lstm.bias",
    "readout.w",
    "readout.b",
];

#[test]
fn zero_initialised_sg_changes_nothing_at_first_and_apply_is_independent_of_train() {
    let gpu = gpu();
    let make = |method| RecurrentTrainer::new(&gpu, copy_config(method, 24, 1e-2)).unwrap();
    let mut bptt = make(Method::Bptt);
    let mut dni = make(Method::dni());
    let mut aux = make(Method::dni_aux());
    let mut shadow = make(Method::dni());
    shadow.set_sg_apply(false).unwrap();
    assert!(shadow.sg_trained() && !shadow.sg_applied());

    let cur = CurriculumConfig {
        start_n: 3,
        ..Default::default()
    };
    let mut stream = TaskStream::new(CopyKind::Copy, B, 5, cur).unwrap();
    let mut w = Window::default();
    let mut step = |trs: &mut [&mut RecurrentTrainer]| {
        stream.next_window(T, &mut w);
        for tr in trs.iter_mut() {
            tr.train_window(&w.inputs, &w.targets, &w.mask).unwrap();
        }
    };
    step(&mut [&mut bptt, &mut dni, &mut aux, &mut shadow]);
    for name in CORE {
        let want = read_param(&gpu, &bptt, name, true);
        assert!(
            want.iter().any(|&g| g != 0.0),
            "{name}: BPTT gradient is all zero"
        );
        for (tr, label) in [(&dni, "dni"), (&aux, "dni_aux")] {
            assert_eq!(
                read_param(&gpu, tr, name, true),
                want,
                "{label} {name} gradient differs on step 1"
            );
        }
    }
    assert!(read_param(&gpu, &dni, "sg.w", false)
        .iter()
        .all(|&v| v == 0.0));

    for _ in 0..15 {
        step(&mut [&mut bptt, &mut dni, &mut shadow]);
    }
    let sg = read_param(&gpu, &shadow, "sg.w", false);
    assert!(
        sg.iter().any(|&v| v != 0.0),
        "a trained-but-not-applied SG model must still learn"
    );
    for name in CORE {
        let want = read_param(&gpu, &bptt, name, false);
        assert_eq!(
            read_param(&gpu, &shadow, name, false),
            want,
            "{name}: an SG that is not applied must not touch the core"
        );
    }
    let differs = CORE
        .iter()
        .any(|name| read_param(&gpu, &dni, name, false) != read_param(&gpu, &bptt, name, false));
    assert!(
        differs,
        "an applied, trained SG never changed the core's updates"
    );
}

/// Character-level text: `ab..` patterns that a small LSTM predicts almost exactly.
fn toy_corpus(len: usize) -> (Vec<u32>, usize) {
    let phrase = b"the quick brown fox jumps over the lazy dog; ";
    let mut alphabet: Vec<u8> = phrase.to_vec();
    alphabet.sort_unstable();
    alphabet.dedup();
    let ids = phrase
        .iter()
        .cycle()
        .take(len)
        .map(|c| alphabet.iter().position(|a| a == c).unwrap() as u32)
        .collect();
    (ids, alphabet.len())
}

#[test]
fn softmax_model_learns_text_and_evaluates_held_out_bpc() {
    let gpu = gpu();
    let (train, vocab) = toy_corpus(20_000);
    let (valid, _) = toy_corpus(1_003);
    let (batch, t) = (8, 5);
    let mut tr = RecurrentTrainer::new(
        &gpu,
        RecurrentConfig {
            input: vocab,
            hidden: 48,
            output: vocab,
            batch,
            t,
            loss: OutputLoss::Softmax,
            method: Method::dni(),
            optim: OptimConfig::adam(1e-2),
            sg_optim: None,
            clip: None,
            sg: Default::default(),
            seed: 9,
        },
    )
    .unwrap();
    // 1003 tokens over 8 lanes: 125 per lane, 124 pairs, so the last window of 5 holds 4 real steps.
    let mut eval = EvalStream::new(&valid, batch, t, None).unwrap();
    let before = tr.evaluate_tokens(|i, o| eval.next_window(i, o)).unwrap();
    assert_eq!(before.chars as usize, eval.total_chars());
    assert_eq!(before.chars, 124 * 8);
    let uniform = (vocab as f64).log2();
    assert!(
        (before.bpc() - uniform).abs() < 0.5,
        "untrained {:.3} vs uniform {uniform:.3}",
        before.bpc()
    );

    let mut stream = dni_tasks::CharStream::new(&train, batch).unwrap();
    let (mut ins, mut tgts) = (Vec::new(), Vec::new());
    for _ in 0..400 {
        stream.next_window(t, &mut ins, &mut tgts);
        tr.train_window_tokens(&ins, &tgts).unwrap();
    }
    let m = tr.read_metrics().unwrap();
    assert_eq!(m.scored as usize, 400 * batch * t);
    eval.reset();
    let after = tr.evaluate_tokens(|i, o| eval.next_window(i, o)).unwrap();
    assert_eq!(after.chars, before.chars);
    assert!(
        after.bpc() < 0.7,
        "held-out BPC {:.3} (before {:.3})",
        after.bpc(),
        before.bpc()
    );
    // Evaluation leaves training alone: a second pass gives the same numbers.
    eval.reset();
    let again = tr.evaluate_tokens(|i, o| eval.next_window(i, o)).unwrap();
    assert_eq!(again, after);
}

#[test]
fn bad_input_is_an_error() {
    let gpu = gpu();
    let mut bad = copy_config(Method::Bptt, 8, 1e-3);
    bad.hidden = 0;
    assert!(matches!(
        RecurrentTrainer::new(&gpu, bad),
        Err(Error::Config {
            field: "hidden",
            ..
        })
    ));
    let mut bad = copy_config(Method::Dni { sg_scale: -1.0 }, 8, 1e-3);
    assert!(matches!(
        RecurrentTrainer::new(&gpu, bad.clone()),
        Err(Error::Config { .. })
    ));
    bad.method = Method::Bptt;
    let mut tr = RecurrentTrainer::new(&gpu, bad).unwrap();
    let n = T * B * dni_tasks::copy::WIDTH;
    let e = tr.train_window(&vec![0.0; n - 1], &vec![0.0; n], &vec![0.0; n]);
    assert!(
        matches!(e, Err(Error::Input { what: "inputs", .. })),
        "{e:?}"
    );
    assert!(matches!(
        tr.train_window_tokens(&[0; T * B], &[0; T * B]),
        Err(Error::Mode(_))
    ));
    assert_eq!(tr.windows_trained(), 0);

    let mut lm = RecurrentTrainer::new(
        &gpu,
        RecurrentConfig {
            loss: OutputLoss::Softmax,
            ..copy_config(Method::Bptt, 8, 1e-3)
        },
    )
    .unwrap();
    let mut ids = vec![0u32; T * B];
    ids[7] = 10;
    let e = lm.train_window_tokens(&ids, &vec![0; T * B]);
    assert!(matches!(e, Err(Error::Token { id: 10, .. })), "{e:?}");
}

/// The aux task at every step needs the next window's inputs, the per-step kernels and a
/// bit-vector task; each missing piece is an error that says so, and nothing is trained.
#[test]
fn the_every_step_aux_task_says_what_it_needs() {
    let gpu = gpu();
    let every = copy_config(
        Method::DniAux {
            sg_scale: 0.1,
            aux_weight: 1.0,
            every_step: true,
        },
        8,
        1e-3,
    );
    let e = RecurrentTrainer::with_path(&gpu, every.clone(), StepPath::FusedStreaming);
    assert!(
        matches!(&e, Err(Error::Group(why)) if why.contains("every step")),
        "{:?}",
        e.err()
    );
    let softmax = RecurrentConfig {
        loss: OutputLoss::Softmax,
        ..every.clone()
    };
    assert!(matches!(
        RecurrentTrainer::new(&gpu, softmax),
        Err(Error::Config {
            field: "aux_every_step",
            ..
        })
    ));
    let mut tr = RecurrentTrainer::new(&gpu, every).unwrap();
    assert_eq!(tr.path(), StepPath::PerStep);
    let n = T * B * dni_tasks::copy::WIDTH;
    let zeros = vec![0.0; n];
    let e = tr.train_window(&zeros, &zeros, &zeros);
    assert!(matches!(e, Err(Error::Mode(_))), "{e:?}");
    let e = tr.train_window_ahead(&zeros, &zeros, &zeros, &zeros[1..]);
    assert!(
        matches!(
            e,
            Err(Error::Input {
                what: "next_inputs",
                ..
            })
        ),
        "{e:?}"
    );
    assert_eq!(tr.windows_trained(), 0);
    tr.train_window_ahead(&zeros, &zeros, &zeros, &zeros)
        .unwrap();
    assert_eq!(tr.windows_trained(), 1);
}

/// `[rows, k]·[k, n]` (+ bias), and with the left operand transposed.
fn mm(a: &[f64], b: &[f64], rows: usize, k: usize, n: usize, bias: Option<&[f64]>) -> Vec<f64> {
    let mut out = vec![0.0; rows * n];
    for r in 0..rows {
        for j in 0..n {
            out[r * n + j] = bias.map_or(0.0, |v| v[j])
                + (0..k).map(|q| a[r * k + q] * b[q * n + j]).sum::<f64>();
        }
    }
    out
}
fn mm_ta(a: &[f64], b: &[f64], rows: usize, k: usize, n: usize) -> Vec<f64> {
    // aᵀ·b with a [rows, k], b [rows, n] -> [k, n]
    let mut out = vec![0.0; k * n];
    for r in 0..rows {
        for i in 0..k {
            for j in 0..n {
                out[i * n + j] += a[r * k + i] * b[r * n + j];
            }
        }
    }
    out
}
fn mm_tb(a: &[f64], b: &[f64], rows: usize, n: usize, k: usize) -> Vec<f64> {
    // a·bᵀ with a [rows, n], b [k, n] -> [rows, k]
    let mut out = vec![0.0; rows * k];
    for r in 0..rows {
        for i in 0..k {
            out[r * k + i] = (0..n).map(|j| a[r * n + j] * b[i * n + j]).sum();
        }
    }
    out
}
fn col_sum(a: &[f64], cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; cols];
    for (i, v) in a.iter().enumerate() {
        out[i % cols] += v;
    }
    out
}

/// One DNI + Aux step with a non-zero SG model and aux head, recomputed on the CPU in f64 from the
/// parameters and state the GPU step started from: every parameter gradient must match.
#[test]
fn dni_aux_step_matches_a_cpu_reference_per_step() {
    dni_aux_step_matches_a_cpu_reference(StepPath::PerStep, 12, false);
}

#[test]
fn dni_aux_step_matches_a_cpu_reference_fused_streaming() {
    dni_aux_step_matches_a_cpu_reference(StepPath::FusedStreaming, 12, false);
}

#[test]
fn dni_aux_step_matches_a_cpu_reference_fused_cached() {
    dni_aux_step_matches_a_cpu_reference(StepPath::FusedCached, 16, false);
}

/// The aux task at every step: each `A(h_t)` onto `M(s_{t+T})`, read from the next window run
/// forward from `s_last`.
#[test]
fn dni_aux_every_step_matches_a_cpu_reference() {
    dni_aux_step_matches_a_cpu_reference(StepPath::PerStep, 12, true);
}

/// One DNI + Aux step (batch 4, T = 3: fewer lanes than a fused workgroup owns) against a CPU
/// computation of every gradient from the parameters and state read back before it.
fn dni_aux_step_matches_a_cpu_reference(path: StepPath, h: usize, every_step: bool) {
    use dni_kernels::reference::lstm::{window_backward, window_forward, Dims, Params};
    let gpu = gpu();
    let (i, o, b, t) = (10, 10, 4, 3);
    let (sg_scale, aux_weight) = (0.1f64, 0.7f64);
    let mut cfg = copy_config(
        Method::DniAux {
            sg_scale: sg_scale as f32,
            aux_weight: aux_weight as f32,
            every_step,
        },
        h,
        2e-2,
    );
    cfg.batch = b;
    cfg.t = t;
    cfg.sg_optim = Some(OptimConfig::adam(2e-2));
    let mut tr = RecurrentTrainer::with_path(&gpu, cfg, path).unwrap();
    assert_eq!(tr.path(), path);
    let mut rng = dni_kernels::testing::Lcg::new(21);
    let n = t * b * i;
    let data = |rng: &mut dni_kernels::testing::Lcg| -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let bit = |rng: &mut dni_kernels::testing::Lcg| (rng.next_u64() & 1) as f32;
        let x = (0..n).map(|_| bit(rng)).collect();
        let y = (0..n).map(|_| bit(rng)).collect();
        let m = (0..n).map(|k| if k % 3 == 0 { 0.0 } else { 1.0 }).collect();
        (x, y, m)
    };
    // Move the SG model and the aux head away from zero first. The every-step aux reads the next
    // window's inputs (here: fresh ones, the trainer cannot tell).
    let train =
        |tr: &mut RecurrentTrainer, x: &[f32], y: &[f32], m: &[f32], next: &[f32]| match every_step
        {
            true => tr.train_window_ahead(x, y, m, next).unwrap(),
            false => tr.train_window(x, y, m).unwrap(),
        };
    for _ in 0..12 {
        let (x, y, m) = data(&mut rng);
        let next = data(&mut rng).0;
        train(&mut tr, &x, &y, &m, &next);
    }
    let f64s = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<f64>>();
    let value = |name: &str| f64s(read_param(&gpu, &tr, name, false));
    let (w_x, w_h, bias) = (value("lstm.w_x"), value("lstm.w_h"), value("lstm.bias"));
    let (w_o, b_o) = (value("readout.w"), value("readout.b"));
    let (w_m, b_m) = (value("sg.w"), value("sg.b"));
    let (w_a, b_a) = (value("aux.w"), value("aux.b"));
    assert!(w_m.iter().any(|&v| v != 0.0) && w_a.iter().any(|&v| v != 0.0));
    let s0 = f64s(tr.read_state().unwrap());
    let (x, y, m) = data(&mut rng);
    let x_next = data(&mut rng).0;
    train(&mut tr, &x, &y, &m, &x_next);

    // The CPU step.
    let d = Dims {
        input: i,
        hidden: h,
        batch: b,
        steps: t,
    };
    let p = Params {
        w_x: &w_x,
        w_h: &w_h,
        bias: &bias,
    };
    let xs = f64s(x);
    let fwd = window_forward(d, p, &xs, &s0);
    let logits = mm(&fwd.h_seq, &w_o, t * b, h, o, Some(&b_o));
    let inv_b = 1.0 / b as f64;
    let dlogits: Vec<f64> = (0..logits.len())
        .map(|k| inv_b * m[k] as f64 * (1.0 / (1.0 + (-logits[k]).exp()) - y[k] as f64))
        .collect();
    let dw_o = mm_ta(&fwd.h_seq, &dlogits, t * b, h, o);
    let db_o = col_sum(&dlogits, o);
    let mut dh_seq = mm_tb(&dlogits, &w_o, t * b, o, h);
    let sg_end = mm(&fwd.s_last, &w_m, b, 2 * h, 2 * h, Some(&b_m));
    let ds_last: Vec<f64> = sg_end.iter().map(|v| sg_scale * inv_b * v).collect();
    // The aux head's rows and targets: h_1 onto M(s_T), or every h_t onto M(s_{t+T}) from the
    // next window run forward from s_T.
    let (aux_rows, aux_target) = match every_step {
        false => (b, sg_end.clone()),
        true => {
            let ahead = window_forward(d, p, &f64s(x_next.clone()), &fwd.s_last);
            let mut states = vec![0.0; t * b * 2 * h];
            for row in 0..t * b {
                let hc = &mut states[row * 2 * h..(row + 1) * 2 * h];
                hc[..h].copy_from_slice(&ahead.h_seq[row * h..(row + 1) * h]);
                // c_seq starts at c_0, the lookahead's first state: row + B is c_{t+1}.
                hc[h..].copy_from_slice(&ahead.c_seq[(row + b) * h..(row + b + 1) * h]);
            }
            (t * b, mm(&states, &w_m, t * b, 2 * h, 2 * h, Some(&b_m)))
        }
    };
    // At every step the aux loss is the mean over the window's T steps.
    let aux_factor = aux_weight * inv_b / if every_step { t as f64 } else { 1.0 };
    let h_aux = &fwd.h_seq[..aux_rows * h];
    let pred = mm(h_aux, &w_a, aux_rows, h, 2 * h, Some(&b_a));
    let dpred: Vec<f64> = pred
        .iter()
        .zip(&aux_target)
        .map(|(p, s)| aux_factor * (p - s))
        .collect();
    let dw_a = mm_ta(h_aux, &dpred, aux_rows, h, 2 * h);
    let db_a = col_sum(&dpred, 2 * h);
    let dh_aux = mm_tb(&dpred, &w_a, aux_rows, 2 * h, h);
    dh_seq[..aux_rows * h]
        .iter_mut()
        .zip(&dh_aux)
        .for_each(|(a, v)| *a += v);
    let g = window_backward(d, p, &xs, &fwd, &dh_seq, Some(&ds_last));
    let at_start = mm(&s0, &w_m, b, 2 * h, 2 * h, Some(&b_m));
    let dat: Vec<f64> = at_start
        .iter()
        .zip(&g.ds0)
        .map(|(p, d)| inv_b * (p - b as f64 * d))
        .collect();
    let dw_m = mm_ta(&s0, &dat, b, 2 * h, 2 * h);
    let db_m = col_sum(&dat, 2 * h);

    for (name, want) in [
        ("lstm.w_x", &g.dw_x),
        ("lstm.w_h", &g.dw_h),
        ("lstm.bias", &g.dbias),
        ("readout.w", &dw_o),
        ("readout.b", &db_o),
        ("sg.w", &dw_m),
        ("sg.b", &db_m),
        ("aux.w", &dw_a),
        ("aux.b", &db_a),
    ] {
        let got = read_param(&gpu, &tr, name, true);
        let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
        let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        assert!(scale > 0.0, "{name}: reference gradient is zero");
        dni_kernels::testing::assert_close(&got, &want, 2e-3, 2e-4 * scale, name);
    }
}

/// After warm-up, a training window compiles no pipeline and creates no bind group: everything a
/// step binds is built once. Uses its own `Gpu` so parallel tests cannot move the counters.
#[test]
fn steady_state_windows_build_nothing_new() {
    let gpu = Gpu::new(&dni_kernels::GpuOptions::default()).unwrap();
    let mut tr = RecurrentTrainer::new(&gpu, copy_config(Method::dni_aux(), 16, 1e-2)).unwrap();
    let mut stream = TaskStream::new(CopyKind::Copy, B, 5, CurriculumConfig::default()).unwrap();
    let mut w = Window::default();
    let mut step = |tr: &mut RecurrentTrainer| {
        stream.next_window(T, &mut w);
        tr.train_window(&w.inputs, &w.targets, &w.mask).unwrap();
    };
    for _ in 0..3 {
        step(&mut tr);
    }
    tr.read_metrics().unwrap();
    let before = (gpu.pipelines_compiled(), gpu.bind_groups_cached());
    assert!(before.0 > 0 && before.1 > 0, "{before:?}");
    for _ in 0..20 {
        step(&mut tr);
    }
    tr.read_metrics().unwrap();
    let after = (gpu.pipelines_compiled(), gpu.bind_groups_cached());
    assert_eq!(
        before, after,
        "(pipelines, bind groups) grew during steady-state training"
    );
}
