//! Gradients from the tape against the JAX reference, finite differences, and each other.

mod common;
use common::*;
use proptest::prelude::*;
use wassdl::*;

fn fixed_l_problem() -> (DenseKernel<f64>, Batch<f64>, Batch<f64>, Batch<f64>) {
    let case = "barycenter_fixed_L";
    let c = load_matrix(case, "C.npy");
    let k = DenseKernel::new(c.view(), 1e-2).unwrap();
    (
        k,
        load_matrix(case, "D.npy"),
        load_vector(case, "lambda.npy"),
        load_vector(case, "target.npy"),
    )
}

/// Relative noise of ±1e-16 on every cost entry: what rounding alone does to `C`.
fn perturbed_kernel(seed: u64) -> DenseKernel<f64> {
    let mut c = load_matrix("barycenter_fixed_L", "C.npy");
    let mut s = seed;
    for v in c.as_mut_slice() {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
        *v *= 1.0 + 2e-16 * r;
    }
    DenseKernel::new(c.view(), 1e-2).unwrap()
}

/// The JAX gradients of `barycenter_fixed_L` (float64), with the case file's tolerance
/// (rtol 1e-8, atol 1e-12: its own FD check reaches ~1e-8).
///
/// Atom entries in the far tails (`D` down to 1e-87) have gradients that rounding alone
/// moves by up to ~1e-4 relative at L = 50: perturbing `C` by one ulp of noise moves them
/// that much (measured here, every run). Two correct float64 programs with different
/// summation orders (faer's GEMM and XLA's dot) cannot agree better there, so each entry
/// is also granted 10× its own measured rounding sensitivity. Where `D > 1e-10` the
/// sensitivity is below 1e-9 and the case's 1e-8 applies unchanged.
#[test]
fn tape_matches_jax_reference() {
    let case = "barycenter_fixed_L";
    let (k, d, lam, x) = fixed_l_problem();
    let noisy: Vec<_> = (1..=3).map(perturbed_kernel).collect();
    for l in [10, 50] {
        for (name, loss) in [
            ("quad", Loss::Quadratic),
            ("kl", Loss::KullbackLeibler),
            ("tv", Loss::TotalVariation),
        ] {
            let cfg = BarycenterConfig::iterations(l);
            let g =
                loss_and_grad(&k, &d, &lam, &x, &loss, &cfg, None, &GradConfig::default()).unwrap();
            let json = case_json(case);
            let run = json["runs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["tag"] == format!("{name}_L{l}"))
                .unwrap();
            assert_close(
                &format!("{name} L{l} loss"),
                &[g.loss],
                &[run["loss_value"].as_f64().unwrap()],
                1e-12,
                0.0,
            );
            let want_d = load_matrix(case, &format!("grad_D_{name}_L{l}.npy"));
            let want_l = load_vector(case, &format!("grad_lambda_{name}_L{l}.npy"));
            assert_close(
                &format!("{name} L{l} dλ"),
                g.grad_weights.as_slice(),
                want_l.as_slice(),
                1e-8,
                1e-12,
            );
            let mut sens = vec![0.0f64; g.grad_atoms.as_slice().len()];
            for kp in &noisy {
                let gp = loss_and_grad(kp, &d, &lam, &x, &loss, &cfg, None, &GradConfig::default())
                    .unwrap();
                for (s, (&a, &b)) in sens
                    .iter_mut()
                    .zip(g.grad_atoms.as_slice().iter().zip(gp.grad_atoms.as_slice()))
                {
                    *s = s.max((a - b).abs());
                }
            }
            for (i, ((&ours, &jax), &sn)) in g
                .grad_atoms
                .as_slice()
                .iter()
                .zip(want_d.as_slice())
                .zip(&sens)
                .enumerate()
            {
                let tol = 1e-8 * jax.abs() + 1e-12 + 10.0 * sn;
                assert!(
                    (ours - jax).abs() <= tol,
                    "{name} L{l} dD[{i}]: {ours:e} vs {jax:e} (sensitivity {sn:e})"
                );
                if d.as_slice()[i] > 1e-10 {
                    assert!(
                        (ours - jax).abs() <= 1e-8 * jax.abs() + 1e-12,
                        "{name} L{l} dD[{i}] (bulk)"
                    );
                }
            }
        }
    }
}

/// Checkpointing and chunking change the schedule, not the arithmetic: the barycenters and
/// the per-datapoint weight gradients are bitwise those of one full recording; the atom
/// gradient sums the same terms in another order (per segment, per chunk), so it agrees to
/// rounding: 1e-12 relative to the largest entry (a few hundred additions of ε-sized
/// reordering errors).
#[test]
fn checkpointing_and_chunking_are_exact() {
    let (k, d, _, _) = fixed_l_problem();
    let w = Batch::from_fn(3, 4, |s, m| {
        [0.2, 0.5, 0.3][s] * (1.0 + 0.1 * m as f64) / (1.0 + 0.1 * m as f64)
    });
    let x = Batch::from_fn(100, 4, |i, m| d.get(i, m % 3));
    for cfg in [
        BarycenterConfig::iterations(17),
        BarycenterConfig::iterations(17).tau(-0.3),
        BarycenterConfig::iterations(17).rho(0.5),
        BarycenterConfig::iterations(17).log_domain(true),
    ] {
        let full = loss_and_grad(
            &k,
            &d,
            &w,
            &x,
            &Loss::Quadratic,
            &cfg,
            None,
            &GradConfig::default(),
        )
        .unwrap();
        for (chunk, ck) in [
            (Some(1), None),
            (None, Some(4)),
            (Some(3), Some(5)),
            (None, Some(1)),
        ] {
            let opts = GradConfig {
                chunk,
                checkpoint: ck,
                ..Default::default()
            };
            let g = loss_and_grad(&k, &d, &w, &x, &Loss::Quadratic, &cfg, None, &opts).unwrap();
            assert_eq!(g.p, full.p, "{cfg:?} {opts:?}");
            let scale_d = full
                .grad_atoms
                .as_slice()
                .iter()
                .fold(0.0f64, |a, &b| a.max(b.abs()));
            let scale_w = full
                .grad_weights
                .as_slice()
                .iter()
                .fold(0.0f64, |a, &b| a.max(b.abs()));
            assert_close(
                "dD",
                g.grad_atoms.as_slice(),
                full.grad_atoms.as_slice(),
                0.0,
                1e-12 * scale_d,
            );
            assert_close(
                "dλ",
                g.grad_weights.as_slice(),
                full.grad_weights.as_slice(),
                0.0,
                1e-12 * scale_w,
            );
            if ck.is_some() {
                assert!(
                    g.peak_bytes < full.peak_bytes,
                    "checkpointing must shrink the footprint"
                );
            }
        }
    }
}

/// On a grid kernel whose products are banded per image (`GridKernel::band_for`: the
/// band of an image follows the dynamic range of its own entries), chunking still
/// changes nothing but the order of the atom-gradient sum: the barycenters are bitwise
/// those of one full recording. The images differ in dynamic range by orders of
/// magnitude, so their bands differ.
#[test]
fn chunked_gradients_with_per_image_bands_are_exact() {
    let grid = Grid::new(&[120, 3]).unwrap().with_units(GridUnits::Pixel);
    let k = GridKernel::<f64>::new(&grid, 1.0).unwrap();
    let n = grid.len();
    assert!(k.band_for(0, 1.0) < k.bands()[0]);
    let bump = |i: usize, c: f64, floor: f64| floor + (-((i / 3) as f64 - c).powi(2) / 50.0).exp();
    let mut atoms = Batch::from_fn(n, 2, |i, s| bump(i, 30.0 + 60.0 * s as f64, 1e-3));
    for s in 0..2 {
        normalize(atoms.col_mut(s));
    }
    let w = Batch::from_fn(2, 4, |s, m| {
        if s == 0 {
            0.2 + 0.2 * m as f64
        } else {
            0.8 - 0.2 * m as f64
        }
    });
    let mut x = Batch::from_fn(n, 4, |i, m| {
        bump(i, 40.0 + 10.0 * m as f64, 10f64.powi(-2 - 3 * m as i32))
    });
    for m in 0..4 {
        normalize(x.col_mut(m));
    }
    let cfg = BarycenterConfig::iterations(12);
    let full = loss_and_grad(
        &k,
        &atoms,
        &w,
        &x,
        &Loss::Quadratic,
        &cfg,
        None,
        &GradConfig::default(),
    )
    .unwrap();
    let opts = GradConfig {
        chunk: Some(1),
        ..Default::default()
    };
    let g = loss_and_grad(&k, &atoms, &w, &x, &Loss::Quadratic, &cfg, None, &opts).unwrap();
    assert_eq!(g.p, full.p);
    assert_eq!(g.grad_weights, full.grad_weights);
    // The atom gradient sums the chunks' parts in another order (see above).
    let scale = full
        .grad_atoms
        .as_slice()
        .iter()
        .fold(0.0f64, |a, &b| a.max(b.abs()));
    assert_close(
        "dD",
        g.grad_atoms.as_slice(),
        full.grad_atoms.as_slice(),
        0.0,
        1e-12 * scale,
    );
}

/// A random problem on a 1-D grid: cost `(x_i - x_j)²` on `linspace(0, 1, n)` (max 1).
#[derive(Clone, Debug)]
struct Problem {
    n: usize,
    s: usize,
    l: usize,
    gamma: f64,
    atoms: Vec<f64>,
    lam: Vec<f64>,
    target: Vec<f64>,
}

fn normalize(v: &mut [f64]) {
    let t: f64 = v.iter().sum();
    v.iter_mut().for_each(|x| *x /= t);
}

fn problem() -> impl Strategy<Value = Problem> {
    (3usize..=30, 1usize..=4, 1usize..=20, 0.05f64..1.0).prop_flat_map(|(n, s, l, gamma)| {
        (
            proptest::collection::vec(0.05f64..1.0, n * s),
            proptest::collection::vec(0.05f64..1.0, s),
            proptest::collection::vec(0.05f64..1.0, n),
        )
            .prop_map(move |(mut atoms, mut lam, mut target)| {
                atoms.chunks_mut(n).for_each(normalize);
                normalize(&mut lam);
                normalize(&mut target);
                Problem {
                    n,
                    s,
                    l,
                    gamma,
                    atoms,
                    lam,
                    target,
                }
            })
    })
}

fn kernel_of(p: &Problem) -> GridKernel<f64> {
    GridKernel::new(&Grid::new(&[p.n]).unwrap(), p.gamma).unwrap()
}

fn loss_of(p: &Problem, atoms: &[f64], lam: &[f64], cfg: &BarycenterConfig, loss: &Loss) -> f64 {
    let k = kernel_of(p);
    let (d, w, x) = (
        Batch::from_vec(p.n, p.s, atoms.to_vec()),
        Batch::from_vec(p.s, 1, lam.to_vec()),
        Batch::from_vec(p.n, 1, p.target.clone()),
    );
    let pb = barycenters(&k, &d, &w, cfg, None).unwrap().p;
    loss.value_and_grad(&pb, &x, &k).unwrap().0
}

/// Central difference of `f` along `dir`, and the tape's directional derivative.
///
/// Directions are tangent to the simplices (`e_i − e_j`), so every probe stays a valid
/// input. Step 1e-6: the rounding error of the difference is ~ε|f|/h ≈ 1e-10 |f| and the
/// truncation error h²|f'''|/6 is below 1e-9 for γ ≥ 0.05 (each Sinkhorn iteration is
/// smooth at scale γ), so 1e-5 relative to the gradient's scale leaves a 10× margin.
fn fd_check(
    p: &Problem,
    cfg: &BarycenterConfig,
    loss: &Loss,
) -> std::result::Result<(), TestCaseError> {
    let k = kernel_of(p);
    let (d, w, x) = (
        Batch::from_vec(p.n, p.s, p.atoms.clone()),
        Batch::from_vec(p.s, 1, p.lam.clone()),
        Batch::from_vec(p.n, 1, p.target.clone()),
    );
    let g = loss_and_grad(&k, &d, &w, &x, loss, cfg, None, &GradConfig::default()).unwrap();
    let scale = g
        .grad_atoms
        .as_slice()
        .iter()
        .chain(g.grad_weights.as_slice())
        .fold(0.0f64, |a, &b| a.max(b.abs()))
        .max(1e-12);
    let h = 1e-6;
    // weights: e_i - e_{i+1}
    for i in 0..p.s.saturating_sub(1) {
        let mut lp = p.lam.clone();
        let mut lm = p.lam.clone();
        lp[i] += h;
        lp[i + 1] -= h;
        lm[i] -= h;
        lm[i + 1] += h;
        let fd = (loss_of(p, &p.atoms, &lp, cfg, loss) - loss_of(p, &p.atoms, &lm, cfg, loss))
            / (2.0 * h);
        let ad = g.grad_weights.get(i, 0) - g.grad_weights.get(i + 1, 0);
        prop_assert!(
            (fd - ad).abs() <= 1e-5 * scale,
            "dλ dir {i}: fd {fd:e} tape {ad:e} scale {scale:e}"
        );
    }
    // atoms: e_(i,s) - e_(i+1,s) on a few coordinates
    for s in 0..p.s {
        for i in [0, p.n / 2, p.n - 2] {
            let at = |di: f64| {
                let mut a = p.atoms.clone();
                a[s * p.n + i] += di;
                a[s * p.n + i + 1] -= di;
                a
            };
            let fd = (loss_of(p, &at(h), &p.lam, cfg, loss)
                - loss_of(p, &at(-h), &p.lam, cfg, loss))
                / (2.0 * h);
            let ad = g.grad_atoms.get(i, s) - g.grad_atoms.get(i + 1, s);
            prop_assert!(
                (fd - ad).abs() <= 1e-5 * scale,
                "dD dir ({i},{s}): fd {fd:e} tape {ad:e} scale {scale:e}"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn tape_plain_matches_fd(p in problem()) {
        fd_check(&p, &BarycenterConfig::iterations(p.l), &Loss::Quadratic)?;
    }

    #[test]
    fn tape_log_domain_matches_fd(p in problem()) {
        fd_check(&p, &BarycenterConfig::iterations(p.l).log_domain(true), &Loss::KullbackLeibler)?;
    }

    #[test]
    fn tape_heavy_ball_matches_fd(p in problem(), tau in -0.5f64..0.0) {
        fd_check(&p, &BarycenterConfig::iterations(p.l).tau(tau), &Loss::Quadratic)?;
    }

    #[test]
    fn tape_unbalanced_matches_fd(p in problem(), rho in 0.1f64..10.0, tau in -0.3f64..=0.0, log in any::<bool>()) {
        fd_check(&p, &BarycenterConfig::iterations(p.l).rho(rho).tau(tau).log_domain(log), &Loss::Quadratic)?;
    }

    /// Log-domain and scaling-domain recordings of the same iteration give the same
    /// gradient (both exact to rounding; 1e-9 relative to the gradient's scale covers
    /// the L·ε growth of rounding through ≤ 20 iterations at γ ≥ 0.05).
    #[test]
    fn tape_log_equals_tape_plain(p in problem(), tau in -0.3f64..=0.0) {
        let k = kernel_of(&p);
        let (d, w, x) = (
            Batch::from_vec(p.n, p.s, p.atoms.clone()),
            Batch::from_vec(p.s, 1, p.lam.clone()),
            Batch::from_vec(p.n, 1, p.target.clone()),
        );
        let cfg = BarycenterConfig::iterations(p.l).tau(tau);
        let a = loss_and_grad(&k, &d, &w, &x, &Loss::Quadratic, &cfg, None, &GradConfig::default()).unwrap();
        let b = loss_and_grad(&k, &d, &w, &x, &Loss::Quadratic, &cfg.log_domain(true), None, &GradConfig::default()).unwrap();
        let scale = a.grad_atoms.as_slice().iter().fold(1e-12f64, |m, &v| m.max(v.abs()));
        for (u, v) in a.grad_atoms.as_slice().iter().zip(b.grad_atoms.as_slice()) {
            prop_assert!((u - v).abs() <= 1e-9 * scale, "{u:e} vs {v:e}");
        }
    }
}

/// Warm start (section 4.2): the initial scalings are constants, so the gradient is that
/// of the L iterations that follow; check it against finite differences with the same
/// warm state held fixed.
#[test]
fn warm_started_gradient_matches_fd() {
    let (k, d, lam, x) = fixed_l_problem();
    let warm = barycenters(&k, &d, &lam, &BarycenterConfig::iterations(30), None)
        .unwrap()
        .scalings;
    let cfg = BarycenterConfig::iterations(5);
    let g = loss_and_grad(
        &k,
        &d,
        &lam,
        &x,
        &Loss::Quadratic,
        &cfg,
        Some(&warm),
        &GradConfig::default(),
    )
    .unwrap();
    let f = |l: &[f64]| {
        let w = Batch::from_vec(3, 1, l.to_vec());
        let p = barycenters(&k, &d, &w, &cfg, Some(&warm)).unwrap().p;
        Loss::Quadratic.value_and_grad(&p, &x, &k).unwrap().0
    };
    let h = 1e-6;
    let l0 = lam.as_slice().to_vec();
    for (i, j) in [(0, 1), (1, 2), (0, 2)] {
        let (mut lp, mut lm) = (l0.clone(), l0.clone());
        lp[i] += h;
        lp[j] -= h;
        lm[i] -= h;
        lm[j] += h;
        let fd = (f(&lp) - f(&lm)) / (2.0 * h);
        let ad = g.grad_weights.get(i, 0) - g.grad_weights.get(j, 0);
        // Same error budget as `fd_check` (γ = 1e-2 here, gradient scale ~0.06).
        assert!(
            (fd - ad).abs() <= 1e-5 * 0.06,
            "warm dλ ({i},{j}): fd {fd:e} tape {ad:e}"
        );
    }
}

/// The tape's footprint is the documented formula (docs/memory.md), value for value:
/// `N·S + S·M + 3·N·S·M + L·(6·N·S·M + 2·N·M) + 2·N·M + 1` scalars for the plain
/// balanced iteration with the quadratic loss.
#[test]
fn tape_memory_matches_formula() {
    let (k, d, _, _) = fixed_l_problem();
    let (n, s, m) = (100usize, 3usize, 4usize);
    let w = Batch::filled(s, m, 1.0 / 3.0);
    let x = Batch::from_fn(n, m, |i, j| d.get(i, j % s));
    for l in [1usize, 10, 40] {
        let g = loss_and_grad(
            &k,
            &d,
            &w,
            &x,
            &Loss::Quadratic,
            &BarycenterConfig::iterations(l),
            None,
            &GradConfig::default(),
        )
        .unwrap();
        let values =
            n * s + s * m + 3 * n * s * m + l * (6 * n * s * m + 2 * n * m) + 2 * n * m + 1;
        assert_eq!(g.peak_bytes, 8 * values, "L = {l}");
        // Checkpointing every k = √L iterations keeps O(√L) iterations on the tape.
        let kck = (l as f64).sqrt().ceil() as usize;
        let opts = GradConfig {
            checkpoint: Some(kck),
            ..Default::default()
        };
        let c = loss_and_grad(
            &k,
            &d,
            &w,
            &x,
            &Loss::Quadratic,
            &BarycenterConfig::iterations(l),
            None,
            &opts,
        )
        .unwrap();
        let per_iter = 8 * (6 * n * s * m + 2 * n * m);
        let states = l.div_ceil(kck) * 2 * n * s * m * 8;
        assert!(
            c.peak_bytes
                <= 8 * (values - l * (6 * n * s * m + 2 * n * m) + 2 * n * s * m)
                    + kck * per_iter
                    + states
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// The two gradient sources agree: Algorithm 1 (scaling) and Algorithm 4 (log domain)
    /// through `GradientMethod::Analytic` against the tape, on random problems. Both are
    /// exact derivatives of the same L iterations, so they differ by rounding only: 1e-9 of
    /// the gradient's scale covers L·ε growth through ≤ 20 iterations at γ ≥ 0.05.
    #[test]
    fn analytic_equals_tape(p in problem(), log in any::<bool>(), kl in any::<bool>()) {
        let k = kernel_of(&p);
        let (d, w, x) = (
            Batch::from_vec(p.n, p.s, p.atoms.clone()),
            Batch::from_vec(p.s, 1, p.lam.clone()),
            Batch::from_vec(p.n, 1, p.target.clone()),
        );
        let loss = if kl { Loss::KullbackLeibler } else { Loss::Quadratic };
        let cfg = BarycenterConfig::iterations(p.l).log_domain(log);
        let t = loss_and_grad(&k, &d, &w, &x, &loss, &cfg, None, &GradConfig::default()).unwrap();
        let opts = GradConfig { method: GradientMethod::Analytic, ..Default::default() };
        let a = loss_and_grad(&k, &d, &w, &x, &loss, &cfg, None, &opts).unwrap();
        prop_assert!((t.loss - a.loss).abs() <= 1e-12 * t.loss.abs().max(1e-300));
        let scale = t.grad_atoms.as_slice().iter().chain(t.grad_weights.as_slice()).fold(1e-12f64, |m, &v| m.max(v.abs()));
        for (u, v) in t.grad_atoms.as_slice().iter().chain(t.grad_weights.as_slice()).zip(a.grad_atoms.as_slice().iter().chain(a.grad_weights.as_slice())) {
            prop_assert!((u - v).abs() <= 1e-9 * scale, "tape {u:e} vs analytic {v:e}");
        }
    }
}

/// Heavy ball (Algorithm 5) on atoms with empty bins, through the tape: the forward
/// pins a zero scaling at zero (`-∞` in the log domain) where `prev^τ new^{1-τ}` is
/// `∞ · 0`, and the backward gives 0 there (the exact derivative for `prev > 0`: the
/// exponent `1 - τ > 1` makes `new^{1-τ}` flat at 0). The tape must agree with the eager
/// solver, stay finite everywhere, and match central differences along directions that
/// keep the empty bins empty (same step and budget as `fd_check`). At the empty bins
/// themselves the derivative does not exist in general (`a_i ∝ d_i^{1-τ^l}` with an
/// exponent below or above 1 depending on the parity of `l`), so only finiteness is
/// required there.
#[test]
fn tape_heavy_ball_with_zero_atoms_matches_fd() {
    let n = 20;
    let k = GridKernel::<f64>::new(&Grid::new(&[n]).unwrap(), 0.05).unwrap();
    let atoms = Batch::from_fn(n, 2, |i, s| {
        if (s == 0 && i < 5) || (s == 1 && i >= 15) {
            0.2
        } else {
            0.0
        }
    });
    let lam = Batch::from_vec(2, 1, vec![0.4, 0.6]);
    let x = Batch::from_fn(n, 1, |i, _| (1.0 + i as f64) / 210.0);
    for log in [false, true] {
        let cfg = BarycenterConfig::iterations(12).tau(-0.3).log_domain(log);
        let g = loss_and_grad(
            &k,
            &atoms,
            &lam,
            &x,
            &Loss::Quadratic,
            &cfg,
            None,
            &GradConfig::default(),
        )
        .unwrap_or_else(|e| panic!("log={log}: {e}"));
        let eager = barycenters(&k, &atoms, &lam, &cfg, None).unwrap().p;
        assert_eq!(
            g.p.as_slice(),
            eager.as_slice(),
            "log={log}: tape and eager differ"
        );
        assert!(
            g.grad_atoms
                .as_slice()
                .iter()
                .chain(g.grad_weights.as_slice())
                .all(|v| v.is_finite()),
            "log={log}: non-finite gradient"
        );
        let f = |d: &Batch<f64>, l: &Batch<f64>| {
            let p = barycenters(&k, d, l, &cfg, None).unwrap().p;
            Loss::Quadratic.value_and_grad(&p, &x, &k).unwrap().0
        };
        let scale = g
            .grad_atoms
            .as_slice()
            .iter()
            .chain(g.grad_weights.as_slice())
            .fold(0.0f64, |a, &b| a.max(b.abs()));
        let h = 1e-6;
        let lp = Batch::from_vec(2, 1, vec![0.4 + h, 0.6 - h]);
        let lm = Batch::from_vec(2, 1, vec![0.4 - h, 0.6 + h]);
        let fd = (f(&atoms, &lp) - f(&atoms, &lm)) / (2.0 * h);
        let ad = g.grad_weights.get(0, 0) - g.grad_weights.get(1, 0);
        assert!(
            (fd - ad).abs() <= 1e-5 * scale,
            "log={log} dλ: fd {fd:e} tape {ad:e}"
        );
        // Within each atom's support: bins (1, 3) of atom 0 and (16, 18) of atom 1.
        for (s, i, j) in [(0, 1, 3), (1, 16, 18)] {
            let at = |di: f64| {
                let mut d = atoms.clone();
                d.set(i, s, d.get(i, s) + di);
                d.set(j, s, d.get(j, s) - di);
                d
            };
            let fd = (f(&at(h), &lam) - f(&at(-h), &lam)) / (2.0 * h);
            let ad = g.grad_atoms.get(i, s) - g.grad_atoms.get(j, s);
            assert!(
                (fd - ad).abs() <= 1e-5 * scale,
                "log={log} dD ({i},{j};{s}): fd {fd:e} tape {ad:e}"
            );
        }
    }
}

/// Every reduction of the objective sums in `f64` (`wide_sum`), so an `f32` loss over a
/// cardiac-size batch (65 280 pixels × 13 frames) carries a few roundings, not a drift that
/// grows with `N`: a naive `f32` running sum of these 848 640 squared residuals was off by
/// 6·10⁻⁴ of the loss, ten times a late L-BFGS decrease.
#[test]
fn f32_reductions_do_not_drift_with_size() {
    let (n, m) = (272 * 240, 13);
    let grid = Grid::new(&[4, 4]).unwrap();
    let k = GridKernel::<f32>::new(&grid, 1.0).unwrap();
    // Histogram-like entries near 1/N with residuals of a few percent, as late in a fit.
    let p = Batch::<f32>::from_fn(n, m, |i, j| {
        (1.0 + 0.5 * ((i * 7 + j * 13) % 101) as f32 / 101.0) / n as f32
    });
    let x = Batch::<f32>::from_fn(n, m, |i, j| {
        p.get(i, j) * (1.0 + 0.03 * (((i * 31 + j) % 17) as f32 - 8.0) / 8.0)
    });
    // The reference: the same f32 inputs, every operation in f64.
    let exact: f64 = p
        .as_slice()
        .iter()
        .zip(x.as_slice())
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum();
    let (v, _) = Loss::Quadratic.value_and_grad(&p, &x, &k).unwrap();
    // Each f32 term is (a − b)² with two roundings (the difference and the square), the
    // f64 sum adds nothing visible, the result one more rounding: 3·2⁻²⁴ relative.
    let tol = 3.0 * f32::EPSILON as f64 / 2.0;
    let rel = (v as f64 - exact).abs() / exact;
    assert!(
        rel <= tol,
        "f32 quadratic loss off by {rel:e} (tolerance {tol:e})"
    );
    // The tape's reduction of the same loss.
    let mut tape = wassdl::tape::Tape::<f32>::new();
    let pv = tape.var(p.clone());
    let out = Loss::Quadratic.record(&mut tape, &pv, &x, &k).unwrap();
    let rel = (tape.value(&out).get(0, 0) as f64 - exact).abs() / exact;
    assert!(rel <= tol, "recorded f32 quadratic loss off by {rel:e}");
    // A mass, as the softmax of eq. 13 divides by it.
    let exact_mass: f64 = p.as_slice().iter().map(|&a| a as f64).sum();
    let rel = (p.sum() as f64 - exact_mass).abs() / exact_mass;
    assert!(rel <= f32::EPSILON as f64 / 2.0, "f32 mass off by {rel:e}");
}

/// Heavy ball (Algorithm 5) with scalings near the bottom of the `f64` range, as late in
/// the `psf_chromatic` fit: a narrow kernel (γ = 0.5 px²) between two bumps with 10⁻⁷
/// tails and a barycenter weight of 5·10⁻⁸ on one of them. The scalings there reach
/// ~10⁻²⁸⁰; the textbook derivative `τ p^{τ-1} n^{1-τ}` of `p^τ n^{1-τ}` overflowed
/// (`p^{-1.1} = ∞`) and made the whole gradient NaN with a finite loss. The tape must stay
/// finite and match central differences along random directions (step 10⁻⁶ of
/// parameters of order 1: truncation ~10⁻¹² and rounding ~10⁻¹⁰ relative at this loss;
/// the 10⁻⁶ budget is the one of `fd_check`).
#[test]
fn tape_heavy_ball_near_underflow_matches_fd() {
    let n = 40;
    let grid = Grid::new(&[n]).unwrap().with_units(GridUnits::Pixel);
    let k = GridKernel::<f64>::new(&grid, 0.5).unwrap();
    let bump = |c: f64, w: f64| -> Vec<f64> {
        let v: Vec<f64> = (0..n)
            .map(|i| (-((i as f64 - c) / w).powi(2)).exp() + 1.5e-4)
            .collect();
        let t: f64 = v.iter().sum();
        v.into_iter().map(|x| x / t).collect()
    };
    let mut d = bump(13.0, 2.0);
    d.extend(bump(26.0, 4.0));
    let atoms = Batch::from_vec(n, 2, d);
    let lam = Batch::from_vec(2, 2, vec![5e-8, 1.0 - 5e-8, 0.5, 0.5]);
    let x = Batch::from_fn(n, 2, |i, j| {
        let v = bump(20.0 + 4.0 * j as f64, 3.0);
        v[i]
    });
    let cfg = BarycenterConfig::iterations(120).tau(-0.1);
    let g = loss_and_grad(
        &k,
        &atoms,
        &lam,
        &x,
        &Loss::Quadratic,
        &cfg,
        None,
        &GradConfig::default(),
    )
    .unwrap();
    let (ga, gw) = (g.grad_atoms.as_slice(), g.grad_weights.as_slice());
    assert!(
        ga.iter().chain(gw).all(|v| v.is_finite()),
        "non-finite gradient with a finite loss {:e}",
        g.loss
    );
    let f = |d: &Batch<f64>, l: &Batch<f64>| {
        let p = barycenters(&k, d, l, &cfg, None).unwrap().p;
        Loss::Quadratic.value_and_grad(&p, &x, &k).unwrap().0
    };
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let mut rng = StdRng::seed_from_u64(7);
    let h = 1e-6;
    for _ in 0..3 {
        // Relative perturbations of the atoms (they keep the tails positive), and
        // perturbations of the weights small enough to keep 5·10⁻⁸ positive.
        let da = Batch::from_fn(n, 2, |i, s| atoms.get(i, s) * rng.random_range(-1.0..1.0));
        let dw = Batch::from_fn(2, 2, |_, _| rng.random_range(-1.0..1.0) * 1e-8);
        let at = |t: f64| {
            (
                Batch::from_fn(n, 2, |i, s| atoms.get(i, s) + t * da.get(i, s)),
                Batch::from_fn(2, 2, |i, j| lam.get(i, j) + t * dw.get(i, j)),
            )
        };
        let ((ap, lp), (am, lm)) = (at(h), at(-h));
        let fd = (f(&ap, &lp) - f(&am, &lm)) / (2.0 * h);
        let ad: f64 = ga
            .iter()
            .zip(da.as_slice())
            .map(|(a, b)| a * b)
            .sum::<f64>()
            + gw.iter()
                .zip(dw.as_slice())
                .map(|(a, b)| a * b)
                .sum::<f64>();
        assert!(
            (fd - ad).abs() <= 1e-6 * fd.abs().max(ad.abs()),
            "fd {fd:e} tape {ad:e}"
        );
    }
}
