use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::broker::equivalence::{QueueType, Rules};
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
        messages,
        transient: Some(0),
        place: Default::default(),
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
    diff.rows()
        .find(|r| r.name() == name)
        .map(|r| r.verdict())
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
    let px5 = d.rows().find(|r| r.name() == "q.pump.px5").unwrap();
    assert_eq!(px5.differences().len(), 1);
    assert_eq!(
        px5.differences()[0].to_string(),
        "x-expires none -> 604800000"
    );
    assert!(
        px5.note()
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
        d.warnings()
            .any(|w| w.contains("q.cluster holds 1240 messages"))
    );
    assert!(
        d.warnings()
            .any(|w| w.contains("shared queue q.cluster must be recreated"))
    );
    // recreate first, then missing, outside, foreign
    let verdicts: Vec<Verdict> = d.rows().map(|r| r.verdict()).collect();
    assert_eq!(
        verdicts,
        [
            Verdict::Recreate,
            Verdict::Recreate,
            Verdict::Missing,
            Verdict::Outside,
            Verdict::Foreign
        ]
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
    let warnings: Vec<String> = d.warnings().collect();
    assert!(warnings.is_empty(), "{warnings:?}");
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
    let warnings: Vec<String> = d.warnings().collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("target x-expires (2m) is shorter")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("q.pump.px1 expires after 1m")),
        "{warnings:?}"
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

/// The diff of `queues` for the expire release on half b, with the lab's claims.
fn expire_b(queues: Vec<LiveQueue>) -> QueueDiff {
    diff(
        "ops",
        Some(Half::B),
        queues,
        &claims(),
        &week(),
        Duration::from_secs(900),
    )
}

fn binding(source: &str, key: &str) -> Binding {
    Binding {
        source: source.into(),
        routing_key: key.into(),
        arguments: BTreeMap::new(),
    }
}

/// The lab's queues and their bindings, the two listings interleaved as they may arrive: a
/// binding before its queue, a foreign queue's bindings, a name only a binding shows (a queue
/// deleted between the listings), and px6's expected queue shown by a binding only.
fn interleaved() -> Listing {
    let mut listing = Listing::new();
    listing.binding("q.pump.px5".into(), binding("xpublic", "v03.a.#"));
    listing.binding("q.foreign".into(), binding("xpublic", "v03.foreign.#"));
    let mut queues = lab_queues().into_iter();
    listing.queue(queues.next().unwrap());
    listing.binding("q.gone".into(), binding("xpublic", "v03.a.#"));
    listing.binding("q.pump.px6".into(), binding("xpublic", "v03.a.#"));
    listing.binding("q.cluster".into(), binding("xpublic", "v03.b.#"));
    for queue in queues {
        listing.queue(queue);
    }
    listing.binding("q.pump.px5".into(), binding("xother", "v03.a.#"));
    listing.binding("q.cluster".into(), binding("xpublic", "v03.a.#"));
    listing
}

#[test]
fn two_listings_in_any_order_make_the_diff_of_the_queues_with_the_owned_bindings() {
    let target = week();
    let d = interleaved().finish(
        "ops",
        Some(Half::B),
        &claims(),
        &target,
        Duration::from_secs(900),
    );
    let whole = diff(
        "ops",
        Some(Half::B),
        lab_queues(),
        &claims(),
        &target,
        Duration::from_secs(900),
    );
    let rows = |d: &QueueDiff| d.rows().map(|r| r.to_row()).collect::<Vec<_>>();
    assert_eq!(rows(&d), rows(&whole));
    assert_eq!(d.summary, whole.summary);
    let keys = |name: &str| {
        let row = d.row(d.find(name).unwrap()).unwrap();
        row.each_binding()
            .map(|b| format!("{} {}", b.source, b.routing_key))
            .collect::<Vec<_>>()
    };
    // In the binding listing's order.
    assert_eq!(keys("q.pump.px5"), ["xpublic v03.a.#", "xother v03.a.#"]);
    assert_eq!(keys("q.cluster"), ["xpublic v03.b.#", "xpublic v03.a.#"]);
    assert!(keys("q.pump.px1").is_empty());
    // Foreign queues' bindings are not kept; a queue only a binding named has no row, and
    // an expected one is missing.
    assert!(keys("q.foreign").is_empty());
    assert_eq!(d.find("q.gone"), None);
    assert_eq!(verdict(&d, "q.pump.px6"), Verdict::Missing);
    assert!(keys("q.pump.px6").is_empty());
    // Every distinct binding once: (xpublic v03.a.#) serves three queues.
    assert_eq!(d.kinds.len(), 4);
    assert_eq!(d.bindings.len(), 4);
}

#[test]
fn shared_settings_and_owners_are_stored_once() {
    let mut queues = lab_queues();
    queues.extend((0..1000).map(|i| live(&format!("q.other.{i:04}"), i, &[])));
    let d = expire_b(queues);
    assert_eq!(d.len(), 1005);
    assert_eq!(d.summary.foreign, 1001);
    assert_eq!(d.shapes.len(), 1);
    // px1, px5, shared, foreign, px6 (missing).
    assert_eq!(d.owners.len(), 5);
    // Owned rows first, then the foreign ones by name.
    assert_eq!(d.owned().count(), 4);
    let foreign: Vec<&str> = d.rows().skip(4).map(|r| r.name()).collect();
    assert_eq!(foreign[0], "q.foreign");
    assert_eq!(foreign[1], "q.other.0000");
    assert_eq!(foreign[1000], "q.other.0999");
    for (i, row) in d.rows().enumerate() {
        assert_eq!(d.find(row.name()), Some(i));
    }
}

#[test]
fn only_the_queues_to_recreate_that_hold_messages_need_a_transient_count() {
    let mut queues = lab_queues();
    for q in &mut queues {
        q.transient = None;
    }
    let mut d = expire_b(queues);
    // q.cluster (1240 messages) only: q.pump.px5 is empty, px1's outside, the foreign one
    // never touched.
    let uncounted = d.uncounted();
    assert_eq!(uncounted.len(), 1);
    let cluster = d.find("q.cluster").unwrap();
    assert_eq!(uncounted, [cluster]);
    d.set_transient(cluster, 40);
    assert!(d.uncounted().is_empty());
    let row = |name: &str| d.row(d.find(name).unwrap()).unwrap();
    assert_eq!(row("q.cluster").transient(), Some(40));
    assert_eq!(row("q.pump.px5").transient(), None);
    assert_eq!(row("q.pump.px6").transient(), Some(0));
    let json = serde_json::to_value(row("q.foreign")).unwrap();
    assert!(json["transient"].is_null(), "{json}");
}

#[test]
fn the_json_lists_every_row_as_a_whole_row_the_foreign_ones_last() {
    let mut queues = lab_queues();
    queues[0].transient = None;
    let d = expire_b(queues);
    let value = serde_json::to_value(&d).unwrap();
    let mut keys: Vec<&String> = value.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["half", "rows", "summary", "vhost", "warnings"]);
    let rows = value["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    // Each row serialises as the whole QueueRow it stands for.
    let expected: Vec<Value> = d
        .rows()
        .map(|r| serde_json::to_value(r.to_row()).unwrap())
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
    let px6 = rows.iter().find(|r| r["name"] == "q.pump.px6").unwrap();
    assert_eq!(px6["verdict"], "missing");
    assert!(px6["current"].is_null());
    assert_eq!(px6["target"]["arguments"]["x-expires"], 604_800_000);
    assert!(
        px6["note"]
            .as_str()
            .unwrap()
            .starts_with("absent on the broker")
    );
    let px1 = rows.iter().find(|r| r["name"] == "q.pump.px1").unwrap();
    assert_eq!(px1["verdict"], "outside");
    assert_eq!(px1["note"], "changed when half a is upgraded");
    assert!(px1["transient"].is_null());
    assert_eq!(value["summary"]["foreign"], 1);
    assert_eq!(value["warnings"].as_array().unwrap().len(), 2);
}

/// A quorum queue led by `leader`, with these members and those online.
fn quorum_on(name: &str, leader: Option<&str>, members: &[&str], online: &[&str]) -> LiveQueue {
    let mut q = live(name, 0, &[("x-queue-type", json!("quorum"))]);
    q.place = Placement {
        node: leader.map(str::to_string),
        replicas: Some(Replicas {
            members: members.iter().map(|m| m.to_string()).collect(),
            online: online.iter().map(|m| m.to_string()).collect(),
        }),
        policy: None,
    };
    q
}

fn classic_on(name: &str, node: &str) -> LiveQueue {
    let mut q = live(name, 0, &[]);
    q.place.node = Some(node.into());
    q
}

/// A diff of `queues` against `target` on a 3.10.8 broker.
fn on_3_10(queues: Vec<LiveQueue>, target: &QueueSettings) -> QueueDiff {
    let mut listing = Listing::with_rules(Rules::of_version("3.10.8"));
    for q in queues {
        listing.queue(q);
    }
    listing.finish("quorum", None, &claims(), target, Duration::from_secs(900))
}

#[test]
fn a_classic_queue_to_quorum_is_a_recreate_and_rows_show_type_and_node() {
    let target = settings(&[("x-queue-type", json!("quorum"))]);
    let d = on_3_10(
        vec![
            classic_on("q.pump.px1", "roll-c2@h"),
            quorum_on(
                "q.pump.px5",
                Some("roll-c3@h"),
                &["roll-c3@h"],
                &["roll-c3@h"],
            ),
        ],
        &target,
    );
    assert_eq!(verdict(&d, "q.pump.px1"), Verdict::Recreate);
    assert_eq!(verdict(&d, "q.pump.px5"), Verdict::Unchanged);
    let px1 = d.row(d.find("q.pump.px1").unwrap()).unwrap();
    assert_eq!(px1.kind(), QueueType::Classic);
    assert_eq!(px1.node(), Some("roll-c2@h"));
    let json = serde_json::to_value(px1).unwrap();
    assert_eq!(json["type"], "classic");
    assert_eq!(json["node"], "roll-c2@h");
    assert_eq!(serde_json::to_value(px1.to_row()).unwrap(), json);
    let px5 = d.row(d.find("q.pump.px5").unwrap()).unwrap();
    assert_eq!(
        (px5.kind(), px5.node()),
        (QueueType::Quorum, Some("roll-c3@h"))
    );
    // Back to classic (no x-queue-type) is a recreate too.
    let back = on_3_10(
        vec![quorum_on("q.pump.px5", Some("c3"), &["c3"], &["c3"])],
        &settings(&[]),
    );
    assert_eq!(verdict(&back, "q.pump.px5"), Verdict::Recreate);
    // A missing queue's type is the target's.
    let px6 = d.row(d.find("q.pump.px6").unwrap()).unwrap();
    assert_eq!((px6.kind(), px6.node()), (QueueType::Quorum, None));
}

#[test]
fn a_quorum_queue_lets_a_classic_only_argument_pass_unapplied() {
    let target = settings(&[
        ("x-queue-type", json!("quorum")),
        ("x-max-priority", json!(5)),
    ]);
    let d = on_3_10(
        vec![quorum_on("q.pump.px1", Some("c1"), &["c1"], &["c1"])],
        &target,
    );
    assert_eq!(verdict(&d, "q.pump.px1"), Verdict::IgnoredByBroker);
    // With the version unknown, it is taken as checked.
    let unknown = diff(
        "quorum",
        None,
        vec![quorum_on("q.pump.px1", Some("c1"), &["c1"], &["c1"])],
        &claims(),
        &target,
        Duration::from_secs(900),
    );
    assert_eq!(verdict(&unknown, "q.pump.px1"), Verdict::Recreate);
}

#[test]
fn queues_on_a_node_that_is_down_are_warned_about() {
    let all = ["c1", "c2", "c3"];
    let mut d = on_3_10(
        vec![
            classic_on("q.pump.px1", "c2"),
            quorum_on("q.pump.px5", Some("c1"), &all, &["c1", "c2"]),
            quorum_on("q.cluster", None, &all, &["c1"]),
            classic_on("q.foreign", "c2"),
        ],
        &settings(&[]),
    );
    // Without the nodes: only what the queues themselves say.
    let warnings: Vec<String> = d.warnings().collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("quorum queue q.cluster has no leader")),
        "{warnings:?}"
    );
    assert!(
        !warnings.iter().any(|w| w.contains("q.pump.px1")),
        "{warnings:?}"
    );
    let node = |name: &str, running| NodeState {
        name: name.into(),
        running,
    };
    d.set_nodes(vec![node("c1", true), node("c2", false), node("c3", false)]);
    let warnings: Vec<String> = d.warnings().collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("classic queue q.pump.px1 is on node c2, which is down")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w == "quorum queue q.pump.px5 members not online: c2, c3 (1 of 3 online)"),
        "{warnings:?}"
    );
    // Foreign queues are not the fleet's: no warning.
    assert!(
        !warnings.iter().any(|w| w.contains("q.foreign")),
        "{warnings:?}"
    );
    d.set_nodes(vec![node("c1", true), node("c2", true), node("c3", true)]);
    let warnings: Vec<String> = d.warnings().collect();
    assert!(
        !warnings.iter().any(|w| w.contains("q.pump.px1")),
        "{warnings:?}"
    );
}

#[test]
fn a_policy_over_an_argument_says_which_value_is_in_effect() {
    let mut px1 = live("q.pump.px1", 0, &[("x-expires", json!(600_000))]);
    px1.place.policy = Some("short".into());
    let mut px5 = quorum_on("q.pump.px5", Some("c1"), &["c1"], &["c1"]);
    px5.place.policy = Some("short".into());
    let target = settings(&[("x-expires", json!(900_000))]);
    let mut d = on_3_10(vec![px1, px5], &target);
    assert!(!d.warnings().any(|w| w.contains("policy short")));
    let mut definition = serde_json::Map::new();
    definition.insert("expires".into(), json!(300_000));
    definition.insert("ha-mode".into(), json!("all"));
    d.set_policies([("short".to_string(), definition)].into_iter().collect());
    let warnings: Vec<String> = d.warnings().filter(|w| w.contains("policy")).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert_eq!(
        warnings[0],
        "q.pump.px1: policy short sets expires=300000; its x-expires is 600000: 300000 in \
         effect (the lower value wins on a classic queue); the target's x-expires is 900000: \
         300000 would be in effect (the lower value wins on a classic queue)"
    );
    // The quorum queue has no x-expires; the (classic) target's would be overridden.
    assert!(
        warnings[1].starts_with("q.pump.px5: policy short sets expires=300000; the target's"),
        "{warnings:?}"
    );
    let row = d.row(d.find("q.pump.px1").unwrap()).unwrap();
    assert_eq!(row.policy(), Some("short"));
}
