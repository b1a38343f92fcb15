//! Models saved as JSON and loaded back (`wassdl_cli::json`): exact to the bit.

use wassdl::dictionary::*;
use wassdl::*;
use wassdl_cli::json::{load_model, model_from_json, model_to_json, save_model};

fn gaussians<T: Real>(n: usize, means: &[f64], sd: f64) -> Batch<T> {
    let x = |i: usize| i as f64 / (n - 1) as f64;
    let mut b = Batch::from_fn(n, means.len(), |i, m| {
        (-(x(i) - means[m]).powi(2) / (2.0 * sd * sd)).exp()
    });
    for m in 0..means.len() {
        let s: f64 = b.col(m).iter().sum();
        b.col_mut(m).iter_mut().for_each(|v| *v /= s);
    }
    b.cast()
}

fn bits<T: Real>(v: &[T]) -> Vec<u64> {
    v.iter().map(|x| x.to_f64_().to_bits()).collect()
}

/// Values whose shortest decimal has 17 digits and tiny exponents: the ones a
/// non-correctly-rounded parser gets wrong.
fn awkward_values(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed;
    (0..n)
        .map(|i| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (s >> 11) as f64 / (1u64 << 53) as f64;
            u * 10f64.powi(-((i % 40) as i32))
        })
        .collect()
}

/// Save and load are exact to the bit, in f64 and in f32, kernel recipe and settings
/// included.
#[test]
fn model_round_trip_is_bit_exact() {
    let dir = std::env::temp_dir().join(format!("wassdl-model-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let n = 6;
    let cost = Batch::from_vec(n, n, awkward_values(n * n, 1));
    let spec = KernelSpec::dense(&cost, 1.0 / 3.0).unwrap();
    let cfg = WdlConfig::new(3)
        .zeta(0.1 + 0.2)
        .barycenter(
            BarycenterConfig::iterations(7)
                .tau(-1.0 / 7.0)
                .rho(2f64.sqrt()),
        )
        .weight_init(WeightInit::Given(awkward_values(3 * 4, 2)))
        .warm_restart(5);
    let atoms = Batch::from_vec(n, 3, awkward_values(n * 3, 3));
    let weights = Batch::from_vec(3, 4, awkward_values(12, 4));

    let m64 = Model::from_parts(spec.clone(), cfg.clone(), &atoms, &weights, 1.0 / 9.0).unwrap();
    save_model(&m64, dir.join("m64.json")).unwrap();
    let back = load_model::<f64>(dir.join("m64.json")).unwrap();
    assert_eq!(bits(&back.atoms), bits(&m64.atoms));
    assert_eq!(bits(&back.weights), bits(&m64.weights));
    assert_eq!(back, m64); // every other field, floats compared exactly
    let KernelSpec::Dense { cost: c2, .. } = &back.kernel else {
        panic!("kernel kind changed")
    };
    assert_eq!(bits(c2), bits(cost_row_major(&cost).as_slice()));

    let (a32, w32): (Batch<f32>, Batch<f32>) = (atoms.cast(), weights.cast());
    let m32 = Model::from_parts(spec, cfg, &a32, &w32, 0.5).unwrap();
    save_model(&m32, dir.join("m32.json")).unwrap();
    let back = load_model::<f32>(dir.join("m32.json")).unwrap();
    assert_eq!(bits(&back.atoms), bits(&m32.atoms));
    assert_eq!(back, m32);
    // the file says which precision it holds
    let err = load_model::<f64>(dir.join("m32.json")).unwrap_err();
    assert!(
        matches!(err, Error::Io(ref m) if m.contains("f32")),
        "{err}"
    );

    std::fs::remove_dir_all(&dir).ok();
}

fn cost_row_major(c: &Batch<f64>) -> Vec<f64> {
    let n = c.rows();
    (0..n * n).map(|k| c.get(k / n, k % n)).collect()
}

/// A fitted model saved and loaded rebuilds its kernel and reproduces its reconstructions.
#[test]
fn fitted_model_reloads_and_reconstructs() {
    let grid = Grid::new(&[40]).unwrap();
    let k = GridKernel::<f32>::new(&grid, 4e-3).unwrap();
    let data: Batch<f32> = gaussians(40, &[0.3, 0.45, 0.6], 0.05);
    let cfg = WdlConfig::new(2)
        .barycenter(BarycenterConfig::iterations(15))
        .weight_init(WeightInit::Random)
        .max_iter(5);
    let f = fit(&k, &data, &cfg, &mut NoObserver).unwrap();
    let model = Model::new(KernelSpec::grid(&grid, 4e-3), cfg, &f).unwrap();
    let back = model_from_json::<f32>(&model_to_json(&model).unwrap()).unwrap();
    assert_eq!(back, model);
    let k2 = back.kernel().unwrap();
    let r1 = reconstruct(&k, &f.atoms, &f.weights, &back.config).unwrap();
    let r2 = reconstruct(k2.as_ref(), &back.atoms(), &back.weights(), &back.config).unwrap();
    assert_eq!(r1, r2);
    // broken files are errors, not panics
    for bad in [
        "",
        "[]",
        "{\"format\": \"x\"}",
        "{\"atoms\": [1], \"weights\": [1]}",
    ] {
        assert!(model_from_json::<f32>(bad).is_err(), "{bad:?}");
    }
    let wrong_version =
        model_to_json(&model)
            .unwrap()
            .replacen("\"version\": 1", "\"version\": 99", 1);
    assert!(model_from_json::<f32>(&wrong_version).is_err());
}

/// A failure of another library keeps that error as its `source()`: the caller can ask
/// the I/O error's kind instead of parsing the message.
#[test]
fn io_failures_keep_their_source() {
    let missing = std::env::temp_dir().join("wassdl-no-such-model-8d1f.json");
    let err = load_model::<f64>(&missing).unwrap_err();
    let source = std::error::Error::source(&err).expect("the io::Error is kept");
    let io = source
        .downcast_ref::<std::io::Error>()
        .expect("the source is the io::Error itself");
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    assert!(
        err.to_string().contains("wassdl-no-such-model-8d1f.json"),
        "{err}"
    );
}
