//! `matmul`: C = alpha·op(A)·op(B) (+ bias) (+ beta·C).

use bytemuck::{Pod, Zeroable};

use crate::error::{shape_err, Result};
use crate::gpu::Encoder;
use crate::pipeline::{Entry, Kernel, Slot};
use crate::tensor::Tensor;

const SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::ReadWrite,
];
const REG: Entry = Entry::new(Kernel::Matmul, "matmul_reg", SLOTS);
const TILED: Entry = Entry::new(Kernel::Matmul, "matmul_tiled", SLOTS);
const SUBGROUP8: Entry = Entry::new(Kernel::MatmulSubgroup, "matmul_sg8", SLOTS);

/// Every entry point these launchers dispatch, for the contract test.
pub const ENTRIES: &[Entry] = &[REG, TILED, SUBGROUP8];

/// Workgroup shape of `matmul_reg` in invocations (x over columns, y over rows), each computing
/// a 4x4 block of C. Set as the shader's `WG_X`/`WG_Y` overrides from here, so the grid and the
/// shader cannot disagree. 4 x 16 won a rough sweep on lavapipe (see shaders/matmul.wgsl).
const REG_WG: [u32; 2] = [4, 16];

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    alpha: f32,
    beta: f32,
    _pad: [u32; 3],
}

/// Which kernel variant computes the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MatmulVariant {
    /// Register blocking on CPU adapters, workgroup tiles on GPUs.
    #[default]
    Auto,
    /// 4x4 outputs per invocation straight from global memory.
    Register,
    /// 64x64 tiles through workgroup memory.
    Tiled,
    /// 8x16 blocks per 8-wide subgroup, A shared by subgroup broadcasts (needs subgroup size 8;
    /// falls back to `Register` elsewhere).
    Subgroup8,
}

/// Options of one product. `Default` is plain `C = A·B`.
#[derive(Clone, Copy, Debug)]
pub struct Matmul<'a> {
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f32,
    /// When set, `C = … + beta·C` (e.g. accumulate gradients with beta = 1).
    pub beta: Option<f32>,
    /// Row vector of length N added to every row.
    pub bias: Option<&'a Tensor>,
    pub variant: MatmulVariant,
}

impl Default for Matmul<'_> {
    fn default() -> Self {
        Self {
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: None,
            bias: None,
            variant: MatmulVariant::Auto,
        }
    }
}

impl<'a> Matmul<'a> {
    pub fn ta(mut self) -> Self {
        self.trans_a = true;
        self
    }
    pub fn tb(mut self) -> Self {
        self.trans_b = true;
        self
    }
    pub fn bias(mut self, b: &'a Tensor) -> Self {
        self.bias = Some(b);
        self
    }
    pub fn accumulate(mut self, beta: f32) -> Self {
        self.beta = Some(beta);
        self
    }
    pub fn alpha(mut self, alpha: f32) -> Self {
        self.alpha = alpha;
        self
    }
    pub fn variant(mut self, v: MatmulVariant) -> Self {
        self.variant = v;
        self
    }
}

/// Records `C = alpha·op(A)·op(B) (+bias) (+beta·C)`. A, B and C are viewed as matrices (last
/// dimension = columns); shapes are checked and a mismatch is an error.
pub fn matmul(enc: &mut Encoder, a: &Tensor, b: &Tensor, c: &Tensor, o: Matmul<'_>) -> Result<()> {
    let (ar, ac) = a.as_matrix();
    let (br, bc) = b.as_matrix();
    let (m, ka) = if o.trans_a { (ac, ar) } else { (ar, ac) };
    let (kb, n) = if o.trans_b { (bc, br) } else { (br, bc) };
    if ka != kb {
        return shape_err(
            "matmul",
            format!(
                "op(A) is {m}x{ka} but op(B) is {kb}x{n} (A {:?}{}, B {:?}{})",
                a.shape(),
                if o.trans_a { "ᵀ" } else { "" },
                b.shape(),
                if o.trans_b { "ᵀ" } else { "" }
            ),
        );
    }
    if c.as_matrix() != (m, n) {
        return shape_err("matmul", format!("C is {:?}, expected {m}x{n}", c.shape()));
    }
    if let Some(bias) = o.bias {
        if bias.len() != n {
            return shape_err(
                "matmul",
                format!("bias has {} elements, expected {n}", bias.len()),
            );
        }
    }
    let gpu = enc.gpu().clone();
    let sg8 = gpu.subgroup_size() == Some(8);
    let variant = match o.variant {
        MatmulVariant::Auto if gpu.adapter().is_cpu() && sg8 && m.div_ceil(8) <= 65535 => {
            MatmulVariant::Subgroup8
        }
        MatmulVariant::Auto if gpu.adapter().is_cpu() => MatmulVariant::Register,
        MatmulVariant::Auto => MatmulVariant::Tiled,
        // Row blocks go along x (see the shader), limited to 65535 workgroups.
        MatmulVariant::Subgroup8 if !sg8 || m.div_ceil(8) > 65535 => MatmulVariant::Register,
        v => v,
    };
    let params = Params {
        m: m as u32,
        n: n as u32,
        k: ka as u32,
        alpha: o.alpha,
        beta: o.beta.unwrap_or(0.0),
        _pad: [0; 3],
    };
    // The product's shape of computation is fixed per pipeline (the shaders' override constants).
    let flag = |on: bool| on as u8 as f64;
    let mut overrides = vec![
        ("TRANS_A", flag(o.trans_a)),
        ("TRANS_B", flag(o.trans_b)),
        ("ADD_BIAS", flag(o.bias.is_some())),
        ("ACCUMULATE", flag(o.beta.is_some())),
    ];
    let dummy;
    let bias = match o.bias {
        Some(b) => b,
        None => {
            dummy = gpu.dummy()?;
            &dummy
        }
    };
    let (entry, groups) = match variant {
        MatmulVariant::Tiled => (&TILED, [n.div_ceil(64) as u32, m.div_ceil(64) as u32, 1]),
        MatmulVariant::Subgroup8 => (
            &SUBGROUP8,
            [m.div_ceil(8) as u32, n.div_ceil(128) as u32, 1],
        ),
        _ => {
            overrides.push(("WG_X", REG_WG[0] as f64));
            overrides.push(("WG_Y", REG_WG[1] as f64));
            (
                &REG,
                [
                    n.div_ceil(4 * REG_WG[0] as usize) as u32,
                    m.div_ceil(4 * REG_WG[1] as usize) as u32,
                    1,
                ],
            )
        }
    };
    let pipeline = gpu.pipeline_for(entry, &overrides)?;
    let bind = gpu.bind(&pipeline, bytemuck::bytes_of(&params), &[a, b, bias, c])?;
    enc.dispatch(&pipeline, &bind, groups);
    Ok(())
}
