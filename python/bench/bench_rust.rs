//! The Rust side of `bench_binding.py`: the same core calls as the Python binding makes,
//! on the same inputs (raw little-endian float64 files written by the script), timed in
//! this process. Prints one JSON line: the wall time of each repetition, in seconds.
//!
//! ```text
//! cargo run --release -p wassdl-python --example bench_rust -- P1 DIR REPS
//! ```
//!
//! Besides wall time it reports the process CPU time of each call
//! (`CLOCK_PROCESS_CPUTIME_ID`, what Python's `time.process_time` reads), which a loaded
//! machine disturbs much less than wall time.
//!
//! Each repetition does what one Python call does inside the binding: build the kernel
//! (`exp(-C/γ)` or the separable grid factors) and run the solver; the Python side adds
//! only argument handling and array conversion, which is what the comparison measures.

use std::time::Instant;
use wassdl::dictionary::{Objective, WdlConfig};
use wassdl::{
    barycenters, loss_and_grad, BarycenterConfig, Batch, DenseKernel, GradConfig, Grid, GridKernel,
    Loss,
};

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

extern "C" {
    fn clock_gettime(clk: i32, ts: *mut Timespec) -> i32;
}

/// CPU seconds used by this process so far (all threads).
fn cpu_time() -> f64 {
    const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is Linux's constant.
    let rc = unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.sec as f64 + ts.nsec as f64 * 1e-9
}

fn read(dir: &str, name: &str, rows: usize, cols: usize) -> Batch<f64> {
    let path = format!("{dir}/{name}.f64");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: Vec<f64> = bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(v.len(), rows * cols, "{path}: size");
    Batch::from_vec(rows, cols, v)
}

fn dims(dir: &str) -> Vec<usize> {
    std::fs::read_to_string(format!("{dir}/dims.txt"))
        .expect("dims.txt")
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (problem, dir, reps) = (&args[1], &args[2], args[3].parse::<usize>().unwrap());
    let d = dims(dir);
    let mut f: Box<dyn FnMut()> = match problem.as_str() {
        "P1" => {
            // N, S: dense barycenter, 100 iterations, γ = 1e-2, kernel built per call
            let (n, s) = (d[0], d[1]);
            let atoms = read(dir, "atoms", n, s);
            let w = read(dir, "weights", s, 1);
            let c = read(dir, "cost", n, n); // symmetric: orientation irrelevant
            let cfg = BarycenterConfig::iterations(100);
            Box::new(move || {
                let k = DenseKernel::new(c.view(), 1e-2).unwrap();
                std::hint::black_box(barycenters(&k, &atoms, &w, &cfg, None).unwrap());
            })
        }
        "P2" => {
            // n, S: 2-D grid barycenter, 100 iterations, γ = 4e-3
            let (n, s) = (d[0], d[1]);
            let atoms = read(dir, "atoms", n * n, s);
            let w = read(dir, "weights", s, 1);
            let grid = Grid::new(&[n, n]).unwrap();
            let cfg = BarycenterConfig::iterations(100);
            Box::new(move || {
                let k = GridKernel::new(&grid, 4e-3).unwrap();
                std::hint::black_box(barycenters(&k, &atoms, &w, &cfg, None).unwrap());
            })
        }
        "P3" => {
            // N, S: loss and gradient (tape), L = 50, quadratic, γ = 1e-2
            let (n, s) = (d[0], d[1]);
            let atoms = read(dir, "atoms", n, s);
            let w = read(dir, "weights", s, 1);
            let x = read(dir, "target", n, 1);
            let c = read(dir, "cost", n, n);
            let cfg = BarycenterConfig::iterations(50);
            Box::new(move || {
                let k = DenseKernel::new(c.view(), 1e-2).unwrap();
                let g = loss_and_grad(
                    &k,
                    &atoms,
                    &w,
                    &x,
                    &Loss::Quadratic,
                    &cfg,
                    None,
                    &GradConfig::default(),
                );
                std::hint::black_box(g.unwrap());
            })
        }
        "P4" => {
            // n, M, S: WDL objective and gradient at (α, β), L = 25, γ = 4e-3
            let (n, m, s) = (d[0], d[1], d[2]);
            let data = read(dir, "data", n * n, m);
            let theta = read(dir, "theta", n * n * s + s * m, 1).into_vec();
            let grid = Grid::new(&[n, n]).unwrap();
            let cfg = WdlConfig::new(s).barycenter(BarycenterConfig::iterations(25));
            Box::new(move || {
                let k = GridKernel::new(&grid, 4e-3).unwrap();
                // a fresh objective per call, as the binding: no cached evaluation
                let obj = Objective::new(&k, &data, &cfg).unwrap();
                std::hint::black_box(obj.value_and_gradient(&theta).unwrap());
            })
        }
        p => panic!("unknown problem {p}"),
    };
    f(); // warm-up
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let (t, c) = (Instant::now(), cpu_time());
        f();
        cpu.push(format!("{:.6}", cpu_time() - c));
        wall.push(format!("{:.6}", t.elapsed().as_secs_f64()));
    }
    println!(
        "{{\"problem\": \"{problem}\", \"times\": [{}], \"cpu\": [{}]}}",
        wall.join(", "),
        cpu.join(", ")
    );
}
