//! LSTM cell and truncated-BPTT window: GPU vs the f64 CPU reference at odd shapes, the
//! reference backward vs finite differences, and the GPU backward vs finite differences of the
//! GPU forward.

use dni_kernels::ops::lstm::{
    lstm_cell_backward, lstm_cell_forward, state_join, state_split, LstmGrads, LstmParams,
    LstmWindow,
};
use dni_kernels::reference::lstm as rl;
use dni_kernels::testing::{assert_close, gpu, Lcg};
use dni_kernels::{Error, Gpu, Kernel, Tensor};

fn f64v(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn f32v(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn close(got: &[f32], want: &[f64], rtol: f32, atol: f32, what: &str) {
    assert_close(got, &f32v(want), rtol, atol, what);
}

fn scaled(rng: &mut Lcg, n: usize, s: f32) -> Vec<f32> {
    rng.vec(n).into_iter().map(|v| v * s).collect()
}

fn upload(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_slice(gpu, shape, data).unwrap()
}

/// Shapes of the cell tests: (batch, hidden). The last two exceed a 256-invocation workgroup.
const CELL_SHAPES: &[(usize, usize)] = &[
    (1, 1),
    (1, 5),
    (3, 1),
    (3, 33),
    (17, 5),
    (17, 127),
    (1, 127),
    (3, 127),
    (17, 1),
    (17, 33),
    (300, 7),
];

/// Pre-activations spread over the interesting range, plus a few huge ones that must saturate
/// cleanly (a driver's tanh via exp overflows to NaN there without the clamp).
fn preacts(rng: &mut Lcg, n: usize) -> Vec<f32> {
    let mut v = scaled(rng, n, 3.0);
    for (k, x) in v.iter_mut().enumerate() {
        if k % 11 == 7 {
            *x = if k % 2 == 0 { 95.0 } else { -120.0 };
        }
    }
    v
}

#[test]
fn cell_forward_matches_reference() {
    let gpu = gpu();
    for &(b, h) in CELL_SHAPES {
        let mut rng = Lcg::new((b * 1000 + h) as u64);
        let pre = preacts(&mut rng, b * 4 * h);
        let cp = scaled(&mut rng, b * h, 2.0);
        let g_pre = upload(&gpu, &[b, 4 * h], &pre);
        let g_cp = upload(&gpu, &[b, h], &cp);
        let gates = Tensor::zeros(&gpu, &[b, 4 * h]).unwrap();
        let c = Tensor::zeros(&gpu, &[b, h]).unwrap();
        let hh = Tensor::zeros(&gpu, &[b, h]).unwrap();
        let mut enc = gpu.encoder();
        lstm_cell_forward(&mut enc, &g_pre, &g_cp, &gates, &c, &hh).unwrap();
        gpu.submit(enc);
        let got = gpu.read_many(&[&gates, &c, &hh]).unwrap();
        let (wg, wc, wh) = rl::cell_forward(&f64v(&pre), &f64v(&cp), b, h);
        let what = format!("cell forward B={b} H={h}");
        close(&got[0], &wg, 1e-5, 1e-6, &format!("{what} gates"));
        close(&got[1], &wc, 1e-5, 1e-6, &format!("{what} c"));
        close(&got[2], &wh, 1e-5, 1e-6, &format!("{what} h"));
    }
}

#[test]
fn cell_backward_matches_reference() {
    let gpu = gpu();
    for &(b, h) in CELL_SHAPES {
        let mut rng = Lcg::new((b * 1000 + h + 7) as u64);
        let pre = preacts(&mut rng, b * 4 * h);
        let cp = scaled(&mut rng, b * h, 2.0);
        let (gates, c, _) = rl::cell_forward(&f64v(&pre), &f64v(&cp), b, h);
        // The kernel sees f32 gates and c; feed the reference exactly those.
        let (gates, c) = (f32v(&gates), f32v(&c));
        let dh = rng.vec(b * h);
        let dc = rng.vec(b * h);
        let t = |shape: &[usize], d: &[f32]| upload(&gpu, shape, d);
        let (g_gates, g_cp, g_c) = (t(&[b, 4 * h], &gates), t(&[b, h], &cp), t(&[b, h], &c));
        let (g_dh, g_dc) = (t(&[b, h], &dh), t(&[b, h], &dc));
        let dpre = Tensor::zeros(&gpu, &[b, 4 * h]).unwrap();
        let dcp = Tensor::zeros(&gpu, &[b, h]).unwrap();
        let mut enc = gpu.encoder();
        lstm_cell_backward(&mut enc, &g_gates, &g_cp, &g_c, &g_dh, &g_dc, &dpre, &dcp).unwrap();
        gpu.submit(enc);
        let got = gpu.read_many(&[&dpre, &dcp]).unwrap();
        let (wd, wdc) = rl::cell_backward(
            &f64v(&gates),
            &f64v(&cp),
            &f64v(&c),
            &f64v(&dh),
            &f64v(&dc),
            b,
            h,
        );
        let what = format!("cell backward B={b} H={h}");
        close(&got[0], &wd, 1e-5, 1e-6, &format!("{what} dgates_pre"));
        close(&got[1], &wdc, 1e-5, 1e-6, &format!("{what} dc_prev"));
    }
}

#[test]
fn reference_cell_backward_matches_finite_differences() {
    let (b, h) = (2, 3);
    let mut rng = Lcg::new(5);
    let pre = f64v(&scaled(&mut rng, b * 4 * h, 2.0));
    let cp = f64v(&rng.vec(b * h));
    let dh = f64v(&rng.vec(b * h));
    let dc = f64v(&rng.vec(b * h));
    // L = Σ dh·h + Σ dc·c, so dL/dh = dh and dL/dc = dc.
    let loss = |pre: &[f64], cp: &[f64]| {
        let (_, c, hh) = rl::cell_forward(pre, cp, b, h);
        (0..b * h)
            .map(|k| dh[k] * hh[k] + dc[k] * c[k])
            .sum::<f64>()
    };
    let (gates, c, _) = rl::cell_forward(&pre, &cp, b, h);
    let (dpre, dcp) = rl::cell_backward(&gates, &cp, &c, &dh, &dc, b, h);
    let eps = 1e-6;
    for k in 0..pre.len() {
        let (mut p, mut m) = (pre.clone(), pre.clone());
        p[k] += eps;
        m[k] -= eps;
        let fd = (loss(&p, &cp) - loss(&m, &cp)) / (2.0 * eps);
        assert!(
            (fd - dpre[k]).abs() < 1e-7 + 1e-6 * fd.abs(),
            "dgates_pre[{k}]: fd {fd} vs {}",
            dpre[k]
        );
    }
    for k in 0..cp.len() {
        let (mut p, mut m) = (cp.clone(), cp.clone());
        p[k] += eps;
        m[k] -= eps;
        let fd = (loss(&pre, &p) - loss(&pre, &m)) / (2.0 * eps);
        assert!(
            (fd - dcp[k]).abs() < 1e-7 + 1e-6 * fd.abs(),
            "dc_prev[{k}]: fd {fd} vs {}",
            dcp[k]
        );
    }
}

#[test]
fn state_split_and_join_match_reference() {
    let gpu = gpu();
    for (b, h) in [(1, 1), (3, 5), (17, 127)] {
        let mut rng = Lcg::new((b * 13 + h) as u64);
        let s = rng.vec(b * 2 * h);
        let g_s = upload(&gpu, &[b, 2 * h], &s);
        let (gh, gc) = (
            Tensor::zeros(&gpu, &[b, h]).unwrap(),
            Tensor::zeros(&gpu, &[b, h]).unwrap(),
        );
        let back = Tensor::zeros(&gpu, &[b, 2 * h]).unwrap();
        let mut enc = gpu.encoder();
        state_split(&mut enc, &g_s, &gh, &gc).unwrap();
        state_join(&mut enc, &gh, &gc, &back).unwrap();
        gpu.submit(enc);
        let got = gpu.read_many(&[&gh, &gc, &back]).unwrap();
        let (wh, wc) = rl::state_split(&f64v(&s), b, h);
        close(&got[0], &wh, 0.0, 0.0, "split h");
        close(&got[1], &wc, 0.0, 0.0, "split c");
        close(&got[2], &rl::state_join(&wh, &wc, b, h), 0.0, 0.0, "join");
    }
}

/// Random weights, inputs and initial state of one window, on the host and on the GPU.
struct Case {
    d: rl::Dims,
    w_x: Vec<f32>,
    w_h: Vec<f32>,
    bias: Vec<f32>,
    x: Vec<f32>,
    s0: Vec<f32>,
    g_wx: Tensor,
    g_wh: Tensor,
    g_bias: Tensor,
    g_x: Tensor,
    g_s0: Tensor,
}

impl Case {
    fn new(gpu: &Gpu, d: rl::Dims, seed: u64) -> Self {
        let mut rng = Lcg::new(seed);
        let h4 = 4 * d.hidden;
        // Weights scaled so gate pre-activations are O(1): neither linear nor saturated.
        let w_x = scaled(&mut rng, d.input * h4, 1.5 / (d.input as f32).sqrt());
        let w_h = scaled(&mut rng, d.hidden * h4, 1.5 / (d.hidden as f32).sqrt());
        let bias = scaled(&mut rng, h4, 0.5);
        let x = rng.vec(d.steps * d.batch * d.input);
        let s0 = rng.vec(d.batch * 2 * d.hidden);
        Self {
            g_wx: upload(gpu, &[d.input, h4], &w_x),
            g_wh: upload(gpu, &[d.hidden, h4], &w_h),
            g_bias: upload(gpu, &[h4], &bias),
            g_x: upload(gpu, &[d.steps, d.batch, d.input], &x),
            g_s0: upload(gpu, &[d.batch, 2 * d.hidden], &s0),
            d,
            w_x,
            w_h,
            bias,
            x,
            s0,
        }
    }

    fn gpu_params(&self) -> LstmParams<'_> {
        LstmParams {
            w_x: &self.g_wx,
            w_h: &self.g_wh,
            bias: &self.g_bias,
        }
    }

    fn window(&self, gpu: &Gpu) -> LstmWindow {
        let d = self.d;
        LstmWindow::new(gpu, d.input, d.hidden, d.batch, d.steps).unwrap()
    }

    /// The f64 copies of the weights, alive as long as the returned tuple.
    fn host64(&self) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        (f64v(&self.w_x), f64v(&self.w_h), f64v(&self.bias))
    }
}

fn ref_params<'a>(w: &'a (Vec<f64>, Vec<f64>, Vec<f64>)) -> rl::Params<'a> {
    rl::Params {
        w_x: &w.0,
        w_h: &w.1,
        bias: &w.2,
    }
}

fn window_dims() -> Vec<rl::Dims> {
    let mut v = Vec::new();
    for steps in [1, 3, 7] {
        for input in [3, 10] {
            for hidden in [5, 33] {
                for batch in [1, 4] {
                    v.push(rl::Dims {
                        input,
                        hidden,
                        batch,
                        steps,
                    });
                }
            }
        }
    }
    // Larger than a 64x64 matmul tile in every dimension of the projection and weight gradients.
    v.push(rl::Dims {
        input: 70,
        hidden: 67,
        batch: 17,
        steps: 5,
    });
    v
}

#[test]
fn window_forward_matches_reference() {
    let gpu = gpu();
    for (n, d) in window_dims().into_iter().enumerate() {
        let case = Case::new(&gpu, d, 100 + n as u64);
        let win = case.window(&gpu);
        let mut enc = gpu.encoder();
        win.forward(&mut enc, case.gpu_params(), &case.g_x, &case.g_s0)
            .unwrap();
        gpu.submit(enc);
        let got = gpu.read_many(&[win.h_seq(), win.s_last()]).unwrap();
        let w = case.host64();
        let want = rl::window_forward(d, ref_params(&w), &f64v(&case.x), &f64v(&case.s0));
        let what = format!("window forward {d:?}");
        close(&got[0], &want.h_seq, 3e-5, 3e-6, &format!("{what} h_seq"));
        close(&got[1], &want.s_last, 3e-5, 3e-6, &format!("{what} s_last"));
    }
}

#[test]
fn window_carries_state_between_windows() {
    // Two windows of T steps, the second started from the first's s_last (the same tensor), equal
    // one reference window of 2T steps.
    let gpu = gpu();
    let d = rl::Dims {
        input: 3,
        hidden: 5,
        batch: 3,
        steps: 4,
    };
    let long = rl::Dims { steps: 8, ..d };
    let case = Case::new(&gpu, long, 77);
    let win = LstmWindow::new(&gpu, d.input, d.hidden, d.batch, d.steps).unwrap();
    let half = d.steps * d.batch * d.input;
    let x1 = upload(&gpu, &[d.steps, d.batch, d.input], &case.x[..half]);
    let x2 = upload(&gpu, &[d.steps, d.batch, d.input], &case.x[half..]);
    let mut enc = gpu.encoder();
    win.forward(&mut enc, case.gpu_params(), &x1, &case.g_s0)
        .unwrap();
    gpu.submit(enc);
    let first = gpu.read(win.h_seq()).unwrap();
    let mut enc = gpu.encoder();
    win.forward(&mut enc, case.gpu_params(), &x2, win.s_last())
        .unwrap();
    gpu.submit(enc);
    let got = gpu.read_many(&[win.h_seq(), win.s_last()]).unwrap();
    let w = case.host64();
    let want = rl::window_forward(long, ref_params(&w), &f64v(&case.x), &f64v(&case.s0));
    let bh = d.batch * d.hidden;
    close(
        &first,
        &want.h_seq[..d.steps * bh],
        3e-5,
        3e-6,
        "first window h_seq",
    );
    close(
        &got[0],
        &want.h_seq[d.steps * bh..],
        3e-5,
        3e-6,
        "second window h_seq",
    );
    close(&got[1], &want.s_last, 3e-5, 3e-6, "second window s_last");
}

#[allow(clippy::type_complexity)]
fn gpu_backward(
    gpu: &Gpu,
    case: &Case,
    win: &LstmWindow,
    dh_seq: &[f32],
    ds_last: Option<&[f32]>,
    with_dx: bool,
) -> (
    Vec<f32>,
    Vec<f32>,
    Vec<f32>,
    Vec<f32>,
    Option<Vec<f32>>,
    usize,
) {
    let d = case.d;
    let h4 = 4 * d.hidden;
    let g_dh = upload(gpu, &[d.steps, d.batch, d.hidden], dh_seq);
    let g_dsl = ds_last.map(|v| upload(gpu, &[d.batch, 2 * d.hidden], v));
    let dw_x = Tensor::zeros(gpu, &[d.input, h4]).unwrap();
    let dw_h = Tensor::zeros(gpu, &[d.hidden, h4]).unwrap();
    let db = Tensor::zeros(gpu, &[h4]).unwrap();
    let ds0 = Tensor::zeros(gpu, &[d.batch, 2 * d.hidden]).unwrap();
    let dx = Tensor::zeros(gpu, &[d.steps, d.batch, d.input]).unwrap();
    let mut enc = gpu.encoder();
    win.forward(&mut enc, case.gpu_params(), &case.g_x, &case.g_s0)
        .unwrap();
    let before = enc.dispatches();
    win.backward(
        &mut enc,
        case.gpu_params(),
        &case.g_x,
        &case.g_s0,
        &g_dh,
        g_dsl.as_ref(),
        LstmGrads {
            dw_x: &dw_x,
            dw_h: &dw_h,
            dbias: &db,
        },
        &ds0,
        with_dx.then_some(&dx),
    )
    .unwrap();
    let dispatches = enc.dispatches() - before;
    gpu.submit(enc);
    let mut got = gpu.read_many(&[&dw_x, &dw_h, &db, &ds0, &dx]).unwrap();
    let dx_v = got.pop().unwrap();
    let ds0_v = got.pop().unwrap();
    let db_v = got.pop().unwrap();
    let dwh_v = got.pop().unwrap();
    let dwx_v = got.pop().unwrap();
    (
        dwx_v,
        dwh_v,
        db_v,
        ds0_v,
        with_dx.then_some(dx_v),
        dispatches,
    )
}

#[test]
fn window_backward_matches_reference() {
    let gpu = gpu();
    for (n, d) in window_dims().into_iter().enumerate() {
        let case = Case::new(&gpu, d, 200 + n as u64);
        let win = case.window(&gpu);
        let mut rng = Lcg::new(300 + n as u64);
        let dh_seq = rng.vec(d.steps * d.batch * d.hidden);
        let ds_last = rng.vec(d.batch * 2 * d.hidden);
        let w = case.host64();
        let fwd = rl::window_forward(d, ref_params(&w), &f64v(&case.x), &f64v(&case.s0));
        for with_sg in [false, true] {
            // dx is skipped in one case of four, which must leave the rest unchanged.
            let with_dx = with_sg || n % 2 == 0;
            let sg = with_sg.then_some(&ds_last[..]);
            let (dwx, dwh, db, ds0, dx, _) = gpu_backward(&gpu, &case, &win, &dh_seq, sg, with_dx);
            let sg64 = sg.map(f64v);
            let want = rl::window_backward(
                d,
                ref_params(&w),
                &f64v(&case.x),
                &fwd,
                &f64v(&dh_seq),
                sg64.as_deref(),
            );
            let what = format!("window backward {d:?} ds_last={with_sg}");
            // Weight gradients sum over T·B rows: scale the absolute tolerance with that.
            let atol = 5e-6 * ((d.steps * d.batch) as f32).sqrt();
            close(&dwx, &want.dw_x, 3e-4, atol, &format!("{what} dW_x"));
            close(&dwh, &want.dw_h, 3e-4, atol, &format!("{what} dW_h"));
            close(&db, &want.dbias, 3e-4, atol, &format!("{what} db"));
            close(&ds0, &want.ds0, 3e-4, 5e-6, &format!("{what} ds0"));
            if let Some(dx) = dx {
                close(&dx, &want.dx, 3e-4, 5e-6, &format!("{what} dx"));
            }
        }
    }
}

#[test]
fn window_dispatch_counts_match_documentation() {
    let gpu = gpu();
    for (steps, fwd, bwd) in [(5, 12, 15), (20, 42, 45)] {
        let d = rl::Dims {
            input: 3,
            hidden: 4,
            batch: 2,
            steps,
        };
        let case = Case::new(&gpu, d, steps as u64);
        let win = case.window(&gpu);
        let mut enc = gpu.encoder();
        win.forward(&mut enc, case.gpu_params(), &case.g_x, &case.g_s0)
            .unwrap();
        assert_eq!(enc.dispatches(), fwd, "forward dispatches at T={steps}");
        assert_eq!(win.forward_dispatches(), fwd);
        drop(enc);
        let dh = vec![0.5; steps * d.batch * d.hidden];
        let sg = vec![0.25; d.batch * 2 * d.hidden];
        for (with_sg, with_dx) in [(false, false), (true, false), (true, true)] {
            let sg = with_sg.then_some(&sg[..]);
            let (.., n) = gpu_backward(&gpu, &case, &win, &dh, sg, with_dx);
            let want = bwd + usize::from(with_dx);
            assert_eq!(
                n, want,
                "backward dispatches at T={steps} ds_last={with_sg} dx={with_dx}"
            );
            assert_eq!(win.backward_dispatches(with_dx), want);
        }
    }
}

/// L = Σ dh_seq·h_seq + Σ ds_last·s_last, the loss whose gradients the backward computes.
fn window_loss(
    d: rl::Dims,
    p: rl::Params,
    x: &[f64],
    s0: &[f64],
    dh_seq: &[f64],
    ds_last: Option<&[f64]>,
) -> f64 {
    let f = rl::window_forward(d, p, x, s0);
    let mut l: f64 = f.h_seq.iter().zip(dh_seq).map(|(a, b)| a * b).sum();
    if let Some(s) = ds_last {
        l += f.s_last.iter().zip(s).map(|(a, b)| a * b).sum::<f64>();
    }
    l
}

#[test]
fn reference_window_backward_matches_finite_differences() {
    let gpu = gpu();
    let d = rl::Dims {
        input: 3,
        hidden: 4,
        batch: 2,
        steps: 4,
    };
    let case = Case::new(&gpu, d, 9);
    let mut rng = Lcg::new(10);
    let dh_seq = f64v(&rng.vec(d.steps * d.batch * d.hidden));
    let ds_last = f64v(&rng.vec(d.batch * 2 * d.hidden));
    let (wx, wh, b) = case.host64();
    let (x, s0) = (f64v(&case.x), f64v(&case.s0));
    for sg in [None, Some(&ds_last[..])] {
        let p = rl::Params {
            w_x: &wx,
            w_h: &wh,
            bias: &b,
        };
        let fwd = rl::window_forward(d, p, &x, &s0);
        let g = rl::window_backward(d, p, &x, &fwd, &dh_seq, sg);
        let eps = 1e-6;
        // Which input to perturb, and the analytic gradient of each of its elements.
        let targets: [(&str, &Vec<f64>, &Vec<f64>); 5] = [
            ("w_x", &wx, &g.dw_x),
            ("w_h", &wh, &g.dw_h),
            ("bias", &b, &g.dbias),
            ("x", &x, &g.dx),
            ("s0", &s0, &g.ds0),
        ];
        for (name, base, grad) in targets {
            assert_eq!(base.len(), grad.len(), "{name}: gradient length");
            for k in 0..base.len() {
                let eval = |delta: f64| {
                    let mut v = base.clone();
                    v[k] += delta;
                    let pick =
                        |n: &str, orig: &Vec<f64>| if n == name { v.clone() } else { orig.clone() };
                    let (wx2, wh2, b2, x2, s2) = (
                        pick("w_x", &wx),
                        pick("w_h", &wh),
                        pick("bias", &b),
                        pick("x", &x),
                        pick("s0", &s0),
                    );
                    let p2 = rl::Params {
                        w_x: &wx2,
                        w_h: &wh2,
                        bias: &b2,
                    };
                    window_loss(d, p2, &x2, &s2, &dh_seq, sg)
                };
                let fd = (eval(eps) - eval(-eps)) / (2.0 * eps);
                assert!(
                    (fd - grad[k]).abs() < 1e-7 + 1e-6 * fd.abs(),
                    "{name}[{k}] ds_last={}: finite difference {fd} vs backward {}",
                    sg.is_some(),
                    grad[k]
                );
            }
        }
    }
}

#[test]
fn gpu_window_backward_matches_gpu_finite_differences() {
    let gpu = gpu();
    let d = rl::Dims {
        input: 2,
        hidden: 3,
        batch: 2,
        steps: 3,
    };
    let case = Case::new(&gpu, d, 31);
    let win = case.window(&gpu);
    let mut rng = Lcg::new(32);
    let dh_seq = rng.vec(d.steps * d.batch * d.hidden);
    let ds_last = rng.vec(d.batch * 2 * d.hidden);
    let (dwx, dwh, db, ds0, dx, _) = gpu_backward(&gpu, &case, &win, &dh_seq, Some(&ds_last), true);
    let dx = dx.unwrap();

    // Loss of one GPU forward, summed on the host in f64.
    let loss = |wx: &[f32], wh: &[f32], b: &[f32], x: &[f32], s0: &[f32]| {
        let h4 = 4 * d.hidden;
        let p = (
            upload(&gpu, &[d.input, h4], wx),
            upload(&gpu, &[d.hidden, h4], wh),
            upload(&gpu, &[h4], b),
        );
        let gx = upload(&gpu, &[d.steps, d.batch, d.input], x);
        let gs = upload(&gpu, &[d.batch, 2 * d.hidden], s0);
        let mut enc = gpu.encoder();
        let params = LstmParams {
            w_x: &p.0,
            w_h: &p.1,
            bias: &p.2,
        };
        win.forward(&mut enc, params, &gx, &gs).unwrap();
        gpu.submit(enc);
        let out = gpu.read_many(&[win.h_seq(), win.s_last()]).unwrap();
        let dot = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| *x as f64 * *y as f64)
                .sum::<f64>()
        };
        dot(&out[0], &dh_seq) + dot(&out[1], &ds_last)
    };
    let eps = 1e-2f32;
    let mut inputs = [
        case.w_x.clone(),
        case.w_h.clone(),
        case.bias.clone(),
        case.x.clone(),
        case.s0.clone(),
    ];
    let grads = [&dwx, &dwh, &db, &dx, &ds0];
    let names = ["w_x", "w_h", "bias", "x", "s0"];
    let mut checked = 0;
    for which in 0..5 {
        // A spread of elements of every input keeps the test short.
        let n = inputs[which].len();
        for k in (0..n).step_by(n.div_ceil(6)) {
            let orig = inputs[which][k];
            let mut at = |delta: f32| {
                inputs[which][k] = orig + delta;
                let l = loss(&inputs[0], &inputs[1], &inputs[2], &inputs[3], &inputs[4]);
                inputs[which][k] = orig;
                l
            };
            let fd = ((at(eps) - at(-eps)) / (2.0 * eps as f64)) as f32;
            let an = grads[which][k];
            assert!(
                (fd - an).abs() <= 2e-3 + 1e-2 * an.abs(),
                "{}[{k}]: GPU finite difference {fd} vs GPU backward {an}",
                names[which]
            );
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} elements checked");
}

#[test]
fn launchers_reject_bad_shapes_and_aliased_outputs() {
    let gpu = gpu();
    let z = |shape: &[usize]| Tensor::zeros(&gpu, shape).unwrap();
    let (b, h) = (2, 3);
    let mut enc = gpu.encoder();
    let shape_err = |r: dni_kernels::Result<()>, what: &str| {
        assert!(
            matches!(r, Err(Error::Shape { .. })),
            "{what}: expected a shape error, got {r:?}"
        );
    };
    let (pre, cp, gates, c, hh) = (
        z(&[b, 4 * h]),
        z(&[b, h]),
        z(&[b, 4 * h]),
        z(&[b, h]),
        z(&[b, h]),
    );
    shape_err(
        lstm_cell_forward(&mut enc, &pre, &cp, &gates, &c, &z(&[b, h + 1])),
        "cell h wrong",
    );
    shape_err(
        lstm_cell_forward(&mut enc, &z(&[b, 3 * h]), &cp, &gates, &c, &hh),
        "cell pre wrong",
    );
    shape_err(
        lstm_cell_forward(&mut enc, &pre, &cp, &gates, &cp, &hh),
        "c aliases c_prev",
    );
    shape_err(
        lstm_cell_backward(&mut enc, &gates, &cp, &c, &hh, &c, &pre, &c),
        "dc_prev aliases dc",
    );

    let win = LstmWindow::new(&gpu, 2, h, b, 3).unwrap();
    let (wx, wh, bias) = (z(&[2, 4 * h]), z(&[h, 4 * h]), z(&[4 * h]));
    let p = LstmParams {
        w_x: &wx,
        w_h: &wh,
        bias: &bias,
    };
    let (x, s0) = (z(&[3, b, 2]), z(&[b, 2 * h]));
    shape_err(
        win.forward(&mut enc, p, &z(&[2, b, 2]), &s0),
        "x with T=2 in a T=3 window",
    );
    shape_err(win.forward(&mut enc, p, &x, &z(&[b, h])), "s0 without c");
    let bad = LstmParams { w_h: &wx, ..p };
    shape_err(win.forward(&mut enc, bad, &x, &s0), "w_h of w_x's shape");
    let (dwx, dwh, db, ds0, dh) = (
        z(&[2, 4 * h]),
        z(&[h, 4 * h]),
        z(&[4 * h]),
        z(&[b, 2 * h]),
        z(&[3, b, h]),
    );
    let grads = LstmGrads {
        dw_x: &dwx,
        dw_h: &dwh,
        dbias: &db,
    };
    shape_err(
        win.backward(
            &mut enc,
            p,
            &x,
            &s0,
            &z(&[3, b, h + 1]),
            None,
            grads,
            &ds0,
            None,
        ),
        "dh_seq wrong",
    );
    shape_err(
        win.backward(&mut enc, p, &x, &s0, &dh, Some(&ds0), grads, &ds0, None),
        "ds0 aliases ds_last",
    );
    let aliased = LstmGrads { dw_x: &wx, ..grads };
    shape_err(
        win.backward(&mut enc, p, &x, &s0, &dh, None, aliased, &ds0, None),
        "dW_x aliases W_x",
    );
    assert!(
        LstmWindow::new(&gpu, 2, 0, b, 3).is_err(),
        "zero hidden size"
    );
    // Sizes whose product wraps are an error, not a buffer of the wrapped size.
    let wrapped = LstmWindow::new(&gpu, 2, 4, usize::MAX / 2 + 1, 4)
        .unwrap_err()
        .to_string();
    assert!(wrapped.contains("more elements than"), "{wrapped}");
    // Nothing was recorded by the rejected calls.
    assert_eq!(enc.dispatches(), 0);
}

#[test]
fn lstm_wgsl_validates_and_translates_to_spirv() {
    let src = Kernel::Lstm.source();
    let module =
        naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{}", e.emit_to_string(src)));
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{}", e.emit_to_string(src)));
    naga::back::spv::write_vec(&module, &info, &naga::back::spv::Options::default(), None).unwrap();
}
