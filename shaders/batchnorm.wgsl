// Batch normalisation over the rows of x [rows, cols], per feature (column).
// One invocation per feature walks the rows: neighbouring invocations read neighbouring columns,
// and the batch is small next to what a GPU needs to hide a loop. Variance is two-pass (mean
// first) for accuracy.

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    // running = (1 - momentum) * running + momentum * batch statistic
    momentum: f32,
}

@group(0) @binding(0) var<uniform> p: Params;

// ---- forward (training: batch statistics; eval: running statistics) ----
@group(0) @binding(1) var<storage, read> f_x: array<f32>;
@group(0) @binding(2) var<storage, read> f_gamma: array<f32>;
@group(0) @binding(3) var<storage, read> f_beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> f_y: array<f32>;
@group(0) @binding(5) var<storage, read_write> f_mean: array<f32>;
@group(0) @binding(6) var<storage, read_write> f_invstd: array<f32>;
@group(0) @binding(7) var<storage, read_write> f_running_mean: array<f32>;
@group(0) @binding(8) var<storage, read_write> f_running_var: array<f32>;

fn write_y(j: u32, mean: f32, invstd: f32) {
    let g = f_gamma[j] * invstd;
    let b = f_beta[j];
    for (var i = 0u; i < p.rows; i++) {
        let k = i * p.cols + j;
        f_y[k] = g * (f_x[k] - mean) + b;
    }
}

// Needs rows >= 2 (the launcher checks) for the unbiased running variance.
@compute @workgroup_size(64)
fn forward_train(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    if (j >= p.cols) {
        return;
    }
    let n = f32(p.rows);
    var s = 0.0;
    for (var i = 0u; i < p.rows; i++) {
        s += f_x[i * p.cols + j];
    }
    let mean = s / n;
    var ss = 0.0;
    for (var i = 0u; i < p.rows; i++) {
        let d = f_x[i * p.cols + j] - mean;
        ss += d * d;
    }
    let invstd = 1.0 / sqrt(ss / n + p.eps);
    f_mean[j] = mean;
    f_invstd[j] = invstd;
    let m = p.momentum;
    f_running_mean[j] = (1.0 - m) * f_running_mean[j] + m * mean;
    f_running_var[j] = (1.0 - m) * f_running_var[j] + m * (ss / (n - 1.0));
    write_y(j, mean, invstd);
}

@compute @workgroup_size(64)
fn forward_eval(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    if (j >= p.cols) {
        return;
    }
    write_y(j, f_running_mean[j], 1.0 / sqrt(f_running_var[j] + p.eps));
}

// ---- backward of the training-mode forward ----
// With xhat = (x - mean) * invstd: dbeta = sum dy, dgamma = sum dy * xhat,
// dx = gamma * invstd / n * (n * dy - dbeta - xhat * dgamma).
@group(0) @binding(1) var<storage, read> b_x: array<f32>;
@group(0) @binding(2) var<storage, read> b_dy: array<f32>;
@group(0) @binding(3) var<storage, read> b_gamma: array<f32>;
@group(0) @binding(4) var<storage, read> b_mean: array<f32>;
@group(0) @binding(5) var<storage, read> b_invstd: array<f32>;
@group(0) @binding(6) var<storage, read_write> b_dx: array<f32>;
@group(0) @binding(7) var<storage, read_write> b_dgamma: array<f32>;
@group(0) @binding(8) var<storage, read_write> b_dbeta: array<f32>;

@compute @workgroup_size(64)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    if (j >= p.cols) {
        return;
    }
    let n = f32(p.rows);
    let mean = b_mean[j];
    let invstd = b_invstd[j];
    var db = 0.0;
    var dg = 0.0;
    for (var i = 0u; i < p.rows; i++) {
        let k = i * p.cols + j;
        let dy = b_dy[k];
        db += dy;
        dg += dy * (b_x[k] - mean) * invstd;
    }
    b_dbeta[j] = db;
    b_dgamma[j] = dg;
    let c = b_gamma[j] * invstd / n;
    for (var i = 0u; i < p.rows; i++) {
        let k = i * p.cols + j;
        let xhat = (b_x[k] - mean) * invstd;
        b_dx[k] = c * (n * b_dy[k] - db - xhat * dg);
    }
}
