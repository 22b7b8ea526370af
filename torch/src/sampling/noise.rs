//! Per-sample initial noise: each sample's ε comes from its own seed alone, so a rollout is
//! reproducible whatever batch it ran in and on whatever device.

use crate::models::random::normal_tensor;
use crate::rng::StreamRng;
use tch::{Device, Kind, Tensor};

/// `N(0, I)` noise of `shape` (one sample, no batch dimension) for `seed`.
pub fn sample_noise(seed: u64, shape: &[i64], kind: Kind, device: Device) -> Tensor {
    normal_tensor(
        &mut StreamRng::derive(seed, "sampler/initial-noise"),
        shape,
        kind,
        device,
    )
}

/// The noise of each seed stacked: `(B, *shape)`.
pub fn batch_noise(seeds: &[u64], shape: &[i64], kind: Kind, device: Device) -> Tensor {
    let items: Vec<Tensor> = seeds
        .iter()
        .map(|&s| sample_noise(s, shape, kind, Device::Cpu))
        .collect();
    Tensor::stack(&items, 0).to_device(device)
}
