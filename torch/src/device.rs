//! What libtorch can see, which device a task runs on, and the CUDA allocator's counters.

use std::fmt;

use tch::{Cuda, Device};

/// The libtorch this process runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorchInfo {
    /// Version of the libtorch linked at build time, e.g. `2.11.0+cu130` (tch has no runtime
    /// query). `None` when the build found no version file next to the libraries.
    pub libtorch_version: Option<&'static str>,
    /// Whether the linked libtorch has a CUDA backend (`libtorch_cuda.so`).
    pub built_with_cuda: bool,
    /// Whether `libtorch_cuda.so` is loaded in this process. False with a CUDA build means the
    /// linker dropped it (tch-rs #980) and CUDA will never be available.
    pub torch_cuda_loaded: bool,
    pub cuda_available: bool,
    /// Number of CUDA devices visible to this process (after `CUDA_VISIBLE_DEVICES`).
    pub device_count: usize,
    pub cudnn_available: bool,
}

/// Asks libtorch what it can see. Cheap after the first call (CUDA initialisation).
pub fn torch_info() -> TorchInfo {
    let cuda_available = Cuda::is_available();
    TorchInfo {
        libtorch_version: option_env!("COCOFLOW_LIBTORCH_VERSION"),
        built_with_cuda: option_env!("COCOFLOW_LIBTORCH_HAS_CUDA") == Some("true"),
        torch_cuda_loaded: torch_cuda_loaded(),
        cuda_available,
        device_count: if cuda_available {
            usize::try_from(Cuda::device_count()).unwrap_or(0)
        } else {
            0
        },
        cudnn_available: cuda_available && Cuda::cudnn_is_available(),
    }
}

impl fmt::Display for TorchInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "libtorch {} (cuda build: {}, libtorch_cuda loaded: {}), cuda available: {}, device count: {}, cudnn: {}",
            self.libtorch_version.unwrap_or("unknown"),
            self.built_with_cuda,
            self.torch_cuda_loaded,
            self.cuda_available,
            self.device_count,
            self.cudnn_available
        )
    }
}

/// The device for a task given the GPU ids it was allocated: `Cuda(first id)` when CUDA is
/// available and ids were given, else `Cpu`. Ids are CUDA ordinals as this process sees them,
/// i.e. relative to `CUDA_VISIBLE_DEVICES` when that is set.
///
/// ```
/// use cocoflow_torch::device::select_device;
/// assert_eq!(select_device(&[]), tch::Device::Cpu);
/// ```
pub fn select_device(requested_gpu_ids: &[usize]) -> Device {
    match requested_gpu_ids.first() {
        Some(&id) if Cuda::is_available() => Device::Cuda(id),
        _ => Device::Cpu,
    }
}

/// The CUDA caching allocator's byte counters of one device, as PyTorch's
/// `torch.cuda.memory_allocated` / `max_memory_allocated` / `memory_reserved` /
/// `max_memory_reserved` read them (`allocated_bytes.all.*`, `reserved_bytes.all.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaMemory {
    /// Bytes in live tensors now.
    pub allocated: u64,
    /// Most bytes in live tensors since the start or the last [`reset_cuda_peak_memory`].
    pub peak_allocated: u64,
    /// Bytes the allocator holds from the driver (live tensors and its cache).
    pub reserved: u64,
    pub peak_reserved: u64,
}

// tasks/csrc/cuda_memory.cpp, compiled and linked by tasks/build.rs.
unsafe extern "C" {
    fn cocoflow_cuda_memory_stats(device: i32, out: *mut i64) -> i32;
    fn cocoflow_cuda_reset_peak_memory(device: i32) -> i32;
}

/// The allocator's counters for CUDA device `index`; `None` without CUDA or before libtorch
/// has allocated anything on a CUDA device in this process.
pub fn cuda_memory(index: usize) -> Option<CudaMemory> {
    let mut out = [0i64; 4];
    let device = i32::try_from(index).ok()?;
    // SAFETY: `out` holds the 4 values the function writes; it catches every C++ exception.
    let rc = unsafe { cocoflow_cuda_memory_stats(device, out.as_mut_ptr()) };
    let b = |v: i64| u64::try_from(v).unwrap_or(0);
    (rc == 0).then(|| CudaMemory {
        allocated: b(out[0]),
        peak_allocated: b(out[1]),
        reserved: b(out[2]),
        peak_reserved: b(out[3]),
    })
}

/// Resets the peaks of CUDA device `index` to the current values
/// (`torch.cuda.reset_peak_memory_stats`); false when there is no CUDA allocator in use.
pub fn reset_cuda_peak_memory(index: usize) -> bool {
    let Ok(device) = i32::try_from(index) else {
        return false;
    };
    // SAFETY: no pointers; the function catches every C++ exception.
    unsafe { cocoflow_cuda_reset_peak_memory(device) == 0 }
}

fn torch_cuda_loaded() -> bool {
    std::fs::read_to_string("/proc/self/maps").is_ok_and(|maps| maps.contains("/libtorch_cuda.so"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_info_matches_the_linked_libtorch() {
        let info = torch_info();
        eprintln!("{info}");
        let version = info
            .libtorch_version
            .expect("build.rs found the libtorch version");
        assert!(version.starts_with("2.11.0"), "{version}");
        // The --no-as-needed link arg of tasks/build.rs (tch-rs #980).
        if cfg!(target_os = "linux") && info.built_with_cuda {
            assert!(
                info.torch_cuda_loaded,
                "libtorch_cuda.so was dropped at link time"
            );
        }
        if !info.cuda_available {
            assert_eq!(info.device_count, 0);
            assert!(!info.cudnn_available);
        } else {
            assert!(info.device_count >= 1);
        }
    }

    #[test]
    fn cuda_memory_is_none_without_cuda_and_counts_allocations_with_it() {
        if !Cuda::is_available() {
            assert_eq!(cuda_memory(0), None);
            assert!(!reset_cuda_peak_memory(0));
            return;
        }
        let dev = Device::Cuda(0);
        let _warm = tch::Tensor::zeros([1], (tch::Kind::Float, dev));
        assert!(reset_cuda_peak_memory(0));
        let before = cuda_memory(0).expect("CUDA allocator stats");
        let t = tch::Tensor::zeros([64 << 20], (tch::Kind::Uint8, dev));
        let during = cuda_memory(0).unwrap();
        assert!(during.allocated >= before.allocated + (64 << 20));
        drop(t);
        let after = cuda_memory(0).unwrap();
        assert_eq!(after.allocated, before.allocated);
        assert!(after.peak_allocated >= before.allocated + (64 << 20));
        assert!(after.reserved >= after.allocated && after.peak_reserved >= after.reserved);
    }

    #[test]
    fn select_device_falls_back_to_cpu() {
        assert_eq!(select_device(&[]), Device::Cpu);
        let want = if Cuda::is_available() {
            Device::Cuda(0)
        } else {
            Device::Cpu
        };
        assert_eq!(select_device(&[0, 1]), want);
    }
}
