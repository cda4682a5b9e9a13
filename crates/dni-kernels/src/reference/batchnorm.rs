//! Reference batch normalisation over the rows of a `rows x cols` matrix, per column.

/// Training-mode forward outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct BnForward {
    pub y: Vec<f32>,
    pub mean: Vec<f32>,
    pub invstd: Vec<f32>,
}

/// Backward outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct BnBackward {
    pub dx: Vec<f32>,
    pub dgamma: Vec<f32>,
    pub dbeta: Vec<f32>,
}

/// Per-column mean and biased variance.
fn stats(x: &[f64], rows: usize, cols: usize) -> (Vec<f64>, Vec<f64>) {
    let mut mean = vec![0.0; cols];
    let mut var = vec![0.0; cols];
    for j in 0..cols {
        for i in 0..rows {
            mean[j] += x[i * cols + j];
        }
        mean[j] /= rows as f64;
        for i in 0..rows {
            var[j] += (x[i * cols + j] - mean[j]).powi(2);
        }
        var[j] /= rows as f64;
    }
    (mean, var)
}

/// Training-mode output `y = gamma·(x − mean)/√(var + eps) + beta` in f64 (for finite differences).
pub fn normalize_f64(
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    rows: usize,
    cols: usize,
    eps: f64,
) -> Vec<f64> {
    let (mean, var) = stats(x, rows, cols);
    let mut y = vec![0.0; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            let k = i * cols + j;
            y[k] = gamma[j] * (x[k] - mean[j]) / (var[j] + eps).sqrt() + beta[j];
        }
    }
    y
}

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn to32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Training forward: batch statistics; updates the running statistics (unbiased variance).
#[allow(clippy::too_many_arguments)]
pub fn forward_train(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    rows: usize,
    cols: usize,
    eps: f32,
    momentum: f32,
    running_mean: &mut [f32],
    running_var: &mut [f32],
) -> BnForward {
    let x64 = to64(x);
    let (mean, var) = stats(&x64, rows, cols);
    let y = normalize_f64(&x64, &to64(gamma), &to64(beta), rows, cols, eps as f64);
    let m = momentum as f64;
    for j in 0..cols {
        let unbiased = var[j] * rows as f64 / (rows as f64 - 1.0);
        running_mean[j] = ((1.0 - m) * running_mean[j] as f64 + m * mean[j]) as f32;
        running_var[j] = ((1.0 - m) * running_var[j] as f64 + m * unbiased) as f32;
    }
    BnForward {
        y: to32(&y),
        mean: to32(&mean),
        invstd: var
            .iter()
            .map(|v| (1.0 / (v + eps as f64).sqrt()) as f32)
            .collect(),
    }
}

/// Eval forward: normalise by the running statistics.
#[allow(clippy::too_many_arguments)]
pub fn forward_eval(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    rows: usize,
    cols: usize,
    eps: f32,
    running_mean: &[f32],
    running_var: &[f32],
) -> Vec<f32> {
    let mut y = vec![0.0f32; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            let k = i * cols + j;
            let xhat = (x[k] as f64 - running_mean[j] as f64)
                / (running_var[j] as f64 + eps as f64).sqrt();
            y[k] = (gamma[j] as f64 * xhat + beta[j] as f64) as f32;
        }
    }
    y
}

/// Backward of the training forward, from the saved mean and inverse std.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    mean: &[f32],
    invstd: &[f32],
    rows: usize,
    cols: usize,
) -> BnBackward {
    let n = rows as f64;
    let mut dx = vec![0.0f32; rows * cols];
    let mut dgamma = vec![0.0f32; cols];
    let mut dbeta = vec![0.0f32; cols];
    for j in 0..cols {
        let (mu, is) = (mean[j] as f64, invstd[j] as f64);
        let xhat = |i: usize| (x[i * cols + j] as f64 - mu) * is;
        let mut db = 0.0;
        let mut dg = 0.0;
        for i in 0..rows {
            let d = dy[i * cols + j] as f64;
            db += d;
            dg += d * xhat(i);
        }
        dbeta[j] = db as f32;
        dgamma[j] = dg as f32;
        let c = gamma[j] as f64 * is / n;
        for i in 0..rows {
            let d = dy[i * cols + j] as f64;
            dx[i * cols + j] = (c * (n * d - db - xhat(i) * dg)) as f32;
        }
    }
    BnBackward { dx, dgamma, dbeta }
}
