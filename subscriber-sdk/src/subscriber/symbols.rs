//! Names as `&'static str` (the interner) and the (stream, instrument id) keys that
//! resolve symbols.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

use mdi_protocol::ring::{RingReader, Seq, ShmDir, StartAt};

use super::builder::read_definitions;

/// Stream names and symbols as `&'static str`: each distinct one is stored once for the
/// life of the process (there are few), so events carry them without allocating or
/// reference counting.
pub fn intern(text: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(&known) = names.get(text) {
        return known;
    }
    let leaked: &'static str = Box::leak(text.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// Hashing for (stream index, instrument id) keys: small integers chosen by the
/// publisher; a multiply is enough and SipHash costs more than the lookup.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct IdHash;

#[derive(Debug, Default)]
pub(super) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0 ^ n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl std::hash::BuildHasher for IdHash {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

/// Instruments looked for at most, per stream (a stream of undefined ids does not make
/// a look ahead of each).
const MAX_SOUGHT: usize = 1 << 16;

/// Looking ahead in a stream's ring for the definition of an instrument met before it:
/// read from the earliest record of a ring that wrapped, the first records come before
/// the next state refresh defines them again (ADR 0016). A ring that did not wrap
/// begins with its definitions, and nothing is looked ahead for.
#[derive(Debug, Default)]
pub(super) struct Lookahead {
    /// A second reader of the ring, ahead of the subscriber's, where the last look
    /// stopped (definitions before it have been read).
    scan: Option<RingReader>,
    /// Instruments looked for (each once; a definition read later is learnt on the way).
    sought: HashSet<u32, IdHash>,
}

impl Lookahead {
    /// The symbol of instrument `id`, met at `seq` in `stream` (index `index`) before its
    /// definition: read ahead in the ring until it is defined, learning every definition
    /// on the way (the first time `id` is met only).
    pub(super) fn find(
        &mut self,
        shm: &ShmDir,
        (index, stream): (usize, &str),
        id: u32,
        seq: Seq,
        instruments: &mut HashMap<(usize, u32), &'static str, IdHash>,
    ) -> Option<&'static str> {
        // the whole feed's status has no instrument
        if id == 0 || self.sought.len() >= MAX_SOUGHT || !self.sought.insert(id) {
            return None;
        }
        // From the record met: the definitions before it have been read already (by
        // the subscriber on its way, or before its start). A scan left behind by an
        // earlier look starts again there, not where it stopped (a live reader meeting a
        // new instrument hours later would read the whole ring again); one the ring no
        // longer holds (a record from the archive) starts at the ring's earliest.
        if self
            .scan
            .as_ref()
            .and_then(RingReader::next_seq)
            .is_none_or(|next| next < seq)
        {
            self.scan = RingReader::open_with(shm, stream, StartAt::Sequence(seq), false)
                .or_else(|_| RingReader::open_with(shm, stream, StartAt::Earliest, false))
                .ok();
        }
        let scan = self.scan.as_mut()?;
        let key = (index, id);
        read_definitions(
            scan,
            index,
            None,
            |known| known.contains_key(&key),
            instruments,
        );
        instruments.get(&key).copied()
    }

    /// The ring was replaced: look again, in the new one.
    pub(super) fn reset(&mut self) {
        *self = Self::default();
    }
}
