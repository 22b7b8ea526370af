//! Store maintenance: `verify` finds a truncated blob, a deleted blob and a damaged manifest
//! (on `file://` and on S3 through moto), `--repair` removes exactly those results and the
//! next run recomputes only them; `gc` frees key-value records no kept result lists.

use super::common::Project;
use super::s3::start_moto;
use cocoflow_engine::kind::{ParamError, Registry, TaskCtx, TaskError, TaskKind, typed_params};
use cocoflow_engine::runner::{self, RunOptions};
use cocoflow_engine::spec;
use cocoflow_engine::state::RedbJournal;
use cocoflow_engine::store::{Store, pack};
use cocoflow_engine::ui::{Mode, Ui};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a test reads and damages store objects (paths relative to the store root).
trait Objects {
    fn get(&self, path: &str) -> Vec<u8>;
    fn put(&self, path: &str, bytes: &[u8]);
    fn delete(&self, path: &str);
    /// Paths of the objects under a prefix.
    fn list(&self, prefix: &str) -> Vec<String>;
}

/// The newest pack record of a result: (pack path, pack bytes, record).
fn packed(objects: &dyn Objects, key: &str) -> (String, Vec<u8>, pack::Record) {
    let mut found = None;
    for path in objects.list(pack::DIR) {
        let bytes = objects.get(&path);
        for r in pack::records(&bytes, 0).unwrap().0 {
            if r.key == key {
                found = Some((path.clone(), bytes.clone(), r));
            }
        }
    }
    found.unwrap_or_else(|| panic!("no pack record of {key}"))
}

struct Dir(std::path::PathBuf);

impl Objects for Dir {
    fn get(&self, path: &str) -> Vec<u8> {
        std::fs::read(self.0.join(path)).unwrap()
    }
    fn put(&self, path: &str, bytes: &[u8]) {
        std::fs::write(self.0.join(path), bytes).unwrap()
    }
    fn delete(&self, path: &str) {
        std::fs::remove_file(self.0.join(path)).unwrap()
    }
    fn list(&self, prefix: &str) -> Vec<String> {
        std::fs::read_dir(self.0.join(prefix))
            .unwrap()
            .map(|e| format!("{prefix}/{}", e.unwrap().file_name().to_string_lossy()))
            .collect()
    }
}

/// Objects under a prefix of a bucket on moto, through object_store.
struct Bucket {
    os: object_store::prefix::PrefixStore<object_store::aws::AmazonS3>,
    rt: tokio::runtime::Runtime,
}

impl Bucket {
    fn new(endpoint: &str, bucket: &str, prefix: &str) -> Bucket {
        let s3 = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .unwrap();
        Bucket {
            os: object_store::prefix::PrefixStore::new(s3, prefix),
            rt: tokio::runtime::Runtime::new().unwrap(),
        }
    }
}

impl Objects for Bucket {
    fn get(&self, path: &str) -> Vec<u8> {
        use object_store::ObjectStoreExt as _;
        self.rt.block_on(async {
            let r = self.os.get(&path.into()).await.unwrap();
            r.bytes().await.unwrap().to_vec()
        })
    }
    fn put(&self, path: &str, bytes: &[u8]) {
        use object_store::ObjectStoreExt as _;
        self.rt
            .block_on(self.os.put(&path.into(), bytes.to_vec().into()))
            .unwrap();
    }
    fn delete(&self, path: &str) {
        use object_store::ObjectStoreExt as _;
        self.rt.block_on(self.os.delete(&path.into())).unwrap();
    }
    fn list(&self, prefix: &str) -> Vec<String> {
        use futures::TryStreamExt as _;
        use object_store::ObjectStore as _;
        self.rt.block_on(async {
            self.os
                .list(Some(&prefix.into()))
                .map_ok(|m| m.location.to_string())
                .try_collect()
                .await
                .unwrap()
        })
    }
}

fn blob(digest: &str) -> String {
    format!("blobs/{}/{digest}", &digest[..2])
}

/// Runs the engine with extra environment variables.
fn run(p: &Project, env: &[(&str, String)], args: &[&str]) -> (i32, String, String) {
    let out = p
        .cmd(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Five instances (`a`, `c`: 3,000-byte files; `b`: a tree; `d`: a small inline output;
/// `e`: reads all four); damages `a` (truncated blob), `b` (a tree file deleted) and `c`
/// (garbage manifest); checks `verify`, `verify --repair`, and that the next run
/// recomputes exactly `a`, `b`, `c`.
fn verify_finds_and_repairs(store: &str, objects: &dyn Objects, env: &[(&str, String)]) {
    let p = Project::new();
    let log = p.path().join("exec.log");
    let log = log.display();
    p.write(
        "w.yaml",
        &format!(
            r#"
name: v
store: {store}
tasks:
  a: {{kind: shell, params: {{cmd: 'echo a >> "{log}"; head -c 3000 /dev/zero | tr "\0" a > o.bin', outputs: {{o: o.bin}}}}}}
  b: {{kind: shell, params: {{cmd: 'echo b >> "{log}"; mkdir d; head -c 3000 /dev/zero | tr "\0" b > d/x; echo y > d/y', outputs: {{d: d/}}}}}}
  c: {{kind: shell, params: {{cmd: 'echo c >> "{log}"; head -c 3000 /dev/zero | tr "\0" c > o.bin', outputs: {{o: o.bin}}}}}}
  d: {{kind: shell, params: {{cmd: 'echo d >> "{log}"; echo small > o.txt', outputs: {{o: o.txt}}}}}}
  e:
    kind: shell
    inputs: {{a: a.o, b: b.d, c: c.o, d: d.o}}
    params: {{cmd: 'echo e >> "{log}"; cat "$COCOFLOW_INPUT_A" "$COCOFLOW_INPUT_B/x" "$COCOFLOW_INPUT_C" "$COCOFLOW_INPUT_D" | wc -c > n.txt', outputs: {{n: n.txt}}}}
"#
        ),
    );
    let (code, _, err) = run(&p, env, &["run", "w.yaml"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&p, env, &["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.ends_with("all intact\n"), "{out}");

    let (_, out, err) = run(&p, env, &["plan", "w.yaml", "--json"]);
    let plan: Value = serde_json::from_str(&out).expect(&err);
    let key = |task: &str| -> String {
        plan["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["task"] == task)
            .unwrap()["key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let manifest = |task: &str| -> Value {
        let (_, bytes, r) = packed(objects, &key(task));
        serde_json::from_slice(&bytes[r.payload]).unwrap()
    };
    // a: truncated blob.
    let a_digest = manifest("a")["outputs"]["o"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    objects.put(&blob(&a_digest), &vec![b'a'; 100]);
    // b: a file of its tree deleted.
    let tree_digest = manifest("b")["outputs"]["d"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let tree: Value = serde_json::from_slice(&objects.get(&blob(&tree_digest))).unwrap();
    let x = tree["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "x")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    objects.delete(&blob(&x));
    // c: a manifest whose bytes are damaged.
    let (path, mut bytes, r) = packed(objects, &key("c"));
    bytes[r.payload.start + 1] ^= 0x20;
    objects.put(&path, &bytes);

    let (code, out, err) = run(&p, env, &["verify"]);
    assert_eq!(code, 1, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("verify run "), "{out}");
    assert!(lines[0].ends_with(": 5 result(s), 4 blob(s)"), "{out}");
    assert_eq!(
        lines[1],
        format!(
            "  a  output `o` blob {}: corrupt (100 byte(s) that hash to {}, expected 3000 byte(s))",
            &a_digest[..12],
            &blake3::hash(&[b'a'; 100]).to_hex()[..12]
        )
    );
    assert_eq!(
        lines[2],
        format!(
            "  b  output `d` file `x` blob {}: missing (the blob is not in the store)",
            &x[..12]
        )
    );
    assert!(
        lines[3].starts_with("  c  manifest: unreadable (the result manifest does not parse: "),
        "{out}"
    );
    assert_eq!(
        lines[4],
        "3 problem(s) in 3 result(s); `cocoflow verify --repair` removes them so the next run recomputes those instances"
    );
    let (code, out, _) = run(&p, env, &["verify", "--json"]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["broken"], 3);
    let problems: Vec<(String, String, String)> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["instance"].as_str().unwrap().into(),
                p["part"].as_str().unwrap().into(),
                p["problem"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        problems,
        [
            ("a".into(), "output".into(), "corrupt".into()),
            ("b".into(), "output".into(), "missing".into()),
            ("c".into(), "manifest".into(), "unreadable".into())
        ]
    );

    let (code, out, err) = run(&p, env, &["verify", "--repair"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.ends_with("3 problem(s) in 3 result(s); removed 3 result(s) and 1 corrupt blob(s): the next `cocoflow run` recomputes those instances\n"),
        "{out}"
    );
    let sorted = |text: &str| {
        let mut l: Vec<String> = text.lines().map(String::from).collect();
        l.sort();
        l
    };
    let before = std::fs::read_to_string(p.path().join("exec.log")).unwrap();
    assert_eq!(sorted(&before), ["a", "b", "c", "d", "e"]);
    let (code, out, err) = run(&p, env, &["run", "w.yaml", "--json"]);
    assert_eq!(code, 0, "{err}");
    let end: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let summary = &end["summary"];
    assert_eq!(
        (summary["succeeded"].as_u64(), summary["cached"].as_u64()),
        (Some(3), Some(2)),
        "{end}"
    );
    let after = std::fs::read_to_string(p.path().join("exec.log")).unwrap();
    assert_eq!(
        sorted(&after[before.len()..]),
        ["a", "b", "c"],
        "only the broken ones ran"
    );
    let (code, out, err) = run(&p, env, &["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.ends_with("all intact\n"), "{out}");
    assert_eq!(
        objects.get(&blob(&a_digest)),
        vec![b'a'; 3000],
        "blob rewritten"
    );
}

#[test]
fn verify_and_repair_on_a_file_store() {
    let p = Project::new();
    let store = p.path().join("store");
    verify_finds_and_repairs(&format!("file://{}", store.display()), &Dir(store), &[]);
}

#[test]
fn verify_and_repair_on_s3() {
    let Some(moto) = start_moto() else { return };
    let endpoint = moto.bucket("verify-test");
    let env = [
        ("AWS_ENDPOINT_URL", endpoint.clone()),
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
    ];
    verify_finds_and_repairs(
        "s3://verify-test/runs/v",
        &Bucket::new(&endpoint, "verify-test", "runs/v"),
        &env,
    );
}

#[test]
fn verify_errors_and_repair_refuses_a_live_run() {
    let p = Project::new();
    let (code, _, err) = p.run(&["verify"]);
    assert_eq!(code, 2);
    assert_eq!(err, "error: no runs yet in this state directory\n");
    p.write(
        "w.yaml",
        "name: v\ntasks:\n  a: {kind: noop, params: {payload: x}}\n",
    );
    assert_eq!(p.run(&["run", "w.yaml"]).0, 0);
    let (code, _, err) = p.run(&["verify", "nope"]);
    assert_eq!(code, 2);
    assert_eq!(err, "error: no run `nope` (see `cocoflow runs`)\n");
    p.write(
        ".cocoflow/store/leases/other.json",
        &format!(
            r#"{{"run_id": "other", "host": "h", "pid": 1, "heartbeat_ms": {}}}"#,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        ),
    );
    assert_eq!(
        p.run(&["verify"]).0,
        0,
        "checking is fine while a run is live"
    );
    let (code, _, err) = p.run(&["verify", "--repair"]);
    assert_eq!(code, 5);
    assert_eq!(
        err,
        "error: run `other` on `h` (pid 1) is live on this store; `verify --repair` could delete what it reads (`--force` to go ahead)\n"
    );
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShardParams {
    setting: String,
    shards: u32,
}

/// Like `curate`: one key-value record per shard, keyed by the setting; a record that is
/// there is read back instead of computed. Output `computed`: how many were computed.
struct Shards;

impl TaskKind for Shards {
    fn name(&self) -> &'static str {
        "shards"
    }
    fn version(&self) -> u32 {
        1
    }
    fn describe(&self) -> &'static str {
        "test kind"
    }
    fn check_params(&self, p: &Value) -> Result<Value, ParamError> {
        typed_params::<ShardParams>(p).map(|(_, v)| v)
    }
    fn outputs(&self, _: &Value) -> Vec<String> {
        vec!["computed".into()]
    }
    fn run(&self, ctx: &mut TaskCtx) -> Result<(), TaskError> {
        let p: ShardParams = ctx.params()?;
        let store = ctx.store().clone();
        let mut computed = 0;
        for i in 0..p.shards {
            let key = blake3::hash(format!("{}/{i}", p.setting).as_bytes())
                .to_hex()
                .to_string();
            let found = ctx.runtime().block_on(store.get_kv("test-shards", &key))?;
            if found.is_none() {
                ctx.runtime().block_on(store.put_kv(
                    "test-shards",
                    &key,
                    format!("shard {i}").into(),
                ))?;
                computed += 1;
            }
        }
        ctx.output_bytes("computed", computed.to_string().into_bytes())
    }
}

/// Runs `shards` with `setting` (and a `threshold` that, like curate's filter, is not part
/// of the shard keys) as run `run_id` on a `file://` store under `dir`.
fn shards_run(dir: &std::path::Path, run_id: &str, setting: &str, threshold: f64) -> String {
    let wf = dir.join(format!("{run_id}.yaml"));
    std::fs::write(
        &wf,
        format!(
            "name: shards\nstore: file://{}/store\ntasks:\n  s: {{kind: shards, params: {{setting: {setting}, shards: 3}}}}\n  f: {{kind: noop, inputs: {{s: s.computed}}, params: {{payload: 'threshold {threshold}'}}}}\n",
            dir.display()
        ),
    )
    .unwrap();
    let mut registry = Registry::with_builtins();
    registry.register(Shards);
    let w = spec::load(&wf, &[]).unwrap();
    let plan = cocoflow_engine::plan::build(&w, &registry, &[]).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = Store::open(&w.store, dir, &dir.join("cache")).unwrap();
    let mut journal = RedbJournal::open(&dir.join(format!("{run_id}.redb"))).unwrap();
    let opts = RunOptions {
        run_id: run_id.into(),
        workflow_path: wf.display().to_string(),
        overrides: vec![],
        targets: vec![],
        state_dir: dir.join("state"),
        base_dir: dir.to_path_buf(),
        gpus: Some(vec![]),
        cpus: Some(1),
        fail_fast: false,
        executor: "in-process".into(),
        grace: std::time::Duration::from_secs(1),
        self_exe: std::path::PathBuf::from("/nonexistent"),
        worker_exe: std::path::PathBuf::from("/nonexistent"),
        options_json: Value::Null,
    };
    let mut ui = Ui::new(Mode::Quiet);
    let report = rt
        .block_on(runner::run(
            plan.clone(),
            registry,
            store,
            &mut journal,
            opts,
            &mut ui,
        ))
        .unwrap();
    assert_eq!(report.failed, 0);
    plan.instances
        .iter()
        .find(|i| i.task == "s")
        .unwrap()
        .key
        .clone()
}

fn kv_records(dir: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir.join("store/kv/test-shards"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Run A (setting X) and run B (setting Y, then again with another threshold, which reuses
/// B's records) leave records S_X and S_Y; once run A's summary is gone, `gc` frees S_X
/// and keeps S_Y, which B's kept result lists; `--keep-caches` keeps both.
#[test]
fn gc_frees_key_value_records_no_kept_result_lists() {
    let p = Project::new();
    let dir = p.path();
    let key_a = shards_run(dir, "run-a", "x", 9.4);
    let key_b = shards_run(dir, "run-b", "y", 9.4);
    assert_eq!(
        shards_run(dir, "run-c", "y", 9.0),
        key_b,
        "the threshold is not in the shard key"
    );
    let results = |dir: &std::path::Path| pack::read_local(&dir.join("store"));
    let result_b: Value = serde_json::from_slice(&results(dir)[&key_b]).unwrap();
    assert!(result_b["kv"].is_object(), "{result_b}");
    let shard = |s: &str, i: u32| {
        blake3::hash(format!("{s}/{i}").as_bytes())
            .to_hex()
            .to_string()
    };
    let mut s_x: Vec<String> = (0..3).map(|i| shard("x", i)).collect();
    let mut s_y: Vec<String> = (0..3).map(|i| shard("y", i)).collect();
    s_x.sort();
    s_y.sort();
    let mut all = [s_x.clone(), s_y.clone()].concat();
    all.sort();
    assert_eq!(kv_records(dir), all);

    std::fs::remove_file(dir.join("store/runs/run-a.json")).unwrap();
    let store = format!("file://{}/store", dir.display());
    let gc = |extra: &[&str]| {
        let mut args = vec![
            "--state-dir",
            "gc-state",
            "gc",
            "--store",
            &store,
            "--grace",
            "0s",
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = p.run(&args);
        assert_eq!(code, 0, "{err}");
        out
    };
    let out = gc(&["--dry-run", "--keep-caches"]);
    assert!(out.contains(", 0 kv record(s); kept "), "{out}");
    let out = gc(&["--dry-run"]);
    // Run A's two results go (`s` and the `f` that read it), and with them S_X.
    assert!(out.contains("would remove 2 result(s)"), "{out}");
    assert!(out.contains(", 3 kv record(s); kept "), "{out}");
    assert_eq!(kv_records(dir), all, "a dry run removes nothing");
    let out = gc(&[]);
    assert!(out.contains(", 3 kv record(s); kept "), "{out}");
    assert!(out.contains(", 3 kv record(s) ("), "{out}");
    assert_eq!(kv_records(dir), s_y);
    assert!(!results(dir).contains_key(&key_a));
    // Setting X again computes its shards anew; Y still reads its records back.
    shards_run(dir, "run-d", "x", 9.4);
    let computed = |key: &str| -> Value {
        let m: Value = serde_json::from_slice(&results(dir)[key]).unwrap();
        m["outputs"]["computed"]["inline"].clone()
    };
    assert_eq!(computed(&key_a), serde_json::json!("Mw=="), "3 computed");
}
