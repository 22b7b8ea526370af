//! `cocoflow ui` (issue 18), in a real browser (headless Chromium over WebDriver, see
//! [`super::webdriver`]) and over raw HTTP:
//! - the dashboard follows a running `workflows/demo.yaml` live (instances change state on
//!   the page without a reload), opens a finished ablation report (sortable table, image
//!   browser, flip between two arms), runs a 6-sample, 3-method study as two annotators with
//!   the server killed (SIGKILL) and restarted mid-study, and shows the average ranks, which
//!   equal the ones computed here from the exported answers; screenshots go to
//!   `target/ui-screenshots/`; the browser has no network beyond loopback;
//! - security: `../` and encoded traversal, unknown runs and instances, a foreign `Host`, a
//!   non-local address without (or with a wrong) token, writes other than an answer, and HTML
//!   in an instruction (shown as text, never run).

use super::webdriver::{Browser, browser_or_skip, screenshot_dir};
use super::workers::{BIN, SMALL, cocoflow, text};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `cocoflow run workflows/demo.yaml --set S…` started in `dir`, quiet, in the background.
fn start_demo(dir: &Path, sets: &[&str]) -> Child {
    let mut args = vec![
        "run".to_string(),
        repo().join("workflows/demo.yaml").display().to_string(),
        "-q".into(),
    ];
    for s in sets {
        args.extend(["--set".to_string(), s.to_string()]);
    }
    Command::new(BIN)
        .args(&args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A `cocoflow ui` process; killed (SIGKILL) on drop.
struct Server {
    child: Child,
    url: String,
    port: u16,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Server {
        let addr: &[&str] = if extra.contains(&"--addr") {
            &[]
        } else {
            &["--addr", "127.0.0.1:0"]
        };
        let mut child = Command::new(BIN)
            .arg("ui")
            .args(addr)
            .args(extra)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("cocoflow ui listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_string();
        let port: u16 = url
            .split(':')
            .nth(2)
            .and_then(|p| p.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap();
        Server { child, url, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One raw HTTP/1.1 request (the path exactly as given: no client-side normalisation).
fn raw(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let out = String::from_utf8_lossy(&out).to_string();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn get_json(port: u16, path: &str) -> Value {
    let (st, body) = raw(port, "GET", path, &[], "");
    assert_eq!(st, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// `workflows/ablation.yaml` with two reward-ratio arms and one seed (the same tasks).
fn small_ablation(dir: &Path) -> PathBuf {
    let s = std::fs::read_to_string(repo().join("workflows/ablation.yaml")).unwrap();
    let i = s.find("\nsweep:").unwrap() + 1;
    let j = i + s[i..].find("\ntasks:").unwrap() + 1;
    let arms = "sweep:\n  arms:\n    - {name: ratio-0.5-0.5, params: {lambda_mllm: 0.5, lambda_sim: 0.5, ner: false, er: false}}\n    - {name: ratio-1.0-0.0, params: {lambda_mllm: 1.0, lambda_sim: 0.0, ner: false, er: false}}\n";
    let p = dir.join("ablation-small.yaml");
    std::fs::write(&p, format!("{}{arms}{}", &s[..i], &s[j..])).unwrap();
    p
}

/// `COCOFLOW_UI_README_SHOTS=1`: the README's screenshots — the base model pretrained for the
/// workflow's default 1200 steps on 256 pairs (about 5 min on 2 cores) so the edits show
/// something, and the screenshots copied to `docs/screenshots/`.
fn readme_shots() -> bool {
    std::env::var("COCOFLOW_UI_README_SHOTS").is_ok_and(|v| v == "1")
}

fn run_small_ablation(dir: &Path) -> String {
    let wf = small_ablation(dir);
    let mut args = vec![
        "run".to_string(),
        wf.display().to_string(),
        "--gpus".into(),
        "none".into(),
        "-q".into(),
    ];
    for s in SMALL {
        if readme_shots() && (s.starts_with("pretrain_steps=") || s.starts_with("n_train=")) {
            continue;
        }
        args.extend(["--set".to_string(), s.to_string()]);
    }
    if readme_shots() {
        args.extend(["--set".to_string(), "n_train=256".to_string()]);
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = cocoflow(dir, &a);
    assert!(o.status.success(), "{}", text(&o));
    let st = cocoflow(dir, &["status", "--json"]);
    let v: Value = serde_json::from_slice(&st.stdout).unwrap();
    v["run"]["id"].as_str().unwrap().to_string()
}

fn shot(b: &Browser, name: &str) {
    let p = screenshot_dir().join(name);
    b.screenshot(&p).unwrap();
    assert!(
        std::fs::metadata(&p).unwrap().len() > 5_000,
        "{}",
        p.display()
    );
    if readme_shots() {
        let to = repo().join("docs/screenshots");
        std::fs::create_dir_all(&to).unwrap();
        std::fs::copy(&p, to.join(name)).unwrap();
    }
}

fn js(b: &Browser, script: &str) -> Value {
    b.execute(script, vec![]).unwrap()
}

/// Gives every rank select of the visible sample its value from `rank(criterion, slot)`, then
/// submits and waits for the next sample (or the end).
fn answer(b: &Browser, rank: &dyn Fn(&str, &str) -> u32) {
    let before = js(
        b,
        "return document.querySelector('#study-progress').textContent",
    );
    let selects = js(
        b,
        "return [...document.querySelectorAll('select.rank')].map(s => [s.dataset.criterion, s.dataset.slot])",
    );
    let mut values = serde_json::Map::new();
    for pair in selects.as_array().unwrap() {
        let (c, s) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        values.insert(format!("{c}/{s}"), rank(c, s).into());
    }
    b.execute(
        "for (const s of document.querySelectorAll('select.rank')) s.value = String(arguments[0][s.dataset.criterion + '/' + s.dataset.slot]);",
        vec![Value::Object(values)],
    )
    .unwrap();
    b.find("#submit").unwrap().click().unwrap();
    b.wait_for("the next sample", Duration::from_secs(20), |b| {
        let now = b
            .execute("const e = document.querySelector('#study-progress'); return e ? e.textContent : null", vec![])
            .ok()?;
        (now != before && now.is_string()).then_some(())
    });
}

#[test]
fn dashboard_runs_reports_and_a_study_in_a_browser() {
    let Some(b) = browser_or_skip() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let server = Server::start(dir, &[]);
    b.goto(&server.url).unwrap();
    b.wait_css("#runs", Duration::from_secs(20));
    b.execute("window.__cocoflowMarker = 42", vec![]).unwrap();

    // --- A live run: workflows/demo.yaml, slowed down so the page can watch it.
    let mut run = start_demo(dir, &["step_seconds=0.8"]);
    let link = b.wait_for("the live run in the list", Duration::from_secs(30), |b| {
        let v = b
            .execute("const a = document.querySelector('tr[data-status=running] a'); return a ? a.getAttribute('href') : null", vec![])
            .ok()?;
        v.as_str().map(str::to_string)
    });
    b.execute(
        &format!("location.hash = {}", serde_json::to_string(&link).unwrap()),
        vec![],
    )
    .unwrap();
    b.wait_css("#dag .inst", Duration::from_secs(20));
    // Watch one instance's chip change state without a reload.
    let chip = "rl[3].train[baseline]";
    let mut seen: Vec<String> = Vec::new();
    let mut shot_live = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = js(
            &b,
            &format!(
                "const e = [...document.querySelectorAll('#dag .inst')].find(x => x.dataset.name === {}); return e ? e.dataset.state : null",
                serde_json::to_string(chip).unwrap()
            ),
        );
        if let Some(s) = st.as_str()
            && seen.last().map(String::as_str) != Some(s)
        {
            seen.push(s.to_string());
        }
        let running = js(
            &b,
            "return document.querySelectorAll('#dag .inst.state-running').length",
        )
        .as_u64()
        .unwrap_or(0);
        if running > 0 && !shot_live {
            // Select a running instance: its attempts and log show in the panel.
            js(
                &b,
                "document.querySelector('#dag .inst.state-running').click()",
            );
            std::thread::sleep(Duration::from_millis(400));
            shot(&b, "run-live.png");
            shot_live = true;
        }
        let status = js(
            &b,
            "const e = document.querySelector('#run-status'); return e ? e.textContent : ''",
        );
        if status.as_str().unwrap_or("").starts_with("succeeded") {
            // (the chip as drawn with that status)
            let st = js(
                &b,
                &format!(
                    "return [...document.querySelectorAll('#dag .inst')].find(x => x.dataset.name === {}).dataset.state",
                    serde_json::to_string(chip).unwrap()
                ),
            );
            if seen.last() != st.as_str().map(str::to_string).as_ref() {
                seen.push(st.as_str().unwrap_or("").to_string());
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the run never showed as succeeded; states seen: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(run.wait().unwrap().success());
    assert!(shot_live, "no instance was ever shown running");
    assert_eq!(
        seen.last().map(String::as_str),
        Some("succeeded"),
        "{seen:?}"
    );
    assert!(
        seen.len() >= 2 && seen.iter().any(|s| s == "waiting" || s == "running"),
        "{seen:?}"
    );
    let finished = js(
        &b,
        "return [...document.querySelectorAll('#dag .inst')].every(e => e.dataset.state === 'succeeded' || e.dataset.state === 'cached')",
    );
    assert_eq!(finished, Value::Bool(true));
    assert_eq!(
        js(&b, "return window.__cocoflowMarker"),
        Value::from(42),
        "the page reloaded"
    );
    let events = js(
        &b,
        "return document.querySelectorAll('#feed .ev-finish').length",
    )
    .as_u64()
    .unwrap();
    assert!(events >= 5, "the event feed shows {events} finish events");

    // --- A finished ablation report.
    let abl = run_small_ablation(dir);
    b.execute(&format!("location.hash = '#/run/{abl}'"), vec![])
        .unwrap();
    b.wait_css(".report-link", Duration::from_secs(30));
    // (the run view redraws on every state event: click through the DOM, not a held reference)
    js(&b, "document.querySelector('.report-link').click()");
    b.wait_css("#report-table td", Duration::from_secs(30));
    let names = || {
        js(
            &b,
            "return [...document.querySelectorAll('#report-table tr')].slice(1).map(r => r.cells[0].textContent)",
        )
    };
    let unsorted = names();
    assert!(unsorted.as_array().unwrap().len() >= 3, "{unsorted}");
    b.find("#report-table th[data-col='0']")
        .unwrap()
        .click()
        .unwrap();
    let asc = names();
    let mut want: Vec<String> = unsorted
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    want.sort();
    assert_eq!(asc, serde_json::to_value(&want).unwrap());
    shot(&b, "report-table.png");
    b.find("#tab-images").unwrap().click().unwrap();
    b.wait_css(".browser-item", Duration::from_secs(30));
    let n_all = js(
        &b,
        "return document.querySelectorAll('.browser-item').length",
    )
    .as_u64()
    .unwrap();
    assert!(n_all >= 6, "{n_all} items");
    // Filter by an edit type.
    let ty = js(
        &b,
        "const s = document.querySelector('#edit-type-filter'); s.value = s.options[1].value; s.dispatchEvent(new Event('change')); return s.value",
    );
    let types = js(
        &b,
        "return [...new Set([...document.querySelectorAll('.browser-item')].map(r => r.dataset.editType))]",
    );
    assert_eq!(types, serde_json::json!([ty]));
    js(
        &b,
        "const s = document.querySelector('#edit-type-filter'); s.value = ''; s.dispatchEvent(new Event('change'))",
    );
    // Flip between two arms: the flip column's image and label change, and flip back.
    let flip = || {
        js(
            &b,
            "const i = document.querySelector('.browser-item .flip-img'); return [i.getAttribute('src'), document.querySelector('.browser-item .flip-label').textContent]",
        )
    };
    let a = flip();
    b.find("#flip").unwrap().click().unwrap();
    let bb = flip();
    assert_ne!(a[0], bb[0], "flipping shows the other arm's image");
    assert_ne!(a[1], bb[1]);
    assert!(
        a[1].as_str().unwrap().contains("ratio-0.5-0.5")
            && bb[1].as_str().unwrap().contains("ratio-1.0-0.0"),
        "{a} {bb}"
    );
    // The images load (from the store, through the server).
    let loaded = js(
        &b,
        "return [...document.querySelectorAll('.browser-item img')].slice(0, 12).every(i => i.complete && i.naturalWidth > 0)",
    );
    assert_eq!(loaded, Value::Bool(true));
    shot(&b, "image-browser.png");
    b.find("#flip").unwrap().click().unwrap();
    assert_eq!(flip(), a);

    // --- A study: 3 methods × 6 samples, two annotators, a server restart mid-study.
    let o = cocoflow(
        dir,
        &[
            "study",
            "new",
            "pref",
            "--samples",
            "6",
            "--seed",
            "3",
            "--method",
            &format!("ours={abl}:rl[2].eval[ratio-0.5-0.5]"),
            "--method",
            &format!("judge-only={abl}:rl[2].eval[ratio-1.0-0.0]"),
            "--method",
            &format!("base={abl}:eval_base"),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    // Blind: an edit is not reachable by its digest, the dashboard's export names none, and an
    // answer for an order the annotator was not shown is refused.
    let def: Value = serde_json::from_slice(
        &std::fs::read(dir.join(".cocoflow/store/studies/pref/study.json")).unwrap(),
    )
    .unwrap();
    let s0 = &def["samples"][0];
    let edit = s0["edits"]["ours"].as_str().unwrap();
    let src = s0["source"].as_str().unwrap();
    assert_eq!(
        raw(
            server.port,
            "GET",
            &format!("/api/studies/pref/image/{edit}"),
            &[],
            ""
        )
        .0,
        404
    );
    assert_eq!(
        raw(
            server.port,
            "GET",
            &format!("/api/studies/pref/image/{src}"),
            &[],
            ""
        )
        .0,
        200
    );
    let blind = raw(server.port, "GET", "/api/studies/pref/export.json", &[], "").1;
    assert!(
        !blind.contains(edit) && !blind.contains("\"edits\""),
        "{blind}"
    );
    let stale = format!(
        r#"{{"annotator":"zed","sample":{},"order_seed":"1","ranks":{{"success":{{"A":1,"B":2,"C":3}},"consistency":{{"A":1,"B":2,"C":3}}}}}}"#,
        s0["key"]
    );
    let (code, body) = raw(
        server.port,
        "POST",
        "/api/studies/pref/answers",
        &[("Content-Type", "application/json")],
        &stale,
    );
    assert_eq!(code, 409, "{body}");
    let by_slot = |_: &str, s: &str| -> u32 { (s.as_bytes()[0] - b'A') as u32 + 1 };
    let ties = |c: &str, s: &str| -> u32 {
        match (c, s) {
            ("success", "A" | "B") => 1,
            ("success", _) => 3,
            (_, s) => (s.as_bytes()[0] - b'A') as u32 + 1,
        }
    };
    b.execute("location.hash = '#/study/pref/annotate'", vec![])
        .unwrap();
    b.wait_css("#annotator", Duration::from_secs(20))
        .send_keys("alice")
        .unwrap();
    b.find("#start").unwrap().click().unwrap();
    b.wait_css("#study-instruction", Duration::from_secs(20));
    for _ in 0..3 {
        answer(&b, &by_slot);
    }
    shot(&b, "study.png");
    // Kill the server mid-study; a new one (another port) resumes where alice stopped.
    drop(server);
    let server = Server::start(dir, &[]);
    b.goto(&format!("{}#/study/pref/annotate", server.url))
        .unwrap();
    // (another origin: the page asks for the name again; the answers come from the store)
    b.wait_css("#annotator", Duration::from_secs(20))
        .send_keys("alice")
        .unwrap();
    b.find("#start").unwrap().click().unwrap();
    let progress = b
        .wait_css("#study-progress", Duration::from_secs(20))
        .text()
        .unwrap();
    assert!(progress.starts_with("3/6"), "{progress}");
    for _ in 0..3 {
        answer(&b, &by_slot);
    }
    b.wait_css("#study-complete", Duration::from_secs(20));
    // The second annotator, with ties.
    b.execute(
        "sessionStorage.clear(); location.hash = '#/studies'",
        vec![],
    )
    .unwrap();
    b.wait_css("#studies", Duration::from_secs(20));
    b.execute("location.hash = '#/study/pref/annotate'", vec![])
        .unwrap();
    let who = b.wait_css("#annotator", Duration::from_secs(20));
    who.clear().unwrap();
    who.send_keys("bob").unwrap();
    b.find("#start").unwrap().click().unwrap();
    b.wait_css("#study-instruction", Duration::from_secs(20));
    for _ in 0..6 {
        answer(&b, &ties);
    }
    b.wait_css("#study-complete", Duration::from_secs(20));

    // The results page's average ranks equal the ones computed here from the export.
    b.execute("location.hash = '#/study/pref/results'", vec![])
        .unwrap();
    b.wait_css(".results-ranks", Duration::from_secs(20));
    shot(&b, "study-results.png");
    let shown = js(
        &b,
        "const o = {}; for (const t of document.querySelectorAll('.results-ranks')) for (const r of t.querySelectorAll('tr[data-method]')) o[t.dataset.criterion + '/' + r.dataset.method] = Number(r.querySelector('.avg-rank').textContent); return o",
    );
    let export = get_json(server.port, "/api/studies/pref/export.json");
    let answers = export["answers"].as_array().unwrap();
    assert_eq!(answers.len(), 12, "6 samples × 2 annotators");
    let mut sums: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    for a in answers {
        let order: Vec<&str> = a["order"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let bob = a["annotator"] == "bob";
        for c in ["success", "consistency"] {
            // The stored ranks are the ones given to the slots, mapped to the methods shown.
            let raw: Vec<f64> = order
                .iter()
                .map(|m| a["ranks"][c][m].as_f64().unwrap())
                .collect();
            let given: Vec<f64> = (0..order.len())
                .map(|j| {
                    let s = ((b'A' + j as u8) as char).to_string();
                    (if bob { ties(c, &s) } else { by_slot(c, &s) }) as f64
                })
                .collect();
            assert_eq!(raw, given, "{a}");
            // Mid-ranks: the tie at rank 1 of two methods is 1.5 each.
            for (j, m) in order.iter().enumerate() {
                let mid = if bob && c == "success" && j < 2 {
                    1.5
                } else {
                    given[j]
                };
                let e = sums.entry(format!("{c}/{m}")).or_default();
                e.0 += mid;
                e.1 += 1.0;
            }
        }
    }
    for (k, (s, n)) in &sums {
        let want = s / n;
        let got = shown[k].as_f64().unwrap_or(f64::NAN);
        assert!(
            (got - want).abs() < 5e-4,
            "{k}: page {got}, expected {want}"
        );
    }
    // The same numbers from the command line's report.
    let rep = cocoflow(dir, &["study", "report", "pref", "--out", "study-out"]);
    assert!(rep.status.success(), "{}", text(&rep));
    let v: Value =
        serde_json::from_slice(&std::fs::read(dir.join("study-out/study.json")).unwrap()).unwrap();
    for c in v["summary"]["per_criterion"].as_array().unwrap() {
        for r in c["ranks"].as_array().unwrap() {
            let k = format!(
                "{}/{}",
                c["criterion"].as_str().unwrap(),
                r["method"].as_str().unwrap()
            );
            assert!(
                (r["mean_rank"].as_f64().unwrap() - shown[&k].as_f64().unwrap()).abs() < 5e-4,
                "{k}"
            );
        }
    }

    // --- HTML in an instruction is shown as text and never runs.
    let store = dir.join(".cocoflow/store/studies");
    let def = std::fs::read_to_string(store.join("pref/study.json")).unwrap();
    let mut v: Value = serde_json::from_str(&def).unwrap();
    let payload =
        "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script><b>bold</b>";
    v["name"] = "xss".into();
    for s in v["samples"].as_array_mut().unwrap() {
        s["instruction"] = payload.into();
    }
    std::fs::create_dir_all(store.join("xss")).unwrap();
    std::fs::write(
        store.join("xss/study.json"),
        serde_json::to_vec(&v).unwrap(),
    )
    .unwrap();
    for f in std::fs::read_dir(store.join("pref/images"))
        .unwrap()
        .flatten()
    {
        let to = store.join("xss/images");
        std::fs::create_dir_all(&to).unwrap();
        std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
    }
    b.execute(
        "sessionStorage.setItem('annotator', 'carol'); location.hash = '#/study/xss/annotate'",
        vec![],
    )
    .unwrap();
    let shown = b
        .wait_css("#study-instruction", Duration::from_secs(20))
        .text()
        .unwrap();
    assert_eq!(shown, payload);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        js(
            &b,
            "return window.__pwned === undefined && !document.querySelector('#study-instruction img, #study-instruction b, #study-instruction script')"
        ),
        Value::Bool(true)
    );

    // The page asks nothing of the network: no external URL in what the server sends.
    for asset in ["/", "/assets/app.js", "/assets/app.css"] {
        let (st, body) = raw(server.port, "GET", asset, &[], "");
        assert_eq!(st, 200);
        assert!(
            !body.contains("https://") && !body.contains("http://"),
            "{asset} names an external URL"
        );
    }
}

#[test]
fn the_server_refuses_traversal_foreign_hosts_and_requests_without_the_token() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let o = cocoflow(
        dir,
        &[
            "run",
            repo().join("workflows/demo.yaml").to_str().unwrap(),
            "-q",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let st: Value = serde_json::from_slice(&cocoflow(dir, &["status", "--json"]).stdout).unwrap();
    let run = st["run"]["id"].as_str().unwrap().to_string();
    let data = st["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "data")
        .unwrap();
    let key = data["key"].as_str().unwrap().to_string();
    let s = Server::start(dir, &[]);
    let p = s.port;

    // A file of an output, by its exact path.
    let (code, body) = raw(
        p,
        "GET",
        &format!("/api/runs/{run}/file/{key}/dataset/1.txt"),
        &[],
        "",
    );
    assert_eq!((code, body.as_str()), (200, "sample 1 seed=0\n"));
    let (_, head) = {
        let mut s = TcpStream::connect(("127.0.0.1", p)).unwrap();
        write!(s, "GET /api/runs/{run}/file/{key}/dataset/1.txt HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        (0, out.to_ascii_lowercase())
    };
    assert!(
        head.contains("content-security-policy: default-src 'none'") && head.contains("sandbox"),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"));

    // Traversal, plain and encoded, and names that are not there.
    let secret = dir.join(".cocoflow/journal.redb");
    assert!(secret.exists());
    for path in [
        format!("/api/runs/{run}/file/{key}/dataset/../../../../journal.redb"),
        format!("/api/runs/{run}/file/{key}/dataset/%2e%2e/%2e%2e/journal.redb"),
        format!("/api/runs/{run}/file/{key}/dataset/..%2f..%2fjournal.redb"),
        format!("/api/runs/{run}/file/{key}/dataset/%2E%2E%5C%2E%2E%5Cjournal.redb"),
        format!("/api/runs/{run}/file/{key}/dataset//etc/passwd"),
        format!("/api/runs/{run}/log/{key}/..%2f..%2f..%2fjournal.redb"),
        "/assets/..%2f..%2fCargo.toml".to_string(),
        "/api/runs/%2e%2e".to_string(),
    ] {
        let (code, body) = raw(p, "GET", &path, &[], "");
        assert!(code == 400 || code == 404, "{path}: {code} {body}");
        assert!(
            !body.contains("redb") || body.contains("error"),
            "{path}: {body}"
        );
    }
    for (path, want) in [
        (
            format!("/api/runs/{run}/file/{key}/dataset/%252e%252e/x"),
            404,
        ),
        (format!("/api/runs/{run}/file/{key}/dataset/9.txt"), 404),
        (format!("/api/runs/{run}/file/{key}/nope/1.txt"), 404),
        (
            format!("/api/runs/{run}/file/{}/dataset/1.txt", "0".repeat(64)),
            404,
        ),
        ("/api/runs/20990101-000000-dead".to_string(), 404),
        ("/api/runs/20990101-000000-dead/stream".to_string(), 404),
        ("/api/runs/20990101-000000-dead/file/x/y/z".to_string(), 404),
        ("/api/studies/nope/results".to_string(), 404),
        ("/api/studies/..%2fruns/results".to_string(), 400),
        (
            "/api/studies/nope/image/..%2f..%2fjournal.redb".to_string(),
            400,
        ),
        ("/api/nothing".to_string(), 404),
    ] {
        let (code, body) = raw(p, "GET", &path, &[], "");
        assert_eq!(code, want, "{path}: {body}");
    }
    // An instance of another run is not served through this one.
    let o = cocoflow(
        dir,
        &[
            "run",
            repo().join("workflows/demo.yaml").to_str().unwrap(),
            "--set",
            "seed=1",
            "-q",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let st2: Value = serde_json::from_slice(&cocoflow(dir, &["status", "--json"]).stdout).unwrap();
    let key2 = st2["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "data")
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(key, key2);
    let (code, _) = raw(
        p,
        "GET",
        &format!("/api/runs/{run}/file/{key2}/dataset/1.txt"),
        &[],
        "",
    );
    assert_eq!(code, 404);

    // A run killed with SIGKILL leaves its live snapshot behind: it is not shown as live.
    let mut fake = st.clone();
    fake["run"]["status"] = "running".into();
    fake["run"]["pid"] = 4_000_000.into(); // above pid_max: no such process
    std::fs::write(
        dir.join(format!(".cocoflow/runs/{run}.status.json")),
        serde_json::to_vec(&fake).unwrap(),
    )
    .unwrap();
    let runs = get_json(p, "/api/runs");
    let row = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == run.as_str())
        .unwrap();
    assert_eq!(
        (row["live"].clone(), row["status"].clone()),
        (Value::Bool(false), Value::from("succeeded")),
        "{row}"
    );
    assert_eq!(
        get_json(p, &format!("/api/runs/{run}"))["live"],
        Value::Bool(false)
    );

    // A foreign Host (DNS rebinding) on a loopback server.
    for host in [
        "evil.example:80",
        &format!("evil.example:{p}"),
        "127.0.0.1.evil.example",
        "",
        "localhost.:1",
    ] {
        let (code, _) = raw(p, "GET", "/api/runs", &[("Host", host)], "");
        assert_eq!(code, 403, "{host}");
    }
    // An SSH tunnel (`ssh -L 9000:localhost:PORT`) keeps the name and changes the port.
    for host in ["localhost:9000", "127.0.0.1", "[::1]:8765"] {
        let (code, _) = raw(p, "GET", "/api/runs", &[("Host", host)], "");
        assert_eq!(code, 200, "{host}");
    }
    // Writes: only a study's answers, as JSON, from this origin.
    for (m, path) in [
        ("POST", "/api/runs"),
        ("PUT", "/api/studies/x/answers"),
        ("DELETE", "/api/runs"),
        ("POST", "/api/runs/x/file/a/b/c"),
    ] {
        let (code, _) = raw(p, m, path, &[("Content-Type", "application/json")], "{}");
        assert_eq!(code, 405, "{m} {path}");
    }
    let (code, _) = raw(
        p,
        "POST",
        "/api/studies/x/answers",
        &[("Content-Type", "text/plain")],
        "{}",
    );
    assert_eq!(code, 415);
    let (code, _) = raw(
        p,
        "POST",
        "/api/studies/x/answers",
        &[
            ("Content-Type", "application/json"),
            ("Origin", "http://evil.example"),
        ],
        "{}",
    );
    assert_eq!(code, 403);
    drop(s);

    // A server started while a run holds the journal still shows the finished runs (from the
    // run summaries in the store) beside the live one.
    std::fs::remove_file(dir.join(format!(".cocoflow/runs/{run}.status.json"))).unwrap();
    let mut live = start_demo(dir, &["step_seconds=0.7", "seed=2"]);
    let t0 = Instant::now();
    while !std::fs::read_dir(dir.join(".cocoflow/runs"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".status.json"))
    {
        assert!(t0.elapsed() < Duration::from_secs(30), "no live snapshot");
        std::thread::sleep(Duration::from_millis(50));
    }
    let during = Server::start(dir, &[]);
    let runs = get_json(during.port, "/api/runs");
    let rows = runs["runs"].as_array().unwrap();
    assert!(rows.iter().any(|r| r["live"] == true), "{runs}");
    for id in [run.as_str(), st2["run"]["id"].as_str().unwrap()] {
        assert!(
            rows.iter()
                .any(|r| r["id"] == id && r["status"] == "succeeded"),
            "{id}: {runs}"
        );
    }
    let old = get_json(during.port, &format!("/api/runs/{run}"));
    assert!(
        old["instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "data"),
        "{old}"
    );
    let (code, _) = raw(
        during.port,
        "GET",
        &format!("/api/runs/{run}/file/{key}/dataset/1.txt"),
        &[],
        "",
    );
    assert_eq!(code, 200);
    assert!(live.wait().unwrap().success());
    drop(during);

    // A non-local address needs the token, on every request.
    let s = Server::start(dir, &["--addr", "0.0.0.0:0"]);
    let token = s.url.split("token=").nth(1).unwrap().to_string();
    assert_eq!(token.len(), 32, "{}", s.url);
    let p = s.port;
    for (path, headers, want) in [
        ("/".to_string(), vec![], 401),
        ("/api/runs".to_string(), vec![], 401),
        ("/assets/app.js".to_string(), vec![], 401),
        (format!("/api/runs?token={}", "0".repeat(32)), vec![], 401),
        (
            "/api/runs".to_string(),
            vec![("Authorization", format!("Bearer {}", "f".repeat(32)))],
            401,
        ),
        (format!("/api/runs?token={token}"), vec![], 200),
        (
            "/api/runs".to_string(),
            vec![("Authorization", format!("Bearer {token}"))],
            200,
        ),
        (
            "/api/runs".to_string(),
            vec![("Cookie", format!("cocoflow_token={token}"))],
            200,
        ),
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, body) = raw(p, "GET", &path, &h, "");
        assert_eq!(code, want, "{path} {headers:?}: {body}");
    }
    // Any Host is fine there (the token is the guard); the page sets the cookie from the URL.
    let (code, _) = raw(
        p,
        "GET",
        &format!("/?token={token}"),
        &[("Host", "gpu-node-3:8765")],
        "",
    );
    assert_eq!(code, 200);
    // An explicit token on loopback is checked too.
    let s2 = Server::start(dir, &["--token", "sekrit-token-123"]);
    assert_eq!(raw(s2.port, "GET", "/api/runs", &[], "").0, 401);
    assert_eq!(
        raw(s2.port, "GET", "/api/runs?token=sekrit-token-123", &[], "").0,
        200
    );
}
