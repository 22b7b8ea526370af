//! The statistics of a human-preference ranking study (paper appendix C.2, method-spec §8).
//!
//! Per sample an annotator sees the source image, the instruction and every method's edit
//! (blind) and ranks the methods, once per criterion (`success`, `consistency`), 1 = best,
//! ties allowed. Raw ranks are read as an ordinal order only: [`mid_ranks`] turns every answer
//! into fractional (mid-)ranks over the positions 1..n, so `{1, 1, 2}`, `{1, 1, 3}` and
//! `{2, 2, 3}` all become `{1.5, 1.5, 3}`.
//!
//! [`summarize`] gives, per criterion: the mean mid-rank of every method with a 95 % cluster
//! bootstrap percentile interval (samples are resampled with replacement and every answer of a
//! drawn sample comes along), pairwise win rates, and the agreement between annotators
//! (Kendall's W with the tie correction, per sample, and the raw pairwise agreement rate); and
//! per edit type the mean mid-rank of every method. [`to_csv`] and [`summary_markdown`] write
//! the answers and the summary out. Pure functions, no I/O; the same inputs give the same
//! output bytes (the bootstrap draws from [`SplitMix64`] seeded by the caller's seed).
//!
//! Which answers count ([`summarize`]):
//! - an answer whose criterion is not one of `criteria` is left out and counted in
//!   [`Summary::unlisted_criterion`];
//! - an answer that lacks a rank for one of `methods`, or has a rank that is not finite, is
//!   invalid: it is left out and counted in [`Summary::skipped`];
//! - ranks of methods that are not in `methods` are dropped before the mid-ranks are taken, so
//!   the mid-ranks of a valid answer always lie over 1..n with n = `methods.len()`;
//! - every answer is one rater: an annotator who answered the same (sample, criterion) twice
//!   counts twice (deduplicate before, if that is not wanted).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::report::table::csv_field;
use crate::rng::{SplitMix64, combine, tag_state};

/// The coverage of the bootstrap intervals.
pub const CONFIDENCE: f64 = 0.95;

/// One annotator's ranking of every method for one sample and one criterion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub annotator: String,
    pub sample: String,
    pub edit_type: String,
    pub criterion: String,
    /// Method → rank as given (1 = best, ties allowed; only the order matters).
    pub ranks: BTreeMap<String, f64>,
}

/// The whole study: see the module documentation for which answers count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The methods, in the caller's order (duplicates dropped); every table follows it.
    pub methods: Vec<String>,
    /// The criteria, in the caller's order (duplicates dropped).
    pub criteria: Vec<String>,
    /// Bootstrap resamples per criterion (0: no intervals).
    pub n_boot: usize,
    pub seed: u64,
    /// The coverage of the intervals ([`CONFIDENCE`]).
    pub confidence: f64,
    /// The valid answers of the listed criteria, all criteria together.
    pub n_answers: usize,
    /// Invalid answers (a method of `methods` missing, or a rank not finite), left out.
    pub skipped: usize,
    /// Answers of a criterion that is not in `criteria`, left out.
    pub unlisted_criterion: usize,
    /// One per criterion, in `criteria` order (present even without answers).
    pub per_criterion: Vec<CriterionSummary>,
    /// One per edit type of the valid answers, sorted by name.
    pub per_edit_type: Vec<EditTypeSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriterionSummary {
    pub criterion: String,
    /// Valid answers of this criterion.
    pub n_answers: usize,
    /// Distinct samples among them (the bootstrap's clusters).
    pub n_samples: usize,
    /// One per method, in `methods` order.
    pub ranks: Vec<MethodRank>,
    /// One per ordered pair of distinct methods: `methods` order for `method`, then for
    /// `opponent`.
    pub win_rates: Vec<WinRate>,
    pub agreement: Agreement,
}

/// A method's mean mid-rank (lower is better) with its bootstrap percentile interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodRank {
    pub method: String,
    /// `None` without answers.
    pub mean_rank: Option<f64>,
    /// The [`CONFIDENCE`] percentile interval (linear interpolation between order statistics);
    /// `None` without answers or with `n_boot = 0`.
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// Answers behind the mean.
    pub n: usize,
}

/// How often `method` is ranked strictly better (lower) than `opponent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WinRate {
    pub method: String,
    pub opponent: String,
    /// `(wins + ties / 2) / n`; `None` when `n = 0`.
    pub rate: Option<f64>,
    pub wins: usize,
    pub ties: usize,
    pub losses: usize,
    /// Answers compared (`wins + ties + losses`).
    pub n: usize,
}

/// Agreement between the annotators of a criterion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    /// The mean of the per-sample Kendall's W over the samples where it is defined; `None`
    /// when there is none.
    pub kendall_w: Option<f64>,
    /// The samples behind `kendall_w`.
    pub n_samples: usize,
    /// The share of (annotator pair, method pair) comparisons, pooled over all samples, where
    /// the two annotators order the two methods the same way (better, tied or worse: a tie is
    /// its own category); `None` without comparisons.
    pub pairwise: Option<f64>,
    /// The comparisons behind `pairwise`.
    pub n_pairs: usize,
    /// Every sample with at least two raters, sorted by sample.
    pub samples: Vec<SampleAgreement>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleAgreement {
    pub sample: String,
    /// Answers (raters) of this sample and criterion, m ≥ 2.
    pub raters: usize,
    /// Kendall's W with the tie correction, `12 S / (m² (n³ − n) − m Σᵢ Tᵢ)` with
    /// `S = Σⱼ (Rⱼ − m (n + 1) / 2)²`, `Rⱼ` the sum of method j's mid-ranks and
    /// `Tᵢ = Σ (t³ − t)` over rater i's groups of t tied methods. `None` when the denominator
    /// is 0 (fewer than 2 methods, or every rater ties every method).
    pub kendall_w: Option<f64>,
    /// The pairwise agreement rate of this sample (see [`Agreement::pairwise`]).
    pub pairwise: Option<f64>,
    pub n_pairs: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditTypeSummary {
    pub edit_type: String,
    /// One per criterion, in `criteria` order.
    pub criteria: Vec<EditTypeCriterion>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditTypeCriterion {
    pub criterion: String,
    pub n_answers: usize,
    /// One per method, in `methods` order.
    pub ranks: Vec<MethodMean>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodMean {
    pub method: String,
    /// `None` without answers.
    pub mean_rank: Option<f64>,
    pub n: usize,
}

/// Fractional (mid-)ranks of a raw ranking over the positions 1..n (n = `raw.len()`): the
/// methods are ordered by raw rank and a group of t equal raw ranks occupying positions
/// p+1..p+t gets p + (t + 1) / 2 each. Only the order of the raw ranks matters. A NaN rank
/// sorts last and is never tied with anything.
pub fn mid_ranks(raw: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    let mut order: Vec<(&String, f64)> = raw.iter().map(|(k, v)| (k, *v)).collect();
    order.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(b.0)));
    let mut out = BTreeMap::new();
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && order[j].1 == order[i].1 {
            j += 1;
        }
        // Positions i+1..=j; their mean.
        let mid = (i + 1 + j) as f64 / 2.0;
        for (k, _) in &order[i..j] {
            out.insert((*k).clone(), mid);
        }
        i = j;
    }
    out
}

/// The mid-ranks of a valid answer in `methods` order, or `None` when a method is missing or
/// a rank is not finite.
fn valid_mid_ranks(a: &Answer, methods: &[String]) -> Option<Vec<f64>> {
    let mut raw = BTreeMap::new();
    for m in methods {
        let r = *a.ranks.get(m)?;
        if !r.is_finite() {
            return None;
        }
        raw.insert(m.clone(), r);
    }
    let mid = mid_ranks(&raw);
    Some(methods.iter().map(|m| mid[m]).collect())
}

fn dedup(xs: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for x in xs {
        if !out.contains(x) {
            out.push(x.clone());
        }
    }
    out
}

/// A valid answer, reduced to what the statistics need.
struct Row<'a> {
    sample: &'a str,
    edit_type: &'a str,
    /// Mid-ranks in `methods` order.
    mid: Vec<f64>,
}

/// The study's summary; see the module documentation for which answers count. `n_boot`
/// cluster-bootstrap resamples per criterion, drawn from a [`SplitMix64`] whose state is
/// `combine(seed, tag_state(criterion))`, so a criterion's intervals depend on the seed and
/// its own answers only.
pub fn summarize(
    answers: &[Answer],
    methods: &[String],
    criteria: &[String],
    n_boot: usize,
    seed: u64,
) -> Summary {
    let methods = dedup(methods);
    let criteria = dedup(criteria);
    let k = methods.len();

    let mut by_criterion: Vec<Vec<Row<'_>>> = criteria.iter().map(|_| Vec::new()).collect();
    let (mut skipped, mut unlisted) = (0, 0);
    for a in answers {
        let Some(c) = criteria.iter().position(|c| *c == a.criterion) else {
            unlisted += 1;
            continue;
        };
        match valid_mid_ranks(a, &methods) {
            Some(mid) => by_criterion[c].push(Row {
                sample: &a.sample,
                edit_type: &a.edit_type,
                mid,
            }),
            None => skipped += 1,
        }
    }

    let per_criterion: Vec<CriterionSummary> = criteria
        .iter()
        .zip(&by_criterion)
        .map(|(c, rows)| criterion_summary(c, rows, &methods, n_boot, seed))
        .collect();

    // Per edit type: edit type → criterion index → (count, sums).
    let mut types: BTreeMap<&str, Vec<(usize, Vec<f64>)>> = BTreeMap::new();
    for (ci, rows) in by_criterion.iter().enumerate() {
        for r in rows {
            let e = types
                .entry(r.edit_type)
                .or_insert_with(|| vec![(0, vec![0.0; k]); criteria.len()]);
            e[ci].0 += 1;
            for (s, x) in e[ci].1.iter_mut().zip(&r.mid) {
                *s += x;
            }
        }
    }
    let per_edit_type = types
        .into_iter()
        .map(|(t, per_c)| EditTypeSummary {
            edit_type: t.to_string(),
            criteria: criteria
                .iter()
                .zip(per_c)
                .map(|(c, (n, sums))| EditTypeCriterion {
                    criterion: c.clone(),
                    n_answers: n,
                    ranks: methods
                        .iter()
                        .zip(sums)
                        .map(|(m, s)| MethodMean {
                            method: m.clone(),
                            mean_rank: (n > 0).then(|| s / n as f64),
                            n,
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();

    Summary {
        methods,
        criteria,
        n_boot,
        seed,
        confidence: CONFIDENCE,
        n_answers: by_criterion.iter().map(Vec::len).sum(),
        skipped,
        unlisted_criterion: unlisted,
        per_criterion,
        per_edit_type,
    }
}

fn criterion_summary(
    criterion: &str,
    rows: &[Row<'_>],
    methods: &[String],
    n_boot: usize,
    seed: u64,
) -> CriterionSummary {
    let k = methods.len();
    let n = rows.len();

    // Samples (clusters), sorted by id: their rows.
    let mut samples: BTreeMap<&str, Vec<&Row<'_>>> = BTreeMap::new();
    for r in rows {
        samples.entry(r.sample).or_default().push(r);
    }

    // Means.
    let mut sums = vec![0.0; k];
    for r in rows {
        for (s, x) in sums.iter_mut().zip(&r.mid) {
            *s += x;
        }
    }

    // Cluster bootstrap: per sample its answer count and per-method sums.
    let clusters: Vec<(usize, Vec<f64>)> = samples
        .values()
        .map(|rs| {
            let mut s = vec![0.0; k];
            for r in rs {
                for (a, x) in s.iter_mut().zip(&r.mid) {
                    *a += x;
                }
            }
            (rs.len(), s)
        })
        .collect();
    let intervals = if n > 0 && n_boot > 0 {
        let mut rng = SplitMix64::new(combine(seed, tag_state(criterion)));
        bootstrap(&clusters, k, n_boot, &mut rng)
    } else {
        vec![None; k]
    };

    let ranks = methods
        .iter()
        .enumerate()
        .map(|(j, m)| MethodRank {
            method: m.clone(),
            mean_rank: (n > 0).then(|| sums[j] / n as f64),
            ci_low: intervals[j].map(|i| i.0),
            ci_high: intervals[j].map(|i| i.1),
            n,
        })
        .collect();

    let mut win_rates = Vec::with_capacity(k * k.saturating_sub(1));
    for a in 0..k {
        for b in 0..k {
            if a == b {
                continue;
            }
            let (mut wins, mut ties, mut losses) = (0, 0, 0);
            for r in rows {
                if r.mid[a] < r.mid[b] {
                    wins += 1;
                } else if r.mid[a] == r.mid[b] {
                    ties += 1;
                } else {
                    losses += 1;
                }
            }
            win_rates.push(WinRate {
                method: methods[a].clone(),
                opponent: methods[b].clone(),
                rate: (n > 0).then(|| (wins as f64 + 0.5 * ties as f64) / n as f64),
                wins,
                ties,
                losses,
                n,
            });
        }
    }

    CriterionSummary {
        criterion: criterion.to_string(),
        n_answers: n,
        n_samples: samples.len(),
        ranks,
        win_rates,
        agreement: agreement(&samples, k),
    }
}

/// Per method the percentile interval of the mean mid-rank over `n_boot` cluster resamples.
fn bootstrap(
    clusters: &[(usize, Vec<f64>)],
    k: usize,
    n_boot: usize,
    rng: &mut SplitMix64,
) -> Vec<Option<(f64, f64)>> {
    let s = clusters.len();
    let mut reps: Vec<Vec<f64>> = vec![Vec::with_capacity(n_boot); k];
    let mut sums = vec![0.0; k];
    for _ in 0..n_boot {
        sums.iter_mut().for_each(|x| *x = 0.0);
        let mut count = 0usize;
        for _ in 0..s {
            let (c, cs) = &clusters[rng.below(s)];
            count += c;
            for (a, x) in sums.iter_mut().zip(cs) {
                *a += x;
            }
        }
        // Every cluster has at least one answer, so `count > 0`.
        for (rep, x) in reps.iter_mut().zip(&sums) {
            rep.push(x / count as f64);
        }
    }
    let alpha = (1.0 - CONFIDENCE) / 2.0;
    reps.into_iter()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            Some((quantile(&v, alpha), quantile(&v, 1.0 - alpha)))
        })
        .collect()
}

/// The `p` quantile of sorted, non-empty `v`, interpolating linearly between order statistics
/// at `(len − 1) p` (Hyndman & Fan type 7).
fn quantile(v: &[f64], p: f64) -> f64 {
    let h = (v.len() - 1) as f64 * p;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    let w = h - lo as f64;
    if w == 0.0 || lo == hi {
        v[lo]
    } else {
        v[lo] + w * (v[hi] - v[lo])
    }
}

fn sign(x: f64) -> i8 {
    if x < 0.0 {
        -1
    } else if x > 0.0 {
        1
    } else {
        0
    }
}

fn agreement(samples: &BTreeMap<&str, Vec<&Row<'_>>>, k: usize) -> Agreement {
    let mut out = Vec::new();
    let (mut w_sum, mut w_n) = (0.0, 0usize);
    let (mut agree_all, mut pairs_all) = (0usize, 0usize);
    for (sample, rows) in samples {
        let m = rows.len();
        if m < 2 {
            continue;
        }
        let w = kendall_w(rows, k);
        if let Some(w) = w {
            w_sum += w;
            w_n += 1;
        }
        let (mut agree, mut pairs) = (0usize, 0usize);
        for i in 0..m {
            for i2 in i + 1..m {
                let (x, y) = (&rows[i].mid, &rows[i2].mid);
                for a in 0..k {
                    for b in a + 1..k {
                        pairs += 1;
                        if sign(x[a] - x[b]) == sign(y[a] - y[b]) {
                            agree += 1;
                        }
                    }
                }
            }
        }
        agree_all += agree;
        pairs_all += pairs;
        out.push(SampleAgreement {
            sample: sample.to_string(),
            raters: m,
            kendall_w: w,
            pairwise: (pairs > 0).then(|| agree as f64 / pairs as f64),
            n_pairs: pairs,
        });
    }
    Agreement {
        kendall_w: (w_n > 0).then(|| w_sum / w_n as f64),
        n_samples: w_n,
        pairwise: (pairs_all > 0).then(|| agree_all as f64 / pairs_all as f64),
        n_pairs: pairs_all,
        samples: out,
    }
}

/// Kendall's W with the tie correction over `rows` (m raters) of `k` objects; see
/// [`SampleAgreement::kendall_w`].
fn kendall_w(rows: &[&Row<'_>], k: usize) -> Option<f64> {
    let m = rows.len() as f64;
    let n = k as f64;
    let mut col = vec![0.0; k];
    let mut ties = 0.0;
    for r in rows {
        for (c, x) in col.iter_mut().zip(&r.mid) {
            *c += x;
        }
        // Tie groups: equal mid-ranks are exactly the tied methods.
        let mut v = r.mid.clone();
        v.sort_by(f64::total_cmp);
        let mut i = 0;
        while i < v.len() {
            let mut j = i + 1;
            while j < v.len() && v[j] == v[i] {
                j += 1;
            }
            let t = (j - i) as f64;
            ties += t * t * t - t;
            i = j;
        }
    }
    let centre = m * (n + 1.0) / 2.0;
    let s: f64 = col.iter().map(|r| (r - centre) * (r - centre)).sum();
    let denom = m * m * (n * n * n - n) - m * ties;
    // The denominator is a multiple of 6 m when it is not 0 (it is computed exactly: sums of
    // small integers).
    (denom > 0.0).then(|| 12.0 * s / denom)
}

/// The answers as CSV, one row per answer × ranked method (the answer's methods in name
/// order): `annotator,sample,edit_type,criterion,method,raw_rank,mid_rank`, with a header
/// line, `\n` line ends and RFC 4180 quoting of fields containing a comma, a quote or a line
/// break. `mid_rank` is over all the methods the answer ranks ([`mid_ranks`]); numbers are
/// written in Rust's shortest round-trip form (`1`, `1.5`).
pub fn to_csv(answers: &[Answer]) -> String {
    let mut s = String::from("annotator,sample,edit_type,criterion,method,raw_rank,mid_rank\n");
    for a in answers {
        let mid = mid_ranks(&a.ranks);
        for (m, raw) in &a.ranks {
            s.push_str(&format!(
                "{},{},{},{},{},{},{}\n",
                csv_field(&a.annotator),
                csv_field(&a.sample),
                csv_field(&a.edit_type),
                csv_field(&a.criterion),
                csv_field(m),
                raw,
                mid[m]
            ));
        }
    }
    s
}

/// A Markdown table cell: `|` escaped, line breaks as spaces.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\r', '\n'], " ")
}

fn num(x: Option<f64>) -> String {
    x.map_or_else(|| "–".to_string(), |x| format!("{x:.3}"))
}

/// The summary as Markdown: mean rank with its interval per method and criterion, the win-rate
/// matrix of every criterion, the agreement between annotators and the means per edit type.
pub fn summary_markdown(s: &Summary, title: &str) -> String {
    let mut o = format!("# {}\n\n", cell(title));
    o.push_str(&format!(
        "{} answers over {} methods ({} skipped: a method missing or a rank not finite; {} of \
         other criteria). Ranks are mid-ranks over 1..{}, lower is better; intervals: {:.0} % \
         bootstrap percentile intervals resampling samples ({} resamples, seed {}).\n\n",
        s.n_answers,
        s.methods.len(),
        s.skipped,
        s.unlisted_criterion,
        s.methods.len(),
        s.confidence * 100.0,
        s.n_boot,
        s.seed
    ));

    o.push_str("## Average rank\n\n| Method |");
    for c in &s.per_criterion {
        o.push_str(&format!(" {} |", cell(&c.criterion)));
    }
    o.push_str("\n|---|");
    for _ in &s.per_criterion {
        o.push_str("---|");
    }
    o.push('\n');
    for (j, m) in s.methods.iter().enumerate() {
        o.push_str(&format!("| {} |", cell(m)));
        for c in &s.per_criterion {
            let r = &c.ranks[j];
            let ci = match (r.ci_low, r.ci_high) {
                (Some(l), Some(h)) => format!(" [{l:.3}, {h:.3}]"),
                _ => String::new(),
            };
            o.push_str(&format!(" {}{} (n={}) |", num(r.mean_rank), ci, r.n));
        }
        o.push('\n');
    }

    for c in &s.per_criterion {
        o.push_str(&format!(
            "\n## Pairwise win rates: {}\n\nShare of answers where the row's method is ranked \
             better than the column's, ties counting ½ (answers compared in parentheses).\n\n\
             | |",
            cell(&c.criterion)
        ));
        for m in &s.methods {
            o.push_str(&format!(" {} |", cell(m)));
        }
        o.push_str("\n|---|");
        for _ in &s.methods {
            o.push_str("---|");
        }
        o.push('\n');
        for a in &s.methods {
            o.push_str(&format!("| {} |", cell(a)));
            for b in &s.methods {
                match c
                    .win_rates
                    .iter()
                    .find(|w| w.method == *a && w.opponent == *b)
                {
                    Some(w) => o.push_str(&format!(" {} ({}) |", num(w.rate), w.n)),
                    None => o.push_str(" – |"),
                }
            }
            o.push('\n');
        }
    }

    o.push_str(
        "\n## Agreement between annotators\n\nKendall's W (tie-corrected) per sample with at \
         least two annotators, averaged over samples; pairwise agreement: share of annotator \
         pairs × method pairs ordered the same way (a tie is its own category).\n\n\
         | Criterion | Kendall's W | samples | pairwise agreement | comparisons |\n\
         |---|---|---|---|---|\n",
    );
    for c in &s.per_criterion {
        let a = &c.agreement;
        o.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            cell(&c.criterion),
            num(a.kendall_w),
            a.n_samples,
            num(a.pairwise),
            a.n_pairs
        ));
    }

    o.push_str("\n## Per edit type\n\n| Edit type | Criterion | n |");
    for m in &s.methods {
        o.push_str(&format!(" {} |", cell(m)));
    }
    o.push_str("\n|---|---|---|");
    for _ in &s.methods {
        o.push_str("---|");
    }
    o.push('\n');
    for t in &s.per_edit_type {
        for c in &t.criteria {
            o.push_str(&format!(
                "| {} | {} | {} |",
                cell(&t.edit_type),
                cell(&c.criterion),
                c.n_answers
            ));
            for r in &c.ranks {
                o.push_str(&format!(" {} |", num(r.mean_rank)));
            }
            o.push('\n');
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranks(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn answer(annotator: &str, sample: &str, criterion: &str, r: &[(&str, f64)]) -> Answer {
        Answer {
            annotator: annotator.into(),
            sample: sample.into(),
            edit_type: "replace".into(),
            criterion: criterion.into(),
            ranks: ranks(r),
        }
    }

    fn names(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn mid_ranks_examples() {
        let want = ranks(&[("A", 1.5), ("B", 1.5), ("C", 3.0)]);
        for raw in [
            [1.0, 1.0, 3.0],
            [1.0, 1.0, 2.0],
            [2.0, 2.0, 3.0],
            [0.5, 0.5, 7.0],
        ] {
            let r = ranks(&[("A", raw[0]), ("B", raw[1]), ("C", raw[2])]);
            assert_eq!(mid_ranks(&r), want, "{raw:?}");
        }
        assert_eq!(
            mid_ranks(&ranks(&[("A", 3.0), ("B", 1.0), ("C", 2.0)])),
            ranks(&[("A", 3.0), ("B", 1.0), ("C", 2.0)])
        );
        assert_eq!(
            mid_ranks(&ranks(&[("A", 1.0), ("B", 1.0), ("C", 1.0)])),
            ranks(&[("A", 2.0), ("B", 2.0), ("C", 2.0)])
        );
        // {1, 2, 2, 2}: positions 2..4 → 3.
        assert_eq!(
            mid_ranks(&ranks(&[("A", 1.0), ("B", 2.0), ("C", 2.0), ("D", 2.0)])),
            ranks(&[("A", 1.0), ("B", 3.0), ("C", 3.0), ("D", 3.0)])
        );
        // {2, 2, 1, 1}: 1.5, 1.5 for the ones, 3.5, 3.5 for the twos.
        assert_eq!(
            mid_ranks(&ranks(&[("A", 2.0), ("B", 2.0), ("C", 1.0), ("D", 1.0)])),
            ranks(&[("A", 3.5), ("B", 3.5), ("C", 1.5), ("D", 1.5)])
        );
        assert!(mid_ranks(&BTreeMap::new()).is_empty());
    }

    fn rows<'a>(mids: &[Vec<f64>]) -> Vec<Row<'a>> {
        mids.iter()
            .map(|m| Row {
                sample: "s",
                edit_type: "t",
                mid: m.clone(),
            })
            .collect()
    }

    #[test]
    fn kendall_w_perfect_agreement_is_one_and_opposite_pairs_zero() {
        let r = rows(&vec![vec![1.0, 2.0, 3.0, 4.0]; 3]);
        let refs: Vec<&Row<'_>> = r.iter().collect();
        assert_eq!(kendall_w(&refs, 4), Some(1.0));
        // Identical rankings with ties are perfect agreement too (the tie correction).
        let r = rows(&vec![vec![1.5, 1.5, 3.0]; 4]);
        let refs: Vec<&Row<'_>> = r.iter().collect();
        assert_eq!(kendall_w(&refs, 3), Some(1.0));
        // Two raters with opposite rankings: every column sum is n + 1 = m (n + 1) / 2, S = 0.
        for n in [2usize, 3, 5] {
            let up: Vec<f64> = (1..=n).map(|i| i as f64).collect();
            let down: Vec<f64> = up.iter().rev().copied().collect();
            let r = rows(&[up, down]);
            let refs: Vec<&Row<'_>> = r.iter().collect();
            assert_eq!(kendall_w(&refs, n), Some(0.0), "n = {n}");
        }
        // Undefined: every rater ties everything, or a single object.
        let r = rows(&vec![vec![2.0, 2.0, 2.0]; 2]);
        let refs: Vec<&Row<'_>> = r.iter().collect();
        assert_eq!(kendall_w(&refs, 3), None);
        let r = rows(&vec![vec![1.0]; 2]);
        let refs: Vec<&Row<'_>> = r.iter().collect();
        assert_eq!(kendall_w(&refs, 1), None);
    }

    #[test]
    fn no_answers_and_no_methods_give_empty_summaries() {
        let s = summarize(&[], &names(&["A", "B"]), &names(&["success"]), 100, 1);
        assert_eq!(s.n_answers, 0);
        assert_eq!(s.skipped, 0);
        assert!(s.per_edit_type.is_empty());
        let c = &s.per_criterion[0];
        assert_eq!(c.n_answers, 0);
        assert!(
            c.ranks
                .iter()
                .all(|r| r.mean_rank.is_none() && r.ci_low.is_none())
        );
        assert!(c.win_rates.iter().all(|w| w.rate.is_none() && w.n == 0));
        assert_eq!(c.agreement.kendall_w, None);
        assert_eq!(c.agreement.pairwise, None);
        let md = summary_markdown(&s, "Empty");
        assert!(md.contains("# Empty"));
        let s = summarize(&[], &[], &[], 10, 1);
        assert!(s.per_criterion.is_empty());
        summary_markdown(&s, "x");
        // Methods empty but answers present: every answer is valid, nothing to rank.
        let a = [
            answer("u", "s", "c", &[("A", 1.0)]),
            answer("v", "s", "c", &[("A", 1.0)]),
        ];
        let s = summarize(&a, &[], &names(&["c"]), 10, 1);
        assert_eq!(s.n_answers, 2);
        assert_eq!(s.per_criterion[0].agreement.kendall_w, None);
        assert_eq!(s.per_criterion[0].agreement.pairwise, None);
        summary_markdown(&s, "x");
    }

    #[test]
    fn invalid_and_unlisted_answers_are_counted_not_used() {
        let m = names(&["A", "B", "C"]);
        let a = [
            answer("u", "s1", "success", &[("A", 1.0), ("B", 2.0), ("C", 3.0)]),
            // B missing: invalid.
            answer("v", "s1", "success", &[("A", 1.0), ("C", 3.0)]),
            // NaN: invalid.
            answer(
                "w",
                "s1",
                "success",
                &[("A", 1.0), ("B", f64::NAN), ("C", 3.0)],
            ),
            // Unlisted criterion.
            answer(
                "u",
                "s1",
                "aesthetics",
                &[("A", 1.0), ("B", 2.0), ("C", 3.0)],
            ),
            // An extra method is dropped before the mid-ranks: D ranked best does not move A.
            answer(
                "x",
                "s1",
                "success",
                &[("D", 1.0), ("A", 2.0), ("B", 2.0), ("C", 4.0)],
            ),
        ];
        let s = summarize(&a, &m, &names(&["success"]), 50, 3);
        assert_eq!(s.skipped, 2);
        assert_eq!(s.unlisted_criterion, 1);
        assert_eq!(s.n_answers, 2);
        let r = &s.per_criterion[0].ranks;
        assert_eq!(r[0].mean_rank, Some((1.0 + 1.5) / 2.0));
        assert_eq!(r[1].mean_rank, Some((2.0 + 1.5) / 2.0));
        assert_eq!(r[2].mean_rank, Some(3.0));
    }

    #[test]
    fn win_rates_count_ties_half() {
        let m = names(&["A", "B"]);
        let a = [
            answer("u", "s1", "c", &[("A", 1.0), ("B", 2.0)]),
            answer("u", "s2", "c", &[("A", 1.0), ("B", 1.0)]),
            answer("u", "s3", "c", &[("A", 2.0), ("B", 1.0)]),
            answer("u", "s4", "c", &[("A", 1.0), ("B", 3.0)]),
        ];
        let s = summarize(&a, &m, &names(&["c"]), 0, 0);
        let w = &s.per_criterion[0].win_rates;
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].method.as_str(), w[0].opponent.as_str()), ("A", "B"));
        assert_eq!((w[0].wins, w[0].ties, w[0].losses, w[0].n), (2, 1, 1, 4));
        assert_eq!(w[0].rate, Some(2.5 / 4.0));
        assert_eq!(w[1].rate, Some(1.5 / 4.0));
        // n_boot = 0: no intervals.
        assert!(s.per_criterion[0].ranks[0].ci_low.is_none());
    }

    #[test]
    fn csv_quotes_fields_and_writes_mid_ranks() {
        let a = Answer {
            annotator: "Doe, Jane".into(),
            sample: "say \"hi\"".into(),
            edit_type: "two\nlines".into(),
            criterion: "success".into(),
            ranks: ranks(&[("m,1", 1.0), ("m2", 1.0), ("m3", 2.0)]),
        };
        let csv = to_csv(&[a]);
        let want = "annotator,sample,edit_type,criterion,method,raw_rank,mid_rank\n\
                    \"Doe, Jane\",\"say \"\"hi\"\"\",\"two\nlines\",success,\"m,1\",1,1.5\n\
                    \"Doe, Jane\",\"say \"\"hi\"\"\",\"two\nlines\",success,m2,1,1.5\n\
                    \"Doe, Jane\",\"say \"\"hi\"\"\",\"two\nlines\",success,m3,2,3\n";
        assert_eq!(csv, want);
        assert_eq!(
            to_csv(&[]),
            "annotator,sample,edit_type,criterion,method,raw_rank,mid_rank\n"
        );
    }

    /// A synthetic study: `n_samples` samples, 3 annotators each, 3 methods with noisy ranks
    /// (A tends to be best), ties from drawing raw ranks in 1..=3 independently.
    fn synthetic(n_samples: usize, seed: u64) -> Vec<Answer> {
        let mut rng = SplitMix64::new(seed);
        let mut out = Vec::new();
        for s in 0..n_samples {
            for u in 0..3 {
                let mut r = BTreeMap::new();
                for (j, m) in ["A", "B", "C"].iter().enumerate() {
                    let x = (j as f64 * 0.7 + rng.next_f64() * 2.0).round() + 1.0;
                    r.insert(m.to_string(), x);
                }
                out.push(Answer {
                    annotator: format!("u{u}"),
                    sample: format!("s{s:04}"),
                    edit_type: if s % 2 == 0 { "add" } else { "remove" }.into(),
                    criterion: "success".into(),
                    ranks: r,
                });
            }
        }
        out
    }

    #[test]
    fn bootstrap_intervals_contain_the_mean_are_deterministic_and_narrow() {
        let m = names(&["A", "B", "C"]);
        let c = names(&["success"]);
        let small = summarize(&synthetic(20, 11), &m, &c, 2000, 5);
        for r in &small.per_criterion[0].ranks {
            let (mean, lo, hi) = (r.mean_rank.unwrap(), r.ci_low.unwrap(), r.ci_high.unwrap());
            assert!(lo <= mean && mean <= hi, "{r:?}");
            assert!(lo < hi, "{r:?}");
            assert!((1.0..=3.0).contains(&lo) && (1.0..=3.0).contains(&hi));
        }
        // Same inputs, same bytes; another seed, other intervals.
        let again = summarize(&synthetic(20, 11), &m, &c, 2000, 5);
        assert_eq!(
            serde_json::to_string(&small).unwrap(),
            serde_json::to_string(&again).unwrap()
        );
        assert_eq!(summary_markdown(&small, "t"), summary_markdown(&again, "t"));
        let other = summarize(&synthetic(20, 11), &m, &c, 2000, 6);
        assert_ne!(small.per_criterion[0].ranks, other.per_criterion[0].ranks);
        // 4× the samples: about half the width (1/√4). Each sample copied four times (new
        // ids) is the same empirical distribution, so only the Monte Carlo error of the
        // percentiles remains: ask for 0.35..0.65 per method.
        let width = |r: &MethodRank| r.ci_high.unwrap() - r.ci_low.unwrap();
        let mut copies = Vec::new();
        for k in 0..4 {
            for a in synthetic(20, 11) {
                copies.push(Answer {
                    sample: format!("{}-{k}", a.sample),
                    ..a
                });
            }
        }
        let four = summarize(&copies, &m, &c, 2000, 5);
        for (a, b) in small.per_criterion[0]
            .ranks
            .iter()
            .zip(&four.per_criterion[0].ranks)
        {
            assert_eq!(a.mean_rank, b.mean_rank);
            let ratio = width(b) / width(a);
            assert!((0.35..0.65).contains(&ratio), "{}: {ratio}", a.method);
        }
        // Fresh draws of 40 and 160 samples: the summed width over the methods shrinks too
        // (sampling noise of the widths themselves is larger here: ask for below 3/4).
        let total = |s: &Summary| s.per_criterion[0].ranks.iter().map(width).sum::<f64>();
        let (w40, w160) = (
            total(&summarize(&synthetic(40, 21), &m, &c, 2000, 5)),
            total(&summarize(&synthetic(160, 22), &m, &c, 2000, 5)),
        );
        assert!(w160 < 0.75 * w40, "{w40} → {w160}");
        // Round trip through JSON (serde_json without `float_roundtrip` may parse a float one
        // ulp off, so the numbers are compared with a tolerance).
        let back: Summary = serde_json::from_str(&serde_json::to_string(&small).unwrap()).unwrap();
        assert_eq!(back.methods, small.methods);
        assert_eq!(back.per_edit_type.len(), small.per_edit_type.len());
        let (x, y) = (&back.per_criterion[0], &small.per_criterion[0]);
        assert_eq!(x.agreement.samples.len(), y.agreement.samples.len());
        for (a, b) in x.ranks.iter().zip(&y.ranks) {
            for (u, v) in [
                (a.mean_rank, b.mean_rank),
                (a.ci_low, b.ci_low),
                (a.ci_high, b.ci_high),
            ] {
                assert!((u.unwrap() - v.unwrap()).abs() < 1e-14);
            }
        }
    }

    #[test]
    fn bootstrap_interval_is_a_point_when_a_method_always_gets_the_same_rank() {
        let m = names(&["A", "B", "C"]);
        let mut a = synthetic(15, 3);
        for x in &mut a {
            // A always strictly best; B and C vary (ties between them included).
            x.ranks.insert("A".into(), 0.0);
        }
        let s = summarize(&a, &m, &names(&["success"]), 500, 9);
        let r = &s.per_criterion[0].ranks[0];
        assert_eq!(
            (r.mean_rank, r.ci_low, r.ci_high),
            (Some(1.0), Some(1.0), Some(1.0))
        );
        // B/C tie for last in some answers, so A's constant is 1 but theirs vary.
        let b = &s.per_criterion[0].ranks[1];
        assert!(b.ci_low < b.ci_high);
    }

    #[test]
    fn quantile_interpolates() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 5.0);
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert_eq!(quantile(&v, 0.1), 1.4);
        assert_eq!(quantile(&[7.0], 0.975), 7.0);
    }

    #[test]
    fn markdown_has_every_table() {
        let m = names(&["A", "B|x", "C"]);
        let mut a = synthetic(6, 2);
        for x in &mut a {
            let v = x.ranks.remove("B").unwrap();
            x.ranks.insert("B|x".into(), v);
        }
        let s = summarize(&a, &m, &names(&["success", "consistency"]), 200, 1);
        let md = summary_markdown(&s, "Study");
        for h in [
            "# Study",
            "## Average rank",
            "## Pairwise win rates: success",
            "## Pairwise win rates: consistency",
            "## Agreement between annotators",
            "## Per edit type",
            "B\\|x",
            "| add | success | 9 |",
        ] {
            assert!(md.contains(h), "{h} missing in\n{md}");
        }
    }

    // ---- The golden study, computed independently by tasks/tests/golden/study/gen.py. ----

    /// Golden values are compared with this absolute tolerance.
    const TOLERANCE: f64 = 1e-12;

    fn close(what: &str, got: Option<f64>, want: &serde_json::Value) {
        match (got, want.as_f64()) {
            (None, None) => assert!(want.is_null(), "{what}: want {want}"),
            (Some(g), Some(w)) => assert!((g - w).abs() <= TOLERANCE, "{what}: {g} vs {w}"),
            (g, _) => panic!("{what}: got {g:?}, want {want}"),
        }
    }

    #[test]
    fn golden_study_matches_the_python_reference() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/study/stats.json");
        let g: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(g["tolerance"].as_f64(), Some(TOLERANCE));
        let answers: Vec<Answer> = serde_json::from_value(g["answers"].clone()).unwrap();
        let methods: Vec<String> = serde_json::from_value(g["methods"].clone()).unwrap();
        let criteria: Vec<String> = serde_json::from_value(g["criteria"].clone()).unwrap();
        let e = &g["expected"];
        let s = summarize(&answers, &methods, &criteria, 200, 42);

        // The mid-ranks of every answer.
        for (a, want) in answers.iter().zip(e["mid_ranks"].as_array().unwrap()) {
            let got = mid_ranks(&a.ranks);
            let want = want.as_object().unwrap();
            assert_eq!(got.len(), want.len());
            for (k, v) in want {
                close(&format!("mid {k}"), Some(got[k]), v);
            }
        }

        assert_eq!(s.skipped as u64, e["skipped"].as_u64().unwrap());
        assert_eq!(
            s.unlisted_criterion as u64,
            e["unlisted_criterion"].as_u64().unwrap()
        );
        assert_eq!(s.n_answers as u64, e["n_answers"].as_u64().unwrap());
        for c in &s.per_criterion {
            let ec = &e["criteria"][&c.criterion];
            assert_eq!(c.n_answers as u64, ec["n"].as_u64().unwrap());
            assert_eq!(c.n_samples as u64, ec["n_samples"].as_u64().unwrap());
            for r in &c.ranks {
                close(
                    &format!("{} mean {}", c.criterion, r.method),
                    r.mean_rank,
                    &ec["mean_rank"][&r.method],
                );
                assert_eq!(r.n, c.n_answers);
                let (lo, hi, m) = (r.ci_low.unwrap(), r.ci_high.unwrap(), r.mean_rank.unwrap());
                assert!(lo <= m && m <= hi);
            }
            let ew = ec["win_rates"].as_array().unwrap();
            assert_eq!(c.win_rates.len(), ew.len());
            for (w, x) in c.win_rates.iter().zip(ew) {
                assert_eq!(w.method, x["method"].as_str().unwrap());
                assert_eq!(w.opponent, x["opponent"].as_str().unwrap());
                close(
                    &format!("win {} {}", w.method, w.opponent),
                    w.rate,
                    &x["rate"],
                );
                assert_eq!(
                    [w.wins, w.ties, w.losses, w.n].map(|v| v as u64),
                    ["wins", "ties", "losses", "n"].map(|k| x[k].as_u64().unwrap())
                );
            }
            let a = &c.agreement;
            let ea = &ec["agreement"];
            close(
                &format!("{} W", c.criterion),
                a.kendall_w,
                &ea["kendall_w_mean"],
            );
            assert_eq!(a.n_samples as u64, ea["n_samples"].as_u64().unwrap());
            close(
                &format!("{} pairwise", c.criterion),
                a.pairwise,
                &ea["pairwise"],
            );
            assert_eq!(a.n_pairs as u64, ea["n_pairs"].as_u64().unwrap());
            let es = ea["per_sample"].as_object().unwrap();
            assert_eq!(a.samples.len(), es.len());
            for sa in &a.samples {
                let x = &es[&sa.sample];
                assert_eq!(sa.raters as u64, x["raters"].as_u64().unwrap());
                close(&format!("W {}", sa.sample), sa.kendall_w, &x["kendall_w"]);
                close(&format!("pw {}", sa.sample), sa.pairwise, &x["pairwise"]);
                assert_eq!(sa.n_pairs as u64, x["n_pairs"].as_u64().unwrap());
            }
        }
        let et = e["per_edit_type"].as_object().unwrap();
        assert_eq!(s.per_edit_type.len(), et.len());
        for t in &s.per_edit_type {
            for c in &t.criteria {
                let x = &et[&t.edit_type][&c.criterion];
                assert_eq!(c.n_answers as u64, x["n"].as_u64().unwrap());
                for r in &c.ranks {
                    close(
                        &format!("{} {} {}", t.edit_type, c.criterion, r.method),
                        r.mean_rank,
                        &x["mean_rank"][&r.method],
                    );
                }
            }
        }
    }
}
