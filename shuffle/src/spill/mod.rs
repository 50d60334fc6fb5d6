//! Segment files: where spilled sort runs and the overflow of hybrid exchanges live on disk.
//!
//! A segment file is append-only and belongs to one producer.
//! It holds a sequence of *segments* (one per spilled run or flush), each a 4 KiB-aligned byte
//! range whose blocks are clustered by sub-partition, so a consumer reads its partition of a
//! segment as one contiguous range:
//!
//! ```text
//! file:    | segment 0                      |pad| segment 1          |pad| ...
//! segment: | p0 blk | p0 blk | p3 blk | p7 blk |  ...
//! block:   | 32-byte header | payload (raw or lz4) |
//! ```
//!
//! - [`block`]: the block codec (header layout, checksums, compression), pure over `&[u8]`.
//! - [`index`]: [`SegmentIndex`] per sealed segment (partition → offset, length, records,
//!   blocks, CRC-32C of the range) and the optional sidecar [`FileIndex`].
//! - `writer`: [`SegmentFileWriter`] encodes blocks into a [`DirectWriter`], sealing segments
//!   on request.
//! - `direct`: [`DirectWriter`], the one writer of large files (spill segments here, job
//!   output in the engine): 4 MiB aligned buffers written on an I/O thread (io_uring or
//!   `pwrite`, `O_DIRECT` when the file system allows, unaligned range ends buffered).
//! - `reader`: [`SegmentFileReader`] maps sealed segments read-only and yields blocks,
//!   borrowed from the map when uncompressed; it can read while the writer appends.
//!
//! Files are O(producers), never O(producers × consumers); the caller creates them in a folder
//! private to the job and deletes the folder when the job ends, fails or is cancelled.
//!
//! | question | answer |
//! |---|---|
//! | can it be read while written? | yes, every sealed segment |
//! | does it outlive the reader? | yes, until the caller deletes its folder |
//! | is it durable? | no: written, not fsynced; a crash reruns the producer |

mod aligned;
pub mod block;
mod direct;
mod error;
pub mod index;
mod io;
mod reader;
mod uring;
mod writer;

pub use block::{
    decode_block, encode_block, BlockEncoder, BlockError, BlockHeader, Codec, Compression,
    DecodedBlock, EncodedBlock, BLOCK_HEADER_BYTES, MAX_BLOCK_BYTES,
};
pub use direct::{DirectFile, DirectWriter, IoEngine};
pub use error::SpillError;
pub use index::{sidecar_path, FileIndex, IndexError, PartitionEntry, SegmentIndex, SEGMENT_ALIGN};
pub use reader::{collect_payloads, PartitionBlocks, SegmentFileReader};
pub use writer::{SegmentFileWriter, WriterOptions, WriterStats, BLOCK_RAW_BYTES};

/// Whether this process can use io_uring (probed once); `Err` says why not.
pub fn uring_available() -> Result<(), String> {
    uring::probe()
}
