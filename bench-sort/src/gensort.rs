//! A generator whose output is byte-for-byte identical to gensort 1.5 (sortbenchmark.org).
//!
//! Why: the sort benchmark defines its input as "what gensort writes" and proves a sort was a
//! permutation by comparing checksums with gensort's `-c` value, so Millrace generates the
//! input itself instead of depending on the C tool. The spec is `shared/spec/gensort.md`.
//!
//! # Algorithm
//!
//! 1. A 128-bit LCG, `X_{k+1} = A·X_k + C (mod 2^128)`, `X_0 = 0`. Record `N` takes `X_{N+1}` as
//!    its primary number. Jumping to any record uses the 128 precomputed affine maps
//!    `f^(2^i) = x ↦ a_i·x + c_i` ([`skip_table`]), one per set bit of `N`.
//! 2. Binary record `N`: ten 10-byte slices, slice `j` is the top 80 bits of `X_{N+1+j} XOR M_j`
//!    (`M_0 = 0`). A window of the last ten generator outputs makes that one step per record.
//! 3. ASCII record `N` (`R = X_{N+1}`, `H = hi(R)`, `L = lo(R)`):
//!
//!    ```text
//!    bytes  0..8   base-95 digits of H, least significant first, each + 0x20
//!    bytes  8..10  L mod 95, (L / 95) mod 95, each + 0x20
//!    bytes 10..12  "  "
//!    bytes 12..44  N as 32 uppercase hex digits
//!    bytes 44..46  "  "
//!    bytes 46..98  13 groups of 4 equal hex digits: nibbles of L at bits 48, 44, ..., 0
//!    bytes 98..100 "\r\n"
//!    ```
//!
//! 4. Skew (`-s`) replaces the top `s` key bits (binary, `s = (L >> 32) & 63`, 0 if above 48)
//!    or the first `t` key characters (ASCII, `t = (L >> 32) & 7`, 0 if 7) with the prefix of
//!    the unskewed key of record [`skew_index`]`(N)`; the prefixes are derived once
//!    ([`skew_tables`]) rather than stored as literal tables.
//! 5. The checksum is the sum of the CRC-32 of every record ([`Checksum`]).
//!
//! Record numbers wrap modulo 2^128, exactly as in gensort, because every quantity above is a
//! function of `N mod 2^128` and the LCG has period 2^128.
//!
//! # Parallel generation
//!
//! Records are independent, so [`generate_to_writer`] (and [`generate_to_file`] through it)
//! cuts the run into blocks of
//! [`BLOCK_RECORDS`] and generates a *wave* of blocks in parallel with rayon (each block starts
//! with its own skip-ahead) while a writer thread writes the previous wave. At most
//! [`WAVE_BUFFERS`] waves exist at a time, so memory stays at a few tens of MB whatever the
//! record count.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::OnceLock;

use engine::record::{Checksum, RECORD_LEN};
use rayon::prelude::*;

/// The LCG multiplier (L'Ecuyer).
const A: u128 = 0x2360_ed05_1fc6_5da4_4385_df64_9fcc_f645;
/// The LCG increment: "JimGrayRIP", five spaces and 0x01.
const C: u128 = 0x4a69_6d47_7261_7952_4950_2020_2020_2001;

/// The masks XORed into the nine payload numbers of a binary record. Only the top 80 bits
/// matter; index 0 (the key) is unmasked.
const MASKS: [u128; 10] = [
    0,
    0xF0E8_E4E2_E1D8_D4D2_D1CC << 48,
    0xCAC9_C6C5_C3B8_B4B2_B1AC << 48,
    0xAAA9_A6A5_A39C_9A99_9695 << 48,
    0x938E_8D8B_8778_7472_716C << 48,
    0x6A69_6665_635C_5A59_5655 << 48,
    0x534E_4D4B_473C_3A39_3635 << 48,
    0x332E_2D2B_271E_1D1B_170F << 48,
    0xC8C4_C2C1_9894_9291_8CE0 << 48,
    0x170F_332E_2D2B_271E_1D1B << 48,
];

/// Uppercase hex digits, as gensort prints them in ASCII records.
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Records per parallel work unit: 1 MB, big enough that rayon's per-task cost and the
/// skip-ahead (128 multiply-adds) vanish, small enough that a wave fits comfortably in memory.
pub const BLOCK_RECORDS: usize = 10_000;

/// Wave buffers that may exist at once: one being generated, one queued, one being written.
pub const WAVE_BUFFERS: usize = 3;

/// Blocks per wave per rayon thread. Several blocks per thread keep the threads busy up to the
/// barrier at the end of each wave.
const WAVE_BLOCKS_PER_THREAD: usize = 4;
/// Upper bound on blocks per wave so that a very wide pool does not make waves huge.
const MAX_WAVE_BLOCKS: usize = 256;

/// Record layout, gensort's `-a` option.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// Default gensort 1.5 records: every byte pseudo-random.
    Binary,
    /// Printable records (`-a`): base-95 key, hex row id, hex filler, CRLF.
    Ascii,
}

/// What to generate: the equivalent of `gensort [-a] [-s] -b<start> <records>`.
#[derive(Clone, Copy, Debug)]
pub struct GenSpec {
    /// Binary or ASCII records.
    pub format: Format,
    /// Skewed keys (`-s`).
    pub skew: bool,
    /// Number of the first record (`-b`); record numbers wrap modulo 2^128.
    pub start: u128,
    /// Records to generate.
    pub records: u64,
}

impl GenSpec {
    /// Size of the generated output in bytes (a `u128`, because `records * 100` can exceed
    /// `u64` for absurd counts).
    pub fn total_bytes(&self) -> u128 {
        self.records as u128 * RECORD_LEN as u128
    }
}

/// Errors from generating records.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// A record count on the command line is not a valid count.
    #[error(
        "invalid record count {input:?}: {reason}; expected a decimal number with an optional \
         k, M or G suffix, such as 1000000 or 10M"
    )]
    InvalidRecordCount {
        /// The text as given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The output file could not be created or truncated.
    #[error("cannot create {}", path.display())]
    Create {
        /// The output path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Writing failed because the file system has no space left.
    #[error(
        "cannot write {}: the disk is full after {written_bytes} bytes; free some \
         space or write to another file system",
        path.display()
    )]
    DiskFull {
        /// The output path.
        path: PathBuf,
        /// Bytes written successfully before the failure.
        written_bytes: u64,
        /// The OS error (ENOSPC).
        source: io::Error,
    },
    /// Any other write failure.
    #[error("cannot write {}", path.display())]
    Write {
        /// The output path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl GenError {
    /// The same error naming `shown` instead of the output it names now: the file that was
    /// written (for callers that write to a temp file and rename it), or
    /// [`STREAM_NAME`] (for [`generate_to_writer`] callers that know what the writer is, e.g.
    /// `Path::new("standard output")`).
    pub fn for_path(self, shown: &Path) -> Self {
        match self {
            Self::Create { source, .. } => Self::Create {
                path: shown.to_path_buf(),
                source,
            },
            Self::DiskFull {
                written_bytes,
                source,
                ..
            } => Self::DiskFull {
                path: shown.to_path_buf(),
                written_bytes,
                source,
            },
            Self::Write { source, .. } => Self::Write {
                path: shown.to_path_buf(),
                source,
            },
            other => other,
        }
    }

    /// Whether the error comes from the user's input (a bad flag) rather than from I/O.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, GenError::InvalidRecordCount { .. })
    }

    /// Whether writing failed because the reader of a pipe went away (`EPIPE`), as in
    /// `millrace gen 1G - | head -c 100`: a normal end for a command writing to a pipe.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, GenError::Write { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }
}

// ---------------------------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------------------------

/// One LCG step: `X_{k+1}` from `X_k`.
#[inline(always)]
fn step(x: u128) -> u128 {
    x.wrapping_mul(A).wrapping_add(C)
}

/// `(a_i, c_i)` such that `f^(2^i)(x) = a_i·x + c_i`, for i = 0..128.
fn skip_table() -> &'static [(u128, u128); 128] {
    static TABLE: OnceLock<[(u128, u128); 128]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = [(0u128, 0u128); 128];
        let (mut a, mut c) = (A, C);
        for entry in &mut table {
            *entry = (a, c);
            // f^(2^(i+1)) = f^(2^i) ∘ f^(2^i): a² x + c (a + 1).
            c = c.wrapping_mul(a.wrapping_add(1));
            a = a.wrapping_mul(a);
        }
        table
    })
}

/// `X_n`, the n-th generator output (`X_0 = 0`), by skip-ahead.
pub fn lcg_value(n: u128) -> u128 {
    let mut x = 0u128;
    for (i, &(a, c)) in skip_table().iter().enumerate() {
        if (n >> i) & 1 == 1 {
            x = a.wrapping_mul(x).wrapping_add(c);
        }
    }
    x
}

/// The skew-table row used by record `n`, including gensort's two quirks: numbers in
/// `2^60..2^64` all map to 64 and numbers from `2^124` up all map to 128, because the original
/// tests the top four bits of each 64-bit half separately.
pub fn skew_index(n: u128) -> usize {
    let hi = (n >> 64) as u64;
    let lo = n as u64;
    if hi == 0 {
        if lo >> 60 != 0 {
            64
        } else {
            (64 - lo.leading_zeros()) as usize
        }
    } else if hi >> 60 != 0 {
        128
    } else {
        64 + (64 - hi.leading_zeros()) as usize
    }
}

/// Key prefixes substituted into skewed keys, indexed by [`skew_index`].
pub struct SkewTables {
    /// `SB[i]`: the first 6 bytes of the unskewed binary key of record `i`.
    pub binary: [[u8; 6]; 129],
    /// `SA[i]`: the first 6 characters of the unskewed ASCII key of record `i`.
    pub ascii: [[u8; 6]; 129],
}

/// The skew tables, derived from the generator on first use (the original stores them as
/// literals; deriving them gives the same bytes and cannot contain a typo).
pub fn skew_tables() -> &'static SkewTables {
    static TABLES: OnceLock<SkewTables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut tables = SkewTables {
            binary: [[0; 6]; 129],
            ascii: [[0; 6]; 129],
        };
        let mut x = 0u128;
        for i in 0..129 {
            x = step(x);
            let be = x.to_be_bytes();
            tables.binary[i].copy_from_slice(&be[..6]);
            let mut key = [0u8; 10];
            ascii_key(&mut key, x);
            tables.ascii[i].copy_from_slice(&key[..6]);
        }
        tables
    })
}

/// Writes one binary record from the window `w[j] = X_{N+1+j}`.
#[inline(always)]
fn binary_record(rec: &mut [u8], w: &[u128; 10]) {
    for (j, (slot, mask)) in rec.chunks_exact_mut(10).zip(MASKS).enumerate() {
        slot.copy_from_slice(&(w[j] ^ mask).to_be_bytes()[..10]);
    }
}

/// Writes the 10 key characters of an ASCII record whose primary number is `r`.
#[inline(always)]
fn ascii_key(key: &mut [u8], r: u128) {
    let mut h = (r >> 64) as u64;
    let l = r as u64;
    // Division by the constant 95 compiles to a multiply and shift, so the plain loop is as
    // fast as a hand-made reciprocal (measured: ASCII generation is not limited by it).
    for digit in &mut key[..8] {
        *digit = b' ' + (h % 95) as u8;
        h /= 95;
    }
    key[8] = b' ' + (l % 95) as u8;
    key[9] = b' ' + ((l / 95) % 95) as u8;
}

/// Writes one ASCII record: record number `n`, primary number `r`.
#[inline(always)]
fn ascii_record(rec: &mut [u8], r: u128, n: u128) {
    ascii_key(&mut rec[..10], r);
    rec[10] = b' ';
    rec[11] = b' ';
    for (pair, byte) in rec[12..44].chunks_exact_mut(2).zip(n.to_be_bytes()) {
        pair[0] = HEX_UPPER[(byte >> 4) as usize];
        pair[1] = HEX_UPPER[(byte & 0xF) as usize];
    }
    rec[44] = b' ';
    rec[45] = b' ';
    let l = r as u64;
    for (g, group) in rec[46..98].chunks_exact_mut(4).enumerate() {
        group.fill(HEX_UPPER[((l >> (48 - 4 * g)) & 0xF) as usize]);
    }
    rec[98] = b'\r';
    rec[99] = b'\n';
}

/// Replaces the top `s` bits of a binary key with those of `prefix` (spec 5.3).
#[inline(always)]
fn skew_binary_key(key: &mut [u8], l: u64, prefix: &[u8; 6]) {
    let mut s = ((l >> 32) & 0x3F) as usize;
    if s > 48 {
        s = 0;
    }
    let whole = s / 8;
    key[..whole].copy_from_slice(&prefix[..whole]);
    let r = s % 8;
    if r != 0 {
        let keep = 0xFFu8 >> r;
        key[whole] = (prefix[whole] & !keep) | (key[whole] & keep);
    }
}

/// Replaces the first `t` characters of an ASCII key with those of `prefix` (spec 5.4).
#[inline(always)]
fn skew_ascii_key(key: &mut [u8], l: u64, prefix: &[u8; 6]) {
    let mut t = ((l >> 32) & 0x7) as usize;
    if t > 6 {
        t = 0;
    }
    key[..t].copy_from_slice(&prefix[..t]);
}

/// Fills `out` (whole records) with binary records starting at record number `first`.
fn binary_block(first: u128, skew: bool, out: &mut [u8]) {
    let mut x = lcg_value(first);
    let mut window = [0u128; 10];
    for value in &mut window {
        x = step(x);
        *value = x;
    }
    let tables = skew.then(skew_tables);
    let mut n = first;
    for rec in out.chunks_exact_mut(RECORD_LEN) {
        binary_record(rec, &window);
        if let Some(tables) = tables {
            skew_binary_key(rec, window[0] as u64, &tables.binary[skew_index(n)]);
        }
        n = n.wrapping_add(1);
        window.copy_within(1.., 0);
        x = step(x);
        window[9] = x;
    }
}

/// Fills `out` (whole records) with ASCII records starting at record number `first`.
fn ascii_block(first: u128, skew: bool, out: &mut [u8]) {
    let mut x = lcg_value(first);
    let tables = skew.then(skew_tables);
    let mut n = first;
    for rec in out.chunks_exact_mut(RECORD_LEN) {
        x = step(x);
        ascii_record(rec, x, n);
        if let Some(tables) = tables {
            skew_ascii_key(rec, x as u64, &tables.ascii[skew_index(n)]);
        }
        n = n.wrapping_add(1);
    }
}

/// Writes records `spec.start + first_offset ..` (`count` of them, numbers wrapping modulo
/// 2^128) into `out[..count * 100]`.
///
/// `spec.records` is not consulted, so a caller may generate any range.
///
/// # Panics
///
/// If `out` is shorter than `count * 100` bytes; that is a bug in the caller.
pub fn generate_block(spec: &GenSpec, first_offset: u64, count: usize, out: &mut [u8]) {
    let len = count
        .checked_mul(RECORD_LEN)
        .filter(|&len| len <= out.len())
        .unwrap_or_else(|| {
            panic!(
                "generate_block: {count} records do not fit in a {}-byte buffer; this is a bug \
                 in the caller",
                out.len()
            )
        });
    let first = spec.start.wrapping_add(first_offset as u128);
    let out = &mut out[..len];
    match spec.format {
        Format::Binary => binary_block(first, spec.skew, out),
        Format::Ascii => ascii_block(first, spec.skew, out),
    }
}

// ---------------------------------------------------------------------------------------------
// Parallel drivers
// ---------------------------------------------------------------------------------------------

/// Where filled waves go, in order.
trait WaveSink {
    /// A buffer to fill next, or `None` once the sink has failed.
    fn take_buffer(&mut self) -> Option<Vec<u8>>;
    /// Hands over the next filled wave; `false` once the sink has failed.
    fn put_wave(&mut self, wave: Vec<u8>) -> bool;
}

/// Generates every record of `spec` wave by wave into buffers from `sink` and returns the
/// checksum of all of them. Stops early (with a partial checksum) if the sink fails; the
/// caller then reports the sink's error.
fn generate_waves(spec: &GenSpec, sink: &mut dyn WaveSink) -> Checksum {
    let wave_blocks =
        (rayon::current_num_threads() * WAVE_BLOCKS_PER_THREAD).clamp(4, MAX_WAVE_BLOCKS);
    let wave_records = (wave_blocks * BLOCK_RECORDS) as u64;
    let mut checksum = Checksum::default();
    let mut offset = 0u64;
    while offset < spec.records {
        let Some(mut wave) = sink.take_buffer() else {
            break;
        };
        let records = (spec.records - offset).min(wave_records) as usize;
        wave.resize(records * RECORD_LEN, 0);
        let wave_checksum = wave
            .par_chunks_mut(BLOCK_RECORDS * RECORD_LEN)
            .enumerate()
            .map(|(i, block)| {
                let block_offset = offset + (i * BLOCK_RECORDS) as u64;
                generate_block(spec, block_offset, block.len() / RECORD_LEN, block);
                Checksum::of_records(block)
            })
            .reduce(Checksum::default, |mut a, b| {
                a.merge(b);
                a
            });
        checksum.merge(wave_checksum);
        offset += records as u64;
        if !sink.put_wave(wave) {
            break;
        }
    }
    checksum
}

/// A sink that only counts bytes: one reused buffer, progress after every wave.
struct DiscardSink<'a> {
    buffer: Option<Vec<u8>>,
    done_bytes: u64,
    progress: &'a (dyn Fn(u64) + Sync),
}

impl WaveSink for DiscardSink<'_> {
    fn take_buffer(&mut self) -> Option<Vec<u8>> {
        Some(self.buffer.take().unwrap_or_default())
    }

    fn put_wave(&mut self, wave: Vec<u8>) -> bool {
        self.done_bytes += wave.len() as u64;
        (self.progress)(self.done_bytes);
        self.buffer = Some(wave);
        true
    }
}

/// A sink that passes waves to a writer thread and takes emptied buffers back from it.
struct ChannelSink {
    allocated: usize,
    to_writer: mpsc::SyncSender<Vec<u8>>,
    free: mpsc::Receiver<Vec<u8>>,
}

impl WaveSink for ChannelSink {
    fn take_buffer(&mut self) -> Option<Vec<u8>> {
        if let Ok(buffer) = self.free.try_recv() {
            return Some(buffer);
        }
        if self.allocated < WAVE_BUFFERS {
            self.allocated += 1;
            return Some(Vec::new());
        }
        // Blocks until the writer finishes a wave; an error means the writer has stopped.
        self.free.recv().ok()
    }

    fn put_wave(&mut self, wave: Vec<u8>) -> bool {
        self.to_writer.send(wave).is_ok()
    }
}

/// Whether a write error means "no space left on device".
fn is_disk_full(error: &io::Error) -> bool {
    error.raw_os_error() == Some(libc::ENOSPC)
}

/// The checksum of every record of `spec`, generated in parallel without writing anything.
pub fn checksum_of(spec: &GenSpec) -> Checksum {
    let mut sink = DiscardSink {
        buffer: None,
        done_bytes: 0,
        progress: &|_| {},
    };
    generate_waves(spec, &mut sink)
}

/// What errors of [`generate_to_writer`] name as the output until the caller renames it with
/// [`GenError::for_path`].
pub const STREAM_NAME: &str = "the output stream";

/// Generates `spec` into `path` (created or truncated) and returns the checksum, like
/// `gensort -c`.
///
/// The file is written by [`generate_to_writer`]; errors name `path`. If `path` is exactly
/// `/dev/null`, nothing is opened or written but the checksum is still computed (gensort does
/// the same); `progress` then reports bytes generated.
///
/// The file is not synced; atomic replacement and durability are the caller's business.
pub fn generate_to_file(
    spec: &GenSpec,
    path: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Checksum, GenError> {
    if path == Path::new("/dev/null") {
        let mut sink = DiscardSink {
            buffer: None,
            done_bytes: 0,
            progress,
        };
        return Ok(generate_waves(spec, &mut sink));
    }
    let file = File::create(path).map_err(|source| GenError::Create {
        path: path.to_path_buf(),
        source,
    })?;
    generate_to_writer(spec, file, progress).map_err(|error| error.for_path(path))
}

/// Generates `spec` into `writer`, in record order, and returns the checksum, like
/// `gensort -c`. This is the one write loop: [`generate_to_file`] calls it with the file.
///
/// Blocks are generated in parallel on the rayon pool and written by a writer thread that owns
/// `writer` (hence `Send`; pass `std::io::stdout()`, not a `StdoutLock`), at most
/// [`WAVE_BUFFERS`] waves in memory. `writer` is flushed at the end and dropped before this
/// returns. `progress` receives the total bytes written so far, from the writer thread, after
/// each wave.
///
/// # Errors
///
/// The first write or flush error stops generation. `ENOSPC` is [`GenError::DiskFull`]; any
/// other error, including a closed pipe (`io::ErrorKind::BrokenPipe`, see
/// [`GenError::is_broken_pipe`]), is [`GenError::Write`] with the `io::Error` as its source.
/// Errors name the output [`STREAM_NAME`]; callers rename it with [`GenError::for_path`].
pub fn generate_to_writer<W: Write + Send>(
    spec: &GenSpec,
    mut writer: W,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Checksum, GenError> {
    let stream = Path::new(STREAM_NAME);
    let write_error = |source: io::Error, written_bytes: u64| {
        if is_disk_full(&source) {
            GenError::DiskFull {
                path: stream.to_path_buf(),
                written_bytes,
                source,
            }
        } else {
            GenError::Write {
                path: stream.to_path_buf(),
                source,
            }
        }
    };
    // Capacity 1: one wave may wait for the writer while the next is being generated.
    let (to_writer, waves) = mpsc::sync_channel::<Vec<u8>>(1);
    let (to_generator, free) = mpsc::channel::<Vec<u8>>();

    std::thread::scope(|scope| {
        // On error the thread returns, dropping the channel ends, which stops the generator at
        // its next wave.
        let writer = scope.spawn(move || -> Result<(), GenError> {
            let mut written_bytes = 0u64;
            for wave in waves {
                writer
                    .write_all(&wave)
                    .map_err(|source| write_error(source, written_bytes))?;
                written_bytes += wave.len() as u64;
                progress(written_bytes);
                // The generator may already be done and gone; then the buffer is just freed.
                let _ = to_generator.send(wave);
            }
            writer
                .flush()
                .map_err(|source| write_error(source, written_bytes))
        });

        let mut sink = ChannelSink {
            allocated: 0,
            to_writer,
            free,
        };
        let checksum = generate_waves(spec, &mut sink);
        // Closing the channel tells the writer that no more waves come.
        drop(sink);
        match writer.join() {
            Ok(result) => result.map(|()| checksum),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Command-line counts
// ---------------------------------------------------------------------------------------------

/// Parses a record count: decimal digits with an optional decimal suffix `k`/`K` (10^3),
/// `M`/`m` (10^6) or `G`/`g` (10^9), e.g. `123`, `1k`, `10M`, `2G`.
///
/// Unlike gensort, which stops at the first non-digit, anything else is rejected, so a typo
/// such as `1e6` cannot silently mean 1 record.
pub fn parse_record_count(s: &str) -> Result<u64, GenError> {
    let invalid = |reason| GenError::InvalidRecordCount {
        input: s.to_owned(),
        reason,
    };
    let (digits, multiplier) = match s.as_bytes().last() {
        None => return Err(invalid("the count is empty")),
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1_000),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1_000_000),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 1_000_000_000),
        Some(_) => (s, 1),
    };
    if digits.is_empty() {
        return Err(invalid("the suffix has no number before it"));
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("only the digits 0-9 and one suffix are allowed"));
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| invalid("the count does not fit in 64 bits"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn hex128(s: &str) -> u128 {
        u128::from_str_radix(s, 16).expect("test constant is hex")
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn record(format: Format, skew: bool, n: u128) -> Vec<u8> {
        let spec = GenSpec {
            format,
            skew,
            start: n,
            records: 1,
        };
        let mut rec = vec![0u8; RECORD_LEN];
        generate_block(&spec, 0, 1, &mut rec);
        rec
    }

    #[test]
    fn lcg_checkpoints_match_spec() {
        let cases: [(u128, &str); 8] = [
            (1, "4a696d47726179524950202020202001"),
            (2, "95e0e48262b3edfe04479485c755b646"),
            (3, "45979353dbed5329365cf795f12984df"),
            (1000, "4d15a82070c03ee39bf5f4f5fa043498"),
            (1001, "8b7c5047a5ec0be014b85010deec5cf9"),
            (123_456_790, "e972efd66ef4fd6127cc6061fe148572"),
            (5_000_000_001, "374e4d566c02fef67ed935466f88e601"),
            (1 << 64, "f0b1944bfd71a97f0000000000000000"),
        ];
        for (n, expected) in cases {
            assert_eq!(lcg_value(n), hex128(expected), "X_{n}");
        }
        // Stepping agrees with skipping.
        let mut x = 0;
        for n in 1..=1001u128 {
            x = step(x);
            assert_eq!(x, lcg_value(n), "X_{n} by stepping");
        }
    }

    #[test]
    fn skip_table_matches_spec() {
        let table = skip_table();
        assert_eq!(table[0], (A, C));
        let cases = [
            (
                1,
                "17bce35bdf69743c529ed9eb20e0ae99",
                "95e0e48262b3edfe04479485c755b646",
            ),
            (
                2,
                "f4dd417327db7a9bd194dfbe42d45771",
                "882a02c315362b60765f100068b33a1c",
            ),
            (
                64,
                "5f0ba18c53cd8fbc0000000000000001",
                "f0b1944bfd71a97f0000000000000000",
            ),
        ];
        for (i, a, c) in cases {
            assert_eq!(table[i], (hex128(a), hex128(c)), "a_{i} / c_{i}");
        }
    }

    #[test]
    fn lcg_has_period_two_to_the_128() {
        // f^(2^128) is the identity: applying a_127 twice gives back x.
        let (a, c) = skip_table()[127];
        let x = 0x1234_5678_9abc_def0_u128;
        let once = a.wrapping_mul(x).wrapping_add(c);
        assert_eq!(a.wrapping_mul(once).wrapping_add(c), x);
        assert_eq!(lcg_value(u128::MAX).wrapping_mul(A).wrapping_add(C), 0);
    }

    #[test]
    fn skew_tables_match_spec() {
        let tables = skew_tables();
        let sb: Vec<u8> = tables.binary.concat();
        let sa: Vec<u8> = tables.ascii.concat();
        assert_eq!(
            hex(&Sha256::digest(&sb)),
            "066c48216a118afcd0d61231ba6723969b3c7bb1cca5a2b09d65d94a70e957e4"
        );
        assert_eq!(
            hex(&Sha256::digest(&sa)),
            "552e9fee2bbb4bb349031f01c4e4d5ddc737c104805d8b136c5a6e0466067093"
        );
        let sb_rows = [
            "4a696d477261",
            "95e0e48262b3",
            "45979353dbed",
            "882a02c31536",
        ];
        for (i, row) in sb_rows.iter().enumerate() {
            assert_eq!(hex(&tables.binary[i]), *row, "SB[{i}]");
        }
        let sa_rows: [&[u8]; 4] = [b"AsfAGH", b"~sHd0j", b"uI^EYm", b"Q)JN)R"];
        for (i, row) in sa_rows.iter().enumerate() {
            assert_eq!(&tables.ascii[i], row, "SA[{i}]");
        }
        assert_eq!(hex(&tables.binary[128]), "e1dc46b645c4");
        assert_eq!(&tables.ascii[128], b"12NSK|");
    }

    #[test]
    fn skew_index_boundaries() {
        let cases: [(u128, usize); 14] = [
            (0, 0),
            (1, 1),
            (2, 2),
            (3, 2),
            (4, 3),
            (7, 3),
            (8, 4),
            (15, 4),
            (1000, 10),
            ((1 << 60) - 1, 60),
            (1 << 60, 64),
            (u64::MAX as u128, 64),
            (1 << 64, 65),
            ((1 << 124) - 1, 124),
        ];
        for (n, expected) in cases {
            assert_eq!(skew_index(n), expected, "skew_index({n})");
        }
        assert_eq!(skew_index(1 << 124), 128);
        assert_eq!(skew_index(u128::MAX), 128);
    }

    #[test]
    fn binary_record_zero_matches_spec() {
        let rec = record(Format::Binary, false, 0);
        assert_eq!(
            hex(&rec),
            "4a696d4772617952495065080060836b392cd58b8f5e55961855e79b87f02283\
             a466b6aab1f9e0cacf1e26b3292afd1064bb18b56ac07d6f656b1d2f430d57bd\
             e7e47d81f36a6dd267948bbc2397bfe28c334e4ad82b8e70166293cfaa0116bf\
             da3bb1ab"
        );
        assert_eq!(crc32fast::hash(&rec), 0x9ea5_93a0);
        assert_eq!(
            hex(&record(Format::Binary, false, 1)[..10]),
            "95e0e48262b3edfe0447"
        );
        assert_eq!(
            hex(&record(Format::Binary, false, 2)[..10]),
            "45979353dbed5329365c"
        );
        assert_eq!(
            hex(&record(Format::Binary, false, 123_456_789)[..20]),
            "e972efd66ef4fd6127cc76ce1c4a70d0c4618ca9"
        );
    }

    #[test]
    fn ascii_records_match_spec() {
        assert_eq!(
            record(Format::Ascii, false, 0),
            b"AsfAGHM5om  00000000000000000000000000000000  \
              0000222200002222000022220000222200002222000000001111\r\n"
        );
        assert_eq!(
            record(Format::Ascii, false, 1),
            b"~sHd0jDv6X  00000000000000000000000000000001  \
              77779999444488885555CCCC777755555555BBBB666644446666\r\n"
        );
    }

    #[test]
    fn skew_examples_match_spec() {
        let binary = [
            (6, "10431af6a0d847b8c55f", "88031af6a0d847b8c55f"),
            (8, "44f78c8b40bf1ce19a82", "5c90ab3880bf1ce19a82"),
            (9, "84c0992f3b94fd25acb0", "5c90ab38ae52fd25acb0"),
        ];
        for (n, plain, skewed) in binary {
            assert_eq!(
                hex(&record(Format::Binary, false, n)[..10]),
                plain,
                "record {n}"
            );
            let skewed_rec = record(Format::Binary, true, n);
            assert_eq!(hex(&skewed_rec[..10]), skewed, "skewed record {n}");
            // Skew touches only the key.
            assert_eq!(&skewed_rec[10..], &record(Format::Binary, false, n)[10..]);
        }
        let ascii: [(u128, &[u8], &[u8]); 2] = [
            (4, b"o4FoBkqERn", b"Q)FoBkqERn"),
            (11, b"GLSnlm0*P*", b"o4FoBm0*P*"),
        ];
        for (n, plain, skewed) in ascii {
            assert_eq!(&record(Format::Ascii, false, n)[..10], plain, "record {n}");
            assert_eq!(
                &record(Format::Ascii, true, n)[..10],
                skewed,
                "skewed record {n}"
            );
        }
    }

    #[test]
    fn blocks_agree_with_single_records_across_wrap() {
        for format in [Format::Binary, Format::Ascii] {
            for skew in [false, true] {
                let spec = GenSpec {
                    format,
                    skew,
                    start: u128::MAX - 2,
                    records: 6,
                };
                let mut block = vec![0u8; 6 * RECORD_LEN];
                generate_block(&spec, 0, 6, &mut block);
                for i in 0..6u128 {
                    let one = record(format, skew, (u128::MAX - 2).wrapping_add(i));
                    let at = i as usize * RECORD_LEN;
                    assert_eq!(
                        &block[at..at + RECORD_LEN],
                        &one[..],
                        "{format:?} {skew} +{i}"
                    );
                }
            }
        }
        // The ASCII row id wraps to zero.
        let last = record(Format::Ascii, false, 0u128.wrapping_sub(1));
        assert_eq!(&last[12..44], &[b'F'; 32][..]);
    }

    #[test]
    fn checksum_of_matches_sequential() {
        let spec = GenSpec {
            format: Format::Binary,
            skew: false,
            start: 0,
            records: 1000,
        };
        assert_eq!(checksum_of(&spec).sum_hex(), "1ea6370b955");
        assert_eq!(checksum_of(&spec).records, 1000);
        let empty = GenSpec { records: 0, ..spec };
        assert_eq!(checksum_of(&empty).sum_hex(), "0");
    }

    #[test]
    fn parse_record_count_accepts_suffixes() {
        let cases = [
            ("0", 0),
            ("123", 123),
            ("1k", 1_000),
            ("1K", 1_000),
            ("10M", 10_000_000),
            ("10m", 10_000_000),
            ("2G", 2_000_000_000),
            ("2g", 2_000_000_000),
            ("18446744073709551615", u64::MAX),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_record_count(input).ok(), Some(expected), "{input}");
        }
    }

    #[test]
    fn parse_record_count_rejects_garbage() {
        for input in [
            "", "k", "1e6", "1.5M", "-1", "+1", " 1", "1 ", "10MB", "1T", "0x10", "１",
        ] {
            let err = parse_record_count(input).expect_err(input);
            assert!(err.is_bad_input());
            let message = err.to_string();
            assert!(message.starts_with("invalid record count"), "{message}");
            assert!(!message.ends_with('.'), "{message}");
        }
        let err = parse_record_count("18446744073709551616").expect_err("overflow");
        assert!(err.to_string().contains("64 bits"), "{err}");
        assert!(parse_record_count("18446744073709552k").is_err());
    }
}
