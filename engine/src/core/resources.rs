//! Resource pools: an indexed GPU pool (tasks get concrete ids), CPU slots and named
//! counted pools (e.g. `judge: 8` concurrent judge requests).

use std::collections::BTreeMap;

/// What one task asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub gpus: u32,
    pub cpus: u32,
    /// (pool index, amount)
    pub named: Vec<(usize, u32)>,
}

/// What one running task holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocation {
    pub gpus: Vec<u32>,
    pub cpus: u32,
    pub named: Vec<(usize, u32)>,
}

#[derive(Debug, Clone)]
pub struct Pools {
    gpu_ids: Vec<u32>,
    gpu_busy: Vec<bool>,
    cpus: u32,
    cpus_used: u32,
    names: Vec<String>,
    caps: Vec<u32>,
    used: Vec<u32>,
}

impl Pools {
    pub fn new(gpu_ids: Vec<u32>, cpus: u32, named: &BTreeMap<String, u32>) -> Pools {
        Pools {
            gpu_busy: vec![false; gpu_ids.len()],
            gpu_ids,
            cpus,
            cpus_used: 0,
            names: named.keys().cloned().collect(),
            caps: named.values().copied().collect(),
            used: vec![0; named.len()],
        }
    }

    pub fn pool_index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    pub fn pool_name(&self, i: usize) -> &str {
        &self.names[i]
    }

    pub fn gpu_count(&self) -> u32 {
        self.gpu_ids.len() as u32
    }

    pub fn cpus(&self) -> u32 {
        self.cpus
    }

    /// Whether the request could ever be granted on an idle machine.
    pub fn satisfiable(&self, r: &Request) -> bool {
        r.gpus as usize <= self.gpu_ids.len()
            && r.cpus <= self.cpus
            && r.named.iter().all(|&(i, n)| n <= self.caps[i])
    }

    pub fn fits(&self, r: &Request) -> bool {
        let free_gpus = self.gpu_busy.iter().filter(|b| !**b).count();
        r.gpus as usize <= free_gpus
            && self.cpus_used + r.cpus <= self.cpus
            && r.named
                .iter()
                .all(|&(i, n)| self.used[i] + n <= self.caps[i])
    }

    /// Grants the request (lowest free GPU ids first), or `None` if it does not fit now.
    pub fn try_alloc(&mut self, r: &Request) -> Option<Allocation> {
        if !self.fits(r) {
            return None;
        }
        let mut gpus = Vec::with_capacity(r.gpus as usize);
        for (i, busy) in self.gpu_busy.iter_mut().enumerate() {
            if gpus.len() == r.gpus as usize {
                break;
            }
            if !*busy {
                *busy = true;
                gpus.push(self.gpu_ids[i]);
            }
        }
        self.cpus_used += r.cpus;
        for &(i, n) in &r.named {
            self.used[i] += n;
        }
        Some(Allocation {
            gpus,
            cpus: r.cpus,
            named: r.named.clone(),
        })
    }

    pub fn release(&mut self, a: &Allocation) {
        for g in &a.gpus {
            if let Some(i) = self.gpu_ids.iter().position(|x| x == g) {
                debug_assert!(self.gpu_busy[i], "gpu {g} released twice");
                self.gpu_busy[i] = false;
            }
        }
        self.cpus_used -= a.cpus;
        for &(i, n) in &a.named {
            self.used[i] -= n;
        }
    }

    /// Whether nothing at all is free (lets the scheduler stop scanning early).
    pub fn exhausted(&self) -> bool {
        self.cpus_used >= self.cpus
            && self.gpu_busy.iter().all(|b| *b)
            && self.used.iter().zip(&self.caps).all(|(u, c)| u >= c)
    }

    /// (used, capacity) per dimension, for invariant checks.
    pub fn usage(&self) -> (u32, u32, u32, Vec<(u32, u32)>) {
        (
            self.gpu_busy.iter().filter(|b| **b).count() as u32,
            self.cpus_used,
            self.cpus,
            self.used
                .iter()
                .copied()
                .zip(self.caps.iter().copied())
                .collect(),
        )
    }
}
