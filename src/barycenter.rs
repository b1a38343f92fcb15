//! Entropic Wasserstein barycenters on a fixed support, for a batch of weight vectors.
//!
//! One generalized iteration covers every variant of the paper: the plain scaling
//! iterations (eq. 6-8), heavy-ball extrapolation (Algorithm 5, τ ≤ 0) and the unbalanced
//! KL-relaxed barycenter (Algorithm 6, ρ > 0), in the scaling domain or in the log domain
//! (eq. 22-24, Algorithm 4's forward loop). It is written once over [`Ops`], so the same
//! code is the fast forward solver ([`Eager`]) and the recorded, differentiable one
//! ([`crate::tape::Tape`]).

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::ops::{Eager, Ops};
use crate::real::Real;
use crate::solver::marginal_error;
pub use crate::solver::Stop;
use crate::validate;

/// Barycenter solver settings: which variant of the generalized iteration to run.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BarycenterConfig {
    /// Heavy-ball extrapolation τ ∈ (−1, 0] (Algorithm 5); 0 is the plain iteration.
    pub tau: f64,
    /// KL marginal relaxation ρ > 0 (Algorithm 6); `None` is the balanced barycenter.
    pub rho: Option<f64>,
    /// Run in the log domain (eq. 23-24, Algorithm 3 kernels): stable at any γ, slower.
    pub log_domain: bool,
    /// Stopping rule.
    pub stop: Stop,
}

impl Default for BarycenterConfig {
    fn default() -> Self {
        BarycenterConfig {
            tau: 0.0,
            rho: None,
            log_domain: false,
            stop: Stop::Iterations(100),
        }
    }
}

impl BarycenterConfig {
    /// Plain scaling iterations, `l` of them.
    pub fn iterations(l: usize) -> Self {
        BarycenterConfig {
            stop: Stop::Iterations(l),
            ..Default::default()
        }
    }
    /// Iterate until the error is below `tol` (at most `max_iter` iterations).
    pub fn tolerance(tol: f64, max_iter: usize) -> Self {
        BarycenterConfig {
            stop: Stop::Tolerance { tol, max_iter },
            ..Default::default()
        }
    }
    /// Sets τ.
    pub fn tau(mut self, tau: f64) -> Self {
        self.tau = tau;
        self
    }
    /// Sets ρ (unbalanced).
    pub fn rho(mut self, rho: f64) -> Self {
        self.rho = Some(rho);
        self
    }
    /// Switches to the log domain.
    pub fn log_domain(mut self, on: bool) -> Self {
        self.log_domain = on;
        self
    }
    /// Checks every parameter (−1 < τ ≤ 0, ρ > 0, L ≥ 1, tol > 0).
    pub fn validate(&self) -> Result<()> {
        // Algorithm 5 mixes τ·prev + (1 − τ)·new: over-relaxation with ω = 1 − τ, which
        // converges only for 0 < ω < 2, i.e. −1 < τ ≤ 0 (τ > 0 is under-relaxation, not
        // the paper's heavy ball).
        if !(self.tau.is_finite() && self.tau > -1.0 && self.tau <= 0.0) {
            return Err(Error::InvalidParameter {
                arg: "tau",
                requirement: "in (-1, 0] (over-relaxation ω = 1 − τ converges for 0 < ω < 2)",
                value: self.tau,
            });
        }
        if let Some(rho) = self.rho {
            validate::positive("rho", rho)?;
        }
        self.stop.validate()
    }
    fn max_iter(&self) -> usize {
        self.stop.max_iter()
    }
}

/// The scaling vectors of a barycenter solve, to resume it (warm start, section 4.2).
///
/// Both are `N × (S·M)`, column `m·S + s` for atom `s` and barycenter `m`. In the log
/// domain they hold `log a`, `log b` (the dual potentials divided by γ).
#[derive(Clone, Debug, PartialEq)]
pub struct Scalings<T: Real> {
    /// `a` (or `log a`).
    pub a: Batch<T>,
    /// `b` (or `log b`).
    pub b: Batch<T>,
    /// Whether `a` and `b` are logarithms.
    pub log: bool,
}

impl<T: Real> Scalings<T> {
    /// The cold start `a = b = 1` of Algorithm 5 (`log a = log b = 0` in the log domain).
    pub fn ones(n: usize, cols: usize, log: bool) -> Self {
        let v = if log { T::zero() } else { T::one() };
        Scalings {
            a: Batch::filled(n, cols, v),
            b: Batch::filled(n, cols, v),
            log,
        }
    }
    /// Checks a warm start (section 4.2) for `n` bins and `cols` columns: shapes, and
    /// values in the domain it is given in. Scalings must be finite and `>= 0`
    /// (`Error::NonFinite` / `Error::Negative` naming `warm.a` or `warm.b`); log scalings
    /// may be `-∞` (a zero scaling, where an atom is empty) but not NaN or `+∞`. Without
    /// this a NaN in a warm start surfaced later as an unrelated `Error::Numerical`, or
    /// not at all.
    pub fn validate(&self, n: usize, cols: usize) -> Result<()> {
        validate::shape("warm.a", &self.a, n, cols)?;
        validate::shape("warm.b", &self.b, n, cols)?;
        for (arg, x) in [("warm.a", &self.a), ("warm.b", &self.b)] {
            if self.log {
                validate::log_values(arg, x)?;
            } else {
                validate::nonnegative(arg, x)?;
            }
        }
        Ok(())
    }
    /// The same state in the requested domain.
    pub fn to_domain(&self, log: bool) -> Self {
        match (self.log, log) {
            (false, true) => Scalings {
                a: self.a.map(|x| x.ln()),
                b: self.b.map(|x| x.ln()),
                log,
            },
            (true, false) => Scalings {
                a: self.a.map(|x| x.exp()),
                b: self.b.map(|x| x.exp()),
                log,
            },
            _ => self.clone(),
        }
    }
}

/// Result of [`barycenters`].
#[derive(Clone, Debug)]
pub struct Barycenters<T: Real> {
    /// The barycenters, `N × M`, one per weight column.
    pub p: Batch<T>,
    /// Final scalings, to warm-start a later call.
    pub scalings: Scalings<T>,
    /// Iterations done.
    pub iterations: usize,
    /// Final error (see [`Stop::Tolerance`]); computed only in tolerance mode.
    pub error: Option<f64>,
}

/// Output of the generic iteration, in any backend.
pub(crate) struct IterOut<V> {
    pub p: V,
    pub a: V,
    pub b: V,
    pub iterations: usize,
    pub error: Option<f64>,
}

/// Checks atoms (`N × S`) and weights (`S × M`) and returns `(N, S, M)`.
pub(crate) fn check_inputs<T: Real>(
    kernel: &dyn Kernel<T>,
    atoms: &Batch<T>,
    weights: &Batch<T>,
    cfg: &BarycenterConfig,
) -> Result<(usize, usize, usize)> {
    cfg.validate()?;
    let n = kernel.nrows();
    if kernel.ncols() != n {
        return Err(Error::ShapeMismatch {
            arg: "kernel",
            expected: "square (barycenters live on one support)".into(),
            found: format!("{} x {}", kernel.nrows(), kernel.ncols()),
        });
    }
    validate::rows("atoms", atoms, n)?;
    let s = atoms.cols();
    validate::rows("weights", weights, s)?;
    if cfg.rho.is_none() {
        validate::simplex_columns("atoms", atoms)?;
    } else {
        validate::nonnegative("atoms", atoms)?;
    }
    validate::simplex_columns("weights", weights)?;
    Ok((n, s, weights.cols()))
}

/// The generalized barycenter iteration, written once for every variant and backend.
///
/// Scaling domain (Algorithm 6 with κ = ρ/(ρ+γ), κ = 1 when balanced):
/// `ã = (d / K b)^κ`, `a = a_prev^τ ã^{1-τ}` (eq. 25),
/// `p = (Σ_s λ_s (Kᵀa_s)^{1-κ})^{1/(1-κ)}`, or `Π_s (Kᵀa_s)^{λ_s}` when balanced (eq. 7),
/// `b̃ = (p / Kᵀa)^κ`, `b = b_prev^τ b̃^{1-τ}` (eq. 26). With τ = 0 and κ = 1 this is
/// exactly eq. 6-8. The log domain runs the same recursion on `u = log a`, `v = log b`
/// with `log K exp` (eq. 23-24; Algorithm 4's forward loop).
#[allow(clippy::too_many_arguments)]
pub(crate) fn iterate<'k, T: Real, O: Ops<'k, T>>(
    ops: &mut O,
    kernel: &'k dyn Kernel<T>,
    atoms: &O::V,
    weights: &O::V,
    init: (O::V, O::V),
    cfg: &BarycenterConfig,
) -> Result<IterOut<O::V>> {
    let (s, m) = {
        let w = ops.value(weights);
        (w.rows(), w.cols())
    };
    let gamma = kernel.gamma().to_f64_();
    let kappa = cfg.rho.map_or(1.0, |rho| rho / (rho + gamma));
    let (tau, kap) = (T::of(cfg.tau), T::of(kappa));
    let balanced = cfg.rho.is_none();
    let tol = cfg.stop.parts().0;
    let solver = if cfg.log_domain {
        "log-domain barycenter"
    } else {
        "barycenter"
    };
    let dt = ops.tile(atoms, m);
    let (mut a, mut b) = init;
    let mut p: Option<O::V> = None;
    let mut error = None;
    let mut done = 0;
    if cfg.log_domain {
        let logd = ops.log(&dt);
        for l in 1..=cfg.max_iter() {
            let lkb = ops.log_kernel(kernel, &b, false);
            if let (Some(tol), true, true) = (tol, balanced, l > 1) {
                let err = marginal_error(ops.value(&a), ops.value(&lkb), ops.value(&dt), true);
                error = Some(err);
                if err < tol {
                    break;
                }
            }
            let mut at = ops.sub(&logd, &lkb);
            if !balanced {
                at = ops.scale(&at, kap);
            }
            a = mix_log(ops, &a, at, tau);
            let lkta = ops.log_kernel(kernel, &a, true);
            let logp = if balanced {
                ops.block_dot(&lkta, weights)
            } else {
                let c = T::one() - kap;
                let scaled = ops.scale(&lkta, c);
                let lse = ops.block_lse(&scaled, weights);
                ops.scale(&lse, T::one() / c)
            };
            let rep = ops.repeat(&logp, s);
            let mut bt = ops.sub(&rep, &lkta);
            if !balanced {
                bt = ops.scale(&bt, kap);
            }
            b = mix_log(ops, &b, bt, tau);
            let newp = ops.exp(&logp);
            done = l;
            if let (Some(tol), false) = (tol, balanced) {
                let err = change(p.as_ref().map(|q| ops.value(q)), ops.value(&newp));
                p = Some(newp);
                error = Some(err);
                if err < tol {
                    break;
                }
            } else {
                p = Some(newp);
            }
            // exp(log p) may underflow for the first iterations at tiny γ and recover:
            // only NaN/∞ abort here; the mass is checked once, after the loop.
            check_finite(ops.value(p.as_ref().unwrap()), solver, l, false)?;
        }
    } else {
        for l in 1..=cfg.max_iter() {
            let kb = ops.kernel(kernel, &b, false);
            if let (Some(tol), true, true) = (tol, balanced, l > 1) {
                let err = marginal_error(ops.value(&a), ops.value(&kb), ops.value(&dt), false);
                error = Some(err);
                if err < tol {
                    break;
                }
            }
            let mut at = ops.div(&dt, &kb);
            if !balanced {
                at = ops.powf(&at, kap);
            }
            a = mix(ops, &a, at, tau);
            let kta = ops.kernel(kernel, &a, true);
            let (newp, bt) = if balanced {
                // p = Π_s (Kᵀa_s)^{λ_s} through its logarithm (eq. 7), b = p / Kᵀa (eq. 8).
                ops.geometric_step(&kta, weights, kernel.par())
            } else {
                let c = T::one() - kap;
                let pw = ops.powf(&kta, c);
                let sum = ops.block_dot(&pw, weights);
                let newp = ops.powf(&sum, T::one() / c);
                let rep = ops.repeat(&newp, s);
                let bt = ops.div(&rep, &kta);
                let bt = ops.powf(&bt, kap);
                (newp, bt)
            };
            b = mix(ops, &b, bt, tau);
            done = l;
            if let (Some(tol), false) = (tol, balanced) {
                let err = change(p.as_ref().map(|q| ops.value(q)), ops.value(&newp));
                p = Some(newp);
                error = Some(err);
                if err < tol {
                    break;
                }
            } else {
                p = Some(newp);
            }
            if tol.is_some() || l == cfg.max_iter() {
                check_finite(ops.value(p.as_ref().unwrap()), solver, l, true)?;
            }
        }
    }
    let p = p.expect("max_iter >= 1 was validated");
    check_finite(ops.value(&p), solver, done, true)?;
    Ok(IterOut {
        p,
        a,
        b,
        iterations: done,
        error,
    })
}

/// `prev^τ · new^{1-τ}` (Algorithm 5, eq. 25-26); exactly `new` when τ = 0. A zero of
/// `new` (an empty atom bin) stays zero instead of `0^τ · 0 = ∞ · 0 = NaN`: see
/// [`crate::ops::heavy_ball_into`], shared by the eager and the taped backends.
fn mix<'k, T: Real, O: Ops<'k, T>>(ops: &mut O, prev: &O::V, new: O::V, tau: T) -> O::V {
    if tau == T::zero() {
        // Moved, not copied: a copy of the scalings cost a pass per half-iteration.
        return new;
    }
    ops.heavy_ball(prev, &new, tau, false)
}

/// `τ·prev + (1-τ)·new`: the heavy-ball step on logarithms, with `-∞` (a zero scaling)
/// kept at `-∞` instead of `∞ - ∞ = NaN`.
fn mix_log<'k, T: Real, O: Ops<'k, T>>(ops: &mut O, prev: &O::V, new: O::V, tau: T) -> O::V {
    if tau == T::zero() {
        return new;
    }
    ops.heavy_ball(prev, &new, tau, true)
}

/// POT's relative change `max|p - q| / max(max|p|, max|q|, 1)`.
fn change<T: Real>(prev: Option<&Batch<T>>, p: &Batch<T>) -> f64 {
    let Some(q) = prev else { return f64::INFINITY };
    let mut num = 0.0f64;
    let mut den = 1.0f64;
    for (&x, &y) in p.as_slice().iter().zip(q.as_slice()) {
        num = validate::nan_max([num, (x - y).abs().to_f64_()]);
        den = den.max(x.abs().to_f64_()).max(y.abs().to_f64_());
    }
    // A NaN entry makes `num` NaN (not dropped by `max`), so the change is NaN.
    num / den
}

/// Checks the barycenter for non-finite entries and, with `check_mass`, zero mass. The
/// advice depends on the domain (`solver` names it): the scaling domain over- or
/// underflows where the log domain does not, so it points there; the log domain is
/// already stable, and a zero mass there is `exp(log p)` underflowing while the log
/// iterates are finite, which happens in the first iterations at tiny γ (the scalings
/// have not grown yet) and goes away with more iterations.
fn check_finite<T: Real>(
    p: &Batch<T>,
    solver: &'static str,
    l: usize,
    check_mass: bool,
) -> Result<()> {
    let log = solver.starts_with("log");
    if let Some((row, col)) = p.first_non_finite() {
        let advice = if log {
            "the log-domain iterates diverged; use a larger γ"
        } else {
            "the scalings over- or underflowed; use the log-domain variant \
             (`log_domain(true)`) or a larger γ"
        };
        return Err(Error::Numerical {
            solver,
            iteration: l,
            message: format!("non-finite barycenter entry at ({row}, {col}): {advice}"),
        });
    }
    if check_mass {
        if let Some(col) = p.col_sums().iter().position(|&s| s <= T::zero()) {
            let advice = if log {
                "exp(log p) underflowed although the log iterates are finite (the scalings \
                 have not grown yet at this γ); run more iterations or use tolerance mode"
            } else {
                "the kernel underflowed; use the log-domain variant (`log_domain(true)`) or a \
                 larger γ"
            };
            return Err(Error::Numerical {
                solver,
                iteration: l,
                message: format!("barycenter {col} has zero mass: {advice}"),
            });
        }
    }
    Ok(())
}

/// Barycenters of the atoms (`N × S`, columns in the simplex) for each column of
/// `weights` (`S × M`, columns in the simplex), on the support of `kernel`.
///
/// `warm` resumes from the scalings of an earlier call (section 4.2); otherwise the
/// iteration starts from `a = b = 1`.
///
/// ```
/// use wassdl::{Batch, BarycenterConfig, Grid, GridKernel, barycenters};
/// let grid = Grid::new(&[50]).unwrap();
/// let k = GridKernel::<f64>::new(&grid, 1e-2).unwrap();
/// // two Diracs at the ends of [0, 1]; their midpoint barycenter sits in the middle
/// let atoms = Batch::from_fn(50, 2, |i, s| if i == s * 49 { 1.0 } else { 0.0 });
/// let w = Batch::from_vec(2, 1, vec![0.5, 0.5]);
/// let out = barycenters(&k, &atoms, &w, &BarycenterConfig::tolerance(1e-9, 10_000), None).unwrap();
/// let p = out.p.col(0);
/// let argmax = (0..50).max_by(|&i, &j| p[i].total_cmp(&p[j])).unwrap();
/// assert!(argmax == 24 || argmax == 25);
/// assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-6);
/// ```
pub fn barycenters<T: Real>(
    kernel: &dyn Kernel<T>,
    atoms: &Batch<T>,
    weights: &Batch<T>,
    cfg: &BarycenterConfig,
    warm: Option<&Scalings<T>>,
) -> Result<Barycenters<T>> {
    let (n, s, m) = check_inputs(kernel, atoms, weights, cfg)?;
    let init = match warm {
        Some(w) => {
            w.validate(n, s * m)?;
            w.to_domain(cfg.log_domain)
        }
        None => Scalings::ones(n, s * m, cfg.log_domain),
    };
    let mut ops = Eager;
    let out = iterate(&mut ops, kernel, atoms, weights, (init.a, init.b), cfg)?;
    Ok(Barycenters {
        p: out.p,
        scalings: Scalings {
            a: out.a,
            b: out.b,
            log: cfg.log_domain,
        },
        iterations: out.iterations,
        error: out.error,
    })
}
