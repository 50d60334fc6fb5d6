//! CRC-32 (ISO-HDLC: zlib's, gensort's) of one 100-byte record, faster than a generic
//! CRC on such short input (criterion, `engine/benches/kernels.rs`: 10 ns against crc32fast's
//! 15 ns per record on this machine kind).
//!
//! Every record is checksummed twice per sort (maps and sink check records in = out), so this
//! is on the hot path.
//! A generic CRC folds 16-byte blocks one after another, a chain of dependent carry-less
//! multiplies; for a fixed length every block's distance to the end is known, so each block is
//! folded straight to the end with its own constant, all independently, and the CPU overlaps
//! them (and the next records).
//!
//! ```text
//! bytes 0..4    slice-by-4 tables from the initial state 0xFFFFFFFF → state S
//! bytes 4..100  six 16-byte blocks B0..B5 (S xored into B0);
//!               x = fold(B0, 640) ⊕ fold(B1, 512) ⊕ fold(B2, 384) ⊕ fold(B3, 256) ⊕ fold(B4, 128) ⊕ B5
//! then          128 → 64 → 32 bits and a Barrett reduction, as in Intel's "Fast CRC Computation
//!               for Generic Polynomials Using PCLMULQDQ" (reflected variant; the reduction
//!               follows crc32fast's code)
//! ```
//! `fold(B, D)` = clmul(B.lo, k(D+32)) ⊕ clmul(B.hi, k(D−32)) with k(e) = reflect32(x^e mod P) << 1.
//! Other CPUs use crc32fast.
#![allow(unsafe_code)]

use crate::record::RECORD_LEN;

/// Asks the CPU to start loading `record` into cache (both ends, as a record spans two or
/// three cache lines); a hint only, it never faults.
#[inline]
pub fn prefetch_record(record: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(first), Some(last)) = (record.first(), record.last()) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: prefetching is a hint that never faults or reads into the program; SSE is
        // part of the x86_64 baseline; the addresses come from a live slice.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(first as *const u8 as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(last as *const u8 as *const i8);
        }
    }
}

/// CRC-32 of one record.
#[inline]
pub fn crc32_record(record: &[u8; RECORD_LEN]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("pclmulqdq") && std::is_x86_feature_detected!("sse4.1") {
        // SAFETY: the kernel only needs the CPU features it is compiled for, checked just above;
        // it reads nothing but the 100-byte array it is given.
        return unsafe { clmul::crc100(record) };
    }
    crc32fast::hash(record)
}

#[cfg(target_arch = "x86_64")]
mod clmul {
    use std::arch::x86_64::*;

    use super::RECORD_LEN;

    const P_X: i64 = 0x1DB710641;
    const U_PRIME: i64 = 0x1F7011641;
    const K4: i64 = 0x0ccaa009e;
    const K3: i64 = 0x1751997d0;
    const K5: i64 = 0x163cd6124;
    /// (k(D+32), k(D−32)) for D = 640, 512, 384, 256, 128 bits.
    const FOLD: [(i64, i64); 5] = [
        (0x1c7569e54, 0x0ae0b5394),
        (0x154442bd4, 0x1c6e41596),
        (0x03db1ecdc, 0x174359406),
        (0x0f1da05aa, 0x15a546366),
        (0x1751997d0, 0x0ccaa009e),
    ];

    /// Slice-by-4 tables of the reflected polynomial 0xEDB88320.
    static SLICE4: [[u32; 256]; 4] = slice4_tables();

    const fn slice4_tables() -> [[u32; 256]; 4] {
        let mut t = [[0u32; 256]; 4];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[0][i] = c;
            i += 1;
        }
        let mut i = 0;
        while i < 256 {
            let mut s = 1;
            while s < 4 {
                let prev = t[s - 1][i];
                t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
                s += 1;
            }
            i += 1;
        }
        t
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    fn block(record: &[u8; RECORD_LEN], at: usize) -> __m128i {
        let lo = u64::from_le_bytes(record[at..at + 8].try_into().expect("8 bytes"));
        let hi = u64::from_le_bytes(record[at + 8..at + 16].try_into().expect("8 bytes"));
        _mm_set_epi64x(hi as i64, lo as i64)
    }

    #[inline]
    #[target_feature(enable = "pclmulqdq", enable = "sse2")]
    fn fold(x: __m128i, keys: (i64, i64)) -> __m128i {
        let k = _mm_set_epi64x(keys.1, keys.0);
        _mm_xor_si128(
            _mm_clmulepi64_si128(x, k, 0x00),
            _mm_clmulepi64_si128(x, k, 0x11),
        )
    }

    #[target_feature(enable = "pclmulqdq", enable = "sse2", enable = "sse4.1")]
    pub(super) fn crc100(record: &[u8; RECORD_LEN]) -> u32 {
        let w = u32::from_le_bytes(record[..4].try_into().expect("4 bytes")) ^ 0xFFFF_FFFF;
        let state = SLICE4[3][(w & 0xff) as usize]
            ^ SLICE4[2][((w >> 8) & 0xff) as usize]
            ^ SLICE4[1][((w >> 16) & 0xff) as usize]
            ^ SLICE4[0][(w >> 24) as usize];
        let b0 = _mm_xor_si128(block(record, 4), _mm_cvtsi32_si128(state as i32));
        let mut x = block(record, 84);
        x = _mm_xor_si128(x, fold(b0, FOLD[0]));
        x = _mm_xor_si128(x, fold(block(record, 20), FOLD[1]));
        x = _mm_xor_si128(x, fold(block(record, 36), FOLD[2]));
        x = _mm_xor_si128(x, fold(block(record, 52), FOLD[3]));
        x = _mm_xor_si128(x, fold(block(record, 68), FOLD[4]));

        // 128 → 64 bits, then Barrett reduction to 32 bits (reflected).
        let k3k4 = _mm_set_epi64x(K4, K3);
        let x = _mm_xor_si128(_mm_clmulepi64_si128(x, k3k4, 0x10), _mm_srli_si128(x, 8));
        let low32 = _mm_set_epi32(0, 0, 0, !0);
        let x = _mm_xor_si128(
            _mm_clmulepi64_si128(_mm_and_si128(x, low32), _mm_set_epi64x(0, K5), 0x00),
            _mm_srli_si128(x, 4),
        );
        let pu = _mm_set_epi64x(U_PRIME, P_X);
        let t1 = _mm_clmulepi64_si128(_mm_and_si128(x, low32), pu, 0x10);
        let t2 = _mm_clmulepi64_si128(_mm_and_si128(t1, low32), pu, 0x00);
        !(_mm_extract_epi32(_mm_xor_si128(x, t2), 1) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_zlib_on_fixed_patterns() {
        for fill in [0u8, 0xff, 0x5a] {
            let record = [fill; RECORD_LEN];
            assert_eq!(crc32_record(&record), crc32fast::hash(&record));
        }
        let ramp: [u8; RECORD_LEN] = std::array::from_fn(|i| i as u8);
        assert_eq!(crc32_record(&ramp), crc32fast::hash(&ramp));
    }

    proptest! {
        #[test]
        fn matches_zlib(bytes in proptest::collection::vec(any::<u8>(), RECORD_LEN)) {
            let record: [u8; RECORD_LEN] = bytes.as_slice().try_into().unwrap();
            prop_assert_eq!(crc32_record(&record), crc32fast::hash(&record));
        }
    }
}
