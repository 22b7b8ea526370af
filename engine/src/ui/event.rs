//! The run's typed event stream. The runner emits each [`RunEvent`] once, through
//! [`Observers`], to every [`Observer`]: the terminal output ([`super::Ui`]: bars, plain lines
//! or the `--json` stream on stdout) and the run's events file ([`EventLog`]).
//!
//! **Events file**: `<state dir>/runs/<run id>.events.jsonl` (default
//! `.cocoflow/runs/<id>.events.jsonl`), one JSON object per line, exactly the lines `--json`
//! prints: `{"event": "start", "t_ms": ..., ...}`, then `launch` / `progress` / `finish` /
//! `blocked` / `notice`, and `end` with the run's summary. Every line carries `t_ms` (unix
//! milliseconds); `launch`, `progress` and `finish` carry the instance's cache `key`. Each line
//! is appended with one write, so a process tailing the file (a dashboard) sees whole lines. A
//! `resume` appends to the run's file (a second `start` ... `end`); the file stays after the run
//! ends (unlike the `status` snapshot beside it) and nothing deletes it.

use crate::util::{human_duration, now_ms};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One thing that happened in a run (one `--json` line, one events-file line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum RunEvent {
    /// The run starts: `instances` in the plan, `cached` of them already done.
    Start {
        t_ms: u64,
        run: String,
        workflow: String,
        instances: usize,
        cached: usize,
    },
    /// Attempt `attempt` (from 1) of instance `id` starts on `gpus`.
    Launch {
        t_ms: u64,
        id: usize,
        name: String,
        key: String,
        attempt: u32,
        gpus: Vec<u32>,
    },
    /// A running task reported progress (`total` 0: unknown).
    Progress {
        t_ms: u64,
        id: usize,
        name: String,
        key: String,
        done: u64,
        total: u64,
        message: String,
    },
    /// An attempt ended; `log` is set when it failed for good.
    Finish {
        t_ms: u64,
        id: usize,
        name: String,
        key: String,
        state: FinishState,
        seconds: f64,
        error: Option<String>,
        log: Option<String>,
    },
    /// `name` will not run: `by` (a failed task, or `fail-fast`) blocks it.
    Blocked { t_ms: u64, name: String, by: String },
    /// Something the user should know (no GPU, an interrupt, a producer run again, ...).
    Notice { t_ms: u64, message: String },
    /// The run ended.
    End { t_ms: u64, summary: EndSummary },
}

impl RunEvent {
    /// When it happened (unix milliseconds).
    pub fn t_ms(&self) -> u64 {
        match self {
            RunEvent::Start { t_ms, .. }
            | RunEvent::Launch { t_ms, .. }
            | RunEvent::Progress { t_ms, .. }
            | RunEvent::Finish { t_ms, .. }
            | RunEvent::Blocked { t_ms, .. }
            | RunEvent::Notice { t_ms, .. }
            | RunEvent::End { t_ms, .. } => *t_ms,
        }
    }

    /// A notice stamped now.
    pub fn notice(message: impl Into<String>) -> RunEvent {
        RunEvent::Notice {
            t_ms: now_ms(),
            message: message.into(),
        }
    }
}

/// How an attempt ended (`finish`'s `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FinishState {
    Succeeded,
    Failed,
    /// Failed; another attempt follows.
    Retry,
    Interrupted,
}

impl FinishState {
    pub fn label(self) -> &'static str {
        match self {
            FinishState::Succeeded => "succeeded",
            FinishState::Failed => "failed",
            FinishState::Retry => "retry",
            FinishState::Interrupted => "interrupted",
        }
    }
}

/// The `end` event's summary (what the last line without `--json` says).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndSummary {
    pub run: String,
    /// `succeeded`, `failed`, `interrupted`.
    pub status: String,
    pub succeeded: usize,
    pub cached: usize,
    pub failed: usize,
    pub blocked: usize,
    pub interrupted: usize,
    pub seconds: f64,
    pub model_loads: u64,
    pub workers_started: u64,
    pub executor_notes: Vec<String>,
}

impl EndSummary {
    /// The run's closing line(s) on the terminal.
    pub fn text(&self) -> String {
        // Worker processes and the models they loaded, when there were any.
        let loads = if self.workers_started + self.model_loads > 0 {
            format!(
                "; {} model load(s), {} worker(s)",
                self.model_loads, self.workers_started
            )
        } else {
            String::new()
        };
        let loads = self
            .executor_notes
            .iter()
            .fold(loads, |acc, n| format!("{acc}; {n}"));
        format!(
            "run {} {} in {}: {} ran, {} cached, {} failed, {} blocked, {} interrupted{loads}\n  details: cocoflow status {}",
            self.run,
            self.status,
            human_duration(Duration::from_secs_f64(self.seconds.max(0.0))),
            self.succeeded,
            self.cached,
            self.failed,
            self.blocked,
            self.interrupted,
            self.run
        )
    }
}

/// Something that follows a run's events (the terminal output, the events file, ...).
pub trait Observer: Send {
    fn event(&mut self, e: &RunEvent);
}

impl<T: Observer + ?Sized> Observer for &mut T {
    fn event(&mut self, e: &RunEvent) {
        (**self).event(e)
    }
}

impl<T: Observer + ?Sized> Observer for Box<T> {
    fn event(&mut self, e: &RunEvent) {
        (**self).event(e)
    }
}

/// Fans each event out to every observer, in the order they were added.
#[derive(Default)]
pub struct Observers<'a> {
    list: Vec<Box<dyn Observer + 'a>>,
}

impl<'a> Observers<'a> {
    pub fn new() -> Self {
        Observers { list: Vec::new() }
    }

    /// Adds an observer (a `&mut` to one the caller keeps works too).
    pub fn push(&mut self, o: impl Observer + 'a) {
        self.list.push(Box::new(o));
    }

    pub fn with(mut self, o: impl Observer + 'a) -> Self {
        self.push(o);
        self
    }

    /// Sends `e` to every observer.
    pub fn emit(&mut self, e: RunEvent) {
        self.event(&e);
    }

    /// Emits a notice stamped now.
    pub fn notice(&mut self, message: impl Into<String>) {
        self.emit(RunEvent::notice(message));
    }
}

impl Observer for Observers<'_> {
    fn event(&mut self, e: &RunEvent) {
        for o in &mut self.list {
            o.event(e);
        }
    }
}

/// Appends each event as one JSON line to a file (the run's events file). Opens the file (and
/// creates its directory) at the first event; an I/O error never fails the run: it is logged
/// once and the file is left as it is. `progress` events are thinned to at most one per
/// instance every [`EventLog::PROGRESS_EVERY`] (the last one, `done == total`, always goes
/// through), so a task reporting every step does not grow the file without bound; `--json`
/// keeps every one.
pub struct EventLog {
    path: PathBuf,
    file: Option<File>,
    broken: bool,
    last_progress: std::collections::HashMap<usize, std::time::Instant>,
}

impl EventLog {
    /// `<state_dir>/runs/<run_id>.events.jsonl`.
    pub fn path_for(state_dir: &Path, run_id: &str) -> PathBuf {
        state_dir
            .join("runs")
            .join(format!("{run_id}.events.jsonl"))
    }

    pub const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

    /// Appends to `path` (nothing is opened before the first event).
    pub fn new(path: PathBuf) -> EventLog {
        EventLog {
            path,
            file: None,
            broken: false,
            last_progress: Default::default(),
        }
    }

    /// The events file of run `run_id` in `state_dir`.
    pub fn for_run(state_dir: &Path, run_id: &str) -> EventLog {
        EventLog::new(EventLog::path_for(state_dir, run_id))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        let f = match &mut self.file {
            Some(f) => f,
            None => {
                if let Some(dir) = self.path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                self.file.insert(f)
            }
        };
        f.write_all(line)?;
        f.flush()
    }
}

impl Observer for EventLog {
    fn event(&mut self, e: &RunEvent) {
        if self.broken {
            return;
        }
        if let RunEvent::Progress {
            id, done, total, ..
        } = e
            && done < total
        {
            let now = std::time::Instant::now();
            match self.last_progress.get(id) {
                Some(t) if now.duration_since(*t) < Self::PROGRESS_EVERY => return,
                _ => {
                    self.last_progress.insert(*id, now);
                }
            }
        }
        let mut line = match serde_json::to_vec(e) {
            Ok(l) => l,
            Err(err) => {
                tracing::warn!(error = %err, "cannot encode a run event");
                return;
            }
        };
        line.push(b'\n');
        if let Err(err) = self.append(&line) {
            self.broken = true;
            tracing::warn!(path = %self.path.display(), error = %err, "cannot write the run's events file; the run goes on without it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> EndSummary {
        EndSummary {
            run: "r1".into(),
            status: "succeeded".into(),
            succeeded: 2,
            cached: 1,
            failed: 0,
            blocked: 0,
            interrupted: 0,
            seconds: 1.5,
            model_loads: 0,
            workers_started: 2,
            executor_notes: vec!["1 Slurm job(s) submitted".into()],
        }
    }

    #[test]
    fn events_serialise_to_the_json_lines_shape() {
        let cases = [
            (
                RunEvent::Start {
                    t_ms: 7,
                    run: "r1".into(),
                    workflow: "w".into(),
                    instances: 3,
                    cached: 1,
                },
                r#"{"event":"start","t_ms":7,"run":"r1","workflow":"w","instances":3,"cached":1}"#,
            ),
            (
                RunEvent::Launch {
                    t_ms: 8,
                    id: 2,
                    name: "train[lr=0.1]".into(),
                    key: "abc".into(),
                    attempt: 1,
                    gpus: vec![0, 3],
                },
                r#"{"event":"launch","t_ms":8,"id":2,"name":"train[lr=0.1]","key":"abc","attempt":1,"gpus":[0,3]}"#,
            ),
            (
                RunEvent::Progress {
                    t_ms: 9,
                    id: 2,
                    name: "t".into(),
                    key: "abc".into(),
                    done: 4,
                    total: 10,
                    message: "step 4".into(),
                },
                r#"{"event":"progress","t_ms":9,"id":2,"name":"t","key":"abc","done":4,"total":10,"message":"step 4"}"#,
            ),
            (
                RunEvent::Finish {
                    t_ms: 10,
                    id: 2,
                    name: "t".into(),
                    key: "abc".into(),
                    state: FinishState::Succeeded,
                    seconds: 0.25,
                    error: None,
                    log: None,
                },
                r#"{"event":"finish","t_ms":10,"id":2,"name":"t","key":"abc","state":"succeeded","seconds":0.25,"error":null,"log":null}"#,
            ),
            (
                RunEvent::Finish {
                    t_ms: 11,
                    id: 2,
                    name: "t".into(),
                    key: "abc".into(),
                    state: FinishState::Retry,
                    seconds: 1.0,
                    error: Some("exit 7".into()),
                    log: Some("/s/logs/r1/t.1.log".into()),
                },
                r#"{"event":"finish","t_ms":11,"id":2,"name":"t","key":"abc","state":"retry","seconds":1.0,"error":"exit 7","log":"/s/logs/r1/t.1.log"}"#,
            ),
            (
                RunEvent::Blocked {
                    t_ms: 12,
                    name: "eval".into(),
                    by: "train".into(),
                },
                r#"{"event":"blocked","t_ms":12,"name":"eval","by":"train"}"#,
            ),
            (
                RunEvent::Notice {
                    t_ms: 13,
                    message: "no GPU found".into(),
                },
                r#"{"event":"notice","t_ms":13,"message":"no GPU found"}"#,
            ),
            (
                RunEvent::End {
                    t_ms: 14,
                    summary: summary(),
                },
                r#"{"event":"end","t_ms":14,"summary":{"run":"r1","status":"succeeded","succeeded":2,"cached":1,"failed":0,"blocked":0,"interrupted":0,"seconds":1.5,"model_loads":0,"workers_started":2,"executor_notes":["1 Slurm job(s) submitted"]}}"#,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(serde_json::to_string(&e).unwrap(), want);
            let back: RunEvent = serde_json::from_str(want).unwrap();
            assert_eq!(back, e);
            assert!(e.t_ms() >= 7);
        }
        for s in [
            FinishState::Succeeded,
            FinishState::Failed,
            FinishState::Retry,
            FinishState::Interrupted,
        ] {
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.label())
            );
        }
    }

    #[test]
    fn end_text_is_the_closing_line() {
        assert_eq!(
            summary().text(),
            "run r1 succeeded in 1.5s: 2 ran, 1 cached, 0 failed, 0 blocked, 0 interrupted; 0 model load(s), 2 worker(s); 1 Slurm job(s) submitted\n  details: cocoflow status r1"
        );
    }

    struct Collect(Vec<RunEvent>);
    impl Observer for Collect {
        fn event(&mut self, e: &RunEvent) {
            self.0.push(e.clone());
        }
    }

    #[test]
    fn observers_fan_out_and_the_log_appends_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = EventLog::path_for(dir.path(), "r1");
        let mut kept = Collect(vec![]);
        {
            let mut obs = Observers::new()
                .with(&mut kept)
                .with(EventLog::for_run(dir.path(), "r1"));
            obs.notice("one");
            obs.notice("two");
        }
        // a resume appends
        let mut again = EventLog::for_run(dir.path(), "r1");
        again.event(&RunEvent::notice("three"));
        assert_eq!(kept.0.len(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<RunEvent> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(&lines[..2], &kept.0[..]);
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn an_unwritable_events_file_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        // `runs` is a file: the directory cannot be created
        std::fs::write(dir.path().join("runs"), "").unwrap();
        let mut log = EventLog::for_run(dir.path(), "r1");
        log.event(&RunEvent::notice("lost"));
        log.event(&RunEvent::notice("lost too"));
        assert!(log.broken);
    }

    #[test]
    fn the_events_file_thins_progress_but_keeps_the_last() {
        let d = tempfile::tempdir().unwrap();
        let mut log = EventLog::new(d.path().join("e.jsonl"));
        for done in 0..=100u64 {
            log.event(&RunEvent::Progress {
                t_ms: 1,
                id: 3,
                name: "t".into(),
                key: "k".into(),
                done,
                total: 100,
                message: String::new(),
            });
        }
        let text = std::fs::read_to_string(d.path().join("e.jsonl")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() <= 3, "{} lines", lines.len());
        assert!(lines[0].contains("\"done\":0") && lines.last().unwrap().contains("\"done\":100"));
    }
}
