//! `cocoflow segment serve`: a [`Segmenter`] (by default [`ColorSegmenter`]) behind the
//! segmentation protocol of [`super`] (`POST /v1/segment`, `GET /health`), with fault
//! injection, so the client is tested end to end over real HTTP.
//!
//! Fault mode ([`crate::net::faults`], as in the judge server): each `POST /v1/segment` may
//! get HTTP 429, HTTP 500, a malformed (truncated) 200 body, an answer held for `delay` (past
//! a client's timeout) or a dropped connection; `400` only when forced. `GET /health` is never
//! faulty.

use super::{
    BoxPx, SegmentError, SegmentRequest, SegmentResponse, Segmenter, decode_image, encode_mask,
};
use crate::net::faults::{Deliveries, FaultArgs, inject};
pub use crate::net::faults::{FaultKind, FaultPlan};
use crate::net::serve::{Counters, DropConnection, Listener, Reply, json_reply, parse_args};
use crate::synth::ColorSegmenter;
use cocoflow_engine::cli::{EXIT_USAGE, Extension};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The server's settings.
#[derive(Clone)]
pub struct ServerConfig {
    pub faults: FaultPlan,
    /// Added to every segment answer (to simulate a slow model).
    pub latency: Duration,
    pub segmenter: Arc<dyn Segmenter>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            faults: FaultPlan::default(),
            latency: Duration::ZERO,
            segmenter: Arc::new(ColorSegmenter::default()),
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("faults", &self.faults)
            .field("latency", &self.latency)
            .field("segmenter", &self.segmenter.describe())
            .finish()
    }
}

struct State {
    config: ServerConfig,
    deliveries: Deliveries,
    faults: Mutex<Vec<Option<FaultKind>>>,
    counters: Counters,
}

/// A running server; stops when dropped.
pub struct ServerHandle {
    listener: Listener,
    state: Arc<State>,
}

impl ServerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.listener.addr()
    }

    /// `http://ADDR`, the client's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// `POST /v1/segment` requests so far.
    pub fn request_count(&self) -> u64 {
        self.state.counters.requests()
    }

    /// The fault drawn for each segment request so far, in arrival order.
    pub fn faults(&self) -> Vec<Option<FaultKind>> {
        self.state.faults.lock().unwrap().clone()
    }

    /// The most segment requests handled at once so far.
    pub fn max_in_flight(&self) -> usize {
        self.state.counters.max_in_flight()
    }

    /// Stops the server and waits until its port is released (dropping the handle only asks
    /// the accept loop to stop).
    pub async fn shutdown(self) {
        self.listener.shutdown().await
    }
}

/// Starts the server on `addr` (port 0: an ephemeral port) on the current tokio runtime.
pub async fn start(addr: SocketAddr, config: ServerConfig) -> std::io::Result<ServerHandle> {
    let state = Arc::new(State {
        config,
        deliveries: Deliveries::default(),
        faults: Mutex::default(),
        counters: Counters::default(),
    });
    let st = state.clone();
    let listener = Listener::bind(addr, move |req| handle(st.clone(), req)).await?;
    Ok(ServerHandle { listener, state })
}

/// Starts the server on `127.0.0.1:0`.
pub async fn start_local(config: ServerConfig) -> std::io::Result<ServerHandle> {
    start(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
}

fn error_reply(status: StatusCode, message: &str) -> Reply {
    let body = serde_json::json!({"error": {"message": message, "code": status.as_u16()}});
    json_reply(status, body.to_string())
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/health") => {
            let body = serde_json::json!({
                "status": "ok",
                "segmenter": state.config.segmenter.describe(),
            });
            return json_reply(StatusCode::OK, body.to_string());
        }
        (&Method::POST, "/v1/segment") => {}
        (m, _) => {
            return error_reply(StatusCode::NOT_FOUND, &format!("no route for {m} {path}"));
        }
    }
    let _guard = state.counters.enter();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(DropConnection),
    };
    let fault = state.deliveries.draw(&state.config.faults, &body);
    state.faults.lock().unwrap().push(fault);
    if !state.config.latency.is_zero() {
        tokio::time::sleep(state.config.latency).await;
    }
    if let Some(reply) = inject(
        fault,
        &state.config.faults,
        r#"{"mask":"iVBORw0KGgo"#,
        error_reply,
    )
    .await
    {
        return reply;
    }
    let req: SegmentRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error_reply(
                StatusCode::BAD_REQUEST,
                &format!("not a segment request {{\"image\", \"box\"}}: {e}"),
            );
        }
    };
    let image = match decode_image(&req.image) {
        Ok(i) => i,
        Err(e) => return error_reply(StatusCode::BAD_REQUEST, &e),
    };
    let bx = match BoxPx::from_wire(&req.bbox, image.width(), image.height()) {
        Ok(b) => b,
        Err(e) => return error_reply(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let segmenter = state.config.segmenter.clone();
    let result = tokio::task::spawn_blocking(move || segmenter.segment(&image, bx)).await;
    match result {
        Ok(Ok(seg)) => {
            let resp = SegmentResponse {
                mask: encode_mask(&seg.mask),
                score: seg.score,
            };
            json_reply(
                StatusCode::OK,
                serde_json::to_vec(&resp).expect("a response serialises"),
            )
        }
        Ok(Err(e @ SegmentError::Box(_))) => error_reply(StatusCode::BAD_REQUEST, &e.to_string()),
        Ok(Err(e @ SegmentError::NoObject(_))) => {
            error_reply(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string())
        }
        Err(e) => error_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the segmenter failed: {e}"),
        ),
    }
}

/// `cocoflow segment serve` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (`127.0.0.1:0` picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub addr: SocketAddr,
    #[command(flatten)]
    pub faults: FaultArgs,
}

impl ServeArgs {
    /// The colour segmenter with these faults.
    pub fn config(&self) -> ServerConfig {
        ServerConfig {
            faults: self.faults.plan(),
            latency: self.faults.latency(),
            segmenter: Arc::new(ColorSegmenter::default()),
        }
    }
}

/// The clap command of `cocoflow segment`.
pub fn command() -> clap::Command {
    use clap::Args as _;
    clap::Command::new("segment")
        .about("Box-prompted segmentation: serve the colour segmenter over HTTP")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            ServeArgs::augment_args(clap::Command::new("serve"))
                .about("Serve the colour segmenter at POST /v1/segment (optional fault injection)"),
        )
}

/// `cocoflow segment ...` for the CLI: register with `main_with_extensions`.
pub fn extension() -> Extension {
    Extension {
        command: command(),
        run: run_cli,
    }
}

fn run_cli(m: &clap::ArgMatches) -> i32 {
    let Some(("serve", sub)) = m.subcommand() else {
        eprintln!("error: `cocoflow segment` needs a subcommand: `serve`");
        return EXIT_USAGE;
    };
    let args: ServeArgs = match parse_args(sub) {
        Ok(a) => a,
        Err(code) => return code,
    };
    crate::net::serve::serve_until_ctrl_c("segment", args.addr, || async {
        let server = start(args.addr, args.config()).await?;
        let url = server.base_url();
        Ok((server, url))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_arguments_map_to_the_config() {
        use clap::FromArgMatches as _;
        let m = command()
            .try_get_matches_from([
                "segment",
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--fault-rate",
                "0.25",
                "--fault",
                "500",
                "--delay-ms",
                "300",
                "--seed",
                "4",
            ])
            .unwrap();
        let c = ServeArgs::from_arg_matches(m.subcommand().unwrap().1)
            .unwrap()
            .config();
        assert_eq!(c.faults.rate, 0.25);
        assert_eq!(c.faults.kinds, vec![FaultKind::ServerError]);
        assert_eq!(c.faults.delay, Duration::from_millis(300));
        assert_eq!(c.faults.seed, 4);
        let err = command()
            .try_get_matches_from(["segment", "serve", "--fault-rate", "2"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`2` is not in [0, 1]"), "{err}");
    }
}
