//! One small feed-forward run per setting, to find what makes unconditioned DNI learn on MNIST.
//!
//! Trains an FCN on `data/mnist` (8 000 / 2 000) with the method and SG settings given as
//! `key=value` arguments, probes every interface's SG against backprop's true gradient
//! (`FfNet::probe_sg`) every `probe` steps on a fixed training batch, and prints the test error and
//! the probe's cosines. Small enough (64-unit layers, batch 64) that a run takes seconds, so the
//! settings can be compared side by side; docs/FEEDFORWARD.md ("Making unconditioned DNI learn")
//! lists the runs that decided the defaults.
//!
//! ```sh
//! cargo run --release -p dni-graph --example ff_dni_scan -- method=dni sg_lr=1e-3
//! cargo run --release -p dni-graph --example ff_dni_scan -- method=nobp
//! ```
//! Keys (default): `method` (dni: dni, cdni, bp, nobp), `layers` (3), `hidden` (64), `batch` (64),
//! `steps` (300), `lr` (2e-3), `sg_lr` (lr), `sg_hidden` (a comma list of widths; empty: linear;
//! default 64), `sg_bn` (1), `threads` (0), `probe` (100), `seed` (1), `opt` (adam: adam, sgd),
//! `sg_opt` (adam), `train` (every training digit: use the first N only).

use std::path::Path;

use dni_graph::ff::{EvalSet, FfNet, FfSpec, Schedule, SgSpec};
use dni_graph::layers::LayerSpec;
use dni_kernels::ops::optim::OptimConfig;
use dni_kernels::Gpu;
use dni_tasks::{EpochShuffler, Mnist};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let mut kv = std::collections::BTreeMap::new();
    for a in std::env::args().skip(1) {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| format!("argument {a:?} is not key=value"))?;
        kv.insert(k.to_string(), v.to_string());
    }
    let get = |k: &str, d: &str| kv.get(k).cloned().unwrap_or_else(|| d.to_string());
    let num = |k: &str, d: &str| -> Result<f64> {
        Ok(get(k, d).parse::<f64>().map_err(|e| format!("{k}: {e}"))?)
    };
    let method = get("method", "dni");
    let layers = num("layers", "3")? as usize;
    let hidden = num("hidden", "64")? as usize;
    let batch = num("batch", "64")? as usize;
    let steps = num("steps", "300")? as u64;
    let lr = num("lr", "2e-3")? as f32;
    let sg_lr = num("sg_lr", &lr.to_string())? as f32;
    let sg_hidden: Vec<usize> = get("sg_hidden", "64")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<std::result::Result<_, _>>()?;
    let sg_bn = num("sg_bn", "1")? != 0.0;
    let threads = num("threads", "0")? != 0.0;
    let probe = num("probe", "100")? as u64;
    let seed = num("seed", "1")? as u64;
    let optim = |kind: String, lr: f32| match kind.as_str() {
        "sgd" => OptimConfig::sgd(lr, 0.9),
        _ => OptimConfig::adam(lr),
    };

    let gpu = Gpu::default_adapter()?;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist");
    let data = Mnist::load_dir(&dir)?;
    let input = data.train.pixels();
    let mut spec = FfSpec::backprop(
        input,
        vec![hidden; layers],
        10,
        batch,
        optim(get("opt", "adam"), lr),
    );
    spec.seed = seed;
    spec.sg_optim = Some(optim(get("sg_opt", "adam"), sg_lr));
    let sg = |conditioned| SgSpec {
        hidden_layers: sg_hidden
            .iter()
            .flat_map(|&h| LayerSpec::hidden(h, sg_bn))
            .collect(),
        conditioned,
    };
    spec = match method.as_str() {
        "bp" => spec,
        "nobp" => spec.no_backprop(),
        "dni" => spec.dni(sg(false)),
        "cdni" => spec.dni(sg(true)),
        other => return Err(format!("method {other:?}: expected dni, cdni, bp or nobp").into()),
    };
    let labels: Vec<u32> = data.test.labels.iter().map(|&l| l as u32).collect();
    let test = EvalSet::new(&gpu, input, &data.test.images, &labels, 1000)?;
    let mut net = FfNet::new(&gpu, spec)?;
    // `train=N`: only the first N training digits (to see whether an SG memorises its targets).
    let train_n = (num("train", &data.train.n.to_string())? as usize).clamp(batch, data.train.n);
    let mut shuffler = EpochShuffler::new(train_n, batch, seed)?;
    let (mut px, mut py) = (Vec::new(), Vec::new());
    let first: Vec<usize> = (0..batch).collect();
    data.train.batch(&first, &mut px, &mut py);
    let schedule = if threads {
        Schedule::Threaded
    } else {
        Schedule::SingleThread
    };
    let started = std::time::Instant::now();
    let mut done = 0;
    let mut cos_sum = vec![0.0f64; layers];
    let mut upd_sum = vec![0.0f64; layers];
    let mut probes = 0;
    while done < steps {
        let n = probe.max(1).min(steps - done);
        let mut source =
            |x: &mut Vec<f32>, y: &mut Vec<u32>| data.train.batch(shuffler.next_batch(), x, y);
        net.train(n, &mut source, schedule)?;
        done += n;
        let p = net.probe_sg(&px, &py)?;
        let cos: Vec<f64> = p.iter().map(|f| f.delivered.cosine).collect();
        let upd: Vec<f64> = p.iter().map(|f| f.update.cosine).collect();
        for (s, c) in cos_sum.iter_mut().zip(&cos) {
            *s += c;
        }
        for (s, c) in upd_sum.iter_mut().zip(&upd) {
            *s += c;
        }
        probes += 1;
        let e = net.evaluate(&test)?;
        let show = |v: &[f64]| {
            v.iter()
                .map(|c| format!("{c:.2}"))
                .collect::<Vec<_>>()
                .join("/")
        };
        println!(
            "step {done}: test error {:.2}% | probe cosine {} | update cosine {}",
            100.0 * e.error,
            show(&cos),
            show(&upd)
        );
    }
    let e = net.evaluate(&test)?;
    let mean = |sums: &[f64]| -> String {
        sums.iter()
            .map(|s| format!("{:.3}", s / probes.max(1) as f64))
            .collect::<Vec<_>>()
            .join("/")
    };
    println!(
        "RESULT method={method} layers={layers} hidden={hidden} batch={batch} steps={steps} lr={lr} \
         sg_lr={sg_lr} sg_hidden={} sg_bn={} threads={threads} seed={seed} test_error={:.4} \
         mean_probe_cosine={} mean_update_cosine={} wall_s={:.1}",
        get("sg_hidden", "64"),
        sg_bn as u8,
        e.error,
        mean(&cos_sum),
        mean(&upd_sum),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
