//! The caches: shader modules, layouts and pipelines (compiled once per key, persisted on disk
//! where the adapter allows), and bind groups keyed by what they bind.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::{Gpu, GpuInner};
use crate::error::{Error, Result};
use crate::pipeline::{Entry, Kernel, Pipeline, PipelineKey, Slot};
use crate::tensor::Tensor;

/// Key of a cached bind group: the pipeline, the uniform bytes and the tensors bound.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct BindKey {
    pipeline: u64,
    params: Vec<u8>,
    tensors: Vec<u64>,
}

/// Bind groups past this count are dropped wholesale: a training run binds a fixed set, so only
/// a program that keeps making new tensors reaches it.
const BIND_CACHE_CAP: usize = 8192;

/// A bind-group layout and the pipeline layout made from it.
pub(super) type Layouts = (wgpu::BindGroupLayout, wgpu::PipelineLayout);

/// Compiled pipelines by key; a cell stays empty while its pipeline compiles (or after it failed).
pub(super) type PipelineCache = HashMap<PipelineKey, Arc<Mutex<Option<Arc<Pipeline>>>>>;

/// Writes the compiled pipelines back to the disk cache when the last handle goes.
impl Drop for GpuInner {
    fn drop(&mut self) {
        if let Some((cache, path)) = &self.disk_cache {
            if self.pipelines_compiled.load(Ordering::Relaxed) > 0 {
                if let Some(data) = cache.get_data() {
                    // Best effort: a cache that cannot be written only costs compile time later.
                    let tmp = path.with_extension("tmp");
                    if std::fs::write(&tmp, data).is_ok() {
                        let _ = std::fs::rename(&tmp, path);
                    }
                }
            }
        }
    }
}

impl Gpu {
    /// Number of distinct pipelines compiled so far (lavapipe compiles each with LLVM).
    pub fn pipelines_compiled(&self) -> u64 {
        self.inner.pipelines_compiled.load(Ordering::Relaxed)
    }

    /// Number of bind groups in the cache: constant across the steady-state steps of a training loop.
    pub fn bind_groups_cached(&self) -> usize {
        self.inner.bind_groups.lock().map_or(0, |c| c.len())
    }

    /// The compiled pipeline for (kernel, entry, overrides), compiled on first use.
    pub fn pipeline(
        &self,
        kernel: Kernel,
        entry: &'static str,
        overrides: &[(&'static str, f64)],
        slots: &'static [Slot],
    ) -> Result<Arc<Pipeline>> {
        let key = PipelineKey::new(kernel, entry, overrides);
        // One cell per key, made under the map lock and filled under its own lock: threads that
        // ask for the same pipeline at once wait for a single compile (lavapipe compiles with
        // LLVM, seconds each), while other pipelines compile in parallel.
        let cell = self.lock_pipelines()?.entry(key).or_default().clone();
        let mut slot = cell
            .lock()
            .map_err(|_| Error::Validation("pipeline cache poisoned".into()))?;
        if let Some(p) = slot.as_ref() {
            return Ok(p.clone());
        }
        let p = Arc::new(self.compile(kernel, entry, overrides, slots)?);
        self.inner
            .pipelines_compiled
            .fetch_add(1, Ordering::Relaxed);
        *slot = Some(p.clone());
        Ok(p)
    }

    /// The compiled pipeline of `entry` (its kernel, name and bind-group slots).
    pub fn pipeline_for(
        &self,
        entry: &Entry,
        overrides: &[(&'static str, f64)],
    ) -> Result<Arc<Pipeline>> {
        self.pipeline(entry.kernel, entry.name, overrides, entry.slots)
    }

    fn compile(
        &self,
        kernel: Kernel,
        entry: &'static str,
        overrides: &[(&'static str, f64)],
        slots: &'static [Slot],
    ) -> Result<Pipeline> {
        let module = self.module(kernel)?;
        let (bgl, layout) = {
            let mut layouts = self
                .inner
                .layouts
                .lock()
                .map_err(|_| Error::Validation("layout cache poisoned".into()))?;
            layouts
                .entry(slots.to_vec())
                .or_insert_with(|| Arc::new(make_layout(&self.inner.device, slots)))
                .clone()
                .as_ref()
                .clone()
        };
        let scope = self
            .inner
            .device
            .push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline =
            self.inner
                .device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(entry),
                    layout: Some(&layout),
                    module: &module,
                    entry_point: Some(entry),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: overrides,
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: self.inner.disk_cache.as_ref().map(|(c, _)| c),
                });
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(Error::Shader {
                kernel: kernel.name(),
                entry: format!("{entry} {overrides:?}"),
                message: err.to_string(),
            });
        }
        Ok(Pipeline {
            pipeline,
            layout: bgl,
            slots,
            id: self.inner.next_pipeline_id.fetch_add(1, Ordering::Relaxed),
        })
    }

    fn lock_pipelines(&self) -> Result<std::sync::MutexGuard<'_, PipelineCache>> {
        self.inner
            .pipelines
            .lock()
            .map_err(|_| Error::Validation("pipeline cache poisoned".into()))
    }

    fn module(&self, kernel: Kernel) -> Result<Arc<wgpu::ShaderModule>> {
        let mut modules = self
            .inner
            .modules
            .lock()
            .map_err(|_| Error::Validation("module cache poisoned".into()))?;
        if let Some(m) = modules.get(&kernel) {
            return Ok(m.clone());
        }
        let scope = self
            .inner
            .device
            .push_error_scope(wgpu::ErrorFilter::Validation);
        let m = self
            .inner
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(kernel.name()),
                source: wgpu::ShaderSource::Wgsl(kernel.source().into()),
            });
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(Error::Shader {
                kernel: kernel.name(),
                entry: "(module)".into(),
                message: err.to_string(),
            });
        }
        let m = Arc::new(m);
        modules.insert(kernel, m.clone());
        Ok(m)
    }

    /// The bind group for `pipeline` with `params` in the uniform slot (if it has one) and
    /// `tensors` in the storage slots, in order. Cached by what it binds, so a training step
    /// that binds the same buffers every time creates nothing.
    pub fn bind(
        &self,
        pipeline: &Pipeline,
        params: &[u8],
        tensors: &[&Tensor],
    ) -> Result<Arc<wgpu::BindGroup>> {
        let storage_slots = pipeline
            .slots
            .iter()
            .filter(|s| **s != Slot::Uniform)
            .count();
        if storage_slots != tensors.len() {
            return Err(Error::Validation(format!(
                "pipeline expects {storage_slots} buffers, {} given",
                tensors.len()
            )));
        }
        let key = BindKey {
            pipeline: pipeline.id,
            params: params.to_vec(),
            tensors: tensors.iter().map(|t| t.id()).collect(),
        };
        let mut cache = self
            .inner
            .bind_groups
            .lock()
            .map_err(|_| Error::Validation("bind-group cache poisoned".into()))?;
        if let Some(bg) = cache.get(&key) {
            return Ok(bg.clone());
        }
        if cache.len() >= BIND_CACHE_CAP {
            cache.clear();
        }
        let uniform = if pipeline.slots.contains(&Slot::Uniform) {
            use wgpu::util::DeviceExt;
            // Uniform buffers must be at least 16 bytes on some backends; pad.
            let mut bytes = params.to_vec();
            bytes.resize(bytes.len().div_ceil(16).max(1) * 16, 0);
            Some(
                self.inner
                    .device
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some("params"),
                        contents: &bytes,
                        usage: wgpu::BufferUsages::UNIFORM,
                    }),
            )
        } else {
            None
        };
        let mut entries = Vec::with_capacity(pipeline.slots.len());
        let mut next_tensor = tensors.iter();
        for (i, slot) in pipeline.slots.iter().enumerate() {
            let resource = match slot {
                Slot::Uniform => uniform
                    .as_ref()
                    .map(|u| u.as_entire_binding())
                    .ok_or_else(|| Error::Validation("uniform missing".into()))?,
                _ => next_tensor
                    .next()
                    .map(|t| t.buffer().as_entire_binding())
                    .ok_or_else(|| Error::Validation("too few tensors".into()))?,
            };
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32,
                resource,
            });
        }
        let bg = Arc::new(
            self.inner
                .device
                .create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &pipeline.layout,
                    entries: &entries,
                }),
        );
        cache.insert(key, bg.clone());
        Ok(bg)
    }

    /// Drops every cached bind group (and the tensors they keep alive).
    pub fn clear_bind_groups(&self) {
        if let Ok(mut c) = self.inner.bind_groups.lock() {
            c.clear();
        }
    }
}

fn make_layout(
    device: &wgpu::Device,
    slots: &[Slot],
) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
    let entries: Vec<_> = slots
        .iter()
        .enumerate()
        .map(|(i, s)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: match s {
                Slot::Uniform => wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                Slot::Read => wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: true },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                Slot::ReadWrite => wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: false },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
            },
            count: None,
        })
        .collect();
    let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: None,
        entries: &entries,
    });
    let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: None,
        bind_group_layouts: &[Some(&bgl)],
        immediate_size: 0,
    });
    (bgl, layout)
}

pub(super) fn open_disk_cache(
    device: &wgpu::Device,
    info: &wgpu::AdapterInfo,
    dir: Option<PathBuf>,
) -> Option<(wgpu::PipelineCache, PathBuf)> {
    let dir = dir
        .or_else(|| std::env::var_os("DNI_CACHE_DIR").map(PathBuf::from))
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("dni")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/dni")))?;
    let name = wgpu::util::pipeline_cache_key(info)?;
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(name);
    let data = std::fs::read(&path).ok();
    // SAFETY: the data was written by `get_data` of a cache for an adapter with the same
    // `pipeline_cache_key`; wgpu validates the header and falls back when it does not match.
    let cache = unsafe {
        device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
            label: Some("dni"),
            data: data.as_deref(),
            fallback: true,
        })
    };
    Some((cache, path))
}
