//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use wassdl::Batch;

/// `../shared/reference/<case>` next to the repository (CI clones with `shared/` beside it).
pub fn reference_dir(case: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference")
        .join(case);
    assert!(
        p.is_dir(),
        "reference case missing: {} (CI must have ../shared beside the clone)",
        p.display()
    );
    p
}

/// Loads a float64 `.npy` as (shape, row-major data).
pub fn load_npy(case: &str, name: &str) -> (Vec<usize>, Vec<f64>) {
    let path = reference_dir(case).join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape: Vec<usize> = npy.shape().iter().map(|&s| s as usize).collect();
    let fortran = npy.order() == npyz::Order::Fortran;
    assert!(!fortran, "{name}: Fortran order not expected");
    let data: Vec<f64> = npy.into_vec().unwrap();
    (shape, data)
}

/// A 2-D `.npy` (rows × cols, row-major) as a column-major Batch of the same shape.
pub fn load_matrix(case: &str, name: &str) -> Batch<f64> {
    let (shape, data) = load_npy(case, name);
    let (r, c) = match shape.len() {
        1 => (shape[0], 1),
        2 => (shape[0], shape[1]),
        _ => panic!("{name}: expected 1-D or 2-D, got {shape:?}"),
    };
    Batch::from_fn(r, c, |i, j| data[i * c + j])
}

/// A 1-D `.npy` as a column.
pub fn load_vector(case: &str, name: &str) -> Batch<f64> {
    let (_, data) = load_npy(case, name);
    Batch::from_vec(data.len(), 1, data)
}

/// The JSON description of a case.
pub fn case_json(case: &str) -> serde_json::Value {
    let path = reference_dir(case).join("case.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// max |a - b|.
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Asserts `|a - b| <= atol + rtol |b|` entrywise, reporting the worst entry.
pub fn assert_close(what: &str, a: &[f64], b: &[f64], rtol: f64, atol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: length");
    let mut worst = (0usize, 0.0f64);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let excess = (x - y).abs() - (atol + rtol * y.abs());
        if excess > worst.1 || !x.is_finite() {
            worst = (i, excess.max(f64::MIN_POSITIVE));
        }
    }
    assert!(
        worst.1 <= 0.0,
        "{what}: entry {} is {} vs reference {} (rtol {rtol:e}, atol {atol:e})",
        worst.0,
        a[worst.0],
        b[worst.0]
    );
}
