//! Opening a one-segment record body — what every mdi writer produces ([`super::flat`]
//! and the builder alike) — without the general reader's set-up: no segment table of
//! many entries, no segment lookup through a trait object on every bounds check. The
//! general path cost a subscriber about 300 of the 880 instructions it spends on a
//! trade; this one checks the same: every pointer followed is bounds-checked against the
//! segment, reads are limited as [`super::reader_options`] limits them, and nesting is
//! bounded. A body of more segments takes the general path.

use std::cell::Cell;

use capnp::private::arena::ReaderArena;
use capnp::private::layout::PointerReader;
use capnp::{Error, ErrorKind};

use super::reader_options;

const WORD: usize = 8;

/// A body's one segment, as the reader's arena.
pub(crate) struct SingleSegment<'a> {
    segment: &'a [u8],
    /// Words that may still be read (the traversal limit).
    budget: Cell<usize>,
    nesting_limit: i32,
}

impl<'a> SingleSegment<'a> {
    /// The segment of `body` if it is a one-segment message with its segment whole and
    /// 8-byte aligned, else `None` (for the general reader, which says what is wrong).
    pub(crate) fn of(body: &'a [u8]) -> Option<Self> {
        let table: [u8; 8] = body.get(..WORD)?.try_into().ok()?;
        let count = u32::from_le_bytes([table[0], table[1], table[2], table[3]]);
        let words = u32::from_le_bytes([table[4], table[5], table[6], table[7]]) as usize;
        // one segment (the count is stored less one), the root pointer at least
        if count != 0 || words == 0 {
            return None;
        }
        let segment = body.get(WORD..WORD + words.checked_mul(WORD)?)?;
        if !(segment.as_ptr() as usize).is_multiple_of(WORD) {
            return None;
        }
        let options = reader_options();
        Some(Self {
            segment,
            budget: Cell::new(
                options
                    .traversal_limit_in_words
                    .map_or(usize::MAX, |limit| limit),
            ),
            nesting_limit: options.nesting_limit,
        })
    }

    /// The message's root.
    pub(crate) fn root(&self) -> capnp::Result<capnp::any_pointer::Reader<'_>> {
        // SAFETY: the root pointer is the segment's first word (`of` checked there is
        // one); this arena bounds-checks every pointer read from it.
        #[allow(unsafe_code)]
        let pointer =
            unsafe { PointerReader::get_root(self, 0, self.segment.as_ptr(), self.nesting_limit)? };
        Ok(capnp::any_pointer::Reader::new(pointer))
    }

    fn read(&self, words: usize) -> capnp::Result<()> {
        match self.budget.get().checked_sub(words) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => Err(Error::from_kind(ErrorKind::ReadLimitExceeded)),
        }
    }
}

impl ReaderArena for SingleSegment<'_> {
    fn get_segment(&self, id: u32) -> capnp::Result<(*const u8, u32)> {
        match id {
            // at most a u32 of words (read from the table)
            0 => Ok((self.segment.as_ptr(), (self.segment.len() / WORD) as u32)),
            _ => Err(Error::from_kind(ErrorKind::InvalidSegmentId(id))),
        }
    }

    #[allow(unsafe_code)]
    unsafe fn check_offset(
        &self,
        segment_id: u32,
        start: *const u8,
        offset_in_words: i32,
    ) -> capnp::Result<*const u8> {
        if segment_id != 0 {
            return Err(Error::from_kind(ErrorKind::InvalidSegmentId(segment_id)));
        }
        let base = self.segment.as_ptr() as usize;
        let target =
            (start as usize).wrapping_sub(base) as i64 + i64::from(offset_in_words) * WORD as i64;
        if start as usize >= base && target >= 0 && target as usize <= self.segment.len() {
            // SAFETY: `target` is inside the segment or one past its end (checked above),
            // the same allocation `start` points into.
            Ok(unsafe { self.segment.as_ptr().add(target as usize) })
        } else {
            Err(Error::from_kind(
                ErrorKind::MessageContainsOutOfBoundsPointer,
            ))
        }
    }

    fn contains_interval(&self, id: u32, start: *const u8, words: usize) -> capnp::Result<()> {
        let base = self.segment.as_ptr() as usize;
        let at = (start as usize).wrapping_sub(base);
        let inside = id == 0
            && start as usize >= base
            && words
                .checked_mul(WORD)
                .and_then(|size| at.checked_add(size))
                .is_some_and(|end| end <= self.segment.len());
        if !inside {
            return Err(Error::from_kind(
                ErrorKind::MessageContainsOutOfBoundsPointer,
            ));
        }
        self.read(words)
    }

    fn amplified_read(&self, virtual_amount: u64) -> capnp::Result<()> {
        self.read(usize::try_from(virtual_amount).unwrap_or(usize::MAX))
    }

    fn nesting_limit(&self) -> i32 {
        self.nesting_limit
    }

    fn size_in_words(&self) -> usize {
        self.segment.len() / WORD
    }
}
