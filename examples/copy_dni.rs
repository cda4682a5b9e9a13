//! Using dni as a library: an LSTM learns the Copy task with synthetic gradients.
//!
//! ```sh
//! cargo run --release -p dni-graph --example copy_dni            # DNI
//! cargo run --release -p dni-graph --example copy_dni -- bptt    # plain truncated BPTT
//! ```
//!
//! One `train_window` call records forward, loss, synthetic gradient, backward and the update into
//! one submission; nothing is read back until `read_metrics`.

use dni_graph::recurrent::{Method, OutputLoss, RecurrentConfig, RecurrentTrainer};
use dni_kernels::ops::optim::OptimConfig;
use dni_kernels::Gpu;
use dni_tasks::{CopyKind, CurriculumConfig, TaskStream, Window};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let method = match std::env::args().nth(1).as_deref() {
        Some("bptt") => Method::Bptt,
        Some("dni_aux") => Method::dni_aux(),
        _ => Method::dni(),
    };
    let gpu = Gpu::default_adapter()?;
    println!("adapter: {}", gpu.adapter());
    let (batch, t) = (16, 5);
    let mut trainer = RecurrentTrainer::new(
        &gpu,
        RecurrentConfig {
            input: dni_tasks::copy::WIDTH,
            hidden: 64,
            output: dni_tasks::copy::WIDTH,
            batch,
            t,
            loss: OutputLoss::SigmoidBits,
            method,
            optim: OptimConfig::adam(3e-3),
            sg_optim: Some(OptimConfig::adam(3e-4)),
            clip: None,
            sg: Default::default(),
            seed: 1,
        },
    )?;
    // Copy with N = 2 fixed: the curriculum is not fed in this example.
    let curriculum = CurriculumConfig {
        start_n: 2,
        ..Default::default()
    };
    let mut stream = TaskStream::new(CopyKind::Copy, batch, 7, curriculum)?;
    let mut window = Window::default();
    for step in 1..=1500 {
        stream.next_window(t, &mut window);
        trainer.train_window(&window.inputs, &window.targets, &window.mask)?;
        if step % 250 == 0 {
            let m = trainer.read_metrics()?;
            println!(
                "{} step {step:5}: {:.3} bits per output character",
                method.name(),
                m.bits_per_char().unwrap_or(f64::NAN)
            );
        }
    }
    Ok(())
}
