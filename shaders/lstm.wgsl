// LSTM kernels. Gate order i, f, g, o: a gate row of one lane is [i | f | g | o], each H wide.
//   c = f * c_prev + i * g,   h = o * tanh(c),   i, f, o = sigmoid(.), g = tanh(.)
// One invocation per (lane b, unit j), i.e. B * H invocations; the 1-D index is rebuilt from a
// 2-D grid so very large B * H still dispatches.
//
// Entry points:
//   cell_forward / cell_backward     - one step on standalone [B,4H] / [B,H] tensors.
//   window_forward / window_backward - one step of a truncated-BPTT window: the step t (in the
//                                      params) indexes the window's [T,B,*] sequences, so one
//                                      set of buffers serves every step.
//   state_split / state_join         - a state [B,2H] (h in columns 0..H, c in H..2H) to and
//                                      from two [B,H] halves.
// Each entry point declares its own globals: no entry uses two globals with one binding.

struct Params {
    batch: u32,
    hidden: u32,
    // Step index within the window (window entry points only).
    t: u32,
    // Window length T (window entry points only).
    steps: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

const WG: u32 = 256u;

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

// sigmoid and tanh_c (clamped) come from shaders/prelude.wgsl.

struct Cell {
    i: f32,
    f: f32,
    g: f32,
    o: f32,
    c: f32,
    h: f32,
}

fn cell(zi: f32, zf: f32, zg: f32, zo: f32, c_prev: f32) -> Cell {
    let i = sigmoid(zi);
    let f = sigmoid(zf);
    let g = tanh_c(zg);
    let o = sigmoid(zo);
    let c = f * c_prev + i * g;
    return Cell(i, f, g, o, c, o * tanh_c(c));
}

struct CellGrad {
    dzi: f32,
    dzf: f32,
    dzg: f32,
    dzo: f32,
    dc_prev: f32,
}

// Gradients w.r.t. the gate pre-activations and c_prev, from the activated gates, c_prev, c and
// the gradients dh, dc arriving at this step's outputs.
fn cell_grad(i: f32, f: f32, g: f32, o: f32, c_prev: f32, c: f32, dh: f32, dc: f32) -> CellGrad {
    let tc = tanh_c(c);
    let dct = dc + dh * o * (1.0 - tc * tc);
    return CellGrad(
        dct * g * i * (1.0 - i),
        dct * c_prev * f * (1.0 - f),
        dct * i * (1.0 - g * g),
        dh * tc * o * (1.0 - o),
        dct * f,
    );
}

// ---- cell_forward: gates_pre [B,4H], c_prev [B,H] -> gates [B,4H], c [B,H], h [B,H] ----
@group(0) @binding(1) var<storage, read> cf_pre: array<f32>;
@group(0) @binding(2) var<storage, read> cf_cprev: array<f32>;
@group(0) @binding(3) var<storage, read_write> cf_gates: array<f32>;
@group(0) @binding(4) var<storage, read_write> cf_c: array<f32>;
@group(0) @binding(5) var<storage, read_write> cf_h: array<f32>;

@compute @workgroup_size(WG)
fn cell_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let k = index(gid, nwg);
    let hd = p.hidden;
    if (k >= p.batch * hd) {
        return;
    }
    let b = k / hd;
    let j = k % hd;
    let g0 = b * 4u * hd + j;
    let s = cell(cf_pre[g0], cf_pre[g0 + hd], cf_pre[g0 + 2u * hd], cf_pre[g0 + 3u * hd], cf_cprev[k]);
    cf_gates[g0] = s.i;
    cf_gates[g0 + hd] = s.f;
    cf_gates[g0 + 2u * hd] = s.g;
    cf_gates[g0 + 3u * hd] = s.o;
    cf_c[k] = s.c;
    cf_h[k] = s.h;
}

// ---- cell_backward: gates, c_prev, c, dh, dc -> dgates_pre [B,4H], dc_prev [B,H] ----
@group(0) @binding(1) var<storage, read> cb_gates: array<f32>;
@group(0) @binding(2) var<storage, read> cb_cprev: array<f32>;
@group(0) @binding(3) var<storage, read> cb_c: array<f32>;
@group(0) @binding(4) var<storage, read> cb_dh: array<f32>;
@group(0) @binding(5) var<storage, read> cb_dc: array<f32>;
@group(0) @binding(6) var<storage, read_write> cb_dpre: array<f32>;
@group(0) @binding(7) var<storage, read_write> cb_dcprev: array<f32>;

@compute @workgroup_size(WG)
fn cell_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let k = index(gid, nwg);
    let hd = p.hidden;
    if (k >= p.batch * hd) {
        return;
    }
    let b = k / hd;
    let j = k % hd;
    let g0 = b * 4u * hd + j;
    let d = cell_grad(
        cb_gates[g0], cb_gates[g0 + hd], cb_gates[g0 + 2u * hd], cb_gates[g0 + 3u * hd],
        cb_cprev[k], cb_c[k], cb_dh[k], cb_dc[k],
    );
    cb_dpre[g0] = d.dzi;
    cb_dpre[g0 + hd] = d.dzf;
    cb_dpre[g0 + 2u * hd] = d.dzg;
    cb_dpre[g0 + 3u * hd] = d.dzo;
    cb_dcprev[k] = d.dc_prev;
}

// ---- window_forward: step t of a window ----
// On entry wf_gates[t] holds x_t·W_x + b (the window's input projection) and wf_rec holds
// h_{t-1}·W_h; wf_cs[t] holds c_{t-1} and wf_hcur holds h_{t-1}. Writes the activated gates over
// wf_gates[t], c_t to wf_cs[t+1], h_t to wf_hs[t] (the window output) and wf_hcur (next step's
// matmul operand), h_{t-1} to wf_hp[t] (for dW_h), and the state [h_T | c_T] at the last step.
@group(0) @binding(1) var<storage, read> wf_rec: array<f32>;     // [B,4H]
@group(0) @binding(2) var<storage, read_write> wf_gates: array<f32>; // [T,B,4H]
@group(0) @binding(3) var<storage, read_write> wf_cs: array<f32>;    // [T+1,B,H]
@group(0) @binding(4) var<storage, read_write> wf_hs: array<f32>;    // [T,B,H]
@group(0) @binding(5) var<storage, read_write> wf_hp: array<f32>;    // [T,B,H]
@group(0) @binding(6) var<storage, read_write> wf_hcur: array<f32>;  // [B,H]
@group(0) @binding(7) var<storage, read_write> wf_slast: array<f32>; // [B,2H]

@compute @workgroup_size(WG)
fn window_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let k = index(gid, nwg);
    let hd = p.hidden;
    let bh = p.batch * hd;
    if (k >= bh) {
        return;
    }
    let b = k / hd;
    let j = k % hd;
    let r0 = b * 4u * hd + j;
    let g0 = p.t * 4u * bh + r0;
    let s = cell(
        wf_gates[g0] + wf_rec[r0],
        wf_gates[g0 + hd] + wf_rec[r0 + hd],
        wf_gates[g0 + 2u * hd] + wf_rec[r0 + 2u * hd],
        wf_gates[g0 + 3u * hd] + wf_rec[r0 + 3u * hd],
        wf_cs[p.t * bh + k],
    );
    wf_gates[g0] = s.i;
    wf_gates[g0 + hd] = s.f;
    wf_gates[g0 + 2u * hd] = s.g;
    wf_gates[g0 + 3u * hd] = s.o;
    wf_cs[(p.t + 1u) * bh + k] = s.c;
    wf_hs[p.t * bh + k] = s.h;
    // Same element, same invocation: read h_{t-1} before overwriting it with h_t.
    wf_hp[p.t * bh + k] = wf_hcur[k];
    wf_hcur[k] = s.h;
    if (p.t + 1u == p.steps) {
        wf_slast[b * 2u * hd + j] = s.h;
        wf_slast[b * 2u * hd + hd + j] = s.c;
    }
}

// ---- window_backward: step t of the backward recurrence ----
// wb_dhrec holds the gradient reaching h_t through the recurrence (dgates_{t+1}·W_hᵀ, or the
// h half of the gradient at the window's last state); wb_dc holds dc_t and becomes dc_{t-1}.
// Writes dgates_pre[t] into the window's [T,B,4H] buffer (for the weight gradients) and into
// wb_dgcur (the next recurrent matmul's operand).
@group(0) @binding(1) var<storage, read> wb_gates: array<f32>;  // [T,B,4H] activated
@group(0) @binding(2) var<storage, read> wb_cs: array<f32>;     // [T+1,B,H]
@group(0) @binding(3) var<storage, read> wb_dhseq: array<f32>;  // [T,B,H]
@group(0) @binding(4) var<storage, read> wb_dhrec: array<f32>;  // [B,H]
@group(0) @binding(5) var<storage, read_write> wb_dc: array<f32>;     // [B,H]
@group(0) @binding(6) var<storage, read_write> wb_dgates: array<f32>; // [T,B,4H]
@group(0) @binding(7) var<storage, read_write> wb_dgcur: array<f32>;  // [B,4H]

@compute @workgroup_size(WG)
fn window_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let k = index(gid, nwg);
    let hd = p.hidden;
    let bh = p.batch * hd;
    if (k >= bh) {
        return;
    }
    let b = k / hd;
    let j = k % hd;
    let r0 = b * 4u * hd + j;
    let g0 = p.t * 4u * bh + r0;
    let d = cell_grad(
        wb_gates[g0], wb_gates[g0 + hd], wb_gates[g0 + 2u * hd], wb_gates[g0 + 3u * hd],
        wb_cs[p.t * bh + k], wb_cs[(p.t + 1u) * bh + k],
        wb_dhseq[p.t * bh + k] + wb_dhrec[k], wb_dc[k],
    );
    wb_dgates[g0] = d.dzi;
    wb_dgates[g0 + hd] = d.dzf;
    wb_dgates[g0 + 2u * hd] = d.dzg;
    wb_dgates[g0 + 3u * hd] = d.dzo;
    wb_dgcur[r0] = d.dzi;
    wb_dgcur[r0 + hd] = d.dzf;
    wb_dgcur[r0 + 2u * hd] = d.dzg;
    wb_dgcur[r0 + 3u * hd] = d.dzo;
    wb_dc[k] = d.dc_prev;
}

// ---- state_split: s [B,2H] -> h [B,H], c [B,H] (the first B*H elements of each) ----
@group(0) @binding(1) var<storage, read> ss_s: array<f32>;
@group(0) @binding(2) var<storage, read_write> ss_h: array<f32>;
@group(0) @binding(3) var<storage, read_write> ss_c: array<f32>;

@compute @workgroup_size(WG)
fn state_split(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let k = index(gid, nwg);
    let hd = p.hidden;
    if (k >= p.batch * hd) {
        return;
    }
    let b = k / hd;
    let j = k % hd;
    ss_h[k] = ss_s[b * 2u * hd + j];
    ss_c[k] = ss_s[b * 2u * hd + hd + j];
}

// ---- state_join: h [B,H], c [B,H] -> s [B,2H] ----
@group(0) @binding(1) var<storage, read> sj_h: array<f32>;
@group(0) @binding(2) var<storage, read> sj_c: array<f32>;
@group(0) @binding(3) var<storage, read_write> sj_s: array<f32>;

@compute @workgroup_size(WG)
fn state_join(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let k = index(gid, nwg);
    let hd = p.hidden;
    if (k >= p.batch * hd) {
        return;
    }
    let b = k / hd;
    let j = k % hd;
    sj_s[b * 2u * hd + j] = sj_h[k];
    sj_s[b * 2u * hd + hd + j] = sj_c[k];
}
