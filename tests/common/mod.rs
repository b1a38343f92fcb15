//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use wassdl::Batch;

/// `tests/reference/<case>`: the reference cases, copied into the repository from the
/// project's shared folder with their README (how each case was computed, by which
/// library and version).
/// Found from either workspace member (`wassdl-cli`'s tests share this module).
pub fn reference_dir(case: &str) -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = if here.join("tests/reference").is_dir() {
        here
    } else {
        here.parent().expect("workspace root").to_path_buf()
    };
    let p = root.join("tests/reference").join(case);
    assert!(p.is_dir(), "reference case missing: {}", p.display());
    p
}

/// A little-endian float64 `.npy` (NumPy format 1.0/2.0) as (shape, data, fortran order).
/// Test-only: the reference files are all `<f8`; the library's own reader, with its error
/// messages, is in `wassdl-cli`.
pub fn parse_f8_npy(bytes: &[u8], name: &str) -> (Vec<usize>, Vec<f64>, bool) {
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{name}: not a .npy file");
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + hlen]).unwrap();
    assert!(
        header.contains("'descr': '<f8'"),
        "{name}: not <f8: {header}"
    );
    let fortran = header.contains("'fortran_order': True");
    let inner = &header[header.find("'shape': (").unwrap() + 10..];
    let shape: Vec<usize> = inner[..inner.find(')').unwrap()]
        .split(',')
        .filter(|t| !t.trim().is_empty())
        .map(|t| t.trim().parse().unwrap())
        .collect();
    let data: Vec<f64> = bytes[start + hlen..]
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(data.len(), shape.iter().product::<usize>(), "{name}: size");
    (shape, data, fortran)
}

/// Loads a float64 `.npy` in C order as (shape, row-major data).
pub fn load_npy(case: &str, name: &str) -> (Vec<usize>, Vec<f64>) {
    let path = reference_dir(case).join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (shape, data, fortran) = parse_f8_npy(&bytes, name);
    assert!(!fortran, "{name}: Fortran order not expected");
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
