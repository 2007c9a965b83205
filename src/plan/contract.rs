//! The approved plan is the contract: a resumed run and a rollback execute the release as it
//! was approved (journaled with the plan), never the playbook file or the inventory as they are
//! now. When those have changed since, the run is refused with what changed.

use std::collections::BTreeMap;

use serde_json::Value;

use super::upgrade::UpgradePlan;
use crate::inventory::Group;
use crate::playbook::Playbook;

/// Longest value shown in a difference.
const SHOWN: usize = 120;

/// Every place where `now` differs from `approved`: `path: approved -> now`.
pub fn differences(approved: &Value, now: &Value) -> Vec<String> {
    let mut out = vec![];
    walk("", approved, now, &mut out);
    out
}

fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                walk(
                    &here,
                    x.get(key).unwrap_or(&Value::Null),
                    y.get(key).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                walk(&format!("{path}[{i}]"), p, q, out);
            }
        }
        _ if a == b => {}
        _ => out.push(format!("{path}: {} -> {}", shown(a), shown(b))),
    }
}

fn shown(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > SHOWN {
        let cut: String = text.chars().take(SHOWN).collect();
        format!("{cut}... ({} characters)", text.chars().count())
    } else {
        text
    }
}

/// A release as compared: where its files were read from does not matter, what they say does.
fn comparable(release: &Playbook) -> Value {
    let mut value = serde_json::to_value(release).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.remove("path");
        // A file's template and an artifact's source: where, not what (the content and
        // the checksum are compared).
        for (list, key) in [("files", "template"), ("artifacts", "source")] {
            if let Some(Value::Array(items)) = map.get_mut(list) {
                for item in items {
                    if let Some(item) = item.as_object_mut() {
                        item.remove(key);
                    }
                }
            }
        }
    }
    value
}

/// What differs between the release as approved and the playbook as it reads now.
pub fn release_changes(approved: &Playbook, now: &Playbook) -> Vec<String> {
    differences(&comparable(approved), &comparable(now))
}

/// The placeholders' values of the group's hosts, as the inventory gives them now.
pub fn vars_now(group: &Group, release: &Playbook) -> BTreeMap<String, BTreeMap<String, String>> {
    group
        .hosts
        .iter()
        .map(|h| {
            let vars = release
                .vars(h, &group.broker)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            (h.name.clone(), vars)
        })
        .collect()
}

/// What differs between the hosts' values as approved and as the inventory gives them now
/// (a plan journaled before they were recorded has nothing to compare).
pub fn vars_changes(plan: &UpgradePlan, group: &Group, release: &Playbook) -> Vec<String> {
    if plan.vars.is_empty() {
        return vec![];
    }
    let now = serde_json::to_value(vars_now(group, release)).unwrap_or(Value::Null);
    let approved = serde_json::to_value(&plan.vars).unwrap_or(Value::Null);
    differences(&approved, &now)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn differences_name_the_place_and_both_values() {
        let a =
            json!({"commands": {"stop": "sr3 stop", "timeout": "3m"}, "files": [{"content": "x"}]});
        let b = json!({"commands": {"stop": "sr3 stop --force", "timeout": "3m"}, "files": [{"content": "y"}], "new": 1});
        assert_eq!(
            differences(&a, &b),
            [
                "commands.stop: \"sr3 stop\" -> \"sr3 stop --force\"",
                "files[0].content: \"x\" -> \"y\"",
                "new: null -> 1",
            ]
        );
        assert!(differences(&a, &a).is_empty());
    }

    #[test]
    fn a_release_read_from_elsewhere_is_the_same_release() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let path = root.join("playbooks/sr3-queue-expire.toml");
        let approved = crate::playbook::load(&path).unwrap();
        let mut moved = approved.clone();
        moved.path = "/elsewhere/p.toml".into();
        moved.files[0].template = "/elsewhere/pump.conf".into();
        moved.artifacts[0].source = "/elsewhere/sr3.whl".into();
        assert!(release_changes(&approved, &moved).is_empty());
        let mut other_wheel = approved.clone();
        other_wheel.artifacts[0].sha256 = "0".repeat(64);
        let changes = release_changes(&approved, &other_wheel);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(
            changes[0].starts_with("artifacts[0].sha256: "),
            "{changes:?}"
        );
        let mut edited = approved.clone();
        edited.files[0].content.push_str("\nmessageAgeMax 1h\n");
        edited.commands.timeout = std::time::Duration::from_secs(60);
        let changes = release_changes(&approved, &edited);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(
            changes[0].starts_with("commands.timeout: \"3m\" -> \"1m\""),
            "{changes:?}"
        );
        assert!(changes[1].starts_with("files[0].content: "), "{changes:?}");
    }
}
