//! `cocoflow judge check`: can this server serve the configured judge? A capability probe to
//! run before a long job.
//!
//! It lists the served models (`GET {base_url}/models`), then sends the judge's own request
//! ([`OpenAiJudge::chat_request`] of its score prompt, two small images) three times:
//! - **generate**: as the `generate` extraction sends it;
//! - **logprobs**: with `logprobs: true, top_logprobs: N`, as the `logprobs` extraction does;
//! - **text only**: the first request without its image parts, to see whether the images
//!   reach the model: a vision model's prompt grows by the images' tokens (`usage`), a server
//!   that drops image parts (a text-only model behind a lenient server) gives equal counts.
//!
//! The report says, for each, whether it worked, the latency, the finish reason and whether
//! the answer is usable, and what the server cannot do. Problems that stop the configured judge
//! ([`Problem`]): the server cannot be reached, the model is not served, images do not reach
//! the model, or `extraction: logprobs` on a server that returns no `top_logprobs` (or refuses
//! them). Exit status: 0 when the judge can run, [`EXIT_ENVIRONMENT`] (5) when it cannot,
//! [`EXIT_USAGE`] (2) for bad arguments.

use super::extract::{self, Extraction};
use super::prompts::Prompt;
use super::wire::{ChatRequest, ChatResponse, ContentPart, MessageContent};
use super::{JudgeImage, JudgeRequest, OpenAiConfig, OpenAiJudge};
use cocoflow_engine::cli::{EXIT_ENVIRONMENT, EXIT_OK, EXIT_USAGE};
use image::{Rgb, RgbImage};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use std::time::{Duration, Instant};

/// What the server and model are; shared by `judge check` and `judge bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The API root, as in the judge config: `http://HOST:PORT/v1`.
    #[arg(long)]
    pub base_url: String,
    /// The served model name (as `GET /v1/models` lists it).
    #[arg(long)]
    pub model: String,
    /// `logprobs` (the default, as in the judge config) or `generate`.
    #[arg(long, default_value = "logprobs", value_parser = parse_extraction)]
    pub extraction: Extraction,
    /// Alternatives per token asked under `logprobs`.
    #[arg(long, default_value_t = 10)]
    pub top_logprobs: u32,
    /// `max_tokens` of each request.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: u32,
    /// Name of the environment variable holding the API key (never the key).
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// Per-request timeout.
    #[arg(long, default_value_t = 120_000)]
    pub timeout_ms: u64,
}

fn parse_extraction(s: &str) -> Result<Extraction, String> {
    match s {
        "logprobs" => Ok(Extraction::Logprobs),
        "generate" => Ok(Extraction::Generate),
        _ => Err(format!("expected `logprobs` or `generate`, got `{s}`")),
    }
}

impl ServerArgs {
    /// The judge config these arguments describe (other fields at their defaults).
    pub fn config(&self) -> OpenAiConfig {
        let mut c = OpenAiConfig::new(&self.base_url, &self.model);
        c.extraction = self.extraction;
        c.decoding.top_logprobs = self.top_logprobs;
        c.decoding.max_tokens = self.max_tokens;
        c.api_key_env = self.api_key_env.clone();
        c.timeout_ms = self.timeout_ms;
        c
    }
}

/// `cocoflow judge check` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Why the server cannot serve the configured judge.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Problem {
    #[error("cannot reach the server at `{url}`: {error}")]
    Unreachable { url: String, error: String },
    #[error("the server does not serve model `{model}`; it serves: {served}")]
    WrongModel { model: String, served: String },
    #[error("the server refuses the judge's request: {0}")]
    Refused(String),
    #[error("images do not reach the model: {0}")]
    NoVision(String),
    #[error(
        "the server returns no `top_logprobs`, which `extraction: logprobs` needs ({0}); \
         use `extraction: generate`, or serve the judge with vLLM or SGLang (see README, \
         \"Serving the judge\")"
    )]
    NoLogprobs(String),
}

/// A probe request's reply.
#[derive(Debug, Clone)]
pub enum Reply {
    /// HTTP 200 with a chat completion.
    Answer(ProbeAnswer),
    /// Another status, with the server's message.
    Status { status: u16, message: String },
    /// No HTTP answer (connection, timeout) or an unreadable body.
    Transport(String),
}

/// What a 200 answer held.
#[derive(Debug, Clone)]
pub struct ProbeAnswer {
    pub content: String,
    pub finish_reason: Option<String>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// Tokens of `logprobs.content` and the most `top_logprobs` one of them has; `None`
    /// without `logprobs.content`.
    pub logprobs: Option<(usize, usize)>,
    /// Whether the judge can use the answer (with this request's extraction), or why not.
    pub usable: Result<(), String>,
}

/// One probe request.
#[derive(Debug, Clone)]
pub struct Probe {
    pub reply: Reply,
    pub latency: Duration,
}

/// Everything `judge check` found.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub endpoint: String,
    pub model: String,
    pub extraction: Extraction,
    pub top_logprobs: u32,
    /// The served model ids, or why they could not be listed.
    pub models: Result<Vec<String>, String>,
    pub generate: Option<Probe>,
    pub logprobs: Option<Probe>,
    pub text_only: Option<Probe>,
    pub problems: Vec<Problem>,
}

/// Two 32×32 images (a blue square that turns red) and their instruction: the probe sample.
pub fn probe_request() -> JudgeRequest {
    let img = |square: [u8; 3]| {
        JudgeImage::from_rgb(RgbImage::from_fn(32, 32, |x, y| {
            if (8..24).contains(&x) && (8..24).contains(&y) {
                Rgb(square)
            } else {
                Rgb([200, 200, 190])
            }
        }))
    };
    JudgeRequest::new(
        img([40, 60, 200]),
        img([200, 40, 40]),
        "make the blue square red",
    )
    .with_mask(JudgeImage::from_rgb(RgbImage::from_fn(32, 32, |x, y| {
        let v = if (8..24).contains(&x) && (8..24).contains(&y) {
            255
        } else {
            0
        };
        Rgb([v, v, v])
    })))
    .with_var("edit_type", "attribute")
}

/// A raw client for the probe: the judge's key header, the judge's timeout.
struct Raw {
    http: reqwest::Client,
    auth: Option<HeaderValue>,
    base: String,
}

impl Raw {
    fn new(config: &OpenAiConfig) -> Result<Raw, String> {
        let auth = match &config.api_key_env {
            Some(var) => {
                let key = std::env::var(var)
                    .ok()
                    .filter(|k| !k.trim().is_empty())
                    .ok_or_else(|| format!("the API key variable `{var}` is not set or empty"))?;
                let mut v = HeaderValue::from_str(&format!("Bearer {}", key.trim()))
                    .map_err(|_| format!("the API key in `{var}` is not a valid header value"))?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(config.timeout_ms.min(10_000)))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Raw {
            http,
            auth,
            base: config.base_url.trim_end_matches('/').to_string(),
        })
    }

    fn with_auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some(v) => rb.header(AUTHORIZATION, v.clone()),
            None => rb,
        }
    }

    /// `GET {base}/models`: the model ids.
    async fn models(&self) -> Result<Vec<String>, (bool, String)> {
        let url = format!("{}/models", self.base);
        let resp = self
            .with_auth(self.http.get(&url))
            .send()
            .await
            .map_err(|e| (true, chain(&e)))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| (true, chain(&e)))?;
        if !status.is_success() {
            return Err((
                false,
                format!("HTTP {}: {}", status.as_u16(), server_message(&body)),
            ));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| (false, format!("not a model list: {e}")))?;
        let ids = v["data"]
            .as_array()
            .ok_or((false, "not a model list: no `data` array".to_string()))?
            .iter()
            .filter_map(|m| m["id"].as_str().map(str::to_string))
            .collect();
        Ok(ids)
    }

    async fn chat(&self, body: &ChatRequest, prompt: &Prompt, extraction: Extraction) -> Probe {
        let start = Instant::now();
        let url = format!("{}/chat/completions", self.base);
        let sent = self.with_auth(self.http.post(&url).json(body)).send().await;
        let reply = match sent {
            Err(e) => Reply::Transport(chain(&e)),
            Ok(resp) => {
                let status = resp.status();
                match resp.bytes().await {
                    Err(e) => Reply::Transport(chain(&e)),
                    Ok(b) if !status.is_success() => Reply::Status {
                        status: status.as_u16(),
                        message: server_message(&b),
                    },
                    Ok(b) => read_answer(&b, prompt, extraction),
                }
            }
        };
        Probe {
            reply,
            latency: start.elapsed(),
        }
    }
}

fn read_answer(body: &[u8], prompt: &Prompt, extraction: Extraction) -> Reply {
    let resp: ChatResponse = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return Reply::Transport(format!("malformed response body: {e}")),
    };
    let usage = resp.usage;
    let Some(choice) = resp.choices.into_iter().next() else {
        return Reply::Transport("the response has no choices".into());
    };
    let content = choice.message.content.unwrap_or_default();
    let tokens = choice.logprobs.and_then(|l| l.content);
    let logprobs = tokens.as_ref().map(|t| {
        (
            t.len(),
            t.iter().map(|x| x.top_logprobs.len()).max().unwrap_or(0),
        )
    });
    let usable = extract::extract(prompt, &content, tokens.as_deref(), extraction)
        .map(|_| ())
        .map_err(|e| e.to_string());
    Reply::Answer(ProbeAnswer {
        content,
        finish_reason: choice.finish_reason,
        prompt_tokens: usage.and_then(|u| u.prompt_tokens),
        completion_tokens: usage.and_then(|u| u.completion_tokens),
        logprobs,
        usable,
    })
}

/// The error and its causes, one line.
fn chain(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// The server's error message: OpenAI's `{"error": {"message"}}`, vLLM's and SGLang's
/// `{"message"}` / `{"object": "error", "message"}`, FastAPI's `{"detail"}`; else the body.
pub fn server_message(body: &[u8]) -> String {
    let text = crate::net::body_excerpt(body);
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return text;
    };
    let pick = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    };
    pick(&v["error"]["message"])
        .or_else(|| pick(&v["message"]))
        .or_else(|| pick(&v["detail"]))
        .or_else(|| v["error"].as_str().map(str::to_string))
        .map(|m| crate::net::body_excerpt(m.as_bytes()))
        .unwrap_or(text)
}

/// Removes the image parts of a request (their label lines stay).
fn without_images(mut body: ChatRequest) -> ChatRequest {
    for m in &mut body.messages {
        if let MessageContent::Parts(parts) = &mut m.content {
            parts.retain(|p| !matches!(p, ContentPart::ImageUrl { .. }));
        }
    }
    body
}

/// Probes the server for the judge `config` describes (module docs).
pub async fn check(config: &OpenAiConfig) -> Result<CheckReport, String> {
    let judge = OpenAiJudge::new(config.clone()).map_err(|e| e.to_string())?;
    let raw = Raw::new(config)?;
    let prompt = config.variant.prompt();
    let mut report = CheckReport {
        endpoint: format!("{}/chat/completions", raw.base),
        model: config.model.clone(),
        extraction: config.extraction,
        top_logprobs: config.decoding.top_logprobs,
        models: Err("not asked".into()),
        generate: None,
        logprobs: None,
        text_only: None,
        problems: Vec::new(),
    };
    match raw.models().await {
        Ok(ids) => {
            if !ids.contains(&config.model) {
                report.problems.push(Problem::WrongModel {
                    model: config.model.clone(),
                    served: if ids.is_empty() {
                        "nothing".into()
                    } else {
                        ids.iter()
                            .map(|i| format!("`{i}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                });
            }
            report.models = Ok(ids);
        }
        Err((true, error)) => {
            report.problems.push(Problem::Unreachable {
                url: raw.base.clone(),
                error,
            });
            report.models = Err("the server did not answer".into());
            return Ok(report);
        }
        Err((false, why)) => report.models = Err(why),
    }
    let req = probe_request();
    let base = judge
        .chat_request(prompt, &req)
        .map_err(|e| e.to_string())?;
    let mut gen_body = base.clone();
    gen_body.logprobs = None;
    gen_body.top_logprobs = None;
    let mut lp_body = base;
    lp_body.logprobs = Some(true);
    lp_body.top_logprobs = Some(config.decoding.top_logprobs);
    let text_body = without_images(gen_body.clone());

    let generate = raw.chat(&gen_body, prompt, Extraction::Generate).await;
    let logprobs = raw.chat(&lp_body, prompt, Extraction::Logprobs).await;
    let text_only = raw.chat(&text_body, prompt, Extraction::Generate).await;

    // the request itself
    match &generate.reply {
        Reply::Transport(e) => report.problems.push(Problem::Unreachable {
            url: report.endpoint.clone(),
            error: e.clone(),
        }),
        Reply::Status { status, message } => {
            let wrong_model = report
                .problems
                .iter()
                .any(|p| matches!(p, Problem::WrongModel { .. }));
            if !wrong_model {
                report
                    .problems
                    .push(Problem::Refused(format!("HTTP {status}: {message}")));
            }
        }
        Reply::Answer(_) => {}
    }
    // images
    if let Reply::Answer(g) = &generate.reply {
        match &text_only.reply {
            Reply::Answer(t) => {
                if let (Some(with), Some(without)) = (g.prompt_tokens, t.prompt_tokens)
                    && with <= without
                {
                    report.problems.push(Problem::NoVision(format!(
                        "the prompt with 2 images has {with} tokens, without them {without}: \
                         the server drops image parts (is `{}` a vision-language model?)",
                        config.model
                    )));
                }
            }
            Reply::Status { .. } | Reply::Transport(_) => {}
        }
    }
    // logprobs
    if config.extraction == Extraction::Logprobs {
        let missing = match &logprobs.reply {
            Reply::Answer(a) => match a.logprobs {
                None => Some("the answer has no `logprobs.content`".to_string()),
                Some((_, 0)) => Some("`logprobs.content` has no `top_logprobs`".to_string()),
                Some(_) => None,
            },
            Reply::Status { status, message } => Some(format!(
                "a request with `top_logprobs: {}` got HTTP {status}: {message}",
                config.decoding.top_logprobs
            )),
            Reply::Transport(_) => None,
        };
        if let Some(m) = missing
            && matches!(generate.reply, Reply::Answer(_))
        {
            report.problems.push(Problem::NoLogprobs(m));
        }
    }
    report.generate = Some(generate);
    report.logprobs = Some(logprobs);
    report.text_only = Some(text_only);
    Ok(report)
}

impl CheckReport {
    /// Whether the configured judge can run against this server.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The report as printed by `cocoflow judge check`.
    pub fn render(&self) -> String {
        let mut out = format!(
            "judge check: {} · model `{}` · extraction {}\n",
            self.endpoint,
            self.model,
            match self.extraction {
                Extraction::Logprobs => "logprobs",
                Extraction::Generate => "generate",
            }
        );
        let line = |out: &mut String, name: &str, text: String| {
            out.push_str(&format!("  {name:<10} {text}\n"));
        };
        line(
            &mut out,
            "models",
            match &self.models {
                Ok(ids) => format!(
                    "{} listed{}",
                    ids.len(),
                    if ids.contains(&self.model) {
                        format!(", `{}` among them", self.model)
                    } else {
                        format!(", not `{}`", self.model)
                    }
                ),
                Err(why) => format!("not listed ({why})"),
            },
        );
        if let Some(p) = &self.generate {
            line(&mut out, "generate", describe(p));
        }
        if let Some(p) = &self.logprobs {
            let ms = p.latency.as_secs_f64() * 1e3;
            let text = match &p.reply {
                Reply::Answer(a) => match a.logprobs {
                    Some((n, top)) if top > 0 => format!(
                        "returned, up to {top} alternatives for each of {n} tokens: {}",
                        describe(p)
                    ),
                    Some((n, _)) => {
                        format!("{n} tokens without `top_logprobs`: HTTP 200 in {ms:.0} ms")
                    }
                    None => format!(
                        "not returned (the server ignores `logprobs`): HTTP 200 in {ms:.0} ms"
                    ),
                },
                _ => describe(p),
            };
            line(&mut out, "logprobs", text);
        }
        if let (Some(g), Some(t)) = (&self.generate, &self.text_only) {
            let text = match (&g.reply, &t.reply) {
                (Reply::Answer(a), Reply::Answer(b)) => match (a.prompt_tokens, b.prompt_tokens) {
                    (Some(with), Some(without)) if with > without => format!(
                        "2 images read: {} prompt tokens with them, {without} without",
                        with
                    ),
                    (Some(with), Some(without)) => {
                        format!("dropped: {with} prompt tokens with 2 images, {without} without")
                    }
                    _ => "not verified: the server reports no `usage.prompt_tokens`".to_string(),
                },
                (Reply::Answer(_), _) => format!(
                    "not verified: the request without images failed ({})",
                    describe(t)
                ),
                _ => "not verified: the judge's request failed".to_string(),
            };
            line(&mut out, "images", text);
        }
        if self.ok() {
            out.push_str("ok: the server can serve this judge\n");
        } else {
            for p in &self.problems {
                out.push_str(&format!("error: {p}\n"));
            }
        }
        out
    }
}

fn describe(p: &Probe) -> String {
    let ms = p.latency.as_secs_f64() * 1e3;
    match &p.reply {
        Reply::Answer(a) => format!(
            "HTTP 200 in {ms:.0} ms, {} prompt + {} answer tokens, finish `{}`, answer {}",
            a.prompt_tokens.map_or("?".into(), |n| n.to_string()),
            a.completion_tokens.map_or("?".into(), |n| n.to_string()),
            a.finish_reason.as_deref().unwrap_or("?"),
            match &a.usable {
                Ok(()) => "usable".to_string(),
                Err(e) => format!("not usable ({e})"),
            }
        ),
        Reply::Status { status, message } => format!("HTTP {status} in {ms:.0} ms: {message}"),
        Reply::Transport(e) => format!("no answer after {ms:.0} ms: {e}"),
    }
}

/// `cocoflow judge check`: prints the report; the exit status (module docs).
pub fn run(args: &CheckArgs) -> i32 {
    let config = args.server.config();
    let rt = match crate::net::serve::runtime(false) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(check(&config)) {
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_USAGE
        }
        Ok(report) => {
            print!("{}", report.render());
            if report.ok() {
                EXIT_OK
            } else {
                EXIT_ENVIRONMENT
            }
        }
    }
}
