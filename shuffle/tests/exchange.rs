//! Credit and channel behaviour of the pipelined exchange: bounded memory, no hangs, failures
//! surface as errors on the other side.

use std::time::Duration;

use shuffle::{pipelined, Buffer, ShuffleError};
use tokio::time::timeout;

fn buffer(tag: u8, len: usize) -> Buffer {
    Buffer::from(vec![tag; len])
}

/// A producer never has more than `credits` buffers in flight on one channel.
///
/// ```text
/// producer 0 ──(2 credits)──► gate 0 (nobody reads)
/// ```
#[tokio::test]
async fn producer_waits_without_credit() {
    let (mut partitions, gates) = pipelined(1, 1, 2);
    let mut partition = partitions.pop().unwrap();
    partition.emit(0, buffer(1, 10)).await.unwrap();
    partition.emit(0, buffer(2, 10)).await.unwrap();
    let third = timeout(Duration::from_millis(100), partition.emit(0, buffer(3, 10))).await;
    assert!(third.is_err(), "third buffer must wait for credit");
    drop(gates);
}

/// Taking a buffer returns its credit, and buffers of one channel arrive in order.
#[tokio::test]
async fn credit_returns_when_taken_and_order_is_kept() {
    let (mut partitions, mut gates) = pipelined(1, 1, 1);
    let mut partition = partitions.pop().unwrap();
    let mut gate = gates.pop().unwrap();
    let producer = tokio::spawn(async move {
        for tag in 0..50u8 {
            partition.emit(0, buffer(tag, 3)).await.unwrap();
        }
        partition.finish().unwrap();
        partition.metrics()
    });
    let mut seen = Vec::new();
    while let Some((channel, buf)) = gate.next().await.unwrap() {
        assert_eq!(channel.0, 0);
        seen.push(buf.as_bytes()[0]);
    }
    assert_eq!(seen, (0..50).collect::<Vec<_>>());
    let sent = producer.await.unwrap();
    assert_eq!(sent.buffers, 50);
    assert_eq!(gate.metrics().bytes, 150);
    assert!(gate.is_finished());
}

/// Many producers and consumers with a single credit each and a slow consumer: everything
/// arrives, nothing hangs.
///
/// ```text
/// 4 producers ──all-to-all, 1 credit per channel──► 3 consumers (consumer 0 sleeps per buffer)
/// ```
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_to_all_with_one_credit_and_a_slow_consumer_completes() {
    let (partitions, gates) = pipelined(4, 3, 1);
    let mut tasks = Vec::new();
    for mut partition in partitions {
        tasks.push(tokio::spawn(async move {
            for i in 0..60usize {
                let target = i % 3;
                partition
                    .emit(target, buffer(partition.producer() as u8, 8))
                    .await?;
            }
            partition.finish()?;
            Ok::<u64, ShuffleError>(0)
        }));
    }
    for mut gate in gates {
        tasks.push(tokio::spawn(async move {
            let mut got = 0u64;
            while let Some((_, _buf)) = gate.next().await? {
                if gate.consumer() == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                got += 1;
            }
            Ok(got)
        }));
    }
    let mut received = 0;
    for task in tasks {
        received += timeout(Duration::from_secs(30), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    assert_eq!(received, 4 * 60);
}

/// A consumer that goes away releases its producers with an error instead of leaving them
/// waiting for credit forever.
#[tokio::test]
async fn dropped_consumer_fails_waiting_producer() {
    let (mut partitions, mut gates) = pipelined(1, 1, 1);
    let mut partition = partitions.pop().unwrap();
    partition.emit(0, buffer(0, 1)).await.unwrap();
    let waiting = tokio::spawn(async move { partition.emit(0, buffer(1, 1)).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(gates.pop());
    let result = timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        result,
        Err(ShuffleError::ConsumerGone { consumer: 0 })
    ));
}

/// A producer that fails mid-way makes its consumer fail instead of waiting forever.
#[tokio::test]
async fn dropped_producer_fails_consumer() {
    let (mut partitions, mut gates) = pipelined(2, 1, 4);
    let mut gate = gates.pop().unwrap();
    let mut finished = partitions.pop().unwrap();
    let mut failing = partitions.pop().unwrap();
    failing.emit(0, buffer(7, 1)).await.unwrap();
    finished.finish().unwrap();
    drop(failing);
    let mut result = Ok(None);
    for _ in 0..3 {
        result = gate.next().await;
        if result.is_err() {
            break;
        }
    }
    assert!(
        matches!(result, Err(ShuffleError::ProducerLost { producer: 0 })),
        "{result:?}"
    );
}

/// `try_next` never waits and reports an empty queue as `None`.
#[tokio::test]
async fn try_next_does_not_wait() {
    let (mut partitions, mut gates) = pipelined(1, 1, 2);
    let mut gate = gates.pop().unwrap();
    assert!(gate.try_next().unwrap().is_none());
    assert!(!gate.is_finished());
    let mut partition = partitions.pop().unwrap();
    partition.emit(0, buffer(9, 2)).await.unwrap();
    partition.finish().unwrap();
    assert_eq!(gate.try_next().unwrap().unwrap().1.as_bytes(), &[9, 9]);
    assert!(gate.try_next().unwrap().is_none());
    assert!(gate.is_finished());
}

/// Hybrid: a buffer that waits its patience for credit comes back to the producer, which
/// spills it and sends a notice the consumer receives in order, without credit.
///
/// ```text
/// producer 0 ──(1 credit, consumer not reading)──► gate 0
///            └─ buffer 2 waits 20 ms, comes back, "spilled" notice goes instead
/// ```
#[tokio::test]
async fn hybrid_gives_the_buffer_back_and_delivers_the_spill_notice() {
    use shuffle::{Received, SpilledBuffer};
    let (mut partitions, mut gates) = pipelined(1, 1, 1);
    let mut partition = partitions.pop().unwrap();
    let mut gate = gates.pop().unwrap();
    let patience = Duration::from_millis(20);
    assert!(partition
        .emit_within(0, buffer(1, 4), patience)
        .await
        .unwrap()
        .is_none());
    let back = partition
        .emit_within(0, buffer(2, 4), patience)
        .await
        .unwrap();
    assert_eq!(back.unwrap().as_bytes(), &[2, 2, 2, 2]);
    let notice = SpilledBuffer {
        path: "/spill/map-0.hybrid".into(),
        file: std::sync::Arc::new(std::fs::File::open("/dev/null").unwrap()),
        segment: Default::default(),
        partition: 0,
        bytes: 4,
    };
    partition.emit_spilled(0, notice.clone()).unwrap();
    partition.finish().unwrap();
    assert!(
        matches!(gate.next_received().await.unwrap(), Some((_, Received::Buffer(b))) if b.as_bytes() == [1, 1, 1, 1])
    );
    assert!(
        matches!(gate.next_received().await.unwrap(), Some((_, Received::Spilled(s))) if s == notice)
    );
    assert!(gate.next_received().await.unwrap().is_none());
    assert_eq!(partition.metrics().spilled_bytes, 4);
    assert_eq!(gate.metrics().spilled_buffers, 1);
}

/// Reads every buffer a gate delivers, in memory or spilled, as (producer, bytes).
async fn drain(gate: &mut shuffle::InputGate) -> Vec<(usize, Vec<u8>)> {
    use shuffle::Received;
    let mut out = Vec::new();
    while let Some((channel, received)) = gate.next_received().await.unwrap() {
        match received {
            Received::Buffer(buffer) => out.push((channel.0, buffer.as_bytes().to_vec())),
            Received::Spilled(spilled) => {
                let reader = spilled.open().unwrap();
                let blocks = reader
                    .partition_blocks(spilled.segment.segment, spilled.partition)
                    .unwrap();
                out.push((channel.0, shuffle::spill::collect_payloads(blocks).unwrap()));
            }
        }
    }
    out
}

fn target(dir: &std::path::Path, patience_ms: u64) -> shuffle::SpillTarget {
    shuffle::SpillTarget {
        dir: dir.to_path_buf(),
        options: shuffle::WriterOptions {
            direct: false,
            ..Default::default()
        },
        record_bytes: 4,
        patience: Duration::from_millis(patience_ms),
    }
}

/// A blocking partition never waits for its consumers: with one credit and nobody reading,
/// every buffer goes to the producer's one segment file; consumers started afterwards read
/// them all, per producer in order.
///
/// ```text
/// producers 0, 1 ──blocking (1 credit, nobody reads yet)──► gates 0, 1 (read after the end)
/// ```
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_partitions_never_wait_and_deliver_everything_later() {
    let dir = tempfile::tempdir().unwrap();
    let store = shuffle::blocking(2, 2, target(dir.path(), 0));
    for producer in 0..2usize {
        // Attempt 0 of producer 1 fails after writing: it is discarded, attempt 1 counts.
        let attempts: &[u32] = if producer == 1 { &[0, 1] } else { &[0] };
        for &attempt in attempts {
            let mut partition = store.partition(producer, attempt, None);
            for round in 0..10u8 {
                for consumer in 0..2 {
                    let bytes = vec![producer as u8 * 100 + round; 4 * (consumer + 1)];
                    let sent = timeout(
                        Duration::from_secs(5),
                        partition.send(consumer, Buffer::from(bytes)),
                    )
                    .await
                    .expect("a blocking partition never waits")
                    .unwrap();
                    assert!(sent.is_some(), "the buffer comes back for reuse");
                }
            }
            assert_eq!(partition.spilled_bytes(), 10 * (4 + 8));
            partition.finish().unwrap();
            if producer == 1 && attempt == 0 {
                store.discard(producer, attempt);
            } else {
                store.commit(producer, attempt);
            }
        }
    }
    // One file per producer attempt, unlinked: nothing to see in the folder.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    for consumer in 0..2usize {
        // Twice: a retried consumer reads the same data again.
        for _ in 0..2 {
            let mut gate = store.gate(consumer).unwrap();
            let received = drain(&mut gate).await;
            for producer in 0..2u8 {
                let from: Vec<_> = received
                    .iter()
                    .filter(|(p, _)| *p == producer as usize)
                    .map(|(_, bytes)| bytes.clone())
                    .collect();
                let expected: Vec<_> = (0..10u8)
                    .map(|round| vec![producer * 100 + round; 4 * (consumer + 1)])
                    .collect();
                assert_eq!(
                    from, expected,
                    "consumer {consumer} from producer {producer}"
                );
            }
        }
    }
}

/// A gate made before every producer finished (slow start) gets the committed outputs at
/// once and each other one when it is committed — never a discarded attempt's — and ends
/// only after the last producer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_gate_receives_producers_as_they_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = shuffle::blocking(2, 1, target(dir.path(), 0));
    let mut first = store.partition(0, 0, None);
    first.send(0, buffer(1, 8)).await.unwrap();
    first.finish().unwrap();
    store.commit(0, 0);
    let mut gate = store.gate(0).unwrap();
    assert_eq!(store.committed_producers(), 1);
    // A failed attempt of producer 1: discarded, never seen.
    let mut failed = store.partition(1, 0, None);
    failed.send(0, buffer(9, 8)).await.unwrap();
    failed.finish().unwrap();
    store.discard(1, 0);
    let mut second = store.partition(1, 1, None);
    second.send(0, buffer(2, 8)).await.unwrap();
    second.finish().unwrap();
    let reader = tokio::spawn(async move { drain(&mut gate).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !reader.is_finished(),
        "the gate ended before producer 1 committed"
    );
    store.commit(1, 1);
    let received = reader.await.unwrap();
    assert_eq!(received, [(0, vec![1; 8]), (1, vec![2; 8])]);
}

/// Hybrid, deterministically: the first buffer takes the one credit, the next ones wait their
/// patience and are spilled; the consumer gets all of them, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_spills_what_waits_too_long_and_keeps_the_order() {
    use shuffle::ResultPartitionType;
    let dir = tempfile::tempdir().unwrap();
    let (mut partitions, mut gates) = shuffle::exchange(
        ResultPartitionType::Hybrid,
        1,
        1,
        1,
        Some(target(dir.path(), 5)),
    )
    .unwrap();
    let mut partition = partitions.pop().unwrap();
    let mut returned = 0;
    for i in 0..4u8 {
        if partition.send(0, buffer(i, 8)).await.unwrap().is_some() {
            returned += 1;
        }
    }
    partition.finish().unwrap();
    assert_eq!(returned, 3, "one buffer in memory, three spilled");
    assert_eq!(partition.metrics().spilled_buffers, 3);
    let received = drain(&mut gates[0]).await;
    let bytes: Vec<_> = received.into_iter().map(|(_, b)| b).collect();
    assert_eq!(bytes, (0..4u8).map(|i| vec![i; 8]).collect::<Vec<_>>());
}

/// Spilling partitions need a target.
#[test]
fn spilling_partitions_need_a_target() {
    use shuffle::ResultPartitionType;
    for kind in [ResultPartitionType::Hybrid, ResultPartitionType::Blocking] {
        assert!(shuffle::exchange(kind, 1, 1, 1, None).is_err());
    }
    // Blocking exchanges are stores, not channels.
    let dir = tempfile::tempdir().unwrap();
    let spill = target(dir.path(), 0);
    assert!(shuffle::exchange(ResultPartitionType::Blocking, 1, 1, 1, Some(spill)).is_err());
    assert!(shuffle::exchange(ResultPartitionType::Pipelined, 1, 1, 1, None).is_ok());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Any number of producers, consumers, credits and buffers, with consumers that pause:
    /// everything arrives, in order per channel, and nothing hangs.
    #[test]
    fn every_buffer_arrives_in_channel_order(
        producers in 1usize..5,
        consumers in 1usize..5,
        credits in 1usize..4,
        buffers in 0usize..24,
        pause_every in 1usize..6,
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        let received = runtime.block_on(async move {
            let (partitions, gates) = pipelined(producers, consumers, credits);
            let senders: Vec<_> = partitions
                .into_iter()
                .map(|mut partition| {
                    tokio::spawn(async move {
                        let p = partition.producer() as u8;
                        for i in 0..buffers as u8 {
                            for c in 0..consumers {
                                partition.emit(c, Buffer::from(vec![p, i, c as u8])).await.unwrap();
                            }
                        }
                        partition.finish().unwrap();
                    })
                })
                .collect();
            let receivers: Vec<_> = gates
                .into_iter()
                .map(|mut gate| {
                    tokio::spawn(async move {
                        let mut got = Vec::new();
                        while let Some((channel, buffer)) = gate.next().await.unwrap() {
                            got.push((channel.0, buffer.as_bytes().to_vec()));
                            if got.len() % pause_every == 0 {
                                tokio::time::sleep(Duration::from_micros(50)).await;
                            }
                        }
                        (gate.consumer(), got)
                    })
                })
                .collect();
            let all = async {
                for s in senders {
                    s.await.unwrap();
                }
                let mut out = Vec::new();
                for r in receivers {
                    out.push(r.await.unwrap());
                }
                out
            };
            timeout(Duration::from_secs(10), all).await.expect("the exchange never hangs")
        });
        for (consumer, got) in received {
            for p in 0..producers {
                let from: Vec<_> = got.iter().filter(|(c, _)| *c == p).map(|(_, b)| b.clone()).collect();
                let expected: Vec<_> = (0..buffers as u8).map(|i| vec![p as u8, i, consumer as u8]).collect();
                proptest::prop_assert_eq!(from, expected);
            }
        }
    }
}

/// Hybrid's memory-pressure trigger: a consumer that says it has no memory gets the buffers
/// spilled at once, whether the producer was about to wait or already waiting — far sooner
/// than the producer's patience — and in order with the ones sent before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_spills_at_once_for_a_consumer_under_memory_pressure() {
    use shuffle::ResultPartitionType;
    let dir = tempfile::tempdir().unwrap();
    let (mut partitions, mut gates) = shuffle::exchange(
        ResultPartitionType::Hybrid,
        1,
        1,
        1,
        Some(target(dir.path(), 60_000)),
    )
    .unwrap();
    let mut partition = partitions.pop().unwrap();
    let started = std::time::Instant::now();
    // The one credit takes the first buffer.
    assert!(partition.send(0, buffer(0, 8)).await.unwrap().is_none());
    // Already waiting when the pressure starts.
    let gate = gates.pop().unwrap();
    let (pressured, gate) = tokio::join!(partition.send(0, buffer(1, 8)), async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        gate.set_under_pressure(true);
        gate
    });
    assert!(pressured.unwrap().is_some(), "spilled under pressure");
    // Under pressure before it would wait.
    assert!(partition.send(0, buffer(2, 8)).await.unwrap().is_some());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "no patience spent"
    );
    assert_eq!(partition.metrics().pressure_spills, 2);
    partition.finish().unwrap();
    let mut gate = gate;
    gate.set_under_pressure(false);
    let received = drain(&mut gate).await;
    assert_eq!(
        received,
        [(0, vec![0; 8]), (0, vec![1; 8]), (0, vec![2; 8])]
    );
}

/// A blocking partition published from a producer's own file (a `mapreduce` map output)
/// reaches its consumers per partition; if the file is damaged or cut short by the time the
/// consumer reads it, the read is an error naming the file — never wrong bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_blocking_partition_is_an_error_when_read() {
    use shuffle::spill::{Compression, SegmentFileWriter, WriterOptions};
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("map-0.out");
    let options = WriterOptions {
        direct: false,
        compression: Compression::None,
        ..Default::default()
    };
    let mut writer = SegmentFileWriter::create(&path, options).unwrap();
    writer.append_records(0, 4, &[1u8; 4000]).unwrap();
    writer.append_records(1, 4, &[2u8; 4000]).unwrap();
    let segment = writer.seal_segment().unwrap();
    let read_handle = std::sync::Arc::new(writer.read_handle().unwrap());
    writer.finish().unwrap();

    let store = shuffle::blocking(1, 2, target(dir.path(), 0));
    let mut partition = store.partition(0, 0, None);
    partition
        .publish_segment(&path, read_handle, &segment)
        .unwrap();
    partition.finish().unwrap();
    store.commit(0, 0);
    // Intact: each consumer gets exactly its partition.
    for consumer in 0..2u8 {
        let mut gate = store.gate(consumer as usize).unwrap();
        assert_eq!(
            drain(&mut gate).await,
            [(0, vec![consumer + 1; 4000])],
            "consumer {consumer}"
        );
    }
    let read = |consumer: usize| {
        let store = store.clone();
        async move {
            let mut gate = store.gate(consumer).unwrap();
            let Some((_, shuffle::Received::Spilled(spilled))) =
                gate.next_received().await.unwrap()
            else {
                panic!("a spilled notice");
            };
            let reader = spilled.open()?;
            let blocks = reader.partition_blocks(spilled.segment.segment, spilled.partition)?;
            shuffle::spill::collect_payloads(blocks)
        }
    };
    // One flipped byte in partition 1's payload.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let at = segment.partition(1).unwrap().offset + 100;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x10], at).unwrap();
    let error = read(1).await.unwrap_err().to_string();
    assert!(
        error.contains("map-0.out") && error.contains("partition 1"),
        "{error}"
    );
    // Cut short: an error too, before anything is mapped.
    file.set_len(segment.offset + 10).unwrap();
    let error = read(0).await.unwrap_err().to_string();
    assert!(error.contains("map-0.out"), "{error}");
}

/// A producer that fails says why: its consumer gets the reason after the buffers sent
/// before, and dropping the failed partition adds nothing.
#[tokio::test]
async fn failed_producer_tells_its_consumer_why() {
    let (mut partitions, mut gates) = pipelined(1, 1, 4);
    let mut gate = gates.pop().unwrap();
    let mut partition = partitions.pop().unwrap();
    partition.emit(0, buffer(7, 1)).await.unwrap();
    partition.fail("out of disk");
    drop(partition);
    assert_eq!(gate.next().await.unwrap().unwrap().1.as_bytes(), [7]);
    let error = gate.next().await.unwrap_err();
    assert!(
        matches!(&error, ShuffleError::ProducerFailed { producer: 0, reason } if reason == "out of disk"),
        "{error:?}"
    );
}
