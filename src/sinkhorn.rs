//! Entropic optimal transport between histograms (eq. 3-4), batched over pairs, and the
//! ε-scaling loop of GeomLoss (averaged symmetric updates over a decreasing schedule of
//! temperatures) that the Sinkhorn divergences between point clouds run on, over any
//! [`Kernel`] that can be rebuilt at each temperature.

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::kernel::{apply_log_new, apply_new, Kernel};
use crate::real::Real;
use crate::solver::{marginal_error, Stop};
use crate::validate;

/// Sinkhorn settings.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SinkhornConfig {
    /// Log-domain iterations (stable at any γ).
    pub log_domain: bool,
    /// Stopping rule; the error is the L¹ violation of the second marginal `‖Tᵀ1 − b‖₁`
    /// (the first holds exactly after each half-step), max over pairs.
    pub stop: Stop,
    /// Also return the dense plans (never built otherwise).
    pub plan: bool,
}

impl Default for SinkhornConfig {
    fn default() -> Self {
        SinkhornConfig {
            log_domain: false,
            stop: Stop::Tolerance {
                tol: 1e-9,
                max_iter: 10_000,
            },
            plan: false,
        }
    }
}

/// Result of [`sinkhorn`], one entry (or column) per pair.
#[derive(Clone, Debug)]
pub struct OtSolution<T: Real> {
    /// Regularized cost `⟨T, C⟩ + γ Σ T(log T − 1)` (eq. 3, POT's convention for H).
    pub cost: Vec<T>,
    /// Transport cost `⟨T, C⟩`.
    pub transport_cost: Vec<T>,
    /// Dual potential `f = γ log u` (`n1 × B`); `-∞` where `a` is zero.
    pub f: Batch<T>,
    /// Dual potential `g = γ log v` (`n2 × B`).
    pub g: Batch<T>,
    /// Iterations done.
    pub iterations: usize,
    /// Final marginal error (always computed).
    pub error: f64,
    /// Dense plans `T = diag(u) K diag(v)` (`n1 × n2` each), if asked for.
    pub plans: Option<Vec<Batch<T>>>,
}

/// Entropic OT between the columns of `a` (`n1 × B`) and `b` (`n2 × B`) with the kernel's
/// cost, by Sinkhorn's iterations (eq. 4), `u = a / K v`, `v = b / Kᵀ u`, from `v = 1`
/// or from the potentials `warm = (f, g)` of an earlier call.
///
/// ```
/// use wassdl::{Batch, DenseKernel, SinkhornConfig, sinkhorn};
/// let c = faer::Mat::from_fn(3, 3, |i, j| ((i as f64) - (j as f64)).powi(2));
/// let k = DenseKernel::new(c.as_ref(), 0.1).unwrap();
/// let a = Batch::from_vec(3, 1, vec![0.5, 0.5, 0.0]);
/// let b = Batch::from_vec(3, 1, vec![0.0, 0.5, 0.5]);
/// let ot = sinkhorn(&k, &a, &b, &SinkhornConfig::default(), None).unwrap();
/// assert!((ot.transport_cost[0] - 1.0).abs() < 1e-3); // every unit of mass moves by one cell
/// ```
pub fn sinkhorn<T: Real>(
    kernel: &dyn Kernel<T>,
    a: &Batch<T>,
    b: &Batch<T>,
    cfg: &SinkhornConfig,
    warm: Option<(&Batch<T>, &Batch<T>)>,
) -> Result<OtSolution<T>> {
    sinkhorn_masses(kernel, a, b, cfg, warm, true)
}

/// [`sinkhorn`]; with `balanced = false` the columns of `a` and `b` need only be
/// nonnegative. Table 1's loss `W_γ^(L)(p, x)` runs a fixed number of iterations on a
/// barycenter `p` whose mass is 1 only up to the barycenter's own convergence error
/// (6.7e-6 after 50 iterations from a random start): the iterations, potentials and the
/// cost formula below are defined for any positive masses, and with a fixed count no
/// tolerance on the marginal error has to be met.
pub(crate) fn sinkhorn_masses<T: Real>(
    kernel: &dyn Kernel<T>,
    a: &Batch<T>,
    b: &Batch<T>,
    cfg: &SinkhornConfig,
    warm: Option<(&Batch<T>, &Batch<T>)>,
    balanced: bool,
) -> Result<OtSolution<T>> {
    let (n1, n2) = (kernel.nrows(), kernel.ncols());
    validate::rows("a", a, n1)?;
    validate::shape("b", b, n2, a.cols())?;
    if balanced {
        validate::simplex_columns("a", a)?;
        validate::simplex_columns("b", b)?;
    } else {
        validate::nonnegative("a", a)?;
        validate::nonnegative("b", b)?;
    }
    cfg.stop.validate()?;
    let (tol, max_iter) = cfg.stop.parts();
    let gamma = kernel.gamma();
    let bcols = a.cols();
    // Work with log scalings lu = f/γ, lv = g/γ in the log domain, u, v otherwise.
    let (mut u, mut v) = match warm {
        Some((f, g)) => {
            validate::shape("warm.f", f, n1, bcols)?;
            validate::shape("warm.g", g, n2, bcols)?;
            // Potentials are `γ log u`, `γ log v`: `-∞` where a marginal is zero (as
            // returned by an earlier call), never NaN or `+∞`.
            validate::log_values("warm.f", f)?;
            validate::log_values("warm.g", g)?;
            let (lu, lv) = (f.map(|x| x / gamma), g.map(|x| x / gamma));
            if cfg.log_domain {
                (lu, lv)
            } else {
                (lu.map(|x| x.exp()), lv.map(|x| x.exp()))
            }
        }
        None => {
            let init = if cfg.log_domain { T::zero() } else { T::one() };
            (
                Batch::filled(n1, bcols, init),
                Batch::filled(n2, bcols, init),
            )
        }
    };
    let (loga, logb) = (a.map(|x| x.ln()), b.map(|x| x.ln()));
    let mut err = f64::INFINITY;
    let mut iterations = 0;
    for l in 1..=max_iter {
        if cfg.log_domain {
            let lkv = apply_log_new(kernel, &v, false);
            u = zip(
                &loga,
                &lkv,
                |x, y| if x == T::neg_infinity() { x } else { x - y },
            );
            let lktu = apply_log_new(kernel, &u, true);
            err = marginal_error(&v, &lktu, b, true);
            v = zip(
                &logb,
                &lktu,
                |x, y| if x == T::neg_infinity() { x } else { x - y },
            );
        } else {
            let kv = apply_new(kernel, &v, false);
            u = zip(a, &kv, |x, y| if x == T::zero() { x } else { x / y });
            let ktu = apply_new(kernel, &u, true);
            err = marginal_error(&v, &ktu, b, false);
            v = zip(b, &ktu, |x, y| if x == T::zero() { x } else { x / y });
        }
        iterations = l;
        if let Some((row, col)) = u
            .first_non_finite()
            .or(v.first_non_finite())
            .filter(|_| !cfg.log_domain)
        {
            return Err(Error::Numerical {
                solver: "sinkhorn",
                iteration: l,
                message: format!(
                    "non-finite scaling at histogram {col}, bin {row}: the kernel underflowed; use the log domain or a larger γ"
                ),
            });
        }
        // A NaN error never falls below `tol`: stop now, it is reported just below.
        if tol.is_some_and(|t| err < t) || err.is_nan() {
            break;
        }
    }
    if !err.is_finite() {
        return Err(Error::Numerical {
            solver: "sinkhorn",
            iteration: iterations,
            message: "the marginal error is not finite; use the log domain or a larger γ".into(),
        });
    }
    let (lu, lv) = if cfg.log_domain {
        (u, v)
    } else {
        (u.map(|x| x.ln()), v.map(|x| x.ln()))
    };
    let f = lu.map(|x| x * gamma);
    let g = lv.map(|x| x * gamma);
    // Marginals of the final plan, in the log domain to stay finite.
    let r = zip(&lu, &apply_log_new(kernel, &lv, false), add_log).map(exp0);
    let c = zip(&lv, &apply_log_new(kernel, &lu, true), add_log).map(exp0);
    let mut transport_cost = Vec::with_capacity(bcols);
    let mut cost = Vec::with_capacity(bcols);
    let tcs = transport_costs_log(kernel, &lu, &lv);
    for (j, &tc) in tcs.iter().enumerate() {
        if !tc.is_finite() {
            return Err(Error::Numerical {
                solver: "sinkhorn",
                iteration: iterations,
                message: format!(
                    "the transport cost of pair {j} is not finite (non-finite potentials or a \
                     cost beyond the range of {})",
                    T::NAME
                ),
            });
        }
        // γ Σ T log T = ⟨f, T1⟩ + ⟨g, Tᵀ1⟩ − ⟨T, C⟩, so the objective needs no plan.
        let dot = |p: &[T], m: &[T]| {
            p.iter().zip(m).fold(
                T::zero(),
                |s, (&pi, &mi)| if mi == T::zero() { s } else { s + pi * mi },
            )
        };
        let mass: T = r.col(j).iter().fold(T::zero(), |s, &x| s + x);
        let cj = dot(f.col(j), r.col(j)) + dot(g.col(j), c.col(j)) - gamma * mass;
        // Each term can be finite and their sum overflow (γ and the costs near the float
        // limit): the objective is then not a number to return.
        if !cj.is_finite() {
            return Err(Error::Numerical {
                solver: "sinkhorn",
                iteration: iterations,
                message: format!(
                    "the regularized cost of pair {j} is {} (⟨T, C⟩ = {:e}, γ = {:e}): it is \
                     beyond the range of {}; rescale the cost and γ",
                    cj.to_f64_(),
                    tc.to_f64_(),
                    gamma.to_f64_(),
                    T::NAME
                ),
            });
        }
        cost.push(cj);
        transport_cost.push(tc);
    }
    // A potential is `-∞` where its marginal is zero and finite elsewhere; NaN, `+∞`, or
    // `-∞` on a bin with mass is a diverged solve, never a result. One exception: a bin
    // whose mass is below one ulp of its histogram's total (e.g. a Gaussian tail of 1e-42
    // in f32) may see its scaling underflow to 0; the mass this drops from the plan is
    // below what the format resolves in the marginal, so the plan is still right to
    // working precision and `-∞` is the honest value of its potential.
    for (name, pot, marg) in [("f", &f, a), ("g", &g, b)] {
        let rows = marg.rows().max(1);
        let negligible: Vec<T> = (0..marg.cols())
            .map(|j| T::epsilon() * marg.col(j).iter().fold(T::zero(), |s, &x| s + x))
            .collect();
        let bad = pot
            .as_slice()
            .iter()
            .zip(marg.as_slice())
            .enumerate()
            .position(|(k, (&p, &m))| {
                !(p.is_finite()
                    || (p == T::neg_infinity() && (m == T::zero() || m <= negligible[k / rows])))
            });
        if let Some(k) = bad {
            let rows = pot.rows().max(1);
            return Err(Error::Numerical {
                solver: "sinkhorn",
                iteration: iterations,
                message: format!(
                    "the potential {name} is {} at pair {}, bin {} (γ = {:e}): the scalings \
                     under- or overflowed, or the cost or γ is beyond the range of {}; use the \
                     log domain, or rescale them",
                    pot.as_slice()[k].to_f64_(),
                    k / rows,
                    k % rows,
                    gamma.to_f64_(),
                    T::NAME
                ),
            });
        }
    }
    let plans: Option<Vec<Batch<T>>> = cfg.plan.then(|| {
        let cm = kernel.cost_matrix();
        (0..bcols)
            .map(|j| {
                Batch::from_fn(n1, n2, |i, k| {
                    exp0(lu.get(i, j) + lv.get(k, j) - cm.get(i, k) / gamma)
                })
            })
            .collect()
    });
    if let Some(plans) = &plans {
        for (j, p) in plans.iter().enumerate() {
            if let Some((i, k)) = p.first_non_finite() {
                return Err(Error::Numerical {
                    solver: "sinkhorn",
                    iteration: iterations,
                    message: format!(
                        "the plan of pair {j} is not finite at [{i}, {k}]; rescale the cost and γ"
                    ),
                });
            }
        }
    }
    Ok(OtSolution {
        cost,
        transport_cost,
        f,
        g,
        iterations,
        error: err,
        plans,
    })
}

fn zip<T: Real>(a: &Batch<T>, b: &Batch<T>, f: impl Fn(T, T) -> T + Sync) -> Batch<T> {
    crate::ops::zip_map(a, b, f)
}

fn add_log<T: Real>(x: T, y: T) -> T {
    if x == T::neg_infinity() || y == T::neg_infinity() {
        T::neg_infinity()
    } else {
        x + y
    }
}

fn exp0<T: Real>(x: T) -> T {
    if x == T::neg_infinity() {
        T::zero()
    } else {
        x.exp()
    }
}

/// `⟨T, C⟩ = Σ_ij exp(lu_i + lv_j − C_ij/γ) C_ij` (eq. 3's transport term) for every
/// pair, entirely in the log domain: `(K ⊙ C)ᵀ e^{lu}` by [`Kernel::apply_cost_log`]
/// (a max-shifted sum of `lu_i − C_ij/γ + log C_ij`, per axis for a separable grid),
/// then a signed logsumexp against `lv`. The scaling-domain `uᵀ (K ⊙ C) v` it replaces
/// underflowed where `K` does (small γ: the mass sits on pairs whose `K_ij` is 0 in
/// floating point, carried by huge `u`, `v`) and then gave 0, NaN or an error, and its
/// fallback summed a dense `N × N` cost matrix; this is exact to rounding at any γ and
/// never forms `K ⊙ C` or `C`.
fn transport_costs_log<T: Real>(kernel: &dyn Kernel<T>, lu: &Batch<T>, lv: &Batch<T>) -> Vec<T> {
    let (n2, bcols) = (kernel.ncols(), lu.cols());
    let (mut lo, mut so) = (Batch::zeros(n2, bcols), Batch::zeros(n2, bcols));
    kernel.apply_cost_log(lu, &mut lo, &mut so, true);
    let mut t = vec![T::zero(); n2];
    (0..bcols)
        .map(|j| {
            for ((tk, &l), &o) in t.iter_mut().zip(lv.col(j)).zip(lo.col(j)) {
                *tk = add_log(l, o);
            }
            let (val, sign) = crate::kernel::lse::lse_signed(&mut t, so.col(j));
            if sign == T::zero() {
                T::zero()
            } else {
                sign * val.exp()
            }
        })
        .collect()
}

/// Dual potentials of [`epsilon_scaling`] (GeomLoss's convention: the plan is
/// `a_i b_j exp((f_i + g_j − C_ij)/ε)`), and the largest change of a potential in the
/// last step.
pub(crate) struct ScaledPotentials<T> {
    pub(crate) f: Vec<T>,
    pub(crate) g: Vec<T>,
    pub(crate) last_change: f64,
}

/// GeomLoss's `softmin_ε(C, h)_i = −ε log Σ_j exp(h_j − C_ij/ε)` into `out`: a kernel at
/// `γ = ε` applied in the log domain (its rows, or its columns when `transpose`), times
/// `−ε`.
pub(crate) fn softmin<T: Real>(k: &dyn Kernel<T>, eps: T, h: &[T], out: &mut [T], transpose: bool) {
    let hb = Batch::from_vec(h.len(), 1, h.to_vec());
    let mut lk = Batch::zeros(out.len(), 1);
    if transpose {
        k.apply_log_t(&hb, &mut lk)
    } else {
        k.apply_log(&hb, &mut lk)
    }
    for (o, &l) in out.iter_mut().zip(lk.as_slice()) {
        *o = -eps * l;
    }
}

/// `h = log w + f/ε` (GeomLoss's `α_log + f/ε`), with `log 0 = −∞`.
pub(crate) fn shifted_logs<T: Real>(logw: &[T], f: &[T], eps: T, h: &mut [T]) {
    let inv = T::one() / eps;
    for ((hj, &l), &fj) in h.iter_mut().zip(logw).zip(f) {
        *hj = l + fj * inv;
    }
}

/// `f ← ½ (f + f̃)`; returns the largest change.
pub(crate) fn average_into<T: Real>(f: &mut [T], ft: &[T]) -> f64 {
    let half = T::of(0.5);
    let mut ch = 0.0f64;
    for (a, &b) in f.iter_mut().zip(ft) {
        let new = half * (*a + b);
        ch = ch.max((new - *a).abs().to_f64_());
        *a = new;
    }
    ch
}

/// Entropic OT between the weights `a` (on the rows of the kernel; `log_a` with
/// `log 0 = −∞`) and `b` (its columns) by ε-scaling, as GeomLoss's `sinkhorn_loop`
/// (Feydy et al., AISTATS 2019; Feydy's thesis, Fig. 3.24.b): `kernel_at(ε)` is the
/// kernel of the cost at `γ = ε` for each temperature of `epsilons` (a
/// [`crate::PointCloudKernel`] changes γ for free); from `f = softmin_ε₀(C, log b)`,
/// `g = softmin_ε₀(Cᵀ, log a)`, each step updates both potentials from the previous
/// ones and averages, `f ← ½ (f + softmin_ε(C, log b + g/ε))`, `g ← ½ (g +
/// softmin_ε(Cᵀ, log a + f/ε))`. With `symmetric` (the same weights on both sides of a
/// symmetric kernel, the self terms `OT_ε(α, α)` of a Sinkhorn divergence) `g = f` at
/// every step, so only `f` is computed and returned in both fields.
pub(crate) fn epsilon_scaling<T: Real, K: Kernel<T>>(
    kernel_at: impl Fn(T) -> K,
    log_a: &[T],
    log_b: &[T],
    epsilons: &[f64],
    symmetric: bool,
) -> ScaledPotentials<T> {
    let (n, m) = (log_a.len(), log_b.len());
    let (mut f, mut ft, mut hm) = (vec![T::zero(); n], vec![T::zero(); n], vec![T::zero(); m]);
    let (mut g, mut gt, mut hn) = (vec![T::zero(); m], vec![T::zero(); m], vec![T::zero(); n]);
    let mut last_change = f64::INFINITY;
    let Some(&e0) = epsilons.first() else {
        return ScaledPotentials { f, g, last_change };
    };
    // Initialization at ε₀ from zero potentials: softmin(ε, C, log w).
    let eps0 = T::of(e0);
    let k0 = kernel_at(eps0);
    softmin(&k0, eps0, log_b, &mut f, false);
    if !symmetric {
        softmin(&k0, eps0, log_a, &mut g, true);
    }
    for &e in epsilons {
        let eps = T::of(e);
        let k = kernel_at(eps);
        let mut ch = 0.0f64;
        if symmetric {
            shifted_logs(log_b, &f, eps, &mut hm);
            softmin(&k, eps, &hm, &mut ft, false);
            ch = ch.max(average_into(&mut f, &ft));
        } else {
            shifted_logs(log_a, &f, eps, &mut hn);
            softmin(&k, eps, &hn, &mut gt, true);
            shifted_logs(log_b, &g, eps, &mut hm);
            softmin(&k, eps, &hm, &mut ft, false);
            ch = ch.max(average_into(&mut g, &gt));
            ch = ch.max(average_into(&mut f, &ft));
        }
        last_change = ch;
    }
    if symmetric {
        g.clone_from(&f);
    }
    ScaledPotentials { f, g, last_change }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::PointCloudKernel;
    use crate::pointcloud::Cost;

    /// The symmetric shortcut (one softmin per step) is exactly the full update with the
    /// same weights on both sides of a symmetric kernel: the two potentials of the full
    /// update stay equal bit for bit, and equal the shortcut's.
    #[test]
    fn symmetric_shortcut_is_the_full_update() {
        let n = 90;
        let x = Batch::from_fn(2, n, |d, j| ((j * (3 + d) + 1) as f64 * 0.618_034).fract());
        let w: Vec<f64> = (0..n)
            .map(|j| 1.0 + (j as f64 * 0.414_214).fract())
            .collect();
        let total: f64 = w.iter().sum();
        let la: Vec<f64> = w.iter().map(|v| (v / total).ln()).collect();
        let k = PointCloudKernel::new(&x, &x, Cost::HALF_SQ_EUCLIDEAN, 1.0).unwrap();
        let eps = crate::pointcloud::epsilon_schedule(2.0, 1.5, 0.05, 0.7);
        let full = epsilon_scaling(|e| k.at_gamma(e), &la, &la, &eps, false);
        let sym = epsilon_scaling(|e| k.at_gamma(e), &la, &la, &eps, true);
        assert_eq!(full.f, full.g);
        assert_eq!(full.f, sym.f);
        assert_eq!(sym.f, sym.g);
        assert_eq!(full.last_change.to_bits(), sym.last_change.to_bits());
        assert!(full.f.iter().all(|v| v.is_finite()));
    }
}
