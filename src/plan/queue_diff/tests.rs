use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::plan::ownership::RenderedPattern;
use crate::playbook::PatternOwner;

fn settings(args: &[(&str, Value)]) -> QueueSettings {
    QueueSettings::new(
        true,
        false,
        args.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn live(name: &str, messages: u64, args: &[(&str, Value)]) -> LiveQueue {
    LiveQueue {
        name: name.into(),
        settings: settings(args),
        exclusive: false,
        messages,
        transient: 0,
        consumers: 0,
    }
}

/// px1 (a) and px5 (b) with their own queues, a shared cluster queue, px6 (b) whose queue is
/// gone, and a foreign queue.
fn claims() -> Claims {
    let mut c = Claims::default();
    c.discovered_by("px1", Half::A, "q.pump.px1\nq.cluster\n");
    c.discovered_by("px5", Half::B, "q.pump.px5\nq.cluster\n");
    c.discovered_by("px6", Half::B, "q.pump.px6\n");
    c
}

fn lab_queues() -> Vec<LiveQueue> {
    vec![
        live("q.pump.px1", 3, &[]),
        live("q.pump.px5", 0, &[]),
        live("q.cluster", 1240, &[]),
        live("q.foreign", 5, &[]),
    ]
}

fn week() -> QueueSettings {
    settings(&[("x-expires", json!(604_800_000))])
}

fn verdict(diff: &QueueDiff, name: &str) -> Verdict {
    diff.rows
        .iter()
        .find(|r| r.name == name)
        .map(|r| r.verdict)
        .unwrap_or_else(|| panic!("no row {name}"))
}

#[test]
fn expire_release_on_half_b() {
    let d = diff(
        "ops",
        Some(Half::B),
        lab_queues(),
        &claims(),
        &week(),
        Duration::from_secs(900),
    );
    assert_eq!(verdict(&d, "q.pump.px5"), Verdict::Recreate);
    assert_eq!(verdict(&d, "q.cluster"), Verdict::Recreate);
    assert_eq!(verdict(&d, "q.pump.px1"), Verdict::Outside);
    assert_eq!(verdict(&d, "q.foreign"), Verdict::Foreign);
    assert_eq!(verdict(&d, "q.pump.px6"), Verdict::Missing);
    let px5 = d.rows.iter().find(|r| r.name == "q.pump.px5").unwrap();
    assert_eq!(px5.differences.len(), 1);
    assert_eq!(
        px5.differences[0].to_string(),
        "x-expires none -> 604800000"
    );
    assert!(
        px5.note
            .as_deref()
            .unwrap_or("")
            .contains("expires=604800000")
    );
    assert_eq!(d.summary.recreate, 2);
    assert_eq!(d.summary.messages_at_risk, 1240);
    assert_eq!(d.summary.critical_window, vec!["q.cluster".to_string()]);
    assert!(!d.summary.no_changes());
    assert_eq!(
        d.summary.to_string(),
        "Plan: 2 to recreate, 1 missing, 0 unchanged, 1 of the other half (not in this run), \
         1 foreign (untouched); 1240 messages in queues to recreate; critical window: yes \
         (shared queue q.cluster)"
    );
    assert!(
        d.warnings
            .iter()
            .any(|w| w.contains("q.cluster holds 1240 messages"))
    );
    assert!(
        d.warnings
            .iter()
            .any(|w| w.contains("shared queue q.cluster must be recreated"))
    );
    // recreate first, then missing, outside, foreign
    assert_eq!(d.rows[0].verdict, Verdict::Recreate);
    assert_eq!(d.rows.last().map(|r| r.verdict), Some(Verdict::Foreign));
}

#[test]
fn a_release_without_queue_changes_changes_nothing() {
    let mut c = claims();
    c.discovered.remove("q.pump.px6");
    let d = diff(
        "ops",
        None,
        lab_queues(),
        &c,
        &settings(&[]),
        Duration::from_secs(900),
    );
    assert!(d.summary.no_changes(), "{}", d.summary);
    assert_eq!(d.summary.unchanged, 3);
    assert_eq!(d.summary.foreign, 1);
    assert!(d.summary.to_string().ends_with("critical window: no"));
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
}

#[test]
fn unchecked_arguments_are_ignored_by_the_broker() {
    let d = diff(
        "ops",
        None,
        vec![live("q.pump.px1", 0, &[("x-note", json!("old"))])],
        &claims(),
        &settings(&[("x-note", json!("new"))]),
        Duration::from_secs(900),
    );
    assert_eq!(verdict(&d, "q.pump.px1"), Verdict::IgnoredByBroker);
    assert_eq!(d.summary.ignored_by_broker, 1);
}

#[test]
fn short_expiry_is_warned_about() {
    let d = diff(
        "ops",
        None,
        vec![live("q.pump.px1", 0, &[("x-expires", json!(60_000))])],
        &claims(),
        &settings(&[("x-expires", json!(120_000))]),
        Duration::from_secs(900),
    );
    assert!(
        d.warnings
            .iter()
            .any(|w| w.contains("target x-expires (2m) is shorter")),
        "{:?}",
        d.warnings
    );
    assert!(
        d.warnings
            .iter()
            .any(|w| w.contains("q.pump.px1 expires after 1m")),
        "{:?}",
        d.warnings
    );
}

#[test]
fn a_shared_pattern_makes_a_queue_shared_even_when_one_host_lists_it() {
    let mut c = claims();
    c.patterns.push(RenderedPattern {
        glob: "q.pump.px1".into(),
        owner: PatternOwner::Shared,
        host: None,
    });
    let d = diff(
        "ops",
        Some(Half::B),
        lab_queues(),
        &c,
        &week(),
        Duration::from_secs(900),
    );
    assert_eq!(verdict(&d, "q.pump.px1"), Verdict::Recreate);
}
