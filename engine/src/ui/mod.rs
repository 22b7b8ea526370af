//! Progress output: indicatif bars on a terminal (one overall bar, one line per running
//! task), plain lines when stderr is not a terminal, or a `--json` event stream on stdout.

use crate::kind::Progress;
use crate::util::human_duration;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use std::collections::HashMap;
use std::io::{IsTerminal, Write as _};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bars,
    Plain,
    Json,
    Quiet,
}

impl Mode {
    /// Bars on a terminal, plain lines otherwise; `--json` wins.
    pub fn detect(json: bool, quiet: bool) -> Mode {
        if json {
            Mode::Json
        } else if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Plain
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub total: usize,
    pub cached: usize,
    pub done: usize,
    pub failed: usize,
    pub running: usize,
}

pub struct Ui {
    mode: Mode,
    mp: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    lines: HashMap<usize, ProgressBar>,
    pub counts: Counts,
}

impl Ui {
    pub fn new(mode: Mode) -> Ui {
        Ui {
            mode,
            mp: None,
            overall: None,
            lines: HashMap::new(),
            counts: Counts::default(),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn json(&self, v: serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{v}");
    }

    fn plain(&self, line: &str) {
        match &self.mp {
            Some(mp) => {
                let _ = mp.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    pub fn notice(&self, msg: &str) {
        match self.mode {
            Mode::Json => self.json(json!({"event": "notice", "message": msg})),
            Mode::Quiet => {}
            _ => self.plain(&format!("note: {msg}")),
        }
    }

    pub fn start(&mut self, run_id: &str, workflow: &str, total: usize, cached: usize) {
        self.counts = Counts {
            total,
            cached,
            ..Default::default()
        };
        match self.mode {
            Mode::Json => self.json(json!({"event": "start", "run": run_id, "workflow": workflow, "instances": total, "cached": cached})),
            Mode::Quiet => {}
            Mode::Plain => eprintln!("run {run_id}: {workflow}: {total} instances, {cached} cached, {} to run", total - cached),
            Mode::Bars => {
                let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
                let bar = mp.add(ProgressBar::new(total as u64));
                bar.set_style(
                    ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} {msg} (eta {eta})")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_position(cached as u64);
                bar.enable_steady_tick(Duration::from_millis(120));
                let _ = mp.println(format!("run {run_id}: {workflow}: {total} instances, {cached} cached"));
                self.mp = Some(mp);
                self.overall = Some(bar);
                self.refresh();
            }
        }
    }

    fn refresh(&self) {
        if let Some(bar) = &self.overall {
            let c = &self.counts;
            bar.set_position((c.cached + c.done + c.failed) as u64);
            bar.set_message(format!(
                "done {} · cached {} · failed {} · running {}",
                c.done, c.cached, c.failed, c.running
            ));
        }
    }

    pub fn launched(&mut self, id: usize, name: &str, attempt: u32, gpus: &[u32]) {
        self.counts.running += 1;
        match self.mode {
            Mode::Json => self.json(json!({"event": "launch", "id": id, "name": name, "attempt": attempt, "gpus": gpus})),
            Mode::Bars => {
                if let Some(mp) = &self.mp {
                    let pb = mp.add(ProgressBar::new(0));
                    pb.set_style(ProgressStyle::with_template("  {spinner} {prefix} {wide_msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
                    let retry = if attempt > 1 { format!(" (attempt {attempt})") } else { String::new() };
                    pb.set_prefix(format!("{name}{retry}"));
                    self.lines.insert(id, pb);
                }
                self.refresh();
            }
            _ => {}
        }
    }

    pub fn progress(&mut self, id: usize, name: &str, p: &Progress) {
        match self.mode {
            Mode::Json => self.json(json!({"event": "progress", "id": id, "name": name, "done": p.done, "total": p.total, "message": p.message})),
            Mode::Bars => {
                if let Some(pb) = self.lines.get(&id) {
                    let pct = if p.total > 0 { format!("{}/{} ", p.done, p.total) } else { String::new() };
                    pb.set_message(format!("{pct}{}", p.message));
                    pb.tick();
                }
            }
            _ => {}
        }
    }

    /// A task ended: `state` is `succeeded`, `failed`, `retry`, `interrupted`.
    pub fn finished(
        &mut self,
        id: usize,
        name: &str,
        state: &str,
        took: Duration,
        error: Option<&str>,
        log: Option<&str>,
    ) {
        self.counts.running = self.counts.running.saturating_sub(1);
        match state {
            "succeeded" => self.counts.done += 1,
            "failed" => self.counts.failed += 1,
            _ => {}
        }
        if let Some(pb) = self.lines.remove(&id) {
            pb.finish_and_clear();
            if let Some(mp) = &self.mp {
                mp.remove(&pb);
            }
        }
        let c = self.counts;
        let pos = c.cached + c.done + c.failed;
        match self.mode {
            Mode::Json => self.json(json!({"event": "finish", "id": id, "name": name, "state": state, "seconds": took.as_secs_f64(), "error": error, "log": log})),
            Mode::Quiet => {}
            _ => {
                let tag = match state {
                    "succeeded" => "ok     ",
                    "failed" => "FAILED ",
                    "retry" => "retry  ",
                    _ => "stopped",
                };
                let mut line = format!("[{pos:>w$}/{}] {tag} {name} ({})", c.total, human_duration(took), w = c.total.to_string().len());
                if let Some(e) = error {
                    line.push_str(&format!(": {}", e.lines().next().unwrap_or("")));
                }
                if state == "failed"
                    && let Some(l) = log
                {
                    line.push_str(&format!("\n           log: {l}"));
                }
                self.plain(&line);
                self.refresh();
            }
        }
    }

    pub fn blocked(&mut self, name: &str, by: &str) {
        match self.mode {
            Mode::Json => self.json(json!({"event": "blocked", "name": name, "by": by})),
            Mode::Quiet => {}
            _ => self.plain(&format!("         blocked {name} (by `{by}`)")),
        }
    }

    pub fn done(&mut self, summary: &serde_json::Value, text: &str) {
        if let Some(bar) = self.overall.take() {
            self.refresh();
            bar.finish_and_clear();
        }
        self.mp = None;
        match self.mode {
            Mode::Json => self.json(json!({"event": "end", "summary": summary})),
            Mode::Quiet => {}
            _ => eprintln!("{text}"),
        }
    }
}
