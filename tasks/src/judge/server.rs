//! `cocoflow judge serve`: the [`RuleJudge`] behind an OpenAI-compatible
//! `/v1/chat/completions` endpoint, with fault injection, so the judge client is tested end to
//! end over real HTTP.
//!
//! The server reads the chat request like a vision model would: the images from the
//! `image_url` data URLs in the order received, the instruction from the user text (the line
//! of the reward prompt's template), and the prompt from the system text (`reward`,
//! `reward-single` and the curation prompts `curation-locate`, `curation-refine` and
//! `curation-filter` (with the mask as third image) are answered; other prompts get HTTP
//! 400). Curation answers are [`RuleJudge::answer`]'s text, their integer scores exact. It answers in the prompt's JSON
//! format with integer scores (`round(5·score)`), and, when the request asks for `logprobs`,
//! with `logprobs.content[*].top_logprobs` whose digit distribution at each score position
//! has the rule judge's exact score as its expected value (mass split between the two
//! neighbouring digits; the other digits get `exp(−30)`).
//!
//! Fault mode: each request is faulty with probability `rate` (or, with `first`, exactly
//! its first N deliveries: deliveries are counted per distinct request body), the kind drawn
//! uniformly from `kinds`: HTTP 429, HTTP 500, a malformed body, a reply held for `delay`
//! (past a client's timeout) or a dropped connection; `400` can be forced for tests. The
//! draws come from the seed, the body's digest and its delivery count, so they reproduce
//! whatever the interleaving of concurrent requests.

use super::JudgeRequest;
use super::image::JudgeImage;
use super::prompts::{self, Prompt};
use super::rng::{SplitMix64, combine};
use super::rule::RuleJudge;
use super::wire::{
    ChatRequest, ChatResponse, Choice, ChoiceLogprobs, ContentPart, MessageContent,
    ResponseMessage, TokenLogprob, TopLogprob,
};
use crate::serve::{DropConnection, InFlight, Reply, json_reply};
use cocoflow_engine::cli::{EXIT_USAGE, Extension};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A fault the server can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum FaultKind {
    /// HTTP 429 Too Many Requests.
    #[value(name = "429")]
    TooManyRequests,
    /// HTTP 500 Internal Server Error.
    #[value(name = "500")]
    ServerError,
    /// HTTP 200 with a truncated JSON body.
    #[value(name = "malformed")]
    Malformed,
    /// The normal answer, after `delay`.
    #[value(name = "delay")]
    Delay,
    /// The connection is closed without an answer.
    #[value(name = "drop")]
    Drop,
    /// HTTP 400 (never retried by the client); only when forced.
    #[value(name = "400")]
    BadRequest,
}

impl FaultKind {
    /// The kinds drawn from by default (all but 400).
    pub const DEFAULT: [FaultKind; 5] = [
        FaultKind::TooManyRequests,
        FaultKind::ServerError,
        FaultKind::Malformed,
        FaultKind::Delay,
        FaultKind::Drop,
    ];
}

/// When and how to misbehave.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    /// Probability that a request is faulty (ignored when `first` is set).
    pub rate: f64,
    /// Exactly the first N deliveries of each distinct request body are faulty.
    pub first: Option<u32>,
    /// Kinds drawn from, uniformly.
    pub kinds: Vec<FaultKind>,
    /// How long a `delay` fault holds its answer.
    pub delay: Duration,
    pub seed: u64,
}

impl Default for FaultPlan {
    /// No faults.
    fn default() -> Self {
        FaultPlan {
            rate: 0.0,
            first: None,
            kinds: FaultKind::DEFAULT.to_vec(),
            delay: Duration::from_secs(10),
            seed: 0,
        }
    }
}

/// The server's settings.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    pub faults: FaultPlan,
    /// Added to every answer (to simulate a slow model).
    pub latency: Duration,
    pub judge: RuleJudge,
}

/// What the server saw of one request (for tests: image order, instruction, headers).
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub model: String,
    /// `id@version` of the recognised prompt.
    pub prompt: Option<String>,
    /// Pixel digests of the images, in the order received.
    pub image_digests: Vec<String>,
    pub instruction: Option<String>,
    /// The `Authorization` header as received.
    pub authorization: Option<String>,
    pub logprobs: bool,
    pub top_logprobs: Option<u32>,
    pub fault: Option<FaultKind>,
}

#[derive(Default)]
struct State {
    config: ServerConfig,
    received: Mutex<Vec<Received>>,
    deliveries: Mutex<HashMap<[u8; 32], u32>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    requests: AtomicU64,
}

/// A running server; stops when dropped.
pub struct ServerHandle {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/v1`, the judge client's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Requests to the completions endpoint so far.
    pub fn request_count(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// The most requests handled at once so far.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Stops accepting connections.
    pub fn shutdown(self) {}
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the server on `addr` (port 0: an ephemeral port) on the current tokio runtime.
pub async fn start(addr: SocketAddr, config: ServerConfig) -> std::io::Result<ServerHandle> {
    let state = Arc::new(State {
        config,
        ..State::default()
    });
    let st = state.clone();
    let (addr, task) = crate::serve::spawn_http(addr, move |req| handle(st.clone(), req)).await?;
    Ok(ServerHandle { addr, state, task })
}

/// Starts the server on `127.0.0.1:0`.
pub async fn start_local(config: ServerConfig) -> std::io::Result<ServerHandle> {
    start(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
}

fn error_reply(status: StatusCode, message: &str) -> Reply {
    let body = serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "code": status.as_u16()}});
    json_reply(status, body.to_string())
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_string();
    if req.method() != Method::POST
        || !matches!(path.as_str(), "/v1/chat/completions" | "/chat/completions")
    {
        return error_reply(
            StatusCode::NOT_FOUND,
            &format!("no route for {} {path}", req.method()),
        );
    }
    state.requests.fetch_add(1, Ordering::SeqCst);
    let _guard = InFlight::enter(&state.in_flight, &state.max_in_flight);
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(DropConnection),
    };
    let fault = draw_fault(&state, &body);
    let parsed: Result<ChatRequest, _> = serde_json::from_slice(&body);
    let seen = parsed.as_ref().ok().map(read_request);
    state.received.lock().unwrap().push(Received {
        model: parsed.as_ref().map(|r| r.model.clone()).unwrap_or_default(),
        prompt: seen.as_ref().and_then(|s| s.prompt.map(|p| p.key())),
        image_digests: seen
            .as_ref()
            .map(|s| s.images.iter().map(|i| i.digest().to_string()).collect())
            .unwrap_or_default(),
        instruction: seen.as_ref().and_then(|s| s.instruction.clone()),
        authorization,
        logprobs: parsed
            .as_ref()
            .ok()
            .and_then(|r| r.logprobs)
            .unwrap_or(false),
        top_logprobs: parsed.as_ref().ok().and_then(|r| r.top_logprobs),
        fault,
    });
    if !state.config.latency.is_zero() {
        tokio::time::sleep(state.config.latency).await;
    }
    match fault {
        Some(FaultKind::TooManyRequests) => {
            tracing::debug!("fault injection: 429");
            return error_reply(
                StatusCode::TOO_MANY_REQUESTS,
                "rate limited (fault injection)",
            );
        }
        Some(FaultKind::ServerError) => {
            return error_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error (fault injection)",
            );
        }
        Some(FaultKind::BadRequest) => {
            return error_reply(StatusCode::BAD_REQUEST, "bad request (fault injection)");
        }
        Some(FaultKind::Malformed) => {
            return json_reply(
                StatusCode::OK,
                r#"{"id":"chatcmpl-fault","choices":[{"index":0,"message":{"#,
            );
        }
        Some(FaultKind::Drop) => return Err(DropConnection),
        Some(FaultKind::Delay) => tokio::time::sleep(state.config.faults.delay).await,
        None => {}
    }
    let req = match parsed {
        Ok(r) => r,
        Err(e) => return error_reply(StatusCode::BAD_REQUEST, &format!("not a chat request: {e}")),
    };
    let seen = seen.expect("parsed");
    if let Some(e) = seen.error {
        return error_reply(StatusCode::BAD_REQUEST, &e);
    }
    let Some(prompt) = seen.prompt.filter(|p| ANSWERED.contains(&p.id)) else {
        return error_reply(
            StatusCode::BAD_REQUEST,
            "this server answers the `reward`, `reward-single`, `curation-locate`, \
             `curation-refine` and `curation-filter` prompts only",
        );
    };
    if seen.images.len() != prompt.images.len() {
        let roles: Vec<String> = prompt
            .images
            .iter()
            .map(|r| format!("{r:?}").to_lowercase())
            .collect();
        return error_reply(
            StatusCode::BAD_REQUEST,
            &format!(
                "expected {} images ({}), got {}",
                prompt.images.len(),
                roles.join(", "),
                seen.images.len()
            ),
        );
    }
    let Some(instruction) = seen.instruction.clone() else {
        return error_reply(
            StatusCode::BAD_REQUEST,
            "no `Editing instruction:` line in the user text",
        );
    };
    let top_n = req.top_logprobs.unwrap_or(0).min(20) as usize;
    let judge = state.config.judge.clone();
    let (content, tokens) = if prompt.id == prompts::REWARD.id
        || prompt.id == prompts::REWARD_SINGLE.id
    {
        let (source, edited) = (seen.images[0].clone(), seen.images[1].clone());
        let report = tokio::task::spawn_blocking(move || {
            judge.evaluate(source.pixels(), edited.pixels(), &instruction)
        })
        .await
        .expect("the rule judge does not panic");
        let report = match report {
            Ok(r) => r,
            Err(e) => {
                return error_reply(
                    StatusCode::BAD_REQUEST,
                    &format!("the rule judge cannot judge this: {e}"),
                );
            }
        };
        let values: Vec<(&str, f64)> = if prompt.id == prompts::REWARD.id {
            vec![
                ("editing_effect", 5.0 * report.effect),
                ("visual_quality", 5.0 * report.quality),
            ]
        } else {
            vec![("score", 2.5 * (report.effect + report.quality))]
        };
        answer_tokens(&values, top_n)
    } else {
        // the curation prompts: the rule judge's answer text, integer scores exact
        let mut jr = JudgeRequest::new(seen.images[0].clone(), seen.images[1].clone(), instruction);
        for (role, img) in prompt.images.iter().zip(&seen.images) {
            if *role == prompts::ImageRole::Mask {
                jr = jr.with_mask(img.clone());
            }
        }
        for name in prompt.placeholders() {
            if !matches!(name, "instruction" | "format")
                && let Some(v) = seen
                    .user_text
                    .iter()
                    .find_map(|t| prompt.extract_var(t, name))
            {
                jr = jr.with_var(name, v);
            }
        }
        let answer = tokio::task::spawn_blocking(move || judge.answer(prompt, &jr))
            .await
            .expect("the rule judge does not panic");
        match answer {
            Ok(text) => text_tokens(prompt, &text, top_n),
            Err(e) => {
                return error_reply(
                    StatusCode::BAD_REQUEST,
                    &format!("the rule judge cannot answer this: {e}"),
                );
            }
        }
    };
    let resp = ChatResponse {
        id: format!("chatcmpl-{}", state.requests.load(Ordering::SeqCst)),
        object: "chat.completion".into(),
        created: 0,
        model: req.model.clone(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: "assistant".into(),
                content: Some(content),
            },
            logprobs: req.logprobs.unwrap_or(false).then_some(ChoiceLogprobs {
                content: Some(tokens),
            }),
            finish_reason: Some("stop".into()),
        }],
    };
    json_reply(
        StatusCode::OK,
        serde_json::to_vec(&resp).expect("a response serialises"),
    )
}

/// Whether this delivery of this body is faulty, and how (module docs).
fn draw_fault(state: &State, body: &[u8]) -> Option<FaultKind> {
    let plan = &state.config.faults;
    if plan.kinds.is_empty() || (plan.first.is_none() && plan.rate <= 0.0) {
        return None;
    }
    let digest = *blake3::hash(body).as_bytes();
    let n = {
        let mut d = state.deliveries.lock().unwrap();
        let c = d.entry(digest).or_insert(0);
        *c += 1;
        *c - 1
    };
    let body_seed = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
    let mut rng = SplitMix64::new(combine(plan.seed, combine(body_seed, n as u64)));
    let faulty = match plan.first {
        Some(k) => n < k,
        None => rng.next_f64() < plan.rate,
    };
    faulty.then(|| plan.kinds[rng.below(plan.kinds.len())])
}

/// The prompts this server answers.
const ANSWERED: &[&str] = &[
    prompts::REWARD.id,
    prompts::REWARD_SINGLE.id,
    prompts::LOCATE.id,
    prompts::REFINE.id,
    prompts::FILTER.id,
];

struct Seen {
    prompt: Option<&'static Prompt>,
    /// The text of each user message.
    user_text: Vec<String>,
    images: Vec<JudgeImage>,
    instruction: Option<String>,
    error: Option<String>,
}

fn read_request(req: &ChatRequest) -> Seen {
    let mut seen = Seen {
        prompt: None,
        user_text: Vec::new(),
        images: Vec::new(),
        instruction: None,
        error: None,
    };
    let system: Vec<String> = req
        .messages
        .iter()
        .filter(|m| m.role == "system")
        .map(|m| m.content.text())
        .collect();
    seen.prompt = prompts::ALL
        .iter()
        .copied()
        .find(|p| system.iter().any(|s| s == p.system));
    for m in req.messages.iter().filter(|m| m.role == "user") {
        if let MessageContent::Parts(parts) = &m.content {
            for p in parts {
                if let ContentPart::ImageUrl { image_url } = p {
                    match JudgeImage::from_data_url(&image_url.url) {
                        Ok(img) => seen.images.push(img),
                        Err(e) => {
                            seen.error = Some(format!("image {}: {e}", seen.images.len() + 1))
                        }
                    }
                }
            }
        }
        seen.user_text.push(m.content.text());
        if let Some(p) = seen.prompt {
            seen.instruction = seen
                .instruction
                .or_else(|| p.extract_var(&m.content.text(), "instruction"));
        }
    }
    seen
}

/// An answer text as tokens: each score's digits are one token whose only candidate is
/// itself (the exact integer), the text between them plain tokens.
fn text_tokens(prompt: &Prompt, text: &str, top_n: usize) -> (String, Vec<TokenLogprob>) {
    let tok = |t: &str| TokenLogprob {
        token: t.to_string(),
        logprob: 0.0,
        top_logprobs: if top_n > 0 {
            vec![TopLogprob {
                token: t.to_string(),
                logprob: 0.0,
            }]
        } else {
            vec![]
        },
    };
    let mut cuts: Vec<(usize, usize)> = prompt
        .score_fields()
        .filter_map(|(name, _, _)| {
            let at = super::extract::score_position(text, name)?;
            let len = text[at..].bytes().take_while(u8::is_ascii_digit).count();
            Some((at, at + len))
        })
        .collect();
    cuts.sort();
    let mut tokens = Vec::new();
    let mut from = 0;
    for (a, b) in cuts {
        if a > from {
            tokens.push(tok(&text[from..a]));
        }
        tokens.push(tok(&text[a..b]));
        from = b;
    }
    if from < text.len() {
        tokens.push(tok(&text[from..]));
    }
    (text.to_string(), tokens)
}

/// The answer `{"a": 4, "b": 5}` as text and as tokens; each score's digit token carries a
/// distribution over 0–9 whose in-range expectation is the exact score in [0, 5].
fn answer_tokens(values: &[(&str, f64)], top_n: usize) -> (String, Vec<TokenLogprob>) {
    let plain = |t: &str| TokenLogprob {
        token: t.to_string(),
        logprob: 0.0,
        top_logprobs: if top_n > 0 {
            vec![TopLogprob {
                token: t.to_string(),
                logprob: 0.0,
            }]
        } else {
            vec![]
        },
    };
    let mut tokens = vec![plain("{\"")];
    for (k, (name, x)) in values.iter().enumerate() {
        if k > 0 {
            tokens.push(plain(", \""));
        }
        tokens.push(plain(name));
        tokens.push(plain("\":"));
        tokens.push(plain(" "));
        let x = x.clamp(0.0, 5.0);
        let lo = x.floor().min(4.0);
        let w = x - lo; // p(lo + 1)
        let mut dist: Vec<(u32, f64)> = (0..=9u32)
            .map(|d| {
                let p = if d as f64 == lo {
                    1.0 - w
                } else if d as f64 == lo + 1.0 {
                    w
                } else {
                    0.0
                };
                (d, p.max((-30.0f64).exp()).ln())
            })
            .collect();
        dist.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let emitted = if w >= 0.5 { lo as u32 + 1 } else { lo as u32 };
        tokens.push(TokenLogprob {
            token: emitted.to_string(),
            logprob: dist.iter().find(|d| d.0 == emitted).expect("a digit").1,
            top_logprobs: dist
                .iter()
                .take(top_n)
                .map(|&(d, lp)| TopLogprob {
                    token: d.to_string(),
                    logprob: lp,
                })
                .collect(),
        });
    }
    tokens.push(plain("}"));
    let content = tokens.iter().map(|t| t.token.as_str()).collect();
    (content, tokens)
}

/// `cocoflow judge serve` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (`127.0.0.1:0` picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8089")]
    pub addr: SocketAddr,
    /// Probability that a request gets a fault.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_rate: f64,
    /// Fault kinds to draw from (repeatable); default: 429, 500, malformed, delay, drop.
    #[arg(long = "fault", value_enum)]
    pub faults: Vec<FaultKind>,
    /// Make exactly the first N deliveries of each distinct request faulty (overrides the rate).
    #[arg(long)]
    pub fault_first: Option<u32>,
    /// How long a `delay` fault holds its answer, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub delay_ms: u64,
    /// Added to every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Seed of the fault draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("`{s}` is not in [0, 1]"))
    }
}

impl ServeArgs {
    pub fn config(&self) -> ServerConfig {
        ServerConfig {
            faults: FaultPlan {
                rate: self.fault_rate,
                first: self.fault_first,
                kinds: if self.faults.is_empty() {
                    FaultKind::DEFAULT.to_vec()
                } else {
                    self.faults.clone()
                },
                delay: Duration::from_millis(self.delay_ms),
                seed: self.seed,
            },
            latency: Duration::from_millis(self.latency_ms),
            judge: RuleJudge::default(),
        }
    }
}

/// The clap command of `cocoflow judge`.
pub fn command() -> clap::Command {
    use clap::Args as _;
    clap::Command::new("judge")
        .about("The MLLM judge: serve the rule judge over the OpenAI chat API")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(ServeArgs::augment_args(clap::Command::new("serve")).about(
            "Serve the deterministic rule judge at /v1/chat/completions (optional fault injection)",
        ))
}

/// `cocoflow judge ...` for the CLI: register with `main_with_extensions`.
pub fn extension() -> Extension {
    Extension {
        command: command(),
        run: run_cli,
    }
}

fn run_cli(m: &clap::ArgMatches) -> i32 {
    use clap::FromArgMatches as _;
    let Some(("serve", sub)) = m.subcommand() else {
        eprintln!("error: `cocoflow judge` needs a subcommand: `serve`");
        return EXIT_USAGE;
    };
    let args = match ServeArgs::from_arg_matches(sub) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return EXIT_USAGE;
        }
    };
    crate::serve::serve_until_ctrl_c("judge", args.addr, || async {
        let server = start(args.addr, args.config()).await?;
        let url = server.base_url();
        Ok((server, url))
    })
}

#[cfg(test)]
mod tests {
    use super::super::extract::{Extraction, extract};
    use super::*;

    #[test]
    fn answer_logprobs_have_the_exact_score_as_expectation() {
        for x in [0.0, 0.3, 2.5, 3.74, 4.5, 4.99, 5.0] {
            let (content, tokens) =
                answer_tokens(&[("editing_effect", x), ("visual_quality", 5.0 - x)], 10);
            let a = extract(
                &prompts::REWARD,
                &content,
                Some(&tokens),
                Extraction::Logprobs,
            )
            .unwrap();
            assert!(
                (a.scores["editing_effect"].value - x).abs() < 1e-9,
                "{x}: {content}"
            );
            assert!((a.scores["visual_quality"].value - (5.0 - x)).abs() < 1e-9);
            let g = extract(&prompts::REWARD, &content, None, Extraction::Generate).unwrap();
            assert!((g.scores["editing_effect"].value - x).abs() <= 0.5 + 1e-9);
        }
    }

    #[test]
    fn cli_arguments_map_to_the_config() {
        let m = command()
            .try_get_matches_from([
                "judge",
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--fault-rate",
                "0.5",
                "--fault",
                "429",
                "--fault",
                "drop",
                "--delay-ms",
                "700",
                "--seed",
                "9",
            ])
            .unwrap();
        use clap::FromArgMatches as _;
        let (_, sub) = m.subcommand().unwrap();
        let c = ServeArgs::from_arg_matches(sub).unwrap().config();
        assert_eq!(c.faults.rate, 0.5);
        assert_eq!(
            c.faults.kinds,
            vec![FaultKind::TooManyRequests, FaultKind::Drop]
        );
        assert_eq!(c.faults.delay, Duration::from_millis(700));
        assert_eq!(c.faults.seed, 9);
        let err = command()
            .try_get_matches_from(["judge", "serve", "--fault-rate", "1.5"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`1.5` is not in [0, 1]"), "{err}");
        let err = command()
            .try_get_matches_from(["judge", "serve", "--fault", "teapot"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid value 'teapot'"), "{err}");
        let serve = command()
            .find_subcommand("serve")
            .unwrap()
            .get_about()
            .unwrap()
            .to_string();
        assert!(
            serve.starts_with("Serve the deterministic rule judge"),
            "{serve}"
        );
        let m = command().try_get_matches_from(["judge", "serve"]).unwrap();
        let c = ServeArgs::from_arg_matches(m.subcommand().unwrap().1)
            .unwrap()
            .config();
        assert_eq!(c.faults.kinds, FaultKind::DEFAULT.to_vec());
        assert_eq!(c.faults.rate, 0.0);
    }

    #[test]
    fn fault_draws_reproduce_per_body_and_delivery() {
        let mk = |rate| State {
            config: ServerConfig {
                faults: FaultPlan {
                    rate,
                    seed: 3,
                    ..FaultPlan::default()
                },
                ..ServerConfig::default()
            },
            ..State::default()
        };
        let (a, b) = (mk(0.5), mk(0.5));
        let seq_a: Vec<_> = (0..40)
            .map(|i| draw_fault(&a, format!("body {}", i % 4).as_bytes()))
            .collect();
        // another interleaving of the same deliveries
        let mut seq_b = vec![None; 40];
        for i in (0..40)
            .rev()
            .collect::<Vec<_>>()
            .chunks(4)
            .rev()
            .flat_map(|c| c.iter().rev())
        {
            seq_b[*i] = draw_fault(&b, format!("body {}", i % 4).as_bytes());
        }
        assert_eq!(seq_a, seq_b);
        let faults = seq_a.iter().flatten().count();
        assert!((10..=30).contains(&faults), "{faults}");
        let all = mk(1.0);
        assert!((0..20).all(|i| draw_fault(&all, &[i]).is_some()));
        assert!((0..20).all(|i| draw_fault(&mk(0.0), &[i]).is_none()));
    }
}
