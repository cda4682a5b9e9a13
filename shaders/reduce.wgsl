// Reductions: column sums (bias gradients) and the sum of a whole tensor (losses, metrics).

struct Params {
    rows: u32,
    cols: u32,
    alpha: f32,
    // out = alpha * sum + beta * out
    beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

// One invocation per column walks the rows: the row count (a batch) is small next to the columns.
@compute @workgroup_size(64)
fn col_sum(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    if (j >= p.cols) {
        return;
    }
    var s = 0.0;
    for (var i = 0u; i < p.rows; i++) {
        s += x[i * p.cols + j];
    }
    var v = p.alpha * s;
    if (p.beta != 0.0) {
        v += p.beta * out[j];
    }
    out[j] = v;
}

// One workgroup sums rows * cols elements: strided partial sums, then a tree in workgroup memory.
var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn sum_all(@builtin(local_invocation_index) lid: u32) {
    let n = p.rows * p.cols;
    var s = 0.0;
    for (var i = lid; i < n; i += 256u) {
        s += x[i];
    }
    partial[lid] = s;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        var v = p.alpha * partial[0];
        if (p.beta != 0.0) {
            v += p.beta * out[0];
        }
        out[0] = v;
    }
}
