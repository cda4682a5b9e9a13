//! The single-thread schedule: every block of a step recorded into one command buffer, in the
//! order of the synchronous algorithm (all forward passes, then the backward passes from the output
//! down). Each SG model is trained on the target of the same step, so there is no staleness: this is
//! the reference the threaded schedule is compared with.

use super::{BatchSource, FfNet, StepStats};
use crate::error::{Error, Result};
use crate::in_flight::InFlight;
use dni_kernels::Tensor;

pub(crate) fn run(net: &mut FfNet, steps: u64, source: &mut dyn BatchSource) -> Result<StepStats> {
    let gpu = net.gpu.clone();
    let n = net.blocks.len();
    let unlock = net.spec.synthetic_input.is_some();
    let p_update = net.spec.p_update;
    let classes = net.spec.classes;
    let mut stats = StepStats::default();
    let mut in_flight = InFlight::default();
    let data = net.data_ring[0].clone();
    let h: Vec<Option<Tensor>> = net.h_ring.iter().map(|r| r.first().cloned()).collect();
    let dx_buf: Vec<Option<Tensor>> = net.dx_ring.iter().map(|r| r.first().cloned()).collect();
    for block in net.blocks.iter_mut() {
        for r in [&mut block.sg, &mut block.synth].into_iter().flatten() {
            r.reclaim();
        }
    }
    for _ in 0..steps {
        if in_flight.make_room(&gpu)? {
            stats.gpu_waits += 1;
        }
        let scratch = &mut net.scratch;
        source.fill(&mut scratch.x, &mut scratch.ids);
        let (x, ids) = (
            std::mem::take(&mut scratch.x),
            std::mem::take(&mut scratch.ids),
        );
        let written = data.write(&gpu, &x, &ids, classes, scratch);
        (scratch.x, scratch.ids) = (x, ids);
        written?;

        let active: Vec<bool> = net
            .blocks
            .iter_mut()
            .map(|b| b.coin.bernoulli(p_update))
            .collect();
        let mut enc = gpu.encoder();
        // Forward, block by block. With complete unlock a block that is not active does nothing,
        // and the others run on their synthetic input I(x).
        let mut ran = vec![false; n];
        let mut inputs: Vec<Option<Tensor>> = vec![None; n];
        let mut in_slots = Vec::with_capacity(n);
        let mut sg_slots = Vec::with_capacity(n);
        for i in 0..n {
            in_slots.push(None);
            sg_slots.push(None);
            if unlock && !active[i] {
                continue;
            }
            let block = &mut net.blocks[i];
            let input = if i == 0 {
                data.x.clone()
            } else if let Some(synth) = block.synth.as_mut() {
                let slot = synth.take_slot()?;
                synth.predict(&mut enc, &data.x, &data, &slot)?;
                let pred = slot.out.clone();
                in_slots[i] = Some(slot);
                pred
            } else {
                h[i - 1]
                    .clone()
                    .ok_or_else(|| Error::Internal("missing activation buffer".into()))?
            };
            block.forward(&mut enc, &input, h[i].as_ref(), &data)?;
            // I_i regresses on what block i-1 really produced this step.
            if let (Some(synth), Some(slot), true) =
                (block.synth.as_mut(), &in_slots[i], i > 0 && ran[i - 1])
            {
                let target = h[i - 1]
                    .as_ref()
                    .ok_or_else(|| Error::Internal("missing activation".into()))?;
                synth.train(&mut enc, &data.x, &data, slot, target)?;
            }
            // Evaluated whenever the SG model will be trained, even if the block does not update.
            if block.predicts() && (active[i] || block.trains_sg()) {
                if let (Some(sg), Some(out)) = (block.sg.as_mut(), h[i].as_ref()) {
                    let slot = sg.take_slot()?;
                    sg.predict(&mut enc, out, &data, &slot)?;
                    sg_slots[i] = Some(slot);
                }
            }
            inputs[i] = Some(input);
            ran[i] = true;
        }
        // Backward, from the output down: each block's input gradient is the true (or bootstrapped)
        // gradient of the block before it, and the target of that block's SG model.
        let mut dx: Vec<Option<Tensor>> = vec![None; n];
        for i in (0..n).rev() {
            if !(ran[i] && active[i]) {
                continue;
            }
            let block = &net.blocks[i];
            let input = inputs[i]
                .as_ref()
                .ok_or_else(|| Error::Internal("missing input".into()))?;
            let true_grad = if block.waits() {
                dx.get(i + 1).cloned().flatten()
            } else {
                None
            };
            let pred = sg_slots[i].as_ref().map(|s| s.out.clone());
            // The previous block wants this gradient if it waits for it to update, or if its SG
            // model made a prediction to regress on it (with complete unlock: whenever it ran).
            let wanted = i > 0
                && block.sends_grad()
                && (unlock
                    || (active[i - 1] && net.blocks[i - 1].waits())
                    || (sg_slots[i - 1].is_some() && net.blocks[i - 1].trains_sg()));
            let dx_t = if wanted { dx_buf[i].clone() } else { None };
            if block.learn(
                &mut enc,
                input,
                h[i].as_ref(),
                pred.as_ref(),
                true_grad.as_ref(),
                dx_t.as_ref(),
            )? {
                dx[i] = dx_t;
            }
        }
        // SG regressions on this step's targets.
        for i in 0..n {
            let block = &mut net.blocks[i];
            let trains = block.trains_sg();
            if let (Some(slot), Some(target), Some(out), true) = (
                &sg_slots[i],
                dx.get(i + 1).cloned().flatten(),
                h[i].as_ref(),
                trains,
            ) {
                if let Some(sg) = block.sg.as_mut() {
                    sg.train(&mut enc, out, &data, slot, &target)?;
                    stats.sg_regressions += 1;
                }
            }
        }
        in_flight.push(gpu.submit(enc));
        stats.submissions += 1;
        // Workspaces go back to their rings; the next step's work is recorded after this submission.
        for (i, block) in net.blocks.iter_mut().enumerate() {
            if let (Some(slot), Some(sg)) = (sg_slots[i].take(), block.sg.as_mut()) {
                sg.free.push(slot);
            }
            if let (Some(slot), Some(synth)) = (in_slots[i].take(), block.synth.as_mut()) {
                synth.free.push(slot);
            }
        }
    }
    Ok(stats)
}
