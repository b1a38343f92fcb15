//! Every invalid input gives the typed `wassdl::Error` naming the argument (never a
//! panic, never a NaN result), and a γ too small for the scaling domain gives
//! `Error::Numerical` pointing at the log domain. Each check asserts the variant, the
//! `arg` field (and position/value where the variant has them) and that the Display text
//! is one readable line.

use proptest::prelude::*;
use wassdl::*;

/// Display is one non-empty line without debug noise, naming `arg` in backticks.
fn assert_one_line(e: &Error, arg: &str) {
    let s = e.to_string();
    assert!(!s.is_empty());
    assert!(!s.contains('\n'), "multi-line message: {s:?}");
    assert!(
        !s.contains("Some(") && !s.contains("{ "),
        "debug formatting leaked: {s}"
    );
    assert!(
        s.contains(&format!("`{arg}`")),
        "message does not name `{arg}`: {s}"
    );
}

/// The `arg` of any argument-carrying variant.
fn arg_of(e: &Error) -> Option<&'static str> {
    match e {
        Error::ShapeMismatch { arg, .. }
        | Error::NonFinite { arg, .. }
        | Error::Negative { arg, .. }
        | Error::NotNormalized { arg, .. }
        | Error::InvalidParameter { arg, .. } => Some(arg),
        _ => None,
    }
}

#[track_caller]
fn expect_err<T: std::fmt::Debug>(r: Result<T>, arg: &str) -> Error {
    let e = match r {
        Ok(v) => panic!("expected an error about `{arg}`, got Ok({v:?})"),
        Err(e) => e,
    };
    assert_eq!(arg_of(&e), Some(arg), "wrong argument in {e:?}");
    assert_one_line(&e, arg);
    e
}

#[track_caller]
fn expect_invalid<T: std::fmt::Debug>(r: Result<T>, arg: &str) {
    let e = expect_err(r, arg);
    assert!(matches!(e, Error::InvalidParameter { .. }), "{e:?}");
}

#[track_caller]
fn expect_shape<T: std::fmt::Debug>(r: Result<T>, arg: &str) {
    let e = expect_err(r, arg);
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e:?}");
}

#[track_caller]
fn expect_non_finite<T: std::fmt::Debug>(r: Result<T>, arg: &str, at: (usize, usize)) {
    let e = expect_err(r, arg);
    match e {
        Error::NonFinite { row, col, .. } => assert_eq!((row, col), at, "{e:?}"),
        _ => panic!("expected NonFinite, got {e:?}"),
    }
}

#[track_caller]
fn expect_negative<T: std::fmt::Debug>(r: Result<T>, arg: &str, at: (usize, usize), v: f64) {
    let e = expect_err(r, arg);
    match e {
        Error::Negative {
            row, col, value, ..
        } => {
            assert_eq!((row, col), at, "{e:?}");
            assert_eq!(value, v);
        }
        _ => panic!("expected Negative, got {e:?}"),
    }
}

#[track_caller]
fn expect_not_normalized<T: std::fmt::Debug>(r: Result<T>, arg: &str, column: usize) {
    let e = expect_err(r, arg);
    match e {
        Error::NotNormalized { col, sum, tol, .. } => {
            assert_eq!(col, column, "{e:?}");
            assert!((sum - 1.0).abs() > tol, "{e:?}");
        }
        _ => panic!("expected NotNormalized, got {e:?}"),
    }
}

const N: usize = 8;

fn kernel() -> GridKernel<f64> {
    GridKernel::new(&Grid::new(&[N]).unwrap(), 0.05).unwrap()
}

/// Two valid atoms (a flat one and a bump) and two valid weight columns.
fn valid() -> (Batch<f64>, Batch<f64>) {
    let mut atoms = Batch::filled(N, 2, 1.0 / N as f64);
    for i in 0..N {
        atoms.set(i, 1, if i < 4 { 0.25 } else { 0.0 });
    }
    let w = Batch::from_vec(2, 2, vec![0.3, 0.7, 1.0, 0.0]);
    (atoms, w)
}

fn bary(atoms: &Batch<f64>, w: &Batch<f64>, cfg: &BarycenterConfig) -> Result<Barycenters<f64>> {
    barycenters(&kernel(), atoms, w, cfg, None)
}

fn cfg() -> BarycenterConfig {
    BarycenterConfig::iterations(5)
}

#[test]
fn valid_inputs_are_accepted() {
    let (atoms, w) = valid();
    let out = bary(&atoms, &w, &cfg()).unwrap();
    assert!(out.p.as_slice().iter().all(|x| x.is_finite()));
    // Unbalanced barycenters accept unnormalized (nonnegative) atoms.
    let heavy = atoms.map(|x| 3.0 * x);
    assert!(bary(&heavy, &w, &cfg().rho(1.0)).is_ok());
    // A histogram off by less than the documented tolerance √n·1e-6 is accepted.
    let tol = validate::simplex_tol(N);
    let mut nearly = atoms.clone();
    nearly.set(0, 0, nearly.get(0, 0) + 0.5 * tol);
    assert!(bary(&nearly, &w, &cfg()).is_ok());
}

#[test]
fn gamma_must_be_positive_and_finite() {
    let grid = Grid::new(&[N]).unwrap();
    let c = grid.cost_matrix::<f64>();
    for g in [0.0, -0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        expect_invalid(GridKernel::<f64>::new(&grid, g), "gamma");
        expect_invalid(DenseKernel::new(c.view(), g), "gamma");
        let x = faer::Mat::<f64>::zeros(3, 2);
        expect_invalid(
            DenseKernel::sq_euclidean(x.as_ref(), x.as_ref(), g),
            "gamma",
        );
    }
    expect_invalid(GridKernel::<f32>::new(&grid, f32::NAN).map(|_| ()), "gamma");
}

#[test]
fn kernel_inputs() {
    let mut c = Grid::new(&[4]).unwrap().cost_matrix::<f64>();
    c.set(2, 3, f64::NAN);
    expect_non_finite(DenseKernel::new(c.view(), 1.0), "cost", (2, 3));
    c.set(2, 3, f64::INFINITY);
    expect_non_finite(DenseKernel::new(c.view(), 1.0), "cost", (2, 3));
    let x = faer::Mat::<f64>::zeros(3, 2);
    let y = faer::Mat::<f64>::zeros(4, 3);
    expect_shape(DenseKernel::sq_euclidean(x.as_ref(), y.as_ref(), 1.0), "y");
    expect_invalid(Grid::new(&[]), "grid");
    expect_invalid(Grid::new(&[2, 2, 2, 2]), "grid");
    expect_invalid(Grid::new(&[3, 0]), "grid");
}

#[test]
fn atoms_entries() {
    let (atoms, w) = valid();
    for (bad, (i, j)) in [
        (f64::NAN, (3, 1)),
        (f64::INFINITY, (0, 0)),
        (f64::NEG_INFINITY, (7, 1)),
    ] {
        let mut a = atoms.clone();
        a.set(i, j, bad);
        expect_non_finite(bary(&a, &w, &cfg()), "atoms", (i, j));
        // The unbalanced path checks them too.
        expect_non_finite(bary(&a, &w, &cfg().rho(1.0)), "atoms", (i, j));
    }
    let mut a = atoms.clone();
    a.set(5, 0, -0.125);
    a.set(0, 0, a.get(0, 0) + 0.125 + 0.125); // still sums to one
    expect_negative(bary(&a, &w, &cfg()), "atoms", (5, 0), -0.125);
    expect_negative(bary(&a, &w, &cfg().rho(1.0)), "atoms", (5, 0), -0.125);
    let mut a = atoms.clone();
    a.set(2, 1, a.get(2, 1) + 1e-3);
    expect_not_normalized(bary(&a, &w, &cfg()), "atoms", 1);
}

#[test]
fn weights_entries() {
    let (atoms, w) = valid();
    let mut bad = w.clone();
    bad.set(1, 0, f64::NAN);
    expect_non_finite(bary(&atoms, &bad, &cfg()), "weights", (1, 0));
    let bad = Batch::from_vec(2, 2, vec![0.3, 0.7, 1.5, -0.5]);
    expect_negative(bary(&atoms, &bad, &cfg()), "weights", (1, 1), -0.5);
    let bad = Batch::from_vec(2, 2, vec![0.3, 0.7, 0.5, 0.4]);
    expect_not_normalized(bary(&atoms, &bad, &cfg()), "weights", 1);
    // Weights stay simplex-constrained in the unbalanced case.
    expect_not_normalized(bary(&atoms, &bad, &cfg().rho(1.0)), "weights", 1);
}

#[test]
fn barycenter_shapes() {
    let (atoms, w) = valid();
    // atoms rows vs kernel
    let short = Batch::filled(N - 1, 2, 1.0 / (N - 1) as f64);
    expect_shape(bary(&short, &w, &cfg()), "atoms");
    // no atoms at all
    expect_shape(bary(&Batch::zeros(N, 0), &w, &cfg()), "atoms");
    // weights rows vs atoms cols
    let w3 = Batch::filled(3, 1, 1.0 / 3.0);
    expect_shape(bary(&atoms, &w3, &cfg()), "weights");
    // no weight columns
    expect_shape(bary(&atoms, &Batch::zeros(2, 0), &cfg()), "weights");
    // a rectangular kernel has no barycenters
    let c = Batch::from_fn(N, N + 1, |i, j| ((i as f64) - (j as f64)).powi(2));
    let rect = DenseKernel::new(c.view(), 1.0).unwrap();
    expect_shape(barycenters(&rect, &atoms, &w, &cfg(), None), "kernel");
    // warm-start shapes: N × (S·M) = 8 × 4 here
    let good = Scalings::<f64>::ones(N, 4, false);
    assert!(barycenters(&kernel(), &atoms, &w, &cfg(), Some(&good)).is_ok());
    let bad_a = Scalings {
        a: Batch::filled(N, 2, 1.0),
        ..good.clone()
    };
    expect_shape(
        barycenters(&kernel(), &atoms, &w, &cfg(), Some(&bad_a)),
        "warm.a",
    );
    let bad_b = Scalings {
        b: Batch::filled(N + 1, 4, 1.0),
        ..good.clone()
    };
    expect_shape(
        barycenters(&kernel(), &atoms, &w, &cfg(), Some(&bad_b)),
        "warm.b",
    );
}

#[test]
fn barycenter_parameters() {
    let (atoms, w) = valid();
    for tau in [0.1, 1.0, f64::NAN, f64::NEG_INFINITY, f64::INFINITY] {
        expect_invalid(bary(&atoms, &w, &cfg().tau(tau)), "tau");
        expect_invalid(cfg().tau(tau).validate(), "tau");
    }
    for rho in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        expect_invalid(bary(&atoms, &w, &cfg().rho(rho)), "rho");
    }
    expect_invalid(
        bary(&atoms, &w, &BarycenterConfig::iterations(0)),
        "iterations",
    );
    for tol in [0.0, -1e-9, f64::NAN, f64::INFINITY] {
        expect_invalid(
            bary(&atoms, &w, &BarycenterConfig::tolerance(tol, 100)),
            "tol",
        );
    }
    expect_invalid(
        bary(&atoms, &w, &BarycenterConfig::tolerance(1e-9, 0)),
        "max_iter",
    );
    // The log-domain path validates identically.
    expect_invalid(bary(&atoms, &w, &cfg().tau(0.5).log_domain(true)), "tau");
}

fn ot(a: &Batch<f64>, b: &Batch<f64>, cfg: &SinkhornConfig) -> Result<OtSolution<f64>> {
    sinkhorn(&kernel(), a, b, cfg, None)
}

fn ab() -> (Batch<f64>, Batch<f64>) {
    let (atoms, _) = valid();
    let b = Batch::from_fn(N, 2, |i, j| atoms.get(N - 1 - i, 1 - j));
    (atoms, b)
}

#[test]
fn sinkhorn_entries() {
    let (a, b) = ab();
    let c = SinkhornConfig::default();
    assert!(ot(&a, &b, &c).is_ok());
    let mut bad = a.clone();
    bad.set(4, 1, f64::NAN);
    expect_non_finite(ot(&bad, &b, &c), "a", (4, 1));
    let mut bad = b.clone();
    bad.set(6, 0, f64::INFINITY);
    expect_non_finite(ot(&a, &bad, &c), "b", (6, 0));
    let mut bad = b.clone();
    bad.set(1, 1, -0.25);
    bad.set(2, 1, bad.get(2, 1) + 0.5);
    expect_negative(ot(&a, &bad, &c), "b", (1, 1), -0.25);
    let bad = a.map(|x| 2.0 * x);
    expect_not_normalized(ot(&bad, &b, &c), "a", 0);
}

#[test]
fn sinkhorn_shapes_and_parameters() {
    let (a, b) = ab();
    let c = SinkhornConfig::default();
    expect_shape(ot(&Batch::filled(N - 1, 1, 1.0 / 7.0), &b, &c), "a");
    expect_shape(ot(&Batch::zeros(N, 0), &Batch::zeros(N, 0), &c), "a");
    // a vs b columns
    let b1 = Batch::from_vec(N, 1, b.col(0).to_vec());
    expect_shape(ot(&a, &b1, &c), "b");
    // b rows vs the kernel's second support (rectangular kernel)
    let cm = Batch::from_fn(N, N + 2, |i, j| ((i as f64) - (j as f64)).powi(2) / 64.0);
    let rect = DenseKernel::new(cm.view(), 0.1).unwrap();
    expect_shape(sinkhorn(&rect, &a, &b, &c, None), "b");
    // warm-start potentials
    let f = Batch::<f64>::zeros(N, 2);
    let g = Batch::<f64>::zeros(N, 2);
    assert!(sinkhorn(&kernel(), &a, &b, &c, Some((&f, &g))).is_ok());
    let f1 = Batch::<f64>::zeros(N, 1);
    expect_shape(sinkhorn(&kernel(), &a, &b, &c, Some((&f1, &g))), "warm.f");
    let g9 = Batch::<f64>::zeros(N + 1, 2);
    expect_shape(sinkhorn(&kernel(), &a, &b, &c, Some((&f, &g9))), "warm.g");
    // parameters
    let it0 = SinkhornConfig {
        stop: Stop::Iterations(0),
        ..c
    };
    expect_invalid(ot(&a, &b, &it0), "iterations");
    for tol in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let t = SinkhornConfig {
            stop: Stop::Tolerance { tol, max_iter: 10 },
            ..c
        };
        expect_invalid(ot(&a, &b, &t), "tol");
        expect_invalid(
            ot(
                &a,
                &b,
                &SinkhornConfig {
                    log_domain: true,
                    ..t
                },
            ),
            "tol",
        );
    }
}

/// `barycenters` rejects `Stop::Tolerance { max_iter: 0 }` with `max_iter`, `sinkhorn`
/// silently runs one iteration instead.
#[test]
fn sinkhorn_rejects_zero_max_iter() {
    let (a, b) = ab();
    let c = SinkhornConfig {
        stop: Stop::Tolerance {
            tol: 1e-9,
            max_iter: 0,
        },
        ..Default::default()
    };
    expect_invalid(ot(&a, &b, &c), "max_iter");
}

/// A γ so small that the Gibbs kernel underflows between the supports: the scaling
/// domain must fail loudly with `Error::Numerical` suggesting the log domain, which then
/// succeeds. (γ = 1e-4 on [0, 1]: exp(-C/γ) = 0 for |x - y| > 0.27.)
#[test]
fn tiny_gamma_scaling_fails_with_numerical_error_suggesting_log_domain() {
    let n = 40;
    let grid = Grid::new(&[n]).unwrap();
    let k = GridKernel::<f64>::new(&grid, 1e-4).unwrap();
    let dk = DenseKernel::new(grid.cost_matrix::<f64>().view(), 1e-4).unwrap();
    let atoms = Batch::from_fn(n, 2, |i, s| {
        if (s == 0 && i < 4) || (s == 1 && i >= n - 4) {
            0.25
        } else {
            0.0
        }
    });
    let w = Batch::from_vec(2, 1, vec![0.5, 0.5]);
    for kk in [&k as &dyn Kernel<f64>, &dk as &dyn Kernel<f64>] {
        for stop in [
            Stop::Iterations(50),
            Stop::Tolerance {
                tol: 1e-9,
                max_iter: 1000,
            },
        ] {
            let cfg = BarycenterConfig {
                stop,
                ..Default::default()
            };
            match barycenters(kk, &atoms, &w, &cfg, None) {
                Err(e @ Error::Numerical { .. }) => {
                    let s = e.to_string();
                    assert!(!s.contains('\n'), "{s}");
                    assert!(s.contains("log"), "no hint at the log domain: {s}");
                }
                other => panic!("{stop:?}: expected Error::Numerical, got {other:?}"),
            }
        }
        // The log domain gets through (fixed L: see `log_domain_tolerance_mode_at_tiny_gamma`
        // for the tolerance mode).
        let cfg = BarycenterConfig::iterations(200).log_domain(true);
        let out = barycenters(kk, &atoms, &w, &cfg, None).unwrap();
        assert!(out.p.as_slice().iter().all(|x| x.is_finite()));
        assert!(out.p.col_sums()[0] > 0.99);
        let a = Batch::from_vec(n, 1, atoms.col(0).to_vec());
        let b = Batch::from_vec(n, 1, atoms.col(1).to_vec());
        let cfg = SinkhornConfig::default();
        match sinkhorn(kk, &a, &b, &cfg, None) {
            Err(e @ Error::Numerical { solver, .. }) => {
                assert_eq!(solver, "sinkhorn");
                let s = e.to_string();
                assert!(!s.contains('\n') && s.contains("log domain"), "{s}");
            }
            other => panic!("sinkhorn: expected Error::Numerical, got {other:?}"),
        }
        // The log-domain Sinkhorn at this γ is `log_sinkhorn_transport_cost_at_small_gamma`
        // in tests/properties.rs.
    }
}

/// In the log domain the barycenter `p = exp(Σ λ_s log Kᵀa_s)` may underflow for the
/// first iteration (here log p ≈ -1250 at iteration 1: the scalings have not grown yet)
/// while the log iterates are perfectly finite; from iteration 2 on the mass is back and
/// the solve converges (fixed L = 2000 gives Σp = 1 - 1e-8, and tolerance mode warm
/// started from there converges). Tolerance mode aborts at iteration 1 instead, with a
/// message telling the user to switch to the log domain they are already in.
#[test]
fn log_domain_tolerance_mode_at_tiny_gamma() {
    let n = 40;
    let k = GridKernel::<f64>::new(&Grid::new(&[n]).unwrap(), 1e-4).unwrap();
    let atoms = Batch::from_fn(n, 2, |i, s| {
        if (s == 0 && i < 4) || (s == 1 && i >= n - 4) {
            0.25
        } else {
            0.0
        }
    });
    let w = Batch::from_vec(2, 1, vec![0.5, 0.5]);
    let cfg = BarycenterConfig::tolerance(1e-9, 100_000).log_domain(true);
    let out = barycenters(&k, &atoms, &w, &cfg, None).unwrap_or_else(|e| panic!("{e}"));
    // Converged: |Σp - 1| ≤ marginal error (see tests/properties.rs).
    assert!((out.p.col_sums()[0] - 1.0).abs() < 1e-8);
    // Fixed L = 1 fails for the same reason (the final mass check).
    let one = BarycenterConfig::iterations(1).log_domain(true);
    let r = barycenters(&k, &atoms, &w, &one, None);
    if let Err(e) = r {
        assert!(!e.to_string().contains("use the log-domain"), "{e}");
    }
}

/// Every variant's Display is one line; spot-check the texts.
#[test]
fn display_texts() {
    let cases = [
        (
            Error::ShapeMismatch {
                arg: "atoms",
                expected: "8 x (>= 1)".into(),
                found: "7 x 2".into(),
            },
            "`atoms` has shape 7 x 2, expected 8 x (>= 1)",
        ),
        (
            Error::NonFinite {
                arg: "a",
                row: 1,
                col: 2,
            },
            "`a` has a non-finite entry at (1, 2)",
        ),
        (
            Error::InvalidParameter {
                arg: "tau",
                requirement: "finite and <= 0",
                value: 0.5,
            },
            "`tau` = 0.5 is invalid: it must be finite and <= 0",
        ),
    ];
    for (e, text) in cases {
        assert_eq!(e.to_string(), text);
        assert_one_line(&e, arg_of(&e).unwrap());
    }
    let e = Error::NotNormalized {
        arg: "weights",
        col: 0,
        sum: 0.9,
        tol: 1e-6,
    };
    assert_one_line(&e, "weights");
    let e = Error::Negative {
        arg: "b",
        row: 0,
        col: 0,
        value: -1.0,
    };
    assert_one_line(&e, "b");
    // It is a std error (boxable, `?`-compatible).
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(!boxed.to_string().is_empty());
}

/// Warm-start scalings/potentials are checked like any other input: a NaN in them must
/// be reported as `NonFinite` naming the warm-start argument. Today the log-domain
/// Sinkhorn returns `Ok` with a garbage objective (its error fold `f64::max` drops NaN,
/// so the stopping test never sees it) and the barycenter reports an unrelated
/// `Numerical` error.
#[test]
fn warm_start_non_finite_is_rejected() {
    let (a, b) = ab();
    let f = Batch::<f64>::zeros(N, 2);
    let mut g = Batch::<f64>::zeros(N, 2);
    g.set(3, 0, f64::NAN);
    for log in [false, true] {
        let c = SinkhornConfig {
            log_domain: log,
            ..Default::default()
        };
        expect_non_finite(
            sinkhorn(&kernel(), &a, &b, &c, Some((&f, &g))),
            "warm.g",
            (3, 0),
        );
    }
    let (atoms, w) = valid();
    let mut warm = Scalings::<f64>::ones(N, 4, false);
    warm.b.set(2, 1, f64::NAN);
    for log in [false, true] {
        let r = barycenters(&kernel(), &atoms, &w, &cfg().log_domain(log), Some(&warm));
        expect_non_finite(r, "warm.b", (2, 1));
    }
    let mut warm = Scalings::<f64>::ones(N, 4, false);
    warm.b.set(2, 1, -1.0);
    let r = barycenters(&kernel(), &atoms, &w, &cfg(), Some(&warm));
    expect_negative(r, "warm.b", (2, 1), -1.0);
}

/// A cost so negative that `exp(-C/γ)` overflows gives a kernel with ∞ entries, and
/// `K x` is then NaN as soon as x has a zero (∞·0). The constructor should reject it.
#[test]
fn dense_kernel_rejects_overflowing_cost() {
    let c = Batch::from_vec(2, 2, vec![0.0, -1000.0, -1000.0, 0.0]);
    let r = DenseKernel::new(c.view(), 1.0);
    assert!(r.is_err(), "K = {:?}", r.map(|k| k.matrix().clone()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// One bad entry (NaN, ±∞ or a negative number) anywhere in otherwise valid inputs is
    /// reported with the right argument and position, by every entry point and variant;
    /// nothing panics and nothing returns NaN.
    #[test]
    fn one_bad_entry_is_reported(
        target in 0usize..4,
        kind in 0usize..4,
        i in 0usize..N,
        j in 0usize..2,
        log in any::<bool>(),
        rho in prop::option::of(0.01f64..10.0),
    ) {
        let bad = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.5][kind];
        let (mut atoms, mut w) = valid();
        let (mut a, mut b) = ab();
        let (name, row) = match target {
            0 => { atoms.set(i, j, bad); ("atoms", i) }
            1 => { let r = i % 2; w.set(r, j, bad); ("weights", r) }
            2 => { a.set(i, j, bad); ("a", i) }
            _ => { b.set(i, j, bad); ("b", i) }
        };
        let mut cfg = cfg().log_domain(log);
        if let Some(r) = rho {
            cfg = cfg.rho(r);
        }
        let r = if target < 2 {
            bary(&atoms, &w, &cfg).map(|_| ())
        } else {
            ot(&a, &b, &SinkhornConfig { log_domain: log, ..Default::default() }).map(|_| ())
        };
        let e = r.expect_err("a bad entry was accepted");
        prop_assert_eq!(arg_of(&e), Some(name), "{:?}", e);
        match e {
            Error::NonFinite { row: r, col, .. } => {
                prop_assert!(kind < 3);
                prop_assert_eq!((r, col), (row, j));
            }
            Error::Negative { row: r, col, value, .. } => {
                prop_assert_eq!(kind, 3);
                prop_assert_eq!((r, col, value), (row, j, bad));
            }
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }
}

// ---- Issue 12: a non-finite result is an error, never a value ------------------------

/// A cost entry equal to the largest float used to give `Ok` with cost 0, an empty plan
/// and NaN potentials: the simplex's potentials (sums of costs) overflowed.
#[test]
fn emd_refuses_a_result_that_is_not_finite() {
    let c = [0.0, f64::MAX, 1.0, 0.0];
    let r = emd::emd(&[0.5, 0.5], &[0.5, 0.5], &c, 1000);
    match r {
        Err(emd::EmdError::NonFiniteResult { what, .. }) => {
            assert!(what.contains("NaN") || what.contains("mass"), "{what}")
        }
        other => panic!("expected NonFiniteResult, got {other:?}"),
    }
    // the same through wassdl::Error: one line, Numerical, naming emd
    let e = Error::from(emd::emd(&[0.5, 0.5], &[0.5, 0.5], &c, 1000).unwrap_err());
    assert!(matches!(e, Error::Numerical { solver: "emd", .. }), "{e:?}");
    assert!(!e.to_string().contains('\n'));
}

/// γ = 1e308 with costs ±1.5e308: every term of the objective is finite, their sum is
/// not (it was returned as a NaN or −∞ cost, in both domains).
#[test]
fn sinkhorn_refuses_a_cost_beyond_the_float_range() {
    let c = Batch::from_vec(2, 2, vec![1.5e308, -1.5e308, -1.5e308, 1.5e308]);
    let k = DenseKernel::new(c.view(), 1e308).unwrap();
    let h = Batch::from_vec(2, 1, vec![0.5, 0.5]);
    for log_domain in [false, true] {
        let cfg = SinkhornConfig {
            log_domain,
            ..Default::default()
        };
        match sinkhorn(&k, &h, &h, &cfg, None) {
            Err(Error::Numerical {
                solver: "sinkhorn",
                message,
                ..
            }) => assert!(
                message.contains("not finite") || message.contains("range"),
                "{message}"
            ),
            other => panic!("log_domain {log_domain}: expected Numerical, got {other:?}"),
        }
    }
}

/// The converse of the test above: a Gaussian tail whose mass is far below one f32 ulp of
/// the total (about 1e-42 here) lets its scaling underflow to 0, so its potential is `-∞`.
/// The plan is still right to f32 precision, and it is a result, not an error (found by the
/// Python package's f32 test once potentials were checked).
#[test]
fn f32_potential_is_minus_infinity_on_a_negligible_tail() {
    let n = 50;
    let x: Vec<f64> = (0..n).map(|i| i as f64 / (n - 1) as f64).collect();
    let gauss = |mu: f64, sd: f64| {
        let v: Vec<f64> = x
            .iter()
            .map(|&t| (-(t - mu) * (t - mu) / (2.0 * sd * sd)).exp())
            .collect();
        let s: f64 = v.iter().sum();
        Batch::from_vec(n, 1, v.into_iter().map(|t| t / s).collect()).cast::<f32>()
    };
    let (a, b) = (gauss(0.25, 0.05), gauss(0.75, 0.04));
    let c = Batch::from_fn(n, n, |i, j| ((x[i] - x[j]) * (x[i] - x[j])) as f32);
    let k = DenseKernel::new(c.view(), 5e-2f32).unwrap();
    let cfg = SinkhornConfig {
        stop: Stop::Tolerance {
            tol: 1e-5,
            max_iter: 10_000,
        },
        ..Default::default()
    };
    let sol = sinkhorn(&k, &a, &b, &cfg, None).unwrap();
    // the case is the one meant: some potential did underflow, on a bin of negligible mass
    let f = sol.f.as_slice();
    let k_inf = f
        .iter()
        .position(|v| *v == f32::NEG_INFINITY)
        .expect("an underflowed bin");
    assert!(a.as_slice()[k_inf] > 0.0 && a.as_slice()[k_inf] <= f32::EPSILON);
    // and the solve met its tolerance (the L¹ marginal error of the stopping rule)
    assert!(sol.error < 1e-5, "{}", sol.error);
    assert!(sol.cost[0].is_finite());
}

/// Sources, target and cost of the unmixing tests that exposed issue 12's item 6.
fn mixture(scale: f64) -> (Batch<f64>, Vec<f64>, Batch<f64>) {
    let h = Batch::from_vec(3, 3, vec![0.2, 0.3, 0.5, 0.6, 0.3, 0.1, 0.1, 0.1, 0.8]);
    let x = [0.0, 0.5, 1.0];
    let c = Batch::from_fn(3, 3, |i, j| (x[i] - x[j]) * (x[i] - x[j]) * scale);
    (h, vec![0.3, 0.3, 0.4], c)
}

/// A step `lr · ∇` far beyond 1 rounds the projection off the simplex: that used to
/// reach the inner solver as "the two measures carry different total mass (4.3e17 vs 1)".
/// It is the step's fault, and the error says so (naming `lr`) at the step it happened.
#[test]
fn unmix_step_beyond_float_precision_names_lr_not_the_masses() {
    for (scale, lr) in [(1.0, 1e18), (1e306, 2e-3)] {
        let (h, y, c) = mixture(scale);
        let cfg = unmixing::UnmixingConfig {
            lr,
            iterations: 5,
            ..Default::default()
        };
        match unmixing::unmix(&h, &y, &c, None, &cfg) {
            Err(Error::Numerical {
                solver: "unmix",
                iteration,
                message,
            }) => {
                assert!(message.contains("`lr`"), "{message}");
                assert!((1..=5).contains(&iteration), "{iteration}");
            }
            other => panic!("scale {scale}, lr {lr}: expected Numerical, got {other:?}"),
        }
    }
    // zero steps are refused, as a zero iteration count is everywhere else
    let (h, y, c) = mixture(1.0);
    let cfg = unmixing::UnmixingConfig {
        iterations: 0,
        ..Default::default()
    };
    expect_invalid(unmixing::unmix(&h, &y, &c, None, &cfg), "iterations");
}

/// The inner Sinkhorn's non-convergence is reported at the projected-gradient step, with
/// the parameter names of the unmixing (`max_iter`, `reg`), not as the unmixing failing
/// "at iteration 10000".
#[test]
fn unmix_inner_failure_is_dated_by_the_step() {
    let (h, y, c) = mixture(1.0);
    let cfg = unmixing::UnmixingConfig {
        lr: 0.1,
        iterations: 3,
        solver: unmixing::InnerOt::Entropic {
            gamma: 1e-300,
            stop: Stop::Tolerance {
                tol: 1e-9,
                max_iter: 50,
            },
        },
    };
    match unmixing::unmix(&h, &y, &c, None, &cfg) {
        Err(Error::Numerical {
            solver: "unmix",
            iteration,
            message,
        }) => {
            assert!(iteration <= 3, "{iteration}: {message}");
            assert!(
                message.contains("`max_iter`") && message.contains("`reg`"),
                "{message}"
            );
        }
        // Converging is fine too (then every output is finite).
        Ok(r) => assert!(r.weights.iter().chain(&r.losses).all(|x| x.is_finite())),
        other => panic!("expected Numerical at a step, got {other:?}"),
    }
}

/// Masses are summed in f64: a million-bin histogram normalized in f32 loses ~3e-2 of
/// its mass when summed in f32 (each addition to a sum near 1 rounds 1e-6 by ~0.4 ulp
/// the same way), far beyond the √n · 1e-6 = 1e-3 tolerance, though its exact mass is
/// 1 within 1e-8.
#[test]
fn simplex_check_sums_in_f64() {
    let n = 1_000_000;
    let x = Batch::from_vec(n, 1, vec![1.0f32 / n as f32; n]);
    let exact: f64 = x.as_slice().iter().map(|&v| v as f64).sum();
    assert!((exact - 1.0).abs() < 1e-7, "{exact}");
    let naive = x.as_slice().iter().fold(0.0f32, |s, &v| s + v);
    assert!(
        (naive as f64 - 1.0).abs() > validate::simplex_tol(n),
        "{naive}"
    );
    validate::simplex_columns("a", &x).unwrap();
    assert_eq!(validate::sum_f64(&[1e16f64, 1.0, -1e16]), 1.0);
}

/// The property of [`results_are_finite_or_errors`] for one draw (costs `C_ij = ±m·10^e`
/// from `exps`, γ = `gman · 10^gexp`, histograms from the weights `wa`, `wb`).
#[allow(clippy::too_many_arguments)]
fn finite_or_errors(
    n1: usize,
    n2: usize,
    exps: &[(i32, f64, bool)],
    gexp: i32,
    gman: f64,
    wa: &[f64],
    wb: &[f64],
    log_domain: bool,
    lr_exp: i32,
) -> std::result::Result<(), TestCaseError> {
    let cost = Batch::from_fn(n1, n2, |i, j| {
        let (e, m, neg) = exps[(i * n2 + j) % exps.len()];
        let v = m * 10f64.powi(e);
        if neg {
            -v
        } else {
            v
        }
    });
    let gamma = gman * 10f64.powi(gexp);
    let norm = |w: &[f64]| {
        let s: f64 = w.iter().sum();
        w.iter().map(|x| x / s).collect::<Vec<_>>()
    };
    let (a, b) = (norm(&wa[..n1]), norm(&wb[..n2]));
    let (ab, bb) = (
        Batch::from_vec(n1, 1, a.clone()),
        Batch::from_vec(n2, 1, b.clone()),
    );
    let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());

    if let Ok(k) = DenseKernel::new(cost.view(), gamma) {
        let cfg = SinkhornConfig {
            log_domain,
            stop: Stop::Tolerance {
                tol: 1e-9,
                max_iter: 200,
            },
            plan: true,
        };
        if let Ok(ot) = sinkhorn(&k, &ab, &bb, &cfg, None) {
            prop_assert!(finite(&ot.cost), "cost {:?}", ot.cost);
            prop_assert!(
                finite(&ot.transport_cost),
                "transport {:?}",
                ot.transport_cost
            );
            prop_assert!(
                finite(ot.f.as_slice()) && finite(ot.g.as_slice()),
                "f {:?} g {:?}",
                ot.f,
                ot.g
            );
            prop_assert!(ot.error.is_finite());
            for p in ot.plans.iter().flatten() {
                prop_assert!(finite(p.as_slice()), "plan {:?}", p);
            }
        }
    }

    let rm: Vec<f64> = (0..n1)
        .flat_map(|i| (0..n2).map(move |j| (i, j)))
        .map(|(i, j)| cost.get(i, j))
        .collect();
    if let Ok(sol) = emd::emd(&a, &b, &rm, 10_000) {
        prop_assert!(sol.cost.is_finite(), "emd cost {}", sol.cost);
        prop_assert!(
            finite(&sol.f) && finite(&sol.g),
            "emd f {:?} g {:?}",
            sol.f,
            sol.g
        );
        let moved: f64 = sol.plan.iter().map(|p| p.mass).sum();
        prop_assert!((moved - 1.0).abs() < 1e-9, "emd plan mass {}", moved);
    }

    // Unmixing the target from two sources (a and the uniform histogram), exact and
    // entropic, with steps up to 1e20.
    let h = Batch::from_fn(n1, 2, |i, s| if s == 0 { a[i] } else { 1.0 / n1 as f64 });
    for solver in [
        unmixing::InnerOt::Exact { max_iter: 10_000 },
        unmixing::InnerOt::Entropic {
            gamma,
            stop: Stop::Tolerance {
                tol: 1e-6,
                max_iter: 200,
            },
        },
    ] {
        let cfg = unmixing::UnmixingConfig {
            lr: 10f64.powi(lr_exp),
            iterations: 3,
            solver,
        };
        if let Ok(r) = unmixing::unmix(&h, &b, &cost, None, &cfg) {
            prop_assert!(finite(&r.weights) && finite(&r.losses), "{:?}", r);
            let s: f64 = r.weights.iter().sum();
            prop_assert!((s - 1.0).abs() < 1e-6, "weights {:?}", r.weights);
        }
    }
    Ok(())
}

/// The two draws proptest shrank to when the solvers returned non-finite results (before
/// the result checks): costs near 1e91 against γ ≈ 4.6e88 in the scaling domain, and a
/// cost of 1e308 for emd (NaN potentials).
#[test]
fn results_are_finite_or_errors_regressions() {
    let e = |v: &[(i32, f64)]| {
        let mut x: Vec<(i32, f64, bool)> = v.iter().map(|&(a, b)| (a, b, false)).collect();
        x.resize(16, (0, 1.0, false));
        x
    };
    let exps = e(&[
        (0, 1.0),
        (91, 1.0),
        (0, 1.0),
        (91, 1.0),
        (91, 1.0),
        (0, 1.0),
        (87, 1.1052575848987725),
    ]);
    finite_or_errors(
        3,
        3,
        &exps,
        88,
        4.603000409053777,
        &[
            0.4083678896525586,
            0.448606794683276,
            0.36663017271797554,
            0.05,
        ],
        &[
            0.5006898187578775,
            0.4866159025829114,
            0.8866953806638925,
            0.05,
        ],
        false,
        0,
    )
    .unwrap();
    let exps = e(&[(0, 1.0), (0, 1.0), (0, 1.0), (308, 1.0)]);
    finite_or_errors(2, 2, &exps, 0, 1.0, &[0.05; 4], &[0.05; 4], false, 0).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Issue 12, item 10: random costs up to the float limit and γ over 600 orders of
    /// magnitude (1e-300 .. 1e300). Every solver either returns an error or a result that
    /// is finite throughout (cost, transport cost, potentials where the marginal has
    /// mass): never a finite-looking output with a NaN or an infinity inside.
    #[test]
    fn results_are_finite_or_errors(
        n1 in 2usize..5,
        n2 in 2usize..5,
        exps in prop::collection::vec((-300i32..=308, 1.0f64..1.79, any::<bool>()), 16),
        gexp in -300i32..=300,
        gman in 1.0f64..10.0,
        wa in prop::collection::vec(0.05f64..1.0, 4),
        wb in prop::collection::vec(0.05f64..1.0, 4),
        log_domain in any::<bool>(),
        lr_exp in -3i32..=20,
    ) {
        finite_or_errors(n1, n2, &exps, gexp, gman, &wa, &wb, log_domain, lr_exp)?;
    }
}
