//! The Qwen2.5-VL prompt encoder against transformers / diffusers: image sizes, PIL's Lanczos,
//! the image processor, the vision tower, token ids and the pipeline's prompt states.

use super::{TOL, assert_close, golden, meta, rel_err, repo};
use cocoflow_torch::models::qwen_image_edit::prompt::{
    PROMPT_TEMPLATE, PROMPT_TEMPLATE_START_IDX, slice_prompt,
};
use cocoflow_torch::models::qwen_image_edit::*;
use serde_json::Value;
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn grids(v: &Value) -> Vec<(i64, i64, i64)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let g = ints(g);
            (g[0], g[1], g[2])
        })
        .collect()
}

fn ids_of(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.to_kind(Kind::Int64).view([-1])).unwrap()
}

/// gen.py's `checksum`: Σ byte[i]·(i mod 65521 + 1) over the (C, H, W) bytes, mod 2^61 − 1.
fn checksum(image: &Tensor) -> u64 {
    let v = Vec::<u8>::try_from(image.contiguous().view([-1])).unwrap();
    let m: u128 = (1u128 << 61) - 1;
    let s: u128 = v
        .iter()
        .enumerate()
        .map(|(i, b)| *b as u128 * ((i as u128 % 65521) + 1))
        .sum();
    (s % m) as u64
}

fn encoder() -> QwenVlPromptEncoder {
    QwenVlPromptEncoder::load(
        &repo().join("text_encoder"),
        &repo().join("processor"),
        Device::Cpu,
        Kind::Float,
    )
    .unwrap()
}

/// The pipeline's condition image: Lanczos to `calculate_dimensions(1024², w/h)`.
fn condition(source: &Tensor) -> Tensor {
    let s = source.size();
    let (w, h) = calculate_dimensions(1024.0 * 1024.0, s[2] as f64 / s[1] as f64);
    pil_lanczos_resize(source, w, h).unwrap()
}

#[test]
fn image_sizes_match_the_pipeline_and_processor() {
    let m = meta();
    for c in m["calculate_dimensions"].as_array().unwrap() {
        let (w, h) = (c["width"].as_f64().unwrap(), c["height"].as_f64().unwrap());
        let (cw, ch) = calculate_dimensions(1024.0 * 1024.0, w / h);
        assert_eq!(
            vec![cw, ch],
            ints(&c["out"]),
            "calculate_dimensions {w}×{h}"
        );
    }
    for c in m["smart_resize"].as_array().unwrap() {
        let (h, w) = (c["height"].as_i64().unwrap(), c["width"].as_i64().unwrap());
        let min = c.get("min").map_or(56 * 56, |v| v.as_i64().unwrap());
        let max = c.get("max").map_or(28 * 28 * 1280, |v| v.as_i64().unwrap());
        let (rh, rw) = smart_resize(h, w, 28, min, max).unwrap();
        assert_eq!(vec![rh, rw], ints(&c["out"]), "smart_resize {h}×{w}");
    }
    assert!(
        smart_resize(3, 1000, 28, 3136, 12544).is_err(),
        "ratio > 200"
    );
}

#[test]
fn lanczos_is_bit_exact_with_pil() {
    let g = golden();
    let m = meta();
    for set in ["lanczos", "lanczos_reduce"] {
        for (i, c) in m[set].as_array().unwrap().iter().enumerate() {
            let out = ints(&c["out"]);
            let got = pil_lanczos_resize(&g[&format!("{set}.{i}.in")], out[0], out[1]).unwrap();
            let want = &g[&format!("{set}.{i}.out")];
            assert_eq!(got.size(), want.size(), "{set} case {i}");
            let diff = (got.to_kind(Kind::Int64) - want.to_kind(Kind::Int64))
                .abs()
                .max()
                .int64_value(&[]);
            assert_eq!(diff, 0, "{set} case {i}: max byte difference {diff}");
        }
    }
}

#[test]
fn image_processor_matches_transformers() {
    let g = golden();
    let m = meta();
    let proc = Qwen2VlImageProcessor::load(&repo().join("processor")).unwrap();
    assert_eq!(proc.cfg.pixel_limits(), (3136, 12544));
    for (i, c) in m["processor"].as_array().unwrap().iter().enumerate() {
        let (pv, grid) = proc.preprocess_one(&g[&format!("proc.{i}.image")]).unwrap();
        assert_eq!(vec![grid], grids(&c["grid_thw"]), "processor case {i} grid");
        assert_close(
            &format!("processor case {i} pixel_values"),
            &pv,
            &g[&format!("proc.{i}.pixel_values")],
            TOL,
        );
    }
}

#[test]
fn vision_tower_matches_transformers() {
    let g = golden();
    let m = meta();
    let enc = encoder();
    let imgs = [&g["vision.0.image"], &g["vision.1.image"]];
    let vi = enc.processor.preprocess(&imgs).unwrap();
    assert_eq!(vi.grid_thw, grids(&m["vision"]["grid_thw"]));
    let feats = tch::no_grad(|| enc.vision.forward(&vi.pixel_values, &vi.grid_thw)).unwrap();
    assert_close("vision tower, two images", &feats, &g["vision.embeds"], TOL);
}

#[test]
fn prompt_encoder_matches_the_pipeline() {
    let g = golden();
    let m = meta();
    let enc = encoder();
    let p = &m["prompt"];
    assert_eq!(p["template"].as_str().unwrap(), PROMPT_TEMPLATE);
    assert_eq!(p["drop_idx"].as_i64().unwrap(), PROMPT_TEMPLATE_START_IDX);
    let pairs = p["pairs"].as_array().unwrap();
    assert!(pairs.len() >= 10);
    for (i, pair) in pairs.iter().enumerate() {
        let text = pair["instruction"].as_str().unwrap();
        let source = &g[&format!("prompt.{i}.source")];
        let cond = condition(source);
        let cs = cond.size();
        assert_eq!(
            vec![cs[2], cs[1]],
            ints(&pair["condition_size"]),
            "pair {i} size"
        );
        assert_eq!(
            checksum(&cond),
            pair["condition_checksum"].as_u64().unwrap(),
            "pair {i}: the Lanczos condition image differs from PIL's"
        );
        let inp = enc.inputs(&[text], &[&cond]).unwrap();
        assert_eq!(inp.grid_thw, grids(&pair["grid_thw"]), "pair {i} grid");
        assert_eq!(
            ids_of(&inp.input_ids),
            ints(&pair["input_ids"]),
            "pair {i} ({text:?}) token ids"
        );
        if i == 0 {
            assert_close(
                "pair 0 pixel_values",
                &inp.pixel_values,
                &g["prompt.0.pixel_values"],
                TOL,
            );
        }
        let hidden = tch::no_grad(|| enc.hidden_states(&inp, None)).unwrap();
        let out = slice_prompt(&hidden, &inp.attention_mask);
        assert!(out.pipeline_mask().is_none(), "one prompt: no mask");
        assert_close(
            &format!("prompt states, pair {i} ({text:?})"),
            &out.embeds.squeeze_dim(0),
            &g[&format!("prompt.{i}.embeds")],
            TOL,
        );
    }
}

fn batch_conditions(g: &BTreeMap<String, Tensor>, m: &Value) -> (Vec<String>, Vec<Tensor>) {
    let pairs = m["prompt"]["pairs"].as_array().unwrap();
    ints(&m["prompt"]["batch"]["pairs"])
        .into_iter()
        .map(|i| {
            let t = pairs[i as usize]["instruction"]
                .as_str()
                .unwrap()
                .to_string();
            (t, condition(&g[&format!("prompt.{i}.source")]))
        })
        .unzip()
}

#[test]
fn prompt_encoder_batch_padding_and_mask_match_the_pipeline() {
    let g = golden();
    let m = meta();
    let mut enc = encoder();
    let (texts, conds) = batch_conditions(&g, &m);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let conds: Vec<&Tensor> = conds.iter().collect();
    let b = &m["prompt"]["batch"];
    assert_eq!(b["padding_side"].as_str().unwrap(), "right");
    let inp = enc.inputs(&texts, &conds).unwrap();
    let want_ids: Vec<i64> = b["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(ints)
        .collect();
    let want_mask: Vec<i64> = b["attention_mask"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(ints)
        .collect();
    assert_eq!(
        ids_of(&inp.input_ids),
        want_ids,
        "batch token ids (right padding)"
    );
    assert_eq!(
        ids_of(&inp.attention_mask),
        want_mask,
        "batch attention mask"
    );
    let hidden = tch::no_grad(|| enc.hidden_states(&inp, None)).unwrap();
    let valid = inp.attention_mask.unsqueeze(-1).to_kind(Kind::Float);
    assert_close(
        "batch last hidden state (1-D positions), real tokens",
        &(&hidden * &valid),
        &(&g["prompt.batch.hidden_1d"] * &valid),
        TOL,
    );
    let pos = g["prompt.batch.position_ids_mrope"].to_kind(Kind::Int64);
    let mrope = tch::no_grad(|| enc.hidden_states(&inp, Some(&pos))).unwrap();
    assert_close(
        "batch last hidden state (3-D M-RoPE positions), real tokens",
        &(&mrope * &valid),
        &(&g["prompt.batch.hidden_mrope"] * &valid),
        TOL,
    );
    let out = tch::no_grad(|| enc.encode(&texts, &conds)).unwrap();
    assert_close(
        "batch prompt states",
        &out.embeds,
        &g["prompt.batch.embeds"],
        TOL,
    );
    assert_eq!(
        rel_err(&out.mask.to_kind(Kind::Float), &g["prompt.batch.mask"]),
        0.0,
        "batch prompt mask"
    );
    assert!(out.pipeline_mask().is_some());

    enc.tokenizer.pad_left = true;
    let out = tch::no_grad(|| enc.encode(&texts, &conds)).unwrap();
    assert_close(
        "batch prompt states, left padding",
        &out.embeds,
        &g["prompt.batch_left.embeds"],
        TOL,
    );
    assert_eq!(
        rel_err(&out.mask.to_kind(Kind::Float), &g["prompt.batch_left.mask"]),
        0.0,
        "batch prompt mask, left padding"
    );
}

/// Qwen/Qwen-Image-Edit's `text_encoder/config.json` is in transformers 4's flat layout
/// (language-model keys at the top, `rope_scaling: {type: mrope}`, `in_chans`).
#[test]
fn flat_transformers_4_text_encoder_config_reads() {
    let v: Value = serde_json::from_str(
        r#"{
        "architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
        "hidden_act": "silu", "hidden_size": 3584, "intermediate_size": 18944,
        "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4,
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "vocab_size": 152064,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "use_sliding_window": false, "sliding_window": 32768,
        "image_token_id": 151655, "video_token_id": 151656,
        "vision_start_token_id": 151652, "vision_end_token_id": 151653,
        "vision_config": {"depth": 32, "hidden_act": "silu", "hidden_size": 1280,
            "intermediate_size": 3420, "num_heads": 16, "in_chans": 3, "out_hidden_size": 3584,
            "patch_size": 14, "spatial_merge_size": 2, "spatial_patch_size": 14,
            "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31],
            "tokens_per_second": 2, "temporal_patch_size": 2}
    }"#,
    )
    .unwrap();
    let cfg = Qwen25VlConfig::from_value(&v).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.text.head_dim(), 128);
    assert_eq!(cfg.text.num_key_value_heads, 4);
    assert_eq!(cfg.text.rope.mrope_section, vec![16, 24, 24]);
    assert_eq!(cfg.text.rope.theta, 1e6);
    assert_eq!(cfg.vision.head_dim(), 80);
    assert_eq!(cfg.vision.rope_theta(), 10000.0);
    assert_eq!(cfg.vision.fullatt_block_indexes, vec![7, 15, 23, 31]);
    assert_eq!(cfg.image_token_id, 151655);
}

/// transformers 4's `processor/preprocessor_config.json` (Qwen/Qwen-Image-Edit's layout):
/// `min_pixels` / `max_pixels` beside `size`, no `processor_config.json`.
#[test]
fn transformers_4_preprocessor_config_reads() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("preprocessor_config.json"),
        r#"{"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14,
            "temporal_patch_size": 2, "merge_size": 2,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor"}"#,
    )
    .unwrap();
    let proc = Qwen2VlImageProcessor::load(tmp.path()).unwrap();
    assert_eq!(proc.cfg.pixel_limits(), (3136, 12845056));
    assert_eq!(proc.target_size(1024, 1024).unwrap(), (1036, 1036));
    std::fs::write(
        tmp.path().join("processor_config.json"),
        r#"{"processor_class": "Qwen2VLProcessor"}"#,
    )
    .unwrap();
    // transformers 5's file without an `image_processor` entry falls back to the v4 file
    assert_eq!(
        Qwen2VlImageProcessor::load(tmp.path())
            .unwrap()
            .cfg
            .pixel_limits(),
        (3136, 12845056)
    );
    std::fs::remove_file(tmp.path().join("preprocessor_config.json")).unwrap();
    let err = Qwen2VlImageProcessor::load(tmp.path())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "bad config `{}`: no `image_processor` entry",
            tmp.path().join("processor_config.json").display()
        )
    );
}
