//! Reference `C = alpha·op(A)·op(B) (+bias) (+beta·C)`.

/// `a` is [m,k] (or [k,m] if `ta`), `b` is [k,n] (or [n,k] if `tb`), `c` is [m,n].
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    alpha: f32,
    bias: Option<&[f32]>,
    beta: Option<f32>,
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for kk in 0..k {
                let av = if ta { a[kk * m + i] } else { a[i * k + kk] };
                let bv = if tb { b[j * k + kk] } else { b[kk * n + j] };
                s += av as f64 * bv as f64;
            }
            let mut v = alpha * s as f32;
            if let Some(bias) = bias {
                v += bias[j];
            }
            if let Some(beta) = beta {
                v += beta * c[i * n + j];
            }
            c[i * n + j] = v;
        }
    }
}
