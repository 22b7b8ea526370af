//! The runner's cache-check path: which instances the store already holds, checked cheaply
//! where a run depends on them, and forgetting a result whose blobs turned out bad.

use super::RunError;
use crate::plan::{InstanceId, Plan};
use crate::store::{ResultManifest, Store};
use std::collections::{HashMap, HashSet};

/// Which instances are cache hits. The cached results a re-running instance reads, and
/// those the run ends with (no dependents in the plan), are checked cheaply: every blob
/// present with its size (see [`Store::artifact_present`]); a failed check makes the
/// instance run again. `cocoflow verify` hashes every blob instead.
pub async fn cache_hits(
    plan: &Plan,
    store: &Store,
) -> Result<(Vec<bool>, HashMap<String, ResultManifest>), RunError> {
    let keys: Vec<String> = plan.instances.iter().map(|i| i.key.clone()).collect();
    let mut cached = store.have_results(&keys).await?;
    let dependents = plan.dependents();
    let mut manifests = HashMap::new();
    let mut checked = HashSet::new();
    let mut to_check: Vec<InstanceId> = plan
        .instances
        .iter()
        .filter(|i| cached[i.id] && dependents[i.id].is_empty())
        .map(|i| i.id)
        .collect();
    loop {
        for inst in &plan.instances {
            if !cached[inst.id] {
                to_check.extend(
                    inst.deps
                        .iter()
                        .copied()
                        .filter(|&d| cached[d] && !checked.contains(&d)),
                );
            }
        }
        if to_check.is_empty() {
            break;
        }
        for d in std::mem::take(&mut to_check) {
            if !checked.insert(d) {
                continue;
            }
            let ok = match store.get_result(&plan.instances[d].key).await? {
                Some(m) => {
                    let mut ok = true;
                    for a in m.outputs.values() {
                        if !store.artifact_present(a).await? {
                            ok = false;
                            break;
                        }
                    }
                    if ok {
                        manifests.insert(m.key.clone(), m);
                    }
                    ok
                }
                None => false,
            };
            if !ok {
                tracing::info!(instance = %plan.instances[d].name, "cached result has a missing or truncated output; it runs again");
                cached[d] = false;
            }
        }
    }
    Ok((cached, manifests))
}

/// Forgets a producer's result whose blobs failed verification, and removes bad blobs, so
/// it runs again and can store them afresh.
pub(super) async fn discard_result(
    store: &Store,
    key: &str,
    manifests: &mut HashMap<String, ResultManifest>,
) {
    let m = match manifests.remove(key) {
        Some(m) => Some(m),
        None => store.get_result(key).await.ok().flatten(),
    };
    if let Some(m) = m {
        for a in m.outputs.values() {
            for d in store
                .artifact_blobs(a)
                .await
                .unwrap_or_else(|_| vec![a.digest.clone()])
            {
                if store.get_blob(&d).await.is_err() {
                    let _ = store.delete_blob(&d).await;
                }
            }
        }
    }
    let _ = store.delete_result(key).await;
}
