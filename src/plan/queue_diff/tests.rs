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
    diff.all_rows()
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
    assert_eq!(
        d.all_rows().last().map(|r| r.verdict),
        Some(Verdict::Foreign)
    );
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

#[test]
fn the_classifier_keeps_rows_of_owned_queues_only() {
    let c = claims();
    let target = week();
    let mut classifier = Classifier::new(Some(Half::B), &c, &target);
    for i in 0..1000 {
        classifier.push(live(
            &format!("q.other.{i:04}"),
            i,
            &[("x-max-length", json!(10))],
        ));
    }
    for queue in lab_queues() {
        classifier.push(queue);
    }
    let d = classifier.finish("ops", Duration::from_secs(900));
    // Owned rows only (px6's missing queue among them); foreign queues as their compact
    // form, sorted by name.
    assert_eq!(d.rows.len(), 4);
    assert!(d.rows.iter().all(|r| r.verdict != Verdict::Foreign));
    assert_eq!(d.foreign.len(), 1001);
    assert_eq!(d.summary.foreign, 1001);
    assert_eq!(d.foreign[0].name, "q.foreign");
    assert_eq!(d.foreign[1].name, "q.other.0000");
    assert_eq!(d.foreign[1001 - 1].name, "q.other.0999");
    // The same diff as one made from the whole list.
    let mut all = lab_queues();
    all.extend((0..1000).map(|i| {
        live(
            &format!("q.other.{i:04}"),
            i,
            &[("x-max-length", json!(10))],
        )
    }));
    let whole = diff(
        "ops",
        Some(Half::B),
        all,
        &c,
        &target,
        Duration::from_secs(900),
    );
    assert_eq!(whole.rows, d.rows);
    assert_eq!(whole.foreign, d.foreign);
    assert_eq!(whole.summary, d.summary);
}

#[test]
fn the_json_lists_foreign_rows_after_the_owned_ones_as_whole_rows() {
    let d = diff(
        "ops",
        Some(Half::B),
        lab_queues(),
        &claims(),
        &week(),
        Duration::from_secs(900),
    );
    let value = serde_json::to_value(&d).unwrap();
    let mut keys: Vec<&String> = value.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["half", "rows", "summary", "vhost", "warnings"]);
    let rows = value["rows"].as_array().unwrap();
    assert_eq!(rows.len(), d.rows.len() + 1);
    // Each row as a derived QueueRow serialises, the foreign one last.
    let expected: Vec<Value> = d
        .rows
        .iter()
        .cloned()
        .chain(d.foreign.iter().map(ForeignQueue::row))
        .map(|r| serde_json::to_value(r).unwrap())
        .collect();
    assert_eq!(rows, &expected);
    let foreign = rows.last().unwrap();
    assert_eq!(foreign["name"], "q.foreign");
    assert_eq!(foreign["verdict"], "foreign");
    assert_eq!(foreign["owner"]["kind"], "foreign");
    assert_eq!(foreign["messages"], 5);
    assert!(foreign["target"].is_null());
    assert_eq!(foreign["differences"], json!([]));
    assert!(foreign["note"].is_null());
    assert!(foreign["current"].is_object());
    assert_eq!(value["summary"]["foreign"], 1);
}
