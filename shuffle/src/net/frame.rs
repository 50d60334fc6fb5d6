//! Frames: the unit of the wire format (see the module documentation of [`crate::net`]).
//!
//! ```text
//! length: u32 LE   bytes after this field (header rest + body), at most 9 + the codec's cap
//! kind:   u8       1 buffer, 2 end of partition, 3 credit, 4 close, 5 request, 6 error
//! channel: u32 LE  the logical channel
//! crc:    u32 LE   CRC-32C of kind, channel and body
//! body             buffer: its bytes; credit: u32 LE count; end of partition, close: empty;
//!                  request: job u64, exchange u32, producer u32, attempt u32,
//!                           subpartition u32, initial credits u32 (all LE, 28 bytes);
//!                  error: a UTF-8 message
//! ```
//!
//! A length above the cap is refused from the first four bytes, before anything is buffered
//! for it: a peer cannot make the receiver allocate more than one capped frame. The cap is
//! the exchange's buffer size, but never under [`MIN_BODY_CAP`] (room for control frames and
//! error messages).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Bytes of a frame before its body: length, kind, channel, crc.
pub const FRAME_HEADER_BYTES: usize = 4 + 1 + 4 + 4;

/// Header bytes the length counts (kind, channel, crc).
const COUNTED_HEADER: usize = FRAME_HEADER_BYTES - 4;

const BUFFER: u8 = 1;
const END_OF_PARTITION: u8 = 2;
const CREDIT: u8 = 3;
const CLOSE: u8 = 4;
const REQUEST: u8 = 5;
const ERROR: u8 = 6;

/// The least body cap of a codec, whatever the buffer size: requests and error messages fit.
pub const MIN_BODY_CAP: usize = 1024;

/// Bytes of a request frame's body.
const REQUEST_BODY: usize = 8 + 4 * 5;

/// A result partition, as a producer process registers it and a consumer requests it: one
/// attempt of one producer subtask of one exchange of one job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    pub job: u64,
    /// The exchange (job edge) within the job.
    pub exchange: u32,
    /// The producer subtask.
    pub producer: u32,
    /// The producer's attempt (a retried producer's partition is another one).
    pub attempt: u32,
}

impl std::fmt::Display for PartitionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "partition of job {:x}, exchange {}, producer {}, attempt {}",
            self.job, self.exchange, self.producer, self.attempt
        )
    }
}

/// One message on a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A buffer of the channel's records.
    Buffer { channel: u32, payload: Bytes },
    /// The producer has sent every buffer of the channel.
    EndOfPartition { channel: u32 },
    /// The receiver can take `credits` more buffers on the channel.
    Credit { channel: u32, credits: u32 },
    /// The channel is given up by the side that sends this (a failed or cancelled subtask):
    /// the other side stops sending on it, or reports its producer lost.
    Close { channel: u32 },
    /// The consumer asks for `subpartition` of `partition` on `channel` (a number it chose on
    /// this connection), granting `credits` buffers at once.
    Request {
        channel: u32,
        partition: PartitionId,
        subpartition: u32,
        credits: u32,
    },
    /// The producer side ends the channel with an error (the producer failed, or the
    /// partition is not there): the consumer reports `message`.
    Error { channel: u32, message: String },
}

impl Frame {
    /// The channel the frame belongs to.
    pub fn channel(&self) -> u32 {
        match self {
            Self::Buffer { channel, .. }
            | Self::EndOfPartition { channel }
            | Self::Credit { channel, .. }
            | Self::Close { channel }
            | Self::Request { channel, .. }
            | Self::Error { channel, .. } => *channel,
        }
    }
}

/// Why bytes from a peer are not a frame. Each ends the connection: the stream cannot be
/// resynchronized.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("a frame of {length} bytes announced, more than the cap of {cap} bytes")]
    TooLarge { length: u64, cap: u64 },
    #[error("a corrupt frame: {what}")]
    Corrupt { what: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Encodes and decodes [`Frame`]s, with bodies of at most `max_body` bytes.
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    max_body: usize,
}

impl FrameCodec {
    /// A codec for buffers of at most `max_body` bytes (the exchange's buffer size; at
    /// least [`MIN_BODY_CAP`]).
    pub fn new(max_body: usize) -> Self {
        Self {
            max_body: max_body.max(MIN_BODY_CAP),
        }
    }

    /// The largest body this codec sends or accepts.
    pub fn max_body(&self) -> usize {
        self.max_body
    }
}

fn corrupt(what: impl Into<String>) -> FrameError {
    FrameError::Corrupt { what: what.into() }
}

fn checksum(kind: u8, channel: u32, body: &[u8]) -> u32 {
    let head = crc32c::crc32c_append(0, &[kind]);
    let head = crc32c::crc32c_append(head, &channel.to_le_bytes());
    crc32c::crc32c_append(head, body)
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let credits;
        let mut request = [0u8; REQUEST_BODY];
        let (kind, channel, body): (u8, u32, &[u8]) = match &frame {
            Frame::Buffer { channel, payload } => (BUFFER, *channel, payload),
            Frame::EndOfPartition { channel } => (END_OF_PARTITION, *channel, &[]),
            Frame::Credit {
                channel,
                credits: n,
            } => {
                credits = n.to_le_bytes();
                (CREDIT, *channel, &credits)
            }
            Frame::Close { channel } => (CLOSE, *channel, &[]),
            Frame::Request {
                channel,
                partition,
                subpartition,
                credits: n,
            } => {
                let mut body = &mut request[..];
                body.put_u64_le(partition.job);
                for field in [
                    partition.exchange,
                    partition.producer,
                    partition.attempt,
                    *subpartition,
                    *n,
                ] {
                    body.put_u32_le(field);
                }
                (REQUEST, *channel, &request)
            }
            Frame::Error { channel, message } => (ERROR, *channel, message.as_bytes()),
        };
        if body.len() > self.max_body {
            return Err(FrameError::TooLarge {
                length: (COUNTED_HEADER + body.len()) as u64,
                cap: (COUNTED_HEADER + self.max_body) as u64,
            });
        }
        dst.reserve(FRAME_HEADER_BYTES + body.len());
        dst.put_u32_le((COUNTED_HEADER + body.len()) as u32);
        dst.put_u8(kind);
        dst.put_u32_le(channel);
        dst.put_u32_le(checksum(kind, channel, body));
        dst.put_slice(body);
        Ok(())
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(length) = src.get(..4) else {
            return Ok(None);
        };
        let length = u32::from_le_bytes(length.try_into().expect("four bytes")) as usize;
        let cap = COUNTED_HEADER + self.max_body;
        if length > cap {
            return Err(FrameError::TooLarge {
                length: length as u64,
                cap: cap as u64,
            });
        }
        if length < COUNTED_HEADER {
            return Err(corrupt(format!(
                "a length of {length} bytes, less than its header"
            )));
        }
        if src.len() < 4 + length {
            src.reserve(4 + length - src.len());
            return Ok(None);
        }
        src.advance(4);
        let mut frame = src.split_to(length);
        let kind = frame.get_u8();
        let channel = frame.get_u32_le();
        let crc = frame.get_u32_le();
        let body = frame.freeze();
        if checksum(kind, channel, &body) != crc {
            return Err(corrupt(format!(
                "checksum mismatch on channel {channel} ({} bytes)",
                body.len()
            )));
        }
        let empty = |frame: Frame| match body.is_empty() {
            true => Ok(Some(frame)),
            false => Err(corrupt(format!("a body on a kind {kind} frame"))),
        };
        match kind {
            BUFFER => Ok(Some(Frame::Buffer {
                channel,
                payload: body,
            })),
            END_OF_PARTITION => empty(Frame::EndOfPartition { channel }),
            CLOSE => empty(Frame::Close { channel }),
            CREDIT => match <[u8; 4]>::try_from(&body[..]) {
                Ok(n) => Ok(Some(Frame::Credit {
                    channel,
                    credits: u32::from_le_bytes(n),
                })),
                Err(_) => Err(corrupt(format!("a credit body of {} bytes", body.len()))),
            },
            REQUEST => {
                if body.len() != REQUEST_BODY {
                    return Err(corrupt(format!("a request body of {} bytes", body.len())));
                }
                let mut body = &body[..];
                let job = body.get_u64_le();
                let mut field = || body.get_u32_le();
                Ok(Some(Frame::Request {
                    channel,
                    partition: PartitionId {
                        job,
                        exchange: field(),
                        producer: field(),
                        attempt: field(),
                    },
                    subpartition: field(),
                    credits: field(),
                }))
            }
            ERROR => match String::from_utf8(body.to_vec()) {
                Ok(message) => Ok(Some(Frame::Error { channel, message })),
                Err(_) => Err(corrupt("an error message that is not UTF-8")),
            },
            other => Err(corrupt(format!("unknown kind {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames() -> impl Strategy<Value = Vec<Frame>> {
        let frame = prop_oneof![
            (any::<u32>(), prop::collection::vec(any::<u8>(), 0..300)).prop_map(|(channel, p)| {
                Frame::Buffer {
                    channel,
                    payload: Bytes::from(p),
                }
            }),
            any::<u32>().prop_map(|channel| Frame::EndOfPartition { channel }),
            (any::<u32>(), any::<u32>())
                .prop_map(|(channel, credits)| Frame::Credit { channel, credits }),
            any::<u32>().prop_map(|channel| Frame::Close { channel }),
            (
                any::<u32>(),
                any::<(u64, u32, u32, u32)>(),
                any::<u32>(),
                any::<u32>()
            )
                .prop_map(
                    |(channel, (job, exchange, producer, attempt), subpartition, credits)| {
                        Frame::Request {
                            channel,
                            partition: PartitionId {
                                job,
                                exchange,
                                producer,
                                attempt,
                            },
                            subpartition,
                            credits,
                        }
                    }
                ),
            (any::<u32>(), ".{0,80}")
                .prop_map(|(channel, message)| Frame::Error { channel, message }),
        ];
        prop::collection::vec(frame, 0..40)
    }

    fn encode(frames: &[Frame]) -> BytesMut {
        let mut codec = FrameCodec::new(300);
        let mut bytes = BytesMut::new();
        for frame in frames {
            codec.encode(frame.clone(), &mut bytes).unwrap();
        }
        bytes
    }

    /// Feeds `bytes` to a decoder in pieces cut at `cuts`; every frame decoded, or the first
    /// error (also for bytes left over at the end, as `decode_eof` does).
    fn decode(bytes: &[u8], cuts: &[usize]) -> Result<Vec<Frame>, FrameError> {
        let mut codec = FrameCodec::new(300);
        let mut buffer = BytesMut::new();
        let mut out = Vec::new();
        let mut at = 0;
        for &cut in cuts.iter().chain([&bytes.len()]) {
            let cut = cut.clamp(at, bytes.len());
            buffer.extend_from_slice(&bytes[at..cut]);
            at = cut;
            while let Some(frame) = codec.decode(&mut buffer)? {
                out.push(frame);
            }
        }
        match codec.decode_eof(&mut buffer)? {
            Some(frame) => out.push(frame),
            None if buffer.is_empty() => {}
            None => return Err(corrupt("bytes left at the end")),
        }
        Ok(out)
    }

    proptest! {
        /// Any frames, the stream cut into any pieces: the same frames back, in order.
        #[test]
        fn frames_survive_any_cut(
            frames in frames(),
            cuts in prop::collection::btree_set(0usize..20_000, 0..30),
        ) {
            let bytes = encode(&frames);
            let cuts: Vec<usize> = cuts.into_iter().collect();
            prop_assert_eq!(decode(&bytes, &cuts).unwrap(), frames);
        }

        /// One flipped bit anywhere in a stream of frames: an error, never other frames.
        #[test]
        fn a_flipped_bit_is_an_error(frames in frames(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = encode(&frames);
            prop_assume!(!bytes.is_empty());
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
            match decode(&bytes, &[]) {
                Err(_) => {}
                Ok(got) => prop_assert!(false, "decoded {} frames from a corrupt stream", got.len()),
            }
        }
    }

    #[test]
    fn an_oversized_length_is_refused_from_four_bytes() {
        let mut codec = FrameCodec::new(1 << 16);
        let mut buffer = BytesMut::from(&(1u32 << 30).to_le_bytes()[..]);
        let error = codec.decode(&mut buffer).unwrap_err().to_string();
        assert!(
            error.contains("1073741824") && error.contains("cap"),
            "{error}"
        );
        assert!(buffer.capacity() < 1 << 20, "nothing reserved for it");
        let mut out = BytesMut::new();
        let big = Frame::Buffer {
            channel: 0,
            payload: Bytes::from(vec![0; (1 << 16) + 1]),
        };
        assert!(matches!(
            codec.encode(big, &mut out),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(out.is_empty());
    }

    /// Over a real byte stream (an in-process pipe): frames of three channels written by one
    /// task and read by another through `FramedWrite`/`FramedRead`.
    #[tokio::test]
    async fn frames_cross_a_stream() {
        use futures_util::{SinkExt, StreamExt};
        use tokio_util::codec::{FramedRead, FramedWrite};
        let (a, b) = tokio::io::duplex(1 << 12);
        let sent: Vec<Frame> = (0..3000u32)
            .map(|i| match i % 4 {
                0 => Frame::Buffer {
                    channel: i % 3,
                    payload: Bytes::from(vec![i as u8; (i % 500) as usize]),
                },
                1 => Frame::Credit {
                    channel: i % 3,
                    credits: i,
                },
                2 => Frame::EndOfPartition { channel: i % 3 },
                _ => Frame::Close { channel: i % 3 },
            })
            .collect();
        let writer = {
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut sink = FramedWrite::new(a, FrameCodec::new(512));
                for frame in sent {
                    sink.send(frame).await.unwrap();
                }
            })
        };
        let mut stream = FramedRead::new(b, FrameCodec::new(512));
        let mut got = Vec::new();
        while let Some(frame) = stream.next().await {
            got.push(frame.unwrap());
        }
        writer.await.unwrap();
        assert_eq!(got, sent);
    }
}
