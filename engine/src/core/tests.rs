//! Scenario and property tests of the scheduler core, with no processes or clocks.

use super::resources::{Pools, Request};
use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn task(deps: &[usize]) -> TaskInfo {
    TaskInfo {
        deps: deps.to_vec(),
        request: Request {
            gpus: 0,
            cpus: 1,
            named: vec![],
        },
        max_attempts: 1,
        backoff_ms: 100,
        backoff_factor: 2.0,
        max_backoff_ms: 10_000,
        priority: 0,
        cached: false,
    }
}

fn launches(acts: &[Action]) -> Vec<(TaskId, u32, Vec<u32>)> {
    acts.iter()
        .filter_map(|a| {
            if let Action::Launch { id, attempt, alloc } = a {
                Some((*id, *attempt, alloc.gpus.clone()))
            } else {
                None
            }
        })
        .collect()
}

fn pools(gpus: u32, cpus: u32) -> Pools {
    Pools::new((0..gpus).collect(), cpus, &BTreeMap::new())
}

#[test]
fn chain_runs_in_order_and_cache_hits_are_skipped() {
    let mut t = vec![task(&[]), task(&[0]), task(&[1])];
    t[0].cached = true;
    let mut core = Core::new(t, pools(0, 4), Options::default());
    let acts = core.start(0);
    assert_eq!(launches(&acts), vec![(1, 1, vec![])]);
    assert_eq!(core.state(0), &State::Cached);
    let acts = core.handle(
        Event::Finished {
            id: 1,
            attempt: 1,
            outcome: Outcome::Success,
        },
        1,
    );
    assert_eq!(launches(&acts), vec![(2, 1, vec![])]);
    core.handle(
        Event::Finished {
            id: 2,
            attempt: 1,
            outcome: Outcome::Success,
        },
        2,
    );
    assert!(core.is_finished());
    assert_eq!(core.launches(0), 0);
}

#[test]
fn gpus_are_concrete_ids_and_never_shared() {
    let mut t = vec![task(&[]), task(&[]), task(&[])];
    for x in &mut t {
        x.request.gpus = 2;
    }
    let mut core = Core::new(
        t,
        Pools::new(vec![4, 5, 6, 7], 8, &BTreeMap::new()),
        Options::default(),
    );
    let acts = core.start(0);
    let l = launches(&acts);
    assert_eq!(l.len(), 2);
    assert_eq!(l[0].2, vec![4, 5]);
    assert_eq!(l[1].2, vec![6, 7]);
    let acts = core.handle(
        Event::Finished {
            id: l[0].0,
            attempt: 1,
            outcome: Outcome::Success,
        },
        1,
    );
    assert_eq!(launches(&acts)[0].2, vec![4, 5]);
    core.sanity_check();
}

#[test]
fn fails_twice_then_succeeds_with_backoff() {
    let mut t = vec![task(&[]), task(&[0])];
    t[0].max_attempts = 3;
    let mut core = Core::new(t, pools(0, 1), Options::default());
    core.start(0);
    let fail = Outcome::Failure {
        message: "boom".into(),
        retryable: true,
    };
    let acts = core.handle(
        Event::Finished {
            id: 0,
            attempt: 1,
            outcome: fail.clone(),
        },
        10,
    );
    assert!(acts.contains(&Action::WakeAt { ms: 110 }));
    assert!(launches(&core.handle(Event::Tick, 50)).is_empty());
    assert_eq!(
        launches(&core.handle(Event::Tick, 110)),
        vec![(0, 2, vec![])]
    );
    let acts = core.handle(
        Event::Finished {
            id: 0,
            attempt: 2,
            outcome: fail,
        },
        120,
    );
    assert!(
        acts.contains(&Action::WakeAt { ms: 320 }),
        "second backoff doubles: {acts:?}"
    );
    assert_eq!(
        launches(&core.handle(Event::Tick, 320)),
        vec![(0, 3, vec![])]
    );
    let acts = core.handle(
        Event::Finished {
            id: 0,
            attempt: 3,
            outcome: Outcome::Success,
        },
        330,
    );
    assert_eq!(launches(&acts), vec![(1, 1, vec![])]);
}

#[test]
fn failure_blocks_descendants_only_and_fail_fast_stops() {
    // 0 -> 1 -> 2 ; 3 independent
    let t = vec![task(&[]), task(&[0]), task(&[1]), task(&[])];
    let mut core = Core::new(t.clone(), pools(0, 1), Options::default());
    let first = launches(&core.start(0))[0].0;
    assert_eq!(first, 0, "longest critical path goes first");
    core.handle(
        Event::Finished {
            id: 0,
            attempt: 1,
            outcome: Outcome::Failure {
                message: "x".into(),
                retryable: true,
            },
        },
        1,
    );
    assert_eq!(core.state(1), &State::Blocked { by: Some(0) });
    assert_eq!(core.state(2), &State::Blocked { by: Some(0) });
    assert_eq!(core.state(3), &State::Running { attempt: 1 });

    let mut core = Core::new(t, pools(0, 1), Options { fail_fast: true });
    core.start(0);
    core.handle(
        Event::Finished {
            id: 0,
            attempt: 1,
            outcome: Outcome::Failure {
                message: "x".into(),
                retryable: true,
            },
        },
        1,
    );
    assert_eq!(core.state(3), &State::Blocked { by: Some(0) });
    assert!(core.is_finished());
}

#[test]
fn corrupt_input_reruns_the_producer_first() {
    let mut t = vec![task(&[]), task(&[0])];
    t[0].cached = true;
    let mut core = Core::new(t, pools(0, 1), Options::default());
    assert_eq!(launches(&core.start(0)), vec![(1, 1, vec![])]);
    let acts = core.handle(
        Event::Finished {
            id: 1,
            attempt: 1,
            outcome: Outcome::BadInput {
                producer: 0,
                message: "corrupt".into(),
            },
        },
        1,
    );
    assert_eq!(launches(&acts), vec![(0, 1, vec![])]);
    assert_eq!(core.state(1), &State::Waiting);
    let acts = core.handle(
        Event::Finished {
            id: 0,
            attempt: 1,
            outcome: Outcome::Success,
        },
        2,
    );
    assert_eq!(
        launches(&acts),
        vec![(1, 1, vec![])],
        "the consumer's bad-input attempt does not count"
    );
}

#[test]
fn interrupt_stops_launching() {
    let t = vec![task(&[]), task(&[]), task(&[0])];
    let mut core = Core::new(t, pools(0, 1), Options::default());
    core.start(0);
    core.handle(Event::Interrupt, 1);
    assert_eq!(core.state(1), &State::Interrupted);
    let acts = core.handle(
        Event::Finished {
            id: 0,
            attempt: 1,
            outcome: Outcome::Cancelled,
        },
        2,
    );
    assert!(launches(&acts).is_empty());
    assert!(core.is_finished());
}

#[test]
fn unsatisfiable_request_fails_instead_of_hanging() {
    let mut t = vec![task(&[]), task(&[0])];
    t[0].request.gpus = 3;
    let mut core = Core::new(t, pools(2, 1), Options::default());
    core.start(0);
    assert_eq!(core.state(0), &State::Failed);
    assert_eq!(core.state(1), &State::Blocked { by: Some(0) });
    assert!(core.is_finished());
}

/// A random DAG: each task depends on a random subset of earlier tasks, asks for random
/// resources, fails on a random set of attempts; some start cached.
#[derive(Debug, Clone)]
struct Scenario {
    tasks: Vec<(Vec<usize>, u32, u32, u32, bool, u32, u32)>, // deps, gpus, cpus, judge, cached, fail_first_n, max_attempts
    gpus: u32,
    cpus: u32,
    judge: u32,
    seed: u64,
    fail_fast: bool,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        1usize..30,
        0u32..4,
        1u32..5,
        1u32..3,
        any::<u64>(),
        any::<bool>(),
    )
        .prop_flat_map(|(n, gpus, cpus, judge, seed, fail_fast)| {
            let task = |i: usize| {
                (
                    proptest::collection::vec(0..i.max(1), 0..3.min(i + 1)),
                    0u32..3,
                    0u32..3,
                    0u32..2,
                    proptest::bool::weighted(0.2),
                    prop_oneof![4 => Just(0u32), 1 => 1u32..4],
                    1u32..4,
                )
                    .prop_map(move |(deps, g, c, j, cached, fails, max)| {
                        (
                            deps.into_iter().filter(|&d| d < i).collect::<Vec<_>>(),
                            g,
                            c,
                            j,
                            cached,
                            fails,
                            max,
                        )
                    })
            };
            let tasks: Vec<_> = (0..n).map(task).collect();
            (
                tasks,
                Just(gpus),
                Just(cpus),
                Just(judge),
                Just(seed),
                Just(fail_fast),
            )
                .prop_map(|(tasks, gpus, cpus, judge, seed, fail_fast)| Scenario {
                    tasks,
                    gpus,
                    cpus,
                    judge,
                    seed,
                    fail_fast,
                })
        })
}

proptest! {
    /// For any DAG, pools and failure pattern: dependencies finish before launch; each
    /// (task, attempt) launches at most once; pools are never over-committed; cached
    /// tasks never launch; a task fails for good only after its allowed attempts (or an
    /// unsatisfiable request, or with fail-fast a failed attempt after the run stopped); without fail-fast every task not downstream of a failure
    /// succeeds; the run always terminates.
    #[test]
    fn scheduler_invariants(s in scenario()) {
        let mut named = BTreeMap::new();
        named.insert("judge".to_string(), s.judge);
        let infos: Vec<TaskInfo> = s.tasks.iter().map(|(deps, g, c, j, cached, _, max)| TaskInfo {
            deps: { let mut d = deps.clone(); d.sort(); d.dedup(); d },
            request: Request { gpus: *g, cpus: *c, named: if *j > 0 { vec![(0, *j)] } else { vec![] } },
            max_attempts: *max, backoff_ms: 5, backoff_factor: 2.0, max_backoff_ms: 50, priority: 0, cached: *cached,
        }).collect();
        let mut core = Core::new(infos.clone(), Pools::new((0..s.gpus).collect(), s.cpus, &named), Options { fail_fast: s.fail_fast });
        let mut now = 0u64;
        let mut running: Vec<(TaskId, u32)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut rng = s.seed;
        let mut next = || { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; rng };
        let mut acts = core.start(now);
        for _ in 0..10_000 {
            for a in &acts {
                if let Action::Launch { id, attempt, alloc } = a {
                    prop_assert!(!infos[*id].cached, "cached task {id} launched");
                    prop_assert!(seen.insert((*id, *attempt)), "task {id} attempt {attempt} launched twice");
                    prop_assert_eq!(alloc.gpus.len() as u32, infos[*id].request.gpus);
                    running.push((*id, *attempt));
                }
            }
            core.sanity_check();
            if core.is_finished() { break; }
            if running.is_empty() {
                now = core.next_wake().unwrap_or(now + 1).max(now);
                acts = core.handle(Event::Tick, now);
                continue;
            }
            let k = (next() as usize) % running.len();
            let (id, attempt) = running.swap_remove(k);
            now += 1 + next() % 3;
            let fails = s.tasks[id].5;
            let outcome = if attempt <= fails { Outcome::Failure { message: "injected".into(), retryable: true } } else { Outcome::Success };
            acts = core.handle(Event::Finished { id, attempt, outcome }, now);
        }
        prop_assert!(core.is_finished(), "did not terminate");
        // Which tasks should have failed: those whose every allowed attempt fails, or whose
        // request can never fit.
        let fits = |i: usize| { let (_, g, c, j, ..) = &s.tasks[i]; *g <= s.gpus && *c <= s.cpus && *j <= s.judge };
        for (i, st) in core.states().iter().enumerate() {
            let (_, _, _, _, cached, fails, max) = &s.tasks[i];
            match st {
                State::Failed => prop_assert!(!fits(i) || fails >= max || (s.fail_fast && *fails > 0), "task {i} failed though it should succeed"),
                State::Blocked { by: Some(b) } => {
                    prop_assert_eq!(core.state(*b), &State::Failed);
                    if !s.fail_fast {
                        // `b` must be an ancestor of `i`.
                        let mut stack = infos[i].deps.clone();
                        let mut found = false;
                        while let Some(d) = stack.pop() { if d == *b { found = true; break; } stack.extend(infos[d].deps.iter().copied()); }
                        prop_assert!(found, "task {i} blocked by non-ancestor {b}");
                    }
                }
                State::Cached => prop_assert!(*cached),
                State::Succeeded => prop_assert!(!cached),
                other => prop_assert!(s.fail_fast && matches!(other, State::Blocked { .. }), "task {i} ended {other:?}"),
            }
        }
    }
}
