//! The studies API ([`crate::study`]): the list, an annotator's next sample (blind: slots
//! `A`, `B`, … in the annotator's order, never the method names), the one write (an
//! answer), results, exports and the study's images.

use super::{Ctx, Resp, error, file, full, json};
use crate::study::{self, StudyDef};
use cocoflow_engine::store::Store;
use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper::body::Incoming;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The value, or return the error response.
macro_rules! or_reply {
    ($e:expr) => {
        match $e {
            Ok(x) => x,
            Err(r) => return r,
        }
    };
}

fn internal(e: impl std::fmt::Display) -> Resp {
    error(StatusCode::INTERNAL_SERVER_ERROR, e)
}

fn slot(i: usize) -> String {
    char::from(b'A' + i.min(25) as u8).to_string()
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The stores to look for studies in: `--store`, else every store a run used (newest first).
async fn stores(ctx: &Arc<Ctx>) -> Vec<Store> {
    let urls: Vec<String> = match &ctx.store_url {
        Some(u) => vec![u.clone()],
        None => {
            // (cheap: the journal is read again only when it changed)
            let c = ctx.clone();
            let rows = tokio::task::spawn_blocking(move || super::runs::read_runs(&c))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let mut urls: Vec<String> = Vec::new();
            for r in rows {
                if !urls.contains(&r.store) {
                    urls.push(r.store);
                }
            }
            urls
        }
    };
    urls.iter().filter_map(|u| ctx.store(u).ok()).collect()
}

async fn find(ctx: &Arc<Ctx>, name: &str) -> Result<(Store, StudyDef), Resp> {
    if let Err(e) = study::check_name("study name", name) {
        return Err(error(StatusCode::BAD_REQUEST, e));
    }
    for s in stores(ctx).await {
        match study::load_def(&s, name).await {
            Ok(Some(d)) => return Ok((s, d)),
            Ok(None) => {}
            Err(e) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, e)),
        }
    }
    let searched: Vec<String> = stores(ctx)
        .await
        .iter()
        .map(|s| s.url().to_string())
        .collect();
    Err(error(
        StatusCode::NOT_FOUND,
        format!(
            "no study `{name}` in {} (studies live in the store they were made in; `cocoflow ui --store URL` names one)",
            if searched.is_empty() {
                "any store (no runs yet)".to_string()
            } else {
                searched.join(", ")
            }
        ),
    ))
}

pub async fn list(ctx: &Arc<Ctx>) -> Resp {
    let mut out = Vec::new();
    for s in stores(ctx).await {
        let defs = or_reply!(study::list(&s).await.map_err(internal));
        for d in defs {
            let (recs, damaged) = study::answers(&s, &d).await.unwrap_or_default();
            let mut per: BTreeMap<String, usize> = BTreeMap::new();
            for r in &recs {
                *per.entry(r.annotator.clone()).or_default() += 1;
            }
            out.push(json!({
                "name": d.name, "store": s.url(), "methods": d.method_labels(), "samples": d.samples.len(),
                "answers": recs.len(), "annotators": per, "damaged": damaged.len(),
            }));
        }
    }
    json(StatusCode::OK, &json!({"studies": out}))
}

fn annotator_of(q: &HashMap<String, String>) -> Result<String, Resp> {
    let a = q.get("annotator").cloned().unwrap_or_default();
    study::check_name("annotator name", &a).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    Ok(a)
}

/// The annotator's next unanswered sample (or `sample=` to revisit one), blind.
pub async fn next(ctx: &Arc<Ctx>, name: &str, q: &HashMap<String, String>) -> Resp {
    let annotator = or_reply!(annotator_of(q));
    let (store, def) = or_reply!(find(ctx, name).await);
    let (recs, _) = or_reply!(study::answers(&store, &def).await.map_err(internal));
    let mine: BTreeMap<&str, &study::AnswerRecord> = recs
        .iter()
        .filter(|r| r.annotator == annotator)
        .map(|r| (r.sample.as_str(), r))
        .collect();
    let pick = match q.get("sample") {
        Some(k) => match def.samples.iter().position(|s| &s.key == k) {
            Some(i) => Some(i),
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("study `{name}` has no sample `{k}`"),
                );
            }
        },
        None => def
            .samples
            .iter()
            .position(|s| !mine.contains_key(s.key.as_str())),
    };
    let done = def
        .samples
        .iter()
        .filter(|s| mine.contains_key(s.key.as_str()))
        .count();
    let base = format!("/api/studies/{}/image/", def.name);
    let sample = pick.map(|i| {
        let s = &def.samples[i];
        let (order, seed) = study::display_order(&def, &annotator, &s.key);
        // Slot images by slot (resolved on the server): no URL says which method it is.
        let slots: Vec<_> = (0..order.len())
            .map(|j| {
                json!({"slot": slot(j), "image": format!(
                    "/api/studies/{}/slot/{}/{}?annotator={}",
                    def.name, enc(&s.key), slot(j), enc(&annotator)
                )})
            })
            .collect();
        // A revisited sample shows the ranks given before, by slot.
        let previous = mine.get(s.key.as_str()).map(|r| {
            let by_slot: BTreeMap<&String, BTreeMap<String, f64>> = r
                .ranks
                .iter()
                .map(|(c, ranks)| {
                    (c, order.iter().enumerate().filter_map(|(j, m)| Some((slot(j), *ranks.get(m)?))).collect())
                })
                .collect();
            by_slot
        });
        json!({
            "key": s.key, "index": i, "instruction": s.instruction, "edit_type": s.edit_type,
            "source": format!("{base}{}", s.source), "slots": slots, "order_seed": seed.to_string(), "previous": previous,
        })
    });
    json(
        StatusCode::OK,
        &json!({
            "study": def.name, "annotator": annotator, "criteria": def.criteria, "done": done,
            "total": def.samples.len(), "complete": done == def.samples.len(), "sample": sample,
            "samples": def.samples.iter().map(|s| json!({"key": s.key, "done": mine.contains_key(s.key.as_str())})).collect::<Vec<_>>(),
        }),
    )
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Posted {
    annotator: String,
    sample: String,
    /// criterion → slot → rank.
    ranks: BTreeMap<String, BTreeMap<String, f64>>,
    /// The order seed of the page the annotator answered (checked: the slots must mean the
    /// methods they showed).
    order_seed: String,
}

pub async fn post_answer(ctx: &Arc<Ctx>, name: &str, req: hyper::Request<Incoming>) -> Resp {
    let ctype = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype.starts_with("application/json") {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "answers are JSON (content-type: application/json)",
        );
    }
    if let Some(origin) = req.headers().get("origin").and_then(|v| v.to_str().ok()) {
        let host = req
            .headers()
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if origin != format!("http://{host}") {
            return error(
                StatusCode::FORBIDDEN,
                format!("a page from `{origin}` may not answer"),
            );
        }
    }
    let body = match http_body_util::Limited::new(req.into_body(), 64 << 10)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("cannot read the answer: {e}"),
            );
        }
    };
    let p: Posted = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed answer: {e}")),
    };
    if let Err(e) = study::check_name("annotator name", &p.annotator) {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let (store, def) = or_reply!(find(ctx, name).await);
    if def.sample(&p.sample).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("study `{name}` has no sample `{}`", p.sample),
        );
    }
    // Slots back to methods, in the order this annotator saw them.
    let (order, seed) = study::display_order(&def, &p.annotator, &p.sample);
    if p.order_seed != seed.to_string() {
        return error(
            StatusCode::CONFLICT,
            "the order of the methods changed since this page was shown; reload the page and answer again",
        );
    }
    let slots: Vec<String> = (0..order.len()).map(slot).collect();
    let mut ranks = BTreeMap::new();
    for (criterion, by_slot) in &p.ranks {
        let mut m = BTreeMap::new();
        for (s, r) in by_slot {
            let Some(j) = slots.iter().position(|x| x == s) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("`{criterion}`: no slot `{s}` (slots: {})", slots.join(", ")),
                );
            };
            m.insert(order[j].clone(), *r);
        }
        for s in &slots {
            if !by_slot.contains_key(s) {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("`{criterion}`: slot `{s}` has no rank"),
                );
            }
        }
        ranks.insert(criterion.clone(), m);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    match study::submit(&store, &def, &p.annotator, &p.sample, ranks, now).await {
        Ok(loc) => json(StatusCode::OK, &json!({"ok": true, "record": loc})),
        Err(study::StudyError::Invalid(m)) => error(StatusCode::BAD_REQUEST, m),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

pub async fn results(ctx: &Arc<Ctx>, name: &str) -> Resp {
    let (store, def) = or_reply!(find(ctx, name).await);
    let (recs, damaged) = or_reply!(study::answers(&store, &def).await.map_err(internal));
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for r in &recs {
        *per.entry(r.annotator.clone()).or_default() += 1;
    }
    let methods: Vec<_> = def
        .methods
        .iter()
        .map(|m| json!({"label": m.label, "run": m.run, "instance": m.instance}))
        .collect();
    let (d2, r2) = (def.clone(), recs.clone());
    let summary = or_reply!(
        tokio::task::spawn_blocking(move || study::summarize(&d2, &r2))
            .await
            .map_err(internal)
    );
    json(
        StatusCode::OK,
        &json!({
            "study": def.name, "methods": methods, "criteria": def.criteria, "samples": def.samples.len(),
            "annotators": per, "damaged": damaged, "summary": summary,
        }),
    )
}

pub async fn export(ctx: &Arc<Ctx>, name: &str, format: &str) -> Resp {
    let (store, def) = or_reply!(find(ctx, name).await);
    let (recs, _) = or_reply!(study::answers(&store, &def).await.map_err(internal));
    let (ctype, body, ext) = if format == "csv" {
        (
            "text/csv; charset=utf-8",
            study::export_csv(&def, &recs).into_bytes(),
            "csv",
        )
    } else {
        let (d2, r2) = (def.clone(), recs.clone());
        let v = or_reply!(
            tokio::task::spawn_blocking(move || study::export_json_blind(&d2, &r2))
                .await
                .map_err(internal)
        );
        (
            "application/json",
            serde_json::to_vec_pretty(&v).expect("serialises"),
            "json",
        )
    };
    let mut r = full(StatusCode::OK, ctype, body);
    r.headers_mut().insert(
        "content-disposition",
        format!("attachment; filename=\"study-{}.{ext}\"", def.name)
            .parse()
            .expect("header"),
    );
    r
}

pub async fn image(ctx: &Arc<Ctx>, name: &str, digest: &str) -> Resp {
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return error(StatusCode::BAD_REQUEST, "an image is named by its digest");
    }
    let (store, def) = or_reply!(find(ctx, name).await);
    // Only source images by digest; edits go through their slot.
    if !def.is_source(digest) {
        return error(
            StatusCode::NOT_FOUND,
            format!("study `{name}` has no image `{digest}`"),
        );
    }
    match store
        .get_object(&study::image_location(&def.name, digest))
        .await
    {
        Ok(Some(b)) => file("image.png", b),
        Ok(None) => error(StatusCode::NOT_FOUND, "the image is missing from the store"),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// The image an annotator sees in a slot (resolved here from the annotator's order).
pub async fn slot_image(
    ctx: &Arc<Ctx>,
    name: &str,
    sample: &str,
    which: &str,
    q: &HashMap<String, String>,
) -> Resp {
    let annotator = or_reply!(annotator_of(q));
    let (store, def) = or_reply!(find(ctx, name).await);
    let Some(s) = def.sample(sample) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("study `{name}` has no sample `{sample}`"),
        );
    };
    let (order, _) = study::display_order(&def, &annotator, sample);
    let Some(j) = (0..order.len()).find(|&j| slot(j) == which) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("study `{name}` has no slot `{which}`"),
        );
    };
    let digest = &s.edits[&order[j]];
    match store
        .get_object(&study::image_location(&def.name, digest))
        .await
    {
        Ok(Some(b)) => file("image.png", b),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!(
                "image `{}` is missing from `{}`",
                study::image_location(&def.name, digest),
                store.url()
            ),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
