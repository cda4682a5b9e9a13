//! `SgInterface`, the shared SG module on a tensor of the user's own model: it starts at exactly 0,
//! learns a gradient that is a fixed function of `h` (and, conditioned, of a label), hands it back in
//! the units of the true gradient, and refuses tensors of the wrong shape.

use dni_graph::layers::LayerSpec;
use dni_graph::sg::{fidelity, SgInterface, SgInterfaceConfig};
use dni_kernels::ops::optim::OptimConfig;
use dni_kernels::testing::{gpu, Lcg};
use dni_kernels::{Gpu, Tensor};

const ROWS: usize = 16;
const WIDTH: usize = 6;
const CLASSES: usize = 3;

/// One batch of a stationary task: `h` random, labels random, and the true batch-mean gradient
/// `δ = (h·A + onehot(y)·C) / rows` (with `a` false, the label term alone).
struct Task {
    a: Vec<f32>,
    c: Vec<f32>,
    with_h: bool,
}

impl Task {
    fn batch(&self, rng: &mut Lcg) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let h = rng.vec(ROWS * WIDTH);
        let mut onehot = vec![0.0; ROWS * CLASSES];
        let mut delta = vec![0.0; ROWS * WIDTH];
        for r in 0..ROWS {
            let y = (rng.next_u64() % CLASSES as u64) as usize;
            onehot[r * CLASSES + y] = 1.0;
            for j in 0..WIDTH {
                let mut v = self.c[y * WIDTH + j];
                if self.with_h {
                    for k in 0..WIDTH {
                        v += h[r * WIDTH + k] * self.a[k * WIDTH + j];
                    }
                }
                delta[r * WIDTH + j] = v / ROWS as f32;
            }
        }
        (h, onehot, delta)
    }
}

/// Trains `sg` for `steps` batches; returns the fraction it explained over the last 50 and the
/// fidelity of its `δ̂` on a fresh batch.
fn train(
    gpu: &Gpu,
    sg: &mut SgInterface,
    task: &Task,
    conditioned: bool,
    steps: usize,
) -> (f64, dni_graph::sg::Fidelity) {
    let mut rng = Lcg::new(5);
    let h_t = Tensor::zeros(gpu, &[ROWS, WIDTH]).unwrap();
    let y_t = Tensor::zeros(gpu, &[ROWS, CLASSES]).unwrap();
    let d_t = Tensor::zeros(gpu, &[ROWS, WIDTH]).unwrap();
    let ctx = conditioned.then_some(&y_t);
    for step in 0..steps {
        if step + 50 == steps {
            sg.take_explained().unwrap();
        }
        let (h, y, d) = task.batch(&mut rng);
        h_t.write(gpu, &h).unwrap();
        y_t.write(gpu, &y).unwrap();
        d_t.write(gpu, &d).unwrap();
        let mut enc = gpu.encoder();
        sg.fit(&mut enc, &h_t, ctx, &d_t).unwrap();
        gpu.submit(enc);
    }
    let explained = sg.take_explained().unwrap().unwrap();
    let (h, y, d) = task.batch(&mut rng);
    h_t.write(gpu, &h).unwrap();
    y_t.write(gpu, &y).unwrap();
    let mut enc = gpu.encoder();
    let dh = sg.synthesize(&mut enc, &h_t, ctx).unwrap().clone();
    gpu.submit(enc);
    let got: Vec<f64> = gpu.read(&dh).unwrap().into_iter().map(f64::from).collect();
    let want: Vec<f64> = d.into_iter().map(f64::from).collect();
    (explained, fidelity(&got, &want))
}

fn config(context: usize) -> SgInterfaceConfig {
    SgInterfaceConfig {
        context,
        ..SgInterfaceConfig::linear(ROWS, WIDTH, OptimConfig::adam(2e-2))
    }
}

#[test]
fn a_linear_sg_learns_a_stationary_gradient_in_its_units() {
    let gpu = gpu();
    let mut lcg = Lcg::new(9);
    let task = Task {
        a: lcg.vec(WIDTH * WIDTH),
        c: vec![0.0; CLASSES * WIDTH],
        with_h: true,
    };
    let mut sg = SgInterface::new(&gpu, config(0)).unwrap();
    // M starts at exactly 0.
    let h = Tensor::from_slice(&gpu, &[ROWS, WIDTH], &lcg.vec(ROWS * WIDTH)).unwrap();
    let mut enc = gpu.encoder();
    let first = sg.synthesize(&mut enc, &h, None).unwrap().clone();
    gpu.submit(enc);
    assert!(gpu.read(&first).unwrap().iter().all(|&v| v == 0.0));
    let (explained, fid) = train(&gpu, &mut sg, &task, false, 400);
    eprintln!("explained {explained:.4}, fresh batch {fid:?}");
    assert!(
        explained > 0.95,
        "the SG did not learn: explains {explained}"
    );
    // δ̂ is in the true gradient's units: cosine and explained fraction both near 1.
    assert!(fid.cosine > 0.97 && fid.explained > 0.9, "{fid:?}");
    assert_eq!(sg.params().len(), 2, "l0.w, l0.b");
}

#[test]
fn a_label_dependent_gradient_needs_the_context() {
    let gpu = gpu();
    let mut lcg = Lcg::new(10);
    let task = Task {
        a: vec![0.0; WIDTH * WIDTH],
        c: lcg.vec(CLASSES * WIDTH),
        with_h: false,
    };
    let mut plain = SgInterface::new(&gpu, config(0)).unwrap();
    let (plain_explained, _) = train(&gpu, &mut plain, &task, false, 300);
    let mut cond = SgInterface::new(&gpu, config(CLASSES)).unwrap();
    let (cond_explained, fid) = train(&gpu, &mut cond, &task, true, 300);
    eprintln!("without the label {plain_explained:.3}, with it {cond_explained:.3} ({fid:?})");
    assert!(
        cond_explained > 0.95 && fid.cosine > 0.97,
        "{cond_explained} {fid:?}"
    );
    assert!(
        plain_explained < 0.6,
        "h carries no label, yet the plain SG explains {plain_explained}"
    );
    // An MLP with batch norm reads the context in its first layer and learns the same.
    let mut mlp = SgInterface::new(
        &gpu,
        SgInterfaceConfig {
            hidden_layers: LayerSpec::hidden(16, true),
            ..config(CLASSES)
        },
    )
    .unwrap();
    let (mlp_explained, _) = train(&gpu, &mut mlp, &task, true, 300);
    assert!(mlp_explained > 0.8, "MLP SG explains {mlp_explained}");
    // A synthesiser of the user's own layers (here Linear → tanh) learns it too.
    let mut tanh = SgInterface::new(
        &gpu,
        SgInterfaceConfig {
            hidden_layers: vec![LayerSpec::linear(16), LayerSpec::TANH],
            ..config(CLASSES)
        },
    )
    .unwrap();
    let (tanh_explained, _) = train(&gpu, &mut tanh, &task, true, 300);
    assert!(tanh_explained > 0.8, "tanh SG explains {tanh_explained}");
}

#[test]
fn wrong_shapes_are_errors() {
    let gpu = gpu();
    assert!(SgInterface::new(
        &gpu,
        SgInterfaceConfig::linear(0, 4, OptimConfig::adam(1e-3))
    )
    .is_err());
    let bn_one_row = SgInterfaceConfig {
        hidden_layers: LayerSpec::hidden(4, true),
        ..SgInterfaceConfig::linear(1, 4, OptimConfig::adam(1e-3))
    };
    assert!(SgInterface::new(&gpu, bn_one_row).is_err());
    // A context is read by the first layer, which must then be a Linear.
    let tanh_first = SgInterfaceConfig {
        hidden_layers: vec![LayerSpec::TANH],
        ..config(CLASSES)
    };
    let e = SgInterface::new(&gpu, tanh_first).err().expect("refused");
    assert!(e.to_string().contains("Linear first layer"), "{e}");
    let mut sg = SgInterface::new(&gpu, config(CLASSES)).unwrap();
    let h = Tensor::zeros(&gpu, &[ROWS, WIDTH]).unwrap();
    let y = Tensor::zeros(&gpu, &[ROWS, CLASSES]).unwrap();
    let wrong = Tensor::zeros(&gpu, &[ROWS, WIDTH + 1]).unwrap();
    let mut enc = gpu.encoder();
    assert!(
        sg.synthesize(&mut enc, &wrong, Some(&y)).is_err(),
        "wrong h"
    );
    assert!(
        sg.synthesize(&mut enc, &h, None).is_err(),
        "missing context"
    );
    assert!(sg.fit(&mut enc, &h, Some(&y), &wrong).is_err(), "wrong δ");
    assert!(sg.fit(&mut enc, &h, Some(&y), &h).is_ok());
    gpu.submit(enc);
}
