//! The network exchange over real TCP on 127.0.0.1: two `ShuffleServer`s (a producer process
//! and a consumer process) in one test, and raw sockets playing misbehaving peers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use shuffle::net::auth::{self, Secret};
use shuffle::net::{
    Channel, Frame, FrameCodec, NetError, PartitionId, ServerConfig, ShuffleServer, Subpartition,
};
use shuffle::{Buffer, ShuffleError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_util::codec::{Decoder, Encoder};

const MAX_BUFFER: usize = 64 << 10;
const SOON: Duration = Duration::from_secs(5);

fn secret(byte: u8) -> Secret {
    Secret::new(vec![byte; 32]).unwrap()
}

fn config() -> ServerConfig {
    ServerConfig {
        max_buffer_bytes: MAX_BUFFER,
        handshake_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
    }
}

async fn server_with(byte: u8, config: ServerConfig) -> ShuffleServer {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    ShuffleServer::bind_with(any, secret(byte), config)
        .await
        .unwrap()
}

async fn server() -> ShuffleServer {
    server_with(7, config()).await
}

fn pid(producer: u32) -> PartitionId {
    PartitionId {
        job: 0xfeed,
        exchange: 3,
        producer,
        attempt: 0,
    }
}

fn remote(server: &ShuffleServer, producer: u32, subpartition: u32) -> Channel {
    Channel::Remote {
        addr: server.local_addr(),
        partition: pid(producer),
        subpartition,
    }
}

/// The `seq`th buffer from `producer` to `consumer`: its length and bytes depend on all three.
fn payload(producer: usize, consumer: usize, seq: usize) -> Vec<u8> {
    let len = (seq * 7919 + producer * 31 + consumer * 17) % 4000 + 1;
    let mut state = ((producer as u64) << 40) ^ ((consumer as u64) << 20) ^ seq as u64;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

/// Reads frames from a raw socket until one arrives.
async fn read_frame(stream: &mut TcpStream, buffer: &mut BytesMut) -> Option<Frame> {
    let mut codec = FrameCodec::new(MAX_BUFFER);
    loop {
        if let Some(frame) = codec.decode(buffer).unwrap() {
            return Some(frame);
        }
        if stream.read_buf(buffer).await.ok()? == 0 {
            return None;
        }
    }
}

/// Whether the peer closed `stream` (end of stream or reset) within a few seconds.
async fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut sink = [0u8; 4096];
    let deadline = Instant::now() + SOON;
    while Instant::now() < deadline {
        match timeout(SOON, stream.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
    false
}

/// One producer in `producers` sends `count` buffers to one consumer in `consumers`, which
/// checks them: a quick end-to-end exchange.
async fn small_exchange(producers: &ShuffleServer, consumers: &ShuffleServer, producer: u32) {
    let mut partition = producers.remote_partition(pid(producer), 0, 1).unwrap();
    let (mut gate, _) = consumers
        .gate(0, &[remote(producers, producer, 0)], 2)
        .await
        .unwrap();
    let sender = tokio::spawn(async move {
        for seq in 0..20 {
            partition
                .emit(0, Buffer::from(payload(0, 0, seq)))
                .await
                .unwrap();
        }
        partition.finish().unwrap();
    });
    for seq in 0..20 {
        let (_, buffer) = timeout(SOON, gate.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(buffer.as_bytes(), payload(0, 0, seq));
    }
    assert!(timeout(SOON, gate.next()).await.unwrap().unwrap().is_none());
    sender.await.unwrap();
}

/// Two producers × three consumers, 400 buffers per channel of 1 to 4000 bytes, two credits
/// per channel: every channel's buffers arrive in order and byte-identical, its end of
/// partition after its last buffer, all over one connection.
///
/// ```text
/// A: producer 0 ─┬─ sub 0..3 ──┐                 ┌─► B: gate 0 (channels: p0, p1)
///    producer 1 ─┴─ sub 0..3 ──┴── one TCP conn ─┼─► B: gate 1
///                                                └─► B: gate 2
/// ```
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffers_arrive_in_order_per_channel() {
    const PRODUCERS: usize = 2;
    const CONSUMERS: usize = 3;
    const COUNT: usize = 400;
    let a = server().await;
    let b = server().await;
    let mut tasks = Vec::new();
    for producer in 0..PRODUCERS {
        let mut partition = a
            .remote_partition(pid(producer as u32), producer, CONSUMERS)
            .unwrap();
        tasks.push(tokio::spawn(async move {
            for seq in 0..COUNT {
                for consumer in 0..CONSUMERS {
                    let buffer = Buffer::from(payload(producer, consumer, seq));
                    partition.emit(consumer, buffer).await.unwrap();
                }
            }
            partition.finish().unwrap();
            partition.metrics().buffers as usize
        }));
    }
    for consumer in 0..CONSUMERS {
        let channels: Vec<_> = (0..PRODUCERS)
            .map(|p| remote(&a, p as u32, consumer as u32))
            .collect();
        let (mut gate, local) = b.gate(consumer, &channels, 2).await.unwrap();
        assert!(local.is_empty());
        tasks.push(tokio::spawn(async move {
            let mut next_seq = [0usize; PRODUCERS];
            while let Some((channel, buffer)) = gate.next().await.unwrap() {
                let seq = &mut next_seq[channel.0];
                assert_eq!(buffer.as_bytes(), payload(channel.0, consumer, *seq));
                *seq += 1;
            }
            // `None` only once every channel ended: each end came after its last buffer.
            assert_eq!(next_seq, [COUNT; PRODUCERS]);
            assert!(gate.is_finished());
            assert!(gate.try_next().unwrap().is_none());
            gate.metrics().buffers as usize
        }));
    }
    let mut moved = 0;
    for task in tasks {
        moved += timeout(Duration::from_secs(30), task)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(moved, 2 * PRODUCERS * CONSUMERS * COUNT);
    let dialed = b.connection_metrics();
    assert_eq!(dialed.len(), 1, "one connection per pair: {dialed:?}");
    assert_eq!(dialed[0].peer, a.local_addr());
    assert_eq!(
        dialed[0].buffers_received as usize,
        PRODUCERS * CONSUMERS * COUNT
    );
    let accepted = a.connection_metrics();
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(
        accepted[0].buffers_sent as usize,
        PRODUCERS * CONSUMERS * COUNT
    );
    // Byte counts agree once the last frames (credits, ends) were counted on both sides.
    let deadline = Instant::now() + SOON;
    loop {
        let (dialed, accepted) = (b.connection_metrics(), a.connection_metrics());
        let agree = accepted[0].bytes_sent == dialed[0].bytes_received
            && accepted[0].bytes_received == dialed[0].bytes_sent;
        if agree {
            assert!(dialed[0].bytes_received > (PRODUCERS * CONSUMERS * COUNT * 2000) as u64);
            break;
        }
        assert!(Instant::now() < deadline, "{dialed:?} {accepted:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Four channels over one connection; the consumer of channel 0 never reads. The other
/// three finish promptly; producer 0 sent exactly its two credits and waits on its own
/// channel only, until its consumer goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_channel_does_not_block_the_others() {
    const CHANNELS: usize = 4;
    const COUNT: usize = 300;
    const CREDITS: usize = 2;
    let a = server().await;
    let b = server().await;
    let stalled_sent = Arc::new(AtomicUsize::new(0));
    let mut producers = Vec::new();
    for producer in 0..CHANNELS {
        let mut partition = a
            .remote_partition(pid(producer as u32), producer, 1)
            .unwrap();
        let sent = stalled_sent.clone();
        producers.push(tokio::spawn(async move {
            for seq in 0..COUNT {
                let buffer = Buffer::from(payload(producer, 0, seq));
                partition.emit(0, buffer).await?;
                if producer == 0 {
                    sent.fetch_add(1, Ordering::SeqCst);
                }
            }
            partition.finish()
        }));
    }
    let mut gates = Vec::new();
    for consumer in 0..CHANNELS {
        let channel = remote(&a, consumer as u32, 0);
        gates.push(b.gate(consumer, &[channel], CREDITS).await.unwrap().0);
    }
    let stalled = gates.remove(0);
    let started = Instant::now();
    let mut consumers = Vec::new();
    for (i, mut gate) in gates.into_iter().enumerate() {
        consumers.push(tokio::spawn(async move {
            let mut seq = 0;
            while let Some((_, buffer)) = gate.next().await.unwrap() {
                assert_eq!(buffer.as_bytes(), payload(i + 1, 0, seq));
                seq += 1;
            }
            seq
        }));
    }
    for consumer in consumers {
        assert_eq!(timeout(SOON, consumer).await.unwrap().unwrap(), COUNT);
    }
    for producer in producers.drain(1..) {
        timeout(SOON, producer).await.unwrap().unwrap().unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(b.connection_metrics().len(), 1);
    // The stalled producer: its credits spent, nothing more, still waiting.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(stalled_sent.load(Ordering::SeqCst), CREDITS);
    assert!(!producers[0].is_finished());
    let dialed = b.connection_metrics();
    assert_eq!(dialed[0].credits_granted, 0, "{dialed:?}");
    assert_eq!(dialed[0].buffers_received as usize, 3 * COUNT + CREDITS);
    // Its consumer goes away: the producer's wait ends with an error naming the peer.
    drop(stalled);
    let result = timeout(SOON, producers.remove(0)).await.unwrap().unwrap();
    match result {
        Err(ShuffleError::RemoteConsumerGone {
            consumer: 0,
            peer,
            reason,
        }) => {
            assert!(peer.ip().is_loopback());
            assert!(reason.contains("closed the channel"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

/// A fake producer at the returned address: it accepts one connection, passes the
/// handshake, reads the request and writes what `reply(channel, credits)` makes; the task
/// returns the request's credits and whether the consumer then closed the connection.
async fn fake_producer(
    reply: impl FnOnce(u32, u32) -> BytesMut + Send + 'static,
) -> (SocketAddr, tokio::task::JoinHandle<(u32, bool)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        auth::server(&mut stream, &secret(7), SOON).await.unwrap();
        let mut buffer = BytesMut::new();
        let Some(Frame::Request {
            channel, credits, ..
        }) = read_frame(&mut stream, &mut buffer).await
        else {
            panic!("no request");
        };
        stream.write_all(&reply(channel, credits)).await.unwrap();
        (credits, closed_by_peer(&mut stream).await)
    });
    (addr, task)
}

fn buffers(channel: u32, count: u32) -> BytesMut {
    let mut codec = FrameCodec::new(MAX_BUFFER);
    let mut out = BytesMut::new();
    for i in 0..count {
        let payload = Bytes::from(vec![i as u8; 10]);
        codec
            .encode(Frame::Buffer { channel, payload }, &mut out)
            .unwrap();
    }
    out
}

/// A fake producer that sends one buffer more than its credit: the consumer takes the
/// credited buffers, then fails with a protocol error naming the peer, and the connection is
/// closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_beyond_its_credit_loses_the_connection() {
    let b = server().await;
    let (fake, misbehaving) = fake_producer(|channel, credits| buffers(channel, credits + 1)).await;
    let channel = Channel::Remote {
        addr: fake,
        partition: pid(0),
        subpartition: 0,
    };
    let (mut gate, _) = b.gate(0, &[channel], 3).await.unwrap();
    let (credits, closed) = timeout(SOON, misbehaving).await.unwrap().unwrap();
    assert_eq!(credits, 3);
    assert!(closed, "the consumer closes the connection");
    for i in 0..3u8 {
        let (_, buffer) = gate.next().await.unwrap().unwrap();
        assert_eq!(buffer.as_bytes(), [i; 10]);
    }
    match gate.next().await {
        Err(ShuffleError::RemoteProducerLost {
            producer: 0,
            peer,
            reason,
        }) => {
            assert_eq!(peer, fake);
            assert!(reason.contains("without credit"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(b.connection_metrics().is_empty());
}

/// A fake producer that sends a buffer, then a length prefix of 1 GiB: the consumer gets the
/// buffer, then an error naming the peer and the cap; the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_from_a_producer_fails_its_consumer() {
    let b = server().await;
    let (fake, misbehaving) = fake_producer(|channel, _| {
        let mut out = buffers(channel, 1);
        out.extend_from_slice(&(1u32 << 30).to_le_bytes());
        out.extend_from_slice(&[0; 32]);
        out
    })
    .await;
    let channel = Channel::Remote {
        addr: fake,
        partition: pid(0),
        subpartition: 0,
    };
    let (mut gate, _) = b.gate(0, &[channel], 3).await.unwrap();
    let (_, closed) = timeout(SOON, misbehaving).await.unwrap().unwrap();
    assert!(closed, "the consumer closes the connection");
    assert_eq!(gate.next().await.unwrap().unwrap().1.as_bytes(), [0; 10]);
    let error = gate.next().await.unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, ShuffleError::RemoteProducerLost { peer, .. } if peer == fake)
            && message.contains("cap"),
        "{message}"
    );
}

/// Six producers × four consumers, one credit per channel, consumers pausing at random:
/// everything arrives in order, every producer and consumer finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_to_all_with_one_credit_and_pausing_consumers() {
    const PRODUCERS: usize = 6;
    const CONSUMERS: usize = 4;
    const COUNT: usize = 60;
    let a = server().await;
    let b = server().await;
    let mut tasks = Vec::new();
    for producer in 0..PRODUCERS {
        let mut partition = a
            .remote_partition(pid(producer as u32), producer, CONSUMERS)
            .unwrap();
        tasks.push(tokio::spawn(async move {
            for seq in 0..COUNT {
                for consumer in (0..CONSUMERS).rev() {
                    let buffer = Buffer::from(payload(producer, consumer, seq));
                    partition.emit(consumer, buffer).await.unwrap();
                }
            }
            partition.finish().unwrap();
            0
        }));
    }
    for consumer in 0..CONSUMERS {
        let channels: Vec<_> = (0..PRODUCERS)
            .map(|p| remote(&a, p as u32, consumer as u32))
            .collect();
        let (mut gate, _) = b.gate(consumer, &channels, 1).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut next_seq = [0usize; PRODUCERS];
            let mut taken = 0;
            while let Some((channel, buffer)) = gate.next().await.unwrap() {
                let seq = &mut next_seq[channel.0];
                assert_eq!(buffer.as_bytes(), payload(channel.0, consumer, *seq));
                *seq += 1;
                taken += 1;
                if payload(consumer, taken, 0)[0] < 8 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            assert_eq!(next_seq, [COUNT; PRODUCERS]);
            taken
        }));
    }
    let mut taken = 0;
    for task in tasks {
        taken += timeout(Duration::from_secs(20), task)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(taken, PRODUCERS * CONSUMERS * COUNT);
}

static PANICKED: AtomicBool = AtomicBool::new(false);

/// Strangers are turned away before any frame; an authenticated peer that sends an oversized
/// length or a corrupt frame loses its connection; the server keeps serving others and
/// nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_peers_are_refused_and_the_server_carries_on() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICKED.store(true, Ordering::SeqCst);
        previous(info);
    }));
    let a = server().await;
    let b = server().await;
    // Another secret: the handshake fails, no request is ever sent.
    let stranger = server_with(8, config()).await;
    let _partition = a.remote_partition(pid(9), 0, 1).unwrap();
    match stranger.gate(0, &[remote(&a, 9, 0)], 2).await {
        Err(NetError::Handshake { addr, .. }) => assert_eq!(addr, a.local_addr()),
        other => panic!("{:?}", other.map(|_| ())),
    }
    // Garbage instead of a handshake.
    let mut garbage = TcpStream::connect(a.local_addr()).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\x13")
        .await
        .unwrap();
    assert!(closed_by_peer(&mut garbage).await);
    // A good handshake, then a length of 1 GiB.
    let mut oversized = TcpStream::connect(a.local_addr()).await.unwrap();
    auth::client(&mut oversized, &secret(7), SOON)
        .await
        .unwrap();
    oversized
        .write_all(&(1u32 << 30).to_le_bytes())
        .await
        .unwrap();
    oversized.write_all(&[0; 64]).await.unwrap();
    assert!(closed_by_peer(&mut oversized).await);
    // A good handshake, then a frame with a wrong checksum.
    let mut corrupt = TcpStream::connect(a.local_addr()).await.unwrap();
    auth::client(&mut corrupt, &secret(7), SOON).await.unwrap();
    let mut frame = BytesMut::new();
    FrameCodec::new(MAX_BUFFER)
        .encode(
            Frame::Credit {
                channel: 0,
                credits: 1,
            },
            &mut frame,
        )
        .unwrap();
    let last = frame.len() - 1;
    frame[last] ^= 1;
    corrupt.write_all(&frame).await.unwrap();
    assert!(closed_by_peer(&mut corrupt).await);
    // A huge credit grant: a protocol error, not a semaphore overflow.
    let mut greedy = TcpStream::connect(a.local_addr()).await.unwrap();
    auth::client(&mut greedy, &secret(7), SOON).await.unwrap();
    let mut frames = BytesMut::new();
    let mut codec = FrameCodec::new(MAX_BUFFER);
    codec
        .encode(
            Frame::Request {
                channel: 0,
                partition: pid(9),
                subpartition: 0,
                credits: 1,
            },
            &mut frames,
        )
        .unwrap();
    codec
        .encode(
            Frame::Credit {
                channel: 0,
                credits: u32::MAX,
            },
            &mut frames,
        )
        .unwrap();
    greedy.write_all(&frames).await.unwrap();
    assert!(closed_by_peer(&mut greedy).await);
    // The server still serves.
    small_exchange(&a, &b, 1).await;
    assert!(!PANICKED.load(Ordering::SeqCst), "a task panicked");
}

/// The consumer drops its gate mid-stream: the producer's next send fails (it does not
/// hang), naming the consumer's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_gate_fails_its_remote_producer() {
    let a = server().await;
    let b = server().await;
    let mut partition = a.remote_partition(pid(0), 0, 1).unwrap();
    let producer = tokio::spawn(async move {
        for seq in 0.. {
            partition.emit(0, Buffer::from(payload(0, 0, seq))).await?;
        }
        Ok(())
    });
    let (mut gate, _) = b.gate(0, &[remote(&a, 0, 0)], 2).await.unwrap();
    for seq in 0..5 {
        let (_, buffer) = gate.next().await.unwrap().unwrap();
        assert_eq!(buffer.as_bytes(), payload(0, 0, seq));
    }
    drop(gate);
    match timeout(SOON, producer).await.unwrap().unwrap() {
        Err(ShuffleError::RemoteConsumerGone {
            consumer: 0, peer, ..
        }) => {
            assert!(peer.ip().is_loopback())
        }
        other => panic!("{other:?}"),
    }
    // The connection stays up for other channels.
    small_exchange(&a, &b, 1).await;
}

/// A producer that fails says why; one dropped unfinished is reported lost; either way the
/// consumer first gets what was sent, then an error naming the producer's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_dropped_producer_fails_its_remote_consumer() {
    let a = server().await;
    let b = server().await;
    let mut failing = a.remote_partition(pid(0), 0, 1).unwrap();
    let mut dropped = a.remote_partition(pid(1), 1, 1).unwrap();
    let (mut gate, _) = b
        .gate(0, &[remote(&a, 0, 0), remote(&a, 1, 0)], 4)
        .await
        .unwrap();
    failing.emit(0, Buffer::from(vec![1; 10])).await.unwrap();
    failing.fail("the disk is on fire");
    let (channel, buffer) = gate.next().await.unwrap().unwrap();
    assert_eq!((channel.0, buffer.as_bytes()), (0, &[1; 10][..]));
    match timeout(SOON, gate.next()).await.unwrap() {
        Err(ShuffleError::RemoteProducerFailed {
            producer: 0,
            peer,
            reason,
        }) => {
            assert_eq!(peer, a.local_addr());
            assert!(reason.contains("the disk is on fire"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    dropped.emit(0, Buffer::from(vec![2; 10])).await.unwrap();
    drop(dropped);
    let (channel, _) = gate.next().await.unwrap().unwrap();
    assert_eq!(channel.0, 1);
    let error = timeout(SOON, gate.next()).await.unwrap().unwrap_err();
    assert!(
        matches!(
            error,
            ShuffleError::RemoteProducerFailed { producer: 1, .. }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&a.local_addr().to_string()) && message.contains("without finishing"),
        "{message}"
    );
}

/// The producer's process goes away mid-stream (its server dropped, every connection cut):
/// the consumer's `next` fails naming the peer, and the producer's send fails too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_fails_both_ends() {
    let a = server().await;
    let b = server().await;
    let addr = a.local_addr();
    let mut partition = a.remote_partition(pid(0), 0, 1).unwrap();
    let (mut gate, _) = b.gate(0, &[remote(&a, 0, 0)], 2).await.unwrap();
    let producer = tokio::spawn(async move {
        for seq in 0.. {
            partition.emit(0, Buffer::from(payload(0, 0, seq))).await?;
        }
        Ok(())
    });
    for _ in 0..3 {
        gate.next().await.unwrap().unwrap();
    }
    drop(a);
    let error = loop {
        match timeout(SOON, gate.next()).await.unwrap() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("ended without an error"),
            Err(error) => break error,
        }
    };
    match &error {
        ShuffleError::RemoteProducerLost {
            producer: 0, peer, ..
        } => assert_eq!(*peer, addr),
        other => panic!("{other:?}"),
    }
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
    let sent = timeout(SOON, producer).await.unwrap().unwrap();
    assert!(
        matches!(sent, Err(ShuffleError::RemoteConsumerGone { .. })),
        "{sent:?}"
    );
    // The consumer's server dials afresh next time (and finds nobody).
    assert!(matches!(
        b.gate(
            0,
            &[Channel::Remote {
                addr,
                partition: pid(0),
                subpartition: 0
            }],
            2
        )
        .await,
        Err(NetError::Connect { .. })
    ));
}

/// One gate, three channels: a producer in the consumer's own process and two remote ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_mixes_local_and_remote_channels() {
    const COUNT: usize = 300;
    let a = server().await;
    let b = server().await;
    let mut partitions = vec![
        a.remote_partition(pid(0), 0, 1).unwrap(),
        a.remote_partition(pid(2), 2, 1).unwrap(),
    ];
    let (mut gate, mut local) = b
        .gate(0, &[remote(&a, 0, 0), Channel::Local, remote(&a, 2, 0)], 2)
        .await
        .unwrap();
    assert_eq!(local.len(), 1);
    let (index, subpartition) = local.pop().unwrap();
    assert_eq!(index.0, 1);
    partitions.insert(
        1,
        b.partition(pid(1), 1, vec![Subpartition::Local(subpartition)])
            .unwrap(),
    );
    let mut producers = Vec::new();
    for (producer, mut partition) in partitions.into_iter().enumerate() {
        producers.push(tokio::spawn(async move {
            for seq in 0..COUNT {
                let buffer = Buffer::from(payload(producer, 0, seq));
                partition.emit(0, buffer).await.unwrap();
            }
            partition.finish().unwrap();
        }));
    }
    let mut next_seq = [0usize; 3];
    while let Some((channel, buffer)) = timeout(SOON, gate.next()).await.unwrap().unwrap() {
        let seq = &mut next_seq[channel.0];
        assert_eq!(buffer.as_bytes(), payload(channel.0, 0, *seq));
        *seq += 1;
    }
    assert_eq!(next_seq, [COUNT; 3]);
    for producer in producers {
        producer.await.unwrap();
    }
}

/// A request may come before its producer registered (it waits); one for a partition that
/// never comes is refused after the request timeout, with a message naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_wait_for_registration_up_to_a_timeout() {
    let a = server_with(
        7,
        ServerConfig {
            request_timeout: Duration::from_millis(300),
            ..config()
        },
    )
    .await;
    let b = server().await;
    let (mut early, _) = b.gate(0, &[remote(&a, 4, 0)], 2).await.unwrap();
    let (mut never, _) = b.gate(1, &[remote(&a, 5, 0)], 2).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut partition = a.remote_partition(pid(4), 4, 1).unwrap();
    let producer = tokio::spawn(async move {
        for seq in 0..10 {
            partition
                .emit(0, Buffer::from(payload(4, 0, seq)))
                .await
                .unwrap();
        }
        partition.finish().unwrap();
    });
    for seq in 0..10 {
        let (_, buffer) = timeout(SOON, early.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(buffer.as_bytes(), payload(4, 0, seq));
    }
    assert!(early.next().await.unwrap().is_none());
    producer.await.unwrap();
    let error = timeout(SOON, never.next()).await.unwrap().unwrap_err();
    assert!(
        matches!(&error, ShuffleError::RemoteProducerFailed { reason, .. } if reason.contains("not registered")),
        "{error}"
    );
    // A second request of a subpartition already taken is refused at once.
    let (mut twice, _) = b.gate(2, &[remote(&a, 4, 0)], 2).await.unwrap();
    let error = timeout(SOON, twice.next()).await.unwrap().unwrap_err();
    assert!(error.to_string().contains("requested already"), "{error}");
}

/// A peer that accepts connections but never answers the handshake: the gate that needs it
/// fails after the handshake timeout, and gates for other peers are not held up meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_delays_only_its_own_gates() {
    let a = server().await;
    let b = server_with(
        7,
        ServerConfig {
            handshake_timeout: Duration::from_millis(500),
            ..config()
        },
    )
    .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::time::sleep(SOON).await;
        drop(stream);
    });
    let b = Arc::new(b);
    let waiting = {
        let b = b.clone();
        tokio::spawn(async move {
            let channel = Channel::Remote {
                addr: silent,
                partition: pid(0),
                subpartition: 0,
            };
            b.gate(0, &[channel], 2).await.map(|_| ())
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    small_exchange(&a, &b, 3).await;
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    match timeout(SOON, waiting).await.unwrap().unwrap() {
        Err(NetError::Handshake { addr, source }) => {
            assert_eq!(addr, silent);
            assert!(source.to_string().contains("did not finish"), "{source}");
        }
        other => panic!("{other:?}"),
    }
    holder.abort();
}
