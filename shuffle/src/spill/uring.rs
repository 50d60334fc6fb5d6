//! The io_uring backend of the segment file writer: one ring per file, on the writer's I/O
//! thread, with a few writes in flight (the writer's queue depth, 2–4).
//!
//! # Contract (what makes the `unsafe` here sound)
//!
//! A submitted write lets the kernel read the buffer's memory until its completion is reaped.
//! So:
//! 1. every buffer with a write in flight sits in `Worker::slots` and is neither dropped,
//!    reused nor handed back until the completion carrying its slot number has been reaped
//!    (its heap memory does not move when the `AlignedBuf` value moves);
//! 2. `Worker` drains the ring in `Drop` (on return, error or panic) before its buffers are
//!    freed, and if the ring cannot be drained, it leaks the buffers instead of freeing them;
//! 3. the pointer and length of every submission lie inside that buffer's filled bytes
//!    (`[done, to)` with `to <= len`).
//!
//! The file descriptors need no such care: the kernel holds its own reference to the file of
//! an in-flight request.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::io;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use io_uring::{opcode, types, IoUring};
use tracing::debug;

use super::aligned::AlignedBuf;
use super::io::{write_unaligned_ends, Busy, Completion, Target, WriteRequest};
use super::SpillError;

/// Whether this process can set up an io_uring; tried once, the answer is kept.
pub(crate) fn probe() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            IoUring::new(4).map(drop).map_err(|e| {
                debug!(error = %e, "io_uring is not available; spill files use pwrite");
                e.to_string()
            })
        })
        .clone()
}

/// A ring with room for `queue_depth` writes.
pub(crate) fn ring(queue_depth: usize) -> io::Result<IoUring> {
    IoUring::new(queue_depth.next_power_of_two() as u32)
}

/// One write in flight.
struct InFlight {
    buf: AlignedBuf,
    /// File offset of the buffer's first byte.
    offset: u64,
    /// The buffer's bytes this write covers: `[from, to)`.
    from: usize,
    to: usize,
    /// End of the bytes already written (a short write is continued from here).
    done: usize,
    /// Whether this attempt goes through the direct handle.
    direct: bool,
}

struct Worker {
    // Resources. `ring` must be drained before `slots` is dropped (see the contract).
    ring: IoUring,
    slots: Vec<Option<InFlight>>,
    target: Target,
    // State.
    in_flight: usize,
    reaped: Vec<(u64, i32)>,
    busy: Busy,
    /// When the worker last went from no write in flight to one.
    busy_since: Option<Instant>,
}

/// Serves write requests until the writer hangs up, then waits for the writes in flight.
pub(crate) fn run(
    ring: IoUring,
    target: Target,
    queue_depth: usize,
    requests: Receiver<WriteRequest>,
    completions: Sender<Completion>,
    busy: Busy,
) {
    let mut worker = Worker {
        ring,
        slots: (0..queue_depth.max(1)).map(|_| None).collect(),
        target,
        in_flight: 0,
        reaped: Vec::with_capacity(queue_depth),
        busy,
        busy_since: None,
    };
    let mut open = true;
    loop {
        while open && worker.in_flight < worker.slots.len() {
            let request = if worker.in_flight == 0 {
                requests.recv().ok()
            } else {
                match requests.try_recv() {
                    Ok(request) => Some(request),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => None,
                }
            };
            match request {
                Some(request) => worker.start(request, &completions),
                None => open = false,
            }
        }
        if worker.in_flight == 0 {
            if open {
                continue;
            }
            return;
        }
        match worker.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
            Err(e) => {
                // The state of the writes in flight is unknown: report them failed and keep
                // their buffers (`Drop` drains or leaks them).
                for slot in worker.slots.iter().flatten() {
                    let _ = completions.send(Completion {
                        buf: None,
                        result: Err(SpillError::Io {
                            path: worker.target.path.clone(),
                            operation: "io_uring submit",
                            offset: slot.offset,
                            source: Arc::new(io::Error::new(e.kind(), e.to_string())),
                        }),
                    });
                }
                return;
            }
        }
        worker.reap(&completions);
    }
}

impl Worker {
    fn start(&mut self, request: WriteRequest, completions: &Sender<Completion>) {
        let slot = self
            .slots
            .iter()
            .position(Option::is_none)
            .expect("the caller starts a write only while a slot is free");
        if self.in_flight == 0 {
            self.busy_since = Some(Instant::now());
        }
        let body = write_unaligned_ends(&self.target, &request);
        let (from, to, direct, result) = match body {
            Ok(body) => (body.from, body.to, body.direct, Ok(())),
            Err(e) => (0, 0, false, Err(e)),
        };
        self.slots[slot] = Some(InFlight {
            buf: request.buf,
            offset: request.offset,
            from,
            to,
            done: from,
            direct,
        });
        self.in_flight += 1;
        if from < to {
            self.submit(slot, completions);
        } else {
            self.finish(slot, result, completions);
        }
    }

    /// Queues the unwritten rest of `slot`'s buffer; on failure, completes it with the error.
    fn submit(&mut self, slot: usize, completions: &Sender<Completion>) {
        let write = self.slots[slot]
            .as_ref()
            .expect("submit is called on a busy slot");
        let fd = match (&self.target.direct, write.direct) {
            (Some(direct), true) => direct.as_raw_fd(),
            _ => self.target.buffered.as_raw_fd(),
        };
        let rest = &write.buf.as_slice()[write.done..write.to];
        let entry = opcode::Write::new(types::Fd(fd), rest.as_ptr(), rest.len() as u32)
            .offset(write.offset + write.done as u64)
            .build()
            .user_data(slot as u64);
        // SAFETY: `rest` lies inside the filled bytes of the buffer in `slots[slot]`, which
        // stays there, unmoved and unfreed, until this entry's completion is reaped (contract
        // points 1–3).
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            let what = "the io_uring submission queue is full although a slot was free";
            self.finish(
                slot,
                Err(SpillError::Internal {
                    path: self.target.path.clone(),
                    what: what.into(),
                }),
                completions,
            );
        }
    }

    fn reap(&mut self, completions: &Sender<Completion>) {
        let mut reaped = std::mem::take(&mut self.reaped);
        reaped.extend(
            self.ring
                .completion()
                .map(|cqe| (cqe.user_data(), cqe.result())),
        );
        for &(slot, result) in &reaped {
            self.completed(slot as usize, result, completions);
        }
        reaped.clear();
        self.reaped = reaped;
    }

    /// Handles the completion of one attempt: done, continue a short write, retry, or fail.
    fn completed(&mut self, slot: usize, result: i32, completions: &Sender<Completion>) {
        let Some(write) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let len = write.to;
        if result < 0 {
            let error = io::Error::from_raw_os_error(-result);
            match -result {
                libc::EINTR | libc::EAGAIN => self.submit(slot, completions),
                libc::EINVAL if write.direct => {
                    write.direct = false;
                    write.done = write.from;
                    self.target.refuse_direct(&error);
                    self.submit(slot, completions);
                }
                _ => {
                    let at = write.offset + write.done as u64;
                    let failed =
                        SpillError::write(self.target.path.clone(), at, len - write.done, error);
                    self.finish(slot, Err(failed), completions);
                }
            }
        } else if result == 0 {
            let at = write.offset + write.done as u64;
            let error = io::Error::new(io::ErrorKind::WriteZero, "the kernel wrote 0 bytes");
            let failed = SpillError::write(self.target.path.clone(), at, len - write.done, error);
            self.finish(slot, Err(failed), completions);
        } else {
            write.done += result as usize;
            if write.done >= len {
                self.finish(slot, Ok(()), completions);
            } else {
                // The rest may be unaligned now, so it goes through the page cache.
                write.direct = false;
                self.submit(slot, completions);
            }
        }
    }

    /// Hands `slot`'s buffer back; only called once its last attempt completed (or was never
    /// queued).
    fn finish(
        &mut self,
        slot: usize,
        result: Result<(), SpillError>,
        completions: &Sender<Completion>,
    ) {
        if let Some(write) = self.slots[slot].take() {
            self.in_flight -= 1;
            if self.in_flight == 0 {
                if let Some(since) = self.busy_since.take() {
                    self.busy.add(since);
                }
            }
            let _ = completions.send(Completion {
                buf: Some(write.buf),
                result,
            });
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        while self.in_flight > 0 {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => {
                    debug!(path = %self.target.path.display(), error = %e, "cannot drain io_uring; leaking its buffers");
                    for write in self.slots.iter_mut().filter_map(Option::take) {
                        std::mem::forget(write.buf);
                    }
                    return;
                }
            }
            let reaped: Vec<u64> = self.ring.completion().map(|cqe| cqe.user_data()).collect();
            for slot in reaped {
                if self
                    .slots
                    .get_mut(slot as usize)
                    .and_then(Option::take)
                    .is_some()
                {
                    self.in_flight -= 1;
                }
            }
        }
    }
}
