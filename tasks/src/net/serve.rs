//! What the test servers (`cocoflow judge serve`, `cocoflow segment serve`) share: the HTTP/1
//! accept loop and the handle that stops it ([`Listener`]), request counters ([`Counters`]),
//! JSON replies, the dropped-connection fault, the CLI runner that serves until Ctrl-C, and
//! the async [`runtime`] of the HTTP commands (`judge check`, `judge bench` too).

use bytes::Bytes;
use cocoflow_engine::cli::{EXIT_ENVIRONMENT, EXIT_INTERNAL, EXIT_OK};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The error that makes hyper close a connection without answering (fault injection).
#[derive(Debug)]
pub struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fault injection: connection dropped")
    }
}

impl std::error::Error for DropConnection {}

pub type Reply = Result<Response<Full<Bytes>>, DropConnection>;

pub fn json_reply(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .expect("a valid response"))
}

/// Counts a request in flight while alive; records the peak.
pub struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    pub fn enter(in_flight: &'a AtomicUsize, peak: &AtomicUsize) -> Self {
        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(now, Ordering::SeqCst);
        InFlight(in_flight)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Binds `addr` and serves every connection with `handle` on the current tokio runtime;
/// returns the bound address and the accept loop's task (abort it to stop).
pub async fn spawn_http<H, F>(
    addr: SocketAddr,
    handle: H,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(req));
                // A dropped-connection fault ends the connection with an error: expected.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, task))
}

/// The tokio runtime of an HTTP command (multi-threaded, or on the current thread), every
/// driver on; `Err` holds the exit code once the reason is printed.
pub fn runtime(multi_thread: bool) -> Result<tokio::runtime::Runtime, i32> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        EXIT_INTERNAL
    })
}

/// `cocoflow <what> serve`: starts a server on a new runtime, prints
/// `<what> server listening on <url>` and serves until Ctrl-C; returns the exit code.
/// `start` gives the server's handle (kept alive until then) and its URL.
pub fn serve_until_ctrl_c<S, F, T>(what: &str, addr: SocketAddr, start: S) -> i32
where
    S: FnOnce() -> F,
    F: Future<Output = std::io::Result<(T, String)>>,
{
    let rt = match runtime(true) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        // the server lives as long as `_server`: until Ctrl-C
        let (_server, url) = match start().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot listen on `{addr}`: {e}");
                return EXIT_ENVIRONMENT;
            }
        };
        println!("{what} server listening on {url}");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        let _ = tokio::signal::ctrl_c().await;
        EXIT_OK
    })
}

/// Requests a server handled, and how many at once.
#[derive(Debug, Default)]
pub struct Counters {
    requests: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Counters {
    /// Counts a request; it is in flight while the guard lives.
    pub fn enter(&self) -> InFlight<'_> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        InFlight::enter(&self.in_flight, &self.max_in_flight)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// The most requests handled at once so far.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }
}

/// A running accept loop; stops when dropped.
pub struct Listener {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    /// Binds `addr` (port 0: an ephemeral port) and serves every connection with `handle`.
    pub async fn bind<H, F>(addr: SocketAddr, handle: H) -> std::io::Result<Listener>
    where
        H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Reply> + Send + 'static,
    {
        let (addr, task) = spawn_http(addr, handle).await?;
        Ok(Listener { addr, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the accept loop and waits until the port is released (dropping only asks it to
    /// stop).
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A subcommand's arguments, or the usage exit code after clap's message.
pub fn parse_args<A: clap::FromArgMatches>(m: &clap::ArgMatches) -> Result<A, i32> {
    A::from_arg_matches(m).map_err(|e| {
        let _ = e.print();
        cocoflow_engine::cli::EXIT_USAGE
    })
}
