//! Using dni as a library: a synthetic gradient on a tensor of a model you write yourself.
//!
//! The model is two `Stack`s driven by hand, `784 → 128` (ReLU) and `128 → 64 → 10`, with an
//! [`SgInterface`] on the 128-wide tensor `h` between them. Every step, in one command buffer:
//!
//! 1. the lower stack computes `h`, asks the interface for `δ̂ = M(h, onehot(y))` and updates at once
//!    from it, without waiting for the upper stack;
//! 2. the upper stack computes the loss, backpropagates down to `h` (the true `δ`) and updates;
//! 3. the interface regresses `M` onto that `δ`.
//!
//! ```sh
//! cargo run --release -p dni-graph --example sg_interface          # 600 steps
//! cargo run --release -p dni-graph --example sg_interface -- 2000  # more
//! ```
//! `cargo test` runs it at 150 steps and checks that it learns and that the SG predicts.

use std::path::Path;

use dni_graph::layers::{LayerSpec, Stack, StackSpec};
use dni_graph::sg::{SgInterface, SgInterfaceConfig};
use dni_kernels::ops::loss::softmax_xent;
use dni_kernels::ops::optim::{OptimConfig, Optimizer};
use dni_kernels::{Gpu, Tensor};
use dni_tasks::{EpochShuffler, Mnist, Rng};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const BATCH: usize = 128;
const WIDTH: usize = 128;
const CLASSES: usize = 10;
const TEST: usize = 1000;

/// What a run measured.
struct Outcome {
    error_before: f64,
    error_after: f64,
    /// Fraction of the true gradient at `h` the SG explained over the last steps.
    sg_explained: f64,
}

/// One labelled batch on the GPU: images, labels (as f32 class ids) and their one-hot rows.
struct Batch {
    x: Tensor,
    labels: Tensor,
    onehot: Tensor,
}

impl Batch {
    fn new(gpu: &Gpu, rows: usize, pixels: usize) -> Result<Self> {
        Ok(Self {
            x: Tensor::zeros(gpu, &[rows, pixels])?,
            labels: Tensor::zeros(gpu, &[rows])?,
            onehot: Tensor::zeros(gpu, &[rows, CLASSES])?,
        })
    }

    fn write(&self, gpu: &Gpu, x: &[f32], y: &[u32]) -> Result<()> {
        let mut onehot = vec![0.0; y.len() * CLASSES];
        for (r, &l) in y.iter().enumerate() {
            onehot[r * CLASSES + l as usize] = 1.0;
        }
        let labels: Vec<f32> = y.iter().map(|&l| l as f32).collect();
        self.x.write(gpu, x)?;
        self.labels.write(gpu, &labels)?;
        self.onehot.write(gpu, &onehot)?;
        Ok(())
    }
}

/// Test error of the two stacks on `TEST` test images (inference-mode forward passes).
fn test_error(gpu: &Gpu, lower: &Stack, upper: &Stack, data: &Mnist) -> Result<f64> {
    let pixels = data.test.pixels();
    let batch = Batch::new(gpu, TEST, pixels)?;
    let ids: Vec<u32> = data.test.labels[..TEST].iter().map(|&l| l as u32).collect();
    batch.write(gpu, &data.test.images[..TEST * pixels], &ids)?;
    let (h, logits, dlogits) = (
        Tensor::zeros(gpu, &[TEST, WIDTH])?,
        Tensor::zeros(gpu, &[TEST, CLASSES])?,
        Tensor::zeros(gpu, &[TEST, CLASSES])?,
    );
    let metrics = Tensor::zeros(gpu, &[2])?;
    let mut enc = gpu.encoder();
    lower.forward(&mut enc, &lower.acts(gpu, TEST)?, &batch.x, None, &h, false)?;
    upper.forward(&mut enc, &upper.acts(gpu, TEST)?, &h, None, &logits, false)?;
    softmax_xent(&mut enc, &logits, &batch.labels, &dlogits, 1.0, &metrics)?;
    gpu.submit(enc);
    Ok(gpu.read(&metrics)?[1] as f64 / TEST as f64)
}

fn run(steps: usize) -> Result<Outcome> {
    let gpu = Gpu::default_adapter()?;
    println!("adapter: {}", gpu.adapter());
    let data = Mnist::load_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist"))?;
    let pixels = data.train.pixels();

    // The user's model: any stacks (or kernels) would do; the SG only sees the tensor h.
    let mut init = Rng::new(1);
    let lower_spec = StackSpec {
        input: pixels,
        context: 0,
        layers: vec![
            LayerSpec::Linear {
                out: WIDTH,
                bias: true,
                zero_init: false,
            },
            LayerSpec::RELU,
        ],
    };
    let lower = Stack::new(&gpu, &lower_spec, &mut init)?;
    let upper = Stack::new(
        &gpu,
        &StackSpec::mlp(WIDTH, 0, &[64], false, CLASSES, false),
        &mut init,
    )?;
    let (lower_opt, upper_opt) = (
        Optimizer::new(&gpu, OptimConfig::adam(1e-3))?,
        Optimizer::new(&gpu, OptimConfig::adam(1e-3))?,
    );
    // The interface: a linear SG of [h, onehot(y)] (cDNI), zero at the start.
    let mut sg = SgInterface::new(
        &gpu,
        SgInterfaceConfig {
            context: CLASSES,
            ..SgInterfaceConfig::linear(BATCH, WIDTH, OptimConfig::adam(3e-3))
        },
    )?;

    let batch = Batch::new(&gpu, BATCH, pixels)?;
    let (lower_acts, lower_grads) = (lower.acts(&gpu, BATCH)?, lower.grads(&gpu, BATCH)?);
    let (upper_acts, upper_grads) = (upper.acts(&gpu, BATCH)?, upper.grads(&gpu, BATCH)?);
    let h = Tensor::zeros(&gpu, &[BATCH, WIDTH])?;
    let true_dh = Tensor::zeros(&gpu, &[BATCH, WIDTH])?;
    let logits = Tensor::zeros(&gpu, &[BATCH, CLASSES])?;
    let dlogits = Tensor::zeros(&gpu, &[BATCH, CLASSES])?;
    let metrics = Tensor::zeros(&gpu, &[2])?;

    let error_before = test_error(&gpu, &lower, &upper, &data)?;
    let mut shuffler = EpochShuffler::new(data.train.n, BATCH, 1)?;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for step in 0..steps {
        if step + 50 == steps {
            sg.take_explained()?; // score the SG over the last 50 steps only
        }
        data.train.batch(shuffler.next_batch(), &mut x, &mut y);
        batch.write(&gpu, &x, &y)?;
        let mut enc = gpu.encoder();
        // 1. The lower stack: forward, then update at once from the synthetic gradient.
        lower.forward(&mut enc, &lower_acts, &batch.x, None, &h, true)?;
        let dh = sg.synthesize(&mut enc, &h, Some(&batch.onehot))?;
        lower.backward(
            &mut enc,
            &lower_acts,
            &lower_grads,
            &batch.x,
            None,
            &h,
            dh,
            None,
        )?;
        lower_opt.step(&mut enc, &lower.params())?;
        // 2. The upper stack: loss, backward down to h (the true gradient), update.
        upper.forward(&mut enc, &upper_acts, &h, None, &logits, true)?;
        softmax_xent(
            &mut enc,
            &logits,
            &batch.labels,
            &dlogits,
            1.0 / BATCH as f32,
            &metrics,
        )?;
        upper.backward(
            &mut enc,
            &upper_acts,
            &upper_grads,
            &h,
            None,
            &logits,
            &dlogits,
            Some(&true_dh),
        )?;
        upper_opt.step(&mut enc, &upper.params())?;
        // 3. The SG learns from the gradient that arrived.
        sg.fit(&mut enc, &h, Some(&batch.onehot), &true_dh)?;
        gpu.submit(enc);
    }
    let sg_explained = sg.take_explained()?.unwrap_or(f64::NAN);
    let error_after = test_error(&gpu, &lower, &upper, &data)?;
    Ok(Outcome {
        error_before,
        error_after,
        sg_explained,
    })
}

fn main() -> Result<()> {
    let steps = match std::env::args().nth(1) {
        Some(s) => s
            .parse()
            .map_err(|e| format!("steps {s:?} is not a whole number: {e}"))?,
        None => 600,
    };
    let o = run(steps)?;
    println!(
        "test error {:.2}% -> {:.2}% after {steps} steps; the SG explained {:.2} of the true gradient \
         at h over the last 50",
        100.0 * o.error_before,
        100.0 * o.error_after,
        o.sg_explained
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hand_built_model_learns_through_the_interface() {
        let o = super::run(150).unwrap();
        assert!(
            o.error_before > 0.8,
            "the untrained model scores {}",
            o.error_before
        );
        assert!(
            o.error_after < 0.2,
            "test error {} after 150 steps",
            o.error_after
        );
        // The SG starts at zero (explains 0); it must have learnt to predict.
        assert!(o.sg_explained > 0.2, "the SG explains {}", o.sg_explained);
    }
}
