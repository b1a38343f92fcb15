//! Fuzz target for the `.npy` reader: any bytes either parse into a consistent array or
//! give an error message; never a panic, an overflow, or an allocation the file does not
//! justify. A parsed array must survive a write/read round trip bit for bit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wassdl_cli::npy::{parse_npy, to_npy_bytes, NpyData};

fn bits(d: &NpyData) -> Vec<u64> {
    match d {
        NpyData::F32(v) => v.iter().map(|x| x.to_bits() as u64).collect(),
        NpyData::F64(v) => v.iter().map(|x| x.to_bits()).collect(),
    }
}

fuzz_target!(|data: &[u8]| {
    match parse_npy(data, "fuzz.npy") {
        Ok(a) => {
            assert!(a.ndim() <= wassdl_cli::npy::MAX_NDIM);
            assert_eq!(a.shape().iter().product::<usize>(), a.len());
            // the data cannot exceed what the file holds
            assert!(a.len() * a.dtype().size() <= data.len());
            let again = parse_npy(&to_npy_bytes(&a), "again.npy").expect("our own output parses");
            assert_eq!(again.shape(), a.shape());
            assert_eq!(again.dtype(), a.dtype());
            assert_eq!(bits(again.data()), bits(a.data()));
        }
        Err(e) => assert!(e.to_string().starts_with("fuzz.npy: ")),
    }
});
