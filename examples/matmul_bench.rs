//! Quick W1 check: `cargo run --release -p dni-kernels --example matmul_bench [n...]`.
use dni_kernels::ops::matmul::MatmulVariant;
use dni_kernels::{bench, Gpu};

fn main() -> Result<(), dni_kernels::Error> {
    let gpu = Gpu::default_adapter()?;
    println!("adapter: {}", gpu.adapter());
    let ns: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let ns = if ns.is_empty() {
        vec![256, 512, 1024]
    } else {
        ns
    };
    for n in ns {
        for v in [
            MatmulVariant::Register,
            MatmulVariant::Subgroup8,
            MatmulVariant::Tiled,
        ] {
            let g = bench::matmul_gflops(&gpu, n, v, 5)?;
            println!("n={n:5} {v:?}: {g:7.2} GFLOP/s");
        }
    }
    Ok(())
}
