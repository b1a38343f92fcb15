//! Cross-checks against `../shared/reference/` (POT 0.9.7, JAX 0.10; see its README).
//! Each tolerance is the one the case file states.

mod common;
use common::*;
use wassdl::*;

fn dense(case: &str, reg: f64) -> DenseKernel<f64> {
    let c = load_matrix(case, "C.npy");
    DenseKernel::new(c.view(), reg).unwrap()
}

#[test]
fn sinkhorn_1d_plans_and_costs() {
    let case = "sinkhorn_1d";
    let json = case_json(case);
    let a = load_vector(case, "a.npy");
    let b = load_vector(case, "b.npy");
    for run in json["runs"].as_array().unwrap() {
        let tag = run["tag"].as_str().unwrap();
        let reg = run["reg"].as_f64().unwrap();
        let log = run["method"].as_str().unwrap() == "sinkhorn_log";
        let rtol = run["tolerance"]["value_rtol"].as_f64().unwrap();
        let patol = run["tolerance"]["plan_atol"].as_f64().unwrap();
        let k = dense(case, reg);
        let cfg = SinkhornConfig {
            log_domain: log,
            stop: Stop::Tolerance {
                tol: 1e-14,
                max_iter: 100_000,
            },
            plan: true,
        };
        let ot = sinkhorn(&k, &a, &b, &cfg, None).unwrap();
        let want_tc = run["sinkhorn2_value"].as_f64().unwrap();
        let want_obj = run["entropic_objective"].as_f64().unwrap();
        assert_close(
            &format!("{tag} <T,C>"),
            &ot.transport_cost,
            &[want_tc],
            rtol,
            0.0,
        );
        assert_close(
            &format!("{tag} objective"),
            &ot.cost,
            &[want_obj],
            rtol,
            0.0,
        );
        let plan_ref = load_matrix(case, &format!("plan_{tag}.npy"));
        let plan = &ot.plans.as_ref().unwrap()[0];
        assert_close(
            &format!("{tag} plan"),
            plan.as_slice(),
            plan_ref.as_slice(),
            0.0,
            patol,
        );
    }
}

#[test]
fn barycenter_1d_converged() {
    let case = "barycenter_1d";
    let atoms = load_matrix(case, "A.npy");
    let w = load_vector(case, "weights.npy");
    let uniform = Batch::filled(3, 1, 1.0 / 3.0);
    // POT's `sinkhorn_log` output is the trustworthy one (case notes: its plain solver
    // converges to a wrong point with non-uniform weights); it equals an independent IBP.
    for (reg, atol) in [(1e-2, 1e-11), (1e-3, 1e-11)] {
        for (wname, weights) in [("w", &w), ("uniform", &uniform)] {
            let want = load_vector(case, &format!("bary_reg{reg}_{wname}_sinkhorn_log.npy"));
            for log in [false, true] {
                let k = dense(case, reg);
                let cfg = BarycenterConfig::tolerance(1e-14, 200_000).log_domain(log);
                let out = barycenters(&k, &atoms, weights, &cfg, None).unwrap();
                assert_close(
                    &format!("reg {reg} {wname} log={log}"),
                    out.p.as_slice(),
                    want.as_slice(),
                    0.0,
                    atol,
                );
            }
        }
    }
}

#[test]
fn barycenter_1d_small_gamma_needs_log_domain() {
    // γ = 1e-4: K = exp(-C/γ) underflows to 0 for |x - y| > 0.27, and the plain scalings
    // overflow; the log domain reproduces the reference (POT sinkhorn_log == numpy log IBP).
    let case = "barycenter_1d";
    let atoms = load_matrix(case, "A.npy");
    let w = load_vector(case, "weights.npy");
    let k = dense(case, 1e-4);
    let plain = barycenters(
        &k,
        &atoms,
        &w,
        &BarycenterConfig::tolerance(1e-13, 200_000),
        None,
    );
    assert!(
        matches!(plain, Err(Error::Numerical { .. })),
        "plain scaling at γ = 1e-4 must fail loudly, got {plain:?}"
    );
    let cfg = BarycenterConfig::tolerance(1e-13, 200_000).log_domain(true);
    let out = barycenters(&k, &atoms, &w, &cfg, None).unwrap();
    let want = load_vector(case, "bary_reg0.0001_w_sinkhorn_log.npy");
    assert_close(
        "reg 1e-4 log",
        out.p.as_slice(),
        want.as_slice(),
        0.0,
        1e-10,
    );
}

#[test]
fn barycenter_fixed_l_iterates() {
    let case = "barycenter_fixed_L";
    let atoms = load_matrix(case, "D.npy");
    let w = load_vector(case, "lambda.npy");
    let k = dense(case, 1e-2);
    for l in [10, 50] {
        let want = load_vector(case, &format!("p_L{l}.npy"));
        let out = barycenters(&k, &atoms, &w, &BarycenterConfig::iterations(l), None).unwrap();
        assert_eq!(out.iterations, l);
        assert_close(
            &format!("p_L{l}"),
            out.p.as_slice(),
            want.as_slice(),
            1e-12,
            0.0,
        );
        // Heavy-ball with τ = 0 is the same code path with the extrapolation skipped.
        let hb = barycenters(
            &k,
            &atoms,
            &w,
            &BarycenterConfig::iterations(l).tau(0.0),
            None,
        )
        .unwrap();
        assert_eq!(hb.p, out.p);
    }
}

#[test]
fn unbalanced_barycenter_matches_pot() {
    let case = "unbalanced_barycenter";
    let atoms = load_matrix(case, "A.npy");
    let w = load_vector(case, "weights.npy");
    let k = dense(case, 1e-2);
    for rho in ["0.1", "1", "10"] {
        let want = load_vector(case, &format!("bary_regm{rho}.npy"));
        let cfg = BarycenterConfig::tolerance(1e-14, 1_000_000).rho(rho.parse().unwrap());
        let out = barycenters(&k, &atoms, &w, &cfg, None).unwrap();
        assert_close(
            &format!("ρ = {rho}"),
            out.p.as_slice(),
            want.as_slice(),
            1e-10,
            1e-13,
        );
    }
}

#[test]
fn conv_barycenter_2d_matches_pot() {
    let case = "conv_barycenter_2d";
    let (shape, data) = load_npy(case, "shapes.npy");
    assert_eq!(shape, vec![4, 32, 32]);
    let atoms = Batch::from_vec(1024, 4, data);
    let grid = Grid::new(&[32, 32]).unwrap();
    for reg in [0.004, 0.001] {
        let k = GridKernel::<f64>::new(&grid, reg).unwrap();
        for wname in ["uniform", "w4321"] {
            let w = load_vector(case, &format!("weights_{wname}.npy"));
            // POT's plain and log convolutional solvers agree to 1e-14 here (case notes).
            let want = load_npy(case, &format!("bary_reg{reg}_{wname}_sinkhorn.npy")).1;
            for log in [false, true] {
                let cfg = BarycenterConfig::tolerance(1e-14, 20_000).log_domain(log);
                let out = barycenters(&k, &atoms, &w, &cfg, None).unwrap();
                assert_close(
                    &format!("reg {reg} {wname} log={log}"),
                    out.p.as_slice(),
                    &want,
                    1e-9,
                    1e-12,
                );
            }
        }
    }
}
