//! The one policy for how far the host may queue work ahead of the GPU: every trainer records its
//! submissions here, and once [`MAX_IN_FLIGHT`] are pending it waits for the oldest before going on.

use std::collections::VecDeque;

use dni_kernels::{Error, Gpu, Result};

/// Submissions pending before the host waits for the oldest. Deep enough that the GPU never starves
/// between small submissions (one recurrent window can be well under a millisecond of GPU work), and
/// shallow enough that a caller who never reads results cannot queue unbounded uploads and command
/// buffers (a few tens of MB at the largest batch we run).
pub(crate) const MAX_IN_FLIGHT: usize = 64;

/// The submissions the host has queued that the GPU may not have finished.
pub(crate) struct InFlight {
    pending: VecDeque<wgpu::SubmissionIndex>,
    cap: usize,
}

impl Default for InFlight {
    fn default() -> Self {
        Self::with_cap(MAX_IN_FLIGHT)
    }
}

impl InFlight {
    /// A smaller cap where a structure bounds it anyway (the threaded feeder's data ring: waiting
    /// for more submissions than it has buffers would never let one come back).
    pub fn with_cap(cap: usize) -> Self {
        Self {
            pending: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Before queueing another submission: waits for the oldest one if the cap is reached. Returns
    /// whether it waited (the feed-forward trainers count those waits).
    pub fn make_room(&mut self, gpu: &Gpu) -> Result<bool> {
        if self.pending.len() < self.cap {
            return Ok(false);
        }
        let Some(oldest) = self.pending.pop_front() else {
            return Ok(false);
        };
        gpu.device()
            .poll(wgpu::PollType::Wait {
                submission_index: Some(oldest),
                timeout: None,
            })
            .map_err(|e| Error::DeviceLost(e.to_string()))?;
        Ok(true)
    }

    /// Records a submission.
    pub fn push(&mut self, idx: wgpu::SubmissionIndex) {
        self.pending.push_back(idx);
    }

    /// Records a submission already queued, then makes room for the next one.
    pub fn submitted(&mut self, gpu: &Gpu, idx: wgpu::SubmissionIndex) -> Result<()> {
        self.push(idx);
        if self.pending.len() > self.cap {
            self.make_room(gpu)?;
        }
        Ok(())
    }

    /// Forgets every pending submission: the caller has just waited for the whole queue.
    pub fn clear(&mut self) {
        self.pending.clear();
    }
}
