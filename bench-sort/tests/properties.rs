//! Property tests: the checksum ignores order, summaries combine over any split exactly like
//! the summary of the whole, summaries survive their byte encoding, and record counts parse
//! back from their suffixed forms.

use bench_sort::gensort::{self, Format, GenSpec};
use bench_sort::valsort::{self, Summary};
use engine::record::{Checksum, RECORD_LEN};
use proptest::prelude::*;

/// Records whose keys come from a tiny alphabet, so that runs, duplicates and unordered pairs
/// are all common.
fn records(max: usize) -> impl Strategy<Value = Vec<[u8; RECORD_LEN]>> {
    prop::collection::vec((0u8..4, 0u8..3, any::<u8>()), 1..max).prop_map(|fields| {
        fields
            .into_iter()
            .map(|(first, last, payload)| {
                let mut record = [payload; RECORD_LEN];
                record[..10].fill(0);
                record[0] = first;
                record[9] = last;
                record
            })
            .collect()
    })
}

/// Summaries of consecutive pieces combined left to right.
fn combine_all(pieces: impl IntoIterator<Item = Summary>) -> Summary {
    pieces
        .into_iter()
        .reduce(|mut total, next| {
            total.combine(&next);
            total
        })
        .expect("at least one piece")
}

proptest! {
    #[test]
    fn checksum_ignores_order(
        shuffled in records(64).prop_flat_map(|rs| (Just(rs.clone()), Just(rs).prop_shuffle()))
    ) {
        let (original, shuffled) = shuffled;
        prop_assert_eq!(
            Checksum::of_records(&original.concat()),
            Checksum::of_records(&shuffled.concat())
        );
    }

    #[test]
    fn generated_checksum_ignores_order(start in any::<u128>(), count in 1u64..300, seed in any::<u64>()) {
        let spec = GenSpec { format: Format::Binary, skew: start % 2 == 0, start, records: count };
        let mut bytes = vec![0u8; count as usize * RECORD_LEN];
        gensort::generate_block(&spec, 0, count as usize, &mut bytes);
        let mut shuffled: Vec<&[u8]> = bytes.chunks_exact(RECORD_LEN).collect();
        shuffled.rotate_left((seed % count) as usize);
        shuffled.reverse();
        prop_assert_eq!(Checksum::of_records(&shuffled.concat()), gensort::checksum_of(&spec));
    }

    #[test]
    fn combine_over_any_split_equals_whole(
        (recs, cuts) in records(200).prop_flat_map(|rs| {
            let n = rs.len();
            (Just(rs), prop::collection::vec(1..n.max(2), 0..6))
        })
    ) {
        let bytes = recs.concat();
        let n = recs.len();
        let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c < n).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut bounds = vec![0];
        bounds.extend(cuts);
        bounds.push(n);
        let pieces = bounds
            .windows(2)
            .map(|w| valsort::summarize(&bytes[w[0] * RECORD_LEN..w[1] * RECORD_LEN]));
        // Also through the 280-byte encoding, as `valsort -s` reads them.
        let pieces = pieces.map(|s| Summary::from_bytes(&s.to_bytes()).expect("280 bytes"));
        prop_assert_eq!(combine_all(pieces), valsort::summarize(&bytes));
    }

    #[test]
    fn combine_is_associative(recs in records(60), a in 1usize..60, b in 1usize..60) {
        let n = recs.len();
        prop_assume!(n >= 3);
        let (a, b) = (a % (n - 2) + 1, b % (n - 2) + 1);
        let (a, b) = (a.min(b), a.max(b) + 1);
        let bytes = recs.concat();
        let s = |lo: usize, hi: usize| valsort::summarize(&bytes[lo * RECORD_LEN..hi * RECORD_LEN]);
        let mut left = s(0, a);
        left.combine(&s(a, b));
        left.combine(&s(b, n));
        let mut right_tail = s(a, b);
        right_tail.combine(&s(b, n));
        let mut right = s(0, a);
        right.combine(&right_tail);
        prop_assert_eq!(left, right);
    }

    #[test]
    fn summary_bytes_round_trip(
        fields in any::<[u128; 5]>(),
        first in any::<[u8; 32]>(),
        last in any::<[u8; 32]>(),
    ) {
        let mut first_record = [0u8; RECORD_LEN];
        first_record[..32].copy_from_slice(&first);
        let mut last_record = [0u8; RECORD_LEN];
        last_record[68..].copy_from_slice(&last);
        let summary = Summary {
            first_unordered: fields[0],
            unordered: fields[1],
            records: fields[2],
            duplicates: fields[3],
            checksum: fields[4],
            first_record,
            last_record,
        };
        prop_assert_eq!(Summary::from_bytes(&summary.to_bytes()).expect("280 bytes"), summary);
    }

    #[test]
    fn record_counts_round_trip(n in any::<u64>()) {
        prop_assert_eq!(gensort::parse_record_count(&n.to_string()).ok(), Some(n));
        for (suffixes, multiplier) in [(["k", "K"], 1_000u64), (["M", "m"], 1_000_000), (["G", "g"], 1_000_000_000)] {
            let m = n / multiplier;
            for suffix in suffixes {
                prop_assert_eq!(gensort::parse_record_count(&format!("{m}{suffix}")).ok(), Some(m * multiplier));
            }
        }
    }

    #[test]
    fn record_count_parser_never_panics(s in "\\PC{0,24}") {
        if let Err(err) = gensort::parse_record_count(&s) {
            prop_assert!(err.to_string().starts_with("invalid record count"));
        }
    }

    #[test]
    fn summary_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let result = Summary::from_bytes(&bytes);
        prop_assert_eq!(result.is_ok(), bytes.len() == 280);
    }
}
