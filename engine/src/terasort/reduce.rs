//! The reduce subtask: buckets records as they arrive, then sorts and writes its key range at
//! its final offset of the output.
//!
//! The offset of range `r` is the number of records in ranges `0..r`, known once those
//! reducers have received everything; each reducer publishes its count when its input ends and
//! waits only for its predecessors' counts (part files need no wait: each starts at 0).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::sorter::BucketSorter;
use super::SortShared;
use crate::record::{Checksum, RECORD_LEN};
use crate::task::{spawn_cpu, BoxFuture, Invokable, Span, SubtaskContext, SubtaskReport};
use crate::EngineError;

pub(super) struct ReduceTask {
    pub(super) shared: Arc<SortShared>,
}

impl Invokable for ReduceTask {
    fn invoke(
        self: Box<Self>,
        mut ctx: SubtaskContext,
    ) -> BoxFuture<Result<SubtaskReport, EngineError>> {
        Box::pin(async move {
            let shared = self.shared;
            let me = ctx.subtask;
            let mut report = ctx.report();
            let mut sorter = BucketSorter::new(shared.buckets[me].clone());
            let gate = &mut ctx.inputs[0];
            while let Some((_, buffer)) = gate.next().await? {
                sorter.add(buffer.as_bytes());
                shared.pool.recycle(buffer);
            }
            let received = gate.metrics();
            let records = sorter.records();
            report.records_in = records;
            report.bytes_in = received.bytes;
            report.spans.push(Span {
                name: "receive",
                start_us: report.start_us,
                end_us: ctx.now_us(),
            });

            shared
                .reducer_records
                .send_modify(|counts| counts[me] = Some(records));
            let file = shared.output[me].clone();
            let len = records * RECORD_LEN as u64;
            let start = if shared.parts {
                if len > 0 {
                    file.preallocate(len)?;
                }
                0
            } else {
                offset_of(&shared, me).await? * RECORD_LEN as u64
            };

            let sort_start = ctx.now_us();
            let write_chunk_bytes = shared.write_chunk_bytes;
            let progress = shared.clone();
            let checksum = spawn_cpu(move || -> Result<Checksum, EngineError> {
                let mut writer = file.range_writer(start, len, write_chunk_bytes);
                let mut checksum = Checksum::default();
                let mut since_progress = 0usize;
                sorter.emit_sorted(|record| {
                    checksum.add_record(record);
                    since_progress += RECORD_LEN;
                    if since_progress >= 1 << 22 {
                        progress
                            .progress
                            .written_bytes
                            .fetch_add(since_progress as u64, Ordering::Relaxed);
                        since_progress = 0;
                    }
                    writer.write(record)
                })?;
                writer.finish()?;
                progress
                    .progress
                    .written_bytes
                    .fetch_add(since_progress as u64, Ordering::Relaxed);
                Ok(checksum)
            })
            .await??;
            report.spans.push(Span {
                name: "sort+write",
                start_us: sort_start,
                end_us: ctx.now_us(),
            });
            report.records_out = checksum.records;
            report.bytes_out = checksum.records * RECORD_LEN as u64;
            shared
                .output_checksum
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .merge(checksum);
            report.end_us = ctx.now_us();
            Ok(report)
        })
    }
}

/// Records in the ranges before `me`, once their reducers have published them.
async fn offset_of(shared: &SortShared, me: usize) -> Result<u64, EngineError> {
    let mut counts = shared.reducer_records.subscribe();
    let ready = counts
        .wait_for(|counts| counts[..me].iter().all(Option::is_some))
        .await
        .map_err(|_| EngineError::Internal {
            what: "record counts channel closed".into(),
        })?;
    Ok(ready[..me].iter().map(|c| c.unwrap_or(0)).sum())
}
