//! GEdit-Bench and ImgEdit-Bench: the `bench-import` loaders on fixtures in the published
//! layouts (`tests/golden/benchmarks/gen.py`), and `eval`'s `gedit` / `imgedit` protocols
//! through the engine against a stub OpenAI-compatible judge with fixed answers, checked
//! against hand-computed per-type and overall scores.

use cocoflow_torch::benchmarks::{BenchFormat, BenchImportParams, ImportSummary, import};
use cocoflow_torch::data::{Dataset, MaskPolarity, RecordTensors as _};
use cocoflow_torch::judge::JudgeImage;
use cocoflow_torch::judge::prompts::{self, ImageRole};
use cocoflow_torch::judge::wire::{ChatRequest, ContentPart, MessageContent};
use serde_json::{Value, json};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::run;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/benchmarks")
}

fn params(format: BenchFormat, path: &Path) -> BenchImportParams {
    BenchImportParams {
        format,
        path: path.display().to_string(),
        masks: None,
        images: None,
        language: "en".into(),
        limit: None,
        size: None,
    }
}

fn keys(ds: &Dataset) -> Vec<&str> {
    ds.records.iter().map(|r| r.key.as_str()).collect()
}

fn pixel(ds: &Dataset, i: usize) -> [u8; 3] {
    let img = image::open(ds.path(&ds.records[i].source))
        .unwrap()
        .to_rgb8();
    img.get_pixel(0, 0).0
}

fn near(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| (*x as i32 - y as i32).abs() <= 3)
}

fn errors(s: &[cocoflow_torch::benchmarks::RowError]) -> Vec<(String, String)> {
    s.iter()
        .map(|e| (e.row.clone(), e.reason.clone()))
        .collect()
}

// ---------------------------------------------------------------- loaders

#[test]
fn gedit_parquet_import_keeps_english_rows_with_types_and_masks_and_counts_bad_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = fixtures().join("gedit");
    let mut p = params(BenchFormat::Gedit, &fx);
    p.masks = Some(fx.join("masks").display().to_string());
    let s: ImportSummary = import(&p, tmp.path()).unwrap();
    assert_eq!(s.rows, 6);
    assert_eq!(s.imported, 3);
    assert_eq!(s.other_language, 1);
    assert_eq!(s.masks, 2);
    assert!(s.mask_errors.is_empty());
    assert_eq!(s.files.len(), 1);
    assert!(s.files[0].ends_with("gedit/data/train-00000-of-00001.parquet"));
    let errs = errors(&s.row_errors);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0].0, "key `g-bad-img`");
    assert!(
        errs[0].1.starts_with("the source image does not decode: "),
        "{}",
        errs[0].1
    );
    assert_eq!(
        errs[1],
        (
            "key `g-no-instr`".to_string(),
            "`instruction` is null".to_string()
        )
    );
    assert_eq!(
        s.types
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect::<Vec<_>>(),
        vec![("style_change", 1), ("subject-add", 2)]
    );
    // `import.json` holds the same summary.
    let back: Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("import.json")).unwrap()).unwrap();
    assert_eq!(back["imported"], 3);
    assert_eq!(back["row_errors"].as_array().unwrap().len(), 2);

    let ds = Dataset::open(tmp.path()).unwrap();
    assert!(ds.rejected.is_empty(), "{:?}", ds.rejected);
    assert_eq!(keys(&ds), vec!["g-add-1", "g-add-2", "g-style-1"]);
    let r = &ds.records[0];
    assert_eq!(r.edit_type.as_deref(), Some("subject-add"));
    assert_eq!(r.instruction, "Add a red hat to the cat.");
    assert_eq!(r.extra["benchmark"], "gedit");
    assert_eq!(r.extra["instruction_language"], "en");
    assert_eq!(r.extra["intersection_exist"], true);
    assert_eq!(r.extra["original_size"], json!([16, 16]));
    assert_eq!(r.source, "images/g-add-1.png");
    assert_eq!(r.mask_polarity, MaskPolarity::Keep);
    assert_eq!(pixel(&ds, 0), [200, 30, 30]);
    assert_eq!(pixel(&ds, 2), [30, 30, 200]);
    // White = keep on disk (the left half): the edit mask is the right half, 8 × 16 pixels.
    let em = ds.edit_mask(r).unwrap().unwrap();
    assert_eq!(em.size(), vec![1, 16, 16]);
    assert_eq!(em.sum(tch::Kind::Double).double_value(&[]), 128.0);
    assert_eq!(em.double_value(&[0, 0, 15]), 1.0);
    assert_eq!(em.double_value(&[0, 0, 0]), 0.0);
    // No mask file: no mask.
    assert_eq!(ds.records[1].edit_mask, None);
    assert_eq!(ds.records[1].mask_polarity, MaskPolarity::Edit);
    let style_mask = ds.edit_mask(&ds.records[2]).unwrap().unwrap();
    assert_eq!(style_mask.sum(tch::Kind::Double).double_value(&[]), 0.0);
}

#[test]
fn gedit_language_filter_limit_and_resize() {
    let fx = fixtures().join("gedit/data/train-00000-of-00001.parquet");
    let tmp = tempfile::tempdir().unwrap();
    let mut p = params(BenchFormat::Gedit, &fx);
    p.language = "all".into();
    let s = import(&p, &tmp.path().join("all")).unwrap();
    assert_eq!((s.imported, s.other_language), (4, 0));
    let ds = Dataset::open(&tmp.path().join("all")).unwrap();
    assert_eq!(
        keys(&ds),
        vec!["g-add-1", "g-add-2", "g-style-1", "g-add-1-cn"]
    );
    assert_eq!(ds.records[3].extra["instruction_language"], "cn");

    let mut p = params(BenchFormat::Gedit, &fx);
    p.language = "cn".into();
    p.limit = Some(1);
    let s = import(&p, &tmp.path().join("cn")).unwrap();
    assert_eq!(s.imported, 1);
    let ds = Dataset::open(&tmp.path().join("cn")).unwrap();
    assert_eq!(keys(&ds), vec!["g-add-1-cn"]);

    let mut p = params(BenchFormat::Gedit, &fx);
    p.limit = Some(2);
    p.size = Some(8);
    p.masks = Some(fixtures().join("gedit/masks").display().to_string());
    let s = import(&p, &tmp.path().join("small")).unwrap();
    assert_eq!((s.imported, s.masks), (2, 1));
    let ds = Dataset::open(&tmp.path().join("small")).unwrap();
    assert_eq!(keys(&ds), vec!["g-add-1", "g-add-2"]);
    assert_eq!(ds.source(&ds.records[0]).unwrap().size(), vec![3, 8, 8]);
    let em = ds.edit_mask(&ds.records[0]).unwrap().unwrap();
    assert_eq!(em.sum(tch::Kind::Double).double_value(&[]), 32.0);
    assert_eq!(ds.records[0].extra["original_size"], json!([16, 16]));
}

#[test]
fn imgedit_json_import_with_image_root_fallback_masks_and_bad_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = fixtures().join("imgedit");
    let mut p = params(BenchFormat::Imgedit, &fx);
    p.masks = Some(fx.join("masks").display().to_string());
    let s = import(&p, tmp.path()).unwrap();
    assert_eq!((s.rows, s.imported, s.masks), (7, 4, 1));
    let errs = errors(&s.row_errors);
    let root = |d: &str| format!("`{}`", fx.join(d).display()).replace("/`", "`");
    assert_eq!(
        errs,
        vec![
            (
                "key `4`".to_string(),
                format!(
                    "image `animal/missing.jpg` not found under {}, {}",
                    root(""),
                    root("singleturn")
                )
            ),
            (
                "key `5`".to_string(),
                "`id` should be a string (an image path), got 42".to_string()
            ),
            ("key `6`".to_string(), "no `id`".to_string()),
        ]
    );
    let merrs = errors(&s.mask_errors);
    assert_eq!(merrs.len(), 1);
    assert_eq!(merrs[0].0, "key `2`");
    assert!(
        merrs[0].1.ends_with("is 8×8, its image 16×16"),
        "{}",
        merrs[0].1
    );

    let ds = Dataset::open(tmp.path()).unwrap();
    assert!(ds.rejected.is_empty(), "{:?}", ds.rejected);
    assert_eq!(keys(&ds), vec!["1", "2", "3", "7"]);
    let types: Vec<&str> = ds
        .records
        .iter()
        .map(|r| r.edit_type.as_deref().unwrap())
        .collect();
    assert_eq!(types, vec!["add", "remove", "style", "add"]);
    assert_eq!(ds.records[1].extra["image"], "daily object/000002.jpg");
    assert_eq!(ds.records[1].extra["benchmark"], "imgedit");
    assert_eq!(ds.records[1].edit_mask, None);
    assert_eq!(ds.records[3].instruction, "Make the dog wear sunglasses.");
    assert!(near(pixel(&ds, 0), [220, 40, 40]), "{:?}", pixel(&ds, 0));
    assert!(near(pixel(&ds, 1), [40, 220, 40]), "{:?}", pixel(&ds, 1));
    assert_eq!(ds.source(&ds.records[2]).unwrap().size(), vec![3, 16, 24]);
    // Key 1 keeps the top half: the edit mask is the bottom half.
    let em = ds.edit_mask(&ds.records[0]).unwrap().unwrap();
    assert_eq!(em.sum(tch::Kind::Double).double_value(&[]), 128.0);
    assert_eq!(em.double_value(&[0, 15, 0]), 1.0);

    // An explicit image root and the JSON file itself as `path`.
    let mut p = params(BenchFormat::Imgedit, &fx.join("basic_edit.json"));
    p.images = Some(fx.join("singleturn").display().to_string());
    p.limit = Some(2);
    let s = import(&p, &tmp.path().join("two")).unwrap();
    assert_eq!(s.imported, 2);
    assert_eq!(
        keys(&Dataset::open(&tmp.path().join("two")).unwrap()),
        vec!["1", "2"]
    );
}

#[test]
fn unreadable_files_name_the_file_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = fixtures();
    let bad = fx.join("malformed/no-language.parquet");
    let err = import(&params(BenchFormat::Gedit, &bad), &tmp.path().join("a")).unwrap_err();
    assert_eq!(
        err,
        format!(
            "`{}` has no column `instruction_language` (columns: task_type, key, instruction, input_image); \
             expected GEdit-Bench's parquet export",
            bad.display()
        )
    );
    let json = fx.join("imgedit/basic_edit.json");
    let err = import(&params(BenchFormat::Gedit, &json), &tmp.path().join("b")).unwrap_err();
    assert!(
        err.starts_with(&format!(
            "`{}` is not a readable parquet file: ",
            json.display()
        )),
        "{err}"
    );
    let err = import(
        &params(
            BenchFormat::Imgedit,
            &fx.join("gedit/data/train-00000-of-00001.parquet"),
        ),
        &tmp.path().join("c"),
    )
    .unwrap_err();
    assert!(err.contains("is not valid JSON"), "{err}");
    let err = import(
        &params(BenchFormat::Gedit, &fx.join("imgedit")),
        &tmp.path().join("d"),
    )
    .unwrap_err();
    assert_eq!(
        err,
        format!(
            "no `.parquet` files under `{}`",
            fx.join("imgedit").display()
        )
    );
    let err = import(
        &params(BenchFormat::Gedit, &fx.join("nowhere")),
        &tmp.path().join("e"),
    )
    .unwrap_err();
    assert_eq!(
        err,
        format!("`path` `{}` does not exist", fx.join("nowhere").display())
    );
    let err = import(
        &params(BenchFormat::Imgedit, &fx.join("gedit")),
        &tmp.path().join("f"),
    )
    .unwrap_err();
    assert_eq!(
        err,
        format!("`{}` has no `basic_edit.json`", fx.join("gedit").display())
    );
}

// ---------------------------------------------------------------- a stub judge

/// The answer for one request: (system text, user text, top-left pixel of the edited image).
type Answerer = dyn Fn(&str, &str, [u8; 3]) -> String + Send + Sync;

/// A minimal OpenAI-compatible server on 127.0.0.1: one thread per connection, `Connection:
/// close`, a fixed answer per request from `answer`.
fn stub(answer: Arc<Answerer>) -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let answer = answer.clone();
            let c = c.clone();
            std::thread::spawn(move || {
                let Some(body) = read_request(&mut stream) else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let req: ChatRequest = serde_json::from_slice(&body).unwrap();
                // builtin prompts: system + user (labelled images); a benchmark's own prompt
                // (`prompts: PATH`): one user message, the text, then the images (edited last)
                let (system, user_msg) = match req.messages.as_slice() {
                    [u] => (String::new(), u),
                    [sys, u] => (sys.content.text(), u),
                    other => panic!("{} messages", other.len()),
                };
                let MessageContent::Parts(parts) = &user_msg.content else {
                    panic!("the user message has parts");
                };
                let mut edited = None;
                let mut last_image = None;
                let mut user = String::new();
                for (i, part) in parts.iter().enumerate() {
                    match part {
                        ContentPart::Text { text } if text == ImageRole::Edited.label() => {
                            if let Some(ContentPart::ImageUrl { image_url }) = parts.get(i + 1) {
                                let img = JudgeImage::from_data_url(&image_url.url).unwrap();
                                edited = Some(img.pixels().get_pixel(0, 0).0);
                            }
                        }
                        ContentPart::Text { text } => user = text.clone(),
                        ContentPart::ImageUrl { image_url } => {
                            let img = JudgeImage::from_data_url(&image_url.url).unwrap();
                            last_image = Some(img.pixels().get_pixel(0, 0).0);
                        }
                    }
                }
                if system.is_empty() {
                    assert!(
                        matches!(parts.first(), Some(ContentPart::Text { .. })),
                        "a benchmark's own prompt goes text first"
                    );
                    edited = last_image;
                }
                let content = answer(&system, &user, edited.expect("an edited image"));
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
    (format!("http://{addr}/v1"), count)
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

/// The fixed answers: GEdit's SC by instruction and PQ by the edited image's colour (the PQ
/// prompt shows no instruction); ImgEdit by instruction ("Remove the cup" answers out of
/// range: an invalid sample).
fn answers(system: &str, user: &str, edited: [u8; 3]) -> String {
    let instruction = |p: &prompts::Prompt| p.extract_var(user, "instruction").unwrap();
    if system.is_empty() {
        return published_answers(user, edited);
    }
    if system == prompts::GEDIT_SC.system {
        let (es, oe) = match instruction(&prompts::GEDIT_SC).as_str() {
            "Add a red hat to the cat." => (8, 6),
            "Add a bird to the sky." => (3, 7),
            "Turn the photo into a watercolor painting." => (10, 10),
            other => panic!("unexpected instruction {other:?}"),
        };
        json!({"editing_success": es, "overediting": oe}).to_string()
    } else if system == prompts::GEDIT_PQ.system {
        let (na, ar) = match edited {
            [200, 30, 30] => (9, 4),
            [30, 200, 30] => (3, 5),
            [30, 30, 200] => (4, 9),
            other => panic!("unexpected image {other:?}"),
        };
        format!(
            "```json\n{}\n```",
            json!({"naturalness": na, "artifacts": ar})
        )
    } else if system == prompts::IMGEDIT.system {
        let (c, n, i) = match instruction(&prompts::IMGEDIT).as_str() {
            "Add a red hat to the dog." => (5, 4, 3),
            "Make the dog wear sunglasses." => (2, 2, 5),
            "Remove the cup from the table." => (7, 1, 1),
            "Transfer the image into a watercolor style." => (1, 2, 3),
            other => panic!("unexpected instruction {other:?}"),
        };
        json!({"prompt_compliance": c, "visual_naturalness": n, "physical_integrity": i})
            .to_string()
    } else {
        panic!("unexpected prompt: {system}")
    }
}

/// The benchmarks' own prompt files, in their formats, with this test's text: GEdit-Bench's
/// `viescore/vie_prompts.py` and ImgEdit's prompts JSON (a rubric per edit type).
fn write_prompt_files(dir: &Path) -> (PathBuf, PathBuf) {
    let vie = dir.join("viescore/vie_prompts.py");
    std::fs::create_dir_all(vie.parent().unwrap()).unwrap();
    std::fs::write(
        &vie,
        "_context_no_delimit = \"\"\"TEST CONTEXT: answer {\"score\": [...], \"reasoning\": \"...\"}\"\"\"\n\
         _prompts_0shot_two_image_edit_rule = \"\"\"TEST TWO-IMAGE RULE\"\"\"\n\
         _prompts_0shot_tie_rule_SC = \"\"\"TEST SC RULE\nEditing instruction: <instruction>\n\"\"\"\n\
         _prompts_0shot_rule_PQ = \"\"\"TEST PQ RULE\"\"\"\n",
    )
    .unwrap();
    let json = dir.join("imgedit_prompts.json");
    let rubric = |t: &str| format!("TEST RUBRIC {t}\nInstruction: <edit_prompt>\nEnd.");
    std::fs::write(
        &json,
        json!({"add": rubric("add"), "remove": rubric("remove"), "style": rubric("style")})
            .to_string(),
    )
    .unwrap();
    (vie, json)
}

/// The same scores as [`answers`], written the way the benchmarks' judges answer their own
/// prompts: VIEScore's `score` lists (SC in a fenced JSON block, PQ a bare list) and ImgEdit's
/// `Name: score` lines ("Remove the cup" answers without a score line: an invalid sample).
fn published_answers(user: &str, edited: [u8; 3]) -> String {
    let after = |prefix: &str| {
        user.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in {user:?}"))
            .to_string()
    };
    if user.contains("TEST SC RULE") {
        assert!(user.starts_with("TEST CONTEXT: answer {\"score\": [...], \"reasoning\": \"...\"}\nTEST TWO-IMAGE RULE\nTEST SC RULE\nEditing instruction: "), "{user:?}");
        let (es, oe) = match after("Editing instruction: ").as_str() {
            "Add a red hat to the cat." => (8, 6),
            "Add a bird to the sky." => (3, 7),
            "Turn the photo into a watercolor painting." => (10, 10),
            other => panic!("unexpected instruction {other:?}"),
        };
        format!("```json\n{{\n\"score\" : [{es}, {oe}],\n\"reasoning\" : \"fine\"\n}}\n```")
    } else if user.contains("TEST PQ RULE") {
        assert_eq!(
            user,
            "TEST CONTEXT: answer {\"score\": [...], \"reasoning\": \"...\"}\nTEST PQ RULE"
        );
        let (na, ar) = match edited {
            [200, 30, 30] => (9, 4),
            [30, 200, 30] => (3, 5),
            [30, 30, 200] => (4, 9),
            other => panic!("unexpected image {other:?}"),
        };
        format!("[{na}, {ar}]")
    } else if user.starts_with("TEST RUBRIC ") {
        let (c, n, i) = match after("Instruction: ").as_str() {
            "Add a red hat to the dog." => (5, 4, 3),
            "Make the dog wear sunglasses." => (2, 2, 5),
            "Remove the cup from the table." => return "No scores today.".into(),
            "Transfer the image into a watercolor style." => (1, 2, 3),
            other => panic!("unexpected instruction {other:?}"),
        };
        format!(
            "Brief reasoning: ok.\nPrompt Compliance: {c}\nVisual Seamlessness: {n}\nPhysical & Detail Fidelity: {i}"
        )
    } else {
        panic!("unexpected published prompt: {user:?}")
    }
}

// ---------------------------------------------------------------- the engine

fn workflow(base_url: &str) -> String {
    workflow_with(base_url, None)
}

/// With `prompts`: both evals read the benchmarks' own prompt files.
fn workflow_with(base_url: &str, prompts: Option<(&Path, &Path)>) -> String {
    let (gx, ix) = match prompts {
        Some((g, i)) => (
            format!(", prompts: \"{}\"", g.display()),
            format!(", prompts: \"{}\"", i.display()),
        ),
        None => (String::new(), String::new()),
    };
    let fx = fixtures();
    let g = fx.join("gedit");
    let i = fx.join("imgedit");
    let judge = format!(
        "{{kind: openai, base_url: \"{base_url}\", model: stub, extraction: generate, retry: {{max_attempts: 1}}}}"
    );
    format!(
        r#"name: bench-test
tasks:
  gedit:
    kind: bench-import
    params: {{format: gedit, path: "{gp}", masks: "{gm}"}}
  imgedit:
    kind: bench-import
    params: {{format: imgedit, path: "{ip}", masks: "{im}"}}
  gedit_eval:
    kind: eval
    inputs: {{data: gedit.data}}
    params: {{protocol: gedit, images: source, label: gedit, judge: {judge}{gx}}}
  imgedit_eval:
    kind: eval
    inputs: {{data: imgedit.data}}
    params: {{protocol: imgedit, images: source, label: imgedit, batch_size: 3, max_invalid_fraction: 0.5, judge: {judge}{ix}}}
"#,
        gp = g.display(),
        gm = g.join("masks").display(),
        ip = i.display(),
        im = i.join("masks").display(),
    )
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn records(report: &Path) -> Vec<Value> {
    std::fs::read_to_string(report.join("records.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn row<'a>(table: &'a Value, t: &str) -> &'a Value {
    table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["edit_type"] == t)
        .unwrap_or_else(|| panic!("no row {t}"))
}

fn close(v: &Value, want: f64) {
    let got = v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"));
    assert!((got - want).abs() < 1e-12, "got {got}, want {want}");
}

#[test]
fn eval_protocols_score_benchmarks_against_hand_computed_numbers() {
    let answer: Arc<Answerer> = Arc::new(answers);
    let (base_url, requests) = stub(answer);
    let tmp = tempfile::tempdir().unwrap();
    let r = run(&tmp.path().join("run"), &workflow(&base_url));
    // GEdit: 3 samples × (SC, PQ); ImgEdit: 4 samples × 1 (one attempt each).
    assert_eq!(requests.load(Ordering::SeqCst), 10);

    // ---- GEdit-Bench (VIEScore). Per sample (SC, PQ, O):
    // g-add-1: (min(8, 6), min(9, 4)) = (6, 4), O = √24; g-add-2: (3, 3), O = 3;
    // g-style-1: (10, 4), O = √40.
    let rep = r.output("gedit_eval", "report");
    let t = read_json(&rep.join("table.json"));
    assert_eq!(t["protocol"], "gedit");
    assert_eq!(
        t["prompts"],
        json!({"source": "builtin", "label": "builtin prompts: not comparable with published numbers"})
    );
    assert!(
        std::fs::read_to_string(rep.join("table.md"))
            .unwrap()
            .contains("**builtin prompts: not comparable with published numbers.**")
    );
    let add = row(&t, "subject-add");
    assert_eq!(add["n"], 2);
    close(&add["bench_sc"], 4.5);
    close(&add["bench_pq"], 3.5);
    let add_o = (24f64.sqrt() + 3.0) / 2.0;
    close(&add["bench_score"], add_o);
    close(&add["judge_overall"], (24f64.sqrt() / 10.0 + 0.3) / 2.0);
    // Additions get no masked PSNR/SSIM (paper §3.3: no fixed location), even g-add-1, which
    // has a mask (issue 15, fix 4).
    assert_eq!(add["psnr_db"], Value::Null);
    assert_eq!(add["ssim"], Value::Null);
    let style = row(&t, "style_change");
    close(&style["bench_sc"], 10.0);
    close(&style["bench_pq"], 4.0);
    close(&style["bench_score"], 40f64.sqrt());
    assert_eq!(style["psnr_db"], Value::Null);
    let all = &t["overall"];
    assert_eq!(all["n"], 3);
    assert_eq!(all["judge_invalid"], 0);
    // Unweighted over the 2 types, not over the 3 samples.
    close(&all["bench_score"], (add_o + 40f64.sqrt()) / 2.0);
    close(&all["bench_sc"], (4.5 + 10.0) / 2.0);
    close(&all["bench_pq"], (3.5 + 4.0) / 2.0);
    assert_eq!(
        all["psnr_db"],
        Value::Null,
        "no type with consistency metrics"
    );
    let recs = records(&rep);
    assert_eq!(recs.len(), 3);
    let g1 = &recs[0];
    assert_eq!(g1["key"], "g-add-1");
    assert_eq!(
        g1["bench"]["scores"],
        json!({"artifacts": 4.0, "editing_success": 8.0, "naturalness": 9.0, "overediting": 6.0})
    );
    close(&g1["bench"]["sc"], 6.0);
    close(&g1["bench"]["pq"], 4.0);
    close(&g1["bench"]["score"], 24f64.sqrt());
    close(&g1["judge_effect"], 0.6);
    close(&g1["judge_quality"], 0.4);
    assert_eq!(g1["ssim"], Value::Null, "an addition: no pixel metrics");
    assert_eq!(recs[1]["key"], "g-add-2");
    assert_eq!(recs[1]["ssim"], Value::Null, "no mask: no pixel metrics");
    assert!(rep.join("images/g-style-1.png").is_file());
    let md = std::fs::read_to_string(rep.join("table.md")).unwrap();
    assert!(
        md.starts_with("### gedit — GEdit-Bench (VIEScore)\n"),
        "{md}"
    );
    assert!(
        md.contains(&format!(
            "| subject-add | 2 | 4.500 | 3.500 | {:.3} | 0 | – | – |",
            add_o
        )),
        "{md}"
    );
    assert!(
        md.contains("| style_change | 1 | 10.000 | 4.000 | 6.325 | 0 | – | – |"),
        "{md}"
    );

    // ---- ImgEdit-Bench. Per sample the mean of three 1–5 scores:
    // 1 (add): (5+4+3)/3 = 4; 7 (add): (2+2+5)/3 = 3; 3 (style): 2; 2 (remove): 7 is out of
    // range, invalid.
    let rep = r.output("imgedit_eval", "report");
    let t = read_json(&rep.join("table.json"));
    assert_eq!(t["protocol"], "imgedit");
    let add = row(&t, "add");
    assert_eq!(add["n"], 2);
    close(&add["bench_score"], 3.5);
    close(&add["judge_overall"], (0.75 + 0.5) / 2.0);
    assert_eq!(add.get("bench_sc"), None);
    assert_eq!(add["psnr_db"], Value::Null, "an addition");
    let remove = row(&t, "remove");
    assert_eq!(remove["judge_invalid"], 1);
    assert_eq!(remove.get("bench_score"), None);
    assert_eq!(
        remove["psnr_db"],
        Value::Null,
        "its mask had the wrong size"
    );
    close(&row(&t, "style")["bench_score"], 2.0);
    let all = &t["overall"];
    assert_eq!(all["n"], 4);
    assert_eq!(all["judge_invalid"], 1);
    close(&all["bench_score"], (3.5 + 2.0) / 2.0);
    close(&all["judge_overall"], (0.625 + 0.25) / 2.0);
    let recs = records(&rep);
    let keys: Vec<&str> = recs.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys, vec!["1", "2", "3", "7"]);
    let err = recs[1]["judge_error"].as_str().unwrap();
    assert!(
        err.contains("`prompt_compliance` is 7, outside 1..=5"),
        "{err}"
    );
    assert_eq!(
        recs[0]["bench"]["scores"],
        json!({"physical_integrity": 3.0, "prompt_compliance": 5.0, "visual_naturalness": 4.0})
    );
    // Key 3's 24×16 image ran in a batch of its own size.
    let img = image::open(rep.join("images/3.png")).unwrap();
    assert_eq!((img.width(), img.height()), (24, 16));
    let md = std::fs::read_to_string(rep.join("table.md")).unwrap();
    assert!(md.contains("| add | 2 | 3.500 | 0 | – | – |"), "{md}");
    assert!(md.contains("| overall | 4 | 2.750 | 1 | – | – |"), "{md}");
}

/// `prompts: PATH`: the same hand-computed benchmark numbers when the judge is asked the
/// benchmarks' own prompt files and answers in the benchmarks' formats; the reports name the
/// file instead of the builtin label.
#[test]
fn eval_protocols_with_the_benchmarks_own_prompt_files() {
    let answer: Arc<Answerer> = Arc::new(answers);
    let (base_url, requests) = stub(answer);
    let tmp = tempfile::tempdir().unwrap();
    let (vie, json_file) = write_prompt_files(tmp.path());
    let prompts_dir = vie.parent().unwrap().parent().unwrap().to_path_buf();
    let r = run(
        &tmp.path().join("run"),
        &workflow_with(&base_url, Some((&prompts_dir, &json_file))),
    );
    assert_eq!(requests.load(Ordering::SeqCst), 10);
    let rep = r.output("gedit_eval", "report");
    let t = read_json(&rep.join("table.json"));
    assert_eq!(t["prompts"]["source"], "published");
    assert_eq!(t["prompts"]["file"], json!(vie.display().to_string()));
    assert!(t["prompts"].get("label").is_none());
    let add_o = (24f64.sqrt() + 3.0) / 2.0;
    let add = row(&t, "subject-add");
    close(&add["bench_sc"], 4.5);
    close(&add["bench_pq"], 3.5);
    close(&add["bench_score"], add_o);
    close(&t["overall"]["bench_score"], (add_o + 40f64.sqrt()) / 2.0);
    let g1 = &records(&rep)[0];
    assert_eq!(
        g1["bench"]["scores"],
        json!({"artifacts": 4.0, "editing_success": 8.0, "naturalness": 9.0, "overediting": 6.0})
    );
    let md = std::fs::read_to_string(rep.join("table.md")).unwrap();
    assert!(!md.contains("not comparable"), "{md}");
    assert!(md.contains("Prompts: the benchmark's own"), "{md}");

    let rep = r.output("imgedit_eval", "report");
    let t = read_json(&rep.join("table.json"));
    assert_eq!(
        t["prompts"]["edit_types"],
        json!(["add", "remove", "style"])
    );
    close(&row(&t, "add")["bench_score"], 3.5);
    close(&row(&t, "style")["bench_score"], 2.0);
    assert_eq!(row(&t, "remove")["judge_invalid"], 1);
    close(&t["overall"]["bench_score"], (3.5 + 2.0) / 2.0);
    let recs = records(&rep);
    assert_eq!(
        recs[0]["bench"]["scores"],
        json!({"Physical & Detail Fidelity": 3.0, "Prompt Compliance": 5.0, "Visual Seamlessness": 4.0})
    );
    let err = recs[1]["judge_error"].as_str().unwrap();
    assert!(err.contains("step1_get_avgscore.py"), "{err}");

    // A rubric file without the benchmark's `style` type: the task fails before editing,
    // naming the file, the type and the record.
    let partial = tmp.path().join("partial.json");
    std::fs::write(
        &partial,
        json!({"add": "A <edit_prompt>", "remove": "R <edit_prompt>"}).to_string(),
    )
    .unwrap();
    let yaml = workflow_with(&base_url, Some((&prompts_dir, &partial)));
    let rt = Arc::new(tokio::runtime::Runtime::new().unwrap());
    let r = crate::common::try_run(rt, &tmp.path().join("run2"), &yaml, &[]);
    assert_eq!(r.report.failed, 1, "{:?}", r.report);
    let log = r.attempt_log("imgedit_eval").unwrap();
    assert!(
        log.contains(&format!(
            "`prompts` `{}` has no rubric for edit type `style` (record `3`)",
            partial.display()
        )),
        "{log}"
    );
}
