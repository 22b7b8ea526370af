//! `cocoflow judge serve`: any [`Judge`] (by default the synthetic world's [`RuleJudge`])
//! behind an OpenAI-compatible `/v1/chat/completions` endpoint, with fault injection, so the
//! judge client is tested end to end over real HTTP.
//!
//! The server reads the chat request like a vision model would: the images from the
//! `image_url` data URLs in the order received, the instruction from the user text (the line
//! of the reward prompt's template), and the prompt from the system text (`reward`,
//! `reward-single`, the curation prompts `curation-locate`, `curation-refine` and
//! `curation-filter`, and the correlation study's `consistency` (the last three with the mask
//! as third image) are answered; other prompts get HTTP 400). Curation and consistency answers
//! are the judge's [`Judge::ask`] text, their integer scores exact.
//! Reward prompts are answered in the prompt's JSON format with integer scores
//! (`round(5·score)`) from [`Judge::judge`], and, when the request asks for `logprobs`, with
//! `logprobs.content[*].top_logprobs` whose digit distribution at each score position has the
//! judge's exact score as its expected value (mass split between the two neighbouring digits;
//! the other digits get `exp(−30)`).
//!
//! Fault mode ([`crate::net::faults`]): HTTP 429, HTTP 500, a malformed body, a reply held for
//! `delay` (past a client's timeout) or a dropped connection; `400` can be forced for tests.

use super::image::JudgeImage;
use super::prompts::{self, Prompt};
use super::wire::{
    ChatRequest, ChatResponse, Choice, ChoiceLogprobs, ContentPart, MessageContent,
    ResponseMessage, TokenLogprob, TopLogprob,
};
use super::{Judge, JudgeRequest, Scores};
use crate::net::faults::{Deliveries, FaultArgs, inject};
pub use crate::net::faults::{FaultKind, FaultPlan};
use crate::net::serve::{Counters, DropConnection, Listener, Reply, json_reply, parse_args};
use crate::synth::RuleJudge;
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
    /// Added to every answer (to simulate a slow model).
    pub latency: Duration,
    /// The judge behind the endpoint (default: the synthetic world's rule judge).
    pub judge: Arc<dyn Judge>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            faults: FaultPlan::default(),
            latency: Duration::ZERO,
            judge: Arc::new(RuleJudge::default()),
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("faults", &self.faults)
            .field("latency", &self.latency)
            .field("judge", &self.judge.describe())
            .finish()
    }
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
    deliveries: Deliveries,
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

    /// `http://ADDR/v1`, the judge client's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr())
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Requests to the completions endpoint so far.
    pub fn request_count(&self) -> u64 {
        self.state.counters.requests()
    }

    /// The most requests handled at once so far.
    pub fn max_in_flight(&self) -> usize {
        self.state.counters.max_in_flight()
    }

    /// Stops the server and waits until its port is released.
    pub async fn shutdown(self) {
        self.listener.shutdown().await
    }
}

/// Starts the server on `addr` (port 0: an ephemeral port) on the current tokio runtime.
pub async fn start(addr: SocketAddr, config: ServerConfig) -> std::io::Result<ServerHandle> {
    let state = Arc::new(State {
        config,
        ..State::default()
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
    let _guard = state.counters.enter();
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(DropConnection),
    };
    let fault = state.deliveries.draw(&state.config.faults, &body);
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
    if let Some(reply) = inject(
        fault,
        &state.config.faults,
        r#"{"id":"chatcmpl-fault","choices":[{"index":0,"message":{"#,
        error_reply,
    )
    .await
    {
        return reply;
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
             `curation-refine`, `curation-filter` and `consistency` prompts only",
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
    // the consistency prompt shows no instruction
    let needs_instruction = prompt.placeholders().contains(&"instruction");
    let Some(instruction) = seen
        .instruction
        .clone()
        .or_else(|| (!needs_instruction).then(String::new))
    else {
        return error_reply(
            StatusCode::BAD_REQUEST,
            "no `Editing instruction:` line in the user text",
        );
    };
    let top_n = req.top_logprobs.unwrap_or(0).min(20) as usize;
    let judge = state.config.judge.clone();
    let mut jr = JudgeRequest::new(seen.images[0].clone(), seen.images[1].clone(), instruction);
    let (content, tokens) =
        if prompt.id == prompts::REWARD.id || prompt.id == prompts::REWARD_SINGLE.id {
            // the judge's exact scores, as the expectation of the score tokens' distribution
            let verdict = run_judge(move || async move { judge.judge(&jr).await }).await;
            let scores = match verdict {
                Ok(j) => j.scores,
                Err(e) => {
                    return error_reply(
                        StatusCode::BAD_REQUEST,
                        &format!("the judge cannot judge this: {}", e.error),
                    );
                }
            };
            let values: Vec<(&str, f64)> = match (prompt.id == prompts::REWARD.id, scores) {
                (true, Scores::Mean { effect, quality }) => {
                    vec![
                        ("editing_effect", 5.0 * effect),
                        ("visual_quality", 5.0 * quality),
                    ]
                }
                (false, Scores::Mean { effect, quality }) => {
                    vec![("score", 2.5 * (effect + quality))]
                }
                (false, Scores::Single { score }) => vec![("score", 5.0 * score)],
                (true, Scores::Single { .. }) => {
                    return error_reply(
                        StatusCode::BAD_REQUEST,
                        "this server's judge gives one score; ask the `reward-single` prompt",
                    );
                }
            };
            answer_tokens(&values, top_n)
        } else {
            // the curation prompts: the judge's answer text, integer scores exact
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
            match run_judge(move || async move { judge.ask(prompt, &jr).await }).await {
                Ok(asked) => text_tokens(prompt, &asked.raw, top_n),
                Err(e) => {
                    return error_reply(
                        StatusCode::BAD_REQUEST,
                        &format!("the judge cannot answer this: {}", e.error),
                    );
                }
            }
        };
    let resp = ChatResponse {
        id: format!("chatcmpl-{}", state.counters.requests()),
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
        usage: None,
    };
    json_reply(
        StatusCode::OK,
        serde_json::to_vec(&resp).expect("a response serialises"),
    )
}

/// The prompts this server answers.
const ANSWERED: &[&str] = &[
    prompts::REWARD.id,
    prompts::REWARD_SINGLE.id,
    prompts::LOCATE.id,
    prompts::REFINE.id,
    prompts::FILTER.id,
    prompts::CONSISTENCY.id,
];

/// Runs a judge call on a blocking thread (a rule judge computes; it must not hold up the
/// accept loop).
async fn run_judge<F, Fut, T>(call: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || rt.block_on(call()))
        .await
        .expect("a judge does not panic")
}

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

/// A token emitted with certainty: logprob 0, and itself as its only candidate (no candidates
/// when `top_n` is 0).
fn certain_token(t: &str, top_n: usize) -> TokenLogprob {
    TokenLogprob {
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
    }
}

/// An answer text as tokens: each score's digits are one token whose only candidate is
/// itself (the exact integer), the text between them plain tokens.
fn text_tokens(prompt: &Prompt, text: &str, top_n: usize) -> (String, Vec<TokenLogprob>) {
    let tok = |t: &str| certain_token(t, top_n);
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
    let plain = |t: &str| certain_token(t, top_n);
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
    #[command(flatten)]
    pub faults: FaultArgs,
}

impl ServeArgs {
    /// The rule judge with these faults.
    pub fn config(&self) -> ServerConfig {
        ServerConfig {
            faults: self.faults.plan(),
            latency: self.faults.latency(),
            judge: Arc::new(RuleJudge::default()),
        }
    }
}

/// The clap command of `cocoflow judge`.
pub fn command() -> clap::Command {
    use clap::Args as _;
    clap::Command::new("judge")
        .about("The MLLM judge: serve the rule judge, check and benchmark a judge server")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(ServeArgs::augment_args(clap::Command::new("serve")).about(
            "Serve the deterministic rule judge at /v1/chat/completions (optional fault injection)",
        ))
        .subcommand(
            super::check::CheckArgs::augment_args(clap::Command::new("check")).about(
                "Check that a server can serve the judge: model listed, images read, logprobs \
                 returned, latency (exit 0: yes, 5: no)",
            ),
        )
        .subcommand(
            super::bench::BenchArgs::augment_args(clap::Command::new("bench"))
                .about("Benchmark a judge server: requests/s and p50/p99 latency per concurrency"),
        )
}

/// `cocoflow judge ...` for the CLI: register with `main_with_extensions`.
pub fn extension() -> Extension {
    Extension {
        command: command(),
        run: run_cli,
    }
}

fn run_cli(m: &clap::ArgMatches) -> i32 {
    let args: ServeArgs = match m.subcommand() {
        Some(("serve", sub)) => match parse_args(sub) {
            Ok(a) => a,
            Err(code) => return code,
        },
        Some(("check", sub)) => {
            return parse_args(sub).map_or_else(|c| c, |a| super::check::run(&a));
        }
        Some(("bench", sub)) => {
            return parse_args(sub).map_or_else(|c| c, |a| super::bench::run(&a));
        }
        _ => {
            eprintln!("error: `cocoflow judge` needs a subcommand: `serve`, `check` or `bench`");
            return EXIT_USAGE;
        }
    };
    crate::net::serve::serve_until_ctrl_c("judge", args.addr, || async {
        let server = start(args.addr, args.config()).await?;
        let url = server.base_url();
        Ok((server, url))
    })
}

#[cfg(test)]
mod tests;
