//! Queue equivalence as the broker decides it, kept in one place: which arguments the broker
//! checks on a redeclare (per queue type and RabbitMQ version), how values are normalised,
//! which settings a policy could apply, and which value wins when both set one.
//!
//! RabbitMQ refuses (406 PRECONDITION_FAILED) a redeclare whose durable, auto_delete or
//! exclusive flag differs, or whose value of an argument the *existing queue's type* checks
//! differs (absent counts as a value). Other arguments are accepted and silently not applied.
//! An absent `x-queue-type` is `classic`. On 3.10.8 (read from its code,
//! `rabbit_amqqueue:assert_args_equivalence`, each type's `capabilities()`): a classic queue
//! checks 13 arguments, a quorum queue 15 (not `x-max-priority`, `x-queue-mode`,
//! `x-queue-version`), a stream 6; a *new* quorum queue is refused when not durable, when
//! auto-delete or exclusive, or with an argument of another type only. `roll queue-diff
//! --probe` confirms these rules against the live broker.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::Value;

/// Every argument some queue type of some RabbitMQ version compares when a queue is declared
/// again: what is assumed checked when the broker's version is unknown (or newer than what
/// `roll` knows), so that a difference is never taken for one the broker lets pass.
pub const CHECKED_ARGUMENTS: [&str; 22] = [
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
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
    "x-queue-master-locator",
    "x-quorum-initial-group-size",
    "x-delivery-limit",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
];

/// The arguments a classic queue compares on RabbitMQ 3.10 to 3.13
/// (`rabbit_classic_queue:capabilities()`, read from 3.10.8's code).
const CLASSIC_3: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-queue-type",
    "x-queue-master-locator",
];

/// Classic queues from RabbitMQ 4.0: as 3.x, and the leader locator.
const CLASSIC_4: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-queue-type",
    "x-queue-master-locator",
    "x-queue-leader-locator",
];

/// The arguments a quorum queue compares on RabbitMQ 3.10 to 4.2
/// (`rabbit_quorum_queue:capabilities()`, read from 3.10.8's code). Not `x-max-priority`,
/// `x-queue-mode`, `x-queue-version`: a redeclare with them is accepted and they never apply.
const QUORUM_3: &[&str] = &[
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-overflow",
    "x-single-active-consumer",
    "x-queue-type",
    "x-quorum-initial-group-size",
    "x-delivery-limit",
    "x-message-ttl",
    "x-queue-leader-locator",
];

/// The arguments a stream compares on RabbitMQ 3.10 to 4.2.
const STREAM_3: &[&str] = &[
    "x-max-length-bytes",
    "x-queue-type",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
];

/// Arguments whose values are durations in milliseconds (a playbook may write `"7d"`).
pub const DURATION_ARGUMENTS: [&str; 2] = ["x-expires", "x-message-ttl"];

/// Arguments that a policy can set on an existing queue, with the policy key.
pub const POLICY_KEYS: [(&str, &str); 14] = [
    ("x-expires", "expires"),
    ("x-message-ttl", "message-ttl"),
    ("x-max-length", "max-length"),
    ("x-max-length-bytes", "max-length-bytes"),
    ("x-dead-letter-exchange", "dead-letter-exchange"),
    ("x-dead-letter-routing-key", "dead-letter-routing-key"),
    ("x-overflow", "overflow"),
    ("x-dead-letter-strategy", "dead-letter-strategy"),
    ("x-delivery-limit", "delivery-limit"),
    ("x-max-in-memory-length", "max-in-memory-length"),
    ("x-max-in-memory-bytes", "max-in-memory-bytes"),
    ("x-queue-mode", "queue-mode"),
    ("x-queue-version", "queue-version"),
    ("x-queue-leader-locator", "queue-leader-locator"),
];

/// True when the broker compares this argument on a redeclare (some queue type of some
/// version does: see [`Rules::is_checked`] for a known type and version).
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

/// The policy keys a queue type ignores (`unsupported_policies` of 3.10.8, the keys of
/// [`POLICY_KEYS`] only).
fn unsupported_policy(kind: QueueType, key: &str) -> bool {
    let unsupported: &[&str] = match kind {
        QueueType::Classic => &[
            "delivery-limit",
            "dead-letter-strategy",
            "queue-leader-locator",
        ],
        QueueType::Quorum => &["queue-mode", "queue-version"],
        QueueType::Stream => &[
            "expires",
            "message-ttl",
            "dead-letter-exchange",
            "dead-letter-routing-key",
            "max-length",
            "max-in-memory-length",
            "max-in-memory-bytes",
            "overflow",
            "queue-mode",
            "delivery-limit",
            "dead-letter-strategy",
        ],
    };
    unsupported.contains(&key)
}

/// The policy key that applies this argument to a queue of this type, if any.
pub fn policy_key_for(kind: QueueType, argument: &str) -> Option<&'static str> {
    policy_key(argument).filter(|key| !unsupported_policy(kind, key))
}

/// A queue's type: its `x-queue-type` (absent: classic).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    #[default]
    Classic,
    Quorum,
    Stream,
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream",
        }
    }

    /// The type a name gives (`classic`, `quorum`, `stream`); `None` for any other.
    pub fn parse(name: &str) -> Option<QueueType> {
        match name {
            "classic" => Some(QueueType::Classic),
            "quorum" => Some(QueueType::Quorum),
            "stream" => Some(QueueType::Stream),
            _ => None,
        }
    }

    /// The type these arguments declare (absent or unknown `x-queue-type`: classic).
    pub fn of(arguments: &BTreeMap<String, Value>) -> QueueType {
        arguments
            .get("x-queue-type")
            .and_then(Value::as_str)
            .and_then(QueueType::parse)
            .unwrap_or_default()
    }
}

impl fmt::Display for QueueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A RabbitMQ version, as `/api/overview` gives it (`3.10.8`, `4.0.0-rc.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    /// The version at the start of `text`; `None` when it does not start with `N.N`.
    pub fn parse(text: &str) -> Option<Version> {
        let mut parts = text.trim().split(['.', '-', '+']);
        let mut number = || parts.next().and_then(|p| p.parse::<u32>().ok());
        let major = number()?;
        let minor = number()?;
        let patch = number().unwrap_or(0);
        Some(Version {
            major,
            minor,
            patch,
        })
    }

    const fn new(major: u32, minor: u32) -> Version {
        Version {
            major,
            minor,
            patch: 0,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Which value a queue uses when both a policy and its own argument set a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The lower of the two.
    Lower,
    /// The queue's argument.
    Argument,
    /// The policy's value.
    Policy,
}

/// The broker's equivalence rules for its version (see the module's text). The version is
/// read once per run from the management API; unknown, every argument any version checks
/// is taken as checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rules {
    version: Option<Version>,
}

impl Rules {
    /// The rules of the broker that says it runs `version` (`rabbitmq_version`).
    pub fn of_version(version: &str) -> Rules {
        Rules {
            version: Version::parse(version),
        }
    }

    /// The broker's version, when known.
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// The arguments a queue of this type compares on a redeclare.
    pub fn checked(&self, kind: QueueType) -> &'static [&'static str] {
        let known = self
            .version
            .filter(|v| *v >= Version::new(3, 10) && *v < Version::new(4, 3));
        let Some(version) = known else {
            return &CHECKED_ARGUMENTS;
        };
        match kind {
            QueueType::Classic if version >= Version::new(4, 0) => CLASSIC_4,
            QueueType::Classic => CLASSIC_3,
            QueueType::Quorum => QUORUM_3,
            QueueType::Stream => STREAM_3,
        }
    }

    /// True when a queue of this type compares the argument on a redeclare.
    pub fn is_checked(&self, kind: QueueType, argument: &str) -> bool {
        self.checked(kind).contains(&argument)
    }

    /// Every difference between a queue's current settings and the target ones, each checked
    /// or not as the current queue's type decides (a type change is always checked).
    pub fn differences(&self, current: &QueueSettings, target: &QueueSettings) -> Vec<Difference> {
        let kind = current.queue_type();
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
                    checked: key == "x-queue-type" || self.is_checked(kind, key),
                });
            }
        }
        out
    }

    /// Why the broker would refuse to declare a new queue with these settings (3.10.8's
    /// checks): a quorum queue or stream that is not durable or is auto-delete, an argument
    /// of another queue type, an unknown queue type. Empty when it would not.
    pub fn refusals(&self, target: &QueueSettings) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(name) = target.arguments.get("x-queue-type") {
            let known = name.as_str().and_then(QueueType::parse);
            if known.is_none() {
                out.push(format!("unknown queue type {}", show(Some(name))));
                return out;
            }
        }
        let kind = target.queue_type();
        if kind != QueueType::Classic {
            if !target.durable {
                out.push(format!("a {kind} queue must be durable (durable = false)"));
            }
            if target.auto_delete {
                out.push(format!(
                    "a {kind} queue cannot be auto-delete (auto_delete = true)"
                ));
            }
        }
        let own = self.declared(kind);
        for key in target.arguments.keys() {
            if !own.contains(&key.as_str()) && CHECKED_ARGUMENTS.contains(&key.as_str()) {
                out.push(format!("argument {key} is not one of a {kind} queue"));
            }
        }
        out
    }

    /// The arguments a new queue of this type may be declared with, of those some type has.
    fn declared(&self, kind: QueueType) -> &'static [&'static str] {
        match kind {
            QueueType::Classic => match self.version {
                Some(v) if v >= Version::new(4, 0) => CLASSIC_4,
                _ => CLASSIC_3,
            },
            QueueType::Quorum => QUORUM_3,
            QueueType::Stream => STREAM_3,
        }
    }

    /// Which value a queue of this type uses when a policy and its argument both set `key`
    /// (a policy key: `expires`, `max-length`, ...), as 3.10.8 resolves it
    /// (`rabbit_amqqueue_process`, `rabbit_quorum_queue`).
    pub fn resolution(&self, kind: QueueType, key: &str) -> Resolution {
        match (kind, key) {
            (_, "max-length" | "max-length-bytes" | "message-ttl") => Resolution::Lower,
            (QueueType::Classic, "expires") => Resolution::Lower,
            (
                QueueType::Quorum,
                "max-in-memory-length" | "max-in-memory-bytes" | "delivery-limit",
            ) => Resolution::Lower,
            (QueueType::Quorum, "expires" | "overflow") => Resolution::Policy,
            _ => Resolution::Argument,
        }
    }

    /// The value in effect when a queue of this type has `argument` and a policy sets the
    /// same key to `policy`, and why.
    pub fn in_effect(
        &self,
        kind: QueueType,
        key: &str,
        argument: &Value,
        policy: &Value,
    ) -> (Value, &'static str) {
        match self.resolution(kind, key) {
            Resolution::Argument => (argument.clone(), "the queue's argument wins"),
            Resolution::Policy => (policy.clone(), "the policy wins"),
            Resolution::Lower => match (argument.as_f64(), policy.as_f64()) {
                (Some(a), Some(p)) if p < a => (policy.clone(), "the lower value wins"),
                _ => (argument.clone(), "the lower value wins"),
            },
        }
    }
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

    /// The queue's type (absent `x-queue-type`: classic).
    pub fn queue_type(&self) -> QueueType {
        QueueType::of(&self.arguments)
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

/// Every difference between a queue's current settings and the target ones, with the
/// broker's version unknown (see [`Rules::differences`]).
pub fn differences(current: &QueueSettings, target: &QueueSettings) -> Vec<Difference> {
    Rules::default().differences(current, target)
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

    fn quorum(pairs: &[(&str, Value)]) -> QueueSettings {
        let mut all = args(pairs);
        all.insert("x-queue-type".into(), json!("quorum"));
        QueueSettings::new(true, false, all)
    }

    #[test]
    fn versions_are_read_from_the_overview() {
        let v = Version::parse("3.10.8").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (3, 10, 8));
        assert_eq!(Version::parse("4.0.0-rc.1").unwrap().to_string(), "4.0.0");
        assert_eq!(Version::parse("3.13").unwrap().to_string(), "3.13.0");
        assert_eq!(Version::parse("garbage"), None);
        assert_eq!(Rules::of_version("").version(), None);
    }

    #[test]
    fn a_quorum_queue_on_3_10_lets_classic_only_arguments_pass() {
        let rules = Rules::of_version("3.10.8");
        // x-max-priority is not a quorum queue's: a redeclare with it is accepted (unapplied).
        let d = rules.differences(&quorum(&[]), &quorum(&[("x-max-priority", json!(5))]));
        assert_eq!(d.len(), 1);
        assert!(!d[0].checked, "{d:?}");
        // x-delivery-limit is: refused.
        let d = rules.differences(&quorum(&[]), &quorum(&[("x-delivery-limit", json!(5))]));
        assert!(d[0].checked, "{d:?}");
        // A classic queue checks x-max-priority but not x-delivery-limit.
        let classic = QueueSettings::new(true, false, BTreeMap::new());
        let with = |k: &str| QueueSettings::new(true, false, args(&[(k, json!(5))]));
        assert!(rules.differences(&classic, &with("x-max-priority"))[0].checked);
        assert!(!rules.differences(&classic, &with("x-delivery-limit"))[0].checked);
        // Unknown version: everything any version checks.
        let unknown = Rules::default();
        assert!(unknown.differences(&classic, &with("x-delivery-limit"))[0].checked);
        assert!(
            unknown.differences(&quorum(&[]), &quorum(&[("x-max-priority", json!(5))]))[0].checked
        );
    }

    #[test]
    fn a_type_change_is_checked_both_ways() {
        let rules = Rules::of_version("3.10.8");
        let classic = QueueSettings::new(true, false, args(&[("x-queue-type", json!("classic"))]));
        let to_quorum = rules.differences(&classic, &quorum(&[]));
        assert_eq!(to_quorum.len(), 1);
        assert!(to_quorum[0].checked);
        assert_eq!(to_quorum[0].to_string(), "x-queue-type none -> quorum");
        let back = rules.differences(&quorum(&[]), &classic);
        assert!(back[0].checked);
        assert_eq!(classic.queue_type(), QueueType::Classic);
        assert_eq!(quorum(&[]).queue_type(), QueueType::Quorum);
    }

    #[test]
    fn classic_queues_of_4_0_check_the_leader_locator() {
        let classic = QueueSettings::new(true, false, BTreeMap::new());
        let target = QueueSettings::new(
            true,
            false,
            args(&[("x-queue-leader-locator", json!("balanced"))]),
        );
        assert!(!Rules::of_version("3.13.7").differences(&classic, &target)[0].checked);
        assert!(Rules::of_version("4.0.5").differences(&classic, &target)[0].checked);
    }

    #[test]
    fn a_quorum_target_must_be_durable_and_not_auto_delete() {
        let rules = Rules::of_version("3.10.8");
        assert!(
            rules
                .refusals(&quorum(&[("x-expires", json!(1000))]))
                .is_empty()
        );
        let mut bad = quorum(&[("x-max-priority", json!(10))]);
        bad.durable = false;
        bad.auto_delete = true;
        let why = rules.refusals(&bad);
        assert_eq!(why.len(), 3, "{why:?}");
        assert!(why[0].contains("must be durable"), "{why:?}");
        assert!(why[1].contains("auto-delete"), "{why:?}");
        assert!(why[2].contains("x-max-priority"), "{why:?}");
        // A classic target with a quorum-only argument is refused too.
        let classic = QueueSettings::new(true, true, args(&[("x-delivery-limit", json!(3))]));
        assert_eq!(rules.refusals(&classic).len(), 1);
        let odd = QueueSettings::new(true, false, args(&[("x-queue-type", json!("lazy"))]));
        assert!(rules.refusals(&odd)[0].contains("unknown queue type lazy"));
    }

    #[test]
    fn the_value_in_effect_depends_on_the_queue_type() {
        let rules = Rules::of_version("3.10.8");
        // Classic: the lower expires; quorum: the policy's.
        let (v, _) = rules.in_effect(QueueType::Classic, "expires", &json!(1000), &json!(5000));
        assert_eq!(v, json!(1000));
        let (v, why) = rules.in_effect(QueueType::Quorum, "expires", &json!(1000), &json!(5000));
        assert_eq!((v, why), (json!(5000), "the policy wins"));
        let (v, _) = rules.in_effect(QueueType::Quorum, "message-ttl", &json!(9), &json!(5));
        assert_eq!(v, json!(5));
        let (v, _) = rules.in_effect(
            QueueType::Classic,
            "dead-letter-exchange",
            &json!("a"),
            &json!("b"),
        );
        assert_eq!(v, json!("a"));
        assert_eq!(policy_key_for(QueueType::Quorum, "x-queue-mode"), None);
        assert_eq!(
            policy_key_for(QueueType::Classic, "x-queue-mode"),
            Some("queue-mode")
        );
    }
}
