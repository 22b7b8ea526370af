//! `eval`'s `prompts: PATH`: the benchmarks' own prompt files (in the formats GEdit-Bench and
//! ImgEdit-Bench ship them; the templates here are the test's own text) reach the judge
//! server verbatim, as the benchmark scripts send them, and the answers are read the way the
//! scripts read them. Also: the builtin prompts' report label, and errors that name the file
//! and the key.

use cocoflow_tasks::artifacts::eval_report::{
    BenchScores, TypeRow, label_prompts, table_markdown_bench,
};
use cocoflow_tasks::eval::{Protocol, ask_bench};
use cocoflow_tasks::judge::published::{BUILTIN_LABEL, BenchPrompts, PromptSource};
use cocoflow_tasks::judge::wire::{ChatRequest, ContentPart, MessageContent};
use cocoflow_tasks::judge::{JudgeError, JudgeImage, JudgeRequest, OpenAiConfig, OpenAiJudge};
use cocoflow_tasks::net::RetryPolicy;
use serde_json::json;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The answer text for a request's first text part.
type Answerer = dyn Fn(&str) -> String + Send + Sync;

/// A minimal OpenAI-compatible server on 127.0.0.1 that records every request body.
fn stub(answer: Arc<Answerer>) -> (String, Arc<Mutex<Vec<ChatRequest>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (answer, s) = (answer.clone(), s.clone());
            std::thread::spawn(move || {
                let Some(body) = read_request(&mut stream) else {
                    return;
                };
                let req: ChatRequest = serde_json::from_slice(&body).unwrap();
                let text = match &req.messages[0].content {
                    MessageContent::Parts(p) => match &p[0] {
                        ContentPart::Text { text } => text.clone(),
                        _ => String::new(),
                    },
                    MessageContent::Text(t) => t.clone(),
                };
                s.lock().unwrap().push(req);
                let content = answer(&text);
                let resp = json!({"id": "stub", "object": "chat.completion", "created": 0, "model": "stub",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]})
                .to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{resp}",
                    resp.len()
                );
            });
        }
    });
    (format!("http://{addr}/v1"), seen)
}

fn read_request(stream: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let header_end = loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())?;
    while buf.len() < header_end + len {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf[header_end..header_end + len].to_vec())
}

fn judge(base_url: &str) -> OpenAiJudge {
    let mut c = OpenAiConfig::new(base_url, "stub-vlm");
    c.timeout_ms = 5_000;
    c.retry = RetryPolicy {
        max_attempts: 2,
        initial_backoff_ms: 1,
        max_backoff_ms: 2,
        factor: 2.0,
        jitter_seed: Some(1),
    };
    OpenAiJudge::new(c).unwrap()
}

fn request(instruction: &str, edit_type: &str) -> JudgeRequest {
    let src = image::RgbImage::from_pixel(4, 4, image::Rgb([10, 20, 30]));
    let out = image::RgbImage::from_pixel(4, 4, image::Rgb([200, 20, 30]));
    JudgeRequest::new(
        JudgeImage::from_rgb(src),
        JudgeImage::from_rgb(out),
        instruction,
    )
    .with_var("edit_type", edit_type)
}

/// (text parts, image URLs) of the single user message; panics on any other shape.
fn user_parts(r: &ChatRequest) -> (Vec<String>, Vec<String>, bool) {
    assert_eq!(r.messages.len(), 1, "one message, no system prompt");
    assert_eq!(r.messages[0].role, "user");
    let MessageContent::Parts(parts) = &r.messages[0].content else {
        panic!("parts");
    };
    let mut texts = Vec::new();
    let mut images = Vec::new();
    for p in parts {
        match p {
            ContentPart::Text { text } => texts.push(text.clone()),
            ContentPart::ImageUrl { image_url } => images.push(image_url.url.clone()),
        }
    }
    let text_first = matches!(parts[0], ContentPart::Text { .. });
    (texts, images, text_first)
}

/// GEdit-Bench's `viescore/vie_prompts.py` layout: module-level triple-quoted strings, here with
/// the test's own words, an escape, a raw string and an unrelated docstring.
const VIE_PROMPTS: &str = r#"'''Test prompts in the layout of VIEScore's vie_prompts.py.
_context_no_delimit = """not this one"""
'''

_context_no_delimit = """CTX line one.
Answer as {
"score" : [...],
"reasoning" : "..."
}"""

_prompts_0shot_two_image_edit_rule = """TWO-IMAGE RULE: the first image is the source, \
the second the edit.
"""

_prompts_0shot_tie_rule_SC = """
SC RULE: \"score1\" success, "score2" overediting; 0 to 10.
Editing instruction: <instruction>
"""

_prompts_0shot_rule_PQ = r"""PQ RULE: naturalness, then artifacts.\n stays
"""
"#;

fn sc_text(instruction: &str) -> String {
    [
        "CTX line one.\nAnswer as {\n\"score\" : [...],\n\"reasoning\" : \"...\"\n}",
        "TWO-IMAGE RULE: the first image is the source, the second the edit.\n",
        &format!(
            "\nSC RULE: \"score1\" success, \"score2\" overediting; 0 to 10.\nEditing instruction: {instruction}\n"
        ),
    ]
    .join("\n")
}

fn pq_text() -> String {
    [
        "CTX line one.\nAnswer as {\n\"score\" : [...],\n\"reasoning\" : \"...\"\n}",
        "PQ RULE: naturalness, then artifacts.\\n stays\n",
    ]
    .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gedit_prompts_come_from_the_vie_prompts_file_and_scores_are_read_like_viescore() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("viescore")).unwrap();
    let file = tmp.path().join("viescore/vie_prompts.py");
    std::fs::write(&file, VIE_PROMPTS).unwrap();
    // the directory finds viescore/vie_prompts.py
    let prompts = BenchPrompts::load(
        Protocol::Gedit,
        &PromptSource::Path(tmp.path().display().to_string()),
    )
    .unwrap();
    let (url, seen) = stub(Arc::new(|text: &str| {
        if text.contains("SC RULE") {
            "The hat is there.\n```json\n{\n\"score\" : [8, 6],\n\"reasoning\" : \"a bit much\"\n}\n```"
                .to_string()
        } else {
            "[9, 4]".to_string()
        }
    }));
    let j = judge(&url);
    let req = request("Add a red hat to the cat.", "subject-add");
    let b: BenchScores = ask_bench(&j, Protocol::Gedit, &prompts, &req)
        .await
        .unwrap();
    // SC = min(8, 6), PQ = min(9, 4), O = sqrt(SC·PQ)
    assert_eq!((b.sc, b.pq), (Some(6.0), Some(4.0)));
    assert_eq!(b.score, 24f64.sqrt());
    assert_eq!(b.scores["editing_success"], 8.0);
    assert_eq!(b.scores["artifacts"], 4.0);

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    let sc = seen
        .iter()
        .find(|r| user_parts(r).0[0].contains("SC RULE"))
        .unwrap();
    let (texts, images, text_first) = user_parts(sc);
    assert_eq!(texts, vec![sc_text("Add a red hat to the cat.")]);
    assert!(
        text_first,
        "the prompt text goes first, as the scripts send it"
    );
    assert_eq!(images, vec![req.source.data_url(), req.edited.data_url()]);
    assert_eq!(sc.logprobs, None, "scores come from the generated text");
    let pq = seen
        .iter()
        .find(|r| user_parts(r).0[0].contains("PQ RULE"))
        .unwrap();
    let (texts, images, _) = user_parts(pq);
    assert_eq!(texts, vec![pq_text()]);
    assert_eq!(
        images,
        vec![req.edited.data_url()],
        "PQ shows the edited image only"
    );

    // The report says where the prompts came from.
    let mut table = json!({});
    label_prompts(&mut table, "### t\n\n| a |\n", &prompts);
    assert_eq!(table["prompts"]["source"], "published");
    assert_eq!(table["prompts"]["file"], json!(file.display().to_string()));
    assert!(table["prompts"].get("label").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imgedit_rubrics_are_per_edit_type_from_the_prompts_json_and_read_like_step1() {
    let tmp = tempfile::tempdir().unwrap();
    let rubrics = json!({
        "adjust": "\nADJUST RUBRIC. Rate the attribute edit.\nInstruction: <edit_prompt>\nWrite lines `Name: score`.",
        "remove": "REMOVE RUBRIC for <edit_prompt> (and again: <edit_prompt>)",
    });
    std::fs::write(
        tmp.path().join("prompts.json"),
        serde_json::to_string_pretty(&rubrics).unwrap(),
    )
    .unwrap();
    let prompts = BenchPrompts::load(
        Protocol::Imgedit,
        &PromptSource::Path(tmp.path().display().to_string()),
    )
    .unwrap();
    let (url, seen) = stub(Arc::new(|text: &str| {
        if text.starts_with("\nADJUST") {
            "Brief reasoning: colour right: shade off.\nPrompt Compliance: 4\nVisual Seamlessness: 5\nPhysical & Detail Fidelity: 2".to_string()
        } else if text.contains("the cup") {
            "Object Removal: 5\nScore:3\nBackground Integrity: 4\nOverall: 4/5\nRealism: 4"
                .to_string()
        } else {
            "I would rather not say.".to_string()
        }
    }));
    let j = judge(&url);
    let a = request("Make the cup blue.", "adjust");
    let b = ask_bench(&j, Protocol::Imgedit, &prompts, &a)
        .await
        .unwrap();
    // (4 + 5 + 2) / 3 = 3.666… → 3.67, as step1_get_avgscore.py rounds it
    assert_eq!(b.score, 3.67);
    assert_eq!(b.scores["Physical & Detail Fidelity"], 2.0);
    assert_eq!(b.scores.len(), 3);
    // Another type, another rubric: `Score:3` and `Overall: 4/5` are not scores → (5+4+4)/3
    let r = request("Remove the cup.", "remove");
    let b = ask_bench(&j, Protocol::Imgedit, &prompts, &r)
        .await
        .unwrap();
    assert_eq!(b.score, 4.33);
    assert_eq!(b.scores.len(), 3);
    {
        let seen = seen.lock().unwrap();
        let (texts, images, text_first) = user_parts(&seen[0]);
        assert_eq!(
            texts,
            vec![
                "\nADJUST RUBRIC. Rate the attribute edit.\nInstruction: Make the cup blue.\nWrite lines `Name: score`."
            ]
        );
        assert!(text_first);
        assert_eq!(images, vec![a.source.data_url(), a.edited.data_url()]);
        let (texts, _, _) = user_parts(&seen[1]);
        assert_eq!(
            texts,
            vec!["REMOVE RUBRIC for Remove the cup. (and again: Remove the cup.)"]
        );
    }
    // An answer the script finds no score in: retried, then invalid, with the text kept.
    let n_before = seen.lock().unwrap().len();
    let odd = request("Blur it.", "remove");
    let inv = ask_bench(&j, Protocol::Imgedit, &prompts, &odd)
        .await
        .unwrap_err();
    assert_eq!(inv.attempts, 2, "{inv}");
    assert_eq!(seen.lock().unwrap().len(), n_before + 2);
    assert!(
        inv.to_string()
            .contains("cannot be read the way ImgEdit's step1_get_avgscore.py reads it"),
        "{inv}"
    );
    assert_eq!(inv.raw.as_deref(), Some("I would rather not say."));
    assert!(matches!(inv.error, JudgeError::Answer(_)));

    // Every record's type needs a rubric; the error names the file, the type and the record.
    let file = tmp.path().join("prompts.json");
    let e = prompts
        .check_types([("k1", "adjust"), ("k2", "style"), ("k3", "style")])
        .unwrap_err();
    assert_eq!(
        e,
        format!(
            "`prompts` `{}` has no rubric for edit type `style` (record `k2`, 2 records in all); it has: adjust, remove",
            file.display()
        )
    );
    assert!(prompts.check_types([("k1", "remove")]).is_ok());
}

#[test]
fn the_builtin_prompts_are_labelled_not_comparable() {
    let row = TypeRow {
        edit_type: "overall".into(),
        ..TypeRow::default()
    };
    let md = table_markdown_bench("base", Protocol::Gedit, &[], &row);
    let mut table = json!({"label": "base"});
    let md = label_prompts(&mut table, &md, &BenchPrompts::Builtin);
    assert_eq!(
        BUILTIN_LABEL,
        "builtin prompts: not comparable with published numbers"
    );
    assert_eq!(table["prompts"]["source"], "builtin");
    assert_eq!(table["prompts"]["label"], BUILTIN_LABEL);
    assert!(
        md.starts_with(&format!(
            "### base — GEdit-Bench (VIEScore)\n\n**{BUILTIN_LABEL}.**\n\n| edit type |"
        )),
        "{md}"
    );
    assert_eq!(
        BenchPrompts::load(Protocol::Imgedit, &PromptSource::Builtin).unwrap(),
        BenchPrompts::Builtin
    );
}

fn load_err(protocol: Protocol, path: &Path) -> String {
    BenchPrompts::load(protocol, &PromptSource::Path(path.display().to_string())).unwrap_err()
}

#[test]
fn missing_and_malformed_prompt_files_name_the_file_and_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let f = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    // GEdit
    let missing = d.join("nope.py");
    assert!(
        load_err(Protocol::Gedit, &missing)
            .starts_with(&format!("`prompts` `{}`: ", missing.display())),
        "{}",
        load_err(Protocol::Gedit, &missing)
    );
    let p = f(
        "no_pq.py",
        &VIE_PROMPTS.replace("_prompts_0shot_rule_PQ", "_prompts_0shot_rule_PQ_v2"),
    );
    let e = load_err(Protocol::Gedit, &p);
    assert!(
        e.starts_with(&format!(
            "`{}` has no `_prompts_0shot_rule_PQ = \"\"\"...\"\"\"` assignment",
            p.display()
        )),
        "{e}"
    );
    let p = f(
        "no_placeholder.py",
        &VIE_PROMPTS.replace("<instruction>", "<prompt>"),
    );
    let e = load_err(Protocol::Gedit, &p);
    assert!(
        e.contains("`_prompts_0shot_tie_rule_SC` has no `<instruction>` placeholder")
            && e.contains(&p.display().to_string()),
        "{e}"
    );
    let p = f("open.py", "_context_no_delimit = \"\"\"never closed\n");
    assert_eq!(
        load_err(Protocol::Gedit, &p),
        format!(
            "`{}`: `_context_no_delimit` (line 1): the \"\"\" string is never closed",
            p.display()
        )
    );
    let empty_dir = d.join("empty");
    std::fs::create_dir_all(&empty_dir).unwrap();
    assert!(
        load_err(Protocol::Gedit, &empty_dir)
            .contains("looked for `vie_prompts.py`, `viescore/vie_prompts.py`"),
    );
    // ImgEdit
    let p = f("bad.json", "{\"adjust\": ");
    assert!(
        load_err(Protocol::Imgedit, &p).starts_with(&format!("`{}`: not valid JSON", p.display()))
    );
    let p = f("list.json", "[\"adjust\"]");
    assert_eq!(
        load_err(Protocol::Imgedit, &p),
        format!(
            "`{}`: expected a JSON object mapping each edit type to its prompt, got an array",
            p.display()
        )
    );
    let p = f(
        "num.json",
        "{\"adjust\": \"ok <edit_prompt>\", \"remove\": 3}",
    );
    assert_eq!(
        load_err(Protocol::Imgedit, &p),
        format!(
            "`{}`, key `remove`: expected the prompt text (a string), got a number",
            p.display()
        )
    );
    let p = f("noph.json", "{\"style\": \"Rate the style.\"}");
    assert!(load_err(Protocol::Imgedit, &p).starts_with(&format!(
        "`{}`, key `style`: the prompt has no `<edit_prompt>` placeholder",
        p.display()
    )));
    assert!(load_err(Protocol::Imgedit, &empty_dir).contains("looked for `prompts.json`"));
    // the synthetic protocol reads no prompt file
    assert!(load_err(Protocol::Synthetic, &p).contains("only the benchmark protocols"));
}
