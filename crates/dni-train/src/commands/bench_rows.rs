//! One line of a benchmark table, shared by every bench producer.

/// A timed workload: `ms_per_step` is the median sample; `per_sec` is the throughput in `unit`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct BenchRow {
    /// Workload id and shape, e.g. `W3 T=5`.
    pub workload: String,
    /// What was run, e.g. `bptt` or `dni-fused`.
    pub variant: String,
    /// How a sample was timed (`sync`: one step then a read-back; `stream`: many steps then one
    /// read-back); empty where there is one way.
    pub mode: &'static str,
    pub ms_per_step: f64,
    pub per_sec: f64,
    /// Unit of `per_sec`, e.g. `tokens/s` or `samples/s`.
    pub unit: &'static str,
    pub tokens_per_sec: Option<f64>,
    /// Dispatches one step records, where known.
    pub dispatches: Option<usize>,
    /// Independent runs trained by one step (a run group), 0 where it does not apply.
    pub runs: usize,
}

impl BenchRow {
    /// The machine-readable line: `RESULT workload=W5 variant=dni-fused mode=sync ...`.
    pub fn result_line(&self) -> String {
        let mut s = format!(
            "RESULT workload={} variant={}",
            self.workload.replace(' ', "_").replace('=', ""),
            self.variant
        );
        if !self.mode.is_empty() {
            s.push_str(&format!(" mode={}", self.mode));
        }
        if self.unit == "windows/s" {
            s.push_str(&format!(
                " ms_per_window={:.4} windows_per_s={:.1}",
                self.ms_per_step, self.per_sec
            ));
        } else {
            s.push_str(&format!(
                " ms_per_step={:.4} {}={:.1}",
                self.ms_per_step,
                self.unit.replace('/', "_per_"),
                self.per_sec
            ));
        }
        if let Some(t) = self.tokens_per_sec {
            s.push_str(&format!(" tokens_per_s={t:.0}"));
        }
        if let Some(d) = self.dispatches {
            s.push_str(&format!(" dispatches_per_window={d}"));
        }
        if self.runs > 0 {
            s.push_str(&format!(" runs={}", self.runs));
        }
        s
    }
}
