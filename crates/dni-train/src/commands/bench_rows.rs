//! One line of a benchmark table, shared by every bench producer.

/// A timed workload: `ms_per_step` is the median sample; `per_sec` is the throughput in `unit`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BenchRow {
    /// Workload id and shape, e.g. `W3 T=5`.
    pub workload: String,
    /// What was run, e.g. `bptt` or `dni`.
    pub variant: String,
    pub ms_per_step: f64,
    pub per_sec: f64,
    /// Unit of `per_sec`, e.g. `tokens/s` or `samples/s`.
    pub unit: &'static str,
}
