//! Sinkhorn-divergence barycenters of point clouds by L-BFGS (`002_f75a3e4357797dec.txt`):
//!
//! ```text
//! γ* = argmin_γ Σ_s λ_s S_ε(γ, β_s)
//! ```
//!
//! * [`eulerian_barycenter`]: fixed positions `z_k`, optimize the log-weights `l` with
//!   `γ_k = softmax(l)_k` (the Sinkhorn divergence is convex in the weights);
//! * [`lagrangian_barycenter`]: fixed weights, optimize the positions `z_k`.
//!
//! Both run the crate's L-BFGS driver ([`crate::lbfgs`], argmin's L-BFGS with the
//! More–Thuente line search by default) on an `f64` parameter vector, as
//! GeomLoss's `fit_model` runs SciPy's L-BFGS-B on `float64` copies of its parameters.
//! The line searches differ, so the iterates (and the costs printed along the way) are
//! not those of SciPy; the minimum is the same.

use super::divergence::{divergence_parts, SelfTerm};
use super::{PointCloud, SinkhornDivergenceConfig};
use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::lbfgs::{
    minimize, Control, Differentiable, Hooks, LbfgsConfig, Start, Step, Termination,
};
use crate::ops::Ops;
use crate::real::Real;
use crate::tape::Tape;
use std::cell::RefCell;
use std::sync::Mutex;

/// The iterate at one function evaluation.
#[derive(Clone, Debug)]
pub struct Snapshot<T: Real> {
    /// Evaluation index (0 is the initial point): GeomLoss's `nit`.
    pub eval: usize,
    /// Objective value there.
    pub cost: f64,
    /// The barycenter there.
    pub cloud: PointCloud<T>,
}

/// Result of [`eulerian_barycenter`] and [`lagrangian_barycenter`].
#[derive(Clone, Debug)]
pub struct BarycenterFit<T: Real> {
    /// The barycenter at the best iterate.
    pub cloud: PointCloud<T>,
    /// Objective at every function evaluation, in order (`costs[0]` is the initial cost),
    /// as GeomLoss's `fit_model` records them.
    pub costs: Vec<f64>,
    /// Objective at the returned barycenter.
    pub final_cost: f64,
    /// Iterates at the requested evaluations.
    pub snapshots: Vec<Snapshot<T>>,
    /// L-BFGS iterations.
    pub iterations: u64,
    /// Why L-BFGS stopped.
    pub termination: Termination,
}

type Eval<'a> = dyn Fn(&[f64]) -> Result<(f64, Vec<f64>)> + 'a;

struct Recorder {
    last: Option<(Vec<f64>, f64, Vec<f64>)>,
    costs: Vec<f64>,
    snaps: Vec<(usize, f64, Vec<f64>)>,
}

/// The objective as L-BFGS sees it: evaluates cost and gradient together and caches the
/// last point (argmin asks for them separately), recording the cost of every evaluation
/// as GeomLoss's `fit_model` does.
struct Recorded<'a> {
    eval: &'a Eval<'a>,
    want: &'a [usize],
    rec: Mutex<Recorder>,
}

impl Recorded<'_> {
    fn get(&self, p: &[f64]) -> Result<(f64, Vec<f64>)> {
        let mut rec = self.rec.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((q, c, g)) = &rec.last {
            if q.as_slice() == p {
                return Ok((*c, g.clone()));
            }
        }
        let (c, g) = (self.eval)(p)?;
        let k = rec.costs.len();
        rec.costs.push(c);
        if self.want.contains(&k) {
            rec.snaps.push((k, c, p.to_vec()));
        }
        rec.last = Some((p.to_vec(), c, g.clone()));
        Ok((c, g))
    }
}

impl Differentiable for Recorded<'_> {
    fn cost(&self, x: &[f64]) -> Result<f64> {
        self.get(x).map(|(c, _)| c)
    }
    fn gradient(&self, x: &[f64]) -> Result<Vec<f64>> {
        self.get(x).map(|(_, g)| g)
    }
}

/// No observer: the costs are recorded by [`Recorded`].
struct Quiet;

impl Hooks for Quiet {
    fn step(&mut self, _: &Step<'_>) -> Result<Control> {
        Ok(Control::Continue)
    }
}

struct LbfgsRun {
    best: Vec<f64>,
    final_cost: f64,
    costs: Vec<f64>,
    snaps: Vec<(usize, f64, Vec<f64>)>,
    iterations: u64,
    termination: Termination,
}

/// The crate's L-BFGS driver ([`crate::lbfgs`]) on `eval` from `x0`; `eps` is the
/// relative precision the objective is computed in.
fn run_lbfgs(
    x0: Vec<f64>,
    eval: &Eval<'_>,
    opt: &LbfgsConfig,
    want: &[usize],
    eps: f64,
) -> Result<LbfgsRun> {
    let problem = Recorded {
        eval,
        want,
        rec: Mutex::new(Recorder {
            last: None,
            costs: Vec::new(),
            snaps: Vec::new(),
        }),
    };
    let start = Start {
        x0,
        done: 0,
        runs: 0,
    };
    let out = minimize(&problem, opt, start, None, eps, &mut Quiet)?;
    let rec = problem.rec.into_inner().unwrap_or_else(|e| e.into_inner());
    // GeomLoss re-evaluates the model at the returned point; the cache makes that free
    // when it is the last point visited.
    let final_cost = match &rec.last {
        Some((q, c, _)) if *q == out.x => *c,
        _ => eval(&out.x)?.0,
    };
    Ok(LbfgsRun {
        best: out.x,
        final_cost,
        costs: rec.costs,
        snaps: rec.snaps,
        iterations: out.iterations,
        termination: out.termination,
    })
}

fn check_targets<T: Real>(dim: usize, targets: &[(PointCloud<T>, f64)]) -> Result<()> {
    if targets.is_empty() {
        return Err(Error::ShapeMismatch {
            arg: "targets",
            expected: "at least one target measure".into(),
            found: "none".into(),
        });
    }
    for (t, lam) in targets {
        if t.dim() != dim {
            return Err(Error::ShapeMismatch {
                arg: "targets",
                expected: format!("points of dimension {dim}"),
                found: format!("dimension {}", t.dim()),
            });
        }
        if !(lam.is_finite() && *lam >= 0.0) {
            return Err(Error::InvalidParameter {
                arg: "targets.weight",
                requirement: "finite and >= 0",
                value: *lam,
            });
        }
    }
    Ok(())
}

fn to_t<T: Real>(v: &[f64]) -> Vec<T> {
    v.iter().map(|&x| T::of(x)).collect()
}

/// Eulerian Sinkhorn barycenter: minimizes `Σ_s λ_s S_ε(γ, β_s)` over the weights of
/// `γ = Σ_k γ_k δ_{z_k}` with the positions of `init` fixed, by L-BFGS on the
/// log-weights `l` (`γ = softmax(l)`, started from `l = log(init weights)`), the first
/// scheme of `002_f75a3e4357797dec.txt` (there with uniform initial weights, `λ = ½, ½`,
/// `blur = 0.001`, `scaling = 0.99`).
///
/// The gradient with respect to `l` goes through a [`Tape`]: the softmax is recorded,
/// and the weight gradient of the divergences (their debiased potentials) is attached to
/// it with [`Tape::given`], as [`super::sinkhorn_divergence_on_tape`] does. The self
/// terms `OT(β_s, β_s)` of the fixed targets are computed once, and `OT(γ, γ)` once per
/// evaluation for all targets sharing an ε schedule.
///
/// `snapshot_evals` lists the evaluation indices whose iterate is kept (for figures).
///
/// # Errors
/// Invalid inputs (a zero initial weight has no logarithm), or a failed evaluation.
pub fn eulerian_barycenter<T: Real>(
    init: &PointCloud<T>,
    targets: &[(PointCloud<T>, f64)],
    cfg: &SinkhornDivergenceConfig,
    opt: &LbfgsConfig,
    snapshot_evals: &[usize],
) -> Result<BarycenterFit<T>> {
    check_targets(init.dim(), targets)?;
    cfg.validate()?;
    let n = init.len();
    if let Some(k) = init.weights().iter().position(|&w| w <= T::zero()) {
        return Err(Error::InvalidParameter {
            arg: "init.weights",
            requirement: "> 0 (the Eulerian scheme optimizes their logarithms)",
            value: init.weights()[k].to_f64_(),
        });
    }
    let l0: Vec<f64> = init.weights().iter().map(|w| w.to_f64_().ln()).collect();
    let weights_of = |l: &[f64]| -> Vec<T> {
        let mut tape = Tape::<T>::new();
        let v = tape.var(Batch::from_vec(n, 1, to_t(l)));
        let s = tape.softmax_cols(&v);
        tape.value(&s).as_slice().to_vec()
    };
    // Each target's self term OT(β_s, β_s) depends only on β_s and the ε schedule, and
    // the schedule (set by the fixed positions) never changes here: computed once.
    let caches: RefCell<Vec<Option<SelfTerm<T>>>> = RefCell::new(vec![None; targets.len()]);
    let eval = |l: &[f64]| -> Result<(f64, Vec<f64>)> {
        let mut tape = Tape::<T>::new();
        let lv = tape.var(Batch::from_vec(n, 1, to_t(l)));
        let c = tape.softmax_cols(&lv);
        let gamma = init.with_weights(tape.value(&c).as_slice().to_vec())?;
        let mut value = 0.0;
        let mut grad_c = vec![T::zero(); n];
        // OT(γ, γ) is shared by the targets whose schedule is the same.
        let mut self_gamma: Option<SelfTerm<T>> = None;
        for (s, (tgt, lam)) in targets.iter().enumerate() {
            let (d, sx, sy) = {
                let cache = caches.borrow();
                divergence_parts(
                    &gamma,
                    tgt,
                    cfg,
                    self_gamma.as_ref(),
                    cache[s].as_ref(),
                    false,
                )?
            };
            caches.borrow_mut()[s] = sy;
            self_gamma = sx;
            value += lam * d.value.to_f64_();
            let lt = T::of(*lam);
            for (g, &v) in grad_c.iter_mut().zip(&d.grad_a) {
                *g += lt * v;
            }
        }
        // Back through the softmax on the tape: ∂/∂l = J_softmaxᵀ ∂/∂γ.
        let node = tape.given(&c, T::of(value), Batch::from_vec(n, 1, grad_c));
        let g = tape.backward(node).wrt(lv);
        Ok((value, g.as_slice().iter().map(|v| v.to_f64_()).collect()))
    };
    let run = run_lbfgs(l0, &eval, opt, snapshot_evals, T::epsilon().to_f64_())?;
    let cloud_at = |l: &[f64]| init.with_weights(weights_of(l));
    let snapshots = run
        .snaps
        .iter()
        .map(|(k, c, p)| {
            Ok(Snapshot {
                eval: *k,
                cost: *c,
                cloud: cloud_at(p)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(BarycenterFit {
        cloud: cloud_at(&run.best)?,
        costs: run.costs,
        final_cost: run.final_cost,
        snapshots,
        iterations: run.iterations,
        termination: run.termination,
    })
}

/// Lagrangian Sinkhorn barycenter: minimizes `Σ_s λ_s S_ε(γ, β_s)` over the positions of
/// `γ = Σ_k w_k δ_{z_k}` with the weights of `init` fixed, by L-BFGS on the positions
/// started from those of `init`: the second scheme of `002_f75a3e4357797dec.txt` (there
/// with uniform weights, `blur = 0.01`, `scaling = 0.9` or `0.5`).
///
/// # Errors
/// Invalid inputs or a failed evaluation.
pub fn lagrangian_barycenter<T: Real>(
    init: &PointCloud<T>,
    targets: &[(PointCloud<T>, f64)],
    cfg: &SinkhornDivergenceConfig,
    opt: &LbfgsConfig,
    snapshot_evals: &[usize],
) -> Result<BarycenterFit<T>> {
    check_targets(init.dim(), targets)?;
    cfg.validate()?;
    let (dim, n) = (init.dim(), init.len());
    let z0: Vec<f64> = init
        .points()
        .as_slice()
        .iter()
        .map(|v| v.to_f64_())
        .collect();
    let cloud_at = |z: &[f64]| init.with_points(Batch::from_vec(dim, n, to_t(z)));
    // The targets' self terms are reused while the ε schedule (set by the diameter of
    // both clouds) does not change; a moving barycenter that changes it recomputes them.
    let caches: RefCell<Vec<Option<SelfTerm<T>>>> = RefCell::new(vec![None; targets.len()]);
    let eval = |z: &[f64]| -> Result<(f64, Vec<f64>)> {
        let cloud = cloud_at(z)?;
        let mut value = 0.0;
        let mut grad = vec![0.0; dim * n];
        let mut self_gamma: Option<SelfTerm<T>> = None;
        for (s, (tgt, lam)) in targets.iter().enumerate() {
            let (d, sx, sy) = {
                let cache = caches.borrow();
                divergence_parts(
                    &cloud,
                    tgt,
                    cfg,
                    self_gamma.as_ref(),
                    cache[s].as_ref(),
                    false,
                )?
            };
            caches.borrow_mut()[s] = sy;
            self_gamma = sx;
            value += lam * d.value.to_f64_();
            for (g, &v) in grad.iter_mut().zip(d.grad_x.as_slice()) {
                *g += lam * v.to_f64_();
            }
        }
        Ok((value, grad))
    };
    let run = run_lbfgs(z0, &eval, opt, snapshot_evals, T::epsilon().to_f64_())?;
    let snapshots = run
        .snaps
        .iter()
        .map(|(k, c, p)| {
            Ok(Snapshot {
                eval: *k,
                cost: *c,
                cloud: cloud_at(p)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(BarycenterFit {
        cloud: cloud_at(&run.best)?,
        costs: run.costs,
        final_cost: run.final_cost,
        snapshots,
        iterations: run.iterations,
        termination: run.termination,
    })
}
