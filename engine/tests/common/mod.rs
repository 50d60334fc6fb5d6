//! Records and their oracle, shared by the engine's integration tests.

/// 100-byte records from a small deterministic generator, with many equal keys.
pub fn records(count: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut bytes = vec![0u8; count * 100];
    for record in bytes.chunks_exact_mut(100) {
        for chunk in record.chunks_mut(8) {
            let value = next().to_le_bytes();
            chunk.copy_from_slice(&value[..chunk.len()]);
        }
        // A narrow key space for the first byte pair: plenty of equal prefixes.
        record[0] %= 4;
    }
    bytes
}

pub fn stable_sorted(bytes: &[u8]) -> Vec<u8> {
    let mut records: Vec<&[u8]> = bytes.chunks_exact(100).collect();
    records.sort_by(|a, b| a[..10].cmp(&b[..10]));
    records.concat()
}
