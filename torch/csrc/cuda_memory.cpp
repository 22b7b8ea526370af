// The CUDA caching allocator's statistics (what `torch.cuda.max_memory_allocated` and friends
// read), which tch does not expose. Compiled by tasks/build.rs against the linked libtorch's
// headers; only c10 core headers, so it builds with a CPU-only libtorch too (the calls then
// report "no CUDA allocator"). Used by `cocoflow_tasks::device::cuda_memory`.
#include <c10/core/CachingDeviceAllocator.h>
#include <c10/core/DeviceType.h>

#include <cstdint>

namespace {
const c10::CachingAllocator::Stat& aggregate(const c10::CachingAllocator::StatArray& a) {
  return a[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
}

// The CUDA device allocator when libtorch has one and it has been used; nullptr otherwise.
c10::DeviceAllocator* cuda_allocator() {
  auto* a = dynamic_cast<c10::DeviceAllocator*>(c10::GetAllocator(c10::DeviceType::CUDA));
  return (a != nullptr && a->initialized()) ? a : nullptr;
}
}  // namespace

// out[0..4] = allocated bytes (current, peak), reserved bytes (current, peak) of `device`.
// Returns 0 on success, 1 when there is no initialised CUDA allocator, 2 on a C++ exception.
extern "C" int cocoflow_cuda_memory_stats(int device, int64_t* out) {
  try {
    auto* a = cuda_allocator();
    if (a == nullptr) return 1;
    const auto s = a->getDeviceStats(static_cast<c10::DeviceIndex>(device));
    out[0] = aggregate(s.allocated_bytes).current;
    out[1] = aggregate(s.allocated_bytes).peak;
    out[2] = aggregate(s.reserved_bytes).current;
    out[3] = aggregate(s.reserved_bytes).peak;
    return 0;
  } catch (...) {
    return 2;
  }
}

// Resets the peaks of `device` to the current values (`torch.cuda.reset_peak_memory_stats`).
extern "C" int cocoflow_cuda_reset_peak_memory(int device) {
  try {
    auto* a = cuda_allocator();
    if (a == nullptr) return 1;
    a->resetPeakStats(static_cast<c10::DeviceIndex>(device));
    return 0;
  } catch (...) {
    return 2;
  }
}
