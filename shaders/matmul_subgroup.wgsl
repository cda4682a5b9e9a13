// C = alpha * op(A) * op(B) (+ bias[col]) (+ beta * C), same contract as matmul.wgsl, for CPU
// adapters with 8-wide subgroups (lavapipe on AVX2). llvmpipe runs a subgroup as the lanes of one
// SIMD register and turns every per-lane memory load into a gather, which is what limits a
// matmul there. Here a subgroup computes an 8-row x 16-column block of C: per k, lane l gathers
// one element of A (row r0 + l) and two of B (columns c0 + l and c0 + 8 + l); the 8 A values
// reach every lane through subgroupBroadcast, a register permute. That is 3 gathers for 16 FMAs
// per lane, against 8 for 16 in the plain register-blocked kernel.
// The launcher only picks this kernel when the adapter's subgroup size is exactly 8.


struct Params {
    m: u32,
    n: u32,
    k: u32,
    alpha: f32,
    beta: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// What the product does, fixed per pipeline by the launcher (ops/matmul.rs), so that no loop
// tests a flag: op(A) = Aᵀ, op(B) = Bᵀ, add bias[col], add beta·C.
override TRANS_A: bool = false;
override TRANS_B: bool = false;
override ADD_BIAS: bool = false;
override ACCUMULATE: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

fn store(row: u32, col: u32, acc: f32) {
    if (row >= p.m || col >= p.n) {
        return;
    }
    var v = p.alpha * acc;
    if (ADD_BIAS) {
        v += bias[col];
    }
    let idx = row * p.n + col;
    if (ACCUMULATE) {
        v += p.beta * c[idx];
    }
    c[idx] = v;
}

// 64 invocations = 8 subgroups of 8; the workgroup covers 8 rows x 128 columns. Row blocks run
// along workgroup_id.x, the fastest-moving index, so consecutive workgroups share one 128-column
// strip of B and find it in cache.
@compute @workgroup_size(64, 1, 1)
fn matmul_sg8(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let row0 = wid.x * 8u;
    let col0 = wid.y * 128u + sg * 16u;
    let a_rs = select(p.k, 1u, TRANS_A);
    let a_ks = select(1u, p.m, TRANS_A);
    let b_cs = select(1u, p.k, TRANS_B);
    let b_ks = select(p.n, 1u, TRANS_B);
    // Clamped indices: rows/columns past the edge read valid memory and are never stored.
    var ai = min(row0 + lane, p.m - 1u) * a_rs;
    var bi0 = min(col0 + lane, p.n - 1u) * b_cs;
    var bi1 = min(col0 + 8u + lane, p.n - 1u) * b_cs;
    var acc0 = vec4<f32>(0.0); // rows 0-3, column col0 + lane
    var acc1 = vec4<f32>(0.0); // rows 4-7
    var acc2 = vec4<f32>(0.0); // rows 0-3, column col0 + 8 + lane
    var acc3 = vec4<f32>(0.0); // rows 4-7
    for (var kk = 0u; kk < p.k; kk++) {
        let av = a[ai];
        let b0 = vec4<f32>(b[bi0]);
        let b1 = vec4<f32>(b[bi1]);
        let lo = vec4<f32>(
            subgroupBroadcast(av, 0u),
            subgroupBroadcast(av, 1u),
            subgroupBroadcast(av, 2u),
            subgroupBroadcast(av, 3u),
        );
        let hi = vec4<f32>(
            subgroupBroadcast(av, 4u),
            subgroupBroadcast(av, 5u),
            subgroupBroadcast(av, 6u),
            subgroupBroadcast(av, 7u),
        );
        acc0 = fma(lo, b0, acc0);
        acc1 = fma(hi, b0, acc1);
        acc2 = fma(lo, b1, acc2);
        acc3 = fma(hi, b1, acc3);
        ai += a_ks;
        bi0 += b_ks;
        bi1 += b_ks;
    }
    let ca = col0 + lane;
    let cb = col0 + 8u + lane;
    for (var i = 0u; i < 4u; i++) {
        store(row0 + i, ca, acc0[i]);
        store(row0 + 4u + i, ca, acc1[i]);
        store(row0 + i, cb, acc2[i]);
        store(row0 + 4u + i, cb, acc3[i]);
    }
}
