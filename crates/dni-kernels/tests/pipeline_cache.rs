//! `Gpu::pipeline` compiles a pipeline once even when several threads ask for it at the same
//! moment (threaded workers warming up together): every caller gets the same `Arc` and the
//! compile count rises by exactly one. The only test in its binary, so nothing else compiles
//! while it counts.

use std::sync::{Arc, Barrier};

use dni_kernels::{testing, Kernel, Slot};

#[test]
fn threads_asking_for_one_pipeline_share_one_compile() {
    const SLOTS: &[Slot] = &[Slot::Uniform, Slot::Read, Slot::ReadWrite];
    const THREADS: usize = 8;
    let gpu = testing::gpu();
    let before = gpu.pipelines_compiled();
    let barrier = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (gpu, barrier) = (gpu.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                gpu.pipeline(Kernel::Reduce, "col_sum", &[], SLOTS)
            })
        })
        .collect();
    let got: Vec<_> = workers
        .into_iter()
        .map(|w| w.join().expect("worker panicked").expect("pipeline"))
        .collect();
    for (i, p) in got.iter().enumerate() {
        assert!(Arc::ptr_eq(&got[0], p), "thread {i} got its own pipeline");
    }
    assert_eq!(
        gpu.pipelines_compiled(),
        before + 1,
        "compiled more than once"
    );
    // A later request is a cache hit.
    let again = gpu
        .pipeline(Kernel::Reduce, "col_sum", &[], SLOTS)
        .expect("pipeline");
    assert!(Arc::ptr_eq(&got[0], &again));
    assert_eq!(gpu.pipelines_compiled(), before + 1);
}
