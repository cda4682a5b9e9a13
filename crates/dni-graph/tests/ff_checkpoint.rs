//! Feed-forward checkpoints: `export_state` then `import_state` into a fresh network continues the
//! single-thread schedule bit for bit (DNI with a conditioned SG, `p_update` < 1, complete unlock,
//! batch norm; and a network with an LSTM layer), and a checkpoint of another shape is refused,
//! naming the buffer.

use dni_graph::ff::{FfNet, FfSpec, InterfaceSpec, Schedule, SgSpec, SynthInputSpec};
use dni_graph::layers::LayerSpec;
use dni_graph::recurrent::StateBuf;
use dni_kernels::ops::optim::OptimConfig;
use dni_kernels::testing::{gpu, Lcg};

const INPUT: usize = 6;
const CLASSES: usize = 3;
const BATCH: usize = 4;

fn spec(seed: u64) -> FfSpec {
    let mut s = FfSpec::backprop(INPUT, vec![5, 5], CLASSES, BATCH, OptimConfig::adam(1e-2))
        .with_interfaces(InterfaceSpec::dni(SgSpec::linear(true)));
    s.p_update = 0.7;
    s.synthetic_input = Some(SynthInputSpec { hidden: Vec::new() });
    s.seed = seed;
    s
}

/// Deterministic batches: the `k`-th batch depends on `k` only.
fn source(start: u64) -> impl FnMut(&mut Vec<f32>, &mut Vec<u32>) {
    let mut k = start;
    move |x: &mut Vec<f32>, y: &mut Vec<u32>| {
        let mut rng = Lcg::new(k);
        k += 1;
        x.clear();
        y.clear();
        for _ in 0..BATCH {
            let c = (rng.next_u64() % CLASSES as u64) as u32;
            y.push(c);
            for j in 0..INPUT {
                let noise = (rng.next_u64() % 1000) as f32 / 1000.0 - 0.5;
                x.push(noise + if j % CLASSES == c as usize { 1.0 } else { 0.0 });
            }
        }
    }
}

/// Every parameter (value, gradient, moments) and batch-norm statistic, bit for bit.
fn bits(net: &FfNet) -> Vec<(String, Vec<u32>)> {
    let gpu = net.gpu().clone();
    let mut out = Vec::new();
    let read = |t: &dni_kernels::Tensor| -> Vec<u32> {
        gpu.read(t).unwrap().iter().map(|f| f.to_bits()).collect()
    };
    for i in 0..net.num_blocks() {
        for (kind, ps) in [
            ("block", net.block_params(i)),
            ("sg", net.sg_params(i)),
            ("synth", net.synth_params(i)),
        ] {
            for (n, p) in ps {
                let (m, v) = p.state();
                out.push((format!("{kind}{i}.{n}"), read(&p.value)));
                out.push((format!("{kind}{i}.{n}.grad"), read(&p.grad)));
                out.push((format!("{kind}{i}.{n}.m"), read(m)));
                out.push((format!("{kind}{i}.{n}.v"), read(v)));
            }
        }
        for (k, (mean, var)) in net.running_stats(i).into_iter().enumerate() {
            out.push((format!("bn{i}.{k}"), [read(mean), read(var)].concat()));
        }
    }
    out
}

#[test]
fn single_thread_resume_is_bit_exact_and_shapes_are_checked() {
    let gpu = gpu();
    let mut whole = FfNet::new(&gpu, spec(3)).unwrap();
    whole
        .train(8, &mut source(0), Schedule::SingleThread)
        .unwrap();
    let m_whole = whole.take_metrics().unwrap();

    let mut first = FfNet::new(&gpu, spec(3)).unwrap();
    first
        .train(4, &mut source(0), Schedule::SingleThread)
        .unwrap();
    let state = first.export_state().unwrap();
    drop(first);
    // Another seed: other weights and coins until the import overwrites them.
    let mut resumed = FfNet::new(&gpu, spec(77)).unwrap();
    resumed.import_state(&state).unwrap();
    assert_eq!(resumed.step(), 4);
    resumed
        .train(4, &mut source(4), Schedule::SingleThread)
        .unwrap();
    let m_resumed = resumed.take_metrics().unwrap();
    assert_eq!(bits(&whole), bits(&resumed), "parameters differ");
    assert_eq!(m_whole, m_resumed);

    for k in 0..state.len() {
        let mut short = state.clone();
        let (name, _) = short.remove(k);
        let mut fresh = FfNet::new(&gpu, spec(3)).unwrap();
        let e = fresh.import_state(&short).unwrap_err().to_string();
        assert!(e.contains(&name), "{e}");
    }
    let mut extra = state.clone();
    extra.push(("x.y".into(), StateBuf::U64(vec![1])));
    let mut fresh = FfNet::new(&gpu, spec(3)).unwrap();
    let e = fresh.import_state(&extra).unwrap_err().to_string();
    assert!(e.contains("x.y"), "{e}");
    // Another width is refused before anything is written.
    let mut wide = spec(3);
    wide.hidden_blocks = FfSpec::mlp_blocks(&[6, 5], true, 1).unwrap();
    let mut other = FfNet::new(&gpu, wide).unwrap();
    let e = other.import_state(&state).unwrap_err().to_string();
    assert!(e.contains("values"), "{e}");
}

#[test]
fn a_network_with_an_lstm_layer_resumes_bit_exactly() {
    // Each row read as 3 steps of 2 features by an LSTM block, a cDNI interface, then a hidden
    // block and the head.
    let spec = |seed| {
        let blocks = vec![
            vec![LayerSpec::Lstm {
                hidden: 5,
                steps: 3,
            }],
            vec![LayerSpec::linear(4), LayerSpec::RELU],
        ];
        let mut s = FfSpec::new(INPUT, blocks, CLASSES, BATCH, OptimConfig::adam(1e-2));
        s.interfaces[0] = InterfaceSpec::dni(SgSpec::linear(true));
        s.seed = seed;
        s
    };
    let gpu = gpu();
    let mut whole = FfNet::new(&gpu, spec(3)).unwrap();
    whole
        .train(6, &mut source(0), Schedule::SingleThread)
        .unwrap();
    let mut first = FfNet::new(&gpu, spec(3)).unwrap();
    first
        .train(3, &mut source(0), Schedule::SingleThread)
        .unwrap();
    let state = first.export_state().unwrap();
    let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"block0.l0.w_h.value"), "{names:?}");
    let mut resumed = FfNet::new(&gpu, spec(77)).unwrap();
    resumed.import_state(&state).unwrap();
    resumed
        .train(3, &mut source(3), Schedule::SingleThread)
        .unwrap();
    assert_eq!(bits(&whole), bits(&resumed), "parameters differ");
    assert_eq!(
        whole.take_metrics().unwrap(),
        resumed.take_metrics().unwrap()
    );
    // The LSTM learnt: its recurrent weights moved from their start.
    let start = FfNet::new(&gpu, spec(3)).unwrap();
    let w_h = |net: &FfNet| {
        gpu.read(&net.param("block0.l0.w_h").unwrap().value)
            .unwrap()
    };
    assert_ne!(w_h(&start), w_h(&whole));
}

#[test]
fn threaded_schedule_resumes_from_an_export() {
    let gpu = gpu();
    let mut first = FfNet::new(&gpu, spec(3)).unwrap();
    first.train(4, &mut source(0), Schedule::Threaded).unwrap();
    let state = first.export_state().unwrap();
    let mut resumed = FfNet::new(&gpu, spec(3)).unwrap();
    resumed.import_state(&state).unwrap();
    resumed
        .train(4, &mut source(4), Schedule::Threaded)
        .unwrap();
    assert_eq!(resumed.step(), 8);
    assert!(resumed.take_metrics().unwrap().loss.is_finite());
}

#[test]
fn parameters_are_reachable_by_the_names_checkpoints_use() {
    let gpu = gpu();
    let net = FfNet::new(&gpu, spec(3)).unwrap();
    let state = net.export_state().unwrap();
    let params = net.params();
    let names: Vec<&String> = params.iter().map(|(n, _)| n).collect();
    assert!(names.iter().any(|n| *n == "block0.l0.w"), "{names:?}");
    assert!(
        names.iter().any(|n| n.starts_with("block0.sg.")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("block1.synth.")),
        "{names:?}"
    );
    for (name, p) in &params {
        let value = format!("{name}.value");
        let saved = state.iter().find(|(n, _)| *n == value);
        match saved {
            Some((_, StateBuf::F32(v))) => assert_eq!(*v, gpu.read(&p.value).unwrap(), "{name}"),
            other => panic!("{value} is not in the checkpoint: {other:?}"),
        }
        assert!(std::ptr::eq(net.param(name).unwrap(), *p));
    }
    let e = net.param("block0.l9.w").unwrap_err().to_string();
    assert!(e.contains("block0.l9.w"), "{e}");
}
