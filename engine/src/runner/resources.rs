//! The run's resource pools (GPUs, CPU slots, named pools) and each instance's request.

use super::{RunError, RunOptions};
use crate::core::resources::{Pools, Request};
use crate::plan::Plan;

/// CPU slots of a run whose default executor is `slurm`, without `--cpus` or a workflow
/// `resources: {cpus: N}`.
pub const SLURM_CPU_SLOTS: u32 = 1024;

/// Resolves the GPU pool and each instance's request; errors name the task and pool. What the
/// user should know (no GPU for GPU tasks) is pushed to `notices` (the runner emits them after
/// `start`).
pub fn resources(
    plan: &Plan,
    opts: &RunOptions,
    notices: &mut Vec<String>,
) -> Result<(Pools, Vec<Request>), RunError> {
    let w = &plan.workflow;
    let gpus: Vec<u32> = match (&opts.gpus, &w.pools.gpus) {
        (Some(g), _) => g.clone(),
        (None, Some(g)) => g.clone(),
        (None, None) => crate::gpu::discover()
            .map(|v| v.into_iter().map(|g| g.id).collect())
            .unwrap_or_default(),
    };
    let slurm = opts.executor == "slurm" || opts.executor == "slurm-steps";
    let cpus = opts.cpus.or(w.pools.cpus).unwrap_or_else(|| {
        if opts.executor == "slurm" {
            // the cluster, not this machine, bounds the CPUs: it queues what it cannot run yet
            SLURM_CPU_SLOTS
        } else if let Some(n) = allocation_cpus().filter(|_| slurm) {
            // steps share the allocation's CPUs
            n
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1)
        }
    });
    let pools = Pools::new(gpus.clone(), cpus, &w.pools.named);
    let gpu_tasks = plan
        .instances
        .iter()
        .filter(|i| i.resources.gpus > 0)
        .count();
    // Under Slurm an empty pool from discovery (a login node without GPUs) is not "no GPUs":
    // ask; `--gpus none` says it.
    if gpus.is_empty() && gpu_tasks > 0 && slurm && opts.gpus.is_none() && w.pools.gpus.is_none() {
        return Err(RunError::Invalid(format!(
            "{gpu_tasks} task(s) ask for GPUs and `--executor {}` takes them from the \
             cluster: say how many GPUs the run may hold at once with `--gpus 0,1,...,N-1` \
             (Slurm picks the devices) or `resources: {{gpus: N}}` in the workflow",
            opts.executor
        )));
    }
    if gpus.is_empty() && gpu_tasks > 0 {
        notices.push(format!(
            "no GPU found: {gpu_tasks} GPU task(s) will run on the CPU"
        ));
    }
    let mut reqs = Vec::with_capacity(plan.instances.len());
    for inst in &plan.instances {
        let r = &inst.resources;
        let mut named = Vec::new();
        for (pool, &n) in &r.pools {
            let idx = pools.pool_index(pool).ok_or_else(|| {
                RunError::Invalid(format!("task `{}` asks for resource `{pool}`, which the workflow does not declare under `resources:`", inst.name))
            })?;
            named.push((idx, n));
        }
        let req = Request {
            gpus: if gpus.is_empty() { 0 } else { r.gpus },
            cpus: r.cpus.min(cpus),
            named,
        };
        if !pools.satisfiable(&req) {
            let list = gpus
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            return Err(RunError::Invalid(format!(
                "task `{}` asks for {} GPU(s); this run has {} (ids: {})",
                inst.name,
                req.gpus,
                gpus.len(),
                if list.is_empty() { "none".into() } else { list }
            )));
        }
        reqs.push(req);
    }
    Ok((pools, reqs))
}

/// CPUs of the allocation this process runs in, on its first node (`SLURM_JOB_CPUS_PER_NODE`,
/// e.g. `16` or `16(x2)`).
pub fn allocation_cpus() -> Option<u32> {
    let v = std::env::var("SLURM_JOB_CPUS_PER_NODE").ok()?;
    let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok().filter(|n| *n > 0)
}
