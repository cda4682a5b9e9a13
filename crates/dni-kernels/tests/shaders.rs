//! Every shaders/*.wgsl, after the shared prelude, passes naga's WGSL front end and full
//! validator, and translates to SPIR-V, MSL, HLSL and GLSL: how the kernels stay honest for Metal,
//! DX12 and GL without those machines. No GPU needed.

use std::path::PathBuf;

use dni_kernels::pipeline::PRELUDE;
use dni_kernels::Kernel;
use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};

fn shader_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shaders");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .filter(|p| p.file_stem().is_some_and(|s| s != "prelude"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .wgsl files in {}", dir.display());
    files
}

/// Parses, validates and translates one WGSL source to every backend; returns the number of
/// compute entry points.
fn check_source(name: &str, source: &str) -> usize {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: WGSL parse error:\n{}", e.emit_to_string(source)));
    // Subgroup kernels are an optional fast path; they need the capability and, on D3D, SM 6.0.
    let subgroups = source.contains("subgroupBroadcast");
    let caps = if subgroups {
        Capabilities::default() | Capabilities::SUBGROUP
    } else {
        Capabilities::default()
    };
    let info = Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: validation error:\n{}", e.emit_to_string(source)));

    let computes: Vec<String> = module
        .entry_points
        .iter()
        .filter(|ep| ep.stage == naga::ShaderStage::Compute)
        .map(|ep| ep.name.clone())
        .collect();
    assert!(!computes.is_empty(), "{name}: no compute entry point");

    for entry in &computes {
        let what = format!("{name}::{entry}");
        // Overrides take their defaults here, as a pipeline without constants would.
        let (module, info) = naga::back::pipeline_constants::process_overrides(
            &module,
            &info,
            Some((naga::ShaderStage::Compute, entry)),
            &Default::default(),
        )
        .unwrap_or_else(|e| panic!("{what}: override processing failed: {e}"));

        let spv_pipeline = spv::PipelineOptions {
            shader_stage: naga::ShaderStage::Compute,
            entry_point: entry.clone(),
        };
        let words = spv::write_vec(
            &module,
            &info,
            &spv::Options::default(),
            Some(&spv_pipeline),
        )
        .unwrap_or_else(|e| panic!("{what}: SPIR-V: {e}"));
        assert!(
            words.len() > 5 && words[0] == 0x0723_0203,
            "{what}: bad SPIR-V header"
        );

        let msl_options = msl::Options {
            lang_version: (2, 1),
            ..Default::default()
        };
        let msl_pipeline = msl::PipelineOptions {
            entry_point: Some((naga::ShaderStage::Compute, entry.clone())),
            ..Default::default()
        };
        let (msl_src, _) = msl::write_string(&module, &info, &msl_options, &msl_pipeline)
            .unwrap_or_else(|e| panic!("{what}: MSL: {e}"));
        assert!(
            msl_src.contains("kernel"),
            "{what}: MSL has no kernel function"
        );

        let hlsl_options = hlsl::Options {
            shader_model: if subgroups {
                hlsl::ShaderModel::V6_0
            } else {
                hlsl::ShaderModel::V5_1
            },
            ..Default::default()
        };
        let hlsl_pipeline = hlsl::PipelineOptions {
            entry_point: Some((naga::ShaderStage::Compute, entry.clone())),
        };
        let mut hlsl_src = String::new();
        hlsl::Writer::new(&mut hlsl_src, &hlsl_options, &hlsl_pipeline)
            .write(&module, &info, None)
            .unwrap_or_else(|e| panic!("{what}: HLSL: {e}"));
        assert!(
            hlsl_src.contains("[numthreads("),
            "{what}: HLSL has no compute entry"
        );

        let glsl_options = glsl::Options {
            version: if subgroups {
                glsl::Version::Desktop(450)
            } else {
                glsl::Version::Embedded {
                    version: 310,
                    is_webgl: false,
                }
            },
            ..Default::default()
        };
        let glsl_pipeline = glsl::PipelineOptions {
            shader_stage: naga::ShaderStage::Compute,
            entry_point: entry.clone(),
            multiview: None,
        };
        let mut glsl_src = String::new();
        glsl::Writer::new(
            &mut glsl_src,
            &module,
            &info,
            &glsl_options,
            &glsl_pipeline,
            naga::proc::BoundsCheckPolicies::default(),
        )
        .and_then(|mut w| w.write())
        .unwrap_or_else(|e| panic!("{what}: GLSL: {e}"));
        assert!(
            glsl_src.contains("layout(local_size_x"),
            "{what}: GLSL has no compute layout"
        );
    }
    computes.len()
}

#[test]
fn every_shader_file_is_a_kernel_source() {
    for path in shader_files() {
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let kernel = Kernel::ALL
            .iter()
            .find(|k| k.name() == stem)
            .unwrap_or_else(|| panic!("{} is not in Kernel::ALL", path.display()));
        let on_disk = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            kernel.source(),
            format!("{PRELUDE}{on_disk}"),
            "{}: Kernel::{kernel:?}.source() differs from the file (stale build?)",
            path.display()
        );
    }
}

#[test]
fn every_shader_validates_and_translates_to_all_backends() {
    let mut report = Vec::new();
    for path in shader_files() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let source = format!("{PRELUDE}{}", std::fs::read_to_string(&path).unwrap());
        let entries = check_source(&name, &source);
        report.push(format!("{name}: {entries} entry points"));
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn every_kernel_source_validates() {
    // What wgpu is actually given: the sources compiled into the binary.
    for k in Kernel::ALL {
        check_source(k.name(), k.source());
    }
}

#[test]
fn the_prelude_holds_only_functions() {
    // It is pasted before every kernel, so a binding, override or entry point here would land in
    // all of them.
    let module = naga::front::wgsl::parse_str(PRELUDE)
        .unwrap_or_else(|e| panic!("prelude: {}", e.emit_to_string(PRELUDE)));
    Validator::new(ValidationFlags::all(), Capabilities::default())
        .validate(&module)
        .unwrap_or_else(|e| panic!("prelude: {}", e.emit_to_string(PRELUDE)));
    assert_eq!(module.global_variables.len(), 0, "prelude declares globals");
    assert_eq!(module.overrides.len(), 0, "prelude declares overrides");
    assert!(module.entry_points.is_empty(), "prelude has entry points");
    assert!(module.functions.len() >= 2, "prelude lost its functions");
}

#[test]
fn invalid_wgsl_is_rejected() {
    // The checker must be able to fail: a type error, and one entry point using two globals on
    // the same binding (allowed across entry points, not within one).
    let type_error = "@group(0) @binding(0) var<storage, read_write> a: array<f32>;\n\
                      @compute @workgroup_size(1) fn main() { a[0] = 1u; }";
    let collision = "@group(0) @binding(0) var<storage, read_write> a: array<f32>;\n\
                     @group(0) @binding(0) var<storage, read> b: array<f32>;\n\
                     @compute @workgroup_size(1) fn main() { a[0] = b[0]; }";
    for (what, src) in [("type error", type_error), ("binding collision", collision)] {
        let r = std::panic::catch_unwind(|| check_source(what, src));
        assert!(r.is_err(), "a {what} passed validation");
    }
}
