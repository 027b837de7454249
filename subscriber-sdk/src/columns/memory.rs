//! The memory of a chunk's fixed-width columns: one allocation per chunk, carved into
//! a range per column, handed to Arrow (and through its C interface to polars or a
//! Parquet writer) without a copy.
//!
//! A chunk of 65 536 rows is about 10 MiB of new memory. Taken from the kernel 4 KiB at
//! a time, its page faults cost as much as filling the rows (65 ns a row of 170 bytes
//! here against 13 with huge pages), so a chunk begun because the one before filled up
//! is mapped with huge pages advised; the first chunk of a batch, which may hold a few
//! rows only, comes from the allocator. What a chunk's columns did not use is given
//! back when they are handed over.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::Arc;

use arrow_buffer::{ArrowNativeType, Buffer, ScalarBuffer};

/// Where each column's range begins (Arrow's recommended alignment).
const ALIGN: usize = 64;

/// A huge page: smaller chunks are not mapped.
const HUGE_PAGE: usize = 2 << 20;

/// The memory of one chunk.
#[derive(Debug)]
pub(super) struct ChunkMemory {
    base: NonNull<u8>,
    len: usize,
    mapped: bool,
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
    /// `len` bytes (at least one alignment unit), mapped with huge pages advised when
    /// `huge` and `len` spans one, else from the allocator.
    #[allow(unsafe_code)]
    pub(super) fn new(len: usize, huge: bool) -> Arc<Self> {
        let len = len.max(ALIGN).next_multiple_of(ALIGN);
        if huge && len >= HUGE_PAGE {
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
            if ptr != libc::MAP_FAILED
                && let Some(base) = NonNull::new(ptr.cast::<u8>())
            {
                // SAFETY: advice on the mapping just made; no effect on its contents.
                // Without transparent huge pages it fails, and 4 KiB pages serve.
                unsafe { libc::madvise(ptr, len, libc::MADV_HUGEPAGE) };
                return Arc::new(Self {
                    base,
                    len,
                    mapped: true,
                });
            }
        }
        let layout = Self::layout(len);
        // SAFETY: the layout's size is not zero (at least ALIGN).
        let ptr = unsafe { std::alloc::alloc(layout) };
        let base = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Arc::new(Self {
            base,
            len,
            mapped: false,
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
        if !self.mapped {
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
        if self.mapped {
            // SAFETY: the mapping made in `new`, unmapped once: the last owner is gone,
            // and with it every buffer into it.
            unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
        } else {
            // SAFETY: allocated in `new` with this layout, freed once.
            unsafe { std::alloc::dealloc(self.base.as_ptr(), Self::layout(self.len)) };
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
