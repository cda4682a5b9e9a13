//! Read-back: copies tensors to the host through a pool of reusable staging buffers.

use super::Gpu;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

impl Gpu {
    /// Copies tensors back to the host in one submission and one wait.
    pub fn read_many(&self, tensors: &[&Tensor]) -> Result<Vec<Vec<f32>>> {
        let mut enc = self
            .inner
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("read-back"),
            });
        let mut stagings = Vec::with_capacity(tensors.len());
        for t in tensors {
            let bytes = t.bytes();
            let staging = self.take_staging(bytes);
            enc.copy_buffer_to_buffer(t.buffer(), 0, &staging, 0, bytes);
            stagings.push(staging);
        }
        self.inner.queue.submit(Some(enc.finish()));
        let (tx, rx) = std::sync::mpsc::channel();
        for (i, (s, t)) in stagings.iter().zip(tensors).enumerate() {
            let tx = tx.clone();
            s.slice(0..t.bytes())
                .map_async(wgpu::MapMode::Read, move |r| {
                    let _ = tx.send((i, r));
                });
        }
        drop(tx);
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::DeviceLost(e.to_string()))?;
        for (_, r) in rx.iter() {
            r.map_err(|e| Error::ReadBack(e.to_string()))?;
        }
        self.check()?;
        let mut out = Vec::with_capacity(tensors.len());
        for (s, t) in stagings.iter().zip(tensors) {
            {
                let view = s
                    .slice(0..t.bytes())
                    .get_mapped_range()
                    .map_err(|e| Error::ReadBack(e.to_string()))?;
                out.push(bytemuck::cast_slice::<u8, f32>(&view)[..t.len()].to_vec());
            } // the view must be dropped before unmap
            s.unmap();
        }
        if let Ok(mut pool) = self.inner.staging.lock() {
            pool.extend(stagings);
        }
        Ok(out)
    }

    /// Copies one tensor back to the host. Explicit and blocking: keep it out of hot loops.
    pub fn read(&self, t: &Tensor) -> Result<Vec<f32>> {
        Ok(self.read_many(&[t])?.remove(0))
    }

    fn take_staging(&self, bytes: u64) -> wgpu::Buffer {
        if let Ok(mut pool) = self.inner.staging.lock() {
            if let Some(i) = pool.iter().position(|b| b.size() >= bytes) {
                return pool.swap_remove(i);
            }
        }
        self.inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("staging"),
            size: bytes.next_power_of_two().max(256),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }
}
