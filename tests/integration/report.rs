//! `roll report`: a real run's page, rendered by headless Chromium (Debian's `chromium`, which
//! `tests/lab/up` installs) with every network name unresolvable, and checked in what the
//! browser made of it: its DOM after the page's script ran, and the pixels of a screenshot.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::{Roll, json};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Chromium, headless, offline (every host name unresolvable), with a fresh profile.
fn chromium(profile: &Path) -> Command {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: tests/lab/up installs Debian's chromium"
    );
    let mut c = Command::new(CHROMIUM);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--window-size=1300,1000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// The report of run `run` (group `group`, journals in `state`) renders offline in Chromium:
/// one timeline row per host of the journal (and the broker's), the critical window shaded
/// (in the DOM, and as pixels of its colour in a screenshot), the page's facts as the JSON
/// twin has them.
pub fn report_renders_in_chromium(state: &str, group: &str, run: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let page = dir.path().join("report.html");
    let written = Roll::new("report")
        .state(state)
        .group(group)
        .arg(run)
        .arg("--to")
        .arg(page.display().to_string())
        .run();
    assert_eq!(written.code, 0, "{written:#?}");
    let data = Roll::new("report").state(state).arg(run).json().run();
    assert_eq!(data.code, 0, "{data:#?}");
    let data: Value = json(&data);
    let lanes = data["lanes"].as_array().expect("lanes").len();
    assert!(lanes >= 1, "{data:#}");
    let window = &data["window"];
    assert!(
        window["seconds"].as_f64() > Some(0.0),
        "no window: {data:#}"
    );
    let html = std::fs::read_to_string(&page).expect("the page");
    for external in ["src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(!html.contains(external), "the page loads {external}...");
    }

    // The DOM after the page's script ran.
    let url = format!("file://{}", page.display());
    let out = chromium(&dir.path().join("profile-dom"))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "{out:?}");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains(&format!("data-rendered=\"{lanes}\"")),
        "the script did not draw {lanes} rows"
    );
    assert_eq!(dom.matches("<g class=\"lane\"").count(), lanes, "{dom}");
    for lane in data["lanes"].as_array().into_iter().flatten() {
        let host = lane["host"].as_str().expect("host");
        assert!(
            dom.contains(&format!("data-host=\"{host}\"")),
            "no row for {host}"
        );
    }
    assert!(dom.contains("<rect class=\"window\""), "no shaded window");
    assert!(dom.contains("class=\"bar stop"), "no stop bar");
    assert!(dom.contains("class=\"bar start"), "no start bar");

    // The pixels: the window's colour (rgb 255 213 79) covers a band of the screenshot.
    let png = dir.path().join("report.png");
    let out = chromium(&dir.path().join("profile-png"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(&url)
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "{out:?}");
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png).expect("the screenshot"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size().expect("a size")];
    let info = reader.next_frame(&mut pixels).expect("a frame");
    let channels = info.color_type.samples();
    let shaded = pixels[..info.buffer_size()]
        .chunks(channels)
        .filter(|p| p.len() >= 3 && p[0] == 255 && p[1] == 213 && p[2] == 79)
        .count();
    assert!(
        shaded > 500,
        "only {shaded} pixels of the window's colour in the screenshot"
    );
}
