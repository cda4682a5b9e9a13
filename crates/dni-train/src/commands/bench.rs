//! `dni-train bench`: the fixed workloads of docs/BENCHMARKS.md, printed with the adapter name.
//! W1 (matmul GFLOP/s) and the LSTM truncated-BPTT window kernels (W3 kernel part) live here;
//! whole training steps (W2, W3, W4, locked vs decoupled) come from the trainers' bench modules.

use dni_kernels::bench::{matmul_gflops, median, time_samples};
use dni_kernels::ops::lstm::{LstmGrads, LstmParams, LstmWindow};
use dni_kernels::ops::matmul::MatmulVariant;
use dni_kernels::testing::Lcg;
use dni_kernels::{Gpu, Tensor};

use crate::config::Backend;

/// What to run.
#[derive(Clone, Copy, Debug)]
pub struct BenchOptions {
    pub backend: Backend,
    /// Fewer sizes and samples (a smoke run).
    pub quick: bool,
}

pub fn run(opts: BenchOptions) -> anyhow::Result<()> {
    let gpu = super::open_gpu(opts.backend)?;
    let samples = if opts.quick { 3 } else { 7 };
    println!("# dni-train bench");
    println!("adapter: {}", gpu.adapter());
    println!(
        "command: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    println!();
    println!("## W1: C = A·B, square (GFLOP/s, median of {samples})");
    println!("| n | register (CPU tiles) | tiled (GPU tiles) | auto |");
    println!("|---|---|---|---|");
    let sizes: &[usize] = if opts.quick {
        &[256, 512]
    } else {
        &[256, 512, 1024, 2048]
    };
    for &n in sizes {
        let reg = matmul_gflops(&gpu, n, MatmulVariant::Register, samples)?;
        let tiled = matmul_gflops(&gpu, n, MatmulVariant::Tiled, samples)?;
        let auto = matmul_gflops(&gpu, n, MatmulVariant::Auto, samples)?;
        println!("| {n} | {reg:.2} | {tiled:.2} | {auto:.2} |");
    }
    println!();
    println!("## W3 kernels: one LSTM truncated-BPTT window, input 10, hidden 256, batch 16 (forward + backward)");
    println!("| T | ms / window | tokens/s |");
    println!("|---|---|---|");
    for t in [5usize, 20] {
        let ms = lstm_window_ms(&gpu, 10, 256, 16, t, samples)?;
        println!("| {t} | {ms:.2} | {:.0} |", (16 * t) as f64 / (ms / 1e3));
    }
    println!();
    println!("## W3, W4: whole recurrent training steps (upload, forward, loss, SG, backward, SGD update), median");
    println!("| workload | variant | ms / step | throughput |");
    println!("|---|---|---|---|");
    for r in super::bench_rnn::run(&gpu, opts.quick)? {
        println!(
            "| {} | {} | {:.2} | {:.0} {} |",
            r.workload, r.variant, r.ms_per_step, r.per_sec, r.unit
        );
    }
    println!();
    println!("## W2 and the paper's MNIST FCN: whole feed-forward training steps (upload, forward, loss, backward, update), median");
    println!("| workload | variant | ms / step | throughput |");
    println!("|---|---|---|---|");
    for r in super::bench_ff::run(&gpu, opts.quick)? {
        println!(
            "| {} | {} | {:.2} | {:.0} {} |",
            r.workload, r.variant, r.ms_per_step, r.per_sec, r.unit
        );
    }
    println!();
    println!("pipelines compiled: {}", gpu.pipelines_compiled());
    Ok(())
}

/// Median milliseconds of one LSTM window forward + backward (with an incoming state gradient).
pub fn lstm_window_ms(
    gpu: &Gpu,
    input: usize,
    hidden: usize,
    batch: usize,
    steps: usize,
    samples: usize,
) -> anyhow::Result<f64> {
    let mut rng = Lcg::new(7);
    let h4 = 4 * hidden;
    let mk = |rng: &mut Lcg, shape: &[usize], s: f32| -> anyhow::Result<Tensor> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = rng.vec(n).into_iter().map(|x| x * s).collect();
        Ok(Tensor::from_slice(gpu, shape, &v)?)
    };
    let w_x = mk(&mut rng, &[input, h4], 0.1)?;
    let w_h = mk(&mut rng, &[hidden, h4], 0.05)?;
    let bias = mk(&mut rng, &[h4], 0.1)?;
    let dw_x = Tensor::zeros(gpu, &[input, h4])?;
    let dw_h = Tensor::zeros(gpu, &[hidden, h4])?;
    let dbias = Tensor::zeros(gpu, &[h4])?;
    let x = mk(&mut rng, &[steps, batch, input], 1.0)?;
    let s0 = mk(&mut rng, &[batch, 2 * hidden], 0.5)?;
    let dh = mk(&mut rng, &[steps, batch, hidden], 0.1)?;
    let ds_last = mk(&mut rng, &[batch, 2 * hidden], 0.1)?;
    let ds0 = Tensor::zeros(gpu, &[batch, 2 * hidden])?;
    let window = LstmWindow::new(gpu, input, hidden, batch, steps)?;
    let secs = time_samples(gpu, 2, samples, &ds0, |enc| {
        let p = LstmParams {
            w_x: &w_x,
            w_h: &w_h,
            bias: &bias,
        };
        window.forward(enc, p, &x, &s0)?;
        let p = LstmParams {
            w_x: &w_x,
            w_h: &w_h,
            bias: &bias,
        };
        let grads = LstmGrads {
            dw_x: &dw_x,
            dw_h: &dw_h,
            dbias: &dbias,
        };
        window.backward(enc, p, &x, &s0, &dh, Some(&ds_last), grads, &ds0, None)
    })?;
    Ok(median(secs) * 1e3)
}
