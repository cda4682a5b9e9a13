//! How much of the future gradient can a synthetic-gradient model see from the state at all?
//!
//! The SG probe (`dni_graph::sg::probe`) scores the SG a run injects against the true expected future
//! gradient. When that score is near 0, two causes look alike: the SG model was not trained well
//! enough, or the state `[h; c]` does not hold what the future gradient depends on. This example tells
//! them apart. It trains a Copy run at a fixed level `N`, then keeps training while it probes every
//! `every` windows and keeps each lane's `(state, expected future gradient)` pair. Offline, in f64, it
//! fits the best SG models it can to those pairs and scores them on pairs from later probes:
//!
//! - `linear[h;c]`: ridge regression on `[h; c]` (the model class the trainer uses);
//! - `linear[h]`: on `h` alone;
//! - `features[h;c]`: ridge on 512 random ReLU features of `[h; c]` (an MLP's capacity, roughly);
//! - `online`: the SG the run really injects (its scale removed), unfitted.
//!
//! Each is reported as the explained fraction `1 − ‖pred − g‖² / ‖g‖²` and the cosine, over the held-out
//! lanes. The futures are split in two halves as well: how well one half's average gradient explains
//! the other's (`futures-split`) says how much of `g` is noise of the futures, which no model removes.
//! Two horizons are scored: the gradient of the next window alone (`T` steps, what the SG's
//! bootstrapped target holds before the discount) and of the next `horizon` steps.
//!
//! ```sh
//! cargo run --release -p dni-graph --example sg_ceiling -- method=dni t=3 n=2 train=20000
//! cargo run --release -p dni-graph --example sg_ceiling -- method=shadow t=3 n=2   # BPTT, SG trained, not applied
//! ```
//! Every `key=value` is optional; see `Args` for the keys and defaults.

use dni_graph::recurrent::{Method, OutputLoss, RecurrentConfig, RecurrentTrainer, StepPath};
use dni_graph::sg::{FutureTargets, ProbeModel, SgConfig, SgInput};
use dni_kernels::ops::optim::OptimConfig;
use dni_kernels::Gpu;
use dni_tasks::{CopyKind, CurriculumConfig, TaskStream, Window};

#[derive(Debug)]
struct Args {
    method: String,
    t: usize,
    n: usize,
    hidden: usize,
    batch: usize,
    /// Windows trained before the probes start.
    train: usize,
    /// Probes, one every `every` windows (training goes on between them).
    probes: usize,
    every: usize,
    futures: usize,
    /// Steps past the window that the long-horizon gradient covers (default 8·T).
    horizon: usize,
    lr: f32,
    sg_lr: f32,
    sg_scale: f32,
    clip: f32,
    seed: u64,
    /// `adam`, or `sgd` (momentum `sg_momentum`): the SG model's optimiser.
    sg_opt: String,
    sg_momentum: f32,
    /// `auto`, `fused` or `per_step`.
    path: String,
    /// The SG model: `state` or `hidden` input, hidden width (0: linear), bootstrap discount
    /// (negative: the injection scale).
    sg_input: String,
    sg_hidden: usize,
    sg_discount: f32,
    /// 1: the core's learning rate is 0 from the first probe on, so the pairs come from one fixed
    /// core (the SG model keeps training).
    freeze: u8,
}

impl Args {
    fn parse() -> Result<Self, String> {
        let mut a = Args {
            method: "dni".into(),
            t: 3,
            n: 2,
            hidden: 64,
            batch: 16,
            train: 20000,
            probes: 300,
            every: 10,
            futures: 8,
            horizon: 0,
            lr: 1e-3,
            sg_lr: 3e-4,
            sg_scale: 0.1,
            clip: 1.0,
            seed: 1,
            sg_opt: "adam".into(),
            sg_momentum: 0.9,
            path: "auto".into(),
            sg_input: "state".into(),
            sg_hidden: 0,
            sg_discount: -1.0,
            freeze: 0,
        };
        for arg in std::env::args().skip(1) {
            let (k, v) = arg
                .split_once('=')
                .ok_or_else(|| format!("`{arg}`: expected key=value"))?;
            let bad = |e: &dyn std::fmt::Display| format!("{k}={v}: {e}");
            match k {
                "method" => a.method = v.into(),
                "t" => a.t = v.parse().map_err(|e| bad(&e))?,
                "n" => a.n = v.parse().map_err(|e| bad(&e))?,
                "hidden" => a.hidden = v.parse().map_err(|e| bad(&e))?,
                "batch" => a.batch = v.parse().map_err(|e| bad(&e))?,
                "train" => a.train = v.parse().map_err(|e| bad(&e))?,
                "probes" => a.probes = v.parse().map_err(|e| bad(&e))?,
                "every" => a.every = v.parse().map_err(|e| bad(&e))?,
                "futures" => a.futures = v.parse().map_err(|e| bad(&e))?,
                "horizon" => a.horizon = v.parse().map_err(|e| bad(&e))?,
                "lr" => a.lr = v.parse().map_err(|e| bad(&e))?,
                "sg_lr" => a.sg_lr = v.parse().map_err(|e| bad(&e))?,
                "sg_scale" => a.sg_scale = v.parse().map_err(|e| bad(&e))?,
                "clip" => a.clip = v.parse().map_err(|e| bad(&e))?,
                "seed" => a.seed = v.parse().map_err(|e| bad(&e))?,
                "sg_opt" => a.sg_opt = v.into(),
                "sg_momentum" => a.sg_momentum = v.parse().map_err(|e| bad(&e))?,
                "path" => a.path = v.into(),
                "sg_input" => a.sg_input = v.into(),
                "sg_hidden" => a.sg_hidden = v.parse().map_err(|e| bad(&e))?,
                "sg_discount" => a.sg_discount = v.parse().map_err(|e| bad(&e))?,
                "freeze" => a.freeze = v.parse().map_err(|e| bad(&e))?,
                _ => return Err(format!("unknown key `{k}`")),
            }
        }
        if a.horizon == 0 {
            a.horizon = 8 * a.t;
        }
        if a.futures < 2 || a.every == 0 || a.probes < 10 {
            return Err("need futures >= 2, every >= 1 and probes >= 10".into());
        }
        Ok(a)
    }
}

/// Lanes' pairs: the state, and the expected future gradient at two horizons (and its two halves).
#[derive(Default)]
struct Pairs {
    state: Vec<Vec<f64>>,
    online: Vec<Vec<f64>>,
    near: Vec<Vec<f64>>,
    far: Vec<Vec<f64>>,
    far_a: Vec<Vec<f64>>,
    far_b: Vec<Vec<f64>>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse()?;
    let (method, apply) = match a.method.as_str() {
        "dni" => (
            Method::Dni {
                sg_scale: a.sg_scale,
            },
            true,
        ),
        "dni_aux" => (
            Method::DniAux {
                sg_scale: a.sg_scale,
                aux_weight: 1.0,
                every_step: false,
            },
            true,
        ),
        "shadow" => (
            Method::Dni {
                sg_scale: a.sg_scale,
            },
            false,
        ),
        m => return Err(format!("method `{m}`: expected dni, dni_aux or shadow").into()),
    };
    let gpu = Gpu::default_adapter()?;
    println!("adapter: {}", gpu.adapter());
    println!("args: {a:?}");
    let sg_optim = match a.sg_opt.as_str() {
        "adam" => OptimConfig::adam(a.sg_lr),
        "sgd" => OptimConfig::sgd(a.sg_lr, a.sg_momentum),
        o => return Err(format!("sg_opt `{o}`: expected adam or sgd").into()),
    };
    let path = match a.path.as_str() {
        "auto" => StepPath::Auto,
        "fused" => StepPath::Fused,
        "per_step" => StepPath::PerStep,
        p => return Err(format!("path `{p}`: expected auto, fused or per_step").into()),
    };
    let mut trainer = RecurrentTrainer::with_path(
        &gpu,
        RecurrentConfig {
            input: dni_tasks::copy::WIDTH,
            hidden: a.hidden,
            output: dni_tasks::copy::WIDTH,
            batch: a.batch,
            t: a.t,
            loss: OutputLoss::SigmoidBits,
            method,
            optim: OptimConfig::adam(a.lr),
            sg_optim: Some(sg_optim),
            clip: Some(a.clip),
            sg: SgConfig {
                input: match a.sg_input.as_str() {
                    "state" => SgInput::State,
                    "hidden" => SgInput::Hidden,
                    i => return Err(format!("sg_input `{i}`: expected state or hidden").into()),
                },
                hidden: a.sg_hidden,
                discount: (a.sg_discount >= 0.0).then_some(a.sg_discount),
                normalise: false,
            },
            seed: a.seed,
        },
        path,
    )?;
    println!("path: {:?}", trainer.path());
    trainer.set_sg_apply(apply)?;
    // The level stays at N: the curriculum is never fed.
    let curriculum = CurriculumConfig {
        start_n: a.n,
        ..Default::default()
    };
    let mut stream = TaskStream::new(CopyKind::Copy, a.batch, a.seed + 6, curriculum)?;
    let mut w = Window::default();
    // Gaps of every, every + 1, every + 2 windows: lanes play episodes in lockstep, so a fixed gap
    // could land every probe at the same phase of the episode.
    let total = a.train + a.probes * (a.every + 1) + 2;
    let mut next_probe = a.train + a.every;
    let mut probed = 0;
    let mut pairs = Pairs::default();
    let (mut futures, mut future) = (Vec::new(), Window::default());
    for step in 1..=total {
        stream.next_window(a.t, &mut w);
        trainer.train_window(&w.inputs, &w.targets, &w.mask)?;
        if step % 1000 == 0 {
            let m = trainer.read_metrics()?;
            println!(
                "window {step:6}: {:.3} bits, sg_explained {:.3}",
                m.bits_per_char().unwrap_or(f64::NAN),
                m.sg_explained().unwrap_or(f64::NAN)
            );
        }
        if step == a.train && a.freeze == 1 {
            trainer.set_lr(0.0)?;
        }
        if step == next_probe && probed < a.probes {
            probed += 1;
            next_probe += a.every + probed % 3;
            let model = trainer
                .group()
                .probe_model(0)?
                .ok_or("the run has no SG model")?;
            let state = trainer.read_state()?;
            futures.clear();
            for k in 0..a.futures {
                stream
                    .resampled(step as u64 * 7919 + k as u64)
                    .next_window(a.horizon, &mut future);
                futures.push(future.clone());
            }
            collect(&model, &state, &futures, &a, &mut pairs);
        }
    }
    report(&pairs, &a);
    Ok(())
}

/// The future gradient of `steps` steps, per lane, averaged over `futures`.
fn mean_gradient(m: &ProbeModel, state: &[f32], futures: &[Window], steps: usize) -> Vec<f64> {
    let (b, w) = (m.batch, m.input);
    let mut mean = vec![0.0; state.len()];
    for f in futures {
        let rows = steps * b * w;
        let g = m.future_gradient(
            state,
            &f.inputs[..rows],
            FutureTargets::Bits {
                targets: &f.targets[..rows],
                mask: &f.mask[..rows],
            },
            steps,
        );
        mean.iter_mut()
            .zip(&g)
            .for_each(|(acc, v)| *acc += v / futures.len() as f64);
    }
    mean
}

fn collect(m: &ProbeModel, state: &[f32], futures: &[Window], a: &Args, p: &mut Pairs) {
    let s = 2 * m.hidden;
    let near = mean_gradient(m, state, futures, a.t);
    let half = futures.len() / 2;
    let far_a = mean_gradient(m, state, &futures[..half], a.horizon);
    let far_b = mean_gradient(m, state, &futures[half..], a.horizon);
    let mut unscaled = m.clone();
    unscaled.sg_scale = 1.0;
    let online = unscaled.injected_sg(state);
    let lane = |v: &[f64], l: usize| v[l * s..(l + 1) * s].to_vec();
    for l in 0..m.batch {
        p.state.push(
            state[l * s..(l + 1) * s]
                .iter()
                .map(|&x| x as f64)
                .collect(),
        );
        p.online.push(lane(&online, l));
        p.near.push(lane(&near, l));
        let (ga, gb) = (lane(&far_a, l), lane(&far_b, l));
        p.far
            .push(ga.iter().zip(&gb).map(|(x, y)| 0.5 * (x + y)).collect());
        p.far_a.push(ga);
        p.far_b.push(gb);
    }
}

/// Explained fraction (zero-predictor baseline) and cosine of predictions against targets.
fn score(pred: &[Vec<f64>], truth: &[Vec<f64>]) -> (f64, f64) {
    let (mut err, mut zero, mut dot, mut pp) = (0.0, 0.0, 0.0, 0.0);
    for (p, t) in pred.iter().zip(truth) {
        for (x, y) in p.iter().zip(t) {
            err += (x - y) * (x - y);
            zero += y * y;
            dot += x * y;
            pp += x * x;
        }
    }
    let cos = if pp > 0.0 && zero > 0.0 {
        dot / (pp.sqrt() * zero.sqrt())
    } else {
        0.0
    };
    (1.0 - err / zero.max(f64::MIN_POSITIVE), cos)
}

/// Ridge regression with a bias column: returns the `[d + 1, k]` weights.
fn ridge(x: &[Vec<f64>], y: &[Vec<f64>], lambda: f64) -> Vec<Vec<f64>> {
    let d = x[0].len() + 1;
    let k = y[0].len();
    let mut xtx = vec![vec![0.0; d]; d];
    let mut xty = vec![vec![0.0; k]; d];
    for (xi, yi) in x.iter().zip(y) {
        let row: Vec<f64> = xi.iter().copied().chain([1.0]).collect();
        for i in 0..d {
            for j in i..d {
                xtx[i][j] += row[i] * row[j];
            }
            for (o, &yv) in yi.iter().enumerate() {
                xty[i][o] += row[i] * yv;
            }
        }
    }
    let scale = (0..d).map(|i| xtx[i][i]).sum::<f64>() / d as f64;
    #[allow(clippy::needless_range_loop)] // a symmetric fill reads the other triangle
    for i in 0..d {
        for j in 0..i {
            xtx[i][j] = xtx[j][i];
        }
        if i + 1 < d {
            xtx[i][i] += lambda * scale; // the bias is not shrunk
        } else {
            xtx[i][i] += 1e-12 * scale;
        }
    }
    // Cholesky: xtx = L·Lᵀ, then two triangular solves per output column.
    let mut l = vec![vec![0.0; d]; d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = (0..j).map(|m| l[i][m] * l[j][m]).sum();
            if i == j {
                l[i][i] = (xtx[i][i] - s).max(1e-300).sqrt();
            } else {
                l[i][j] = (xtx[i][j] - s) / l[j][j];
            }
        }
    }
    let mut w = vec![vec![0.0; k]; d];
    for o in 0..k {
        let mut z = vec![0.0; d];
        for i in 0..d {
            let s: f64 = (0..i).map(|m| l[i][m] * z[m]).sum();
            z[i] = (xty[i][o] - s) / l[i][i];
        }
        for i in (0..d).rev() {
            let s: f64 = (i + 1..d).map(|m| l[m][i] * w[m][o]).sum();
            w[i][o] = (z[i] - s) / l[i][i];
        }
    }
    w
}

fn predict(w: &[Vec<f64>], x: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let k = w[0].len();
    x.iter()
        .map(|xi| {
            let mut out = w[xi.len()].clone();
            for (i, &v) in xi.iter().enumerate() {
                for o in 0..k {
                    out[o] += v * w[i][o];
                }
            }
            out
        })
        .collect()
}

/// The best ridge fit: λ chosen on the validation pairs, scored on the test pairs.
fn best_fit(x: &[Vec<f64>], y: &[Vec<f64>], split: (usize, usize)) -> (f64, f64, f64) {
    let (tr, va) = split;
    // One λ for every feature only makes sense at one scale: c is far larger than h.
    let x = &standardise(x, tr);
    let mut best = (f64::NEG_INFINITY, 0.0);
    for lambda in [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0] {
        let w = ridge(&x[..tr], &y[..tr], lambda);
        let (e, _) = score(&predict(&w, &x[tr..va]), &y[tr..va]);
        if e > best.0 {
            best = (e, lambda);
        }
    }
    let w = ridge(&x[..va], &y[..va], best.1);
    let (e, c) = score(&predict(&w, &x[va..]), &y[va..]);
    (e, c, best.1)
}

/// Each feature shifted and scaled to mean 0, deviation 1 over the first `fit_rows` rows.
fn standardise(x: &[Vec<f64>], fit_rows: usize) -> Vec<Vec<f64>> {
    let (mean, sd) = moments(x, fit_rows);
    x.iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(j, v)| (v - mean[j]) / sd[j])
                .collect()
        })
        .collect()
}

fn moments(x: &[Vec<f64>], fit_rows: usize) -> (Vec<f64>, Vec<f64>) {
    let d = x[0].len();
    let mean: Vec<f64> = (0..d)
        .map(|j| x[..fit_rows].iter().map(|r| r[j]).sum::<f64>() / fit_rows as f64)
        .collect();
    let sd: Vec<f64> = (0..d)
        .map(|j| {
            let v = x[..fit_rows]
                .iter()
                .map(|r| (r[j] - mean[j]).powi(2))
                .sum::<f64>()
                / fit_rows as f64;
            v.sqrt().max(1e-6)
        })
        .collect();
    (mean, sd)
}

/// 512 random ReLU features of the standardised state (fixed seed).
fn random_features(x: &[Vec<f64>], fit_rows: usize) -> Vec<Vec<f64>> {
    let d = x[0].len();
    let (mean, sd) = moments(x, fit_rows);
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut gauss = || {
        // Irwin-Hall: a sum of 12 uniforms, centred.
        (0..12)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (rng >> 11) as f64 / (1u64 << 53) as f64
            })
            .sum::<f64>()
            - 6.0
    };
    let feats = 512;
    let proj: Vec<Vec<f64>> = (0..feats)
        .map(|_| (0..=d).map(|_| gauss() / (d as f64).sqrt()).collect())
        .collect();
    x.iter()
        .map(|r| {
            proj.iter()
                .map(|p| {
                    let z: f64 = r
                        .iter()
                        .enumerate()
                        .map(|(j, v)| p[j] * (v - mean[j]) / sd[j])
                        .sum::<f64>()
                        + p[d];
                    z.max(0.0)
                })
                .collect()
        })
        .collect()
}

fn report(p: &Pairs, a: &Args) {
    let n = p.state.len();
    // Split by time: the first 60% of probes fit, the next 20% choose λ, the last 20% are scored.
    let split = (n * 3 / 5, n * 4 / 5);
    let h_only: Vec<Vec<f64>> = p.state.iter().map(|s| s[..a.hidden].to_vec()).collect();
    let feats = random_features(&p.state, split.0);
    let rms = |lo: usize, hi: usize| {
        (p.state
            .iter()
            .flat_map(|s| &s[lo..hi])
            .map(|v| v * v)
            .sum::<f64>()
            / (n * (hi - lo)) as f64)
            .sqrt()
    };
    let cmax = p
        .state
        .iter()
        .flat_map(|s| &s[a.hidden..])
        .fold(0.0f64, |m, v| m.max(v.abs()));
    println!(
        "RESULT state h_rms={:.3} c_rms={:.3} c_max={cmax:.2}",
        rms(0, a.hidden),
        rms(a.hidden, 2 * a.hidden)
    );
    println!(
        "pairs: {n} ({} probes x {} lanes), scored on the last {}",
        a.probes,
        a.batch,
        n - split.1
    );
    for (name, truth) in [("near (T steps)", &p.near), ("far (horizon)", &p.far)] {
        let test = &truth[split.1..];
        let (oe, oc) = score(&p.online[split.1..], test);
        let (le, lc, ll) = best_fit(&p.state, truth, split);
        let (he, hc, hl) = best_fit(&h_only, truth, split);
        let (fe, fc, fl) = best_fit(&feats, truth, split);
        let rms = (test.iter().flatten().map(|v| v * v).sum::<f64>()
            / (test.len() * test[0].len()) as f64)
            .sqrt();
        println!("target {name}: rms {rms:.3e}");
        let target = name.split(' ').next().unwrap_or("");
        for (model, (e, c), lambda) in [
            ("online", (oe, oc), None),
            ("linear_hc", (le, lc), Some(ll)),
            ("linear_h", (he, hc), Some(hl)),
            ("features_hc", (fe, fc), Some(fl)),
        ] {
            let lambda = lambda.map_or(String::new(), |l| format!(" lambda={l:e}"));
            println!("RESULT target={target} model={model} explained={e:.3} cos={c:.3}{lambda}");
        }
    }
    let (se, sc) = score(&p.far_a[split.1..], &p.far_b[split.1..]);
    println!("RESULT target=far model=futures_split explained={se:.3} cos={sc:.3}");
}
