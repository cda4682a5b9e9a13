//! An LSTM as a layer of a decoupled network: MNIST read as a sequence, its encoder updated by a
//! synthetic gradient.
//!
//! Each image is read by an LSTM as 7 steps of 4 pixel rows (112 features a step), from a zero
//! state; its last hidden state (64 units) is the first block's output. A cDNI interface (a linear
//! SG model of `[h, onehot(y)]`) decouples that block from the rest, `Linear → ReLU` and the
//! softmax head, so the LSTM updates from the SG as soon as its forward pass is done and never waits
//! for the head's gradient; each block runs on its own worker thread. The LSTM layer's backward runs
//! BPTT through the 7 steps from the gradient at its output, here the synthetic one.
//!
//! ```sh
//! cargo run --release -p dni-graph --example lstm_encoder          # 600 steps
//! cargo run --release -p dni-graph --example lstm_encoder -- 2000  # more
//! ```
//! `cargo test` runs it at 500 steps and checks that it learns, and that it beats the same network
//! whose LSTM gets no gradient.

use std::path::Path;

use dni_graph::ff::{EvalSet, FfNet, FfSpec, InterfaceSpec, Schedule, SgSpec};
use dni_graph::layers::LayerSpec;
use dni_kernels::ops::optim::OptimConfig;
use dni_kernels::Gpu;
use dni_tasks::{EpochShuffler, Mnist};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Steps the LSTM reads each image in (28 rows, 4 at a time).
const STEPS: usize = 7;

/// The network: an LSTM block, the interface `first` (cDNI in the example), a hidden block, the
/// softmax head.
fn spec(input: usize, first: InterfaceSpec) -> FfSpec {
    let hidden_blocks = vec![
        vec![LayerSpec::Lstm {
            hidden: 64,
            steps: STEPS,
        }],
        vec![LayerSpec::linear(64), LayerSpec::RELU],
    ];
    let mut spec = FfSpec::new(input, hidden_blocks, 10, 64, OptimConfig::adam(2e-3));
    spec.interfaces = vec![
        // LSTM block → hidden block.
        first,
        // Hidden block → head: ordinary backprop.
        InterfaceSpec::backprop(),
    ];
    spec.seed = 5;
    spec
}

/// Trains for `steps` with `first` after the LSTM block and returns the test error before and
/// after.
fn run(steps: u64, first: InterfaceSpec) -> Result<(f64, f64)> {
    let gpu = Gpu::default_adapter()?;
    println!("adapter: {}", gpu.adapter());
    let data = Mnist::load_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist"))?;
    let input = data.train.pixels();
    let labels: Vec<u32> = data.test.labels.iter().map(|&l| l as u32).collect();
    let test = EvalSet::new(&gpu, input, &data.test.images, &labels, 1000)?;
    let spec = spec(input, first);
    let batch = spec.batch;
    let mut net = FfNet::new(&gpu, spec)?;
    // The LSTM's parameters are named like any layer's: block0.l0.w_x, block0.l0.w_h, block0.l0.bias.
    let before = net.evaluate(&test)?.error;
    let mut shuffler = EpochShuffler::new(data.train.n, batch, 1)?;
    let mut source =
        |x: &mut Vec<f32>, y: &mut Vec<u32>| data.train.batch(shuffler.next_batch(), x, y);
    let report = (steps / 4).max(1);
    let mut done = 0;
    while done < steps {
        let n = report.min(steps - done);
        net.train(n, &mut source, Schedule::Threaded)?;
        done += n;
        let error = net.evaluate(&test)?.error;
        println!("step {done}/{steps}: test error {:.2}%", 100.0 * error);
    }
    let after = net.evaluate(&test)?.error;
    println!(
        "test error {:.2}% -> {:.2}% after {steps} steps",
        100.0 * before,
        100.0 * after
    );
    Ok((before, after))
}

fn main() -> Result<()> {
    let steps = match std::env::args().nth(1) {
        Some(s) => s
            .parse()
            .map_err(|e| format!("steps {s:?} is not a whole number: {e}"))?,
        None => 600,
    };
    // Decoupled by a conditioned linear SG.
    run(steps, InterfaceSpec::dni(SgSpec::linear(true)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lstm_encoder_learns_through_its_synthetic_gradient() {
        let (before, dni) = run(500, InterfaceSpec::dni(SgSpec::linear(true))).unwrap();
        assert!(before > 0.8, "the untrained net scores {before}");
        // The head alone, on the features of an LSTM that never learns (no gradient reaches it).
        let (_, frozen) = run(500, InterfaceSpec::cut()).unwrap();
        assert!(
            dni < 0.3 && dni < frozen - 0.1,
            "test error {dni} with the SG, {frozen} with the LSTM frozen, after 500 steps"
        );
    }
}
