//! Exact (unregularised) optimal transport between two histograms.
//!
//! [`emd`] solves the transportation linear programme
//!
//! ```text
//! min_T <T, C>   s.t.   T >= 0,   T 1 = a,   T^T 1 = b
//! ```
//!
//! for an arbitrary cost matrix `C`, with a primal network simplex written for the
//! complete bipartite graph (the method of Bonneel et al. 2011 used by POT's `ot.emd`,
//! itself built on LEMON's `NetworkSimplex`), in `f64`. It returns the optimal value,
//! the sparse optimal plan and a dual pair `(f, g)`. [`proj_simplex`] is the Euclidean
//! projection onto the probability simplex.
//!
//! The exact cost is the limit of the entropic cost as the regularisation vanishes, so
//! this module is the reference the entropic solvers are checked against.
//!
//! ```
//! use wassdl::emd::emd;
//! // two points on each side, crossing is expensive
//! let a = [0.5, 0.5];
//! let b = [0.5, 0.5];
//! let c = [0.0, 1.0,
//!          1.0, 0.0];
//! let sol = emd(&a, &b, &c, 1000).unwrap();
//! assert_eq!(sol.cost, 0.0);
//! assert_eq!(sol.plan.len(), 2);
//! ```

use std::borrow::Cow;
use std::fmt;

/// One nonzero entry `T[i][j] = mass` of a transport plan.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlanEntry {
    /// Row (source) index, in `0..a.len()`.
    pub i: usize,
    /// Column (target) index, in `0..b.len()`.
    pub j: usize,
    /// Mass moved from source `i` to target `j`; always `> 0`.
    pub mass: f64,
}

/// Result of [`emd`]: optimal value, sparse optimal plan and optimal dual potentials.
///
/// # Dual normalisation
///
/// `f` and `g` are the potentials of the final spanning-tree basis (so
/// `f[i] + g[j] == C[i][j]`, up to rounding, on every basic arc and in particular on
/// every plan entry), completed for zero-weight points as described in [`emd`], and then
/// shifted by one constant (`f + c`, `g - c`, which changes neither `f[i] + g[j]` nor the
/// dual objective) so that the two sides contribute equally:
/// `<a, f> == <b, g> == cost / 2` (up to rounding). This is the centring that POT's
/// `ot.emd(..., log=True)` applies by default (`center_dual=True`). Potentials are not
/// unique in general (degenerate problems admit a whole polytope of optimal duals); any
/// other choice is equally valid.
#[derive(Clone, Debug)]
pub struct EmdSolution {
    /// Optimal transport cost `<T, C> = sum_ij T_ij C_ij`.
    pub cost: f64,
    /// Nonzero entries of the optimal plan (the basic variables with positive mass),
    /// sorted by `(i, j)`. At most `a.len() + b.len() - 1` entries: the solution is a
    /// vertex of the transport polytope.
    pub plan: Vec<PlanEntry>,
    /// Dual potential on the source side, length `a.len()`.
    ///
    /// Together with [`g`](Self::g): `f[i] + g[j] <= C[i][j]` for all `i, j` (up to a
    /// tolerance of about `1.4e-14` times the magnitude of the costs and potentials
    /// involved), with equality on the plan support (up to rounding), and
    /// `cost == <a, f> + <b, g>` (with `b` rescaled as described in [`emd`]). See the
    /// type-level docs for the normalisation.
    pub f: Vec<f64>,
    /// Dual potential on the target side, length `b.len()`; see [`f`](Self::f).
    pub g: Vec<f64>,
    /// Number of simplex pivots performed (degenerate pivots included).
    pub iterations: usize,
}

/// Why [`emd`] could not solve a problem.
#[derive(Clone, Debug, PartialEq)]
pub enum EmdError {
    /// `cost.len()` is not `a.len() * b.len()`.
    ShapeMismatch {
        /// `a.len()`.
        n1: usize,
        /// `b.len()`.
        n2: usize,
        /// `cost.len()`.
        cost_len: usize,
    },
    /// An entry of `a`, `b` or `cost` is NaN or infinite.
    NonFinite {
        /// `"a"`, `"b"` or `"cost"`.
        which: &'static str,
        /// Position of the first offending entry (row-major for `cost`).
        index: usize,
    },
    /// An entry of `a` or `b` is negative.
    Negative {
        /// `"a"` or `"b"`.
        which: &'static str,
        /// Position of the first offending entry.
        index: usize,
    },
    /// The histograms do not carry the same total mass (beyond the tolerance of [`emd`]).
    MassMismatch {
        /// `sum(a)`.
        sum_a: f64,
        /// `sum(b)`.
        sum_b: f64,
    },
    /// `a` or `b` is empty.
    Empty,
    /// The simplex needed more pivots than `max_iter` allows.
    MaxIterations {
        /// Pivots performed before giving up (equal to `max_iter`).
        iterations: usize,
    },
    /// The solve ended on a result that is not a solution: a non-finite cost or
    /// potential, or a plan that does not carry the mass (costs near the float limit
    /// overflow the simplex's potentials, sums of up to `n1 + n2` costs).
    NonFiniteResult {
        /// What was wrong, e.g. `"potential f[1] is NaN"`.
        what: String,
        /// Pivots performed.
        iterations: usize,
    },
}

impl fmt::Display for EmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmdError::ShapeMismatch { n1, n2, cost_len } => write!(
                f,
                "cost matrix has {cost_len} entries, expected {n1} x {n2} = {}",
                n1.saturating_mul(*n2)
            ),
            EmdError::NonFinite { which, index } => {
                write!(f, "{which}[{index}] is not finite")
            }
            EmdError::Negative { which, index } => write!(f, "{which}[{index}] is negative"),
            EmdError::MassMismatch { sum_a, sum_b } => write!(
                f,
                "histograms have different total mass: sum(a) = {sum_a}, sum(b) = {sum_b}"
            ),
            EmdError::Empty => write!(f, "a histogram is empty"),
            EmdError::MaxIterations { iterations } => write!(
                f,
                "network simplex did not converge within {iterations} pivots (raise max_iter)"
            ),
            EmdError::NonFiniteResult { what, .. } => write!(
                f,
                "no usable solution: {what}; the costs are too close to the float limit, rescale them"
            ),
        }
    }
}

impl std::error::Error for EmdError {}

/// Relative tolerance on the total masses: `|sum a - sum b|` above
/// `MASS_RTOL * max(sum a, sum b, 1)` is a [`EmdError::MassMismatch`].
const MASS_RTOL: f64 = 1e-10;

/// An arc is priced as improving only if its reduced cost is below
/// `-RC_RTOL * max(|C_ij|, |pi_i|, |pi_j|)`. The potentials are sums of up to `n` costs
/// updated incrementally, so reduced costs of optimal bases are only zero up to a few
/// ulps of the potentials; pivoting on that noise would waste pivots and could cycle.
const RC_RTOL: f64 = 64.0 * f64::EPSILON;

/// Marks "no node / no arc" in the index arrays.
const NONE: usize = usize::MAX;

/// Exact optimal transport between histograms `a` (length `n1`) and `b` (length `n2`)
/// for the cost matrix `cost`, row-major `n1 x n2` (`cost[i * n2 + j] = C_ij`).
///
/// Solved by a primal network simplex on the bipartite transportation network (see
/// the module docs); `max_iter` caps the number of pivots (POT's default is `100_000`;
/// an `n x n` problem typically needs a small multiple of `n` pivots for point clouds,
/// more for heavily degenerate ones; pass `usize::MAX` for no cap).
///
/// # Inputs
///
/// * `a`, `b` must be non-empty, finite and nonnegative, `cost` finite (of any sign).
/// * Masses: if `|sum a - sum b| > 1e-10 * max(sum a, sum b, 1)` the problem is
///   rejected ([`EmdError::MassMismatch`]); otherwise `b` is rescaled internally to
///   `b * sum(a) / sum(b)` (as POT's `emd` does), so the plan's column sums are the
///   rescaled `b`. A histogram of zero total mass facing one of positive mass is a
///   mismatch too; two zero histograms give the empty plan.
/// * Zero weights are allowed. Zero-weight rows and columns are removed from the
///   network (they cannot carry mass); their potentials are then the c-transforms
///   `g_j = min_{i: a_i > 0} (C_ij - f_i)` (zero columns first) and
///   `f_i = min_j (C_ij - g_j)` (zero rows, over all columns), the largest values that
///   keep `f_i + g_j <= C_ij` (POT's `estimate_dual_null_weights`). If both histograms
///   are zero, `g = 0` and `f_i = min_j C_ij`.
/// * Repeated points (identical rows or columns of `cost`) are fine: the simplex does
///   not need a unique optimum.
///
/// # Output
///
/// See [`EmdSolution`]. The plan's row sums equal `a` and its column sums the rescaled
/// `b` up to floating-point rounding (the plan is recomputed from the final basis, so
/// the error does not grow with the number of pivots).
///
/// # Complexity
///
/// Memory `O(n1 + n2)` beyond the inputs (plus one `O(n1 n2)` copy of `cost` when
/// zero-weight points have to be removed or the costs rescaled). Each pivot scans at
/// least one block of `~sqrt(n1 n2)` arcs and walks one tree cycle.
///
/// # Errors
///
/// [`EmdError`] for invalid inputs, and [`EmdError::MaxIterations`] when the simplex
/// needs more than `max_iter` pivots.
pub fn emd(a: &[f64], b: &[f64], cost: &[f64], max_iter: usize) -> Result<EmdSolution, EmdError> {
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 {
        return Err(EmdError::Empty);
    }
    if n1.checked_mul(n2) != Some(cost.len()) {
        return Err(EmdError::ShapeMismatch {
            n1,
            n2,
            cost_len: cost.len(),
        });
    }
    for (which, v) in [("a", a), ("b", b), ("cost", cost)] {
        if let Some(index) = v.iter().position(|x| !x.is_finite()) {
            return Err(EmdError::NonFinite { which, index });
        }
    }
    for (which, v) in [("a", a), ("b", b)] {
        if let Some(index) = v.iter().position(|&x| x < 0.0) {
            return Err(EmdError::Negative { which, index });
        }
    }
    let sum_a = neumaier_sum(a.iter().copied());
    let sum_b = neumaier_sum(b.iter().copied());
    let mismatch = (sum_a - sum_b).abs() > MASS_RTOL * sum_a.max(sum_b).max(1.0)
        || ((sum_a == 0.0) != (sum_b == 0.0));
    if mismatch {
        return Err(EmdError::MassMismatch { sum_a, sum_b });
    }

    if sum_a == 0.0 {
        // Nothing to move: any (f, g) with f_i + g_j <= C_ij is optimal.
        let g = vec![0.0; n2];
        let f = (0..n1)
            .map(|i| {
                cost[i * n2..(i + 1) * n2]
                    .iter()
                    .copied()
                    .fold(f64::INFINITY, f64::min)
            })
            .collect();
        return Ok(EmdSolution {
            cost: 0.0,
            plan: Vec::new(),
            f,
            g,
            iterations: 0,
        });
    }

    let scale_b = sum_a / sum_b;
    let b_resc: Vec<f64> = b.iter().map(|&x| x * scale_b).collect();

    // Zero-weight points are dropped: they would only add degenerate basic arcs.
    let rows: Vec<usize> = (0..n1).filter(|&i| a[i] > 0.0).collect();
    let cols: Vec<usize> = (0..n2).filter(|&j| b_resc[j] > 0.0).collect();
    let (m1, m2) = (rows.len(), cols.len());

    // The big-M cost of the artificial arcs must exceed the cost of any tree path
    // (at most m1 + m2 arcs); if that overflows, work on costs scaled by a power of
    // two, which is exact, and scale the potentials back at the end.
    let cmax = rows
        .iter()
        .flat_map(|&i| cols.iter().map(move |&j| cost[i * n2 + j].abs()))
        .fold(0.0f64, f64::max);
    let nodes_f = (m1 + m2 + 1) as f64;
    let mut cost_scale = 1.0f64;
    while cmax * cost_scale * nodes_f * 4.0 > f64::MAX / 4.0 {
        cost_scale *= 0.5f64.powi(64);
    }
    let compact = m1 != n1 || m2 != n2 || cost_scale != 1.0;
    let work_cost: Cow<'_, [f64]> = if compact {
        let mut c = Vec::with_capacity(m1 * m2);
        for &i in &rows {
            c.extend(cols.iter().map(|&j| cost[i * n2 + j] * cost_scale));
        }
        Cow::Owned(c)
    } else {
        Cow::Borrowed(cost)
    };
    let art_cost = if cmax == 0.0 {
        1.0
    } else {
        nodes_f * cmax * cost_scale
    };

    let supply_a: Vec<f64> = rows.iter().map(|&i| a[i]).collect();
    let supply_b: Vec<f64> = cols.iter().map(|&j| b_resc[j]).collect();
    let mut ns = NetworkSimplex::new(&work_cost, &supply_a, &supply_b, art_cost);
    ns.run(max_iter)?;

    // Primal: basic real arcs carrying mass.
    let flows = ns.final_flows();
    let mut plan = Vec::with_capacity(m1 + m2);
    for (&e, &mass) in ns.pred[..ns.root].iter().zip(&flows) {
        if e < ns.n_real && mass > 0.0 {
            plan.push(PlanEntry {
                i: rows[e / m2],
                j: cols[e % m2],
                mass,
            });
        }
    }
    plan.sort_unstable_by_key(|p| (p.i, p.j));
    let total_cost = neumaier_sum(plan.iter().map(|p| p.mass * cost[p.i * n2 + p.j]));

    // Dual: f_i = -pi_i, g_j = pi_j (see `NetworkSimplex`), back on the original scale.
    ns.refresh_potentials();
    let inv_scale = 1.0 / cost_scale;
    let mut f = vec![f64::NAN; n1];
    let mut g = vec![f64::NAN; n2];
    for (k, &i) in rows.iter().enumerate() {
        f[i] = -ns.pi[k] * inv_scale;
    }
    for (k, &j) in cols.iter().enumerate() {
        g[j] = ns.pi[m1 + k] * inv_scale;
    }
    // c-transforms for the dropped points (see the docs above): columns against the
    // active rows first, then rows against every column, so all pairs stay feasible.
    for j in (0..n2).filter(|&j| b_resc[j] <= 0.0) {
        g[j] = rows
            .iter()
            .map(|&i| cost[i * n2 + j] - f[i])
            .fold(f64::INFINITY, f64::min);
    }
    for i in (0..n1).filter(|&i| a[i] <= 0.0) {
        let row = &cost[i * n2..(i + 1) * n2];
        f[i] = row
            .iter()
            .zip(&g)
            .map(|(&c, &gj)| c - gj)
            .fold(f64::INFINITY, f64::min);
    }
    // POT's `center_ot_dual`: the constant that equalises <a, f> and <b, g>.
    let af = neumaier_sum(a.iter().zip(&f).map(|(&x, &y)| x * y));
    let bg = neumaier_sum(b_resc.iter().zip(&g).map(|(&x, &y)| x * y));
    let shift = (bg - af) / (sum_a + sum_a);
    f.iter_mut().for_each(|x| *x += shift);
    g.iter_mut().for_each(|x| *x -= shift);

    check_result(total_cost, &plan, &f, &g, sum_a).map_err(|what| EmdError::NonFiniteResult {
        what,
        iterations: ns.iterations,
    })?;
    Ok(EmdSolution {
        cost: total_cost,
        plan,
        f,
        g,
        iterations: ns.iterations,
    })
}

/// A result is returned only if it is one: finite cost and potentials, and a plan that
/// carries the mass `sum_a` (a simplex whose potentials overflowed can end on an empty
/// basis with cost 0 and NaN potentials, which must not pass for an optimum).
fn check_result(
    cost: f64,
    plan: &[PlanEntry],
    f: &[f64],
    g: &[f64],
    sum_a: f64,
) -> Result<(), String> {
    if !cost.is_finite() {
        return Err(format!("the optimal cost is {cost}"));
    }
    for (name, pot) in [("f", f), ("g", g)] {
        if let Some(k) = pot.iter().position(|x| !x.is_finite()) {
            return Err(format!("potential {name}[{k}] is {}", pot[k]));
        }
    }
    let moved = neumaier_sum(plan.iter().map(|p| p.mass));
    // The plan is rebuilt from the final basis: its mass is `sum_a` to a few ulps per
    // entry (at most n1 + n2 entries); 1e-9 relative is far above that rounding and far
    // below any lost mass.
    if !(moved.is_finite() && (moved - sum_a).abs() <= 1e-9 * sum_a) {
        return Err(format!("the plan moves a mass of {moved}, not {sum_a}"));
    }
    Ok(())
}

/// Euclidean projection of `v` onto the probability simplex
/// `{x : x_i >= 0, sum_i x_i = 1}`.
///
/// Sort-based algorithm (Held, Wolfe & Crowder 1974; Duchi et al. 2008): with `u` the
/// entries sorted in decreasing order, the projection is `max(v - theta, 0)` where
/// `theta = (sum_{k <= rho} u_k - 1) / rho` and `rho` is the largest `k` with
/// `u_k > (sum_{r <= k} u_r - 1) / k`. `O(n log n)` time (the sort), `O(n)` memory.
///
/// The input must be free of NaN (the result is unspecified otherwise, but there is no
/// panic) and finite. An empty input gives an empty output (the simplex in `R^0` is
/// empty; there is nothing meaningful to return).
pub fn proj_simplex(v: &[f64]) -> Vec<f64> {
    if v.is_empty() {
        return Vec::new();
    }
    let mut u = v.to_vec();
    u.sort_unstable_by(|x, y| y.total_cmp(x));
    let mut cumsum = 0.0;
    let mut theta = 0.0;
    for (k, &uk) in u.iter().enumerate() {
        cumsum += uk;
        let t = (cumsum - 1.0) / (k + 1) as f64;
        // The condition holds exactly on a prefix 1..=rho in exact arithmetic; keeping
        // the last index where it holds is the definition of rho and is also what
        // survives rounding. It always holds at k = 0, so theta is always set.
        if uk > t {
            theta = t;
        }
    }
    v.iter().map(|&x| (x - theta).max(0.0)).collect()
}

/// Neumaier's compensated summation (improved Kahan–Babuška): masses and costs are
/// sums of up to millions of terms and are compared to 1e-12 relative.
fn neumaier_sum(it: impl Iterator<Item = f64>) -> f64 {
    let mut s = 0.0f64;
    let mut comp = 0.0f64;
    for x in it {
        let t = s + x;
        if s.abs() >= x.abs() {
            comp += (s - t) + x;
        } else {
            comp += (x - t) + s;
        }
        s = t;
    }
    s + comp
}

/// Primal network simplex on the complete bipartite graph sources -> sinks, after
/// LEMON's `NetworkSimplex` (Kiraly & Kovacs 2012) as specialised by Bonneel et al.
/// (2011) for POT.
///
/// Nodes: sources `0..m1`, sinks `m1..m1+m2`, and an artificial `root`. Real arc
/// `e = i * m2 + j` (`e < n_real`) goes from source `i` to sink `m1 + j`; artificial arc
/// `n_real + u` joins node `u` and the root (`u -> root`, cost 0, for a source;
/// `root -> u`, cost `art_cost` = big M, for a sink). The initial basis is the star of
/// artificial arcs, which is feasible and strongly feasible.
///
/// The basis is a spanning tree stored as parent/thread/reverse-thread/subtree-size/
/// last-successor arrays (the "augmented threaded index" of Glover, Klingman & Stutz
/// 1974).
/// Since real arcs are uncapacitated and artificial arcs never re-enter, every
/// non-tree arc has zero flow, so the flow is kept per node: `flow[u]` is the flow on
/// `pred[u]`, the tree arc joining `u` to `parent[u]` (no `O(n1 n2)` flow or state
/// array). An arc is in the tree iff it is `pred` of one of its ends.
///
/// Potentials follow LEMON: reduced cost of `s -> t` is `c + pi[s] - pi[t]`, zero on
/// tree arcs, so `f_i = -pi[i]`, `g_j = pi[m1 + j]` is the transport dual.
struct NetworkSimplex<'c> {
    m1: usize,
    m2: usize,
    n_real: usize,
    root: usize,
    cost: &'c [f64],
    art_cost: f64,
    supply: Vec<f64>,

    pi: Vec<f64>,
    parent: Vec<usize>,
    pred: Vec<usize>,
    /// `true` if `pred[u]` points from `u` up to `parent[u]`.
    fwd: Vec<bool>,
    flow: Vec<f64>,
    thread: Vec<usize>,
    rev_thread: Vec<usize>,
    succ_num: Vec<usize>,
    last_succ: Vec<usize>,
    dirty_revs: Vec<usize>,

    // Block-search cursor, as (source row, sink column) of the next arc to price.
    next_row: usize,
    next_col: usize,
    block_size: usize,

    // State of the current pivot.
    in_arc: usize,
    join: usize,
    u_in: usize,
    v_in: usize,
    u_out: usize,
    delta: f64,

    iterations: usize,
}

impl<'c> NetworkSimplex<'c> {
    /// Builds the initial strongly feasible basis: every node hangs from the root by
    /// its artificial arc, carrying its whole supply (all supplies are positive here).
    fn new(cost: &'c [f64], a: &[f64], b: &[f64], art_cost: f64) -> Self {
        let (m1, m2) = (a.len(), b.len());
        let n = m1 + m2;
        let root = n;
        let n_real = m1 * m2;
        let mut s = NetworkSimplex {
            m1,
            m2,
            n_real,
            root,
            cost,
            art_cost,
            supply: a
                .iter()
                .copied()
                .chain(b.iter().map(|&x| -x))
                .chain([0.0])
                .collect(),
            pi: vec![0.0; n + 1],
            parent: vec![root; n + 1],
            pred: vec![NONE; n + 1],
            fwd: vec![false; n + 1],
            flow: vec![0.0; n + 1],
            thread: vec![0; n + 1],
            rev_thread: vec![0; n + 1],
            succ_num: vec![1; n + 1],
            last_succ: vec![0; n + 1],
            dirty_revs: Vec::new(),
            next_row: 0,
            next_col: 0,
            // LEMON's BLOCK_SIZE_FACTOR = 1: blocks of sqrt(#arcs), at least 10.
            block_size: ((n_real as f64).sqrt() as usize).max(10),
            in_arc: NONE,
            join: NONE,
            u_in: NONE,
            v_in: NONE,
            u_out: NONE,
            delta: 0.0,
            iterations: 0,
        };
        s.parent[root] = NONE;
        s.thread[root] = 0;
        s.rev_thread[0] = root;
        s.succ_num[root] = n + 1;
        s.last_succ[root] = root - 1;
        for u in 0..n {
            s.pred[u] = n_real + u;
            s.thread[u] = u + 1;
            s.rev_thread[u + 1] = u;
            s.last_succ[u] = u;
            if u < m1 {
                s.fwd[u] = true;
                s.pi[u] = 0.0;
                s.flow[u] = a[u];
            } else {
                s.fwd[u] = false;
                s.pi[u] = art_cost;
                s.flow[u] = b[u - m1];
            }
        }
        s
    }

    fn arc_source(&self, e: usize) -> usize {
        if e < self.n_real {
            e / self.m2
        } else if e - self.n_real < self.m1 {
            e - self.n_real
        } else {
            self.root
        }
    }

    fn arc_target(&self, e: usize) -> usize {
        if e < self.n_real {
            self.m1 + e % self.m2
        } else if e - self.n_real < self.m1 {
            self.root
        } else {
            e - self.n_real
        }
    }

    fn arc_cost(&self, e: usize) -> f64 {
        if e < self.n_real {
            self.cost[e]
        } else if e - self.n_real < self.m1 {
            0.0
        } else {
            self.art_cost
        }
    }

    /// Pivots until no arc prices out. Every `refresh_every` pivots the potentials are
    /// recomputed from the tree, because LEMON's incremental update adds a shift to a
    /// whole subtree per pivot and the rounding errors (of the order of the big-M
    /// potentials early on) would otherwise accumulate; optimality is only declared
    /// on freshly computed potentials.
    fn run(&mut self, max_iter: usize) -> Result<(), EmdError> {
        let refresh_every = (self.root / 4).max(64);
        let mut since_refresh = 0usize;
        loop {
            if !self.find_entering_arc() {
                if since_refresh == 0 {
                    return Ok(());
                }
                self.refresh_potentials();
                since_refresh = 0;
                continue;
            }
            if self.iterations >= max_iter {
                return Err(EmdError::MaxIterations {
                    iterations: self.iterations,
                });
            }
            self.iterations += 1;
            self.find_join_node();
            self.find_leaving_arc();
            self.change_flow();
            self.update_tree_structure();
            self.update_potential();
            since_refresh += 1;
            if since_refresh >= refresh_every {
                self.refresh_potentials();
                since_refresh = 0;
            }
        }
    }

    /// Block search pivot rule (Grigoriadis 1986; LEMON's `BlockSearchPivotRule`):
    /// price the arcs cyclically in blocks and enter the most negative arc of the
    /// first block that has an improving one. Arcs are visited row by row so that the
    /// inner loop streams one row of costs against the sink potentials.
    fn find_entering_arc(&mut self) -> bool {
        let (m1, m2) = (self.m1, self.m2);
        let pi_src = &self.pi[..m1];
        let pi_snk = &self.pi[m1..m1 + m2];
        let pred_src = &self.pred[..m1];
        let pred_snk = &self.pred[m1..m1 + m2];
        let (mut i, mut j) = (self.next_row, self.next_col);
        let mut remaining = self.n_real; // at most one full sweep
        let mut cnt = self.block_size;
        let mut min = 0.0f64;
        let mut best = NONE;
        while remaining > 0 {
            let end = m2.min(j + cnt).min(j + remaining);
            let row = &self.cost[i * m2..(i + 1) * m2];
            let pi_i = pi_src[i];
            for jj in j..end {
                let rc = row[jj] + pi_i - pi_snk[jj];
                if rc < min {
                    let e = i * m2 + jj;
                    // Tree arcs price at zero up to rounding; never let noise pick one.
                    if pred_src[i] != e && pred_snk[jj] != e {
                        min = rc;
                        best = e;
                    }
                }
            }
            let len = end - j;
            remaining -= len;
            cnt -= len;
            j = end;
            if j == m2 {
                j = 0;
                i += 1;
                if i == m1 {
                    i = 0;
                }
            }
            if cnt == 0 || remaining == 0 {
                if best != NONE {
                    let (s, t) = (best / m2, m1 + best % m2);
                    let scale = self.cost[best]
                        .abs()
                        .max(self.pi[s].abs())
                        .max(self.pi[t].abs());
                    if min < -RC_RTOL * scale {
                        self.in_arc = best;
                        self.next_row = i;
                        self.next_col = j;
                        return true;
                    }
                }
                min = 0.0;
                best = NONE;
                cnt = self.block_size;
            }
        }
        false
    }

    /// The apex of the pivot cycle: the deepest common ancestor of the entering arc's
    /// ends, found by climbing from the end with the smaller subtree.
    fn find_join_node(&mut self) {
        let mut u = self.arc_source(self.in_arc);
        let mut v = self.arc_target(self.in_arc);
        while u != v {
            if self.succ_num[u] < self.succ_num[v] {
                u = self.parent[u];
            } else {
                v = self.parent[v];
            }
        }
        self.join = u;
    }

    /// Ratio test with Cunningham's rule (1976): among the arcs that block the
    /// augmentation, the leaving arc is the last one met when walking the cycle in its
    /// orientation from the apex. This keeps the tree strongly feasible (every
    /// zero-flow tree arc can push flow towards the root), which rules out cycling in
    /// degenerate pivots.
    ///
    /// The comparisons are exact on purpose. Flows only change by `+/- delta` with
    /// `delta` the minimum blocking flow, and in IEEE arithmetic `x - y >= 0` whenever
    /// `x >= y`, with equality iff `x == y`: flows never go negative, and the arcs that
    /// reach zero are exactly the tied ones, so strong feasibility holds for the
    /// floating-point flows themselves. A tolerance here would either break
    /// conservation (flows snapped to zero) or that invariant (near-ties treated as
    /// ties). Rounding-level flows are cleaned up once, in `final_flows`.
    fn find_leaving_arc(&mut self) {
        // Real arcs start at zero flow and are uncapacitated, so the cycle pushes flow
        // along the entering arc, from its source `first` to its target `second`.
        let first = self.arc_source(self.in_arc);
        let second = self.arc_target(self.in_arc);
        let join = self.join;
        let mut delta = f64::INFINITY;
        let mut u_out = NONE;
        let mut from_first = true;
        // Cycle runs down from the apex to `first`: tree arcs pointing up lose flow.
        // Strict `<` keeps the blocking arc closest to `first`, i.e. the last one met.
        let mut u = first;
        while u != join {
            if self.fwd[u] && self.flow[u] < delta {
                delta = self.flow[u];
                u_out = u;
            }
            u = self.parent[u];
        }
        // Cycle runs up from `second` to the apex: tree arcs pointing down lose flow.
        // `<=` keeps the blocking arc closest to the apex, which is met after any arc
        // of the first half.
        u = second;
        while u != join {
            if !self.fwd[u] && self.flow[u] <= delta {
                delta = self.flow[u];
                u_out = u;
                from_first = false;
            }
            u = self.parent[u];
        }
        // There is no directed cycle in this network (sources only send, sinks only
        // receive), so some cycle arc always blocks.
        assert!(
            u_out != NONE,
            "network simplex: unbounded pivot cycle (internal error)"
        );
        self.delta = delta;
        self.u_out = u_out;
        if from_first {
            self.u_in = first;
            self.v_in = second;
        } else {
            self.u_in = second;
            self.v_in = first;
        }
    }

    /// Augments `delta` units around the cycle (on the old tree).
    fn change_flow(&mut self) {
        let delta = self.delta;
        if delta > 0.0 {
            let join = self.join;
            let mut u = self.arc_source(self.in_arc);
            while u != join {
                if self.fwd[u] {
                    self.flow[u] -= delta;
                } else {
                    self.flow[u] += delta;
                }
                u = self.parent[u];
            }
            u = self.arc_target(self.in_arc);
            while u != join {
                if self.fwd[u] {
                    self.flow[u] += delta;
                } else {
                    self.flow[u] -= delta;
                }
                u = self.parent[u];
            }
        }
    }

    /// Exchanges the leaving arc `pred[u_out]` for the entering arc in the threaded
    /// tree: the subtree hanging below the leaving arc is re-rooted at `u_in` and
    /// hung from `v_in`, reversing the stem `u_in .. u_out` (LEMON's
    /// `updateTreeStructure`, O(size of the moved subtree + depth)).
    fn update_tree_structure(&mut self) {
        let (u_in, v_in, u_out, join) = (self.u_in, self.v_in, self.u_out, self.join);
        let old_rev_thread = self.rev_thread[u_out];
        let old_succ_num = self.succ_num[u_out];
        let old_last_succ = self.last_succ[u_out];
        let v_out = self.parent[u_out];

        // Splice the thread: the stem nodes, each followed by its own subtree minus
        // the part already moved, are inserted after v_in.
        let mut u = self.last_succ[u_in];
        let mut right = self.thread[u];
        // When u_out's subtree directly follows v_in in the thread (then join ==
        // v_out), the node after it is the one to reconnect.
        let last = if old_rev_thread == v_in {
            self.thread[self.last_succ[u_out]]
        } else {
            self.thread[v_in]
        };
        self.thread[v_in] = u_in;
        self.dirty_revs.clear();
        self.dirty_revs.push(v_in);
        let mut stem = u_in;
        let mut par_stem = v_in;
        while stem != u_out {
            let new_stem = self.parent[stem];
            self.thread[u] = new_stem;
            self.dirty_revs.push(u);
            // Cut stem's subtree out of the thread.
            let w = self.rev_thread[stem];
            self.thread[w] = right;
            self.rev_thread[right] = w;
            // Reverse the parent link and move on.
            self.parent[stem] = par_stem;
            par_stem = stem;
            stem = new_stem;
            u = if self.last_succ[stem] == self.last_succ[par_stem] {
                self.rev_thread[par_stem]
            } else {
                self.last_succ[stem]
            };
            right = self.thread[u];
        }
        self.parent[u_out] = par_stem;
        self.thread[u] = last;
        self.rev_thread[last] = u;
        self.last_succ[u_out] = u;
        if old_rev_thread != v_in {
            self.thread[old_rev_thread] = right;
            self.rev_thread[right] = old_rev_thread;
        }
        for k in 0..self.dirty_revs.len() {
            let d = self.dirty_revs[k];
            let t = self.thread[d];
            self.rev_thread[t] = d;
        }

        // Along the reversed stem each node takes over the arc (and its flow) of the
        // node that is now its parent; subtree sizes and last successors follow.
        let mut tmp_sc = 0usize;
        let tmp_ls = self.last_succ[u_out];
        u = u_out;
        while u != u_in {
            let w = self.parent[u];
            self.pred[u] = self.pred[w];
            self.fwd[u] = !self.fwd[w];
            self.flow[u] = self.flow[w];
            tmp_sc += self.succ_num[u] - self.succ_num[w];
            self.succ_num[u] = tmp_sc;
            self.last_succ[w] = tmp_ls;
            u = w;
        }
        self.pred[u_in] = self.in_arc;
        self.fwd[u_in] = u_in == self.arc_source(self.in_arc);
        self.flow[u_in] = self.delta;
        self.succ_num[u_in] = old_succ_num;

        // Last successors above v_in and v_out, up to the apex at most.
        let (up_limit_in, up_limit_out) = if self.last_succ[join] == v_in {
            (NONE, join)
        } else {
            (join, NONE)
        };
        let ls_out = self.last_succ[u_out];
        u = v_in;
        while u != up_limit_in && u != NONE && self.last_succ[u] == v_in {
            self.last_succ[u] = ls_out;
            u = self.parent[u];
        }
        let replacement = if join != old_rev_thread && v_in != old_rev_thread {
            old_rev_thread
        } else {
            ls_out
        };
        u = v_out;
        while u != up_limit_out && u != NONE && self.last_succ[u] == old_last_succ {
            self.last_succ[u] = replacement;
            u = self.parent[u];
        }

        // Subtree sizes between the two attachment points and the apex.
        u = v_in;
        while u != join {
            self.succ_num[u] += old_succ_num;
            u = self.parent[u];
        }
        u = v_out;
        while u != join {
            self.succ_num[u] -= old_succ_num;
            u = self.parent[u];
        }
    }

    /// Makes the entering arc tight by shifting the potentials of the moved subtree
    /// (the only ones whose tree path to the root changed).
    fn update_potential(&mut self) {
        let (u_in, v_in) = (self.u_in, self.v_in);
        let c = self.arc_cost(self.in_arc);
        let sigma = if self.fwd[u_in] {
            self.pi[v_in] - self.pi[u_in] - c
        } else {
            self.pi[v_in] - self.pi[u_in] + c
        };
        let end = self.thread[self.last_succ[u_in]];
        let mut u = u_in;
        while u != end {
            self.pi[u] += sigma;
            u = self.thread[u];
        }
    }

    /// Recomputes all potentials from the tree in thread (preorder) order.
    ///
    /// If all arcs at the root are of the same kind, their cost is a common offset of
    /// every potential and is dropped, so the potentials stay of the size of the real
    /// costs instead of the big M. That is the usual case near optimality: a zero-flow
    /// `root -> sink` arc would break strong feasibility, so only the rounding-level
    /// mass imbalance can keep such an arc, and source arcs cost 0. Only real arcs are
    /// ever priced, so a common offset changes nothing.
    fn refresh_potentials(&mut self) {
        let root = self.root;
        let mut has_src = false;
        let mut has_snk = false;
        for u in 0..root {
            if self.parent[u] == root {
                if u < self.m1 {
                    has_src = true;
                } else {
                    has_snk = true;
                }
            }
        }
        let drop_offset = !(has_src && has_snk);
        self.pi[root] = 0.0;
        let mut u = self.thread[root];
        while u != root {
            let p = self.parent[u];
            let c = if p == root && drop_offset {
                0.0
            } else {
                self.arc_cost(self.pred[u])
            };
            self.pi[u] = if self.fwd[u] {
                self.pi[p] - c
            } else {
                self.pi[p] + c
            };
            u = self.thread[u];
        }
    }

    /// Flows of the final basis recomputed from the supplies: the flow on `pred[u]` is
    /// the net supply of `u`'s subtree. Unlike the incrementally updated flows, whose
    /// rounding errors grow with the number of pivots, these satisfy conservation to
    /// rounding. Arcs whose incremental flow is exactly zero are degenerate (their
    /// subtree balances exactly in exact arithmetic) and are kept at zero, so rounding
    /// noise does not show up as spurious plan entries; small negative noise on the
    /// others is clamped.
    fn final_flows(&self) -> Vec<f64> {
        let root = self.root;
        let mut order = Vec::with_capacity(root);
        let mut u = self.thread[root];
        while u != root {
            order.push(u);
            u = self.thread[u];
        }
        let mut acc = self.supply.clone();
        let mut out = vec![0.0; root + 1];
        for &u in order.iter().rev() {
            let p = self.parent[u];
            acc[p] += acc[u];
            let through = if self.fwd[u] { acc[u] } else { -acc[u] };
            out[u] = if self.flow[u] == 0.0 {
                0.0
            } else {
                through.max(0.0)
            };
        }
        out
    }
}
