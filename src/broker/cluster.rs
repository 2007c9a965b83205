//! What the management API tells about the cluster around a vhost: its nodes (running or
//! not), the broker's version, the vhost's user policies. Read once per run.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::BrokerError;
use super::equivalence::QueueType;
use super::management::{Management, segment};

/// A node as `GET /api/nodes` lists it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Node {
    pub name: String,
    #[serde(default)]
    pub running: bool,
}

/// A user policy as `GET /api/policies/{vhost}` lists it.
#[derive(Debug, Clone, serde::Deserialize)]
struct Policy {
    name: String,
    #[serde(default)]
    definition: Map<String, Value>,
}

impl Management {
    /// The cluster's nodes, running or not (a node that is down is listed, not running).
    pub async fn nodes(&self) -> Result<Vec<Node>, BrokerError> {
        self.get(
            "nodes",
            &[("columns", "name,running".into())],
            "node listing",
        )
        .await
    }

    /// The definitions of the vhost's user policies, by name.
    pub async fn policies(&self) -> Result<BTreeMap<String, Map<String, Value>>, BrokerError> {
        let path = format!("policies/{}", segment(self.vhost()));
        let all: Vec<Policy> = self
            .get(
                &path,
                &[("columns", "name,definition".into())],
                "policy listing",
            )
            .await?;
        Ok(all.into_iter().map(|p| (p.name, p.definition)).collect())
    }
}

/// The type of the holding queues on a broker of these nodes: quorum on a cluster (more
/// than one node: a holding queue then survives the loss of a node), classic on one node.
pub fn holding_type(nodes: &[Node]) -> QueueType {
    if nodes.len() > 1 {
        QueueType::Quorum
    } else {
        QueueType::Classic
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        Node {
            name: name.into(),
            running: true,
        }
    }

    #[test]
    fn holding_queues_are_quorum_on_a_cluster_only() {
        assert_eq!(holding_type(&[node("rabbit@a")]), QueueType::Classic);
        assert_eq!(holding_type(&[]), QueueType::Classic);
        let three = [node("c1@h"), node("c2@h"), node("c3@h")];
        assert_eq!(holding_type(&three), QueueType::Quorum);
    }

    #[test]
    fn nodes_decode_from_the_listing() {
        let listed: Vec<Node> = serde_json::from_str(
            r#"[{"name":"roll-c1@h","running":true},{"name":"roll-c2@h","running":false}]"#,
        )
        .unwrap();
        assert_eq!(listed.len(), 2);
        assert!(!listed[1].running);
    }
}
