//! Property tests of the solvers over random supports (dense point clouds, 1-D and 2-D
//! grids), sizes N, numbers of atoms S and of barycenters M, regularizations γ, weights
//! and atoms.
//!
//! Error model behind the tolerances (ε = machine epsilon of the precision):
//! * One kernel application perturbs its result relatively by at most
//!   `δ_K = ε·((d + 6)·3d + d + 1 + N + Σ n_a)` (derivation in `tests/kernels.rs`); in the
//!   log domain the perturbation is absolute on logarithms (= relative on scalings),
//!   `ε·(2(d + 6)(Λ + ln N + 1) + N + 8)` where Λ bounds the magnitudes of the log
//!   scalings involved.
//! * One barycenter iteration applies `K` twice and takes a weighted geometric mean, so it
//!   perturbs the scalings relatively by `δ_it = 2δ_K + ε(4 + 2Λ)`.
//! * The Sinkhorn maps are non-expansive in Hilbert's projective metric (Birkhoff), so
//!   perturbations made at each iteration add up without growing: after `L` iterations
//!   the relative error is at most `L·δ_it`.
//! * Unbalanced (`κ = ρ/(ρ+γ)`): the final power `1/(1-κ) = 1 + ρ/γ` amplifies the
//!   rounding of the weighted power mean, adding `ε(S + 4)(1 + ρ/γ)` per iteration.
//! * Heavy ball (τ < 0): an extrapolation `a^τ ã^{1-τ}` amplifies the perturbation made
//!   in its step by `1 + 2|τ|`.
//! * Converged runs may stop one iteration apart; one more iteration from a state whose
//!   marginal error is `e` moves the barycenter by at most `e (1 + e)` in L¹ (proved in
//!   `warm_start_converged_state_is_a_fixed_point`).

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wassdl::*;

const EPS: f64 = f64::EPSILON;
const EPS32: f64 = f32::EPSILON as f64;

/// The support the histograms live on.
#[derive(Clone, Debug)]
enum Support {
    /// Regular grid in POT units (cost diameter = number of axes).
    Grid(Vec<usize>),
    /// `n` random points in `[0,1]^dim`, squared Euclidean cost divided by `dim`.
    Points(usize, usize),
}

impl Support {
    fn n(&self) -> usize {
        match self {
            Support::Grid(s) => s.iter().product(),
            Support::Points(n, _) => *n,
        }
    }
    /// Number of separable axes (1 for a dense cloud, whose single GEMM sums N terms).
    fn d(&self) -> usize {
        match self {
            Support::Grid(s) => s.len(),
            Support::Points(..) => 1,
        }
    }
    fn sum_axes(&self) -> usize {
        match self {
            Support::Grid(s) => s.iter().sum(),
            Support::Points(n, _) => *n,
        }
    }
}

fn support_strategy(max1: usize, max2: usize, maxp: usize) -> impl Strategy<Value = Support> {
    prop_oneof![
        (2usize..=max1).prop_map(|n| Support::Grid(vec![n])),
        (2usize..=max2, 2usize..=max2).prop_map(|(a, b)| Support::Grid(vec![a, b])),
        (2usize..=maxp, 1usize..=3).prop_map(|(n, d)| Support::Points(n, d)),
    ]
}

/// A kernel on the support (grid: the separable kernel), and its cost matrix.
struct Setup {
    kernel: Box<dyn Kernel<f64>>,
    cost: Batch<f64>,
    gamma: f64,
}

/// `gamma_rel` is γ in units of the cost diameter.
fn setup(support: &Support, gamma_rel: f64, rng: &mut StdRng) -> Setup {
    match support {
        Support::Grid(shape) => {
            let grid = Grid::new(shape).unwrap();
            let gamma = gamma_rel * shape.len() as f64;
            Setup {
                kernel: Box::new(GridKernel::<f64>::new(&grid, gamma).unwrap()),
                cost: grid.cost_matrix(),
                gamma,
            }
        }
        Support::Points(n, dim) => {
            let pts = Batch::from_fn(*n, *dim, |_, _| rng.random::<f64>());
            let cost = Batch::from_fn(*n, *n, |i, j| {
                (0..*dim).fold(0.0, |acc, d| {
                    let t = pts.get(i, d) - pts.get(j, d);
                    acc + t * t
                }) / *dim as f64
            });
            let gamma = gamma_rel;
            Setup {
                kernel: Box::new(DenseKernel::new(cost.view(), gamma).unwrap()),
                cost,
                gamma,
            }
        }
    }
}

/// `s` random histograms on `n` bins (peaky: entries U³), a fraction zero if `zeros`.
fn histograms(rng: &mut StdRng, n: usize, s: usize, zeros: bool) -> Batch<f64> {
    let mut h = Batch::from_fn(n, s, |_, _| {
        if zeros && rng.random_bool(0.3) {
            0.0
        } else {
            rng.random::<f64>().powi(3) + 1e-3
        }
    });
    for j in 0..s {
        let i = rng.random_range(0..n);
        h.set(i, j, h.get(i, j) + 0.5);
        let t: f64 = h.col(j).iter().sum();
        h.col_mut(j).iter_mut().for_each(|x| *x /= t);
    }
    h
}

/// `m` random weight vectors over `s` atoms (some zero, never all).
fn weights(rng: &mut StdRng, s: usize, m: usize) -> Batch<f64> {
    let mut w = Batch::from_fn(s, m, |_, _| {
        if rng.random_bool(0.2) {
            0.0
        } else {
            rng.random::<f64>()
        }
    });
    for j in 0..m {
        let i = rng.random_range(0..s);
        w.set(i, j, w.get(i, j) + 0.1);
        let t: f64 = w.col(j).iter().sum();
        w.col_mut(j).iter_mut().for_each(|x| *x /= t);
    }
    w
}

/// Largest |x| over finite entries.
fn max_abs_finite(x: &[f64]) -> f64 {
    x.iter()
        .filter(|v| v.is_finite())
        .fold(0.0, |a, v| a.max(v.abs()))
}

/// Λ: the largest magnitude of a log scaling (log a, log b, log p, log d) of a solution.
fn log_scale(out: &Barycenters<f64>, atoms: &Batch<f64>) -> f64 {
    let sc = out.scalings.to_domain(true);
    let lp = out.p.map(f64::ln);
    let ld = atoms.map(f64::ln);
    [
        sc.a.as_slice(),
        sc.b.as_slice(),
        lp.as_slice(),
        ld.as_slice(),
    ]
    .iter()
    .map(|s| max_abs_finite(s))
    .fold(0.0, f64::max)
}

/// Per-iteration relative perturbation `δ_it` of the module docs, scaling domain.
fn delta_it(eps: f64, sup: &Support, lam: f64) -> f64 {
    let d = sup.d() as f64;
    let dk = eps * ((d + 6.0) * 3.0 * d + d + 1.0 + sup.n() as f64 + sup.sum_axes() as f64);
    2.0 * dk + eps * (4.0 + 2.0 * lam)
}

/// Per-iteration perturbation in the log domain (absolute on logs).
fn delta_it_log(eps: f64, sup: &Support, lam: f64) -> f64 {
    let d = sup.d() as f64;
    let n = sup.n() as f64;
    let dk = eps * (2.0 * (d + 6.0) * (lam + n.ln() + 1.0) + n + sup.sum_axes() as f64 + 8.0);
    2.0 * dk + eps * (4.0 + 2.0 * lam)
}

fn l1(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum()
}

/// Largest L¹ distance between matching columns.
fn l1_cols(a: &Batch<f64>, b: &Batch<f64>) -> f64 {
    (0..a.cols())
        .map(|j| l1(a.col(j), b.col(j)))
        .fold(0.0, f64::max)
}

/// Largest entrywise relative difference.
fn max_rel(a: &Batch<f64>, b: &Batch<f64>) -> f64 {
    a.as_slice()
        .iter()
        .zip(b.as_slice())
        .map(|(x, y)| if x == y { 0.0 } else { (x - y).abs() / y.abs() })
        .fold(0.0, f64::max)
}

/// With `WASSDL_REPORT=1`, prints a measured error (collected for the test report).
fn report(what: &str, value: f64) {
    if std::env::var_os("WASSDL_REPORT").is_some() {
        eprintln!("REPORT {what} {value:e}");
    }
}

/// The variants of the generalized iteration.
#[derive(Clone, Copy, Debug)]
enum Variant {
    Plain,
    HeavyBall(f64),
    Unbalanced(f64),
}

impl Variant {
    fn name(&self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::HeavyBall(_) => "heavy_ball",
            Variant::Unbalanced(_) => "unbalanced",
        }
    }
}

fn variant_strategy() -> impl Strategy<Value = Variant> {
    prop_oneof![
        Just(Variant::Plain),
        (-0.9f64..-0.05).prop_map(Variant::HeavyBall),
        // ρ/γ over four decades.
        (-1.0f64..3.0).prop_map(|r| Variant::Unbalanced(10f64.powf(r))),
    ]
}

fn config(v: Variant, gamma: f64, stop: Stop) -> BarycenterConfig {
    let c = BarycenterConfig {
        stop,
        ..Default::default()
    };
    match v {
        Variant::Plain => c,
        Variant::HeavyBall(t) => c.tau(t),
        Variant::Unbalanced(r) => c.rho(r * gamma),
    }
}

/// Relative rounding per iteration for a variant (module docs).
fn variant_delta(v: Variant, base: f64, eps: f64, s: usize) -> f64 {
    match v {
        Variant::Plain => base,
        Variant::HeavyBall(t) => base * (1.0 + 2.0 * t.abs()),
        Variant::Unbalanced(r) => base + eps * (s as f64 + 4.0) * (1.0 + r),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A converged balanced barycenter has unit mass: with the returned state,
    /// `Σp = Σ_j b_j (Kᵀa)_j = aᵀ K b = Σ (a ⊙ K b)`, which is within the marginal error
    /// `e < tol` of `Σ d = 1`; the two sums of N² products differ by `2Nε` relatively.
    #[test]
    fn balanced_barycenter_sums_to_one(
        sup in support_strategy(60, 10, 50),
        s in 1usize..=4,
        m in 1usize..=3,
        gamma_rel in 0.03f64..0.5,
        log in any::<bool>(),
        zeros in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let st = setup(&sup, gamma_rel, &mut rng);
        let n = sup.n();
        let atoms = histograms(&mut rng, n, s, zeros);
        let w = weights(&mut rng, s, m);
        let tol = 1e-10;
        let cfg = BarycenterConfig::tolerance(tol, 50_000).log_domain(log);
        let out = barycenters(st.kernel.as_ref(), &atoms, &w, &cfg, None).unwrap();
        let err = out.error.unwrap();
        prop_assert!(err < tol, "not converged: {} after {}", err, out.iterations);
        // In the log domain the products are exp(u + log K e^v): each term carries
        // ε·(|u| + |v| + X) more, bounded by ε·4Λ.
        let lam = if log { log_scale(&out, &atoms) } else { 0.0 };
        let bound = err + 4.0 * EPS * (n as f64 + 2.0) * (1.0 + 4.0 * lam);
        for (j, sum) in out.p.col_sums().into_iter().enumerate() {
            report("bary_sum_minus_one", (sum - 1.0).abs());
            prop_assert!((sum - 1.0).abs() <= bound, "column {}: Σp - 1 = {:e} > {:e}", j, sum - 1.0, bound);
        }
    }

    /// The separable grid barycenter equals the dense one built from the grid's cost
    /// matrix: `L·δ_it` relative for fixed L; converged runs add the `2·tol` of stopping
    /// one iteration apart.
    #[test]
    fn separable_barycenter_equals_dense(
        shape in prop_oneof![
            (2usize..=40).prop_map(|n| vec![n]),
            (2usize..=8, 2usize..=8).prop_map(|(a, b)| vec![a, b]),
        ],
        s in 1usize..=3,
        m in 1usize..=2,
        l in 1usize..=60,
        gamma_rel in 0.03f64..0.5,
        log in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let grid = Grid::new(&shape).unwrap();
        let gamma = gamma_rel * shape.len() as f64;
        let gk = GridKernel::<f64>::new(&grid, gamma).unwrap();
        let c = grid.cost_matrix::<f64>();
        let dk = DenseKernel::new(c.view(), gamma).unwrap();
        let n = grid.len();
        let atoms = histograms(&mut rng, n, s, true);
        let w = weights(&mut rng, s, m);
        let sup = Support::Grid(shape.clone());
        let cfg = BarycenterConfig::iterations(l).log_domain(log);
        let pg = barycenters(&gk, &atoms, &w, &cfg, None).unwrap();
        let pd = barycenters(&dk, &atoms, &w, &cfg, None).unwrap();
        let lam = log_scale(&pd, &atoms);
        // The separable and the dense Support share the error model with N = n, d axes;
        // the dense side sums N terms, already counted in δ_K.
        let dit = if log { delta_it_log(EPS, &sup, lam) } else { delta_it(EPS, &sup, lam) };
        let rel = max_rel(&pg.p, &pd.p);
        report("sep_vs_dense_bary_rel", rel);
        prop_assert!(rel <= l as f64 * dit, "fixed L={}: rel {:e} > {:e}", l, rel, l as f64 * dit);
        let tol = 1e-11;
        let cfg = BarycenterConfig::tolerance(tol, 50_000).log_domain(log);
        let pg = barycenters(&gk, &atoms, &w, &cfg, None).unwrap();
        let pd = barycenters(&dk, &atoms, &w, &cfg, None).unwrap();
        let it = pg.iterations.max(pd.iterations) as f64;
        let bound = it * dit + 2.0 * tol;
        let dist = l1_cols(&pg.p, &pd.p);
        report("sep_vs_dense_bary_conv_l1", dist);
        prop_assert!(dist <= bound, "converged: L¹ {:e} > {:e}", dist, bound);
    }

    /// Log-domain barycenters equal the scaling-domain ones wherever the latter succeed,
    /// for fixed L and converged, for every variant (plain, heavy ball τ < 0, unbalanced).
    #[test]
    fn log_domain_barycenter_equals_plain(
        sup in support_strategy(50, 8, 40),
        s in 1usize..=3,
        m in 1usize..=2,
        l in 1usize..=40,
        gamma_rel in 0.03f64..0.5,
        variant in variant_strategy(),
        seed in any::<u64>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let st = setup(&sup, gamma_rel, &mut rng);
        let n = sup.n();
        // Heavy ball needs strictly positive atoms (see the ignored
        // `heavy_ball_with_zero_atoms`); the others get zeros too.
        let zeros = !matches!(variant, Variant::HeavyBall(_));
        let atoms = histograms(&mut rng, n, s, zeros);
        let w = weights(&mut rng, s, m);
        let k = st.kernel.as_ref();
        let cfg = config(variant, st.gamma, Stop::Iterations(l));
        let plain = barycenters(k, &atoms, &w, &cfg, None);
        prop_assume!(plain.is_ok(), "scaling domain failed: {:?}", plain.err());
        let plain = plain.unwrap();
        let logd = barycenters(k, &atoms, &w, &cfg.log_domain(true), None).unwrap();
        let lam = log_scale(&logd, &atoms);
        let dit = variant_delta(variant, delta_it_log(EPS, &sup, lam), EPS, s);
        let rel = max_rel(&logd.p, &plain.p);
        report(&format!("log_vs_plain_bary_rel_{}", variant.name()), rel);
        prop_assert!(rel <= l as f64 * dit, "{:?} L={}: rel {:e} > {:e}", variant, l, rel, l as f64 * dit);

        let tol = 1e-11;
        let cfg = config(variant, st.gamma, Stop::Tolerance { tol, max_iter: 50_000 });
        let plain = barycenters(k, &atoms, &w, &cfg, None);
        prop_assume!(plain.is_ok());
        let plain = plain.unwrap();
        let logd = barycenters(k, &atoms, &w, &cfg.log_domain(true), None).unwrap();
        let it = plain.iterations.max(logd.iterations) as f64;
        // Unbalanced stops on the relative sup change of p (≤ tol·max(1, |p|∞) per
        // coordinate, N of them in L¹); balanced on the marginal error (L¹ ≤ tol).
        let stop = match variant {
            Variant::Unbalanced(_) => 2.0 * tol * n as f64,
            _ => 2.0 * tol,
        };
        let mass = plain.p.col_sums().into_iter().fold(1.0, f64::max);
        let bound = it * dit * mass + stop;
        let dist = l1_cols(&logd.p, &plain.p);
        report("log_vs_plain_bary_conv_l1", dist);
        prop_assert!(dist <= bound, "{:?} converged: L¹ {:e} > {:e}", variant, dist, bound);
    }

    /// Heavy ball with τ = 0 (or -0) is the plain iteration, bit for bit, in both domains
    /// and with or without ρ.
    #[test]
    fn heavy_ball_tau_zero_is_plain_bitwise(
        sup in support_strategy(50, 8, 40),
        s in 1usize..=3,
        l in 1usize..=30,
        gamma_rel in 0.03f64..0.5,
        log in any::<bool>(),
        rho in prop::option::of(0.1f64..100.0),
        seed in any::<u64>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let st = setup(&sup, gamma_rel, &mut rng);
        let atoms = histograms(&mut rng, sup.n(), s, true);
        let w = weights(&mut rng, s, 2);
        let mut cfg = BarycenterConfig::iterations(l).log_domain(log);
        if let Some(r) = rho {
            cfg = cfg.rho(r * st.gamma);
        }
        let k = st.kernel.as_ref();
        let base = barycenters(k, &atoms, &w, &cfg, None).unwrap();
        for tau in [0.0, -0.0] {
            let hb = barycenters(k, &atoms, &w, &cfg.tau(tau), None).unwrap();
            prop_assert_eq!(&hb.p, &base.p);
            prop_assert_eq!(&hb.scalings, &base.scalings);
        }
    }

    /// Warm start (section 4.2) is exact resumption: L1 iterations, then L2 more from the
    /// returned scalings, are bit for bit L1 + L2 iterations from the cold start, in every
    /// variant and in both domains.
    #[test]
    fn warm_start_resumes_exactly(
        sup in support_strategy(50, 8, 40),
        s in 1usize..=3,
        m in 1usize..=2,
        l1 in 1usize..=20,
        l2 in 1usize..=20,
        gamma_rel in 0.03f64..0.5,
        variant in variant_strategy(),
        log in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let st = setup(&sup, gamma_rel, &mut rng);
        let zeros = !matches!(variant, Variant::HeavyBall(_));
        let atoms = histograms(&mut rng, sup.n(), s, zeros);
        let w = weights(&mut rng, s, m);
        let k = st.kernel.as_ref();
        let cfg = |l| config(variant, st.gamma, Stop::Iterations(l)).log_domain(log);
        let first = barycenters(k, &atoms, &w, &cfg(l1), None);
        prop_assume!(first.is_ok());
        let first = first.unwrap();
        let resumed = barycenters(k, &atoms, &w, &cfg(l2), Some(&first.scalings)).unwrap();
        let cold = barycenters(k, &atoms, &w, &cfg(l1 + l2), None).unwrap();
        prop_assert_eq!(&resumed.p, &cold.p);
        prop_assert_eq!(&resumed.scalings, &cold.scalings);
        prop_assert_eq!(resumed.iterations, l2);
    }

    /// A converged state is a fixed point: one more iteration from `out.scalings` moves p
    /// by at most the marginal error. Proof: with `r = a ⊙ K b`, the new `a' = a ⊙ d/r`,
    /// so `Σ_j b_j |Kᵀ(a' - a)|_j ≤ Σ_i a_i (Kb)_i |d_i/r_i - 1| = ‖d - r‖₁ = e`, i.e. the
    /// p-weighted relative change of every `Kᵀa_s` is ≤ e; the geometric mean then moves
    /// p by ≤ Σ_s λ_s e_s (1 + e) ≤ e (1 + e) in L¹. Plus one iteration of rounding.
    #[test]
    fn warm_start_converged_state_is_a_fixed_point(
        sup in support_strategy(50, 8, 40),
        s in 1usize..=3,
        m in 1usize..=2,
        gamma_rel in 0.03f64..0.5,
        log in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let st = setup(&sup, gamma_rel, &mut rng);
        let atoms = histograms(&mut rng, sup.n(), s, true);
        let w = weights(&mut rng, s, m);
        let k = st.kernel.as_ref();
        let cfg = BarycenterConfig::tolerance(1e-9, 50_000).log_domain(log);
        let out = barycenters(k, &atoms, &w, &cfg, None).unwrap();
        let e = out.error.unwrap();
        prop_assert!(e < 1e-9);
        let one = BarycenterConfig::iterations(1).log_domain(log);
        let next = barycenters(k, &atoms, &w, &one, Some(&out.scalings)).unwrap();
        let lam = log_scale(&out, &atoms);
        let dit = if log { delta_it_log(EPS, &sup, lam) } else { delta_it(EPS, &sup, lam) };
        let bound = e * (1.0 + e) + dit;
        let dist = l1_cols(&next.p, &out.p);
        report("warm_one_more_l1_over_err", dist / e.max(f64::MIN_POSITIVE));
        prop_assert!(dist <= bound, "one more iteration moved p by {:e} > {:e} (e = {:e})", dist, bound, e);
        // A warm start from the scaling domain into the log domain (and back) is the same
        // state: only the conversion ln/exp (ε·Λ) is added.
        let other = BarycenterConfig::iterations(1).log_domain(!log);
        let next2 = barycenters(k, &atoms, &w, &other, Some(&out.scalings)).unwrap();
        let dist2 = l1_cols(&next2.p, &out.p);
        let dit2 = delta_it_log(EPS, &sup, lam) + EPS * lam;
        prop_assert!(dist2 <= e * (1.0 + e) + dit2, "cross-domain warm start: {:e}", dist2);
    }

    /// The unbalanced barycenter tends to the balanced one as ρ grows: with
    /// `1 - κ = γ/(ρ + γ)`, p_ρ = p_bal + (1 - κ) q + O((1 - κ)²), so in the asymptotic
    /// range the L¹ distance falls like 1/ρ: by the factor 101/1001 ≈ 0.1 from 100γ to
    /// 1000γ. Measured over 1200 draws of this generator: median 0.099, max 0.14. The
    /// remainder grows like q²/p, so bins near zero delay the asymptotic range: CI drew a
    /// 2×2 grid with barycenter bins of 0.003 where the ratio is 0.21 (d·ρ/γ = 0.49 at
    /// 100γ, 1.03 at 1000γ, 1.09 at 10⁴γ), and one where the distance grows from γ to 10γ
    /// (0.493 → 0.555; the expansion says nothing at 1 − κ = 1/2). Both are regression
    /// seeds. So the test asserts what holds for every draw: the distance falls from 100γ
    /// to 1000γ and at least halves (a rate slower than ρ^-0.3 would fail).
    #[test]
    fn unbalanced_tends_to_balanced(
        sup in support_strategy(50, 8, 40),
        s in 2usize..=3,
        gamma_rel in 0.05f64..0.5,
        log in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let st = setup(&sup, gamma_rel, &mut rng);
        let atoms = histograms(&mut rng, sup.n(), s, true);
        let w = weights(&mut rng, s, 1);
        let k = st.kernel.as_ref();
        let tol = 1e-13;
        let bal = barycenters(k, &atoms, &w, &BarycenterConfig::tolerance(tol, 100_000).log_domain(log), None).unwrap();
        let mut dists = vec![];
        for r in [1.0, 10.0, 100.0, 1000.0] {
            let cfg = BarycenterConfig::tolerance(tol, 100_000).rho(r * st.gamma).log_domain(log);
            let out = barycenters(k, &atoms, &w, &cfg, None).unwrap();
            prop_assert!(out.error.unwrap() < tol, "ρ = {}γ did not converge", r);
            dists.push(l1(out.p.col(0), bal.p.col(0)));
        }
        report("unbalanced_dist_1000gamma", dists[3]);
        // Convergence error of each run (≤ N·tol in L¹, times the unbalanced slowdown
        // 1/(1-κ) ≤ 1001) is far below the distances compared.
        let noise = 1001.0 * tol * sup.n() as f64;
        prop_assume!(dists[0] > 1e3 * noise, "atoms too similar: {:?}", dists);
        prop_assert!(dists[3] < dists[2] + noise, "not decreasing: {:?}", dists);
        prop_assert!(dists[3] <= 0.5 * dists[2] + noise, "slower than 1/ρ: {:?}", dists);
    }

    /// A batch of M weight vectors gives the M separate barycenters. Not bit for bit: the
    /// GEMM sums in an order that depends on the number of columns (faer takes a
    /// matrix-vector path for one column), so each application may differ by the two
    /// summations' `2Nε`, already inside `δ_it`; `L·δ_it` relative after L iterations.
    #[test]
    fn batch_equals_separate_calls(
        sup in support_strategy(50, 8, 40),
        s in 1usize..=3,
        m in 2usize..=4,
        l in 1usize..=30,
        gamma_rel in 0.03f64..0.5,
        variant in variant_strategy(),
        log in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let st = setup(&sup, gamma_rel, &mut rng);
        let zeros = !matches!(variant, Variant::HeavyBall(_));
        let atoms = histograms(&mut rng, sup.n(), s, zeros);
        let w = weights(&mut rng, s, m);
        let k = st.kernel.as_ref();
        let cfg = config(variant, st.gamma, Stop::Iterations(l)).log_domain(log);
        let all = barycenters(k, &atoms, &w, &cfg, None);
        prop_assume!(all.is_ok());
        let all = all.unwrap();
        for j in 0..m {
            let wj = Batch::from_vec(s, 1, w.col(j).to_vec());
            let one = barycenters(k, &atoms, &wj, &cfg, None).unwrap();
            let rel = max_rel(&Batch::from_vec(sup.n(), 1, all.p.col(j).to_vec()), &one.p);
            report("batch_vs_single_rel", rel);
            let lam = log_scale(&one, &atoms);
            let base = if log { delta_it_log(EPS, &sup, lam) } else { delta_it(EPS, &sup, lam) };
            let tol = l as f64 * variant_delta(variant, base, EPS, s);
            prop_assert!(rel <= tol, "column {}: {:e} > {:e}", j, rel, tol);
        }
    }

    /// f32 barycenters agree with f64 ones to f32 accuracy: `L·δ_it(ε₃₂)` relative, plus
    /// the rounding of the inputs to f32 (ε₃₂/2 relative on atoms and weights).
    #[test]
    fn f32_barycenter_matches_f64(
        sup in support_strategy(50, 8, 40),
        s in 1usize..=3,
        l in 1usize..=30,
        gamma_rel in 0.05f64..0.5,
        variant in variant_strategy(),
        log in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let st = setup(&sup, gamma_rel, &mut rng);
        let zeros = !matches!(variant, Variant::HeavyBall(_));
        let atoms = histograms(&mut rng, sup.n(), s, zeros);
        let w = weights(&mut rng, s, 2);
        let (a32, w32) = (atoms.cast::<f32>(), w.cast::<f32>());
        let (atoms, w) = (a32.cast::<f64>(), w32.cast::<f64>());
        let g32 = st.gamma as f32;
        let k32: Box<dyn Kernel<f32>> = match &sup {
            Support::Grid(shape) => Box::new(GridKernel::<f32>::new(&Grid::new(shape).unwrap(), g32).unwrap()),
            Support::Points(..) => Box::new(DenseKernel::new(st.cost.cast::<f32>().view(), g32).unwrap()),
        };
        let k64: Box<dyn Kernel<f64>> = match &sup {
            Support::Grid(shape) => Box::new(GridKernel::<f64>::new(&Grid::new(shape).unwrap(), g32 as f64).unwrap()),
            Support::Points(..) => Box::new(DenseKernel::new(st.cost.cast::<f32>().cast::<f64>().view(), g32 as f64).unwrap()),
        };
        let cfg = config(variant, g32 as f64, Stop::Iterations(l)).log_domain(log);
        let p64 = barycenters(k64.as_ref(), &atoms, &w, &cfg, None);
        let p32 = barycenters(k32.as_ref(), &a32, &w32, &cfg, None);
        prop_assume!(p64.is_ok() && p32.is_ok());
        let p64 = p64.unwrap();
        let p32 = p32.unwrap();
        let lam = log_scale(&p64, &atoms);
        let base = if log { delta_it_log(EPS32, &sup, lam) } else { delta_it(EPS32, &sup, lam) };
        let dit = variant_delta(variant, base, EPS32, s);
        let rel = max_rel(&p32.p.cast::<f64>(), &p64.p);
        report("f32_vs_f64_bary_rel", rel);
        prop_assert!(rel <= l as f64 * dit, "{:?} L={}: {:e} > {:e}", variant, l, rel, l as f64 * dit);
    }
}

/// Sum of `f(T_ij, C_ij)` over a plan.
fn plan_sum(t: &Batch<f64>, c: &Batch<f64>, f: impl Fn(f64, f64) -> f64) -> f64 {
    t.as_slice()
        .iter()
        .zip(c.as_slice())
        .map(|(&t, &c)| f(t, c))
        .sum()
}

fn osc(x: &[f64]) -> f64 {
    let fin = x.iter().filter(|v| v.is_finite());
    let mx = fin.clone().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
    let mn = fin.fold(f64::INFINITY, |a, &b| a.min(b));
    if mx >= mn {
        mx - mn
    } else {
        0.0
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Sinkhorn (scaling and log domain): the plans have marginals a (within the reported
    /// error e: the final v-update maps the column error e to a row error ≤ e) and b
    /// (exactly, up to rounding); the objective equals the primal value of the plan and
    /// the dual value of the potentials; ⟨T, C⟩ ≥ 0 equals `transport_cost`; a symmetric
    /// cost gives OT(a, b) = OT(b, a); both domains agree; a batch equals single calls.
    #[test]
    fn sinkhorn_properties(
        sup in support_strategy(40, 6, 30),
        b in 1usize..=3,
        gamma_rel in 0.03f64..0.5,
        zeros in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let st = setup(&sup, gamma_rel, &mut rng);
        let n = sup.n();
        let (a, bb) = (histograms(&mut rng, n, b, zeros), histograms(&mut rng, n, b, zeros));
        let k = st.kernel.as_ref();
        let c = &st.cost;
        let gamma = st.gamma;
        let cmax = max_abs_finite(c.as_slice());
        let tol = 1e-11;
        let mut costs = vec![];
        for log in [false, true] {
            let cfg = SinkhornConfig {
                log_domain: log,
                stop: Stop::Tolerance { tol, max_iter: 100_000 },
                plan: true,
            };
            let ot = sinkhorn(k, &a, &bb, &cfg, None).unwrap();
            let e = ot.error;
            prop_assert!(e < tol, "not converged: {:e}", e);
            let plans = ot.plans.as_ref().unwrap();
            for (j, t) in plans.iter().enumerate() {
                let (f, g) = (ot.f.col(j), ot.g.col(j));
                let fmax = max_abs_finite(f) + max_abs_finite(g);
                // Every plan entry exp((f + g - C)/γ) carries ε·(|f| + |g| + C)/γ; the
                // sums add Nε.
                let rnd = EPS * (4.0 * (fmax + cmax) / gamma + 2.0 * n as f64 + 16.0);
                let rows: Vec<f64> = (0..n).map(|i| (0..n).map(|q| t.get(i, q)).sum()).collect();
                let cols: Vec<f64> = (0..n).map(|q| t.col(q).iter().sum()).collect();
                prop_assert!(l1(&rows, a.col(j)) <= e + rnd, "rows: {:e}", l1(&rows, a.col(j)));
                prop_assert!(l1(&cols, bb.col(j)) <= rnd, "cols: {:e}", l1(&cols, bb.col(j)));
                let tc = plan_sum(t, c, |t, c| t * c);
                let tc_rel = (ot.transport_cost[j] - tc).abs() / tc.max(f64::MIN_POSITIVE);
                report("sinkhorn_transport_cost_rel", tc_rel);
                prop_assert!(ot.transport_cost[j] >= 0.0, "negative transport cost");
                prop_assert!(tc_rel <= rnd, "⟨T,C⟩ {} vs {}", ot.transport_cost[j], tc);
                // Primal: ⟨T,C⟩ + γ Σ T (log T - 1) with log T from the potentials.
                let mut primal = tc;
                for (q, &gq) in g.iter().enumerate() {
                    for (i, &fi) in f.iter().enumerate() {
                        let tij = t.get(i, q);
                        if tij > 0.0 {
                            primal += gamma * tij * ((fi + gq - c.get(i, q)) / gamma - 1.0);
                        }
                    }
                }
                // Σ|terms| ≤ (|f| + |g| + C + γ)·ΣT, summed over N² terms.
                let scale = fmax + cmax + gamma;
                let prim_tol = EPS * scale * (n * n) as f64 * 2.0 + rnd * scale;
                prop_assert!((ot.cost[j] - primal).abs() <= prim_tol,
                    "objective {} vs primal {} (tol {:e})", ot.cost[j], primal, prim_tol);
                // Dual: <f,a> + <g,b> - γ Σ exp((f + g - C)/γ) = cost + <f, a - r> (c = b),
                // and |<f, a - r>| ≤ osc(f)·‖a - r‖₁/2 ≤ osc(f)·e/2 since Σa = Σr (their
                // rounding, Nε·|f|, is inside `prim_tol`).
                let dot = |p: &[f64], h: &[f64]| -> f64 {
                    p.iter().zip(h).filter(|(_, &h)| h > 0.0).map(|(p, h)| p * h).sum()
                };
                let mass: f64 = t.as_slice().iter().sum();
                let dual = dot(f, a.col(j)) + dot(g, bb.col(j)) - gamma * mass;
                let dual_tol = osc(f) * e / 2.0 + prim_tol;
                report("sinkhorn_dual_gap", (dual - ot.cost[j]).abs());
                prop_assert!((dual - ot.cost[j]).abs() <= dual_tol,
                    "dual {} vs objective {} (tol {:e})", dual, ot.cost[j], dual_tol);
            }
            // Each objective is within osc(f*)·e/2 of the exact OT value (the dual bound
            // with the optimal f*, whose oscillation we bound by 2·osc(f) since f* ≈ f).
            let oscs: Vec<f64> = (0..b).map(|j| osc(ot.f.col(j))).collect();
            costs.push((ot.cost.clone(), oscs));
            // Symmetric cost: OT(b, a) = OT(a, b).
            let rev = sinkhorn(k, &bb, &a, &cfg, None).unwrap();
            for j in 0..b {
                let bound = (osc(ot.f.col(j)) + osc(rev.f.col(j))) * tol
                    + 4.0 * EPS * n as f64 * (1.0 + ot.cost[j].abs()) * (1.0 + cmax / gamma);
                prop_assert!((rev.cost[j] - ot.cost[j]).abs() <= bound,
                    "OT(a,b) = {} but OT(b,a) = {} (tol {:e})", ot.cost[j], rev.cost[j], bound);
            }
            // Batch = single calls (fixed iterations, so stopping is identical), up to the
            // column-count-dependent GEMM summation order (see `batch_equals_separate_calls`):
            // L·δ_it relative on the scalings, i.e. γ·L·δ_it absolute on the potentials.
            let l = 25;
            let fixed = SinkhornConfig { log_domain: log, stop: Stop::Iterations(l), plan: false };
            let all = sinkhorn(k, &a, &bb, &fixed, None).unwrap();
            for j in 0..b {
                let aj = Batch::from_vec(n, 1, a.col(j).to_vec());
                let bj = Batch::from_vec(n, 1, bb.col(j).to_vec());
                let one = sinkhorn(k, &aj, &bj, &fixed, None).unwrap();
                let lam = (max_abs_finite(one.f.as_slice()) + max_abs_finite(one.g.as_slice())) / gamma;
                let dit = if log { delta_it_log(EPS, &sup, lam) } else { delta_it(EPS, &sup, lam) };
                let tol = gamma * l as f64 * dit;
                for (x, y) in [(all.f.col(j), one.f.col(0)), (all.g.col(j), one.g.col(0))] {
                    for (p, q) in x.iter().zip(y) {
                        prop_assert!(p == q || (p - q).abs() <= tol, "potential {} vs {}", p, q);
                        if p != q { report("sinkhorn_batch_vs_single_potential_abs", (p - q).abs()); }
                    }
                }
                prop_assert!((all.cost[j] - one.cost[0]).abs() <= tol * (1.0 + cmax / gamma));
            }
        }
        // Both domains converge to the same objective, each within osc(f*)·e/2 of it.
        let ((c0, o0), (c1, o1)) = (&costs[0], &costs[1]);
        for j in 0..b {
            let d = (c0[j] - c1[j]).abs();
            report("sinkhorn_log_vs_plain_cost", d);
            let bound = (o0[j] + o1[j]) * tol + 4.0 * EPS * n as f64 * (1.0 + cmax / gamma);
            prop_assert!(d <= bound, "scaling {} vs log {}", c0[j], c1[j]);
        }
    }

    /// f32 Sinkhorn agrees with f64 to f32 accuracy: with L fixed iterations, the
    /// potentials differ by `γ·L·δ_it(ε₃₂)` (absolute on f = γ log u) and the objective by
    /// that times the total mass, plus the rounding of the inputs.
    #[test]
    fn f32_sinkhorn_matches_f64(
        sup in support_strategy(40, 6, 30),
        gamma_rel in 0.05f64..0.5,
        log in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let st = setup(&sup, gamma_rel, &mut rng);
        let n = sup.n();
        let a32 = histograms(&mut rng, n, 1, false).cast::<f32>();
        let b32 = histograms(&mut rng, n, 1, false).cast::<f32>();
        let g32 = st.gamma as f32;
        let c32 = st.cost.cast::<f32>();
        let k32: Box<dyn Kernel<f32>> = match &sup {
            Support::Grid(shape) => Box::new(GridKernel::<f32>::new(&Grid::new(shape).unwrap(), g32).unwrap()),
            Support::Points(..) => Box::new(DenseKernel::new(c32.view(), g32).unwrap()),
        };
        let k64: Box<dyn Kernel<f64>> = match &sup {
            Support::Grid(shape) => Box::new(GridKernel::<f64>::new(&Grid::new(shape).unwrap(), g32 as f64).unwrap()),
            Support::Points(..) => Box::new(DenseKernel::new(c32.cast::<f64>().view(), g32 as f64).unwrap()),
        };
        let l = 30;
        let cfg = SinkhornConfig { log_domain: log, stop: Stop::Iterations(l), plan: false };
        let o64 = sinkhorn(k64.as_ref(), &a32.cast(), &b32.cast(), &cfg, None).unwrap();
        let o32 = sinkhorn(k32.as_ref(), &a32, &b32, &cfg, None).unwrap();
        let lam = (max_abs_finite(o64.f.as_slice()) + max_abs_finite(o64.g.as_slice())) / (g32 as f64);
        let dit = if log { delta_it_log(EPS32, &sup, lam) } else { delta_it(EPS32, &sup, lam) };
        let cmax = max_abs_finite(st.cost.as_slice());
        let tol = (l as f64 + 1.0) * dit * (g32 as f64 + cmax) + EPS32 * (cmax + g32 as f64);
        let d = (o32.cost[0] as f64 - o64.cost[0]).abs();
        report("f32_vs_f64_sinkhorn_cost_abs", d);
        prop_assert!(d <= tol, "cost f32 {} vs f64 {} (tol {:e})", o32.cost[0], o64.cost[0], tol);
        let d = (o32.transport_cost[0] as f64 - o64.transport_cost[0]).abs();
        prop_assert!(d <= tol, "transport cost f32 {} vs f64 {}", o32.transport_cost[0], o64.transport_cost[0]);
    }
}

/// Heavy ball (Algorithm 5) with atoms that have empty bins: `d_i = 0` gives `ã_i = 0`,
/// then `a_i = 0^τ · 0^{1-τ} = ∞ · 0 = NaN` at the next iteration (log domain:
/// `τ·(-∞) + (1-τ)·(-∞) = +∞ - ∞`). Every image with background zeros hits this.
#[test]
fn heavy_ball_with_zero_atoms() {
    let grid = Grid::new(&[20]).unwrap();
    let k = GridKernel::<f64>::new(&grid, 1e-2).unwrap();
    let atoms = Batch::from_fn(20, 2, |i, s| {
        if (s == 0 && i < 5) || (s == 1 && i >= 15) {
            0.2
        } else {
            0.0
        }
    });
    let w = Batch::from_vec(2, 1, vec![0.5, 0.5]);
    for log in [false, true] {
        let plain = BarycenterConfig::tolerance(1e-12, 100_000).log_domain(log);
        let want = barycenters(&k, &atoms, &w, &plain, None).unwrap();
        let hb = barycenters(&k, &atoms, &w, &plain.tau(-0.5), None)
            .unwrap_or_else(|e| panic!("log={log}: {e}"));
        // Both converged to the same fixed point (tol 1e-12 in L¹ each).
        assert!(l1(hb.p.col(0), want.p.col(0)) < 1e-10, "log={log}");
    }
}

/// The unbalanced barycenter has the same empty-bin issue only through ã = (d/Kb)^κ,
/// which stays 0 for κ > 0: this must work (regression guard for the heavy-ball fix).
#[test]
fn unbalanced_with_zero_atoms_is_finite() {
    let grid = Grid::new(&[20]).unwrap();
    let k = GridKernel::<f64>::new(&grid, 1e-2).unwrap();
    let atoms = Batch::from_fn(20, 2, |i, s| {
        if (s == 0 && i < 5) || (s == 1 && i >= 15) {
            0.2
        } else {
            0.0
        }
    });
    let w = Batch::from_vec(2, 1, vec![0.5, 0.5]);
    for log in [false, true] {
        let cfg = BarycenterConfig::tolerance(1e-12, 100_000)
            .rho(1.0)
            .log_domain(log);
        let out = barycenters(&k, &atoms, &w, &cfg, None).unwrap();
        assert!(out.p.as_slice().iter().all(|x| x.is_finite()));
    }
}

/// Log-domain Sinkhorn at a γ where the Gibbs kernel underflows between the supports of
/// a and b (γ = 1e-4 on [0, 1], masses 0.8 apart: exp(-0.64/1e-4) = 0). The iterations
/// converge and the plan is right; `transport_cost` once went through the scaling-domain
/// `apply_cost` of the underflowed kernel, whose shifted sum `Σ e^{lu-su} (K⊙C) e^{lv-sv}`
/// was exactly 0 although the plan carries all the mass, giving NaN (0·e^{su+sv} = 0·∞),
/// 0, or `Err(Numerical)`. It now goes through `Kernel::apply_cost_log`.
#[test]
fn log_sinkhorn_transport_cost_at_small_gamma() {
    let n = 60;
    let grid = Grid::new(&[n]).unwrap();
    let k = GridKernel::<f64>::new(&grid, 1e-4).unwrap();
    let a = Batch::from_fn(n, 1, |i, _| if i < 10 { 0.1 } else { 0.0 });
    let b = Batch::from_fn(n, 1, |i, _| if i >= 50 { 0.1 } else { 0.0 });
    let cfg = SinkhornConfig {
        log_domain: true,
        plan: true,
        ..Default::default()
    };
    let ot = sinkhorn(&k, &a, &b, &cfg, None).unwrap_or_else(|e| panic!("{e}"));
    let c = grid.cost_matrix::<f64>();
    let tc = plan_sum(&ot.plans.as_ref().unwrap()[0], &c, |t, c| t * c);
    // Every unit of mass moves 50 cells of 1/59: ⟨T,C⟩ ≈ (50/59)² ≈ 0.718.
    assert!((tc - (50.0f64 / 59.0).powi(2)).abs() < 1e-2);
    // Same relative rounding model as `sinkhorn_properties`, with |f| + |g| + C ≈ 2.
    let rnd = EPS * (4.0 * 2.0 / 1e-4 + 2.0 * n as f64 + 16.0);
    assert!(
        (ot.transport_cost[0] - tc).abs() <= rnd * tc,
        "transport_cost {} vs ⟨T,C⟩ of the plan {}",
        ot.transport_cost[0],
        tc
    );
}

/// Regression case of `unbalanced_tends_to_balanced` drawn by CI (2×2 grid, γ = 0.05 of
/// the diameter, barycenter bins of 0.003 and 0.005): the first-order factor 101/1001 from
/// 100γ to 1000γ is not reached yet (0.21), because the O((1 − κ)²) remainder is large
/// next to near-zero bins; further out, d·ρ/γ settles (1.03 at 1000γ, 1.09 at 10⁴γ), so the
/// unbalanced barycenter still tends to the balanced one at the rate 1/ρ.
#[test]
fn unbalanced_reaches_its_asymptotic_rate_late_near_empty_bins() {
    let sup = Support::Grid(vec![2, 2]);
    let mut rng = StdRng::seed_from_u64(15703858211692082385);
    let st = setup(&sup, 0.05, &mut rng);
    let atoms = histograms(&mut rng, sup.n(), 2, true);
    let w = weights(&mut rng, 2, 1);
    let k = st.kernel.as_ref();
    let tol = 1e-13;
    let run = |cfg: BarycenterConfig| barycenters(k, &atoms, &w, &cfg, None).unwrap();
    let bal = run(BarycenterConfig::tolerance(tol, 1_000_000));
    // d·ρ/γ at ρ ∈ {100, 1000, 10⁴}γ (with 1 − κ = γ/(ρ + γ), exactly (ρ+γ)/γ · d)
    let scaled: Vec<f64> = [100.0, 1000.0, 1e4]
        .iter()
        .map(|&r| {
            let out = run(BarycenterConfig::tolerance(tol, 1_000_000).rho(r * st.gamma));
            assert!(out.error.unwrap() < tol);
            (r + 1.0) * l1(out.p.col(0), bal.p.col(0))
        })
        .collect();
    eprintln!("d·(ρ+γ)/γ at 100γ, 1000γ, 10⁴γ: {scaled:?}");
    // not yet asymptotic at 100γ: the tenfold step changes d·(ρ+γ)/γ by a factor ~2
    assert!(scaled[1] > 1.5 * scaled[0], "{scaled:?}");
    // asymptotic from 1000γ on: within 10% (the next-order term is 10× smaller again)
    assert!((scaled[2] / scaled[1] - 1.0).abs() < 0.1, "{scaled:?}");
}
