//! Wasserstein unmixing (`003_d677dd5d7bb685d2.txt`): cross-checks against
//! `tests/reference/unmixing_seed` (POT 0.9.7) and properties of the gradients.

mod common;
use common::*;
use proptest::prelude::*;
use wassdl::barycenter::Stop;
use wassdl::pointcloud::{cost_matrix, Cost, PointCloud};
use wassdl::unmixing::*;
use wassdl::{Batch, Error};

const CASE: &str = "unmixing_seed";

struct Seed {
    h: Batch<f64>,
    m: Batch<f64>,
    b: Vec<f64>,
}

fn seed() -> Seed {
    let (_, b) = load_npy(CASE, "b.npy");
    Seed {
        h: load_matrix(CASE, "H.npy"),
        m: load_matrix(CASE, "M.npy"),
        b,
    }
}

fn exact() -> InnerOt {
    InnerOt::Exact { max_iter: 100_000 }
}

#[test]
fn primal_values_match_pot_on_the_grid() {
    // emd2's value is the LP optimum, unique whatever basis the simplex ends on: the
    // case's loss_rtol (1e-10) applies to every point of POT's 1001-point grid.
    let s = seed();
    let json = case_json(CASE);
    let rtol = json["tolerance"]["loss_rtol"].as_f64().unwrap();
    let p = MixtureProblem::new(&s.h, &s.b, &s.m, exact()).unwrap();
    let (_, t) = load_npy(CASE, "grid_coarse_t.npy");
    let (_, want) = load_npy(CASE, "grid_coarse_val.npy");
    let got: Vec<f64> = t
        .iter()
        .step_by(10)
        .map(|&ti| p.loss_and_grad(&[ti, 1.0 - ti]).unwrap().0)
        .collect();
    let want: Vec<f64> = want.iter().copied().step_by(10).collect();
    assert_close("emd2 on the grid", &got, &want, rtol, 0.0);
    let at = p.loss_and_grad(&[0.1, 0.9]).unwrap().0;
    let v = json["results"]["value_at_t_0_1"].as_f64().unwrap();
    assert!((at - v).abs() <= rtol * v, "{at} vs {v}");
}

#[test]
fn seed_example_reaches_pots_mixture() {
    let s = seed();
    let json = case_json(CASE);
    let r = unmix(&s.h, &s.b, &s.m, None, &UnmixingConfig::default()).unwrap();
    let first = json["results"]["loss_first"].as_f64().unwrap();
    // the first loss is at w = [½, ½] before any gradient: the same LP, same optimum
    assert!((r.losses[0] - first).abs() <= 1e-10 * first);
    // The seed's printed mixture, to its 4 digits.
    assert!((r.weights[0] - 0.0998).abs() < 5e-5 && (r.weights[1] - 0.9002).abs() < 5e-5);
    // POT's exact digits [0.09980706, 0.90019294] are NOT reproduced (ours: 0.09980656):
    // at w = [½, ½] every a_i = b_j = 1/100, the LP is degenerate, its dual (the gradient)
    // is not unique and POT's network simplex returns another optimal dual vertex than
    // ours (docs/pointcloud.md). Both runs end oscillating around the kink t* = 0.1 of the
    // piecewise-linear objective, each within one step lr·|g| of it, so they agree to
    // 2·lr·max|g|, with |g| bounded by the final gradients on either side of the kink.
    let p = MixtureProblem::new(&s.h, &s.b, &s.m, exact()).unwrap();
    let gmax = [0.1 - 1e-4, 0.1 + 1e-4]
        .iter()
        .map(|&t| {
            let (_, g) = p.loss_and_grad(&[t, 1.0 - t]).unwrap();
            g.iter().fold(0.0f64, |m, v| m.max(v.abs()))
        })
        .fold(0.0f64, f64::max);
    let lr = UnmixingConfig::default().lr;
    let want = json["results"]["w_torch"].as_array().unwrap();
    for (k, w) in want.iter().enumerate() {
        let w = w.as_f64().unwrap();
        assert!(
            (r.weights[k] - w).abs() <= 2.0 * lr * gmax,
            "w[{k}] = {} vs POT {w} (band {})",
            r.weights[k],
            2.0 * lr * gmax
        );
    }
    let t_star = json["results"]["grid_argmin_t"].as_f64().unwrap();
    assert!((r.weights[0] - t_star).abs() <= lr * gmax);
}

#[test]
fn clouds_api_equals_matrix_api() {
    let (_, xs) = load_npy(CASE, "xs.npy");
    let (_, xt) = load_npy(CASE, "xt.npy");
    let s = seed();
    let sources = [
        PointCloud::from_rows(2, &xs[..100], None).unwrap(),
        PointCloud::from_rows(2, &xs[100..], None).unwrap(),
    ];
    let target = PointCloud::from_rows(2, &xt, None).unwrap();
    let cfg = UnmixingConfig {
        iterations: 50,
        ..Default::default()
    };
    let a = unmix_clouds(&sources, &target, Cost::SqEuclidean, &cfg).unwrap();
    let all = PointCloud::from_rows(2, &xs, None).unwrap();
    let m = cost_matrix(all.points(), target.points(), Cost::SqEuclidean).unwrap();
    let b = unmix(&s.h, &s.b, &m, None, &cfg).unwrap();
    // same H (1/50 blocks), same recomputed cost, same arithmetic: identical
    assert_eq!(a.weights, b.weights);
    assert_eq!(a.losses, b.losses);
}

#[test]
fn entropic_gradient_matches_finite_differences() {
    let s = seed();
    let reg = 0.05;
    let solver = InnerOt::Entropic {
        gamma: reg,
        stop: Stop::Tolerance {
            tol: 1e-14,
            max_iter: 100_000,
        },
    };
    let p = MixtureProblem::new(&s.h, &s.b, &s.m, solver).unwrap();
    for t in [0.0, 0.3, 0.8] {
        let w = [t, 1.0 - t];
        let (_, g) = p.loss_and_grad(&w).unwrap();
        // directional derivative along (1, −1), one-sided at t = 0 (the simplex boundary)
        let h = 1e-5;
        let f = |s: f64| p.loss_and_grad(&[t + s, 1.0 - t - s]).unwrap().0;
        let fd = if t == 0.0 {
            (-3.0 * f(0.0) + 4.0 * f(h) - f(2.0 * h)) / (2.0 * h)
        } else {
            (f(h) - f(-h)) / (2.0 * h)
        };
        let an = g[0] - g[1];
        // second-order differences with h = 1e-5 on a smooth loss of size ~1: truncation
        // ~h² |f'''| ≈ 1e-9 plus round-off 1e-16/h ≈ 1e-11, against |f'| ~ 1
        assert!(
            (an - fd).abs() < 1e-6 * an.abs().max(1.0),
            "t = {t}: analytic {an} vs fd {fd}"
        );
    }
}

#[test]
fn entropic_unmixing_lands_near_the_exact_minimizer() {
    let s = seed();
    let cfg = UnmixingConfig {
        solver: InnerOt::Entropic {
            gamma: 0.1,
            stop: Stop::Tolerance {
                tol: 1e-9,
                max_iter: 100_000,
            },
        },
        ..Default::default()
    };
    let r = unmix(&s.h, &s.b, &s.m, None, &cfg).unwrap();
    assert!(r.losses.last().unwrap() < &r.losses[0]);
    // The clusters are ~1.4 apart (squared distance ~2 ≫ reg = 0.1): the entropic plans
    // move mass between them only at the price e^{-2/0.1}, so the entropic objective has
    // its minimizer where the cluster masses match, t = 0.1, up to the blur within each
    // cluster (points ~0.2 apart, reg/0.2² = 2.5 neighbours mixed): well within 0.01.
    assert!((r.weights[0] - 0.1).abs() < 0.01, "{:?}", r.weights);
}

#[test]
fn invalid_inputs_are_errors() {
    let s = seed();
    let cfg = UnmixingConfig::default();
    let bad_b = vec![0.02; 100];
    assert!(matches!(
        unmix(&s.h, &bad_b, &s.m, None, &cfg),
        Err(Error::NotNormalized { arg: "target", .. })
    ));
    let m_small = Batch::<f64>::zeros(100, 99);
    assert!(matches!(
        unmix(&s.h, &s.b, &m_small, None, &cfg),
        Err(Error::ShapeMismatch { arg: "cost", .. })
    ));
    assert!(matches!(
        unmix(&s.h, &s.b, &s.m, Some(&[0.5, 0.6]), &cfg),
        Err(Error::NotNormalized { arg: "init", .. })
    ));
    let lr0 = UnmixingConfig { lr: 0.0, ..cfg };
    assert!(matches!(
        unmix(&s.h, &s.b, &s.m, None, &lr0),
        Err(Error::InvalidParameter { arg: "lr", .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// `w ↦ emd2(H w, b)` is convex (a maximum of linear functions of `a = H w` over the
    /// dual polytope), and `Hᵀ(u − mean u)` with `u` an optimal dual is a subgradient on
    /// the simplex (the mean shift is orthogonal to the simplex's directions), whichever
    /// optimal vertex the simplex returns: `f(w') ≥ f(w) + ⟨g, w' − w⟩`.
    #[test]
    fn exact_gradient_is_a_subgradient(t in 0.0f64..=1.0, t2 in 0.0f64..=1.0) {
        let s = seed();
        let p = MixtureProblem::new(&s.h, &s.b, &s.m, exact()).unwrap();
        let (f, g) = p.loss_and_grad(&[t, 1.0 - t]).unwrap();
        let (f2, _) = p.loss_and_grad(&[t2, 1.0 - t2]).unwrap();
        let lin = f + g[0] * (t2 - t) + g[1] * (t - t2);
        // potentials and costs are O(1): rounding of the LP values and duals is ~1e-14
        prop_assert!(f2 >= lin - 1e-12, "f(w') = {} < {}", f2, lin);
    }
}
