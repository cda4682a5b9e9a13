// Fused per-tensor optimiser updates: SGD with momentum, and Adam.
// The step counter, the learning rate and Adam's bias corrections live in a small state buffer on
// the GPU, so the uniform parameters (and so the cached bind groups) never change between steps:
//   state[0] = step t, state[1] = lr, state[2] = 1 - beta1^t, state[3] = 1 - beta2^t,
//   state[4] = this step's squared gradient norm over every parameter, state[5] = the global-norm
//   clip threshold (0: no clipping). With clipping, `sumsq` runs once per parameter between
//   `advance` and the updates, and every update scales its gradient by min(1, clip / norm).
// The bias corrections follow d_t = (1 - beta) + beta * d_{t-1}, a sum of positive terms: the
// direct 1 - pow(beta, t) cancels badly for beta2 near 1, and GPUs may evaluate pow through a
// log2 with only ~2^-21 absolute accuracy near 1.

struct Params {
    n: u32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    momentum: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;

// ---- advance: t += 1 and update the bias corrections (one invocation, once per step) ----
@group(0) @binding(1) var<storage, read_write> a_state: array<f32>;

@compute @workgroup_size(1)
fn advance() {
    a_state[0] = a_state[0] + 1.0;
    a_state[2] = (1.0 - p.beta1) + p.beta1 * a_state[2];
    a_state[3] = (1.0 - p.beta2) + p.beta2 * a_state[3];
    a_state[4] = 0.0;
}

// ---- sumsq: state[4] += Σ grad² of one parameter (one workgroup; dispatches run in order) ----
@group(0) @binding(1) var<storage, read_write> s_state: array<f32>;
@group(0) @binding(2) var<storage, read> s_grad: array<f32>;
var<workgroup> sh_sum: array<f32, 256>;

@compute @workgroup_size(256)
fn sumsq(@builtin(local_invocation_index) li: u32) {
    var acc = 0.0;
    for (var i = li; i < p.n; i += WG) {
        let g = s_grad[i];
        acc += g * g;
    }
    sh_sum[li] = acc;
    workgroupBarrier();
    for (var w = WG / 2u; w > 0u; w = w / 2u) {
        if (li < w) {
            sh_sum[li] += sh_sum[li + w];
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        s_state[4] = s_state[4] + sh_sum[0];
    }
}

// ---- per-parameter updates; m is Adam's first moment or SGD's velocity ----
@group(0) @binding(1) var<storage, read> u_state: array<f32>;
@group(0) @binding(2) var<storage, read_write> u_value: array<f32>;
@group(0) @binding(3) var<storage, read> u_grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> u_m: array<f32>;
@group(0) @binding(5) var<storage, read_write> u_v: array<f32>;

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

// The gradient's factor: min(1, clip / ‖g‖) when clipping (a NaN norm leaves the gradient NaN).
fn clip_factor() -> f32 {
    let c = u_state[5];
    let norm = sqrt(u_state[4]);
    return select(1.0, c / norm, c > 0.0 && norm > c);
}

@compute @workgroup_size(256)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) {
        return;
    }
    let g = u_grad[i] * clip_factor();
    let m = p.beta1 * u_m[i] + (1.0 - p.beta1) * g;
    let v = p.beta2 * u_v[i] + (1.0 - p.beta2) * g * g;
    u_m[i] = m;
    u_v[i] = v;
    let m_hat = m / u_state[2];
    let v_hat = v / u_state[3];
    u_value[i] -= u_state[1] * m_hat / (sqrt(v_hat) + p.eps);
}

@compute @workgroup_size(256)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) {
        return;
    }
    let vel = p.momentum * u_m[i] + u_grad[i] * clip_factor();
    u_m[i] = vel;
    u_value[i] -= u_state[1] * vel;
}
