//! Reference LSTM: the cell, and a truncated-BPTT window forward and backward, in f64 so that
//! finite differences of it are accurate. Gate order i, f, g, o; a state `[B, 2H]` holds h in
//! columns `0..H` and c in `H..2H`; sequences are `[T, B, ·]`, time-major.

pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Sizes of a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub input: usize,
    pub hidden: usize,
    pub batch: usize,
    pub steps: usize,
}

/// Weights: `w_x` `[I, 4H]`, `w_h` `[H, 4H]`, `bias` `[4H]`.
#[derive(Clone, Copy, Debug)]
pub struct Params<'a> {
    pub w_x: &'a [f64],
    pub w_h: &'a [f64],
    pub bias: &'a [f64],
}

/// One cell step: `gates_pre` `[B, 4H]`, `c_prev` `[B, H]` -> (activated gates, c, h).
pub fn cell_forward(
    gates_pre: &[f64],
    c_prev: &[f64],
    batch: usize,
    hidden: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let hd = hidden;
    let mut gates = vec![0.0; batch * 4 * hd];
    let mut c = vec![0.0; batch * hd];
    let mut h = vec![0.0; batch * hd];
    for b in 0..batch {
        for j in 0..hd {
            let z = |g: usize| gates_pre[b * 4 * hd + g * hd + j];
            let (i, f, gg, o) = (sigmoid(z(0)), sigmoid(z(1)), z(2).tanh(), sigmoid(z(3)));
            let cv = f * c_prev[b * hd + j] + i * gg;
            for (g, v) in [i, f, gg, o].into_iter().enumerate() {
                gates[b * 4 * hd + g * hd + j] = v;
            }
            c[b * hd + j] = cv;
            h[b * hd + j] = o * cv.tanh();
        }
    }
    (gates, c, h)
}

/// One cell step backward: from the activated gates, `c_prev`, `c` and the incoming `dh`, `dc`
/// (all `[B, ·]`) -> (`dgates_pre` `[B, 4H]`, `dc_prev` `[B, H]`).
#[allow(clippy::too_many_arguments)]
pub fn cell_backward(
    gates: &[f64],
    c_prev: &[f64],
    c: &[f64],
    dh: &[f64],
    dc: &[f64],
    batch: usize,
    hidden: usize,
) -> (Vec<f64>, Vec<f64>) {
    let hd = hidden;
    let mut dpre = vec![0.0; batch * 4 * hd];
    let mut dc_prev = vec![0.0; batch * hd];
    for b in 0..batch {
        for j in 0..hd {
            let k = b * hd + j;
            let gate = |g: usize| gates[b * 4 * hd + g * hd + j];
            let (i, f, gg, o) = (gate(0), gate(1), gate(2), gate(3));
            let tc = c[k].tanh();
            // dc_t in total: the incoming dc plus the path through h = o·tanh(c).
            let dct = dc[k] + dh[k] * o * (1.0 - tc * tc);
            let d = [
                dct * gg * i * (1.0 - i),
                dct * c_prev[k] * f * (1.0 - f),
                dct * i * (1.0 - gg * gg),
                dh[k] * tc * o * (1.0 - o),
            ];
            for (g, v) in d.into_iter().enumerate() {
                dpre[b * 4 * hd + g * hd + j] = v;
            }
            dc_prev[k] = dct * f;
        }
    }
    (dpre, dc_prev)
}

/// Splits a state `[B, 2H]` into (h, c), each `[B, H]`.
pub fn state_split(s: &[f64], batch: usize, hidden: usize) -> (Vec<f64>, Vec<f64>) {
    let mut h = Vec::with_capacity(batch * hidden);
    let mut c = Vec::with_capacity(batch * hidden);
    for row in s.chunks(2 * hidden).take(batch) {
        h.extend_from_slice(&row[..hidden]);
        c.extend_from_slice(&row[hidden..]);
    }
    (h, c)
}

/// Joins h and c (`[B, H]` each) into a state `[B, 2H]`.
pub fn state_join(h: &[f64], c: &[f64], batch: usize, hidden: usize) -> Vec<f64> {
    let mut s = Vec::with_capacity(batch * 2 * hidden);
    for b in 0..batch {
        s.extend_from_slice(&h[b * hidden..(b + 1) * hidden]);
        s.extend_from_slice(&c[b * hidden..(b + 1) * hidden]);
    }
    s
}

/// `[rows, k] · [k, n]` (+ a row vector).
fn mm(a: &[f64], b: &[f64], rows: usize, k: usize, n: usize, bias: Option<&[f64]>) -> Vec<f64> {
    let mut out = vec![0.0; rows * n];
    for r in 0..rows {
        for j in 0..n {
            let mut s = bias.map_or(0.0, |v| v[j]);
            for kk in 0..k {
                s += a[r * k + kk] * b[kk * n + j];
            }
            out[r * n + j] = s;
        }
    }
    out
}

/// What a window forward produces and its backward needs.
#[derive(Clone, Debug)]
pub struct Forward {
    /// Activated gates, `[T, B, 4H]`.
    pub gates: Vec<f64>,
    /// c_0..c_T, `[T+1, B, H]`.
    pub c_seq: Vec<f64>,
    /// h_0..h_T, `[T+1, B, H]`.
    pub h_all: Vec<f64>,
    /// h_1..h_T, `[T, B, H]`.
    pub h_seq: Vec<f64>,
    /// `[h_T | c_T]`, `[B, 2H]`.
    pub s_last: Vec<f64>,
}

/// Runs `T` steps from `s0` over `x` `[T, B, I]`.
pub fn window_forward(d: Dims, p: Params, x: &[f64], s0: &[f64]) -> Forward {
    let (bh, h4) = (d.batch * d.hidden, 4 * d.hidden);
    let (h0, c0) = state_split(s0, d.batch, d.hidden);
    let mut gates = Vec::with_capacity(d.steps * d.batch * h4);
    let mut c_seq = c0;
    let mut h_all = h0;
    for t in 0..d.steps {
        let xt = &x[t * d.batch * d.input..(t + 1) * d.batch * d.input];
        let hp = &h_all[t * bh..(t + 1) * bh];
        let cp = &c_seq[t * bh..(t + 1) * bh];
        let mut pre = mm(xt, p.w_x, d.batch, d.input, h4, Some(p.bias));
        let rec = mm(hp, p.w_h, d.batch, d.hidden, h4, None);
        pre.iter_mut().zip(&rec).for_each(|(a, r)| *a += r);
        let (g, c, h) = cell_forward(&pre, cp, d.batch, d.hidden);
        gates.extend(g);
        c_seq.extend(c);
        h_all.extend(h);
    }
    let h_seq = h_all[bh..].to_vec();
    let s_last = state_join(
        &h_all[d.steps * bh..],
        &c_seq[d.steps * bh..],
        d.batch,
        d.hidden,
    );
    Forward {
        gates,
        c_seq,
        h_all,
        h_seq,
        s_last,
    }
}

/// Gradients of a window.
#[derive(Clone, Debug)]
pub struct Grads {
    pub dw_x: Vec<f64>,
    pub dw_h: Vec<f64>,
    pub dbias: Vec<f64>,
    /// Gradient at the window's first state, `[B, 2H]`.
    pub ds0: Vec<f64>,
    /// `[T, B, I]`.
    pub dx: Vec<f64>,
}

/// Backpropagates `dh_seq` `[T, B, H]` (the gradient at every output) and `ds_last` `[B, 2H]`
/// (the gradient at the last state; `None` = 0) through the window `fwd` computed from `x`.
pub fn window_backward(
    d: Dims,
    p: Params,
    x: &[f64],
    fwd: &Forward,
    dh_seq: &[f64],
    ds_last: Option<&[f64]>,
) -> Grads {
    let (bh, h4, hd) = (d.batch * d.hidden, 4 * d.hidden, d.hidden);
    let (mut dh_rec, mut dc) = match ds_last {
        Some(s) => state_split(s, d.batch, hd),
        None => (vec![0.0; bh], vec![0.0; bh]),
    };
    let mut g = Grads {
        dw_x: vec![0.0; d.input * h4],
        dw_h: vec![0.0; hd * h4],
        dbias: vec![0.0; h4],
        ds0: Vec::new(),
        dx: vec![0.0; d.steps * d.batch * d.input],
    };
    for t in (0..d.steps).rev() {
        let dh: Vec<f64> = dh_seq[t * bh..(t + 1) * bh]
            .iter()
            .zip(&dh_rec)
            .map(|(a, b)| a + b)
            .collect();
        let (dpre, dc_prev) = cell_backward(
            &fwd.gates[t * d.batch * h4..(t + 1) * d.batch * h4],
            &fwd.c_seq[t * bh..(t + 1) * bh],
            &fwd.c_seq[(t + 1) * bh..(t + 2) * bh],
            &dh,
            &dc,
            d.batch,
            hd,
        );
        let xt = &x[t * d.batch * d.input..(t + 1) * d.batch * d.input];
        let hp = &fwd.h_all[t * bh..(t + 1) * bh];
        for b in 0..d.batch {
            for n in 0..h4 {
                let dz = dpre[b * h4 + n];
                g.dbias[n] += dz;
                for i in 0..d.input {
                    g.dw_x[i * h4 + n] += xt[b * d.input + i] * dz;
                    g.dx[(t * d.batch + b) * d.input + i] += dz * p.w_x[i * h4 + n];
                }
                for k in 0..hd {
                    g.dw_h[k * h4 + n] += hp[b * hd + k] * dz;
                }
            }
        }
        // dh_{t-1} through the recurrence: dgates_pre · W_hᵀ.
        for b in 0..d.batch {
            for k in 0..hd {
                dh_rec[b * hd + k] = (0..h4).map(|n| dpre[b * h4 + n] * p.w_h[k * h4 + n]).sum();
            }
        }
        dc = dc_prev;
    }
    g.ds0 = state_join(&dh_rec, &dc, d.batch, hd);
    g
}
