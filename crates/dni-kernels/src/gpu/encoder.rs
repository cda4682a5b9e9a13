//! `Encoder`: records dispatches and copies into one command buffer.

use super::Gpu;
use crate::error::Result;
use crate::pipeline::Pipeline;
use crate::tensor::Tensor;

/// Records dispatches into one command buffer. All dispatches share one compute pass until a copy
/// needs the encoder; wgpu inserts the barriers between dependent dispatches.
pub struct Encoder {
    gpu: Gpu,
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    dispatches: usize,
}

impl Encoder {
    pub(super) fn new(gpu: Gpu) -> Self {
        let encoder = gpu
            .inner
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        Self {
            gpu,
            encoder: Some(encoder),
            pass: None,
            dispatches: 0,
        }
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// How many dispatches were recorded.
    pub fn dispatches(&self) -> usize {
        self.dispatches
    }

    /// Records one dispatch of `pipeline` over `groups` workgroups.
    pub fn dispatch(&mut self, pipeline: &Pipeline, bind: &wgpu::BindGroup, groups: [u32; 3]) {
        if groups.contains(&0) {
            return;
        }
        if self.pass.is_none() {
            if let Some(enc) = self.encoder.as_mut() {
                self.pass = Some(
                    enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default())
                        .forget_lifetime(),
                );
            }
        }
        if let Some(pass) = self.pass.as_mut() {
            pass.set_pipeline(&pipeline.pipeline);
            pass.set_bind_group(0, bind, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
            self.dispatches += 1;
        }
    }

    /// Copies `src` into `dst` (same length).
    pub fn copy(&mut self, src: &Tensor, dst: &Tensor) -> Result<()> {
        if src.len() != dst.len() {
            return crate::error::shape_err(
                "copy",
                format!(
                    "source has {} elements, destination {}",
                    src.len(),
                    dst.len()
                ),
            );
        }
        self.pass = None;
        if let Some(enc) = self.encoder.as_mut() {
            enc.copy_buffer_to_buffer(src.buffer(), 0, dst.buffer(), 0, src.bytes());
        }
        Ok(())
    }

    /// Copies `count` elements from `src[src_offset..]` to `dst[dst_offset..]` (offsets in
    /// elements): how a row range of one tensor (one time step of a window) moves to another.
    pub fn copy_region(
        &mut self,
        src: &Tensor,
        src_offset: usize,
        dst: &Tensor,
        dst_offset: usize,
        count: usize,
    ) -> Result<()> {
        if src_offset + count > src.len() || dst_offset + count > dst.len() {
            return crate::error::shape_err(
                "copy_region",
                format!(
                    "{count} elements from offset {src_offset} of {:?} to offset {dst_offset} of {:?} run past the end",
                    src.shape(),
                    dst.shape()
                ),
            );
        }
        self.pass = None;
        if let Some(enc) = self.encoder.as_mut() {
            enc.copy_buffer_to_buffer(
                src.buffer(),
                (src_offset * 4) as u64,
                dst.buffer(),
                (dst_offset * 4) as u64,
                (count * 4) as u64,
            );
        }
        Ok(())
    }

    /// Zeroes a tensor.
    pub fn clear(&mut self, t: &Tensor) {
        self.pass = None;
        if let Some(enc) = self.encoder.as_mut() {
            enc.clear_buffer(t.buffer(), 0, None);
        }
    }

    /// Ends recording.
    pub fn finish(mut self) -> wgpu::CommandBuffer {
        self.pass = None;
        match self.encoder.take() {
            Some(e) => e.finish(),
            None => self
                .gpu
                .inner
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor::default())
                .finish(),
        }
    }
}

/// Workgroup counts for `n` items at `per_group` items per workgroup, folded into two dimensions
/// when one would exceed the 65535 limit. Kernels rebuild the index from `num_workgroups`.
pub fn grid_1d(n: usize, per_group: u32) -> [u32; 3] {
    let groups = (n as u64).div_ceil(per_group as u64).max(1);
    if groups <= 65535 {
        [groups as u32, 1, 1]
    } else {
        let y = groups.div_ceil(65535);
        [groups.div_ceil(y) as u32, y as u32, 1]
    }
}
