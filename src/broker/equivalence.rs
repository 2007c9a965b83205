//! Queue equivalence as the broker decides it, kept in one place: which arguments the broker
//! checks on a redeclare, how values are normalised, and which settings a policy could apply.
//!
//! RabbitMQ refuses (406 PRECONDITION_FAILED) a redeclare whose durable, auto_delete or
//! exclusive flag differs, or whose value of a *checked* argument differs (absent counts as a
//! value). Other arguments are accepted and silently not applied. An absent `x-queue-type` is
//! `classic`. `roll queue-diff --probe` confirms these rules against the live broker.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::Value;

/// The arguments RabbitMQ (3.10 to 3.13) compares when a queue is declared again.
pub const CHECKED_ARGUMENTS: [&str; 19] = [
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-queue-type",
    "x-quorum-initial-group-size",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
];

/// Arguments whose values are durations in milliseconds (a playbook may write `"7d"`).
pub const DURATION_ARGUMENTS: [&str; 2] = ["x-expires", "x-message-ttl"];

/// Arguments that a policy can set on an existing queue, with the policy key.
pub const POLICY_KEYS: [(&str, &str); 7] = [
    ("x-expires", "expires"),
    ("x-message-ttl", "message-ttl"),
    ("x-max-length", "max-length"),
    ("x-max-length-bytes", "max-length-bytes"),
    ("x-dead-letter-exchange", "dead-letter-exchange"),
    ("x-dead-letter-routing-key", "dead-letter-routing-key"),
    ("x-overflow", "overflow"),
];

/// True when the broker compares this argument on a redeclare.
pub fn is_checked(argument: &str) -> bool {
    CHECKED_ARGUMENTS.contains(&argument)
}

/// The policy key that applies this argument, if any.
pub fn policy_key(argument: &str) -> Option<&'static str> {
    POLICY_KEYS
        .iter()
        .find(|(arg, _)| *arg == argument)
        .map(|(_, key)| *key)
}

/// A queue's declared settings, normalised.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct QueueSettings {
    pub durable: bool,
    pub auto_delete: bool,
    pub arguments: BTreeMap<String, Value>,
}

impl QueueSettings {
    /// Settings with their arguments normalised.
    pub fn new(durable: bool, auto_delete: bool, arguments: BTreeMap<String, Value>) -> Self {
        QueueSettings {
            durable,
            auto_delete,
            arguments: normalise(arguments),
        }
    }
}

impl fmt::Display for QueueSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = vec![];
        if self.durable {
            parts.push("durable".to_string());
        }
        if self.auto_delete {
            parts.push("auto_delete".to_string());
        }
        for (key, value) in &self.arguments {
            parts.push(format!("{key}={}", show(Some(value))));
        }
        if parts.is_empty() {
            write!(f, "-")
        } else {
            write!(f, "{}", parts.join(" "))
        }
    }
}

/// Normalises argument values as the broker compares them: integral numbers as integers,
/// an `x-queue-type` of `classic` as absent.
pub fn normalise(arguments: BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    arguments
        .into_iter()
        .filter(|(key, value)| !(key == "x-queue-type" && value.as_str() == Some("classic")))
        .map(|(key, value)| (key, normalise_value(value)))
        .collect()
}

fn normalise_value(value: Value) -> Value {
    match &value {
        Value::Number(n) if n.as_i64().is_none() && n.as_u64().is_none() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => value,
        },
        _ => value,
    }
}

/// A value for messages: `none` when absent, strings without quotes.
pub fn show(value: Option<&Value>) -> String {
    match value {
        None => "none".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// One differing setting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    pub setting: String,
    pub current: Option<Value>,
    pub target: Option<Value>,
    /// True when the broker refuses a redeclare because of this difference.
    pub checked: bool,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {}",
            self.setting,
            show(self.current.as_ref()),
            show(self.target.as_ref())
        )
    }
}

/// Every difference between a queue's current settings and the target ones.
pub fn differences(current: &QueueSettings, target: &QueueSettings) -> Vec<Difference> {
    let mut out = Vec::new();
    for (setting, a, b) in [
        ("durable", current.durable, target.durable),
        ("auto_delete", current.auto_delete, target.auto_delete),
    ] {
        if a != b {
            out.push(Difference {
                setting: setting.into(),
                current: Some(Value::Bool(a)),
                target: Some(Value::Bool(b)),
                checked: true,
            });
        }
    }
    let keys: std::collections::BTreeSet<&String> = current
        .arguments
        .keys()
        .chain(target.arguments.keys())
        .collect();
    for key in keys {
        let a = current.arguments.get(key);
        let b = target.arguments.get(key);
        if a != b {
            out.push(Difference {
                setting: key.clone(),
                current: a.cloned(),
                target: b.cloned(),
                checked: is_checked(key),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn classic_queue_type_is_the_same_as_none() {
        let a = QueueSettings::new(true, false, args(&[("x-queue-type", json!("classic"))]));
        let b = QueueSettings::new(true, false, BTreeMap::new());
        assert!(differences(&a, &b).is_empty());
        let q = QueueSettings::new(true, false, args(&[("x-queue-type", json!("quorum"))]));
        let d = differences(&b, &q);
        assert_eq!(d.len(), 1);
        assert!(d[0].checked);
    }

    #[test]
    fn integral_floats_equal_integers() {
        let a = QueueSettings::new(true, false, args(&[("x-expires", json!(604800000.0))]));
        let b = QueueSettings::new(true, false, args(&[("x-expires", json!(604800000))]));
        assert!(differences(&a, &b).is_empty());
    }

    #[test]
    fn checked_and_unchecked_differences_are_told_apart() {
        let current = QueueSettings::new(true, false, args(&[("x-custom", json!("a"))]));
        let target = QueueSettings::new(
            true,
            false,
            args(&[("x-custom", json!("b")), ("x-expires", json!(604800000))]),
        );
        let d = differences(&current, &target);
        assert_eq!(d.len(), 2);
        let custom = d.iter().find(|x| x.setting == "x-custom").unwrap();
        assert!(!custom.checked);
        let expires = d.iter().find(|x| x.setting == "x-expires").unwrap();
        assert!(expires.checked);
        assert_eq!(expires.to_string(), "x-expires none -> 604800000");
    }

    #[test]
    fn flags_are_checked() {
        let a = QueueSettings::new(true, false, BTreeMap::new());
        let b = QueueSettings::new(false, true, BTreeMap::new());
        let d = differences(&a, &b);
        assert_eq!(d.len(), 2);
        assert!(d.iter().all(|x| x.checked));
        assert_eq!(d[0].to_string(), "durable true -> false");
    }

    #[test]
    fn policy_keys_exist_for_expires_but_not_queue_type() {
        assert_eq!(policy_key("x-expires"), Some("expires"));
        assert_eq!(policy_key("x-queue-type"), None);
        assert!(DURATION_ARGUMENTS.iter().all(|a| is_checked(a)));
    }
}
