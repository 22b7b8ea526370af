//! libtorch smoke tests: autograd, an optimiser, safetensors. On a GPU box they run on Cuda(0).

use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::device::select_device;

fn device() -> Device {
    select_device(&[0])
}

#[test]
fn autograd_gradient_of_a_quadratic() {
    let x = Tensor::from_slice(&[1.0f32, -2.0, 3.0])
        .to_device(device())
        .set_requires_grad(true);
    let y = (&x * &x).sum(Kind::Float);
    y.backward();
    let grad = Vec::<f32>::try_from(x.grad().to_device(Device::Cpu)).unwrap();
    assert_eq!(grad, vec![2.0, -4.0, 6.0]);
}

#[test]
fn adamw_decreases_a_quadratic_loss() {
    tch::manual_seed(0);
    let dev = device();
    let vs = nn::VarStore::new(dev);
    let w = vs.root().var(
        "w",
        &[4],
        nn::Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        },
    );
    let target = Tensor::from_slice(&[1.0f32, -2.0, 0.5, 3.0]).to_device(dev);
    let mut opt = nn::AdamW::default().build(&vs, 0.1).unwrap();
    let loss = || (&w - &target).square().sum(Kind::Float);
    let first = loss().double_value(&[]);
    let mut prev = first;
    for step in 0..100 {
        opt.backward_step(&loss());
        let now = loss().double_value(&[]);
        assert!(now.is_finite(), "step {step}: loss {now}");
        if step < 5 {
            assert!(now < prev, "step {step}: loss went from {prev} to {now}");
        }
        prev = now;
    }
    assert!(prev < first * 0.1, "loss {first} -> {prev}");
}

#[test]
fn safetensors_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tensors.safetensors");
    let weights = Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3]) / 4.0;
    let steps = Tensor::from_slice(&[7i64, -1, 1 << 40]);
    Tensor::write_safetensors(&[("weights", &weights), ("steps", &steps)], &path).unwrap();

    let mut read = Tensor::read_safetensors(&path).unwrap();
    read.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<&str> = read.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["steps", "weights"]);
    let (got_steps, got_weights) = (&read[0].1, &read[1].1);
    assert_eq!(got_weights.kind(), Kind::Float);
    assert_eq!(got_weights.size(), [2, 3]);
    assert!(got_weights.equal(&weights));
    assert_eq!(got_steps.kind(), Kind::Int64);
    assert!(got_steps.equal(&steps));
}
