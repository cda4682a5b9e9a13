//! Checkpoints of a run group: export, import into a fresh group, continue bit-exactly; a state of
//! another shape or engine is refused; sizes that overflow or exceed the adapter are errors before
//! anything is allocated.

use dni_graph::recurrent::{
    BitWindow, Method, OutputLoss, RecurrentConfig, RunGroup, StateBuf, StepPath,
};
use dni_graph::Error;
use dni_kernels::ops::optim::OptimConfig;
use dni_kernels::testing::gpu;
use dni_tasks::{CopyKind, CurriculumConfig, TaskStream, Window};

const B: usize = 2;
const T: usize = 3;

fn cfg(method: Method, hidden: usize, seed: u64) -> RecurrentConfig {
    RecurrentConfig {
        input: dni_tasks::copy::WIDTH,
        hidden,
        output: dni_tasks::copy::WIDTH,
        batch: B,
        t: T,
        loss: OutputLoss::SigmoidBits,
        method,
        optim: OptimConfig::adam(1e-2),
        sg_optim: Some(OptimConfig::adam(1e-3)),
        clip: Some(1.0),
        sg: Default::default(),
        seed,
    }
}

fn cfgs() -> Vec<RecurrentConfig> {
    vec![
        cfg(Method::Bptt, 8, 1),
        cfg(Method::Dni { sg_scale: 0.1 }, 8, 2),
        cfg(
            Method::DniAux {
                sg_scale: 0.1,
                aux_weight: 1.0,
                every_step: false,
            },
            8,
            3,
        ),
    ]
}

fn windows(n: usize) -> Vec<Window> {
    let mut s = TaskStream::new(CopyKind::Copy, B, 5, CurriculumConfig::default()).unwrap();
    (0..n)
        .map(|_| {
            let mut w = Window::default();
            s.next_window(T, &mut w);
            w
        })
        .collect()
}

fn train(g: &mut RunGroup, ws: &[Window]) {
    for w in ws {
        let bw = BitWindow {
            inputs: &w.inputs,
            targets: &w.targets,
            mask: &w.mask,
            next_inputs: None,
        };
        g.train_window(&vec![bw; g.runs()]).unwrap();
    }
}

fn params(g: &RunGroup) -> Vec<Vec<f32>> {
    (0..g.runs())
        .flat_map(|r| g.param_names(r).unwrap().into_iter().map(move |n| (r, n)))
        .map(|(r, n)| g.read_param(r, n).unwrap())
        .collect()
}

#[test]
fn export_import_continues_bit_exactly_on_both_engines() {
    let gpu = gpu();
    let ws = windows(8);
    let mut paths = vec![StepPath::PerStep];
    if dni_graph::recurrent::fused_unavailable(&gpu, &cfgs()).is_none() {
        paths.push(StepPath::FusedStreaming);
    }
    for path in paths {
        let mut straight = RunGroup::with_path(&gpu, cfgs(), path).unwrap();
        train(&mut straight, &ws);
        let m_straight = straight.read_metrics().unwrap();

        let mut first = RunGroup::with_path(&gpu, cfgs(), path).unwrap();
        train(&mut first, &ws[..4]);
        let state = first.export_state().unwrap();
        drop(first);
        let mut resumed = RunGroup::with_path(&gpu, cfgs(), path).unwrap();
        resumed.import_state(&state).unwrap();
        train(&mut resumed, &ws[4..]);
        assert_eq!(params(&resumed), params(&straight), "{path:?}");
        assert_eq!(resumed.windows_trained(), 8);
        let m = resumed.read_metrics().unwrap();
        for (a, b) in m.iter().zip(&m_straight) {
            assert_eq!(
                (a.windows, a.loss_nats, a.sg_loss),
                (b.windows, b.loss_nats, b.sg_loss)
            );
        }

        // Another shape, another run count or a damaged buffer is refused, naming the buffer.
        let mut other = cfgs();
        other.iter_mut().for_each(|c| c.hidden = 9);
        let mut g = RunGroup::with_path(&gpu, other, path).unwrap();
        let e = g.import_state(&state).unwrap_err();
        assert!(matches!(e, Error::Checkpoint(_)), "{e}");
        let mut g = RunGroup::with_path(&gpu, cfgs()[..2].to_vec(), path).unwrap();
        assert!(matches!(g.import_state(&state), Err(Error::Checkpoint(_))));
        let mut cut = state.clone();
        if let StateBuf::F32(v) = &mut cut[0].1 {
            v.pop();
        }
        let mut g = RunGroup::with_path(&gpu, cfgs(), path).unwrap();
        let e = g.import_state(&cut).unwrap_err().to_string();
        assert!(e.contains(&cut[0].0), "{e}");
    }
}

#[test]
fn sizes_that_overflow_or_exceed_the_adapter_are_errors() {
    let gpu = gpu();
    for hidden in [usize::MAX / 2, 1 << 40, 100_000] {
        let e = RunGroup::new(&gpu, vec![cfg(Method::Bptt, hidden, 1)])
            .err()
            .expect("refused");
        assert!(
            matches!(
                e,
                Error::Config {
                    field: "hidden",
                    ..
                }
            ),
            "hidden {hidden}: {e}"
        );
    }
    let mut c = cfg(Method::Bptt, 8, 1);
    c.batch = usize::MAX / 4;
    let e = RunGroup::new(&gpu, vec![c]).err().expect("refused");
    assert!(matches!(e, Error::Config { field: "batch", .. }), "{e}");
}
