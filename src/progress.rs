//! Progress a person can read: one bar per command on a terminal (hidden otherwise), counting
//! input records and bytes in decimal MB as the summaries do, labelled with the phase the job
//! is in. Phases whose length is unknown (spooling a stream, sampling, fsync and rename) show
//! a spinner with the elapsed time instead of a bar stuck at 100 % with "eta 0s".

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use engine::record::RECORD_LEN;
use engine::terasort::{Progress, Stage};
use indicatif::{ProgressBar, ProgressStyle};

/// Whether a person watches: standard error is a terminal.
pub fn interactive() -> bool {
    std::io::stderr().is_terminal()
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:>12} [{bar:30}] {msg} {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec} eta {eta}",
    )
    .expect("the template is valid")
    .progress_chars("=> ")
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>12} {spinner} {msg} {elapsed}")
        .expect("the template is valid")
}

/// A bar over `total_bytes` of records labelled `label`, hidden when nobody watches.
pub fn records_bar(label: &str, total_bytes: u64) -> ProgressBar {
    if !interactive() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total_bytes).with_style(bar_style());
    bar.set_prefix(label.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A spinner with the elapsed time for a step of unknown length (an fsync), hidden when
/// nobody watches.
pub fn spinner(label: &str) -> ProgressBar {
    if !interactive() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0).with_style(spinner_style());
    bar.set_prefix(label.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Moves `bar` to `bytes` and shows the records that makes.
pub fn set_records(bar: &ProgressBar, bytes: u64) {
    bar.set_position(bytes);
    let total = bar.length().unwrap_or(0) / RECORD_LEN as u64;
    bar.set_message(format!("{}/{} records", bytes / RECORD_LEN as u64, total));
}

/// Shows a sort's progress until `done` is dropped: the bar follows [`Progress`].
pub fn watch_sort(progress: Arc<Progress>) -> Option<SortWatch> {
    if !interactive() {
        return None;
    }
    let bar = ProgressBar::new(0);
    let watched = bar.clone();
    let thread = std::thread::spawn(move || {
        let mut shown: Option<(&str, bool)> = None;
        while !watched.is_finished() {
            let (label, counted, position, total) = view(&progress);
            if shown != Some((label, counted)) {
                watched.set_style(if counted {
                    bar_style()
                } else {
                    spinner_style()
                });
                watched.set_prefix(label);
                watched.reset_eta();
                watched.reset_elapsed();
                shown = Some((label, counted));
            }
            watched.set_length(total);
            if counted {
                set_records(&watched, position);
            } else {
                watched.set_message(format!("{:.1} MB", position as f64 / 1e6));
                watched.tick();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    Some(SortWatch {
        bar,
        thread: Some(thread),
    })
}

/// What the bar shows now: label, whether it counts toward a known total, position, total.
fn view(progress: &Progress) -> (&'static str, bool, u64, u64) {
    let total = progress.input_bytes.load(Ordering::Relaxed);
    let read = progress.read_bytes.load(Ordering::Relaxed);
    let written = progress.written_bytes.load(Ordering::Relaxed);
    let out_of_core = progress.out_of_core.load(Ordering::Relaxed);
    match progress.stage() {
        Stage::Open => ("open", false, 0, 0),
        Stage::Spool => (
            "read stream",
            false,
            progress.spooled_bytes.load(Ordering::Relaxed),
            0,
        ),
        Stage::Sample => ("sample", false, 0, 0),
        Stage::Run if read < total => (
            if out_of_core {
                "map+spill"
            } else {
                "map+shuffle"
            },
            true,
            read,
            total,
        ),
        Stage::Run if out_of_core => ("merge+write", true, written, total),
        Stage::Run => ("sort+write", true, written, total),
        Stage::Commit => ("fsync+commit", false, total, 0),
    }
}

/// A running progress display; stops and clears when dropped.
pub struct SortWatch {
    bar: ProgressBar,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for SortWatch {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each stage of a sort has its own label; counted phases count input bytes toward the
    /// input size (never past it), so the rate is the summary's MB/s of input.
    #[test]
    fn labels_follow_the_job() {
        let p = Progress::default();
        assert_eq!(view(&p).0, "open");
        p.set_stage(Stage::Spool);
        p.spooled_bytes.store(700, Ordering::Relaxed);
        assert_eq!(view(&p), ("read stream", false, 700, 0));
        p.input_bytes.store(1000, Ordering::Relaxed);
        p.set_stage(Stage::Sample);
        assert_eq!(view(&p).0, "sample");
        p.set_stage(Stage::Run);
        p.read_bytes.store(400, Ordering::Relaxed);
        assert_eq!(view(&p), ("map+shuffle", true, 400, 1000));
        p.read_bytes.store(1000, Ordering::Relaxed);
        p.written_bytes.store(300, Ordering::Relaxed);
        assert_eq!(view(&p), ("sort+write", true, 300, 1000));
        p.out_of_core.store(true, Ordering::Relaxed);
        assert_eq!(view(&p).0, "merge+write");
        p.read_bytes.store(500, Ordering::Relaxed);
        assert_eq!(view(&p).0, "map+spill");
        p.set_stage(Stage::Commit);
        assert_eq!(view(&p), ("fsync+commit", false, 1000, 0));
    }
}
