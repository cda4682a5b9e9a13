//! Shared checks for `import_state` of the models that export their training state by name.

use crate::recurrent::StateBuf;

/// Checks `state` against what a model expects: every tensor `(name, f32 length)` and counter
/// `(name, u64 length)` present with its exact length, and no other name. The error names the
/// first buffer that does not fit.
pub(crate) fn check(
    state: &[(String, StateBuf)],
    tensors: &[(String, usize)],
    counters: &[(String, usize)],
) -> Result<(), String> {
    let find = |name: &str| state.iter().find(|(n, _)| n == name).map(|(_, b)| b);
    for (name, len) in tensors {
        match find(name) {
            Some(StateBuf::F32(v)) if v.len() == *len => {}
            Some(StateBuf::F32(v)) => {
                return Err(format!(
                    "{name} holds {} values, this model has {len}",
                    v.len()
                ))
            }
            _ => return Err(format!("{name} is missing (written by another model?)")),
        }
    }
    for (name, len) in counters {
        match find(name) {
            Some(StateBuf::U64(v)) if v.len() == *len => {}
            _ => return Err(format!("counter {name} is missing or of another length")),
        }
    }
    if let Some((extra, _)) = state.iter().find(|(n, _)| {
        !tensors.iter().any(|(t, _)| t == n) && !counters.iter().any(|(c, _)| c == n)
    }) {
        return Err(format!(
            "{extra} is not part of this model's state (another method or shape?)"
        ));
    }
    Ok(())
}

/// The buffer named `name` as f32 values (after [`check`]).
pub(crate) fn f32s<'a>(state: &'a [(String, StateBuf)], name: &str) -> Option<&'a [f32]> {
    state.iter().find_map(|(n, b)| match b {
        StateBuf::F32(v) if n == name => Some(v.as_slice()),
        _ => None,
    })
}

/// The counter named `name` (after [`check`]).
pub(crate) fn u64s<'a>(state: &'a [(String, StateBuf)], name: &str) -> Option<&'a [u64]> {
    state.iter().find_map(|(n, b)| match b {
        StateBuf::U64(v) if n == name => Some(v.as_slice()),
        _ => None,
    })
}

/// A parameter's state buffers under `name`: `{name}.value`, `.grad`, and the optimiser moments
/// `.m` and `.v` (the naming every trainer's checkpoint uses).
pub(crate) fn push_param_state<'a>(
    v: &mut Vec<(String, &'a dni_kernels::Tensor)>,
    name: &str,
    p: &'a dni_kernels::ops::optim::Param,
) {
    let (m, sv) = p.state();
    v.push((format!("{name}.value"), &p.value));
    v.push((format!("{name}.grad"), &p.grad));
    v.push((format!("{name}.m"), m));
    v.push((format!("{name}.v"), sv));
}
