//! [`DirectWriter`]: how Millrace writes large files — spill segments and job output alike.
//!
//! A writer owns a byte range of one file from a start offset on and appends to it through
//! 4 KiB-aligned buffers whose file offsets are aligned too. Each full buffer goes to an I/O
//! thread (io_uring or `pwrite`, see [`IoEngine`]) while the caller fills the next one, so at
//! most `queue_depth + 1` buffers exist and the caller waits only when the disk is slower.
//!
//! ```text
//! file:   |..head..|=========== aligned body (O_DIRECT) ===========|..tail..|
//!          buffered pwrite                                          buffered pwrite
//! ```
//! The aligned middle of every write goes through the `O_DIRECT` handle when there is one;
//! the partial pages at either end of the range (which a neighbour range may share) go
//! through the page cache. A file system that refuses a direct write (`EINVAL`) gets the
//! rest of the file through the page cache.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::debug;

use super::aligned::{AlignedBuf, ALIGN};
use super::io::{Backend, Completion, IoThread, Target, WriteRequest};
use super::{uring, SpillError};

/// Which system interface writes the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoEngine {
    /// io_uring for files open with `O_DIRECT` when this process can set one up (probed
    /// once), else `pwrite`.
    ///
    /// Measured on ext4 (virtual disk, kernel 6.18, 2 GB of 100-byte records in 4 MiB
    /// writes, six runs each): with `O_DIRECT` the two are level (io_uring 1.7–2.6 GB/s,
    /// `pwrite` 1.8–2.1 GB/s); through the page cache io_uring was never faster and in some
    /// runs half as fast (0.47–0.94 GB/s against 0.56–1.26 GB/s), so buffered files use
    /// `pwrite`.
    #[default]
    Auto,
    /// io_uring or fail with [`SpillError::UringUnavailable`].
    Uring,
    /// `pwrite` on a dedicated thread.
    Pwrite,
}

/// A file to write: a normal handle and, when the file system allows it, an `O_DIRECT` one
/// on the same file.
#[derive(Clone, Debug)]
pub struct DirectFile {
    /// Named in errors.
    pub path: PathBuf,
    pub buffered: Arc<File>,
    pub direct: Option<Arc<File>>,
}

impl DirectFile {
    /// `buffered`, plus an `O_DIRECT` handle on the same file when `want_direct` — reopened
    /// through `/proc/self/fd`, so by identity, never by a path someone could swap. Returns
    /// why there is no direct handle, if there is none although one was wanted.
    pub fn new(
        path: &Path,
        buffered: Arc<File>,
        want_direct: bool,
    ) -> (Self, Option<std::io::Error>) {
        let (direct, refused) = if want_direct {
            match OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(format!("/proc/self/fd/{}", buffered.as_raw_fd()))
            {
                Ok(file) => (Some(Arc::new(file)), None),
                Err(error) => {
                    debug!(path = %path.display(), %error, "no direct I/O for this file; writing through the page cache");
                    (None, Some(error))
                }
            }
        } else {
            (None, None)
        };
        let file = Self {
            path: path.to_path_buf(),
            buffered,
            direct,
        };
        (file, refused)
    }
}

/// Appends to one file from a start offset through aligned buffers and an I/O thread; see
/// the module documentation.
///
/// After an error the writer's state is unknown: the caller reports it and stops.
/// Dropping the writer waits for the writes in flight.
pub struct DirectWriter {
    // Configuration.
    buffer_bytes: usize,
    max_buffers: usize,
    engine: IoEngine,
    direct: bool,
    // Buffers.
    current: AlignedBuf,
    /// File offset of `current`'s first byte (always 4 KiB-aligned).
    current_offset: u64,
    /// Bytes at the start of `current` that are not ours to write.
    current_skip: usize,
    free: Vec<AlignedBuf>,
    allocated: usize,
    in_flight: usize,
    // Resources.
    io: IoThread,
    path: PathBuf,
    waited: Duration,
}

impl DirectWriter {
    /// A writer of `file` from byte `start` on, with buffers of `buffer_bytes` (rounded to
    /// 4 KiB, at most 1 GiB) and `queue_depth` writes in flight (1–4).
    pub fn new(
        file: DirectFile,
        start: u64,
        io: IoEngine,
        buffer_bytes: usize,
        queue_depth: usize,
    ) -> Result<Self, SpillError> {
        let queue_depth = queue_depth.clamp(1, 4);
        let direct = file.direct.is_some();
        let (backend, engine) = backend(io, queue_depth, &file.path, direct)?;
        let path = file.path.clone();
        let target = Target {
            path: file.path,
            buffered: file.buffered,
            direct: file.direct,
            #[cfg(test)]
            unaligned_direct: false,
        };
        // Lengths of single writes must fit the u32 of an io_uring submission.
        let buffer_bytes = buffer_bytes.clamp(ALIGN, 1 << 30).next_multiple_of(ALIGN);
        let io = IoThread::spawn(backend, target, queue_depth)?;
        let mut writer = Self {
            buffer_bytes,
            max_buffers: queue_depth + 1,
            engine,
            direct,
            current: AlignedBuf::new(buffer_bytes),
            current_offset: 0,
            current_skip: 0,
            free: Vec::new(),
            allocated: 1,
            in_flight: 0,
            io,
            path,
            waited: Duration::ZERO,
        };
        writer.start_buffer_at(start);
        Ok(writer)
    }

    /// The engine in use ([`IoEngine::Uring`] or [`IoEngine::Pwrite`], never `Auto`).
    pub fn io_engine(&self) -> IoEngine {
        self.engine
    }

    /// Whether the file has a direct handle (a later write may still fall back).
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// File offset of the next byte.
    pub fn position(&self) -> u64 {
        self.current_offset + self.current.len() as u64
    }

    /// Time the caller waited for a free buffer or for a flush (the disk was the bottleneck).
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// Time the I/O thread had writes in progress.
    pub fn busy(&self) -> Duration {
        self.io.busy()
    }

    /// Appends `bytes` at [`Self::position`].
    pub fn write(&mut self, mut bytes: &[u8]) -> Result<(), SpillError> {
        while !bytes.is_empty() {
            let n = self.current.fill_from(bytes);
            bytes = &bytes[n..];
            if self.current.is_full() {
                self.submit_current()?;
            }
        }
        Ok(())
    }

    /// Zero-pads to the next 4 KiB boundary, writes everything and waits for it (the next
    /// byte then starts a fresh page, as segment files need).
    pub fn flush_padded(&mut self) -> Result<(), SpillError> {
        if self.current.len() > self.current_skip {
            self.current.pad_to_align();
        }
        self.flush()
    }

    /// Writes everything appended so far and waits for it; later appends continue at
    /// [`Self::position`], even in the middle of a page.
    pub fn flush(&mut self) -> Result<(), SpillError> {
        if self.current.len() > self.current_skip {
            self.submit_current()?;
        }
        let started = Instant::now();
        while self.in_flight > 0 {
            self.wait_one()?;
        }
        self.waited += started.elapsed();
        Ok(())
    }

    /// Sends the current buffer to the I/O thread and continues in a free one.
    fn submit_current(&mut self) -> Result<(), SpillError> {
        let full = std::mem::replace(&mut self.current, AlignedBuf::empty());
        let (offset, skip) = (self.current_offset, self.current_skip);
        let end = offset + full.len() as u64;
        let request = WriteRequest {
            buf: full,
            offset,
            skip,
        };
        if self.io.submit(request).is_err() {
            return Err(self.thread_gone());
        }
        self.in_flight += 1;
        while let Some(completion) = self.io.poll() {
            self.completed(completion)?;
        }
        self.current = match self.free.pop() {
            Some(buf) => buf,
            None if self.allocated < self.max_buffers => {
                self.allocated += 1;
                AlignedBuf::new(self.buffer_bytes)
            }
            None => {
                let started = Instant::now();
                while self.free.is_empty() {
                    self.wait_one()?;
                }
                self.waited += started.elapsed();
                self.free
                    .pop()
                    .expect("the loop ends when a buffer is free")
            }
        };
        self.start_buffer_at(end);
        Ok(())
    }

    /// Points the (empty) current buffer at file offset `at`.
    fn start_buffer_at(&mut self, at: u64) {
        self.current_offset = at / ALIGN as u64 * ALIGN as u64;
        self.current_skip = (at - self.current_offset) as usize;
        self.current.start_at(self.current_skip);
    }

    fn wait_one(&mut self) -> Result<(), SpillError> {
        match self.io.wait() {
            Some(completion) => self.completed(completion),
            None => Err(self.thread_gone()),
        }
    }

    fn completed(&mut self, completion: Completion) -> Result<(), SpillError> {
        self.in_flight -= 1;
        if let Some(mut buf) = completion.buf {
            buf.clear();
            self.free.push(buf);
        }
        completion.result
    }

    fn thread_gone(&self) -> SpillError {
        SpillError::Internal {
            path: self.path.clone(),
            what: "the I/O thread stopped without reporting an error".into(),
        }
    }
}

/// Picks the backend for `requested` (see [`IoEngine::Auto`] for the policy).
fn backend(
    requested: IoEngine,
    queue_depth: usize,
    path: &Path,
    direct: bool,
) -> Result<(Backend, IoEngine), SpillError> {
    match requested {
        IoEngine::Pwrite => Ok((Backend::Pwrite, IoEngine::Pwrite)),
        IoEngine::Uring => {
            uring::probe().map_err(|reason| SpillError::UringUnavailable { reason })?;
            let ring = uring::ring(queue_depth).map_err(|e| SpillError::UringUnavailable {
                reason: e.to_string(),
            })?;
            Ok((Backend::Uring(Box::new(ring)), IoEngine::Uring))
        }
        IoEngine::Auto => {
            if !direct || uring::probe().is_err() {
                return Ok((Backend::Pwrite, IoEngine::Pwrite));
            }
            match uring::ring(queue_depth) {
                Ok(ring) => Ok((Backend::Uring(Box::new(ring)), IoEngine::Uring)),
                Err(error) => {
                    debug!(path = %path.display(), %error, "cannot set up an io_uring for this file; using pwrite");
                    Ok((Backend::Pwrite, IoEngine::Pwrite))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(path: &Path, direct: bool) -> DirectFile {
        let buffered = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap();
        DirectFile::new(path, Arc::new(buffered), direct).0
    }

    fn engines() -> Vec<IoEngine> {
        let mut engines = vec![IoEngine::Pwrite];
        if uring::probe().is_ok() {
            engines.push(IoEngine::Uring);
        }
        engines
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Ranges that start and end anywhere, written by one writer each (direct or not,
        /// either engine, flushed at random points and in random pieces), assemble exactly
        /// the intended file.
        #[test]
        fn ranges_written_anywhere_assemble_the_file(
            cuts in prop::collection::btree_set(1usize..60_000, 1..6),
            pieces in 1usize..9_000,
            flush_every in 0usize..5,
            direct: bool,
            uring: bool,
            buffer_kib in 1usize..4,
        ) {
            let engines = engines();
            let engine = engines[usize::from(uring) % engines.len()];
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("out");
            let total = 64_000usize;
            let expected: Vec<u8> = (0..total).map(|i| (i * 7 + i / 4096) as u8).collect();
            let mut bounds = vec![0];
            bounds.extend(cuts.iter().copied());
            bounds.push(total);
            let target = file(&path, direct);
            for range in bounds.windows(2) {
                let (start, end) = (range[0], range[1]);
                let mut writer =
                    DirectWriter::new(target.clone(), start as u64, engine, buffer_kib * ALIGN, 2)
                        .unwrap();
                for (i, piece) in expected[start..end].chunks(pieces).enumerate() {
                    writer.write(piece).unwrap();
                    if flush_every > 0 && i % flush_every == 0 {
                        writer.flush().unwrap();
                    }
                }
                prop_assert_eq!(writer.position(), end as u64);
                writer.flush().unwrap();
            }
            drop(target);
            let written = std::fs::read(&path).unwrap();
            prop_assert!(written == expected, "the file differs from what was written");
        }
    }

    /// Padded flushes start the next byte on a fresh page and zero the padding.
    #[test]
    fn padded_flush_starts_a_fresh_page() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let mut writer = DirectWriter::new(file(&path, true), 0, IoEngine::Auto, 8192, 2).unwrap();
        writer.write(&[1; 100]).unwrap();
        writer.flush_padded().unwrap();
        assert_eq!(writer.position(), ALIGN as u64);
        writer.write(&[2; 10]).unwrap();
        writer.flush_padded().unwrap();
        assert_eq!(writer.position(), 2 * ALIGN as u64);
        drop(writer);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 2 * ALIGN);
        assert_eq!(&bytes[..100], &[1; 100][..]);
        assert!(bytes[100..ALIGN].iter().all(|&b| b == 0));
        assert_eq!(&bytes[ALIGN..ALIGN + 10], &[2; 10][..]);
    }
}
