//! Random tensors for weight initialisation and sampler noise, drawn from
//! [`StreamRng`] on the CPU (never libtorch's global generator, which every task of a process
//! shares), then moved to the device.

use crate::rng::StreamRng;
use tch::{Device, Kind, Tensor};

fn numel(shape: &[i64]) -> usize {
    shape.iter().product::<i64>().max(0) as usize
}

/// A tensor of i.i.d. `N(0, 1)` values from `rng`, built on the CPU, then moved to `device`.
pub fn normal_tensor(rng: &mut StreamRng, shape: &[i64], kind: Kind, device: Device) -> Tensor {
    let data: Vec<f64> = (0..numel(shape)).map(|_| rng.normal()).collect();
    Tensor::from_slice(&data)
        .reshape(shape)
        .to_kind(kind)
        .to_device(device)
}

/// A tensor of i.i.d. `U(−bound, bound)` values from `rng` (float32 on the CPU).
pub fn uniform_tensor(rng: &mut StreamRng, shape: &[i64], bound: f64) -> Tensor {
    let data: Vec<f32> = (0..numel(shape))
        .map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32)
        .collect();
    Tensor::from_slice(&data).reshape(shape)
}
