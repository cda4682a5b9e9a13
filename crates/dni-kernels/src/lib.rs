//! # dni-kernels
//!
//! The GPU runtime and WGSL kernel library of dni. Build one [`Gpu`], make [`Tensor`]s, record
//! kernels into an [`Encoder`] with the launchers in [`ops`], submit, and read back only when a
//! metric is needed. Every kernel has a CPU twin in [`reference`] that the tests compare against.
//!
//! ```no_run
//! use dni_kernels::{Gpu, Tensor, ops::matmul::{matmul, Matmul}};
//! let gpu = Gpu::default_adapter()?;
//! let a = Tensor::from_slice(&gpu, &[2, 3], &[1., 2., 3., 4., 5., 6.])?;
//! let b = Tensor::from_slice(&gpu, &[3, 1], &[1., 1., 1.])?;
//! let c = Tensor::zeros(&gpu, &[2, 1])?;
//! let mut enc = gpu.encoder();
//! matmul(&mut enc, &a, &b, &c, Matmul::default())?;
//! gpu.submit(enc);
//! assert_eq!(gpu.read(&c)?, vec![6., 15.]);
//! # Ok::<(), dni_kernels::Error>(())
//! ```

pub mod bench;
pub mod error;
pub mod gpu;
pub mod ops;
pub mod pipeline;
pub mod reference;
pub mod tensor;
pub mod testing;

pub use error::{Error, Result};
pub use gpu::{grid_1d, list_adapters, AdapterReport, BackendChoice, Encoder, Gpu, GpuOptions};
pub use pipeline::{Entry, Kernel, Slot};
pub use tensor::Tensor;
