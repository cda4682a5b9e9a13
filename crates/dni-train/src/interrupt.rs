//! Ctrl-C (SIGINT) and SIGTERM: the first one asks the training loop to finish its step, write a
//! checkpoint and a summary with `"status": "interrupted"`, and exit with 130 / 143; a second one
//! ends the process at once with that status (the last complete checkpoint stays loadable).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Context;

/// The signal that asked the run to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Int,
    Term,
}

impl Signal {
    /// The conventional exit status of a process ended by this signal (128 + its number).
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Int => 130,
            Signal::Term => 143,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Signal::Int => "SIGINT",
            Signal::Term => "SIGTERM",
        }
    }
}

static REQUESTED: OnceLock<Arc<AtomicUsize>> = OnceLock::new();

/// Installs the handlers (once per process).
pub fn install() -> anyhow::Result<()> {
    if REQUESTED.get().is_some() {
        return Ok(());
    }
    let flag = Arc::new(AtomicUsize::new(0));
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGINT, SIGTERM};
        for (sig, status, value) in [(SIGINT, 130, 1), (SIGTERM, 143, 2)] {
            // Order matters: the shutdown checks the flag the second registration sets.
            let seen = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register_conditional_shutdown(sig, status, seen.clone())
                .context("installing the signal handlers")?;
            signal_hook::flag::register(sig, seen).context("installing the signal handlers")?;
            signal_hook::flag::register_usize(sig, flag.clone(), value)
                .context("installing the signal handlers")?;
        }
    }
    let _ = REQUESTED.set(flag);
    Ok(())
}

/// The signal received, if any (cheap: one atomic load; call every step).
pub fn requested() -> Option<Signal> {
    match REQUESTED.get()?.load(Ordering::SeqCst) {
        1 => Some(Signal::Int),
        2 => Some(Signal::Term),
        _ => None,
    }
}
