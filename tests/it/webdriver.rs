//! A minimal W3C WebDriver client for browser (UI) tests, plus its smoke test.
//!
//! [`Browser::start`] runs `chromedriver` (Debian's `chromium-driver`, installed with Debian's
//! `chromium` by `scripts/browser.sh`, which `scripts/setup.sh` runs) on a free loopback port
//! and opens a headless Chromium session through it; dropping the [`Browser`] ends the session
//! and stops chromedriver. The JSON wire protocol is spoken over `reqwest::blocking`.
//!
//! The browser has no network beyond loopback: `--proxy-server=127.0.0.1:9` sends every request
//! to a closed port (`net::ERR_PROXY_CONNECTION_FAILED`), while Chromium's implicit bypass rules
//! keep `localhost`, `127.0.0.0/8` and `[::1]` direct, so a test's own server on 127.0.0.1 is
//! reached and anything else (CDNs, fonts, images from the web) fails. There is deliberately no
//! `--proxy-bypass-list=<-loopback>`: that rule *removes* the implicit loopback bypass, and then
//! 127.0.0.1 goes to the dead proxy too (checked with Chromium 156).
//!
//! Tests get a browser with [`browser_or_skip`]: without chromedriver it returns `None` (the test
//! passes, saying so on stderr) unless `COCOFLOW_REQUIRE_BROWSER` is set (CI), where it panics.
//! `COCOFLOW_CHROMEDRIVER` and `COCOFLOW_CHROMIUM` override the two programs.
#![allow(dead_code)] // the client's API is for every UI test, not all of it is used by each

use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The W3C key under which an element reference travels in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The `error` code of [`Error`] when chromedriver or Chromium is not installed.
pub const NOT_INSTALLED: &str = "browser not installed";

/// Chromium's command line (plus `--user-data-dir`). `--no-sandbox`: CI runs as root, where
/// Chromium refuses to start with its sandbox ("Running as root without --no-sandbox is not
/// supported"). `--disable-dev-shm-usage`: containers often have a 64 MB /dev/shm, too small for
/// the renderer; it uses /tmp instead. The viewport is 1400x857: in `--headless=new` the window
/// size includes the (invisible) browser UI. The proxy: see the module docs.
pub const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
    "--proxy-server=127.0.0.1:9",
];

/// A WebDriver failure: `error` is the W3C error code (`no such element`, `javascript error`,
/// `unknown error`, ...; [`NOT_INSTALLED`]; `http` for transport failures) and `message`
/// chromedriver's message.
#[derive(Debug, Clone)]
pub struct Error {
    pub error: String,
    pub message: String,
}

impl Error {
    fn new(error: &str, message: impl Into<String>) -> Error {
        Error {
            error: error.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "webdriver: {}: {}", self.error, self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// A headless Chromium driven through its own chromedriver process.
pub struct Browser {
    http: reqwest::blocking::Client,
    /// `http://127.0.0.1:<port>/session/<id>`
    base: String,
    driver: Child,
    log: PathBuf,
    /// Chromium's profile (`--user-data-dir`, ~2 MB), removed with the `Browser` even when
    /// chromedriver had to be killed (its own /tmp/org.chromium.Chromium.scoped_dir.* would stay).
    _profile: tempfile::TempDir,
}

/// An element of the current page (a W3C element reference).
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

/// The browser for a UI test, or `None` (with a note on stderr) when chromedriver/Chromium is
/// not installed and `COCOFLOW_REQUIRE_BROWSER` is unset; panics when it is set, and on any other
/// failure to start.
pub fn browser_or_skip() -> Option<Browser> {
    match Browser::start() {
        Ok(b) => Some(b),
        Err(e) if e.error == NOT_INSTALLED => {
            let required =
                std::env::var("COCOFLOW_REQUIRE_BROWSER").is_ok_and(|v| !v.is_empty() && v != "0");
            assert!(!required, "COCOFLOW_REQUIRE_BROWSER is set but {e}");
            eprintln!(
                "browser test skipped: {e} (set COCOFLOW_REQUIRE_BROWSER=1 to make this an error)"
            );
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// Where UI tests put screenshots: `<target dir>/ui-screenshots`.
pub fn screenshot_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `<target dir>/tmp`, whatever the target dir is configured to be.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("ui-screenshots")
}

/// Finds `prog` (a name or a path) on PATH.
fn which(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        return Path::new(prog).is_file().then(|| PathBuf::from(prog));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

fn tail(path: &Path, lines: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Turns a chromedriver reply into its `value`, or the error it carries.
fn reply(resp: reqwest::blocking::Response) -> Result<Value> {
    let status = resp.status();
    let body: Value = resp
        .json()
        .map_err(|e| Error::new("http", format!("bad reply ({status}): {e}")))?;
    let value = body.get("value").cloned().unwrap_or(Value::Null);
    match value.get("error").and_then(Value::as_str) {
        Some(code) => {
            let msg = value.get("message").and_then(Value::as_str).unwrap_or("");
            // Drop chromedriver's "\n  (Session info: chrome=...)" trailer.
            let msg = msg.split("\n  (Session info").next().unwrap_or(msg);
            Err(Error::new(code, msg))
        }
        None if !status.is_success() => Err(Error::new("http", format!("{status}: {body}"))),
        None => Ok(value),
    }
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium session (about 0.5 s).
    /// Fails with error [`NOT_INSTALLED`] (whose message says to run scripts/browser.sh) when
    /// chromedriver or Chromium is missing.
    pub fn start() -> Result<Browser> {
        let driver_name =
            std::env::var("COCOFLOW_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let chromium = std::env::var("COCOFLOW_CHROMIUM").ok();
        let Some(driver_path) = which(&driver_name) else {
            return Err(Error::new(
                NOT_INSTALLED,
                format!("`{driver_name}` not found on PATH: run scripts/browser.sh"),
            ));
        };
        let chromium_name = chromium.as_deref().unwrap_or("chromium");
        if which(chromium_name).is_none() {
            return Err(Error::new(
                NOT_INSTALLED,
                format!("`{chromium_name}` not found on PATH: run scripts/browser.sh"),
            ));
        }
        let http = reqwest::blocking::Client::builder()
            .no_proxy() // chromedriver is on loopback, whatever HTTP_PROXY says
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| Error::new("http", e.to_string()))?;

        // The port is free when checked; another process may take it before chromedriver binds
        // it, so try a few.
        let mut last = None;
        for _ in 0..3 {
            let port = free_port();
            let log = std::env::temp_dir().join(format!("cocoflow-chromedriver-{port}.log"));
            let out = std::fs::File::create(&log)
                .map_err(|e| Error::new("io", format!("{}: {e}", log.display())))?;
            let err = out
                .try_clone()
                .map_err(|e| Error::new("io", e.to_string()))?;
            let mut driver = Command::new(&driver_path)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| Error::new("io", format!("{}: {e}", driver_path.display())))?;
            let root = format!("http://127.0.0.1:{port}");
            match Self::wait_ready(&http, &root, &mut driver, &log) {
                Ok(()) => {}
                Err(e) => {
                    let _ = driver.kill();
                    let _ = driver.wait();
                    last = Some(e);
                    continue;
                }
            }
            let profile = tempfile::Builder::new()
                .prefix("cocoflow-chromium-")
                .tempdir()
                .map_err(|e| Error::new("io", format!("profile dir: {e}")))?;
            let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
            args.push(format!("--user-data-dir={}", profile.path().display()));
            let mut options = json!({ "args": args });
            if let Some(bin) = &chromium {
                options["binary"] = json!(bin);
            }
            let caps = json!({ "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": options,
                "timeouts": { "pageLoad": 30_000, "script": 30_000, "implicit": 0 },
            }}});
            let session = http
                .post(format!("{root}/session"))
                .json(&caps)
                .send()
                .map_err(|e| Error::new("http", e.to_string()))
                .and_then(reply);
            let id = match session {
                Ok(v) => v["sessionId"].as_str().unwrap_or_default().to_string(),
                Err(mut e) => {
                    let _ = driver.kill();
                    let _ = driver.wait();
                    if e.message.contains("cannot find Chrome binary") {
                        e.error = NOT_INSTALLED.into();
                    }
                    e.message = format!(
                        "{} (is Chromium installed? run scripts/browser.sh; chromedriver log {}:\n{})",
                        e.message,
                        log.display(),
                        tail(&log, 20)
                    );
                    return Err(e);
                }
            };
            return Ok(Browser {
                http,
                base: format!("{root}/session/{id}"),
                driver,
                log,
                _profile: profile,
            });
        }
        Err(last.unwrap())
    }

    /// Polls chromedriver's GET /status until it says ready (at most 20 s).
    fn wait_ready(
        http: &reqwest::blocking::Client,
        root: &str,
        driver: &mut Child,
        log: &Path,
    ) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = driver.try_wait() {
                return Err(Error::new(
                    "chromedriver",
                    format!(
                        "exited with {status} before it was ready:\n{}",
                        tail(log, 20)
                    ),
                ));
            }
            let ready = http
                .get(format!("{root}/status"))
                .timeout(Duration::from_secs(2))
                .send()
                .ok()
                .and_then(|r| reply(r).ok())
                .is_some_and(|v| v["ready"] == json!(true));
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::new(
                    "chromedriver",
                    format!("not ready after 20 s:\n{}", tail(log, 20)),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One WebDriver command on this session: `path` is relative to `/session/<id>`.
    fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().map_err(|e| Error::new("http", e.to_string()))?;
        reply(resp)
    }

    fn get(&self, path: &str) -> Result<Value> {
        self.cmd(reqwest::Method::GET, path, None)
    }

    fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.cmd(reqwest::Method::POST, path, Some(body))
    }

    fn element(&self, v: &Value) -> Result<Element<'_>> {
        match v.get(ELEMENT_KEY).and_then(Value::as_str) {
            Some(id) => Ok(Element {
                browser: self,
                id: id.to_string(),
            }),
            None => Err(Error::new("http", format!("not an element reference: {v}"))),
        }
    }

    /// Navigates to `url` and waits for the page to load.
    pub fn goto(&self, url: &str) -> Result<()> {
        self.post("/url", json!({ "url": url })).map(drop)
    }

    /// The first element matching the CSS selector (error `no such element` if none).
    pub fn find(&self, css: &str) -> Result<Element<'_>> {
        let v = self.post("/element", json!({ "using": "css selector", "value": css }))?;
        self.element(&v)
    }

    /// Every element matching the CSS selector, in document order (maybe none).
    pub fn find_all(&self, css: &str) -> Result<Vec<Element<'_>>> {
        let v = self.post(
            "/elements",
            json!({ "using": "css selector", "value": css }),
        )?;
        v.as_array()
            .map(|a| a.iter().map(|e| self.element(e)).collect())
            .unwrap_or_else(|| Err(Error::new("http", format!("not a list: {v}"))))
    }

    /// Runs `script` as the body of a function (`return ...;` gives the result) with `args`
    /// as `arguments` ([`Element::json`] passes an element).
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
    }

    /// Calls `f` every 100 ms until it returns `Some`; panics with `what` after `timeout`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Browser) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = f(self) {
                return t;
            }
            if Instant::now() >= deadline {
                let url = self.current_url().unwrap_or_else(|e| e.to_string());
                panic!("timed out after {timeout:?} waiting for {what} (page {url})");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until an element matches `css` and returns the first; panics after `timeout`.
    pub fn wait_css(&self, css: &str, timeout: Duration) -> Element<'_> {
        let id = self.wait_for(&format!("an element matching `{css}`"), timeout, |b| {
            b.find(css).ok().map(|e| e.id)
        });
        Element { browser: self, id }
    }

    /// Saves a PNG of the viewport to `path`, creating its parent directories.
    pub fn screenshot(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let v = self.get("/screenshot")?;
        let b64 = v
            .as_str()
            .ok_or_else(|| Error::new("http", "screenshot: not a string"))?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| Error::new("http", format!("screenshot: {e}")))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::new("io", format!("{}: {e}", dir.display())))?;
        }
        std::fs::write(path, png).map_err(|e| Error::new("io", format!("{}: {e}", path.display())))
    }

    pub fn title(&self) -> Result<String> {
        Ok(self.get("/title")?.as_str().unwrap_or_default().to_string())
    }

    pub fn current_url(&self) -> Result<String> {
        Ok(self.get("/url")?.as_str().unwrap_or_default().to_string())
    }

    pub fn page_source(&self) -> Result<String> {
        Ok(self
            .get("/source")?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    pub fn refresh(&self) -> Result<()> {
        self.post("/refresh", json!({})).map(drop)
    }

    /// chromedriver's log file (its stdout and stderr).
    pub fn driver_log(&self) -> &Path {
        &self.log
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session makes chromedriver quit Chromium. chromedriver removes its
        // temporary directories only after it has replied, so it is asked to shut down and
        // given a moment to exit before it is killed.
        let _ = self
            .http
            .delete(&self.base)
            .timeout(Duration::from_secs(10))
            .send();
        let root = self.base.split("/session/").next().unwrap_or_default();
        let _ = self
            .http
            .get(format!("{root}/shutdown"))
            .timeout(Duration::from_secs(2))
            .send();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && matches!(self.driver.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Element<'_> {
    fn path(&self, what: &str) -> String {
        format!("/element/{}{what}", self.id)
    }

    pub fn click(&self) -> Result<()> {
        self.browser.post(&self.path("/click"), json!({})).map(drop)
    }

    /// The rendered text (what a user sees: hidden parts left out).
    pub fn text(&self) -> Result<String> {
        let v = self.browser.get(&self.path("/text"))?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// The HTML attribute as written in the markup (`None` when absent). Note: an input's
    /// `value` attribute is its initial value; what the user typed is [`Element::prop`]`("value")`.
    pub fn attr(&self, name: &str) -> Result<Option<String>> {
        let v = self
            .browser
            .get(&self.path(&format!("/attribute/{name}")))?;
        Ok(v.as_str().map(str::to_string))
    }

    /// The DOM property (`value`, `checked`, `naturalWidth`, ...; `Null` when undefined).
    pub fn prop(&self, name: &str) -> Result<Value> {
        self.browser.get(&self.path(&format!("/property/{name}")))
    }

    /// Types `text` into the element (focusing it first).
    pub fn send_keys(&self, text: &str) -> Result<()> {
        self.browser
            .post(&self.path("/value"), json!({ "text": text }))
            .map(drop)
    }

    /// Empties an input or textarea.
    pub fn clear(&self) -> Result<()> {
        self.browser.post(&self.path("/clear"), json!({})).map(drop)
    }

    /// The element as an argument for [`Browser::execute`].
    pub fn json(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }
}

// ---------------------------------------------------------------------------- smoke test

const SMOKE_HTML: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>cocoflow smoke</title>
<style>body { font: 16px sans-serif; margin: 2em; } #out { font-size: 32px; color: #0a5; }</style>
</head><body>
<h1>WebDriver smoke test</h1>
<button id="btn" data-role="go" onclick="n++; document.getElementById('out').textContent = 'clicked ' + n">Click me</button>
<p id="out">not clicked</p>
<input id="name" value="preset">
<ul><li>a</li><li>b</li><li>c</li></ul>
<img id="local" src="/ok.png" alt="local">
<img id="ext" src="http://example.com/x.png" alt="external">
<script>var n = 0;</script>
</body></html>
"#;

/// A tiny PNG (a 4x3 red image) for the loopback image, made with the image crate.
fn tiny_png() -> Vec<u8> {
    let img = image::RgbImage::from_pixel(4, 3, image::Rgb([255, 0, 0]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn serve(mut s: TcpStream, png: &[u8]) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&req);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let (status, ctype, body) = match path {
        "/" => ("200 OK", "text/html; charset=utf-8", SMOKE_HTML.as_bytes()),
        "/ok.png" => ("200 OK", "image/png", png),
        _ => ("404 Not Found", "text/plain", &b"not found"[..]),
    };
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(body);
}

/// Serves [`SMOKE_HTML`] on 127.0.0.1 from a background thread; returns its base URL.
fn smoke_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let png = tiny_png();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            serve(s, &png);
        }
    });
    url
}

#[test]
fn webdriver_smoke() {
    let t0 = Instant::now();
    let Some(b) = browser_or_skip() else { return };
    eprintln!("browser started in {:.2} s", t0.elapsed().as_secs_f64());
    let url = smoke_server();
    let secs = Duration::from_secs;

    b.goto(&url).unwrap();
    assert_eq!(b.title().unwrap(), "cocoflow smoke");
    assert_eq!(b.current_url().unwrap(), url);
    assert!(b.page_source().unwrap().contains("WebDriver smoke test"));

    // Click: the inline script changes the text.
    let out = b.find("#out").unwrap();
    assert_eq!(out.text().unwrap(), "not clicked");
    let btn = b.wait_css("#btn", secs(5));
    assert_eq!(btn.attr("data-role").unwrap().as_deref(), Some("go"));
    assert_eq!(btn.attr("nope").unwrap(), None);
    btn.click().unwrap();
    b.wait_for("the click to show", secs(5), |b| {
        (b.find("#out").ok()?.text().ok()? == "clicked 1").then_some(())
    });

    // Typing, clearing, reading a property through execute with an element argument.
    let input = b.find("#name").unwrap();
    input.clear().unwrap();
    input.send_keys("hello").unwrap();
    assert_eq!(input.attr("value").unwrap().as_deref(), Some("preset"));
    assert_eq!(input.prop("value").unwrap(), json!("hello"));
    let v = b
        .execute(
            "return arguments[0].value + arguments[1];",
            vec![input.json(), json!("!")],
        )
        .unwrap();
    assert_eq!(v, json!("hello!"));
    assert_eq!(b.find_all("li").unwrap().len(), 3);
    assert!(b.find_all("table").unwrap().is_empty());
    let err = b.find("#missing").err().expect("no #missing");
    assert_eq!(err.error, "no such element", "{err}");

    // The loopback image loads (the proxy does not block 127.0.0.1) ...
    let local = b.wait_for("the local image to load", secs(10), |b| {
        let v = b
            .execute("const i = document.getElementById('local'); return i.complete ? i.naturalWidth : null;", vec![])
            .ok()?;
        v.as_u64()
    });
    assert_eq!(local, 4, "the loopback image should load");
    // ... and the external one does not: the page needs no network.
    let ext = b.wait_for("the external image to finish", secs(10), |b| {
        let v = b
            .execute("const i = document.getElementById('ext'); return i.complete ? i.naturalWidth : null;", vec![])
            .ok()?;
        v.as_u64()
    });
    assert_eq!(
        ext, 0,
        "http://example.com/x.png must not load (no network in the browser)"
    );
    // Navigating off loopback fails too.
    let err = b
        .goto("http://example.com/")
        .expect_err("example.com must not load");
    assert!(err.message.contains("ERR_PROXY_CONNECTION_FAILED"), "{err}");
    b.goto(&url).unwrap();

    // Refresh resets the page's state.
    b.find("#btn").unwrap().click().unwrap();
    b.refresh().unwrap();
    assert_eq!(b.find("#out").unwrap().text().unwrap(), "not clicked");

    let shot = screenshot_dir().join("smoke.png");
    let _ = std::fs::remove_file(&shot);
    b.screenshot(&shot).unwrap();
    let bytes = std::fs::read(&shot).unwrap();
    assert!(
        bytes.len() > 2_000,
        "{}: only {} bytes",
        shot.display(),
        bytes.len()
    );
    let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
    assert_eq!(img.width(), 1400, "--window-size=1400,1000");
    let colors: std::collections::HashSet<_> = img.pixels().map(|p| p.0).collect();
    assert!(
        colors.len() > 10,
        "screenshot looks blank: {} colors",
        colors.len()
    );
    eprintln!(
        "screenshot {} ({}x{} viewport, {} bytes) after {:.2} s",
        shot.display(),
        img.width(),
        img.height(),
        bytes.len(),
        t0.elapsed().as_secs_f64()
    );
    let t1 = Instant::now();
    drop(b);
    eprintln!("browser closed in {:.2} s", t1.elapsed().as_secs_f64());
}
