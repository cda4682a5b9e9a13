//! Input checks of the recurrent trainers; errors are the crate's [`Error`](crate::Error).

pub(crate) use crate::error::{check_len, config_err, Result};

/// Writes token `ids` as one-hot rows of width `vocab` into `out` (zeroed first; at least
/// `ids.len() · vocab` long); an id outside the vocabulary is an error naming `what`.
pub(crate) fn one_hot(
    what: &'static str,
    ids: &[u32],
    vocab: usize,
    out: &mut [f32],
) -> Result<()> {
    out.fill(0.0);
    for (row, &id) in ids.iter().enumerate() {
        if id as usize >= vocab {
            return Err(crate::Error::Token { what, id, vocab });
        }
        out[row * vocab + id as usize] = 1.0;
    }
    Ok(())
}

/// An evaluation window may hold at most T real steps.
pub(crate) fn check_eval_steps(steps: usize, t: usize) -> Result<()> {
    if steps > t {
        return Err(crate::Error::Input {
            what: "evaluation window steps",
            expected: t,
            got: steps,
        });
    }
    Ok(())
}
