//! The block codec: one block is a fixed 32-byte header followed by its payload.
//!
//! Blocks are the unit of checksumming and compression in segment files, and the same bytes
//! can travel on the wire.
//! Everything here is a pure function over `&[u8]`, so tests, fuzzers and miri run on plain
//! vectors; the callers ([`super::SegmentFileReader`], the exchange) add the file, offset and
//! partition to errors.
//!
//! # Byte layout (all integers little-endian)
//!
//! | offset | bytes | field | meaning |
//! |---:|---:|---|---|
//! | 0 | 4 | magic | `b"MLRB"` |
//! | 4 | 1 | version | `1` |
//! | 5 | 1 | codec | `0` = stored as is, `1` = lz4 block format (lz4_flex) |
//! | 6 | 2 | reserved | zero |
//! | 8 | 4 | raw_len | payload bytes after decompression, at most [`MAX_BLOCK_BYTES`] |
//! | 12 | 4 | stored_len | payload bytes that follow the header |
//! | 16 | 4 | records | records in the block (the codec never splits a record) |
//! | 20 | 4 | partition | sub-partition the records belong to |
//! | 24 | 4 | payload_crc32c | CRC-32C of the `stored_len` payload bytes |
//! | 28 | 4 | header_crc32c | CRC-32C of header bytes 0..28 |
//! | 32 | stored_len | payload | |
//!
//! Nothing from the header is trusted before it is checked: the magic first (a wrong offset or
//! foreign bytes give a clear "not a block" error), then the header checksum, then version,
//! codec, reserved bytes and both lengths (bounded by the cap and by the bytes at hand), then
//! the payload checksum, and only then is lz4 asked to decompress.
//! CRC-32C detects every burst of up to 32 flipped bits, so any single damaged byte is caught
//! by one of the two checksums.
//!
//! # When to compress
//!
//! [`Compression::Auto`] stores lz4 only when it saves at least 10% of the block, because a
//! smaller saving does not pay for decompressing on every read.
//! To avoid compressing whole incompressible blocks (gensort's binary records are random), a
//! block larger than three sample windows is first judged on three 4 KiB windows (start,
//! middle, end), each compressed on its own: if they do not save the 10% together, the block
//! is stored as is after compressing only 12 KiB of it.
//! Otherwise the whole block is compressed and the 10% rule is applied to the real result.

use std::borrow::Cow;
use std::fmt;

/// Size of a block header.
pub const BLOCK_HEADER_BYTES: usize = 32;
/// Largest raw payload of one block (64 MiB); larger lengths in a header are corruption.
pub const MAX_BLOCK_BYTES: usize = 64 << 20;
/// First four bytes of every block.
pub const BLOCK_MAGIC: [u8; 4] = *b"MLRB";
/// The format version this build writes and reads.
pub const BLOCK_VERSION: u8 = 1;

/// Size of each window [`Compression::Auto`] tries before compressing a whole block.
const AUTO_SAMPLE_BYTES: usize = 4096;
/// Blocks shorter than this are stored as is under [`Compression::Auto`]: the header and the
/// lz4 framing eat most of any saving.
const AUTO_MIN_BYTES: usize = 256;

/// How a writer should store payloads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// lz4 when it saves at least 10% of the block, else stored as is (see the module doc).
    #[default]
    Auto,
    /// Always lz4, even when the result is larger (for tests and measurements).
    Lz4,
    /// Never compress.
    None,
}

/// How a payload is stored (the header's codec byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// The payload is the raw bytes.
    None = 0,
    /// The payload is one lz4 block (lz4_flex block format, no frame).
    Lz4 = 1,
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::None => "none",
            Codec::Lz4 => "lz4",
        })
    }
}

/// The checked fields of a block header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    /// How the payload is stored.
    pub codec: Codec,
    /// Payload bytes after decompression.
    pub raw_len: u32,
    /// Payload bytes after the header.
    pub stored_len: u32,
    /// Records in the block.
    pub records: u32,
    /// Sub-partition of the records.
    pub partition: u32,
    /// CRC-32C of the stored payload.
    pub payload_crc32c: u32,
}

/// What is wrong with a block; the caller adds where the block was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// Fewer bytes than a header are left.
    #[error("only {available} bytes where a {BLOCK_HEADER_BYTES}-byte block header should start")]
    ShortHeader { available: usize },
    /// The bytes do not start with the block magic.
    #[error("no block header here (magic is {found:02x?}, expected \"MLRB\"); the offset is wrong or the bytes were overwritten")]
    BadMagic { found: [u8; 4] },
    /// The header checksum does not match its bytes.
    #[error("block header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    HeaderChecksum { stored: u32, computed: u32 },
    /// The header is from a newer or older format.
    #[error(
        "block format version {version} is not supported; this build reads version {BLOCK_VERSION}"
    )]
    UnsupportedVersion { version: u8 },
    /// The codec byte names no known codec.
    #[error("unknown block codec {codec}")]
    UnknownCodec { codec: u8 },
    /// The reserved header bytes are not zero.
    #[error("reserved block header bytes are {found:02x?}, not zero")]
    ReservedNotZero { found: [u8; 2] },
    /// A raw length above the cap (on encode: the caller's data; on decode: corruption).
    #[error("block of {raw_len} raw bytes exceeds the {max_bytes}-byte block cap")]
    TooLarge { raw_len: u64, max_bytes: u64 },
    /// The stored length cannot result from the raw length with this codec.
    #[error("stored length {stored_len} is impossible for {raw_len} raw bytes with codec {codec}")]
    BadStoredLen {
        raw_len: u32,
        stored_len: u32,
        codec: Codec,
    },
    /// The payload would run past the end of the bytes at hand.
    #[error("block payload of {stored_len} bytes runs past the end of the data ({available} bytes follow the header)")]
    PayloadPastEnd { stored_len: u32, available: usize },
    /// The payload checksum does not match.
    #[error("block payload checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    PayloadChecksum { stored: u32, computed: u32 },
    /// The lz4 payload passed its checksum but does not decompress to `raw_len` bytes.
    #[error("lz4 payload does not decompress to {raw_len} bytes: {reason}")]
    Decompress { raw_len: u32, reason: String },
    /// A valid block sits in the range of another partition.
    #[error("block belongs to partition {found}, but the index puts it in partition {expected}")]
    WrongPartition { expected: u32, found: u32 },
    /// The blocks of a range disagree with its index entry.
    #[error("the blocks disagree with the index: {what}")]
    IndexMismatch { what: String },
}

impl BlockHeader {
    /// The header's 32 bytes, checksum included.
    pub fn to_bytes(&self) -> [u8; BLOCK_HEADER_BYTES] {
        let mut h = [0u8; BLOCK_HEADER_BYTES];
        h[0..4].copy_from_slice(&BLOCK_MAGIC);
        h[4] = BLOCK_VERSION;
        h[5] = self.codec as u8;
        h[8..12].copy_from_slice(&self.raw_len.to_le_bytes());
        h[12..16].copy_from_slice(&self.stored_len.to_le_bytes());
        h[16..20].copy_from_slice(&self.records.to_le_bytes());
        h[20..24].copy_from_slice(&self.partition.to_le_bytes());
        h[24..28].copy_from_slice(&self.payload_crc32c.to_le_bytes());
        let crc = crc32c::crc32c(&h[..28]);
        h[28..32].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Parses and checks the header at the start of `bytes` (the payload is not looked at).
    pub fn parse(bytes: &[u8]) -> Result<Self, BlockError> {
        let Some(h) = bytes.first_chunk::<BLOCK_HEADER_BYTES>() else {
            return Err(BlockError::ShortHeader {
                available: bytes.len(),
            });
        };
        let magic = [h[0], h[1], h[2], h[3]];
        if magic != BLOCK_MAGIC {
            return Err(BlockError::BadMagic { found: magic });
        }
        let stored = le32(h, 28);
        let computed = crc32c::crc32c(&h[..28]);
        if stored != computed {
            return Err(BlockError::HeaderChecksum { stored, computed });
        }
        if h[4] != BLOCK_VERSION {
            return Err(BlockError::UnsupportedVersion { version: h[4] });
        }
        let codec = match h[5] {
            0 => Codec::None,
            1 => Codec::Lz4,
            codec => return Err(BlockError::UnknownCodec { codec }),
        };
        if h[6] != 0 || h[7] != 0 {
            return Err(BlockError::ReservedNotZero {
                found: [h[6], h[7]],
            });
        }
        let header = BlockHeader {
            codec,
            raw_len: le32(h, 8),
            stored_len: le32(h, 12),
            records: le32(h, 16),
            partition: le32(h, 20),
            payload_crc32c: le32(h, 24),
        };
        if header.raw_len as usize > MAX_BLOCK_BYTES {
            return Err(BlockError::TooLarge {
                raw_len: header.raw_len.into(),
                max_bytes: MAX_BLOCK_BYTES as u64,
            });
        }
        let stored_ok = match codec {
            Codec::None => header.stored_len == header.raw_len,
            Codec::Lz4 => {
                header.stored_len as usize
                    <= lz4_flex::block::get_maximum_output_size(header.raw_len as usize)
            }
        };
        if !stored_ok {
            return Err(BlockError::BadStoredLen {
                raw_len: header.raw_len,
                stored_len: header.stored_len,
                codec,
            });
        }
        Ok(header)
    }

    /// Header plus payload bytes.
    pub fn encoded_len(&self) -> usize {
        BLOCK_HEADER_BYTES + self.stored_len as usize
    }
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// A checked block: its header and its raw payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedBlock<'a> {
    /// The checked header.
    pub header: BlockHeader,
    /// The raw payload: borrowed from the input when stored as is, decompressed otherwise.
    pub payload: Cow<'a, [u8]>,
}

impl DecodedBlock<'_> {
    /// Records in the block.
    pub fn records(&self) -> u32 {
        self.header.records
    }

    /// Sub-partition of the block.
    pub fn partition(&self) -> u32 {
        self.header.partition
    }

    /// Bytes the block occupied in the input (header plus stored payload).
    pub fn encoded_len(&self) -> usize {
        self.header.encoded_len()
    }
}

/// An encoded block, borrowed from a [`BlockEncoder`] (or from the raw input when stored as
/// is): write `header` then `payload`.
#[derive(Debug)]
pub struct EncodedBlock<'a> {
    /// The 32 header bytes.
    pub header: [u8; BLOCK_HEADER_BYTES],
    /// The stored payload.
    pub payload: &'a [u8],
}

impl EncodedBlock<'_> {
    /// Header plus payload bytes.
    pub fn len(&self) -> usize {
        BLOCK_HEADER_BYTES + self.payload.len()
    }

    /// Never true: a block has at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Encodes blocks, reusing one compression buffer across calls.
#[derive(Debug, Default)]
pub struct BlockEncoder {
    scratch: Vec<u8>,
}

impl BlockEncoder {
    /// An encoder with no buffer yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Encodes `raw` (whole records, `records` of them) as one block of `partition`.
    ///
    /// The payload is `raw` itself when it is stored as is, so encoding copies nothing then.
    pub fn encode<'a>(
        &'a mut self,
        raw: &'a [u8],
        records: u32,
        partition: u32,
        compression: Compression,
    ) -> Result<EncodedBlock<'a>, BlockError> {
        if raw.len() > MAX_BLOCK_BYTES {
            return Err(BlockError::TooLarge {
                raw_len: raw.len() as u64,
                max_bytes: MAX_BLOCK_BYTES as u64,
            });
        }
        let compress = match compression {
            Compression::None => false,
            Compression::Lz4 => true,
            Compression::Auto => raw.len() >= AUTO_MIN_BYTES && self.samples_pay(raw),
        };
        let (codec, payload) = if compress {
            let stored = self.lz4(raw);
            if compression == Compression::Lz4 || pays(raw.len(), stored) {
                (Codec::Lz4, &self.scratch[..stored])
            } else {
                (Codec::None, raw)
            }
        } else {
            (Codec::None, raw)
        };
        let header = BlockHeader {
            codec,
            raw_len: raw.len() as u32,
            stored_len: payload.len() as u32,
            records,
            partition,
            payload_crc32c: crc32c::crc32c(payload),
        };
        Ok(EncodedBlock {
            header: header.to_bytes(),
            payload,
        })
    }

    /// Whether three sample windows of a large block compress by 10% (small blocks: yes,
    /// the whole block is tried).
    fn samples_pay(&mut self, raw: &[u8]) -> bool {
        if raw.len() < 3 * AUTO_SAMPLE_BYTES {
            return true;
        }
        let starts = [
            0,
            raw.len() / 2 - AUTO_SAMPLE_BYTES / 2,
            raw.len() - AUTO_SAMPLE_BYTES,
        ];
        let stored: usize = starts
            .iter()
            .map(|&start| self.lz4(&raw[start..start + AUTO_SAMPLE_BYTES]))
            .sum();
        pays(3 * AUTO_SAMPLE_BYTES, stored)
    }

    /// Compresses `raw` into the scratch buffer; returns the compressed length.
    fn lz4(&mut self, raw: &[u8]) -> usize {
        let max = lz4_flex::block::get_maximum_output_size(raw.len());
        if self.scratch.len() < max {
            self.scratch.resize(max, 0);
        }
        lz4_flex::block::compress_into(raw, &mut self.scratch[..max])
            .expect("lz4 fits in its maximum output size")
    }
}

/// Whether storing `stored` bytes instead of `raw` saves at least 10%.
fn pays(raw: usize, stored: usize) -> bool {
    stored <= raw - raw / 10
}

/// Appends one encoded block of `raw` to `out`; returns the bytes appended.
///
/// Allocates a compression buffer per call; writers keep a [`BlockEncoder`] instead.
pub fn encode_block(
    raw: &[u8],
    records: u32,
    partition: u32,
    compression: Compression,
    out: &mut Vec<u8>,
) -> Result<usize, BlockError> {
    let mut encoder = BlockEncoder::new();
    let block = encoder.encode(raw, records, partition, compression)?;
    out.reserve(block.len());
    out.extend_from_slice(&block.header);
    out.extend_from_slice(block.payload);
    Ok(block.len())
}

/// Checks and decodes the block at the start of `bytes` (bytes after it are ignored; see
/// [`DecodedBlock::encoded_len`] to step to the next block).
pub fn decode_block(bytes: &[u8]) -> Result<DecodedBlock<'_>, BlockError> {
    let header = BlockHeader::parse(bytes)?;
    let rest = &bytes[BLOCK_HEADER_BYTES..];
    let stored_len = header.stored_len as usize;
    if rest.len() < stored_len {
        return Err(BlockError::PayloadPastEnd {
            stored_len: header.stored_len,
            available: rest.len(),
        });
    }
    let stored = &rest[..stored_len];
    let computed = crc32c::crc32c(stored);
    if computed != header.payload_crc32c {
        return Err(BlockError::PayloadChecksum {
            stored: header.payload_crc32c,
            computed,
        });
    }
    let payload = match header.codec {
        Codec::None => Cow::Borrowed(stored),
        Codec::Lz4 => {
            let mut raw = vec![0u8; header.raw_len as usize];
            let decompress_error = |reason: String| BlockError::Decompress {
                raw_len: header.raw_len,
                reason,
            };
            let n = lz4_flex::block::decompress_into(stored, &mut raw)
                .map_err(|e| decompress_error(e.to_string()))?;
            if n != raw.len() {
                return Err(decompress_error(format!("it decompressed to {n} bytes")));
            }
            Cow::Owned(raw)
        }
    };
    Ok(DecodedBlock { header, payload })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn compressions() -> impl Strategy<Value = Compression> {
        prop_oneof![
            Just(Compression::Auto),
            Just(Compression::Lz4),
            Just(Compression::None)
        ]
    }

    /// Bytes that are sometimes random, sometimes repetitive, so both codecs get exercised.
    fn payloads() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..20_000),
            (
                proptest::collection::vec(any::<u8>(), 1..16),
                0..20_000usize
            )
                .prop_map(|(unit, len)| unit
                    .iter()
                    .copied()
                    .cycle()
                    .take(len)
                    .collect()),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(raw in payloads(), records: u32, partition: u32, compression in compressions()) {
            let mut out = vec![0xAB; 3];
            let n = encode_block(&raw, records, partition, compression, &mut out).unwrap();
            prop_assert_eq!(n, out.len() - 3);
            let block = decode_block(&out[3..]).unwrap();
            prop_assert_eq!(block.encoded_len(), n);
            prop_assert_eq!(block.records(), records);
            prop_assert_eq!(block.partition(), partition);
            prop_assert_eq!(&block.payload[..], &raw[..]);
            match (compression, block.header.codec) {
                (Compression::None, codec) => prop_assert_eq!(codec, Codec::None),
                (Compression::Lz4, codec) => prop_assert_eq!(codec, Codec::Lz4),
                (Compression::Auto, Codec::Lz4) => prop_assert!(pays(raw.len(), block.header.stored_len as usize)),
                (Compression::Auto, Codec::None) => {}
            }
            if block.header.codec == Codec::None {
                prop_assert!(matches!(block.payload, Cow::Borrowed(_)), "stored blocks decode without a copy");
            }
        }

        /// Any single damaged byte, in the header or the payload, is an error.
        #[test]
        fn any_flipped_byte_is_detected(
            raw in payloads(),
            compression in compressions(),
            position: prop::sample::Index,
            flip in 1u8..=255,
        ) {
            let mut out = Vec::new();
            encode_block(&raw, 7, 3, compression, &mut out).unwrap();
            let at = position.index(out.len());
            out[at] ^= flip;
            prop_assert!(decode_block(&out).is_err(), "flipping byte {} of {} went unnoticed", at, out.len());
        }

        /// A block cut short anywhere is an error, never a panic or a short payload.
        #[test]
        fn any_truncation_is_detected(raw in payloads(), compression in compressions(), cut: prop::sample::Index) {
            let mut out = Vec::new();
            encode_block(&raw, 1, 0, compression, &mut out).unwrap();
            let len = cut.index(out.len());
            prop_assert!(decode_block(&out[..len]).is_err());
        }
    }

    #[test]
    fn auto_stores_random_bytes_and_compresses_text() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let random: Vec<u8> = (0..1 << 20)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let text: Vec<u8> = (0..10_000u32)
            .flat_map(|i| {
                format!("{i:010} 0000000000000000{i:016X} 8888999900001111AAAA\r\n").into_bytes()
            })
            .collect();
        let mut encoder = BlockEncoder::new();
        let block = encoder.encode(&random, 1, 0, Compression::Auto).unwrap();
        assert_eq!(
            BlockHeader::parse(&block.header).unwrap().codec,
            Codec::None
        );
        let block = encoder.encode(&text, 1, 0, Compression::Auto).unwrap();
        let header = BlockHeader::parse(&block.header).unwrap();
        assert_eq!(header.codec, Codec::Lz4);
        assert!(pays(text.len(), header.stored_len as usize));
    }

    /// Lengths from a header with a valid checksum are still bounded by the cap and the data.
    #[test]
    fn lengths_are_never_trusted() {
        let forged = |raw_len: u32, stored_len: u32, codec: Codec| {
            BlockHeader {
                codec,
                raw_len,
                stored_len,
                records: 1,
                partition: 0,
                payload_crc32c: 0,
            }
            .to_bytes()
        };
        assert!(matches!(
            decode_block(&forged(u32::MAX, u32::MAX, Codec::None)),
            Err(BlockError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_block(&forged(10, 1 << 30, Codec::Lz4)),
            Err(BlockError::BadStoredLen { .. })
        ));
        assert!(matches!(
            decode_block(&forged(10, 11, Codec::None)),
            Err(BlockError::BadStoredLen { .. })
        ));
        assert_eq!(
            decode_block(&forged(1000, 1000, Codec::None)),
            Err(BlockError::PayloadPastEnd {
                stored_len: 1000,
                available: 0
            })
        );
        // A checksummed lz4 payload that claims more raw bytes than it holds.
        let mut block = Vec::new();
        encode_block(&[5u8; 4000], 1, 0, Compression::Lz4, &mut block).unwrap();
        let mut header = BlockHeader::parse(&block).unwrap();
        header.raw_len = 5000;
        block[..BLOCK_HEADER_BYTES].copy_from_slice(&header.to_bytes());
        assert!(matches!(
            decode_block(&block),
            Err(BlockError::Decompress { raw_len: 5000, .. })
        ));
        assert!(encode_block(
            &vec![0u8; MAX_BLOCK_BYTES + 1],
            1,
            0,
            Compression::None,
            &mut Vec::new()
        )
        .is_err());
    }
}
