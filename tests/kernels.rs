//! Kernel cross-checks: the separable grid kernel against the dense kernel of the same
//! cost, the log domain against a plain f64 logsumexp and against the scaling domain,
//! the banded scaling path and the adaptive log window against full sums, the signed
//! log variant against a direct signed sum, f32 against f64, rectangular dense kernels.
//!
//! Error model used by every tolerance below (ε = machine epsilon of the precision):
//! * An entry `K_ij = exp(-X_ij)`, `X = C/γ`, is computed by the dense kernel as one `exp`
//!   of `C/γ` (`C` summed over `d` axes in f64) and by the grid kernel as a product of
//!   `d` per-axis exponentials of `(c1/γ)·δ·δ`. Each route rounds `X` with relative error
//!   at most `(d + 2)ε` resp. `4ε`, so the two `K_ij` differ relatively by at most
//!   `(d + 6)ε·X_ij + (d + 1)ε` (the second term: the `exp`s and the `d - 1` products).
//! * A sum of `k` nonnegative terms has relative rounding error at most `(k - 1)ε`: the
//!   dense product sums `N` terms, the separable one `n_a` terms per axis.
//! * With inputs `x ∈ [0.5, 1.5]` the weights `K_ij x_j / Σ_j K_ij x_j` are within a factor
//!   3 of the Gibbs weights, under which the mean of `X` is at most 1/2 per axis (a
//!   lattice Gaussian), so the weighted mean of `X` is below `3d/2`; we use `3d`.
//! * In the log domain the same errors are absolute: a term `v_j - X_ij` is rounded to
//!   `ε·(|v_j| + X_ij)`, and a term that matters has `X_ij ≤ |result| + |v_j| + ln N`.
//! * Gradual underflow loses at most one subnormal spacing (`TINY`) per product.

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wassdl::kernel::{apply_log_new, apply_new};
use wassdl::*;

const EPS: f64 = f64::EPSILON;
const EPS32: f64 = f32::EPSILON as f64;
/// Smallest positive subnormal f64: the absolute resolution of gradual underflow.
const TINY: f64 = f64::from_bits(1);

const UNITS: [GridUnits; 3] = [GridUnits::Pot, GridUnits::GeomLoss, GridUnits::Pixel];

/// γ such that the cheapest nonzero step costs `10^r` in units of γ: `r = 3` makes `K`
/// the identity in floating point, `r = -3` makes it nearly constant.
fn gamma_for(grid: &Grid, r: f64) -> f64 {
    let c1 = grid
        .shape()
        .iter()
        .map(|&n| grid.unit_cost(n))
        .filter(|&c| c > 0.0)
        .fold(f64::INFINITY, f64::min);
    let c1 = if c1.is_finite() { c1 } else { 1.0 };
    c1 / 10f64.powf(r)
}

/// Grid shapes: 1-D up to 40 cells, 2-D up to 16 per axis, 3-D up to 12 per axis.
fn shape_strategy() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        (1usize..=40).prop_map(|n| vec![n]),
        (1usize..=16, 1usize..=16).prop_map(|(a, b)| vec![a, b]),
        (1usize..=12, 1usize..=12, 1usize..=12).prop_map(|(a, b, c)| vec![a, b, c]),
    ]
}

fn dense_of(grid: &Grid, gamma: f64) -> DenseKernel<f64> {
    let c = grid.cost_matrix::<f64>();
    DenseKernel::new(c.view(), gamma).unwrap()
}

/// Positive inputs in [0.5, 1.5] (see the error model).
fn positive_batch(rng: &mut StdRng, n: usize, b: usize) -> Batch<f64> {
    Batch::from_fn(n, b, |_, _| rng.random_range(0.5..1.5))
}

/// Log inputs uniform in `[-spread, spread]`, each `-∞` with probability `p_inf`.
fn log_batch(rng: &mut StdRng, n: usize, b: usize, spread: f64, p_inf: f64) -> Batch<f64> {
    Batch::from_fn(n, b, |_, _| {
        if rng.random_bool(p_inf) {
            f64::NEG_INFINITY
        } else {
            rng.random_range(-spread..=spread)
        }
    })
}

/// Straightforward reference: `out_i = log Σ_j exp(v_j - C_ij/γ)` (`C_ji` when
/// `transpose`), max-shifted, with the standard library's `exp`/`ln`.
fn ref_lse(c: &Batch<f64>, gamma: f64, v: &Batch<f64>, transpose: bool) -> Batch<f64> {
    let (n_out, n_in) = if transpose {
        (c.cols(), c.rows())
    } else {
        (c.rows(), c.cols())
    };
    assert_eq!(v.rows(), n_in);
    let cost = |o: usize, i: usize| {
        if transpose {
            c.get(i, o)
        } else {
            c.get(o, i)
        }
    };
    Batch::from_fn(n_out, v.cols(), |o, b| {
        let t: Vec<f64> = (0..n_in)
            .map(|i| v.get(i, b) - cost(o, i) / gamma)
            .collect();
        let m = t.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        if m == f64::NEG_INFINITY {
            return m;
        }
        m + t.iter().map(|&x| (x - m).exp()).sum::<f64>().ln()
    })
}

/// Straightforward reference for `K x` with `K = exp(-C/γ)`.
fn ref_apply(c: &Batch<f64>, gamma: f64, x: &Batch<f64>, transpose: bool) -> Batch<f64> {
    let (n_out, n_in) = if transpose {
        (c.cols(), c.rows())
    } else {
        (c.rows(), c.cols())
    };
    Batch::from_fn(n_out, x.cols(), |o, b| {
        (0..n_in)
            .map(|i| {
                let cij = if transpose { c.get(i, o) } else { c.get(o, i) };
                (-cij / gamma).exp() * x.get(i, b)
            })
            .sum()
    })
}

/// Worst `|got - want| / tol(i, want)` over entries; both must be `-∞` together.
fn worst_ratio(
    what: &str,
    got: &Batch<f64>,
    want: &Batch<f64>,
    tol: impl Fn(f64) -> f64,
) -> std::result::Result<f64, TestCaseError> {
    prop_assert_eq!(got.shape(), want.shape(), "{}: shape", what);
    let mut worst = 0.0f64;
    for (k, (&g, &w)) in got.as_slice().iter().zip(want.as_slice()).enumerate() {
        if w == f64::NEG_INFINITY || g == f64::NEG_INFINITY {
            prop_assert_eq!(g, w, "{}: entry {} (-inf pattern)", what, k);
            continue;
        }
        prop_assert!(g.is_finite(), "{}: entry {} is {} (want {})", what, k, g, w);
        // Exact agreement passes even where the tolerance is 0 (e.g. C = 0 on one cell).
        let r = if g == w { 0.0 } else { (g - w).abs() / tol(w) };
        prop_assert!(
            r <= 1.0,
            "{}: entry {}: got {:e}, want {:e}, |diff| = {:e} > tol {:e}",
            what,
            k,
            g,
            w,
            (g - w).abs(),
            tol(w)
        );
        worst = worst.max(r);
    }
    Ok(worst)
}

/// With `WASSDL_REPORT=1`, prints a measured error (collected for the test report).
fn report(what: &str, value: f64) {
    if std::env::var_os("WASSDL_REPORT").is_some() {
        eprintln!("REPORT {what} {value:e}");
    }
}

/// Largest relative error `|got - want| / |want|` (for reporting).
fn max_rel(got: &Batch<f64>, want: &Batch<f64>) -> f64 {
    got.as_slice()
        .iter()
        .zip(want.as_slice())
        .filter(|(_, w)| w.is_finite() && **w != 0.0)
        .map(|(g, w)| ((g - w) / w).abs())
        .fold(0.0, f64::max)
}

/// Largest absolute error over entries finite in both (for reporting log-domain errors).
fn max_abs(got: &Batch<f64>, want: &Batch<f64>) -> f64 {
    got.as_slice()
        .iter()
        .zip(want.as_slice())
        .filter(|(g, w)| g.is_finite() && w.is_finite())
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max)
}

/// Relative tolerance of the separable-vs-dense scaling product (see the module docs):
/// `(d+6)ε·3d` from the exponent rounding at the weighted mean of `X`, `(d+1)ε` from the
/// exps and products, `N ε` and `Σ n_a ε` from the two summations. Never above ~4e-13 for
/// the shapes drawn here, so it enforces the 1e-12 with room to spare.
fn apply_rtol(eps: f64, shape: &[usize]) -> f64 {
    let d = shape.len() as f64;
    let n: usize = shape.iter().product();
    let sum_axes: usize = shape.iter().sum();
    eps * ((d + 6.0) * 3.0 * d + (d + 1.0) + n as f64 + sum_axes as f64)
}

/// Same for `(K ⊙ C) x`: the weights now carry a factor `X`, whose weighted mean under
/// the Gibbs weights is at most `d/2 + 1` (`E[X²]/E[X]` for a lattice Gaussian), times 3
/// for the spread of `x`; the cost itself is rounded with `(d + 3)ε` on each side.
fn cost_rtol(eps: f64, shape: &[usize]) -> f64 {
    let d = shape.len() as f64;
    let n: usize = shape.iter().product();
    let sum_axes: usize = shape.iter().sum();
    eps * ((d + 6.0) * 3.0 * (d / 2.0 + 1.0) + 2.0 * (d + 3.0) + n as f64 + sum_axes as f64)
}

/// Absolute log-domain tolerance for a result `r` from inputs bounded by `spread`:
/// the terms that matter are rounded to `ε(|v| + X)` with `X ≤ |r| + spread + ln N`,
/// relatively amplified by `(d + 6)` (exponent rounding of both routes) and doubled for
/// the intermediate per-axis results; plus the summation (`N + Σ n_a`) and a few ulp of
/// the vectorized `exp`.
fn log_atol(eps: f64, shape: &[usize], spread: f64, r: f64) -> f64 {
    let d = shape.len() as f64;
    let n: usize = shape.iter().product();
    let sum_axes: usize = shape.iter().sum();
    eps * (2.0 * (d + 6.0) * (r.abs() + spread + (n as f64).ln() + 1.0)
        + n as f64
        + sum_axes as f64
        + 8.0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// GridKernel == DenseKernel(grid.cost_matrix()) for K x, Kᵀ x and (K ⊙ C) x, all
    /// units, γ over six decades, to the derived relative bound (< 1e-12 always).
    #[test]
    fn separable_matches_dense(
        shape in shape_strategy(),
        unit in 0usize..3,
        r in -3.0f64..3.0,
        cols in 1usize..=3,
        seed in any::<u64>(),
    ) {
        let grid = Grid::new(&shape).unwrap().with_units(UNITS[unit]);
        let gamma = gamma_for(&grid, r);
        let g = GridKernel::<f64>::new(&grid, gamma).unwrap();
        let dk = dense_of(&grid, gamma);
        let n = grid.len();
        let mut rng = StdRng::seed_from_u64(seed);
        let x = positive_batch(&mut rng, n, cols);
        let rtol = apply_rtol(EPS, &shape);
        prop_assert!(rtol < 1e-12, "the derived bound enforces the 1e-12 requirement");
        for transpose in [false, true] {
            let (a, b) = (apply_new(&g, &x, transpose), apply_new(&dk, &x, transpose));
            worst_ratio("apply", &a, &b, |w| rtol * w.abs())?;
            report("sep_vs_dense_apply_rel", max_rel(&a, &b));
        }
        let mut cg = Batch::zeros(n, cols);
        let mut cd = Batch::zeros(n, cols);
        g.apply_cost(&x, &mut cg);
        dk.apply_cost(&x, &mut cd);
        let cmax = grid.cost_matrix::<f64>().as_slice().iter().cloned().fold(0.0, f64::max);
        let crtol = cost_rtol(EPS, &shape);
        prop_assert!(crtol < 1e-12);
        // Terms in gradual underflow: one subnormal spacing per product of each of the
        // `d` factors, times the largest `C x` they can be multiplied by.
        let atol = (shape.len() + 1) as f64 * n as f64 * TINY * cmax * 1.5;
        worst_ratio("apply_cost", &cg, &cd, |w| crtol * w.abs() + atol)?;
        report("sep_vs_dense_cost_rel", max_rel(&cg, &cd));
        prop_assert_eq!(g.cost_matrix(), grid.cost_matrix::<f64>());
    }

    /// log(K exp v) of both kernels == a plain f64 logsumexp, and == log(K exp v) computed
    /// in the scaling domain wherever that one is finite and normal. Inputs spread up to
    /// ±1000 (the scaling domain overflows) and contain -∞ entries.
    #[test]
    fn log_domain_matches_reference_and_scaling(
        shape in shape_strategy(),
        unit in 0usize..3,
        r in -3.0f64..3.0,
        spread_idx in 0usize..4,
        p_inf_idx in 0usize..3,
        seed in any::<u64>(),
    ) {
        let spread = [1.0, 30.0, 300.0, 1000.0][spread_idx];
        let p_inf = [0.0, 0.3, 0.9][p_inf_idx];
        let grid = Grid::new(&shape).unwrap().with_units(UNITS[unit]);
        let gamma = gamma_for(&grid, r);
        let g = GridKernel::<f64>::new(&grid, gamma).unwrap();
        let dk = dense_of(&grid, gamma);
        let n = grid.len();
        let c = grid.cost_matrix::<f64>();
        let mut rng = StdRng::seed_from_u64(seed);
        let v = log_batch(&mut rng, n, 2, spread, p_inf);
        let want = ref_lse(&c, gamma, &v, false);
        let ev = v.map(f64::exp);
        for (name, k) in [("grid", &g as &dyn Kernel<f64>), ("dense", &dk as &dyn Kernel<f64>)] {
            for transpose in [false, true] {
                let got = apply_log_new(k, &v, transpose);
                // C is symmetric, so the transposed reference is the same.
                worst_ratio(&format!("{name} log t={transpose}"), &got, &want, |w| {
                    log_atol(EPS, &shape, spread, w)
                })?;
                report(&format!("log_vs_ref_abs_{name}_spread{spread}"), max_abs(&got, &want));
                // The scaling domain, where it is representable: exp(v) finite needs
                // spread ≤ 709; a normal result keeps the relative error of the sum
                // within the model plus the subnormal terms (≤ (d+1)·N·TINY·max x).
                if spread > 700.0 {
                    continue;
                }
                let y = apply_new(k, &ev, transpose);
                let xmax = ev.as_slice().iter().cloned().fold(0.0, f64::max);
                for (i, (&yi, &gi)) in y.as_slice().iter().zip(got.as_slice()).enumerate() {
                    if !(yi.is_finite() && yi >= f64::MIN_POSITIVE) {
                        continue;
                    }
                    let sub = (shape.len() + 1) as f64 * n as f64 * TINY * (1.0 + xmax) / yi;
                    let tol = log_atol(EPS, &shape, spread, gi) + sub;
                    report(&format!("log_vs_scaling_abs_{name}"), (yi.ln() - gi).abs());
                    prop_assert!(
                        (yi.ln() - gi).abs() <= tol,
                        "{} t={}: entry {}: log-domain {} vs ln(scaling) {} (tol {:e})",
                        name, transpose, i, gi, yi.ln(), tol
                    );
                }
            }
        }
    }

    /// The signed log variant (Algorithm 4's backward loop) == the signed sum computed
    /// directly, relative to `Σ|terms|` (cancellation is the caller's, see the trait
    /// docs); an intermediate per-axis error is also relative to its absolute sum, and
    /// `Σ_k K_ik Σ_l |K_kl x_l| = (K|x|)_i`, so the bound composes over axes.
    #[test]
    fn signed_log_matches_direct_sum(
        shape in shape_strategy(),
        unit in 0usize..3,
        r in -3.0f64..3.0,
        spread_idx in 0usize..3,
        seed in any::<u64>(),
    ) {
        let spread = [1.0, 30.0, 300.0][spread_idx];
        let grid = Grid::new(&shape).unwrap().with_units(UNITS[unit]);
        let gamma = gamma_for(&grid, r);
        let g = GridKernel::<f64>::new(&grid, gamma).unwrap();
        let dk = dense_of(&grid, gamma);
        let n = grid.len();
        let c = grid.cost_matrix::<f64>();
        let mut rng = StdRng::seed_from_u64(seed);
        let v = log_batch(&mut rng, n, 2, spread, 0.2);
        // Sign 0 only on -∞ entries: x = sign · exp(v) = 0 either way (see the ignored
        // `signed_log_zero_sign_with_finite_log` for sign 0 on a finite v).
        let sign = Batch::from_fn(n, 2, |i, j| {
            if v.get(i, j) == f64::NEG_INFINITY {
                0.0
            } else if rng.random_bool(0.5) {
                1.0
            } else {
                -1.0
            }
        });
        for (name, k) in [("grid", &g as &dyn Kernel<f64>), ("dense", &dk as &dyn Kernel<f64>)] {
            for transpose in [false, true] {
                let mut out = Batch::zeros(n, 2);
                let mut osg = Batch::zeros(n, 2);
                k.apply_log_signed(&v, &sign, &mut out, &mut osg, transpose);
                check_signed(name, &shape, &c, gamma, &v, &sign, &out, &osg, spread)?;
            }
        }
    }

    /// The scaling-domain banded path (band well inside the axis, small γ in pixel units)
    /// == the full dense GEMM, for axes with inner stride 1 and > 1.
    #[test]
    fn banded_scaling_matches_dense(
        big in 150usize..=320,
        small in 1usize..=3,
        layout in 0usize..3,
        lg in -1.3f64..-0.5,
        seed in any::<u64>(),
    ) {
        let shape = match layout {
            0 => vec![big],
            1 => vec![big, small],
            _ => vec![small, big],
        };
        let gamma = 10f64.powf(lg);
        let grid = Grid::new(&shape).unwrap().with_units(GridUnits::Pixel);
        let g = GridKernel::<f64>::new(&grid, gamma).unwrap();
        let bands = g.bands();
        let ia = shape.iter().position(|&s| s == big).unwrap();
        let b = bands[ia];
        // The band is the last offset where exp(-δ²/γ) is nonzero in f64.
        prop_assert!((-(b as f64).powi(2) / gamma).exp() > 0.0);
        prop_assert!((-((b + 1) as f64).powi(2) / gamma).exp() == 0.0 || b + 1 >= big);
        // The implementation tiles the product when max(4b, 64) + 2b < 4n/5: make sure
        // this case exercises it (b ≤ √(745·0.32) ≈ 15 here, so 94 < 120 ≤ 4n/5).
        prop_assert!((4 * b).max(64) + 2 * b < big * 4 / 5, "band {} too wide for {}", b, big);
        let dk = dense_of(&grid, gamma);
        let n = grid.len();
        let mut rng = StdRng::seed_from_u64(seed);
        let x = positive_batch(&mut rng, n, 2);
        let rtol = apply_rtol(EPS, &shape);
        for transpose in [false, true] {
            let (a, b) = (apply_new(&g, &x, transpose), apply_new(&dk, &x, transpose));
            worst_ratio("banded apply", &a, &b, |w| rtol * w.abs())?;
            report("banded_vs_dense_rel", max_rel(&a, &b));
        }
        let (mut cg, mut cd) = (Batch::zeros(n, 2), Batch::zeros(n, 2));
        g.apply_cost(&x, &mut cg);
        dk.apply_cost(&x, &mut cd);
        let cmax = (big * big + small * small) as f64;
        let atol = (shape.len() + 1) as f64 * n as f64 * TINY * cmax * 1.5;
        let crtol = cost_rtol(EPS, &shape);
        worst_ratio("banded apply_cost", &cg, &cd, |w| crtol * w.abs() + atol)?;
    }

    /// The band from the error bound (`GridKernel::band_for`, narrower than the underflow
    /// band `bands()`) == the full dense sum, for inputs of dynamic range up to 10¹²,
    /// nonnegative and signed, in f64 and f32. Tolerance: the rounding bound of the
    /// separable product (`apply_rtol`) plus the bound's own `ε/4` per axis, both
    /// relative to `Σ_j K_ij |x_j|` (the dense kernel applied to `|x|`), which for a
    /// nonnegative input is the result itself.
    #[test]
    fn bound_band_matches_full_sum(
        big in 150usize..=300,
        small in 1usize..=3,
        layout in 0usize..3,
        gamma in 0.5f64..4.0,
        log_ratio in 0.0f64..12.0,
        signed in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let shape = match layout {
            0 => vec![big],
            1 => vec![big, small],
            _ => vec![small, big],
        };
        let grid = Grid::new(&shape).unwrap().with_units(GridUnits::Pixel);
        let g = GridKernel::<f64>::new(&grid, gamma).unwrap();
        let g32 = GridKernel::<f32>::new(&grid, gamma as f32).unwrap();
        let ia = shape.iter().position(|&s| s == big).unwrap();
        let ratio = 10f64.powf(log_ratio);
        // The case must exercise a band narrower than the underflow band, tiled.
        for (w, cap) in [(g.band_for(ia, ratio), g.bands()[ia]), (g32.band_for(ia, ratio), g32.bands()[ia])] {
            prop_assert!(w < cap, "bound band {} not below the underflow band {}", w, cap);
            prop_assert!((4 * w).max(64) + 2 * w < big * 4 / 5, "band {} not tiled at n = {}", w, big);
        }
        let dk = dense_of(&grid, gamma);
        let n = grid.len();
        let mut rng = StdRng::seed_from_u64(seed);
        // Log-uniform magnitudes in [1, ratio]: max/min ≤ ratio, the bound's premise.
        let x = Batch::from_fn(n, 3, |_, _| {
            let m = 10f64.powf(rng.random_range(0.0..=log_ratio));
            if signed && rng.random_bool(0.5) { -m } else { m }
        });
        let x32 = Batch::<f32>::from_fn(n, 3, |i, j| x.get(i, j) as f32);
        let x32_64 = Batch::from_fn(n, 3, |i, j| x32.get(i, j) as f64);
        let d = shape.len() as f64;
        for (eps, got, xin) in [
            (EPS, apply_new(&g, &x, false), &x),
            (EPS32, {
                let y = apply_new(&g32, &x32, false);
                Batch::from_fn(n, 3, |i, j| y.get(i, j) as f64)
            }, &x32_64),
        ] {
            let want = apply_new(&dk, xin, false);
            let abs_x = Batch::from_fn(n, 3, |i, j| xin.get(i, j).abs());
            let scale = apply_new(&dk, &abs_x, false);
            let rtol = apply_rtol(eps, &shape) + d * eps / 4.0;
            for k in 0..n * 3 {
                let (gv, wv, sv) = (got.as_slice()[k], want.as_slice()[k], scale.as_slice()[k]);
                prop_assert!(
                    (gv - wv).abs() <= rtol * sv,
                    "ε = {:e}: entry {}: got {:e}, want {:e}, scale {:e}, rtol {:e}",
                    eps, k, gv, wv, sv, rtol
                );
            }
            report("bound_band_vs_dense_rel", max_rel(&got, &want));
        }
    }

    /// The adaptive log-domain window drops only terms below one ulp of each result: the
    /// grid's log application equals a full-window replica of Algorithm 3 (same argument
    /// rounding, every term summed with the standard `exp`) to a few ulp per axis, while
    /// `mean_log_window()` shows the window is genuinely narrower than the axis.
    #[test]
    fn adaptive_log_window_is_within_ulps_of_full_sum(
        (shape, lg) in prop_oneof![
            ((120usize..=400).prop_map(|n| vec![n]), -0.5f64..0.7),
            ((30usize..=60, 30usize..=60).prop_map(|(a, b)| vec![a, b]), -0.5f64..0.7),
            (
                (8usize..=12, 8usize..=12, 8usize..=12).prop_map(|(a, b, c)| vec![a, b, c]),
                -1.0f64..-0.3,
            ),
        ],
        spread_idx in 0usize..3,
        seed in any::<u64>(),
    ) {
        let spread = [0.0, 5.0, 30.0][spread_idx];
        let gamma = 10f64.powf(lg);
        let grid = Grid::new(&shape).unwrap().with_units(GridUnits::Pixel);
        let g = GridKernel::<f64>::new(&grid, gamma).unwrap();
        prop_assert_eq!(g.mean_log_window(), None);
        let n = grid.len();
        let mut rng = StdRng::seed_from_u64(seed);
        let v = log_batch(&mut rng, n, 2, spread, 0.0);
        let got = apply_log_new(&g, &v, false);
        let w = g.mean_log_window().expect("a log application was made");
        // Window half-width ≈ √((2·spread + ln(n/ε))·γ) ≤ √((60 + 42)·5) ≈ 23 < 29 in
        // 1-D and 2-D, ≤ √((60 + 40)·0.5) ≈ 7 < 8 in 3-D.
        let nmin = *shape.iter().min().unwrap();
        prop_assert!(w < (nmin - 1) as f64, "mean window {} not narrower than axis {}", w, nmin);
        let (full, amax) = full_window_replica(&grid, gamma, &v);
        // Per axis: truncation ≤ ε (the window's guarantee), summation order (n_a ε), a
        // few ulp of the vectorized exp, and the ulp of `m + ln s` (ε·|A'|, twice for the
        // two routes); absolute log errors pass through later axes unamplified.
        let tol: f64 = shape.iter().map(|&na| EPS * (na as f64 + 8.0)).sum::<f64>()
            + 2.0 * shape.len() as f64 * EPS * amax;
        let err = max_abs(&got, &full);
        report("window_vs_full_ulps_of_1", err / EPS);
        report("window_mean_over_n", w / nmin as f64);
        prop_assert!(err <= tol, "window vs full: {:e} > {:e}", err, tol);
        // (The comparison with a plain f64 logsumexp is in the log-domain test above;
        // its O(N²) reference is too slow for these N.)
    }

    /// f32 kernels agree with f64 ones to f32 accuracy (same error model with ε₃₂):
    /// scaling relative, log absolute. Inputs drawn in f32 and widened exactly.
    #[test]
    fn f32_kernels_match_f64(
        shape in shape_strategy(),
        unit in 0usize..3,
        r in -2.0f64..2.0,
        spread_idx in 0usize..3,
        seed in any::<u64>(),
    ) {
        let spread = [1.0, 30.0, 300.0][spread_idx];
        let grid = Grid::new(&shape).unwrap().with_units(UNITS[unit]);
        let gamma = gamma_for(&grid, r) as f32;
        let gamma64 = gamma as f64;
        let n = grid.len();
        let mut rng = StdRng::seed_from_u64(seed);
        let x32: Batch<f32> = positive_batch(&mut rng, n, 2).cast();
        let x = x32.cast::<f64>();
        let v32: Batch<f32> = log_batch(&mut rng, n, 2, spread, 0.2).cast();
        let v = v32.cast::<f64>();
        let c = grid.cost_matrix::<f64>();
        let c32 = grid.cost_matrix::<f32>();
        let g32 = GridKernel::<f32>::new(&grid, gamma).unwrap();
        let d32 = DenseKernel::<f32>::new(c32.view(), gamma).unwrap();
        let want = ref_apply(&c, gamma64, &x, false);
        let want_log = ref_lse(&c, gamma64, &v, false);
        // The f32 cost matrix is itself rounded (relative ε₃₂/2 per entry): one more ε₃₂·X.
        let rtol = apply_rtol(EPS32, &shape) + EPS32 * 3.0 * shape.len() as f64;
        for (name, k) in [("grid", &g32 as &dyn Kernel<f32>), ("dense", &d32 as &dyn Kernel<f32>)] {
            let got = apply_new(k, &x32, false).cast::<f64>();
            report(&format!("f32_vs_f64_apply_rel_{name}"), max_rel(&got, &want));
            // Terms that underflow in f32 but not in f64 are below N·1e-38·1.5 absolute.
            worst_ratio(&format!("{name} f32 apply"), &got, &want, |w| {
                rtol * w.abs() + n as f64 * 1.5 * f32::MIN_POSITIVE as f64
            })?;
            let got = apply_log_new(k, &v32, false).cast::<f64>();
            report(&format!("f32_vs_f64_log_abs_{name}"), max_abs(&got, &want_log));
            worst_ratio(&format!("{name} f32 log"), &got, &want_log, |w| {
                log_atol(EPS32, &shape, spread, w) + EPS32 * (w.abs() + spread)
            })?;
        }
    }

    /// A rectangular dense kernel (n1 ≠ n2) applies K, Kᵀ, K ⊙ C, their log-domain and
    /// signed versions with the right shapes and values. Same C, same `exp`, so only the
    /// summations differ: relative `(n + 2)ε` in the scaling domain.
    #[test]
    fn rectangular_dense_kernel(
        n1 in 1usize..=30,
        n2 in 1usize..=30,
        dim in 1usize..=3,
        lg in -2.0f64..1.0,
        seed in any::<u64>(),
    ) {
        prop_assume!(n1 != n2);
        let mut rng = StdRng::seed_from_u64(seed);
        let px = Batch::from_fn(n1, dim, |_, _| rng.random::<f64>());
        let py = Batch::from_fn(n2, dim, |_, _| rng.random::<f64>());
        let c = Batch::from_fn(n1, n2, |i, j| {
            (0..dim).fold(0.0, |acc, d| {
                let t = px.get(i, d) - py.get(j, d);
                acc + t * t
            })
        });
        let gamma = 10f64.powf(lg);
        let k = DenseKernel::new(c.view(), gamma).unwrap();
        let ks = DenseKernel::sq_euclidean(px.view(), py.view(), gamma).unwrap();
        prop_assert_eq!(ks.matrix(), k.matrix());
        prop_assert_eq!((k.nrows(), k.ncols()), (n1, n2));
        prop_assert!(!k.is_symmetric());
        let x2 = positive_batch(&mut rng, n2, 3);
        let x1 = positive_batch(&mut rng, n1, 3);
        let rt = |n: usize| EPS * (n as f64 + 2.0);
        let got = apply_new(&k, &x2, false);
        prop_assert_eq!(got.shape(), (n1, 3));
        worst_ratio("rect apply", &got, &ref_apply(&c, gamma, &x2, false), |w| rt(n2) * w.abs())?;
        let got = apply_new(&k, &x1, true);
        prop_assert_eq!(got.shape(), (n2, 3));
        worst_ratio("rect apply_t", &got, &ref_apply(&c, gamma, &x1, true), |w| rt(n1) * w.abs())?;
        // K ⊙ C is formed as K·(C/γ)·γ: two more roundings per entry.
        let mut got = Batch::zeros(n1, 3);
        k.apply_cost(&x2, &mut got);
        let cx = Batch::from_fn(n1, 3, |i, b| {
            (0..n2).map(|j| (-c.get(i, j) / gamma).exp() * c.get(i, j) * x2.get(j, b)).sum()
        });
        worst_ratio("rect apply_cost", &got, &cx, |w| rt(n2 + 3) * w.abs() + n2 as f64 * TINY * 3.0)?;
        let v2 = log_batch(&mut rng, n2, 2, 300.0, 0.3);
        let v1 = log_batch(&mut rng, n1, 2, 300.0, 0.3);
        // C and C/γ are bitwise those of the reference: only the summation and the
        // vectorized exp differ (plus the ulp of m + ln s).
        let latol = |n: usize, w: f64| EPS * (n as f64 + 8.0 + 2.0 * w.abs());
        let got = apply_log_new(&k, &v2, false);
        prop_assert_eq!(got.shape(), (n1, 2));
        worst_ratio("rect log", &got, &ref_lse(&c, gamma, &v2, false), |w| latol(n2, w))?;
        let got = apply_log_new(&k, &v1, true);
        prop_assert_eq!(got.shape(), (n2, 2));
        worst_ratio("rect log_t", &got, &ref_lse(&c, gamma, &v1, true), |w| latol(n1, w))?;
        for (transpose, v) in [(false, &v2), (true, &v1)] {
            let n_out = if transpose { n2 } else { n1 };
            let sign = Batch::from_fn(v.rows(), 2, |i, j| {
                if v.get(i, j) == f64::NEG_INFINITY {
                    0.0
                } else if rng.random_bool(0.5) {
                    1.0
                } else {
                    -1.0
                }
            });
            let mut out = Batch::zeros(n_out, 2);
            let mut osg = Batch::zeros(n_out, 2);
            k.apply_log_signed(v, &sign, &mut out, &mut osg, transpose);
            let ct = if transpose { transpose_of(&c) } else { c.clone() };
            check_signed("rect dense", &[v.rows()], &ct, gamma, v, &sign, &out, &osg, 300.0)?;
        }
    }
}

fn transpose_of(c: &Batch<f64>) -> Batch<f64> {
    Batch::from_fn(c.cols(), c.rows(), |i, j| c.get(j, i))
}

/// Checks `osg ⊙ exp(out) == Σ_j sign_j exp(v_j - C_ij/γ)` relative to `Σ_j |terms|`.
/// `shape` only feeds the error model (its product is the input size).
#[allow(clippy::too_many_arguments)]
fn check_signed(
    name: &str,
    shape: &[usize],
    c: &Batch<f64>,
    gamma: f64,
    v: &Batch<f64>,
    sign: &Batch<f64>,
    out: &Batch<f64>,
    osg: &Batch<f64>,
    spread: f64,
) -> std::result::Result<(), TestCaseError> {
    let n_in = c.cols();
    for b in 0..v.cols() {
        for i in 0..c.rows() {
            let t: Vec<f64> = (0..n_in)
                .map(|j| v.get(j, b) - c.get(i, j) / gamma)
                .collect();
            let m = t
                .iter()
                .zip(sign.col(b))
                .filter(|(_, &s)| s != 0.0)
                .map(|(&x, _)| x)
                .fold(f64::NEG_INFINITY, f64::max);
            let (o, s) = (out.get(i, b), osg.get(i, b));
            prop_assert!(s == 0.0 || s == 1.0 || s == -1.0, "{}: sign {}", name, s);
            if m == f64::NEG_INFINITY {
                prop_assert!(
                    s == 0.0 || o == f64::NEG_INFINITY,
                    "{}: ({}, {}) must be 0",
                    name,
                    i,
                    b
                );
                continue;
            }
            let (mut want, mut abs) = (0.0, 0.0);
            for (&x, &sg) in t.iter().zip(sign.col(b)) {
                let e = (x - m).exp();
                want += sg * e;
                abs += sg.abs() * e;
            }
            let got = if s == 0.0 { 0.0 } else { s * (o - m).exp() };
            // Summation over N terms with cancellation relative to Σ|terms|, and the
            // log-domain argument rounding of `log_atol` at the largest term `m`.
            let tol = abs * log_atol(EPS, shape, spread, m) * 2.0;
            report("signed_err_over_abs", (got - want).abs() / abs);
            prop_assert!(
                (got - want).abs() <= tol,
                "{}: ({}, {}): got {:e}, want {:e} (Σ|.| = {:e}, tol {:e})",
                name,
                i,
                b,
                got,
                want,
                abs,
                tol
            );
        }
    }
    Ok(())
}

/// Algorithm 3 without any window: every axis sums all `n_a` terms with the standard
/// `exp`, with the grid's own argument rounding `(c1/γ)·δ·δ`. Returns the result and the
/// largest finite |intermediate| (for the ulp-of-result part of the tolerance).
fn full_window_replica(grid: &Grid, gamma: f64, v: &Batch<f64>) -> (Batch<f64>, f64) {
    let shape = grid.shape().to_vec();
    let mut cur = v.as_slice().to_vec();
    let mut amax = 0.0f64;
    for (a, &na) in shape.iter().enumerate() {
        let inner: usize = shape[a + 1..].iter().product();
        let c1g = grid.unit_cost(na) / gamma;
        let mut next = vec![0.0; cur.len()];
        for (src, dst) in cur
            .chunks_exact(na * inner)
            .zip(next.chunks_exact_mut(na * inner))
        {
            for k in 0..inner {
                for i in 0..na {
                    let t: Vec<f64> = (0..na)
                        .map(|j| {
                            let dd = i as f64 - j as f64;
                            src[j * inner + k] - c1g * dd * dd
                        })
                        .collect();
                    let m = t.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let r = if m == f64::NEG_INFINITY {
                        m
                    } else {
                        m + t.iter().map(|&x| (x - m).exp()).sum::<f64>().ln()
                    };
                    if r.is_finite() {
                        amax = amax.max(r.abs());
                    }
                    dst[i * inner + k] = r;
                }
            }
        }
        cur = next;
    }
    (Batch::from_vec(v.rows(), v.cols(), cur), amax)
}

/// Where exp(v) overflows (v = ±1000) the scaling domain returns ∞ while the log domain
/// stays finite and matches the reference.
#[test]
fn log_domain_finite_where_scaling_overflows() {
    let grid = Grid::new(&[7, 9]).unwrap();
    let gamma = 1e-2;
    let g = GridKernel::<f64>::new(&grid, gamma).unwrap();
    let dk = dense_of(&grid, gamma);
    let n = grid.len();
    let v = Batch::from_fn(n, 1, |i, _| match i % 3 {
        0 => 1000.0,
        1 => -1000.0,
        _ => f64::NEG_INFINITY,
    });
    let want = ref_lse(&grid.cost_matrix(), gamma, &v, false);
    for k in [&g as &dyn Kernel<f64>, &dk as &dyn Kernel<f64>] {
        let y = apply_new(k, &v.map(f64::exp), false);
        assert!(y.as_slice().iter().any(|x| x.is_infinite()));
        let got = apply_log_new(k, &v, false);
        assert!(got.as_slice().iter().all(|x| x.is_finite()));
        let tol = |w: f64| log_atol(EPS, &[7, 9], 1000.0, w);
        for (g, w) in got.as_slice().iter().zip(want.as_slice()) {
            assert!((g - w).abs() <= tol(*w), "{g} vs {w}");
        }
    }
}

/// An all-(-∞) column maps to an all-(-∞) column (no NaN from -∞ - (-∞)).
#[test]
fn log_domain_all_neg_infinity_column() {
    let grid = Grid::new(&[4, 5]).unwrap();
    let g = GridKernel::<f64>::new(&grid, 0.1).unwrap();
    let dk = dense_of(&grid, 0.1);
    let mut v = Batch::filled(20, 2, f64::NEG_INFINITY);
    v.set(3, 1, 0.0);
    for k in [&g as &dyn Kernel<f64>, &dk as &dyn Kernel<f64>] {
        for t in [false, true] {
            let out = apply_log_new(k, &v, t);
            assert!(out.col(0).iter().all(|&x| x == f64::NEG_INFINITY));
            assert!(out.col(1).iter().all(|x| x.is_finite()));
        }
    }
}

/// Contract of `apply_log_signed`: `x = sign ⊙ exp(v)` with sign ∈ {-1, 0, 1}, so an
/// entry of sign 0 is zero whatever its `v`. Here `v = [0, 800]`, `sign = [1, 0]`: the
/// result must be `K[:, 0]`, i.e. `(log 1, log e^{-1}) = (0, -1)` with sign +1.
#[test]
fn signed_log_zero_sign_with_finite_log() {
    let grid = Grid::new(&[2]).unwrap().with_units(GridUnits::Pixel);
    let g = GridKernel::<f64>::new(&grid, 1.0).unwrap();
    let dk = dense_of(&grid, 1.0);
    let v = Batch::from_vec(2, 1, vec![0.0, 800.0]);
    let s = Batch::from_vec(2, 1, vec![1.0, 0.0]);
    for k in [&g as &dyn Kernel<f64>, &dk as &dyn Kernel<f64>] {
        let (mut o, mut os) = (Batch::zeros(2, 1), Batch::zeros(2, 1));
        k.apply_log_signed(&v, &s, &mut o, &mut os, false);
        assert_eq!(os.as_slice(), &[1.0, 1.0], "{}", k.describe());
        assert!((o.get(0, 0) - 0.0).abs() <= 4.0 * EPS, "{:?}", o);
        assert!((o.get(1, 0) + 1.0).abs() <= 4.0 * EPS, "{:?}", o);
    }
    // The same in f32, where a gap of only ~90 already underflows.
    let g32 = GridKernel::<f32>::new(&grid, 1.0).unwrap();
    let v = Batch::from_vec(2, 1, vec![0.0f32, 100.0]);
    let s = Batch::from_vec(2, 1, vec![1.0f32, 0.0]);
    let (mut o, mut os) = (Batch::zeros(2, 1), Batch::zeros(2, 1));
    g32.apply_log_signed(&v, &s, &mut o, &mut os, false);
    assert_eq!(os.as_slice(), &[1.0, 1.0]);
}

/// `mean_log_window` is `None` before any log application and resets on clone.
#[test]
fn mean_log_window_bookkeeping() {
    let grid = Grid::new(&[200]).unwrap().with_units(GridUnits::Pixel);
    let g = GridKernel::<f64>::new(&grid, 1.0).unwrap();
    assert_eq!(g.mean_log_window(), None);
    let v = Batch::zeros(200, 1);
    let _ = apply_log_new(&g, &v, false);
    let w = g.mean_log_window().unwrap();
    // v = 0: window = ⌈√(ln(n/ε))⌉ - 1 = ⌈√(ln(200/2.2e-16))⌉ - 1 = ⌈6.43⌉ - 1 = 6.
    let expect = ((200.0 / EPS).ln().sqrt()).ceil() - 1.0;
    assert_eq!(w, expect);
    assert_eq!(g.clone().mean_log_window(), None);
}

/// Direct reference for `Kernel::apply_cost_log`: `Σ_j C_ij exp(v_j − C_ij/γ)` (`C_ji`
/// when `transpose`) as `(log |Σ|, sign)`, max-shifted over the nonzero terms.
fn ref_cost_log(
    c: &Batch<f64>,
    gamma: f64,
    v: &Batch<f64>,
    transpose: bool,
) -> (Batch<f64>, Batch<f64>) {
    let (n_out, n_in) = if transpose {
        (c.cols(), c.rows())
    } else {
        (c.rows(), c.cols())
    };
    let cost = |o: usize, i: usize| if transpose { c.get(i, o) } else { c.get(o, i) };
    let mut sign = Batch::zeros(n_out, v.cols());
    let out = Batch::from_fn(n_out, v.cols(), |o, b| {
        let terms: Vec<(f64, f64)> = (0..n_in)
            .filter(|&i| cost(o, i) != 0.0 && v.get(i, b) != f64::NEG_INFINITY)
            .map(|i| {
                let cc = cost(o, i);
                (v.get(i, b) - cc / gamma + cc.abs().ln(), cc.signum())
            })
            .collect();
        let m = terms.iter().fold(f64::NEG_INFINITY, |a, t| a.max(t.0));
        if m == f64::NEG_INFINITY {
            return m;
        }
        let s: f64 = terms.iter().map(|&(t, sg)| sg * (t - m).exp()).sum();
        sign.set(o, b, s.signum());
        m + s.abs().ln()
    });
    (out, sign)
}

/// `apply_cost_log` (the log-domain `(K ⊙ C) exp(v)` behind Sinkhorn's transport cost)
/// against the direct dense formula, for grid kernels (one weighted log-domain pass per
/// axis, adaptive windows) and dense kernels, from a nearly constant `K` (r = -2) to one
/// that is the identity in floating point (r = 3.5, where the scaling-domain `apply_cost`
/// is exactly zero off the diagonal). Tolerance: `log_atol` with the log-weights
/// `|ln C_ij| ≤ 20` added to the spread of the terms.
#[test]
fn cost_log_matches_direct_sum() {
    let mut rng = StdRng::seed_from_u64(17);
    let spread = 20.0;
    for units in UNITS {
        for shape in [vec![9], vec![5, 6], vec![3, 4, 5], vec![1, 7]] {
            let grid = Grid::new(&shape).unwrap().with_units(units);
            let n = grid.len();
            let c = grid.cost_matrix::<f64>();
            for r in [-2.0, 0.0, 2.0, 3.5] {
                let gamma = gamma_for(&grid, r);
                let g = GridKernel::<f64>::new(&grid, gamma).unwrap();
                let dk = dense_of(&grid, gamma);
                let v = log_batch(&mut rng, n, 3, spread, 0.2);
                for t in [false, true] {
                    let (want, want_s) = ref_cost_log(&c, gamma, &v, t);
                    for k in [&g as &dyn Kernel<f64>, &dk as &dyn Kernel<f64>] {
                        let (mut o, mut os) = (Batch::zeros(n, 3), Batch::zeros(n, 3));
                        k.apply_cost_log(&v, &mut o, &mut os, t);
                        assert_eq!(os.as_slice(), want_s.as_slice(), "{}", k.describe());
                        for (gv, wv) in o.as_slice().iter().zip(want.as_slice()) {
                            if *wv == f64::NEG_INFINITY {
                                assert_eq!(*gv, f64::NEG_INFINITY, "{}", k.describe());
                                continue;
                            }
                            let tol = log_atol(EPS, &shape, spread + 20.0, *wv);
                            assert!(
                                (gv - wv).abs() <= tol,
                                "{} r={r} t={t}: {gv} vs {wv} (tol {tol:e})",
                                k.describe()
                            );
                        }
                    }
                }
            }
        }
    }
    // A rectangular dense kernel with costs of both signs: the signed sum.
    let c = Batch::from_fn(4, 6, |i, j| (i as f64 - 0.7 * j as f64) * 0.3 - 0.2);
    let dk = DenseKernel::new(c.view(), 0.05).unwrap();
    for t in [false, true] {
        let n_in = if t { 4 } else { 6 };
        let n_out = 10 - n_in;
        let v = log_batch(&mut rng, n_in, 2, 5.0, 0.1);
        let (want, want_s) = ref_cost_log(&c, 0.05, &v, t);
        let (mut o, mut os) = (Batch::zeros(n_out, 2), Batch::zeros(n_out, 2));
        dk.apply_cost_log(&v, &mut o, &mut os, t);
        assert_eq!(os.as_slice(), want_s.as_slice());
        for (gv, wv) in o.as_slice().iter().zip(want.as_slice()) {
            // A signed sum is accurate relative to its largest term only (cancellation):
            // the shapes here are small enough for 1e-9 absolute in the log.
            assert!((gv - wv).abs() <= 1e-9 * (1.0 + wv.abs()), "{gv} vs {wv}");
        }
    }
}

/// The point-cloud costs drawn by [`point_cloud_kernel_matches_dense`].
const POINT_COSTS: [pointcloud::Cost; 5] = [
    pointcloud::Cost::HALF_SQ_EUCLIDEAN,
    pointcloud::Cost::Power { p: 1.0 },
    pointcloud::Cost::Power { p: 1.5 },
    pointcloud::Cost::SqEuclidean,
    pointcloud::Cost::Minkowski { q: 3.0 },
];

/// Entry-wise `|got − want| ≤ tol · scale` with `scale` the entry of `scale` (a bound on
/// the sum of the absolute values of the terms, so cancellation cannot make it vacuous).
fn within(got: &Batch<f64>, want: &Batch<f64>, scale: &Batch<f64>, tol: f64, what: &str) {
    for ((g, w), s) in got
        .as_slice()
        .iter()
        .zip(want.as_slice())
        .zip(scale.as_slice())
    {
        let ok = (g == w) || (g - w).abs() <= tol * s.abs().max(f64::MIN_POSITIVE);
        assert!(ok, "{what}: {g} vs {w} (scale {s}, tol {tol:e})");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// PointCloudKernel (costs from the points, truncated blockwise logsumexp) against the
    /// DenseKernel of `pointcloud::cost_matrix` for every application of the trait, both
    /// directions, each cost, random sizes (blocks of 64 partly filled, more than one
    /// block), dimensions, γ over three decades and `-∞` inputs; and `sinkhorn()` run
    /// through both gives the same plan cost.
    ///
    /// Tolerances. Both kernels evaluate the same `C_ij` (the dense one through the same
    /// `Cost::eval`; for `‖x − y‖²/2` the point kernel subtracts `(x_d − y_d)²·(1/2γ)` per
    /// coordinate instead of dividing the sum, `(dim + 3)ε` relative on `X = C/γ`). With
    /// unit-cube points and γ ≥ 0.01, `X ≤ dim·50 ≤ 200` for the entries that matter,
    /// so a log-domain result moves by at most `(dim + 3)·ε·(X + |v|)` plus the rounding
    /// of the two sums (`ε·(n + 4)` relative each) and the truncation (skipped blocks add
    /// less than `64·e^{-50}` relative, below `1e-20`): `atol = 8·ε·(dim + 3)·(200 + 5 +
    /// n)` bounds it. The scaling-domain products are relative to `Σ_j K_ij |x_j|` with
    /// the same budget (`exp` turns absolute exponent errors into relative ones).
    #[test]
    fn point_cloud_kernel_matches_dense(
        n in 1usize..150,
        m in 1usize..150,
        dim in 1usize..4,
        ci in 0usize..5,
        lg in -2.0f64..0.5,
        seed in any::<u64>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let cost = POINT_COSTS[ci];
        let gamma = 10f64.powf(lg);
        let x = Batch::from_fn(dim, n, |_, _| rng.random_range(0.0..1.0));
        let y = Batch::from_fn(dim, m, |_, _| rng.random_range(0.0..1.0));
        let pk = PointCloudKernel::new(&x, &y, cost, gamma).unwrap();
        let c = pointcloud::cost_matrix(&x, &y, cost).unwrap();
        let dk = DenseKernel::new(c.view(), gamma).unwrap();
        prop_assert_eq!((pk.nrows(), pk.ncols()), (n, m));
        prop_assert!(pk.cost_matrix() == c);
        let tol = 8.0 * EPS * (dim as f64 + 3.0) * (205.0 + n.max(m) as f64);
        for transpose in [false, true] {
            let (nin, nout) = if transpose { (n, m) } else { (m, n) };
            // log domain: |got − want| ≤ tol (absolute on logarithms)
            let v = log_batch(&mut rng, nin, 3, 5.0, 0.2);
            let (lp, ld) = (apply_log_new(&pk, &v, transpose), apply_log_new(&dk, &v, transpose));
            within(&lp, &ld, &Batch::filled(nout, 3, 1.0), tol, "apply_log");
            // scaling domain, relative to Σ_j K_ij |x_j| = K |x| (x ≥ 0 here)
            let xs = positive_batch(&mut rng, nin, 2);
            let (ap, ad) = (apply_new(&pk, &xs, transpose), apply_new(&dk, &xs, transpose));
            within(&ap, &ad, &ad, tol, "apply");
            // signed: relative to K |x| with |x| = exp(v)
            let s = Batch::from_fn(nin, 3, |_, _| [-1.0, 0.0, 1.0][rng.random_range(0..3)]);
            let (mut op, mut sp) = (Batch::zeros(nout, 3), Batch::zeros(nout, 3));
            let (mut od, mut sd) = (Batch::zeros(nout, 3), Batch::zeros(nout, 3));
            pk.apply_log_signed(&v, &s, &mut op, &mut sp, transpose);
            dk.apply_log_signed(&v, &s, &mut od, &mut sd, transpose);
            let lin = |o: &Batch<f64>, sg: &Batch<f64>| Batch::from_fn(nout, 3, |i, j| sg.get(i, j) * o.get(i, j).exp());
            let mag = apply_new(&dk, &v.map(|t| t.exp()), transpose);
            within(&lin(&op, &sp), &lin(&od, &sd), &mag, tol, "apply_log_signed");
            // (K ⊙ C) in the log domain, relative to (K ⊙ |C|) exp(v)
            pk.apply_cost_log(&v, &mut op, &mut sp, transpose);
            dk.apply_cost_log(&v, &mut od, &mut sd, transpose);
            let cm = Batch::from_fn(n, m, |i, j| c.get(i, j).abs());
            let ck = DenseKernel::new(c.view(), gamma).unwrap().matrix().clone();
            let kc = Batch::from_fn(n, m, |i, j| ck.get(i, j) * cm.get(i, j));
            let ev = v.map(|t| t.exp());
            let kcv = Batch::from_fn(nout, 3, |i, b| (0..nin).map(|j| {
                let e = if transpose { kc.get(j, i) } else { kc.get(i, j) };
                e * ev.get(j, b)
            }).sum());
            within(&lin(&op, &sp), &lin(&od, &sd), &kcv, tol, "apply_cost_log");
        }
        // (K ⊙ C) x in the scaling domain
        let xs = positive_batch(&mut rng, m, 2);
        let (mut cp, mut cd) = (Batch::zeros(n, 2), Batch::zeros(n, 2));
        pk.apply_cost(&xs, &mut cp);
        dk.apply_cost(&xs, &mut cd);
        within(&cp, &cd, &cd, tol, "apply_cost");
        // sinkhorn() runs on either kernel (log domain, a fixed count: same iterates up to
        // the rounding above, so the transport costs agree to a few times tol relative)
        let a = Batch::filled(n, 1, 1.0 / n as f64);
        let b = Batch::filled(m, 1, 1.0 / m as f64);
        let cfg = SinkhornConfig { log_domain: true, stop: Stop::Iterations(20), plan: false };
        let (sp, sd) = (sinkhorn(&pk, &a, &b, &cfg, None).unwrap(), sinkhorn(&dk, &a, &b, &cfg, None).unwrap());
        let (tp, td) = (sp.transport_cost[0], sd.transport_cost[0]);
        // 40 half-steps, each moving a potential by at most tol (absolute on logs), and
        // the cost itself: 100·tol relative.
        prop_assert!((tp - td).abs() <= 100.0 * tol * td.abs().max(1e-300), "{} vs {}", tp, td);
        // symmetric when both sides are the same points
        let pxx = PointCloudKernel::new(&x, &x, cost, gamma).unwrap();
        prop_assert!(pxx.is_symmetric());
        prop_assert!(!pk.is_symmetric() || x == y);
    }
}

/// The separable logsumexp computed straightforwardly in `f64`, axis by axis, summing
/// every term (no window, no shared shift): `c1g[a]` is the exponent per squared step of
/// axis `a` (the kernel's own, widened), `v` has `cols` columns of `Π shape` entries.
/// Returns the result and the largest finite magnitude among the inputs and the
/// intermediate results (`amax`, for the argument-rounding part of the tolerances).
fn separable_ref(shape: &[usize], c1g: &[f64], v: &[f64], cols: usize) -> (Vec<f64>, f64) {
    let mut cur = v.to_vec();
    let fin = |x: &[f64]| {
        x.iter()
            .filter(|t| t.is_finite())
            .fold(0.0f64, |a, t| a.max(t.abs()))
    };
    let mut amax = fin(&cur);
    for (a, &na) in shape.iter().enumerate() {
        let inner: usize = shape[a + 1..].iter().product();
        let mut next = vec![0.0; cur.len()];
        for (src, dst) in cur
            .chunks_exact(na * inner)
            .zip(next.chunks_exact_mut(na * inner))
        {
            for k in 0..inner {
                for i in 0..na {
                    let t: Vec<f64> = (0..na)
                        .map(|j| {
                            let dd = i as f64 - j as f64;
                            src[j * inner + k] - c1g[a] * dd * dd
                        })
                        .collect();
                    let m = t.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    dst[i * inner + k] = if m == f64::NEG_INFINITY {
                        m
                    } else {
                        m + t.iter().map(|&x| (x - m).exp()).sum::<f64>().ln()
                    };
                }
            }
        }
        cur = next;
        amax = amax.max(fin(&cur));
    }
    let _ = cols;
    (cur, amax)
}

/// Absolute tolerance of the shifted-GEMM log path against [`separable_ref`], with `ε`
/// the precision's epsilon, per axis (absolute log errors pass through later axes
/// unamplified, logsumexp being 1-Lipschitz in the max norm), twice for the two sides:
/// * `n_a ε`: summation of at most `n_a` nonnegative terms (GEMM or windowed sum);
/// * `8 ε`: the `exp`s (≤ 1.07 ulp each), the `ln`, the window's truncation (< ε), the
///   flushed factors (< ε/4 by the fallback threshold) and the final rounding;
/// * `8 ε (amax + 12)`: the argument rounding. A term that matters (within the window,
///   whose margin is `ln(n/ε) < 45`) has `c δ² ≤ |s_j| + |r| + 45 ≤ 2 amax + 45`; its
///   rounded arguments (`s_j − m`, `c1g δ δ` twice rounded, `s_j − cost − max` on the
///   windowed path) are off by at most `ε (|s_j| + |m| + 2 c δ² + |r|) ≤ ε (8 amax + 90)`.
fn gemm_log_atol(eps: f64, shape: &[usize], amax: f64) -> f64 {
    2.0 * shape
        .iter()
        .map(|&na| eps * (na as f64 + 8.0 + 8.0 * (amax + 12.0)))
        .sum::<f64>()
}

/// `got` against `want` entry by entry: the same `-∞` pattern, finite where `want` is,
/// within `tol`.
fn check_log(got: &[f64], want: &[f64], tol: f64, what: &str) -> f64 {
    let mut worst = 0.0f64;
    for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w == f64::NEG_INFINITY || g == f64::NEG_INFINITY {
            assert_eq!(g, w, "{what}: entry {k} (-inf pattern)");
            continue;
        }
        assert!(
            (g - w).abs() <= tol,
            "{what}: entry {k}: got {g:e}, want {w:e}, |diff| {:e} > tol {tol:e}",
            (g - w).abs()
        );
        worst = worst.max((g - w).abs());
    }
    worst
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The shifted-GEMM log path (`apply_log`, unsigned) against [`separable_ref`] in
    /// `f64` and `f32`: random shapes up to 300 cells per axis, 1-5 columns, γ over
    /// four and a half decades in pixel units (`c1g` from 0.003, every `K` entry normal,
    /// to 100, where `K` is zero beyond two cells), inputs uniform in ±spread with
    /// spread up to 5000 (lanes far wider than the `f64` and `f32` exponent ranges),
    /// `-∞` entries and sometimes a whole `-∞` column. Small γ with a wide spread makes
    /// the fallback fire (see `log_gemm_fallback_fires_and_stays_accurate` for a case
    /// where it must). Tolerance: [`gemm_log_atol`].
    #[test]
    fn log_gemm_matches_f64_reference(
        shape in prop_oneof![
            (1usize..=300).prop_map(|n| vec![n]),
            (1usize..=40, 1usize..=40).prop_map(|(a, b)| vec![a, b]),
            (1usize..=12, 1usize..=12, 1usize..=12).prop_map(|(a, b, c)| vec![a, b, c]),
        ],
        cols in 1usize..=5,
        lg in -2.0f64..2.5,
        spread_idx in 0usize..4,
        p_inf_idx in 0usize..3,
        dead_col in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let spread = [1.0, 50.0, 500.0, 5000.0][spread_idx];
        let p_inf = [0.0, 0.2, 0.8][p_inf_idx];
        let gamma = 10f64.powf(lg);
        let grid = Grid::new(&shape).unwrap().with_units(GridUnits::Pixel);
        let n = grid.len();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut v = log_batch(&mut rng, n, cols, spread, p_inf);
        if dead_col {
            for i in 0..n {
                v.set(i, cols - 1, f64::NEG_INFINITY);
            }
        }
        // f64: the kernel's exponent per step is 1/γ (c1 = 1 in pixel units).
        let g = GridKernel::<f64>::new(&grid, gamma).unwrap();
        let got = apply_log_new(&g, &v, false);
        let c1g = vec![1.0 / gamma; shape.len()];
        let (want, amax) = separable_ref(&shape, &c1g, v.as_slice(), cols);
        let worst = check_log(got.as_slice(), &want, gemm_log_atol(EPS, &shape, amax), "f64");
        report("log_gemm_vs_ref_f64_over_eps", worst / EPS);
        prop_assert!(g.log_fallback_fraction().is_some());
        report("log_gemm_fallback_f64", g.log_fallback_fraction().unwrap());
        // The transposed application is the same kernel.
        let got_t = apply_log_new(&g, &v, true);
        prop_assert_eq!(got_t.as_slice(), got.as_slice());
        // f32: inputs rounded to f32 (then exact in f64), the kernel's f32 exponent.
        let g32 = GridKernel::<f32>::new(&grid, gamma as f32).unwrap();
        let v32: Batch<f32> = v.cast();
        let got32 = apply_log_new(&g32, &v32, false).cast::<f64>();
        let c1g32 = vec![(1.0f32 / gamma as f32) as f64; shape.len()];
        let (want32, amax32) = separable_ref(&shape, &c1g32, v32.cast::<f64>().as_slice(), cols);
        let worst = check_log(got32.as_slice(), &want32, gemm_log_atol(EPS32, &shape, amax32), "f32");
        report("log_gemm_vs_ref_f32_over_eps32", worst / EPS32);
        report("log_gemm_fallback_f32", g32.log_fallback_fraction().unwrap());
    }
}

/// One lane with a huge maximum (1000) far from the rest of its mass, at γ = 1 pixel²:
/// shifted by 1000, that mass (`e^{-1000}`) is flushed, and the kernel between the two
/// (`e^{-(i-j)²}`) underflows, so the GEMM's sums far from the maximum are zero and those
/// outputs must fall back to the windowed sum. They stay within [`gemm_log_atol`] of the
/// reference (without the fallback they would be `-∞`), in `f64` and in `f32`; without
/// the spike nothing falls back.
#[test]
fn log_gemm_fallback_fires_and_stays_accurate() {
    let mut rng = StdRng::seed_from_u64(7);
    // 1-D: column 0 is [0, -∞, …, -∞, 1000], column 1 uniform in ±1.
    let n = 200;
    let grid = Grid::new(&[n]).unwrap().with_units(GridUnits::Pixel);
    let mut v = log_batch(&mut rng, n, 2, 1.0, 0.0);
    for i in 0..n {
        v.set(i, 0, f64::NEG_INFINITY);
    }
    v.set(0, 0, 0.0);
    v.set(n - 1, 0, 1000.0);
    // 2-D 64×64: one lane of axis 0 (fixed second index 5) gets 1000 at its far end.
    let grid2 = Grid::new(&[64, 64]).unwrap().with_units(GridUnits::Pixel);
    let mut v2 = log_batch(&mut rng, 64 * 64, 3, 1.0, 0.0);
    v2.set(63 * 64 + 5, 1, 1000.0);
    for (grid, v) in [(grid, v), (grid2, v2)] {
        let shape = grid.shape().to_vec();
        let g = GridKernel::<f64>::new(&grid, 1.0).unwrap();
        let got = apply_log_new(&g, &v, false);
        let (want, amax) = separable_ref(&shape, &vec![1.0; shape.len()], v.as_slice(), v.cols());
        check_log(
            got.as_slice(),
            &want,
            gemm_log_atol(EPS, &shape, amax),
            "f64",
        );
        let frac = g.log_fallback_fraction().unwrap();
        assert!(frac > 0.0, "{shape:?}: the fallback did not fire");
        // In 2-D every other entry is within ±1, so every sum is at least e^{-2}: the
        // spike is the cause, the same input without it falls back nowhere. (In 1-D the
        // column [0, -∞, …, -∞, 0.5] would still fall back in the middle, where the
        // result is about −i² ≪ −318 below the lane maximum.)
        if shape.len() == 2 {
            let calm = v.map(|x| if x == 1000.0 { 0.5 } else { x });
            let gc = GridKernel::<f64>::new(&grid, 1.0).unwrap();
            let _ = apply_log_new(&gc, &calm, false);
            assert_eq!(gc.log_fallback_fraction(), Some(0.0), "{shape:?}");
        }
        report("log_gemm_forced_fallback_fraction", frac);
        // f32: the same, in its own precision (1000 is exact in f32).
        let g32 = GridKernel::<f32>::new(&grid, 1.0).unwrap();
        let v32: Batch<f32> = v.cast();
        let got32 = apply_log_new(&g32, &v32, false).cast::<f64>();
        let (want32, amax32) = separable_ref(
            &shape,
            &vec![1.0; shape.len()],
            v32.cast::<f64>().as_slice(),
            v.cols(),
        );
        check_log(
            got32.as_slice(),
            &want32,
            gemm_log_atol(EPS32, &shape, amax32),
            "f32",
        );
        assert!(g32.log_fallback_fraction().unwrap() > 0.0);
    }
    // Column 0 of the 1-D case at the cell of its small mass: log(e^0 + e^{1000 - 199²}) = 0.
    let g = GridKernel::<f64>::new(&Grid::new(&[n]).unwrap().with_units(GridUnits::Pixel), 1.0)
        .unwrap();
    let mut v = Batch::filled(n, 1, f64::NEG_INFINITY);
    v.set(0, 0, 0.0);
    v.set(n - 1, 0, 1000.0);
    let got = apply_log_new(&g, &v, false);
    assert_eq!(got.get(0, 0), 0.0);
    assert_eq!(got.get(n - 1, 0), 1000.0);
}

/// Why the GEMM runs in `f64` for `f32` inputs: a lane with `0` at one end and `200` at
/// the other, the kernel spanning `e^{-250}` end to end. Shifted by 200, the first
/// entry's `e^{-200}` underflows in `f32` (below `e^{-104}`) but not in `f64`, where
/// it is far above the fallback threshold (`4·200·2⁻⁵¹¹/ε₃₂ ≈ e^{-331}`): no output falls back, and the
/// first output, `log(1 + e^{200-250}) ≈ 2e-22`, comes out as `0` to `f32` accuracy,
/// not as the `-50` an `f32` GEMM would give.
#[test]
fn log_gemm_f32_runs_in_f64_without_fallback() {
    let n = 200;
    let gamma = ((n - 1) * (n - 1)) as f32 / 250.0;
    let grid = Grid::new(&[n]).unwrap().with_units(GridUnits::Pixel);
    let g = GridKernel::<f32>::new(&grid, gamma).unwrap();
    let mut v = Batch::<f32>::filled(n, 1, f32::NEG_INFINITY);
    v.set(0, 0, 0.0);
    v.set(n - 1, 0, 200.0);
    let got = apply_log_new(&g, &v, false).cast::<f64>();
    assert_eq!(g.log_fallback_fraction(), Some(0.0));
    let (want, amax) = separable_ref(&[n], &[(1.0 / gamma) as f64], v.cast::<f64>().as_slice(), 1);
    check_log(
        got.as_slice(),
        &want,
        gemm_log_atol(EPS32, &[n], amax),
        "f32",
    );
    assert!(got.get(0, 0).abs() <= 1e-6, "{}", got.get(0, 0));
}

/// Special values keep their windowed-path meaning on the GEMM path: a `+∞` entry makes
/// its whole lane `+∞` (every term `+∞ − c δ²` is `+∞`), a NaN entry makes its own output
/// NaN, an all-`-∞` lane stays `-∞`.
#[test]
fn log_gemm_special_values() {
    let n = 50;
    let grid = Grid::new(&[n]).unwrap().with_units(GridUnits::Pixel);
    let g = GridKernel::<f64>::new(&grid, 2.0).unwrap();
    let mut v = Batch::from_fn(n, 3, |i, _| (i as f64 * 0.37).sin());
    v.set(10, 0, f64::INFINITY);
    v.set(20, 1, f64::NAN);
    for i in 0..n {
        v.set(i, 2, f64::NEG_INFINITY);
    }
    let got = apply_log_new(&g, &v, false);
    assert!(
        got.col(0).iter().all(|&x| x == f64::INFINITY),
        "{:?}",
        got.col(0)
    );
    assert!(got.get(20, 1).is_nan());
    assert!(got.col(2).iter().all(|&x| x == f64::NEG_INFINITY));
}

/// `with_par` on the shifted-GEMM log path: two threads (the batch is large enough to
/// cross the threading threshold) give the sequential result. Not bitwise: a part of
/// the fastest axis groups its lines into other chunks, whose windows can tile the GEMM
/// differently (terms below one ulp) and whose GEMMs have other shapes, so within
/// [`gemm_log_atol`] of each other, on a tiled (γ = 2) and an untiled (γ = 200) kernel.
#[test]
fn log_gemm_threads_match_sequential() {
    let grid = Grid::new(&[128, 96]).unwrap().with_units(GridUnits::Pixel);
    let n = grid.len();
    let mut rng = StdRng::seed_from_u64(11);
    let v = log_batch(&mut rng, n, 12, 30.0, 0.05);
    for gamma in [2.0, 200.0] {
        let seq = GridKernel::<f64>::new(&grid, gamma).unwrap();
        let par = GridKernel::<f64>::new(&grid, gamma)
            .unwrap()
            .with_par(faer::Par::rayon(2));
        let (a, b) = (
            apply_log_new(&seq, &v, false),
            apply_log_new(&par, &v, false),
        );
        let amax = a
            .as_slice()
            .iter()
            .filter(|x| x.is_finite())
            .fold(30.0f64, |m, x| m.max(x.abs()));
        let worst = check_log(
            b.as_slice(),
            a.as_slice(),
            gemm_log_atol(EPS, &[128, 96], amax),
            "threads",
        );
        report("log_gemm_threads_vs_seq_over_eps", worst / EPS);
    }
}

/// `with_par` on the scaling-domain grid application: two and three threads give the
/// sequential result bit for bit (a batch of several images is split by whole images, one
/// image by lines or blocks inside each axis; every column goes through GEMMs of the same
/// shapes as on one thread), on a batch of images and on a single image large enough to
/// cross the threshold, with an untiled (γ = 400) and a tiled, measured-band (γ = 2)
/// kernel, for `K` and for `K ⊙ C`.
#[test]
fn scaling_threads_match_sequential_bitwise() {
    let mut rng = StdRng::seed_from_u64(12);
    for (shape, cols) in [(vec![128usize, 96], 6usize), (vec![512, 384], 1)] {
        let grid = Grid::new(&shape).unwrap().with_units(GridUnits::Pixel);
        let n = grid.len();
        let x = Batch::from_fn(n, cols, |_, _| rng.random_range(1e-3..1.0));
        for gamma in [2.0, 400.0] {
            let seq = GridKernel::<f64>::new(&grid, gamma).unwrap();
            let want = apply_new(&seq, &x, false);
            let mut want_c = Batch::zeros(n, cols);
            seq.apply_cost(&x, &mut want_c);
            for th in [2, 3] {
                let par = GridKernel::<f64>::new(&grid, gamma)
                    .unwrap()
                    .with_par(faer::Par::rayon(th));
                let got = apply_new(&par, &x, false);
                let mut got_c = Batch::zeros(n, cols);
                par.apply_cost(&x, &mut got_c);
                for (name, g, w) in [("K", &got, &want), ("K ⊙ C", &got_c, &want_c)] {
                    let same = (g.as_slice().iter().zip(w.as_slice()))
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{name}, {shape:?} x {cols}, γ = {gamma}, {th} threads"
                    );
                }
            }
        }
    }
}
