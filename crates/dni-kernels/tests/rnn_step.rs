//! The fused recurrent step's shape handling: sizes that overflow or exceed the adapter are
//! refused with a reason, never a panic or an abort. (Its arithmetic is tested against the
//! per-step kernels in dni-graph's tests/recurrent_fused.rs.)

use dni_kernels::ops::rnn_step::{
    cached_unavailable, does_not_fit, RnnLayout, RnnShape, RnnStep, RnnVariant, StepRule,
};
use dni_kernels::testing::gpu;
use dni_kernels::Tensor;

fn shape(hidden: usize, runs: usize) -> RnnShape {
    RnnShape {
        input: 10,
        hidden,
        output: 10,
        batch: 16,
        steps: 5,
        runs,
        softmax: false,
        has_sg: true,
        has_aux: true,
    }
}

#[test]
fn layouts_refuse_zero_and_overflowing_sizes() {
    assert!(RnnLayout::new(&shape(0, 1)).is_err());
    let err = RnnLayout::new(&shape(usize::MAX / 4, 1)).unwrap_err();
    assert!(err.to_string().contains("overflows"), "{err}");
    let l = RnnLayout::new(&shape(64, 1)).unwrap();
    // [W_x; W_h; b] = 75 x 256, then the readout, the SG model and the aux head, each padded to 4.
    assert_eq!(l.off_r, 75 * 256);
    assert!(l.off_s >= l.off_r + 65 * 10 && l.off_s.is_multiple_of(4));
    assert_eq!(l.p_run, l.off_a + 65 * 128);
}

#[test]
fn shapes_too_large_for_the_adapter_are_refused_with_a_reason() {
    let gpu = gpu();
    let why = does_not_fit(&gpu, &shape(64, 1 << 40)).expect("a trillion runs cannot fit");
    assert!(why.contains("runs"), "{why}");
    let mut wide = shape(64, 1);
    wide.output = 1000;
    let why = does_not_fit(&gpu, &wide).expect("1000 logits per lane do not fit");
    assert!(why.contains("output 1000"), "{why}");
}

#[test]
fn the_cached_variant_names_what_it_needs() {
    let gpu = gpu();
    let big = shape(256, 1);
    let why = cached_unavailable(&gpu, &big).expect("hidden 256 does not fit the caches");
    assert!(why.starts_with("the cached kernels need"), "{why}");
    let mut huge = shape(64, 1);
    huge.input = usize::MAX;
    assert!(cached_unavailable(&gpu, &huge).is_some());
    assert!(does_not_fit(&gpu, &huge).is_some());
    let rule = StepRule::Sgd { momentum: 0.9 };
    match RnnStep::with_variant(&gpu, big, rule, RnnVariant::Cached) {
        Err(e) => assert!(e.to_string().contains("cached kernels need"), "{e}"),
        Ok(_) => panic!("hidden 256 was accepted by the cached variant"),
    }
}

#[test]
fn partial_writes_are_bounds_checked() {
    let gpu = gpu();
    let t = Tensor::zeros(&gpu, &[4]).unwrap();
    t.write_at(&gpu, 2, &[1.0, 2.0]).unwrap();
    assert_eq!(gpu.read(&t).unwrap(), vec![0.0, 0.0, 1.0, 2.0]);
    assert!(t.write_at(&gpu, 3, &[1.0, 2.0]).is_err());
    assert!(t.write_at(&gpu, usize::MAX, &[1.0]).is_err());
}
