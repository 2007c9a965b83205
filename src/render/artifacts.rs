//! The artifacts of an upgrade plan, for people: each with its checksum's prefix, where it goes
//! and on which hosts, copied before any host stops.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::plan::upgrade::UpgradePlan;
use crate::step::Step;

/// How much of a checksum is shown.
const PREFIX: usize = 12;

/// The plan's lines about its artifacts (none when it has none).
pub(super) fn lines(plan: &UpgradePlan) -> String {
    let hosts: Vec<&str> = plan
        .hosts
        .iter()
        .filter(|h| h.artifacts.contains(&Step::Artifacts))
        .map(|h| h.host.as_str())
        .collect();
    let mut text = String::new();
    if hosts.is_empty() {
        return text;
    }
    let _ = writeln!(
        text,
        "  artifacts, copied to every host of half {} before any host stops, checked there by \
         sha256:",
        plan.half
    );
    // By artifact, then destination (a destination may name the host): the hosts.
    let mut places: BTreeMap<(&str, &str, &str), Vec<&str>> = BTreeMap::new();
    for host in &hosts {
        for a in plan
            .rendered
            .hosts
            .get(*host)
            .map(|r| r.artifacts.as_slice())
            .unwrap_or_default()
        {
            places
                .entry((&a.name, &a.sha256, &a.destination))
                .or_default()
                .push(host);
        }
    }
    for ((name, sha256, destination), on) in places {
        let short: String = sha256.chars().take(PREFIX).collect();
        let _ = writeln!(
            text,
            "    {name}: sha256 {short}... -> {destination} (on {})",
            on.join(" ")
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures;

    #[test]
    fn each_artifact_shows_its_checksum_destination_and_hosts() {
        let plan = fixtures::expire_plan_b();
        let text = lines(&plan);
        assert!(
            text.contains("artifacts, copied to every host of half b before any host stops"),
            "{text}"
        );
        assert!(
            text.contains(
                "    sr3: sha256 f9799a1112d3... -> \
                 ~/.cache/roll/artifacts/metpx_sr3-3.3.1-py3-none-any.whl (on px5 px6 px7 px8 \
                 pxatx1)"
            ),
            "{text}"
        );
        assert!(crate::render::upgrade_plan(&plan).contains(&text));
        let mut none = plan.clone();
        none.hosts.iter_mut().for_each(|h| h.artifacts.clear());
        assert_eq!(lines(&none), "");
    }
}
