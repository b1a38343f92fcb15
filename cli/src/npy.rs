//! NumPy files: `.npy` arrays and `.npz` archives of named arrays, in float32 or float64.
//!
//! This is how data enters and leaves wassdl from Python: [`read_npy`] / [`write_npy`]
//! for one array, [`Npz::read`] / [`write_npz`] for several named arrays. Arrays of 0 to
//! 3 axes are supported, in C or Fortran order, little- or big-endian; an [`NpyArray`]
//! always holds its data in C (row-major) order whatever the file's order was.
//!
//! NumPy's habit is one histogram per row, so a `(M, N)` array is `M` histograms of `N`
//! bins and a `(M, H, W)` array is `M` images flattened row-major. In C order that buffer
//! *is* the column-major `N × M` matrix wassdl's [`Batch`] stores, so
//! [`NpyArray::into_batch`] and [`NpyArray::from_batch`] convert without copying.
//!
//! Every error is an [`Error::Io`] whose message starts with the path (and the array
//! name inside an `.npz`), so it can be shown to a person as is. Writes are atomic
//! ([`write_atomic`]): the file appears complete or not at all.
//!
//! The `.npy` header is checked by a small strict parser before [`npyz`] decodes the
//! data, because npyz trusts the header: a hostile shape overflows its element count
//! (a panic with overflow checks on), a 4 GiB header length is allocated up front, and a
//! deeply nested header literal recurses without bound. The reader accepts exactly what
//! NumPy writes for plain arrays; the fuzz target in `fuzz/` exercises it.
//!
//! ```
//! use wassdl_cli::npy::{read_npy, write_npy, NpyArray};
//! let dir = std::env::temp_dir().join(format!("wassdl-npy-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("x.npy");
//! // two histograms of three bins, one per row
//! let x = NpyArray::new(vec![2, 3], vec![0.2f32, 0.3, 0.5, 1.0, 0.0, 0.0]).unwrap();
//! write_npy(&path, &x).unwrap();
//! let y = read_npy(&path).unwrap();
//! assert_eq!(y, x);
//! let b = y.into_batch::<f32>();
//! assert_eq!((b.rows(), b.cols()), (3, 2)); // one column per histogram
//! assert_eq!(b.col(1), &[1.0, 0.0, 0.0]);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use npyz::WriterBuilder;
use std::any::Any;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use wassdl::Batch;
use wassdl::Real;
use wassdl::{Error, Result};

/// Largest number of axes an array may have.
pub const MAX_NDIM: usize = 3;

/// Element type of an array.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// `float32` (`'<f4'`).
    F32,
    /// `float64` (`'<f8'`).
    F64,
}

impl Dtype {
    /// NumPy's name: `"float32"` or `"float64"`.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
        }
    }
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F64 => 8,
        }
    }
    /// The dtype of the scalar type `T`.
    pub fn of<T: Real>() -> Self {
        if std::mem::size_of::<T>() == 4 {
            Dtype::F32
        } else {
            Dtype::F64
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The elements of an [`NpyArray`], in C order.
#[derive(Clone, Debug, PartialEq)]
pub enum NpyData {
    /// float32 elements.
    F32(Vec<f32>),
    /// float64 elements.
    F64(Vec<f64>),
}

/// A float32 or float64 array of 0 to 3 axes, in C (row-major) order.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    shape: Vec<usize>,
    data: NpyData,
}

/// Moves a `Vec<T>` into a `Vec<U>` without copying when `T` and `U` are the same type.
fn same_vec<T: 'static, U: 'static>(v: Vec<T>) -> std::result::Result<Vec<U>, Vec<T>> {
    let boxed: Box<dyn Any> = Box::new(v);
    match boxed.downcast::<Vec<U>>() {
        Ok(u) => Ok(*u),
        Err(b) => Err(*b
            .downcast::<Vec<T>>()
            .unwrap_or_else(|_| unreachable!("the box holds a Vec<T>"))),
    }
}

fn shape_text(shape: &[usize]) -> String {
    match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

impl NpyArray {
    /// An array of the given shape (0 to 3 axes) over C-order `data` of `f32` or `f64`.
    pub fn new<T: Real>(shape: Vec<usize>, data: Vec<T>) -> Result<Self> {
        if shape.len() > MAX_NDIM {
            return Err(Error::InvalidParameter {
                arg: "shape",
                requirement: "of 0 to 3 axes",
                value: shape.len() as f64,
            });
        }
        let n = shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        if n != Some(data.len()) {
            return Err(Error::ShapeMismatch {
                arg: "data",
                expected: format!("{} entries for shape {}", data.len(), shape_text(&shape)),
                found: format!("{} entries", data.len()),
            });
        }
        let data = match same_vec::<T, f64>(data) {
            Ok(v) => NpyData::F64(v),
            Err(v) => match same_vec::<T, f32>(v) {
                Ok(v) => NpyData::F32(v),
                // `Real` is only implemented for f32 and f64; keep any other in f64.
                Err(v) => NpyData::F64(v.into_iter().map(|x| x.to_f64_()).collect()),
            },
        };
        Ok(NpyArray { shape, data })
    }

    /// Histograms as rows, NumPy's habit: the `N × M` batch of a `(M, ...)` array is laid
    /// out as its columns (`N` the product of the trailing axes); a 1-D `(N,)` array is
    /// one column and a 0-d array one `1 × 1` entry. The inverse of [`NpyArray::into_batch`].
    pub fn from_batch<T: Real>(batch: Batch<T>, shape: Vec<usize>) -> Result<Self> {
        Self::new(shape, batch.into_vec())
    }

    /// Shape, slowest axis first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Number of axes.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            NpyData::F32(v) => v.len(),
            NpyData::F64(v) => v.len(),
        }
    }
    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Element type.
    pub fn dtype(&self) -> Dtype {
        match self.data {
            NpyData::F32(_) => Dtype::F32,
            NpyData::F64(_) => Dtype::F64,
        }
    }
    /// The elements, C order.
    pub fn data(&self) -> &NpyData {
        &self.data
    }
    /// The shape as NumPy prints it: `(3,)`, `(2, 5)`, `()`.
    pub fn shape_text(&self) -> String {
        shape_text(&self.shape)
    }
    /// The elements in C order, converted to `T` (float64 → float32 rounds).
    pub fn to_vec<T: Real>(&self) -> Vec<T> {
        match &self.data {
            NpyData::F32(v) => v.iter().map(|&x| T::of(x as f64)).collect(),
            NpyData::F64(v) => v.iter().map(|&x| T::of(x)).collect(),
        }
    }
    /// The elements in C order as `T`, without copying when the dtype already is `T`.
    pub fn into_vec<T: Real>(self) -> Vec<T> {
        match self.data {
            NpyData::F32(v) => same_vec::<f32, T>(v)
                .unwrap_or_else(|v| v.into_iter().map(|x| T::of(x as f64)).collect()),
            NpyData::F64(v) => {
                same_vec::<f64, T>(v).unwrap_or_else(|v| v.into_iter().map(T::of).collect())
            }
        }
    }
    /// The array as a batch of column vectors, one per index of the first axis (see
    /// [`NpyArray::from_batch`]); no copy when the dtype already is `T`.
    pub fn into_batch<T: Real>(self) -> Batch<T> {
        let (rows, cols) = match self.shape.as_slice() {
            [] => (1, 1),
            [n] => (*n, 1),
            [m, rest @ ..] => (rest.iter().product(), *m),
        };
        Batch::from_vec(rows, cols, self.into_vec())
    }
}

fn io_err(path: &Path, what: impl fmt::Display) -> Error {
    Error::Io(format!("{}: {what}", path.display()))
}

/// The header fields of a `.npy` file, as this module's strict parser reads them.
struct Header {
    descr: String,
    fortran: bool,
    shape: Vec<usize>,
}

/// Byte-level cursor over the header text.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        let q = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err("expected a quoted string".into()),
        };
        self.i += 1;
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == q {
                let s = std::str::from_utf8(&self.s[start..self.i])
                    .map_err(|_| "a string is not UTF-8".to_string())?;
                self.i += 1;
                return Ok(s.to_string());
            }
            if c == b'\\' {
                return Err("escapes in header strings are not supported".into());
            }
            self.i += 1;
        }
        Err("unterminated string".into())
    }
    fn word(&mut self) -> &[u8] {
        let start = self.i;
        while self.i < self.s.len() && self.s[self.i].is_ascii_alphanumeric() {
            self.i += 1;
        }
        &self.s[start..self.i]
    }
    fn shape(&mut self) -> std::result::Result<Vec<usize>, String> {
        let close = match self.peek() {
            Some(b'(') => b')',
            Some(b'[') => b']',
            _ => return Err("`shape` is not a tuple".into()),
        };
        self.i += 1;
        let mut dims = Vec::new();
        loop {
            self.ws();
            if self.eat(close) {
                return Ok(dims);
            }
            let w = self.word();
            if w.is_empty() || !w.iter().all(u8::is_ascii_digit) {
                return Err("`shape` holds something other than nonnegative integers".into());
            }
            let d = w.iter().try_fold(0usize, |acc, &c| {
                acc.checked_mul(10)?.checked_add((c - b'0') as usize)
            });
            dims.push(d.ok_or("a dimension of `shape` is too large")?);
            if dims.len() > MAX_NDIM {
                return Err(format!(
                    "the array has more than {MAX_NDIM} axes (at most {MAX_NDIM} are supported)"
                ));
            }
            self.ws();
            if !self.eat(b',') {
                self.ws();
                if self.eat(close) {
                    return Ok(dims);
                }
                return Err("`shape` is malformed".into());
            }
        }
    }
}

/// Parses the `.npy` header; returns it and the offset of the data.
fn parse_header(bytes: &[u8]) -> std::result::Result<(Header, usize), String> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a NumPy .npy file (it does not start with \\x93NUMPY)".into());
    }
    let trunc = || "truncated .npy header".to_string();
    let major = *bytes.get(6).ok_or_else(trunc)?;
    let (len, start): (usize, usize) = match major {
        1 => {
            let b = bytes.get(8..10).ok_or_else(trunc)?;
            (u16::from_le_bytes([b[0], b[1]]) as usize, 10)
        }
        2 | 3 => {
            let b = bytes.get(8..12).ok_or_else(trunc)?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        v => return Err(format!("unsupported .npy format version {v}")),
    };
    let end = start.checked_add(len).ok_or_else(trunc)?;
    let text = bytes.get(start..end).ok_or_else(trunc)?;
    let mut c = Cursor { s: text, i: 0 };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    c.ws();
    if !c.eat(b'{') {
        return Err("the .npy header is not a dictionary".into());
    }
    loop {
        c.ws();
        if c.eat(b'}') {
            break;
        }
        let key = c.string()?;
        c.ws();
        if !c.eat(b':') {
            return Err("the .npy header dictionary is malformed".into());
        }
        c.ws();
        match key.as_str() {
            "descr" => {
                if c.peek() == Some(b'[') {
                    return Err(
                        "structured dtype is not supported (float32 or float64 expected)".into(),
                    );
                }
                descr = Some(c.string()?)
            }
            "fortran_order" => match c.word() {
                b"True" => fortran = Some(true),
                b"False" => fortran = Some(false),
                _ => return Err("`fortran_order` is not True or False".into()),
            },
            "shape" => shape = Some(c.shape()?),
            k => return Err(format!("unexpected key '{k}' in the .npy header")),
        }
        c.ws();
        if !c.eat(b',') {
            c.ws();
            if c.eat(b'}') {
                break;
            }
            return Err("the .npy header dictionary is malformed".into());
        }
    }
    c.ws();
    if c.i != text.len() {
        return Err("unexpected text after the .npy header dictionary".into());
    }
    let missing = |k: &str| format!("the .npy header has no '{k}'");
    Ok((
        Header {
            descr: descr.ok_or_else(|| missing("descr"))?,
            fortran: fortran.ok_or_else(|| missing("fortran_order"))?,
            shape: shape.ok_or_else(|| missing("shape"))?,
        },
        end,
    ))
}

/// Spellings of float32 and float64 that NumPy's reader accepts beyond the canonical
/// `'<f4'`, `'>f8'`, ... (checked with NumPy 2.4's `np.lib.format.read_array`): the
/// byte-order marks `=` (native) and `|` (not applicable, read as native) or none, the
/// one-letter codes `f` and `d` (with any mark), and the names `float32`, `single`,
/// `float64`, `double`.
fn native_alias(descr: &str) -> Option<Dtype> {
    match descr {
        "float32" | "single" => return Some(Dtype::F32),
        "float64" | "double" => return Some(Dtype::F64),
        _ => {}
    }
    let body = descr.strip_prefix(['<', '>', '=', '|']).unwrap_or(descr);
    let canonical_mark = descr.len() != body.len() && matches!(&descr[..1], "<" | ">");
    match body {
        "f" => Some(Dtype::F32),
        "d" => Some(Dtype::F64),
        // `<f4` and `>f8` are canonical (read by npyz); `=`, `|` or no mark are aliases.
        "f4" if !canonical_mark => Some(Dtype::F32),
        "f8" if !canonical_mark => Some(Dtype::F64),
        _ => None,
    }
}

/// The supported dtype of a descr, or a message naming the unsupported one.
fn dtype_of(descr: &str) -> std::result::Result<Dtype, String> {
    match descr {
        "<f4" | ">f4" => return Ok(Dtype::F32),
        "<f8" | ">f8" => return Ok(Dtype::F64),
        _ => {}
    }
    if let Some(d) = native_alias(descr) {
        return Ok(d);
    }
    let body = descr.trim_start_matches(['<', '>', '|', '=']);
    let name = match body {
        "f2" => "float16".to_string(),
        "f16" | "g" => "longdouble".to_string(),
        "b1" | "?" => "bool".to_string(),
        "O" => "object".to_string(),
        _ => match (
            body.chars().next(),
            body.get(1..).and_then(|s| s.parse::<u32>().ok()),
        ) {
            (Some('i'), Some(n)) => format!("int{}", 8 * n),
            (Some('u'), Some(n)) => format!("uint{}", 8 * n),
            (Some('c'), Some(n)) => format!("complex{}", 8 * n),
            (Some('f'), Some(n)) => format!("float{}", 8 * n),
            _ => String::new(),
        },
    };
    Err(if name.is_empty() {
        format!("dtype '{descr}' is not supported (float32 or float64 expected)")
    } else {
        format!("dtype {name} ('{descr}') is not supported (float32 or float64 expected)")
    })
}

/// The values of an aliased descr ([`native_alias`]): little-endian after `<`,
/// big-endian after `>`, native otherwise.
fn native_values<T, const N: usize>(
    data: &[u8],
    descr: &str,
    [ne, le, be]: [fn([u8; N]) -> T; 3],
) -> Vec<T> {
    let read = match descr.as_bytes().first() {
        Some(b'<') => le,
        Some(b'>') => be,
        _ => ne,
    };
    data.chunks_exact(N)
        .map(|c| read(c.try_into().expect("chunks of N bytes")))
        .collect()
}

/// C-order copy of Fortran-order data: element `[i, j, k]` sits at `i + p (j + q k)`.
fn fortran_to_c<T: Copy>(shape: &[usize], data: Vec<T>) -> Vec<T> {
    match *shape {
        [r, c] => (0..r * c).map(|q| data[(q % c) * r + q / c]).collect(),
        [p, q, r] => (0..p * q * r)
            .map(|x| {
                let (i, j, k) = (x / (q * r), (x / r) % q, x % r);
                data[i + p * (j + q * k)]
            })
            .collect(),
        _ => data,
    }
}

fn decode<T: npyz::Deserialize + Copy>(
    bytes: &[u8],
    shape: &[usize],
    fortran: bool,
) -> std::result::Result<Vec<T>, String> {
    let file = npyz::NpyFile::new(bytes).map_err(|e| format!("invalid .npy header: {e}"))?;
    // The guard parser and npyz must agree; a file they read differently is rejected.
    if file
        .shape()
        .iter()
        .map(|&d| d as usize)
        .ne(shape.iter().copied())
        || (file.order() == npyz::Order::Fortran) != fortran
    {
        return Err("ambiguous .npy header".into());
    }
    let data: Vec<T> = file
        .into_vec()
        .map_err(|e| format!("cannot decode the data: {e}"))?;
    Ok(if fortran {
        fortran_to_c(shape, data)
    } else {
        data
    })
}

/// Parses the bytes of a `.npy` file. Error messages start with `origin` (a path, or a
/// path and array name).
pub fn parse_npy(bytes: &[u8], origin: &str) -> Result<NpyArray> {
    let err = |what: String| Error::Io(format!("{origin}: {what}"));
    let (h, offset) = parse_header(bytes).map_err(err)?;
    let dtype = dtype_of(&h.descr).map_err(err)?;
    let need = h
        .shape
        .iter()
        .try_fold(dtype.size(), |a, &b| a.checked_mul(b))
        .ok_or_else(|| err(format!("shape {} is too large", shape_text(&h.shape))))?;
    let have = bytes.len() - offset;
    if have != need {
        return Err(err(format!(
            "the data is {have} bytes but shape {} of {} needs {need} ({})",
            shape_text(&h.shape),
            dtype,
            if have < need {
                "truncated file"
            } else {
                "trailing bytes"
            }
        )));
    }
    let canonical = matches!(h.descr.as_str(), "<f4" | ">f4" | "<f8" | ">f8");
    let data = match (dtype, canonical) {
        (Dtype::F32, true) => NpyData::F32(decode::<f32>(bytes, &h.shape, h.fortran).map_err(err)?),
        (Dtype::F64, true) => NpyData::F64(decode::<f64>(bytes, &h.shape, h.fortran).map_err(err)?),
        // npyz knows only `<`, `>` and `|`-for-bytes: the aliases are read here, from the
        // header this module parsed and the exact byte count checked above.
        (Dtype::F32, false) => {
            let v = native_values(
                &bytes[offset..],
                &h.descr,
                [f32::from_ne_bytes, f32::from_le_bytes, f32::from_be_bytes],
            );
            NpyData::F32(if h.fortran {
                fortran_to_c(&h.shape, v)
            } else {
                v
            })
        }
        (Dtype::F64, false) => {
            let v = native_values(
                &bytes[offset..],
                &h.descr,
                [f64::from_ne_bytes, f64::from_le_bytes, f64::from_be_bytes],
            );
            NpyData::F64(if h.fortran {
                fortran_to_c(&h.shape, v)
            } else {
                v
            })
        }
    };
    Ok(NpyArray {
        shape: h.shape,
        data,
    })
}

/// Reads a `.npy` file (float32 or float64, C or Fortran order, 0 to 3 axes).
pub fn read_npy(path: impl AsRef<Path>) -> Result<NpyArray> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| io_err(path, open_error(&e)))?;
    parse_npy(&bytes, &path.display().to_string())
}

fn open_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => format!("cannot read: {e}"),
    }
}

/// Writes the `.npy` encoding of `arr` (format 1.0, C order, little-endian) to `w`.
pub fn write_npy_to<W: Write>(w: W, arr: &NpyArray) -> io::Result<()> {
    let shape: Vec<u64> = arr.shape.iter().map(|&d| d as u64).collect();
    match &arr.data {
        NpyData::F32(v) => {
            let mut out = npyz::WriteOptions::new()
                .default_dtype()
                .shape(&shape)
                .writer(w)
                .begin_nd()?;
            out.extend(v.iter().copied())?;
            out.finish()
        }
        NpyData::F64(v) => {
            let mut out = npyz::WriteOptions::new()
                .default_dtype()
                .shape(&shape)
                .writer(w)
                .begin_nd()?;
            out.extend(v.iter().copied())?;
            out.finish()
        }
    }
}

/// The bytes of the `.npy` encoding of `arr`.
pub fn to_npy_bytes(arr: &NpyArray) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + arr.len() * arr.dtype().size());
    write_npy_to(&mut out, arr).expect("writing to a Vec cannot fail");
    out
}

/// Writes `arr` to `path` as `.npy`, atomically.
pub fn write_npy(path: impl AsRef<Path>, arr: &NpyArray) -> Result<()> {
    write_atomic(path, |w| write_npy_to(w, arr))
}

/// Writes named arrays to `path` as an `.npz` archive (uncompressed, as `np.savez`),
/// atomically. `np.load(path)[name]` gives each array back.
pub fn write_npz(path: impl AsRef<Path>, arrays: &[(&str, &NpyArray)]) -> Result<()> {
    write_atomic(path, |w| {
        let mut zip = npyz::zip::ZipWriter::new(w);
        for (name, arr) in arrays {
            let size = (arr.len() * arr.dtype().size()) as u64;
            let opts = npyz::zip::write::FileOptions::default()
                .compression_method(npyz::zip::CompressionMethod::Stored)
                .large_file(size > u32::MAX as u64 / 2);
            zip.start_file(npyz::npz::file_name_from_array_name(name), opts)
                .map_err(zip_io)?;
            write_npy_to(&mut zip, arr)?;
        }
        zip.finish().map_err(zip_io)?;
        Ok(())
    })
}

fn zip_io(e: npyz::zip::result::ZipError) -> io::Error {
    match e {
        npyz::zip::result::ZipError::Io(e) => e,
        e => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
    }
}

/// The arrays of an `.npz` archive, by name, in archive order.
#[derive(Clone, Debug)]
pub struct Npz {
    path: PathBuf,
    arrays: Vec<(String, NpyArray)>,
}

impl Npz {
    /// Reads every array of the archive at `path` (each as [`read_npy`] would).
    pub fn read(path: impl AsRef<Path>) -> Result<Npz> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| io_err(path, open_error(&e)))?;
        let mut zip = npyz::zip::ZipArchive::new(io::BufReader::new(file))
            .map_err(|e| io_err(path, format!("not a NumPy .npz file ({e})")))?;
        let mut arrays = Vec::new();
        for i in 0..zip.len() {
            let mut f = zip
                .by_index(i)
                .map_err(|e| io_err(path, format!("cannot read member {i}: {e}")))?;
            let Some(name) = npyz::npz::array_name_from_file_name(f.name()).map(str::to_string)
            else {
                continue;
            };
            let origin = format!("{}[{name}]", path.display());
            // The declared size bounds the read, so a lying archive cannot exhaust memory.
            let declared = f.size();
            let mut bytes = Vec::with_capacity(declared.min(1 << 26) as usize);
            (&mut f)
                .take(declared.saturating_add(1))
                .read_to_end(&mut bytes)
                .map_err(|e| Error::external(format!("{origin}: cannot read"), e))?;
            arrays.push((name.clone(), parse_npy(&bytes, &origin)?));
        }
        Ok(Npz {
            path: path.to_path_buf(),
            arrays,
        })
    }
    /// The array names, in archive order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.arrays.iter().map(|(n, _)| n.as_str())
    }
    /// The array called `name`, or an error naming the archive and the array.
    pub fn get(&self, name: &str) -> Result<&NpyArray> {
        self.arrays
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
            .ok_or_else(|| io_err(&self.path, format!("has no array '{name}'")))
    }
    /// Removes and returns the array called `name`.
    pub fn take(&mut self, name: &str) -> Result<NpyArray> {
        let k = self
            .arrays
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| io_err(&self.path, format!("has no array '{name}'")))?;
        Ok(self.arrays.remove(k).1)
    }
}

/// Creates `path` atomically: `write` fills a temporary file in the same directory,
/// which is synced and renamed over `path` only if everything succeeded, so an
/// interrupted or failed run never leaves a partial file under the final name (a killed
/// process may leave its `.<name>.<pid>.<n>.tmp` behind).
pub fn write_atomic(
    path: impl AsRef<Path>,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let path = path.as_ref();
    let name = path
        .file_name()
        .ok_or_else(|| io_err(path, "not a file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| -> io::Result<()> {
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        w.flush()?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(
            path,
            format!("cannot write: {}", describe_write_error(&e, dir)),
        )
    })
}

fn describe_write_error(e: &io::Error, dir: &Path) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => format!("directory {} does not exist", dir.display()),
        io::ErrorKind::PermissionDenied => format!("permission denied in {}", dir.display()),
        _ => e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Integer arrays (images, labels), read as float64

/// The integer dtype of a descr (`'|u1'`, `'<i8'`, ...): signed?, bytes, big-endian?.
fn int_dtype(descr: &str) -> Option<(bool, usize, bool)> {
    let (order, body) = descr.split_at(1);
    if !matches!(order, "<" | ">" | "|" | "=") {
        return None;
    }
    let signed = match body.as_bytes().first()? {
        b'i' => true,
        b'u' => false,
        _ => return None,
    };
    let size: usize = body[1..].parse().ok()?;
    if !matches!(size, 1 | 2 | 4 | 8) {
        return None;
    }
    Some((signed, size, order == ">"))
}

/// [`parse_npy`], but an array of integers (int8 to int64, uint8 to uint64: image
/// pixels, labels) is accepted too and converted to float64. Integers beyond `2⁵³` in
/// magnitude are rounded to the nearest float64. Used where integer data is meant
/// (`wassdl fit --normalize`, [`crate::datasets`]); [`parse_npy`] still refuses it.
pub fn parse_npy_numeric(bytes: &[u8], origin: &str) -> Result<NpyArray> {
    let err = |what: String| Error::Io(format!("{origin}: {what}"));
    let (h, offset) = parse_header(bytes).map_err(err)?;
    let Some((signed, size, big)) = int_dtype(&h.descr) else {
        return parse_npy(bytes, origin);
    };
    let need = h
        .shape
        .iter()
        .try_fold(size, |a, &b| a.checked_mul(b))
        .ok_or_else(|| err(format!("shape {} is too large", shape_text(&h.shape))))?;
    let body = &bytes[offset..];
    if body.len() != need {
        return Err(err(format!(
            "the data is {} bytes but shape {} of {} needs {need}",
            body.len(),
            shape_text(&h.shape),
            h.descr
        )));
    }
    // Decoded by hand: fixed-size integers need no library, and npyz's typed readers
    // would need one branch per (signedness, size, order).
    let data: Vec<f64> = body
        .chunks_exact(size)
        .map(|c| {
            let mut b = [0u8; 8];
            if big {
                for (k, &x) in c.iter().rev().enumerate() {
                    b[k] = x;
                }
            } else {
                b[..size].copy_from_slice(c);
            }
            let u = u64::from_le_bytes(b);
            if signed {
                // sign-extend the `size`-byte value
                let shift = 64 - 8 * size as u32;
                ((u << shift) as i64 >> shift) as f64
            } else {
                u as f64
            }
        })
        .collect();
    let data = if h.fortran {
        fortran_to_c(&h.shape, data)
    } else {
        data
    };
    Ok(NpyArray {
        shape: h.shape,
        data: NpyData::F64(data),
    })
}

/// [`read_npy`] accepting integer arrays too ([`parse_npy_numeric`]).
pub fn read_npy_numeric(path: impl AsRef<Path>) -> Result<NpyArray> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| io_err(path, open_error(&e)))?;
    parse_npy_numeric(&bytes, &path.display().to_string())
}
