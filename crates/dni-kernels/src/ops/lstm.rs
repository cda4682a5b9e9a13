//! The LSTM: a fused cell (forward and backward) and [`LstmWindow`], the truncated-BPTT driver.
//!
//! Gate order i, f, g, o. A state tensor is `[B, 2H]`: columns `0..H` hold h, `H..2H` hold c.
//! Sequences are time-major, `[T, B, ·]`.
//!
//! # Dispatches per window
//!
//! Forward, `2T + 2`: the input projection `x·W_x + b` for the whole window (one matmul over
//! `T·B` rows), splitting `s0` into h and c (one), then per step the recurrent matmul
//! `h_{t-1}·W_h` and the fused cell. T = 5: 12; T = 20: 42.
//!
//! Backward, `2T + 5`, plus one with `dx`: splitting the incoming last-state gradient (one), per
//! step the fused cell backward and the recurrent matmul `dgates_t·W_hᵀ`, joining dh_0 and dc_0
//! into `ds0` (one), then `dW_x = xᵀ·dgates` and `dW_h = h_prevᵀ·dgates` (one matmul each over
//! the window) and `db` (one column sum); `dx = dgates·W_xᵀ` is one more matmul. T = 5: 15 (16
//! with dx); T = 20: 45 (46). [`LstmWindow::forward_dispatches`] and
//! [`LstmWindow::backward_dispatches`] return these counts.
//!
//! Everything is recorded into the caller's encoder; nothing touches the host. The per-step cell
//! kernels take the step index in their uniform parameters, so a window caches one bind group
//! per step (built on the first window, reused after).

use bytemuck::{Pod, Zeroable};

use crate::error::{shape_err, Result};
use crate::gpu::{grid_1d, Encoder, Gpu};
use crate::ops::matmul::{matmul, Matmul};
use crate::ops::reduce::col_sum;
use crate::pipeline::{Entry, Kernel, Slot};
use crate::tensor::Tensor;

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    batch: u32,
    hidden: u32,
    t: u32,
    steps: u32,
}

const R: Slot = Slot::Read;
const W: Slot = Slot::ReadWrite;
const S_CELL_FWD: &[Slot] = &[Slot::Uniform, R, R, W, W, W];
const S_CELL_BWD: &[Slot] = &[Slot::Uniform, R, R, R, R, R, W, W];
const S_WIN_FWD: &[Slot] = &[Slot::Uniform, R, W, W, W, W, W, W];
const S_WIN_BWD: &[Slot] = &[Slot::Uniform, R, R, R, R, W, W, W];
const S_STATE: &[Slot] = &[Slot::Uniform, R, W, W];
const S_JOIN: &[Slot] = &[Slot::Uniform, R, R, W];

const fn entry(name: &'static str, slots: &'static [Slot]) -> Entry {
    Entry::new(Kernel::Lstm, name, slots)
}
const CELL_FORWARD: Entry = entry("cell_forward", S_CELL_FWD);
const CELL_BACKWARD: Entry = entry("cell_backward", S_CELL_BWD);
const WINDOW_FORWARD: Entry = entry("window_forward", S_WIN_FWD);
const WINDOW_BACKWARD: Entry = entry("window_backward", S_WIN_BWD);
const STATE_SPLIT: Entry = entry("state_split", S_STATE);
const STATE_JOIN: Entry = entry("state_join", S_JOIN);

/// Every entry point these launchers dispatch, for the contract test.
pub const ENTRIES: &[Entry] = &[
    CELL_FORWARD,
    CELL_BACKWARD,
    WINDOW_FORWARD,
    WINDOW_BACKWARD,
    STATE_SPLIT,
    STATE_JOIN,
];

/// Weights of one LSTM layer: `w_x` `[I, 4H]`, `w_h` `[H, 4H]`, `bias` `[4H]`.
#[derive(Clone, Copy, Debug)]
pub struct LstmParams<'a> {
    pub w_x: &'a Tensor,
    pub w_h: &'a Tensor,
    pub bias: &'a Tensor,
}

/// Gradients of [`LstmParams`], same shapes; overwritten by [`LstmWindow::backward`].
#[derive(Clone, Copy, Debug)]
pub struct LstmGrads<'a> {
    pub dw_x: &'a Tensor,
    pub dw_h: &'a Tensor,
    pub dbias: &'a Tensor,
}

fn launch(enc: &mut Encoder, entry: &Entry, params: Params, tensors: &[&Tensor]) -> Result<()> {
    let gpu = enc.gpu().clone();
    let pipeline = gpu.pipeline_for(entry, &[])?;
    let bind = gpu.bind(&pipeline, bytemuck::bytes_of(&params), tensors)?;
    enc.dispatch(
        &pipeline,
        &bind,
        grid_1d((params.batch * params.hidden) as usize, WG),
    );
    Ok(())
}

fn expect(op: &'static str, what: &str, t: &Tensor, rows: usize, cols: usize) -> Result<()> {
    if t.as_matrix() != (rows, cols) {
        return shape_err(
            op,
            format!("{what} is {:?}, expected {rows}x{cols}", t.shape()),
        );
    }
    Ok(())
}

fn expect_len(op: &'static str, what: &str, t: &Tensor, len: usize) -> Result<()> {
    if t.len() != len {
        return shape_err(
            op,
            format!("{what} is {:?}, expected {len} elements", t.shape()),
        );
    }
    Ok(())
}

/// Outputs must be distinct from each other and from the inputs: a buffer cannot be bound twice
/// in one dispatch when either binding is writable.
fn distinct(
    op: &'static str,
    outputs: &[(&str, &Tensor)],
    inputs: &[(&str, &Tensor)],
) -> Result<()> {
    for (k, (name, t)) in outputs.iter().enumerate() {
        for (other, u) in outputs[k + 1..].iter().chain(inputs) {
            if t.id() == u.id() {
                return shape_err(op, format!("{name} and {other} are the same buffer"));
            }
        }
    }
    Ok(())
}

fn params(batch: usize, hidden: usize, t: usize, steps: usize) -> Params {
    Params {
        batch: batch as u32,
        hidden: hidden as u32,
        t: t as u32,
        steps: steps as u32,
    }
}

/// The fused cell, one step: `gates_pre` `[B, 4H]` (already `x·W_x + h·W_h + b`), `c_prev`
/// `[B, H]` -> the activated gates `[B, 4H]`, `c` `[B, H]` and `h` `[B, H]`.
pub fn lstm_cell_forward(
    enc: &mut Encoder,
    gates_pre: &Tensor,
    c_prev: &Tensor,
    gates: &Tensor,
    c: &Tensor,
    h: &Tensor,
) -> Result<()> {
    const OP: &str = "lstm_cell_forward";
    let (b, hd) = c_prev.as_matrix();
    expect(OP, "gates_pre", gates_pre, b, 4 * hd)?;
    expect(OP, "gates", gates, b, 4 * hd)?;
    expect(OP, "c", c, b, hd)?;
    expect(OP, "h", h, b, hd)?;
    distinct(
        OP,
        &[("gates", gates), ("c", c), ("h", h)],
        &[("gates_pre", gates_pre), ("c_prev", c_prev)],
    )?;
    launch(
        enc,
        &CELL_FORWARD,
        params(b, hd, 0, 1),
        &[gates_pre, c_prev, gates, c, h],
    )
}

/// The cell backward, one step: from the activated `gates` `[B, 4H]`, `c_prev` and `c` `[B, H]`
/// and the gradients `dh`, `dc` `[B, H]` arriving at h and c, writes `dgates_pre` `[B, 4H]` (the
/// gradient w.r.t. the gate pre-activations) and `dc_prev` `[B, H]`.
#[allow(clippy::too_many_arguments)]
pub fn lstm_cell_backward(
    enc: &mut Encoder,
    gates: &Tensor,
    c_prev: &Tensor,
    c: &Tensor,
    dh: &Tensor,
    dc: &Tensor,
    dgates_pre: &Tensor,
    dc_prev: &Tensor,
) -> Result<()> {
    const OP: &str = "lstm_cell_backward";
    let (b, hd) = c_prev.as_matrix();
    expect(OP, "gates", gates, b, 4 * hd)?;
    expect(OP, "c", c, b, hd)?;
    expect(OP, "dh", dh, b, hd)?;
    expect(OP, "dc", dc, b, hd)?;
    expect(OP, "dgates_pre", dgates_pre, b, 4 * hd)?;
    expect(OP, "dc_prev", dc_prev, b, hd)?;
    distinct(
        OP,
        &[("dgates_pre", dgates_pre), ("dc_prev", dc_prev)],
        &[
            ("gates", gates),
            ("c_prev", c_prev),
            ("c", c),
            ("dh", dh),
            ("dc", dc),
        ],
    )?;
    launch(
        enc,
        &CELL_BACKWARD,
        params(b, hd, 0, 1),
        &[gates, c_prev, c, dh, dc, dgates_pre, dc_prev],
    )
}

/// Splits a state `s` `[B, 2H]` into `h` and `c` `[B, H]`.
pub fn state_split(enc: &mut Encoder, s: &Tensor, h: &Tensor, c: &Tensor) -> Result<()> {
    const OP: &str = "state_split";
    let (b, hd) = h.as_matrix();
    expect(OP, "s", s, b, 2 * hd)?;
    expect(OP, "c", c, b, hd)?;
    distinct(OP, &[("h", h), ("c", c)], &[("s", s)])?;
    split_into(enc, s, h, c, b, hd)
}

/// The split without shape checks: `h` and `c` receive their first `B·H` elements.
fn split_into(
    enc: &mut Encoder,
    s: &Tensor,
    h: &Tensor,
    c: &Tensor,
    b: usize,
    hd: usize,
) -> Result<()> {
    launch(enc, &STATE_SPLIT, params(b, hd, 0, 1), &[s, h, c])
}

/// Joins `h` and `c` `[B, H]` into a state `s` `[B, 2H]`.
pub fn state_join(enc: &mut Encoder, h: &Tensor, c: &Tensor, s: &Tensor) -> Result<()> {
    const OP: &str = "state_join";
    let (b, hd) = h.as_matrix();
    expect(OP, "c", c, b, hd)?;
    expect(OP, "s", s, b, 2 * hd)?;
    distinct(OP, &[("s", s)], &[("h", h), ("c", c)])?;
    launch(enc, &STATE_JOIN, params(b, hd, 0, 1), &[h, c, s])
}

/// Workspace for one truncated-BPTT window of `steps` steps over `batch` lanes; built once,
/// reused every window. A forward fills it; the backward that follows reads what it saved, so
/// run them in that order on the same window.
#[derive(Debug)]
pub struct LstmWindow {
    input: usize,
    hidden: usize,
    batch: usize,
    steps: usize,
    /// `[T, B, 4H]`: the input projection, overwritten step by step with the activated gates.
    gates: Tensor,
    /// `[T+1, B, H]`: c_0..c_T.
    c_seq: Tensor,
    /// `[T, B, H]`: h_1..h_T, the window's outputs.
    h_seq: Tensor,
    /// `[T, B, H]`: h_0..h_{T-1}, the recurrent inputs (left operand of dW_h).
    h_prev: Tensor,
    /// `[B, H]`: the latest h, the recurrent matmul's operand.
    h_cur: Tensor,
    /// `[B, 4H]`: h_{t-1}·W_h.
    rec: Tensor,
    /// `[B, 2H]`: the state after the last step.
    s_last: Tensor,
    /// `[T, B, 4H]`: gradients w.r.t. the gate pre-activations.
    dgates: Tensor,
    /// `[B, 4H]`: this step's dgates, the backward recurrent matmul's operand.
    dg_cur: Tensor,
    /// `[B, H]`: the gradient reaching h_t through the recurrence.
    dh_rec: Tensor,
    /// `[B, H]`: the gradient reaching c_t.
    dc: Tensor,
    /// `[B, 2H]` of zeros: the last-state gradient of plain truncated BPTT.
    zero_state: Tensor,
}

impl LstmWindow {
    pub fn new(gpu: &Gpu, input: usize, hidden: usize, batch: usize, steps: usize) -> Result<Self> {
        if input == 0 || hidden == 0 || batch == 0 || steps == 0 {
            return shape_err(
                "LstmWindow::new",
                format!("input {input}, hidden {hidden}, batch {batch}, steps {steps}: all must be positive"),
            );
        }
        let (t, b, h) = (steps, batch, hidden);
        Ok(Self {
            input,
            hidden,
            batch,
            steps,
            gates: Tensor::zeros(gpu, &[t, b, 4 * h])?,
            c_seq: Tensor::zeros(gpu, &[t + 1, b, h])?,
            h_seq: Tensor::zeros(gpu, &[t, b, h])?,
            h_prev: Tensor::zeros(gpu, &[t, b, h])?,
            h_cur: Tensor::zeros(gpu, &[b, h])?,
            rec: Tensor::zeros(gpu, &[b, 4 * h])?,
            s_last: Tensor::zeros(gpu, &[b, 2 * h])?,
            dgates: Tensor::zeros(gpu, &[t, b, 4 * h])?,
            dg_cur: Tensor::zeros(gpu, &[b, 4 * h])?,
            dh_rec: Tensor::zeros(gpu, &[b, h])?,
            dc: Tensor::zeros(gpu, &[b, h])?,
            zero_state: Tensor::zeros(gpu, &[b, 2 * h])?,
        })
    }

    pub fn input(&self) -> usize {
        self.input
    }
    pub fn hidden(&self) -> usize {
        self.hidden
    }
    pub fn batch(&self) -> usize {
        self.batch
    }
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Hidden outputs h_1..h_T, `[T, B, H]` (feed a readout with one matmul over `[T·B, H]`).
    pub fn h_seq(&self) -> &Tensor {
        &self.h_seq
    }

    /// Cell states c_0..c_T, `[T+1, B, H]` (c_0 from the window's first state).
    pub fn c_seq(&self) -> &Tensor {
        &self.c_seq
    }

    /// The state after the last step, `[B, 2H]`. It may be passed back as the next window's
    /// `s0`: forward reads `s0` before it writes this.
    pub fn s_last(&self) -> &Tensor {
        &self.s_last
    }

    /// Dispatches one [`forward`](Self::forward) records.
    pub fn forward_dispatches(&self) -> usize {
        2 * self.steps + 2
    }

    /// Dispatches one [`backward`](Self::backward) records, with or without `dx`.
    pub fn backward_dispatches(&self, with_dx: bool) -> usize {
        2 * self.steps + 5 + usize::from(with_dx)
    }

    fn check_params(&self, op: &'static str, p: &LstmParams) -> Result<()> {
        let h4 = 4 * self.hidden;
        expect(op, "w_x", p.w_x, self.input, h4)?;
        expect(op, "w_h", p.w_h, self.hidden, h4)?;
        expect_len(op, "bias", p.bias, h4)
    }

    /// Forward `steps` steps from the state `s0` `[B, 2H]` over `x` `[T, B, I]`. The input
    /// projection `x·W_x + b` for the whole window is one matmul; per step only the recurrence
    /// `h_{t-1}·W_h` (a matmul) and the fused cell run. Saves what backward needs.
    pub fn forward(&self, enc: &mut Encoder, p: LstmParams, x: &Tensor, s0: &Tensor) -> Result<()> {
        const OP: &str = "LstmWindow::forward";
        let (t_n, b, hd) = (self.steps, self.batch, self.hidden);
        self.check_params(OP, &p)?;
        expect(OP, "x", x, t_n * b, self.input)?;
        expect(OP, "s0", s0, b, 2 * hd)?;
        matmul(enc, x, p.w_x, &self.gates, Matmul::default().bias(p.bias))?;
        split_into(enc, s0, &self.h_cur, &self.c_seq, b, hd)?;
        for t in 0..t_n {
            matmul(enc, &self.h_cur, p.w_h, &self.rec, Matmul::default())?;
            launch(
                enc,
                &WINDOW_FORWARD,
                params(b, hd, t, t_n),
                &[
                    &self.rec,
                    &self.gates,
                    &self.c_seq,
                    &self.h_seq,
                    &self.h_prev,
                    &self.h_cur,
                    &self.s_last,
                ],
            )?;
        }
        Ok(())
    }

    /// Backward through the window last run forward (from `x`; `s0` is only shape-checked, the
    /// forward saved h_0 and c_0). `dh_seq` `[T, B, H]` is the loss gradient at each output;
    /// `ds_last` `[B, 2H]` is the gradient arriving at the window's last state (the synthetic
    /// gradient; `None` = zero, i.e. plain truncated BPTT). Only the recurrence is sequential:
    /// `dW_x = xᵀ·dgates` and `dW_h = h_prevᵀ·dgates` are one matmul each over the window's
    /// `T·B` rows, `dbias` one column sum. Writes `ds0` `[B, 2H]`, the gradient at the window's
    /// first state (the bootstrapped SG target), and `dx` `[T, B, I]` if given.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        enc: &mut Encoder,
        p: LstmParams,
        x: &Tensor,
        s0: &Tensor,
        dh_seq: &Tensor,
        ds_last: Option<&Tensor>,
        grads: LstmGrads,
        ds0: &Tensor,
        dx: Option<&Tensor>,
    ) -> Result<()> {
        const OP: &str = "LstmWindow::backward";
        let (t_n, b, hd, h4) = (self.steps, self.batch, self.hidden, 4 * self.hidden);
        self.check_params(OP, &p)?;
        expect(OP, "x", x, t_n * b, self.input)?;
        expect(OP, "s0", s0, b, 2 * hd)?;
        expect(OP, "dh_seq", dh_seq, t_n * b, hd)?;
        if let Some(s) = ds_last {
            expect(OP, "ds_last", s, b, 2 * hd)?;
        }
        expect(OP, "dw_x", grads.dw_x, self.input, h4)?;
        expect(OP, "dw_h", grads.dw_h, hd, h4)?;
        expect_len(OP, "dbias", grads.dbias, h4)?;
        expect(OP, "ds0", ds0, b, 2 * hd)?;
        if let Some(dx) = dx {
            expect(OP, "dx", dx, t_n * b, self.input)?;
        }
        let mut outputs = vec![
            ("dw_x", grads.dw_x),
            ("dw_h", grads.dw_h),
            ("dbias", grads.dbias),
            ("ds0", ds0),
        ];
        if let Some(dx) = dx {
            outputs.push(("dx", dx));
        }
        let mut inputs = vec![("w_x", p.w_x), ("w_h", p.w_h), ("x", x), ("dh_seq", dh_seq)];
        if let Some(s) = ds_last {
            inputs.push(("ds_last", s));
        }
        distinct(OP, &outputs, &inputs)?;

        split_into(
            enc,
            ds_last.unwrap_or(&self.zero_state),
            &self.dh_rec,
            &self.dc,
            b,
            hd,
        )?;
        for t in (0..t_n).rev() {
            launch(
                enc,
                &WINDOW_BACKWARD,
                params(b, hd, t, t_n),
                &[
                    &self.gates,
                    &self.c_seq,
                    dh_seq,
                    &self.dh_rec,
                    &self.dc,
                    &self.dgates,
                    &self.dg_cur,
                ],
            )?;
            matmul(
                enc,
                &self.dg_cur,
                p.w_h,
                &self.dh_rec,
                Matmul::default().tb(),
            )?;
        }
        launch(
            enc,
            &STATE_JOIN,
            params(b, hd, 0, 1),
            &[&self.dh_rec, &self.dc, ds0],
        )?;
        matmul(enc, x, &self.dgates, grads.dw_x, Matmul::default().ta())?;
        matmul(
            enc,
            &self.h_prev,
            &self.dgates,
            grads.dw_h,
            Matmul::default().ta(),
        )?;
        col_sum(enc, &self.dgates, grads.dbias, 1.0, 0.0)?;
        if let Some(dx) = dx {
            matmul(enc, &self.dgates, p.w_x, dx, Matmul::default().tb())?;
        }
        Ok(())
    }
}
