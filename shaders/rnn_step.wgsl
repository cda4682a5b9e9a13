// One whole recurrent training step (an LSTM window with a linear readout, its loss, the synthetic
// gradient at both ends of the window, the aux head, backward, weight gradients and the optimiser
// update) in four dispatches, for K independent runs at once (a run group).
//
//   forward  - grid (ceil(B / 8), K): a workgroup owns 8 batch lanes of one run and loops over the
//              T steps inside the kernel; an invocation owns a hidden unit (its 4 gate columns) for
//              all 8 lanes. Lane i of each subgroup loads batch lane i's value of the operand (h, x,
//              s) and subgroupBroadcast hands it to every lane, so each weight load serves 8 lanes
//              and no invocation loads what another already has: CPU adapters (llvmpipe) turn each
//              per-lane load into a bounds-checked gather, GPUs save bandwidth. Needs subgroups of
//              a fixed size of at least 8. Per step it also computes the
//              readout, the loss and its gradient and dh_seq = dlogits·W_rᵀ. Before the loop it
//              evaluates M(s0) (the SG model at the window's first state, trained in `backward`);
//              after it, M(s_last), the injected gradient, and the aux head's loss and gradient.
//   backward - same grid: the reverse recurrence from the injected SG, dgates for every step, the
//              gradient at s0 and the SG model's regression gradient onto it; bumps the run's step
//              counters.
//   grads    - grid (columns / 128, row octets, K): Σ_rows aᵀ·d for 8 weight rows and 2 columns per
//              invocation (matmul_subgroup.wgsl's scheme; the input column of ones gives the bias
//              row).
//   update   - grid (P / 256, K): Adam or SGD-momentum with per-run learning rates; the SG model is
//              skipped on windows that did not train it. It also refreshes W_hᵀ, the transposed
//              copy of W_h that the backward recurrence reads along contiguous memory.
//
// Layouts (all f32, per run r at the run's stride):
//   params: [W_x; W_h; b] as [(I+H+1), 4H] (gate order i, f, g, o), readout [W_r; b_r] [(H+1), O],
//           SG model [W_s; b_s] [(2H+1), 2H] on s = [h | c], aux head [W_a; b_a] [(H+1), 2H].
//   input:  x [T, B, I], then targets [T, B, O] and mask [T, B, O] (sigmoid), or labels [T, B]
//           (softmax; a label outside [0, O) is padding and is not scored).
//   wht:    W_hᵀ per run, [4H, H].
//   work:   the arena of saved activations and gradients (offsets in the uniform; see rnn_step.rs).
//   ctl:    16 floats per run: 0 injection scale (0 = SG not applied), 1 train the SG (0/1),
//           2 aux weight, 3 core lr, 4 SG lr, 5 windows trained, 6 SG trained this window,
//           7..8 core Adam bias corrections, 9..10 SG ones, 11 run has an SG model, 12 run has the
//           aux head, 13..14 this window's gradient factors min(1, clip / ‖g‖) of the core and of
//           the SG side (SG model and aux head), read only when 15, the global-norm clip
//           threshold, is above 0; 16 normalise the SG's targets (0/1), 17..18 the running mean
//           square of its targets and that average's bias correction, 19 sigma, the scale of M's
//           output (1 unless normalising: M predicts target / sigma and sigma·M is used).
//           Entries 5..10, 13..14 and 17..19 are written by the kernels, the rest by the host.
//   clip   - grid (1, K), only when a run clips or normalises its SG's targets: the two global
//            gradient norms of each run, as the factors the update applies, and sigma.
//   metrics: 8 floats per (run, lane): nats, errors, scored rows, SG loss, SG zero-predictor
//           loss, aux loss (the loss sums are 0.5·Σ squares, in per-lane units).

struct U {
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
    // Row octets of each parameter's gradient (the grads grid's y), cumulative: LSTM, readout,
    // SG model, aux head.
    q_r: u32,
    q_s: u32,
    q_a: u32,
    q_end: u32,
}

@group(0) @binding(0) var<uniform> u: U;

// Invocations per workgroup of the window kernels (a multiple of SG), the adapter's subgroup
// size (at least 8), and the hidden size (so that index arithmetic divides by a constant).
override WGS: u32 = 64u;
override SG: u32 = 8u;
override HID: u32 = 64u;
override H4: u32 = 4u * HID;
// Whether any run of the group normalises its SG's targets (the clip kernel then keeps sigma).
override NORMALISE: bool = false;
const CTL: u32 = 20u;
const METRICS: u32 = 8u;
// Batch lanes per workgroup.
const L: u32 = 8u;
// Most outputs (logits per lane) the workgroup array holds.
const MAX_O: u32 = 256u;

// Logits, then dlogits, of the workgroup's 8 lanes: [8, O].
var<workgroup> sh_l: array<f32, 2048>;
// Partial sums for the metric reduction, one per invocation.
var<workgroup> sh_r: array<f32, 256>;

// sigmoid, tanh_c and their vec4 forms (all clamped) come from shaders/prelude.wgsl.

// The eight lanes' values of `v` as two vec4s (lanes 0-3, 4-7).
struct Oct {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

fn bc8(v: f32) -> Oct {
    return Oct(
        vec4<f32>(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u)),
        vec4<f32>(subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u), subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u)),
    );
}

// ---- the window kernels' bindings (forward, backward and their CPU variants) ----
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read> inputs: array<f32>;
@group(0) @binding(3) var<storage, read_write> work: array<f32>;
@group(0) @binding(4) var<storage, read_write> metrics: array<f32>;
@group(0) @binding(5) var<storage, read_write> ctl: array<f32>;
@group(0) @binding(6) var<storage, read> wht: array<f32>;

// ---- forward ----

// Sums each invocation's `v` over the workgroup in a fixed order and adds it to metric `slot` of
// batch lane `b` (if it exists). Called in uniform control flow.
fn add_metric(lid: u32, r: u32, b: u32, v: f32, slot: u32) {
    workgroupBarrier();
    sh_r[lid] = v;
    workgroupBarrier();
    if (lid == 0u && b < u.batch) {
        var s = 0.0;
        for (var k = 0u; k < WGS; k++) {
            s += sh_r[k];
        }
        metrics[(u.metrics_off + r * u.batch + b) * METRICS + slot] += s;
    }
}

fn lane_of(o: Oct, i: u32) -> f32 {
    if (i < 4u) {
        return o.lo[i];
    }
    return o.hi[i - 4u];
}

// Activates lane b's gates of unit j at step t (pre-activations in the gates buffer) and
// stores the gates, c_t, h_t and h_{t-1} (z's recurrent half).
fn cell_out(wr: u32, t: u32, b: u32, j: u32) {
    let hd = u.hidden;
    let row = t * u.batch + b;
    let ga = wr + u.w_gates + row * H4 + j;
    let gi = sigmoid(work[ga]);
    let gf = sigmoid(work[ga + hd]);
    let gg = tanh_c(work[ga + 2u * hd]);
    let go = sigmoid(work[ga + 3u * hd]);
    let c = gf * work[wr + u.w_cs + row * hd + j] + gi * gg;
    let h = go * tanh_c(c);
    work[ga] = gi;
    work[ga + hd] = gf;
    work[ga + 2u * hd] = gg;
    work[ga + 3u * hd] = go;
    work[wr + u.w_cs + (row + u.batch) * hd + j] = c;
    work[wr + u.w_hs + row * hd + j] = h;
    work[wr + u.w_z + row * (u.input + hd) + u.input + j] = hprev(t, wr, b, j);
}

@compute @workgroup_size(WGS)
fn forward(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let r = wg.y;
    let b0 = wg.x * L;
    let hd = u.hidden;
    let h2 = 2u * hd;
    let ni = u.input;
    let no = u.output;
    let nb = u.batch;
    let pr = r * u.p_run;
    let wr = r * u.w_run;
    let ir = r * u.in_run;
    let cr = r * CTL;
    // The batch lane whose operands this invocation loads for its subgroup (clamped: lanes past
    // the batch compute on lane B-1's data and store nothing).
    let src = min(b0 + lane % L, nb - 1u);

    if (u.train == 1u && wg.x == 0u && lid == 0u) {
        let trained = ctl[cr + 1u] > 0.0 && ctl[cr + 11u] > 0.0 && ctl[cr + 5u] > 0.0;
        ctl[cr + 6u] = select(0.0, 1.0, trained);
    }

    // c0 into cs[0], and a copy of s0 = [h0 | c0] for the SG model's weight gradient.
    for (var k = lid; k < L * h2; k += WGS) {
        let b = b0 + k / h2;
        if (b < nb) {
            let v = work[wr + u.w_state + b * h2 + k % h2];
            work[wr + u.w_s0 + b * h2 + k % h2] = v;
            if (k % h2 >= hd) {
                work[wr + u.w_cs + b * hd + k % h2 - hd] = v;
            }
        }
    }

    // M(s0), regressed in `backward` onto the gradient that reaches s0.
    if (u.train == 1u && u.has_sg == 1u) {
        let ws = pr + u.off_s;
        for (var m0 = 0u; m0 < h2; m0 += WGS) {
            if (m0 + (lid / SG) * SG >= h2) {
                continue;
            }
            let m = min(m0 + lid, h2 - 1u);
            let sgv = mv_work(params[ws + h2 * h2 + m], wr + u.w_state + src * h2, ws + m, h2, h2);
            let lo = sgv.lo;
            let hi = sgv.hi;
            if (m0 + lid < h2) {
                put8(wr + u.w_at0 + b0 * h2 + m, h2, Oct(lo, hi), b0);
            }
        }
    }
    storageBarrier();
    workgroupBarrier();

    var p_nats = Oct(vec4<f32>(0.0), vec4<f32>(0.0));
    var p_err = p_nats;
    var p_rows = p_nats;
    let wro = pr + u.off_r;
    for (var t = 0u; t < u.steps; t++) {
        // h_{t-1} of lane `src`: the carried state for t = 0, else the previous step's output.
        var hbase = wr + u.w_hs + ((t - 1u) * nb + src) * hd;
        if (t == 0u) {
            hbase = wr + u.w_state + src * h2;
        }
        // Gate pre-activations: one column of [W_x; W_h; b] (one gate of one unit) for 8 lanes,
        // into the gates buffer. Subgroups past the last column skip the loop as a whole.
        for (var c0 = 0u; c0 < H4; c0 += WGS) {
            if (c0 + (lid / SG) * SG < H4) {
                let c = min(c0 + lid, H4 - 1u);
                var lo = vec4<f32>(params[pr + (ni + hd) * H4 + c]);
                var hi = lo;
                for (var i = 0u; i < ni; i++) {
                    let x = bc8(inputs[ir + (t * nb + src) * ni + i]);
                    let w = vec4<f32>(params[pr + i * H4 + c]);
                    lo = fma(x.lo, w, lo);
                    hi = fma(x.hi, w, hi);
                }
                for (var k = 0u; k < hd; k++) {
                    let h = bc8(work[hbase + k]);
                    let w = vec4<f32>(params[pr + (ni + k) * H4 + c]);
                    lo = fma(h.lo, w, lo);
                    hi = fma(h.hi, w, hi);
                }
                if (c0 + lid < H4) {
                    put8(wr + u.w_gates + (t * nb + b0) * H4 + c, H4, Oct(lo, hi), b0);
                }
            }
        }
        storageBarrier();
        workgroupBarrier();
        // The cell of every (lane, unit): gates activated in place, c_t, h_t, h_{t-1} into z.
        for (var k = lid; k < L * HID; k += WGS) {
            let b = b0 + k / HID;
            if (b < nb) {
                cell_out(wr, t, b, k % HID);
            }
        }
        // The input half of the weight-gradient operand z = [x | h_prev].
        for (var k = lid; k < L * ni; k += WGS) {
            let b = b0 + k / ni;
            if (b < nb) {
                let row = t * nb + b;
                work[wr + u.w_z + row * (ni + hd) + k % ni] = inputs[ir + row * ni + k % ni];
            }
        }
        storageBarrier();
        workgroupBarrier();

        // Readout logits of the 8 lanes into sh_l [8, O].
        let hrow = wr + u.w_hs + (t * nb + src) * hd;
        for (var o0 = 0u; o0 < no; o0 += WGS) {
            if (o0 + (lid / SG) * SG >= no) {
                continue;
            }
            let o = min(o0 + lid, no - 1u);
            let acc = mv_work(params[wro + hd * no + o], hrow, wro + o, no, hd);
            let lo = acc.lo;
            let hi = acc.hi;
            if (o0 + lid < no) {
                let acc = Oct(lo, hi);
                for (var i = 0u; i < L; i++) {
                    sh_l[i * no + o] = lane_of(acc, i);
                }
            }
        }
        workgroupBarrier();

        // The loss, its gradient (over the logits, in place) and the metrics.
        if (u.softmax == 0u) {
            for (var k = lid; k < L * no; k += WGS) {
                let i = k / no;
                let o = k % no;
                let b = b0 + i;
                if (b < nb) {
                    let row = t * nb + b;
                    let x = sh_l[k];
                    let tg = inputs[ir + u.in_t + row * no + o];
                    let w = inputs[ir + u.in_m + row * no + o];
                    let d = u.inv_b * w * (sigmoid(x) - tg);
                    sh_l[k] = d;
                    work[wr + u.w_dl + row * no + o] = d;
                    if (w > 0.0) {
                        add_lane(&p_nats, i, w * (max(x, 0.0) - x * tg + log(1.0 + exp(-abs(x)))));
                        add_lane(&p_err, i, select(0.0, 1.0, (x > 0.0) != (tg > 0.5)));
                    }
                }
            }
            if (lid < L && b0 + lid < nb) {
                let row = t * nb + b0 + lid;
                var hit = false;
                for (var o = 0u; o < no; o++) {
                    hit = hit || inputs[ir + u.in_m + row * no + o] > 0.0;
                }
                if (hit) {
                    add_lane(&p_rows, lid, 1.0);
                }
            }
        } else {
            // One invocation per lane finds the maximum, the normaliser and the prediction, and
            // turns its row of logits into dlogits.
            if (lid < L && b0 + lid < nb) {
                let row = t * nb + b0 + lid;
                let base = lid * no;
                var mx = sh_l[base];
                var arg = 0u;
                for (var o = 1u; o < no; o++) {
                    if (sh_l[base + o] > mx) {
                        mx = sh_l[base + o];
                        arg = o;
                    }
                }
                var s = 0.0;
                for (var o = 0u; o < no; o++) {
                    s += exp(sh_l[base + o] - mx);
                }
                let li = i32(round(inputs[ir + u.in_t + row]));
                let valid = li >= 0 && li < i32(no);
                if (valid) {
                    add_lane(&p_nats, lid, log(s) - (sh_l[base + u32(li)] - mx));
                    add_lane(&p_err, lid, select(0.0, 1.0, arg != u32(li)));
                    add_lane(&p_rows, lid, 1.0);
                }
                let g = select(0.0, u.inv_b, valid);
                let inv = 1.0 / s;
                for (var o = 0u; o < no; o++) {
                    let d = g * (exp(sh_l[base + o] - mx) * inv - select(0.0, 1.0, i32(o) == li));
                    sh_l[base + o] = d;
                    work[wr + u.w_dl + row * no + o] = d;
                }
            }
        }
        workgroupBarrier();

        // dh_t = dlogits·W_rᵀ.
        for (var j0 = 0u; j0 < hd; j0 += WGS) {
            if (j0 + (lid / SG) * SG >= hd) {
                continue;
            }
            let j = min(j0 + lid, hd - 1u);
            var lo = vec4<f32>(0.0);
            var hi = lo;
            for (var o = 0u; o < no; o++) {
                let d = bc8(sh_l[(lane % L) * no + o]);
                let w = params[wro + j * no + o];
                lo = fma(d.lo, vec4<f32>(w), lo);
                hi = fma(d.hi, vec4<f32>(w), hi);
            }
            if (j0 + lid < hd) {
                put8(wr + u.w_dhs + (t * nb + b0) * hd + j, hd, Oct(lo, hi), b0);
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < L; i++) {
        add_metric(lid, r, b0 + i, lane_of(p_nats, i), 0u);
        add_metric(lid, r, b0 + i, lane_of(p_err, i), 1u);
        add_metric(lid, r, b0 + i, lane_of(p_rows, i), 2u);
    }

    // The state after the last step, [h_T | c_T].
    for (var k = lid; k < L * h2; k += WGS) {
        let b = b0 + k / h2;
        let c = k % h2;
        if (b < nb) {
            var v = 0.0;
            if (c < hd) {
                v = work[wr + u.w_hs + ((u.steps - 1u) * nb + b) * hd + c];
            } else {
                v = work[wr + u.w_cs + (u.steps * nb + b) * hd + c - hd];
            }
            work[wr + u.w_state + b * h2 + c] = v;
        }
    }
    storageBarrier();
    workgroupBarrier();

    if (u.train == 1u && u.has_sg == 1u) {
        // M(s_last): the injected gradient, and the aux head's target.
        let ws = pr + u.off_s;
        let wa = pr + u.off_a;
        let inject = ctl[cr] * u.inv_b;
        // The SG in the true gradient's units: sigma·M (sigma = 1 unless normalising).
        let sigma = ctl[cr + 19u];
        let aux_w = ctl[cr + 2u];
        let aux_on = u.has_aux == 1u && ctl[cr + 12u] > 0.0;
        var p_aux = Oct(vec4<f32>(0.0), vec4<f32>(0.0));
        let h1row = wr + u.w_hs + src * hd;
        for (var m0 = 0u; m0 < h2; m0 += WGS) {
            if (m0 + (lid / SG) * SG >= h2) {
                continue;
            }
            let m = min(m0 + lid, h2 - 1u);
            let sgv = mv_work(params[ws + h2 * h2 + m], wr + u.w_state + src * h2, ws + m, h2, h2);
            let lo = sigma * sgv.lo;
            let hi = sigma * sgv.hi;
            if (m0 + lid < h2) {
                let sg = Oct(lo, hi);
                for (var i = 0u; i < L; i++) {
                    let b = b0 + i;
                    if (b < nb) {
                        work[wr + u.w_inj + b * h2 + m] = inject * lane_of(sg, i);
                        // M(s_last) unscaled, the aux head's target (overwritten by its gradient).
                        work[wr + u.w_daux + b * h2 + m] = lane_of(sg, i);
                    }
                }
            }
        }
        if (aux_on) {
            // A(h_1) regresses onto M(s_last) (a constant). Each invocation reads back the
            // targets it wrote itself.
            for (var m0 = 0u; m0 < h2; m0 += WGS) {
                if (m0 + (lid / SG) * SG >= h2) {
                    continue;
                }
                let m = min(m0 + lid, h2 - 1u);
                let av = mv_work(params[wa + hd * h2 + m], h1row, wa + m, h2, hd);
                let lo = av.lo;
                let hi = av.hi;
                if (m0 + lid < h2) {
                    let a = Oct(lo, hi);
                    for (var i = 0u; i < L; i++) {
                        let b = b0 + i;
                        if (b < nb) {
                            let at = wr + u.w_daux + b * h2 + m;
                            let d = lane_of(a, i) - work[at];
                            add_lane(&p_aux, i, 0.5 * d * d);
                            work[at] = aux_w * u.inv_b * d;
                        }
                    }
                }
            }
        }
        if (u.has_aux == 1u) {
            storageBarrier();
            workgroupBarrier();
            if (aux_on) {
                // dh_1 += dA·W_aᵀ.
                for (var j0 = 0u; j0 < hd; j0 += WGS) {
                    if (j0 + (lid / SG) * SG >= hd) {
                        continue;
                    }
                    let j = min(j0 + lid, hd - 1u);
                    let dv = mv_work(0.0, wr + u.w_daux + src * h2, wa + j * h2, 1u, h2);
                    let lo = dv.lo;
                    let hi = dv.hi;
                    if (j0 + lid < hd) {
                        add8(wr + u.w_dhs + b0 * hd + j, hd, Oct(lo, hi), b0);
                    }
                }
            }
            for (var i = 0u; i < L; i++) {
                add_metric(lid, r, b0 + i, lane_of(p_aux, i), 5u);
            }
        }
    }
}

// Writes lane i's value of `v` to work[base + i * stride] for the batch lanes that exist.
fn put8(base: u32, stride: u32, v: Oct, b0: u32) {
    for (var i = 0u; i < 8u; i++) {
        if (b0 + i < u.batch) {
            work[base + i * stride] = lane_of(v, i);
        }
    }
}

// Σ_k operand_k · params[w + k·ws] for the 8 lanes, plus `bias`: lane i loads lane i's operand
// work[a + k] and broadcasts share it (the streaming kernels' product with a weight column).
fn mv_work(bias: f32, a: u32, w: u32, ws: u32, n: u32) -> Oct {
    var lo = vec4<f32>(bias);
    var hi = lo;
    for (var k = 0u; k < n; k++) {
        let x = bc8(work[a + k]);
        let wt = vec4<f32>(params[w + k * ws]);
        lo = fma(x.lo, wt, lo);
        hi = fma(x.hi, wt, hi);
    }
    return Oct(lo, hi);
}

// As mv_work, with the operands already gathered into a private array (the CPU variants).
fn mv_priv(bias: f32, a: ptr<function, array<f32, 512>>, w: u32, ws: u32, n: u32) -> Oct {
    var lo = vec4<f32>(bias);
    var hi = lo;
    for (var k = 0u; k < n; k++) {
        let x = bc8((*a)[k]);
        let wt = vec4<f32>(params[w + k * ws]);
        lo = fma(x.lo, wt, lo);
        hi = fma(x.hi, wt, hi);
    }
    return Oct(lo, hi);
}

// As put8, adding to what is there.
fn add8(base: u32, stride: u32, v: Oct, b0: u32) {
    for (var i = 0u; i < 8u; i++) {
        if (b0 + i < u.batch) {
            work[base + i * stride] += lane_of(v, i);
        }
    }
}

fn add_lane(o: ptr<function, Oct>, i: u32, v: f32) {
    if (i < 4u) {
        (*o).lo[i] += v;
    } else {
        (*o).hi[i - 4u] += v;
    }
}

// h_{t-1} of batch lane b, unit j.
fn hprev(t: u32, wr: u32, b: u32, j: u32) -> f32 {
    if (t == 0u) {
        return work[wr + u.w_state + b * 2u * u.hidden + j];
    }
    return work[wr + u.w_hs + ((t - 1u) * u.batch + b) * u.hidden + j];
}

// ---- backward ----

// The cell backward of lane b, unit j at step t: dgates into dg, dc_{t-1} into the carry.
fn cell_back(wr: u32, t: u32, b: u32, j: u32) {
    let hd = u.hidden;
    let row = t * u.batch + b;
    let ga = wr + u.w_gates + row * 4u * hd + j;
    let gi = work[ga];
    let gf = work[ga + hd];
    let gg = work[ga + 2u * hd];
    let go = work[ga + 3u * hd];
    let c_prev = work[wr + u.w_cs + row * hd + j];
    let tc = tanh_c(work[wr + u.w_cs + (row + u.batch) * hd + j]);
    let dh = work[wr + u.w_dhs + row * hd + j] + work[wr + u.w_dhr + b * hd + j];
    let dct = work[wr + u.w_dcr + b * hd + j] + dh * go * (1.0 - tc * tc);
    let da = wr + u.w_dg + row * 4u * hd + j;
    work[da] = dct * gg * gi * (1.0 - gi);
    work[da + hd] = dct * c_prev * gf * (1.0 - gf);
    work[da + 2u * hd] = dct * gi * (1.0 - gg * gg);
    work[da + 3u * hd] = dh * tc * go * (1.0 - go);
    work[wr + u.w_dcr + b * hd + j] = dct * gf;
}

@compute @workgroup_size(WGS)
fn backward(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let r = wg.y;
    let b0 = wg.x * L;
    let hd = u.hidden;
    let h4 = 4u * hd;
    let h2 = 2u * hd;
    let nb = u.batch;
    let wr = r * u.w_run;
    let whr = r * h4 * hd;
    let cr = r * CTL;
    let src = min(b0 + lane % L, nb - 1u);

    // The gradient arriving at the window's last state: the injected SG, or 0.
    for (var k = lid; k < L * hd; k += WGS) {
        let b = b0 + k / hd;
        let j = k % hd;
        if (b < nb) {
            var dh = 0.0;
            var dc = 0.0;
            if (u.has_sg == 1u) {
                dh = work[wr + u.w_inj + b * h2 + j];
                dc = work[wr + u.w_inj + b * h2 + hd + j];
            }
            work[wr + u.w_dhr + b * hd + j] = dh;
            work[wr + u.w_dcr + b * hd + j] = dc;
        }
    }
    storageBarrier();
    workgroupBarrier();
    for (var step = 0u; step < u.steps; step++) {
        let t = u.steps - 1u - step;
        for (var k = lid; k < L * HID; k += WGS) {
            let b = b0 + k / HID;
            if (b < nb) {
                cell_back(wr, t, b, k % HID);
            }
        }
        storageBarrier();
        workgroupBarrier();
        // dh_{t-1} through the recurrence: dgates_t·W_hᵀ, W_hᵀ read along contiguous units.
        let dgrow = wr + u.w_dg + (t * nb + src) * h4;
        for (var j0 = 0u; j0 < hd; j0 += WGS) {
            if (j0 + (lid / SG) * SG >= hd) {
                continue;
            }
            let j = min(j0 + lid, hd - 1u);
            var lo = vec4<f32>(0.0);
            var hi = lo;
            for (var m = 0u; m < h4; m++) {
                let d = bc8(work[dgrow + m]);
                let w = wht[whr + m * hd + j];
                lo = fma(d.lo, vec4<f32>(w), lo);
                hi = fma(d.hi, vec4<f32>(w), hi);
            }
            if (j0 + lid < hd) {
                put8(wr + u.w_dhr + b0 * hd + j, hd, Oct(lo, hi), b0);
            }
        }
        storageBarrier();
        workgroupBarrier();
    }

    // The gradient at s0 is [dh_rec | dc]; the SG model M(s0) regresses onto it in per-lane units
    // (B·ds0, since the task loss is a batch mean).
    let trained = ctl[cr + 6u] > 0.0;
    // Normalising, M regresses onto target / sigma; the loss metrics stay in the true units.
    let sigma = ctl[cr + 19u];
    var p_loss = Oct(vec4<f32>(0.0), vec4<f32>(0.0));
    var p_zero = p_loss;
    if (u.has_sg == 1u) {
        let fb = f32(nb);
        for (var k = lid; k < L * h2; k += WGS) {
            let i = k / h2;
            let c = k % h2;
            let b = b0 + i;
            if (b < nb) {
                var tgt = 0.0;
                if (c < hd) {
                    tgt = work[wr + u.w_dhr + b * hd + c];
                } else {
                    tgt = work[wr + u.w_dcr + b * hd + c - hd];
                }
                tgt *= fb;
                let d = work[wr + u.w_at0 + b * h2 + c] - tgt / sigma;
                var g = 0.0;
                if (trained) {
                    g = u.inv_b * d;
                    let e = sigma * d;
                    add_lane(&p_loss, i, 0.5 * e * e);
                    add_lane(&p_zero, i, 0.5 * tgt * tgt);
                }
                work[wr + u.w_dsg + b * h2 + c] = g;
            }
        }
    }
    for (var i = 0u; i < L; i++) {
        add_metric(lid, r, b0 + i, lane_of(p_loss, i), 3u);
        add_metric(lid, r, b0 + i, lane_of(p_zero, i), 4u);
    }

    if (wg.x == 0u && lid == 0u) {
        ctl[cr + 5u] += 1.0;
        ctl[cr + 7u] = (1.0 - u.beta1) + u.beta1 * ctl[cr + 7u];
        ctl[cr + 8u] = (1.0 - u.beta2) + u.beta2 * ctl[cr + 8u];
        if (trained || (u.has_aux == 1u && ctl[cr + 12u] > 0.0)) {
            ctl[cr + 9u] = (1.0 - u.beta1) + u.beta1 * ctl[cr + 9u];
            ctl[cr + 10u] = (1.0 - u.beta2) + u.beta2 * ctl[cr + 10u];
        }
    }
}

// ---- grads: every parameter's gradient, Σ over its rows of aᵀ·d ----
@group(0) @binding(1) var<storage, read> g_work: array<f32>;
@group(0) @binding(2) var<storage, read_write> g_grads: array<f32>;

@compute @workgroup_size(64)
fn grads(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let oct = wg.y;
    let r = wg.z;
    let wr = r * u.w_run;
    let hd = u.hidden;
    let tb = u.steps * u.batch;
    // Which parameter: its operand a (offset, width; column `width` is all ones), its gradient d
    // (offset, width), the rows summed over, and where its gradient starts.
    var a_off = u.w_z;
    var a_cols = u.input + hd;
    var d_off = u.w_dg;
    var d_cols = 4u * hd;
    var rows = tb;
    var out = 0u;
    var q0 = 0u;
    if (oct >= u.q_a) {
        // The aux head's input is h_1: rows 0..B of the window's hidden states.
        a_off = u.w_hs;
        a_cols = hd;
        d_off = u.w_daux;
        d_cols = 2u * hd;
        rows = u.batch;
        out = u.off_a;
        q0 = u.q_a;
    } else if (oct >= u.q_s) {
        a_off = u.w_s0;
        a_cols = 2u * hd;
        d_off = u.w_dsg;
        d_cols = 2u * hd;
        rows = u.batch;
        out = u.off_s;
        q0 = u.q_s;
    } else if (oct >= u.q_r) {
        a_off = u.w_hs;
        a_cols = hd;
        d_off = u.w_dl;
        d_cols = u.output;
        out = u.off_r;
        q0 = u.q_r;
    }
    // The workgroup covers 8 weight rows x 64 columns: an invocation owns one column, and lane i
    // of each subgroup loads row p0 + i of a for its subgroup.
    if (wg.x * 64u + (lid / SG) * SG >= d_cols) {
        return;
    }
    let c = wg.x * 64u + lid;
    let cc = min(c, d_cols - 1u);
    let p0 = (oct - q0) * 8u;
    let pa = p0 + lane % 8u;
    let pa_c = min(pa, a_cols - 1u);
    let is_one = pa == a_cols;
    let is_in = pa < a_cols;
    var lo = vec4<f32>(0.0);
    var hi = lo;
    for (var i = 0u; i < rows; i++) {
        let a = g_work[wr + a_off + i * a_cols + pa_c];
        let a8 = bc8(select(select(0.0, 1.0, is_one), a, is_in));
        let d = vec4<f32>(g_work[wr + d_off + i * d_cols + cc]);
        lo = fma(a8.lo, d, lo);
        hi = fma(a8.hi, d, hi);
    }
    if (c < d_cols) {
        let base = r * u.p_run + out;
        let acc = Oct(lo, hi);
        for (var q = 0u; q < 8u; q++) {
            let p = p0 + q;
            if (p <= a_cols) {
                g_grads[base + p * d_cols + c] = lane_of(acc, q);
            }
        }
    }
}

// ---- update: Adam or SGD-momentum over every run's parameters, 4 at a time ----
// (Parameter blocks start on multiples of 4, so a vec4 never straddles two of them.)
@group(0) @binding(1) var<storage, read_write> o_params: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> o_grads: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> o_m: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> o_v: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> o_ctl: array<f32>;
@group(0) @binding(6) var<storage, read_write> o_wht: array<f32>;

@compute @workgroup_size(256)
fn update(@builtin(global_invocation_id) gid: vec3<u32>) {
    let q = gid.x * 4u;
    let r = gid.y;
    if (q >= u.p_run) {
        return;
    }
    let e = (r * u.p_run + q) / 4u;
    let cr = r * CTL;
    var lr = o_ctl[cr + 3u];
    var d1 = o_ctl[cr + 7u];
    var d2 = o_ctl[cr + 8u];
    if (q >= u.off_s) {
        // The SG model trains only on windows that had a target; the aux head whenever it exists.
        let live = select(o_ctl[cr + 6u] > 0.0, o_ctl[cr + 12u] > 0.0, q >= u.off_a);
        if (!live) {
            return;
        }
        lr = o_ctl[cr + 4u];
        d1 = o_ctl[cr + 9u];
        d2 = o_ctl[cr + 10u];
    }
    // Clipping (ctl 15 > 0): the factor the clip kernel wrote for this side of the run.
    let factor = select(o_ctl[cr + 13u], o_ctl[cr + 14u], q >= u.off_s);
    let g = o_grads[e] * select(1.0, factor, o_ctl[cr + 15u] > 0.0);
    var w = o_params[e];
    if (u.adam == 1u) {
        let m = u.beta1 * o_m[e] + (1.0 - u.beta1) * g;
        let v = u.beta2 * o_v[e] + (1.0 - u.beta2) * g * g;
        o_m[e] = m;
        o_v[e] = v;
        w -= lr * (m / d1) / (sqrt(v / d2) + u.eps);
    } else {
        let vel = u.momentum * o_m[e] + g;
        o_m[e] = vel;
        w -= lr * vel;
    }
    o_params[e] = w;
    // W_h (rows I..I+H of the LSTM block): refresh its transposed copy.
    let wh0 = u.input * H4;
    if (q >= wh0 && q < wh0 + u.hidden * H4) {
        let k = (q - wh0) / H4;
        let m = (q - wh0) % H4;
        let base = r * H4 * u.hidden + m * u.hidden + k;
        o_wht[base] = w.x;
        o_wht[base + u.hidden] = w.y;
        o_wht[base + 2u * u.hidden] = w.z;
        o_wht[base + 3u * u.hidden] = w.w;
    }
}

// ---- clip: each run's global gradient norms, core [0, off_s) and SG side [off_s, P) ----
@group(0) @binding(1) var<storage, read> c_grads: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> c_ctl: array<f32>;
@group(0) @binding(3) var<storage, read> c_work: array<f32>;
var<workgroup> sh_clip: array<f32, 512>;
// Horizon of the running mean square of the SG's targets (about 100 windows).
const TARGET_DECAY: f32 = 0.99;

@compute @workgroup_size(256)
fn clip(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let r = wg.y;
    let cr = r * CTL;
    let base = r * u.p_run / 4u;
    let n_core = u.off_s / 4u;
    let n_aux = u.off_a / 4u;
    let n_all = u.p_run / 4u;
    // The SG model counts only on windows that train it (as its update does); the aux head always.
    let sg_live = c_ctl[cr + 6u] > 0.0;
    var core = 0.0;
    var side = 0.0;
    for (var i = li; i < n_all; i += 256u) {
        let g = c_grads[base + i];
        let s2 = dot(g, g);
        if (i < n_core) {
            core += s2;
        } else if (i >= n_aux || sg_live) {
            side += s2;
        }
    }
    sh_clip[li] = core;
    sh_clip[256u + li] = side;
    workgroupBarrier();
    for (var w = 128u; w > 0u; w = w / 2u) {
        if (li < w) {
            sh_clip[li] += sh_clip[li + w];
            sh_clip[256u + li] += sh_clip[256u + li + w];
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        let c = c_ctl[cr + 15u];
        let a = sqrt(sh_clip[0]);
        let b = sqrt(sh_clip[256]);
        c_ctl[cr + 13u] = select(1.0, c / a, c > 0.0 && a > c);
        c_ctl[cr + 14u] = select(1.0, c / b, c > 0.0 && b > c);
    }
    // Target normalisation: this window's targets were regressed as target / sigma, and M(s0)
    // (at0) and the regression gradient inv_b·(M(s0) - target / sigma) (dsg) are still in
    // `work`, so target / sigma = M(s0) - B·dsg. Their mean square updates sigma for the next
    // window, as Adam's second moment does, with the same bias correction.
    // NORMALISE is a pipeline constant, so the barriers below stay in uniform control flow; a group
    // where no run normalises skips the B·2H loads.
    if (NORMALISE) {
        let n = u.batch * 2u * u.hidden;
        let wr = r * u.w_run;
        let fb = f32(u.batch);
        var sq = 0.0;
        for (var i = li; i < n; i += 256u) {
            let t = c_work[wr + u.w_at0 + i] - fb * c_work[wr + u.w_dsg + i];
            sq += t * t;
        }
        workgroupBarrier();
        sh_clip[li] = sq;
        workgroupBarrier();
        for (var w = 128u; w > 0u; w = w / 2u) {
            if (li < w) {
                sh_clip[li] += sh_clip[li + w];
            }
            workgroupBarrier();
        }
        if (li == 0u && c_ctl[cr + 16u] > 0.0 && sg_live) {
            let s = c_ctl[cr + 19u];
            let ms = s * s * sh_clip[0] / f32(n);
            let v = TARGET_DECAY * c_ctl[cr + 17u] + (1.0 - TARGET_DECAY) * ms;
            let corr = TARGET_DECAY * c_ctl[cr + 18u] + (1.0 - TARGET_DECAY);
            c_ctl[cr + 17u] = v;
            c_ctl[cr + 18u] = corr;
            c_ctl[cr + 19u] = sqrt(max(v / corr, 1e-20));
        }
    }
}

// ==== CPU variants: one 8-wide subgroup per workgroup, weights cached in private memory ====
// llvmpipe turns every per-lane storage load into a bounds-checked gather, but a private array
// indexed by a uniform index is one vector load. So here each lane (of the single subgroup) owns
// the hidden units j = lane + 8u and caches their weight columns for the whole window; operands
// shared by all lanes (h, x, dlogits, dgates of the 8 batch lanes) are gathered once per step into
// a private array and handed around by subgroupBroadcast. Needs SG = 8, H a multiple of 8 and
// the caches below to fit (checked by the host).
const C_W: u32 = 2560u;
const C_O: u32 = 1280u;
const C_V: u32 = 512u;
const C_U: u32 = 128u;

fn oct_at(a: ptr<function, array<f32, 128>>, base: u32) -> Oct {
    return Oct(
        vec4<f32>((*a)[base], (*a)[base + 1u], (*a)[base + 2u], (*a)[base + 3u]),
        vec4<f32>((*a)[base + 4u], (*a)[base + 5u], (*a)[base + 6u], (*a)[base + 7u]),
    );
}

fn oct_put(a: ptr<function, array<f32, 128>>, base: u32, v: Oct) {
    for (var i = 0u; i < 4u; i++) {
        (*a)[base + i] = v.lo[i];
        (*a)[base + 4u + i] = v.hi[i];
    }
}

@compute @workgroup_size(8)
fn forward_c(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let r = wg.y;
    let b0 = wg.x * L;
    let hd = u.hidden;
    let h2 = 2u * hd;
    let h4 = 4u * hd;
    let ni = u.input;
    let no = u.output;
    let nb = u.batch;
    let pr = r * u.p_run;
    let wr = r * u.w_run;
    let ir = r * u.in_run;
    let cr = r * CTL;
    let src = min(b0 + lane, nb - 1u);
    let nu = hd / 8u;
    let nv = (no + 7u) / 8u;
    let kk = ni + hd + 1u;
    let wro = pr + u.off_r;

    if (u.train == 1u && wg.x == 0u && lane == 0u) {
        let trained = ctl[cr + 1u] > 0.0 && ctl[cr + 11u] > 0.0 && ctl[cr + 5u] > 0.0;
        ctl[cr + 6u] = select(0.0, 1.0, trained);
    }

    // Weight caches: the 4 gate columns of each owned unit ([W_x; W_h; b] rows), the readout
    // columns of the owned outputs o = lane + 8v (with the bias row), and the readout rows of
    // the owned units (for dh = dlogits·W_rᵀ).
    var wc: array<f32, 2560>;
    for (var uu = 0u; uu < nu; uu++) {
        let j = lane + 8u * uu;
        for (var g = 0u; g < 4u; g++) {
            for (var k = 0u; k < kk; k++) {
                wc[(uu * 4u + g) * kk + k] = params[pr + k * h4 + g * hd + j];
            }
        }
    }
    var wo: array<f32, 1280>;
    for (var v = 0u; v < nv; v++) {
        let o = min(lane + 8u * v, no - 1u);
        for (var k = 0u; k <= hd; k++) {
            wo[v * (hd + 1u) + k] = params[wro + k * no + o];
        }
    }
    let wrow = nv * (hd + 1u);
    for (var uu = 0u; uu < nu; uu++) {
        let j = lane + 8u * uu;
        for (var o = 0u; o < no; o++) {
            wo[wrow + uu * no + o] = params[wro + j * no + o];
        }
    }

    // h and c of the owned units for the 8 lanes, carried in registers; s0 copies.
    var hreg: array<f32, 128>;
    var creg: array<f32, 128>;
    for (var i = 0u; i < L; i++) {
        let b = min(b0 + i, nb - 1u);
        for (var uu = 0u; uu < nu; uu++) {
            let j = lane + 8u * uu;
            let h0 = work[wr + u.w_state + b * h2 + j];
            let c0 = work[wr + u.w_state + b * h2 + hd + j];
            hreg[uu * 8u + i] = h0;
            creg[uu * 8u + i] = c0;
            if (b0 + i < nb) {
                work[wr + u.w_cs + b * hd + j] = c0;
                work[wr + u.w_s0 + b * h2 + j] = h0;
                work[wr + u.w_s0 + b * h2 + hd + j] = c0;
            }
        }
    }

    var hv: array<f32, 512>;
    // M(s0), regressed in `backward` onto the gradient that reaches s0; owned columns m = lane + 8w.
    if (u.train == 1u && u.has_sg == 1u) {
        let ws = pr + u.off_s;
        for (var k = 0u; k < h2; k++) {
            hv[k] = work[wr + u.w_state + src * h2 + k];
        }
        for (var w = 0u; w < h2 / 8u; w++) {
            let m = lane + 8u * w;
            let sgv = mv_priv(params[ws + h2 * h2 + m], &hv, ws + m, h2, h2);
            let lo = sgv.lo;
            let hi = sgv.hi;
            put8(wr + u.w_at0 + b0 * h2 + m, h2, Oct(lo, hi), b0);
        }
    }

    var p_nats = Oct(vec4<f32>(0.0), vec4<f32>(0.0));
    var p_err = p_nats;
    var p_rows = p_nats;
    var lg: array<f32, 512>;
    for (var t = 0u; t < u.steps; t++) {
        // Lane i gathers batch lane i's h_{t-1} and x_t once; broadcasts share them.
        for (var k = 0u; k < hd; k++) {
            hv[k] = hprev(t, wr, src, k);
        }
        for (var i = 0u; i < ni; i++) {
            hv[hd + i] = inputs[ir + (t * nb + src) * ni + i];
        }
        for (var uu = 0u; uu < nu; uu++) {
            let j = lane + 8u * uu;
            var pre: array<Oct, 4>;
            for (var g = 0u; g < 4u; g++) {
                let base = (uu * 4u + g) * kk;
                var lo = vec4<f32>(wc[base + ni + hd]);
                var hi = lo;
                for (var i = 0u; i < ni; i++) {
                    let x = bc8(hv[hd + i]);
                    let w = vec4<f32>(wc[base + i]);
                    lo = fma(x.lo, w, lo);
                    hi = fma(x.hi, w, hi);
                }
                for (var k = 0u; k < hd; k++) {
                    let h = bc8(hv[k]);
                    let w = vec4<f32>(wc[base + ni + k]);
                    lo = fma(h.lo, w, lo);
                    hi = fma(h.hi, w, hi);
                }
                pre[g] = Oct(lo, hi);
            }
            let cp = oct_at(&creg, uu * 8u);
            let gi = Oct(sigmoid4c(pre[0].lo), sigmoid4c(pre[0].hi));
            let gf = Oct(sigmoid4c(pre[1].lo), sigmoid4c(pre[1].hi));
            let gg = Oct(tanh4c(pre[2].lo), tanh4c(pre[2].hi));
            let go = Oct(sigmoid4c(pre[3].lo), sigmoid4c(pre[3].hi));
            let c = Oct(gf.lo * cp.lo + gi.lo * gg.lo, gf.hi * cp.hi + gi.hi * gg.hi);
            let h = Oct(go.lo * tanh4c(c.lo), go.hi * tanh4c(c.hi));
            let hp = oct_at(&hreg, uu * 8u);
            oct_put(&creg, uu * 8u, c);
            oct_put(&hreg, uu * 8u, h);
            let row0 = t * nb + b0;
            let ga = wr + u.w_gates + row0 * h4 + j;
            put8(ga, h4, gi, b0);
            put8(ga + hd, h4, gf, b0);
            put8(ga + 2u * hd, h4, gg, b0);
            put8(ga + 3u * hd, h4, go, b0);
            put8(wr + u.w_cs + (row0 + nb) * hd + j, hd, c, b0);
            put8(wr + u.w_hs + row0 * hd + j, hd, h, b0);
            put8(wr + u.w_z + row0 * (ni + hd) + ni + j, ni + hd, hp, b0);
        }
        // The input half of z = [x | h_prev]: lane i writes batch lane i's x_t.
        if (b0 + lane < nb) {
            for (var i = 0u; i < ni; i++) {
                work[wr + u.w_z + (t * nb + b0 + lane) * (ni + hd) + i] = hv[hd + i];
            }
        }
        storageBarrier();
        workgroupBarrier();

        // Readout logits of the owned outputs for the 8 lanes: lg[v * 8 + i].
        for (var k = 0u; k < hd; k++) {
            hv[k] = work[wr + u.w_hs + (t * nb + src) * hd + k];
        }
        for (var v = 0u; v < nv; v++) {
            var lo = vec4<f32>(wo[v * (hd + 1u) + hd]);
            var hi = lo;
            for (var k = 0u; k < hd; k++) {
                let h = bc8(hv[k]);
                let w = vec4<f32>(wo[v * (hd + 1u) + k]);
                lo = fma(h.lo, w, lo);
                hi = fma(h.hi, w, hi);
            }
            for (var i = 0u; i < 4u; i++) {
                lg[v * 8u + i] = lo[i];
                lg[v * 8u + 4u + i] = hi[i];
            }
        }
        // The loss and its gradient; dlogits go to memory (the readout's weight gradient reads
        // them) and come back as lane i's row.
        if (u.softmax == 0u) {
            for (var v = 0u; v < nv; v++) {
                let o = lane + 8u * v;
                if (o < no) {
                    for (var i = 0u; i < L; i++) {
                        if (b0 + i < nb) {
                            let row = t * nb + b0 + i;
                            let x = lg[v * 8u + i];
                            let tg = inputs[ir + u.in_t + row * no + o];
                            let w = inputs[ir + u.in_m + row * no + o];
                            work[wr + u.w_dl + row * no + o] = u.inv_b * w * (sigmoid(x) - tg);
                            if (w > 0.0) {
                                add_lane(&p_nats, i, w * (max(x, 0.0) - x * tg + log(1.0 + exp(-abs(x)))));
                                add_lane(&p_err, i, select(0.0, 1.0, (x > 0.0) != (tg > 0.5)));
                            }
                        }
                    }
                }
            }
            if (b0 + lane < nb) {
                let row = t * nb + b0 + lane;
                var hit = false;
                for (var o = 0u; o < no; o++) {
                    hit = hit || inputs[ir + u.in_m + row * no + o] > 0.0;
                }
                if (hit) {
                    add_lane(&p_rows, lane, 1.0);
                }
            }
        } else {
            for (var i = 0u; i < L; i++) {
                // Row i's maximum, normaliser and arg-max over the outputs spread across lanes.
                var mx = -3.0e38;
                for (var v = 0u; v < nv; v++) {
                    if (lane + 8u * v < no) {
                        mx = max(mx, lg[v * 8u + i]);
                    }
                }
                mx = subgroupMax(mx);
                var s = 0.0;
                var arg = 0xffffffffu;
                for (var v = 0u; v < nv; v++) {
                    let o = lane + 8u * v;
                    if (o < no) {
                        s += exp(lg[v * 8u + i] - mx);
                        if (lg[v * 8u + i] == mx) {
                            arg = min(arg, o);
                        }
                    }
                }
                s = subgroupAdd(s);
                arg = subgroupMin(arg);
                let b = min(b0 + i, nb - 1u);
                let row = t * nb + b;
                let li = i32(round(inputs[ir + u.in_t + row]));
                let valid = li >= 0 && li < i32(no) && b0 + i < nb;
                if (valid && lane == 0u) {
                    add_lane(&p_rows, i, 1.0);
                    add_lane(&p_err, i, select(0.0, 1.0, arg != u32(li)));
                    add_lane(&p_nats, i, log(s));
                }
                let g = select(0.0, u.inv_b, valid);
                for (var v = 0u; v < nv; v++) {
                    let o = lane + 8u * v;
                    if (o < no) {
                        if (valid && i32(o) == li) {
                            add_lane(&p_nats, i, -(lg[v * 8u + i] - mx));
                        }
                        if (b0 + i < nb) {
                            work[wr + u.w_dl + row * no + o] = g * (exp(lg[v * 8u + i] - mx) / s - select(0.0, 1.0, i32(o) == li));
                        }
                    }
                }
            }
        }
        storageBarrier();
        workgroupBarrier();

        // dh_t = dlogits·W_rᵀ for the owned units.
        for (var o = 0u; o < no; o++) {
            hv[o] = work[wr + u.w_dl + (t * nb + src) * no + o];
        }
        for (var uu = 0u; uu < nu; uu++) {
            let j = lane + 8u * uu;
            var lo = vec4<f32>(0.0);
            var hi = lo;
            for (var o = 0u; o < no; o++) {
                let d = bc8(hv[o]);
                let w = vec4<f32>(wo[wrow + uu * no + o]);
                lo = fma(d.lo, w, lo);
                hi = fma(d.hi, w, hi);
            }
            put8(wr + u.w_dhs + (t * nb + b0) * hd + j, hd, Oct(lo, hi), b0);
        }
    }
    // Per-lane metrics, summed over the subgroup; lane 0 adds them.
    let sn = Oct(subgroupAdd(p_nats.lo), subgroupAdd(p_nats.hi));
    let se = Oct(subgroupAdd(p_err.lo), subgroupAdd(p_err.hi));
    let sr = Oct(subgroupAdd(p_rows.lo), subgroupAdd(p_rows.hi));
    if (lane == 0u) {
        for (var i = 0u; i < L; i++) {
            if (b0 + i < nb) {
                let mi = (u.metrics_off + r * nb + b0 + i) * METRICS;
                metrics[mi] += lane_of(sn, i);
                metrics[mi + 1u] += lane_of(se, i);
                metrics[mi + 2u] += lane_of(sr, i);
            }
        }
    }

    // The state after the last step, [h_T | c_T], for the owned units.
    for (var uu = 0u; uu < nu; uu++) {
        let j = lane + 8u * uu;
        put8(wr + u.w_state + b0 * h2 + j, h2, oct_at(&hreg, uu * 8u), b0);
        put8(wr + u.w_state + b0 * h2 + hd + j, h2, oct_at(&creg, uu * 8u), b0);
    }
    storageBarrier();
    workgroupBarrier();

    if (u.train == 1u && u.has_sg == 1u) {
        // M(s_last): the injected gradient and, unscaled, the aux head's target.
        let ws = pr + u.off_s;
        let wa = pr + u.off_a;
        let inject = ctl[cr] * u.inv_b;
        // The SG in the true gradient's units: sigma·M (sigma = 1 unless normalising).
        let sigma = ctl[cr + 19u];
        let aux_w = ctl[cr + 2u];
        let aux_on = u.has_aux == 1u && ctl[cr + 12u] > 0.0;
        var p_aux = Oct(vec4<f32>(0.0), vec4<f32>(0.0));
        for (var k = 0u; k < h2; k++) {
            hv[k] = work[wr + u.w_state + src * h2 + k];
        }
        for (var w = 0u; w < h2 / 8u; w++) {
            let m = lane + 8u * w;
            let sgv = mv_priv(params[ws + h2 * h2 + m], &hv, ws + m, h2, h2);
            let lo = sigma * sgv.lo;
            let hi = sigma * sgv.hi;
            put8(wr + u.w_inj + b0 * h2 + m, h2, Oct(inject * lo, inject * hi), b0);
            if (aux_on) {
                // A(h_1) regresses onto M(s_last) (a constant).
                let a = mv_work(params[wa + hd * h2 + m], wr + u.w_hs + src * hd, wa + m, h2, hd);
                let d = Oct(a.lo - lo, a.hi - hi);
                let dd = Oct(d.lo * d.lo, d.hi * d.hi);
                p_aux = Oct(p_aux.lo + 0.5 * dd.lo, p_aux.hi + 0.5 * dd.hi);
                put8(wr + u.w_daux + b0 * h2 + m, h2, Oct(aux_w * u.inv_b * d.lo, aux_w * u.inv_b * d.hi), b0);
            }
        }
        if (aux_on) {
            let sa = Oct(subgroupAdd(p_aux.lo), subgroupAdd(p_aux.hi));
            if (lane == 0u) {
                for (var i = 0u; i < L; i++) {
                    if (b0 + i < nb) {
                        metrics[(u.metrics_off + r * nb + b0 + i) * METRICS + 5u] += lane_of(sa, i);
                    }
                }
            }
            storageBarrier();
            workgroupBarrier();
            // dh_1 += dA·W_aᵀ.
            for (var m = 0u; m < h2; m++) {
                hv[m] = work[wr + u.w_daux + src * h2 + m];
            }
            for (var uu = 0u; uu < nu; uu++) {
                let j = lane + 8u * uu;
                add8(wr + u.w_dhs + b0 * hd + j, hd, mv_priv(0.0, &hv, wa + j * h2, 1u, h2), b0);
            }
        }
    }
}

@compute @workgroup_size(8)
fn backward_c(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let r = wg.y;
    let b0 = wg.x * L;
    let hd = u.hidden;
    let h2 = 2u * hd;
    let h4 = 4u * hd;
    let nb = u.batch;
    let pr = r * u.p_run;
    let wr = r * u.w_run;
    let cr = r * CTL;
    let src = min(b0 + lane, nb - 1u);
    let nu = hd / 8u;

    // Rows of W_h of the owned units (row j holds dh_{t-1}[j]'s weights over the 4H gates).
    var whc: array<f32, 2560>;
    for (var uu = 0u; uu < nu; uu++) {
        let j = lane + 8u * uu;
        for (var m = 0u; m < h4; m++) {
            whc[uu * h4 + m] = wht[r * h4 * hd + m * hd + j];
        }
    }
    // dh through the recurrence and dc of the owned units for the 8 lanes, in registers; they
    // start as the injected SG at the window's last state, or 0.
    var dhr: array<f32, 128>;
    var dcr: array<f32, 128>;
    for (var uu = 0u; uu < nu; uu++) {
        let j = lane + 8u * uu;
        for (var i = 0u; i < L; i++) {
            let b = min(b0 + i, nb - 1u);
            var dh = 0.0;
            var dc = 0.0;
            if (u.has_sg == 1u) {
                dh = work[wr + u.w_inj + b * h2 + j];
                dc = work[wr + u.w_inj + b * h2 + hd + j];
            }
            dhr[uu * 8u + i] = dh;
            dcr[uu * 8u + i] = dc;
        }
    }
    var dv: array<f32, 512>;
    for (var step = 0u; step < u.steps; step++) {
        let t = u.steps - 1u - step;
        let row0 = t * nb + b0;
        for (var uu = 0u; uu < nu; uu++) {
            let j = lane + 8u * uu;
            var gi: array<f32, 8>;
            var gf: array<f32, 8>;
            var gg: array<f32, 8>;
            var go: array<f32, 8>;
            var cp: array<f32, 8>;
            var cc: array<f32, 8>;
            var dhs: array<f32, 8>;
            for (var i = 0u; i < L; i++) {
                let row = min(row0 + i, t * nb + nb - 1u);
                let ga = wr + u.w_gates + row * h4 + j;
                gi[i] = work[ga];
                gf[i] = work[ga + hd];
                gg[i] = work[ga + 2u * hd];
                go[i] = work[ga + 3u * hd];
                cp[i] = work[wr + u.w_cs + row * hd + j];
                cc[i] = work[wr + u.w_cs + (row + nb) * hd + j];
                dhs[i] = work[wr + u.w_dhs + row * hd + j];
            }
            for (var i = 0u; i < L; i++) {
                let dh = dhs[i] + dhr[uu * 8u + i];
                let tc = tanh_c(cc[i]);
                let dct = dcr[uu * 8u + i] + dh * go[i] * (1.0 - tc * tc);
                dcr[uu * 8u + i] = dct * gf[i];
                if (b0 + i < nb) {
                    let da = wr + u.w_dg + (row0 + i) * h4 + j;
                    work[da] = dct * gg[i] * gi[i] * (1.0 - gi[i]);
                    work[da + hd] = dct * cp[i] * gf[i] * (1.0 - gf[i]);
                    work[da + 2u * hd] = dct * gi[i] * (1.0 - gg[i] * gg[i]);
                    work[da + 3u * hd] = dh * tc * go[i] * (1.0 - go[i]);
                }
            }
        }
        storageBarrier();
        workgroupBarrier();
        // dh_{t-1} = dgates_t·W_hᵀ: lane i gathers batch lane i's dgates once.
        for (var m = 0u; m < h4; m++) {
            dv[m] = work[wr + u.w_dg + (t * nb + src) * h4 + m];
        }
        for (var uu = 0u; uu < nu; uu++) {
            var lo = vec4<f32>(0.0);
            var hi = lo;
            for (var m = 0u; m < h4; m++) {
                let d = bc8(dv[m]);
                let w = vec4<f32>(whc[uu * h4 + m]);
                lo = fma(d.lo, w, lo);
                hi = fma(d.hi, w, hi);
            }
            oct_put(&dhr, uu * 8u, Oct(lo, hi));
        }
        workgroupBarrier();
    }

    // The gradient at s0 is [dh_rec | dc]; M(s0) regresses onto it in per-lane units (B·ds0).
    let trained = ctl[cr + 6u] > 0.0;
    // Normalising, M regresses onto target / sigma; the loss metrics stay in the true units.
    let sigma = ctl[cr + 19u];
    var p_loss = Oct(vec4<f32>(0.0), vec4<f32>(0.0));
    var p_zero = p_loss;
    if (u.has_sg == 1u) {
        let fb = f32(nb);
        for (var uu = 0u; uu < nu; uu++) {
            let j = lane + 8u * uu;
            for (var i = 0u; i < L; i++) {
                let b = b0 + i;
                if (b < nb) {
                    for (var hi = 0u; hi < 2u; hi++) {
                        var tgt = dhr[uu * 8u + i];
                        if (hi == 1u) {
                            tgt = dcr[uu * 8u + i];
                        }
                        tgt *= fb;
                        let k = hi * hd + j;
                        let d = work[wr + u.w_at0 + b * h2 + k] - tgt / sigma;
                        var g = 0.0;
                        if (trained) {
                            g = u.inv_b * d;
                            let e = sigma * d;
                            add_lane(&p_loss, i, 0.5 * e * e);
                            add_lane(&p_zero, i, 0.5 * tgt * tgt);
                        }
                        work[wr + u.w_dsg + b * h2 + k] = g;
                    }
                }
            }
        }
    }
    let sl = Oct(subgroupAdd(p_loss.lo), subgroupAdd(p_loss.hi));
    let sz = Oct(subgroupAdd(p_zero.lo), subgroupAdd(p_zero.hi));
    if (lane == 0u) {
        for (var i = 0u; i < L; i++) {
            if (b0 + i < nb) {
                let mi = (u.metrics_off + r * nb + b0 + i) * METRICS;
                metrics[mi + 3u] += lane_of(sl, i);
                metrics[mi + 4u] += lane_of(sz, i);
            }
        }
    }
    if (wg.x == 0u && lane == 0u) {
        ctl[cr + 5u] += 1.0;
        ctl[cr + 7u] = (1.0 - u.beta1) + u.beta1 * ctl[cr + 7u];
        ctl[cr + 8u] = (1.0 - u.beta2) + u.beta2 * ctl[cr + 8u];
        if (trained || (u.has_aux == 1u && ctl[cr + 12u] > 0.0)) {
            ctl[cr + 9u] = (1.0 - u.beta1) + u.beta1 * ctl[cr + 9u];
            ctl[cr + 10u] = (1.0 - u.beta2) + u.beta2 * ctl[cr + 10u];
        }
    }
}

// Weight gradients, CPU variant: a workgroup (one 8-wide subgroup) owns 8 columns of one
// parameter's gradient and caches their d columns; lane i gathers row p0 + i of a per summed row,
// and broadcasts share it, so each gather feeds 64 FMAs. Grid (column octets over all four
// parameters, 1, K).
@compute @workgroup_size(8)
fn grads_c(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let r = wg.z;
    let wr = r * u.w_run;
    let hd = u.hidden;
    // Column octets per parameter: 4H/8, ceil(O/8), 2H/8 (if SG), 2H/8 (if aux).
    let n_l = hd / 2u;
    let n_r = (u.output + 7u) / 8u;
    let n_s = select(0u, hd / 4u, u.has_sg == 1u);
    var oc = wg.x;
    var a_off = u.w_z;
    var a_cols = u.input + hd;
    var d_off = u.w_dg;
    var d_cols = 4u * hd;
    var rows = u.steps * u.batch;
    var out = 0u;
    if (oc >= n_l + n_r + n_s) {
        oc -= n_l + n_r + n_s;
        a_off = u.w_hs;
        a_cols = hd;
        d_off = u.w_daux;
        d_cols = 2u * hd;
        rows = u.batch;
        out = u.off_a;
    } else if (oc >= n_l + n_r) {
        oc -= n_l + n_r;
        a_off = u.w_s0;
        a_cols = 2u * hd;
        d_off = u.w_dsg;
        d_cols = 2u * hd;
        rows = u.batch;
        out = u.off_s;
    } else if (oc >= n_l) {
        oc -= n_l;
        a_off = u.w_hs;
        a_cols = hd;
        d_off = u.w_dl;
        d_cols = u.output;
        out = u.off_r;
    }
    let c = oc * 8u + lane;
    let cc = min(c, d_cols - 1u);
    var dcol: array<f32, 512>;
    for (var i = 0u; i < rows; i++) {
        dcol[i] = g_work[wr + d_off + i * d_cols + cc];
    }
    let base = r * u.p_run + out;
    for (var p0 = 0u; p0 <= a_cols; p0 += 8u) {
        let pa = p0 + lane;
        let pa_c = min(pa, a_cols - 1u);
        let is_one = pa == a_cols;
        let is_in = pa < a_cols;
        var lo = vec4<f32>(0.0);
        var hi = lo;
        for (var i = 0u; i < rows; i++) {
            let a = g_work[wr + a_off + i * a_cols + pa_c];
            let a8 = bc8(select(select(0.0, 1.0, is_one), a, is_in));
            let d = vec4<f32>(dcol[i]);
            lo = fma(a8.lo, d, lo);
            hi = fma(a8.hi, d, hi);
        }
        if (c < d_cols) {
            let acc = Oct(lo, hi);
            for (var q = 0u; q < 8u; q++) {
                if (p0 + q <= a_cols) {
                    g_grads[base + (p0 + q) * d_cols + c] = lane_of(acc, q);
                }
            }
        }
    }
}
