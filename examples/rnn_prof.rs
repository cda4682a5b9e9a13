use dni_kernels::ops::rnn_step::*;
use dni_kernels::*;
use std::time::Instant;
fn main() -> Result<()> {
    let gpu = Gpu::default_adapter()?;
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let (h, runs) = (
        args.first().copied().unwrap_or(64),
        args.get(1).copied().unwrap_or(1),
    );
    let steps = args.get(2).copied().unwrap_or(5);
    let batch = args.get(3).copied().unwrap_or(16);
    let shape = RnnShape {
        input: 10,
        hidden: h,
        output: 10,
        batch,
        steps,
        runs,
        softmax: false,
        has_sg: std::env::var("NOSG").is_err(),
        has_aux: false,
    };
    let st = RnnStep::new(
        &gpu,
        shape,
        StepRule::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
    )?;
    println!("tiling {:?} {:?}", st.tiling(), st.variant());
    if std::env::var("BASE").is_ok() {
        baseline(&gpu)?;
    }
    let only: Option<usize> = std::env::var("PART").ok().and_then(|v| v.parse().ok());
    for which in 0..5 {
        if only.is_some_and(|o| o != which) {
            continue;
        }
        let n = if only.is_some() {
            std::env::var("N")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(300)
        } else {
            50
        };
        for _ in 0..3 {
            let mut enc = gpu.encoder();
            if which < 4 {
                st.record_one(&mut enc, which)?;
            }
            gpu.submit(enc);
        }
        gpu.read(&st.ctl)?;
        let t0 = Instant::now();
        for _ in 0..n {
            let mut enc = gpu.encoder();
            if which < 4 {
                st.record_one(&mut enc, which)?;
            }
            gpu.submit(enc);
        }
        gpu.read(&st.ctl)?;
        println!(
            "part {which}: {:.3} ms",
            t0.elapsed().as_secs_f64() * 1e3 / n as f64
        );
    }
    Ok(())
}

#[allow(dead_code)]
fn baseline(gpu: &Gpu) -> Result<()> {
    use dni_kernels::ops::optim::{OptimConfig, Optimizer, Param};
    for n in [44_000usize, 528_000] {
        let t = Tensor::zeros(gpu, &[n])?;
        let p = Param::new(gpu, t.clone())?;
        let opt = Optimizer::new(gpu, OptimConfig::adam(1e-3))?;
        for (name, f) in [("scale", 0), ("adam", 1)] {
            let reps = 50;
            let run = |gpu: &Gpu| -> Result<()> {
                let mut enc = gpu.encoder();
                if f == 0 {
                    dni_kernels::ops::elementwise::scale(&mut enc, 0.5, &t)?;
                } else {
                    opt.step(&mut enc, &[&p])?;
                }
                gpu.submit(enc);
                Ok(())
            };
            for _ in 0..3 {
                run(gpu)?;
            }
            gpu.read(&t)?;
            let t0 = Instant::now();
            for _ in 0..reps {
                run(gpu)?;
            }
            gpu.read(&t)?;
            println!(
                "{name} n={n}: {:.3} ms",
                t0.elapsed().as_secs_f64() * 1e3 / reps as f64
            );
        }
    }
    Ok(())
}
