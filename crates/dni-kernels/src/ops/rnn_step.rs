//! A whole recurrent training step in four dispatches, for a group of independent runs.
//!
//! [`RnnStep`] owns flat buffers for K runs of one shape (an LSTM window of `T` steps over `B`
//! lanes with a linear readout, and optionally a linear synthetic-gradient model on `[h | c]` and
//! the aux head on `h_1`) and records one training step as:
//!
//! 1. `forward`: the whole window for a group of lanes per workgroup, looping over time in the
//!    kernel, with the readout, the loss and its gradient, `M(s0)`, `M(s_last)` and the aux head;
//! 2. `backward`: the reverse recurrence from the injected SG, and the SG model's gradient;
//! 3. `grads`: every weight gradient, `Σ aᵀ·d` per parameter;
//! 4. `update`: Adam or SGD-momentum over every run's parameters.
//!
//! `shaders/rnn_step.wgsl` documents the layouts. Nothing reads back: the step counters, the "SG
//! trained this window" flag and Adam's bias corrections live in the `ctl` buffer on the GPU. The
//! adapter needs subgroups of a fixed size of 8 to 64 and the shape must fit its limits
//! ([`does_not_fit`] says why not); elsewhere the per-step path
//! ([`LstmWindow`](crate::ops::lstm::LstmWindow)) serves. [`cached_unavailable`] says when the
//! CPU variant cannot run a shape.

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::{Encoder, Gpu};
use crate::pipeline::{Entry, Kernel, Slot};
use crate::tensor::Tensor;

/// Batch lanes one workgroup owns (`L` in the shader).
const LANES: usize = 8;
/// Largest output width the workgroup array of logits holds (`MAX_O`).
const MAX_OUTPUT: usize = 256;
/// Bytes of workgroup memory the shader declares (`sh_l` and `sh_r`).
const SHARED_BYTES: u32 = (2048 + 256) * 4;
/// Floats of control state per run (`CTL` in the shader).
pub const CTL: usize = 20;
/// Metric slots per (run, lane) (`METRICS` in the shader).
pub const METRICS: usize = 8;

/// `ctl` entries the host writes.
pub mod ctl {
    pub const INJECT: usize = 0;
    pub const TRAIN_SG: usize = 1;
    pub const AUX_WEIGHT: usize = 2;
    pub const LR: usize = 3;
    pub const SG_LR: usize = 4;
    pub const WINDOWS: usize = 5;
    pub const SG_TRAINED_NOW: usize = 6;
    pub const HAS_SG: usize = 11;
    pub const HAS_AUX: usize = 12;
    /// This window's gradient factors `min(1, clip / ‖g‖)`, written by the clip kernel and read
    /// only when `CLIP` is above 0.
    pub const CORE_GRAD_FACTOR: usize = 13;
    pub const SG_GRAD_FACTOR: usize = 14;
    /// The run's global-norm clip threshold (0: off).
    pub const CLIP: usize = 15;
    /// 1: the SG model regresses onto its targets divided by their running RMS, `sigma`, and
    /// `sigma·M` is injected; 0: `sigma` stays 1.
    pub const NORMALISE: usize = 16;
    /// `sigma`, written by the clip kernel when normalising; the host starts it at 1.
    pub const SG_TARGET_RMS: usize = 19;
}

/// Metric slots per lane.
pub mod metric {
    pub const NATS: usize = 0;
    pub const ERRORS: usize = 1;
    pub const SCORED: usize = 2;
    pub const SG_LOSS: usize = 3;
    pub const SG_ZERO_LOSS: usize = 4;
    pub const AUX_LOSS: usize = 5;
}

const R: Slot = Slot::Read;
const W: Slot = Slot::ReadWrite;
/// The window kernels (forward, backward): params, inputs, work, metrics, ctl, W_hᵀ.
const S_WINDOW: &[Slot] = &[Slot::Uniform, R, R, W, W, W, R];
const S_GRADS: &[Slot] = &[Slot::Uniform, R, W];
const S_UPDATE: &[Slot] = &[Slot::Uniform, W, R, W, W, R, W];
const S_CLIP: &[Slot] = &[Slot::Uniform, R, W, R];

const fn entry(name: &'static str, slots: &'static [Slot]) -> Entry {
    Entry::new(Kernel::RnnStep, name, slots)
}
// The window kernels of both variants share one bind group, so one recorder serves all four.
const FORWARD: Entry = entry("forward", S_WINDOW);
const BACKWARD: Entry = entry("backward", S_WINDOW);
const FORWARD_C: Entry = entry("forward_c", S_WINDOW);
const BACKWARD_C: Entry = entry("backward_c", S_WINDOW);
const GRADS: Entry = entry("grads", S_GRADS);
const GRADS_C: Entry = entry("grads_c", S_GRADS);
const CLIP: Entry = entry("clip", S_CLIP);
const UPDATE: Entry = entry("update", S_UPDATE);

/// Every entry point these launchers dispatch, for the contract test.
pub const ENTRIES: &[Entry] = &[
    FORWARD, BACKWARD, FORWARD_C, BACKWARD_C, GRADS, GRADS_C, CLIP, UPDATE,
];

/// The shape every run of a group shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RnnShape {
    pub input: usize,
    pub hidden: usize,
    pub output: usize,
    pub batch: usize,
    pub steps: usize,
    pub runs: usize,
    /// Softmax over the outputs with class-id targets; else independent sigmoid bits with a mask.
    pub softmax: bool,
    /// Whether the group holds SG models (any run uses DNI).
    pub has_sg: bool,
    /// Whether the group holds aux heads (any run uses DNI + Aux).
    pub has_aux: bool,
}

/// Which kernels record the window: `Cached` (CPU adapters with 8-wide subgroups and small
/// models: each lane keeps its weight columns in private memory for the whole window) or
/// `Streaming` (any adapter with subgroups: weights read from storage every step).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RnnVariant {
    /// `Cached` where it fits, else `Streaming`.
    #[default]
    Auto,
    Cached,
    Streaming,
}

/// Why the `Cached` kernels cannot run this shape here (`None` when they can). Their private
/// caches are fixed-size arrays in `shaders/rnn_step.wgsl` (`forward_c`, `backward_c`,
/// `grads_c`).
pub fn cached_unavailable(gpu: &Gpu, s: &RnnShape) -> Option<String> {
    let (i, h, o) = (s.input, s.hidden, s.output);
    let units = h / 8;
    let outs = o.div_ceil(8);
    // Saturating: any size that overflows is certainly too large.
    let gate_columns = units
        .saturating_mul(4)
        .saturating_mul(i.saturating_add(h).saturating_add(1));
    let readout = outs
        .saturating_mul(h.saturating_add(1))
        .saturating_add(units.saturating_mul(o));
    let operands = i.saturating_add(h).max(h.saturating_mul(4)).max(o);
    let checks = [
        (gpu.adapter().is_cpu(), "a CPU adapter"),
        (gpu.subgroup_size() == Some(8), "subgroups of exactly 8"),
        (
            h.is_multiple_of(8) && h <= 128,
            "hidden a multiple of 8, at most 128",
        ),
        (gate_columns <= 2560, "the gate columns to fit 2560 floats"),
        (readout <= 1280, "the readout to fit 1280 floats"),
        (
            units.saturating_mul(4).saturating_mul(h) <= 2560,
            "the rows of W_h to fit 2560 floats",
        ),
        (operands <= 512, "the step operands to fit 512 floats"),
        (
            s.steps.saturating_mul(s.batch) <= 512,
            "T·batch at most 512",
        ),
    ];
    checks
        .iter()
        .find(|(ok, _)| !ok)
        .map(|(_, need)| format!("the cached kernels need {need}"))
}

/// The update rule shared by a group (each run has its own learning rates in `ctl`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StepRule {
    Adam { beta1: f32, beta2: f32, eps: f32 },
    Sgd { momentum: f32 },
}

/// Offsets (in floats) of one run's parameters, work arena and input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RnnLayout {
    /// Parameters per run; `[0, off_r)` is the LSTM, then the readout, the SG model, the aux head.
    pub p_run: usize,
    pub off_r: usize,
    pub off_s: usize,
    pub off_a: usize,
    /// Input floats per run: x, then targets at `in_t`, then the mask at `in_m`.
    pub in_run: usize,
    pub in_t: usize,
    pub in_m: usize,
    /// Work-arena floats per run and the offsets of its regions.
    pub w_run: usize,
    w: WorkOffsets,
    /// Cumulative row octets of the four parameters' gradients (the grads grid's y).
    octets: [usize; 4],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct WorkOffsets {
    z: usize,
    hs: usize,
    s0: usize,
    dg: usize,
    dl: usize,
    dsg: usize,
    daux: usize,
    gates: usize,
    cs: usize,
    dhs: usize,
    at0: usize,
    inj: usize,
    dhr: usize,
    dcr: usize,
    state: usize,
    eval_state: usize,
}

fn too_large(what: &str) -> Error {
    Error::InvalidArgument {
        op: "RnnStep",
        detail: format!("{what} overflows the address range of a GPU buffer"),
    }
}

/// `a · b` with overflow reported.
fn mul(a: usize, b: usize, what: &str) -> Result<usize> {
    a.checked_mul(b).ok_or_else(|| too_large(what))
}

/// Sums region sizes into offsets: returns each region's start and the total.
fn carve(sizes: &[usize], what: &str) -> Result<(Vec<usize>, usize)> {
    let mut offs = Vec::with_capacity(sizes.len());
    let mut at = 0usize;
    for &s in sizes {
        offs.push(at);
        at = at.checked_add(s).ok_or_else(|| too_large(what))?;
    }
    Ok((offs, at))
}

impl RnnLayout {
    pub fn new(s: &RnnShape) -> Result<Self> {
        let (i, h, o, b, t) = (s.input, s.hidden, s.output, s.batch, s.steps);
        if [i, h, o, b, t, s.runs].contains(&0) {
            return Err(Error::InvalidArgument {
                op: "RnnStep",
                detail: format!("every size must be positive: {s:?}"),
            });
        }
        let h2 = mul(2, h, "hidden")?;
        // I + H (the LSTM's operand width) and I + H + 1 (with the bias row).
        let ih = i
            .checked_add(h)
            .ok_or_else(|| too_large("input + hidden"))?;
        let ih1 = ih
            .checked_add(1)
            .ok_or_else(|| too_large("input + hidden"))?;
        let h4 = mul(4, h, "hidden")?;
        let tb = mul(t, b, "T·batch")?;
        let lstm = mul(ih1, h4, "LSTM weights")?;
        let readout = mul(h + 1, o, "readout weights")?;
        let sg = if s.has_sg {
            mul(h2 + 1, h2, "SG model")?
        } else {
            0
        };
        let aux = if s.has_aux {
            mul(h + 1, h2, "aux head")?
        } else {
            0
        };
        // Each parameter block starts on a multiple of 4 floats: the update reads vec4s.
        let pad4 = |n: usize| n.div_ceil(4) * 4;
        let (p, p_run) = carve(
            &[pad4(lstm), pad4(readout), pad4(sg), pad4(aux)],
            "parameters",
        )?;
        let bh = mul(b, h, "batch·hidden")?;
        let bh2 = mul(b, h2, "batch·hidden")?;
        let sizes = [
            mul(tb, ih, "window")?,
            mul(tb, h, "window")?,
            bh2,
            mul(tb, h4, "window")?,
            mul(tb, o, "window")?,
            bh2,
            bh2,
            mul(tb, h4, "window")?,
            mul(t + 1, bh, "window")?,
            mul(tb, h, "window")?,
            bh2,
            bh2,
            bh,
            bh,
            bh2,
            bh2,
        ];
        let (w, w_run) = carve(&sizes, "work arena")?;
        let x = mul(tb, i, "input")?;
        let (targets, mask) = if s.softmax {
            (tb, 0)
        } else {
            (mul(tb, o, "targets")?, mul(tb, o, "mask")?)
        };
        let (inp, in_run) = carve(&[x, targets, mask], "input")?;
        // Weight rows (with the bias row) in octets, per parameter; absent ones have none.
        let q = |rows: usize, present: bool| {
            if present {
                rows.saturating_add(1).div_ceil(8)
            } else {
                0
            }
        };
        let q_l = q(ih, true);
        let q_r = q_l + q(h, true);
        let q_s = q_r + q(h2, s.has_sg);
        let q_a = q_s + q(h, s.has_aux);
        Ok(Self {
            octets: [q_l, q_r, q_s, q_a],
            p_run,
            off_r: p[1],
            off_s: p[2],
            off_a: p[3],
            in_run,
            in_t: inp[1],
            in_m: inp[2],
            w_run,
            w: WorkOffsets {
                z: w[0],
                hs: w[1],
                s0: w[2],
                dg: w[3],
                dl: w[4],
                dsg: w[5],
                daux: w[6],
                gates: w[7],
                cs: w[8],
                dhs: w[9],
                at0: w[10],
                inj: w[11],
                dhr: w[12],
                dcr: w[13],
                state: w[14],
                eval_state: w[15],
            },
        })
    }

    /// Offset of the carried training state `[B, 2H]` within a run's work arena.
    pub fn state(&self) -> usize {
        self.w.state
    }

    /// Offset of the evaluation state `[B, 2H]` within a run's work arena.
    pub fn eval_state(&self) -> usize {
        self.w.eval_state
    }

    /// Offset of the weight-gradient operand z `[T·B, I+H]` within a run's work arena.
    pub fn hidden_seq(&self) -> usize {
        self.w.hs
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Uniform {
    input: u32,
    hidden: u32,
    output: u32,
    batch: u32,
    steps: u32,
    runs: u32,
    softmax: u32,
    train: u32,
    p_run: u32,
    off_r: u32,
    off_s: u32,
    off_a: u32,
    w_run: u32,
    in_run: u32,
    in_t: u32,
    in_m: u32,
    w_z: u32,
    w_hs: u32,
    w_s0: u32,
    w_dg: u32,
    w_dl: u32,
    w_dsg: u32,
    w_daux: u32,
    w_gates: u32,
    w_cs: u32,
    w_dhs: u32,
    w_at0: u32,
    w_inj: u32,
    w_dhr: u32,
    w_dcr: u32,
    w_state: u32,
    metrics_off: u32,
    has_sg: u32,
    has_aux: u32,
    adam: u32,
    inv_b: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    momentum: f32,
    q_r: u32,
    q_s: u32,
    q_a: u32,
    q_end: u32,
}

/// Why a shape does not fit the fused kernels on an adapter (`None` when it fits).
pub fn does_not_fit(gpu: &Gpu, s: &RnnShape) -> Option<String> {
    let limits = gpu.limits();
    if limits.max_compute_workgroup_storage_size < SHARED_BYTES {
        return Some(format!(
            "the adapter offers {} bytes of workgroup memory, the fused kernels need {SHARED_BYTES}",
            limits.max_compute_workgroup_storage_size
        ));
    }
    match gpu.subgroup_size() {
        Some(sg) if sg >= 8 && 64 % sg == 0 => {}
        other => {
            return Some(format!(
                "the fused kernels share operands through subgroups of a fixed size of 8 to 64; this adapter has {}",
                other.map_or("none of a fixed size".to_string(), |s| format!("size {s}"))
            ))
        }
    }
    if s.output > MAX_OUTPUT {
        return Some(format!(
            "output {}: the fused kernels hold at most {MAX_OUTPUT} logits per lane in workgroup memory",
            s.output
        ));
    }
    match RnnLayout::new(s) {
        Err(e) => return Some(e.to_string()),
        Ok(l) => {
            let max = limits.max_storage_buffer_binding_size as usize / 4;
            for (what, per_run) in [
                ("parameters", l.p_run),
                ("work arena", l.w_run),
                ("input", l.in_run),
            ] {
                match per_run.checked_mul(s.runs) {
                    Some(n) if n <= max && n < u32::MAX as usize => {}
                    _ => {
                        return Some(format!(
                            "{} runs' {what} ({per_run} floats each) exceed the adapter's largest buffer of {max} floats",
                            s.runs
                        ))
                    }
                }
            }
            // Every grid dimension the kernels dispatch must be within the adapter's limit.
            let max_groups = limits.max_compute_workgroups_per_dimension as usize;
            let cols = (4 * s.hidden).max(s.output);
            for (what, groups) in [
                ("runs", s.runs),
                ("batch lanes / 8", s.batch.div_ceil(LANES)),
                ("parameters per run / 1024", l.p_run.div_ceil(1024)),
                ("gradient columns / 64", cols.div_ceil(64)),
                ("gradient row octets", l.octets[3]),
            ] {
                if groups > max_groups {
                    return Some(format!(
                        "{what} = {groups} workgroups exceed the adapter's {max_groups} per dimension"
                    ));
                }
            }
        }
    }
    None
}

/// Invocations per workgroup of the window kernels. On CPU adapters one subgroup: llvmpipe runs
/// a workgroup of one SIMD width without coroutines, so values stay in registers across the
/// kernels' barriers (measured: several times faster than 64 or 256 invocations). On GPUs one
/// invocation per gate column where the adapter allows: a multiple of the subgroup size, at most
/// 256 (the metric reduction holds 256 partials).
fn workgroup_size(gpu: &Gpu, s: &RnnShape, sg: u32) -> u32 {
    if gpu.adapter().is_cpu() {
        return sg;
    }
    let max_inv = gpu.limits().max_compute_invocations_per_workgroup.min(256);
    let columns = u32::try_from(s.hidden.saturating_mul(4)).unwrap_or(u32::MAX);
    let want = columns.div_ceil(sg).saturating_mul(sg);
    let cap = max_inv / sg * sg;
    want.clamp(sg, cap.max(sg))
}

/// The buffers and pipelines of one run group's fused training step.
pub struct RnnStep {
    shape: RnnShape,
    layout: RnnLayout,
    rule: StepRule,
    wgs: u32,
    subgroup: u32,
    cached: bool,
    /// Whether a training step records the clip kernel (some run clips its gradients or
    /// normalises its SG's targets).
    clipping: bool,
    /// Whether some run normalises its SG's targets (the clip kernel's `NORMALISE` constant).
    normalising: bool,
    /// `[K · P]` parameters, their gradients and the optimiser's two moments.
    pub params: Tensor,
    pub grads: Tensor,
    pub moment1: Tensor,
    pub moment2: Tensor,
    /// `[K · 4H · H]`: W_hᵀ of every run, refreshed by the update (the backward reads it).
    pub wht: Tensor,
    /// `[K · in_run]`: the window's inputs, targets and mask, written once per step.
    pub input: Tensor,
    /// `[K · w_run]`: saved activations, gradients and the carried states.
    pub work: Tensor,
    /// `[2 · K · B · METRICS]`: training metrics, then evaluation metrics.
    pub metrics: Tensor,
    /// `[K · CTL]`.
    pub ctl: Tensor,
}

impl std::fmt::Debug for RnnStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RnnStep({:?}, workgroup {})", self.shape, self.wgs)
    }
}

impl RnnStep {
    /// Allocates every buffer (parameters zero: the caller writes the initial weights).
    pub fn new(gpu: &Gpu, shape: RnnShape, rule: StepRule) -> Result<Self> {
        Self::with_variant(gpu, shape, rule, RnnVariant::Auto)
    }

    /// As [`new`](Self::new), with the kernel variant chosen (an error where it does not fit).
    pub fn with_variant(
        gpu: &Gpu,
        shape: RnnShape,
        rule: StepRule,
        variant: RnnVariant,
    ) -> Result<Self> {
        if let Some(why) = does_not_fit(gpu, &shape) {
            return Err(Error::InvalidArgument {
                op: "RnnStep::new",
                detail: why,
            });
        }
        let layout = RnnLayout::new(&shape)?;
        let cached = match (variant, cached_unavailable(gpu, &shape)) {
            (RnnVariant::Streaming, _) => false,
            (RnnVariant::Auto, why) => why.is_none(),
            (RnnVariant::Cached, None) => true,
            (RnnVariant::Cached, Some(why)) => {
                return Err(Error::InvalidArgument {
                    op: "RnnStep::with_variant",
                    detail: why,
                })
            }
        };
        let subgroup = gpu.subgroup_size().unwrap_or(8);
        let wgs = workgroup_size(gpu, &shape, subgroup);
        let k = shape.runs;
        let p = layout.p_run * k;
        let h = shape.hidden;
        Ok(Self {
            shape,
            layout,
            rule,
            wgs,
            subgroup,
            cached,
            clipping: false,
            normalising: false,
            wht: Tensor::zeros(gpu, &[k * 4 * h * h])?,
            params: Tensor::zeros(gpu, &[p])?,
            grads: Tensor::zeros(gpu, &[p])?,
            moment1: Tensor::zeros(gpu, &[p])?,
            moment2: Tensor::zeros(gpu, &[p])?,
            input: Tensor::zeros(gpu, &[layout.in_run * k])?,
            work: Tensor::zeros(gpu, &[layout.w_run * k])?,
            metrics: Tensor::zeros(gpu, &[2 * k * shape.batch * METRICS])?,
            ctl: Tensor::zeros(gpu, &[k * CTL])?,
        })
    }

    pub fn shape(&self) -> &RnnShape {
        &self.shape
    }

    pub fn layout(&self) -> &RnnLayout {
        &self.layout
    }

    /// Batch lanes per workgroup and invocations per workgroup of the window kernels.
    pub fn tiling(&self) -> (usize, u32) {
        (LANES, if self.cached { 8 } else { self.wgs })
    }

    /// The kernel variant in use (never `Auto`).
    pub fn variant(&self) -> RnnVariant {
        if self.cached {
            RnnVariant::Cached
        } else {
            RnnVariant::Streaming
        }
    }

    fn entry(&self, streaming: &'static Entry, cached: &'static Entry) -> &'static Entry {
        if self.cached {
            cached
        } else {
            streaming
        }
    }

    /// Writes every run's parameters (`[K · P]`, the layout of `shaders/rnn_step.wgsl`) and the
    /// transposed copy of W_h the backward reads.
    pub fn write_params(&self, gpu: &Gpu, params: &[f32]) -> Result<()> {
        self.params.write(gpu, params)?;
        let (i, h, k) = (self.shape.input, self.shape.hidden, self.shape.runs);
        let h4 = 4 * h;
        let mut wht = vec![0.0f32; k * h4 * h];
        for r in 0..k {
            let w_h = &params[r * self.layout.p_run + i * h4..][..h * h4];
            let dst = &mut wht[r * h4 * h..][..h4 * h];
            for row in 0..h {
                for m in 0..h4 {
                    dst[m * h + row] = w_h[row * h4 + m];
                }
            }
        }
        self.wht.write(gpu, &wht)
    }

    /// Dispatches one [`record_train`](Self::record_train) makes without clipping (one more with).
    pub const TRAIN_DISPATCHES: usize = 4;

    /// Whether training steps record the clip kernel before the update: needed when a run clips
    /// (its threshold is `ctl[CLIP]`, 0: off) or normalises its SG's targets (`ctl[NORMALISE]`).
    pub fn set_clipping(&mut self, on: bool) {
        self.clipping = on;
    }

    /// Whether some run normalises its SG's targets: the clip kernel then keeps each such run's
    /// running RMS `sigma` (recorded only with [`set_clipping`](Self::set_clipping) on).
    pub fn set_normalising(&mut self, on: bool) {
        self.normalising = on;
    }

    /// Dispatches one training step records.
    pub fn train_dispatches(&self) -> usize {
        Self::TRAIN_DISPATCHES + self.clipping as usize
    }

    fn uniform(&self, train: bool) -> Uniform {
        let (s, l) = (&self.shape, &self.layout);
        let (adam, beta1, beta2, eps, momentum) = match self.rule {
            StepRule::Adam { beta1, beta2, eps } => (1, beta1, beta2, eps, 0.0),
            // SGD leaves the bias corrections at their fixed point 1 (beta = 0).
            StepRule::Sgd { momentum } => (0, 0.0, 0.0, 0.0, momentum),
        };
        let u = |v: usize| v as u32;
        Uniform {
            input: u(s.input),
            hidden: u(s.hidden),
            output: u(s.output),
            batch: u(s.batch),
            steps: u(s.steps),
            runs: u(s.runs),
            softmax: s.softmax as u32,
            train: train as u32,
            p_run: u(l.p_run),
            off_r: u(l.off_r),
            off_s: u(l.off_s),
            off_a: u(l.off_a),
            w_run: u(l.w_run),
            in_run: u(l.in_run),
            in_t: u(l.in_t),
            in_m: u(l.in_m),
            w_z: u(l.w.z),
            w_hs: u(l.w.hs),
            w_s0: u(l.w.s0),
            w_dg: u(l.w.dg),
            w_dl: u(l.w.dl),
            w_dsg: u(l.w.dsg),
            w_daux: u(l.w.daux),
            w_gates: u(l.w.gates),
            w_cs: u(l.w.cs),
            w_dhs: u(l.w.dhs),
            w_at0: u(l.w.at0),
            w_inj: u(l.w.inj),
            w_dhr: u(l.w.dhr),
            w_dcr: u(l.w.dcr),
            w_state: u(if train { l.w.state } else { l.w.eval_state }),
            metrics_off: u(if train { 0 } else { s.runs * s.batch }),
            has_sg: s.has_sg as u32,
            has_aux: s.has_aux as u32,
            adam,
            inv_b: 1.0 / s.batch as f32,
            beta1,
            beta2,
            eps,
            momentum,
            q_r: u(l.octets[0]),
            q_s: u(l.octets[1]),
            q_a: u(l.octets[2]),
            q_end: u(l.octets[3]),
        }
    }

    fn overrides(&self) -> [(&'static str, f64); 4] {
        [
            ("WGS", self.wgs as f64),
            ("SG", self.subgroup as f64),
            ("HID", self.shape.hidden as f64),
            ("NORMALISE", self.normalising as u8 as f64),
        ]
    }

    fn window_grid(&self) -> [u32; 3] {
        [
            self.shape.batch.div_ceil(LANES) as u32,
            self.shape.runs as u32,
            1,
        ]
    }

    fn grads_grid(&self) -> [u32; 3] {
        let h = self.shape.hidden;
        if self.cached {
            let octets = 4 * h / 8
                + self.shape.output.div_ceil(8)
                + if self.shape.has_sg { 2 * h / 8 } else { 0 }
                + if self.shape.has_aux { 2 * h / 8 } else { 0 };
            return [octets as u32, 1, self.shape.runs as u32];
        }
        let cols = (4 * h).max(self.shape.output);
        [
            cols.div_ceil(64) as u32,
            self.layout.octets[3] as u32,
            self.shape.runs as u32,
        ]
    }

    fn update_grid(&self) -> [u32; 3] {
        [
            (self.layout.p_run / 4).div_ceil(256) as u32,
            self.shape.runs as u32,
            1,
        ]
    }

    fn record_kernel(&self, enc: &mut Encoder, which: usize) -> Result<()> {
        let gpu = enc.gpu().clone();
        let u = self.uniform(true);
        let ub = bytemuck::bytes_of(&u);
        let o = self.overrides();
        match which {
            0 => self.forward(enc, true)?,
            1 => {
                let entry = self.entry(&BACKWARD, &BACKWARD_C);
                self.window_kernel(enc, entry, ub)?;
            }
            2 => {
                let entry = self.entry(&GRADS, &GRADS_C);
                let pipe = gpu.pipeline_for(entry, &o)?;
                let bind = gpu.bind(&pipe, ub, &[&self.work, &self.grads])?;
                enc.dispatch(&pipe, &bind, self.grads_grid());
            }
            _ => {
                if self.clipping {
                    let pipe = gpu.pipeline_for(&CLIP, &o)?;
                    let bind = gpu.bind(&pipe, ub, &[&self.grads, &self.ctl, &self.work])?;
                    enc.dispatch(&pipe, &bind, [1, self.shape.runs as u32, 1]);
                }
                let pipe = gpu.pipeline_for(&UPDATE, &o)?;
                let bind = gpu.bind(
                    &pipe,
                    ub,
                    &[
                        &self.params,
                        &self.grads,
                        &self.moment1,
                        &self.moment2,
                        &self.ctl,
                        &self.wht,
                    ],
                )?;
                enc.dispatch(&pipe, &bind, self.update_grid());
            }
        }
        Ok(())
    }

    fn forward(&self, enc: &mut Encoder, train: bool) -> Result<()> {
        let entry = self.entry(&FORWARD, &FORWARD_C);
        let u = self.uniform(train);
        self.window_kernel(enc, entry, bytemuck::bytes_of(&u))
    }

    /// Records one window kernel (forward or backward, either variant) with the shared bindings.
    fn window_kernel(&self, enc: &mut Encoder, entry: &Entry, uniform: &[u8]) -> Result<()> {
        let gpu = enc.gpu().clone();
        let pipe = gpu.pipeline_for(entry, &self.overrides())?;
        let bind = gpu.bind(
            &pipe,
            uniform,
            &[
                &self.params,
                &self.input,
                &self.work,
                &self.metrics,
                &self.ctl,
                &self.wht,
            ],
        )?;
        enc.dispatch(&pipe, &bind, self.window_grid());
        Ok(())
    }

    /// Records one training step of every run on the uploaded window: 4 dispatches (5 when
    /// clipping).
    pub fn record_train(&self, enc: &mut Encoder) -> Result<()> {
        for k in 0..Self::TRAIN_DISPATCHES {
            self.record_kernel(enc, k)?;
        }
        Ok(())
    }

    /// Records one of the four kernels of a training step alone (0 forward, 1 backward, 2 grads,
    /// 3 update, after the clip kernel when clipping), for profiling each.
    pub fn record_one(&self, enc: &mut Encoder, which: usize) -> Result<()> {
        self.record_kernel(enc, which.min(3))
    }

    /// Records a forward-only pass over the uploaded window from the evaluation state, adding to
    /// the evaluation metrics (the second half of `metrics`): 1 dispatch.
    pub fn record_eval(&self, enc: &mut Encoder) -> Result<()> {
        self.forward(enc, false)
    }
}
