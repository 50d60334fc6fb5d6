//! [`Buffer`]: the unit that moves through an exchange.

/// A filled network/exchange buffer: whole records, appended by a producer and handed over
/// whole to one consumer.
///
/// A buffer's bytes are never copied by the exchange; ownership moves from producer to
/// consumer, and a consumer may keep the buffer as part of its own state (the sorter does).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Buffer {
    bytes: Vec<u8>,
}

impl Buffer {
    /// An empty buffer that can hold `capacity_bytes` without reallocating.
    pub fn with_capacity(capacity_bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(capacity_bytes),
        }
    }

    /// Bytes still free before the buffer is full.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.bytes.capacity() - self.bytes.len()
    }

    /// Appends bytes; the caller checks [`Buffer::remaining`] first so this never reallocates.
    #[inline]
    pub fn push(&mut self, bytes: &[u8]) {
        debug_assert!(bytes.len() <= self.remaining(), "a buffer never grows");
        self.bytes.extend_from_slice(bytes);
    }

    /// The filled bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Filled length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether nothing was appended yet.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Gives the bytes back, e.g. to reuse the allocation.
    pub fn into_vec(self) -> Vec<u8> {
        self.bytes
    }
}

impl From<Vec<u8>> for Buffer {
    fn from(bytes: Vec<u8>) -> Self {
        Self { bytes }
    }
}

/// Recycles exchange buffers: consumers that copy a buffer's records away give it back, and
/// producers take from here before allocating, so steady-state exchanges allocate nothing.
#[derive(Debug)]
pub struct BufferPool {
    buffer_bytes: usize,
    max_pooled: usize,
    free: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    /// A pool of buffers of `buffer_bytes` that keeps at most `max_pooled` idle ones.
    pub fn new(buffer_bytes: usize, max_pooled: usize) -> Self {
        Self {
            buffer_bytes,
            max_pooled,
            free: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Capacity of every buffer of this pool.
    pub fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }

    /// An empty buffer, recycled when one is idle.
    pub fn take(&self) -> Buffer {
        let recycled = self
            .free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        match recycled {
            Some(bytes) => Buffer { bytes },
            None => Buffer::with_capacity(self.buffer_bytes),
        }
    }

    /// Gives a buffer back for reuse.
    pub fn recycle(&self, buffer: Buffer) {
        let mut bytes = buffer.bytes;
        if bytes.capacity() != self.buffer_bytes {
            return;
        }
        bytes.clear();
        let mut free = self
            .free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if free.len() < self.max_pooled {
            free.push(bytes);
        }
    }
}
