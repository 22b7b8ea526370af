//! `cocoflow bench`: engine overhead figures (printed, never asserted).
//! - `noop`: N no-op in-process tasks as fan-out/fan-in and as a chain: tasks/s, peak RSS.
//! - `replan`: re-plan of a fully cached N-instance workflow: seconds.
//! - `shell`: N no-op `shell` tasks with the subprocess executor: tasks/s.
//! - `packing`: N independent tasks needing 1, 2 or 4 of 8 GPUs with known durations (`sleep`,
//!   priority = duration: longest first): makespan against its lower bound
//!   max(longest task, GPU-seconds / 8), and a check that no GPU id was held by two tasks at
//!   once (each task logs the ids it was given and when it ran). `--executor slurm` runs the
//!   same tasks as Slurm jobs (the ids are then the allocations'), `--executor slurm-steps` as
//!   job steps of one allocation (the steps' ids).

use super::*;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// `noop`, `replan`, `shell`, `packing` or `all` (all but `packing`).
    #[arg(default_value = "all")]
    pub which: String,
    /// `packing`: the executor that runs the tasks (`subprocess`, `slurm`, or `slurm-steps`: in
    /// an allocation of 8 GPUs that `salloc` makes unless the bench already runs in one).
    #[arg(long, default_value = "subprocess")]
    pub executor: String,
    /// `packing`: multiplies every task's duration (1.0: 1–6 s).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Task count (default 10000; 1000 for `shell`).
    #[arg(short)]
    pub n: Option<usize>,
    /// Keep the scratch directory.
    #[arg(long)]
    pub keep: bool,
}

/// Writes a workflow of `n` noop/shell tasks: `fan` (source → n mids → sink) or `chain`.
pub fn write_workflow(
    dir: &Path,
    shape: &str,
    kind: &str,
    n: usize,
    executor: &str,
) -> std::path::PathBuf {
    let mut y = format!(
        "name: bench-{shape}-{kind}-{n}\nstore: file://{}/store\ntasks:\n",
        dir.display()
    );
    let body = |i: usize| -> String {
        match kind {
            "shell" => format!(
                "    kind: shell\n    executor: {executor}\n    params: {{cmd: 'echo {i} > out.txt', outputs: {{out: out.txt}}}}\n    resources: {{cpus: 1}}\n"
            ),
            _ => format!(
                "    kind: noop\n    params: {{payload: '{i}'}}\n    resources: {{cpus: 0}}\n"
            ),
        }
    };
    match shape {
        "chain" => {
            for i in 0..n {
                let _ = write!(y, "  c{i}:\n{}", body(i));
                if i > 0 {
                    let _ = writeln!(y, "    inputs: {{prev: c{}.out}}", i - 1);
                }
            }
        }
        _ => {
            let _ = write!(y, "  source:\n{}", body(usize::MAX));
            for i in 0..n {
                let _ = write!(y, "  m{i}:\n{}    inputs: {{src: source.out}}\n", body(i));
            }
            let _ = write!(
                y,
                "  sink:\n{}    needs: [{}]\n",
                body(n + 1),
                (0..n)
                    .map(|i| format!("m{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let p = dir.join(format!("{shape}-{kind}-{n}.yaml"));
    std::fs::write(&p, y).expect("write bench workflow");
    p
}

/// Runs this binary on a workflow in a child process; returns (seconds, exit code, the
/// child's own peak RSS in MiB, from `wait4`).
fn run_child(exe: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (f64, i32, f64) {
    run_child_in(&[], exe, dir, args, env)
}

/// [`run_child`] through a launcher (`prefix`: a program and its arguments, e.g. `salloc ...`).
#[allow(clippy::zombie_processes)] // reaped by `wait4` below
fn run_child_in(
    prefix: &[&str],
    exe: &Path,
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (f64, i32, f64) {
    let t = Instant::now();
    let mut cmd = match prefix.split_first() {
        Some((program, rest)) => {
            let mut c = std::process::Command::new(program);
            c.args(rest).arg(exe);
            c
        }
        None => std::process::Command::new(exe),
    };
    let child = cmd
        .envs(env.iter().copied())
        .args(["--state-dir", &dir.join("state").display().to_string()])
        .args(args)
        .args(if args.first() == Some(&"run") {
            &["--quiet"][..]
        } else {
            &[][..]
        })
        .stdout(std::process::Stdio::null())
        .current_dir(dir)
        .spawn()
        .expect("run benchmark child");
    let mut status = 0;
    // SAFETY: waits for our own child and fills plain structs; the `Child` is not waited on
    // again (dropping it does not wait).
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    let r = loop {
        let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut u) };
        if r >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break r;
        }
    };
    let secs = t.elapsed().as_secs_f64();
    let code = if r > 0 && libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (secs, code, u.ru_maxrss as f64 / 1024.0)
}

/// Times of one workflow run fresh (state and store removed first): one warm-up run, then
/// [`REPS`] timed ones.
struct Reps {
    median: f64,
    min: f64,
    max: f64,
    /// The highest peak RSS of the runs, MiB.
    rss: f64,
    /// The first non-zero exit code, else 0.
    code: i32,
}

const REPS: usize = 3;

fn reps(exe: &Path, d: &Path, wf: &Path, env: &[(&str, &str)]) -> Reps {
    let mut times = Vec::new();
    let (mut rss, mut code) = (0.0, 0);
    for i in 0..=REPS {
        let _ = std::fs::remove_dir_all(d.join("state"));
        let _ = std::fs::remove_dir_all(d.join("store"));
        let (secs, c, r) = run_child(exe, d, &["run", &wf.display().to_string()], env);
        if code == 0 {
            code = c;
        }
        rss = f64::max(rss, r);
        if i > 0 {
            times.push(secs);
        }
    }
    times.sort_by(f64::total_cmp);
    Reps {
        median: times[times.len() / 2],
        min: times[0],
        max: times[times.len() - 1],
        rss,
        code,
    }
}

/// Floor for the file store: write `n` small files as temp + rename (what publishing one
/// result manifest costs the filesystem), on 2 threads. Returns files per second.
fn file_floor(dir: &Path, n: usize) -> f64 {
    let d = dir.join("floor-files");
    std::fs::create_dir_all(&d).expect("scratch");
    let t = Instant::now();
    std::thread::scope(|s| {
        for w in 0..2 {
            let d = &d;
            s.spawn(move || {
                for i in (w..n).step_by(2) {
                    let tmp = d.join(format!(".t{i}"));
                    std::fs::write(&tmp, format!("{{\"i\":{i}}}")).expect("write");
                    std::fs::rename(&tmp, d.join(format!("{i}.json"))).expect("rename");
                }
            });
        }
    });
    n as f64 / t.elapsed().as_secs_f64()
}

/// Floor for shell tasks: `sh -c 'echo i > f'` run `n` times on 2 threads, nothing else.
fn shell_floor(dir: &Path, n: usize) -> f64 {
    let d = dir.join("floor-shell");
    std::fs::create_dir_all(&d).expect("scratch");
    let t = Instant::now();
    std::thread::scope(|s| {
        for w in 0..2 {
            let d = &d;
            s.spawn(move || {
                for i in (w..n).step_by(2) {
                    std::process::Command::new("sh")
                        .arg("-c")
                        .arg(format!("echo {i} > out{i}.txt"))
                        .current_dir(d)
                        .status()
                        .expect("sh");
                }
            });
        }
    });
    n as f64 / t.elapsed().as_secs_f64()
}

pub async fn run(args: BenchArgs, _registry: Registry) -> Result<i32, super::commands::Fail> {
    let exe = std::env::current_exe().expect("own path");
    let scratch = tempfile_dir();
    let which = args.which.as_str();
    println!(
        "cocoflow bench (scratch: {}; each figure is a fresh `cocoflow run` in a child process; no-op figures: median of {REPS} after a warm-up run)",
        scratch.display()
    );
    if matches!(which, "noop" | "all") {
        let n = args.n.unwrap_or(10_000);
        for shape in ["fan", "chain"] {
            let d = scratch.join(format!("noop-{shape}"));
            std::fs::create_dir_all(&d).expect("scratch");
            let wf = write_workflow(&d, shape, "noop", n, "in-process");
            let tasks = if shape == "fan" { n + 2 } else { n };
            let rate = |s: f64| tasks as f64 / s;
            let r = reps(&exe, &d, &wf, &[]);
            let floor = file_floor(&d, tasks);
            println!(
                "noop {shape:<5} n={tasks:>6}: {:7.3} s  {:>9.0} tasks/s  (reps {:.0}–{:.0} tasks/s)  peak RSS {:6.1} MiB  (exit {}; goal ≥ 20000 tasks/s, ≤ 200 MB)\n    baseline, same disk: {floor:.0} small files/s published (temp + rename, 2 threads) → cocoflow runs {:.2} tasks per file-publish time",
                r.median,
                rate(r.median),
                rate(r.max),
                rate(r.min),
                r.rss,
                r.code,
                rate(r.median) / floor
            );
            let p = reps(&exe, &d, &wf, &[("COCOFLOW_INPROCESS_INLINE", "0")]);
            println!(
                "noop {shape:<5} n={tasks:>6}: {:7.3} s  {:>9.0} tasks/s  (reps {:.0}–{:.0})  every task through the thread pool (COCOFLOW_INPROCESS_INLINE=0; exit {})",
                p.median,
                rate(p.median),
                rate(p.max),
                rate(p.min),
                p.code
            );
            if shape == "fan" {
                let mem = d.join("fan-memory.yaml");
                let text = std::fs::read_to_string(&wf).expect("workflow").replacen(
                    &format!("store: file://{}/store", d.display()),
                    "store: memory://",
                    1,
                );
                std::fs::write(&mem, text).expect("write");
                let m = reps(&exe, &d, &mem, &[]);
                println!(
                    "noop fan   n={tasks:>6}: {:7.3} s  {:>9.0} tasks/s  (reps {:.0}–{:.0})  with the memory:// store (engine overhead without the disk; exit {})",
                    m.median,
                    rate(m.median),
                    rate(m.max),
                    rate(m.min),
                    m.code
                );
                run_child(&exe, &d, &["run", &wf.display().to_string()], &[]);
                let (secs, code, _) = run_child(&exe, &d, &["run", &wf.display().to_string()], &[]);
                println!(
                    "replan fan   n={tasks:>6}: {secs:7.3} s  fully cached re-run (exit {code}; goal ≤ 0.5 s)"
                );
                let (secs, code, _) =
                    run_child(&exe, &d, &["plan", &wf.display().to_string()], &[]);
                println!(
                    "plan   fan   n={tasks:>6}: {secs:7.3} s  `cocoflow plan` of the cached workflow (exit {code})"
                );
            }
        }
    } else if which == "replan" {
        let n = args.n.unwrap_or(10_000);
        let d = scratch.join("replan");
        std::fs::create_dir_all(&d).expect("scratch");
        let wf = write_workflow(&d, "fan", "noop", n, "in-process");
        run_child(&exe, &d, &["run", &wf.display().to_string()], &[]);
        let (secs, code, _) = run_child(&exe, &d, &["run", &wf.display().to_string()], &[]);
        println!(
            "replan fan n={}: {secs:.3} s fully cached re-run (exit {code}; goal ≤ 0.5 s)",
            n + 2
        );
    }
    if matches!(which, "shell" | "all") {
        let n = args.n.filter(|_| which == "shell").unwrap_or(1000);
        let d = scratch.join("shell");
        std::fs::create_dir_all(&d).expect("scratch");
        let wf = write_workflow(&d, "fan", "shell", n, "subprocess");
        let (secs, code, _) = run_child(&exe, &d, &["run", &wf.display().to_string()], &[]);
        let floor = shell_floor(&d, n + 2);
        println!(
            "shell fan (subprocess executor) n={}: {secs:7.2} s  {:>7.1} tasks/s (exit {code})\n    baseline: bare `sh -c 'echo i > f'` on 2 threads {floor:.1} commands/s → cocoflow at {:.2}× that floor",
            n + 2,
            (n + 2) as f64 / secs,
            ((n + 2) as f64 / secs) / floor
        );
    }
    if which == "packing" {
        let n = args.n.unwrap_or(48);
        let d = scratch.join("packing");
        std::fs::create_dir_all(&d).expect("scratch");
        packing(&exe, &d, n, &args.executor, args.scale);
    }
    if !args.keep {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    Ok(EXIT_OK)
}

/// The packing task set: `(gpus, seconds)` of `n` tasks, from a fixed seed (1, 2 or 4 GPUs in
/// proportions 1:1:1 by task count, 1–6 s before `scale`).
pub fn packing_tasks(n: usize, scale: f64) -> Vec<(u32, f64)> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // splitmix64
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..n)
        .map(|i| {
            let gpus = [1, 2, 4][i % 3];
            let tenths = 10 + next() % 51; // 1.0–6.0 s
            (gpus, tenths as f64 / 10.0 * scale)
        })
        .collect()
}

fn packing(exe: &Path, d: &Path, n: usize, executor: &str, scale: f64) {
    let tasks = packing_tasks(n, scale);
    let log = d.join("gpus.log");
    let mut y = format!(
        "name: bench-packing-{n}\nstore: file://{}/store\nslurm: {{poll: 200ms}}\ntasks:\n",
        d.display()
    );
    for (i, (g, secs)) in tasks.iter().enumerate() {
        let _ = write!(
            y,
            "  t{i}:\n    kind: shell\n    priority: {}\n    resources: {{gpus: {g}, cpus: 0}}\n    params: {{cmd: 'a=$(date +%s.%N); sleep {secs:.2}; echo \"t{i} $CUDA_VISIBLE_DEVICES $a $(date +%s.%N)\" >> {}; echo {i} > out.txt', outputs: {{out: out.txt}}}}\n",
            (secs * 1000.0) as i64,
            log.display()
        );
    }
    let wf = d.join("packing.yaml");
    std::fs::write(&wf, y).expect("write bench workflow");
    let longest = tasks.iter().map(|t| t.1).fold(0.0, f64::max);
    let gpu_secs: f64 = tasks.iter().map(|t| t.0 as f64 * t.1).sum();
    let bound = longest.max(gpu_secs / 8.0);
    // The engine places the tasks on 8 GPU ids (through Slurm: it asks for at most 8 GPUs at
    // once, and Slurm picks the devices).
    let ids = "0,1,2,3,4,5,6,7";
    // `slurm-steps` runs inside an allocation: the whole node's 8 GPUs, unless the bench itself
    // runs in one already.
    let alloc: &[&str] = if executor == "slurm-steps" && std::env::var_os("SLURM_JOB_ID").is_none()
    {
        &[
            "salloc",
            "--quiet",
            "-N1",
            "--gres=gpu:8",
            "--cpus-per-task=8",
        ]
    } else {
        &[]
    };
    let (secs, code, _) = run_child_in(
        alloc,
        exe,
        d,
        &[
            "run",
            &wf.display().to_string(),
            "--gpus",
            ids,
            "--executor",
            executor,
        ],
        &[],
    );
    // From the tasks' own log: the span from the first start to the last end, and every
    // pair of tasks that ran at the same time on a common GPU id.
    let rows: Vec<(String, Vec<u32>, f64, f64)> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let ids = f
                .get(1)?
                .split(',')
                .filter_map(|s| s.parse().ok())
                .collect();
            Some((
                f[0].to_string(),
                ids,
                f.get(2)?.parse().ok()?,
                f.get(3)?.parse().ok()?,
            ))
        })
        .collect();
    let first = rows.iter().map(|r| r.2).fold(f64::INFINITY, f64::min);
    let last = rows.iter().map(|r| r.3).fold(0.0, f64::max);
    let mut clashes = 0;
    for (i, a) in rows.iter().enumerate() {
        for b in &rows[i + 1..] {
            if a.2 < b.3 && b.2 < a.3 && a.1.iter().any(|g| b.1.contains(g)) {
                clashes += 1;
            }
        }
    }
    let by = |g: u32| tasks.iter().filter(|t| t.0 == g).count();
    println!(
        "packing ({executor}) n={n} ({} × 1 GPU, {} × 2, {} × 4; {gpu_secs:.1} GPU-s, longest {longest:.1} s) on 8 GPUs:\n    lower bound max(longest, GPU-s/8) = {bound:.2} s; makespan: {secs:.2} s whole run ({:.3}× the bound), {:.2} s first start → last end ({:.3}×; goal ≤ 1.05×)\n    {} tasks logged, {clashes} pairs ran at the same time on a common GPU id (goal 0); exit {code}",
        by(1),
        by(2),
        by(4),
        secs / bound,
        last - first,
        (last - first) / bound,
        rows.len()
    );
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("cocoflow-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}
