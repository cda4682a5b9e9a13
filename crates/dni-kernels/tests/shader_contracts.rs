//! Every launcher's bind group (`ops::entries()`, the one Rust declaration of each contract)
//! agrees with naga's reflection of its WGSL entry point: the same binding numbers, uniform or
//! storage, read-only or read-write, nothing the entry uses left out, and nothing bound that no
//! entry uses. Without this test a mismatch shows only as a wgpu validation error when that kernel
//! first runs. No GPU needed.
//!
//! Several entries may share one bind group (the same slot list, given the same tensors: the
//! eval forward takes the training forward's buffers, SGD takes Adam's). A slot one of them
//! does not use is fine as long as another entry of the group uses it; a slot no entry uses is a
//! stale declaration and fails.

use std::collections::{BTreeMap, HashMap};

use dni_kernels::{ops, Entry, Kernel, Slot};
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};
use naga::{AddressSpace, StorageAccess};

struct Reflected {
    module: naga::Module,
    info: ModuleInfo,
}

fn reflect(kernel: Kernel) -> Reflected {
    let src = kernel.source();
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{}: {}", kernel.name(), e.emit_to_string(src)));
    // Full validation is tests/shaders.rs's job; here it only has to yield the usage info.
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {}", kernel.name(), e.emit_to_string(src)));
    Reflected { module, info }
}

/// The slot a global's declaration asks for (its declared access, not how the entry uses it: a
/// layout must match the declaration).
fn declared_slot(space: AddressSpace) -> Option<Slot> {
    match space {
        AddressSpace::Uniform => Some(Slot::Uniform),
        AddressSpace::Storage { access } if access.contains(StorageAccess::STORE) => {
            Some(Slot::ReadWrite)
        }
        AddressSpace::Storage { .. } => Some(Slot::Read),
        _ => None,
    }
}

/// (group, binding) -> (global name, the slot its declaration asks for).
type Bindings = BTreeMap<(u32, u32), (String, Option<Slot>)>;

/// The resource bindings `entry` uses (directly or through the functions it calls):
/// (group, binding) -> (global name, declared slot).
fn used_bindings(r: &Reflected, entry: &str) -> Option<Bindings> {
    let index = r
        .module
        .entry_points
        .iter()
        .position(|ep| ep.name == entry && ep.stage == naga::ShaderStage::Compute)?;
    let usage = r.info.get_entry_point(index);
    let mut used = BTreeMap::new();
    for (handle, global) in r.module.global_variables.iter() {
        let Some(binding) = &global.binding else {
            continue;
        };
        if usage[handle].is_empty() {
            continue;
        }
        let name = global.name.clone().unwrap_or_else(|| format!("{handle:?}"));
        used.insert(
            (binding.group, binding.binding),
            (name, declared_slot(global.space)),
        );
    }
    Some(used)
}

/// Every way `entry`'s slots disagree with the WGSL, one line each.
fn problems(r: &Reflected, entry: &Entry) -> Vec<String> {
    let what = format!("{}::{}", entry.kernel.name(), entry.name);
    let Some(used) = used_bindings(r, entry.name) else {
        return vec![format!("{what}: no compute entry point of that name")];
    };
    let mut out = Vec::new();
    for (&(group, binding), (name, declared)) in &used {
        if group != 0 {
            out.push(format!(
                "{what}: `{name}` is in group {group}; launchers bind group 0 only"
            ));
            continue;
        }
        match entry.slots.get(binding as usize) {
            None => out.push(format!(
                "{what}: uses `{name}` at binding {binding}, but the launcher binds only {} slots",
                entry.slots.len()
            )),
            Some(slot) if Some(*slot) != *declared => out.push(format!(
                "{what}: binding {binding} (`{name}`) is declared {declared:?} in WGSL, the launcher binds {slot:?}"
            )),
            Some(_) => {}
        }
    }
    out
}

/// Slots that no entry of `group` (entries of one kernel with the same slot list) uses.
fn unused_slots(r: &Reflected, group: &[&Entry]) -> Vec<String> {
    let mut used = BTreeMap::new();
    for e in group {
        for (key, _) in used_bindings(r, e.name).unwrap_or_default() {
            used.insert(key, e.name);
        }
    }
    let names: Vec<&str> = group.iter().map(|e| e.name).collect();
    group[0]
        .slots
        .iter()
        .enumerate()
        .filter(|(i, _)| !used.contains_key(&(0, *i as u32)))
        .map(|(i, slot)| {
            format!(
                "{}::{names:?}: the launcher binds {slot:?} at binding {i}, which no entry point \
                 sharing this bind group uses",
                group[0].kernel.name()
            )
        })
        .collect()
}

/// Every problem of `entries`: each entry against its WGSL, each shared bind group for slots
/// nobody uses.
fn all_problems(reflected: &HashMap<Kernel, Reflected>, entries: &[Entry]) -> Vec<String> {
    let mut out = Vec::new();
    let mut groups: Vec<Vec<&Entry>> = Vec::new();
    for e in entries {
        out.extend(problems(&reflected[&e.kernel], e));
        match groups
            .iter_mut()
            .find(|g| g[0].kernel == e.kernel && g[0].slots == e.slots)
        {
            Some(g) => g.push(e),
            None => groups.push(vec![e]),
        }
    }
    for g in &groups {
        out.extend(unused_slots(&reflected[&g[0].kernel], g));
    }
    out
}

fn reflect_all() -> HashMap<Kernel, Reflected> {
    Kernel::ALL.iter().map(|&k| (k, reflect(k))).collect()
}

#[test]
fn every_launcher_binds_what_its_entry_point_declares() {
    let reflected = reflect_all();
    let entries = ops::entries();
    let all = all_problems(&reflected, &entries);
    assert!(
        all.is_empty(),
        "{} launcher contracts disagree with the WGSL:\n{}",
        all.len(),
        all.join("\n")
    );
    eprintln!("{} entry points checked", entries.len());
}

#[test]
fn every_entry_point_has_one_contract() {
    let entries = ops::entries();
    let mut missing = Vec::new();
    for k in Kernel::ALL {
        let r = reflect(k);
        for ep in &r.module.entry_points {
            let n = entries
                .iter()
                .filter(|e| e.kernel == k && e.name == ep.name)
                .count();
            if n != 1 {
                missing.push(format!("{}::{} has {n} contracts", k.name(), ep.name));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn a_wrong_contract_is_caught() {
    // The checker must be able to fail: flip each slot of a real contract in turn, drop its last
    // slot, and add one it does not use.
    let reflected = reflect_all();
    let e = ops::entries()
        .into_iter()
        .find(|e| e.kernel == Kernel::Loss && e.name == "sigmoid_xent")
        .expect("sigmoid_xent has a contract");
    let leak = |v: Vec<Slot>| -> &'static [Slot] { Box::leak(v.into_boxed_slice()) };
    let check = |e: Entry| all_problems(&reflected, &[e]);
    assert!(check(e).is_empty());
    for i in 0..e.slots.len() {
        let mut slots = e.slots.to_vec();
        slots[i] = match slots[i] {
            Slot::Read => Slot::ReadWrite,
            Slot::ReadWrite => Slot::Read,
            Slot::Uniform => Slot::Read,
        };
        let wrong = Entry::new(e.kernel, e.name, leak(slots));
        assert!(!check(wrong).is_empty(), "slot {i} flipped passed");
    }
    let short = Entry::new(e.kernel, e.name, &e.slots[..e.slots.len() - 1]);
    assert!(!check(short).is_empty(), "a missing slot passed");
    let mut long = e.slots.to_vec();
    long.push(Slot::Read);
    let long = Entry::new(e.kernel, e.name, leak(long));
    assert!(!check(long).is_empty(), "an unused slot passed");
    let renamed = Entry::new(e.kernel, "no_such_entry", e.slots);
    assert!(!check(renamed).is_empty(), "an unknown entry passed");

    // A slot only a sibling uses passes inside the group and fails alone: SGD never reads the
    // second moment, Adam does.
    let optim: Vec<Entry> = ops::entries()
        .into_iter()
        .filter(|e| e.kernel == Kernel::Optim && (e.name == "sgd" || e.name == "adam"))
        .collect();
    assert_eq!(optim.len(), 2);
    assert!(all_problems(&reflected, &optim).is_empty());
    let sgd = optim.iter().find(|e| e.name == "sgd").copied();
    assert!(!check(sgd.expect("sgd")).is_empty(), "SGD alone passed");
}
