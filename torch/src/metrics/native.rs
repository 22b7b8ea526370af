//! The fused CPU kernel: masked SSE and masked-SSIM sums in one pass over the images, float64.
//!
//! Per output row y it convolves the needed fields with the separable window (vertical pass
//! into row buffers, then horizontal pass), evaluates S, and accumulates — so no full-size
//! intermediate image is ever stored. With K ∈ {0, 1} and `a_K = a⊙K`:
//!
//! ```text
//! A    = G*K                          (shared by the channels of a sample)
//! μ_a  = G*a_K / A,  μ_b = G*b_K / A
//! q    = G*(a_K² + b_K²) / A          (eq. 17, summed: σ_a² + σ_b² = q − (μ_a² + μ_b²))
//! σ_ab = G*(a_K b_K) / A − μ_a μ_b    (eq. 18)
//! S    = (2μ_aμ_b + C1)(2σ_ab + C2) / ((μ_a² + μ_b² + C1)(σ_a² + σ_b² + C2))
//! ```
//!
//! S only needs σ_a² + σ_b², so four fields per channel are convolved instead of five. Every
//! expression is symmetric in (a, b) operation by operation, so swapping the images gives
//! bit-identical results, and identical images give S = 1 exactly. A pixel with K = 0 enters
//! only as `a·0 = 0`, so its value never changes any sum. Where A = 0 (no keep pixel within
//! the window) S is not defined: the map holds 0 there and `support` is 0.
//!
//! Work is split into chunks of [`CHUNK_ROWS`] rows, independent of the thread count, and
//! chunk sums are added in a fixed order: results are deterministic on any machine. No
//! fused multiply-add is emitted (Rust never contracts `a*b + c`), so the AVX2 build of the
//! kernel gives the same bits as the baseline one.

use super::window::{C1, C2, RADIUS, TAPS, gaussian_1d};

/// Rows per unit of work.
pub const CHUNK_ROWS: usize = 16;

/// Pixels summed side by side in registers.
const LANES: usize = 8;

/// An image element the kernel reads.
pub(crate) trait Pixel: Copy + Send + Sync {
    fn to_f64(self) -> f64;
}

impl Pixel for f32 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Pixel for f64 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
}

/// Sizes of a batch: `(B, C, H, W)` images, `(B, 1, H, W)` masks, all contiguous.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

/// Per-sample sums.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sums {
    /// `Σ_p K_p Σ_c (a_cp − b_cp)²`.
    pub sse: Vec<f64>,
    /// `Σ_c Σ_p S_cp K_p`.
    pub ssim: Vec<f64>,
}

/// The full SSIM map.
pub(crate) struct Map {
    /// `(B, H, C, W)` (rows of a chunk are contiguous); 0 where there is no support.
    pub s: Vec<f64>,
    /// `(B, H, W)`: 1 where A > 0.
    pub support: Vec<u8>,
}

struct Item<'m> {
    index: usize,
    image: usize,
    y0: usize,
    y1: usize,
    /// Rows y0..y1 of the map, `(rows, C, W)` and `(rows, W)`.
    map: Option<(&'m mut [f64], &'m mut [u8])>,
}

/// Row buffers of one worker, padded by RADIUS zeros on both sides.
struct Buffers {
    k: Vec<f64>,
    a: Vec<f64>,
    b: Vec<f64>,
    q: Vec<f64>,
    ab: Vec<f64>,
    inv_area: Vec<f64>,
    s: Vec<f64>,
}

impl Buffers {
    fn new(width: usize) -> Self {
        let padded = width + 2 * RADIUS;
        Buffers {
            k: vec![0.0; padded],
            a: vec![0.0; padded],
            b: vec![0.0; padded],
            q: vec![0.0; padded],
            ab: vec![0.0; padded],
            inv_area: vec![0.0; width],
            s: vec![0.0; width],
        }
    }
}

/// Computes the per-sample sums (and the map when asked) with up to `threads` threads.
///
/// `a`, `b`: `(B, C, H, W)`; `keep`: `(B, 1, H, W)` with values 0 or 1.
pub(crate) fn run<T: Pixel>(
    a: &[T],
    b: &[T],
    keep: &[u8],
    d: Dims,
    want_map: bool,
    threads: usize,
) -> (Sums, Option<Map>) {
    let (bn, c, h, w) = (d.batch, d.channels, d.height, d.width);
    assert_eq!(a.len(), bn * c * h * w, "source size");
    assert_eq!(b.len(), a.len(), "edited size");
    assert_eq!(keep.len(), bn * h * w, "keep_mask size");
    let mut map = want_map.then(|| Map {
        s: vec![0.0; bn * h * c * w],
        support: vec![0; bn * h * w],
    });

    let chunks = h.div_ceil(CHUNK_ROWS);
    let mut items = Vec::with_capacity(bn * chunks);
    let mut rest = map.as_mut().map(|m| (&mut m.s[..], &mut m.support[..]));
    for image in 0..bn {
        for j in 0..chunks {
            let (y0, y1) = (j * CHUNK_ROWS, ((j + 1) * CHUNK_ROWS).min(h));
            let rows = y1 - y0;
            let part = match rest.take() {
                Some((s, sup)) => {
                    let (s_head, s_tail) = s.split_at_mut(rows * c * w);
                    let (sup_head, sup_tail) = sup.split_at_mut(rows * w);
                    rest = Some((s_tail, sup_tail));
                    Some((s_head, sup_head))
                }
                None => None,
            };
            items.push(Item {
                index: items.len(),
                image,
                y0,
                y1,
                map: part,
            });
        }
    }

    let n_items = items.len();
    let threads = threads.clamp(1, n_items.max(1));
    let mut results = vec![(0.0, 0.0); n_items];
    // Workers take the next chunk from a shared queue (robust to a busy machine); each
    // chunk's sums land at its index, so the result does not depend on who computed what.
    let queue = std::sync::Mutex::new(items.into_iter());
    let work = || -> Vec<(usize, (f64, f64))> {
        let mut buffers = Buffers::new(w);
        let mut done = Vec::new();
        loop {
            let next = queue.lock().expect("queue lock").next();
            let Some(it) = next else { break };
            done.push((it.index, process(a, b, keep, d, it, &mut buffers)));
        }
        done
    };
    let mut collect = |done: Vec<(usize, (f64, f64))>| {
        for (i, r) in done {
            results[i] = r;
        }
    };
    if threads == 1 {
        collect(work());
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
            collect(work());
            for handle in handles {
                collect(handle.join().expect("metrics worker panicked"));
            }
        });
    }

    let mut sums = Sums {
        sse: vec![0.0; bn],
        ssim: vec![0.0; bn],
    };
    for (i, (sse, ssim)) in results.into_iter().enumerate() {
        sums.sse[i / chunks] += sse;
        sums.ssim[i / chunks] += ssim;
    }
    (sums, map)
}

/// One chunk of rows of one sample: (Σ K·Σ_c d², Σ_c Σ S·K) over those rows.
fn process<T: Pixel>(
    a: &[T],
    b: &[T],
    keep: &[u8],
    d: Dims,
    it: Item<'_>,
    buf: &mut Buffers,
) -> (f64, f64) {
    let plane = d.height * d.width;
    let img = d.channels * plane;
    let a = &a[it.image * img..][..img];
    let b = &b[it.image * img..][..img];
    let k = &keep[it.image * plane..][..plane];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { rows_avx2(a, b, k, d, it.y0, it.y1, it.map, buf) };
        }
    }
    rows(a, b, k, d, it.y0, it.y1, it.map, buf)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_avx2<T: Pixel>(
    a: &[T],
    b: &[T],
    k: &[u8],
    d: Dims,
    y0: usize,
    y1: usize,
    map: Option<(&mut [f64], &mut [u8])>,
    buf: &mut Buffers,
) -> (f64, f64) {
    rows(a, b, k, d, y0, y1, map, buf)
}

/// One input row of the window: (a, b, K).
type WindowRow<'r, T> = (&'r [T], &'r [T], &'r [u8]);

/// Rows y0..y1 of one sample (`a`, `b`: `(C, H, W)`, `k`: `(H, W)`).
///
/// The products a⊙K, b⊙K, … are recomputed for each of the 11 output rows an input row feeds:
/// reading the 8-bit mask and the images from L1 and multiplying again is faster than storing
/// four float64 field planes and reading them back from L2 (measured).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rows<T: Pixel>(
    a: &[T],
    b: &[T],
    k: &[u8],
    d: Dims,
    y0: usize,
    y1: usize,
    mut map: Option<(&mut [f64], &mut [u8])>,
    buf: &mut Buffers,
) -> (f64, f64) {
    let (c, h, w) = (d.channels, d.height, d.width);
    let padded = w + 2 * RADIUS;
    let g = gaussian_1d();
    let (mut sse, mut ssim) = (0.0f64, 0.0f64);
    for y in y0..y1 {
        // Window rows that exist (zero padding above and below).
        let taps = |t: usize| -> Option<usize> { (y + t).checked_sub(RADIUS).filter(|&r| r < h) };

        // A = G*K for this row: vertical into buf.k, horizontal into 1/A.
        let vk = &mut buf.k[RADIUS..RADIUS + w];
        vk.fill(0.0);
        for (t, &gt) in g.iter().enumerate() {
            let Some(r) = taps(t) else { continue };
            let kr = &k[r * w..][..w];
            for x in 0..w {
                vk[x] += gt * kr[x] as f64;
            }
        }
        let (vk, inv_area) = (&buf.k[..padded], &mut buf.inv_area[..w]);
        for x in 0..w {
            let win = &vk[x..x + TAPS];
            let mut area = 0.0;
            for t in 0..TAPS {
                area += g[t] * win[t];
            }
            // A > 0 exactly when a keep pixel lies in the window (all taps are positive).
            inv_area[x] = if area > 0.0 { 1.0 / area } else { 0.0 };
        }
        if let Some((_, support)) = map.as_mut() {
            let row = &mut support[(y - y0) * w..][..w];
            for x in 0..w {
                row[x] = u8::from(inv_area[x] > 0.0);
            }
        }

        let ky = &k[y * w..][..w];
        for ch in 0..c {
            let off = ch * h * w;
            // Vertical pass of a_K, b_K, a_K² + b_K², a_K b_K: blocks of LANES pixels summed
            // over the taps in registers (the same per-pixel order as the scalar tail).
            let rows: [Option<WindowRow<'_, T>>; TAPS] = std::array::from_fn(|t| {
                taps(t).map(|r| {
                    (
                        &a[off + r * w..][..w],
                        &b[off + r * w..][..w],
                        &k[r * w..][..w],
                    )
                })
            });
            let (va, vb, vq, vab) = (
                &mut buf.a[RADIUS..RADIUS + w],
                &mut buf.b[RADIUS..RADIUS + w],
                &mut buf.q[RADIUS..RADIUS + w],
                &mut buf.ab[RADIUS..RADIUS + w],
            );
            let mut x0 = 0;
            while x0 + LANES <= w {
                let (mut sa, mut sb, mut sq, mut sab) = (
                    [0.0f64; LANES],
                    [0.0f64; LANES],
                    [0.0f64; LANES],
                    [0.0f64; LANES],
                );
                for (t, row) in rows.iter().enumerate() {
                    let Some((ar, br, kr)) = row else { continue };
                    let gt = g[t];
                    let ar: &[T; LANES] = ar[x0..x0 + LANES].try_into().expect("LANES");
                    let br: &[T; LANES] = br[x0..x0 + LANES].try_into().expect("LANES");
                    let kr: &[u8; LANES] = kr[x0..x0 + LANES].try_into().expect("LANES");
                    for l in 0..LANES {
                        let kv = kr[l] as f64;
                        let av = ar[l].to_f64() * kv; // a⊙K
                        let bv = br[l].to_f64() * kv; // b⊙K
                        sa[l] += gt * av;
                        sb[l] += gt * bv;
                        sq[l] += gt * (av * av + bv * bv); // (a² + b²)⊙K, K binary
                        sab[l] += gt * (av * bv); // ab⊙K
                    }
                }
                va[x0..x0 + LANES].copy_from_slice(&sa);
                vb[x0..x0 + LANES].copy_from_slice(&sb);
                vq[x0..x0 + LANES].copy_from_slice(&sq);
                vab[x0..x0 + LANES].copy_from_slice(&sab);
                x0 += LANES;
            }
            for x in x0..w {
                let (mut sa, mut sb, mut sq, mut sab) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
                for (t, row) in rows.iter().enumerate() {
                    let Some((ar, br, kr)) = row else { continue };
                    let kv = kr[x] as f64;
                    let av = ar[x].to_f64() * kv;
                    let bv = br[x].to_f64() * kv;
                    sa += g[t] * av;
                    sb += g[t] * bv;
                    sq += g[t] * (av * av + bv * bv);
                    sab += g[t] * (av * bv);
                }
                va[x] = sa;
                vb[x] = sb;
                vq[x] = sq;
                vab[x] = sab;
            }

            // Horizontal pass and S.
            let (va, vb, vq, vab) = (
                &buf.a[..padded],
                &buf.b[..padded],
                &buf.q[..padded],
                &buf.ab[..padded],
            );
            let (inv_area, s_row) = (&buf.inv_area[..w], &mut buf.s[..w]);
            for x in 0..w {
                let (wa, wb, wq, wab) = (
                    &va[x..x + TAPS],
                    &vb[x..x + TAPS],
                    &vq[x..x + TAPS],
                    &vab[x..x + TAPS],
                );
                let (mut sa, mut sb, mut sq, mut sab) = (0.0, 0.0, 0.0, 0.0);
                for t in 0..TAPS {
                    sa += g[t] * wa[t];
                    sb += g[t] * wb[t];
                    sq += g[t] * wq[t];
                    sab += g[t] * wab[t];
                }
                let inv = inv_area[x];
                let mu_a = sa * inv; // eq. 16: μ = G*(a⊙K)/A
                let mu_b = sb * inv;
                let mm = mu_a * mu_a + mu_b * mu_b;
                let var_sum = sq * inv - mm; // σ_a² + σ_b² (eq. 17)
                let cov = sab * inv - mu_a * mu_b; // σ_ab (eq. 18)
                // With A = 0 every term is 0 and S = C1·C2 / (C1·C2) = 1: finite, and masked out.
                s_row[x] =
                    ((2.0 * mu_a * mu_b + C1) * (2.0 * cov + C2)) / ((mm + C1) * (var_sum + C2));
            }

            // Σ over the row in LANES interleaved partial sums (a fixed order: deterministic).
            let (ay, by) = (&a[off + y * w..][..w], &b[off + y * w..][..w]);
            let (mut row_sse, mut row_ssim) = ([0.0f64; LANES], [0.0f64; LANES]);
            let mut x0 = 0;
            while x0 + LANES <= w {
                let kb: &[u8; LANES] = ky[x0..x0 + LANES].try_into().expect("LANES");
                let ab: &[T; LANES] = ay[x0..x0 + LANES].try_into().expect("LANES");
                let bb: &[T; LANES] = by[x0..x0 + LANES].try_into().expect("LANES");
                let sb: &[f64; LANES] = s_row[x0..x0 + LANES].try_into().expect("LANES");
                for l in 0..LANES {
                    let kv = kb[l] as f64;
                    let diff = ab[l].to_f64() - bb[l].to_f64();
                    row_sse[l] += kv * (diff * diff);
                    row_ssim[l] += sb[l] * kv;
                }
                x0 += LANES;
            }
            for x in x0..w {
                let kv = ky[x] as f64;
                let diff = ay[x].to_f64() - by[x].to_f64();
                row_sse[x % LANES] += kv * (diff * diff);
                row_ssim[x % LANES] += s_row[x] * kv;
            }
            sse += row_sse.iter().sum::<f64>();
            ssim += row_ssim.iter().sum::<f64>();
            if let Some((s_map, _)) = map.as_mut() {
                let row = &mut s_map[((y - y0) * c + ch) * w..][..w];
                for x in 0..w {
                    row[x] = if inv_area[x] > 0.0 { s_row[x] } else { 0.0 };
                }
            }
        }
    }
    (sse, ssim)
}
