//! The Sort Benchmark record: 100 bytes, of which the first 10 are the key.
//!
//! Keys compare as unsigned bytes (`memcmp`), which is the same as comparing the big-endian
//! integers [`key_prefix`] (bytes 0..8) and then [`key_tail`] (bytes 8..10), or the single
//! 80-bit integer [`key80`].
//! The [`Checksum`] is gensort's and valsort's: the sum, modulo 2^128, of the CRC-32 of every
//! record, so it does not depend on record order and proves that a sort was a permutation.

use std::fmt;

mod crc32;
pub use crc32::{crc32_record, prefetch_record};

/// Bytes in one record.
pub const RECORD_LEN: usize = 100;
/// Bytes of the key at the start of every record.
pub const KEY_LEN: usize = 10;

/// Key bytes 0..8 as a big-endian integer: the part of the key every comparison starts with.
#[inline]
pub fn key_prefix(record: &[u8]) -> u64 {
    u64::from_be_bytes(
        record[..8]
            .try_into()
            .expect("a record has at least 8 bytes"),
    )
}

/// Key bytes 8..10 as a big-endian integer: the tie-breaker after [`key_prefix`].
#[inline]
pub fn key_tail(record: &[u8]) -> u16 {
    u16::from_be_bytes([record[8], record[9]])
}

/// The whole 10-byte key as an integer whose order is the key order.
#[inline]
pub fn key80(record: &[u8]) -> u128 {
    ((key_prefix(record) as u128) << 16) | key_tail(record) as u128
}

/// Order-independent checksum of a set of records: Σ crc32(record) mod 2^128, plus the count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Checksum {
    /// Sum of the per-record CRC-32 values, modulo 2^128.
    pub sum: u128,
    /// Records added.
    pub records: u64,
}

impl Checksum {
    /// Adds one record.
    #[inline]
    pub fn add_record(&mut self, record: &[u8]) {
        let crc = match <&[u8; RECORD_LEN]>::try_from(record) {
            Ok(record) => crc32_record(record),
            Err(_) => crc32fast::hash(record),
        };
        self.sum = self.sum.wrapping_add(crc as u128);
        self.records += 1;
    }

    /// Adds every whole record of `bytes` (a multiple of [`RECORD_LEN`]).
    pub fn add_records(&mut self, bytes: &[u8]) {
        debug_assert_eq!(bytes.len() % RECORD_LEN, 0);
        for record in bytes.chunks_exact(RECORD_LEN) {
            self.add_record(record);
        }
    }

    /// The checksum of every whole record of `bytes`.
    pub fn of_records(bytes: &[u8]) -> Self {
        let mut checksum = Self::default();
        checksum.add_records(bytes);
        checksum
    }

    /// Adds another set of records.
    pub fn merge(&mut self, other: Checksum) {
        self.sum = self.sum.wrapping_add(other.sum);
        self.records += other.records;
    }

    /// The sum printed the way gensort `-c` and valsort print it.
    pub fn sum_hex(&self) -> String {
        format_u128_hex(self.sum)
    }
}

impl serde::Serialize for Checksum {
    /// `{"records": N, "sum": "hex"}`: the sum as gensort prints it (it exceeds 64 bits).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut state = serializer.serialize_struct("Checksum", 2)?;
        state.serialize_field("records", &self.records)?;
        state.serialize_field("sum", &self.sum_hex())?;
        state.end()
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sum_hex())
    }
}

/// Lowercase hex without leading zeros, as gensort prints 128-bit values: `%llx` when the value
/// fits in 64 bits, otherwise the high word followed by the low word padded to 16 digits.
pub fn format_u128_hex(value: u128) -> String {
    let hi = (value >> 64) as u64;
    let lo = value as u64;
    if hi == 0 {
        format!("{lo:x}")
    } else {
        format!("{hi:x}{lo:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_formatting_matches_gensort() {
        assert_eq!(format_u128_hex(0), "0");
        assert_eq!(format_u128_hex(0x1ea6370b955), "1ea6370b955");
        assert_eq!(format_u128_hex((1u128 << 64) + 0xabc), "10000000000000abc");
    }

    #[test]
    fn key_parts_order_like_memcmp() {
        let mut a = [0u8; RECORD_LEN];
        let mut b = [0u8; RECORD_LEN];
        a[9] = 1;
        b[6] = 1;
        assert!(key80(&a) < key80(&b));
        assert_eq!(key_prefix(&b), 1 << 8);
        assert_eq!(key_tail(&a), 1);
    }

    #[test]
    fn crc_of_check_string() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF43926);
    }
}
