// Losses with their gradients: softmax cross-entropy, sigmoid cross-entropy with a mask and the
// bit-error metric, and the synthetic-gradient L2 regression.
//
// The metric sums are reduced inside one workgroup (a tree in workgroup memory) and added to the
// metrics buffer by one invocation: WGSL has no float atomics, and a fixed reduction order keeps
// runs reproducible. In the cross-entropy kernels each invocation owns whole rows (the class
// counts of these tasks are small); the L2 gradient is a plain elementwise grid.

struct Params {
    rows: u32,
    cols: u32,
    scale: f32,
    _pad: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;

var<workgroup> red0: array<f32, 256>;
var<workgroup> red1: array<f32, 256>;
var<workgroup> red2: array<f32, 256>;

// Tree-sums red0..red2 over the workgroup into element 0. Called in uniform control flow.
fn reduce3(lid: u32) {
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            red0[lid] += red0[lid + stride];
            red1[lid] += red1[lid + stride];
            red2[lid] += red2[lid + stride];
        }
        workgroupBarrier();
    }
}

// ---- softmax_xent: dlogits = scale * (softmax(x) - onehot(label)); metrics += [nll, errors] ----
@group(0) @binding(1) var<storage, read> sm_logits: array<f32>;
@group(0) @binding(2) var<storage, read> sm_labels: array<f32>;
@group(0) @binding(3) var<storage, read_write> sm_dlogits: array<f32>;
@group(0) @binding(4) var<storage, read_write> sm_metrics: array<f32>;

@compute @workgroup_size(256)
fn softmax_xent(@builtin(local_invocation_index) lid: u32) {
    var nll = 0.0;
    var errors = 0.0;
    for (var r = lid; r < p.rows; r += WG) {
        let base = r * p.cols;
        // Labels are class indices stored as f32; one outside [0, cols) marks a row to ignore.
        let li = i32(round(sm_labels[r]));
        let valid = li >= 0 && li < i32(p.cols);
        let label = u32(max(li, 0));
        var m = sm_logits[base];
        var arg = 0u;
        for (var j = 1u; j < p.cols; j++) {
            let v = sm_logits[base + j];
            if (v > m) {
                m = v;
                arg = j;
            }
        }
        var s = 0.0;
        for (var j = 0u; j < p.cols; j++) {
            s += exp(sm_logits[base + j] - m);
        }
        let inv = 1.0 / s;
        let g = select(0.0, p.scale, valid);
        for (var j = 0u; j < p.cols; j++) {
            let prob = exp(sm_logits[base + j] - m) * inv;
            sm_dlogits[base + j] = g * (prob - select(0.0, 1.0, j == label));
        }
        if (valid) {
            nll += log(s) - (sm_logits[base + label] - m);
            errors += select(0.0, 1.0, arg != label);
        }
    }
    red0[lid] = nll;
    red1[lid] = errors;
    red2[lid] = 0.0;
    reduce3(lid);
    if (lid == 0u) {
        sm_metrics[0] += red0[0];
        sm_metrics[1] += red1[0];
    }
}

// ---- sigmoid_xent: dlogits = scale * mask * (sigmoid(x) - t); metrics += [bce, bits, rows] ----
@group(0) @binding(1) var<storage, read> bx_logits: array<f32>;
@group(0) @binding(2) var<storage, read> bx_targets: array<f32>;
@group(0) @binding(3) var<storage, read> bx_mask: array<f32>;
@group(0) @binding(4) var<storage, read_write> bx_dlogits: array<f32>;
@group(0) @binding(5) var<storage, read_write> bx_metrics: array<f32>;

@compute @workgroup_size(256)
fn sigmoid_xent(@builtin(local_invocation_index) lid: u32) {
    var bce = 0.0;
    var bits = 0.0;
    var scored = 0.0;
    for (var r = lid; r < p.rows; r += WG) {
        var hit = false;
        for (var j = 0u; j < p.cols; j++) {
            let i = r * p.cols + j;
            let x = bx_logits[i];
            let t = bx_targets[i];
            let w = bx_mask[i];
            let sig = sigmoid(x);
            bx_dlogits[i] = p.scale * w * (sig - t);
            if (w > 0.0) {
                hit = true;
                // Stable form of -t ln s - (1 - t) ln(1 - s).
                bce += w * (max(x, 0.0) - x * t + log(1.0 + exp(-abs(x))));
                // sigmoid(x) > 0.5 exactly when x > 0.
                bits += select(0.0, 1.0, (x > 0.0) != (t > 0.5));
            }
        }
        scored += select(0.0, 1.0, hit);
    }
    red0[lid] = bce;
    red1[lid] = bits;
    red2[lid] = scored;
    reduce3(lid);
    if (lid == 0u) {
        bx_metrics[0] += red0[0];
        bx_metrics[1] += red1[0];
        bx_metrics[2] += red2[0];
    }
}

// ---- sg_l2: dpred = scale * (pred - target), over a grid; sg_l2_loss: loss += 0.5 * sum sq ----
// rows holds the element count; the grid is folded into two dimensions past 65535 workgroups.
@group(0) @binding(1) var<storage, read> l2_pred: array<f32>;
@group(0) @binding(2) var<storage, read> l2_target: array<f32>;
@group(0) @binding(3) var<storage, read_write> l2_dpred: array<f32>;

@compute @workgroup_size(256)
fn sg_l2_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i < p.rows) {
        l2_dpred[i] = p.scale * (l2_pred[i] - l2_target[i]);
    }
}

@group(0) @binding(3) var<storage, read_write> l2_loss: array<f32>;

@compute @workgroup_size(256)
fn sg_l2_loss(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var i = lid; i < p.rows; i += WG) {
        let d = l2_pred[i] - l2_target[i];
        s += d * d;
    }
    red0[lid] = s;
    red1[lid] = 0.0;
    red2[lid] = 0.0;
    reduce3(lid);
    if (lid == 0u) {
        l2_loss[0] += 0.5 * red0[0];
    }
}
