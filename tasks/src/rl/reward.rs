//! Reward mixing and optimality probability (method-spec §3; paper eq. 2/20, Alg. 1 l. 8–10).
//!
//! `r_raw = λ_mllm·r_mllm + λ_sim·r_sim`; the advantage `A = r_raw − mean_group(r_raw)` over the
//! group's valid samples; `r = 0.5 + 0.5·clip(A / Z, −1, 1)` with `Z = adv_clip·(std_all + 1e−4)`
//! (default, as DiffusionNFT's code) or a constant. Groups are keyed by (instruction, source
//! image digest). Degenerate groups (std ≤ `ban_std` or mean ≥ `ban_mean`) are left out of the
//! loss and counted. Standard deviations are population (ddof = 0), as `numpy.std`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How `Z` in `r = 0.5 + 0.5·clip(A/Z, −1, 1)` is chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Normalizer {
    /// `Z = adv_clip · (std of every valid r_raw of the iteration + 1e−4)`.
    GlobalStd { adv_clip: f64 },
    /// `Z = value`.
    Constant { value: f64 },
}

impl Default for Normalizer {
    fn default() -> Self {
        Normalizer::GlobalStd { adv_clip: 5.0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RewardConfig {
    /// Weight of the MLLM judge reward (default 0.8).
    #[serde(default = "default_lambda_mllm")]
    pub lambda_mllm: f64,
    /// Weight of the pixel similarity reward r_sim (default 0.2).
    #[serde(default = "default_lambda_sim")]
    pub lambda_sim: f64,
    #[serde(default)]
    pub normalizer: Normalizer,
    /// Groups whose r_raw std is at most this are degenerate (default 0.02).
    #[serde(default = "default_ban_std")]
    pub ban_std: f64,
    /// Groups whose r_raw mean is at least this are degenerate (default 0.9).
    #[serde(default = "default_ban_mean")]
    pub ban_mean: f64,
}

fn default_lambda_mllm() -> f64 {
    0.8
}
fn default_lambda_sim() -> f64 {
    0.2
}
fn default_ban_std() -> f64 {
    0.02
}
fn default_ban_mean() -> f64 {
    0.9
}

impl Default for RewardConfig {
    fn default() -> Self {
        RewardConfig {
            lambda_mllm: default_lambda_mllm(),
            lambda_sim: default_lambda_sim(),
            normalizer: Normalizer::default(),
            ban_std: default_ban_std(),
            ban_mean: default_ban_mean(),
        }
    }
}

/// The group of a sample: the same instruction on the same source image.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct GroupKey {
    pub instruction: String,
    /// BLAKE3 (or any stable digest) of the source image.
    pub source_digest: String,
}

/// One rollout sample's raw rewards. `None` = invalid (judge failed after retries) or
/// undefined (empty keep mask).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SampleRewards {
    pub group: GroupKey,
    pub r_mllm: Option<f64>,
    pub r_sim: Option<f64>,
}

/// Why a sample is out of the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Exclusion {
    /// The judge gave no score.
    InvalidJudge,
    /// r_sim is undefined (empty keep mask) while λ_sim > 0.
    UndefinedSim,
    /// Its group is degenerate (std ≤ ban_std or mean ≥ ban_mean).
    BannedGroup,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MixedSample {
    pub r_raw: Option<f64>,
    pub advantage: Option<f64>,
    /// Optimality probability in [0, 1]; `None` when excluded.
    pub r: Option<f64>,
    pub excluded: Option<Exclusion>,
}

/// Mean and population std of the defined values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Moments {
    pub n: usize,
    pub mean: f64,
    pub std: f64,
}

impl Moments {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Moments {
        let v: Vec<f64> = values.into_iter().collect();
        if v.is_empty() {
            return Moments::default();
        }
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        Moments {
            n: v.len(),
            mean,
            std: var.sqrt(),
        }
    }
}

/// Per-iteration statistics the `reward` task records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RewardStats {
    pub samples: usize,
    pub groups: usize,
    pub r_mllm: Moments,
    pub r_sim: Moments,
    pub r_raw: Moments,
    pub invalid_judge: usize,
    pub undefined_sim: usize,
    pub banned_groups: usize,
    pub banned_samples: usize,
    /// Samples that enter the loss.
    pub used: usize,
    /// The `Z` used.
    pub z: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MixedRewards {
    pub samples: Vec<MixedSample>,
    pub banned: Vec<GroupKey>,
    pub stats: RewardStats,
}

/// Mixes rewards, groups samples, computes optimality probabilities and bans degenerate groups.
pub fn mix(samples: &[SampleRewards], cfg: &RewardConfig) -> MixedRewards {
    let needs_sim = cfg.lambda_sim != 0.0;
    let mut out: Vec<MixedSample> = samples
        .iter()
        .map(|s| {
            let excluded = match (s.r_mllm, s.r_sim) {
                (None, _) if cfg.lambda_mllm != 0.0 => Some(Exclusion::InvalidJudge),
                (_, None) if needs_sim => Some(Exclusion::UndefinedSim),
                _ => None,
            };
            // eq. 2: r_raw = λ_mllm·r_mllm + λ_sim·r_sim (a zero weight ignores its term).
            let r_raw = excluded.is_none().then(|| {
                let m = if cfg.lambda_mllm != 0.0 {
                    cfg.lambda_mllm * s.r_mllm.unwrap_or(0.0)
                } else {
                    0.0
                };
                let d = if needs_sim {
                    cfg.lambda_sim * s.r_sim.unwrap_or(0.0)
                } else {
                    0.0
                };
                m + d
            });
            MixedSample {
                r_raw,
                advantage: None,
                r: None,
                excluded,
            }
        })
        .collect();

    let mut groups: BTreeMap<&GroupKey, Vec<usize>> = BTreeMap::new();
    for (i, s) in samples.iter().enumerate() {
        groups.entry(&s.group).or_default().push(i);
    }
    let all = Moments::of(out.iter().filter_map(|m| m.r_raw));
    let z = match cfg.normalizer {
        Normalizer::GlobalStd { adv_clip } => adv_clip * (all.std + 1e-4),
        Normalizer::Constant { value } => value,
    };
    let mut banned = Vec::new();
    let mut banned_samples = 0;
    for (key, idx) in &groups {
        let g = Moments::of(idx.iter().filter_map(|&i| out[i].r_raw));
        if g.n == 0 {
            continue;
        }
        let degenerate = g.std <= cfg.ban_std || g.mean >= cfg.ban_mean;
        for &i in idx {
            let Some(raw) = out[i].r_raw else { continue };
            let a = raw - g.mean;
            out[i].advantage = Some(a);
            if degenerate {
                out[i].excluded = Some(Exclusion::BannedGroup);
                banned_samples += 1;
            } else {
                // r = 0.5 + 0.5·clip(A/Z, −1, 1)
                out[i].r = Some(0.5 + 0.5 * (a / z).clamp(-1.0, 1.0));
            }
        }
        if degenerate {
            banned.push((*key).clone());
        }
    }
    let stats = RewardStats {
        samples: samples.len(),
        groups: groups.len(),
        r_mllm: Moments::of(samples.iter().filter_map(|s| s.r_mllm)),
        r_sim: Moments::of(samples.iter().filter_map(|s| s.r_sim)),
        r_raw: all,
        invalid_judge: out
            .iter()
            .filter(|m| m.excluded == Some(Exclusion::InvalidJudge))
            .count(),
        undefined_sim: out
            .iter()
            .filter(|m| m.excluded == Some(Exclusion::UndefinedSim))
            .count(),
        banned_groups: banned.len(),
        banned_samples,
        used: out.iter().filter(|m| m.r.is_some()).count(),
        z,
    };
    MixedRewards {
        samples: out,
        banned,
        stats,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: &str) -> GroupKey {
        GroupKey {
            instruction: i.into(),
            source_digest: "d".into(),
        }
    }

    fn s(g: &str, m: Option<f64>, sim: Option<f64>) -> SampleRewards {
        SampleRewards {
            group: key(g),
            r_mllm: m,
            r_sim: sim,
        }
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn hand_computed_mixing_and_optimality_probability() {
        // λ = 0.8 : 0.2. Group a: r_raw = 0.8·0.5+0.2·0.5 = 0.5 and 0.8·0.7+0.2·0.9 = 0.74.
        // Group b: 0.8·0.2+0.2·0.4 = 0.24 and 0.8·0.4+0.2·0.4 = 0.40.
        let samples = vec![
            s("a", Some(0.5), Some(0.5)),
            s("a", Some(0.7), Some(0.9)),
            s("b", Some(0.2), Some(0.4)),
            s("b", Some(0.4), Some(0.4)),
        ];
        let m = mix(&samples, &RewardConfig::default());
        let raw: Vec<f64> = m.samples.iter().map(|x| x.r_raw.unwrap()).collect();
        for (a, b) in raw.iter().zip([0.5, 0.74, 0.24, 0.40]) {
            close(*a, b);
        }
        // all = {0.5, 0.74, 0.24, 0.40}: mean 0.47, population std = sqrt(0.0331) (hand).
        let std =
            ((0.03f64.powi(2) + 0.27f64.powi(2) + 0.23f64.powi(2) + 0.07f64.powi(2)) / 4.0).sqrt();
        close(m.stats.r_raw.std, std);
        let z = 5.0 * (std + 1e-4);
        close(m.stats.z, z);
        // Group a mean 0.62: A = −0.12, +0.12. Group b mean 0.32: A = −0.08, +0.08.
        close(m.samples[0].advantage.unwrap(), -0.12);
        close(m.samples[0].r.unwrap(), 0.5 + 0.5 * (-0.12 / z));
        close(m.samples[1].r.unwrap(), 0.5 + 0.5 * (0.12 / z));
        close(m.samples[3].r.unwrap(), 0.5 + 0.5 * (0.08 / z));
        assert_eq!(m.stats.used, 4);
        assert_eq!(m.stats.groups, 2);
    }

    #[test]
    fn constant_normalizer_clips() {
        let cfg = RewardConfig {
            normalizer: Normalizer::Constant { value: 0.1 },
            lambda_mllm: 1.0,
            lambda_sim: 0.0,
            ..Default::default()
        };
        let m = mix(&[s("a", Some(0.0), None), s("a", Some(0.5), None)], &cfg);
        // mean 0.25, A = ∓0.25, A/Z = ∓2.5 → clipped to ∓1 → r = 0, 1.
        close(m.samples[0].r.unwrap(), 0.0);
        close(m.samples[1].r.unwrap(), 1.0);
    }

    #[test]
    fn degenerate_groups_are_banned_and_counted() {
        let cfg = RewardConfig::default();
        let samples = vec![
            // std 0 → banned
            s("flat", Some(0.5), Some(0.5)),
            s("flat", Some(0.5), Some(0.5)),
            // mean ≥ 0.9 → banned
            s("easy", Some(0.95), Some(0.95)),
            s("easy", Some(1.0), Some(0.9)),
            // fine
            s("ok", Some(0.1), Some(0.5)),
            s("ok", Some(0.9), Some(0.5)),
        ];
        let m = mix(&samples, &cfg);
        assert_eq!(m.stats.banned_groups, 2);
        assert_eq!(m.stats.banned_samples, 4);
        assert_eq!(m.stats.used, 2);
        assert_eq!(m.samples[0].excluded, Some(Exclusion::BannedGroup));
        assert_eq!(m.samples[2].excluded, Some(Exclusion::BannedGroup));
        assert!(m.samples[4].r.unwrap() < 0.5 && m.samples[5].r.unwrap() > 0.5);
    }

    #[test]
    fn invalid_and_undefined_samples_never_get_a_score() {
        let m = mix(
            &[
                s("a", None, Some(0.5)),
                s("a", Some(0.4), None),
                s("a", Some(0.2), Some(0.1)),
                s("a", Some(0.6), Some(0.3)),
            ],
            &RewardConfig::default(),
        );
        assert_eq!(m.samples[0].excluded, Some(Exclusion::InvalidJudge));
        assert_eq!(m.samples[1].excluded, Some(Exclusion::UndefinedSim));
        assert!(
            m.samples[0].r.is_none() && m.samples[1].r.is_none() && m.samples[0].r_raw.is_none()
        );
        assert_eq!(m.stats.invalid_judge, 1);
        assert_eq!(m.stats.undefined_sim, 1);
        // The group mean uses only the two valid samples: 0.18 and 0.54 → mean 0.36.
        close(m.samples[2].advantage.unwrap(), 0.18 - 0.36);
        // With λ_sim = 0, an undefined r_sim does not matter.
        let cfg = RewardConfig {
            lambda_mllm: 1.0,
            lambda_sim: 0.0,
            ..Default::default()
        };
        let m = mix(&[s("a", Some(0.4), None), s("a", Some(0.2), None)], &cfg);
        assert!(m.samples.iter().all(|x| x.r.is_some()));
    }

    #[test]
    fn groups_are_keyed_by_instruction_and_source() {
        let a = SampleRewards {
            group: GroupKey {
                instruction: "x".into(),
                source_digest: "1".into(),
            },
            r_mllm: Some(0.1),
            r_sim: Some(0.0),
        };
        let b = SampleRewards {
            group: GroupKey {
                instruction: "x".into(),
                source_digest: "2".into(),
            },
            r_mllm: Some(0.5),
            r_sim: Some(0.0),
        };
        let m = mix(
            &[a.clone(), a, b.clone(), b],
            &RewardConfig {
                ban_std: -1.0,
                ..Default::default()
            },
        );
        assert_eq!(m.stats.groups, 2);
        // Same instruction text, different source: separate groups (the reference code merges them).
        close(m.samples[0].advantage.unwrap(), 0.0);
        close(m.samples[2].advantage.unwrap(), 0.0);
    }
}
