//! `Tensor`: an f32 storage buffer with a shape. Cloning shares the buffer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::Gpu;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

struct Inner {
    buffer: wgpu::Buffer,
    shape: Vec<usize>,
    len: usize,
    id: u64,
}

/// A dense row-major f32 tensor living on the GPU.
#[derive(Clone)]
pub struct Tensor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor#{}{:?}", self.inner.id, self.inner.shape)
    }
}

impl Tensor {
    /// A zero-filled tensor (wgpu zero-initialises new buffers).
    pub fn zeros(gpu: &Gpu, shape: &[usize]) -> Result<Self> {
        // Checked: shapes come from configs and data, and a wrapped product would allocate the wrong size.
        let len = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let bytes = len.and_then(|n| n.checked_mul(4)).map(|b| b as u64);
        let (len, bytes) = match (len, bytes) {
            (Some(0), _) => {
                return Err(Error::Shape {
                    op: "Tensor::zeros",
                    detail: format!("shape {shape:?} has no elements"),
                })
            }
            (Some(len), Some(bytes)) => (len, bytes),
            _ => {
                return Err(Error::Shape {
                    op: "Tensor::zeros",
                    detail: format!(
                        "shape {shape:?} has more elements than this machine can address"
                    ),
                })
            }
        };
        let limit = gpu.limits().max_storage_buffer_binding_size;
        if bytes > limit {
            return Err(Error::TooLarge { bytes, limit });
        }
        let buffer = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Self {
            inner: Arc::new(Inner {
                buffer,
                shape: shape.to_vec(),
                len,
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            }),
        })
    }

    /// A tensor holding `data` (row-major), whose length must match the shape.
    pub fn from_slice(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Result<Self> {
        let t = Self::zeros(gpu, shape)?;
        t.write(gpu, data)?;
        Ok(t)
    }

    /// A tensor from half-precision host data (e.g. f16 checkpoints). Storage stays f32 on the
    /// device: kernels are f32 throughout; `Gpu::has_shader_f16` says whether f16 storage could be
    /// used by future kernels on this adapter.
    pub fn from_f16(gpu: &Gpu, shape: &[usize], data: &[half::f16]) -> Result<Self> {
        let wide: Vec<f32> = data.iter().map(|h| h.to_f32()).collect();
        Self::from_slice(gpu, shape, &wide)
    }

    /// Overwrites the contents. Ordered before the next submission on the queue.
    pub fn write(&self, gpu: &Gpu, data: &[f32]) -> Result<()> {
        if data.len() != self.inner.len {
            return Err(Error::Shape {
                op: "Tensor::write",
                detail: format!(
                    "tensor {:?} holds {} elements, {} given",
                    self.inner.shape,
                    self.inner.len,
                    data.len()
                ),
            });
        }
        gpu.queue()
            .write_buffer(&self.inner.buffer, 0, bytemuck::cast_slice(data));
        Ok(())
    }

    /// Overwrites `data.len()` elements starting at element `offset`.
    pub fn write_at(&self, gpu: &Gpu, offset: usize, data: &[f32]) -> Result<()> {
        match offset.checked_add(data.len()) {
            Some(end) if end <= self.inner.len => {}
            _ => {
                return Err(Error::Shape {
                    op: "Tensor::write_at",
                    detail: format!(
                        "tensor {:?} holds {} elements; {} at offset {offset} do not fit",
                        self.inner.shape,
                        self.inner.len,
                        data.len()
                    ),
                })
            }
        }
        if !data.is_empty() {
            gpu.queue().write_buffer(
                &self.inner.buffer,
                (offset * 4) as u64,
                bytemuck::cast_slice(data),
            );
        }
        Ok(())
    }

    /// Copies to the host (blocking). See [`Gpu::read`].
    pub fn to_vec(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        gpu.read(self)
    }

    pub fn shape(&self) -> &[usize] {
        &self.inner.shape
    }
    pub fn len(&self) -> usize {
        self.inner.len
    }
    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }
    pub fn bytes(&self) -> u64 {
        (self.inner.len * 4) as u64
    }
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.inner.buffer
    }
    /// Unique id, used to key cached bind groups.
    pub fn id(&self) -> u64 {
        self.inner.id
    }
    /// Rows and columns when viewed as a matrix: the last dimension is the columns.
    pub fn as_matrix(&self) -> (usize, usize) {
        let cols = *self.inner.shape.last().unwrap_or(&1);
        (self.inner.len / cols.max(1), cols)
    }

    /// The same buffer under another shape with the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        let len: usize = shape.iter().product();
        if len != self.inner.len {
            return Err(Error::Shape {
                op: "Tensor::reshape",
                detail: format!(
                    "{:?} -> {:?} changes the element count",
                    self.inner.shape, shape
                ),
            });
        }
        // A reshaped view is a new tensor id over the same buffer: wgpu::Buffer is a cheap handle.
        Ok(Self {
            inner: Arc::new(Inner {
                buffer: self.inner.buffer.clone(),
                shape: shape.to_vec(),
                len,
                id: self.inner.id,
            }),
        })
    }
}
