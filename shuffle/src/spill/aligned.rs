//! Write buffers whose memory starts at a 4 KiB-aligned address, as `O_DIRECT` requires,
//! allocated without `unsafe` by over-allocating a `Vec` and starting at the first aligned
//! byte (as `engine`'s output chunks do).

/// Alignment of direct I/O memory, file offsets and lengths.
///
/// 4096 covers every device with logical blocks of up to 4 KiB, which is every device we meet.
pub(crate) const ALIGN: usize = 4096;

/// A fixed-capacity buffer; `capacity` is a multiple of [`ALIGN`] and the data starts at an
/// aligned address.
///
/// The heap memory does not move when the `AlignedBuf` moves, so its address stays valid
/// while the buffer travels to an I/O thread and back.
pub(crate) struct AlignedBuf {
    memory: Vec<u8>,
    base: usize,
    capacity: usize,
    len: usize,
}

impl AlignedBuf {
    /// A buffer of `capacity` bytes rounded up to [`ALIGN`].
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(ALIGN).next_multiple_of(ALIGN);
        // Zeroed allocations come from fresh pages: nothing is touched before it is written.
        let memory = vec![0u8; capacity + ALIGN];
        let base = (ALIGN - memory.as_ptr() as usize % ALIGN) % ALIGN;
        Self {
            memory,
            base,
            capacity,
            len: 0,
        }
    }

    /// A placeholder that holds no memory.
    pub(crate) fn empty() -> Self {
        Self {
            memory: Vec::new(),
            base: 0,
            capacity: 0,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len == self.capacity
    }

    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// Starts filling at `len` (bytes before it are not meant to be written); `len` is at most
    /// the capacity.
    pub(crate) fn start_at(&mut self, len: usize) {
        assert!(len <= self.capacity, "start_at beyond the capacity");
        self.len = len;
    }

    /// Copies as much of `bytes` as fits; returns how much.
    pub(crate) fn fill_from(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.capacity - self.len);
        let at = self.base + self.len;
        self.memory[at..at + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    /// Zero-fills up to the next multiple of [`ALIGN`] (buffers are reused, so the padding
    /// must be written explicitly).
    pub(crate) fn pad_to_align(&mut self) {
        let padded = self.len.next_multiple_of(ALIGN);
        let at = self.base + self.len;
        self.memory[at..self.base + padded].fill(0);
        self.len = padded;
    }

    /// The filled bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.memory[self.base..self.base + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_aligned_and_padding_zeroed() {
        let mut buf = AlignedBuf::new(5000);
        assert_eq!(buf.as_slice().as_ptr() as usize % ALIGN, 0);
        assert_eq!(buf.fill_from(&[7u8; 9000]), 8192);
        assert!(buf.is_full());
        buf.clear();
        buf.fill_from(&[1, 2, 3]);
        buf.pad_to_align();
        assert_eq!(buf.len(), ALIGN);
        assert_eq!(&buf.as_slice()[..4], &[1, 2, 3, 0]);
        assert!(buf.as_slice()[3..].iter().all(|&b| b == 0));
    }
}
