//! Exit codes, in one place, so that scripts can rely on them.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success: everything asked for was done, or nothing needed doing |
//! | 1 | failure: a host, the broker or the tool itself failed |
//! | 2 | usage, inventory or playbook error, or a refusal (a frozen group, an unfinished run): nothing was done |
//! | 2 | `queue-diff` only: changes are pending |
//! | 3 | partial: some of the work was done, some failed |
//! | 4 | `upgrade`/`resume` only: paused at a wave boundary as asked (`--pause-after`) |

/// Everything went as asked.
pub const SUCCESS: u8 = 0;
/// Something failed while talking to the outside world.
pub const FAILURE: u8 = 1;
/// Bad command line, inventory or playbook, or what the group's state refuses (a freeze, an
/// unfinished run): nothing was done.
pub const USAGE: u8 = 2;
/// `queue-diff`: changes are pending (the same number as a usage error, as with `diff`-like
/// tools; the message on stderr tells them apart).
pub const CHANGES_PENDING: u8 = 2;
/// Part of the work was done and part failed.
pub const PARTIAL: u8 = 3;
/// The run ended paused at a wave boundary, as asked: `roll resume` continues it.
pub const PAUSED: u8 = 4;

/// Decides the exit code of an operation over many items from how many succeeded and failed.
pub fn from_counts(succeeded: usize, failed: usize) -> u8 {
    match (succeeded, failed) {
        (_, 0) => SUCCESS,
        (0, _) => FAILURE,
        _ => PARTIAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_decide_the_code() {
        assert_eq!(from_counts(4, 0), SUCCESS);
        assert_eq!(from_counts(0, 0), SUCCESS);
        assert_eq!(from_counts(0, 2), FAILURE);
        assert_eq!(from_counts(3, 1), PARTIAL);
    }
}
