//! The `wassdl` binary, run on small `.npy` files written here: outputs checked against
//! the library called directly, every class of bad input checked for a one-line error
//! that names the file, and the `.npy` reader checked on NumPy's layouts and on hostile
//! headers.
//!
//! The tests run the binary with stderr piped (not a terminal), so there is no progress
//! bar and each solve is one library call with the same inputs: results must be
//! bit-identical to the library's, and the comparisons below are exact.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use wassdl::dictionary::{
    fit, reconstruct, transform, KernelSpec, Model, NoObserver, WdlConfig, WeightInit,
};
use wassdl::emd::emd;
use wassdl::unmixing::{unmix, InnerOt, UnmixingConfig};
use wassdl::{
    barycenters, sinkhorn, BarycenterConfig, Batch, DenseKernel, Grid, GridKernel, GridUnits,
    Kernel, Loss, Real, SinkhornConfig, Stop,
};
use wassdl_cli::npy::{parse_npy, read_npy, to_npy_bytes, write_npy, Dtype, NpyArray, Npz};

/// A fresh directory for one test, removed when the test ends.
struct TmpDir(PathBuf);

impl std::ops::Deref for TmpDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmpdir(name: &str) -> TmpDir {
    let d = std::env::temp_dir().join(format!("wassdl-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TmpDir(d)
}

fn wassdl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wassdl"))
        .args(args)
        .output()
        .expect("the binary runs")
}

/// Runs a command that must succeed; returns its JSON summary.
fn ok(args: &[&str]) -> serde_json::Value {
    let out = wassdl(args);
    assert!(
        out.status.success(),
        "wassdl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the summary on stdout is JSON")
}

/// Runs a command that must fail with exit code `code` and a single line on stderr
/// containing every one of `needles`; nothing on stdout, no panic.
fn fails(args: &[&str], code: i32, needles: &[&str]) {
    let out = wassdl(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "wassdl {args:?}: {err}");
    assert!(out.stdout.is_empty(), "wassdl {args:?} printed on stdout");
    assert_eq!(
        err.lines().count(),
        1,
        "wassdl {args:?}: not one line: {err}"
    );
    assert!(err.starts_with("wassdl: error: "), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{err}"
    );
    for n in needles {
        assert!(err.contains(n), "wassdl {args:?}: {err:?} lacks {n:?}");
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `rows` random positive histograms of `n` bins (C order), each summing to one.
fn hists(rng: &mut StdRng, rows: usize, n: usize) -> Vec<f64> {
    let mut v = Vec::with_capacity(rows * n);
    for _ in 0..rows {
        let h: Vec<f64> = (0..n).map(|_| rng.random_range(0.05..1.0)).collect();
        let t: f64 = h.iter().sum();
        v.extend(h.into_iter().map(|x| x / t));
    }
    v
}

fn save<T: Real>(dir: &Path, name: &str, shape: &[usize], data: Vec<T>) -> PathBuf {
    let p = dir.join(name);
    write_npy(&p, &NpyArray::new(shape.to_vec(), data).unwrap()).unwrap();
    p
}

fn f64s<T: Real>(b: &[T]) -> Vec<f64> {
    b.iter().map(|x| x.to_f64_()).collect()
}

/// The array `name` of an `.npz` output: its shape, dtype and values in C order.
fn member(npz: &Npz, name: &str) -> (Vec<usize>, Dtype, Vec<f64>) {
    let a = npz.get(name).unwrap();
    (a.shape().to_vec(), a.dtype(), a.to_vec())
}

/// C-order values of a batch whose columns are the rows of a NumPy array.
fn rows_of<T: Real>(b: &Batch<T>) -> Vec<f64> {
    f64s(b.as_slice())
}

#[test]
fn sinkhorn_on_a_grid_matches_the_library() {
    let dir = tmpdir("sinkhorn-grid");
    let mut rng = StdRng::seed_from_u64(1);
    // three 6x5 images against three rows of 30 bins: the grid comes from a's shape
    let a = hists(&mut rng, 3, 30);
    let b = hists(&mut rng, 3, 30);
    let pa = save(&dir, "a.npy", &[3, 6, 5], a.clone());
    let pb = save(&dir, "b.npy", &[3, 30], b.clone());
    let out = dir.join("ot.npz");
    let summary = ok(&[
        "sinkhorn",
        "--a",
        s(&pa),
        "--b",
        s(&pb),
        "--reg",
        "0.05",
        "--tol",
        "1e-11",
        "--plan",
        "--out",
        s(&out),
    ]);
    let grid = Grid::new(&[6, 5]).unwrap();
    let k = GridKernel::<f64>::new(&grid, 0.05).unwrap();
    let cfg = SinkhornConfig {
        stop: Stop::Tolerance {
            tol: 1e-11,
            max_iter: 10_000,
        },
        plan: true,
        ..Default::default()
    };
    let lib = sinkhorn(
        &k,
        &Batch::from_vec(30, 3, a),
        &Batch::from_vec(30, 3, b),
        &cfg,
        None,
    )
    .unwrap();
    let npz = Npz::read(&out).unwrap();
    assert_eq!(
        member(&npz, "cost"),
        (vec![3], Dtype::F64, lib.cost.clone())
    );
    assert_eq!(
        member(&npz, "transport_cost"),
        (vec![3], Dtype::F64, lib.transport_cost.clone())
    );
    assert_eq!(
        member(&npz, "f"),
        (vec![3, 6, 5], Dtype::F64, rows_of(&lib.f))
    );
    assert_eq!(
        member(&npz, "g"),
        (vec![3, 30], Dtype::F64, rows_of(&lib.g))
    );
    let plan: Vec<f64> = lib
        .plans
        .unwrap()
        .iter()
        .flat_map(|p| (0..900).map(|q| p.get(q / 30, q % 30)).collect::<Vec<_>>())
        .collect();
    assert_eq!(member(&npz, "plan"), (vec![3, 30, 30], Dtype::F64, plan));
    assert_eq!(summary["iterations"], lib.iterations);
    assert_eq!(summary["error"].as_f64().unwrap(), lib.error);
    assert_eq!(summary["converged"], true);
    assert_eq!(summary["precision"], "float64");
    assert_eq!(summary["kernel"], k.describe());
    for t in ["read_s", "kernel_s", "solve_s", "write_s", "total_s"] {
        assert!(summary["timings"][t].as_f64().unwrap() >= 0.0, "{t}");
    }
    // an atomic write leaves no temporary file behind
    let names: Vec<String> = std::fs::read_dir(&*dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn float32_files_run_in_float32_unless_f64_is_asked() {
    let dir = tmpdir("sinkhorn-f32");
    let mut rng = StdRng::seed_from_u64(2);
    let (n1, n2) = (5, 7);
    let a: Vec<f32> = hists(&mut rng, 1, n1).iter().map(|&x| x as f32).collect();
    let b: Vec<f32> = hists(&mut rng, 1, n2).iter().map(|&x| x as f32).collect();
    let c: Vec<f32> = (0..n1 * n2).map(|_| rng.random_range(0.0..1.0)).collect();
    let pa = save(&dir, "a.npy", &[n1], a.clone());
    let pb = save(&dir, "b.npy", &[n2], b.clone());
    let pc = save(&dir, "c.npy", &[n1, n2], c.clone());
    let out = dir.join("ot.npz");
    let args = [
        "sinkhorn",
        "--a",
        s(&pa),
        "--b",
        s(&pb),
        "--cost",
        s(&pc),
        "--reg",
        "0.1",
        "--iters",
        "40",
        "--out",
        s(&out),
    ];
    let summary = ok(&args);
    assert_eq!(summary["precision"], "float32");
    let cm = faer::Mat::from_fn(n1, n2, |i, j| c[i * n2 + j]);
    let k = DenseKernel::<f32>::new(cm.as_ref(), 0.1).unwrap();
    let cfg = SinkhornConfig {
        stop: Stop::Iterations(40),
        ..Default::default()
    };
    let lib = sinkhorn(
        &k,
        &Batch::from_vec(n1, 1, a.clone()),
        &Batch::from_vec(n2, 1, b.clone()),
        &cfg,
        None,
    )
    .unwrap();
    let npz = Npz::read(&out).unwrap();
    // one pair of 1-D histograms: scalar costs, 1-D potentials
    assert_eq!(member(&npz, "cost"), (vec![], Dtype::F32, f64s(&lib.cost)));
    assert_eq!(member(&npz, "f"), (vec![n1], Dtype::F32, rows_of(&lib.f)));
    assert_eq!(member(&npz, "g"), (vec![n2], Dtype::F32, rows_of(&lib.g)));

    let summary = ok(&[&args[..], &["--f64"]].concat());
    assert_eq!(summary["precision"], "float64");
    let cm = faer::Mat::from_fn(n1, n2, |i, j| c[i * n2 + j] as f64);
    let k = DenseKernel::<f64>::new(cm.as_ref(), 0.1).unwrap();
    // float32 histograms computed in float64 are divided by their float64 masses, so
    // that their float32 rounding (~1e-7) does not floor the float64 marginal error
    let unit = |x: &[f32]| {
        let v = f64s(x);
        let t = wassdl::validate::sum_f64(&v);
        v.iter().map(|y| y / t).collect::<Vec<_>>()
    };
    let lib = sinkhorn(
        &k,
        &Batch::from_vec(n1, 1, unit(&a)),
        &Batch::from_vec(n2, 1, unit(&b)),
        &cfg,
        None,
    )
    .unwrap();
    let npz = Npz::read(&out).unwrap();
    assert_eq!(
        member(&npz, "transport_cost"),
        (vec![], Dtype::F64, lib.transport_cost)
    );
}

#[test]
fn a_single_histogram_is_paired_with_every_row() {
    let dir = tmpdir("sinkhorn-broadcast");
    let mut rng = StdRng::seed_from_u64(3);
    let a = hists(&mut rng, 1, 12);
    let b = hists(&mut rng, 4, 12);
    let pa = save(&dir, "a.npy", &[12], a.clone());
    let pb = save(&dir, "b.npy", &[4, 12], b.clone());
    let out = dir.join("ot.npz");
    ok(&[
        "sinkhorn",
        "--a",
        s(&pa),
        "--b",
        s(&pb),
        "--grid",
        "3x4",
        "--units",
        "pixel",
        "--reg",
        "0.5",
        "--log",
        "--iters",
        "30",
        "--out",
        s(&out),
    ]);
    let grid = Grid::new(&[3, 4]).unwrap().with_units(GridUnits::Pixel);
    let k = GridKernel::<f64>::new(&grid, 0.5).unwrap();
    let cfg = SinkhornConfig {
        log_domain: true,
        stop: Stop::Iterations(30),
        plan: false,
    };
    let at = Batch::from_fn(12, 4, |i, _| a[i]);
    let lib = sinkhorn(&k, &at, &Batch::from_vec(12, 4, b), &cfg, None).unwrap();
    let npz = Npz::read(&out).unwrap();
    assert_eq!(member(&npz, "cost"), (vec![4], Dtype::F64, lib.cost));
    assert_eq!(
        member(&npz, "f"),
        (vec![4, 12], Dtype::F64, rows_of(&lib.f))
    );
}

#[test]
fn sinkhorn_on_numpy_files_matches_pot() {
    // Files written by NumPy; POT's plan and ⟨T, C⟩ within the tolerances of the case file.
    let r = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/reference/sinkhorn_1d");
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("case.json")).unwrap()).unwrap();
    let run = case["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["tag"] == "reg0.1_sinkhorn")
        .unwrap();
    let dir = tmpdir("sinkhorn-pot");
    let out = dir.join("ot.npz");
    ok(&[
        "sinkhorn",
        "--a",
        s(&r.join("a.npy")),
        "--b",
        s(&r.join("b.npy")),
        "--cost",
        s(&r.join("C.npy")),
        "--reg",
        "0.1",
        "--tol",
        "1e-14",
        "--plan",
        "--out",
        s(&out),
    ]);
    let npz = Npz::read(&out).unwrap();
    let plan = npz.get("plan").unwrap().to_vec::<f64>();
    let pot = read_npy(r.join("plan_reg0.1_sinkhorn.npy"))
        .unwrap()
        .to_vec::<f64>();
    let atol = run["tolerance"]["plan_atol"].as_f64().unwrap();
    let worst = plan
        .iter()
        .zip(&pot)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(worst <= atol, "plan differs from POT's by {worst:e}");
    let tc = npz.get("transport_cost").unwrap().to_vec::<f64>()[0];
    let want = run["sinkhorn2_value"].as_f64().unwrap();
    let rtol = run["tolerance"]["value_rtol"].as_f64().unwrap();
    assert!((tc - want).abs() <= rtol * want.abs(), "{tc} vs {want}");
}

#[test]
fn barycenter_variants_match_the_library() {
    let dir = tmpdir("barycenter");
    let mut rng = StdRng::seed_from_u64(4);
    let (s_, h, w) = (3, 7, 6);
    let n = h * w;
    let d = hists(&mut rng, s_, n);
    let wts = hists(&mut rng, 2, s_);
    let pd = save(&dir, "d.npy", &[s_, h, w], d.clone());
    let pw = save(&dir, "w.npy", &[2, s_], wts.clone());
    let grid = Grid::new(&[h, w]).unwrap();
    let k = GridKernel::<f64>::new(&grid, 0.02).unwrap();
    let cases: [(&[&str], BarycenterConfig); 4] = [
        (
            &["--tol", "1e-10"],
            BarycenterConfig::tolerance(1e-10, 10_000),
        ),
        (
            &["--iters", "25", "--tau", "-0.4"],
            BarycenterConfig::iterations(25).tau(-0.4),
        ),
        (
            &["--iters", "25", "--rho", "0.5"],
            BarycenterConfig::iterations(25).rho(0.5),
        ),
        (
            &["--iters", "25", "--log"],
            BarycenterConfig::iterations(25).log_domain(true),
        ),
    ];
    for (i, (extra, cfg)) in cases.iter().enumerate() {
        let out = dir.join(format!("p{i}.npy"));
        let args = [
            &[
                "barycenter",
                "--atoms",
                s(&pd),
                "--weights",
                s(&pw),
                "--reg",
                "0.02",
                "--out",
                s(&out),
            ][..],
            extra,
        ]
        .concat();
        let summary = ok(&args);
        let lib = barycenters(
            &k,
            &Batch::from_vec(n, s_, d.clone()),
            &Batch::from_vec(s_, 2, wts.clone()),
            cfg,
            None,
        )
        .unwrap();
        let p = read_npy(&out).unwrap();
        assert_eq!(p.shape(), &[2, h, w], "{extra:?}");
        assert_eq!(p.to_vec::<f64>(), rows_of(&lib.p), "{extra:?}");
        assert_eq!(summary["iterations"], lib.iterations, "{extra:?}");
        assert_eq!(summary["output_shape"], serde_json::json!([2, h, w]));
    }
}

#[test]
fn one_weight_vector_gives_one_barycenter_float32() {
    let dir = tmpdir("barycenter-f32");
    let mut rng = StdRng::seed_from_u64(5);
    let (s_, n) = (2, 9);
    let d: Vec<f32> = hists(&mut rng, s_, n).iter().map(|&x| x as f32).collect();
    let c: Vec<f32> = (0..n * n)
        .map(|q| ((q / n) as f32 - (q % n) as f32).powi(2) / 64.0)
        .collect();
    let pd = save(&dir, "d.npy", &[s_, n], d.clone());
    let pw = save(&dir, "w.npy", &[s_], vec![0.3f32, 0.7]);
    let pc = save(&dir, "c.npy", &[n, n], c.clone());
    let out = dir.join("p.npy");
    let summary = ok(&[
        "barycenter",
        "--atoms",
        s(&pd),
        "--weights",
        s(&pw),
        "--cost",
        s(&pc),
        "--reg",
        "0.05",
        "--out",
        s(&out),
    ]);
    assert_eq!(summary["precision"], "float32");
    let cm = faer::Mat::from_fn(n, n, |i, j| c[i * n + j]);
    let k = DenseKernel::<f32>::new(cm.as_ref(), 0.05).unwrap();
    // the float32 default tolerance of the command line
    let cfg = BarycenterConfig::tolerance(1e-6, 10_000);
    let lib = barycenters(
        &k,
        &Batch::from_vec(n, s_, d),
        &Batch::from_vec(s_, 1, vec![0.3f32, 0.7]),
        &cfg,
        None,
    )
    .unwrap();
    let p = read_npy(&out).unwrap();
    assert_eq!((p.shape(), p.dtype()), (&[n][..], Dtype::F32));
    assert_eq!(p.to_vec::<f32>(), lib.p.as_slice());
}

#[test]
fn barycenter_of_numpy_images_matches_pot() {
    // POT's convolutional barycenter of four 32x32 shapes (files written by NumPy); the
    // tolerance is the case file's `bary_atol`.
    let r = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/reference/conv_barycenter_2d");
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("case.json")).unwrap()).unwrap();
    let atol = case["tolerance"]["bary_atol"].as_f64().unwrap();
    let dir = tmpdir("barycenter-pot");
    let out = dir.join("p.npy");
    ok(&[
        "barycenter",
        "--atoms",
        s(&r.join("shapes.npy")),
        "--weights",
        s(&r.join("weights_w4321.npy")),
        "--reg",
        "0.004",
        "--tol",
        "1e-14",
        "--max-iters",
        "20000",
        "--out",
        s(&out),
    ]);
    let p = read_npy(&out).unwrap();
    assert_eq!(p.shape(), &[32, 32]);
    let pot = read_npy(r.join("bary_reg0.004_w4321_sinkhorn_log.npy")).unwrap();
    let worst = p
        .to_vec::<f64>()
        .iter()
        .zip(pot.to_vec::<f64>())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(worst <= atol, "barycenter differs from POT's by {worst:e}");
}

#[test]
fn emd_matches_the_library() {
    let dir = tmpdir("emd");
    let mut rng = StdRng::seed_from_u64(6);
    let (n1, n2) = (6, 5);
    let a = hists(&mut rng, 1, n1);
    let b = hists(&mut rng, 1, n2);
    let c: Vec<f64> = (0..n1 * n2).map(|_| rng.random_range(0.0..1.0)).collect();
    let pa = save(&dir, "a.npy", &[n1], a.clone());
    let pb = save(&dir, "b.npy", &[n2], b.clone());
    let pc = save(&dir, "c.npy", &[n1, n2], c.clone());
    let out = dir.join("emd.npz");
    let summary = ok(&[
        "emd",
        "--a",
        s(&pa),
        "--b",
        s(&pb),
        "--cost",
        s(&pc),
        "--out",
        s(&out),
    ]);
    // the command line divides each histogram by its sum before solving
    let unit = |x: &[f64]| {
        let t: f64 = x.iter().sum();
        x.iter().map(|v| v / t).collect::<Vec<_>>()
    };
    let lib = emd(&unit(&a), &unit(&b), &c, 100_000).unwrap();
    let npz = Npz::read(&out).unwrap();
    assert_eq!(member(&npz, "cost"), (vec![], Dtype::F64, vec![lib.cost]));
    assert_eq!(member(&npz, "transport_cost").2, vec![lib.cost]);
    let mut plan = vec![0.0; n1 * n2];
    for e in &lib.plan {
        plan[e.i * n2 + e.j] = e.mass;
    }
    assert_eq!(member(&npz, "plan"), (vec![n1, n2], Dtype::F64, plan));
    assert_eq!(member(&npz, "f"), (vec![n1], Dtype::F64, lib.f.clone()));
    assert_eq!(member(&npz, "g"), (vec![n2], Dtype::F64, lib.g.clone()));
    assert_eq!(summary["iterations"], lib.iterations);
    assert_eq!(summary["plan_nonzeros"], lib.plan.len());
}

/// The bytes of a `.npy` file with a hand-written header (format 1.0, padded like NumPy).
fn raw_npy(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.to_string();
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend((h.len() as u16).to_le_bytes());
    v.extend(h.as_bytes());
    v.extend(data);
    v
}

#[test]
fn every_bad_input_is_one_line_naming_the_file() {
    let dir = tmpdir("errors");
    let mut rng = StdRng::seed_from_u64(7);
    let n = 8;
    let good = hists(&mut rng, 2, n);
    let pa = save(&dir, "a.npy", &[2, n], good.clone());
    let pb = save(&dir, "b.npy", &[2, n], good.clone());
    let out = dir.join("out.npz");
    let bad = |name: &str, bytes: Vec<u8>| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let missing = dir.join("missing.npy");
    let text = bad("text.npy", b"not numpy at all".to_vec());
    let ints = bad(
        "ints.npy",
        raw_npy(
            "{'descr': '<i8', 'fortran_order': False, 'shape': (8,), }",
            &[0u8; 64],
        ),
    );
    let four_d = bad(
        "4d.npy",
        raw_npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1, 1, 8), }",
            &[0u8; 64],
        ),
    );
    let truncated = bad(
        "trunc.npy",
        raw_npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (8,), }",
            &[0u8; 40],
        ),
    );
    let mut v = good.clone();
    v[n + 3] = -0.25;
    let negative = save(&dir, "neg.npy", &[2, n], v);
    let mut v = good.clone();
    v[5] = f64::NAN;
    let nan = save(&dir, "nan.npy", &[2, n], v);
    let mut v = good.clone();
    v.iter_mut().skip(n).for_each(|x| *x *= 0.9);
    let mass = save(&dir, "mass.npy", &[2, n], v);
    let wrong_shape = save(&dir, "short.npy", &[2, n - 1], hists(&mut rng, 2, n - 1));
    let (sa, sb, so) = (s(&pa), s(&pb), s(&out));
    let sink = |a: &Path| {
        vec![
            "sinkhorn".to_string(),
            "--a".into(),
            s(a).into(),
            "--b".into(),
            sb.into(),
            "--reg".into(),
            "0.1".into(),
            "--out".into(),
            so.into(),
        ]
    };
    let cases: Vec<(Vec<String>, Vec<String>)> = vec![
        (
            sink(&missing),
            vec![s(&missing).into(), "--a".into(), "no such file".into()],
        ),
        (
            sink(&text),
            vec![s(&text).into(), "not a NumPy .npy file".into()],
        ),
        (sink(&ints), vec![s(&ints).into(), "dtype int64".into()]),
        (sink(&four_d), vec![s(&four_d).into(), "3 axes".into()]),
        (
            sink(&truncated),
            vec![s(&truncated).into(), "truncated".into()],
        ),
        (
            sink(&negative),
            vec![s(&negative).into(), "entry [1, 3] is negative".into()],
        ),
        (
            sink(&nan),
            vec![s(&nan).into(), "entry [0, 5] is not finite (NaN)".into()],
        ),
        (
            sink(&mass),
            vec![s(&mass).into(), "row 1 sums to 0.9".into()],
        ),
        (
            sink(&wrong_shape),
            vec![sb.into(), "8 bins".into(), s(&wrong_shape).into()],
        ),
    ];
    for (args, needles) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        fails(&args, 1, &needles);
    }
    // γ ≤ 0 names the option (no file is involved)
    for reg in ["0", "-1", "nan"] {
        fails(
            &[
                "sinkhorn", "--a", sa, "--b", sb, "--grid", "8", "--reg", reg, "--out", so,
            ],
            1,
            &["--reg", "must be finite and > 0"],
        );
    }
    // weights that do not match the atoms, a cost that does not match the histograms
    // (barycenters are written as .npy)
    let out_npy = dir.join("out.npy");
    let so = s(&out_npy);
    let w3 = save(&dir, "w3.npy", &[3], vec![0.2, 0.3, 0.5]);
    fails(
        &[
            "barycenter",
            "--atoms",
            sa,
            "--weights",
            s(&w3),
            "--reg",
            "0.1",
            "--out",
            so,
        ],
        1,
        &[s(&w3), "3 weights", sa, "2 atoms"],
    );
    let c = save(&dir, "c.npy", &[n, n + 1], vec![0.0; n * (n + 1)]);
    let w2 = save(&dir, "w2.npy", &[2], vec![0.5, 0.5]);
    fails(
        &[
            "barycenter",
            "--atoms",
            sa,
            "--weights",
            s(&w2),
            "--cost",
            s(&c),
            "--reg",
            "0.1",
            "--out",
            so,
        ],
        1,
        &[s(&c), "square"],
    );
    // arguments clap cannot parse: exit code 2, still one line
    fails(&["sinkhorn", "--a", sa], 2, &["--b"]);
    fails(
        &[
            "sinkhorn", "--a", sa, "--b", sb, "--reg", "abc", "--out", so,
        ],
        2,
        &["abc"],
    );
    fails(
        &[
            "sinkhorn", "--a", sa, "--b", sb, "--grid", "4x0", "--reg", "1", "--out", so,
        ],
        2,
        &["4x0"],
    );
    // a missing output directory is reported before any work
    let nodir = dir.join("nodir/out.npz");
    fails(
        &[
            "sinkhorn",
            "--a",
            sa,
            "--b",
            sb,
            "--grid",
            "8",
            "--reg",
            "0.1",
            "--out",
            s(&nodir),
        ],
        1,
        &["--out", "does not exist"],
    );
    // no failed run left an output behind
    assert!(!out.exists() && !out_npy.exists());
}

#[test]
fn a_failed_run_leaves_an_existing_output_untouched() {
    let dir = tmpdir("untouched");
    let out = dir.join("p.npy");
    std::fs::write(&out, b"previous result").unwrap();
    let d = save(&dir, "d.npy", &[2, 4], vec![0.25; 8]);
    let w = save(&dir, "w.npy", &[2], vec![0.5, 0.6]);
    fails(
        &[
            "barycenter",
            "--atoms",
            s(&d),
            "--weights",
            s(&w),
            "--reg",
            "0.1",
            "--out",
            s(&out),
        ],
        1,
        &[s(&w), "sums to 1.1"],
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"previous result");
}

#[test]
fn help_gives_defaults_and_units_for_every_subcommand() {
    for cmd in [
        "sinkhorn",
        "barycenter",
        "emd",
        "fit",
        "transform",
        "reconstruct",
        "unmix",
        "demo",
    ] {
        let out = wassdl(&[cmd, "--help"]);
        assert!(out.status.success(), "{cmd} --help");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("[default: "), "{cmd}: no defaults in --help");
        assert!(
            help.contains("Example: wassdl"),
            "{cmd}: no example in --help"
        );
    }
    let out = wassdl(&["sinkhorn", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "linspace(0, 1, n)",
        "γ",
        "[default: pot]",
        "[default: 10000]",
        "1e-9",
    ] {
        assert!(help.contains(needle), "sinkhorn --help lacks {needle:?}");
    }
}

#[test]
fn npy_reads_fortran_order_big_endian_and_round_trips() {
    // (2, 3) and (2, 3, 4) arrays with x[i, j, k] = 100 i + 10 j + k, stored Fortran-order
    // (first axis fastest) and big-endian, as NumPy writes `np.asfortranarray(x)` with
    // dtype '>f8'.
    let (p, q, r) = (2, 3, 4);
    let mut be = Vec::new();
    for k in 0..r {
        for j in 0..q {
            for i in 0..p {
                be.extend((100.0 * i as f64 + 10.0 * j as f64 + k as f64).to_be_bytes());
            }
        }
    }
    let bytes = raw_npy(
        "{'descr': '>f8', 'fortran_order': True, 'shape': (2, 3, 4), }",
        &be,
    );
    let x = parse_npy(&bytes, "x").unwrap();
    let want: Vec<f64> = (0..p * q * r)
        .map(|t| (100 * (t / (q * r)) + 10 * ((t / r) % q) + t % r) as f64)
        .collect();
    assert_eq!((x.shape(), x.to_vec::<f64>()), (&[2, 3, 4][..], want));
    let mut le32 = Vec::new();
    for j in 0..q {
        for i in 0..p {
            le32.extend(((10 * i + j) as f32).to_le_bytes());
        }
    }
    let bytes = raw_npy(
        "{\"descr\": \"<f4\", \"fortran_order\": True, \"shape\": [2, 3]}",
        &le32,
    );
    let y = parse_npy(&bytes, "y").unwrap();
    assert_eq!(y.dtype(), Dtype::F32);
    assert_eq!(y.to_vec::<f32>(), vec![0.0, 1.0, 2.0, 10.0, 11.0, 12.0]);
    // our own files read back identically, as .npy and inside an .npz
    assert_eq!(parse_npy(&to_npy_bytes(&x), "x").unwrap(), x);
    let dir = tmpdir("npz");
    let z = NpyArray::new(vec![], vec![2.5f64]).unwrap();
    let path = dir.join("arrays.npz");
    wassdl_cli::npy::write_npz(&path, &[("x", &x), ("y", &y), ("z", &z)]).unwrap();
    let mut npz = Npz::read(&path).unwrap();
    assert_eq!(npz.names().collect::<Vec<_>>(), ["x", "y", "z"]);
    assert_eq!(npz.get("y").unwrap(), &y);
    assert_eq!(npz.take("z").unwrap(), z);
    let e = npz.get("w").unwrap_err().to_string();
    assert!(e.contains("arrays.npz") && e.contains("'w'"), "{e}");
}

#[test]
fn npy_reader_rejects_hostile_headers_without_panicking() {
    let f8 =
        |shape: &str| format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}");
    let deep = format!(
        "{{'descr': '<f8', 'fortran_order': False, 'shape': {}8{}, }}",
        "(".repeat(5000),
        ",)".repeat(5000)
    );
    let mut huge_len = b"\x93NUMPY\x02\x00".to_vec();
    huge_len.extend(u32::MAX.to_le_bytes());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            raw_npy(&f8("(4294967296, 4294967296, 16)"), &[]),
            "too large",
        ),
        (raw_npy(&f8("(1000000000000,)"), &[]), "truncated"),
        (raw_npy(&deep, &[]), "integers"),
        (raw_npy(&f8("(2,)"), &[0u8; 24]), "trailing"),
        (raw_npy(&f8("(-2,)"), &[]), "integers"),
        (
            raw_npy(
                "{'descr': [('x', '<f8')], 'fortran_order': False, 'shape': (1,), }",
                &[0u8; 8],
            ),
            "structured",
        ),
        (
            raw_npy(
                "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), 'x': 1}",
                &[0u8; 8],
            ),
            "unexpected key",
        ),
        (
            raw_npy("{'descr': '<f8', 'shape': (1,)}", &[0u8; 8]),
            "fortran_order",
        ),
        (huge_len, "truncated"),
        (b"\x93NUMPY\x09\x00".to_vec(), "version"),
        (b"\x93NUM".to_vec(), "not a NumPy"),
    ];
    for (bytes, needle) in &cases {
        let e = parse_npy(bytes, "hostile.npy").unwrap_err().to_string();
        assert!(e.starts_with("hostile.npy: "), "{e}");
        assert!(e.contains(needle), "{e:?} lacks {needle:?}");
    }
    // A small stable-Rust stand-in for the fuzz target: random byte edits of a valid
    // file either parse to a consistent array or fail with a message.
    let base = raw_npy(&f8("(3, 2)"), &[0u8; 48]);
    let mut rng = StdRng::seed_from_u64(8);
    let mut parsed = 0;
    for _ in 0..3000 {
        let mut b = base.clone();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..b.len());
            let alphabet = b"(),:'0123456789 {}xf<>\xff";
            b[at] = alphabet[rng.random_range(0..alphabet.len())];
        }
        if rng.random_bool(0.2) {
            b.truncate(rng.random_range(0..b.len()));
        }
        match parse_npy(&b, "m") {
            Ok(a) => {
                parsed += 1;
                assert_eq!(a.shape().iter().product::<usize>(), a.len());
                assert!(a.ndim() <= 3);
            }
            Err(e) => assert!(e.to_string().starts_with("m: ")),
        }
    }
    assert!(
        parsed > 0,
        "no mutation kept the file valid: the check exercised nothing"
    );
}

// ---------------------------------------------------------------------------------------
// Dictionary learning, unmixing and the demo

/// Five Gaussians of σ = 0.08 on `n` bins, one per row of a `(5, n)` file, as the `N × 5`
/// batch the library takes (its column-major storage is the file's C order).
fn gaussians(n: usize) -> Batch<f64> {
    wassdl_cli::datasets::gaussians_1d(n, &[0.3, 0.4, 0.5, 0.6, 0.7], 0.08).unwrap()
}

fn load_model(p: &Path) -> Model<f64> {
    wassdl_cli::json::load_model::<f64>(p).unwrap()
}

/// True if the file starts with the PNG signature.
fn is_png(p: &Path) -> bool {
    std::fs::read(p).is_ok_and(|b| b.starts_with(b"\x89PNG\r\n\x1a\n"))
}

#[test]
fn fit_matches_the_library_on_a_cost_matrix_and_draws_1d_pictures() {
    let dir = tmpdir("fit-cost");
    let n = 30;
    let x = gaussians(n);
    let data = save(&dir, "x.npy", &[5, n], x.as_slice().to_vec());
    let pts = wassdl_cli::datasets::linspace(0.0, 1.0, n);
    let c: Vec<f64> = (0..n * n)
        .map(|k| (pts[k / n] - pts[k % n]).powi(2))
        .collect();
    let cost = save(&dir, "c.npy", &[n, n], c.clone());
    let out = dir.join("model.json");
    let png = dir.join("figs");
    let summary = ok(&[
        "fit",
        "--data",
        s(&data),
        "--atoms",
        "2",
        "--cost",
        s(&cost),
        "--reg",
        "0.01",
        "--sinkhorn-iters",
        "10",
        "--loss",
        "kl",
        "--zeta",
        "2",
        "--max-iters",
        "12",
        "--seed",
        "3",
        "--out",
        s(&out),
        "--png",
        s(&png),
    ]);
    let cb = Batch::from_fn(n, n, |i, j| c[i * n + j]);
    let spec = KernelSpec::dense(&cb, 0.01).unwrap();
    let k = spec.build::<f64>().unwrap();
    let cfg = WdlConfig::new(2)
        .barycenter(BarycenterConfig::iterations(10))
        .loss(Loss::KullbackLeibler)
        .zeta(2.0)
        .max_iter(12)
        .seed(3);
    let lib = fit(k.as_ref(), &x, &cfg, &mut NoObserver).unwrap();
    let model = load_model(&out);
    // the same library call on the same bits: equal to the last bit
    assert_eq!(model.atoms(), lib.atoms);
    assert_eq!(model.weights(), lib.weights);
    assert_eq!(model.loss, lib.loss);
    assert_eq!(model.config, cfg);
    assert_eq!(model.kernel, spec);
    assert_eq!(summary["iterations"], lib.iterations);
    json_close(&summary["loss"], lib.loss);
    assert_eq!(summary["termination"], "max_iter");
    assert_eq!(summary["precision"], "float64");
    assert!(is_png(&png.join("atoms.png")) && is_png(&png.join("reconstructions.png")));
}

#[test]
fn fit_on_float32_images_matches_the_library_and_draws_2d_pictures() {
    let dir = tmpdir("fit-images");
    let mut rng = StdRng::seed_from_u64(11);
    let x: Vec<f32> = hists(&mut rng, 4, 30).iter().map(|&v| v as f32).collect();
    let data = save(&dir, "x.npy", &[4, 6, 5], x.clone());
    let out = dir.join("model.json");
    let png = dir.join("figs");
    let summary = ok(&[
        "fit",
        "--data",
        s(&data),
        "--atoms",
        "2",
        "--reg",
        "0.05",
        "--sinkhorn-iters",
        "8",
        "--tau",
        "-0.3",
        "--max-iters",
        "10",
        "--warm-restart",
        "4",
        "--weight-init",
        "random",
        "--out",
        s(&out),
        "--png",
        s(&png),
    ]);
    assert_eq!(summary["precision"], "float32");
    let grid = Grid::new(&[6, 5]).unwrap();
    let k = GridKernel::<f32>::new(&grid, 0.05).unwrap();
    let cfg = WdlConfig::new(2)
        .barycenter(BarycenterConfig {
            tau: -0.3,
            ..BarycenterConfig::iterations(8)
        })
        .max_iter(10)
        .warm_restart(4)
        .weight_init(WeightInit::Random);
    let lib = fit(&k, &Batch::from_vec(30, 4, x), &cfg, &mut NoObserver).unwrap();
    let model = wassdl_cli::json::load_model::<f32>(&out).unwrap();
    assert_eq!(model.atoms(), lib.atoms);
    assert_eq!(model.weights(), lib.weights);
    assert_eq!(model.kernel, KernelSpec::grid(&grid, 0.05));
    assert!(is_png(&png.join("atoms.png")) && is_png(&png.join("reconstructions.png")));
}

#[test]
fn transform_and_reconstruct_match_the_library() {
    let dir = tmpdir("transform");
    let n = 25;
    let grid = Grid::new(&[n]).unwrap();
    let k = GridKernel::<f64>::new(&grid, 0.01).unwrap();
    let cfg = WdlConfig::new(2)
        .barycenter(BarycenterConfig::iterations(15))
        .max_iter(10)
        .seed(1);
    // a model saved by the library; the CLI must use it exactly as the library does
    let x = gaussians(n);
    let learned = fit(&k, &x, &cfg, &mut NoObserver).unwrap();
    let model = Model::new(KernelSpec::grid(&grid, 0.01), cfg.clone(), &learned).unwrap();
    let mp = dir.join("model.json");
    wassdl_cli::json::save_model(&model, &mp).unwrap();
    let new = wassdl_cli::datasets::gaussians_1d(n, &[0.45, 0.55], 0.08).unwrap();
    let pn = save(&dir, "new.npy", &[2, n], new.as_slice().to_vec());
    let pw = dir.join("w.npy");
    let summary = ok(&[
        "transform",
        "--model",
        s(&mp),
        "--data",
        s(&pn),
        "--out",
        s(&pw),
    ]);
    let lib_w = transform(&k, &learned.atoms, &new, &cfg).unwrap();
    let w = read_npy(&pw).unwrap();
    assert_eq!(w.shape(), &[2, 2]);
    assert_eq!(w.to_vec::<f64>(), rows_of(&lib_w));
    assert_eq!(summary["atoms"], 2);

    // reconstruct with those weights, and with the model's own weights
    let pp = dir.join("p.npy");
    ok(&[
        "reconstruct",
        "--model",
        s(&mp),
        "--weights",
        s(&pw),
        "--out",
        s(&pp),
    ]);
    let p = read_npy(&pp).unwrap();
    assert_eq!(p.shape(), &[2, n]);
    let lib_p = reconstruct(&k, &learned.atoms, &lib_w, &cfg).unwrap();
    assert_eq!(p.to_vec::<f64>(), rows_of(&lib_p));
    let po = dir.join("own.npy");
    let summary = ok(&[
        "reconstruct",
        "--model",
        s(&mp),
        "--sinkhorn-iters",
        "40",
        "--out",
        s(&po),
    ]);
    assert_eq!(summary["sinkhorn_iters"], 40);
    let own = read_npy(&po).unwrap();
    assert_eq!(own.shape(), &[5, n]);
    let cfg40 = cfg.clone().barycenter(BarycenterConfig::iterations(40));
    let lib_own = reconstruct(&k, &learned.atoms, &learned.weights, &cfg40).unwrap();
    assert_eq!(own.to_vec::<f64>(), rows_of(&lib_own));
    // one weight vector (S,) gives one histogram (N,)
    let w1 = save(&dir, "w1.npy", &[2], vec![0.3, 0.7]);
    let p1 = dir.join("p1.npy");
    ok(&[
        "reconstruct",
        "--model",
        s(&mp),
        "--weights",
        s(&w1),
        "--out",
        s(&p1),
    ]);
    assert_eq!(read_npy(&p1).unwrap().shape(), &[n]);
}

/// The model files of two fits hold the same dictionary to the last bit (atoms, weights,
/// loss).
fn assert_same_model(a: &Path, b: &Path) {
    let (ma, mb) = (load_model(a), load_model(b));
    assert_eq!(ma.atoms, mb.atoms);
    assert_eq!(ma.weights, mb.weights);
    assert_eq!(ma.loss.to_bits(), mb.loss.to_bits());
}

/// A float of the JSON summary against the library's value. serde_json (without its
/// `float_roundtrip` feature) parses some 17-digit decimals one ulp off, so the summary
/// is compared to 2 ulp; the output files are compared exactly.
fn json_close(v: &serde_json::Value, want: f64) {
    let got = v.as_f64().unwrap();
    assert!(
        (got - want).abs() <= 2.0 * f64::EPSILON * want.abs(),
        "{got} vs {want}"
    );
}

/// `fit` arguments shared by the checkpoint tests (L-BFGS restarts every 5 iterations).
fn ck_fit_args<'a>(data: &'a str, l: &'a str) -> Vec<&'a str> {
    vec![
        "fit",
        "--data",
        data,
        "--atoms",
        "3",
        "--reg",
        "0.004",
        "--sinkhorn-iters",
        l,
        "--warm-restart",
        "5",
        "--weight-init",
        "random",
        "--seed",
        "2",
    ]
}

#[test]
fn a_fit_resumed_from_its_checkpoint_ends_bit_identical() {
    let dir = tmpdir("resume");
    let x = gaussians(60);
    let data = save(&dir, "x.npy", &[5, 60], x.as_slice().to_vec());
    let base = ck_fit_args(s(&data), "5");
    let run = |extra: &[&str]| {
        let mut a = base.clone();
        a.extend_from_slice(extra);
        ok(&a)
    };
    let full = dir.join("full.json");
    run(&["--max-iters", "30", "--out", s(&full)]);
    // a fit that stops after 12 iterations: the budget cuts its third L-BFGS run short,
    // which is no restart of a longer fit, so its last checkpoint is the one at 10...
    let ck = dir.join("ck.json");
    let part = dir.join("part.json");
    let summary = run(&[
        "--max-iters",
        "12",
        "--checkpoint",
        s(&ck),
        "--checkpoint-every",
        "10",
        "--out",
        s(&part),
    ]);
    assert_eq!(summary["checkpoints_at"], serde_json::json!([10]));
    // ...and the checkpoint is a model: the dictionary a 10-iteration fit ends with
    let ten = dir.join("ten.json");
    run(&["--max-iters", "10", "--out", s(&ten)]);
    assert_same_model(&ck, &ten);
    // resumed to the checkpoint's own budget, it ends where the 12-iteration fit ended
    let again = dir.join("again.json");
    let summary = ok(&[
        "fit",
        "--resume",
        s(&ck),
        "--data",
        s(&data),
        "--out",
        s(&again),
    ]);
    assert_eq!(summary["resumed_from"], 10);
    assert_same_model(&part, &again);
    // resumed in two legs to the full budget (a budget spent by a complete run is a
    // restart, so the first leg's final checkpoint extends exactly), it ends where the
    // uninterrupted fit ends
    let mid = dir.join("mid.json");
    let summary = ok(&[
        "fit",
        "--resume",
        s(&ck),
        "--data",
        s(&data),
        "--max-iters",
        "20",
        "--checkpoint",
        s(&ck),
        "--out",
        s(&mid),
    ]);
    assert_eq!(summary["checkpoints_at"], serde_json::json!([15, 20]));
    let resumed = dir.join("resumed.json");
    let summary = ok(&[
        "fit",
        "--resume",
        s(&ck),
        "--data",
        s(&data),
        "--max-iters",
        "30",
        "--out",
        s(&resumed),
    ]);
    assert_eq!(summary["resumed_from"], 20);
    assert_eq!(summary["iterations"], 30);
    assert_same_model(&full, &resumed);
    assert_eq!(load_model(&full).config, load_model(&resumed).config);
    // without a new budget a resumed fit keeps the checkpoint's, which is spent here
    fails(
        &[
            "fit",
            "--resume",
            s(&ck),
            "--data",
            s(&data),
            "--out",
            s(&resumed),
        ],
        1,
        &[s(&ck), "iteration 20", "raise --max-iters"],
    );
}

#[test]
fn a_killed_fit_continues_from_its_last_checkpoint_bit_identical() {
    let dir = tmpdir("kill");
    let x = gaussians(60);
    let data = save(&dir, "x.npy", &[5, 60], x.as_slice().to_vec());
    // L = 40 makes an iteration take milliseconds; 300 of them (~1 s) leave the test
    // thread a second to see the first checkpoint (iteration 5) and kill the fit even
    // when the machine is loaded (with 60, ~0.2 s remained: a descheduled poll could
    // miss it)
    let mut args = ck_fit_args(s(&data), "40");
    let full = dir.join("full.json");
    let ck = dir.join("ck.json");
    let killed_out = dir.join("killed.json");
    args.extend_from_slice(&["--max-iters", "300"]);
    let mut killed = args.clone();
    killed.extend_from_slice(&["--checkpoint", s(&ck), "--out", s(&killed_out)]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_wassdl"))
        .args(&killed)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !ck.exists() {
        assert!(t0.elapsed().as_secs() < 60, "no checkpoint appeared");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    assert!(
        !killed_out.exists(),
        "the fit finished before it was killed"
    );
    let at = serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&ck).unwrap())
        .unwrap()["checkpoint"]["iterations"]
        .as_u64()
        .unwrap();
    assert!(at > 0 && at < 300 && at % 5 == 0, "checkpoint at {at}");
    let resumed = dir.join("resumed.json");
    ok(&[
        "fit",
        "--resume",
        s(&ck),
        "--data",
        s(&data),
        "--out",
        s(&resumed),
    ]);
    let mut uninterrupted = args.clone();
    uninterrupted.extend_from_slice(&["--out", s(&full)]);
    ok(&uninterrupted);
    assert_same_model(&full, &resumed);
}

#[test]
fn unmix_matches_the_library_exact_and_entropic() {
    let dir = tmpdir("unmix");
    let (ns, nt) = (12, 9);
    let mut rng = StdRng::seed_from_u64(5);
    let h = hists(&mut rng, 3, ns);
    let y = hists(&mut rng, 1, nt);
    let c: Vec<f64> = (0..ns * nt)
        .map(|q| ((q / nt) as f64 / ns as f64 - (q % nt) as f64 / nt as f64).powi(2))
        .collect();
    let ph = save(&dir, "h.npy", &[3, ns], h.clone());
    let py = save(&dir, "y.npy", &[nt], y.clone());
    let pc = save(&dir, "c.npy", &[ns, nt], c.clone());
    let hb = Batch::from_vec(ns, 3, h);
    let cb = Batch::from_fn(ns, nt, |i, j| c[i * nt + j]);
    let pw = dir.join("w.npy");
    for (extra, solver) in [
        (vec![], InnerOt::Exact { max_iter: 100_000 }),
        (
            vec!["--reg", "0.01"],
            InnerOt::Entropic {
                gamma: 0.01,
                stop: Stop::Tolerance {
                    tol: 1e-9,
                    max_iter: 10_000,
                },
            },
        ),
    ] {
        let mut args = vec![
            "unmix",
            "--sources",
            s(&ph),
            "--target",
            s(&py),
            "--cost",
            s(&pc),
            "--lr",
            "0.5",
            "--iters",
            "40",
            "--out",
            s(&pw),
        ];
        args.extend(extra);
        let summary = ok(&args);
        let cfg = UnmixingConfig {
            lr: 0.5,
            iterations: 40,
            solver,
        };
        let lib = unmix(&hb, &y, &cb, None, &cfg).unwrap();
        let w = read_npy(&pw).unwrap();
        assert_eq!(w.shape(), &[3]);
        assert_eq!(w.to_vec::<f64>(), lib.weights, "{solver:?}");
        json_close(&summary["initial_loss"], lib.losses[0]);
        // the steps descend: the final OT cost is below the one at uniform weights
        assert!(summary["loss"].as_f64().unwrap() < lib.losses[0]);
    }
}

#[test]
fn demo_writes_its_folder_and_is_the_fit_it_spells_out() {
    let dir = tmpdir("demo");
    let folder = dir.join("demo");
    let summary = ok(&["demo", "--dir", s(&folder), "--max-iters", "30"]);
    for f in ["data.npy", "model.json", "atoms.png", "reconstructions.png"] {
        assert!(folder.join(f).exists(), "{f}");
    }
    let data = read_npy(folder.join("data.npy")).unwrap();
    assert_eq!(data.shape(), &[5, 100]);
    assert_eq!(
        data.to_vec::<f64>(),
        rows_of(&wassdl_cli::datasets::fig2_gaussians())
    );
    // the command line it prints gives the same model
    let line = summary["equivalent_command"].as_str().unwrap().to_string();
    let again = dir.join("again.json");
    let mut args: Vec<&str> = line.split(' ').skip(1).collect();
    let out_at = args.iter().position(|a| *a == "--out").unwrap();
    args[out_at + 1] = s(&again);
    let png_at = args.iter().position(|a| *a == "--png").unwrap();
    args.drain(png_at..png_at + 2);
    ok(&args);
    assert_same_model(&folder.join("model.json"), &again);
    assert_eq!(summary["weights"].as_array().unwrap().len(), 5);
}

#[test]
fn dictionary_and_unmix_errors_are_one_line_naming_the_file() {
    let dir = tmpdir("dict-errors");
    let n = 20;
    let x = gaussians(n);
    let data = save(&dir, "x.npy", &[5, n], x.as_slice().to_vec());
    let sd = s(&data);
    let out = dir.join("m.json");
    let so = s(&out);
    let fit_with = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "fit",
            "--data",
            sd,
            "--atoms",
            "2",
            "--reg",
            "0.01",
            "--sinkhorn-iters",
            "5",
            "--out",
            so,
        ]
        .iter()
        .map(|v| v.to_string())
        .collect();
        a.extend(extra.iter().map(|v| v.to_string()));
        a
    };
    let check = |args: Vec<String>, code: i32, needles: &[&str]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(&args, code, needles);
    };
    check(
        fit_with(&["--checkpoint", s(&dir.join("ck.json"))]),
        1,
        &["--checkpoint needs --warm-restart"],
    );
    check(fit_with(&["--zeta", "-1"]), 1, &["--zeta", "> 0"]);
    check(fit_with(&["--max-iters", "0"]), 1, &["--max-iters = 0"]);
    check(fit_with(&["--loss", "huber"]), 2, &["huber"]);
    check(
        fit_with(&["--grid", "21"]),
        1,
        &[sd, "20 bins", "--grid 21"],
    );
    let mut v = x.as_slice().to_vec();
    v[n..2 * n].iter_mut().for_each(|t| *t *= 0.5);
    let half = save(&dir, "half.npy", &[5, n], v);
    let mut a = fit_with(&[]);
    a[2] = s(&half).into();
    check(a, 1, &[s(&half), "row 1 sums to 0.5"]);
    let c = save(&dir, "c.npy", &[n, n - 1], vec![0.0; n * (n - 1)]);
    check(fit_with(&["--cost", s(&c)]), 1, &[s(&c), "(20, 20)"]);
    // --resume takes the settings from the checkpoint: giving them again is an error
    check(
        vec![
            "fit".into(),
            "--resume".into(),
            "ck.json".into(),
            "--data".into(),
            sd.into(),
            "--atoms".into(),
            "2".into(),
            "--out".into(),
            so.into(),
        ],
        2,
        &["--atoms", "--resume"],
    );
    // a model is not a checkpoint; a checkpoint refuses other data
    let ck = dir.join("ck.json");
    ok(&fit_with(&[
        "--warm-restart",
        "3",
        "--max-iters",
        "3",
        "--checkpoint",
        s(&ck),
    ])
    .iter()
    .map(String::as_str)
    .collect::<Vec<_>>());
    fails(
        &[
            "fit",
            "--resume",
            so,
            "--data",
            sd,
            "--max-iters",
            "9",
            "--out",
            s(&dir.join("m2.json")),
        ],
        1,
        &[so, "without checkpoint state"],
    );
    let other = save(
        &dir,
        "other.npy",
        &[5, n],
        gaussians(n).as_slice().iter().rev().copied().collect(),
    );
    fails(
        &[
            "fit",
            "--resume",
            s(&ck),
            "--data",
            s(&other),
            "--max-iters",
            "9",
            "--out",
            so,
        ],
        1,
        &[
            s(&other),
            "not the data the checkpoint --resume",
            "was fitted on",
        ],
    );
    // transform / reconstruct: model files and shapes
    let missing = dir.join("missing.json");
    fails(
        &[
            "transform",
            "--model",
            s(&missing),
            "--data",
            sd,
            "--out",
            s(&dir.join("w.npy")),
        ],
        1,
        &["--model", s(&missing), "no such file"],
    );
    fails(
        &[
            "transform",
            "--model",
            sd,
            "--data",
            sd,
            "--out",
            s(&dir.join("w.npy")),
        ],
        1,
        &["--model", sd, "not a text (JSON) file"],
    );
    let not_model = dir.join("x.json");
    std::fs::write(&not_model, "{\"a\": 1}").unwrap();
    fails(
        &[
            "reconstruct",
            "--model",
            s(&not_model),
            "--out",
            s(&dir.join("p.npy")),
        ],
        1,
        &[s(&not_model), "not a wassdl model file"],
    );
    let short = save(
        &dir,
        "short.npy",
        &[2, n - 1],
        hists(&mut StdRng::seed_from_u64(1), 2, n - 1),
    );
    fails(
        &[
            "transform",
            "--model",
            so,
            "--data",
            s(&short),
            "--out",
            s(&dir.join("w.npy")),
        ],
        1,
        &[s(&short), "(2, 19)", "20 bins per histogram"],
    );
    let w3 = save(&dir, "w3.npy", &[3], vec![0.2, 0.3, 0.5]);
    fails(
        &[
            "reconstruct",
            "--model",
            so,
            "--weights",
            s(&w3),
            "--out",
            s(&dir.join("p.npy")),
        ],
        1,
        &[s(&w3), "3 weights", "2 atoms"],
    );
    // unmix
    let h = save(&dir, "h.npy", &[2, 4], vec![0.25; 8]);
    let y = save(&dir, "y.npy", &[3], vec![0.2, 0.3, 0.5]);
    let cbad = save(&dir, "cbad.npy", &[4, 4], vec![0.0; 16]);
    let pw = dir.join("w.npy");
    fails(
        &[
            "unmix",
            "--sources",
            s(&h),
            "--target",
            s(&y),
            "--cost",
            s(&cbad),
            "--out",
            s(&pw),
        ],
        1,
        &[s(&cbad), "(4, 3)"],
    );
    let mut cv = vec![0.0; 12];
    cv[7] = f64::INFINITY;
    let cinf = save(&dir, "cinf.npy", &[4, 3], cv);
    fails(
        &[
            "unmix",
            "--sources",
            s(&h),
            "--target",
            s(&y),
            "--cost",
            s(&cinf),
            "--out",
            s(&pw),
        ],
        1,
        &[s(&cinf), "entry [2, 1] is not finite (inf)"],
    );
    let c43 = save(&dir, "c43.npy", &[4, 3], vec![1.0; 12]);
    fails(
        &[
            "unmix",
            "--sources",
            s(&h),
            "--target",
            s(&y),
            "--cost",
            s(&c43),
            "--reg",
            "0",
            "--out",
            s(&pw),
        ],
        1,
        &["--reg = 0", "> 0"],
    );
    let hbad = save(
        &dir,
        "hbad.npy",
        &[2, 4],
        vec![0.25, 0.25, 0.25, 0.25, 0.5, 0.5, 0.5, 0.5],
    );
    fails(
        &[
            "unmix",
            "--sources",
            s(&hbad),
            "--target",
            s(&y),
            "--cost",
            s(&c43),
            "--out",
            s(&pw),
        ],
        1,
        &[s(&hbad), "row 1 sums to 2"],
    );
    assert!(!pw.exists());
}

// ---- Issue 12: defects found by 294 bad-input runs ---------------------------------

/// Item 1: a result that is not finite is an error, never an output: `emd` with a cost
/// entry equal to the largest float gave cost 0, an empty plan and NaN potentials;
/// `sinkhorn` with γ = 1e308 and costs ±1.5e308 gave a NaN or −∞ cost (both domains).
#[test]
fn non_finite_results_are_errors_never_outputs() {
    let dir = tmpdir("nonfinite");
    let a = save(&dir, "a.npy", &[2], vec![0.5, 0.5]);
    let cmax = save(&dir, "cmax.npy", &[2, 2], vec![0.0, f64::MAX, 1.0, 0.0]);
    let c15 = save(
        &dir,
        "c15.npy",
        &[2, 2],
        vec![1.5e308, -1.5e308, -1.5e308, 1.5e308],
    );
    let out = dir.join("o.npz");
    fails(
        &[
            "emd",
            "--a",
            s(&a),
            "--b",
            s(&a),
            "--cost",
            s(&cmax),
            "--out",
            s(&out),
        ],
        1,
        &["emd", "NaN", s(&cmax), "rescale"],
    );
    for log in [false, true] {
        let mut args = vec![
            "sinkhorn",
            "--a",
            s(&a),
            "--b",
            s(&a),
            "--cost",
            s(&c15),
            "--reg",
            "1e308",
            "--out",
            s(&out),
        ];
        if log {
            args.push("--log");
        }
        fails(
            &args,
            1,
            &["sinkhorn failed", "beyond the range", "rescale"],
        );
    }
    assert!(!out.exists());
}

/// Item 2: `--out` naming an input (also through another path to it) is refused before
/// anything is written, for every subcommand, and the input is left as it was.
#[test]
fn an_output_that_is_an_input_is_refused() {
    let dir = tmpdir("out-is-input");
    let n = 20;
    let x = gaussians(n);
    let data = save(&dir, "x.npy", &[5, n], x.as_slice().to_vec());
    let model = dir.join("m.json");
    let ck = dir.join("ck.json");
    ok(&[
        "fit",
        "--data",
        s(&data),
        "--atoms",
        "2",
        "--reg",
        "0.01",
        "--sinkhorn-iters",
        "5",
        "--max-iters",
        "3",
        "--warm-restart",
        "3",
        "--checkpoint",
        s(&ck),
        "--out",
        s(&model),
    ]);
    let a = save(&dir, "a.npy", &[n], x.col(0).to_vec());
    let w = save(&dir, "w.npy", &[2], vec![0.5, 0.5]);
    let c = save(&dir, "c.npy", &[n, n], vec![1.0; n * n]);
    let sub = dir.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    // other spellings of the same files: `sub/../x.npy`, and symbolic links whose names
    // have the extension the subcommand requires
    let via = |p: &Path| sub.join("..").join(p.file_name().unwrap());
    let link = |target: &Path, name: &str| {
        let l = dir.join(name);
        std::os::unix::fs::symlink(target, &l).unwrap();
        l
    };
    let a_npz = link(&a, "a-link.npz");
    let c_npz = link(&c, "c-link.npz");
    let model_npy = link(&model, "m-link.npy");
    let before: Vec<(PathBuf, Vec<u8>)> = [&data, &model, &ck, &a, &w, &c]
        .iter()
        .map(|p| (p.to_path_buf(), std::fs::read(p).unwrap()))
        .collect();
    let (data_via, w_via, a_via) = (via(&data), via(&w), via(&a));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "fit",
                "--data",
                s(&data),
                "--atoms",
                "2",
                "--reg",
                "0.01",
                "--sinkhorn-iters",
                "5",
                "--out",
                s(&data),
            ],
            "--data",
        ),
        (
            vec![
                "fit",
                "--resume",
                s(&ck),
                "--data",
                s(&data),
                "--max-iters",
                "6",
                "--out",
                s(&ck),
            ],
            "--resume",
        ),
        (
            vec![
                "sinkhorn",
                "--a",
                s(&a),
                "--b",
                s(&a),
                "--reg",
                "0.1",
                "--out",
                s(&a_npz),
            ],
            "--a",
        ),
        (
            vec![
                "emd",
                "--a",
                s(&a),
                "--b",
                s(&a),
                "--cost",
                s(&c),
                "--out",
                s(&c_npz),
            ],
            "--cost",
        ),
        (
            vec![
                "barycenter",
                "--atoms",
                s(&data),
                "--weights",
                s(&w),
                "--reg",
                "0.1",
                "--out",
                s(&data_via),
            ],
            "--atoms",
        ),
        (
            vec![
                "transform",
                "--model",
                s(&model),
                "--data",
                s(&data),
                "--out",
                s(&model_npy),
            ],
            "--model",
        ),
        (
            vec![
                "reconstruct",
                "--model",
                s(&model),
                "--weights",
                s(&w),
                "--out",
                s(&w_via),
            ],
            "--weights",
        ),
        (
            vec![
                "unmix",
                "--sources",
                s(&data),
                "--target",
                s(&a),
                "--cost",
                s(&c),
                "--out",
                s(&a_via),
            ],
            "--target",
        ),
    ];
    for (args, input) in &cases {
        fails(args, 1, &["--out", "is the input", input, "destroy"]);
    }
    // --out and --checkpoint of one fit must differ too
    fails(
        &[
            "fit",
            "--data",
            s(&data),
            "--atoms",
            "2",
            "--reg",
            "0.01",
            "--sinkhorn-iters",
            "5",
            "--warm-restart",
            "3",
            "--checkpoint",
            s(&model),
            "--out",
            s(&model),
        ],
        1,
        &["--checkpoint", "same file as --out"],
    );
    for (p, bytes) in &before {
        assert_eq!(&std::fs::read(p).unwrap(), bytes, "{} changed", p.display());
    }
    // the documented resume, --checkpoint equal to --resume, is still accepted
    ok(&[
        "fit",
        "--resume",
        s(&ck),
        "--data",
        s(&data),
        "--max-iters",
        "6",
        "--checkpoint",
        s(&ck),
        "--out",
        s(&dir.join("m6.json")),
    ]);
}

/// Item 3: every output location is checked before the work: `fit --png FILE` used to
/// write the model and then fail on the pictures.
#[test]
fn every_output_location_is_checked_before_the_work() {
    let dir = tmpdir("out-first");
    let n = 20;
    let data = save(&dir, "x.npy", &[5, n], gaussians(n).as_slice().to_vec());
    let file = dir.join("not-a-dir");
    std::fs::write(&file, b"a file").unwrap();
    let model = dir.join("m.json");
    let fit = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "fit",
            "--data",
            s(&data),
            "--atoms",
            "2",
            "--reg",
            "0.01",
            "--sinkhorn-iters",
            "5",
            "--max-iters",
            "3",
            "--out",
            s(&model),
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let run = |v: Vec<String>, needles: &[&str]| {
        let args: Vec<&str> = v.iter().map(String::as_str).collect();
        fails(&args, 1, needles);
    };
    run(
        fit(&["--png", s(&file)]),
        &["--png", s(&file), "not a directory"],
    );
    run(
        fit(&["--png", s(&file.join("figs"))]),
        &["--png", "not a directory"],
    );
    run(
        fit(&[
            "--warm-restart",
            "3",
            "--checkpoint",
            s(&dir.join("missing/ck.json")),
        ]),
        &["--checkpoint", "does not exist"],
    );
    assert!(
        !model.exists(),
        "the model was written before a refused output"
    );
    ok(&fit(&[]).iter().map(String::as_str).collect::<Vec<_>>());
    fails(
        &[
            "reconstruct",
            "--model",
            s(&model),
            "--out",
            s(&dir.join("p.npy")),
            "--png",
            s(&file),
        ],
        1,
        &["--png", "not a directory"],
    );
    assert!(!dir.join("p.npy").exists());
}

/// Item 4: τ ≤ −1 can never converge (over-relaxation by ω = 1 − τ ≥ 2): refused up
/// front with the valid range and the reason, not "use --log or a larger --reg" after
/// thousands of iterations.
#[test]
fn tau_at_or_below_minus_one_is_refused_with_its_range() {
    let dir = tmpdir("tau");
    let n = 20;
    let data = save(&dir, "x.npy", &[5, n], gaussians(n).as_slice().to_vec());
    let w = save(&dir, "w.npy", &[5], vec![0.2; 5]);
    let out = dir.join("p.npy");
    for tau in ["-1", "-1.5", "-1e9"] {
        fails(
            &[
                "barycenter",
                "--atoms",
                s(&data),
                "--weights",
                s(&w),
                "--reg",
                "0.01",
                "--tau",
                tau,
                "--out",
                s(&out),
            ],
            1,
            &["--tau", "(-1, 0]", "over-relaxed", "converges only"],
        );
        fails(
            &[
                "fit",
                "--data",
                s(&data),
                "--atoms",
                "2",
                "--reg",
                "0.01",
                "--sinkhorn-iters",
                "5",
                "--tau",
                tau,
                "--out",
                s(&dir.join("m.json")),
            ],
            1,
            &["--tau", "(-1, 0]"],
        );
    }
    // inside the range it runs
    ok(&[
        "barycenter",
        "--atoms",
        s(&data),
        "--weights",
        s(&w),
        "--reg",
        "0.01",
        "--tau",
        "-0.5",
        "--out",
        s(&out),
    ]);
}

/// Item 5: messages name the options of the subcommand at hand, and errors from a model
/// or checkpoint file name the file and the field.
#[test]
fn messages_name_the_options_of_the_subcommand_and_the_fields_of_files() {
    let dir = tmpdir("names");
    let n = 20;
    let data = save(&dir, "x.npy", &[5, n], gaussians(n).as_slice().to_vec());
    let model = dir.join("m.json");
    let ck = dir.join("ck.json");
    // `fit --loss wasserstein:0` used to say "--iters = 0", an option fit does not have
    let out = wassdl(&[
        "fit",
        "--data",
        s(&data),
        "--atoms",
        "2",
        "--reg",
        "0.01",
        "--sinkhorn-iters",
        "5",
        "--loss",
        "wasserstein:0",
        "--out",
        s(&model),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("wasserstein:0") && err.contains(">= 1"),
        "{err}"
    );
    assert!(!err.contains("--iters"), "{err}");
    ok(&[
        "fit",
        "--data",
        s(&data),
        "--atoms",
        "2",
        "--reg",
        "0.01",
        "--sinkhorn-iters",
        "5",
        "--max-iters",
        "3",
        "--warm-restart",
        "3",
        "--checkpoint",
        s(&ck),
        "--out",
        s(&model),
    ]);
    // a model (or checkpoint) with γ < 0, τ > 0: "--reg = -1" named an option that
    // transform and reconstruct do not have
    let edit = |from: &Path, name: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(from).unwrap()).unwrap();
        f(&mut v);
        let p = dir.join(name);
        std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
        p
    };
    let neg = edit(&model, "neg.json", &|v| {
        v["kernel"]["Grid"]["gamma"] = (-1.0).into()
    });
    let tau = edit(&model, "tau.json", &|v| {
        v["config"]["barycenter"]["tau"] = 0.5.into()
    });
    let w = dir.join("w.npy");
    for (m, field) in [
        (&neg, "kernel.Grid.gamma = -1"),
        (&tau, "config.barycenter.tau = 0.5"),
    ] {
        for args in [
            vec![
                "transform",
                "--model",
                s(m),
                "--data",
                s(&data),
                "--out",
                s(&w),
            ],
            vec!["reconstruct", "--model", s(m), "--out", s(&w)],
        ] {
            let out = wassdl(&args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!err.contains("--reg") && !err.contains("--tau"), "{err}");
            fails(&args, 1, &["--model", s(m), field]);
        }
    }
    let ck_neg = edit(&ck, "ck-neg.json", &|v| {
        v["kernel"]["Grid"]["gamma"] = (-1.0).into()
    });
    fails(
        &[
            "fit",
            "--resume",
            s(&ck_neg),
            "--data",
            s(&data),
            "--max-iters",
            "6",
            "--out",
            s(&dir.join("m2.json")),
        ],
        1,
        &["--resume", s(&ck_neg), "kernel.Grid.gamma = -1"],
    );
    // unmix: an inner Sinkhorn failure is dated by the projected-gradient step and named
    // with unmix's options (it said "failed at iteration 10000 ... raise max_iter or reg")
    let h = save(&dir, "h.npy", &[2, 2], vec![0.5, 0.5, 0.25, 0.75]);
    let y = save(&dir, "y.npy", &[2], vec![0.5, 0.5]);
    let c = save(&dir, "c.npy", &[2, 2], vec![0.0, 1.0, 1.0, 0.0]);
    let args = [
        "unmix",
        "--sources",
        s(&h),
        "--target",
        s(&y),
        "--cost",
        s(&c),
        "--reg",
        "1e-300",
        "--iters",
        "3",
        "--out",
        s(&w),
    ];
    let out = wassdl(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("max_iter ") && !err.contains("iteration 10000"),
        "{err}"
    );
    fails(
        &args,
        1,
        &[
            "unmix failed at iteration 1",
            "--max-iters",
            "--reg",
            "--tol",
        ],
    );
}

/// Item 6: a step `--lr · ∇` beyond float precision (or a cost ×1e306) was reported as
/// "the two measures carry different total mass (4.3e17 vs 1)" though both inputs sum
/// to 1.
#[test]
fn unmix_step_beyond_float_precision_names_lr() {
    let dir = tmpdir("unmix-lr");
    let h = save(
        &dir,
        "h.npy",
        &[3, 3],
        vec![0.2, 0.3, 0.5, 0.6, 0.3, 0.1, 0.1, 0.1, 0.8],
    );
    let y = save(&dir, "y.npy", &[3], vec![0.3, 0.3, 0.4]);
    let x = [0.0f64, 0.5, 1.0];
    let sq: Vec<f64> = (0..9).map(|k| (x[k / 3] - x[k % 3]).powi(2)).collect();
    let c = save(&dir, "c.npy", &[3, 3], sq.clone());
    let cbig = save(
        &dir,
        "cbig.npy",
        &[3, 3],
        sq.iter().map(|v| v * 1e306).collect(),
    );
    let w = dir.join("w.npy");
    for (cost, lr) in [(&c, "1e18"), (&cbig, "2e-3")] {
        let args = [
            "unmix",
            "--sources",
            s(&h),
            "--target",
            s(&y),
            "--cost",
            s(cost),
            "--lr",
            lr,
            "--out",
            s(&w),
        ];
        let out = wassdl(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("total mass"), "{err}");
        fails(
            &args,
            1,
            &["unmix failed at iteration", "--lr", "float precision"],
        );
    }
    assert!(!w.exists());
}

/// Item 7: `fit --loss kl` on data with zero bins: KL(p|x) is infinite where the data
/// vanishes (barycenters are positive everywhere). The message stated the reverse
/// condition, with a hard-coded "iteration: 0"; it is now refused up front, naming the
/// entry.
#[test]
fn kl_loss_on_data_with_zero_bins_is_refused_up_front() {
    let dir = tmpdir("kl-zeros");
    let x = save(
        &dir,
        "x.npy",
        &[2, 4],
        vec![0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5],
    );
    let model = dir.join("m.json");
    let args = [
        "fit",
        "--data",
        s(&x),
        "--atoms",
        "1",
        "--reg",
        "0.1",
        "--sinkhorn-iters",
        "3",
        "--loss",
        "kl",
        "--out",
        s(&model),
    ];
    let out = wassdl(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("iteration 0") && !err.contains("reconstruction vanishes"),
        "{err}"
    );
    fails(
        &args,
        1,
        &[s(&x), "entry [0, 2] is 0", "the data x vanishes", "--loss"],
    );
}

/// Item 8: NumPy reads `'=f8'` (and every other spelling of native float32/float64:
/// `|f8`, `f8`, `=f4`, `d`, `<d`, `float64`, ...); so does wassdl.
#[test]
fn npy_native_endian_spellings_are_read() {
    let dir = tmpdir("npy-native");
    let v = [0.25f64, 0.75];
    let f8: Vec<u8> = v.iter().flat_map(|x| x.to_ne_bytes()).collect();
    let f4: Vec<u8> = v.iter().flat_map(|&x| (x as f32).to_ne_bytes()).collect();
    let le8: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let be8: Vec<u8> = v.iter().flat_map(|x| x.to_be_bytes()).collect();
    let cases: Vec<(&str, &[u8], Dtype)> = vec![
        ("=f8", &f8, Dtype::F64),
        ("|f8", &f8, Dtype::F64),
        ("f8", &f8, Dtype::F64),
        ("=d", &f8, Dtype::F64),
        ("d", &f8, Dtype::F64),
        ("float64", &f8, Dtype::F64),
        ("double", &f8, Dtype::F64),
        ("<d", &le8, Dtype::F64),
        (">d", &be8, Dtype::F64),
        ("=f4", &f4, Dtype::F32),
        ("|f4", &f4, Dtype::F32),
        ("f4", &f4, Dtype::F32),
        ("f", &f4, Dtype::F32),
        ("float32", &f4, Dtype::F32),
        ("single", &f4, Dtype::F32),
    ];
    for (descr, data, dtype) in &cases {
        let bytes = raw_npy(
            &format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (2,), }}"),
            data,
        );
        let arr = parse_npy(&bytes, descr).unwrap_or_else(|e| panic!("{descr}: {e}"));
        assert_eq!(arr.dtype(), *dtype, "{descr}");
        assert_eq!(arr.to_vec::<f64>(), v.to_vec(), "{descr}");
    }
    // the binary reads it, from a file
    let a = dir.join("a.npy");
    std::fs::write(
        &a,
        raw_npy(
            "{'descr': '=f8', 'fortran_order': False, 'shape': (2,), }",
            &f8,
        ),
    )
    .unwrap();
    let c = save(&dir, "c.npy", &[2, 2], vec![0.0, 1.0, 1.0, 0.0]);
    ok(&[
        "emd",
        "--a",
        s(&a),
        "--b",
        s(&a),
        "--cost",
        s(&c),
        "--out",
        s(&dir.join("o.npz")),
    ]);
    // still refused: other types under any mark
    for descr in ["=i8", "|f2", "=c16", "=f16"] {
        let bytes = raw_npy(
            &format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (1,), }}"),
            &[0u8; 16][..if descr == "|f2" {
                2
            } else if descr == "=i8" {
                8
            } else {
                16
            }],
        );
        assert!(parse_npy(&bytes, descr).is_err(), "{descr} accepted");
    }
}

/// Item 9: the smaller ones. An output whose extension says the other format is refused;
/// a float32-normalized `a` against a float64 `b` converges (its masses are summed and
/// renormalized in float64); solver messages give NumPy indices (histogram, then bin);
/// `unmix --iters 0` and `emd --max-iters 0` are refused like every other zero count.
#[test]
fn extensions_mixed_precision_indices_and_zero_counts() {
    let dir = tmpdir("item9");
    let mut rng = StdRng::seed_from_u64(12);
    let n = 50;
    let a64 = hists(&mut rng, 1, n);
    let b = save(&dir, "b.npy", &[n], hists(&mut rng, 1, n));
    let a32: Vec<f32> = a64.iter().map(|&x| x as f32).collect();
    let mass: f64 = a32.iter().map(|&x| x as f64).sum();
    assert!(
        (mass - 1.0).abs() > 1e-9,
        "the case needs an f32 mass error: {mass}"
    );
    let a = save(&dir, "a32.npy", &[n], a32);
    let npz = dir.join("ot.npz");
    let npy = dir.join("ot.npy");
    fails(
        &[
            "sinkhorn",
            "--a",
            s(&a),
            "--b",
            s(&b),
            "--reg",
            "0.05",
            "--out",
            s(&npy),
        ],
        1,
        &["--out", s(&npy), ".npz"],
    );
    let summary = ok(&[
        "sinkhorn",
        "--a",
        s(&a),
        "--b",
        s(&b),
        "--reg",
        "0.05",
        "--out",
        s(&npz),
    ]);
    assert_eq!(summary["precision"], "float64");
    assert_eq!(summary["converged"], true, "{summary}");
    assert!(
        summary["iterations"].as_u64().unwrap() < 10_000,
        "{summary}"
    );
    let atoms = save(&dir, "d.npy", &[2, n], hists(&mut rng, 2, n));
    let w = save(&dir, "w.npy", &[2], vec![0.5, 0.5]);
    fails(
        &[
            "barycenter",
            "--atoms",
            s(&atoms),
            "--weights",
            s(&w),
            "--reg",
            "0.05",
            "--out",
            s(&dir.join("p.npz")),
        ],
        1,
        &["--out", ".npy"],
    );
    // a heavy-ball extrapolation near its limit overflows the scalings: the message gives
    // NumPy's order
    let x: Vec<f64> = (0..n).map(|i| i as f64 / (n - 1) as f64).collect();
    let bump = |m: f64| {
        let v: Vec<f64> = x
            .iter()
            .map(|t| (-(t - m) * (t - m) / 0.01).exp())
            .collect();
        let t: f64 = v.iter().sum();
        v.into_iter().map(|y| y / t).collect::<Vec<_>>()
    };
    let bumps = save(&dir, "bumps.npy", &[2, n], [bump(0.3), bump(0.7)].concat());
    let out = wassdl(&[
        "barycenter",
        "--atoms",
        s(&bumps),
        "--weights",
        s(&w),
        "--reg",
        "1e-2",
        "--tau",
        "-0.99",
        "--out",
        s(&dir.join("p.npy")),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("(histogram ") && err.contains(", bin "),
        "{err}"
    );
    assert!(!err.contains("at ("), "{err}");
    // zero counts
    let c = save(&dir, "c.npy", &[n, n], vec![1.0; n * n]);
    let h = save(&dir, "h.npy", &[1, n], a64.clone());
    fails(
        &[
            "unmix",
            "--sources",
            s(&h),
            "--target",
            s(&b),
            "--cost",
            s(&c),
            "--iters",
            "0",
            "--out",
            s(&dir.join("u.npy")),
        ],
        1,
        &["--iters = 0", ">= 1"],
    );
    fails(
        &[
            "emd",
            "--a",
            s(&b),
            "--b",
            s(&b),
            "--cost",
            s(&c),
            "--max-iters",
            "0",
            "--out",
            s(&npz),
        ],
        1,
        &["--max-iters = 0", ">= 1"],
    );
}
