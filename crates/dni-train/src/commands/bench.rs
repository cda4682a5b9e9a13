//! `dni-train bench`: the fixed workloads of docs/BENCHMARKS.md, printed with the adapter name.
//! W1 (matmul GFLOP/s) and the LSTM truncated-BPTT window kernels (W3 kernel part) live here;
//! whole training steps (W2, W3, W4, W5, fused vs per-step, locked vs decoupled) come from the
//! trainers' bench modules. `--workload w5` (etc.) runs one; every figure is also printed as a
//! `RESULT key=value ...` line.

use dni_kernels::bench::{matmul_gflops_mkn, median, time_samples};
use dni_kernels::ops::lstm::{LstmGrads, LstmParams, LstmWindow};
use dni_kernels::ops::matmul::MatmulVariant;
use dni_kernels::testing::Lcg;
use dni_kernels::{Gpu, Tensor};

use super::bench_rnn::RnnWorkload;
use super::bench_rows::BenchRow;
use crate::config::Backend;

/// One workload of docs/WORKLOADS.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    All,
    W1,
    W2,
    W3,
    W4,
    W5,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub backend: Backend,
    /// Fewer sizes and samples (a smoke run).
    pub quick: bool,
    /// Workloads to run (empty or `all`: every one).
    pub workloads: Vec<Workload>,
}

fn print_rows(rows: &[BenchRow]) {
    println!("| workload | variant | mode | ms / step | throughput | dispatches / step |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.3} | {:.0} {} | {} |",
            r.workload,
            r.variant,
            r.mode,
            r.ms_per_step,
            r.per_sec,
            r.unit,
            r.dispatches.map_or("-".to_string(), |d| d.to_string())
        );
    }
    println!();
    for r in rows {
        println!("{}", r.result_line());
    }
}

pub fn run(opts: BenchOptions) -> anyhow::Result<()> {
    let gpu = super::open_gpu(opts.backend)?;
    let samples = if opts.quick { 3 } else { 7 };
    let want = |w: Workload| {
        opts.workloads.is_empty()
            || opts.workloads.contains(&Workload::All)
            || opts.workloads.contains(&w)
    };
    println!("# dni-train bench");
    println!("adapter: {}", gpu.adapter());
    println!(
        "command: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    println!();
    if want(Workload::W1) {
        println!("## W1: C = A·B (GFLOP/s, median of {samples}), and the LSTM's skinny products");
        println!("| m x k x n | register (CPU tiles) | tiled (GPU tiles) | auto |");
        println!("|---|---|---|---|");
        let sizes: &[usize] = if opts.quick {
            &[256, 512]
        } else {
            &[256, 512, 1024, 2048]
        };
        let mut shapes: Vec<(usize, usize, usize, String)> =
            sizes.iter().map(|&n| (n, n, n, format!("n={n}"))).collect();
        // W3's recurrent product h·W_h and W4's.
        shapes.push((16, 256, 1024, "16x256x1024".into()));
        shapes.push((32, 1024, 4096, "32x1024x4096".into()));
        let mut lines = Vec::new();
        for (m, k, n, label) in shapes {
            let g = |v| matmul_gflops_mkn(&gpu, m, k, n, v, samples);
            let (reg, tiled, auto) = (
                g(MatmulVariant::Register)?,
                g(MatmulVariant::Tiled)?,
                g(MatmulVariant::Auto)?,
            );
            println!("| {m} x {k} x {n} | {reg:.2} | {tiled:.2} | {auto:.2} |");
            lines.push(format!(
                "RESULT workload=W1 shape={label} gflops_register={reg:.2} gflops_tiled={tiled:.2} gflops_auto={auto:.2}"
            ));
        }
        println!();
        for l in lines {
            println!("{l}");
        }
        println!();
    }
    if want(Workload::W5) {
        println!("## W5: the Copy main job's window (LSTM 10-64-10, batch 16, T = 5, Adam), fused vs per-step, and a group of 12 runs");
        print_rows(&super::bench_rnn::run(&gpu, RnnWorkload::W5, opts.quick)?);
        println!();
    }
    if want(Workload::W3) {
        println!("## W3 kernels: one LSTM truncated-BPTT window on the per-step kernels, input 10, hidden 256, batch 16 (forward + backward)");
        println!("| T | ms / window | tokens/s |");
        println!("|---|---|---|");
        for t in [5usize, 20] {
            let ms = lstm_window_ms(&gpu, 10, 256, 16, t, samples)?;
            println!("| {t} | {ms:.2} | {:.0} |", (16 * t) as f64 / (ms / 1e3));
        }
        println!();
        println!("## W3: whole recurrent training windows (upload, forward, loss, SG, backward, SGD update), sync");
        print_rows(&super::bench_rnn::run(&gpu, RnnWorkload::W3, opts.quick)?);
        println!();
    }
    if want(Workload::W4) {
        println!(
            "## W4: character-level LSTM, hidden 1024, batch 32, T = 20, softmax over 50, sync"
        );
        print_rows(&super::bench_rnn::run(&gpu, RnnWorkload::W4, opts.quick)?);
        println!();
    }
    if want(Workload::W2) {
        println!("## W2 and the paper's MNIST FCN: whole feed-forward training steps (upload, forward, loss, backward, update), median");
        print_rows(&super::bench_ff::run(&gpu, opts.quick)?);
        println!();
    }
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
