//! `cocoflow bench`: engine overhead figures (printed, never asserted).
//! - `noop`: N no-op in-process tasks as fan-out/fan-in and as a chain: tasks/s, peak RSS.
//! - `replan`: re-plan of a fully cached N-instance workflow: seconds.
//! - `shell`: N no-op `shell` tasks with the subprocess executor: tasks/s.

use super::*;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// `noop`, `replan`, `shell` or `all`.
    #[arg(default_value = "all")]
    pub which: String,
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

fn peak_rss_mib_of_children() -> f64 {
    // SAFETY: getrusage fills a plain struct.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    u.ru_maxrss as f64 / 1024.0
}

/// Runs this binary on a workflow in a child process; returns (seconds, exit code, peak RSS MiB of children so far).
fn run_child(exe: &Path, dir: &Path, args: &[&str]) -> (f64, i32, f64) {
    let t = Instant::now();
    let st = std::process::Command::new(exe)
        .args(["--state-dir", &dir.join("state").display().to_string()])
        .args(args)
        .args(if args.first() == Some(&"run") {
            &["--quiet"][..]
        } else {
            &[][..]
        })
        .stdout(std::process::Stdio::null())
        .current_dir(dir)
        .status()
        .expect("run benchmark child");
    (
        t.elapsed().as_secs_f64(),
        st.code().unwrap_or(-1),
        peak_rss_mib_of_children(),
    )
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
        "cocoflow bench (scratch: {}; each figure is one fresh `cocoflow run` in a child process)",
        scratch.display()
    );
    if matches!(which, "noop" | "all") {
        let n = args.n.unwrap_or(10_000);
        for shape in ["fan", "chain"] {
            let d = scratch.join(format!("noop-{shape}"));
            std::fs::create_dir_all(&d).expect("scratch");
            let wf = write_workflow(&d, shape, "noop", n, "in-process");
            let tasks = if shape == "fan" { n + 2 } else { n };
            let (secs, code, rss) = run_child(&exe, &d, &["run", &wf.display().to_string()]);
            let floor = file_floor(&d, tasks);
            println!(
                "noop {shape:<5} n={tasks:>6}: {secs:7.2} s  {:>9.0} tasks/s  peak RSS {rss:6.1} MiB  (exit {code}; goal ≥ 20000 tasks/s, ≤ 200 MB)\n    baseline, same disk: {floor:.0} small files/s published (temp + rename, 2 threads) → cocoflow runs {:.2} tasks per file-publish time",
                tasks as f64 / secs,
                (tasks as f64 / secs) / floor
            );
            if shape == "fan" {
                let mem = d.join("fan-memory.yaml");
                let text = std::fs::read_to_string(&wf).expect("workflow").replacen(
                    &format!("store: file://{}/store", d.display()),
                    "store: memory://",
                    1,
                );
                std::fs::write(&mem, text).expect("write");
                let (msecs, mcode, _) = run_child(&exe, &d, &["run", &mem.display().to_string()]);
                println!(
                    "noop fan   n={tasks:>6}: {msecs:7.2} s  {:>9.0} tasks/s  with the memory:// store (engine overhead without the disk; exit {mcode})",
                    tasks as f64 / msecs
                );
                let (secs, code, _) = run_child(&exe, &d, &["run", &wf.display().to_string()]);
                println!(
                    "replan fan   n={tasks:>6}: {secs:7.3} s  fully cached re-run (exit {code}; goal ≤ 0.5 s)"
                );
                let (secs, code, _) = run_child(&exe, &d, &["plan", &wf.display().to_string()]);
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
        run_child(&exe, &d, &["run", &wf.display().to_string()]);
        let (secs, code, _) = run_child(&exe, &d, &["run", &wf.display().to_string()]);
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
        let (secs, code, _) = run_child(&exe, &d, &["run", &wf.display().to_string()]);
        let floor = shell_floor(&d, n + 2);
        println!(
            "shell fan (subprocess executor) n={}: {secs:7.2} s  {:>7.1} tasks/s (exit {code})\n    baseline: bare `sh -c 'echo i > f'` on 2 threads {floor:.1} commands/s → cocoflow at {:.2}× that floor",
            n + 2,
            (n + 2) as f64 / secs,
            ((n + 2) as f64 / secs) / floor
        );
    }
    if !args.keep {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    Ok(EXIT_OK)
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("cocoflow-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}
