//! GPU discovery through the CUDA driver (cudarc, loaded at run time): works on machines
//! without CUDA, where it finds no GPUs instead of failing.

/// A GPU the driver reports.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuInfo {
    pub id: u32,
    pub name: String,
    pub total_mib: u64,
}

/// GPUs visible to this process (honours `CUDA_VISIBLE_DEVICES` like any CUDA program).
/// `Err` says why none could be listed (no driver, driver error).
pub fn discover() -> Result<Vec<GpuInfo>, String> {
    #[cfg(feature = "cuda-discovery")]
    {
        use cudarc::driver::{result, sys};
        // SAFETY: checks whether libcuda can be loaded; no driver call is made without it.
        if !unsafe { sys::is_culib_present() } {
            return Err("no CUDA driver (libcuda.so) on this machine".into());
        }
        result::init().map_err(|e| format!("CUDA driver failed to initialise: {e}"))?;
        let n = result::device::get_count().map_err(|e| format!("CUDA device count: {e}"))?;
        let mut out = Vec::new();
        for i in 0..n {
            let dev = result::device::get(i).map_err(|e| format!("CUDA device {i}: {e}"))?;
            let name = result::device::get_name(dev).unwrap_or_else(|_| "unknown GPU".into());
            // SAFETY: `dev` came from `device::get`.
            let total = unsafe { result::device::total_mem(dev) }.unwrap_or(0);
            out.push(GpuInfo {
                id: i as u32,
                name,
                total_mib: (total / (1024 * 1024)) as u64,
            });
        }
        Ok(out)
    }
    #[cfg(not(feature = "cuda-discovery"))]
    {
        Err("built without CUDA discovery".into())
    }
}

/// Parses `--gpus 0,1,3` (or `none`).
pub fn parse_list(text: &str) -> Result<Vec<u32>, String> {
    let t = text.trim();
    if t.is_empty() || t == "none" {
        return Ok(Vec::new());
    }
    let mut ids: Vec<u32> = t
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("`{s}` in `--gpus {text}` is not a GPU id"))
        })
        .collect::<Result<_, _>>()?;
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != n {
        return Err(format!("`--gpus {text}` names a GPU twice"));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    #[test]
    fn discovery_never_panics_and_lists_parse() {
        let _ = super::discover();
        assert_eq!(super::parse_list("0, 2,1"), Ok(vec![0, 1, 2]));
        assert_eq!(super::parse_list("none"), Ok(vec![]));
        assert!(super::parse_list("0,x").is_err());
        assert!(super::parse_list("1,1").is_err());
    }
}
