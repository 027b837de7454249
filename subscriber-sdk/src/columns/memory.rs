//! The memory of a chunk's fixed-width columns: one allocation per chunk, carved into
//! a range per column, handed to Arrow (and through its C interface to polars or a
//! Parquet writer) without a copy.
//!
//! A chunk of 65 536 rows is about 10 MiB. New memory from the kernel costs as much as
//! filling the rows: 4 KiB page faults 65 ns a row of 170 bytes here (13 with huge
//! pages), and zeroing the pages a quarter of a whole read. So:
//! - chunks of a MiB or more are mappings of their own; one begun because the chunk
//!   before it filled up has huge pages advised (the first chunk of a batch may hold a
//!   few rows only);
//! - a mapping whose last buffer is dropped (polars dropped the DataFrame) is kept for
//!   the next chunk of its size, so that a reader polling batch after batch, or reading
//!   a stream again, fills pages that are already there, without a fault or zeroing:
//!   - huge-page mappings up to [`POOL_BYTES`], their pages marked free (`MADV_FREE`,
//!     as jemalloc's decay does): the kernel takes them back when it needs memory;
//!   - 4 KiB-page mappings (a batch's first chunk) up to [`POOL_DIRTY_BYTES`], as they
//!     are: marking them free costs more than it saves (140 against 120 ns a row
//!     polling batches of 65 536);
//! - what a chunk's columns did not use is given back when they are handed over.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use arrow_buffer::{ArrowNativeType, Buffer, ScalarBuffer};

/// Where each column's range begins (Arrow's recommended alignment).
const ALIGN: usize = 64;

/// A huge page.
const HUGE_PAGE: usize = 2 << 20;

/// Chunks of this size or more are mappings (and pooled); smaller ones come from the
/// allocator.
const MAPPED_MIN: usize = 1 << 20;

/// Freed huge-page mappings kept for reuse, their pages free for the kernel to take, at
/// most (bytes).
const POOL_BYTES: usize = 512 << 20;

/// Freed 4 KiB-page mappings kept for reuse as they are, at most (bytes).
const POOL_DIRTY_BYTES: usize = 64 << 20;

/// A mapping of chunk memory.
#[derive(Debug)]
struct Mapping {
    base: NonNull<u8>,
    len: usize,
    huge: bool,
}

// SAFETY: an anonymous mapping, not tied to a thread; a pooled one is not in use.
#[allow(unsafe_code)]
unsafe impl Send for Mapping {}

impl Mapping {
    #[allow(unsafe_code)]
    fn new(len: usize, huge: bool) -> Option<Self> {
        // SAFETY: a new private anonymous mapping: no existing memory is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        let base = NonNull::new(ptr.cast::<u8>())?;
        if huge {
            // SAFETY: advice on the mapping just made; no effect on its contents.
            // Without transparent huge pages it fails, and 4 KiB pages serve.
            unsafe { libc::madvise(ptr, len, libc::MADV_HUGEPAGE) };
        }
        Some(Self { base, len, huge })
    }

    #[allow(unsafe_code)]
    fn unmap(self) {
        // SAFETY: the mapping made in `new`, unmapped once (`self` is consumed), with no
        // buffer into it left.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// Mappings freed, most recent last.
#[derive(Debug)]
struct Pool {
    free: Vec<Mapping>,
    /// Bytes of huge-page mappings and of the others.
    bytes: [usize; 2],
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: Vec::new(),
    bytes: [0, 0],
});

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    POOL.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A freed mapping of `len` bytes (`huge`: with huge pages advised), the most recent.
fn take_pooled(len: usize, huge: bool) -> Option<Mapping> {
    let mut pool = pool();
    let i = pool
        .free
        .iter()
        .rposition(|m| m.len == len && m.huge == huge)?;
    let mapping = pool.free.swap_remove(i);
    pool.bytes[usize::from(huge)] -= mapping.len;
    Some(mapping)
}

/// Keeps a mapping no longer used for the next chunk of its size, or unmaps it when
/// the pool is full.
#[allow(unsafe_code)]
fn give_back(mapping: Mapping) {
    {
        let mut pool = pool();
        let (kind, limit) = if mapping.huge {
            (1, POOL_BYTES)
        } else {
            (0, POOL_DIRTY_BYTES)
        };
        let kept = if pool.bytes[kind] + mapping.len > limit {
            false
        } else if mapping.huge {
            // SAFETY: the whole mapping, no longer read by anyone: its contents may go.
            let freed = unsafe {
                libc::madvise(mapping.base.as_ptr().cast(), mapping.len, libc::MADV_FREE)
            };
            freed == 0
        } else {
            true
        };
        if kept {
            pool.bytes[kind] += mapping.len;
            pool.free.push(mapping);
            return;
        }
    }
    mapping.unmap();
}

/// The memory of one chunk.
#[derive(Debug)]
pub(super) struct ChunkMemory {
    base: NonNull<u8>,
    len: usize,
    /// A mapping (else from the allocator).
    mapped: Option<bool>,
}

// SAFETY: plain memory with no tie to a thread; while a chunk is filled each column's
// range is written through its own `Slots` only (disjoint ranges), and once handed to
// Arrow it is only read.
#[allow(unsafe_code)]
unsafe impl Send for ChunkMemory {}
// SAFETY: as above: shared references never write.
#[allow(unsafe_code)]
unsafe impl Sync for ChunkMemory {}

impl std::panic::RefUnwindSafe for ChunkMemory {}

impl ChunkMemory {
    /// `len` bytes (at least one alignment unit): a mapping from the pool or new (with
    /// huge pages advised if `huge`) when `len` is a MiB or more, else from the
    /// allocator.
    #[allow(unsafe_code)]
    pub(super) fn new(len: usize, huge: bool) -> Arc<Self> {
        let len = len.max(ALIGN).next_multiple_of(ALIGN);
        let huge = huge && len >= HUGE_PAGE;
        if len >= MAPPED_MIN
            && let Some(mapping) = take_pooled(len, huge).or_else(|| Mapping::new(len, huge))
        {
            return Arc::new(Self {
                base: mapping.base,
                len,
                mapped: Some(mapping.huge),
            });
        }
        let layout = Self::layout(len);
        // SAFETY: the layout's size is not zero (at least ALIGN).
        let ptr = unsafe { std::alloc::alloc(layout) };
        let base = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Arc::new(Self {
            base,
            len,
            mapped: None,
        })
    }

    fn layout(len: usize) -> Layout {
        Layout::from_size_align(len, ALIGN).expect("a chunk's size fits a layout")
    }

    /// Gives the whole pages of `offset..offset + len` back to the kernel (a column's
    /// rows never filled; nothing reads them).
    #[allow(unsafe_code)]
    fn release(&self, offset: usize, len: usize) {
        const PAGE: usize = 4096;
        if self.mapped.is_none() {
            return;
        }
        let end = (offset + len).min(self.len);
        let start = (self.base.as_ptr() as usize + offset).next_multiple_of(PAGE);
        let stop = (self.base.as_ptr() as usize + end) & !(PAGE - 1);
        if stop > start {
            // SAFETY: whole pages inside this mapping, in a column's range past the rows
            // written: no buffer covers them, so nothing reads or writes them again (they
            // read as zeros if anything did).
            unsafe {
                libc::madvise(
                    start as *mut libc::c_void,
                    stop - start,
                    libc::MADV_DONTNEED,
                )
            };
        }
    }
}

impl Drop for ChunkMemory {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        match self.mapped {
            // the last owner is gone, and with it every buffer into it
            Some(huge) => give_back(Mapping {
                base: self.base,
                len: self.len,
                huge,
            }),
            // SAFETY: allocated in `new` with this layout, freed once.
            None => unsafe { std::alloc::dealloc(self.base.as_ptr(), Self::layout(self.len)) },
        }
    }
}

/// Hands out the columns' ranges of a chunk's memory.
#[derive(Debug)]
pub(super) struct Carver {
    memory: Arc<ChunkMemory>,
    offset: usize,
    rows: usize,
}

impl Carver {
    /// The bytes a chunk of `rows` rows needs for columns whose values are `widths`
    /// bytes wide.
    pub(super) fn size(rows: usize, widths: impl IntoIterator<Item = usize>) -> usize {
        widths
            .into_iter()
            .map(|w| (w * rows).next_multiple_of(ALIGN))
            .sum()
    }

    pub(super) fn new(memory: Arc<ChunkMemory>, rows: usize) -> Self {
        Self {
            memory,
            offset: 0,
            rows,
        }
    }

    /// The next column's range: room for a value of each row.
    pub(super) fn slots<T: ArrowNativeType>(&mut self) -> Slots<T> {
        let bytes = (size_of::<T>() * self.rows).next_multiple_of(ALIGN);
        assert!(
            self.offset + bytes <= self.memory.len,
            "a chunk's memory is sized for its columns"
        );
        // SAFETY: `offset` is within the allocation (checked above), so the pointer is
        // in bounds and not null; ALIGN-aligned, which suits every native type.
        #[allow(unsafe_code)]
        let ptr = unsafe { NonNull::new_unchecked(self.memory.base.as_ptr().add(self.offset)) };
        let slots = Slots {
            ptr: ptr.cast::<T>(),
            len: 0,
            cap: self.rows,
            offset: self.offset,
            memory: Arc::clone(&self.memory),
        };
        self.offset += bytes;
        slots
    }
}

/// One column's values in a chunk: a vector of fixed capacity in the chunk's memory.
#[derive(Debug)]
pub(super) struct Slots<T> {
    ptr: NonNull<T>,
    len: usize,
    cap: usize,
    /// Where the range begins in the chunk's memory.
    offset: usize,
    memory: Arc<ChunkMemory>,
}

// SAFETY: a `Slots` is the only writer of its range (handed out once by the carver),
// and the memory it points into is `Send + Sync`.
#[allow(unsafe_code)]
unsafe impl<T: Send> Send for Slots<T> {}

impl<T: ArrowNativeType> Slots<T> {
    #[inline(always)]
    pub(super) fn push(&mut self, value: T) {
        assert!(self.len < self.cap, "a chunk holds its rows");
        // SAFETY: `len < cap`: inside this column's range, which only this `Slots`
        // writes; aligned for T (the range is ALIGN-aligned).
        #[allow(unsafe_code)]
        unsafe {
            self.ptr.as_ptr().add(self.len).write(value)
        };
        self.len += 1;
    }

    /// These values in a larger range (a chunk that grows, as a vector does).
    pub(super) fn moved_to(self, mut to: Slots<T>) -> Slots<T> {
        assert!(self.len <= to.cap, "a chunk grows");
        // SAFETY: `self.len` values written in `self`'s range, copied to the start of
        // `to`'s range (room checked above), another chunk's memory: no overlap.
        #[allow(unsafe_code)]
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), to.ptr.as_ptr(), self.len)
        };
        to.len = self.len;
        to
    }

    pub(super) fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: the first `len` values were written by `push`; `&mut self` is the only
        // access to this range.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len)
        }
    }

    /// The values as an Arrow buffer that keeps the chunk's memory alive; the pages of
    /// the rows not filled are given back.
    pub(super) fn into_buffer(self) -> ScalarBuffer<T> {
        let bytes = self.len * size_of::<T>();
        self.memory
            .release(self.offset + bytes, self.cap * size_of::<T>() - bytes);
        // SAFETY: `ptr..ptr + bytes` are the values written, inside the chunk's memory,
        // which the buffer owns a reference to; nothing writes them again (`self` is
        // consumed).
        #[allow(unsafe_code)]
        let buffer = unsafe { Buffer::from_custom_allocation(self.ptr.cast(), bytes, self.memory) };
        ScalarBuffer::new(buffer, 0, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A size no other test uses (the pool is the process's).
    const ODD: usize = (3 << 20) + 7 * ALIGN;

    #[test]
    fn a_freed_mapping_serves_the_next_chunk_of_its_size_and_the_pool_is_bounded() {
        let first = ChunkMemory::new(ODD, true);
        let base = first.base;
        let mut carver = Carver::new(Arc::clone(&first), 1000);
        let mut slots = carver.slots::<u64>();
        for i in 0..1000 {
            slots.push(i);
        }
        let buffer = slots.into_buffer();
        drop(first);
        drop(carver);
        // the buffer keeps the memory
        assert!(take_pooled(ODD, true).is_none());
        assert_eq!(buffer.iter().copied().sum::<u64>(), 999 * 1000 / 2);
        drop(buffer);
        // freed: the next chunk of that size is the same mapping; another size is not
        let other = ChunkMemory::new(ODD + ALIGN, true);
        assert_ne!(other.base, base);
        let again = ChunkMemory::new(ODD, true);
        assert_eq!(again.base, base);
        drop(again);
        // never more than the pool's bounds kept
        for (huge, limit) in [(true, POOL_BYTES), (false, POOL_DIRTY_BYTES)] {
            let many: Vec<_> = (0..limit / ODD + 2)
                .map(|_| ChunkMemory::new(ODD, huge))
                .collect();
            drop(many);
            assert!(pool().bytes[usize::from(huge)] <= limit);
            let kept = pool()
                .free
                .iter()
                .filter(|m| m.len == ODD && m.huge == huge)
                .count();
            assert!(kept <= limit / ODD, "{kept}");
            while let Some(m) = take_pooled(ODD, huge) {
                m.unmap();
            }
        }
    }
}
