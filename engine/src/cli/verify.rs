//! `cocoflow verify [RUN] [--repair]`: checks every result and blob a run references — the
//! result manifest is there and parses, each blob (outputs, tree files and listings, the
//! log, the kv listing) is there and hashes to its name — and with `--repair` removes the
//! broken results (and corrupt blobs) so the next run recomputes exactly those instances.

use super::commands::{Fail, journal_path, open_store, refuse_if_live};
use super::{EXIT_BROKEN, EXIT_OK};
use crate::state::{Journal, JournalError, RedbJournal};
use crate::store::{Artifact, BlobCheck, ResultManifest, RunSummary, Store, StoreError, Tree};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The run (default: the latest run of this state directory, or of `--store`).
    pub run_id: Option<String>,
    /// Remove broken results and corrupt blobs; the next run recomputes those instances.
    #[arg(long)]
    pub repair: bool,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// The store to check (default: the store of the run in this state directory's journal).
    #[arg(long)]
    pub store: Option<String>,
    /// Repair even while a run holds a live lease on the store.
    #[arg(long)]
    pub force: bool,
}

/// One thing wrong with a result.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub key: String,
    pub instance: String,
    /// `manifest`, `output`, `log` or `kv` (the listing of its key-value records).
    pub part: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The file inside a tree artifact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// `missing`, `corrupt`, `unreadable` or `wrong key`.
    pub problem: String,
    pub detail: String,
}

/// What was wrong with one artifact: (file in a tree, digest, problem, detail).
type Finding = (Option<String>, Option<String>, &'static str, String);

struct Checker<'a> {
    store: &'a Store,
    /// Each blob is hashed once, however many results name it.
    seen: HashMap<String, BlobCheck>,
}

impl Checker<'_> {
    async fn blob(&mut self, digest: &str) -> Result<BlobCheck, StoreError> {
        if let Some(c) = self.seen.get(digest) {
            return Ok(c.clone());
        }
        let c = self.store.check_blob(digest).await?;
        self.seen.insert(digest.to_string(), c.clone());
        Ok(c)
    }

    /// Checks one blob of `size` bytes; `None` when intact.
    async fn sized(
        &mut self,
        digest: &str,
        size: Option<u64>,
    ) -> Result<Option<(&'static str, String)>, StoreError> {
        Ok(match self.blob(digest).await? {
            BlobCheck::Missing => Some(("missing", "the blob is not in the store".into())),
            BlobCheck::Corrupt { actual, size: got } => Some((
                "corrupt",
                format!(
                    "{got} byte(s) that hash to {}{}",
                    &actual[..12.min(actual.len())],
                    size.map(|s| format!(", expected {s} byte(s)"))
                        .unwrap_or_default()
                ),
            )),
            BlobCheck::Intact { size: got } => match size {
                Some(s) if s != got => {
                    Some(("corrupt", format!("{got} byte(s), the manifest says {s}")))
                }
                _ => None,
            },
        })
    }

    async fn artifact(&mut self, a: &Artifact) -> Result<Vec<Finding>, StoreError> {
        let mut out = Vec::new();
        if a.inline.is_some() {
            if let Err(e) = self.store.read_artifact(a).await {
                out.push((None, Some(a.digest.clone()), "corrupt", e.to_string()));
            }
            return Ok(out);
        }
        let size = (!a.tree).then_some(a.size);
        if let Some((what, detail)) = self.sized(&a.digest, size).await? {
            let detail = if a.tree {
                format!("tree listing: {detail}")
            } else {
                detail
            };
            out.push((None, Some(a.digest.clone()), what, detail));
            return Ok(out);
        }
        if a.tree {
            let tree: Tree = match self.store.read_tree(&a.digest).await {
                Ok(t) => t,
                Err(e @ StoreError::Backend { .. }) => return Err(e),
                Err(e) => {
                    out.push((None, Some(a.digest.clone()), "unreadable", e.to_string()));
                    return Ok(out);
                }
            };
            for e in &tree.entries {
                if let Some((what, detail)) = self.sized(&e.digest, Some(e.size)).await? {
                    out.push((Some(e.path.clone()), Some(e.digest.clone()), what, detail));
                }
            }
        }
        Ok(out)
    }
}

/// The run to check: its summary, its store, and instance names by key where known.
async fn locate(
    state: &Path,
    args: &VerifyArgs,
) -> Result<(RunSummary, Store, HashMap<String, String>), Fail> {
    let mut names = HashMap::new();
    let (store, run_id) = match &args.store {
        Some(url) => (open_store(state, url)?, args.run_id.clone()),
        None => {
            let j = RedbJournal::open(&journal_path(state)).map_err(|e| match e {
                JournalError::Locked { .. } => Fail::env(
                    "a run is in progress in this state directory; verify after it ends (or pass `--store URL`)",
                ),
                e => e.into(),
            })?;
            let run = match &args.run_id {
                Some(id) => j
                    .run(id)?
                    .ok_or_else(|| Fail::usage(format!("no run `{id}` (see `cocoflow runs`)")))?,
                None => j
                    .runs()?
                    .pop()
                    .ok_or_else(|| Fail::usage("no runs yet in this state directory"))?,
            };
            for i in j.instances(&run.id)? {
                names.insert(i.key, i.name);
            }
            (open_store(state, &run.store)?, Some(run.id))
        }
    };
    let summary = match run_id {
        Some(id) => store
            .read_json_at::<RunSummary>(&format!("runs/{id}.json"), "run summary")
            .await?
            .ok_or_else(|| {
                Fail::usage(format!(
                    "run `{id}` has no summary in `{}` (did it finish?)",
                    store.url()
                ))
            })?,
        None => {
            let mut latest: Option<RunSummary> = None;
            for (loc, _) in store.list("runs").await? {
                if let Some(s) = store
                    .read_json_at::<RunSummary>(&loc, "run summary")
                    .await?
                    && latest.as_ref().is_none_or(|l| s.started_ms > l.started_ms)
                {
                    latest = Some(s);
                }
            }
            latest.ok_or_else(|| Fail::usage(format!("no run summaries in `{}`", store.url())))?
        }
    };
    Ok((summary, store, names))
}

pub async fn cmd_verify(state: &Path, args: VerifyArgs) -> Result<i32, Fail> {
    let (summary, store, mut names) = locate(state, &args).await?;
    if args.repair {
        refuse_if_live(&store, args.force, "`verify --repair`").await?;
    }
    let mut checker = Checker {
        store: &store,
        seen: HashMap::new(),
    };
    let mut problems: Vec<Problem> = Vec::new();
    let mut broken: BTreeSet<String> = BTreeSet::new();
    let mut keys: Vec<&String> = Vec::new();
    for k in &summary.results {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for key in &keys {
        let name = |names: &HashMap<String, String>| {
            names
                .get(*key)
                .cloned()
                .unwrap_or_else(|| format!("result {}", &key[..12.min(key.len())]))
        };
        let manifest_problem =
            |problem: &str, detail: String, names: &HashMap<String, String>| Problem {
                key: key.to_string(),
                instance: name(names),
                part: "manifest".into(),
                output: None,
                path: None,
                digest: None,
                problem: problem.into(),
                detail,
            };
        let m: ResultManifest = match store.read_result(key).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                problems.push(manifest_problem(
                    "missing",
                    "the result manifest is not in the store".into(),
                    &names,
                ));
                broken.insert(key.to_string());
                continue;
            }
            Err(StoreError::Malformed { source, .. }) => {
                problems.push(manifest_problem(
                    "unreadable",
                    format!("the result manifest does not parse: {source}"),
                    &names,
                ));
                broken.insert(key.to_string());
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        names.entry(key.to_string()).or_insert(m.name.clone());
        if m.key != **key {
            problems.push(manifest_problem(
                "wrong key",
                format!("the manifest names key `{}`", m.key),
                &names,
            ));
            broken.insert(key.to_string());
        }
        let mut parts: Vec<(&str, Option<&String>, &Artifact)> = m
            .outputs
            .iter()
            .map(|(o, a)| ("output", Some(o), a))
            .collect();
        parts.extend(m.log.iter().map(|a| ("log", None, a)));
        parts.extend(m.kv.iter().map(|a| ("kv", None, a)));
        for (part, output, a) in parts {
            for (path, digest, problem, detail) in checker.artifact(a).await? {
                problems.push(Problem {
                    key: key.to_string(),
                    instance: name(&names),
                    part: part.into(),
                    output: output.cloned(),
                    path,
                    digest,
                    problem: problem.into(),
                    detail,
                });
                broken.insert(key.to_string());
            }
        }
    }

    let corrupt: Vec<&String> = checker
        .seen
        .iter()
        .filter(|(_, c)| matches!(c, BlobCheck::Corrupt { .. }))
        .map(|(d, _)| d)
        .collect();
    let mut removed = (0, 0);
    if args.repair {
        // Results first: a manifest must never name a blob that is gone without being broken.
        for key in &broken {
            if store.has_result(key).await? {
                store.delete_result(key).await?;
                removed.0 += 1;
            }
        }
        for d in &corrupt {
            store.delete_blob(d).await?;
            removed.1 += 1;
        }
    }

    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "run": summary.run_id,
                "store": store.url(),
                "results": keys.len(),
                "blobs": checker.seen.len(),
                "broken": broken.len(),
                "problems": problems,
                "repaired": args.repair.then(|| serde_json::json!({"results": removed.0, "blobs": removed.1})),
            })
        );
    } else {
        println!(
            "verify run {} on {}: {} result(s), {} blob(s)",
            summary.run_id,
            store.url(),
            keys.len(),
            checker.seen.len()
        );
        for p in &problems {
            let mut what = match (&p.part[..], &p.output) {
                ("output", Some(o)) => format!("output `{o}`"),
                ("kv", _) => "kv listing".to_string(),
                (part, _) => part.to_string(),
            };
            if let Some(path) = &p.path {
                what.push_str(&format!(" file `{path}`"));
            }
            if let Some(d) = &p.digest {
                what.push_str(&format!(" blob {}", &d[..12.min(d.len())]));
            }
            println!("  {}  {what}: {} ({})", p.instance, p.problem, p.detail);
        }
        if problems.is_empty() {
            println!("all intact");
        } else if args.repair {
            println!(
                "{} problem(s) in {} result(s); removed {} result(s) and {} corrupt blob(s): the next `cocoflow run` recomputes those instances",
                problems.len(),
                broken.len(),
                removed.0,
                removed.1
            );
        } else {
            println!(
                "{} problem(s) in {} result(s); `cocoflow verify --repair` removes them so the next run recomputes those instances",
                problems.len(),
                broken.len()
            );
        }
    }
    Ok(if problems.is_empty() || args.repair {
        EXIT_OK
    } else {
        EXIT_BROKEN
    })
}
