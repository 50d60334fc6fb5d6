//! The generator against the stored gensort 1.5 outputs in `shared/testdata/gensort`.
//!
//! Each stored file name says how it was made (`<mode>_b<start>_n<count>.dat`). The hashes of
//! every file are written below, so regenerating and hashing needs no files; when the folder is
//! present the files are also compared byte for byte, and every stored `.dat` must be covered.

mod common;

use bench_sort::gensort::{self, GenSpec};
use bench_sort::valsort;
use common::{generate_all, sha256_hex, sorted_by_full_record, spec_from_name, testdata};

/// A stored unsorted file and what gensort 1.5 / valsort 1.5 said about it (README.md).
struct Stored {
    name: &'static str,
    checksum: &'static str,
    sha256: &'static str,
    sorted_sha256: &'static str,
    /// valsort's "First unordered record is record F".
    first_unordered: u128,
    /// valsort's "there are U unordered records".
    unordered: u128,
}

const STORED: [Stored; 9] = [
    Stored {
        name: "bin_b0_n1000.dat",
        checksum: "1ea6370b955",
        sha256: "f524474116510d1debac6d38152e793a7e3cb71b1dd2bb45b6610e3c17698177",
        sorted_sha256: "dfa3bccf620f355643837e487639c0f546469757cb1ffdd4d46bae9fe85293be",
        first_unordered: 2,
        unordered: 483,
    },
    Stored {
        name: "bin_b123456789_n100.dat",
        checksum: "2df2359d4d",
        sha256: "92f9a7374fa36b857477ca18b1c382f99eada53168ef0eee72ebadfa70cb5083",
        sorted_sha256: "a19227b8c968e540bff412782e47f62f01e837033a45fec9b1c2a8f2d2c2cbbb",
        first_unordered: 1,
        unordered: 52,
    },
    Stored {
        name: "ascii_b0_n1000.dat",
        checksum: "1f5dfb3631a",
        sha256: "6c26b26a61464dd78038f9c60907c851ac043c07584b12835fe065cbca31aad2",
        sorted_sha256: "70c5bf6b95f8d89a0450449546480024efa4d7dcb31b56b48945910c31ca1eda",
        first_unordered: 2,
        unordered: 497,
    },
    Stored {
        name: "skew_b0_n1000.dat",
        checksum: "1e96301166b",
        sha256: "e29ce5d551d332a974d978a4a4b3535efcd5df559328fe4ee11bf7f481269444",
        sorted_sha256: "d9a92de436909914451dc23624bd67582593f0fba8f844652ed0246c4b3c8940",
        first_unordered: 2,
        unordered: 499,
    },
    Stored {
        name: "skewascii_b0_n1000.dat",
        checksum: "1eef17d1cac",
        sha256: "33dc462ab1da5ddedecf127d65c8856b59baec45a15b91f79aafd116514ac65e",
        sorted_sha256: "69e33ec2e832fefdc3dad2b4a4461a6d7b2e0085383b91e129dd0e49838a333c",
        first_unordered: 2,
        unordered: 498,
    },
    Stored {
        name: "ascii_b18446744073709551610_n12.dat",
        checksum: "4837220a0",
        sha256: "0d52d94c286d306c5cb73b5c805da5a09250f1cebcd375204faba84c2a7e3052",
        sorted_sha256: "3231273b125c6102efe01ca8b528bb9ddd723e21664daa3c822437cd7fecbd90",
        first_unordered: 1,
        unordered: 5,
    },
    Stored {
        name: "skew_b18446744073709551610_n12.dat",
        checksum: "6c4bc6750",
        sha256: "d07fd4d62e6e4f7323183aa3d94c9527cfd020b3f51c353eccd4d1ecd0b4ac4f",
        sorted_sha256: "3c29ff0381a098c1d803de87d9cb6014f40f94935c0cf0da30e221d7449dce87",
        first_unordered: 1,
        unordered: 5,
    },
    Stored {
        name: "skew_b1152921504606846970_n12.dat",
        checksum: "530e1b16e",
        sha256: "7131a71bf0aba5d54fcffbe1e80a6b1130d0e5aee7b89cc90a125bcb5e454203",
        sorted_sha256: "9f83a02d4fe840efb2bd5522caf1718e51fd86c37649e54324d883eb44e94add",
        first_unordered: 1,
        unordered: 6,
    },
    Stored {
        name: "skewascii_b1152921504606846970_n12.dat",
        checksum: "69f9b3b59",
        sha256: "28951ee8627d6ec8f420586f438d8d13cca1ce5703739bd91454c210b9e73c45",
        sorted_sha256: "f6896487500eae2525e1630bdafcad937171eb78c8f1e048ed3bf2d1c137ead5",
        first_unordered: 2,
        unordered: 4,
    },
];

fn spec_of(stored: &Stored) -> GenSpec {
    spec_from_name(stored.name).unwrap_or_else(|| panic!("cannot parse {}", stored.name))
}

/// Generates `stored` and checks hash, checksum, valsort report, and the sorted hash.
fn check(stored: &Stored) {
    let spec = spec_of(stored);
    let bytes = generate_all(&spec);
    assert_eq!(sha256_hex(&bytes), stored.sha256, "{}: sha256", stored.name);
    assert_eq!(
        gensort::checksum_of(&spec).sum_hex(),
        stored.checksum,
        "{}: checksum",
        stored.name
    );

    let summary = valsort::summarize(&bytes);
    assert_eq!(
        valsort::report_lines(&summary),
        [
            format!(
                "First unordered record is record {}",
                stored.first_unordered
            ),
            format!("Records: {}", spec.records),
            format!("Checksum: {}", stored.checksum),
            format!("ERROR - there are {} unordered records", stored.unordered),
        ],
        "{}: valsort report",
        stored.name
    );

    let sorted = sorted_by_full_record(&bytes);
    assert_eq!(
        sha256_hex(&sorted),
        stored.sorted_sha256,
        "{}: sorted sha256",
        stored.name
    );
    assert_eq!(
        valsort::report_lines(&valsort::summarize(&sorted)),
        [
            format!("Records: {}", spec.records),
            format!("Checksum: {}", stored.checksum),
            "Duplicate keys: 0".to_owned(),
            "SUCCESS - all records are in order".to_owned(),
        ],
        "{}: valsort report of the sorted records",
        stored.name
    );
}

#[test]
fn regenerated_vectors_match_recorded_hashes_and_reports() {
    for stored in &STORED {
        check(stored);
    }
}

#[test]
fn every_stored_dat_file_is_regenerated_byte_for_byte() {
    let Some(dir) = testdata() else { return };
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("list testdata")
        .map(|entry| {
            entry
                .expect("testdata entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".dat"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no .dat files in {}", dir.display());
    let mut unsorted = 0;
    for name in &names {
        let spec = spec_from_name(name).unwrap_or_else(|| panic!("cannot parse {name}"));
        let stored = common::read(&dir, name);
        let mut expected = generate_all(&spec);
        if name.ends_with(".sorted.dat") {
            expected = sorted_by_full_record(&expected);
        } else {
            unsorted += 1;
            assert!(
                STORED.iter().any(|s| s.name == name),
                "{name} has no recorded facts in this test; add them from README.md"
            );
        }
        assert!(
            stored == expected,
            "{name} differs from the regenerated bytes"
        );
    }
    assert_eq!(unsorted, STORED.len(), "every recorded file is stored");
}

/// `generate_to_writer` (the write loop behind `millrace gen … -` and `generate_to_file`)
/// streams the recorded bytes, and the stored files byte for byte when they are present.
#[test]
fn streamed_vectors_match_recorded_hashes_and_stored_files() {
    let dir = testdata();
    for stored in &STORED {
        let spec = spec_of(stored);
        let mut streamed = Vec::new();
        let checksum =
            gensort::generate_to_writer(&spec, &mut streamed, &|_| {}).expect("write to a Vec");
        assert_eq!(
            sha256_hex(&streamed),
            stored.sha256,
            "{}: sha256",
            stored.name
        );
        assert_eq!(
            checksum.sum_hex(),
            stored.checksum,
            "{}: checksum",
            stored.name
        );
        if let Some(dir) = &dir {
            assert!(
                streamed == common::read(dir, stored.name),
                "{} differs from the streamed bytes",
                stored.name
            );
        }
    }
}

#[test]
fn partitioned_generation_concatenates_to_the_whole() {
    for stored in &STORED {
        let spec = spec_of(stored);
        let whole = generate_all(&spec);
        for split in [1, spec.records / 3, spec.records - 1] {
            let head = GenSpec {
                records: split,
                ..spec
            };
            let tail = GenSpec {
                start: spec.start + split as u128,
                records: spec.records - split,
                ..spec
            };
            let mut pieces = generate_all(&head);
            pieces.extend(generate_all(&tail));
            assert!(pieces == whole, "{} split at {split}", stored.name);
        }
    }
}
