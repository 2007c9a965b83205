//! A broker's nodes: the URLs the inventory gives for one endpoint (a cluster's management
//! APIs, or its AMQP listeners), tried in order, the one that answered last remembered for the
//! whole process.
//!
//! A call goes to the node that answered last (the first one at start), and moves on to the
//! next (wrapping around) when that one cannot be reached: nothing accepts the connection, the
//! connection breaks before an answer, or no answer comes in time. An answer, a refusal too
//! (an HTTP error, a login refused), ends the search: the node is up, and another node of the
//! same cluster would say the same. The node that answered is kept for every later call of any
//! client of the same URLs, and the switch is said once, as a warning naming the node left, why,
//! and the node now used.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::BrokerError;

/// The nodes of one endpoint of a broker, and the one in use.
#[derive(Debug, Clone)]
pub struct Nodes {
    urls: Arc<[String]>,
    /// The index of the node that answered last, shared by every client of these URLs.
    preferred: Arc<AtomicUsize>,
}

/// A list of URLs, and the index of its node in use.
type Known = (Arc<[String]>, Arc<AtomicUsize>);

/// The node in use of every list of URLs seen by this process.
static PREFERRED: Mutex<Vec<Known>> = Mutex::new(Vec::new());

impl Nodes {
    /// The nodes of `urls` (in the inventory's order), starting from the one that answered
    /// last in this process.
    pub fn of(urls: &[String]) -> Nodes {
        let mut known = PREFERRED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((urls, preferred)) = known.iter().find(|(known, _)| **known == *urls) {
            return Nodes {
                urls: urls.clone(),
                preferred: preferred.clone(),
            };
        }
        let nodes = Nodes {
            urls: urls.into(),
            preferred: Arc::new(AtomicUsize::new(0)),
        };
        known.push((nodes.urls.clone(), nodes.preferred.clone()));
        nodes
    }

    /// Every URL, in the inventory's order.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The URL in use: the one that answered last (the first one until then).
    pub fn current(&self) -> &str {
        let index = self.preferred.load(Ordering::SeqCst);
        self.urls.get(index).map_or("", String::as_str)
    }

    /// The order to try the nodes in: the one in use, then the ones after it, wrapping
    /// around.
    pub fn order(&self) -> Vec<usize> {
        let n = self.urls.len();
        let first = self
            .preferred
            .load(Ordering::SeqCst)
            .min(n.saturating_sub(1));
        (0..n).map(|i| (first + i) % n).collect()
    }

    /// Records that node `index` answered after the nodes of `failed` (their errors) did not:
    /// it is used from now on. Says so when it is another node than the one in use, once
    /// (clients that found it at the same time do not repeat it).
    pub fn answered(&self, index: usize, failed: &[(usize, BrokerError)]) {
        let before = self.preferred.load(Ordering::SeqCst);
        if before == index
            || self
                .preferred
                .compare_exchange(before, index, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return;
        }
        let to = self.urls.get(index).map_or("", String::as_str);
        let why = failed
            .iter()
            .map(|(_, err)| err.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        tracing::warn!(
            "{why}; switched to node {} of {}, {to}",
            index + 1,
            self.urls.len()
        );
    }

    /// The error of a call no node answered: the only node's own, or one that names every
    /// node and what each did.
    pub fn none_answered(&self, mut failed: Vec<(usize, BrokerError)>) -> BrokerError {
        if failed.len() == 1 {
            return failed.remove(0).1;
        }
        let count = failed.len();
        let broker = failed
            .first()
            .map(|(_, err)| err.broker().to_string())
            .unwrap_or_default();
        let detail = failed
            .iter()
            .map(|(index, err)| {
                let url = self.urls.get(*index).map_or("", String::as_str);
                format!("{url}: {}", err.reason())
            })
            .collect::<Vec<_>>()
            .join("; ");
        BrokerError::Unreachable {
            broker,
            url: format!("every one of its {count} nodes"),
            detail,
        }
    }
}

/// True for a failure that another node may not have: the node could not be reached, or did
/// not answer in time.
pub fn node_down(err: &BrokerError) -> bool {
    matches!(
        err,
        BrokerError::Unreachable { .. } | BrokerError::Timeout { .. }
    )
}

/// The node a broker's refusal says is down: a classic queue's home node that stopped
/// (`home node 'rabbit@c1' of durable queue 'q' in vhost 'v' is down or inaccessible`, as
/// RabbitMQ says it to a declare, over AMQP and the management API alike).
pub fn home_node_down(text: &str) -> Option<String> {
    let (_, rest) = text.split_once("home node '")?;
    let (node, rest) = rest.split_once('\'')?;
    rest.contains("is down")
        .then(|| node.to_string())
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn refused(url: &str) -> BrokerError {
        BrokerError::Unreachable {
            broker: "b".into(),
            url: url.into(),
            detail: "connection refused".into(),
        }
    }

    #[test]
    fn the_order_starts_at_the_node_in_use_and_wraps_around() {
        let nodes = Nodes::of(&urls(&[
            "test-order://c1",
            "test-order://c2",
            "test-order://c3",
        ]));
        assert_eq!(nodes.order(), [0, 1, 2]);
        assert_eq!(nodes.current(), "test-order://c1");
        nodes.answered(1, &[(0, refused("test-order://c1"))]);
        assert_eq!(nodes.order(), [1, 2, 0]);
        assert_eq!(nodes.current(), "test-order://c2");
        // Every client of the same URLs starts from there; other URLs are on their own.
        let again = Nodes::of(&urls(&[
            "test-order://c1",
            "test-order://c2",
            "test-order://c3",
        ]));
        assert_eq!(again.order(), [1, 2, 0]);
        let other = Nodes::of(&urls(&["test-order://c1", "test-order://c2"]));
        assert_eq!(other.order(), [0, 1]);
        again.answered(0, &[]);
        assert_eq!(nodes.order(), [0, 1, 2]);
    }

    #[test]
    fn the_home_node_of_a_queue_on_a_stopped_node_is_read_from_the_refusal() {
        let http = r#"{"error":"not_found","reason":"home node 'roll-c1@vm' of durable queue 'q' in vhost 'v' is down or inaccessible"}"#;
        assert_eq!(home_node_down(http).as_deref(), Some("roll-c1@vm"));
        let amqp = "protocol error: AMQP soft error: NOT-FOUND: NOT_FOUND - home node 'rabbit@c1' of durable queue 'q' in vhost '/' is down or inaccessible";
        assert_eq!(home_node_down(amqp).as_deref(), Some("rabbit@c1"));
        assert_eq!(
            home_node_down("NOT_FOUND - no queue 'q' in vhost '/'"),
            None
        );
        assert_eq!(home_node_down("home node '' is down"), None);
    }

    #[test]
    fn a_single_node_is_tried_alone_and_its_error_is_its_own() {
        let nodes = Nodes::of(&urls(&["test-single://c1"]));
        assert_eq!(nodes.order(), [0]);
        let err = nodes.none_answered(vec![(0, refused("test-single://c1"))]);
        assert_eq!(
            err.to_string(),
            "broker b: unreachable at test-single://c1: connection refused"
        );
    }

    #[test]
    fn when_no_node_answers_the_error_names_each() {
        let nodes = Nodes::of(&urls(&["test-none://c1", "test-none://c2"]));
        let timeout = BrokerError::Timeout {
            broker: "b".into(),
            what: "overview".into(),
            after: std::time::Duration::from_secs(15),
        };
        let err = nodes.none_answered(vec![(0, refused("test-none://c1")), (1, timeout)]);
        assert!(node_down(&err));
        assert_eq!(
            err.to_string(),
            "broker b: unreachable at every one of its 2 nodes: test-none://c1: connection \
             refused; test-none://c2: overview did not answer within 15s"
        );
    }
}
