//! Using dni as a library: a feed-forward network of your own shape, cut in two by one synthetic
//! gradient interface.
//!
//! The network is not one of the paper's: a tapering `784 → 256 → 128 → 64 → 10` whose first
//! block is `Linear → BatchNorm → ReLU → Linear → tanh` and whose second is `Linear → ReLU`. Between
//! them sits a cDNI interface (a linear SG model of `[h, onehot(y)]`), so the first block updates at
//! once from the SG and never waits for the rest; between the second block and the softmax head the
//! gradient is plain backprop. Each block runs on its own worker thread.
//!
//! ```sh
//! cargo run --release -p dni-graph --example custom_net          # 600 steps
//! cargo run --release -p dni-graph --example custom_net -- 2000  # more
//! ```
//! `cargo test` runs it at 150 steps and checks that it learns.

use std::path::Path;

use dni_graph::ff::{EvalSet, FfNet, FfSpec, InterfaceSpec, Schedule, SgSpec};
use dni_graph::layers::LayerSpec;
use dni_kernels::ops::optim::OptimConfig;
use dni_kernels::Gpu;
use dni_tasks::{EpochShuffler, Mnist};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The network: two blocks of the user's own layers, one SG interface, then backprop to the head.
fn spec(input: usize) -> FfSpec {
    let hidden_blocks = vec![
        vec![
            LayerSpec::Linear {
                out: 256,
                bias: false, // batch norm's shift stands in for it
                zero_init: false,
            },
            LayerSpec::BatchNorm,
            LayerSpec::RELU,
            LayerSpec::linear(128),
            LayerSpec::TANH,
        ],
        vec![LayerSpec::linear(64), LayerSpec::RELU],
    ];
    let mut spec = FfSpec::new(input, hidden_blocks, 10, 128, OptimConfig::adam(1e-3));
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
    // Every parameter is reachable by name (checkpoints save them under these names).
    for i in 0..net.num_blocks() {
        let names: Vec<String> = net
            .block_params(i)
            .iter()
            .map(|(name, p)| format!("{name} {:?}", p.value.shape()))
            .collect();
        println!("block {i}: {}", names.join(", "));
    }
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
