//! The pure scheduler core: `state + event + now → actions`. No clock, no I/O, no
//! processes: the runner feeds it events and performs its actions, and tests drive it
//! directly. Invariants (checked by `sanity_check` in tests): dependencies finish before a
//! task launches; each instance is launched at most once per attempt; resources are never
//! over-committed; a failure blocks only its descendants; cache hits are never launched.

pub mod resources;

use resources::{Allocation, Pools, Request};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

pub type TaskId = usize;

/// What the core needs to know about a task.
#[derive(Debug, Clone)]
pub struct TaskInfo {
    /// Tasks that must succeed first (ids smaller than this task's are not required).
    pub deps: Vec<TaskId>,
    pub request: Request,
    /// Attempts allowed in total (1 + retries).
    pub max_attempts: u32,
    pub backoff_ms: u64,
    pub backoff_factor: f64,
    pub max_backoff_ms: u64,
    /// User priority (higher first); ties go to the longer critical path.
    pub priority: i64,
    /// Already in the cache: never launched.
    pub cached: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Waiting,
    Ready,
    Running {
        attempt: u32,
    },
    /// Failed attempt `attempt`; the next attempt becomes ready at `until_ms`.
    RetryWait {
        attempt: u32,
        until_ms: u64,
    },
    Succeeded,
    Cached,
    Failed,
    /// Not run because `by` failed (or, with fail-fast, because the run stopped).
    Blocked {
        by: Option<TaskId>,
    },
    Interrupted,
}

impl State {
    pub fn label(&self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Ready => "ready",
            State::Running { .. } => "running",
            State::RetryWait { .. } => "retry-wait",
            State::Succeeded => "succeeded",
            State::Cached => "cached",
            State::Failed => "failed",
            State::Blocked { .. } => "blocked",
            State::Interrupted => "interrupted",
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, State::Succeeded | State::Cached)
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            State::Succeeded
                | State::Cached
                | State::Failed
                | State::Blocked { .. }
                | State::Interrupted
        )
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success,
    Failure {
        message: String,
        retryable: bool,
    },
    Cancelled,
    /// An input's blob was corrupt or missing: its producer must run again first.
    BadInput {
        producer: TaskId,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Finished {
        id: TaskId,
        attempt: u32,
        outcome: Outcome,
    },
    /// Time passed (retry timers).
    Tick,
    /// Stop launching; running tasks finish or are cancelled by the runner.
    Interrupt,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Launch {
        id: TaskId,
        attempt: u32,
        alloc: Allocation,
    },
    /// A state change to journal (always emitted before the `Launch` it accompanies).
    Record {
        id: TaskId,
        state: State,
        error: Option<String>,
    },
    /// Call `handle(Tick)` at this time.
    WakeAt { ms: u64 },
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// Stop launching after the first task that fails for good.
    pub fail_fast: bool,
}

/// How many ready tasks that do not fit are skipped before a scheduling pass stops.
const BACKFILL_WINDOW: usize = 64;

pub struct Core {
    tasks: Vec<TaskInfo>,
    dependents: Vec<Vec<TaskId>>,
    state: Vec<State>,
    /// Deps not yet done, per waiting task.
    remaining: Vec<usize>,
    attempts: Vec<u32>,
    allocs: Vec<Option<Allocation>>,
    crit: Vec<u64>,
    ready: BinaryHeap<(i64, u64, Reverse<TaskId>)>,
    pools: Pools,
    stopping: bool,
    options: Options,
    running: usize,
    /// How many tasks are `Ready` / `RetryWait` (so `is_finished` needs no scan).
    n_ready: usize,
    n_retry: usize,
    /// Pending retry times `(until_ms, task)`, earliest first; entries whose task left
    /// `RetryWait` are dropped lazily.
    retries: BinaryHeap<Reverse<(u64, TaskId)>>,
    /// Launches per (task, attempt) — test-visible to prove at-most-once.
    launches: Vec<u32>,
}

impl Core {
    pub fn new(tasks: Vec<TaskInfo>, pools: Pools, options: Options) -> Core {
        let n = tasks.len();
        let mut dependents = vec![Vec::new(); n];
        for (i, t) in tasks.iter().enumerate() {
            for &d in &t.deps {
                dependents[d].push(i);
            }
        }
        // Critical path length (in tasks) from each task to the end, by reverse topological
        // order of a DFS post-order (deps need not have smaller ids).
        let order = topo_order(&tasks, &dependents);
        let mut crit = vec![1u64; n];
        for &i in order.iter().rev() {
            crit[i] = 1 + dependents[i].iter().map(|&j| crit[j]).max().unwrap_or(0);
        }
        Core {
            state: vec![State::Waiting; n],
            remaining: vec![0; n],
            attempts: vec![0; n],
            allocs: vec![None; n],
            launches: vec![0; n],
            dependents,
            crit,
            tasks,
            ready: BinaryHeap::new(),
            pools,
            stopping: false,
            options,
            running: 0,
            n_ready: 0,
            n_retry: 0,
            retries: BinaryHeap::new(),
        }
    }

    /// Every state change goes through here, keeping the counters of `Ready` and
    /// `RetryWait` tasks and the retry queue in step with `state`.
    fn set(&mut self, i: TaskId, s: State) {
        match self.state[i] {
            State::Ready => self.n_ready -= 1,
            State::RetryWait { .. } => self.n_retry -= 1,
            _ => {}
        }
        match s {
            State::Ready => self.n_ready += 1,
            State::RetryWait { until_ms, .. } => {
                self.n_retry += 1;
                self.retries.push(Reverse((until_ms, i)));
            }
            _ => {}
        }
        self.state[i] = s;
    }

    /// Drops retry-queue entries whose task is no longer waiting for that time.
    fn prune_retries(&mut self) {
        while let Some(&Reverse((ms, i))) = self.retries.peek() {
            match self.state[i] {
                State::RetryWait { until_ms, .. } if until_ms == ms => break,
                _ => {
                    self.retries.pop();
                }
            }
        }
    }

    pub fn state(&self, id: TaskId) -> &State {
        &self.state[id]
    }

    pub fn states(&self) -> &[State] {
        &self.state
    }

    pub fn attempts(&self, id: TaskId) -> u32 {
        self.attempts[id]
    }

    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    pub fn running(&self) -> usize {
        self.running
    }

    /// Sets initial states (cache hits, ready tasks) and launches what fits.
    pub fn start(&mut self, now: u64) -> Vec<Action> {
        let mut acts = Vec::new();
        for i in 0..self.tasks.len() {
            if self.tasks[i].cached {
                self.set(i, State::Cached);
                acts.push(Action::Record {
                    id: i,
                    state: State::Cached,
                    error: None,
                });
            }
        }
        for i in 0..self.tasks.len() {
            if self.tasks[i].cached {
                continue;
            }
            self.remaining[i] = self.tasks[i]
                .deps
                .iter()
                .filter(|&&d| !self.state[d].is_done())
                .count();
            if self.remaining[i] == 0 {
                self.make_ready(i);
            }
        }
        self.schedule(now, &mut acts);
        acts
    }

    fn make_ready(&mut self, i: TaskId) {
        self.set(i, State::Ready);
        self.ready
            .push((self.tasks[i].priority, self.crit[i], Reverse(i)));
    }

    pub fn handle(&mut self, event: Event, now: u64) -> Vec<Action> {
        let mut acts = Vec::new();
        match event {
            Event::Finished {
                id,
                attempt,
                outcome,
            } => self.finished(id, attempt, outcome, now, &mut acts),
            Event::Tick => {
                while let Some(&Reverse((ms, i))) = self.retries.peek() {
                    if ms > now || self.stopping {
                        break;
                    }
                    self.retries.pop();
                    if matches!(self.state[i], State::RetryWait { until_ms, .. } if until_ms == ms)
                    {
                        self.make_ready(i);
                        acts.push(Action::Record {
                            id: i,
                            state: State::Ready,
                            error: None,
                        });
                    }
                }
            }
            Event::Interrupt => self.stop(&mut acts, None),
        }
        self.schedule(now, &mut acts);
        self.prune_retries();
        acts
    }

    fn finished(
        &mut self,
        id: TaskId,
        attempt: u32,
        outcome: Outcome,
        now: u64,
        acts: &mut Vec<Action>,
    ) {
        if self.state[id] != (State::Running { attempt }) {
            return; // a stale report (e.g. after cancellation): ignore
        }
        if let Some(a) = self.allocs[id].take() {
            self.pools.release(&a);
        }
        self.running -= 1;
        match outcome {
            Outcome::Success => {
                self.set(id, State::Succeeded);
                acts.push(Action::Record {
                    id,
                    state: State::Succeeded,
                    error: None,
                });
                for j in self.dependents[id].clone() {
                    if self.state[j] == State::Waiting {
                        self.remaining[j] -= 1;
                        if self.remaining[j] == 0 && !self.stopping {
                            self.make_ready(j);
                        }
                    }
                }
            }
            Outcome::Cancelled => {
                self.set(id, State::Interrupted);
                acts.push(Action::Record {
                    id,
                    state: State::Interrupted,
                    error: Some("cancelled".into()),
                });
            }
            Outcome::Failure { message, retryable } => {
                if retryable && attempt < self.tasks[id].max_attempts && !self.stopping {
                    let t = &self.tasks[id];
                    let delay = (t.backoff_ms as f64 * t.backoff_factor.powi(attempt as i32 - 1))
                        .min(t.max_backoff_ms as f64) as u64;
                    let until_ms = now + delay;
                    self.set(id, State::RetryWait { attempt, until_ms });
                    acts.push(Action::Record {
                        id,
                        state: self.state[id].clone(),
                        error: Some(message),
                    });
                    acts.push(Action::WakeAt { ms: until_ms });
                } else {
                    self.set(id, State::Failed);
                    acts.push(Action::Record {
                        id,
                        state: State::Failed,
                        error: Some(message),
                    });
                    self.block_descendants(id, acts);
                    if self.options.fail_fast {
                        self.stop(acts, Some(id));
                    }
                }
            }
            Outcome::BadInput { producer, message } => {
                // The producer's result is unusable: run it again, then this task. Not an
                // attempt of this task's own.
                self.attempts[id] -= 1;
                self.set(id, State::Waiting);
                acts.push(Action::Record {
                    id,
                    state: State::Waiting,
                    error: Some(message),
                });
                self.invalidate(producer, acts);
            }
        }
    }

    /// A finished producer's outputs turned out corrupt: it becomes ready again and every
    /// not-yet-running dependent waits for it.
    fn invalidate(&mut self, p: TaskId, acts: &mut Vec<Action>) {
        if self.state[p].is_done() {
            self.tasks[p].cached = false;
            self.attempts[p] = 0;
            self.make_ready(p);
            acts.push(Action::Record {
                id: p,
                state: State::Ready,
                error: Some("its output was corrupt or missing: running it again".into()),
            });
        }
        for j in self.dependents[p].clone() {
            if matches!(self.state[j], State::Waiting | State::Ready) {
                if self.state[j] == State::Ready {
                    self.set(j, State::Waiting); // its heap entry is skipped when popped
                }
                self.remaining[j] = self.tasks[j]
                    .deps
                    .iter()
                    .filter(|&&d| !self.state[d].is_done())
                    .count();
            }
        }
    }

    fn block_descendants(&mut self, id: TaskId, acts: &mut Vec<Action>) {
        let mut stack = self.dependents[id].clone();
        while let Some(j) = stack.pop() {
            if matches!(self.state[j], State::Waiting | State::Ready) {
                self.set(j, State::Blocked { by: Some(id) });
                acts.push(Action::Record {
                    id: j,
                    state: self.state[j].clone(),
                    error: None,
                });
                stack.extend(self.dependents[j].iter().copied());
            }
        }
    }

    fn stop(&mut self, acts: &mut Vec<Action>, by: Option<TaskId>) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        for i in 0..self.state.len() {
            if matches!(
                self.state[i],
                State::Waiting | State::Ready | State::RetryWait { .. }
            ) {
                let s = if by.is_some() {
                    State::Blocked { by }
                } else {
                    State::Interrupted
                };
                self.set(i, s);
                acts.push(Action::Record {
                    id: i,
                    state: self.state[i].clone(),
                    error: None,
                });
            }
        }
        self.ready.clear();
    }

    fn schedule(&mut self, _now: u64, acts: &mut Vec<Action>) {
        if self.stopping {
            return;
        }
        let mut skipped = Vec::new();
        while let Some(entry) = self.ready.pop() {
            let i = entry.2.0;
            if self.state[i] != State::Ready {
                continue; // stale entry
            }
            match self.pools.try_alloc(&self.tasks[i].request) {
                Some(alloc) => {
                    self.attempts[i] += 1;
                    let attempt = self.attempts[i];
                    self.launches[i] += 1;
                    self.set(i, State::Running { attempt });
                    self.allocs[i] = Some(alloc.clone());
                    self.running += 1;
                    acts.push(Action::Record {
                        id: i,
                        state: self.state[i].clone(),
                        error: None,
                    });
                    acts.push(Action::Launch {
                        id: i,
                        attempt,
                        alloc,
                    });
                }
                None => {
                    if !self.pools.satisfiable(&self.tasks[i].request) {
                        self.set(i, State::Failed);
                        acts.push(Action::Record {
                            id: i,
                            state: State::Failed,
                            error: Some("its resource request exceeds what the machine has".into()),
                        });
                        self.block_descendants(i, acts);
                        continue;
                    }
                    skipped.push(entry);
                    if skipped.len() >= BACKFILL_WINDOW || self.pools.exhausted() {
                        break;
                    }
                }
            }
        }
        self.ready.extend(skipped);
    }

    /// True when nothing runs and nothing more will be launched.
    pub fn is_finished(&self) -> bool {
        self.running == 0 && self.n_ready == 0 && self.n_retry == 0
    }

    /// Earliest pending retry time, if any.
    pub fn next_wake(&self) -> Option<u64> {
        self.retries.peek().map(|&Reverse((ms, _))| ms)
    }

    /// Cross-structure invariants (used by tests after every step).
    pub fn sanity_check(&self) {
        let mut gpus_held = 0;
        let mut cpus_held = 0;
        let mut running = 0;
        for (i, s) in self.state.iter().enumerate() {
            match s {
                State::Running { attempt } => {
                    running += 1;
                    assert_eq!(*attempt, self.attempts[i]);
                    assert!(!self.tasks[i].cached || self.attempts[i] > 0);
                    for &d in &self.tasks[i].deps {
                        assert!(
                            self.state[d].is_done(),
                            "task {i} runs before its dependency {d} is done ({:?})",
                            self.state[d]
                        );
                    }
                    let a = self.allocs[i]
                        .as_ref()
                        .expect("running task holds an allocation");
                    gpus_held += a.gpus.len() as u32;
                    cpus_held += a.cpus;
                }
                _ => assert!(
                    self.allocs[i].is_none(),
                    "task {i} holds resources while {s:?}"
                ),
            }
        }
        assert_eq!(running, self.running);
        let count = |f: &dyn Fn(&State) -> bool| self.state.iter().filter(|s| f(s)).count();
        assert_eq!(self.n_ready, count(&|s| *s == State::Ready));
        assert_eq!(
            self.n_retry,
            count(&|s| matches!(s, State::RetryWait { .. }))
        );
        for (i, s) in self.state.iter().enumerate() {
            if let State::RetryWait { until_ms, .. } = s {
                assert!(
                    self.retries.iter().any(|r| r.0 == (*until_ms, i)),
                    "task {i} waits for a retry the queue does not hold"
                );
            }
        }
        assert_eq!(
            self.next_wake(),
            self.state
                .iter()
                .filter_map(|s| match s {
                    State::RetryWait { until_ms, .. } => Some(*until_ms),
                    _ => None,
                })
                .min(),
            "next_wake is the earliest retry"
        );
        let (g, c, ccap, named) = self.pools.usage();
        assert_eq!(g, gpus_held);
        assert_eq!(c, cpus_held);
        assert!(c <= ccap);
        assert!(g <= self.pools.gpu_count());
        for (u, cap) in named {
            assert!(u <= cap);
        }
    }

    /// Launch count of a task (every launch is a new attempt number).
    pub fn launches(&self, id: TaskId) -> u32 {
        self.launches[id]
    }
}

fn topo_order(tasks: &[TaskInfo], dependents: &[Vec<TaskId>]) -> Vec<TaskId> {
    let n = tasks.len();
    let mut indeg: Vec<usize> = tasks.iter().map(|t| t.deps.len()).collect();
    let mut q: Vec<TaskId> = (0..n).filter(|&i| indeg[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = q.pop() {
        order.push(i);
        for &j in &dependents[i] {
            indeg[j] -= 1;
            if indeg[j] == 0 {
                q.push(j);
            }
        }
    }
    order
}

#[cfg(test)]
mod tests;
