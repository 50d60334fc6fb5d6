//! The machine's floor for a sort: copy the input to a new output through the very I/O path a
//! sort uses (mapped input, chunked direct writes at final offsets, fsync, rename), so a sort's
//! time can be reported as a ratio to it.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::output::{IoMode, OutputTarget};
use crate::terasort::input::{map_input, open_input};
use crate::EngineError;

/// What copying took.
#[derive(Clone, Copy, Debug)]
pub struct CopyReport {
    pub bytes: u64,
    pub wall: Duration,
}

/// Copies `input` to `output` with `writers` parallel range writers (like `writers`
/// reducers), `chunk_bytes` per write; the output is durable when this returns.
pub fn copy_file(
    input: &Path,
    output: &Path,
    io: IoMode,
    writers: usize,
    chunk_bytes: usize,
) -> Result<CopyReport, EngineError> {
    let started = Instant::now();
    let (file, size) = open_input(input)?;
    let target = OutputTarget::create(output, input, size, None, io)?;
    let map = map_input(&file, size, input)?;
    let writers = writers.max(1) as u64;
    let per_writer = size.div_ceil(writers);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let (start, end) = ((w * per_writer).min(size), ((w + 1) * per_writer).min(size));
                let file = target.file(0).clone();
                let map = &map;
                scope.spawn(move || -> Result<(), EngineError> {
                    let mut writer = file.range_writer(start, end - start, chunk_bytes);
                    for piece in map[start as usize..end as usize].chunks(1 << 20) {
                        writer.write(piece)?;
                    }
                    writer.finish().map(|_| ())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join().unwrap_or_else(|_| {
                Err(EngineError::Internal {
                    what: "a copy thread panicked".into(),
                })
            })
        })
    })?;
    target.commit()?;
    Ok(CopyReport {
        bytes: size,
        wall: started.elapsed(),
    })
}

/// Peak resident memory of this process so far (`VmHWM`), in bytes; `None` off Linux.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_is_exact_and_durable() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        let bytes: Vec<u8> = (0..1_234_500u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&input, &bytes).unwrap();
        let output = dir.path().join("out");
        let report = copy_file(&input, &output, IoMode::Auto, 2, 1 << 16).unwrap();
        assert_eq!(report.bytes, bytes.len() as u64);
        assert_eq!(std::fs::read(&output).unwrap(), bytes);
        assert!(peak_rss_bytes().unwrap() > 0);
    }
}
