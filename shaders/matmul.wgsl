// C = alpha * op(A) * op(B) (+ bias[col]) (+ beta * C)
// A is [M,K] row-major, or [K,M] when TRANS_A; B is [K,N], or [N,K] when TRANS_B (override constants).
// Two entry points share the maths:
//   matmul_reg   - register blocking only (4x4 outputs per invocation, no workgroup memory).
//                  For CPU adapters (llvmpipe) without 8-wide subgroups, where every barrier
//                  is expensive; matmul_subgroup.wgsl is faster where subgroups exist.
//   matmul_tiled - 64x64 tiles staged through workgroup memory, 4x4 per invocation.
//                  Best on real GPUs.
// Out-of-range rows/columns are read at a clamped index and never stored, so no masking is
// needed in the inner loop (row i of C depends only on row i of op(A), likewise columns).

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

// 4 x 16 was the fastest of 8x8, 16x16, 32x2, 1x64, 2x32, 4x8, 4x32 in one sweep on lavapipe
// (Mesa 25, AVX2, a busy 2-core machine: treat the ranking as rough).
// The launcher sets both (REG_WG in ops/matmul.rs) and sizes its grid from the same numbers;
// the defaults only serve tools that compile the file alone.
override WG_X: u32 = 4u;
override WG_Y: u32 = 16u;

fn a_at(row: u32, kk: u32) -> f32 {
    if (TRANS_A) {
        return a[kk * p.m + row];
    }
    return a[row * p.k + kk];
}

fn b_at(kk: u32, col: u32) -> f32 {
    if (TRANS_B) {
        return b[col * p.k + kk];
    }
    return b[kk * p.n + col];
}

fn store_block(row0: u32, col0: u32, acc: array<vec4<f32>, 4>) {
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + i;
        if (row >= p.m) {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + j;
            if (col >= p.n) {
                break;
            }
            var v = p.alpha * acc[i][j];
            if (ADD_BIAS) {
                v += bias[col];
            }
            let idx = row * p.n + col;
            if (ACCUMULATE) {
                v += p.beta * c[idx];
            }
            c[idx] = v;
        }
    }
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn matmul_reg(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row0 = gid.y * 4u;
    let col0 = gid.x * 4u;
    if (row0 >= p.m || col0 >= p.n) {
        return;
    }
    let mr = p.m - 1u;
    let nc = p.n - 1u;
    let r0 = row0;
    let r1 = min(row0 + 1u, mr);
    let r2 = min(row0 + 2u, mr);
    let r3 = min(row0 + 3u, mr);
    let c0 = col0;
    let c1 = min(col0 + 1u, nc);
    let c2 = min(col0 + 2u, nc);
    let c3 = min(col0 + 3u, nc);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    // Strides turn the transpose into index arithmetic outside the loop.
    let a_rs = select(p.k, 1u, TRANS_A); // step between rows
    let a_ks = select(1u, p.m, TRANS_A); // step along k
    let b_cs = select(1u, p.k, TRANS_B); // step between columns
    let b_ks = select(p.n, 1u, TRANS_B); // step along k
    var ai0 = r0 * a_rs;
    var ai1 = r1 * a_rs;
    var ai2 = r2 * a_rs;
    var ai3 = r3 * a_rs;
    var bi0 = c0 * b_cs;
    var bi1 = c1 * b_cs;
    var bi2 = c2 * b_cs;
    var bi3 = c3 * b_cs;
    for (var kk = 0u; kk < p.k; kk++) {
        let bv = vec4<f32>(b[bi0], b[bi1], b[bi2], b[bi3]);
        acc0 = fma(vec4<f32>(a[ai0]), bv, acc0);
        acc1 = fma(vec4<f32>(a[ai1]), bv, acc1);
        acc2 = fma(vec4<f32>(a[ai2]), bv, acc2);
        acc3 = fma(vec4<f32>(a[ai3]), bv, acc3);
        ai0 += a_ks;
        ai1 += a_ks;
        ai2 += a_ks;
        ai3 += a_ks;
        bi0 += b_ks;
        bi1 += b_ks;
        bi2 += b_ks;
        bi3 += b_ks;
    }
    store_block(row0, col0, array<vec4<f32>, 4>(acc0, acc1, acc2, acc3));
}

// ---- tiled version (16x16 invocations, 64x64 tile of C, BK = 16) ----
const TILE: u32 = 64u;
const BK: u32 = 16u;
var<workgroup> tile_a: array<vec4<f32>, 256>; // [BK][TILE/4]: tile_a[k][i] = rows 4i..4i+3
var<workgroup> tile_b: array<vec4<f32>, 256>; // [BK][TILE/4]: tile_b[k][j] = cols 4j..4j+3

@compute @workgroup_size(16, 16, 1)
fn matmul_tiled(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let tile_row = wid.y * TILE;
    let tile_col = wid.x * TILE;
    let lin = lid.y * 16u + lid.x;
    let mr = p.m - 1u;
    let nc = p.n - 1u;
    var acc = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    let ktiles = (p.k + BK - 1u) / BK;
    for (var t = 0u; t < ktiles; t++) {
        // 256 invocations load a BK x 64 slab of op(A) and of op(B): one vec4 each.
        let lk = lin / 16u;
        let l4 = lin % 16u;
        let kk = t * BK + lk;
        let kin = kk < p.k;
        let kc = min(kk, p.k - 1u);
        let ra = tile_row + l4 * 4u;
        var va = vec4<f32>(
            a_at(min(ra, mr), kc),
            a_at(min(ra + 1u, mr), kc),
            a_at(min(ra + 2u, mr), kc),
            a_at(min(ra + 3u, mr), kc),
        );
        let cb = tile_col + l4 * 4u;
        var vb = vec4<f32>(
            b_at(kc, min(cb, nc)),
            b_at(kc, min(cb + 1u, nc)),
            b_at(kc, min(cb + 2u, nc)),
            b_at(kc, min(cb + 3u, nc)),
        );
        // Past the end of K the slab must contribute zero.
        tile_a[lk * 16u + l4] = select(vec4<f32>(0.0), va, kin);
        tile_b[lk * 16u + l4] = select(vec4<f32>(0.0), vb, kin);
        workgroupBarrier();
        for (var k2 = 0u; k2 < BK; k2++) {
            let av = tile_a[k2 * 16u + lid.y];
            let bv = tile_b[k2 * 16u + lid.x];
            acc[0] = fma(vec4<f32>(av.x), bv, acc[0]);
            acc[1] = fma(vec4<f32>(av.y), bv, acc[1]);
            acc[2] = fma(vec4<f32>(av.z), bv, acc[2]);
            acc[3] = fma(vec4<f32>(av.w), bv, acc[3]);
        }
        workgroupBarrier();
    }
    store_block(tile_row + lid.y * 4u, tile_col + lid.x * 4u, acc);
}
