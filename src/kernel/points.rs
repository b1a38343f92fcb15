//! The Gibbs kernel between two point clouds, `K_ij = exp(−C(x_i, y_j)/γ)`, with the costs
//! computed from the points: [`PointCloudKernel`].
//!
//! Its log-domain application is the blockwise truncated logsumexp of GeomLoss-style
//! Sinkhorn divergences (Feydy et al. 2019; the kernel truncation of Schmitzer 2016 without
//! any approximation beyond rounding): the columns go in blocks of [`BLOCK`], a block whose
//! terms are all below `e^{-50}` times the row's largest is skipped, and a lower bound of
//! the cost to each block's bounding box skips most blocks before they are even computed.

use super::lse::lse_signed;
use super::Kernel;
use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::pointcloud::cost::{cost_matrix_row_major, Cost};
use crate::real::Real;
use crate::solver;
use crate::validate;
use faer::Par;
use std::sync::Arc;

/// `K_ij = exp(−C(x_i, y_j)/γ)` between the points `x_i` (columns of a `dim × n` batch, the
/// rows of `K`) and `y_j` (`dim × m`, its columns), for a point-cloud [`Cost`].
///
/// For GeomLoss's `C = ‖x − y‖²/2` (`Cost::HALF_SQ_EUCLIDEAN`) no matrix is stored: every
/// application recomputes the costs from the coordinates (memory `O((n + m)·dim)`;
/// streaming a stored matrix costs more than recomputing it from points that stay in
/// cache). Other costs are stored once, row-major (`n·m` entries, twice when `x ≠ y`).
/// [`PointCloudKernel::with_gamma`] changes γ without recomputing anything, which is what
/// ε-scaling needs.
///
/// The log-domain applications ([`Kernel::apply_log`], [`Kernel::apply_log_t`]) skip, row
/// by row, the blocks of 64 columns whose terms are all below `e^{-50}` times the largest
/// (exact to rounding: they add less than `64 e^{-50}` relative to the sum). The scaling
/// domain, the signed and the cost-weighted applications go over every entry.
///
/// **Parallelism.** Sequential by default; [`PointCloudKernel::with_par`] sets the crate's
/// policy (rows split over threads once an application touches 2²⁴ entries).
///
/// ```
/// use wassdl::{Batch, Kernel, PointCloudKernel, kernel::apply_log_new};
/// use wassdl::pointcloud::Cost;
/// let x = Batch::from_vec(1, 3, vec![0.0, 0.5, 1.0]);
/// let y = Batch::from_vec(1, 2, vec![0.0, 1.0]);
/// let k = PointCloudKernel::new(&x, &y, Cost::HALF_SQ_EUCLIDEAN, 0.1).unwrap();
/// let v = Batch::from_vec(2, 1, vec![0.0, 0.0]);
/// let l = apply_log_new(&k, &v, false); // log Σ_j exp(−|x_i − y_j|²/(2γ))
/// let want = (1.0f64 + (-5.0f64).exp()).ln();
/// assert!((l.get(0, 0) - want).abs() < 1e-14 && (l.get(2, 0) - want).abs() < 1e-14);
/// ```
#[derive(Clone)]
pub struct PointCloudKernel<T: Real> {
    geo: Arc<Geometry<T>>,
    gamma: T,
    par: Par,
}

/// The γ-free part of the kernel, shared between the kernels of an ε schedule.
struct Geometry<T: Real> {
    x: Batch<T>,
    y: Batch<T>,
    cost: Cost,
    /// Rows `x_i`, columns `y_j`.
    xy: RowMatrix<T>,
    /// Rows `y_j`, columns `x_i`; `None` when `x = y` (then `xy` serves both ways).
    yx: Option<RowMatrix<T>>,
}

impl<T: Real> std::fmt::Debug for PointCloudKernel<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl<T: Real> PointCloudKernel<T> {
    /// The kernel between the columns of `x` (`dim × n`) and of `y` (`dim × m`) for `cost`
    /// at `γ = gamma`. When `x` and `y` are equal the kernel is symmetric and one
    /// geometry serves both directions.
    ///
    /// # Errors
    /// Clouds of different dimensions, non-finite coordinates, an invalid cost, or a γ
    /// that is not finite and positive.
    pub fn new(x: &Batch<T>, y: &Batch<T>, cost: Cost, gamma: T) -> Result<Self> {
        cost.validate()?;
        validate::positive("gamma", gamma)?;
        for (arg, pts) in [("x", x), ("y", y)] {
            if let Some((row, col)) = pts.first_non_finite() {
                return Err(Error::NonFinite { arg, row, col });
            }
        }
        if x.rows() != y.rows() {
            return Err(Error::ShapeMismatch {
                arg: "y",
                expected: format!("{} x _ (the dimension of x)", x.rows()),
                found: format!("{} x {}", y.rows(), y.cols()),
            });
        }
        let symmetric = x == y;
        let xy = RowMatrix::new(x, y, cost);
        let yx = (!symmetric).then(|| RowMatrix::new(y, x, cost));
        Ok(PointCloudKernel {
            geo: Arc::new(Geometry {
                x: x.clone(),
                y: y.clone(),
                cost,
                xy,
                yx,
            }),
            gamma,
            par: Par::Seq,
        })
    }

    /// The same points and cost at another γ (nothing is recomputed: the geometry is
    /// shared). For ε-scaling.
    ///
    /// # Errors
    /// `gamma` not finite and positive.
    pub fn with_gamma(&self, gamma: T) -> Result<Self> {
        validate::positive("gamma", gamma)?;
        Ok(PointCloudKernel {
            geo: Arc::clone(&self.geo),
            gamma,
            par: self.par,
        })
    }

    /// [`Self::with_gamma`] for a γ the caller has already checked (an ε schedule).
    pub(crate) fn at_gamma(&self, gamma: T) -> Self {
        debug_assert!(gamma > T::zero() && gamma.is_finite());
        PointCloudKernel {
            geo: Arc::clone(&self.geo),
            gamma,
            par: self.par,
        }
    }

    /// Sets the parallelism of the applications (default `Par::Seq`): `Par::rayon(k)`
    /// allows `k` threads (`0`: every core) once an application touches 2²⁴ entries.
    pub fn with_par(mut self, par: Par) -> Self {
        self.par = par;
        self
    }

    /// The cost of the kernel.
    pub fn cost(&self) -> Cost {
        self.geo.cost
    }

    /// The rows (`transpose = false`) or the columns of `K` as a row matrix.
    fn rows(&self, transpose: bool) -> &RowMatrix<T> {
        match (&self.geo.yx, transpose) {
            (Some(yx), true) => yx,
            _ => &self.geo.xy,
        }
    }

    /// The points of the rows of `K` (or of its columns when `transpose`).
    fn points(&self, transpose: bool) -> (&Batch<T>, &Batch<T>) {
        if transpose {
            (&self.geo.y, &self.geo.x)
        } else {
            (&self.geo.x, &self.geo.y)
        }
    }

    /// `out = log(K e^h)` (`log(Kᵀ e^h)` when `transpose`) for one vector, the blockwise
    /// truncated logsumexp, and with `grad` the position gradient of GeomLoss's last
    /// extrapolation accumulated into it (see [`GradRequest`]). GeomLoss's
    /// `softmin_ε(C, h)` is `−ε` times this at `γ = ε`.
    pub(crate) fn log_apply_vec(
        &self,
        h: &[T],
        out: &mut [T],
        transpose: bool,
        grad: Option<(&GradRequest<'_, T>, &mut Batch<T>)>,
    ) {
        let inv = T::one() / self.gamma;
        log_rows(self.rows(transpose), h, inv, out, grad, self.par);
    }

    /// `t_j = h_j − C_ij/γ'` for the whole row `i` (`inv = 1/γ'`), every column.
    fn full_row(&self, m: &RowMatrix<T>, i: usize, h: &[T], inv: T, t: &mut [T]) {
        m.fill(i, 0..m.cols, h, inv, t);
    }

    /// Row `i` of the cost (of `Cᵀ` when `transpose`): `C_ij = −(0 − C_ij·1)`.
    fn cost_row(&self, m: &RowMatrix<T>, i: usize, zeros: &[T], c: &mut [T]) {
        self.full_row(m, i, zeros, T::one(), c);
        c.iter_mut().for_each(|v| *v = -*v);
    }

    /// `out = K x` (or `Kᵀ x`), every entry recomputed.
    fn product(&self, x: &Batch<T>, out: &mut Batch<T>, transpose: bool, weighted: bool) {
        let m = self.rows(transpose);
        let zeros = vec![T::zero(); m.cols];
        let (mut t, mut c) = (vec![T::zero(); m.cols], vec![T::zero(); m.cols]);
        let inv = T::one() / self.gamma;
        for i in 0..out.rows() {
            self.full_row(m, i, &zeros, inv, &mut t);
            T::exp_slice(&mut t);
            if weighted {
                self.cost_row(m, i, &zeros, &mut c);
                t.iter_mut().zip(&c).for_each(|(k, &ci)| *k *= ci);
            }
            for b in 0..x.cols() {
                let s = t
                    .iter()
                    .zip(x.col(b))
                    .fold(T::zero(), |s, (&k, &xj)| s + k * xj);
                out.set(i, b, s);
            }
        }
    }
}

impl<T: Real> Kernel<T> for PointCloudKernel<T> {
    fn nrows(&self) -> usize {
        self.geo.x.cols()
    }
    fn ncols(&self) -> usize {
        self.geo.y.cols()
    }
    fn gamma(&self) -> T {
        self.gamma
    }
    fn par(&self) -> Par {
        self.par
    }
    fn apply(&self, x: &Batch<T>, out: &mut Batch<T>) {
        self.product(x, out, false, false);
    }
    fn apply_t(&self, x: &Batch<T>, out: &mut Batch<T>) {
        self.product(x, out, true, false);
    }
    fn apply_log(&self, v: &Batch<T>, out: &mut Batch<T>) {
        for b in 0..v.cols() {
            self.log_apply_vec(v.col(b), out.col_mut(b), false, None);
        }
    }
    fn apply_log_t(&self, v: &Batch<T>, out: &mut Batch<T>) {
        for b in 0..v.cols() {
            self.log_apply_vec(v.col(b), out.col_mut(b), true, None);
        }
    }
    fn apply_log_signed(
        &self,
        v: &Batch<T>,
        sign: &Batch<T>,
        out: &mut Batch<T>,
        out_sign: &mut Batch<T>,
        transpose: bool,
    ) {
        let m = self.rows(transpose);
        let inv = T::one() / self.gamma;
        let mut t = vec![T::zero(); m.cols];
        for b in 0..v.cols() {
            for i in 0..out.rows() {
                self.full_row(m, i, v.col(b), inv, &mut t);
                let (val, sg) = lse_signed(&mut t, sign.col(b));
                out.set(i, b, val);
                out_sign.set(i, b, sg);
            }
        }
    }
    fn apply_cost(&self, x: &Batch<T>, out: &mut Batch<T>) {
        self.product(x, out, false, true);
    }
    fn apply_cost_log(
        &self,
        v: &Batch<T>,
        out: &mut Batch<T>,
        out_sign: &mut Batch<T>,
        transpose: bool,
    ) {
        // out_i = log |Σ_j C_ij exp(v_j − C_ij/γ)|: a signed logsumexp of
        // `v_j − C_ij/γ + log|C_ij|` with the sign of `C_ij` (a zero cost, or a zero
        // input, is a sign-0 term), as the dense kernel does.
        let m = self.rows(transpose);
        let zeros = vec![T::zero(); m.cols];
        let inv = T::one() / self.gamma;
        let (mut t, mut c, mut sg) = (
            vec![T::zero(); m.cols],
            vec![T::zero(); m.cols],
            vec![T::zero(); m.cols],
        );
        for i in 0..out.rows() {
            self.cost_row(m, i, &zeros, &mut c);
            for b in 0..v.cols() {
                self.full_row(m, i, v.col(b), inv, &mut t);
                for ((tj, s), &cj) in t.iter_mut().zip(sg.iter_mut()).zip(&c) {
                    let zero = cj == T::zero() || *tj == T::neg_infinity();
                    *s = if zero { T::zero() } else { cj.signum() };
                    *tj = if zero {
                        T::neg_infinity()
                    } else {
                        *tj + cj.abs().ln()
                    };
                }
                let (val, s) = lse_signed(&mut t, &sg);
                out.set(i, b, val);
                out_sign.set(i, b, s);
            }
        }
    }
    fn cost_matrix(&self) -> Batch<T> {
        let (x, y) = self.points(false);
        let c = cost_matrix_row_major(x, y, self.geo.cost);
        let m = y.cols();
        Batch::from_fn(x.cols(), m, |i, j| c[i * m + j])
    }
    fn is_symmetric(&self) -> bool {
        self.geo.yx.is_none()
    }
    fn describe(&self) -> String {
        let stored = match self.geo.xy.entries {
            Entries::HalfSq { .. } => "costs recomputed per application",
            Entries::Dense(_) => "costs stored",
        };
        format!(
            "point-cloud {}x{} Gibbs kernel ({:?}, dim {}), γ = {}, {}, truncated \
             blockwise logsumexp, {}",
            self.nrows(),
            self.ncols(),
            self.geo.cost,
            self.geo.x.rows(),
            self.gamma,
            stored,
            T::NAME
        )
    }
}

/// Columns per block of the truncated log-sum-exp.
const BLOCK: usize = 64;

/// Blocks whose largest exponent is more than this below the row's maximum are skipped:
/// their `≤ 64` terms are each `< e^{-50} ≈ 2e-22` times the largest one, far below the
/// rounding of the sum. At small ε most of a row underflows this way (the kernel's
/// truncation trick of Schmitzer 2016, here without any approximation that rounding
/// would not make anyway); where the points are sorted (1-D), whole blocks go at once.
const TRUNCATE: f64 = 50.0;

/// `t_j = h_j − C_j / ε` over one block of columns; returns the block's maximum.
#[inline]
fn fill_block<T: Real>(crow: &[T], h: &[T], inv_eps: T, t: &mut [T]) -> T {
    const L: usize = 8;
    // Lane-wise maxima so that the loop vectorizes.
    let mut lanes = [T::neg_infinity(); L];
    let full = t.len() / L * L;
    for base in (0..full).step_by(L) {
        let tc: &mut [T; L] = (&mut t[base..base + L]).try_into().expect("L entries");
        let hc: &[T; L] = (&h[base..base + L]).try_into().expect("L entries");
        let cc: &[T; L] = (&crow[base..base + L]).try_into().expect("L entries");
        for k in 0..L {
            let v = hc[k] - cc[k] * inv_eps;
            tc[k] = v;
            lanes[k] = if v > lanes[k] { v } else { lanes[k] };
        }
    }
    for j in full..t.len() {
        let v = h[j] - crow[j] * inv_eps;
        t[j] = v;
        lanes[0] = if v > lanes[0] { v } else { lanes[0] };
    }
    lanes
        .iter()
        .fold(T::neg_infinity(), |a, &b| if b > a { b } else { a })
}

/// `t_j = h_j − C_j / ε` for one row, the maximum of each block of [`BLOCK`] columns in
/// `bmax`, and the row maximum as the result (`−∞` when every `h_j` is `−∞`).
///
/// Blocks whose upper bound `max_{j∈B} h_j − lb_B/ε` (from the cost lower bound `lb` of
/// [`RowMatrix`]) is already [`TRUNCATE`] below the maximum found so far are not even
/// filled: they would be skipped by the truncation anyway (their `bmax` is set to `−∞`).
/// The block of largest bound goes first, so that the running maximum is high early. The
/// kept blocks are exactly those of an unpruned pass, so the sums do not change.
#[inline]
#[allow(clippy::too_many_arguments)]
fn fill_row<T: Real>(
    m: &RowMatrix<T>,
    i: usize,
    h: &[T],
    inv_eps: T,
    t: &mut [T],
    bmax: &mut [T],
    lb: &[T],
    hmax: &[T],
) -> T {
    let nb = bmax.len();
    let cols = t.len();
    // One unit of margin over the rounding of the bound.
    let ub = |b: usize| hmax[b] - lb[b] * inv_eps + T::one();
    let first = (0..nb)
        .max_by(|&a, &b| {
            ub(a)
                .partial_cmp(&ub(b))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .unwrap_or(0);
    let range = |b: usize| b * BLOCK..((b + 1) * BLOCK).min(cols);
    let mut gmax = m.fill(i, range(first), h, inv_eps, t);
    bmax[first] = gmax;
    let cut = T::of(TRUNCATE);
    for b in (0..nb).filter(|&b| b != first) {
        if ub(b) < gmax - cut {
            bmax[b] = T::neg_infinity();
            continue;
        }
        let mb = m.fill(i, range(b), h, inv_eps, t);
        bmax[b] = mb;
        gmax = if mb > gmax { mb } else { gmax };
    }
    gmax
}

/// Contiguous runs of kept blocks, as column ranges.
fn kept_runs<T: Real>(bmax: &[T], cols: usize, mx: T) -> impl Iterator<Item = (usize, usize)> + '_ {
    let thr = mx - T::of(TRUNCATE);
    let mut b = 0;
    std::iter::from_fn(move || {
        while b < bmax.len() && bmax[b] < thr {
            b += 1;
        }
        if b == bmax.len() {
            return None;
        }
        let s = b;
        while b < bmax.len() && bmax[b] >= thr {
            b += 1;
        }
        Some((s * BLOCK, (b * BLOCK).min(cols)))
    })
}

/// `Σ_j exp(t_j − mx)` over the kept blocks (vectorized exp).
#[inline]
fn sum_exp_kept<T: Real>(t: &[T], bmax: &[T], mx: T) -> T {
    kept_runs(bmax, t.len(), mx).fold(T::zero(), |acc, (a, b)| {
        acc + T::sum_exp_shift(&t[a..b], mx)
    })
}

/// `t_j ← exp(t_j − mx)` on the kept blocks, `0` elsewhere.
#[inline]
fn exp_kept<T: Real>(t: &mut [T], bmax: &[T], mx: T) {
    let cols = t.len();
    let mut next = 0;
    for (a, b) in kept_runs(bmax, cols, mx) {
        t[next..a].iter_mut().for_each(|v| *v = T::zero());
        let seg = &mut t[a..b];
        seg.iter_mut().for_each(|v| *v -= mx);
        T::exp_slice(seg);
        next = b;
    }
    t[next..].iter_mut().for_each(|v| *v = T::zero());
}

/// How the entries `C_ij` of a softmin are obtained.
enum Entries<T> {
    /// A stored row-major `rows × cols` matrix (any cost).
    Dense(Vec<T>),
    /// `C_ij = ½‖p_i − q_j‖²` recomputed from the coordinates (GeomLoss's `p = 2`): reading
    /// a stored matrix from memory at every ε step costs more than recomputing it from
    /// points that stay in cache, and no `rows × cols` storage is needed. `q_soa[d·cols + j]`
    /// is coordinate `d` of `q_j`.
    HalfSq { p: Batch<T>, q_soa: Vec<T> },
}

/// One side of a softmin: `out_i = −ε log Σ_j exp(h_j − C_ij/ε)` over the rows `i` of the
/// cost between the points `p_i` (rows) and `q_j` (columns), with `lb[i·nb + b] ≤ C_ij`
/// for every column `j` of block `b` (the cost from `p_i` to the bounding box of the
/// block's points).
struct RowMatrix<T> {
    entries: Entries<T>,
    cols: usize,
    lb: Vec<T>,
}

impl<T: Real> RowMatrix<T> {
    /// The cost between the columns of `p` (rows of the matrix) and of `q`.
    fn new(p: &Batch<T>, q: &Batch<T>, cost: Cost) -> Self {
        let (dim, cols) = (q.rows(), q.cols());
        let entries = if cost == Cost::HALF_SQ_EUCLIDEAN {
            let mut q_soa = vec![T::zero(); dim * cols];
            for j in 0..cols {
                for (d, &v) in q.col(j).iter().enumerate() {
                    q_soa[d * cols + j] = v;
                }
            }
            Entries::HalfSq {
                p: p.clone(),
                q_soa,
            }
        } else {
            Entries::Dense(cost_matrix_row_major(p, q, cost))
        };
        let nb = cols.div_ceil(BLOCK);
        let mut lo = vec![T::infinity(); nb * dim];
        let mut hi = vec![T::neg_infinity(); nb * dim];
        for j in 0..cols {
            let b = j / BLOCK;
            for (d, &v) in q.col(j).iter().enumerate() {
                lo[b * dim + d] = lo[b * dim + d].min(v);
                hi[b * dim + d] = hi[b * dim + d].max(v);
            }
        }
        let mut near = vec![T::zero(); dim];
        let mut lb = Vec::with_capacity(p.cols() * nb);
        for i in 0..p.cols() {
            let pi = p.col(i);
            for b in 0..nb {
                let (bl, bh) = (&lo[b * dim..(b + 1) * dim], &hi[b * dim..(b + 1) * dim]);
                for (((nd, &x), &l), &h) in near.iter_mut().zip(pi).zip(bl).zip(bh) {
                    *nd = x.max(l).min(h);
                }
                // ‖x − y‖^p/p grows with the distance: the nearest point of the box bounds
                // the cost to every point in it from below.
                lb.push(cost.eval(pi, &near));
            }
        }
        RowMatrix { entries, cols, lb }
    }

    /// `t_j = h_j − C_ij / ε` for the columns `r` of row `i`; returns their maximum.
    #[inline]
    fn fill(&self, i: usize, r: std::ops::Range<usize>, h: &[T], inv_eps: T, t: &mut [T]) -> T {
        match &self.entries {
            Entries::Dense(c) => {
                let row = &c[i * self.cols..(i + 1) * self.cols];
                fill_block(&row[r.clone()], &h[r.clone()], inv_eps, &mut t[r])
            }
            Entries::HalfSq { p, q_soa } => {
                let half = T::of(0.5) * inv_eps;
                let pi = p.col(i);
                let t = &mut t[r.clone()];
                t.copy_from_slice(&h[r.clone()]);
                let (last, init) = pi.split_last().expect("dim >= 1");
                for (d, &x) in init.iter().enumerate() {
                    let q = &q_soa[d * self.cols..(d + 1) * self.cols][r.clone()];
                    for (tj, &y) in t.iter_mut().zip(q) {
                        let u = x - y;
                        *tj -= u * u * half;
                    }
                }
                // the last coordinate's pass also takes the maximum
                let d = pi.len() - 1;
                let q = &q_soa[d * self.cols..(d + 1) * self.cols][r];
                sub_sq_max(t, q, *last, half)
            }
        }
    }
}

/// `t_j −= (x − q_j)² c` and the maximum of the result, vectorized by lanes.
#[inline]
fn sub_sq_max<T: Real>(t: &mut [T], q: &[T], x: T, c: T) -> T {
    const L: usize = 8;
    let mut lanes = [T::neg_infinity(); L];
    let full = t.len() / L * L;
    for base in (0..full).step_by(L) {
        let tc: &mut [T; L] = (&mut t[base..base + L]).try_into().expect("L entries");
        let qc: &[T; L] = (&q[base..base + L]).try_into().expect("L entries");
        for k in 0..L {
            let u = x - qc[k];
            let v = tc[k] - u * u * c;
            tc[k] = v;
            lanes[k] = if v > lanes[k] { v } else { lanes[k] };
        }
    }
    for j in full..t.len() {
        let u = x - q[j];
        let v = t[j] - u * u * c;
        t[j] = v;
        lanes[0] = if v > lanes[0] { v } else { lanes[0] };
    }
    lanes
        .iter()
        .fold(T::neg_infinity(), |a, &b| if b > a { b } else { a })
}

/// Per-row gradient request of the last extrapolation: for row `i`,
/// `grad[:, i] += sign · w_i Σ_j π_ij ∇ₓC(p_i, q_j)` with `π_i·` the softmin weights.
pub(crate) struct GradRequest<'a, T: Real> {
    pub(crate) p: &'a Batch<T>,
    pub(crate) q: &'a Batch<T>,
    pub(crate) w: &'a [T],
    pub(crate) sign: T,
    pub(crate) cost: Cost,
}

/// Runs `kernel` on contiguous row ranges, one per worker (one scratch buffer each),
/// through the crate's threading helper ([`crate::solver::run_parts`]).
#[allow(clippy::type_complexity)]
fn split_rows<T: Real>(
    out: &mut [T],
    grad: Option<&mut [T]>,
    dim: usize,
    scratch: &mut [Vec<T>],
    kernel: &(dyn Fn(usize, &mut [T], Option<&mut [T]>, &mut Vec<T>) + Sync),
) {
    let per = solver::part_len(out.len(), 1, scratch.len());
    let grads: Vec<Option<&mut [T]>> = match grad {
        Some(g) => g.chunks_mut((per * dim).max(1)).map(Some).collect(),
        None => (0..out.len().div_ceil(per)).map(|_| None).collect(),
    };
    let parts = out.chunks_mut(per).zip(grads).zip(scratch.iter_mut());
    solver::run_parts(parts.enumerate(), |(k, ((o, g), buf))| {
        kernel(k * per, o, g, buf)
    });
}

/// `out_i = log Σ_j exp(h_j − C_ij / γ)` over the rows of `m` (`inv_gamma = 1/γ`), the
/// blockwise truncated logsumexp; `-∞` for a row whose every `h_j` is `-∞`. With `grad`,
/// also the position gradient of GeomLoss's last extrapolation (see [`GradRequest`]).
fn log_rows<T: Real>(
    m: &RowMatrix<T>,
    h: &[T],
    inv_eps: T,
    out: &mut [T],
    grad: Option<(&GradRequest<'_, T>, &mut Batch<T>)>,
    par: Par,
) {
    let rows = out.len();
    let cols = m.cols;
    // each entry: one exponential and the cost (recomputed from the points or read)
    let workers = solver::threads(par, rows * cols * (solver::EXP_WORK + 2)).clamp(1, rows.max(1));
    let nblocks = cols.div_ceil(BLOCK);
    let hmax: Vec<T> = h
        .chunks(BLOCK)
        .map(|c| {
            c.iter()
                .fold(T::neg_infinity(), |a, &b| if b > a { b } else { a })
        })
        .collect();
    let hmax = &hmax[..];
    let (req, gslice, dim) = match grad {
        Some((r, g)) => (Some(r), Some(g.as_mut_slice()), r.p.rows()),
        None => (None, None, 0),
    };
    let kernel = |start: usize, o: &mut [T], g: Option<&mut [T]>, buf: &mut Vec<T>| {
        buf.resize(cols + nblocks, T::zero());
        let (t, bmax) = buf.split_at_mut(cols);
        let mut g = g;
        for (k, oi) in o.iter_mut().enumerate() {
            let i = start + k;
            let lb = &m.lb[i * nblocks..(i + 1) * nblocks];
            let mx = fill_row(m, i, h, inv_eps, t, bmax, lb, hmax);
            if mx == T::neg_infinity() {
                // Every term is zero (e.g. every weight of the other side): an empty sum.
                *oi = mx;
                continue;
            }
            match (req, g.as_deref_mut()) {
                (None, _) | (_, None) => {
                    let s = sum_exp_kept(t, bmax, mx);
                    *oi = mx + s.ln();
                }
                (Some(r), Some(gs)) => {
                    exp_kept(t, bmax, mx);
                    let s: T = t.iter().copied().sum();
                    *oi = mx + s.ln();
                    let gi = &mut gs[k * dim..(k + 1) * dim];
                    let scale = r.sign * r.w[i] / s;
                    if scale == T::zero() {
                        continue;
                    }
                    let pi = r.p.col(i);
                    if r.cost == Cost::HALF_SQ_EUCLIDEAN {
                        // Σ_j π_ij (p_i − q_j) = p_i − Σ_j π_ij q_j (Σ_j π_ij = 1).
                        for d in 0..dim {
                            let mut acc = T::zero();
                            for (j, &e) in t.iter().enumerate() {
                                acc += e * r.q.get(d, j);
                            }
                            gi[d] += scale * (s * pi[d] - acc);
                        }
                    } else {
                        for (j, &e) in t.iter().enumerate() {
                            if e != T::zero() {
                                r.cost.grad_x_into(pi, r.q.col(j), scale * e, gi);
                            }
                        }
                    }
                }
            }
        }
    };
    let mut bufs: Vec<Vec<T>> = (0..workers).map(|_| Vec::new()).collect();
    split_rows(out, gslice, dim, &mut bufs, &kernel);
}
