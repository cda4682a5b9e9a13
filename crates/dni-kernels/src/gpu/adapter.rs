//! Adapter choice: which graphics API, which adapter (discrete GPU first, software last), and
//! how to describe it in logs.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Which graphics API to run on. `Auto` honours `WGPU_BACKEND` and otherwise tries them all.
/// Written in configs as `auto`, `vulkan`, `metal`, `dx12`, `gl` (the `serde` feature).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
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
    /// Every choice, by its config name.
    pub const NAMES: [&'static str; 5] = ["auto", "vulkan", "metal", "dx12", "gl"];

    pub(super) fn backends(self) -> wgpu::Backends {
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
    pub(super) fn from_info(info: &wgpu::AdapterInfo) -> Self {
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

/// The adapter [`Gpu::new`](super::Gpu::new) opens: the best ranked of those matching `opts`.
pub(super) fn choose_adapter(opts: &GpuOptions) -> Result<wgpu::Adapter> {
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
    Ok(adapter)
}
