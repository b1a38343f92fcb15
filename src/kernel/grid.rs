//! Separable Gibbs kernels on regular 1-D, 2-D and 3-D grids (section 4.1.2), in the
//! scaling domain (one banded GEMM per axis) and in the log domain (Algorithm 3, with
//! an adaptive band that is provably within one ulp of the full sum).

use super::lse::{lse, lse_signed};
use super::Kernel;
use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::real::Real;
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use std::sync::atomic::{AtomicU64, Ordering};

/// Coordinates and cost scaling of a grid, so numbers can be matched with each peer library.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// `c1 / γ`: the kernel along this axis is `exp(-c1g (i - j)²)`.
    c1g: T,
    k: Batch<T>,
    /// `K ⊙ C` along this axis (cost units), for transport costs.
    kc: Batch<T>,
    /// Half-width beyond which `K` underflows to exactly zero in `T`.
    band: usize,
}

/// Separable Gibbs kernel on a [`Grid`] with squared Euclidean cost.
///
/// `K = K_0 ⊗ K_1 ⊗ ...` is applied one axis at a time: cost `O(N (n_0 + n_1 + ...))`
/// per histogram instead of `O(N²)` (section 4.1.2). Each axis is a GEMM over the whole
/// batch, restricted to the band where `K` is nonzero in floating point; in the log
/// domain each output uses a window chosen per row so that every dropped term is below
/// one ulp of the result (see [`GridKernel::mean_log_window`]).
#[derive(Debug)]
pub struct GridKernel<T: Real> {
    grid: Grid,
    gamma: T,
    axes: Vec<Axis<T>>,
    par: Par,
    win_sum: AtomicU64,
    win_count: AtomicU64,
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
                Axis {
                    n,
                    c1g,
                    k,
                    kc,
                    band,
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
        })
    }

    /// Sets the parallelism of the GEMMs (default sequential).
    pub fn with_par(mut self, par: Par) -> Self {
        self.par = par;
        self
    }

    /// The grid.
    pub fn grid(&self) -> &Grid {
        &self.grid
    }

    /// Per axis, the half-width beyond which `K` is exactly zero in `T` (the scaling-domain band).
    pub fn bands(&self) -> Vec<usize> {
        self.axes.iter().map(|a| a.band).collect()
    }

    /// Mean half-width of the log-domain windows used since the kernel was built
    /// (`None` before any log-domain application).
    pub fn mean_log_window(&self) -> Option<f64> {
        let c = self.win_count.load(Ordering::Relaxed);
        (c > 0).then(|| self.win_sum.load(Ordering::Relaxed) as f64 / c as f64)
    }

    /// Runs `step(axis, src, dst, inner, blocks)` over the axes, ping-ponging between
    /// `out` and one scratch buffer so the last axis lands in `out`.
    fn chain(
        &self,
        x: &Batch<T>,
        out: &mut Batch<T>,
        mut step: impl FnMut(usize, &[T], &mut [T], usize, usize),
    ) {
        let d = self.axes.len();
        let total = x.rows() * x.cols();
        let shape = self.grid.shape();
        let geom = |a: usize| {
            let inner: usize = shape[a + 1..].iter().product();
            let outer: usize = shape[..a].iter().product();
            (inner, outer * x.cols())
        };
        if d == 1 {
            let (inner, blocks) = geom(0);
            step(0, x.as_slice(), out.as_mut_slice(), inner, blocks);
            return;
        }
        let mut tmp = vec![T::zero(); total];
        // With d axes, start in `out` when d is odd, in `tmp` when even, so the last lands in `out`.
        let mut in_out = d % 2 == 1;
        for a in 0..d {
            let (inner, blocks) = geom(a);
            if a == 0 {
                if in_out {
                    step(a, x.as_slice(), out.as_mut_slice(), inner, blocks);
                } else {
                    step(a, x.as_slice(), &mut tmp, inner, blocks);
                }
            } else if in_out {
                step(a, out.as_slice(), &mut tmp, inner, blocks);
                in_out = false;
                continue;
            } else {
                step(a, &tmp, out.as_mut_slice(), inner, blocks);
                in_out = true;
                continue;
            }
        }
        debug_assert!(in_out);
    }

    fn apply_with(&self, x: &Batch<T>, out: &mut Batch<T>, pick: impl Fn(usize) -> bool) {
        let par = self.par;
        self.chain(x, out, |a, src, dst, inner, blocks| {
            let ax = &self.axes[a];
            let m = if pick(a) { &ax.kc } else { &ax.k };
            axis_gemm(m.view(), ax.band, src, dst, ax.n, inner, blocks, par);
        });
    }

    fn log_chain(&self, v: &Batch<T>, out: &mut Batch<T>) {
        let (mut wsum, mut wcount) = (0u64, 0u64);
        self.chain(v, out, |a, src, dst, inner, _blocks| {
            let ax = &self.axes[a];
            let (s, c) = axis_log(ax.c1g, src, dst, ax.n, inner);
            wsum += s;
            wcount += c;
        });
        self.win_sum.fetch_add(wsum, Ordering::Relaxed);
        self.win_count.fetch_add(wcount, Ordering::Relaxed);
    }
}

/// One axis of the scaling-domain application: for every block, `dst = X K_a` where
/// `X` is `inner × n` (or `dst = K_a X` over all blocks at once when `inner == 1`).
#[allow(clippy::too_many_arguments)]
fn axis_gemm<T: Real>(
    k: MatRef<'_, T>,
    band: usize,
    src: &[T],
    dst: &mut [T],
    n: usize,
    inner: usize,
    blocks: usize,
    par: Par,
) {
    if inner == 1 {
        let x = MatRef::from_column_major_slice(src, n, blocks);
        let out = MatMut::from_column_major_slice_mut(dst, n, blocks);
        banded_left(k, band, x, out, par);
    } else {
        let sz = n * inner;
        for (s, d) in src.chunks_exact(sz).zip(dst.chunks_exact_mut(sz)) {
            let x = MatRef::from_column_major_slice(s, inner, n);
            let out = MatMut::from_column_major_slice_mut(d, inner, n);
            // K_a is symmetric, so X K_aᵀ = X K_a.
            banded_right(x, k, band, out, par);
        }
    }
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
/// `eps · exp(m_band) ≤ eps · exp(result)` once `c1g (w+1)² ≥ vmax - m_band + ln(n/eps)`.
#[inline]
fn window<T: Real>(c1g: T, vmax: T, m_band: T, n: usize) -> usize {
    if m_band == T::neg_infinity() || c1g <= T::zero() {
        return n;
    }
    let rhs = vmax - m_band + (T::of(n as f64) / T::epsilon()).ln();
    let w = (rhs / c1g).sqrt().ceil() - T::one();
    if w.is_finite() && w < T::of(n as f64) {
        w.to_usize().unwrap_or(n)
    } else {
        n
    }
}

/// The smallest window any output can get (when `vmax = m_band`).
fn min_window<T: Real>(c1g: T, n: usize) -> usize {
    window(c1g, T::zero(), T::zero(), n)
}

/// One axis of Algorithm 3 (`log K exp`) with the adaptive band. Returns (Σ windows, count).
fn axis_log<T: Real>(c1g: T, src: &[T], dst: &mut [T], n: usize, inner: usize) -> (u64, u64) {
    let (mut wsum, mut wcount) = (0u64, 0u64);
    let w0 = min_window(c1g, n);
    let sz = n * inner;
    let mut tmp = vec![T::zero(); if inner == 1 { n } else { inner }];
    let mut mrow = vec![T::zero(); inner];
    let mut shift = vec![T::zero(); inner];
    let mut srow = vec![T::zero(); inner];
    for (s, d) in src.chunks_exact(sz).zip(dst.chunks_exact_mut(sz)) {
        let vmax = s.iter().fold(T::neg_infinity(), |a, &b| a.max(b));
        if vmax == T::neg_infinity() {
            d.fill(T::neg_infinity());
            continue;
        }
        for i in 0..n {
            let lo0 = i.saturating_sub(w0);
            let hi0 = (i + w0 + 1).min(n);
            let cost = |j: usize| {
                let dd = T::of(i as f64 - j as f64);
                c1g * dd * dd
            };
            if inner == 1 {
                let m_band = (lo0..hi0).fold(T::neg_infinity(), |a, j| a.max(s[j] - cost(j)));
                let w = window(c1g, vmax, m_band, n).max(w0);
                let (lo, hi) = (i.saturating_sub(w), (i + w + 1).min(n));
                for j in lo..hi {
                    tmp[j - lo] = s[j] - cost(j);
                }
                d[i] = lse(&tmp[..hi - lo]);
                wsum += w.min(n) as u64;
                wcount += 1;
            } else {
                let row = |j: usize| &s[j * inner..(j + 1) * inner];
                let band_max = |lo: usize, hi: usize, m: &mut [T]| {
                    m.fill(T::neg_infinity());
                    for j in lo..hi {
                        let c = cost(j);
                        for (mk, &vk) in m.iter_mut().zip(row(j)) {
                            *mk = mk.max(vk - c);
                        }
                    }
                };
                band_max(lo0, hi0, &mut mrow);
                let m_min = mrow.iter().fold(T::infinity(), |a, &b| a.min(b));
                let w = window(c1g, vmax, m_min, n).max(w0);
                let (lo, hi) = (i.saturating_sub(w), (i + w + 1).min(n));
                if w > w0 {
                    band_max(lo, hi, &mut mrow);
                }
                for (sh, &m) in shift.iter_mut().zip(&mrow) {
                    *sh = if m.is_finite() { m } else { T::zero() };
                }
                srow.fill(T::zero());
                for j in lo..hi {
                    let c = cost(j);
                    for ((t, &vk), &sh) in tmp.iter_mut().zip(row(j)).zip(&shift) {
                        *t = vk - c - sh;
                    }
                    T::exp_slice(&mut tmp);
                    for (sk, &t) in srow.iter_mut().zip(&tmp) {
                        *sk += t;
                    }
                }
                let out = &mut d[i * inner..(i + 1) * inner];
                for ((o, &m), &sk) in out.iter_mut().zip(&mrow).zip(&srow) {
                    *o = if m == T::neg_infinity() {
                        m
                    } else {
                        m + sk.ln()
                    };
                }
                wsum += w.min(n) as u64;
                wcount += 1;
            }
        }
    }
    (wsum, wcount)
}

/// Signed variant of [`axis_log`] for Algorithm 4: `(v, sign)` encodes `sign ⊙ exp(v)`.
/// The window bound is relative to the largest term, which is the best a signed sum
/// can promise (cancellation is the caller's).
#[allow(clippy::too_many_arguments)]
fn axis_log_signed<T: Real>(
    c1g: T,
    src: &[T],
    ssrc: &[T],
    dst: &mut [T],
    sdst: &mut [T],
    n: usize,
    inner: usize,
) {
    let w0 = min_window(c1g, n);
    let sz = n * inner;
    let mut tmp = vec![T::zero(); n];
    let mut sg = vec![T::zero(); n];
    for (((s, ss), d), sd) in src
        .chunks_exact(sz)
        .zip(ssrc.chunks_exact(sz))
        .zip(dst.chunks_exact_mut(sz))
        .zip(sdst.chunks_exact_mut(sz))
    {
        let vmax = s.iter().fold(T::neg_infinity(), |a, &b| a.max(b));
        for k in 0..inner {
            for i in 0..n {
                let idx = |j: usize| j * inner + k;
                let cost = |j: usize| {
                    let dd = T::of(i as f64 - j as f64);
                    c1g * dd * dd
                };
                let (lo0, hi0) = (i.saturating_sub(w0), (i + w0 + 1).min(n));
                let m_band = (lo0..hi0).fold(T::neg_infinity(), |a, j| a.max(s[idx(j)] - cost(j)));
                let w = window(c1g, vmax, m_band, n).max(w0);
                let (lo, hi) = (i.saturating_sub(w), (i + w + 1).min(n));
                for j in lo..hi {
                    tmp[j - lo] = s[idx(j)] - cost(j);
                    sg[j - lo] = ss[idx(j)];
                }
                let (val, sign) = lse_signed(&tmp[..hi - lo], &sg[..hi - lo]);
                d[idx(i)] = val;
                sd[idx(i)] = sign;
            }
        }
    }
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
    fn apply(&self, x: &Batch<T>, out: &mut Batch<T>) {
        self.apply_with(x, out, |_| false);
    }
    fn apply_t(&self, x: &Batch<T>, out: &mut Batch<T>) {
        self.apply(x, out);
    }
    fn apply_log(&self, v: &Batch<T>, out: &mut Batch<T>) {
        self.log_chain(v, out);
    }
    fn apply_log_t(&self, v: &Batch<T>, out: &mut Batch<T>) {
        self.log_chain(v, out);
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
        for (a, ax) in self.axes.iter().enumerate() {
            let inner: usize = shape[a + 1..].iter().product();
            axis_log_signed(
                ax.c1g,
                cur_v.as_slice(),
                cur_s.as_slice(),
                out.as_mut_slice(),
                out_sign.as_mut_slice(),
                ax.n,
                inner,
            );
            if a + 1 < self.axes.len() {
                cur_v.as_mut_slice().copy_from_slice(out.as_slice());
                cur_s.as_mut_slice().copy_from_slice(out_sign.as_slice());
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
            .map(|a| format!("n={} band=±{}", a.n, a.band))
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
