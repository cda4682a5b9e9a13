//! `Gpu`: the one context, built once and shared. It owns the device and queue, the pipeline and
//! bind-group caches, the staging-buffer pool, and turns wgpu's asynchronous errors into `Result`s.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::pipeline::{Entry, Kernel, Pipeline, PipelineKey, Slot};
use crate::tensor::Tensor;

/// Which graphics API to run on. `Auto` honours `WGPU_BACKEND` and otherwise tries them all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendChoice {
    #[default]
    Auto,
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

impl std::str::FromStr for BackendChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(Self::Auto),
            "vulkan" | "vk" => Ok(Self::Vulkan),
            "metal" | "mtl" => Ok(Self::Metal),
            "dx12" | "d3d12" => Ok(Self::Dx12),
            "gl" | "gles" | "opengl" => Ok(Self::Gl),
            other => Err(Error::UnknownBackend(other.to_string())),
        }
    }
}

impl BackendChoice {
    fn backends(self) -> wgpu::Backends {
        match self {
            Self::Auto => wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all()),
            Self::Vulkan => wgpu::Backends::VULKAN,
            Self::Metal => wgpu::Backends::METAL,
            Self::Dx12 => wgpu::Backends::DX12,
            Self::Gl => wgpu::Backends::GL,
        }
    }
}

/// How to pick an adapter.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    pub backend: BackendChoice,
    /// Case-insensitive substring of the adapter name; `None` reads `WGPU_ADAPTER_NAME`.
    pub adapter_name: Option<String>,
    /// Where compiled pipelines are persisted when the adapter supports it; `None` uses
    /// `DNI_CACHE_DIR`, else `$XDG_CACHE_HOME/dni`, else `$HOME/.cache/dni`. Set
    /// `DNI_PIPELINE_CACHE=0` to turn the disk cache off.
    pub cache_dir: Option<PathBuf>,
}

/// What the adapter is, for logs and benchmark reports.
#[derive(Clone, Debug)]
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
}

impl AdapterReport {
    fn from_info(info: &wgpu::AdapterInfo) -> Self {
        Self {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
        }
    }

    /// True for software rasterisers such as lavapipe / llvmpipe, which want different tiles.
    pub fn is_cpu(&self) -> bool {
        self.device_type == "Cpu"
    }
}

impl std::fmt::Display for AdapterReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {}", self.name, self.backend, self.device_type)?;
        if !self.driver.is_empty() {
            write!(f, ", {} {}", self.driver, self.driver_info)?;
        }
        write!(f, ")")
    }
}

/// Lists every adapter wgpu can see on the chosen backends.
pub fn list_adapters(backend: BackendChoice) -> Vec<AdapterReport> {
    let instance = make_instance(backend);
    let adapters = pollster::block_on(instance.enumerate_adapters(backend.backends()));
    adapters
        .iter()
        .map(|a| AdapterReport::from_info(&a.get_info()))
        .collect()
}

fn make_instance(backend: BackendChoice) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backend.backends();
    desc.flags = wgpu::InstanceFlags::from_env_or_default();
    wgpu::Instance::new(desc)
}

fn device_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

/// Key of a cached bind group: the pipeline, the uniform bytes and the tensors bound.
#[derive(Clone, PartialEq, Eq, Hash)]
struct BindKey {
    pipeline: u64,
    params: Vec<u8>,
    tensors: Vec<u64>,
}

/// Bind groups past this count are dropped wholesale: a training run binds a fixed set, so only
/// a program that keeps making new tensors reaches it.
const BIND_CACHE_CAP: usize = 8192;

/// A bind-group layout and the pipeline layout made from it.
type Layouts = (wgpu::BindGroupLayout, wgpu::PipelineLayout);

/// Compiled pipelines by key; a cell stays empty while its pipeline compiles (or after it failed).
type PipelineCache = HashMap<PipelineKey, Arc<Mutex<Option<Arc<Pipeline>>>>>;

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
        let instance = make_instance(opts.backend);
        let adapters = pollster::block_on(instance.enumerate_adapters(opts.backend.backends()));
        let filter = opts
            .adapter_name
            .clone()
            .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok())
            .map(|s| s.to_lowercase());
        let seen: Vec<String> = adapters
            .iter()
            .map(|a| AdapterReport::from_info(&a.get_info()).to_string())
            .collect();
        let adapter = adapters
            .into_iter()
            .filter(|a| match &filter {
                Some(f) => a.get_info().name.to_lowercase().contains(f),
                None => true,
            })
            .min_by_key(|a| device_rank(a.get_info().device_type));
        let Some(adapter) = adapter else {
            let mut detail = format!(" for backend {:?}", opts.backend);
            if let Some(f) = &filter {
                detail.push_str(&format!(" whose name contains '{f}'"));
            }
            if !seen.is_empty() {
                detail.push_str(&format!(" (adapters present: {})", seen.join("; ")));
            }
            return Err(Error::NoAdapter(detail));
        };
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

    /// Number of distinct pipelines compiled so far (lavapipe compiles each with LLVM).
    pub fn pipelines_compiled(&self) -> u64 {
        self.inner.pipelines_compiled.load(Ordering::Relaxed)
    }

    /// Number of bind groups in the cache: constant across the steady-state steps of a training loop.
    pub fn bind_groups_cached(&self) -> usize {
        self.inner.bind_groups.lock().map_or(0, |c| c.len())
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

fn convert_error(e: wgpu::Error) -> Error {
    match e {
        wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory(e.to_string()),
        other => Error::Validation(other.to_string()),
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

fn open_disk_cache(
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

/// Records dispatches into one command buffer. All dispatches share one compute pass until a copy
/// needs the encoder; wgpu inserts the barriers between dependent dispatches.
pub struct Encoder {
    gpu: Gpu,
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    dispatches: usize,
}

impl Encoder {
    fn new(gpu: Gpu) -> Self {
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
