//! Separable Gibbs kernels on regular 1-D, 2-D and 3-D grids (section 4.1.2), in the
//! scaling domain (one banded GEMM per axis) and in the log domain (Algorithm 3, with
//! an adaptive band that is provably within one ulp of the full sum).

use super::gemm as matmul;
use super::Kernel;
use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::real::Real;
use crate::solver::{in_parts, in_parts2, threads, threads_above, EXP_WORK, GEMM_PAR_MIN_WORK};
use faer::{Accum, MatMut, MatRef, Par};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Coordinates and cost scaling of a grid, so numbers can be matched with each peer library.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum GridUnits {
    /// POT / OTT-JAX: each axis is `linspace(0, 1, n)`, `K = exp(-|x-y|²/γ)` (the default).
    #[default]
    Pot,
    /// GeomLoss: each axis is `arange(n)/n`, `K = exp(-|x-y|²/(2ε))` with `ε = γ`.
    GeomLoss,
    /// Pixel units (the WDL authors' C++ code): coordinates are indices, `K = exp(-|i-j|²/γ)`.
    Pixel,
}

/// A regular grid: its shape (row-major flattening, last axis fastest) and units.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Grid {
    shape: Vec<usize>,
    units: GridUnits,
}

impl Grid {
    /// A grid of 1 to 3 axes, each of at least one cell, in POT units.
    pub fn new(shape: &[usize]) -> Result<Self> {
        if shape.is_empty() || shape.len() > 3 {
            return Err(Error::InvalidParameter {
                arg: "grid",
                requirement: "of 1, 2 or 3 axes",
                value: shape.len() as f64,
            });
        }
        if let Some(&n) = shape.iter().find(|&&n| n == 0) {
            return Err(Error::InvalidParameter {
                arg: "grid",
                requirement: "at least one cell per axis",
                value: n as f64,
            });
        }
        Ok(Grid {
            shape: shape.to_vec(),
            units: GridUnits::Pot,
        })
    }
    /// Same grid in other units.
    pub fn with_units(mut self, units: GridUnits) -> Self {
        self.units = units;
        self
    }
    /// Shape, slowest axis first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Units.
    pub fn units(&self) -> GridUnits {
        self.units
    }
    /// Number of cells `N`.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// Always false: a grid has at least one cell.
    pub fn is_empty(&self) -> bool {
        false
    }
    /// Cost of one step along an axis of `n` cells: `C(i, j) = c1 · (i - j)²` on that axis.
    pub fn unit_cost(&self, n: usize) -> f64 {
        match self.units {
            GridUnits::Pot if n > 1 => 1.0 / ((n - 1) * (n - 1)) as f64,
            GridUnits::Pot => 0.0,
            GridUnits::GeomLoss => 0.5 / (n * n) as f64,
            GridUnits::Pixel => 1.0,
        }
    }
    /// Coordinate of cell `i` on an axis of `n` cells.
    pub fn coordinate(&self, i: usize, n: usize) -> f64 {
        match self.units {
            GridUnits::Pot if n > 1 => i as f64 / (n - 1) as f64,
            GridUnits::Pot => 0.0,
            GridUnits::GeomLoss => i as f64 / n as f64,
            GridUnits::Pixel => i as f64,
        }
    }
    /// Multi-index of flat cell `k` (row-major).
    pub fn unravel(&self, mut k: usize) -> Vec<usize> {
        let mut idx = vec![0; self.shape.len()];
        for (a, &n) in self.shape.iter().enumerate().rev() {
            idx[a] = k % n;
            k /= n;
        }
        idx
    }
    /// The dense cost matrix `C` (`N × N`) of the grid, for cross-checks on small grids.
    pub fn cost_matrix<T: Real>(&self) -> Batch<T> {
        let n = self.len();
        Batch::from_fn(n, n, |p, q| {
            let (ip, iq) = (self.unravel(p), self.unravel(q));
            let c = self.shape.iter().enumerate().fold(0.0, |acc, (a, &na)| {
                let d = ip[a] as f64 - iq[a] as f64;
                acc + self.unit_cost(na) * d * d
            });
            T::of(c)
        })
    }
}

#[derive(Clone, Debug)]
struct Axis<T: Real> {
    n: usize,
    /// Cost of one step along the axis: `C_a(i, j) = c1 (i - j)²`.
    c1: f64,
    /// `c1 / γ`: the kernel along this axis is `exp(-c1g (i - j)²)`.
    c1g: T,
    k: Batch<T>,
    /// `K ⊙ C` along this axis (cost units), for transport costs.
    kc: Batch<T>,
    /// `K` in `f64` with the entries below [`GEMM_FLUSH`] set to zero: the matrix of the
    /// shifted-GEMM log-domain path ([`rows_log_gemm`]), whatever `T` is. Built by the
    /// first log-domain application ([`Axis::klog`]), so that a kernel used only in the
    /// scaling domain neither computes nor stores it.
    klog: OnceLock<Batch<f64>>,
    /// Half-width beyond which `K` underflows to exactly zero in `T`.
    band: usize,
    /// The narrowest band [`bound_band`] can give (an input of constant magnitude):
    /// when even that band does not make the product tiled, no input can, and the
    /// per-image magnitudes need not be measured.
    min_band: usize,
}

impl<T: Real> Axis<T> {
    /// The `f64` kernel of the shifted-GEMM log path (see the field), built on first use:
    /// `exp(−c1g δ²)` with `c1g` as stored in `T`, evaluated in `f64` (for `f64` the
    /// windowed path's exponent exactly, for `f32` without its rounding to `f32`).
    fn klog(&self) -> &Batch<f64> {
        self.klog.get_or_init(|| {
            let c1g = self.c1g.to_f64_();
            Batch::from_fn(self.n, self.n, |i, j| {
                let d = i as f64 - j as f64;
                let kij = (-(c1g * d * d)).exp();
                if kij < GEMM_FLUSH {
                    0.0
                } else {
                    kij
                }
            })
        })
    }
}

/// Separable Gibbs kernel on a [`Grid`] with squared Euclidean cost.
///
/// `K = K_0 ⊗ K_1 ⊗ ...` is applied one axis at a time: cost `O(N (n_0 + n_1 + ...))`
/// per histogram instead of `O(N²)` (section 4.1.2). Each axis is a GEMM over the whole
/// batch, restricted to a band around the diagonal: per image, the narrowest one whose
/// dropped terms are provably below a quarter ulp of every result
/// ([`GridKernel::band_for`]), at most the band where `K` is nonzero in `T`. In the log
/// domain (Algorithm 3) each output needs only a window chosen per row so that every
/// dropped term is below one ulp of the result (see [`GridKernel::mean_log_window`]);
/// the unsigned application sums it as a GEMM of `K` (in `f64`) with the max-shifted
/// exponentials of its input, one `exp` per entry and one `ln` per result, and falls
/// back to a windowed logsumexp per output where that sum is too small to be trusted
/// ([`GridKernel::log_fallback_fraction`]); the signed and cost-weighted ones sum the
/// window term by term.
///
/// **Parallelism.** Sequential by default. With [`GridKernel::with_par`]`(Par::rayon(k))`
/// a scaling-domain application of more than 2²² multiply-adds runs on `k` threads (the
/// caller and persistent workers) that take parts of the batch from a queue: whole images, each part running
/// every axis (one image alone: blocks or lines within each axis); a log-domain axis
/// costing more than 2²⁴ multiply-adds or exponentials is split likewise within the
/// axis. Each part goes through sequential GEMMs or log-domain loops, and a scaling-domain
/// result is the same bits for any number of threads. The balanced barycenter's fused
/// elementwise step follows the same setting ([`Kernel::par`]). Measured on two
/// cores: `docs/benchmarks.md`, "P2 scaling path, fourth sitting".
#[derive(Debug)]
pub struct GridKernel<T: Real> {
    grid: Grid,
    gamma: T,
    axes: Vec<Axis<T>>,
    par: Par,
    win_sum: AtomicU64,
    win_count: AtomicU64,
    /// Outputs of the shifted-GEMM log path since the kernel was built, and how many of
    /// them were recomputed by the windowed sum ([`GridKernel::log_fallback_fraction`]).
    gemm_outputs: AtomicU64,
    gemm_fallbacks: AtomicU64,
    /// The ping-pong buffers of [`GridKernel::chain`], kept between applications so that
    /// an application allocates (and page-faults) nothing: a chain takes one and gives it
    /// back, and allocates one only when every buffer is in use by another thread (the
    /// first applications split over images, one buffer per thread from then on).
    scratch: Mutex<Vec<Vec<T>>>,
}

impl<T: Real> Clone for GridKernel<T> {
    fn clone(&self) -> Self {
        GridKernel {
            grid: self.grid.clone(),
            gamma: self.gamma,
            axes: self.axes.clone(),
            par: self.par,
            win_sum: AtomicU64::new(0),
            win_count: AtomicU64::new(0),
            gemm_outputs: AtomicU64::new(0),
            gemm_fallbacks: AtomicU64::new(0),
            scratch: Mutex::new(Vec::new()),
        }
    }
}

impl<T: Real> GridKernel<T> {
    /// Builds the separable kernel of `grid` at regularization `gamma > 0`.
    pub fn new(grid: &Grid, gamma: T) -> Result<Self> {
        crate::validate::positive("gamma", gamma)?;
        let axes = grid
            .shape()
            .iter()
            .map(|&n| {
                let c1 = grid.unit_cost(n);
                let c1g = T::of(c1) / gamma;
                let k = Batch::from_fn(n, n, |i, j| {
                    let d = T::of(i as f64 - j as f64);
                    (-(c1g * d * d)).exp()
                });
                let kc = Batch::from_fn(n, n, |i, j| {
                    let d = i as f64 - j as f64;
                    k.get(i, j) * T::of(c1 * d * d)
                });
                let band = (0..n)
                    .rev()
                    .find(|&d| k.get(0, d) != T::zero())
                    .unwrap_or(0);
                let min_band = bound_band::<T>(c1g, 1.0, band);
                Axis {
                    n,
                    c1,
                    c1g,
                    k,
                    kc,
                    klog: OnceLock::new(),
                    band,
                    min_band,
                }
            })
            .collect();
        Ok(GridKernel {
            grid: grid.clone(),
            gamma,
            axes,
            par: Par::Seq,
            win_sum: AtomicU64::new(0),
            win_count: AtomicU64::new(0),
            gemm_outputs: AtomicU64::new(0),
            gemm_fallbacks: AtomicU64::new(0),
            scratch: Mutex::new(Vec::new()),
        })
    }

    /// Sets the parallelism of the applications (default `Par::Seq`, see
    /// [`GridKernel`]): `Par::rayon(k)` allows `k` threads (`0`: every core).
    pub fn with_par(mut self, par: Par) -> Self {
        self.par = par;
        self
    }

    /// The grid.
    pub fn grid(&self) -> &Grid {
        &self.grid
    }

    /// Per axis, the half-width beyond which `K` is exactly zero in `T`: the widest
    /// scaling-domain band (see [`GridKernel::band_for`] for the one an application uses).
    pub fn bands(&self) -> Vec<usize> {
        self.axes.iter().map(|a| a.band).collect()
    }

    /// The scaling-domain band of axis `axis` for an image whose entries satisfy
    /// `max |x| / min |x| ≤ ratio` (`∞` when an entry is zero): the smallest half-width
    /// `w` whose dropped terms change no output by more than a quarter of `T`'s machine
    /// epsilon relative to `Σ_j K_ij |x_j|` (the proof is in the doc comment of `kernel::grid::bound_band`), never
    /// wider than [`GridKernel::bands`]. Every application of `K` (not of `K ⊙ C`)
    /// measures `ratio` per image and uses this band.
    pub fn band_for(&self, axis: usize, ratio: f64) -> usize {
        let ax = &self.axes[axis];
        bound_band::<T>(ax.c1g, ratio, ax.band)
    }

    /// Mean half-width of the log-domain windows since the kernel was built (`None`
    /// before any log-domain application): per output row, the half-width of Algorithm
    /// 3's window, the narrowest band whose dropped terms are provably below one ulp of
    /// every result of the row. The windowed sums (signed and cost-weighted applications)
    /// sum exactly that band; the shifted GEMM of `apply_log` sums at least that band
    /// and takes the window from its own results (see `rows_log_gemm` in
    /// `src/kernel/grid.rs`).
    pub fn mean_log_window(&self) -> Option<f64> {
        let c = self.win_count.load(Ordering::Relaxed);
        (c > 0).then(|| self.win_sum.load(Ordering::Relaxed) as f64 / c as f64)
    }

    /// Fraction of the log-domain outputs computed through the shifted GEMM (the
    /// unsigned, unweighted applications: [`Kernel::apply_log`] and
    /// [`Kernel::apply_log_t`]) that fell back to the windowed sum of Algorithm 3 because
    /// the GEMM's sum was too small to be trusted (see `rows_log_gemm` in
    /// `src/kernel/grid.rs`), since the kernel was built; `None` before any such output.
    pub fn log_fallback_fraction(&self) -> Option<f64> {
        let c = self.gemm_outputs.load(Ordering::Relaxed);
        (c > 0).then(|| self.gemm_fallbacks.load(Ordering::Relaxed) as f64 / c as f64)
    }

    /// Runs `step(axis, src, dst, inner, blocks)` over the axes of the whole images in `x`
    /// (a column-major batch, one image per column), ping-ponging between `out` and one
    /// scratch buffer so the last axis lands in `out`.
    fn chain(
        &self,
        x: &[T],
        out: &mut [T],
        mut step: impl FnMut(usize, &[T], &mut [T], usize, usize),
    ) {
        let d = self.axes.len();
        let total = x.len();
        let cols = total / self.grid.len();
        let shape = self.grid.shape();
        let geom = |a: usize| {
            let inner: usize = shape[a + 1..].iter().product();
            let outer: usize = shape[..a].iter().product();
            (inner, outer * cols)
        };
        if d == 1 {
            let (inner, blocks) = geom(0);
            step(0, x, out, inner, blocks);
            return;
        }
        // The scratch buffer is fully overwritten by the first step that writes it (every
        // step writes all of `dst`): stale values from an earlier application are harmless.
        let taken = self.scratch.lock().ok().and_then(|mut pool| pool.pop());
        let mut buf = taken.unwrap_or_default();
        if buf.len() < total {
            buf.resize(total, T::zero());
        }
        let tmp = &mut buf[..total];
        // With d axes, start in `out` when d is odd, in `tmp` when even, so the last lands in `out`.
        let mut in_out = d % 2 == 1;
        for a in 0..d {
            let (inner, blocks) = geom(a);
            if a == 0 {
                if in_out {
                    step(a, x, out, inner, blocks);
                } else {
                    step(a, x, tmp, inner, blocks);
                }
            } else if in_out {
                step(a, out, tmp, inner, blocks);
                in_out = false;
                continue;
            } else {
                step(a, tmp, out, inner, blocks);
                in_out = true;
                continue;
            }
        }
        debug_assert!(in_out);
        if let Ok(mut pool) = self.scratch.lock() {
            pool.push(buf);
        }
    }

    /// The scaling-domain application (`K`, or `K ⊙ C` on the axes `pick` selects). On
    /// several threads, a batch of several images is split by whole images, each part
    /// running every axis on its thread: one start of the threads per application instead
    /// of one per axis, and no thread waits for the others between the axes. A single
    /// image is split by lines or blocks inside each axis instead. Either way every
    /// column goes through the same GEMMs as on one thread.
    fn apply_with(&self, x: &Batch<T>, out: &mut Batch<T>, pick: impl Fn(usize) -> bool + Sync) {
        let image = self.grid.len();
        let work: usize = (self.axes.iter())
            .map(|ax| x.as_slice().len() * (2 * ax.band + 1).min(ax.n))
            .sum();
        let th = threads_above(self.par, work, GEMM_PAR_MIN_WORK);
        if th > 1 && x.cols() > 1 {
            in_parts(th, image, x.as_slice(), out.as_mut_slice(), |s, d| {
                self.apply_slices(s, d, &pick, false)
            });
        } else {
            self.apply_slices(x.as_slice(), out.as_mut_slice(), &pick, th > 1);
        }
    }

    /// [`GridKernel::apply_with`] on whole images; `split_axes` splits each axis over the
    /// threads (when its own work is large enough).
    fn apply_slices(
        &self,
        x: &[T],
        out: &mut [T],
        pick: &(impl Fn(usize) -> bool + Sync),
        split_axes: bool,
    ) {
        let image = self.grid.len();
        self.chain(x, out, |a, src, dst, inner, _blocks| {
            let ax = &self.axes[a];
            let weighted = pick(a);
            let m = if weighted { &ax.kc } else { &ax.k };
            // One part per thread: whole blocks (`inner > 1`) or whole lines (`inner == 1`).
            let unit = if inner == 1 { ax.n } else { ax.n * inner };
            // The band of each image comes from the magnitudes of its own entries (all of
            // them, whichever thread holds which part of the image): a column's result
            // does not depend on the other columns of the batch, so chunked gradients
            // equal unchunked ones. `K ⊙ C` has a zero diagonal, which the bound of
            // `bound_band` needs to be one: it keeps the underflow band. When not even the
            // narrowest band makes the product tiled, every band gives the same full GEMM.
            let measured = !weighted && tiles(ax.n, ax.min_band).is_some();
            let start = src.as_ptr() as usize;
            let work = src.len() * (2 * ax.band + 1).min(ax.n);
            let par = if split_axes { self.par } else { Par::Seq };
            let th = threads_above(par, work, GEMM_PAR_MIN_WORK);
            in_parts(th, unit, src, dst, |s, d| {
                let units = s.len() / unit;
                if measured {
                    // Offset of the part in the batch, to find its units' images.
                    let first = (s.as_ptr() as usize - start) / std::mem::size_of::<T>();
                    let image_of = |u: usize| (first + u * unit) / image;
                    // Measured just before the image's GEMM, which then finds it in cache.
                    let band_of = |img: usize| {
                        let whole = &src[img * image..(img + 1) * image];
                        bound_band::<T>(ax.c1g, magnitude_ratio(whole), ax.band)
                    };
                    axis_gemm(m.view(), image_of, band_of, s, d, ax.n, inner, units)
                } else {
                    axis_gemm(m.view(), |_| 0, |_| ax.band, s, d, ax.n, inner, units)
                }
            });
        });
    }

    /// `log(K exp(v))` axis by axis (Algorithm 3); with `weighted = Some(a)` the kernel
    /// of axis `a` is `K_a ⊙ C_a` instead, i.e. `log((K_0 ⊗ .. ⊗ (K_a ⊙ C_a) ⊗ ..) exp(v))`.
    fn log_chain(&self, v: &Batch<T>, out: &mut Batch<T>, weighted: Option<usize>) {
        let mut total = LogStats::default();
        self.chain(
            v.as_slice(),
            out.as_mut_slice(),
            |a, src, dst, inner, _blocks| {
                let ax = &self.axes[a];
                let unit = ax.n * inner;
                let weight = (weighted == Some(a)).then_some(ax.c1);
                // The shifted GEMM (unweighted) costs a multiply-add per term and two
                // transcendental functions per entry; the windowed sum an `exp` per term.
                let work = match weight {
                    None => src.len() * (ax.n + 2 * EXP_WORK),
                    Some(_) => src.len() * ax.n * EXP_WORK,
                };
                let th = threads(self.par, work);
                let path = match weight {
                    None => LogPath::Gemm(ax.klog().view()),
                    Some(_) => LogPath::Windowed(weight),
                };
                for st in in_parts(th, unit, src, dst, |s, d| {
                    axis_log(ax.c1g, path, s, d, None, ax.n, inner)
                }) {
                    total.add(st);
                }
            },
        );
        // The statistics describe the Sinkhorn applications, not the transport costs.
        if weighted.is_none() {
            self.win_sum.fetch_add(total.wsum, Ordering::Relaxed);
            self.win_count.fetch_add(total.wcount, Ordering::Relaxed);
            self.gemm_outputs
                .fetch_add(total.outputs, Ordering::Relaxed);
            self.gemm_fallbacks
                .fetch_add(total.fallbacks, Ordering::Relaxed);
        }
    }
}

/// One axis of the scaling-domain application: for every block, `dst = X K_a` where
/// `X` is `inner × n` (or `dst = K_a X` over the lines when `inner == 1`). Unit `u` (a
/// block, or a line) belongs to image `image_of(u)`, whose band `band_of(image)` is asked
/// once per run of units of that image; consecutive lines of one image go through one
/// GEMM (all lines at once when `image_of` is constant).
#[allow(clippy::too_many_arguments)]
fn axis_gemm<T: Real>(
    k: MatRef<'_, T>,
    image_of: impl Fn(usize) -> usize,
    band_of: impl Fn(usize) -> usize,
    src: &[T],
    dst: &mut [T],
    n: usize,
    inner: usize,
    units: usize,
) {
    if inner == 1 {
        let mut u0 = 0;
        while u0 < units {
            let img = image_of(u0);
            let mut u1 = u0 + 1;
            while u1 < units && image_of(u1) == img {
                u1 += 1;
            }
            let (s, d) = (&src[u0 * n..u1 * n], &mut dst[u0 * n..u1 * n]);
            let x = MatRef::from_column_major_slice(s, n, u1 - u0);
            let out = MatMut::from_column_major_slice_mut(d, n, u1 - u0);
            banded_left(k, band_of(img), x, out, Par::Seq);
            u0 = u1;
        }
    } else {
        let sz = n * inner;
        let mut cached: Option<(usize, usize)> = None;
        for (u, (s, d)) in src
            .chunks_exact(sz)
            .zip(dst.chunks_exact_mut(sz))
            .enumerate()
        {
            let x = MatRef::from_column_major_slice(s, inner, n);
            let out = MatMut::from_column_major_slice_mut(d, inner, n);
            let img = image_of(u);
            let band = match cached {
                Some((i, b)) if i == img => b,
                _ => {
                    let b = band_of(img);
                    cached = Some((img, b));
                    b
                }
            };
            // K_a is symmetric, so X K_aᵀ = X K_a.
            banded_right(x, k, band, out, Par::Seq);
        }
    }
}

/// `max |x| / min |x|` over an image, in `f64`: `∞` when an entry is zero or infinite
/// (then only the underflow band is safe, see [`bound_band`]).
fn magnitude_ratio<T: Real>(x: &[T]) -> f64 {
    // Lane-wise minima and maxima (comparisons and selects), so the pass vectorizes. A
    // NaN compares false and is skipped: it makes its outputs NaN whatever the band.
    const W: usize = 16;
    let (mut lo, mut hi) = ([T::infinity(); W], [T::zero(); W]);
    crate::kernel::lse::vectorized(
        #[inline(always)]
        || {
            let mut chunks = x.chunks_exact(W);
            for c in &mut chunks {
                for k in 0..W {
                    let a = c[k].abs();
                    lo[k] = if a < lo[k] { a } else { lo[k] };
                    hi[k] = if a > hi[k] { a } else { hi[k] };
                }
            }
            for &v in chunks.remainder() {
                let a = v.abs();
                lo[0] = if a < lo[0] { a } else { lo[0] };
                hi[0] = if a > hi[0] { a } else { hi[0] };
            }
        },
    );
    let (mut l, mut h) = (f64::INFINITY, 0.0f64);
    for k in 0..W {
        l = l.min(lo[k].to_f64_());
        h = h.max(hi[k].to_f64_());
    }
    if l > 0.0 && h.is_finite() {
        h / l
    } else {
        f64::INFINITY
    }
}

/// The scaling-domain band of an axis whose kernel is `exp(-c1g δ²)` (`c1g` as stored,
/// in `T`), for inputs with `max |x| / min |x| ≤ ratio`: the smallest `w ≤ cap` with
/// `16 · ratio · τ(w) ≤ ε`, `τ(w) = e^{-c (w+1)²} / (1 − e^{-2c (w+1)})`, `c = c1g` and
/// `ε` the machine epsilon of `T`; `cap` (the underflow band, exact) when no smaller
/// `w` qualifies or `ratio` is infinite.
///
/// **Bound.** Along one line of the axis, `(K x)_i = Σ_j e^{-c (i-j)²} x_j`. The banded
/// product keeps at least the terms with `|i − j| ≤ w` (a tile keeps more, never fewer)
/// and drops a subset of the others, whose sum is at most
/// `max|x| · 2 Σ_{δ>w} e^{-c δ²} ≤ 2 max|x| τ(w)`, because
/// `Σ_{δ>w} e^{-c δ²} = e^{-c (w+1)²} Σ_{k≥0} e^{-c (2(w+1)k + k²)} ≤ e^{-c (w+1)²} Σ_k e^{-2c (w+1) k}`.
/// The diagonal of `K` is `e^0 = 1`, so `Σ_j K_ij |x_j| ≥ |x_i| ≥ min|x|`: the dropped
/// sum is at most `2 ratio τ(w) · Σ_j K_ij |x_j|`. The stored entries are
/// `exp(-(c1g δ δ))` rounded in `T`, within a factor `(1 + ε)³ e^{3ε c δ²} < 2` of the
/// exact ones below the underflow limit, so the dropped stored terms are at most
/// `4 ratio τ(w) Σ_j K_ij |x_j| ≤ (ε/4) Σ_j K_ij |x_j|`. For a nonnegative input (the
/// forward iterations) that is a relative change of at most `ε/4` per axis, a quarter of
/// one rounding; for a signed one (the backward pass) it is below the GEMM's own
/// rounding bound `n ε Σ_j K_ij |x_j|`. Example: γ = 2 px², `ratio = 10¹⁰` gives `w = 11`
/// in `f64` and `w = 9` in `f32` (underflow bands 38 and 14; `ratio = 10⁵`: 10 and 7).
fn bound_band<T: Real>(c1g: T, ratio: f64, cap: usize) -> usize {
    let c = c1g.to_f64_();
    if !(ratio.is_finite() && c > 0.0) {
        return cap;
    }
    let target = (T::epsilon().to_f64_() / (16.0 * ratio.max(1.0))).ln();
    (0..cap)
        .find(|&w| {
            let t = (w + 1) as f64;
            // ln τ(w) = -c t² − ln(1 − e^{-2ct})
            -c * t * t - (-(-2.0 * c * t).exp_m1()).ln() <= target
        })
        .unwrap_or(cap)
}

/// Output tiles for a banded product: worth it only when the band is well inside the axis.
fn tiles(n: usize, band: usize) -> Option<usize> {
    let t = (4 * band).max(64);
    (t + 2 * band < (n * 4) / 5).then_some(t)
}

/// `out = K x` with `K` zero beyond `band` off the diagonal.
fn banded_left<T: Real>(
    k: MatRef<'_, T>,
    band: usize,
    x: MatRef<'_, T>,
    mut out: MatMut<'_, T>,
    par: Par,
) {
    let n = k.nrows();
    match tiles(n, band) {
        None => matmul(out, Accum::Replace, k, x, T::one(), par),
        Some(t) => {
            let mut i0 = 0;
            while i0 < n {
                let i1 = (i0 + t).min(n);
                let (j0, j1) = (i0.saturating_sub(band), (i1 + band).min(n));
                matmul(
                    out.as_mut().subrows_mut(i0, i1 - i0),
                    Accum::Replace,
                    k.submatrix(i0, j0, i1 - i0, j1 - j0),
                    x.subrows(j0, j1 - j0),
                    T::one(),
                    par,
                );
                i0 = i1;
            }
        }
    }
}

/// `out = x K` with `K` symmetric and zero beyond `band` off the diagonal.
fn banded_right<T: Real>(
    x: MatRef<'_, T>,
    k: MatRef<'_, T>,
    band: usize,
    mut out: MatMut<'_, T>,
    par: Par,
) {
    let n = k.nrows();
    match tiles(n, band) {
        None => matmul(out, Accum::Replace, x, k, T::one(), par),
        Some(t) => {
            let mut i0 = 0;
            while i0 < n {
                let i1 = (i0 + t).min(n);
                let (j0, j1) = (i0.saturating_sub(band), (i1 + band).min(n));
                matmul(
                    out.as_mut().subcols_mut(i0, i1 - i0),
                    Accum::Replace,
                    x.subcols(j0, j1 - j0),
                    k.submatrix(j0, i0, j1 - j0, i1 - i0),
                    T::one(),
                    par,
                );
                i0 = i1;
            }
        }
    }
}

/// Half-width of the log-domain window for one output: every term left out is at most
/// `vmax - c1g (w+1)²` and there are fewer than `n` of them, so their sum is below
/// `eps · exp(m_band) ≤ eps · exp(result)` once `c1g (w+1)² ≥ gap + ln(n/eps)` with
/// `gap = vmax - m_band` (`m_band` the largest term within the band). A gap of `-∞`
/// (nothing to sum) gives the smallest window, `+∞` or a non-finite bound the whole axis.
#[inline]
fn window<T: Real>(c1g: T, gap: T, n: usize) -> usize {
    if gap == T::infinity() || c1g <= T::zero() {
        return n;
    }
    let gap = gap.max(T::zero());
    let rhs = gap + (T::of(n as f64) / T::epsilon()).ln();
    let w = (rhs / c1g).sqrt().ceil() - T::one();
    if w.is_finite() && w < T::of(n as f64) {
        w.to_usize().unwrap_or(n)
    } else {
        n
    }
}

/// The smallest window any output can get (when the band holds the maximum).
fn min_window<T: Real>(c1g: T, n: usize) -> usize {
    window(c1g, T::zero(), n)
}

/// Lanes [`rows_log`] processes together: wide enough for full vectors, narrow enough
/// that a window of rows of exponentials stays in the L2 cache.
const LANE_CHUNK: usize = 256;

/// Signs of a signed log-domain batch (`x = sign ⊙ exp(v)`, Algorithm 4's backward
/// loop): the input signs and the output signs, laid out like the values.
struct Signs<'a, T> {
    src: &'a [T],
    dst: &'a mut [T],
}

/// How one log-domain axis sums its terms: the windowed sum of [`rows_log`] (with the
/// optional cost weight of `K_a ⊙ C_a`), or the shifted GEMM of [`rows_log_gemm`] with
/// the axis' `f64` kernel (unsigned batches only: a signed one takes the windowed sum).
#[derive(Clone, Copy)]
enum LogPath<'a> {
    Windowed(Option<f64>),
    Gemm(MatRef<'a, f64>),
}

/// Counts of one log-domain application: Σ windows and their number (for
/// [`GridKernel::mean_log_window`]), outputs of the shifted GEMM and how many of them fell
/// back to the windowed sum (for [`GridKernel::log_fallback_fraction`]).
#[derive(Clone, Copy, Default)]
struct LogStats {
    wsum: u64,
    wcount: u64,
    outputs: u64,
    fallbacks: u64,
}

impl LogStats {
    fn add(&mut self, o: LogStats) {
        self.wsum += o.wsum;
        self.wcount += o.wcount;
        self.outputs += o.outputs;
        self.fallbacks += o.fallbacks;
    }
}

/// `n` rows of `lanes` lanes through the path `path` (see [`LogPath`]).
fn rows_by<T: Real>(
    c1g: T,
    path: LogPath<'_>,
    s: &[T],
    d: &mut [T],
    signs: Option<Signs<'_, T>>,
    n: usize,
    lanes: usize,
) -> LogStats {
    match (path, signs) {
        (LogPath::Gemm(k), None) => rows_log_gemm(c1g, k, s, d, n, lanes),
        (LogPath::Gemm(_), sg) => rows_log(c1g, None, s, d, sg, n, lanes),
        (LogPath::Windowed(w), sg) => rows_log(c1g, w, s, d, sg, n, lanes),
    }
}

/// One axis of Algorithm 3 (`log K exp`) with the adaptive band, unsigned or signed.
///
/// The reduction runs over rows of independent lanes (see [`rows_log`] and
/// [`rows_log_gemm`]). When the axis is the fastest one (`inner == 1`), each line is
/// contiguous: the lines are transposed so that element `j` of every line forms row `j`,
/// which costs two passes over memory and buys vectorized exponentials and maxima across
/// lines instead of one short logsumexp per output.
fn axis_log<T: Real>(
    c1g: T,
    path: LogPath<'_>,
    src: &[T],
    dst: &mut [T],
    signs: Option<Signs<'_, T>>,
    n: usize,
    inner: usize,
) -> LogStats {
    if inner == 1 {
        let lines = src.len() / n;
        if let (LogPath::Gemm(k), None) = (path, signs.as_ref()) {
            return lines_log_gemm(c1g, k, src, dst, n, lines);
        }
        let t = |x: &[T]| {
            let mut rows = vec![T::zero(); x.len()];
            transpose(x, n, lines, &mut rows);
            rows
        };
        let rows = t(src);
        let mut out = vec![T::zero(); src.len()];
        let r = match signs {
            None => rows_by(c1g, path, &rows, &mut out, None, n, lines),
            Some(sg) => {
                let srows = t(sg.src);
                let mut sout = vec![T::zero(); src.len()];
                let dst = Signs {
                    src: &srows,
                    dst: &mut sout,
                };
                let r = rows_by(c1g, path, &rows, &mut out, Some(dst), n, lines);
                transpose(&sout, lines, n, sg.dst);
                r
            }
        };
        transpose(&out, lines, n, dst);
        return r;
    }
    let sz = n * inner;
    let mut total = LogStats::default();
    match signs {
        None => {
            for (s, d) in src.chunks_exact(sz).zip(dst.chunks_exact_mut(sz)) {
                total.add(rows_by(c1g, path, s, d, None, n, inner));
            }
        }
        Some(sg) => {
            let blocks = src.chunks_exact(sz).zip(dst.chunks_exact_mut(sz));
            let sblocks = sg.src.chunks_exact(sz).zip(sg.dst.chunks_exact_mut(sz));
            for ((s, d), (ss, sd)) in blocks.zip(sblocks) {
                let signs = Signs { src: ss, dst: sd };
                total.add(rows_by(c1g, path, s, d, Some(signs), n, inner));
            }
        }
    }
    total
}

/// `out = aᵀ` for a column-major `rows × cols` matrix `a`, by cache-sized tiles.
fn transpose<T: Real>(a: &[T], rows: usize, cols: usize, out: &mut [T]) {
    const TILE: usize = 32;
    for j0 in (0..cols).step_by(TILE) {
        for i0 in (0..rows).step_by(TILE) {
            for j in j0..(j0 + TILE).min(cols) {
                for i in i0..(i0 + TILE).min(rows) {
                    out[j + i * cols] = a[i + j * rows];
                }
            }
        }
    }
}

/// What both shifted-GEMM paths ([`rows_log_gemm`], [`lines_log_gemm`]) derive from the
/// axis: the narrowest window, the windowed path's exponents `c1g δ²` (exactly, for the
/// windows and the fallback), the trust threshold `θ` and whether the GEMM runs by tiles.
struct GemmSetup<T> {
    w0: usize,
    cost: Vec<T>,
    theta: f64,
    tiled: bool,
}

impl<T: Real> GemmSetup<T> {
    fn new(c1g: T, n: usize) -> Self {
        let w0 = min_window(c1g, n);
        GemmSetup {
            w0,
            cost: (0..n)
                .map(|k| {
                    let dd = T::of(k as f64);
                    c1g * dd * dd
                })
                .collect(),
            theta: 4.0 * n as f64 * GEMM_FLUSH / T::epsilon().to_f64_(),
            tiled: tiles(n, w0).is_some(),
        }
    }
}

/// Algorithm 3 along the rows of `s` (`n` rows of `inner` independent lanes):
/// `d[i, k] = log Σ_j exp(s[j, k] − c1g (i − j)²)`, max-shifted per lane, summed over the
/// adaptive window of [`window`] (the widest any lane of the chunk needs, measured from
/// each lane's own maximum). For each output row the window's shifted arguments are
/// formed, exponentiated in one call and summed in row order.
///
/// Signed (`signs`), the terms are weighted by the input signs and the output is
/// `log |Σ|` with the sign of `Σ` (`-∞` and sign 0 for an exact zero); the window is
/// then relative to the largest term, the best a signed sum can promise.
///
/// Weighted (`weight = Some(c1)`), each term also carries the axis cost `c1 δ²`: the
/// kernel is `K_a ⊙ C_a`, for the log-domain transport cost ([`Kernel::apply_cost_log`]).
/// Its log-weight `ln(c1 δ²)` (`-∞` at δ = 0) enters the tabulated exponent, and the
/// window bound gets the slack `max(0, ln(c1 (n-1)²))`: a dropped term is then at most
/// `vmax − c1g (w+1)² + slack`, so the same argument keeps every window within one ulp.
fn rows_log<T: Real>(
    c1g: T,
    weight: Option<f64>,
    s: &[T],
    d: &mut [T],
    mut signs: Option<Signs<'_, T>>,
    n: usize,
    inner: usize,
) -> LogStats {
    // Weighted, the δ = 0 term is zero: the band must reach δ = ±1 to see a maximum.
    let w0 = min_window(c1g, n).max(usize::from(weight.is_some()));
    let ninf = T::neg_infinity();
    // Exactly the per-pair `c1g · δ · δ` of the definition, tabulated by |δ|, minus
    // `ln(c1 δ²)` when weighted.
    let cost: Vec<T> = (0..n)
        .map(|k| {
            let dd = T::of(k as f64);
            let e = c1g * dd * dd;
            match weight {
                None => e,
                Some(_) if k == 0 => T::infinity(),
                Some(c1) => e - T::of((c1 * (k * k) as f64).ln()),
            }
        })
        .collect();
    let slack = match weight {
        Some(c1) if n > 1 => T::of((c1 * ((n - 1) * (n - 1)) as f64).ln().max(0.0)),
        _ => T::zero(),
    };
    let (mut wsum, mut wcount) = (0u64, 0u64);
    let width = inner.min(LANE_CHUNK);
    let (mut vmax, mut mrow) = (vec![ninf; width], vec![ninf; width]);
    let (mut shift, mut srow) = (vec![T::zero(); width], vec![T::zero(); width]);
    let mut e = Vec::new();
    for k0 in (0..inner).step_by(LANE_CHUNK) {
        let len = LANE_CHUNK.min(inner - k0);
        let lanes = |j: usize| j * inner + k0..j * inner + k0 + len;
        let (vmax, mrow) = (&mut vmax[..len], &mut mrow[..len]);
        let (shift, srow) = (&mut shift[..len], &mut srow[..len]);
        vmax.fill(ninf);
        for j in 0..n {
            max_shifted(vmax, &s[lanes(j)], T::zero());
        }
        for i in 0..n {
            let (lo0, hi0) = (i.saturating_sub(w0), (i + w0 + 1).min(n));
            mrow.fill(ninf);
            for j in lo0..hi0 {
                max_shifted(mrow, &s[lanes(j)], cost[i.abs_diff(j)]);
            }
            let w = window(c1g, widest_gap(vmax, mrow) + slack, n).max(w0);
            let (lo, hi) = (i.saturating_sub(w), (i + w + 1).min(n));
            for j in (lo..lo0).chain(hi0..hi) {
                max_shifted(mrow, &s[lanes(j)], cost[i.abs_diff(j)]);
            }
            for (sh, &m) in shift.iter_mut().zip(mrow.iter()) {
                *sh = if m.is_finite() { m } else { T::zero() };
            }
            e.resize((hi - lo) * len, T::zero());
            for (j, ej) in (lo..hi).zip(e.chunks_exact_mut(len)) {
                shifted_args(ej, &s[lanes(j)], cost[i.abs_diff(j)], shift);
            }
            T::exp_slice(&mut e);
            srow.fill(T::zero());
            let out = lanes(i);
            match signs.as_mut() {
                None => {
                    for ej in e.chunks_exact(len) {
                        add_assign(srow, ej, None);
                    }
                    crate::kernel::lse::shift_ln(mrow, srow, &mut d[out]);
                }
                Some(sg) => {
                    for (j, ej) in (lo..hi).zip(e.chunks_exact(len)) {
                        add_assign(srow, ej, Some(&sg.src[lanes(j)]));
                    }
                    signed_finish(mrow, srow, &mut d[out.clone()], &mut sg.dst[out]);
                }
            }
            wsum += w.min(n) as u64;
            wcount += 1;
        }
    }
    LogStats {
        wsum,
        wcount,
        ..LogStats::default()
    }
}

/// Factors below this (2⁻⁵¹¹) are flushed to zero by the shifted-GEMM log path
/// ([`rows_log_gemm`]): both factors of a kept product are then at least 2⁻⁵¹¹, so the
/// product is at least 2⁻¹⁰²², a normal `f64`, and the GEMM never computes with
/// subnormals (about 2-3× slower on Zen 4, see `src/vexp.rs`). A flushed factor loses a
/// term below 2⁻⁵¹¹ (the other factor is at most one); the bound of [`rows_log_gemm`]
/// accounts for it.
const GEMM_FLUSH: f64 = f64::from_bits((1023 - 511) << 52);

/// Algorithm 3 along the rows of `s` (`n` rows of `inner` independent lanes, as in
/// [`rows_log`]), unsigned and unweighted, through one GEMM per chunk of lanes instead of
/// an `exp` per term:
///
/// `d[i, k] = log Σ_j exp(s[j, k] − c1g (i − j)²) = m_k + ln S[i, k]`,
/// `S[i, k] = Σ_j K[i, j] E[j, k]`, `K[i, j] = exp(−c1g (i − j)²)`, `E[j, k] = exp(s[j, k] − m_k)`,
///
/// with `m_k = max_j s[j, k]` (the logsumexp identity of eq. 22 with one shift per lane
/// instead of one per output). So `n` exponentials and `n` logarithms per lane, and the
/// `n²` terms are multiply-adds, as in the scaling domain. `E`, `K` and the GEMM are in
/// `f64` whatever `T` is: for `f32` inputs the `f32` range (`exp` underflows below −87
/// or −104) would otherwise make most far-from-the-maximum outputs fall back.
///
/// **Band.** Where even the narrowest window of Algorithm 3 leaves room for tiles
/// ([`tiles`]), the GEMM runs by tiles of rows over the widest window of the tile, each
/// row's window computed as in [`rows_log`] but from a lower bound of the band maximum
/// (the terms `|i − j| ≤ 1`), which can only widen it; otherwise it sums the whole axis.
/// The windows reported to [`GridKernel::mean_log_window`] are those of Algorithm 3's
/// bound evaluated with the result itself in place of the band maximum (`vmax − d[i, k]`,
/// [`window`]): the narrowest band provably within one ulp of every result of the row,
/// which this path sums (at least).
///
/// **Error bound.** Let `S*` be the exact sum and `u` the unit roundoff of `f64`. Every
/// kept factor is an `exp` within 1.07 ulp (`src/vexp.rs`; `K` by `f64::exp`, within 1
/// ulp) of the exact value of its rounded argument, and their product rounds once (`5.3 u`
/// per term in all); a factor below `F =` [`GEMM_FLUSH`] is set to
/// zero, which loses a term below `F` (the other factor is at most 1, both being shifted
/// to a maximum of 1); every kept product is a normal number (`≥ F²`), so nothing else
/// underflows; the GEMM adds at most `n` nonnegative terms (relative error `≤ n u`); a
/// tile drops only terms beyond the window (below `ε_T` relative, see [`window`]). Hence
/// `|S − S*| ≤ (n + 5) u S* + a S* + ε_T S* + n F`, `a` the argument rounding
/// (`u (|s − m_k| + 2 c1g δ²)` on a term that matters, as on the windowed path). An output is kept when
/// `S ≥ θ = 4 n F / ε_T` (`ε_T` the machine epsilon of `T`): there the flushed mass `n F`
/// is at most a quarter of `ε_T` relative to `S`, a quarter ulp of `T`, and `ln S`
/// turns the relative error of `S` into an absolute one. Any other output (`S < θ`, i.e.
/// more than about `318 − ln 4n` nats below the lane maximum in `f64`, `338 − ln 4n` in
/// `f32`; or a non-finite `S`, from a `+∞` or NaN input) is recomputed alone by the
/// windowed, per-output-shifted sum of [`rows_log`] over a window at least as wide as
/// Algorithm 3's. Lanes that are all `−∞` give `−∞`.
///
/// Returns the window statistics and the counts of outputs and fallbacks.
fn rows_log_gemm<T: Real>(
    c1g: T,
    klog: MatRef<'_, f64>,
    s: &[T],
    d: &mut [T],
    n: usize,
    inner: usize,
) -> LogStats {
    let GemmSetup {
        w0,
        cost,
        theta,
        tiled,
    } = GemmSetup::new(c1g, n);
    let ninf = T::neg_infinity();
    let mut st = LogStats::default();
    let width = inner.min(LANE_CHUNK);
    let (mut vmax, mut mrow) = (vec![ninf; width], vec![ninf; width]);
    let mut shift = vec![0.0f64; width];
    let mut wins = vec![n; n];
    let (mut e, mut sum) = (vec![0.0f64; width * n], vec![0.0f64; width * n]);
    let mut terms = Vec::new();
    for k0 in (0..inner).step_by(LANE_CHUNK) {
        let len = LANE_CHUNK.min(inner - k0);
        let lanes = |j: usize| j * inner + k0..j * inner + k0 + len;
        let (vmax, mrow, shift) = (&mut vmax[..len], &mut mrow[..len], &mut shift[..len]);
        vmax.fill(ninf);
        for j in 0..n {
            max_shifted(vmax, &s[lanes(j)], T::zero());
        }
        if tiled {
            for (i, wi) in wins.iter_mut().enumerate() {
                mrow.fill(ninf);
                for j in i.saturating_sub(1)..(i + 2).min(n) {
                    max_shifted(mrow, &s[lanes(j)], cost[i.abs_diff(j)]);
                }
                *wi = window(c1g, widest_gap(vmax, mrow), n).max(w0).min(n);
            }
        }
        for (sh, &m) in shift.iter_mut().zip(vmax.iter()) {
            *sh = if m.is_finite() { m.to_f64_() } else { 0.0 };
        }
        let (e, sum) = (&mut e[..len * n], &mut sum[..len * n]);
        for (j, ej) in e.chunks_exact_mut(len).enumerate() {
            widened_args(ej, &s[lanes(j)], shift);
        }
        <f64 as Real>::exp_slice(e);
        flush_small(e);
        windowed_gemm(
            MatRef::from_column_major_slice(e, len, n),
            klog,
            &wins,
            MatMut::from_column_major_slice_mut(sum, len, n),
        );
        for (i, si) in sum.chunks_exact(len).enumerate() {
            let out = &mut d[lanes(i)];
            let suspect = shift_ln_widened(vmax, shift, si, out, theta);
            st.outputs += len as u64;
            if suspect > 0 {
                for (kk, (&vm, &sk)) in vmax.iter().zip(si).enumerate() {
                    if !needs_fallback(vm, sk, theta) {
                        continue;
                    }
                    st.fallbacks += 1;
                    let k = k0 + kk;
                    // This lane's window from its terms `|i − j| ≤ 1` (a lower bound of
                    // the band maximum, so at least Algorithm 3's window); the whole
                    // axis for a `+∞` maximum.
                    let w = if vm.is_finite() {
                        let (lo, hi) = (i.saturating_sub(1), (i + 2).min(n));
                        let m3 = (lo..hi)
                            .map(|j| s[j * inner + k] - cost[i.abs_diff(j)])
                            .fold(ninf, |a, b| if b > a { b } else { a });
                        window(c1g, vm - m3, n).max(w0)
                    } else {
                        n
                    };
                    let (lo, hi) = (i.saturating_sub(w), (i + w + 1).min(n));
                    terms.clear();
                    terms.extend((lo..hi).map(|j| s[j * inner + k] - cost[i.abs_diff(j)]));
                    out[kk] = crate::kernel::lse::lse(&terms);
                }
            }
            let w = window(c1g, widest_gap(vmax, out), n).max(w0).min(n);
            st.wsum += w as u64;
            st.wcount += 1;
        }
    }
    st
}

/// Above any sum of [`rows_log_gemm`] with a finite shift (at most `n` terms of at most
/// one): `sum ≤ SUM_MAX` only rejects `∞` and NaN.
const SUM_MAX: f64 = f64::from_bits((1023 + 60) << 52);

/// Whether an output of [`rows_log_gemm`] must be recomputed: its lane has a value
/// (`vmax > -∞`) and its sum is below the threshold `theta`, or not finite, or the lane
/// maximum is `+∞`.
#[inline(always)]
fn needs_fallback<T: Real>(vmax: T, sum: f64, theta: f64) -> bool {
    let trusted = vmax.is_finite() && sum >= theta && sum <= SUM_MAX;
    vmax != T::neg_infinity() && !trusted
}

/// [`rows_log_gemm`] for an axis whose lines are contiguous (`inner == 1`: the fastest
/// axis): `s` holds `lines` lines of `n` entries, and `out = K E` with `E` the lines'
/// shifted exponentials as columns, so no transposition is needed. Same shifts, band,
/// bound, threshold and fallback; the windows (tiles and statistics) are taken per row
/// over chunks of [`LANE_CHUNK`] lines, as the transposed layout would.
fn lines_log_gemm<T: Real>(
    c1g: T,
    klog: MatRef<'_, f64>,
    s: &[T],
    d: &mut [T],
    n: usize,
    lines: usize,
) -> LogStats {
    let GemmSetup {
        w0,
        cost,
        theta,
        tiled,
    } = GemmSetup::new(c1g, n);
    let ninf = T::neg_infinity();
    let mut st = LogStats::default();
    let width = lines.min(LANE_CHUNK);
    let mut vmax = vec![ninf; width];
    let (mut gap, mut wins) = (vec![ninf; n], vec![n; n]);
    let (mut e, mut sum) = (vec![0.0f64; width * n], vec![0.0f64; width * n]);
    let mut terms = Vec::new();
    let c1 = cost.get(1).copied().unwrap_or(T::zero());
    for l0 in (0..lines).step_by(LANE_CHUNK) {
        let len = LANE_CHUNK.min(lines - l0);
        let line = |l: usize| (l0 + l) * n..(l0 + l + 1) * n;
        let vmax = &mut vmax[..len];
        for (l, vm) in vmax.iter_mut().enumerate() {
            *vm = line_max(&s[line(l)]);
        }
        if tiled {
            gap.fill(ninf);
            for (l, &vm) in vmax.iter().enumerate() {
                if vm != ninf {
                    near_gap(&mut gap, &s[line(l)], vm, c1);
                }
            }
            for (wi, &g) in wins.iter_mut().zip(gap.iter()) {
                *wi = window(c1g, g, n).max(w0).min(n);
            }
        }
        let shift = |vm: T| if vm.is_finite() { vm.to_f64_() } else { 0.0 };
        let (e, sum) = (&mut e[..len * n], &mut sum[..len * n]);
        for (l, el) in e.chunks_exact_mut(n).enumerate() {
            widened_args_by(el, &s[line(l)], shift(vmax[l]));
        }
        <f64 as Real>::exp_slice(e);
        flush_small(e);
        windowed_gemm_left(
            klog,
            MatRef::from_column_major_slice(e, n, len),
            &wins,
            MatMut::from_column_major_slice_mut(sum, n, len),
        );
        gap.fill(ninf);
        for (l, sl) in sum.chunks_exact(n).enumerate() {
            let vm = vmax[l];
            let src = &s[line(l)];
            let out = &mut d[line(l)];
            let suspect = shift_ln_line(vm, shift(vm), sl, out, theta);
            st.outputs += n as u64;
            if suspect > 0 {
                for (i, &si) in sl.iter().enumerate() {
                    if !needs_fallback(vm, si, theta) {
                        continue;
                    }
                    st.fallbacks += 1;
                    // As in `rows_log_gemm`: the window from the terms `|i − j| ≤ 1`.
                    let w = if vm.is_finite() {
                        let (lo, hi) = (i.saturating_sub(1), (i + 2).min(n));
                        let m3 = (lo..hi)
                            .map(|j| src[j] - cost[i.abs_diff(j)])
                            .fold(ninf, |a, b| if b > a { b } else { a });
                        window(c1g, vm - m3, n).max(w0)
                    } else {
                        n
                    };
                    let (lo, hi) = (i.saturating_sub(w), (i + w + 1).min(n));
                    terms.clear();
                    terms.extend((lo..hi).map(|j| src[j] - cost[i.abs_diff(j)]));
                    out[i] = crate::kernel::lse::lse(&terms);
                }
            }
            if vm != ninf {
                result_gap(&mut gap, vm, out);
            }
        }
        for &g in gap.iter() {
            st.wsum += window(c1g, g, n).max(w0).min(n) as u64;
            st.wcount += 1;
        }
    }
    st
}

/// `max_j v[j]` (`-∞` for an empty or all-`-∞` slice, NaN ignored), vectorized.
fn line_max<T: Real>(v: &[T]) -> T {
    const W: usize = 8;
    let ninf = T::neg_infinity();
    let mut acc = [ninf; W];
    crate::kernel::lse::vectorized(
        #[inline(always)]
        || {
            let c = v.chunks_exact(W);
            let r = c.remainder();
            for x in c {
                for k in 0..W {
                    acc[k] = if x[k] > acc[k] { x[k] } else { acc[k] };
                }
            }
            for &x in r {
                acc[0] = if x > acc[0] { x } else { acc[0] };
            }
        },
    );
    acc.iter().fold(ninf, |a, &b| if b > a { b } else { a })
}

/// `gap[i] = max(gap[i], vmax − m3[i])` with `m3[i] = max(v[i], v[i±1] − c1)` (a lower
/// bound of the band maximum, `+∞` gap when it is `-∞`): [`widest_gap`] of the near
/// terms, accumulated one line at a time.
fn near_gap<T: Real>(gap: &mut [T], v: &[T], vmax: T, c1: T) {
    let n = v.len();
    let ninf = T::neg_infinity();
    for (i, g) in gap.iter_mut().enumerate().take(n) {
        let mut m = v[i];
        if i > 0 && v[i - 1] - c1 > m {
            m = v[i - 1] - c1;
        }
        if i + 1 < n && v[i + 1] - c1 > m {
            m = v[i + 1] - c1;
        }
        let x = if m == ninf { T::infinity() } else { vmax - m };
        *g = if x > *g { x } else { *g };
    }
}

/// `gap[i] = max(gap[i], vmax − out[i])` (`+∞` where `out[i] = -∞`, NaN ignored):
/// [`widest_gap`] of the results, accumulated one line at a time, vectorized.
fn result_gap<T: Real>(gap: &mut [T], vmax: T, out: &[T]) {
    crate::kernel::lse::vectorized(
        #[inline(always)]
        || {
            for (g, &o) in gap.iter_mut().zip(out) {
                let x = if o == T::neg_infinity() {
                    T::infinity()
                } else {
                    vmax - o
                };
                *g = if x > *g { x } else { *g };
            }
        },
    )
}

/// `e[j] = v[j] − shift` in `f64`, vectorized.
fn widened_args_by<T: Real>(e: &mut [f64], v: &[T], shift: f64) {
    crate::kernel::lse::vectorized(
        #[inline(always)]
        || {
            for (ek, &vk) in e.iter_mut().zip(v) {
                *ek = vk.to_f64_() - shift;
            }
        },
    )
}

/// [`shift_ln_widened`] for one line: one lane maximum and shift for all its outputs.
fn shift_ln_line<T: Real>(vmax: T, shift: f64, sum: &[f64], out: &mut [T], theta: f64) -> u32 {
    if vmax == T::neg_infinity() {
        out.fill(vmax);
        return 0;
    }
    // Two loops: the count's mixed-width reduction would keep the logarithms scalar.
    crate::kernel::lse::vectorized(
        #[inline(always)]
        || {
            for (o, &sk) in out.iter_mut().zip(sum) {
                *o = T::of(shift + crate::kernel::lse::ln_lane(sk));
            }
        },
    );
    if !vmax.is_finite() {
        return sum.len() as u32;
    }
    sum.iter()
        .map(|&sk| u32::from(!(sk >= theta && sk <= SUM_MAX)))
        .sum()
}

/// `out = K e` (`K` symmetric `n × n`, `e` is `n × lines`) over, for every output row
/// `i`, at least the rows `j` with `|i − j| ≤ wins[i]`: [`windowed_gemm`] from the left.
fn windowed_gemm_left(
    k: MatRef<'_, f64>,
    e: MatRef<'_, f64>,
    wins: &[usize],
    mut out: MatMut<'_, f64>,
) {
    let n = k.nrows();
    let widest = wins.iter().copied().max().unwrap_or(n);
    match tiles(n, widest) {
        None => matmul(out, Accum::Replace, k, e, 1.0, Par::Seq),
        Some(t) => {
            let mut i0 = 0;
            while i0 < n {
                let i1 = (i0 + t).min(n);
                let band = wins[i0..i1].iter().copied().max().unwrap_or(n);
                let (j0, j1) = (i0.saturating_sub(band), (i1 + band).min(n));
                matmul(
                    out.as_mut().subrows_mut(i0, i1 - i0),
                    Accum::Replace,
                    k.submatrix(i0, j0, i1 - i0, j1 - j0),
                    e.subrows(j0, j1 - j0),
                    1.0,
                    Par::Seq,
                );
                i0 = i1;
            }
        }
    }
}

/// `out = e K` (`e` is `lanes × n`, `K` symmetric `n × n`) over, for every output column
/// `i`, at least the columns `j` with `|i − j| ≤ wins[i]`: by tiles of output columns
/// ([`tiles`]), each over the widest window of the tile; one full GEMM when tiles do not
/// pay.
fn windowed_gemm(e: MatRef<'_, f64>, k: MatRef<'_, f64>, wins: &[usize], mut out: MatMut<'_, f64>) {
    let n = k.nrows();
    let widest = wins.iter().copied().max().unwrap_or(n);
    match tiles(n, widest) {
        None => matmul(out, Accum::Replace, e, k, 1.0, Par::Seq),
        Some(t) => {
            let mut i0 = 0;
            while i0 < n {
                let i1 = (i0 + t).min(n);
                let band = wins[i0..i1].iter().copied().max().unwrap_or(n);
                let (j0, j1) = (i0.saturating_sub(band), (i1 + band).min(n));
                matmul(
                    out.as_mut().subcols_mut(i0, i1 - i0),
                    Accum::Replace,
                    e.subcols(j0, j1 - j0),
                    k.submatrix(j0, i0, j1 - j0, i1 - i0),
                    1.0,
                    Par::Seq,
                );
                i0 = i1;
            }
        }
    }
}

/// `e[k] = v[k] − shift[k]` in `f64`, vectorized.
fn widened_args<T: Real>(e: &mut [f64], v: &[T], shift: &[f64]) {
    crate::kernel::lse::vectorized(
        #[inline(always)]
        || {
            for ((ek, &vk), &sk) in e.iter_mut().zip(v).zip(shift) {
                *ek = vk.to_f64_() - sk;
            }
        },
    )
}

/// `e[k] = 0` where `e[k] <` [`GEMM_FLUSH`], vectorized (NaN is kept).
fn flush_small(e: &mut [f64]) {
    crate::kernel::lse::vectorized(
        #[inline(always)]
        || {
            for ek in e.iter_mut() {
                *ek = if *ek < GEMM_FLUSH { 0.0 } else { *ek };
            }
        },
    )
}

/// `out[k] = shift[k] + ln(sum[k])` rounded to `T`, or `-∞` where the lane maximum
/// `vmax[k]` is `-∞`, vectorized: the last step of [`rows_log_gemm`]. Returns how many
/// lanes need the fallback ([`needs_fallback`]).
fn shift_ln_widened<T: Real>(
    vmax: &[T],
    shift: &[f64],
    sum: &[f64],
    out: &mut [T],
    theta: f64,
) -> u32 {
    // Two loops: the count's mixed-width reduction would keep the logarithms scalar.
    crate::kernel::lse::vectorized(
        #[inline(always)]
        || {
            for (((o, &vm), &sh), &sk) in out.iter_mut().zip(vmax).zip(shift).zip(sum) {
                let l = T::of(sh + crate::kernel::lse::ln_lane(sk));
                *o = if vm == T::neg_infinity() { vm } else { l };
            }
        },
    );
    vmax.iter()
        .zip(sum)
        .map(|(&vm, &sk)| u32::from(needs_fallback(vm, sk, theta)))
        .sum()
}

/// `m[k] = max(m[k], v[k] − c)`, vectorized. Written as a compare-and-select, which
/// compiles to one `vmaxpd`, not `f64::max` (whose NaN rule costs a compare, a blend and
/// an unordered test per lane): the same result here, because `m` starts at `-∞` and a
/// NaN `v[k] − c` fails the comparison, so `m` never holds a NaN.
fn max_shifted<T: Real>(m: &mut [T], v: &[T], c: T) {
    crate::kernel::lse::vectorized(
        #[inline(always)]
        || {
            for (mk, &vk) in m.iter_mut().zip(v) {
                let x = vk - c;
                *mk = if x > *mk { x } else { *mk };
            }
        },
    )
}

/// `e[k] = v[k] − c − shift[k]`, vectorized.
fn shifted_args<T: Real>(e: &mut [T], v: &[T], c: T, shift: &[T]) {
    crate::kernel::lse::vectorized(
        #[inline(always)]
        || {
            for ((ek, &vk), &sk) in e.iter_mut().zip(v).zip(shift) {
                *ek = vk - c - sk;
            }
        },
    )
}

/// `a[k] += b[k]`, or `a[k] += sign[k] · b[k]`, vectorized.
fn add_assign<T: Real>(a: &mut [T], b: &[T], sign: Option<&[T]>) {
    crate::kernel::lse::vectorized(
        #[inline(always)]
        || match sign {
            None => {
                for (x, &y) in a.iter_mut().zip(b) {
                    *x += y;
                }
            }
            Some(sg) => {
                for ((x, &y), &z) in a.iter_mut().zip(b).zip(sg) {
                    *x += z * y;
                }
            }
        },
    )
}

/// Signed logsumexp outputs from the lane maxima `m` and the shifted signed sums `sum`:
/// `(m + ln|sum|, sign(sum))`, `(-∞, 0)` for an exact zero, `(m, 0)` for a non-finite `m`.
fn signed_finish<T: Real>(m: &[T], sum: &[T], out: &mut [T], out_sign: &mut [T]) {
    for (((o, os), &mk), &sk) in out.iter_mut().zip(out_sign.iter_mut()).zip(m).zip(sum) {
        (*o, *os) = if !mk.is_finite() {
            (mk, T::zero())
        } else if sk == T::zero() {
            (T::neg_infinity(), T::zero())
        } else {
            (mk + crate::kernel::lse::ln_lane(sk.abs()), sk.signum())
        };
    }
}

/// `v[k] = -∞` where `sign[k] = 0`: the canonical log of a zero of a signed batch.
fn mask_zero_sign<T: Real>(v: &mut [T], sign: &[T]) {
    for (vk, &sk) in v.iter_mut().zip(sign) {
        if sk == T::zero() {
            *vk = T::neg_infinity();
        }
    }
}

/// `max_k (vmax[k] − m[k])`, the largest gap between a lane's maximum and the maximum
/// within the band: `+∞` when a lane has values but none in the band, lanes without any
/// value (all `-∞`) ignored, a NaN gap (`+∞ − (+∞)`) ignored. Branch-free over lanes
/// (selects into a few accumulators), so that it vectorizes.
fn widest_gap<T: Real>(vmax: &[T], m: &[T]) -> T {
    const W: usize = 8;
    let ninf = T::neg_infinity();
    let mut acc = [ninf; W];
    #[inline(always)]
    fn gap<T: Real>(v: T, mk: T) -> T {
        let g = if mk == T::neg_infinity() {
            T::infinity()
        } else {
            v - mk
        };
        if v == T::neg_infinity() {
            v
        } else {
            g
        }
    }
    crate::kernel::lse::vectorized(
        #[inline(always)]
        || {
            let (vc, mc) = (vmax.chunks_exact(W), m.chunks_exact(W));
            let (vr, mr) = (vc.remainder(), mc.remainder());
            for (v, mk) in vc.zip(mc) {
                for k in 0..W {
                    let g = gap(v[k], mk[k]);
                    acc[k] = if g > acc[k] { g } else { acc[k] };
                }
            }
            for (&v, &mk) in vr.iter().zip(mr) {
                let g = gap(v, mk);
                acc[0] = if g > acc[0] { g } else { acc[0] };
            }
        },
    );
    acc.iter().fold(ninf, |a, &b| if b > a { b } else { a })
}

impl<T: Real> Kernel<T> for GridKernel<T> {
    fn nrows(&self) -> usize {
        self.grid.len()
    }
    fn ncols(&self) -> usize {
        self.grid.len()
    }
    fn gamma(&self) -> T {
        self.gamma
    }
    fn par(&self) -> Par {
        self.par
    }
    fn apply(&self, x: &Batch<T>, out: &mut Batch<T>) {
        self.apply_with(x, out, |_| false);
    }
    fn apply_t(&self, x: &Batch<T>, out: &mut Batch<T>) {
        self.apply(x, out);
    }
    fn apply_log(&self, v: &Batch<T>, out: &mut Batch<T>) {
        self.log_chain(v, out, None);
    }
    fn apply_log_t(&self, v: &Batch<T>, out: &mut Batch<T>) {
        self.log_chain(v, out, None);
    }
    fn apply_log_signed(
        &self,
        v: &Batch<T>,
        sign: &Batch<T>,
        out: &mut Batch<T>,
        out_sign: &mut Batch<T>,
        _transpose: bool,
    ) {
        let shape = self.grid.shape().to_vec();
        let (mut cur_v, mut cur_s) = (v.clone(), sign.clone());
        // Sign-0 entries are zeros whatever their `v`: make them `-∞` so that the lane
        // maxima (the logsumexp shift and the adaptive window of `rows_log`) are taken
        // over the nonzero terms only. A sign-0 entry with a large `v` would otherwise
        // set the shift and underflow every real term.
        mask_zero_sign(cur_v.as_mut_slice(), cur_s.as_slice());
        for (a, ax) in self.axes.iter().enumerate() {
            let inner: usize = shape[a + 1..].iter().product();
            let unit = ax.n * inner;
            let th = threads(self.par, v.as_slice().len() * ax.n * EXP_WORK);
            in_parts2(
                th,
                unit,
                (cur_v.as_slice(), cur_s.as_slice()),
                (out.as_mut_slice(), out_sign.as_mut_slice()),
                |(s, ss), (d, sd)| {
                    let signs = Signs { src: ss, dst: sd };
                    axis_log(
                        ax.c1g,
                        LogPath::Windowed(None),
                        s,
                        d,
                        Some(signs),
                        ax.n,
                        inner,
                    )
                },
            );
            if a + 1 < self.axes.len() {
                cur_v.as_mut_slice().copy_from_slice(out.as_slice());
                cur_s.as_mut_slice().copy_from_slice(out_sign.as_slice());
                mask_zero_sign(cur_v.as_mut_slice(), cur_s.as_slice());
            }
        }
    }
    fn apply_cost(&self, x: &Batch<T>, out: &mut Batch<T>) {
        // K ⊙ C = Σ_a (K_0 ⊗ .. ⊗ (K_a ⊙ C_a) ⊗ .. ): one separable pass per axis.
        let mut part = Batch::zeros(out.rows(), out.cols());
        out.as_mut_slice().fill(T::zero());
        for a in 0..self.axes.len() {
            self.apply_with(x, &mut part, |b| b == a);
            for (o, &p) in out.as_mut_slice().iter_mut().zip(part.as_slice()) {
                *o += p;
            }
        }
    }
    fn apply_cost_log(
        &self,
        v: &Batch<T>,
        out: &mut Batch<T>,
        out_sign: &mut Batch<T>,
        _transpose: bool,
    ) {
        // The squared Euclidean cost is a sum over axes, C = Σ_a C_a, so
        // K ⊙ C = Σ_a K_0 ⊗ .. ⊗ (K_a ⊙ C_a) ⊗ .. (as in `apply_cost`): one log-domain
        // pass per axis with the weighted kernel `K_a ⊙ C_a` on axis `a` (Algorithm 3
        // with log-weights, see `rows_log`), then a logsumexp of the nonnegative parts.
        // Never forms `K`, so nothing underflows at small γ; symmetric, so `transpose`
        // changes nothing.
        let mut part = Batch::zeros(out.rows(), out.cols());
        out.as_mut_slice().fill(T::neg_infinity());
        for a in 0..self.axes.len() {
            self.log_chain(v, &mut part, Some(a));
            for (o, &p) in out.as_mut_slice().iter_mut().zip(part.as_slice()) {
                let (hi, lo) = if *o >= p { (*o, p) } else { (p, *o) };
                *o = if lo == T::neg_infinity() || !hi.is_finite() {
                    hi
                } else {
                    hi + (lo - hi).exp().ln_1p()
                };
            }
        }
        for (sg, &o) in out_sign.as_mut_slice().iter_mut().zip(out.as_slice()) {
            *sg = if o == T::neg_infinity() {
                T::zero()
            } else {
                T::one()
            };
        }
    }
    fn cost_matrix(&self) -> Batch<T> {
        self.grid.cost_matrix()
    }
    fn is_symmetric(&self) -> bool {
        true
    }
    fn describe(&self) -> String {
        let axes: Vec<String> = self
            .axes
            .iter()
            .map(|a| format!("n={} band=±{} (±{} at max/min 1)", a.n, a.band, a.min_band))
            .collect();
        format!(
            "separable {:?} grid kernel ({:?} units), γ = {}, {}, axes [{}]",
            self.grid.shape(),
            self.grid.units(),
            self.gamma,
            T::NAME,
            axes.join(", ")
        )
    }
}
