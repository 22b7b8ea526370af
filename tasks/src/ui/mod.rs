//! `cocoflow ui`: a local web dashboard — runs (live), reports (tables, plots, an image
//! browser) and human-preference studies ([`crate::study`]) — served by the torch-free front
//! end. One page app (`assets/`: HTML, CSS, JS, embedded in the binary; nothing is fetched
//! from the network) over a small JSON API:
//!
//! | path | what |
//! |---|---|
//! | `GET /api/runs` | every run of the state directory (the journal; a live run from its snapshot) |
//! | `GET /api/runs/<run>` | a run and its instances |
//! | `GET /api/runs/<run>/stream` | Server-Sent Events: `state` (the run, whenever it changes) and `run-event` (each line of the run's event log, `runs/<run>.events.jsonl`) |
//! | `GET /api/runs/<run>/log/<key>` | the tail of an instance's log |
//! | `GET /api/runs/<run>/outputs/<key>` | an instance's outputs and their files |
//! | `GET /api/runs/<run>/file/<key>/<output>/<path>` | one file of an output |
//! | `GET /api/studies`, `/api/studies/<name>/next?annotator=`, `/results`, `/export.csv`, `/export.json`, `/image/<digest>` | studies |
//! | `POST /api/studies/<name>/answers` | the only write: one annotator's ranks of one sample |
//!
//! Security: binds 127.0.0.1 by default and then checks the `Host` header (a page of another
//! site cannot reach it by DNS rebinding); any other address needs a token (`--token`, or one
//! generated and printed at start), checked on every request (`Authorization: Bearer`, a
//! `token` query parameter, or the cookie the page gets from it). Files are found by exact
//! path in the instance's stored output (never by joining file-system paths), only for
//! instances of the run named in the URL; logs only under the state directory's `logs/`.
//! Every response forbids framing and sniffing; files of outputs are served with a sandboxing
//! CSP (an SVG or HTML output cannot run script). The page writes every user-derived text with
//! `textContent`, never as HTML.

// Handlers return a ready response as their error: that is what they are for.
#![allow(clippy::result_large_err)]

mod runs;
mod studies;

use bytes::Bytes;
use cocoflow_engine::cli::{EXIT_ENVIRONMENT, EXIT_OK, EXIT_USAGE, Extension};
use cocoflow_engine::store::Store;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub type Body = BoxBody<Bytes, Infallible>;
pub type Resp = Response<Body>;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The journal's stamp ([`runs::journal_stamp`]) and the run list read at it.
pub type RunsCache = (Vec<(u128, u64)>, Vec<runs::RunRow>);

/// What every handler shares.
pub struct Ctx {
    pub state_dir: PathBuf,
    /// `--store`: where studies live (else the stores of the journal's runs).
    pub store_url: Option<String>,
    pub token: Option<String>,
    /// Bound to a loopback address: requests must name it in `Host`.
    pub loopback: bool,
    pub port: u16,
    stores: Mutex<HashMap<String, Store>>,
    /// The last run list read from the journal (a live run holds the journal).
    pub runs_cache: Mutex<RunsCache>,
    /// Each run's state as last read from the journal.
    pub run_cache: Mutex<HashMap<String, runs::RunState>>,
}

impl Ctx {
    pub fn new(
        state_dir: PathBuf,
        store_url: Option<String>,
        token: Option<String>,
        addr: SocketAddr,
    ) -> Ctx {
        Ctx {
            state_dir,
            store_url,
            token,
            loopback: addr.ip().is_loopback(),
            port: addr.port(),
            stores: Mutex::new(HashMap::new()),
            runs_cache: Mutex::new((Vec::new(), Vec::new())),
            run_cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self, url: &str) -> Result<Store, String> {
        let mut m = self.stores.lock().expect("store map");
        if let Some(s) = m.get(url) {
            return Ok(s.clone());
        }
        let s = crate::study::open_store(&self.state_dir, url).map_err(|e| e.to_string())?;
        m.insert(url.to_string(), s.clone());
        Ok(s)
    }
}

// ---------------------------------------------------------------------------------------
// Responses.

fn security_headers(b: hyper::http::response::Builder) -> hyper::http::response::Builder {
    b.header("x-content-type-options", "nosniff")
        .header("x-frame-options", "DENY")
        .header("referrer-policy", "no-referrer")
        .header("cache-control", "no-store")
}

pub fn full(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Resp {
    security_headers(Response::builder())
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(body.into()).boxed())
        .expect("a valid response")
}

pub fn json(status: StatusCode, v: &serde_json::Value) -> Resp {
    full(
        status,
        "application/json",
        serde_json::to_vec(v).expect("serialises"),
    )
}

pub fn error(status: StatusCode, msg: impl std::fmt::Display) -> Resp {
    json(status, &serde_json::json!({"error": msg.to_string()}))
}

/// A file of a stored output (or a study image): never run as a page.
pub fn file(path: &str, bytes: Bytes) -> Resp {
    let ctype = match path
        .rsplit('.')
        .next()
        .map(|e| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        Some("csv") => "text/csv; charset=utf-8",
        _ => "text/plain; charset=utf-8",
    };
    let mut r = full(StatusCode::OK, ctype, bytes);
    r.headers_mut().insert(
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; sandbox"
            .parse()
            .expect("header"),
    );
    r
}

// ---------------------------------------------------------------------------------------
// Requests.

/// The URL path's segments, percent-decoded; `None` for anything that could name a parent
/// or another root (`.`/`..` segments, empty segments, `/`, `\` or NUL inside a segment,
/// bad escapes).
pub fn segments(path: &str) -> Option<Vec<String>> {
    let trimmed = path.strip_prefix('/')?;
    if trimmed.is_empty() {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    for raw in trimmed.split('/') {
        let s = percent_decode(raw)?;
        if s.is_empty() || s == "." || s == ".." || s.contains(['/', '\\', '\0']) {
            return None;
        }
        out.push(s);
    }
    Some(out)
}

pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let d = |x: &str| percent_decode(&x.replace('+', " "));
            Some((d(k)?, d(v)?))
        })
        .collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token the request carries, if any.
fn request_token(req: &Request<Incoming>) -> Option<String> {
    if let Some(v) = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        && let Some(t) = v.strip_prefix("Bearer ")
    {
        return Some(t.trim().to_string());
    }
    if let Some(t) = query(req).get("token") {
        return Some(t.clone());
    }
    req.headers()
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("cocoflow_token=").map(str::to_string))
}

/// `Err(response)` when the request may not proceed.
fn check_access(ctx: &Ctx, req: &Request<Incoming>) -> Result<(), Resp> {
    if ctx.loopback {
        let host = req
            .headers()
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        // The host name decides (an SSH tunnel changes the port); a DNS-rebinding page
        // arrives with its own name.
        let name = match host.rsplit_once(':') {
            Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty() => n,
            _ => host,
        };
        if !matches!(name, "127.0.0.1" | "localhost" | "[::1]") {
            return Err(error(
                StatusCode::FORBIDDEN,
                format!(
                    "this server is bound to loopback and answers only requests for 127.0.0.1, localhost or [::1], not `{host}` (to serve other names, start it with --addr and a token)"
                ),
            ));
        }
    }
    if let Some(want) = &ctx.token {
        match request_token(req) {
            Some(t) if constant_time_eq(t.as_bytes(), want.as_bytes()) => {}
            Some(_) => {
                return Err(error(
                    StatusCode::UNAUTHORIZED,
                    "wrong token (a cookie from another cocoflow ui on this host?): open the URL this server printed (…/?token=…)",
                ));
            }
            None => {
                return Err(error(
                    StatusCode::UNAUTHORIZED,
                    "this server needs its token: open the URL `cocoflow ui` printed (…/?token=…)",
                ));
            }
        }
    }
    Ok(())
}

async fn handle(ctx: Arc<Ctx>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    if let Err(r) = check_access(&ctx, &req) {
        return Ok(r);
    }
    let Some(seg) = segments(req.uri().path()) else {
        return Ok(error(
            StatusCode::BAD_REQUEST,
            format!(
                "path `{}`: empty, `.` or `..` segments and encoded `/` or `\\` are refused",
                req.uri().path()
            ),
        ));
    };
    let method = req.method().clone();
    let seg: Vec<&str> = seg.iter().map(String::as_str).collect();
    if method == Method::POST {
        return Ok(match seg.as_slice() {
            ["api", "studies", name, "answers"] => {
                let name = name.to_string();
                studies::post_answer(&ctx, &name, req).await
            }
            _ => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "the only write is a study answer",
            ),
        });
    }
    if method != Method::GET && method != Method::HEAD {
        return Ok(error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"));
    }
    let q = query(&req);
    let token_ok = ctx
        .token
        .as_ref()
        .is_some_and(|t| request_token(&req).as_deref() == Some(t.as_str()));
    let owned: Vec<String> = seg.iter().map(|s| s.to_string()).collect();
    Ok(get(ctx, owned, q, token_ok).await)
}

/// The GET routes (owned arguments: the future is `Send` for any request lifetime).
fn get(
    ctx: Arc<Ctx>,
    seg: Vec<String>,
    q: HashMap<String, String>,
    token_ok: bool,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Resp> + Send>> {
    Box::pin(async move {
        let s: Vec<&str> = seg.iter().map(String::as_str).collect();
        match s.as_slice() {
            [] | ["index.html"] => index(&ctx, token_ok),
            ["assets", "app.js"] => full(StatusCode::OK, "text/javascript; charset=utf-8", APP_JS),
            ["assets", "app.css"] => full(StatusCode::OK, "text/css; charset=utf-8", APP_CSS),
            ["api", "runs"] => runs::list(&ctx).await,
            ["api", "runs", run] => runs::detail(&ctx, run).await,
            ["api", "runs", run, "stream"] => runs::stream(ctx.clone(), run.to_string()).await,
            ["api", "runs", run, "log", key] => runs::log(&ctx, run, key, &q).await,
            ["api", "runs", run, "outputs", key] => runs::outputs(&ctx, run, key).await,
            ["api", "runs", run, "file", key, output, rest @ ..] => {
                runs::output_file(&ctx, run, key, output, &rest.join("/")).await
            }
            ["api", "studies"] => studies::list(&ctx).await,
            ["api", "studies", name, "next"] => studies::next(&ctx, name, &q).await,
            ["api", "studies", name, "results"] => studies::results(&ctx, name).await,
            ["api", "studies", name, "export.csv"] => studies::export(&ctx, name, "csv").await,
            ["api", "studies", name, "export.json"] => studies::export(&ctx, name, "json").await,
            ["api", "studies", name, "image", digest] => studies::image(&ctx, name, digest).await,
            ["api", "studies", name, "slot", sample, slot] => {
                studies::slot_image(&ctx, name, sample, slot, &q).await
            }
            _ => error(
                StatusCode::NOT_FOUND,
                format!("no page or API at `/{}`", seg.join("/")),
            ),
        }
    })
}

fn index(ctx: &Ctx, token_ok: bool) -> Resp {
    let mut r = full(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML);
    r.headers_mut().insert(
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
            .parse()
            .expect("header"),
    );
    // A token given in the URL becomes a cookie: images and the event stream carry it.
    if let Some(t) = &ctx.token
        && token_ok
    {
        r.headers_mut().insert(
            "set-cookie",
            format!("cocoflow_token={t}; HttpOnly; SameSite=Lax; Path=/")
                .parse()
                .expect("header"),
        );
    }
    r
}

/// Serves until the returned task is aborted; the bound address first.
pub async fn serve(
    ctx: Ctx,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let mut ctx = ctx;
    ctx.port = bound.port();
    let ctx = Arc::new(ctx);
    // The run list as it is now: a run that starts later holds the journal.
    {
        let c = ctx.clone();
        let _ = tokio::task::spawn_blocking(move || runs::read_runs(&c)).await;
    }
    // At most this many connections at once (each event stream holds one).
    let connections = Arc::new(tokio::sync::Semaphore::new(256));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // (out of descriptors, say: do not spin)
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(ctx.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(30))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                drop(permit);
            });
        }
    });
    Ok((bound, task))
}

fn generated_token() -> String {
    let mut buf = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .is_ok();
    if !ok {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        buf.copy_from_slice(
            &blake3::hash(format!("{t}{}", std::process::id()).as_bytes()).as_bytes()[..16],
        );
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------
// `cocoflow ui`.

pub fn extension() -> Extension {
    use clap::{Arg, Command};
    Extension {
        command: Command::new("ui")
            .about("A local web dashboard: live runs, reports and image browser, human-preference studies")
            .arg(
                Arg::new("addr")
                    .long("addr")
                    .default_value("127.0.0.1:8765")
                    .help("Listen here (port 0: any free port); an address other than loopback needs a token"),
            )
            .arg(
                Arg::new("token")
                    .long("token")
                    .env("COCOFLOW_UI_TOKEN")
                    .help("Require this token on every request (generated and printed when the address is not loopback)"),
            )
            .arg(
                Arg::new("store")
                    .long("store")
                    .value_name("URL")
                    .help("The store whose studies to show (default: the stores of the journal's runs)"),
            ),
        run: run_cli,
    }
}

fn run_cli(m: &clap::ArgMatches) -> i32 {
    let addr: SocketAddr = match m.get_one::<String>("addr").expect("default").parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "error: --addr `{}`: {e} (write e.g. 127.0.0.1:8765)",
                m.get_one::<String>("addr").expect("default")
            );
            return EXIT_USAGE;
        }
    };
    let mut token = m
        .get_one::<String>("token")
        .cloned()
        .filter(|t| !t.is_empty());
    if let Some(t) = &token
        && (t.len() < 16
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        eprintln!(
            "error: --token (or COCOFLOW_UI_TOKEN): use 16 or more characters of letters, digits, `-` and `_`"
        );
        return EXIT_USAGE;
    }
    if let Some(url) = m.get_one::<String>("store")
        && let Some(path) = url.strip_prefix("file://")
        && !std::path::Path::new(path).is_dir()
    {
        eprintln!("error: --store `{url}`: no such directory");
        return EXIT_USAGE;
    }
    if !addr.ip().is_loopback() && token.is_none() {
        token = Some(generated_token());
    }
    let state_dir = m
        .try_get_one::<PathBuf>("state_dir")
        .ok()
        .flatten()
        .cloned()
        .unwrap_or_else(|| PathBuf::from(".cocoflow"));
    let ctx = Ctx::new(
        state_dir,
        m.get_one::<String>("store").cloned(),
        token.clone(),
        addr,
    );
    let rt = match crate::net::serve::runtime(true) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let (bound, _task) = match serve(ctx, addr).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot listen on `{addr}`: {e}");
                return EXIT_ENVIRONMENT;
            }
        };
        let host = if bound.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            bound.ip().to_string()
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        match &token {
            Some(t) => println!(
                "cocoflow ui listening on http://{host}:{}/?token={t}",
                bound.port()
            ),
            None => println!("cocoflow ui listening on http://{host}:{}/", bound.port()),
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        let _ = tokio::signal::ctrl_c().await;
        EXIT_OK
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_refuse_traversal() {
        assert_eq!(segments("/api/runs/x").unwrap(), vec!["api", "runs", "x"]);
        assert_eq!(segments("/").unwrap(), Vec::<String>::new());
        for bad in [
            "/api/../etc/passwd",
            "/api/%2e%2e/x",
            "/api/%2E%2E/x",
            "/api/a%2fb",
            "/api/a%5cb",
            "/api//x",
            "/api/%00",
            "/api/./x",
            "/api/%zz",
            "relative",
        ] {
            assert!(segments(bad).is_none(), "{bad}");
        }
        assert_eq!(
            segments("/a/rl%5B2%5D.eval").unwrap(),
            vec!["a", "rl[2].eval"]
        );
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert_eq!(generated_token().len(), 32);
    }
}
