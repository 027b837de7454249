//! The operating-system edge of the ring log: memory maps, open-file-description locks
//! and futexes. All of the ring's `unsafe` code is in this file.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};
use std::time::Duration;

use super::log::Positions;

/// A shared memory map of a whole file, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    /// The truncation guard covering this mapping, if it has one ([`Self::map_guarded`]).
    guard: Option<&'static TruncationGuard>,
}

// SAFETY: the mapping is plain shared memory; every access through it goes through atomics.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only hands out atomics.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `file` shared, read-write or read-only. The caller has checked
    /// that the file is at least `len` bytes long. `populate` faults every page in now
    /// (allocating tmpfs pages for a writer), so the hot path never takes a page fault:
    /// measured, first-touch faults put a fresh ring's one-way p99 at 4–7 µs instead of
    /// 0.6 µs.
    pub fn map(file: &File, len: usize, writable: bool, populate: bool) -> io::Result<Self> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh mapping chosen by the kernel (addr null) cannot alias any Rust
        // object; `file` is open for the duration of the call and the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED | if populate { libc::MAP_POPULATE } else { 0 },
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self {
            ptr,
            len,
            guard: None,
        })
    }

    /// Maps `len` bytes of `file` shared, like [`Self::map`], for a file that other
    /// processes may shrink: the readers file, which every reader opens read-write and so
    /// could truncate. A page of it that a truncation took away reads as zeros instead of
    /// killing this process with SIGBUS (ADR 0012); [`Self::truncated`] then says so. If
    /// all guard slots are taken the mapping is made unguarded (and a warning logged).
    pub fn map_guarded(file: &File, len: usize, writable: bool) -> io::Result<Self> {
        let mut mapping = Self::map(file, len, writable, false)?;
        mapping.guard = TruncationGuard::claim(mapping.ptr.as_ptr() as usize, len);
        if mapping.guard.is_none() {
            tracing::warn!(
                "all {GUARD_SLOTS} truncation guards are in use: a mapping is unguarded"
            );
        }
        Ok(mapping)
    }

    /// Whether a page of this (guarded) mapping was lost to a truncation of its file and
    /// now reads as zeros.
    pub fn truncated(&self) -> bool {
        self.guard
            .is_some_and(|guard| guard.hits.load(Ordering::Acquire) != 0)
    }

    #[inline]
    fn check(&self, offset: usize, bytes: usize, align: usize) {
        if !(offset.is_multiple_of(align)
            && offset.checked_add(bytes).is_some_and(|end| end <= self.len))
        {
            out_of_bounds(offset, bytes, self.len);
        }
    }

    /// `count` atomic words starting at byte `offset` (8-aligned, in bounds: checked).
    #[inline]
    pub fn words(&self, offset: usize, count: usize) -> &[AtomicU64] {
        self.check(offset, count * 8, 8);
        // SAFETY: the range is inside the mapping (checked) and 8-aligned (the mapping is
        // page-aligned, `offset` is checked); AtomicU64 has the size and alignment of u64
        // and any bit pattern is valid. The memory is only ever accessed atomically by mdi
        // processes, and the mapping outlives the returned borrow of `self`. On a read-only
        // mapping callers only load (readers never store).
        unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr().add(offset).cast::<AtomicU64>(), count)
        }
    }

    /// The atomic u64 at byte `offset`.
    #[inline]
    pub fn u64_at(&self, offset: usize) -> &AtomicU64 {
        &self.words(offset, 1)[0]
    }

    /// The atomic u32 at byte `offset` (4-aligned, in bounds: checked).
    #[inline]
    pub fn u32_at(&self, offset: usize) -> &AtomicU32 {
        self.check(offset, 4, 4);
        // SAFETY: in bounds and aligned (checked); AtomicU32 accepts any bit pattern; the
        // mapping outlives the borrow.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    /// Copies `out.len()` words starting at byte `offset` with atomic loads.
    pub fn load_words(&self, offset: usize, out: &mut [u64]) {
        let count = out.len();
        for (dst, src) in out.iter_mut().zip(self.words(offset, count)) {
            *dst = src.load(std::sync::atomic::Ordering::Acquire);
        }
    }
}

/// Where a ring's log lies in its mapping — the positions block, the data region and the
/// sparse index, as byte offsets and word counts — checked once, when the ring is opened,
/// so that the view taken for every record costs three pointers, not three bounds checks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogRegions {
    /// The mapping they were checked against (start and length).
    base: NonNull<u8>,
    len: usize,
    positions: usize,
    data: (usize, usize),
    index: (usize, usize),
}

// SAFETY: only offsets and the identity of a mapping; nothing is accessed through `base`.
unsafe impl Send for LogRegions {}
// SAFETY: as above.
unsafe impl Sync for LogRegions {}

impl Mapping {
    /// Checks the log's regions (byte offset, and words for the two word regions)
    /// against this mapping; `None` if one is out of bounds or unaligned, or the data
    /// region's words are not a power of two.
    pub fn log_regions(
        &self,
        positions: usize,
        data: (usize, usize),
        index: (usize, usize),
    ) -> Option<LogRegions> {
        let fits = |offset: usize, bytes: Option<usize>| {
            offset.is_multiple_of(8)
                && bytes
                    .and_then(|b| offset.checked_add(b))
                    .is_some_and(|end| end <= self.len)
        };
        if !(fits(positions, Some(size_of::<Positions>()))
            && fits(data.0, data.1.checked_mul(8))
            && fits(index.0, index.1.checked_mul(8))
            && data.1.is_power_of_two())
        {
            return None;
        }
        Some(LogRegions {
            base: self.ptr,
            len: self.len,
            positions,
            data,
            index,
        })
    }

    /// The positions block, the data region and the index of `regions`, which must have
    /// been checked against this mapping (asserted: a cheap comparison of two words).
    #[inline]
    pub fn log_parts(&self, regions: &LogRegions) -> (&Positions, RingWords<'_>, &[AtomicU64]) {
        if regions.base != self.ptr || regions.len != self.len {
            foreign_regions();
        }
        let base = self.ptr.as_ptr();
        // SAFETY: `regions` were checked by `log_regions` against this very mapping (same
        // start and length, asserted above): in bounds, 8-aligned. `Positions` is repr(C)
        // of AtomicU64s and AtomicU64 accepts any bit pattern; the memory is only accessed
        // atomically by mdi processes and the mapping outlives the borrows of `self`.
        unsafe {
            (
                &*base.add(regions.positions).cast::<Positions>(),
                RingWords {
                    words: std::slice::from_raw_parts(
                        base.add(regions.data.0).cast::<AtomicU64>(),
                        regions.data.1,
                    ),
                    // a power of two, checked by `log_regions`
                    mask: regions.data.1 - 1,
                },
                std::slice::from_raw_parts(
                    base.add(regions.index.0).cast::<AtomicU64>(),
                    regions.index.1,
                ),
            )
        }
    }
}

#[cold]
#[inline(never)]
fn foreign_regions() -> ! {
    panic!("ring log regions used with a mapping they were not checked against");
}

/// The panic of an access outside the mapping (a bug in the ring code), kept out of line
/// so that the checks in front of every view stay small enough to inline.
#[cold]
#[inline(never)]
fn out_of_bounds(offset: usize, bytes: usize, len: usize) -> ! {
    panic!("ring mapping access out of bounds: offset {offset} + {bytes} > {len}");
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            guard.release();
        }
        // SAFETY: `ptr`/`len` came from a successful mmap and nothing borrowed from `self`
        // can outlive it; after this the memory is not touched again.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// How many mappings of one process can be guarded against truncation at once.
const GUARD_SLOTS: usize = 256;

/// A range of this process's address space whose SIGBUS (a shared file page gone after
/// its file was truncated) is absorbed: the signal handler maps a private zero page over
/// the faulting page and counts the hit; the interrupted load or store then completes on
/// that page. Other SIGBUS signals go to the handler that was installed before ours.
#[derive(Debug)]
pub(crate) struct TruncationGuard {
    claimed: AtomicBool,
    /// Start address; 0 while the slot guards nothing.
    start: AtomicUsize,
    len: AtomicUsize,
    hits: AtomicU64,
}

static GUARDS: [TruncationGuard; GUARD_SLOTS] = [const {
    TruncationGuard {
        claimed: AtomicBool::new(false),
        start: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
        hits: AtomicU64::new(0),
    }
}; GUARD_SLOTS];

/// The SIGBUS action in place before ours (what a fault outside every guard gets).
static PREVIOUS_SIGBUS: OnceLock<libc::sigaction> = OnceLock::new();
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(4096);
static INSTALL_SIGBUS: Once = Once::new();

impl TruncationGuard {
    fn claim(start: usize, len: usize) -> Option<&'static Self> {
        install_sigbus_handler();
        let guard = GUARDS.iter().find(|slot| {
            slot.claimed
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })?;
        guard.hits.store(0, Ordering::Relaxed);
        guard.len.store(len, Ordering::Release);
        guard.start.store(start, Ordering::Release);
        Some(guard)
    }

    /// Stops guarding (before the range is unmapped) and frees the slot.
    fn release(&self) {
        self.start.store(0, Ordering::Release);
        self.claimed.store(false, Ordering::Release);
    }

    fn covers(&self, address: usize) -> bool {
        let start = self.start.load(Ordering::Acquire);
        start != 0 && address >= start && address - start < self.len.load(Ordering::Acquire)
    }
}

fn install_sigbus_handler() {
    INSTALL_SIGBUS.call_once(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if let Ok(page) = usize::try_from(page)
            && page.is_power_of_two()
        {
            PAGE_SIZE.store(page, Ordering::Relaxed);
        }
        // SAFETY: `sigaction` is a plain C struct for which all-zero is valid; the calls
        // read and write only the structs we pass, which live across them.
        unsafe {
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) != 0 {
                return;
            }
            let _ = PREVIOUS_SIGBUS.set(previous);
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
        }
    });
}

/// The SIGBUS handler: only async-signal-safe work (atomics, mmap, sigaction).
extern "C" fn on_sigbus(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel hands an SA_SIGINFO handler a valid siginfo.
    let address = unsafe { (*info).si_addr() } as usize;
    if let Some(guard) = GUARDS.iter().find(|guard| guard.covers(address)) {
        let page = address & !(PAGE_SIZE.load(Ordering::Relaxed) - 1);
        // SAFETY: the page lies inside a live mapping of ours (the guard covers it, and a
        // guard is released before its mapping is unmapped); replacing it with a private
        // zero page changes only what that file-backed page showed, which its file no
        // longer has. No Rust reference promises its old contents: the mapping is only
        // accessed through atomics.
        let mapped = unsafe {
            libc::mmap(
                page as *mut libc::c_void,
                PAGE_SIZE.load(Ordering::Relaxed),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if mapped != libc::MAP_FAILED {
            guard.hits.fetch_add(1, Ordering::AcqRel);
            return;
        }
    }
    let Some(previous) = PREVIOUS_SIGBUS.get() else {
        return;
    };
    let handler = previous.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // put the default back and return: the access faults again and the default
        // action (end the process, dump core) happens where the fault was
        // SAFETY: `previous` is a valid sigaction read at installation.
        unsafe { libc::sigaction(libc::SIGBUS, previous, std::ptr::null_mut()) };
        return;
    }
    // SAFETY: `handler` is the function installed before ours, with the signature its
    // flags say; we call it as the kernel would have.
    unsafe {
        if previous.sa_flags & libc::SA_SIGINFO != 0 {
            let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(handler);
            handler(signal, info, context);
        } else {
            let handler: extern "C" fn(libc::c_int) = std::mem::transmute(handler);
            handler(signal);
        }
    }
}

fn ofd_lock_request(kind: libc::c_int) -> libc::flock {
    // SAFETY: `flock` is a plain C struct for which all-zero is a valid value.
    let mut request: libc::flock = unsafe { std::mem::zeroed() };
    request.l_type = kind as libc::c_short;
    request.l_whence = libc::SEEK_SET as libc::c_short;
    // Lock only the first byte: the lock is a token, not a data range.
    request.l_start = 0;
    request.l_len = 1;
    request
}

/// Asks the CPU to fetch the cache line of `word` for writing (a hint: it loads and
/// stores nothing and never faults). The ring writer touches the line two pages ahead of
/// its position, because the hardware prefetcher stops at 4 KiB page boundaries: without
/// it every new page of the data region starts with stores that miss.
#[inline]
pub(crate) fn prefetch_for_write(word: &AtomicU64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHW (or PREFETCHT0 where it is missing) is a hint: it does not access
    // memory architecturally and cannot fault; the address is a live reference anyway.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_ET0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_ET0>(word.as_ptr().cast::<i8>().cast_const());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = word;
}

/// Asks the CPU to fetch the cache line holding `value` for reading, into every cache
/// level (a hint: it loads nothing architecturally and never faults). For look-ups known
/// ahead of time — the ITCH order books prefetch a packet's orders before applying its
/// messages; it lives here because the crate keeps its unsafe code in the ring module.
#[inline]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it does not access memory architecturally and cannot
    // fault; the address is a live reference anyway.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(value).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// A ring's data region as words: a power-of-two count, indexed by byte position modulo
/// the region's size — the mask is the bounds check, so the hot paths carry none.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingWords<'a> {
    words: &'a [AtomicU64],
    mask: usize,
}

impl<'a> RingWords<'a> {
    /// `words`, if their count is a power of two (the rings' own come from
    /// [`Mapping::log_parts`]).
    #[cfg(test)]
    pub fn new(words: &'a [AtomicU64]) -> Option<Self> {
        words.len().is_power_of_two().then(|| Self {
            words,
            mask: words.len() - 1,
        })
    }

    /// How many words.
    #[inline]
    pub fn len(self) -> usize {
        self.words.len()
    }

    /// The word holding byte `position` (modulo the region's size).
    #[inline]
    pub fn at(self, position: u64) -> &'a AtomicU64 {
        let i = word_index(position) & self.mask;
        // SAFETY: i <= mask == words.len() - 1.
        unsafe { self.words.get_unchecked(i) }
    }

    /// The `count` words from byte `position` (modulo the region's size); panics if they
    /// would run past the region's end.
    #[inline]
    pub fn span(self, position: u64, count: usize) -> &'a [AtomicU64] {
        let first = word_index(position) & self.mask;
        &self.words[first..first + count]
    }
}

/// The word a byte position falls in (before the modulo: only the low bits are used).
#[inline]
fn word_index(position: u64) -> usize {
    // truncation on a 32-bit target only drops bits the region mask drops anyway
    #[allow(clippy::cast_possible_truncation)]
    let index = (position >> 3) as usize;
    index
}

/// Reserves the first `len` bytes of `file` (`fallocate`): on tmpfs the pages are
/// allocated now, so a ring on a full filesystem fails here with `ENOSPC` instead of
/// dying of SIGBUS at a later append (ADR 0010). Filesystems that cannot reserve
/// (`EOPNOTSUPP`) are left as they are.
pub(crate) fn reserve(file: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(io::Error::other)?;
    loop {
        // SAFETY: fallocate takes a descriptor we own and plain integers; it touches no
        // memory of ours.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP) => return Ok(()),
            _ => return Err(err),
        }
    }
}

/// Takes the writer lock: an exclusive open-file-description lock on `file`, released by
/// the kernel when the last descriptor of this open closes — also on SIGKILL. Returns
/// `Ok(false)` when another open file holds it.
pub(crate) fn try_lock_writer(file: &File) -> io::Result<bool> {
    let request = ofd_lock_request(libc::F_WRLCK);
    // SAFETY: F_OFD_SETLK reads the flock struct we pass, which lives across the call.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &request) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN | libc::EACCES) => Ok(false),
        _ => Err(err),
    }
}

/// Which lock some open file description holds on the writer-lock byte of `file`, if
/// any (a write lock is a writer's; a read lock anyone who can read the file may take).
/// Does not take or disturb it.
pub(crate) fn held_lock(file: &File) -> io::Result<HeldLock> {
    let mut request = ofd_lock_request(libc::F_WRLCK);
    // SAFETY: F_OFD_GETLK reads and overwrites the flock struct we pass, which lives
    // across the call.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut request) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(match libc::c_int::from(request.l_type) {
        libc::F_UNLCK => HeldLock::None,
        libc::F_RDLCK => HeldLock::Read,
        _ => HeldLock::Write,
    })
}

/// See [`held_lock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeldLock {
    None,
    Read,
    Write,
}

/// Sleeps while `*word == expected`, at most `timeout`. Spurious wake-ups are possible.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(i32::try_from(timeout.subsec_nanos()).unwrap_or(0)),
    };
    // SAFETY: FUTEX_WAIT (shared: the word lives in a MAP_SHARED file mapping) only reads
    // the 4-byte aligned word and the timespec, both valid for the call's duration.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        );
    }
}

/// Wakes every thread sleeping on `word`, in any process; returns how many woke.
pub(crate) fn futex_wake_all(word: &AtomicU32) -> u64 {
    // SAFETY: FUTEX_WAKE only uses the word's address as a key; it is valid and aligned.
    let woken =
        unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
    u64::try_from(woken).unwrap_or(0)
}

/// Does process `pid` exist (in this pid namespace)?
pub(crate) fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 sends nothing; it only checks that the pid exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// This process's effective user id (whose files a writer may take over).
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
