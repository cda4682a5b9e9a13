// Elementwise kernels: activations and their derivatives, axpy, axpby, scale, mul, fill.
// One invocation per element; the 1-D index is rebuilt from a 2-D grid so that tensors with
// more than 65535 * 256 elements still dispatch.

struct Params {
    n: u32,
    alpha: f32,
    beta: f32,
    _pad: u32,
}

// 0 identity, 1 relu, 2 tanh, 3 sigmoid
override ACT: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

fn act(x: f32) -> f32 {
    switch ACT {
        case 1u: { return max(x, 0.0); }
        case 2u: { return tanh_c(x); }
        case 3u: { return sigmoid(x); }
        default: { return x; }
    }
}

// Derivative expressed through the activation's output y (cheaper, and what backward has).
fn act_grad_from_output(y: f32) -> f32 {
    switch ACT {
        case 1u: { return select(0.0, 1.0, y > 0.0); }
        case 2u: { return 1.0 - y * y; }
        case 3u: { return y * (1.0 - y); }
        default: { return 1.0; }
    }
}

// ---- unary: y = act(x) ----
@group(0) @binding(1) var<storage, read> u_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> u_y: array<f32>;

@compute @workgroup_size(256)
fn unary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i < p.n) {
        u_y[i] = act(u_x[i]);
    }
}

// ---- unary_grad: dx = dy * act'(y) (+ beta * dx) ----
@group(0) @binding(1) var<storage, read> g_y: array<f32>;
@group(0) @binding(2) var<storage, read> g_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> g_dx: array<f32>;

@compute @workgroup_size(256)
fn unary_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i < p.n) {
        var v = g_dy[i] * act_grad_from_output(g_y[i]);
        if (p.beta != 0.0) {
            v += p.beta * g_dx[i];
        }
        g_dx[i] = v;
    }
}

// ---- axpy: y += alpha * x ----
@group(0) @binding(1) var<storage, read> ax_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> ax_y: array<f32>;

@compute @workgroup_size(256)
fn axpy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i < p.n) {
        ax_y[i] = fma(p.alpha, ax_x[i], ax_y[i]);
    }
}

// ---- axpby: z = alpha * x + beta * y ; mul: z = alpha * x * y ----
@group(0) @binding(1) var<storage, read> b_x: array<f32>;
@group(0) @binding(2) var<storage, read> b_y: array<f32>;
@group(0) @binding(3) var<storage, read_write> b_z: array<f32>;

@compute @workgroup_size(256)
fn axpby(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i < p.n) {
        b_z[i] = p.alpha * b_x[i] + p.beta * b_y[i];
    }
}

@compute @workgroup_size(256)
fn mul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i < p.n) {
        b_z[i] = p.alpha * b_x[i] * b_y[i];
    }
}

// ---- in place: scale (y = alpha * y), fill (y = alpha) ----
@group(0) @binding(1) var<storage, read_write> s_y: array<f32>;

@compute @workgroup_size(256)
fn scale(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i < p.n) {
        s_y[i] = p.alpha * s_y[i];
    }
}

@compute @workgroup_size(256)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i < p.n) {
        s_y[i] = p.alpha;
    }
}

// ---- swap_leading: y[j, i, k] = x[i, j, k] for x of shape [a, b, c] ----
// A feed-forward stack's rows are [batch, steps·features]; an LSTM reads [steps, batch, features].
struct SwapParams {
    n: u32,
    a: u32,
    b: u32,
    c: u32,
}

@group(0) @binding(0) var<uniform> sw: SwapParams;
@group(0) @binding(1) var<storage, read> sw_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> sw_y: array<f32>;

@compute @workgroup_size(256)
fn swap_leading(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = index(gid, nwg);
    if (o < sw.n) {
        // o = (j·a + i)·c + k
        let k = o % sw.c;
        let r = o / sw.c;
        let i = r % sw.a;
        let j = r / sw.a;
        sw_y[o] = sw_x[(i * sw.b + j) * sw.c + k];
    }
}
