//! Kernel sources and compiled pipelines. Every kernel family is one WGSL file under `shaders/`,
//! valid on its own (naga validates each in a test), specialised with `override` constants.

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

    /// The WGSL source, compiled into the binary so a user's program needs no files at run time.
    pub fn source(self) -> &'static str {
        match self {
            Kernel::Matmul => include_str!("../../../shaders/matmul.wgsl"),
            Kernel::MatmulSubgroup => include_str!("../../../shaders/matmul_subgroup.wgsl"),
            Kernel::Elementwise => include_str!("../../../shaders/elementwise.wgsl"),
            Kernel::Reduce => include_str!("../../../shaders/reduce.wgsl"),
            Kernel::Loss => include_str!("../../../shaders/loss.wgsl"),
            Kernel::BatchNorm => include_str!("../../../shaders/batchnorm.wgsl"),
            Kernel::Optim => include_str!("../../../shaders/optim.wgsl"),
            Kernel::Lstm => include_str!("../../../shaders/lstm.wgsl"),
            Kernel::RnnStep => include_str!("../../../shaders/rnn_step.wgsl"),
        }
    }
}

/// What a binding slot holds. A kernel's bind group is: slot 0 the uniform parameters (if any),
/// then its storage buffers in declaration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    Uniform,
    Read,
    ReadWrite,
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
