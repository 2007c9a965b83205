//! A run as one self-contained HTML page (`roll report`): no external asset, no network. The
//! plan as approved, the accounting per queue and the failures are HTML; the timeline (one row
//! per host, each step a bar, stops highlighted, the critical window shaded) is drawn as SVG
//! by a small script from the run's data, embedded in the page as JSON (the `--output json`
//! of the same report).

use std::fmt::Write as _;

use crate::history::RunDetail;

/// The page. `plan_text` is the plan as `roll upgrade` showed it for approval.
pub fn html(detail: &RunDetail, plan_text: &str) -> String {
    let r = &detail.record;
    let title = format!(
        "roll {} {} of group {}{}",
        r.kind.map_or("run".to_string(), |k| k.to_string()),
        r.run_id,
        detail.group,
        r.half.map(|h| format!(" half {h}")).unwrap_or_default()
    );
    let data = serde_json::to_string(detail)
        .unwrap_or_else(|_| "{}".to_string())
        // Inside <script>: `</` would end it.
        .replace("</", "<\\/");
    let mut page = String::new();
    let _ = write!(
        page,
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{title}</h1>
<table class="facts">
<tr><th>release</th><td>{release}</td></tr>
<tr><th>operator</th><td>{operator}</td></tr>
<tr><th>started</th><td>{started}</td></tr>
<tr><th>duration</th><td>{duration}</td></tr>
<tr><th>status</th><td class="status {status}">{status}</td></tr>
<tr><th>critical window</th><td>{window}</td></tr>
<tr><th>queues recreated</th><td>{queues}</td></tr>
<tr><th>messages moved / lost</th><td>{moved} / {lost}</td></tr>
<tr><th>journal</th><td><code>{journal}</code></td></tr>
</table>
<h2>Timeline</h2>
<p class="legend"><span class="key step"></span> step <span class="key stop"></span> service stop
<span class="key start"></span> service start <span class="key failed"></span> failed
<span class="key stopped"></span> host stopped <span class="key window"></span> critical window</p>
<div id="timeline"><noscript>The timeline needs JavaScript; its data is in the page (the script
element named data) and in <code>roll report --output json</code>.</noscript></div>
<h2>Queues</h2>
{queues_table}
<h2>Failures</h2>
{failures}
<h2>The plan as approved</h2>
<pre class="plan">{plan}</pre>
<script type="application/json" id="data">{data}</script>
<script>{SCRIPT}</script>
</body>
</html>
"#,
        title = escape(&title),
        release = escape(&format!("{} {}", r.playbook, r.version)),
        operator = escape(&r.operator),
        started = escape(&r.started),
        duration = seconds(r.duration_seconds),
        status = escape(&r.status),
        window = detail
            .window
            .map_or("none".to_string(), |w| format!("{:.1}s", w.seconds)),
        queues = r.queues_recreated,
        moved = r.messages_moved,
        lost = r.messages_lost,
        journal = escape(&r.journal.display().to_string()),
        queues_table = queues_table(detail),
        failures = failures(detail),
        plan = escape(plan_text),
    );
    page
}

fn seconds(s: Option<f64>) -> String {
    s.map_or("-".to_string(), |s| format!("{s:.1}s"))
}

fn queues_table(detail: &RunDetail) -> String {
    if detail.queues.is_empty() {
        return "<p>No queue was recreated.</p>".to_string();
    }
    let mut t = String::from(
        "<table class=\"queues\"><tr><th>queue</th><th>messages before</th><th>moved out</th>\
         <th>moved in</th><th>duplicated</th><th>lost</th><th>without a consumer</th></tr>\n",
    );
    for q in &detail.queues {
        let duplicated = if q.duplicates_known {
            q.duplicated.to_string()
        } else {
            format!("at most {}", q.duplicated)
        };
        let _ = writeln!(
            t,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"{}\">{}</td><td>{}</td></tr>",
            escape(&q.queue),
            q.before,
            q.moved_out,
            q.moved_in,
            duplicated,
            if q.lost > 0 { "bad" } else { "good" },
            q.lost,
            seconds(q.without_consumer_seconds)
        );
    }
    t.push_str("</table>");
    t
}

fn failures(detail: &RunDetail) -> String {
    if detail.failures.is_empty() {
        return "<p>No step failed.</p>".to_string();
    }
    let mut t = String::new();
    for f in &detail.failures {
        let _ = writeln!(
            t,
            "<div class=\"failure\"><h3>{}: {} <small>{}</small></h3><p>{}</p>{}</div>",
            escape(&f.host),
            escape(&f.step),
            escape(&f.at),
            escape(&f.detail),
            f.output
                .as_ref()
                .map_or(String::new(), |o| format!("<pre>{}</pre>", escape(o)))
        );
    }
    t
}

/// Text made safe for HTML (element content and attribute values).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1b1f24; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; } th, td { text-align: left; padding: 2px 10px 2px 0; }
table.queues th, table.queues td { border-bottom: 1px solid #ddd; padding: 3px 10px; }
.status.done { color: #137333; } .status.failed, .bad { color: #b3261e; font-weight: bold; }
.status.partial, .status.paused, .status.unfinished { color: #9a6700; }
pre { background: #f6f8fa; padding: 8px; overflow-x: auto; }
.failure { border-left: 4px solid #b3261e; padding-left: 8px; margin-bottom: 1em; }
.legend .key { display: inline-block; width: 14px; height: 10px; margin: 0 2px 0 10px; }
.key.step { background: #8ab4f8; } .key.stop { background: #e8710a; }
.key.start { background: #1e8e3e; } .key.failed { background: #b3261e; }
.key.stopped { background: #fde2c4; } .key.window { background: rgb(255, 213, 79); }
#timeline svg { font: 12px system-ui, sans-serif; }
"#;

/// Draws the timeline from the embedded data: an SVG with one `g.lane` per host.
const SCRIPT: &str = r#"
(function () {
  var d = JSON.parse(document.getElementById('data').textContent);
  var box = document.getElementById('timeline');
  var NS = 'http://www.w3.org/2000/svg';
  var left = 110, width = 1000, row = 22, top = 24;
  var t0 = d.start_ms, t1 = Math.max(d.end_ms, t0 + 1);
  var x = function (ms) { return left + (ms - t0) / (t1 - t0) * width; };
  var svg = document.createElementNS(NS, 'svg');
  var height = top + row * d.lanes.length + 10;
  svg.setAttribute('width', left + width + 20);
  svg.setAttribute('height', height);
  svg.setAttribute('id', 'timeline-svg');
  var el = function (name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    (parent || svg).appendChild(e);
    return e;
  };
  if (d.window) {
    var w = el('rect', { 'class': 'window', x: x(d.window.from_ms), y: 0,
      width: Math.max(2, x(d.window.to_ms) - x(d.window.from_ms)), height: height,
      fill: 'rgb(255, 213, 79)' });
    var title = el('title', {}, w);
    title.textContent = 'critical window ' + d.window.seconds.toFixed(1) + 's';
  }
  for (var s = 0; s <= 10; s++) {
    var ms = t0 + (t1 - t0) * s / 10;
    el('line', { x1: x(ms), x2: x(ms), y1: top - 4, y2: height, stroke: '#e0e0e0' });
    var label = el('text', { x: x(ms), y: 12, 'text-anchor': 'middle', fill: '#555' });
    label.textContent = ((ms - t0) / 1000).toFixed(t1 - t0 < 20000 ? 1 : 0) + 's';
  }
  d.lanes.forEach(function (lane, i) {
    var y = top + i * row;
    var g = el('g', { 'class': 'lane', 'data-host': lane.host });
    var name = el('text', { x: 4, y: y + 14, fill: '#1b1f24' }, g);
    name.textContent = lane.host;
    if (lane.stopped) {
      var to = lane.stopped[1] === null ? d.end_ms : lane.stopped[1];
      el('rect', { 'class': 'stopped', x: x(lane.stopped[0]), y: y + 1,
        width: Math.max(1, x(to) - x(lane.stopped[0])), height: row - 2, fill: '#fde2c4' }, g);
    }
    lane.bars.forEach(function (b) {
      var to = b.to_ms === null ? d.end_ms : b.to_ms;
      var fill = b.ok === false ? '#b3261e'
        : b.kind === 'stop' ? '#e8710a' : b.kind === 'start' ? '#1e8e3e' : '#8ab4f8';
      var r = el('rect', { 'class': 'bar ' + b.kind + (b.ok === false ? ' failed' : ''),
        x: x(b.from_ms), y: y + 4, width: Math.max(2, x(to) - x(b.from_ms)),
        height: row - 8, fill: fill }, g);
      var tip = el('title', {}, r);
      tip.textContent = lane.host + ': ' + b.step + ' ' + ((to - b.from_ms) / 1000).toFixed(1)
        + 's' + (b.ok === false ? ' FAILED' : b.ok === null ? ' (unfinished)' : '');
    });
  });
  box.appendChild(svg);
  document.body.setAttribute('data-rendered', d.lanes.length);
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_the_script_cannot_be_closed_by_the_data() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let detail = crate::history::detail(&[], std::path::Path::new("r1.jsonl"), None);
        let mut detail = detail;
        detail.record.operator = "</script><script>alert(1)</script>".into();
        let page = html(&detail, "plan <b>");
        assert!(!page.contains("</script><script>alert"), "{page}");
        assert!(page.contains("plan &lt;b&gt;"));
        // Self-contained: no asset from elsewhere.
        assert!(
            !page.contains("src=\"http") && !page.contains("href=\"http"),
            "{page}"
        );
    }
}
