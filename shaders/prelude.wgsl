// Prepended to every kernel file by `Kernel::source` (crates/dni-kernels/src/pipeline.rs): the
// helpers the kernels share. Functions only: no bindings, overrides or entry points.

// Clamped so that exp never overflows: some drivers compute these through exp and return NaN for
// large arguments. The clamps move no result by more than 1e-13.
fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-clamp(x, -30.0, 30.0)));
}

fn tanh_c(x: f32) -> f32 {
    return tanh(clamp(x, -15.0, 15.0));
}

fn sigmoid4c(x: vec4<f32>) -> vec4<f32> {
    return 1.0 / (1.0 + exp(-clamp(x, vec4<f32>(-30.0), vec4<f32>(30.0))));
}

fn tanh4c(x: vec4<f32>) -> vec4<f32> {
    return tanh(clamp(x, vec4<f32>(-15.0), vec4<f32>(15.0)));
}
