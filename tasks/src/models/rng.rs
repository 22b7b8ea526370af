//! Deterministic random streams for weight initialisation and sampler noise: SplitMix64 in
//! plain Rust, so a seed gives the same numbers on every device, thread and libtorch build
//! (libtorch's global generator is shared by every task of the in-process executor).

use tch::{Device, Kind, Tensor};

/// SplitMix64 with a Box–Muller normal on top.
#[derive(Debug, Clone)]
pub struct StreamRng {
    state: u64,
    spare: Option<f64>,
}

impl StreamRng {
    pub fn new(seed: u64) -> StreamRng {
        StreamRng {
            state: seed ^ 0x6A09_E667_F3BC_C909,
            spare: None,
        }
    }

    /// An independent stream for `(seed, tag)`: a BLAKE3 of both, so streams for different
    /// tags (variable names, adapter names) never overlap in practice.
    pub fn derive(seed: u64, tag: &str) -> StreamRng {
        let h = blake3::hash(format!("{seed}/{tag}").as_bytes());
        StreamRng::new(u64::from_le_bytes(
            h.as_bytes()[..8].try_into().expect("8 bytes"),
        ))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller; both values of a pair are used).
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        // u1 in (0, 1] so that ln(u1) is finite.
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (2.0 * std::f64::consts::PI * u2).sin_cos();
        self.spare = Some(r * s);
        r * c
    }
}

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
