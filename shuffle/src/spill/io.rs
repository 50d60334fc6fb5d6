//! The I/O thread behind [`super::DirectWriter`] (spill files and job output alike), and its
//! `pwrite` backend.
//!
//! The writer fills aligned buffers and hands each full one to a dedicated thread, so
//! filling the next buffer overlaps with writing this one.
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
//! A request may start and end anywhere (a range of a file shared with neighbours): its
//! partial first and last pages go through the page cache, its aligned middle directly.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::debug;

use super::aligned::{AlignedBuf, ALIGN};
use super::uring;
use super::SpillError;

/// The file being written, as the I/O thread sees it.
pub(crate) struct Target {
    pub(crate) path: PathBuf,
    /// Always open; used when there is no direct handle or direct I/O was refused.
    pub(crate) buffered: Arc<File>,
    /// Open with `O_DIRECT` when asked for and accepted.
    pub(crate) direct: Option<Arc<File>>,
    /// Tests only: send unaligned requests to the direct handle whole, so that the file
    /// system refuses them and the fallback runs.
    #[cfg(test)]
    pub(crate) unaligned_direct: bool,
}

impl Target {
    /// Stops using direct I/O for this file after the file system refused it.
    pub(crate) fn refuse_direct(&mut self, error: &io::Error) {
        debug!(path = %self.path.display(), %error, "direct I/O refused by a write; writing through the page cache");
        self.direct = None;
    }
}

/// Write `buf`'s bytes from `skip` on at `offset + skip` (`offset` is aligned; the first
/// `skip` bytes belong to a neighbour range and are not written).
pub(crate) struct WriteRequest {
    pub(crate) buf: AlignedBuf,
    pub(crate) offset: u64,
    pub(crate) skip: usize,
}

/// Which bytes of a request the backend still writes, and through which handle.
pub(crate) struct Body {
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) direct: bool,
}

/// Writes the partial pages at both ends of `request` through the page cache when the rest
/// goes directly, and says what is left: the aligned middle (direct) or everything (buffered).
pub(crate) fn write_unaligned_ends(
    target: &Target,
    request: &WriteRequest,
) -> Result<Body, SpillError> {
    let (from, to) = (request.skip, request.buf.len());
    #[cfg(test)]
    if target.unaligned_direct && target.direct.is_some() {
        return Ok(Body {
            from,
            to,
            direct: true,
        });
    }
    let (body_from, body_to) = (from.next_multiple_of(ALIGN), to / ALIGN * ALIGN);
    if target.direct.is_none() || body_from >= body_to {
        return Ok(Body {
            from,
            to,
            direct: false,
        });
    }
    let bytes = request.buf.as_slice();
    for (a, b) in [(from, body_from), (body_to, to)] {
        if a < b {
            let at = request.offset + a as u64;
            target
                .buffered
                .write_all_at(&bytes[a..b], at)
                .map_err(|e| SpillError::write(target.path.clone(), at, b - a, e))?;
        }
    }
    Ok(Body {
        from: body_from,
        to: body_to,
        direct: true,
    })
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

/// Time the I/O thread had writes in progress, in nanoseconds (shared with its owner).
#[derive(Clone, Default)]
pub(crate) struct Busy(Arc<AtomicU64>);

impl Busy {
    pub(crate) fn add(&self, since: Instant) {
        self.0
            .fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

/// A running I/O thread; dropping it waits for every accepted write to finish.
pub(crate) struct IoThread {
    requests: Option<SyncSender<WriteRequest>>,
    completions: Receiver<Completion>,
    thread: Option<JoinHandle<()>>,
    busy: Busy,
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
        let busy = Busy::default();
        let thread_busy = busy.clone();
        let thread = std::thread::Builder::new()
            .name("millrace-write".into())
            .spawn(move || match backend {
                Backend::Pwrite => run_pwrite(target, requests_rx, completions_tx, thread_busy),
                Backend::Uring(ring) => uring::run(
                    *ring,
                    target,
                    queue_depth,
                    requests_rx,
                    completions_tx,
                    thread_busy,
                ),
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
            busy,
        })
    }

    /// Time the thread had writes in progress so far.
    pub(crate) fn busy(&self) -> Duration {
        self.busy.get()
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
    busy: Busy,
) {
    for request in requests {
        let started = Instant::now();
        let result = write_unaligned_ends(&target, &request).and_then(|body| {
            let bytes = &request.buf.as_slice()[body.from..body.to];
            let at = request.offset + body.from as u64;
            pwrite(&mut target, bytes, at, body.direct)
        });
        busy.add(started);
        let completion = Completion {
            buf: Some(request.buf),
            result,
        };
        if completions.send(completion).is_err() {
            return;
        }
    }
}

fn pwrite(target: &mut Target, bytes: &[u8], offset: u64, direct: bool) -> Result<(), SpillError> {
    if let Some(direct) = target.direct.as_ref().filter(|_| direct) {
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
                buffered: Arc::new(buffered),
                direct: Some(Arc::new(direct)),
                unaligned_direct: true,
            };
            let backend = match ring {
                Some(ring) => Backend::Uring(Box::new(ring)),
                None => Backend::Pwrite,
            };
            let io = IoThread::spawn(backend, target, 2).unwrap();
            let mut buf = AlignedBuf::new(4096);
            buf.fill_from(&[42u8; 100]);
            assert!(io
                .submit(WriteRequest {
                    buf,
                    offset: 4096,
                    skip: 0
                })
                .is_ok());
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
