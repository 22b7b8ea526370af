//! The runner's signal path: Ctrl-C (SIGINT) and SIGTERM stop new launches and start the
//! grace period; a second Ctrl-C or the end of the grace cancels running attempts; tasks that
//! ignore cancellation for [`KILL_AFTER`] are killed and recorded as interrupted.

use super::Launched;
use crate::core::{Action, Core, Event, State};
use crate::exec::{ExecEvent, JobOutcome};
use crate::plan::InstanceId;
use crate::ui::Observers;
use crate::util::human_duration;
use std::collections::HashMap;
use std::time::Duration;
use tokio::signal::unix::{Signal as UnixSignal, SignalKind, signal};
use tokio::time::Instant;

/// After cancellation, how long tasks may take to stop before the run ends without them.
pub const KILL_AFTER: Duration = Duration::from_secs(10);

/// What woke the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
    GraceOver,
    KillNow,
}

/// The signal listeners (made once: `tokio::signal::ctrl_c()` in the loop registered a
/// listener every round) and the deadlines that follow from them.
pub struct Signals {
    sigint: Option<UnixSignal>,
    sigterm: Option<UnixSignal>,
    grace: Duration,
    /// Set by the first SIGINT or SIGTERM: nothing new is launched.
    pub interrupted: bool,
    grace_deadline: Option<Instant>,
    cancelled_all: bool,
    kill_deadline: Option<Instant>,
}

impl Signals {
    pub fn new(grace: Duration) -> Self {
        Signals {
            sigint: signal(SignalKind::interrupt()).ok(),
            sigterm: signal(SignalKind::terminate()).ok(),
            grace,
            interrupted: false,
            grace_deadline: None,
            cancelled_all: false,
            kill_deadline: None,
        }
    }

    /// Waits for the next signal or deadline (forever when there is none).
    pub async fn next(&mut self) -> Signal {
        let far = Instant::now() + Duration::from_secs(3600);
        let grace = self.grace_deadline.filter(|_| !self.cancelled_all);
        let kill = self.kill_deadline;
        tokio::select! {
            _ = recv(&mut self.sigint) => Signal::Interrupt,
            _ = recv(&mut self.sigterm) => Signal::Terminate,
            _ = tokio::time::sleep_until(grace.unwrap_or(far)), if grace.is_some() => Signal::GraceOver,
            _ = tokio::time::sleep_until(kill.unwrap_or(far)), if kill.is_some() => Signal::KillNow,
        }
    }

    /// Acts on `sig`: cancels or kills running attempts (cancelled ones are pushed to `batch`
    /// as interrupted) and returns the core's actions.
    pub fn handle(
        &mut self,
        sig: Signal,
        launched: &HashMap<InstanceId, Launched>,
        core: &mut Core,
        now_ms: u64,
        obs: &mut Observers<'_>,
        batch: &mut Vec<ExecEvent>,
    ) -> Vec<Action> {
        match sig {
            Signal::Interrupt if self.interrupted => {
                self.cancel_all(launched);
                obs.notice("second interrupt: cancelling running tasks");
                vec![]
            }
            Signal::Interrupt => {
                self.interrupted = true;
                self.grace_deadline = Some(Instant::now() + self.grace);
                obs.notice(format!(
                    "interrupted: no new tasks; waiting up to {} for {} running task(s) (Ctrl-C again to cancel them)",
                    human_duration(self.grace),
                    launched.len()
                ));
                core.handle(Event::Interrupt, now_ms)
            }
            Signal::Terminate => {
                self.interrupted = true;
                self.grace_deadline
                    .get_or_insert(Instant::now() + self.grace);
                core.handle(Event::Interrupt, now_ms)
            }
            Signal::GraceOver => {
                obs.notice("grace period over: cancelling running tasks");
                self.cancel_all(launched);
                vec![]
            }
            Signal::KillNow => {
                // Tasks that ignored cancellation: kill workers, abandon in-process threads
                // (they end with this process) and record them as interrupted.
                obs.notice(format!(
                    "{} task(s) ignored cancellation for {}: stopping without them",
                    launched.len(),
                    human_duration(KILL_AFTER)
                ));
                for l in launched.values() {
                    l.running.kill();
                }
                for &id in launched.keys() {
                    if let State::Running { attempt } = core.state(id).clone() {
                        batch.push(ExecEvent::Done {
                            id,
                            attempt,
                            outcome: JobOutcome::Cancelled,
                        });
                    }
                }
                self.kill_deadline = None;
                vec![]
            }
        }
    }

    fn cancel_all(&mut self, launched: &HashMap<InstanceId, Launched>) {
        for l in launched.values() {
            l.running.cancel();
        }
        self.cancelled_all = true;
        self.kill_deadline
            .get_or_insert(Instant::now() + KILL_AFTER);
    }
}

async fn recv(s: &mut Option<UnixSignal>) {
    match s.as_mut() {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}
