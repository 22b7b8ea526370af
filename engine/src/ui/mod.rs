//! Progress output: indicatif bars on a terminal (one overall bar, one line per running
//! task), plain lines when stderr is not a terminal, or a `--json` event stream on stdout.
//! [`Ui`] is one [`Observer`] of the run's [`RunEvent`]s; the run's events file
//! (`<state dir>/runs/<run id>.events.jsonl`, see [`event`]) is another, with the same lines as
//! `--json`.

pub mod event;

pub use event::{EndSummary, EventLog, FinishState, Observer, Observers, RunEvent};

use crate::util::human_duration;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
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

/// The terminal output: an [`Observer`] that draws bars, prints plain lines or `--json` lines
/// (or nothing, `--quiet`), and counts what it saw.
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

    fn json(&self, e: &RunEvent) {
        if let Ok(line) = serde_json::to_string(e) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
        }
    }

    fn plain(&self, line: &str) {
        match &self.mp {
            Some(mp) => {
                let _ = mp.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    fn notice(&self, msg: &str) {
        match self.mode {
            Mode::Json | Mode::Quiet => {}
            _ => self.plain(&format!("note: {msg}")),
        }
    }

    fn start(&mut self, run_id: &str, workflow: &str, total: usize, cached: usize) {
        self.counts = Counts {
            total,
            cached,
            ..Default::default()
        };
        match self.mode {
            Mode::Json | Mode::Quiet => {}
            Mode::Plain => eprintln!(
                "run {run_id}: {workflow}: {total} instances, {cached} cached, {} to run",
                total - cached
            ),
            Mode::Bars => {
                let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
                let bar = mp.add(ProgressBar::new(total as u64));
                bar.set_style(
                    ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} {msg} (eta {eta})")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_position(cached as u64);
                bar.enable_steady_tick(Duration::from_millis(120));
                let _ = mp.println(format!(
                    "run {run_id}: {workflow}: {total} instances, {cached} cached"
                ));
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

    fn launched(&mut self, id: usize, name: &str, attempt: u32) {
        self.counts.running += 1;
        if self.mode == Mode::Bars {
            if let Some(mp) = &self.mp {
                let pb = mp.add(ProgressBar::new(0));
                pb.set_style(
                    ProgressStyle::with_template("  {spinner} {prefix} {wide_msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                let retry = if attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                pb.set_prefix(format!("{name}{retry}"));
                self.lines.insert(id, pb);
            }
            self.refresh();
        }
    }

    fn progress(&mut self, id: usize, done: u64, total: u64, message: &str) {
        if self.mode == Mode::Bars
            && let Some(pb) = self.lines.get(&id)
        {
            let pct = if total > 0 {
                format!("{done}/{total} ")
            } else {
                String::new()
            };
            pb.set_message(format!("{pct}{message}"));
            pb.tick();
        }
    }

    /// An attempt ended.
    fn finished(
        &mut self,
        id: usize,
        name: &str,
        state: FinishState,
        took: Duration,
        error: Option<&str>,
        log: Option<&str>,
    ) {
        self.counts.running = self.counts.running.saturating_sub(1);
        match state {
            FinishState::Succeeded => self.counts.done += 1,
            FinishState::Failed => self.counts.failed += 1,
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
            Mode::Json | Mode::Quiet => {}
            _ => {
                let tag = match state {
                    FinishState::Succeeded => "ok     ",
                    FinishState::Failed => "FAILED ",
                    FinishState::Retry => "retry  ",
                    FinishState::Interrupted => "stopped",
                };
                let mut line = format!(
                    "[{pos:>w$}/{}] {tag} {name} ({})",
                    c.total,
                    human_duration(took),
                    w = c.total.to_string().len()
                );
                if let Some(e) = error {
                    line.push_str(&format!(": {}", e.lines().next().unwrap_or("")));
                }
                if state == FinishState::Failed
                    && let Some(l) = log
                {
                    line.push_str(&format!("\n           log: {l}"));
                }
                self.plain(&line);
                self.refresh();
            }
        }
    }

    fn blocked(&mut self, name: &str, by: &str) {
        match self.mode {
            Mode::Json | Mode::Quiet => {}
            _ => self.plain(&format!("         blocked {name} (by `{by}`)")),
        }
    }

    fn done(&mut self, summary: &EndSummary) {
        if let Some(bar) = self.overall.take() {
            self.refresh();
            bar.finish_and_clear();
        }
        self.mp = None;
        match self.mode {
            Mode::Json | Mode::Quiet => {}
            _ => eprintln!("{}", summary.text()),
        }
    }
}

impl Observer for Ui {
    fn event(&mut self, e: &RunEvent) {
        match e {
            RunEvent::Start {
                run,
                workflow,
                instances,
                cached,
                ..
            } => self.start(run, workflow, *instances, *cached),
            RunEvent::Launch {
                id, name, attempt, ..
            } => self.launched(*id, name, *attempt),
            RunEvent::Progress {
                id,
                done,
                total,
                message,
                ..
            } => self.progress(*id, *done, *total, message),
            RunEvent::Finish {
                id,
                name,
                state,
                seconds,
                error,
                log,
                ..
            } => self.finished(
                *id,
                name,
                *state,
                Duration::from_secs_f64(seconds.max(0.0)),
                error.as_deref(),
                log.as_deref(),
            ),
            RunEvent::Blocked { name, by, .. } => self.blocked(name, by),
            RunEvent::Notice { message, .. } => self.notice(message),
            RunEvent::End { summary, .. } => self.done(summary),
        }
        // `--json`: every event, one line, after the bookkeeping above.
        if self.mode == Mode::Json {
            self.json(e);
        }
    }
}
