//! Using dni as a library: a feed-forward network of your own shape, cut in two by one synthetic
//! gradient interface.
//!
//! The network is not one of the paper's: a tapering FCN `784 → 256 → 128 → 64 → 10` whose first two
//! layers form one block and whose third layer forms another. Between them sits a cDNI interface (a
//! linear SG model of `[h, onehot(y)]`), so the first block updates at once from the SG and never
//! waits for the rest; between the third layer and the softmax head the gradient is plain backprop.
//! Each block runs on its own worker thread.
//!
//! ```sh
//! cargo run --release -p dni-graph --example custom_net          # 600 steps
//! cargo run --release -p dni-graph --example custom_net -- 2000  # more
//! ```
//! `cargo test` runs it at 150 steps and checks that it learns.

use std::path::Path;

use dni_graph::ff::{EvalSet, FfNet, FfSpec, InterfaceSpec, Schedule, SgSpec};
use dni_kernels::ops::optim::OptimConfig;
use dni_kernels::Gpu;
use dni_tasks::{EpochShuffler, Mnist};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The network: three hidden layers in two blocks, one SG interface, then backprop to the head.
fn spec(input: usize) -> FfSpec {
    let mut spec = FfSpec::backprop(input, vec![256, 128, 64], 10, 128, OptimConfig::adam(1e-3));
    // Two hidden layers per block: blocks [256, 128], [64], and the head.
    spec.layers_per_block = 2;
    spec.interfaces = vec![
        // Block 0 → block 1: decoupled by a conditioned linear SG at 3x the layers' rate.
        InterfaceSpec::dni(SgSpec::linear(true)),
        // Block 1 → head: ordinary backprop.
        InterfaceSpec::backprop(),
    ];
    spec.sg_optim = Some(OptimConfig::adam(3e-3));
    spec
}

/// Trains for `steps` and returns the test error before and after.
fn run(steps: u64) -> Result<(f64, f64)> {
    let gpu = Gpu::default_adapter()?;
    println!("adapter: {}", gpu.adapter());
    let data = Mnist::load_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist"))?;
    let input = data.train.pixels();
    let labels: Vec<u32> = data.test.labels.iter().map(|&l| l as u32).collect();
    let test = EvalSet::new(&gpu, input, &data.test.images, &labels, 1000)?;
    let spec = spec(input);
    let batch = spec.batch;
    let mut net = FfNet::new(&gpu, spec)?;
    println!("{} blocks", net.num_blocks());
    let before = net.evaluate(&test)?.error;
    let mut shuffler = EpochShuffler::new(data.train.n, batch, 1)?;
    let mut source =
        |x: &mut Vec<f32>, y: &mut Vec<u32>| data.train.batch(shuffler.next_batch(), x, y);
    let stats = net.train(steps, &mut source, Schedule::Threaded)?;
    let after = net.evaluate(&test)?.error;
    // Only the second block, locked to the head by backprop, ever waits for a true gradient.
    println!(
        "test error {:.2}% -> {:.2}% after {steps} steps; {} waits for a true gradient, all by the \
         second block",
        100.0 * before,
        100.0 * after,
        stats.waits_grad
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
    run(steps)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_custom_network_learns() {
        let (before, after) = super::run(150).unwrap();
        assert!(before > 0.8, "the untrained net scores {before}");
        assert!(after < 0.2, "test error {after} after 150 steps");
    }
}
