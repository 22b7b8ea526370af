//! The runner's launch path: one attempt's inputs resolved from the producers' results,
//! its job description, and the executor that runs it.

use super::{Launched, RunError, RunOptions, slug};
use crate::exec::{ExecEvent, Executors, Job, JobInput, JobOutcome, Launch, Running};
use crate::kind::{Placement, Registry};
use crate::plan::{InstanceId, Plan};
use crate::store::{ResultManifest, Store};
use crate::ui::{Observers, RunEvent};
use crate::util::now_ms;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// What every launch of a run shares.
pub struct Launcher<'a> {
    pub plan: &'a Plan,
    pub registry: &'a Registry,
    pub store: &'a Store,
    pub opts: &'a RunOptions,
    pub executors: &'a Executors,
    pub host: &'a str,
    pub tx: &'a UnboundedSender<ExecEvent>,
}

impl Launcher<'_> {
    /// Starts attempt `attempt` of instance `id` on its executor. Producers' manifests are
    /// read from `manifests` (filled from the store on a miss); a producer whose result has
    /// disappeared is reported as a bad input (the runner runs the producer again). Errors
    /// only when the store cannot be read.
    #[allow(clippy::too_many_arguments)]
    pub async fn launch(
        &self,
        id: InstanceId,
        attempt: u32,
        gpus: Vec<u32>,
        pools: BTreeMap<String, u32>,
        manifests: &mut HashMap<String, ResultManifest>,
        obs: &mut Observers<'_>,
    ) -> Result<Launched, RunError> {
        let (plan, opts, store) = (self.plan, self.opts, self.store);
        let inst = &plan.instances[id];
        let log = opts
            .state_dir
            .join("logs")
            .join(&opts.run_id)
            .join(format!("{}.{attempt}.log", slug(&inst.name)));
        let mut inputs = std::collections::BTreeMap::new();
        let mut missing = None;
        for (name, items) in &inst.inputs {
            let mut v = Vec::new();
            for it in items {
                let pkey = &plan.instances[it.producer].key;
                if !manifests.contains_key(pkey) {
                    match store.get_result(pkey).await? {
                        Some(m) => {
                            manifests.insert(pkey.clone(), m);
                        }
                        None => {
                            missing = Some(it.producer);
                            break;
                        }
                    }
                }
                let m = &manifests[pkey];
                match m.outputs.get(&it.output) {
                    Some(a) => v.push(JobInput {
                        label: it.label.clone(),
                        producer_key: pkey.clone(),
                        output: it.output.clone(),
                        artifact: a.clone(),
                    }),
                    None => {
                        missing = Some(it.producer);
                        break;
                    }
                }
            }
            inputs.insert(name.clone(), v);
        }
        if let Some(p) = missing {
            let outcome = JobOutcome::BadInput {
                producer_key: plan.instances[p].key.clone(),
                message: "its result disappeared from the store".into(),
            };
            let _ = self.tx.send(ExecEvent::Done {
                id,
                attempt,
                outcome,
            });
            return Ok(Launched {
                started: Instant::now(),
                running: Running::new(),
                log,
            });
        }
        let job = Job {
            name: inst.name.clone(),
            key: inst.key.clone(),
            kind: inst.kind.clone(),
            kind_version: inst.kind_version,
            run_id: opts.run_id.clone(),
            attempt,
            params: inst.params.clone(),
            inputs,
            outputs: inst.outputs.clone(),
            gpus: gpus.clone(),
            pools,
            workdir: opts.state_dir.join("work").join(format!(
                "{}-{}-{attempt}",
                &inst.key[..16],
                opts.run_id
            )),
            log_path: log.clone(),
            store_url: store.url().to_string(),
            store_base: opts.base_dir.clone(),
            cache_dir: opts.state_dir.join("cache"),
            host: self.host.to_string(),
        };
        let kind = self.registry.get(&inst.kind);
        let needs_worker = kind
            .as_ref()
            .is_some_and(|k| k.placement() == Placement::Worker);
        let inline = kind.is_some_and(|k| k.inline(&inst.params));
        let name = match inst.executor.as_deref() {
            Some(e) => e,
            None if needs_worker && opts.executor == "in-process" => "workers",
            None => opts.executor.as_str(),
        };
        tracing::debug!(instance = %inst.name, key = %&inst.key[..12], attempt, ?gpus, executor = name, inline, "launch");
        obs.emit(RunEvent::Launch {
            t_ms: now_ms(),
            id,
            name: inst.name.clone(),
            key: inst.key.clone(),
            attempt,
            gpus: gpus.clone(),
        });
        let running = match self.executors.get(name) {
            Some(x) => x.launch(Launch {
                id,
                attempt,
                job,
                needs_worker,
                inline,
                timeout: inst.timeout,
                cpus: inst.resources.cpus,
                slurm: inst.slurm.clone(),
                events: self.tx.clone(),
            }),
            None => {
                let _ = self.tx.send(ExecEvent::Done {
                    id,
                    attempt,
                    outcome: JobOutcome::Failed {
                        message: format!("no executor `{name}` in this run"),
                        retryable: false,
                    },
                });
                Running::new()
            }
        };
        Ok(Launched {
            started: Instant::now(),
            running,
            log,
        })
    }
}
