//! The scheduler's shift schedule, true CFG, and whole 4-step edits with true CFG against
//! `QwenImageEditPipeline` (same noise, same source image).

use super::{TOL, assert_close, golden, meta, repo};
use cocoflow_torch::models::qwen_image_edit::config::read_config;
use cocoflow_torch::models::qwen_image_edit::pipeline::NEGATIVE_PROMPT;
use cocoflow_torch::models::qwen_image_edit::*;
use tch::{Device, Kind};

#[test]
fn shift_schedule_matches_the_scheduler() {
    let m = meta();
    let cfg = read_config(&repo().join("scheduler/scheduler_config.json")).unwrap();
    for s in m["schedules"].as_array().unwrap() {
        let seq = s["image_seq_len"].as_u64().unwrap();
        let steps = s["steps"].as_u64().unwrap() as usize;
        let got = qwen_schedule(&cfg, steps, seq).unwrap();
        let mu = s["mu"].as_f64().unwrap();
        assert!((got.mu - mu).abs() < 1e-12, "mu {seq}: {} vs {mu}", got.mu);
        for (key, have) in [("sigmas", &got.sigmas), ("timesteps", &got.timesteps)] {
            let want: Vec<f64> = s[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(have.len(), want.len(), "{key} of {seq}/{steps}");
            for (a, b) in have.iter().zip(&want) {
                assert!(
                    (*a as f64 - b).abs() <= 1e-6 * b.abs().max(1.0),
                    "{key} of {seq}/{steps}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn true_cfg_matches_the_pipeline() {
    let g = golden();
    let m = meta();
    let s = m["cfg"]["true_cfg_scale"].as_f64().unwrap();
    let out = true_cfg(&g["cfg.cond"], &g["cfg.uncond"], s);
    assert_close("true CFG with norm rescale", &out, &g["cfg.out"], TOL);
}

#[test]
fn whole_edit_with_true_cfg_matches_the_pipeline() {
    let g = golden();
    let m = meta();
    let e = &m["edit"];
    let pipe = QwenImageEditPipeline::load(&repo(), Device::Cpu, Kind::Float).unwrap();
    let area = e["condition_area"].as_f64().unwrap();
    for (j, edit) in e["edits"].as_array().unwrap().iter().enumerate() {
        assert_eq!(edit["negative"].as_str().unwrap(), NEGATIVE_PROMPT);
        let source = &g[&format!("edit.{j}.source")];
        let req = QwenEditRequest {
            source,
            prompt: edit["instruction"].as_str().unwrap(),
            negative_prompt: Some(NEGATIVE_PROMPT),
            true_cfg_scale: e["true_cfg_scale"].as_f64().unwrap(),
            latents: &g[&format!("edit.{j}.latents")],
            num_inference_steps: e["num_inference_steps"].as_u64().unwrap() as usize,
            condition_area: area,
            size: None,
        };
        let (latents, (w, h)) = tch::no_grad(|| pipe.edit_latents(&req)).unwrap();
        let cs: Vec<i64> = edit["condition_size"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(vec![w, h], cs, "edit {j} size");
        assert_close(
            &format!("edit {j}: 4 steps with true CFG, latents"),
            &latents,
            &g[&format!("edit.{j}.output_latents")],
            TOL,
        );
        let image = tch::no_grad(|| pipe.decode(&latents, w, h)).unwrap();
        assert_close(
            &format!("edit {j}: decoded image"),
            &image,
            &g[&format!("edit.{j}.output")],
            TOL,
        );
        // without a negative prompt there is no CFG: a different result
        let plain = QwenEditRequest {
            negative_prompt: None,
            ..req
        };
        let (no_cfg, _) = tch::no_grad(|| pipe.edit_latents(&plain)).unwrap();
        let d = (&no_cfg - &latents).abs().max().double_value(&[]);
        assert!(d > 1e-3, "true CFG changes the edit ({d})");
    }
}

/// The real weights are bfloat16: the whole edit runs in it (every cast in place) and stays
/// near the float32 reference.
#[test]
fn whole_edit_runs_in_bfloat16() {
    let g = golden();
    let m = meta();
    let e = &m["edit"];
    let edit = &e["edits"][0];
    let pipe = QwenImageEditPipeline::load(&repo(), Device::Cpu, Kind::BFloat16).unwrap();
    let req = QwenEditRequest {
        source: &g["edit.0.source"],
        prompt: edit["instruction"].as_str().unwrap(),
        negative_prompt: Some(NEGATIVE_PROMPT),
        true_cfg_scale: e["true_cfg_scale"].as_f64().unwrap(),
        latents: &g["edit.0.latents"],
        num_inference_steps: e["num_inference_steps"].as_u64().unwrap() as usize,
        condition_area: e["condition_area"].as_f64().unwrap(),
        size: None,
    };
    let (latents, (w, h)) = tch::no_grad(|| pipe.edit_latents(&req)).unwrap();
    assert_eq!(latents.kind(), Kind::BFloat16);
    assert_close(
        "bf16 edit latents",
        &latents,
        &g["edit.0.output_latents"],
        5e-2,
    );
    let image = tch::no_grad(|| pipe.decode(&latents, w, h)).unwrap();
    assert_close("bf16 edit image", &image, &g["edit.0.output"], 5e-2);
}
