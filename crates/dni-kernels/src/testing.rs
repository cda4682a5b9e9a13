//! Helpers for tests of this crate and of crates built on it: a shared GPU that fails loudly when
//! absent, a NaN-aware tolerance check, and a tiny deterministic generator.

use std::sync::OnceLock;

use crate::gpu::{Gpu, GpuOptions};

/// The process-wide test GPU (honours `WGPU_BACKEND`). Panics with the fix when there is none:
/// a GPU test that skips itself would pass without testing anything.
pub fn gpu() -> Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| match Gpu::new(&GpuOptions::default()) {
        Ok(g) => {
            eprintln!("test adapter: {}", g.adapter());
            g
        }
        Err(e) => panic!(
            "GPU tests need a wgpu adapter: {e}\n\
             fix: run scripts/install-lavapipe.sh (as root) or `apt-get install mesa-vulkan-drivers`"
        ),
    })
    .clone()
}

/// Asserts `|got - want| <= atol + rtol·|want|` element-wise; NaN or infinity anywhere fails.
pub fn assert_close(got: &[f32], want: &[f32], rtol: f32, atol: f32, what: &str) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    let mut worst = (0usize, 0.0f32);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.is_finite(),
            "{what}: got[{i}] = {g} is not finite (want {w})"
        );
        assert!(w.is_finite(), "{what}: reference[{i}] = {w} is not finite");
        let err = (g - w).abs();
        let excess = err - (atol + rtol * w.abs());
        if excess > worst.1 {
            worst = (i, excess);
        }
    }
    let (i, excess) = worst;
    assert!(
        excess <= 0.0,
        "{what}: element {i} got {} want {} (|err| {} > atol {atol} + rtol {rtol}·|want|)",
        got[i],
        want[i],
        (got[i] - want[i]).abs()
    );
}

/// SplitMix64: deterministic test data without a dependency.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn sym(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.sym()).collect()
    }
}
