//! The locked baseline computes true backprop: after one step, every parameter gradient of every
//! block matches a CPU reference of the whole network (Linear → [BatchNorm] → ReLU, tanh or sigmoid
//! layers, softmax output), itself checked against finite differences. And the threaded and single-thread locked
//! schedules agree bit for bit over several steps.

use dni_graph::ff::{FfNet, FfSpec, Schedule};
use dni_graph::layers::{Activation, LayerSpec};
use dni_kernels::ops::optim::OptimConfig;
use dni_kernels::testing::{assert_close, gpu, Lcg};

const EPS: f64 = 1e-5;

/// Parameters of the reference MLP, one entry per hidden layer, then the output layer.
#[derive(Clone)]
struct RefNet {
    sizes: Vec<usize>, // input, hidden..., classes
    bn: bool,
    /// Each hidden layer's activation.
    acts: Vec<Activation>,
    w: Vec<Vec<f64>>,
    b: Vec<Vec<f64>>, // hidden biases only without batch norm; always for the output
    gamma: Vec<Vec<f64>>, // with batch norm
    beta: Vec<Vec<f64>>,
}

struct Cache {
    /// Input of every layer (x, h1, ...), pre-activations, normalised values, inverse std.
    inputs: Vec<Vec<f64>>,
    xhat: Vec<Vec<f64>>,
    invstd: Vec<Vec<f64>>,
    hidden_out: Vec<Vec<f64>>,
    logits: Vec<f64>,
}

fn matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for p in 0..k {
            let av = a[i * k + p];
            for j in 0..n {
                c[i * n + j] += av * b[p * n + j];
            }
        }
    }
    c
}

impl RefNet {
    fn layers(&self) -> usize {
        self.sizes.len() - 1
    }

    fn forward(&self, x: &[f64], rows: usize) -> Cache {
        let l = self.layers();
        let mut cache = Cache {
            inputs: vec![x.to_vec()],
            xhat: Vec::new(),
            invstd: Vec::new(),
            hidden_out: Vec::new(),
            logits: Vec::new(),
        };
        let mut h = x.to_vec();
        for j in 0..l {
            let (fi, fo) = (self.sizes[j], self.sizes[j + 1]);
            let mut z = matmul(&h, &self.w[j], rows, fi, fo);
            let has_bias = j + 1 == l || !self.bn;
            if has_bias {
                for r in 0..rows {
                    for c in 0..fo {
                        z[r * fo + c] += self.b[j][c];
                    }
                }
            }
            if j + 1 == l {
                cache.logits = z;
                break;
            }
            let mut y = z.clone();
            if self.bn {
                let mut xhat = vec![0.0; rows * fo];
                let mut invstd = vec![0.0; fo];
                for c in 0..fo {
                    let mean = (0..rows).map(|r| z[r * fo + c]).sum::<f64>() / rows as f64;
                    let var = (0..rows)
                        .map(|r| (z[r * fo + c] - mean).powi(2))
                        .sum::<f64>()
                        / rows as f64;
                    invstd[c] = 1.0 / (var + EPS).sqrt();
                    for r in 0..rows {
                        xhat[r * fo + c] = (z[r * fo + c] - mean) * invstd[c];
                        y[r * fo + c] = self.gamma[j][c] * xhat[r * fo + c] + self.beta[j][c];
                    }
                }
                cache.xhat.push(xhat);
                cache.invstd.push(invstd);
            }
            h = y.iter().map(|&v| activate(self.acts[j], v)).collect();
            cache.hidden_out.push(h.clone());
            cache.inputs.push(h.clone());
        }
        cache
    }

    /// Mean softmax cross-entropy over the rows.
    fn loss(&self, x: &[f64], labels: &[u32]) -> f64 {
        let rows = labels.len();
        let c = *self.sizes.last().unwrap();
        let logits = self.forward(x, rows).logits;
        let mut total = 0.0;
        for r in 0..rows {
            let row = &logits[r * c..(r + 1) * c];
            let max = row.iter().cloned().fold(f64::MIN, f64::max);
            let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            total += lse - row[labels[r] as usize];
        }
        total / rows as f64
    }

    /// Gradients of the mean loss, in the same layout as the parameters.
    fn backward(&self, x: &[f64], labels: &[u32]) -> RefNet {
        let rows = labels.len();
        let l = self.layers();
        let cache = self.forward(x, rows);
        let mut g = self.clone();
        let c = self.sizes[l];
        let mut d = vec![0.0; rows * c];
        for r in 0..rows {
            let row = &cache.logits[r * c..(r + 1) * c];
            let max = row.iter().cloned().fold(f64::MIN, f64::max);
            let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
            for k in 0..c {
                let p = (row[k] - max).exp() / sum;
                d[r * c + k] = (p - if k == labels[r] as usize { 1.0 } else { 0.0 }) / rows as f64;
            }
        }
        for j in (0..l).rev() {
            let (fi, fo) = (self.sizes[j], self.sizes[j + 1]);
            // d is the gradient at this layer's output (before activation/BN handling for hidden ones).
            if j + 1 < l {
                let h = &cache.hidden_out[j];
                for k in 0..rows * fo {
                    d[k] *= derivative_at_output(self.acts[j], h[k]);
                }
                if self.bn {
                    let xhat = &cache.xhat[j];
                    let invstd = &cache.invstd[j];
                    let mut dz = vec![0.0; rows * fo];
                    for col in 0..fo {
                        let dbeta: f64 = (0..rows).map(|r| d[r * fo + col]).sum();
                        let dgamma: f64 = (0..rows)
                            .map(|r| d[r * fo + col] * xhat[r * fo + col])
                            .sum();
                        g.gamma[j][col] = dgamma;
                        g.beta[j][col] = dbeta;
                        let n = rows as f64;
                        for r in 0..rows {
                            let dxhat = d[r * fo + col] * self.gamma[j][col];
                            dz[r * fo + col] = invstd[col] / n
                                * (n * dxhat
                                    - dbeta * self.gamma[j][col]
                                    - xhat[r * fo + col] * dgamma * self.gamma[j][col]);
                        }
                    }
                    d = dz;
                }
            }
            let input = &cache.inputs[j];
            let mut dw = vec![0.0; fi * fo];
            for r in 0..rows {
                for a in 0..fi {
                    for b in 0..fo {
                        dw[a * fo + b] += input[r * fi + a] * d[r * fo + b];
                    }
                }
            }
            g.w[j] = dw;
            if j + 1 == l || !self.bn {
                g.b[j] = (0..fo)
                    .map(|b| (0..rows).map(|r| d[r * fo + b]).sum())
                    .collect();
            }
            let mut dx = vec![0.0; rows * fi];
            for r in 0..rows {
                for a in 0..fi {
                    dx[r * fi + a] = (0..fo).map(|b| d[r * fo + b] * self.w[j][a * fo + b]).sum();
                }
            }
            d = dx;
        }
        g
    }

    /// The parameters in the order the blocks list them.
    fn flat(&self) -> Vec<&Vec<f64>> {
        let l = self.layers();
        let mut v = Vec::new();
        for j in 0..l {
            v.push(&self.w[j]);
            if j + 1 < l && self.bn {
                v.push(&self.gamma[j]);
                v.push(&self.beta[j]);
            } else {
                v.push(&self.b[j]);
            }
        }
        v
    }

    fn flat_mut(&mut self) -> Vec<&mut Vec<f64>> {
        let l = self.layers();
        let bn = self.bn;
        let mut v = Vec::new();
        for (j, ((w, b), (g, be))) in self
            .w
            .iter_mut()
            .zip(self.b.iter_mut())
            .zip(self.gamma.iter_mut().zip(self.beta.iter_mut()))
            .enumerate()
        {
            v.push(w);
            if j + 1 < l && bn {
                v.push(g);
                v.push(be);
            } else {
                v.push(b);
            }
        }
        v
    }
}

fn activate(act: Activation, v: f64) -> f64 {
    match act {
        Activation::Identity => v,
        Activation::Relu => v.max(0.0),
        Activation::Tanh => v.tanh(),
        Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
    }
}

/// `act'(x)` written in terms of `y = act(x)`.
fn derivative_at_output(act: Activation, y: f64) -> f64 {
    match act {
        Activation::Identity => 1.0,
        Activation::Relu => (y > 0.0) as u8 as f64,
        Activation::Tanh => 1.0 - y * y,
        Activation::Sigmoid => y * (1.0 - y),
    }
}

/// The reference's shape, read from a layout of `Linear → [BatchNorm] → activation` hidden layers:
/// (layer widths from the input to the classes, batch norm or not, each hidden layer's activation).
fn reference_shape(
    input: usize,
    blocks: &[Vec<LayerSpec>],
    classes: usize,
) -> (Vec<usize>, bool, Vec<Activation>) {
    let mut sizes = vec![input];
    let mut acts = Vec::new();
    let mut bn = false;
    for layer in blocks.iter().flatten() {
        match layer {
            LayerSpec::Linear { out, .. } => sizes.push(*out),
            LayerSpec::BatchNorm => bn = true,
            LayerSpec::Activation(a) => acts.push(*a),
            LayerSpec::Custom(c) => panic!("the reference has no {c:?}"),
            other => panic!("the reference has no {other:?} (the LSTM's is tests/lstm_layer.rs)"),
        }
    }
    assert_eq!(
        acts.len() + 1,
        sizes.len(),
        "one activation per hidden Linear"
    );
    sizes.push(classes);
    (sizes, bn, acts)
}

/// Reads the net's initial parameters into a reference net.
fn reference_of(net: &FfNet, sizes: &[usize], bn: bool, acts: Vec<Activation>) -> RefNet {
    let gpu = net.gpu();
    let l = sizes.len() - 1;
    let mut r = RefNet {
        sizes: sizes.to_vec(),
        bn,
        acts,
        w: vec![Vec::new(); l],
        b: vec![Vec::new(); l],
        gamma: vec![Vec::new(); l],
        beta: vec![Vec::new(); l],
    };
    let values: Vec<Vec<f64>> = (0..net.num_blocks())
        .flat_map(|i| net.block_params(i))
        .map(|(_, p)| {
            gpu.read(&p.value)
                .unwrap()
                .iter()
                .map(|&v| v as f64)
                .collect()
        })
        .collect();
    let slots = r.flat_mut();
    assert_eq!(slots.len(), values.len(), "parameter count");
    for (s, v) in slots.into_iter().zip(values) {
        *s = v;
    }
    r
}

fn batch(rows: usize, input: usize, classes: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut rng = Lcg::new(seed);
    let x = rng.vec(rows * input);
    let labels = (0..rows)
        .map(|_| (rng.next_u64() % classes as u64) as u32)
        .collect();
    (x, labels)
}

fn check_gradients(
    input: usize,
    hidden: Vec<usize>,
    classes: usize,
    rows: usize,
    bn: bool,
    per_block: usize,
    schedule: Schedule,
) {
    let blocks = FfSpec::mlp_blocks(&hidden, bn, per_block).unwrap();
    check_layout_gradients(input, blocks, classes, rows, schedule);
}

/// One locked step of a network of the given hidden blocks against the CPU reference.
fn check_layout_gradients(
    input: usize,
    blocks: Vec<Vec<LayerSpec>>,
    classes: usize,
    rows: usize,
    schedule: Schedule,
) {
    let gpu = gpu();
    let (sizes, bn, acts) = reference_shape(input, &blocks, classes);
    let mut spec = FfSpec::new(input, blocks, classes, rows, OptimConfig::adam(1e-3));
    spec.seed = 7 + rows as u64;
    let mut net = FfNet::new(&gpu, spec).unwrap();
    let reference = reference_of(&net, &sizes, bn, acts);
    let (x, labels) = batch(rows, input, classes, 99 + rows as u64);
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let want = reference.backward(&x64, &labels);

    // The reference's analytic gradient against central differences of its own loss.
    let mut probe = reference.clone();
    let k = probe.flat().len();
    for (pi, idx) in [(0, 3), (1, 0), (k - 2, 1), (k - 1, classes - 1)] {
        let n = probe.flat()[pi].len();
        let idx = idx % n;
        let orig = probe.flat()[pi][idx];
        let h = 1e-6;
        probe.flat_mut()[pi][idx] = orig + h;
        let up = probe.loss(&x64, &labels);
        probe.flat_mut()[pi][idx] = orig - h;
        let down = probe.loss(&x64, &labels);
        probe.flat_mut()[pi][idx] = orig;
        let fd = (up - down) / (2.0 * h);
        let an = want.flat()[pi][idx];
        assert!(
            (fd - an).abs() <= 1e-6 + 1e-4 * an.abs(),
            "reference grad {pi}[{idx}]: analytic {an} vs fd {fd}"
        );
    }

    let mut source = |xs: &mut Vec<f32>, ys: &mut Vec<u32>| {
        xs.clear();
        xs.extend_from_slice(&x);
        ys.clear();
        ys.extend_from_slice(&labels);
    };
    net.train(1, &mut source, schedule).unwrap();
    let got: Vec<(String, Vec<f32>)> = (0..net.num_blocks())
        .flat_map(|i| {
            net.block_params(i)
                .into_iter()
                .map(move |(name, p)| (format!("block {i} {name}"), p))
        })
        .map(|(name, p)| (name, gpu.read(&p.grad).unwrap()))
        .collect();
    let want_flat = want.flat();
    assert_eq!(got.len(), want_flat.len());
    for ((name, g), w) in got.iter().zip(want_flat) {
        let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
        let scale = w32.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert_close(
            g,
            &w32,
            1e-3,
            1e-4 * scale + 1e-7,
            &format!("{name} gradient ({schedule:?}, sizes {sizes:?}, bn {bn})"),
        );
    }
}

#[test]
fn locked_gradients_match_reference_every_layer_a_block() {
    check_gradients(13, vec![17, 9, 11], 5, 7, true, 1, Schedule::Threaded);
    check_gradients(13, vec![17, 9, 11], 5, 7, true, 1, Schedule::SingleThread);
}

#[test]
fn locked_gradients_match_reference_multi_layer_blocks() {
    // Two hidden layers per block, batch norm, one-row-short-of-a-tile sizes.
    check_gradients(31, vec![63, 3, 5], 3, 17, true, 2, Schedule::Threaded);
    // Without batch norm the hidden layers carry biases.
    check_gradients(5, vec![6, 4], 2, 3, false, 2, Schedule::Threaded);
}

#[test]
fn locked_gradients_match_reference_for_a_layout_of_the_users() {
    // Not the paper's MLP: tanh and sigmoid layers, a block of two layers, odd widths, no batch norm.
    let layer = |out, act| [LayerSpec::linear(out), LayerSpec::Activation(act)];
    let blocks = vec![
        layer(9, Activation::Tanh).to_vec(),
        [layer(7, Activation::Sigmoid), layer(5, Activation::Relu)].concat(),
        layer(3, Activation::Tanh).to_vec(),
    ];
    check_layout_gradients(11, blocks.clone(), 4, 6, Schedule::Threaded);
    check_layout_gradients(11, blocks, 4, 6, Schedule::SingleThread);
}

fn params_of(net: &FfNet) -> Vec<Vec<f32>> {
    let gpu = net.gpu();
    let mut out = Vec::new();
    for i in 0..net.num_blocks() {
        for (_, p) in net.block_params(i) {
            out.push(gpu.read(&p.value).unwrap());
        }
        for (m, v) in net.running_stats(i) {
            out.push(gpu.read(m).unwrap());
            out.push(gpu.read(v).unwrap());
        }
    }
    out
}

#[test]
fn threaded_and_single_thread_locked_runs_agree() {
    let gpu = gpu();
    let make = || {
        let mut spec = FfSpec::backprop(11, vec![13, 7, 9], 4, 6, OptimConfig::adam(1e-2));
        spec.seed = 3;
        FfNet::new(&gpu, spec).unwrap()
    };
    let batches: Vec<(Vec<f32>, Vec<u32>)> = (0..5).map(|s| batch(6, 11, 4, 500 + s)).collect();
    let run = |schedule| {
        let mut net = make();
        let mut k = 0;
        let mut source = |xs: &mut Vec<f32>, ys: &mut Vec<u32>| {
            let (x, y) = &batches[k % batches.len()];
            k += 1;
            xs.clone_from(x);
            ys.clone_from(y);
        };
        // Two calls, so the rings are reused across calls too.
        let s1 = net.train(3, &mut source, schedule).unwrap();
        let s2 = net.train(2, &mut source, schedule).unwrap();
        (params_of(&net), s1, s2, net.take_metrics().unwrap())
    };
    let (single, s_stats, _, s_metrics) = run(Schedule::SingleThread);
    let (threaded, t_stats, _, t_metrics) = run(Schedule::Threaded);
    let initial = params_of(&make());
    assert_ne!(single, initial, "training changed nothing");
    assert_eq!(
        single, threaded,
        "threaded locked run differs from the single-thread one"
    );
    assert_eq!(s_metrics, t_metrics);
    assert_eq!(s_metrics.examples, 30);
    // One submission per step on one thread; forward and backward per block when threaded, and each
    // block but the output waits for its true gradient every step.
    assert_eq!(s_stats.submissions, 3);
    assert_eq!(t_stats.submissions, 3 * (2 * 3 + 1));
    assert!(t_stats.waits_grad <= 3 * 3);
}

#[test]
fn sg_trained_alongside_backprop_agrees_across_schedules() {
    // BP with an MLP SG model that is trained but not applied (warm-up style): the blocks follow
    // true gradients and each SG regresses on the same step's target in both schedules, so the
    // two must agree exactly, SG models included; and the SGs must have moved off zero.
    let gpu = gpu();
    let make = || {
        let mut spec = FfSpec::backprop(11, vec![13, 7], 4, 6, OptimConfig::adam(1e-2));
        spec.seed = 5;
        spec = spec.with_interfaces(dni_graph::ff::InterfaceSpec {
            apply_sg: false,
            lambda: 1.0,
            ..dni_graph::ff::InterfaceSpec::dni(dni_graph::ff::SgSpec::mlp(vec![5], true))
        });
        FfNet::new(&gpu, spec).unwrap()
    };
    let batches: Vec<(Vec<f32>, Vec<u32>)> = (0..3).map(|s| batch(6, 11, 4, 900 + s)).collect();
    let sg_values = |net: &FfNet| -> Vec<Vec<f32>> {
        (0..net.num_blocks())
            .flat_map(|i| net.sg_params(i))
            .map(|(_, p)| gpu.read(&p.value).unwrap())
            .collect()
    };
    let run = |schedule| {
        let mut net = make();
        let mut k = 0;
        let mut source = |xs: &mut Vec<f32>, ys: &mut Vec<u32>| {
            let (x, y) = &batches[k % batches.len()];
            k += 1;
            xs.clone_from(x);
            ys.clone_from(y);
        };
        let stats = net.train(4, &mut source, schedule).unwrap();
        let metrics = net.take_metrics().unwrap();
        (params_of(&net), sg_values(&net), stats, metrics)
    };
    let (p1, sg1, s1, m1) = run(Schedule::SingleThread);
    let (p2, sg2, s2, m2) = run(Schedule::Threaded);
    assert_eq!(p1, p2, "block parameters differ");
    assert_eq!(sg1, sg2, "SG models differ");
    assert_eq!(m1, m2);
    assert_eq!((s1.sg_regressions, s2.sg_regressions), (8, 8));
    assert_eq!(s2.sg_staleness, 0);
    // The zero-initialised output layers (the last two tensors of each SG) have learnt something.
    let initial = sg_values(&make());
    let out_w = |v: &Vec<Vec<f32>>, k: usize| v[k].iter().map(|x| x.abs()).sum::<f32>();
    let per_model = initial.len() / 2;
    for model in 0..2 {
        let w = model * per_model + per_model - 2;
        assert_eq!(out_w(&initial, w), 0.0, "SG output weights start at zero");
        assert_eq!(out_w(&initial, w + 1), 0.0, "SG output bias starts at zero");
        assert!(out_w(&sg1, w) > 0.0, "SG output weights never moved");
    }
    assert!(
        m1.sg_loss.iter().all(|l| l.is_some_and(|v| v.is_finite())),
        "{:?}",
        m1.sg_loss
    );
}

/// Steady-state steps do not build pipelines or bind groups per step. Single thread: exactly nothing
/// new after warm-up. Threaded: each hand-over buffer comes from a small ring, so a block meets its
/// (ring slot × ring slot) pairings one by one and the cache fills up to a fixed bound (192 here)
/// early on; after 60 steps, 60 more may add only a few, where a per-step rebuild would add >= 60.
/// Its own `Gpu`, so parallel tests cannot move the counters.
#[test]
fn steady_state_steps_build_nothing_new() {
    let gpu = dni_kernels::Gpu::new(&dni_kernels::GpuOptions::default()).unwrap();
    let batches: Vec<(Vec<f32>, Vec<u32>)> = (0..4).map(|s| batch(6, 11, 4, 900 + s)).collect();
    for schedule in [Schedule::SingleThread, Schedule::Threaded] {
        let spec = FfSpec::backprop(11, vec![13, 7], 4, 6, OptimConfig::adam(1e-2))
            .dni(dni_graph::ff::SgSpec::linear(true));
        let mut net = FfNet::new(&gpu, spec).unwrap();
        let mut k = 0;
        let mut source = |xs: &mut Vec<f32>, ys: &mut Vec<u32>| {
            let (x, y) = &batches[k % batches.len()];
            k += 1;
            xs.clone_from(x);
            ys.clone_from(y);
        };
        net.train(60, &mut source, schedule).unwrap();
        net.take_metrics().unwrap();
        let before = (gpu.pipelines_compiled(), gpu.bind_groups_cached());
        net.train(60, &mut source, schedule).unwrap();
        net.take_metrics().unwrap();
        let after = (gpu.pipelines_compiled(), gpu.bind_groups_cached());
        assert_eq!(
            before.0, after.0,
            "{schedule:?}: pipelines compiled after warm-up"
        );
        match schedule {
            Schedule::SingleThread => assert_eq!(before.1, after.1, "bind groups grew"),
            Schedule::Threaded => assert!(
                after.1 - before.1 < 6,
                "threaded: {} new bind groups in 60 steady-state steps",
                after.1 - before.1
            ),
        }
    }
}

/// A layer of the user's own that only takes four features.
#[derive(Debug)]
struct OnlyFour;

impl dni_graph::layers::CustomLayer for OnlyFour {
    fn output(&self, input: usize) -> Result<usize, String> {
        match input {
            4 => Ok(4),
            _ => Err("it only takes 4".into()),
        }
    }
    fn build(
        &self,
        _gpu: &dni_kernels::Gpu,
        _input: usize,
        _uniform: &mut dyn FnMut(usize, f32) -> Vec<f32>,
    ) -> dni_graph::Result<Box<dyn dni_graph::layers::CustomParams>> {
        unreachable!("never built in this test")
    }
}

#[test]
fn a_custom_layer_that_cannot_take_its_input_is_an_error_naming_it() {
    let gpu = gpu();
    let blocks = vec![vec![
        LayerSpec::linear(5),
        LayerSpec::Custom(std::sync::Arc::new(OnlyFour)),
    ]];
    let spec = FfSpec::new(3, blocks, 2, 4, OptimConfig::adam(1e-3));
    let e = FfNet::new(&gpu, spec).err().expect("refused").to_string();
    assert!(
        e.contains("OnlyFour") && e.contains("cannot take 5") && e.contains("only takes 4"),
        "{e}"
    );
}
