//! `Gpu`: the one context, built once and shared. It owns the device and queue, the pipeline and
//! bind-group caches, the staging-buffer pool, and turns wgpu's asynchronous errors into `Result`s.
//!
//! Split by job: `adapter` picks the adapter, `cache` holds the module, layout, pipeline and
//! bind-group caches, `encoder` records work, `readback` copies results to the host.

mod adapter;
mod cache;
mod encoder;
mod readback;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

pub use adapter::{list_adapters, AdapterReport, BackendChoice, GpuOptions};
pub use encoder::{grid_1d, Encoder};

use crate::error::{Error, Result};
use crate::pipeline::{Kernel, Slot};
use crate::tensor::Tensor;
use adapter::choose_adapter;
use cache::{open_disk_cache, BindKey, Layouts, PipelineCache};

pub(crate) struct GpuInner {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    report: AdapterReport,
    limits: wgpu::Limits,
    subgroup_size: Option<u32>,
    adapter_f16: bool,
    modules: Mutex<HashMap<Kernel, Arc<wgpu::ShaderModule>>>,
    layouts: Mutex<HashMap<Vec<Slot>, Arc<Layouts>>>,
    pipelines: Mutex<PipelineCache>,
    bind_groups: Mutex<HashMap<BindKey, Arc<wgpu::BindGroup>>>,
    staging: Mutex<Vec<wgpu::Buffer>>,
    errors: Arc<Mutex<Vec<Error>>>,
    disk_cache: Option<(wgpu::PipelineCache, PathBuf)>,
    next_pipeline_id: AtomicU64,
    pipelines_compiled: AtomicU64,
    dummy: Mutex<Option<Tensor>>,
}

/// The GPU context. Cheap to clone (a shared handle); build it once with [`Gpu::new`].
#[derive(Clone)]
pub struct Gpu {
    pub(crate) inner: Arc<GpuInner>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu({})", self.inner.report)
    }
}

impl Gpu {
    /// Opens the best adapter that matches `opts` (discrete GPU first, software last).
    pub fn new(opts: &GpuOptions) -> Result<Self> {
        let adapter = choose_adapter(opts)?;
        let info = adapter.get_info();
        let report = AdapterReport::from_info(&info);

        let use_disk_cache = adapter.features().contains(wgpu::Features::PIPELINE_CACHE)
            && std::env::var("DNI_PIPELINE_CACHE").map_or(true, |v| v != "0");
        let mut features = wgpu::Features::empty();
        if use_disk_cache {
            features |= wgpu::Features::PIPELINE_CACHE;
        }
        // Subgroup kernels are an optional fast path (CPU adapters with 8-wide subgroups).
        let subgroup_size = if adapter.features().contains(wgpu::Features::SUBGROUP)
            && std::env::var("DNI_SUBGROUPS").map_or(true, |v| v != "0")
        {
            features |= wgpu::Features::SUBGROUP;
            (info.subgroup_min_size == info.subgroup_max_size).then_some(info.subgroup_min_size)
        } else {
            None
        };
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("dni"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|source| Error::RequestDevice {
            adapter: report.name.clone(),
            source,
        })?;

        let errors: Arc<Mutex<Vec<Error>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(convert_error(e));
            }
        }));
        let sink = errors.clone();
        device.set_device_lost_callback(move |reason, message| {
            // Dropping the device on purpose also "loses" it; only report real losses.
            if reason != wgpu::DeviceLostReason::Destroyed {
                if let Ok(mut v) = sink.lock() {
                    v.push(Error::DeviceLost(format!("{reason:?}: {message}")));
                }
            }
        });

        let disk_cache = if use_disk_cache {
            open_disk_cache(&device, &info, opts.cache_dir.clone())
        } else {
            None
        };

        Ok(Self {
            inner: Arc::new(GpuInner {
                device,
                queue,
                report,
                limits,
                subgroup_size,
                adapter_f16: adapter.features().contains(wgpu::Features::SHADER_F16),
                modules: Mutex::default(),
                layouts: Mutex::default(),
                pipelines: Mutex::default(),
                bind_groups: Mutex::default(),
                staging: Mutex::default(),
                errors,
                disk_cache,
                next_pipeline_id: AtomicU64::new(1),
                pipelines_compiled: AtomicU64::new(0),
                dummy: Mutex::default(),
            }),
        })
    }

    /// The default context: `WGPU_BACKEND` / `WGPU_ADAPTER_NAME` honoured, best adapter first.
    pub fn default_adapter() -> Result<Self> {
        Self::new(&GpuOptions::default())
    }

    pub fn adapter(&self) -> &AdapterReport {
        &self.inner.report
    }
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }
    /// Whether the adapter offers `SHADER_F16` (f16 arithmetic and storage in WGSL).
    pub fn has_shader_f16(&self) -> bool {
        self.inner.adapter_f16
    }

    /// The subgroup size when subgroups are enabled and the size is fixed (8 on lavapipe/AVX2).
    pub fn subgroup_size(&self) -> Option<u32> {
        self.inner.subgroup_size
    }

    /// Returns the first asynchronous error wgpu reported since the last check, if any.
    pub fn check(&self) -> Result<()> {
        let mut errs = self
            .inner
            .errors
            .lock()
            .map_err(|_| Error::Validation("error sink poisoned".into()))?;
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.remove(0))
        }
    }

    /// A new command recorder. Dispatches recorded into it run in order.
    pub fn encoder(&self) -> Encoder {
        Encoder::new(self.clone())
    }

    /// Submits recorded work without waiting for it.
    pub fn submit(&self, enc: Encoder) -> wgpu::SubmissionIndex {
        let cb = enc.finish();
        self.inner.queue.submit(Some(cb))
    }

    /// Blocks until the queue is idle, then reports any error the device raised.
    pub fn sync(&self) -> Result<()> {
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::DeviceLost(e.to_string()))?;
        self.check()
    }

    /// A one-element buffer to bind where a kernel's optional input is absent.
    pub(crate) fn dummy(&self) -> Result<Tensor> {
        let mut d = self
            .inner
            .dummy
            .lock()
            .map_err(|_| Error::Validation("dummy lock poisoned".into()))?;
        if let Some(t) = d.as_ref() {
            return Ok(t.clone());
        }
        let t = Tensor::zeros(self, &[1])?;
        *d = Some(t.clone());
        Ok(t)
    }
}

fn convert_error(e: wgpu::Error) -> Error {
    match e {
        wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory(e.to_string()),
        other => Error::Validation(other.to_string()),
    }
}
