//! PCA and NMF baselines and the reconstruction metrics, against exact cases and
//! scikit-learn's results on the Figure 2 data.

mod common;
use common::*;
use wassdl::baselines::*;
use wassdl::metrics::{self, Metrics};
use wassdl::{Batch, Error};

/// The five Gaussians of the paper's Figure 2, `N × M` (scikit-learn had them `M × N`).
fn fig2_data() -> Batch<f64> {
    transpose(&load_matrix("fig2_gaussians", "X.npy"))
}

fn transpose(b: &Batch<f64>) -> Batch<f64> {
    Batch::from_fn(b.cols(), b.rows(), |i, j| b.get(j, i))
}

/// Deterministic pseudo-random numbers in [0, 1).
fn lcg(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

/// A 2-D `.npy` in either memory order (scikit-learn's `components_` is saved in
/// Fortran order, which `common::load_matrix` does not take).
fn load_matrix_any_order(case: &str, name: &str) -> Batch<f64> {
    let bytes = std::fs::read(reference_dir(case).join(name)).unwrap();
    let (shape, data, fortran) = parse_f8_npy(&bytes, name);
    let (r, c) = (shape[0], shape[1]);
    if fortran {
        Batch::from_vec(r, c, data)
    } else {
        Batch::from_fn(r, c, |i, j| data[i * c + j])
    }
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |a, b| a.max(b.abs()))
}

#[test]
fn pca_reconstructs_rank_k_data_exactly() {
    let (n, m, k) = (30, 12, 3);
    let a = Batch::from_vec(n, k, lcg(n * k, 1));
    let b = Batch::from_vec(k, m, lcg(k * m, 2));
    let mean = lcg(n, 3);
    // the centred data must have rank k: centre the coefficients first
    let bmean: Vec<f64> = (0..k)
        .map(|s| (0..m).map(|j| b.get(s, j)).sum::<f64>() / m as f64)
        .collect();
    let x = Batch::from_fn(n, m, |i, j| {
        mean[i]
            + (0..k)
                .map(|s| a.get(i, s) * (b.get(s, j) - bmean[s]))
                .sum::<f64>()
    });
    let p = pca(&x, k).unwrap();
    let err = max_abs_diff(p.reconstruction.as_slice(), x.as_slice());
    // a backward-stable SVD reproduces X to a few ε·‖X‖ per entry (‖X‖ ≈ 10 here)
    assert!(err < 1e-13 * max_abs(x.as_slice()) * 10.0, "{err:e}");
    // orthonormal components, scores = projections
    for s in 0..k {
        for t in 0..k {
            let d: f64 = (0..n)
                .map(|i| p.components.get(i, s) * p.components.get(i, t))
                .sum();
            let want = if s == t { 1.0 } else { 0.0 };
            assert!((d - want).abs() < 1e-14 * n as f64, "{s} {t}: {d}");
        }
    }
    let scores = p.transform(&x).unwrap();
    assert!(max_abs_diff(scores.as_slice(), p.scores.as_slice()) < 1e-13);
    // rank k: all the variance is in the k components
    let total: f64 = p.explained_variance_ratio.iter().sum();
    assert!((total - 1.0).abs() < 1e-12);
    // fewer components lose information
    let p2 = pca(&x, k - 1).unwrap();
    assert!(max_abs_diff(p2.reconstruction.as_slice(), x.as_slice()) > 1e-3);
}

#[test]
fn pca_matches_scikit_learn_on_fig2() {
    let case = "fig2_gaussians";
    let x = fig2_data();
    let p = pca(&x, 2).unwrap();
    let tol = case_json(case)["tolerance"]["pca_rtol"].as_f64().unwrap();
    let rec = transpose(&load_matrix(case, "pca_reconstruction.npy"));
    // the case's rtol (1e-10), plus an absolute floor for entries at the 1e-17 rounding level
    assert_close(
        "reconstruction",
        rec.as_slice(),
        p.reconstruction.as_slice(),
        tol,
        1e-15,
    );
    let comps = transpose(&load_matrix_any_order(case, "pca_components.npy"));
    assert_close(
        "components (svd_flip signs)",
        p.components.as_slice(),
        comps.as_slice(),
        tol,
        1e-15,
    );
    let mean = load_vector(case, "pca_mean.npy");
    assert_close("mean", p.mean.as_slice(), mean.as_slice(), tol, 1e-15);
    let res = &case_json(case)["results"];
    let evr: Vec<f64> = res["pca_explained_variance_ratio"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_close(
        "explained variance",
        &p.explained_variance_ratio,
        &evr,
        tol,
        0.0,
    );
    let mse = metrics::mse(&x, &p.reconstruction).unwrap();
    let want = res["pca_mse"].as_f64().unwrap();
    assert!((mse - want).abs() <= tol * want, "{mse} vs {want}");
}

/// Lee-Seung updates never increase their objective: each is the minimizer of an
/// auxiliary function that touches the objective at the current point.
#[test]
fn nmf_objective_is_monotone() {
    let fig2 = fig2_data();
    let random = Batch::from_vec(25, 15, lcg(25 * 15, 9));
    for data in [&fig2, &random] {
        for loss in [NmfLoss::Frobenius, NmfLoss::KullbackLeibler] {
            for init in [NmfInit::Random, NmfInit::Nndsvda] {
                let cfg = NmfConfig::new(3)
                    .loss(loss)
                    .init(init.clone())
                    .max_iter(400)
                    .seed(5);
                let r = nmf(data, &cfg).unwrap();
                let worst = r
                    .objective
                    .windows(2)
                    .map(|w| (w[1] - w[0]) / w[0])
                    .fold(f64::NEG_INFINITY, f64::max);
                println!(
                    "{}x{} {loss:?} {init:?}: {:.4e} -> {:.4e}, largest relative step {worst:.1e}",
                    data.rows(),
                    data.cols(),
                    r.objective[0],
                    r.objective.last().unwrap(),
                );
                // Exact updates give worst ≤ 0; summing N·M ≤ 500 terms in f64 perturbs
                // the objective by ≤ 500·ε ≈ 6e-14 relative, so any increase beyond 1e-12
                // is a real one.
                assert!(
                    worst <= 1e-12,
                    "{loss:?} {init:?}: objective rose by {worst:e}"
                );
                assert!(r.objective.last().unwrap() < &r.objective[0]);
                assert!(r.components.as_slice().iter().all(|&v| v >= 0.0));
                assert!(r.coefficients.as_slice().iter().all(|&v| v >= 0.0));
            }
        }
    }
}

/// Same objective, same NNDSVDa start as scikit-learn (its coordinate-descent solver,
/// ours multiplicative): both reach the same stationary point.
#[test]
fn nmf_matches_scikit_learn_on_fig2() {
    let case = "fig2_gaussians";
    let x = fig2_data();
    let cfg = NmfConfig::new(2)
        .init(NmfInit::Nndsvda)
        .max_iter(20_000)
        .tol(1e-15);
    let r = nmf(&x, &cfg).unwrap();
    let mse = metrics::mse(&x, &r.reconstruction).unwrap();
    let want = case_json(case)["results"]["nmf_mse"].as_f64().unwrap();
    let rec = transpose(&load_matrix(case, "nmf_reconstruction.npy"));
    let diff = max_abs_diff(rec.as_slice(), r.reconstruction.as_slice());
    println!(
        "NMF MSE {mse:.10e} vs scikit-learn {want:.10e} (rel {:.1e}), max |ΔWH| {diff:.1e}, {} iterations",
        (mse - want).abs() / want,
        r.iterations
    );
    // measured: relative MSE difference 3e-15 once the relative decrease per iteration
    // falls below 1e-15 (310 iterations); the case's 1e-6 applies
    let rtol = case_json(case)["tolerance"]["nmf_mse_rtol"]
        .as_f64()
        .unwrap();
    assert!((mse - want).abs() <= rtol * want);
    // and the same factorization: measured max |ΔWH| 7e-9 against entries up to 0.08
    assert!(diff < 1e-6, "{diff:e}");
}

#[test]
fn nmf_given_init_and_errors() {
    let x = fig2_data();
    let (n, m) = x.shape();
    let w = lcg(n * 2, 1);
    let h = lcg(2 * m, 2);
    let cfg = NmfConfig::new(2)
        .init(NmfInit::Given {
            w: w.clone(),
            h: h.clone(),
        })
        .max_iter(0);
    let r = nmf(&x, &cfg).unwrap();
    assert_eq!(r.components.as_slice(), &w[..]);
    assert_eq!(r.objective.len(), 1);
    let bad = NmfConfig::new(2).init(NmfInit::Given { w: vec![1.0; 3], h });
    assert!(matches!(
        nmf(&x, &bad),
        Err(Error::ShapeMismatch { arg: "init.w", .. })
    ));
    let neg = x.map(|v| v - 0.01);
    assert!(matches!(
        nmf(&neg, &NmfConfig::new(2)),
        Err(Error::Negative { arg: "data", .. })
    ));
    assert!(matches!(
        nmf(&x, &NmfConfig::new(0)),
        Err(Error::InvalidParameter { arg: "k", .. })
    ));
    assert!(matches!(
        pca(&x, 0),
        Err(Error::InvalidParameter { arg: "k", .. })
    ));
    assert!(matches!(
        pca(&x, 6),
        Err(Error::InvalidParameter { arg: "k", .. })
    ));
    // the same seed gives the same random start
    let a = nmf(&x, &NmfConfig::new(2).max_iter(3).seed(4)).unwrap();
    let b = nmf(&x, &NmfConfig::new(2).max_iter(3).seed(4)).unwrap();
    assert_eq!(a.reconstruction, b.reconstruction);
}

#[test]
fn metrics_follow_their_definitions() {
    let x = Batch::from_vec(2, 2, vec![0.5, 0.5, 1.0, 0.0]);
    let y = Batch::from_vec(2, 2, vec![0.4, 0.6, 0.5, 0.5]);
    let m = Metrics::compute(&x, &y).unwrap();
    // column 0: squared error 0.02, ‖x‖² 0.5, peak 0.5; column 1: 0.5, 1, 1
    let mse = (0.02 + 0.5) / 4.0;
    let nmse = (0.02 / 0.5 + 0.5 / 1.0) / 2.0;
    let psnr = (10.0 * (0.25f64 / 0.01).log10() + 10.0 * (1.0f64 / 0.25).log10()) / 2.0;
    // a handful of f64 operations: a few ulps
    assert!((m.mse - mse).abs() < 1e-15);
    assert!((m.nmse - nmse).abs() < 1e-15);
    assert!((m.psnr - psnr).abs() < 1e-13);
    assert_eq!(metrics::mse(&x, &y).unwrap(), m.mse);
    let per = metrics::psnr_per_column(&x, &y).unwrap();
    assert!((per.iter().sum::<f64>() / 2.0 - m.psnr).abs() < 1e-13);
    // exact reconstructions: NMSE 0, PSNR infinite
    let exact = Metrics::compute(&x, &x).unwrap();
    assert_eq!((exact.mse, exact.nmse), (0.0, 0.0));
    assert!(exact.psnr.is_infinite());
    // f32 data accumulate in f64
    let m32 = Metrics::compute(&x.cast::<f32>(), &y.cast::<f32>()).unwrap();
    assert!((m32.mse - mse).abs() < 1e-8);
    assert!(matches!(
        Metrics::compute(&x, &Batch::zeros(2, 3)),
        Err(Error::ShapeMismatch {
            arg: "reconstruction",
            ..
        })
    ));
    assert!(Metrics::compute(&Batch::<f64>::zeros(0, 0), &Batch::zeros(0, 0)).is_err());
}
