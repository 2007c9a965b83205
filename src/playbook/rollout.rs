//! How a release rolls out over a half: its waves, the gates between them, and what a failure
//! does. A playbook's `[rollout]` section sets them; `roll upgrade`'s options override it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::HumanDuration;

/// Default time a gate has to pass.
pub const DEFAULT_GATE_TIMEOUT: Duration = Duration::from_secs(120);

/// A number of hosts, or a percentage of the half's hosts (rounded up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bound {
    Count(usize),
    Percent(u32),
}

impl Bound {
    /// The number of hosts out of `total`.
    pub fn of(self, total: usize) -> usize {
        match self {
            Bound::Count(n) => n,
            Bound::Percent(p) => (total * p as usize).div_ceil(100),
        }
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Count(n) => write!(f, "{n}"),
            Bound::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl FromStr for Bound {
    type Err = String;

    /// `3` or `25%` (at most 100%).
    fn from_str(s: &str) -> Result<Bound, String> {
        let s = s.trim();
        let bad = || format!("{s:?} is neither a number of hosts (3) nor a percentage (25%)");
        if let Some(p) = s.strip_suffix('%') {
            let p: u32 = p.trim().parse().map_err(|_| bad())?;
            if p > 100 {
                return Err(format!("{s:?}: a percentage is at most 100%"));
            }
            Ok(Bound::Percent(p))
        } else {
            s.parse().map(Bound::Count).map_err(|_| bad())
        }
    }
}

/// Parses `--waves`: cumulative bounds separated by commas (`1,25%,100%`).
pub fn parse_waves(s: &str) -> Result<Vec<Bound>, String> {
    let bounds = s
        .split(',')
        .map(Bound::from_str)
        .collect::<Result<Vec<_>, _>>()?;
    if bounds.is_empty() {
        return Err("no wave given: write e.g. 1,25%,100%".into());
    }
    Ok(bounds)
}

/// What the run does after a failure it does not tolerate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Stop where it is: `roll resume` continues, `roll rollback` undoes.
    #[default]
    Stop,
    /// Roll the run back at once (the untouched half first).
    Rollback,
}

impl fmt::Display for OnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnFailure::Stop => "stop",
            OnFailure::Rollback => "rollback",
        })
    }
}

impl FromStr for OnFailure {
    type Err = String;

    fn from_str(s: &str) -> Result<OnFailure, String> {
        match s {
            "stop" => Ok(OnFailure::Stop),
            "rollback" => Ok(OnFailure::Rollback),
            other => Err(format!("{other:?}: use stop or rollback")),
        }
    }
}

/// One wave of a playbook's `[[rollout.waves]]`: the hosts not in an earlier wave that match
/// any of `hosts` (globs; all when empty) and every one of `vars`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveRule {
    pub hosts: Vec<String>,
    pub vars: BTreeMap<String, String>,
    /// End the run after this wave (status `paused`; `roll resume` continues).
    pub pause_after: bool,
    /// Where it is in the playbook.
    pub line: usize,
}

impl WaveRule {
    /// True when a host of this name and with these inventory variables is in the wave.
    pub fn takes(&self, name: &str, vars: &BTreeMap<String, String>) -> bool {
        let named = self.hosts.is_empty() || self.hosts.iter().any(|p| super::glob_match(p, name));
        named && self.vars.iter().all(|(k, v)| vars.get(k) == Some(v))
    }
}

/// A playbook's `[rollout]`: everything optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutRules {
    /// Waves by host pattern or variable, in order; empty: the canary, then the rest.
    #[serde(default)]
    pub waves: Vec<WaveRule>,
    /// The caught-up gate: every queue of a wave's hosts at most this many messages, and
    /// consumed.
    #[serde(default)]
    pub max_backlog: Option<u64>,
    /// How long the gates must keep passing after a wave before the next one starts.
    #[serde(default)]
    pub min_healthy: Option<HumanDuration>,
    /// How long a gate may take to pass.
    #[serde(with = "crate::units::duration")]
    pub gate_timeout: Duration,
    #[serde(default)]
    pub max_failures: Option<Bound>,
    #[serde(default)]
    pub on_failure: Option<OnFailure>,
}

impl Default for RolloutRules {
    fn default() -> RolloutRules {
        RolloutRules {
            waves: vec![],
            max_backlog: None,
            min_healthy: None,
            gate_timeout: DEFAULT_GATE_TIMEOUT,
            max_failures: None,
            on_failure: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_read_and_resolve() {
        assert_eq!("3".parse::<Bound>(), Ok(Bound::Count(3)));
        assert_eq!(" 25% ".parse::<Bound>(), Ok(Bound::Percent(25)));
        assert!(
            "150%"
                .parse::<Bound>()
                .unwrap_err()
                .contains("at most 100%")
        );
        assert!("x".parse::<Bound>().unwrap_err().contains("percentage"));
        assert_eq!(Bound::Percent(25).of(5), 2);
        assert_eq!(Bound::Percent(100).of(5), 5);
        assert_eq!(Bound::Count(2).of(5), 2);
        assert_eq!(
            parse_waves("1,25%,100%"),
            Ok(vec![
                Bound::Count(1),
                Bound::Percent(25),
                Bound::Percent(100)
            ])
        );
        assert!(parse_waves("1,,2").is_err());
    }

    #[test]
    fn a_wave_takes_hosts_by_name_and_variable() {
        let rule = WaveRule {
            hosts: vec!["px*".into()],
            vars: [("tier".to_string(), "feed".to_string())].into(),
            ..WaveRule::default()
        };
        let feed: BTreeMap<String, String> = [("tier".to_string(), "feed".to_string())].into();
        assert!(rule.takes("px5", &feed));
        assert!(!rule.takes("px5", &BTreeMap::new()));
        assert!(!rule.takes("other", &feed));
        assert!(WaveRule::default().takes("anything", &BTreeMap::new()));
    }
}
