//! Who owns a queue: one host, one half, the whole group (shared), or nobody we know
//! (foreign, never touched).
//!
//! Two sources, usable together: the playbook's name patterns, and the names each host says
//! it uses (its discovery command's output). A queue claimed by one host is that host's; by
//! several hosts of one half, that half's; by hosts of both halves, shared. A pattern with an
//! explicit owner (`shared`, `a`, `b`) decides alone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::inventory::Half;
use crate::playbook::{PatternOwner, glob_match};

/// The owner of a queue.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Owner {
    Host { host: String, half: Half },
    Half { half: Half },
    Shared,
    Foreign,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Host { host, half } => write!(f, "{host} (half {half})"),
            Owner::Half { half } => write!(f, "half {half}"),
            Owner::Shared => write!(f, "shared"),
            Owner::Foreign => write!(f, "foreign"),
        }
    }
}

impl Owner {
    /// True when a run over `scope` (one half, or the whole group with `None`) changes it.
    pub fn in_scope(&self, scope: Option<Half>) -> bool {
        match (self, scope) {
            (Owner::Foreign, _) => false,
            (_, None) | (Owner::Shared, _) => true,
            (Owner::Host { half, .. }, Some(s)) | (Owner::Half { half }, Some(s)) => *half == s,
        }
    }
}

/// A pattern already rendered for a host (or for the group, for group-level owners).
#[derive(Debug, Clone)]
pub struct RenderedPattern {
    pub glob: String,
    pub owner: PatternOwner,
    /// The host the pattern was rendered for (for [`PatternOwner::Host`]).
    pub host: Option<(String, Half)>,
}

/// Everything ownership is decided from.
#[derive(Debug, Clone, Default)]
pub struct Claims {
    /// The rendered patterns, in playbook order.
    pub patterns: Vec<RenderedPattern>,
    /// Queue name -> hosts (with their half) whose discovery command listed it.
    pub discovered: BTreeMap<String, BTreeSet<(String, Half)>>,
}

impl Claims {
    /// Records the queue names a host listed.
    pub fn discovered_by(&mut self, host: &str, half: Half, names: &str) {
        for name in names.lines().map(str::trim).filter(|n| !n.is_empty()) {
            self.discovered
                .entry(name.to_string())
                .or_default()
                .insert((host.to_string(), half));
        }
    }

    /// The owner of a queue.
    pub fn owner(&self, queue: &str) -> Owner {
        let mut hosts: BTreeSet<(String, Half)> =
            self.discovered.get(queue).cloned().unwrap_or_default();
        for pattern in &self.patterns {
            if !glob_match(&pattern.glob, queue) {
                continue;
            }
            match (&pattern.owner, &pattern.host) {
                (PatternOwner::Shared, _) => return Owner::Shared,
                (PatternOwner::Half(half), _) => return Owner::Half { half: *half },
                (PatternOwner::Host, Some(host)) => {
                    hosts.insert(host.clone());
                }
                (PatternOwner::Host, None) => {}
            }
        }
        let halves: Vec<Half> = hosts
            .iter()
            .map(|(_, h)| *h)
            .collect::<BTreeSet<Half>>()
            .into_iter()
            .collect();
        let mut hosts = hosts.into_iter();
        match (hosts.next(), hosts.next(), halves.as_slice()) {
            (None, _, _) => Owner::Foreign,
            (Some((host, half)), None, _) => Owner::Host { host, half },
            (_, _, [half]) => Owner::Half { half: *half },
            _ => Owner::Shared,
        }
    }

    /// Names that must exist: every discovered name and every pattern without wildcards.
    pub fn expected(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.discovered.keys().cloned().collect();
        for pattern in &self.patterns {
            if !pattern.glob.contains(['*', '?']) {
                names.insert(pattern.glob.clone());
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        let mut c = Claims::default();
        c.discovered_by("px1", Half::A, "q_u.pump.rl-px1_x_1\nq_u.cluster.ops\n");
        c.discovered_by("px5", Half::B, "q_u.pump.rl-px5_x_2\nq_u.cluster.ops\n\n");
        c.discovered_by("px2", Half::A, "q_u.halfq\n");
        c.discovered_by("px3", Half::A, "q_u.halfq\n");
        c.patterns.push(RenderedPattern {
            glob: "q_u.pump.rl-px6_*".into(),
            owner: PatternOwner::Host,
            host: Some(("px6".into(), Half::B)),
        });
        c.patterns.push(RenderedPattern {
            glob: "q_u.group.*".into(),
            owner: PatternOwner::Shared,
            host: None,
        });
        c
    }

    #[test]
    fn one_host_one_half_both_halves_and_nobody() {
        let c = claims();
        assert_eq!(
            c.owner("q_u.pump.rl-px1_x_1"),
            Owner::Host {
                host: "px1".into(),
                half: Half::A
            }
        );
        assert_eq!(c.owner("q_u.cluster.ops"), Owner::Shared);
        assert_eq!(c.owner("q_u.halfq"), Owner::Half { half: Half::A });
        assert_eq!(c.owner("q_other.thing"), Owner::Foreign);
    }

    #[test]
    fn patterns_claim_for_hosts_and_for_the_group() {
        let c = claims();
        assert_eq!(
            c.owner("q_u.pump.rl-px6_y_3"),
            Owner::Host {
                host: "px6".into(),
                half: Half::B
            }
        );
        assert_eq!(c.owner("q_u.group.anything"), Owner::Shared);
    }

    #[test]
    fn scope_of_each_owner() {
        let px1 = Owner::Host {
            host: "px1".into(),
            half: Half::A,
        };
        assert!(px1.in_scope(Some(Half::A)));
        assert!(!px1.in_scope(Some(Half::B)));
        assert!(px1.in_scope(None));
        assert!(Owner::Shared.in_scope(Some(Half::B)));
        assert!(!Owner::Foreign.in_scope(None));
        assert!(!Owner::Half { half: Half::A }.in_scope(Some(Half::B)));
    }

    #[test]
    fn expected_names_are_discovered_or_literal() {
        let mut c = claims();
        c.patterns.push(RenderedPattern {
            glob: "q_u.literal".into(),
            owner: PatternOwner::Shared,
            host: None,
        });
        let e = c.expected();
        assert!(e.contains("q_u.cluster.ops"));
        assert!(e.contains("q_u.literal"));
        assert!(!e.contains("q_u.group.*"));
    }
}
