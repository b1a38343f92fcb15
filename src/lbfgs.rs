//! One L-BFGS driver (argmin's `LBFGS`) for every learner of the crate: the histogram
//! dictionary ([`crate::dictionary`], Algorithm 2) and the point-cloud barycenters
//! ([`crate::pointcloud::eulerian_barycenter`], [`crate::pointcloud::lagrangian_barycenter`]).
//!
//! What it adds to argmin's executor, once for all of them:
//!
//! * a line search that treats a trial step whose evaluation fails numerically (an
//!   over- or underflowing barycenter, a non-finite loss) as a step too long and
//!   shortens it in place, keeping L-BFGS's memory ([`LbfgsConfig::guard_steps`]);
//! * retries after a failed line search with 10× shorter first steps
//!   ([`LINE_SEARCH_RETRIES`]) before the fit ends with [`Termination::LineSearch`];
//! * restart boundaries every `k` iterations (the warm restarts of section 4.2 and their
//!   checkpoints), an observer called after every iteration that may stop the run, and
//!   the crate's own [`Error`]s carried through argmin unchanged.
//!
//! A problem implements the crate-internal `Differentiable` trait: cost and gradient
//! of `f64` variables, with its own cache of the last evaluation (argmin asks for them
//! separately, usually at the same point).

use crate::error::{Error, Result};
use argmin::core::{
    CostFunction, Gradient, IterState, Problem, Solver, State, TerminationReason,
    TerminationStatus, KV,
};
use argmin::solver::linesearch::condition::ArmijoCondition;
use argmin::solver::linesearch::{
    BacktrackingLineSearch, HagerZhangLineSearch, LineSearch, MoreThuenteLineSearch,
};
use argmin::solver::quasinewton::LBFGS;
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Line search used by L-BFGS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum LineSearchKind {
    /// More-Thuente (strong Wolfe conditions, c₁ = 1e-4, c₂ = 0.9): argmin's default.
    #[default]
    MoreThuente,
    /// Hager-Zhang (approximate Wolfe conditions). argmin 0.11's implementation probes a
    /// step of 10⁵ first and its secant steps turn NaN where the softmax saturates: on
    /// this objective it fails every few iterations and goes on only through the fit's
    /// retries ([`LINE_SEARCH_RETRIES`]), at ~10× the evaluations of More-Thuente.
    /// Prefer More-Thuente.
    HagerZhang,
    /// Backtracking with the Armijo condition (c = 1e-4, contraction 0.9): one forward
    /// pass per trial step, the gradient only at the accepted one.
    Backtracking,
}

/// L-BFGS settings (argmin's `LBFGS`), for every learner of the crate.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LbfgsConfig {
    /// Number of correction pairs kept (`m`).
    pub memory: usize,
    /// Total L-BFGS iterations, summed over warm restarts.
    #[cfg_attr(feature = "serde", serde(alias = "max_iters"))]
    pub max_iter: u64,
    /// Stop when the gradient norm (of the L-BFGS variables, ζ included) is below this.
    pub tol_grad: f64,
    /// Stop when the loss changes by less than this over one iteration.
    pub tol_cost: f64,
    /// Line search.
    pub line_search: LineSearchKind,
    /// A trial step whose evaluation fails numerically shortens the step inside the line
    /// search (`GuardedLineSearch`, default `true`). `false` is the earlier behaviour,
    /// kept for comparison: the failure ends the line search and the fit restarts L-BFGS
    /// (losing its memory) with a shorter first step ([`LINE_SEARCH_RETRIES`]).
    #[cfg_attr(feature = "serde", serde(default = "yes"))]
    pub guard_steps: bool,
    /// The first line search of every run (L-BFGS has no correction pairs yet, its
    /// direction is `−∇f`) tries the step `1/‖∇f(x₀)‖`, a displacement of unit length,
    /// instead of `1` (the usual first step of a quasi-Newton method, Nocedal & Wright
    /// section 6.1). Where `‖∇f‖` is far from 1 (the cardiac fit starts at `‖∇f‖ ≈
    /// 10⁻⁶`) this saves the tens of evaluations a line search spends extrapolating.
    /// Default `false`, which keeps every earlier fit's numbers.
    #[cfg_attr(feature = "serde", serde(default))]
    pub scale_first_step: bool,
}

#[cfg(feature = "serde")]
fn yes() -> bool {
    true
}

impl Default for LbfgsConfig {
    /// memory 10, 100 iterations, both tolerances 0 (run the whole budget, as the
    /// paper's experiments do), More-Thuente, guarded steps.
    fn default() -> Self {
        LbfgsConfig {
            memory: 10,
            max_iter: 100,
            tol_grad: 0.0,
            tol_cost: 0.0,
            line_search: LineSearchKind::MoreThuente,
            guard_steps: true,
            scale_first_step: false,
        }
    }
}

impl LbfgsConfig {
    /// GeomLoss's `fit_model(method="L-BFGS", tol=tol)` (SciPy's L-BFGS-B: `maxiter =
    /// 500`, `maxcor = 10`, `ftol = gtol = tol`), the point-cloud barycenters' setting.
    /// SciPy's `ftol` is relative to `max(|f|, 1)`, `tol_cost` absolute: the same for
    /// costs below 1.
    pub fn with_tol(tol: f64) -> Self {
        LbfgsConfig {
            max_iter: 500,
            tol_cost: tol,
            tol_grad: tol,
            ..Default::default()
        }
    }

    /// Checks every field; errors name it.
    pub fn validate(&self) -> Result<()> {
        if self.memory == 0 {
            return Err(Error::InvalidParameter {
                arg: "lbfgs.memory",
                requirement: ">= 1",
                value: 0.0,
            });
        }
        for (arg, v) in [
            ("lbfgs.tol_cost", self.tol_cost),
            ("lbfgs.tol_grad", self.tol_grad),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::InvalidParameter {
                    arg,
                    requirement: "finite and >= 0",
                    value: v,
                });
            }
        }
        Ok(())
    }
}

/// An observer's verdict after an iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Keep going.
    Continue,
    /// Stop now and return the current point.
    Stop,
}

/// Why an L-BFGS fit stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Termination {
    /// The iteration budget [`LbfgsConfig::max_iter`] is spent.
    MaxIter,
    /// L-BFGS met `tol_grad` or `tol_cost`.
    Converged,
    /// The observer (or the caller's callback) returned [`Control::Stop`].
    Observer,
    /// The line search failed [`LINE_SEARCH_RETRIES`]` + 1` times in a row without
    /// progress (typically: no further decrease is representable); the last accepted
    /// point is returned. The message gives the first failure and the last retry's.
    LineSearch(String),
}

impl std::fmt::Display for Termination {
    /// `max_iter`, `converged`, `stopped` or `line search: <why>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Termination::MaxIter => f.write_str("max_iter"),
            Termination::Converged => f.write_str("converged"),
            Termination::Observer => f.write_str("stopped"),
            Termination::LineSearch(msg) => write!(f, "line search: {msg}"),
        }
    }
}

type Param = Vec<f64>;
type St = IterState<Param, Param, (), (), (), f64>;

/// A smooth objective of `f64` variables, as the driver sees it. Implementations cache
/// their last evaluation: argmin asks for cost and gradient separately, mostly at the
/// same point, and one evaluation should serve both.
pub(crate) trait Differentiable {
    /// The objective at `x`.
    fn cost(&self, x: &[f64]) -> Result<f64>;
    /// Its gradient at `x`.
    fn gradient(&self, x: &[f64]) -> Result<Vec<f64>>;
}

fn to_argmin(e: Error) -> argmin::core::Error {
    argmin::core::Error::new(e)
}

/// The crate's own errors travel through argmin as `anyhow` errors: give them back; any
/// other (argmin's own) is kept as the source of an [`Error::External`].
pub(crate) fn from_argmin(e: argmin::core::Error) -> Error {
    match e.downcast::<Error>() {
        Ok(e) => e,
        Err(e) => Error::external("L-BFGS (argmin)", e),
    }
}

/// What argmin owns: a reference to the problem (argmin drops its problem when a line
/// search fails, so it must not own the state that outlives a run).
struct Handle<'p, P: ?Sized>(&'p P);

impl<P: Differentiable + ?Sized> CostFunction for Handle<'_, P> {
    type Param = Param;
    type Output = f64;
    fn cost(&self, x: &Param) -> std::result::Result<f64, argmin::core::Error> {
        self.0.cost(x).map_err(to_argmin)
    }
}

impl<P: Differentiable + ?Sized> Gradient for Handle<'_, P> {
    type Param = Param;
    type Gradient = Param;
    fn gradient(&self, x: &Param) -> std::result::Result<Param, argmin::core::Error> {
        self.0.gradient(x).map_err(to_argmin)
    }
}

// ---------------------------------------------------------------------------------------
// A line search that backtracks over numerical failures

/// How many times one line search may halve its largest step after failed trial
/// evaluations before giving up: `2⁻⁶⁰ ≈ 10⁻¹⁸`, below any step that changes an `f64`
/// parameter vector of order one.
const MAX_STEP_SHRINKS: u32 = 60;

/// Wraps one of argmin's line searches so that a trial step whose evaluation fails
/// numerically is a step too long, not the end of the line search.
///
/// With small γ in the scaling domain, a long trial step can make the barycenters over-
/// or underflow (an [`Error::Numerical`] from the barycenter, or a non-finite loss or
/// gradient). argmin's line searches propagate such an error, L-BFGS then stops, and the
/// fit used to restart L-BFGS from scratch with a shorter first step, losing the
/// correction pairs. Here the failed trial point `x₀ + α d` bounds the step instead: the
/// inner line search is started again from `x₀` with largest step `α / 2` (More-Thuente's
/// `stpmax`; the first trial step of Backtracking and Hager-Zhang) — the "infinite cost
/// shrinks the step" rule of a safeguarded line search (Nocedal & Wright, section 3.5),
/// applied between runs of the unchanged inner search. L-BFGS sees a line search that
/// succeeded, so its memory survives. Other errors pass through unchanged.
#[derive(Clone)]
pub(crate) struct GuardedLineSearch<L> {
    /// Builds the inner line search from (first trial step, largest step).
    make: LineSearchMaker<L>,
    first_step: f64,
    /// The first step of the run's first line search, taken once by whichever clone
    /// initializes first (argmin clones the line search at every iteration).
    first_of_run: Arc<Mutex<Option<f64>>>,
    /// The first step of the current line search.
    step_now: f64,
    dir: Option<Param>,
    inner: Option<L>,
    x0: Option<Param>,
    cost0: f64,
    grad0: Option<Param>,
    max_step: f64,
    shrinks: u32,
    /// 0 turns the guard off (numerical failures pass through).
    max_shrinks: u32,
    total: Arc<AtomicUsize>,
}

impl<L> GuardedLineSearch<L> {
    fn new(
        make: LineSearchMaker<L>,
        first_step: f64,
        first_of_run: Option<f64>,
        guard: bool,
        total: Arc<AtomicUsize>,
    ) -> Self {
        GuardedLineSearch {
            make,
            first_step,
            first_of_run: Arc::new(Mutex::new(first_of_run)),
            step_now: first_step,
            dir: None,
            inner: None,
            x0: None,
            cost0: f64::NAN,
            grad0: None,
            max_step: f64::INFINITY,
            shrinks: 0,
            max_shrinks: if guard { MAX_STEP_SHRINKS } else { 0 },
            total,
        }
    }
}

impl<L> LineSearch<Param, f64> for GuardedLineSearch<L> {
    fn search_direction(&mut self, d: Param) {
        self.dir = Some(d);
    }
    fn initial_step_length(&mut self, step: f64) -> std::result::Result<(), argmin::core::Error> {
        self.first_step = step;
        Ok(())
    }
}

/// The problem as the inner line search sees it: records the point of a trial evaluation
/// that failed numerically.
struct Guard<O> {
    o: O,
    failed: RefCell<Option<Param>>,
}

/// Whether `e` is a numerical failure of an evaluation (as opposed to a bug or bad input).
fn is_numerical(e: &argmin::core::Error) -> bool {
    matches!(
        e.downcast_ref::<Error>(),
        Some(Error::Numerical { .. } | Error::NonFinite { .. })
    )
}

impl<O: CostFunction<Param = Param, Output = f64>> CostFunction for Guard<O> {
    type Param = Param;
    type Output = f64;
    fn cost(&self, x: &Param) -> std::result::Result<f64, argmin::core::Error> {
        match self.o.cost(x) {
            Ok(c) if c.is_finite() => Ok(c),
            Ok(c) => {
                *self.failed.borrow_mut() = Some(x.clone());
                Err(argmin::core::Error::new(Error::Numerical {
                    solver: "line search",
                    iteration: 0,
                    message: format!("the cost at a trial step is {c}"),
                }))
            }
            Err(e) => {
                if is_numerical(&e) {
                    *self.failed.borrow_mut() = Some(x.clone());
                }
                Err(e)
            }
        }
    }
}

impl<O: Gradient<Param = Param, Gradient = Param>> Gradient for Guard<O> {
    type Param = Param;
    type Gradient = Param;
    fn gradient(&self, x: &Param) -> std::result::Result<Param, argmin::core::Error> {
        match self.o.gradient(x) {
            Ok(g) if g.iter().all(|v| v.is_finite()) => Ok(g),
            Ok(_) => {
                *self.failed.borrow_mut() = Some(x.clone());
                Err(argmin::core::Error::new(Error::Numerical {
                    solver: "line search",
                    iteration: 0,
                    message: "the gradient at a trial step is not finite".into(),
                }))
            }
            Err(e) => {
                if is_numerical(&e) {
                    *self.failed.borrow_mut() = Some(x.clone());
                }
                Err(e)
            }
        }
    }
}

type ArgminResult<T> = std::result::Result<T, argmin::core::Error>;

impl<L> GuardedLineSearch<L> {
    /// Runs `f` on the inner line search with the problem wrapped in a [`Guard`]; returns
    /// its result and the point of a failed trial evaluation, if any.
    fn guarded<O, R>(
        &mut self,
        problem: &mut Problem<O>,
        f: impl FnOnce(&mut L, &mut Problem<Guard<O>>) -> ArgminResult<R>,
    ) -> (ArgminResult<R>, Option<Param>) {
        let o = problem
            .take_problem()
            .expect("argmin hands the line search its problem");
        let mut gp = Problem::new(Guard {
            o,
            failed: RefCell::new(None),
        });
        let inner = self.inner.as_mut().expect("initialized in init");
        let r = f(inner, &mut gp);
        let g = gp.take_problem().expect("put back above");
        problem.problem = Some(g.o);
        problem.consume_func_counts(gp);
        (r, g.failed.into_inner())
    }

    /// A fresh inner line search from `x₀` within the current largest step.
    fn restart<O>(&mut self, problem: &mut Problem<O>, state: St) -> ArgminResult<St>
    where
        L: Solver<Guard<O>, St> + LineSearch<Param, f64>,
    {
        let mut inner = (self.make)(self.step_now.min(self.max_step), self.max_step)?;
        inner.search_direction(self.dir.clone().expect("L-BFGS sets the direction first"));
        self.inner = Some(inner);
        let st = state
            .param(self.x0.clone().expect("set in init"))
            .cost(self.cost0)
            .gradient(self.grad0.clone().expect("set in init"));
        // init evaluates nothing when cost and gradient are given (any failure is at x₀
        // itself, which no shorter step fixes)
        self.guarded(problem, |ls, p| ls.init(p, st))
            .0
            .map(|(s, _)| s)
    }
}

impl<O, L> Solver<O, St> for GuardedLineSearch<L>
where
    O: CostFunction<Param = Param, Output = f64> + Gradient<Param = Param, Gradient = Param>,
    L: Solver<Guard<O>, St> + LineSearch<Param, f64> + Clone,
{
    fn name(&self) -> &str {
        "guarded line search"
    }

    // The inner search decides when it is done: Backtracking and Hager-Zhang signal it
    // through `terminate` (More-Thuente through its state), and without forwarding it the
    // executor never stops them (a Backtracking fit looped forever; test `variants_fit`).
    fn terminate(&mut self, state: &St) -> TerminationStatus {
        self.inner
            .as_mut()
            .map_or(TerminationStatus::NotTerminated, |l| l.terminate(state))
    }

    fn init(&mut self, problem: &mut Problem<O>, state: St) -> ArgminResult<(St, Option<KV>)> {
        self.x0 = state.get_param().cloned();
        self.cost0 = state.get_cost();
        self.grad0 = state.get_gradient().cloned();
        self.max_step = f64::INFINITY;
        self.shrinks = 0;
        let once = self
            .first_of_run
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.step_now = once.unwrap_or(self.first_step);
        Ok((self.restart(problem, state)?, None))
    }

    fn next_iter(&mut self, problem: &mut Problem<O>, state: St) -> ArgminResult<(St, Option<KV>)> {
        let mut state = state;
        loop {
            let backup = state.clone();
            let (r, failed) = self.guarded(problem, |ls, p| ls.next_iter(p, state));
            let (Err(e), Some(xf)) = (&r, failed) else {
                return r;
            };
            // the step length of the failed trial point along the direction
            let (x0, d) = (
                self.x0.as_ref().expect("set in init"),
                self.dir.as_ref().expect("set by L-BFGS"),
            );
            let dd: f64 = d.iter().map(|v| v * v).sum();
            let alpha: f64 = xf
                .iter()
                .zip(x0)
                .zip(d)
                .map(|((a, b), v)| (a - b) * v)
                .sum::<f64>()
                / dd;
            if self.max_shrinks == 0 {
                return r;
            }
            if !(alpha > 0.0 && alpha.is_finite()) || self.shrinks >= self.max_shrinks {
                return Err(argmin::core::Error::msg(format!(
                    "{e} (after {} step reductions)",
                    self.shrinks
                )));
            }
            self.shrinks += 1;
            self.total.fetch_add(1, Ordering::Relaxed);
            self.max_step = 0.5 * alpha.min(self.max_step);
            state = self.restart(problem, backup)?;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The driver

/// How many times in a row a failed line search is retried before the fit ends with
/// [`Termination::LineSearch`]. Each retry restarts L-BFGS from the last accepted point
/// (same objective) with a line search whose first trial step is 10× shorter than the
/// previous attempt's. A trial step whose evaluation over- or underflows is handled
/// inside the line search (`GuardedLineSearch`) and does not get here unless
/// [`LbfgsConfig::guard_steps`] is off; what remains are failures of the line search
/// itself (no acceptable step, not a descent direction near a minimum). The count
/// restarts after a run that lowered the loss by more than `100 ε` relative (`ε` of the
/// precision the objective is computed in); smaller changes are rounding, as near a
/// minimum, where L-BFGS's own failure is the stopping signal.
pub const LINE_SEARCH_RETRIES: u32 = 3;

/// Where a fit starts: `x0` after `done` iterations in `runs` L-BFGS runs (0 and 0 for a
/// fresh fit).
pub(crate) struct Start {
    pub x0: Vec<f64>,
    pub done: u64,
    pub runs: usize,
}

/// The fit's state after an accepted iteration (or at the initial point).
pub(crate) struct Step<'x> {
    pub x: &'x [f64],
    /// Iterations done over all runs (0 at the initial point).
    pub iteration: u64,
    pub cost: f64,
    /// Euclidean norm of the gradient (NaN if L-BFGS holds none).
    pub grad_norm: f64,
    /// Index of the current run.
    pub run: usize,
}

/// What the caller sees of a fit while it runs.
pub(crate) trait Hooks {
    /// At the initial point of a fresh fit and after every accepted iteration.
    fn step(&mut self, s: &Step<'_>) -> Result<Control>;
    /// At a restart boundary: `x` after `done` iterations (a multiple of `restart_every`)
    /// and `runs` runs; `last` when the fit ends there. A caller whose objective changes
    /// between runs (warm restarts) changes it here.
    fn boundary(&mut self, _x: &[f64], _done: u64, _runs: usize, _last: bool) -> Result<()> {
        Ok(())
    }
}

/// What [`minimize`] returns.
pub(crate) struct Outcome {
    /// The last accepted point.
    pub x: Vec<f64>,
    /// Iterations done over all runs.
    pub iterations: u64,
    /// Runs done.
    pub runs: usize,
    pub termination: Termination,
    /// Trial steps shortened by the guarded line search.
    pub step_shrinks: usize,
}

fn l2(g: Option<&Vec<f64>>) -> f64 {
    g.map_or(f64::NAN, |g| g.iter().map(|v| v * v).sum::<f64>().sqrt())
}

/// Runs L-BFGS on `problem` from `start` under `cfg`: restarts every `restart_every`
/// iterations (a restart boundary, see [`Hooks::boundary`]) and after a failed line
/// search ([`LINE_SEARCH_RETRIES`]). `eps` is the relative precision the objective is
/// computed in (what counts as progress between retries).
pub(crate) fn minimize<P: Differentiable + ?Sized>(
    problem: &P,
    cfg: &LbfgsConfig,
    start: Start,
    restart_every: Option<usize>,
    eps: f64,
    hooks: &mut dyn Hooks,
) -> Result<Outcome> {
    cfg.validate()?;
    let total = Arc::new(AtomicUsize::new(0));
    let run = Run {
        problem,
        budget: cfg.max_iter,
        restart_every,
        eps,
        scale_first_step: cfg.scale_first_step,
    };
    // each line search is its own type in argmin, hence one `drive` per kind
    let out = match cfg.line_search {
        LineSearchKind::MoreThuente => run.drive(
            guarded_lbfgs(
                |step, max| {
                    let mut ls = MoreThuenteLineSearch::new()
                        .with_bounds(f64::EPSILON.sqrt().min(1e-3 * max), max.min(f64::MAX))?;
                    ls.initial_step_length(step)?;
                    Ok(ls)
                },
                cfg,
                &total,
            ),
            start,
            hooks,
        ),
        LineSearchKind::HagerZhang => run.drive(
            guarded_lbfgs(
                |step, _max| {
                    let mut ls = HagerZhangLineSearch::new();
                    ls.initial_step_length(step)?;
                    Ok(ls)
                },
                cfg,
                &total,
            ),
            start,
            hooks,
        ),
        LineSearchKind::Backtracking => run.drive(
            guarded_lbfgs(
                |step, _max| {
                    let mut ls = BacktrackingLineSearch::new(ArmijoCondition::new(1e-4)?);
                    ls.initial_step_length(step)?;
                    Ok(ls)
                },
                cfg,
                &total,
            ),
            start,
            hooks,
        ),
    }?;
    Ok(Outcome {
        step_shrinks: total.load(Ordering::Relaxed),
        ..out
    })
}

type LineSearchMaker<L> = fn(f64, f64) -> ArgminResult<L>;
type GuardedLbfgs<L> = LBFGS<GuardedLineSearch<L>, Param, Param, f64>;

/// The solver factory [`Run::drive`] takes: L-BFGS under `cfg` over a guarded line
/// search whose inner search `make` builds from (first step, largest step).
fn guarded_lbfgs<L>(
    make: LineSearchMaker<L>,
    cfg: &LbfgsConfig,
    total: &Arc<AtomicUsize>,
) -> impl Fn(f64, Option<f64>) -> ArgminResult<GuardedLbfgs<L>> {
    let (memory, tol_grad, tol_cost, guard) =
        (cfg.memory, cfg.tol_grad, cfg.tol_cost, cfg.guard_steps);
    let total = total.clone();
    move |step, first_of_run| {
        let ls = GuardedLineSearch::new(make, step, first_of_run, guard, total.clone());
        LBFGS::new(ls, memory)
            .with_tolerance_grad(tol_grad)?
            .with_tolerance_cost(tol_cost)
    }
}

struct Run<'p, P: ?Sized> {
    problem: &'p P,
    budget: u64,
    restart_every: Option<usize>,
    eps: f64,
    scale_first_step: bool,
}

impl<'p, P: Differentiable + ?Sized> Run<'p, P> {
    /// The outer loop over L-BFGS runs; `new_solver(step, first)` builds the solver whose
    /// line searches try `step` first, the run's first one `first` if given (each line
    /// search is its own type in argmin).
    fn drive<S, F>(&self, new_solver: F, from: Start, hooks: &mut dyn Hooks) -> Result<Outcome>
    where
        S: Solver<Handle<'p, P>, St>,
        F: Fn(f64, Option<f64>) -> std::result::Result<S, argmin::core::Error>,
    {
        let (budget, restart_every) = (self.budget, self.restart_every);
        let Start {
            x0: mut x,
            mut done,
            mut runs,
        } = from;
        // failed line searches since the last accepted step
        let mut failures = 0u32;
        // the message of the first of those failures (the later ones follow from the retries)
        let mut first_failure = String::new();
        let termination = 'runs: loop {
            // Runs end on multiples of `restart_every` (the restart boundaries), whatever
            // retries happened in between: a fit resumed at a boundary then meets the same
            // boundaries.
            let to_boundary = restart_every.map_or(u64::MAX, |k| k as u64 - done % k as u64);
            let run_len = to_boundary.min(budget - done);
            let first_step = 10f64.powi(-(failures as i32));
            let first_of_run = if self.scale_first_step {
                // cached: the solver's init below evaluates nothing new at `x`
                let g = self.problem.gradient(&x)?;
                let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
                (norm.is_finite() && norm > 0.0).then(|| first_step / norm)
            } else {
                None
            };
            let mut solver = new_solver(first_step, first_of_run).map_err(from_argmin)?;
            let mut problem = Problem::new(Handle(self.problem));
            let state = St::new().param(x.clone()).max_iters(run_len);
            let (mut state, _) = solver.init(&mut problem, state).map_err(from_argmin)?;
            state.update();
            if runs == 0 {
                let c = hooks.step(&Step {
                    x: &x,
                    iteration: 0,
                    cost: state.get_cost(),
                    grad_norm: l2(state.get_gradient()),
                    run: runs,
                })?;
                if c == Control::Stop {
                    runs += 1;
                    break 'runs Termination::Observer;
                }
            }
            let (start_cost, mut last_cost) = (state.get_cost(), state.get_cost());
            let reason = loop {
                if !state.terminated() {
                    if let TerminationStatus::Terminated(r) = solver.terminate_internal(&state) {
                        state = state.terminate_with(r);
                    }
                }
                if let Some(r) = state.get_termination_reason() {
                    break r.clone();
                }
                let (next, _) = solver.next_iter(&mut problem, state).map_err(from_argmin)?;
                state = next;
                if state.get_param().is_none() {
                    // The line search failed: L-BFGS returns no point (and argmin dropped
                    // the problem handle); the last accepted point stands.
                    break state
                        .get_termination_reason()
                        .cloned()
                        .unwrap_or(TerminationReason::SolverExit("no point".into()));
                }
                state.update();
                state.increment_iter();
                done += 1;
                last_cost = state.get_cost();
                x.clone_from(state.get_param().expect("checked above"));
                let c = hooks.step(&Step {
                    x: &x,
                    iteration: done,
                    cost: state.get_cost(),
                    grad_norm: l2(state.get_gradient()),
                    run: runs,
                })?;
                if c == Control::Stop {
                    runs += 1;
                    break 'runs Termination::Observer;
                }
            };
            runs += 1;
            let failed = matches!(reason, TerminationReason::SolverExit(_));
            let reached_max = matches!(reason, TerminationReason::MaxItersReached);
            let end = match reason {
                TerminationReason::MaxItersReached if done < budget => None,
                TerminationReason::MaxItersReached => Some(Termination::MaxIter),
                TerminationReason::SolverConverged | TerminationReason::TargetCostReached => {
                    Some(Termination::Converged)
                }
                TerminationReason::SolverExit(msg) => {
                    // Progress is a decrease above the objective's rounding: near a minimum
                    // L-BFGS can accept steps that change the loss in the last bits only,
                    // and counting those would retry until the budget is spent.
                    let tiny = 100.0 * self.eps * start_cost.abs();
                    failures = if start_cost - last_cost > tiny {
                        1
                    } else {
                        failures + 1
                    };
                    if failures == 1 {
                        first_failure.clone_from(&msg);
                    }
                    (failures > LINE_SEARCH_RETRIES).then(|| {
                        Termination::LineSearch(format!(
                            "{first_failure}; then {LINE_SEARCH_RETRIES} retries with shorter first steps made no progress, the last ending with: {msg}"
                        ))
                    })
                }
                other => Some(Termination::LineSearch(format!("{other:?}"))),
            };
            if !failed {
                failures = 0;
            }
            // A restart boundary: a run that reached a multiple of `restart_every`
            // (including one that spends the budget there: a longer fit would restart at
            // this point, so its state extends the fit exactly). A budget that cuts a run
            // short is not one (the longer fit's L-BFGS would carry on with its memory),
            // nor is a retry after a failed line search (same objective, no state beyond
            // `x`).
            if reached_max && restart_every.is_some_and(|k| done % k as u64 == 0) {
                hooks.boundary(&x, done, runs, end.is_some())?;
            }
            if let Some(t) = end {
                break 'runs t;
            }
        };
        Ok(Outcome {
            x,
            iterations: done,
            runs,
            termination,
            step_shrinks: 0,
        })
    }
}
