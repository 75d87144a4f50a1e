//! How full the BPF ring buffer is, read from the kernel's own positions.
//! The ring's first page holds the consumer position (which aya advances as
//! records are read), the second the producer position (which the programs
//! advance as they reserve); both count bytes since load, record headers and
//! padding included, so `producer − consumer` is exactly what waits to be read.
//! A second read-only mapping of those two pages (the kernel allows any
//! read-only mapping of a ring) costs two loads per look.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};

/// The ring's two position pages, mapped read-only.
pub struct RingMeter {
    pages: memmap2::Mmap,
    page: usize,
    size: u64,
}

impl RingMeter {
    /// Maps the positions of the ring buffer map `fd` of `size` data bytes.
    pub fn new(fd: BorrowedFd<'_>, size: u32) -> std::io::Result<RingMeter> {
        let page = page_size();
        // SAFETY: a read-only shared mapping of the map's first two pages; the
        // kernel writes them concurrently, so they are only read through atomics.
        let pages = unsafe { memmap2::MmapOptions::new().len(2 * page).map(fd.as_raw_fd())? };
        Ok(RingMeter { pages, page, size: u64::from(size) })
    }

    fn position(&self, offset: usize) -> u64 {
        // SAFETY: `offset` is 0 or one page into a mapping of two pages, so
        // 8-byte aligned and in bounds; the kernel stores these words with
        // release semantics (smp_store_release), read here with acquire.
        let word = unsafe { &*(self.pages.as_ptr().add(offset) as *const AtomicU64) };
        word.load(Ordering::Acquire)
    }

    /// Bytes the consumer has read (released) since the ring was created.
    pub fn consumed(&self) -> u64 {
        self.position(0)
    }

    /// Bytes waiting to be read now (reserved but not yet submitted included).
    pub fn fill(&self) -> u64 {
        // Consumer first: it never passes the producer, so a producer read
        // after it is never behind it.
        let consumer = self.consumed();
        self.position(self.page).saturating_sub(consumer)
    }

    /// The ring's data size, bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}
