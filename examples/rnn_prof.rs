//! Times each of the four fused recurrent kernels (`shaders/rnn_step.wgsl`) alone, for both
//! variants, so that a change to one kernel can be measured by itself:
//!
//! ```sh
//! cargo run --release -p dni-kernels --example rnn_prof -- [hidden] [runs] [T] [batch]
//! ```
//!
//! Defaults: the Copy main job's window (hidden 64, 1 run, T = 5, batch 16) with an SG model.
//! Prints the adapter and one `RESULT` line per kernel and variant (milliseconds per dispatch,
//! median of 5 samples of 20 dispatches each).

use std::time::Instant;

use dni_kernels::bench::median;
use dni_kernels::ops::rnn_step::{cached_unavailable, RnnShape, RnnStep, RnnVariant, StepRule};
use dni_kernels::{Gpu, Result};

fn main() -> Result<()> {
    let gpu = Gpu::default_adapter()?;
    let arg = |i: usize, default: usize| -> usize {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let shape = RnnShape {
        input: 10,
        hidden: arg(1, 64),
        output: 10,
        batch: arg(4, 16),
        steps: arg(3, 5),
        runs: arg(2, 1),
        softmax: false,
        has_sg: true,
        has_aux: false,
    };
    println!("adapter: {}", gpu.adapter());
    println!("shape: {shape:?}");
    let rule = StepRule::Adam {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    for variant in [RnnVariant::Cached, RnnVariant::Streaming] {
        if variant == RnnVariant::Cached {
            if let Some(why) = cached_unavailable(&gpu, &shape) {
                println!("cached variant: not available here ({why})");
                continue;
            }
        }
        let step = RnnStep::with_variant(&gpu, shape, rule, variant)?;
        for (k, name) in ["forward", "backward", "grads", "update"]
            .iter()
            .enumerate()
        {
            let mut secs = Vec::new();
            for sample in 0..6 {
                let t0 = Instant::now();
                for _ in 0..20 {
                    let mut enc = gpu.encoder();
                    step.record_one(&mut enc, k)?;
                    gpu.submit(enc);
                }
                gpu.read(&step.ctl)?;
                // The first sample compiles the pipeline.
                if sample > 0 {
                    secs.push(t0.elapsed().as_secs_f64() / 20.0);
                }
            }
            println!(
                "RESULT kernel={name} variant={variant:?} hidden={} runs={} ms={:.3}",
                shape.hidden,
                shape.runs,
                median(secs) * 1e3
            );
        }
    }
    Ok(())
}
