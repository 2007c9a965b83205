//! The waves of an upgrade, the gates between them and its failure policy, as plan data:
//! computed from the playbook's `[rollout]` and the operator's options, shown with the plan,
//! journaled with it and executed as they are.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::playbook::rollout::{Bound, DEFAULT_GATE_TIMEOUT, OnFailure, RolloutRules};
use crate::step::Step;
use crate::units::HumanDuration;

/// One wave: hosts upgraded together (`parallel` at a time), then the steps after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Wave {
    /// From 1.
    pub number: usize,
    pub hosts: Vec<String>,
    /// Steps on the broker once every host of the wave is through (soak, pause).
    pub after: Vec<Step>,
}

impl Wave {
    /// True when the run ends paused after this wave.
    pub fn pauses(&self) -> bool {
        self.after.iter().any(|s| matches!(s, Step::Pause(_)))
    }
}

/// What must hold on a wave's hosts before the next wave starts (besides each host's
/// verification).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gates {
    /// The playbook's gate command runs on each host.
    pub command: bool,
    /// Every queue of the host at most this many messages, and consumed.
    pub max_backlog: Option<u64>,
    /// How long the gates must keep passing after the wave.
    pub min_healthy: Option<HumanDuration>,
    /// How long a host's gate may take to pass.
    pub timeout: HumanDuration,
}

impl Default for Gates {
    fn default() -> Gates {
        Gates {
            command: false,
            max_backlog: None,
            min_healthy: None,
            timeout: HumanDuration(DEFAULT_GATE_TIMEOUT),
        }
    }
}

impl Gates {
    /// True when each host has a gate step.
    pub fn per_host(&self) -> bool {
        self.command || self.max_backlog.is_some()
    }
}

/// What the run does with a failure.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FailurePolicy {
    /// Hosts that may fail while the run goes on (never in the first wave, never in a run
    /// whose hosts all stop at once).
    pub max_failures: usize,
    /// As asked: `2`, `25%`.
    pub asked: Option<Bound>,
    /// After a failure not tolerated.
    pub on_failure: OnFailure,
}

/// Where `--pause-after` ends the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseAfter {
    Canary,
    Wave(usize),
}

impl PauseAfter {
    fn wave(self) -> usize {
        match self {
            PauseAfter::Canary => 1,
            PauseAfter::Wave(n) => n,
        }
    }
}

impl FromStr for PauseAfter {
    type Err = String;

    fn from_str(s: &str) -> Result<PauseAfter, String> {
        match s {
            "canary" => Ok(PauseAfter::Canary),
            n => match n.parse::<usize>() {
                Ok(n) if n > 0 => Ok(PauseAfter::Wave(n)),
                _ => Err(format!("{n:?}: use canary or a wave number (1, 2, ...)")),
            },
        }
    }
}

/// The operator's rollout options (they override the playbook's `[rollout]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Asked {
    pub waves: Option<Vec<Bound>>,
    pub pause_after: Option<PauseAfter>,
    pub max_failures: Option<Bound>,
    pub on_failure: Option<OnFailure>,
}

/// A rollout that cannot be planned as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RolloutError(pub String);

/// A host of the half, as waves see it.
pub struct Member<'a> {
    pub name: &'a str,
    pub vars: &'a BTreeMap<String, String>,
}

/// The half's waves, over its hosts in plan order (the canary first, passive hosts last).
/// `together`: every host of the half stops at once (shared queues), so the run cannot pause
/// between waves.
pub fn waves(
    members: &[Member],
    rules: &RolloutRules,
    asked: &Asked,
    together: bool,
) -> Result<Vec<Wave>, RolloutError> {
    let (groups, mut pauses) = match (&asked.waves, rules.waves.is_empty()) {
        (Some(bounds), _) => (by_count(members, bounds)?, vec![]),
        (None, false) => by_rule(members, rules),
        (None, true) => (
            by_count(members, &[Bound::Count(1), Bound::Percent(100)])?,
            vec![],
        ),
    };
    if let Some(pause) = asked.pause_after {
        let n = pause.wave();
        if n >= groups.len() {
            return Err(RolloutError(format!(
                "--pause-after {n}: the plan has {} waves, so nothing is left after wave {n}",
                groups.len()
            )));
        }
        pauses.push(n);
    }
    // A pause after the last wave is no pause.
    pauses.retain(|&n| n < groups.len());
    if together && !pauses.is_empty() {
        return Err(RolloutError(
            "this release recreates queues shared by the half's hosts, so every host of the \
             half stops at once: the run cannot pause between waves (leave out \
             --pause-after and the waves' pause_after)"
                .into(),
        ));
    }
    Ok(groups
        .into_iter()
        .enumerate()
        .map(|(i, hosts)| {
            let number = i + 1;
            let mut after = vec![];
            if rules.min_healthy.is_some() {
                after.push(Step::Soak(number));
            }
            if pauses.contains(&number) {
                after.push(Step::Pause(number));
            }
            Wave {
                number,
                hosts,
                after,
            }
        })
        .collect())
}

/// Waves by cumulative counts: `1,25%,100%`; hosts left over make a last wave.
fn by_count(members: &[Member], bounds: &[Bound]) -> Result<Vec<Vec<String>>, RolloutError> {
    let total = members.len();
    let mut groups = vec![];
    let mut before = 0;
    for (i, bound) in bounds.iter().enumerate() {
        if before == total {
            break;
        }
        let upto = bound.of(total).min(total);
        if upto <= before {
            return Err(RolloutError(format!(
                "--waves: wave {} ({bound}) is {upto} of the half's {total} hosts, not more \
                 than the {before} of the waves before it: waves are cumulative (1,25%,100%)",
                i + 1
            )));
        }
        groups.push(
            members[before..upto]
                .iter()
                .map(|m| m.name.to_string())
                .collect(),
        );
        before = upto;
    }
    if before < total {
        groups.push(
            members[before..]
                .iter()
                .map(|m| m.name.to_string())
                .collect(),
        );
    }
    Ok(groups)
}

/// Waves by the playbook's rules, in order; each host in the first that takes it, the hosts
/// none takes in a last wave. Rules that take no host make no wave. Returns the waves and
/// those that pause after themselves.
fn by_rule(members: &[Member], rules: &RolloutRules) -> (Vec<Vec<String>>, Vec<usize>) {
    let mut left: Vec<&Member> = members.iter().collect();
    let mut groups: Vec<Vec<String>> = vec![];
    let mut pauses = vec![];
    for rule in &rules.waves {
        let (taken, rest): (Vec<&Member>, Vec<&Member>) =
            left.into_iter().partition(|m| rule.takes(m.name, m.vars));
        left = rest;
        if !taken.is_empty() {
            groups.push(taken.iter().map(|m| m.name.to_string()).collect());
            if rule.pause_after {
                pauses.push(groups.len());
            }
        }
    }
    if !left.is_empty() {
        groups.push(left.iter().map(|m| m.name.to_string()).collect());
    }
    (groups, pauses)
}

/// The gates of every wave.
pub fn gates(rules: &RolloutRules, has_command: bool) -> Gates {
    Gates {
        command: has_command,
        max_backlog: rules.max_backlog,
        min_healthy: rules.min_healthy,
        timeout: HumanDuration(rules.gate_timeout),
    }
}

/// The failure policy over a half of `hosts` hosts.
pub fn policy(
    rules: &RolloutRules,
    asked: &Asked,
    hosts: usize,
    together: bool,
) -> Result<FailurePolicy, RolloutError> {
    let bound = asked.max_failures.or(rules.max_failures);
    if together && asked.max_failures.is_some_and(|b| b.of(hosts) > 0) {
        return Err(RolloutError(
            "--max-failures: this release recreates queues shared by the half's hosts, so \
             every host of the half stops at once and any failure stops the run"
                .into(),
        ));
    }
    Ok(FailurePolicy {
        max_failures: if together {
            0
        } else {
            bound.map_or(0, |b| b.of(hosts))
        },
        asked: bound,
        on_failure: asked.on_failure.or(rules.on_failure).unwrap_or_default(),
    })
}

impl fmt::Display for FailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.max_failures, self.asked) {
            (0, _) => write!(f, "the first failure stops the run")?,
            (n, Some(Bound::Percent(p))) => {
                write!(f, "up to {n} failed hosts ({p}%) after the first wave")?
            }
            (n, _) => write!(f, "up to {n} failed hosts after the first wave")?,
        }
        match self.on_failure {
            OnFailure::Stop => write!(f, "; then it stops"),
            OnFailure::Rollback => write!(f, "; then it is rolled back at once"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::playbook::rollout::WaveRule;

    fn members<'a>(names: &'a [&'a str], vars: &'a BTreeMap<String, String>) -> Vec<Member<'a>> {
        names.iter().map(|name| Member { name, vars }).collect()
    }

    fn hosts(waves: &[Wave]) -> Vec<Vec<&str>> {
        waves
            .iter()
            .map(|w| w.hosts.iter().map(String::as_str).collect())
            .collect()
    }

    const HALF: [&str; 5] = ["px5", "px6", "px7", "px8", "pxatx1"];

    /// The waves of ops half b with the playbook's defaults and `asked`.
    fn half_waves(asked: &Asked) -> Result<Vec<Wave>, RolloutError> {
        let none = BTreeMap::new();
        waves(
            &members(&HALF, &none),
            &RolloutRules::default(),
            asked,
            false,
        )
    }

    #[test]
    fn by_default_the_canary_then_the_rest() {
        let none = BTreeMap::new();
        let w = waves(
            &members(&HALF, &none),
            &RolloutRules::default(),
            &Asked::default(),
            false,
        )
        .unwrap();
        assert_eq!(
            hosts(&w),
            [vec!["px5"], vec!["px6", "px7", "px8", "pxatx1"]]
        );
        assert!(w.iter().all(|w| w.after.is_empty()));
        let one = waves(
            &members(&HALF[..1], &none),
            &RolloutRules::default(),
            &Asked::default(),
            false,
        )
        .unwrap();
        assert_eq!(hosts(&one), [vec!["px5"]]);
    }

    #[test]
    fn counts_are_cumulative_and_the_rest_makes_a_last_wave() {
        let asked = Asked {
            waves: Some(vec![Bound::Count(1), Bound::Count(2), Bound::Percent(100)]),
            pause_after: Some(PauseAfter::Canary),
            ..Asked::default()
        };
        let w = half_waves(&asked).unwrap();
        assert_eq!(
            hosts(&w),
            [vec!["px5"], vec!["px6"], vec!["px7", "px8", "pxatx1"]]
        );
        assert_eq!(w[0].after, [Step::Pause(1)]);
        assert!(w[0].pauses() && !w[1].pauses());
        let asked = Asked {
            waves: Some(vec![Bound::Percent(40)]),
            ..Asked::default()
        };
        let w = half_waves(&asked).unwrap();
        assert_eq!(
            hosts(&w),
            [vec!["px5", "px6"], vec!["px7", "px8", "pxatx1"]]
        );
        let bad = Asked {
            waves: Some(vec![Bound::Count(2), Bound::Count(2)]),
            ..Asked::default()
        };
        let err = half_waves(&bad).unwrap_err();
        assert!(err.0.contains("cumulative"), "{err}");
    }

    #[test]
    fn rules_take_hosts_by_pattern_and_variable_in_order() {
        let feed: BTreeMap<String, String> = [("tier".to_string(), "feed".to_string())].into();
        let none = BTreeMap::new();
        let m = vec![
            Member {
                name: "px5",
                vars: &none,
            },
            Member {
                name: "px6",
                vars: &feed,
            },
            Member {
                name: "px7",
                vars: &none,
            },
            Member {
                name: "pxatx1",
                vars: &feed,
            },
        ];
        let rules = RolloutRules {
            waves: vec![
                WaveRule {
                    vars: feed.clone(),
                    pause_after: true,
                    ..WaveRule::default()
                },
                WaveRule {
                    hosts: vec!["nothing*".into()],
                    ..WaveRule::default()
                },
                WaveRule {
                    hosts: vec!["px7".into()],
                    ..WaveRule::default()
                },
            ],
            min_healthy: Some(HumanDuration(std::time::Duration::from_secs(5))),
            ..RolloutRules::default()
        };
        let w = waves(&m, &rules, &Asked::default(), false).unwrap();
        assert_eq!(hosts(&w), [vec!["px6", "pxatx1"], vec!["px7"], vec!["px5"]]);
        assert_eq!(w[0].after, [Step::Soak(1), Step::Pause(1)]);
        assert_eq!(w[2].after, [Step::Soak(3)]);
        let err = waves(&m, &rules, &Asked::default(), true).unwrap_err();
        assert!(err.0.contains("cannot pause"), "{err}");
    }

    #[test]
    fn a_pause_needs_a_wave_after_it() {
        let asked = Asked {
            pause_after: Some(PauseAfter::Wave(2)),
            ..Asked::default()
        };
        let err = half_waves(&asked).unwrap_err();
        assert!(err.0.contains("nothing is left after wave 2"), "{err}");
        assert_eq!("canary".parse(), Ok(PauseAfter::Canary));
        assert!("0".parse::<PauseAfter>().is_err());
    }

    #[test]
    fn failures_are_tolerated_only_when_hosts_stop_one_by_one() {
        let asked = Asked {
            max_failures: Some(Bound::Percent(25)),
            ..Asked::default()
        };
        let p = policy(&RolloutRules::default(), &asked, 5, false).unwrap();
        assert_eq!(p.max_failures, 2);
        assert_eq!(
            p.to_string(),
            "up to 2 failed hosts (25%) after the first wave; then it stops"
        );
        assert!(policy(&RolloutRules::default(), &asked, 5, true).is_err());
        let rules = RolloutRules {
            max_failures: Some(Bound::Count(1)),
            on_failure: Some(OnFailure::Rollback),
            ..RolloutRules::default()
        };
        let p = policy(&rules, &Asked::default(), 5, true).unwrap();
        assert_eq!(p.max_failures, 0);
        assert_eq!(p.on_failure, OnFailure::Rollback);
    }
}
