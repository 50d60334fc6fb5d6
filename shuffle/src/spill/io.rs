//! The I/O thread behind a segment file writer, and its `pwrite` backend.
//!
//! The writer fills aligned buffers and hands each full one to a dedicated thread, so
//! encoding and compressing the next buffer overlaps with writing this one.
//! The thread answers every request with a [`Completion`] that returns the buffer for reuse.
//!
//! ```text
//!  writer (caller's thread)                 I/O thread
//!  fill buf ──► WriteRequest{buf, offset} ──► pwrite  or  io_uring (2–4 in flight)
//!  reuse buf ◄── Completion{buf, result} ◄──┘
//! ```
//!
//! A buffer is owned by exactly one side at a time, and moves only through the channels:
//!
//! | buffer state | owner | where |
//! |---|---|---|
//! | being filled | writer | `Sink::current` |
//! | free | writer | `Sink::free` |
//! | queued | channel | `WriteRequest` |
//! | being written | I/O thread | the `pwrite` call, or an io_uring slot until its completion |
//! | done | channel | `Completion` |
//!
//! Direct I/O falls back to the page cache on the first `EINVAL` (a file system that accepts
//! `O_DIRECT` at open but not for this write), and stays there for the rest of the file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use tracing::debug;

use super::aligned::AlignedBuf;
use super::uring;
use super::SpillError;

/// The file being written, as the I/O thread sees it.
pub(crate) struct Target {
    pub(crate) path: PathBuf,
    /// Always open; used when there is no direct handle or direct I/O was refused.
    pub(crate) buffered: File,
    /// Open with `O_DIRECT` when asked for and accepted.
    pub(crate) direct: Option<File>,
}

impl Target {
    /// Stops using direct I/O for this file after the file system refused it.
    pub(crate) fn refuse_direct(&mut self, error: &io::Error) {
        debug!(path = %self.path.display(), %error, "direct I/O refused by a write; writing through the page cache");
        self.direct = None;
    }
}

/// Write `buf`'s bytes at `offset`.
pub(crate) struct WriteRequest {
    pub(crate) buf: AlignedBuf,
    pub(crate) offset: u64,
}

/// The answer to one [`WriteRequest`].
pub(crate) struct Completion {
    /// The buffer, for reuse; `None` only when the kernel may still read it (io_uring failed
    /// as a whole), in which case the backend keeps or leaks it.
    pub(crate) buf: Option<AlignedBuf>,
    pub(crate) result: Result<(), SpillError>,
}

/// Which backend the thread runs.
pub(crate) enum Backend {
    Pwrite,
    Uring(Box<io_uring::IoUring>),
}

/// A running I/O thread; dropping it waits for every accepted write to finish.
pub(crate) struct IoThread {
    requests: Option<SyncSender<WriteRequest>>,
    completions: Receiver<Completion>,
    thread: Option<JoinHandle<()>>,
}

impl IoThread {
    pub(crate) fn spawn(
        backend: Backend,
        target: Target,
        queue_depth: usize,
    ) -> Result<Self, SpillError> {
        let (requests, requests_rx) = sync_channel::<WriteRequest>(queue_depth);
        let (completions_tx, completions) = channel::<Completion>();
        let path = target.path.clone();
        let thread = std::thread::Builder::new()
            .name("millrace-spill-io".into())
            .spawn(move || match backend {
                Backend::Pwrite => run_pwrite(target, requests_rx, completions_tx),
                Backend::Uring(ring) => {
                    uring::run(*ring, target, queue_depth, requests_rx, completions_tx)
                }
            })
            .map_err(|e| SpillError::Io {
                path,
                operation: "start the I/O thread",
                offset: 0,
                source: Arc::new(e),
            })?;
        Ok(Self {
            requests: Some(requests),
            completions,
            thread: Some(thread),
        })
    }

    /// Queues a write; gives the request back if the thread is gone.
    pub(crate) fn submit(&self, request: WriteRequest) -> Result<(), WriteRequest> {
        match &self.requests {
            Some(requests) => requests.send(request).map_err(|returned| returned.0),
            None => Err(request),
        }
    }

    /// Waits for the next completion; `None` if the thread is gone.
    pub(crate) fn wait(&self) -> Option<Completion> {
        self.completions.recv().ok()
    }

    /// The next completion if one is ready.
    pub(crate) fn poll(&self) -> Option<Completion> {
        self.completions.try_recv().ok()
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run_pwrite(
    mut target: Target,
    requests: Receiver<WriteRequest>,
    completions: Sender<Completion>,
) {
    for request in requests {
        let result = pwrite(&mut target, request.buf.as_slice(), request.offset);
        let completion = Completion {
            buf: Some(request.buf),
            result,
        };
        if completions.send(completion).is_err() {
            return;
        }
    }
}

fn pwrite(target: &mut Target, bytes: &[u8], offset: u64) -> Result<(), SpillError> {
    if let Some(direct) = &target.direct {
        match direct.write_all_at(bytes, offset) {
            Ok(()) => return Ok(()),
            // Rewriting the whole buffer is fine: nothing of it is readable before its
            // segment is sealed.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => target.refuse_direct(&e),
            Err(e) => {
                return Err(SpillError::write(
                    target.path.clone(),
                    offset,
                    bytes.len(),
                    e,
                ))
            }
        }
    }
    target
        .buffered
        .write_all_at(bytes, offset)
        .map_err(|e| SpillError::write(target.path.clone(), offset, bytes.len(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::os::unix::fs::OpenOptionsExt;

    /// A direct write the file system refuses with `EINVAL` (here: a length that is not a
    /// multiple of the sector size) is redone through the page cache, with either backend.
    #[test]
    fn refused_direct_write_falls_back_to_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let mut backends = vec![("pwrite", None)];
        match uring::ring(2) {
            Ok(ring) => backends.push(("uring", Some(ring))),
            Err(e) => eprintln!("io_uring unavailable ({e}); testing pwrite only"),
        }
        for (name, ring) in backends {
            let path = dir.path().join(name);
            let buffered = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .unwrap();
            let Ok(direct) = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(&path)
            else {
                eprintln!(
                    "no O_DIRECT in {}; nothing to fall back from",
                    dir.path().display()
                );
                return;
            };
            let target = Target {
                path: path.clone(),
                buffered,
                direct: Some(direct),
            };
            let backend = match ring {
                Some(ring) => Backend::Uring(Box::new(ring)),
                None => Backend::Pwrite,
            };
            let io = IoThread::spawn(backend, target, 2).unwrap();
            let mut buf = AlignedBuf::new(4096);
            buf.fill_from(&[42u8; 100]);
            assert!(io.submit(WriteRequest { buf, offset: 4096 }).is_ok());
            let completion = io.wait().unwrap();
            completion.result.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(completion.buf.unwrap().as_slice(), &[42u8; 100][..]);
            drop(io);
            let written = std::fs::read(&path).unwrap();
            assert_eq!(written.len(), 4196, "{name}");
            assert_eq!(&written[4096..], &[42u8; 100][..], "{name}");
        }
    }
}
