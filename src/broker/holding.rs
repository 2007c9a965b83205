//! The names of the holding topology `roll` puts around a queue it recreates: a fanout
//! exchange that takes over the queue's bindings, an alternate exchange that receives what the
//! fanout cannot route, and the holding queue bound to it. While the queue is bound to the
//! fanout it receives everything; unbound, everything goes to the holding queue. One binding
//! change switches the flow, so no message is routed to both or to neither.
//!
//! Names are deterministic (run id and queue), so a resumed or rolled-back run finds them.

/// Every name of the holding topology starts with this.
pub const PREFIX: &str = "roll.hold.";

/// The broker's limit on queue and exchange names, in bytes.
const MAX_NAME: usize = 255;

/// The holding topology of one queue in one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// The queue being recreated.
    pub queue: String,
    /// The holding queue.
    pub holding: String,
    /// The fanout exchange the queue's bindings are routed through.
    pub exchange: String,
    /// The alternate exchange of `exchange`, bound to `holding`.
    pub alternate: String,
}

impl Holding {
    /// The names for `queue` in run `run_id`.
    pub fn new(run_id: &str, queue: &str) -> Holding {
        let mut base = format!("{PREFIX}{run_id}.{queue}");
        // Room for ".ae".
        if base.len() > MAX_NAME - 3 {
            let hash = format!("~{:016x}", crate::hash::fnv1a(queue));
            let mut cut = MAX_NAME - 3 - hash.len();
            while !base.is_char_boundary(cut) {
                cut -= 1;
            }
            base.truncate(cut);
            base.push_str(&hash);
        }
        Holding {
            queue: queue.to_string(),
            holding: base.clone(),
            exchange: base.clone(),
            alternate: format!("{base}.ae"),
        }
    }
}

/// True for a queue or exchange of a holding topology.
pub fn is_holding(name: &str) -> bool {
    name.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_run_and_the_queue() {
        let h = Holding::new("20261121T100000Z-ops-42", "q_a.subscribe.pump");
        assert_eq!(
            h.holding,
            "roll.hold.20261121T100000Z-ops-42.q_a.subscribe.pump"
        );
        assert_eq!(h.exchange, h.holding);
        assert_eq!(h.alternate, format!("{}.ae", h.holding));
        assert!(is_holding(&h.holding) && is_holding(&h.alternate));
        assert_eq!(
            h,
            Holding::new("20261121T100000Z-ops-42", "q_a.subscribe.pump")
        );
    }

    #[test]
    fn long_names_stay_within_the_broker_limit_and_distinct() {
        let a = "é".repeat(120) + "a";
        let b = "é".repeat(120) + "b";
        let ha = Holding::new("run", &a);
        let hb = Holding::new("run", &b);
        assert!(ha.alternate.len() <= MAX_NAME, "{}", ha.alternate.len());
        assert!(ha.holding.starts_with(PREFIX));
        assert_ne!(ha.holding, hb.holding);
    }
}
