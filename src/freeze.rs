//! The change freeze of a group: a durable queue on the group's broker (`roll.freeze.<group>`)
//! whose arguments record who froze it, why, since when and, optionally, until when. It lives
//! on the broker, beside the group's lock, so that every controller sees it; it outlives every
//! `roll` process and broker restart, until `roll unfreeze` deletes it.
//!
//! While a group is frozen, `roll upgrade` is refused ([`FreezeError::Frozen`], exit 2);
//! `roll rollback` and `roll resume` (work already approved) are not. A freeze whose `until`
//! has passed is expired: it refuses nothing, and `roll status` and `roll check` show it as
//! expired until it is unfrozen (or replaced by a new freeze).
//!
//! The queue is declared through the management API. A redeclare with other values of these
//! (unchecked) arguments is accepted by the broker and changes nothing, so a freeze reads the
//! queue back after declaring it: when two controllers freeze the same group at once, the one
//! whose record is not the broker's is told who froze it first.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::broker::BrokerError;
use crate::broker::equivalence::QueueSettings;
use crate::broker::management::Management;
use crate::{clock, lock, units};

/// Who froze the group: `operator@controller`.
pub const BY_ARGUMENT: &str = "x-roll-freeze-by";
/// Why.
pub const REASON_ARGUMENT: &str = "x-roll-freeze-reason";
/// Since when (RFC 3339, UTC).
pub const SINCE_ARGUMENT: &str = "x-roll-freeze-since";
/// Until when (RFC 3339, UTC); absent: until `roll unfreeze`.
pub const UNTIL_ARGUMENT: &str = "x-roll-freeze-until";

/// The freeze queue's name for a group.
pub fn queue_name(group: &str) -> String {
    format!("roll.freeze.{group}")
}

/// Why a freeze refuses, or could not be read, set or lifted.
#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    /// The group is frozen (and the freeze has not expired).
    #[error(
        "group {group} is frozen: {freeze}; no upgrade until it ends or `roll unfreeze --group \
         {group}` lifts it (nothing was changed)"
    )]
    Frozen { group: String, freeze: Box<Freeze> },
    /// `roll freeze` of a group that is frozen already.
    #[error(
        "group {group} is frozen already: {freeze}; `roll unfreeze --group {group}` lifts it \
         first (nothing was changed)"
    )]
    AlreadyFrozen { group: String, freeze: Box<Freeze> },
    /// The freeze queue was gone right after it was declared (unfrozen at the same moment).
    #[error(
        "group {group}: the freeze was deleted as soon as it was set (someone unfroze the \
         group at the same moment): run `roll freeze` again"
    )]
    Vanished { group: String },
    /// The broker could not be asked.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// A freeze as its queue records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Freeze {
    pub group: String,
    /// `operator@controller`.
    pub by: String,
    pub reason: String,
    /// RFC 3339, as recorded.
    pub since: String,
    /// RFC 3339, as recorded; `None`: until `roll unfreeze`.
    pub until: Option<String>,
}

/// Whether a freeze refuses upgrades now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// It refuses upgrades.
    Frozen,
    /// Its `until` has passed: it refuses nothing.
    Expired,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Frozen => "frozen",
            State::Expired => "expired",
        })
    }
}

/// A freeze read from the broker, and its state at the time of reading (what `status` and
/// `check` print; in JSON its fields and `state`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seen {
    #[serde(flatten)]
    pub freeze: Freeze,
    pub state: State,
}

impl std::fmt::Display for Freeze {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "frozen by {} since {}, {}, reason {:?}",
            self.by,
            self.since,
            match &self.until {
                Some(until) => format!("until {until}"),
                None => "until unfrozen".to_string(),
            },
            self.reason
        )
    }
}

impl Freeze {
    /// The freeze's state at `now_ms`. An `until` that cannot be read keeps the freeze in
    /// force: only a time that has passed lifts it.
    pub fn state_at(&self, now_ms: u64) -> State {
        match self.until.as_deref().map(clock::parse_rfc3339) {
            Some(Ok(until)) if until <= now_ms => State::Expired,
            _ => State::Frozen,
        }
    }

    /// The freeze with its state now.
    pub fn seen_now(self) -> Seen {
        let state = self.state_at(clock::now_millis());
        Seen {
            freeze: self,
            state,
        }
    }

    /// The freeze's queue arguments.
    pub fn arguments(&self) -> BTreeMap<String, Value> {
        let mut arguments = BTreeMap::new();
        arguments.insert(BY_ARGUMENT.to_string(), Value::from(self.by.clone()));
        arguments.insert(
            REASON_ARGUMENT.to_string(),
            Value::from(self.reason.clone()),
        );
        arguments.insert(SINCE_ARGUMENT.to_string(), Value::from(self.since.clone()));
        if let Some(until) = &self.until {
            arguments.insert(UNTIL_ARGUMENT.to_string(), Value::from(until.clone()));
        }
        arguments
    }

    /// A freeze from its queue's arguments; a field missing or not a string is recorded as
    /// `unknown` (someone declared the queue by hand): the queue still freezes the group.
    pub fn from_arguments(group: &str, arguments: &BTreeMap<String, Value>) -> Freeze {
        let text = |key: &str| {
            arguments
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let unknown = || "unknown".to_string();
        Freeze {
            group: group.to_string(),
            by: text(BY_ARGUMENT).unwrap_or_else(unknown),
            reason: text(REASON_ARGUMENT).unwrap_or_else(unknown),
            since: text(SINCE_ARGUMENT).unwrap_or_else(unknown),
            until: text(UNTIL_ARGUMENT),
        }
    }
}

/// Who we are, as a freeze records it: `operator@controller`.
pub fn by_self() -> String {
    format!("{}@{}", lock::operator(), lock::controller())
}

/// When a freeze ends, as `--until` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// At this time (ms since the epoch).
    At(u64),
    /// This long after the freeze is set.
    After(Duration),
}

/// Reads `--until`: an RFC 3339 time (`2026-12-02T18:00:00Z`, `...+02:00`) or a duration from
/// now (`90m`, `2h`, `3d`).
pub fn parse_until(text: &str) -> Result<Until, String> {
    if text.trim().starts_with(|c: char| c.is_ascii_digit())
        && let Ok(after) = units::parse_duration(text)
    {
        if after.is_zero() {
            return Err(format!(
                "--until {text:?}: a freeze of no time freezes nothing"
            ));
        }
        return Ok(Until::After(after));
    }
    clock::parse_rfc3339(text)
        .map(Until::At)
        .map_err(|err| format!("{err}, or a duration from now such as 2h"))
}

impl Until {
    /// The end as ms since the epoch, for a freeze set at `now_ms`.
    pub fn at(self, now_ms: u64) -> u64 {
        match self {
            Until::At(at) => at,
            Until::After(after) => {
                now_ms.saturating_add(u64::try_from(after.as_millis()).unwrap_or(u64::MAX))
            }
        }
    }
}

/// The group's freeze, expired or not, or `None`.
pub async fn read(management: &Management, group: &str) -> Result<Option<Freeze>, BrokerError> {
    let queue = management.queue(&queue_name(group)).await?;
    Ok(queue.map(|q| Freeze::from_arguments(group, &q.arguments)))
}

/// Refuses when the group is frozen (and the freeze has not expired); an expired freeze is
/// returned, to be noted.
pub async fn refuse_if_frozen(
    management: &Management,
    group: &str,
) -> Result<Option<Freeze>, FreezeError> {
    match read(management, group).await? {
        Some(freeze) if freeze.state_at(clock::now_millis()) == State::Frozen => {
            Err(FreezeError::Frozen {
                group: group.to_string(),
                freeze: Box::new(freeze),
            })
        }
        other => Ok(other),
    }
}

/// Sets `freeze` (its group's). An expired freeze in its place is replaced; a freeze in force
/// is refused, naming it, and so is one another controller set at the same moment.
pub async fn set(management: &Management, freeze: &Freeze) -> Result<(), FreezeError> {
    let name = queue_name(&freeze.group);
    let already = |existing: Freeze| FreezeError::AlreadyFrozen {
        group: freeze.group.clone(),
        freeze: Box::new(existing),
    };
    if let Some(existing) = read(management, &freeze.group).await? {
        if existing.state_at(clock::now_millis()) == State::Frozen {
            return Err(already(existing));
        }
        management.delete_queue(&name, false).await?;
    }
    let settings = QueueSettings::new(true, false, freeze.arguments());
    management.declare_queue(&name, &settings).await?;
    match read(management, &freeze.group).await? {
        Some(recorded) if recorded == *freeze => Ok(()),
        Some(recorded) => Err(already(recorded)),
        None => Err(FreezeError::Vanished {
            group: freeze.group.clone(),
        }),
    }
}

/// Lifts the group's freeze (deletes its queue; absent is fine).
pub async fn lift(management: &Management, group: &str) -> Result<(), BrokerError> {
    management.delete_queue(&queue_name(group), false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn freeze(until: Option<&str>) -> Freeze {
        Freeze {
            group: "dev".into(),
            by: "ana@ctl1".into(),
            reason: "release \"3.3\" of the \"big\" customer".into(),
            since: "2026-12-02T10:00:00.000Z".into(),
            until: until.map(str::to_string),
        }
    }

    #[test]
    fn the_arguments_are_read_back() {
        for until in [None, Some("2026-12-02T12:00:00.000Z")] {
            let f = freeze(until);
            assert_eq!(Freeze::from_arguments("dev", &f.arguments()), f);
        }
        assert_eq!(queue_name("dev"), "roll.freeze.dev");
    }

    #[test]
    fn a_queue_declared_by_hand_still_freezes() {
        let f = Freeze::from_arguments("dev", &BTreeMap::new());
        assert_eq!(f.by, "unknown");
        assert_eq!(f.reason, "unknown");
        assert_eq!(f.until, None);
        assert_eq!(f.state_at(u64::MAX), State::Frozen);
    }

    #[test]
    fn a_freeze_expires_at_its_until_and_an_unreadable_until_keeps_it() {
        let at = clock::parse_rfc3339("2026-12-02T12:00:00Z").expect("a time");
        let f = freeze(Some("2026-12-02T12:00:00.000Z"));
        assert_eq!(f.state_at(at - 1), State::Frozen);
        assert_eq!(f.state_at(at), State::Expired);
        assert_eq!(freeze(None).state_at(u64::MAX), State::Frozen);
        assert_eq!(freeze(Some("soon")).state_at(u64::MAX), State::Frozen);
    }

    #[test]
    fn until_is_a_time_or_a_duration() {
        assert_eq!(
            parse_until("2h"),
            Ok(Until::After(Duration::from_secs(7200)))
        );
        let at = parse_until("2026-12-02T14:00:00+02:00").expect("a time");
        assert_eq!(
            at,
            Until::At(clock::parse_rfc3339("2026-12-02T12:00:00Z").expect(""))
        );
        assert_eq!(Until::After(Duration::from_secs(60)).at(1000), 61_000);
        assert_eq!(Until::At(5).at(1000), 5);
        let err = parse_until("tomorrow").unwrap_err();
        assert!(err.contains("RFC 3339") && err.contains("2h"), "{err}");
        assert!(parse_until("0s").unwrap_err().contains("no time"));
    }

    #[test]
    fn the_refusal_names_who_why_and_until() {
        let err = FreezeError::Frozen {
            group: "dev".into(),
            freeze: Box::new(freeze(Some("2026-12-02T12:00:00.000Z"))),
        };
        let text = err.to_string();
        for part in [
            "group dev is frozen",
            "by ana@ctl1",
            "since 2026-12-02T10:00:00.000Z",
            "until 2026-12-02T12:00:00.000Z",
            r#"reason "release \"3.3\" of the \"big\" customer""#,
            "roll unfreeze --group dev",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        assert!(freeze(None).to_string().contains("until unfrozen"));
    }

    #[test]
    fn a_seen_freeze_is_flat_json_with_its_state() {
        let seen = Seen {
            freeze: freeze(None),
            state: State::Expired,
        };
        let value = serde_json::to_value(&seen).expect("json");
        assert_eq!(value["by"], "ana@ctl1");
        assert_eq!(value["until"], Value::Null);
        assert_eq!(value["state"], "expired");
    }
}
