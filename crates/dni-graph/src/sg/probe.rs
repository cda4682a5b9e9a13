//! The SG fidelity probe: does the synthetic gradient point where the long-range gradient points?
//!
//! `sg_explained` scores the SG model against its own training target, a one-window gradient plus a
//! bootstrapped (and discounted) guess of the rest, so it cannot say whether the SG carries what the
//! future really sends back. The probe measures that directly. From a copy of the current parameters
//! and of the carried state `s_last` (the last window's final state) it runs the stream forward `L`
//! steps past the window and backpropagates every one of their losses, with no truncation, to
//! `s_last`. That is the true gradient `g` that the future beyond the window sends to the window's last
//! state. The injected SG `sg_scale·M(s_last)` is then scored against it:
//!
//! - `cosine`: the angle, over all lanes and units together (1: the SG points exactly where `g` does);
//! - `explained`: `1 − ‖sg − g‖² / ‖g‖²`, with the same zero-predictor baseline as `sg_explained`
//!   (0 for an SG that says 0, 1 for a perfect one, negative for one that is worse than saying 0).
//!
//! Both are in per-lane units (the gradient of one lane's own loss), the units the SG model works in.
//! The probe runs on the host in f64 from the CPU reference LSTM, so it shares no code with the kernels
//! it judges; it reads the parameters back, so it is a diagnostic to run every few hundred windows.

use dni_kernels::reference::lstm::{window_backward, window_forward, Dims, Params};

use super::{explained, SgInput};

/// What the probe measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fidelity {
    /// Cosine between the injected SG and the true future gradient.
    pub cosine: f64,
    /// `1 − ‖sg − g‖² / ‖g‖²`.
    pub explained: f64,
    /// RMS of the injected SG and of the true gradient, per element.
    pub sg_rms: f64,
    pub true_rms: f64,
}

/// The targets of the future steps: bits under a mask (Copy) or class ids (language model).
#[derive(Clone, Copy, Debug)]
pub enum FutureTargets<'a> {
    /// `[L, B, O]` targets and mask.
    Bits { targets: &'a [f32], mask: &'a [f32] },
    /// `[L, B]` class ids; an id outside `0..O` is not scored.
    Classes(&'a [u32]),
}

/// A copy of the model the probe runs: the LSTM, the readout and the SG model, host side.
#[derive(Clone, Debug)]
pub struct ProbeModel {
    pub input: usize,
    pub hidden: usize,
    pub output: usize,
    pub batch: usize,
    /// `[I, 4H]`, `[H, 4H]`, `[4H]` (gate order i, f, g, o).
    pub w_x: Vec<f32>,
    pub w_h: Vec<f32>,
    pub bias: Vec<f32>,
    /// `[H, O]`, `[O]`.
    pub readout_w: Vec<f32>,
    pub readout_b: Vec<f32>,
    /// What the SG model reads: `x = [h | c]` or `x = h`.
    pub sg_input: SgInput,
    /// An MLP's first layer `relu(x·W_in + b_in)`, `[in, hidden]` and `[hidden]`; both empty for
    /// a linear model.
    pub sg_w_in: Vec<f32>,
    pub sg_b_in: Vec<f32>,
    /// The SG model's output layer `M = a·W + b` on `a` (the first layer's output, or `x`):
    /// `[a, 2H]`, `[2H]`, in the gradient's units (a run that normalises its targets has `σ`
    /// folded in).
    pub sg_w: Vec<f32>,
    pub sg_b: Vec<f32>,
    /// Factor applied to `M(s)` where it is injected.
    pub sg_scale: f32,
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

impl ProbeModel {
    /// The injected synthetic gradient `sg_scale·M(s)` for a state `[B, 2H]`, per-lane units.
    pub fn injected_sg(&self, state: &[f32]) -> Vec<f64> {
        let k = self.sg_scale as f64;
        self.sg_model(state).into_iter().map(|v| k * v).collect()
    }

    /// The SG model's output `M(s)` for a state `[B, 2H]` (unscaled), per-lane units.
    pub fn sg_model(&self, state: &[f32]) -> Vec<f64> {
        let (b, s) = (self.batch, 2 * self.hidden);
        let width = match self.sg_input {
            SgInput::State => s,
            SgInput::Hidden => self.hidden,
        };
        // y = x·W + b for one row, in f64.
        let affine = |x: &[f64], w: &[f32], bias: &[f32]| -> Vec<f64> {
            let n = bias.len();
            (0..n)
                .map(|j| {
                    bias[j] as f64
                        + x.iter()
                            .enumerate()
                            .map(|(k, v)| v * w[k * n + j] as f64)
                            .sum::<f64>()
                })
                .collect()
        };
        let mut out = Vec::with_capacity(b * s);
        for lane in 0..b {
            let x: Vec<f64> = state[lane * s..lane * s + width]
                .iter()
                .map(|&v| v as f64)
                .collect();
            let a = match self.sg_b_in.is_empty() {
                true => x,
                false => affine(&x, &self.sg_w_in, &self.sg_b_in)
                    .into_iter()
                    .map(|v| v.max(0.0))
                    .collect(),
            };
            out.extend(affine(&a, &self.sg_w, &self.sg_b));
        }
        out
    }

    /// The true gradient, per lane, of every loss over the `steps` future steps with respect to the
    /// state `[B, 2H]` they start from: forward through all of them, then BPTT through all of them.
    /// `inputs` is `[L, B, I]` (one-hot rows for token input).
    pub fn future_gradient(
        &self,
        state: &[f32],
        inputs: &[f32],
        targets: FutureTargets,
        steps: usize,
    ) -> Vec<f64> {
        self.window_gradient(state, inputs, targets, steps, None)
    }

    /// The SG model's training target at `state` for the window `inputs`/`targets` of `steps`
    /// steps that starts there, per lane: the gradient of the window's own losses plus
    /// `discount·Jᵀ·M(s_end)`, the bootstrapped rest of the future, where `s_end` is the window's
    /// last state and `M` this model's SG (unscaled). This is the definition the trainers follow.
    pub fn bootstrap_target(
        &self,
        state: &[f32],
        inputs: &[f32],
        targets: FutureTargets,
        steps: usize,
        discount: f32,
    ) -> Vec<f64> {
        self.window_gradient(state, inputs, targets, steps, Some(discount))
    }

    fn window_gradient(
        &self,
        state: &[f32],
        inputs: &[f32],
        targets: FutureTargets,
        steps: usize,
        bootstrap: Option<f32>,
    ) -> Vec<f64> {
        let (b, h, o) = (self.batch, self.hidden, self.output);
        let d = Dims {
            input: self.input,
            hidden: h,
            batch: b,
            steps,
        };
        let (w_x, w_h, bias) = (widen(&self.w_x), widen(&self.w_h), widen(&self.bias));
        let p = Params {
            w_x: &w_x,
            w_h: &w_h,
            bias: &bias,
        };
        let x = widen(inputs);
        let fwd = window_forward(d, p, &x, &widen(state));
        // Readout and the loss gradient at every step (per lane: no 1/B), then dh = dlogits·W_rᵀ.
        let mut dh_seq = vec![0.0; steps * b * h];
        let mut dlogits = vec![0.0; o];
        for row in 0..steps * b {
            let hrow = &fwd.h_seq[row * h..(row + 1) * h];
            for (j, dl) in dlogits.iter_mut().enumerate() {
                let mut z = self.readout_b[j] as f64;
                for (k, &hk) in hrow.iter().enumerate() {
                    z += hk * self.readout_w[k * o + j] as f64;
                }
                *dl = z;
            }
            match targets {
                FutureTargets::Bits { targets, mask } => {
                    for (j, dl) in dlogits.iter_mut().enumerate() {
                        let i = row * o + j;
                        let p = 1.0 / (1.0 + (-*dl).exp());
                        *dl = mask[i] as f64 * (p - targets[i] as f64);
                    }
                }
                FutureTargets::Classes(labels) => {
                    let label = labels[row] as usize;
                    if label >= o {
                        dlogits.fill(0.0);
                    } else {
                        let max = dlogits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let sum: f64 = dlogits.iter().map(|z| (z - max).exp()).sum();
                        for (j, dl) in dlogits.iter_mut().enumerate() {
                            *dl = (*dl - max).exp() / sum - (j == label) as u8 as f64;
                        }
                    }
                }
            }
            let dh = &mut dh_seq[row * h..(row + 1) * h];
            for (k, v) in dh.iter_mut().enumerate() {
                *v = (0..o)
                    .map(|j| dlogits[j] * self.readout_w[k * o + j] as f64)
                    .sum();
            }
        }
        let end = bootstrap.map(|discount| {
            let s_end: Vec<f32> = fwd.s_last.iter().map(|&v| v as f32).collect();
            self.sg_model(&s_end)
                .into_iter()
                .map(|v| discount as f64 * v)
                .collect::<Vec<f64>>()
        });
        window_backward(d, p, &x, &fwd, &dh_seq, end.as_deref()).ds0
    }
}

/// Scores a synthetic gradient against the true one (both `[B, 2H]`, per-lane units).
pub fn fidelity(sg: &[f64], truth: &[f64]) -> Fidelity {
    let dot: f64 = sg.iter().zip(truth).map(|(a, b)| a * b).sum();
    let sg_sq: f64 = sg.iter().map(|a| a * a).sum();
    let true_sq: f64 = truth.iter().map(|a| a * a).sum();
    let err_sq: f64 = sg.iter().zip(truth).map(|(a, b)| (a - b) * (a - b)).sum();
    let n = truth.len().max(1) as f64;
    // A zero vector has no direction (cosine 0); a NaN anywhere stays NaN.
    let cosine = if sg_sq == 0.0 || true_sq == 0.0 {
        0.0
    } else {
        dot / (sg_sq.sqrt() * true_sq.sqrt())
    };
    Fidelity {
        cosine,
        explained: if true_sq == 0.0 {
            0.0
        } else {
            explained(err_sq, true_sq).unwrap_or(f64::NAN)
        },
        sg_rms: (sg_sq / n).sqrt(),
        true_rms: (true_sq / n).sqrt(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(h: usize, scale: f32) -> ProbeModel {
        let (i, o, b) = (3, 2, 2);
        let r = |n: usize, k: f32| -> Vec<f32> {
            (0..n)
                .map(|j| ((j as f32 * 0.37 + k).sin()) * 0.5)
                .collect()
        };
        ProbeModel {
            input: i,
            hidden: h,
            output: o,
            batch: b,
            w_x: r(i * 4 * h, 0.1),
            w_h: r(h * 4 * h, 0.2),
            bias: r(4 * h, 0.3),
            readout_w: r(h * o, 0.4),
            readout_b: r(o, 0.5),
            sg_input: SgInput::State,
            sg_w_in: Vec::new(),
            sg_b_in: Vec::new(),
            sg_w: r(4 * h * h, 0.6),
            sg_b: r(2 * h, 0.7),
            sg_scale: scale,
        }
    }

    /// The future gradient is the derivative of the future loss: check it by central differences
    /// of the summed masked cross-entropy.
    #[test]
    fn future_gradient_matches_finite_differences() {
        use dni_kernels::reference::loss::sigmoid_xent_loss;
        let (h, steps) = (3, 4);
        let m = model(h, 1.0);
        let (b, i, o) = (m.batch, m.input, m.output);
        let x: Vec<f32> = (0..steps * b * i).map(|j| (j % 3) as f32 * 0.5).collect();
        let y: Vec<f32> = (0..steps * b * o).map(|j| (j % 2) as f32).collect();
        let mask: Vec<f32> = (0..steps * b * o)
            .map(|j| (j % 5 != 0) as u8 as f32)
            .collect();
        let s: Vec<f32> = (0..b * 2 * h)
            .map(|j| (j as f32 * 0.3).cos() * 0.4)
            .collect();
        let g = m.future_gradient(
            &s,
            &x,
            FutureTargets::Bits {
                targets: &y,
                mask: &mask,
            },
            steps,
        );
        let loss = |s: &[f64]| -> f64 {
            let d = Dims {
                input: i,
                hidden: h,
                batch: b,
                steps,
            };
            let (wx, wh, bi) = (widen(&m.w_x), widen(&m.w_h), widen(&m.bias));
            let p = Params {
                w_x: &wx,
                w_h: &wh,
                bias: &bi,
            };
            let f = window_forward(d, p, &widen(&x), s);
            let mut logits = vec![0.0; steps * b * o];
            for row in 0..steps * b {
                for j in 0..o {
                    logits[row * o + j] = m.readout_b[j] as f64
                        + (0..h)
                            .map(|k| f.h_seq[row * h + k] * m.readout_w[k * o + j] as f64)
                            .sum::<f64>();
                }
            }
            sigmoid_xent_loss(&logits, &y, &mask)
        };
        let base = widen(&s);
        for (k, gk) in g.iter().enumerate() {
            let eps = 1e-5;
            let (mut up, mut dn) = (base.clone(), base.clone());
            up[k] += eps;
            dn[k] -= eps;
            let fd = (loss(&up) - loss(&dn)) / (2.0 * eps);
            assert!(
                (fd - gk).abs() < 1e-6 + 1e-5 * fd.abs(),
                "state {k}: {gk} vs {fd}"
            );
        }
    }

    #[test]
    fn fidelity_scores_direction_and_energy() {
        let truth = [1.0, -2.0, 0.5, 0.0];
        let same = fidelity(&truth, &truth);
        assert!((same.cosine - 1.0).abs() < 1e-12 && (same.explained - 1.0).abs() < 1e-12);
        let half: Vec<f64> = truth.iter().map(|v| 0.5 * v).collect();
        let f = fidelity(&half, &truth);
        assert!((f.cosine - 1.0).abs() < 1e-12);
        assert!((f.explained - 0.75).abs() < 1e-12, "{f:?}");
        let zero = fidelity(&[0.0; 4], &truth);
        assert_eq!((zero.cosine, zero.explained), (0.0, 0.0));
        let nan = fidelity(&[f64::NAN, 0.0, 0.0, 0.0], &truth);
        assert!(nan.cosine.is_nan() && nan.explained.is_nan(), "{nan:?}");
        let neg: Vec<f64> = truth.iter().map(|v| -v).collect();
        let f = fidelity(&neg, &truth);
        assert!((f.cosine + 1.0).abs() < 1e-12 && (f.explained + 3.0).abs() < 1e-12);
    }

    #[test]
    fn injected_sg_is_the_scaled_linear_model() {
        let m = model(2, 0.1);
        let s: Vec<f32> = (0..m.batch * 4).map(|j| j as f32 * 0.25).collect();
        let sg = m.injected_sg(&s);
        for lane in 0..m.batch {
            for j in 0..4 {
                let want: f64 = m.sg_b[j] as f64
                    + (0..4)
                        .map(|k| s[lane * 4 + k] as f64 * m.sg_w[k * 4 + j] as f64)
                        .sum::<f64>();
                assert!((sg[lane * 4 + j] - 0.1 * want).abs() < 1e-9);
            }
        }
    }
}
