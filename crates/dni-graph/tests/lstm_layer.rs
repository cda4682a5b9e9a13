//! `LayerSpec::Lstm`, the LSTM as a layer of a feed-forward stack: each row of `steps · f` features
//! is read as `steps` steps from a zero state and the last hidden state comes out. At an odd shape
//! its forward, its input gradient and every parameter gradient match the CPU reference LSTM
//! (`dni_kernels::reference::lstm`, itself checked against finite differences), in a stack with a
//! layer after it, at two batch sizes; a width that does not divide into its steps is an error.

use dni_graph::layers::{LayerSpec, Stack, StackSpec};
use dni_kernels::reference::lstm::{window_backward, window_forward, Dims, Params};
use dni_kernels::testing::{gpu, Lcg};
use dni_kernels::{Gpu, Tensor};
use dni_tasks::Rng;

const STEPS: usize = 3;
const FEATURES: usize = 4;
const HIDDEN: usize = 5;

fn spec(layers: Vec<LayerSpec>) -> StackSpec {
    StackSpec {
        input: STEPS * FEATURES,
        context: 0,
        layers,
    }
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Rows `[B, T·f]` as the reference reads them, `[T, B, f]`.
fn time_major(x: &[f64], batch: usize) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for b in 0..batch {
        for t in 0..STEPS {
            let src = (b * STEPS + t) * FEATURES;
            let dst = (t * batch + b) * FEATURES;
            out[dst..dst + FEATURES].copy_from_slice(&x[src..src + FEATURES]);
        }
    }
    out
}

fn close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= 1e-4 + 1e-3 * w.abs(),
            "{what}[{k}]: GPU {g} against the reference {w}"
        );
    }
}

/// The stack `[Lstm, Linear 2]` at `batch` rows against the reference: forward, then backward of
/// `L = Σ g·out`.
fn check(gpu: &Gpu, batch: usize, seed: u64) {
    let spec = spec(vec![
        LayerSpec::Lstm {
            hidden: HIDDEN,
            steps: STEPS,
        },
        LayerSpec::linear(2),
    ]);
    let stack = Stack::new(gpu, &spec, &mut Rng::new(seed)).unwrap();
    assert_eq!(stack.output(), 2);
    assert_eq!(
        stack.param_names(),
        ["l0.w_x", "l0.w_h", "l0.bias", "l1.w", "l1.b"]
    );
    let p: Vec<Vec<f64>> = stack
        .params()
        .iter()
        .map(|p| f64s(&gpu.read(&p.value).unwrap()))
        .collect();
    let mut lcg = Lcg::new(seed + 7);
    let x = lcg.vec(batch * STEPS * FEATURES);
    let g = lcg.vec(batch * 2);
    let x_t = Tensor::from_slice(gpu, &[batch, STEPS * FEATURES], &x).unwrap();
    let g_t = Tensor::from_slice(gpu, &[batch, 2], &g).unwrap();
    let out = Tensor::zeros(gpu, &[batch, 2]).unwrap();
    let dx = Tensor::zeros(gpu, &[batch, STEPS * FEATURES]).unwrap();
    let acts = stack.acts(gpu, batch).unwrap();
    let grads = stack.grads(gpu, batch).unwrap();
    let mut enc = gpu.encoder();
    stack
        .forward(&mut enc, &acts, &x_t, None, &out, true)
        .unwrap();
    stack
        .backward(&mut enc, &acts, &grads, &x_t, None, &out, &g_t, Some(&dx))
        .unwrap();
    gpu.submit(enc);

    // The reference: the LSTM over [T, B, f] from zero, its last h, then the Linear.
    let d = Dims {
        input: FEATURES,
        hidden: HIDDEN,
        batch,
        steps: STEPS,
    };
    let lstm = Params {
        w_x: &p[0],
        w_h: &p[1],
        bias: &p[2],
    };
    let xs = time_major(&f64s(&x), batch);
    let fwd = window_forward(d, lstm, &xs, &vec![0.0; batch * 2 * HIDDEN]);
    let last = &fwd.h_seq[(STEPS - 1) * batch * HIDDEN..];
    let mut want_out = vec![0.0; batch * 2];
    for b in 0..batch {
        for o in 0..2 {
            want_out[b * 2 + o] = p[4][o]
                + (0..HIDDEN)
                    .map(|k| last[b * HIDDEN + k] * p[3][k * 2 + o])
                    .sum::<f64>();
        }
    }
    close(&gpu.read(&out).unwrap(), &want_out, "out");
    // dL/dh_T = g·Wᵀ at the last step only.
    let mut dh_seq = vec![0.0; STEPS * batch * HIDDEN];
    for b in 0..batch {
        for k in 0..HIDDEN {
            dh_seq[(STEPS - 1) * batch * HIDDEN + b * HIDDEN + k] =
                (0..2).map(|o| g[b * 2 + o] as f64 * p[3][k * 2 + o]).sum();
        }
    }
    let want = window_backward(d, lstm, &xs, &fwd, &dh_seq, None);
    let got: Vec<Vec<f32>> = stack
        .params()
        .iter()
        .take(3)
        .map(|p| gpu.read(&p.grad).unwrap())
        .collect();
    close(&got[0], &want.dw_x, "dw_x");
    close(&got[1], &want.dw_h, "dw_h");
    close(&got[2], &want.dbias, "dbias");
    // dx comes back in the rows' layout.
    let got_dx = time_major(&f64s(&gpu.read(&dx).unwrap()), batch);
    let got_dx: Vec<f32> = got_dx.iter().map(|&v| v as f32).collect();
    close(&got_dx, &want.dx, "dx");
    assert!(want.dx.iter().any(|v| v.abs() > 1e-3), "a gradient to test");
}

#[test]
fn an_lstm_layer_matches_the_reference_at_odd_shapes() {
    let gpu = gpu();
    check(&gpu, 3, 1);
    check(&gpu, 1, 2);
}

#[test]
fn an_lstm_layer_that_cannot_take_its_input_is_an_error() {
    let gpu = gpu();
    for (layer, needle) in [
        (
            LayerSpec::Lstm {
                hidden: 4,
                steps: 5,
            },
            "do not divide",
        ),
        (
            LayerSpec::Lstm {
                hidden: 0,
                steps: 3,
            },
            "one unit",
        ),
        (
            LayerSpec::Lstm {
                hidden: 4,
                steps: 0,
            },
            "one step",
        ),
    ] {
        let err = match Stack::new(&gpu, &spec(vec![layer]), &mut Rng::new(1)) {
            Ok(_) => panic!("built"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("Lstm") && err.contains(needle), "{err}");
    }
}
