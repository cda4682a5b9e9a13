//! Kernel sources and compiled pipelines. Every kernel family is one WGSL file under `shaders/`,
//! preceded by the shared `shaders/prelude.wgsl` (naga validates each assembled source in a test)
//! and specialised with `override` constants.

/// One WGSL file, i.e. one kernel family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    Matmul,
    MatmulSubgroup,
    Elementwise,
    Reduce,
    Loss,
    BatchNorm,
    Optim,
    Lstm,
    RnnStep,
}

impl Kernel {
    /// Every kernel family, for validation tests and warm-up.
    pub const ALL: [Kernel; 9] = [
        Kernel::Matmul,
        Kernel::MatmulSubgroup,
        Kernel::Elementwise,
        Kernel::Reduce,
        Kernel::Loss,
        Kernel::BatchNorm,
        Kernel::Optim,
        Kernel::Lstm,
        Kernel::RnnStep,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Matmul => "matmul",
            Kernel::MatmulSubgroup => "matmul_subgroup",
            Kernel::Elementwise => "elementwise",
            Kernel::Reduce => "reduce",
            Kernel::Loss => "loss",
            Kernel::BatchNorm => "batchnorm",
            Kernel::Optim => "optim",
            Kernel::Lstm => "lstm",
            Kernel::RnnStep => "rnn_step",
        }
    }

    /// Whether the kernel needs `Features::SUBGROUP` (and so may be absent on some adapters).
    pub fn needs_subgroups(self) -> bool {
        matches!(self, Kernel::MatmulSubgroup | Kernel::RnnStep)
    }

    /// The WGSL source (the prelude, then the kernel's file), compiled into the binary so a
    /// user's program needs no files at run time.
    pub fn source(self) -> &'static str {
        // concat! keeps the assembled source a `&'static str` built at compile time.
        macro_rules! with_prelude {
            ($file:literal) => {
                concat!(
                    include_str!("../../../shaders/prelude.wgsl"),
                    include_str!(concat!("../../../shaders/", $file))
                )
            };
        }
        match self {
            Kernel::Matmul => with_prelude!("matmul.wgsl"),
            Kernel::MatmulSubgroup => with_prelude!("matmul_subgroup.wgsl"),
            Kernel::Elementwise => with_prelude!("elementwise.wgsl"),
            Kernel::Reduce => with_prelude!("reduce.wgsl"),
            Kernel::Loss => with_prelude!("loss.wgsl"),
            Kernel::BatchNorm => with_prelude!("batchnorm.wgsl"),
            Kernel::Optim => with_prelude!("optim.wgsl"),
            Kernel::Lstm => with_prelude!("lstm.wgsl"),
            Kernel::RnnStep => with_prelude!("rnn_step.wgsl"),
        }
    }
}

/// The helpers every kernel source starts with (clamped sigmoid and tanh): functions only.
pub const PRELUDE: &str = include_str!("../../../shaders/prelude.wgsl");

/// What a binding slot holds. A kernel's bind group is: slot 0 the uniform parameters (if any),
/// then its storage buffers in declaration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    Uniform,
    Read,
    ReadWrite,
}

/// One compute entry point and the bind group its launcher binds, slot `i` at `@binding(i)`.
/// Each launcher names its entries through one of these constants, and `tests/shader_contracts.rs`
/// checks every one (see [`crate::ops::entries`]) against naga's reflection of the WGSL, so the
/// Rust side of a kernel's contract is written once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kernel: Kernel,
    pub name: &'static str,
    pub slots: &'static [Slot],
}

impl Entry {
    pub const fn new(kernel: Kernel, name: &'static str, slots: &'static [Slot]) -> Self {
        Self {
            kernel,
            name,
            slots,
        }
    }
}

/// Cache key of a compiled pipeline: (kernel, entry point, override constants).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    kernel: Kernel,
    entry: &'static str,
    overrides: Vec<(&'static str, u64)>,
}

impl PipelineKey {
    pub(crate) fn new(
        kernel: Kernel,
        entry: &'static str,
        overrides: &[(&'static str, f64)],
    ) -> Self {
        Self {
            kernel,
            entry,
            overrides: overrides.iter().map(|(k, v)| (*k, v.to_bits())).collect(),
        }
    }
}

/// A compiled compute pipeline with its bind-group layout.
pub struct Pipeline {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
    pub(crate) slots: &'static [Slot],
    pub(crate) id: u64,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pipeline#{}", self.id)
    }
}
