//! Keyed channels: a pre-shared key per channel; every datagram sealed with AES-128-GCM
//! under a key of the sending party's own, with a nonce that party never repeats
//! (`docs/protocol.md`, "Authentication"; ADR 0014).
//!
//! ```text
//! datagram = AES-128-GCM(Kp, nonce = 0u32 ‖ counter, aad = instance ‖ counter, frame)
//!            ‖ instance (16) ‖ counter (8, big-endian) ‖ tag (16)
//! K  = HMAC-SHA256(secret, CONTEXT)            secret: the key file's 32 bytes
//! Kp = HMAC-SHA256(K, SUBKEY ‖ instance)[..16] instance: 16 random bytes per party start
//! ```
//!
//! Each party (a sender, a receiver — receivers seal their NAKs and STATUS too) draws its
//! `instance` at start and counts its datagrams: a nonce is never used twice under one
//! subkey, and two parties share a subkey only if they drew the same 128 random bits.
//! A receiver of sealed datagrams keeps, per instance it has heard, the subkey and a
//! window of the counters seen: a datagram whose tag does not verify is refused
//! ([`OpenError::BadTag`]), one whose counter was seen already or is older than the
//! window ([`OpenError::Replayed`]) too.
//!
//! Why an AEAD and not HMAC-SHA256 or keyed BLAKE3: measured on this machine per
//! 1 320-byte frame, HMAC-SHA256 0.92 µs, keyed BLAKE3 1.21 µs, AES-128-GCM (ring,
//! AES-NI and carry-less multiply) 0.23 µs — the MACs cost a quarter of the link's
//! throughput, the AEAD an eighth (docs/benchmarks.md). The frames are encrypted as a
//! consequence: only holders of the key read them.
//!
//! No I/O here: the driver supplies the random `instance`.

use std::fmt;
use std::io::Read;
use std::path::Path;

use hmac::{Hmac, Mac};
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Bytes a sealed datagram carries beyond its frame: instance, counter, tag.
pub const TRAILER_LEN: usize = INSTANCE_LEN + 8 + TAG_LEN;
/// Bytes of the random per-party instance id.
pub const INSTANCE_LEN: usize = 16;
/// Bytes of the authentication tag.
pub const TAG_LEN: usize = 16;

/// Domain separation for the channel key.
const CONTEXT: &str = "mdi 2026-12-02 reliable-UDP channel key v1";
/// Domain separation for a party's subkey.
const SUBKEY: &[u8] = b"mdi aes-128-gcm subkey v1";

/// A key file is this long at most (32 raw bytes, or 64 hex digits with white space).
const MAX_KEY_FILE: u64 = 1024;

/// Parties (instances) an opener keeps keys and replay windows for; more are forgotten
/// least recently heard first (a forgotten party is re-derived when heard again, with a
/// fresh window).
const MAX_PEERS: usize = 64;
/// Counters behind the highest seen that are still accepted once (datagrams reordered
/// this far); older ones are taken for replays.
const WINDOW: u64 = 1024;

/// A channel's key. `Debug` shows only its fingerprint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ChannelKey([u8; 32]);

/// Why a key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading the file.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Others may read or write it.
    #[error("key file {path} is accessible to group or others (mode {mode:o}): chmod 600 it")]
    Exposed {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// Neither 32 bytes nor 64 hex digits.
    #[error(
        "key file {path} holds {len} bytes: a key is 32 bytes, or 64 hex digits (e.g. `openssl rand -hex 32`)"
    )]
    Malformed {
        /// The file.
        path: String,
        /// What it holds.
        len: usize,
    },
}

impl ChannelKey {
    /// The channel key for a 32-byte secret.
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        let mut derive = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        derive.update(CONTEXT.as_bytes());
        Self(derive.finalize().into_bytes().into())
    }

    /// Reads a key file: 32 raw bytes, or 64 hex digits (surrounding white space
    /// ignored). It must not be readable or writable by group or others.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let name = path.display().to_string();
        let io = |source| KeyError::Io {
            path: name.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(io)?;
        let mode = file.metadata().map_err(io)?.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed { path: name, mode });
        }
        let mut bytes = Vec::new();
        file.take(MAX_KEY_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        Self::from_file_bytes(&bytes).ok_or(KeyError::Malformed {
            path: name,
            len: bytes.len(),
        })
    }

    fn from_file_bytes(bytes: &[u8]) -> Option<Self> {
        if let Ok(raw) = <[u8; 32]>::try_from(bytes) {
            return Some(Self::from_secret(&raw));
        }
        let text = std::str::from_utf8(bytes).ok()?.trim();
        if text.len() != 64 {
            return None;
        }
        let mut raw = [0u8; 32];
        for (i, byte) in raw.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self::from_secret(&raw))
    }

    /// A short public name of the key (8 hex digits of a hash of it): the same on every
    /// host that has the same key file, and says nothing about the key.
    pub fn fingerprint(&self) -> String {
        let hash = Sha256::digest(self.0);
        hash[..4].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The AES-128-GCM key of the party `instance`.
    fn subkey(&self, instance: &[u8; INSTANCE_LEN]) -> LessSafeKey {
        let mut derive = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        derive.update(SUBKEY);
        derive.update(instance);
        let bytes = derive.finalize().into_bytes();
        let key = UnboundKey::new(&AES_128_GCM, &bytes[..16]).expect("16 bytes is an AES-128 key");
        LessSafeKey::new(key)
    }

    /// The sealer of a party whose random instance id is `instance` (16 bytes the driver
    /// drew from the operating system's random source: never reuse one).
    pub fn sealer(&self, instance: [u8; INSTANCE_LEN]) -> FrameSealer {
        FrameSealer {
            key: self.subkey(&instance),
            instance,
            counter: 0,
        }
    }

    /// An opener: checks and decrypts what parties holding this key sealed.
    pub fn opener(&self) -> FrameOpener {
        FrameOpener {
            key: *self,
            peers: Vec::new(),
            heard: 0,
        }
    }
}

/// The additional data of a datagram: its instance and counter.
fn aad(instance: &[u8; INSTANCE_LEN], counter: u64) -> [u8; INSTANCE_LEN + 8] {
    let mut aad = [0u8; INSTANCE_LEN + 8];
    aad[..INSTANCE_LEN].copy_from_slice(instance);
    aad[INSTANCE_LEN..].copy_from_slice(&counter.to_be_bytes());
    aad
}

fn nonce(counter: u64) -> Nonce {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(nonce)
}

/// Seals one party's datagrams. Not `Clone`: a copy would repeat nonces.
pub struct FrameSealer {
    key: LessSafeKey,
    instance: [u8; INSTANCE_LEN],
    counter: u64,
}

impl FrameSealer {
    /// Encrypts `buf[..len]` (a frame) in place and appends the trailer; returns the
    /// datagram's length. `buf` must have [`TRAILER_LEN`] more bytes of room (panics
    /// otherwise: the driver sizes its buffers).
    #[inline]
    pub fn seal(&mut self, buf: &mut [u8], len: usize) -> usize {
        let counter = self.counter;
        // 2^64 datagrams: never, at any rate a link carries
        self.counter = self.counter.checked_add(1).expect("counter exhausted");
        let aad = aad(&self.instance, counter);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(counter), Aad::from(aad), &mut buf[..len])
            .expect("a frame is far below AES-GCM's length limit");
        let trailer = &mut buf[len..len + TRAILER_LEN];
        trailer[..INSTANCE_LEN + 8].copy_from_slice(&aad);
        trailer[INSTANCE_LEN + 8..].copy_from_slice(tag.as_ref());
        len + TRAILER_LEN
    }

    /// Datagrams sealed so far.
    pub fn sealed(&self) -> u64 {
        self.counter
    }
}

impl fmt::Debug for FrameSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameSealer")
            .field("sealed", &self.counter)
            .finish_non_exhaustive()
    }
}

/// Why a datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Too short to be sealed, or its tag does not verify: not from a holder of the key,
    /// or altered.
    #[error("not sealed with the channel's key")]
    BadTag,
    /// A datagram of that party and counter was taken already (or is older than the
    /// replay window).
    #[error("replayed")]
    Replayed,
}

/// A party heard: its subkey and the counters seen.
struct Peer {
    instance: [u8; INSTANCE_LEN],
    key: LessSafeKey,
    /// The highest counter taken, and which of the `WINDOW` below it were taken.
    highest: Option<u64>,
    seen: [u64; (WINDOW / 64) as usize],
    /// When it was last heard (the opener's datagram count), for eviction.
    heard: u64,
}

impl Peer {
    fn bit(counter: u64) -> (usize, u64) {
        let slot = counter % WINDOW;
        ((slot / 64) as usize, 1u64 << (slot % 64))
    }

    /// Whether `counter` is new: above the highest, or within the window and not seen.
    fn fresh(&self, counter: u64) -> bool {
        match self.highest {
            None => true,
            Some(highest) if counter > highest => true,
            Some(highest) if highest - counter >= WINDOW => false,
            Some(_) => {
                let (word, bit) = Self::bit(counter);
                self.seen[word] & bit == 0
            }
        }
    }

    /// Marks `counter` taken (it was [`Self::fresh`] and verified).
    fn take(&mut self, counter: u64) {
        if let Some(highest) = self.highest
            && counter <= highest
        {
            let (word, bit) = Self::bit(counter);
            self.seen[word] |= bit;
            return;
        }
        // the window slides up: slots of counters now too old are cleared
        let from = self
            .highest
            .map_or(counter, |h| (h + 1).max(counter.saturating_sub(WINDOW - 1)));
        if counter - from >= WINDOW {
            self.seen = [0; (WINDOW / 64) as usize];
        } else {
            for old in from..counter {
                let (word, bit) = Self::bit(old);
                self.seen[word] &= !bit;
            }
        }
        let (word, bit) = Self::bit(counter);
        self.seen[word] |= bit;
        self.highest = Some(counter);
    }
}

/// Checks and decrypts sealed datagrams; keeps the parties it heard (at most 64).
pub struct FrameOpener {
    key: ChannelKey,
    peers: Vec<Peer>,
    heard: u64,
}

impl FrameOpener {
    /// The frame of a sealed datagram, decrypted in place; refused if its tag does not
    /// verify or it was replayed. Nothing is remembered of a refused datagram.
    pub fn open<'a>(&mut self, datagram: &'a mut [u8]) -> Result<&'a [u8], OpenError> {
        let len = datagram
            .len()
            .checked_sub(TRAILER_LEN)
            .ok_or(OpenError::BadTag)?;
        let (body, trailer) = datagram.split_at_mut(len);
        let mut instance = [0u8; INSTANCE_LEN];
        instance.copy_from_slice(&trailer[..INSTANCE_LEN]);
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&trailer[INSTANCE_LEN..INSTANCE_LEN + 8]);
        let counter = u64::from_be_bytes(counter);
        let tag = Tag::try_from(&trailer[INSTANCE_LEN + 8..]).map_err(|_| OpenError::BadTag)?;
        self.heard += 1;
        let index = match self.peers.iter().position(|p| p.instance == instance) {
            Some(index) => index,
            None => {
                // a party not heard before (or forgotten): its subkey, checked below
                // before it is kept — forged instances do not push real ones out
                let key = self.key.subkey(&instance);
                key.open_in_place_separate_tag(
                    nonce(counter),
                    Aad::from(aad(&instance, counter)),
                    tag,
                    body,
                    0..,
                )
                .map_err(|_| OpenError::BadTag)?;
                let mut peer = Peer {
                    instance,
                    key,
                    highest: None,
                    seen: [0; (WINDOW / 64) as usize],
                    heard: self.heard,
                };
                peer.take(counter);
                if self.peers.len() >= MAX_PEERS
                    && let Some(oldest) = (0..self.peers.len()).min_by_key(|&i| self.peers[i].heard)
                {
                    self.peers.swap_remove(oldest);
                }
                self.peers.push(peer);
                return Ok(body);
            }
        };
        let peer = &mut self.peers[index];
        if !peer.fresh(counter) {
            return Err(OpenError::Replayed);
        }
        peer.key
            .open_in_place_separate_tag(
                nonce(counter),
                Aad::from(aad(&instance, counter)),
                tag,
                body,
                0..,
            )
            .map_err(|_| OpenError::BadTag)?;
        peer.take(counter);
        peer.heard = self.heard;
        Ok(body)
    }
}

impl fmt::Debug for FrameOpener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameOpener")
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelKey(#{})", self.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> ChannelKey {
        ChannelKey::from_secret(&[byte; 32])
    }

    fn sealed(sealer: &mut FrameSealer, frame: &[u8]) -> Vec<u8> {
        let mut buf = frame.to_vec();
        buf.resize(frame.len() + TRAILER_LEN, 0);
        let len = sealer.seal(&mut buf, frame.len());
        buf.truncate(len);
        buf
    }

    #[test]
    fn a_sealed_frame_opens_and_any_change_is_refused() {
        let k = key(7);
        let frame: Vec<u8> = (0..200u8).collect();
        let datagram = sealed(&mut k.sealer([1; 16]), &frame);
        assert_eq!(datagram.len(), frame.len() + TRAILER_LEN);
        assert_ne!(&datagram[..frame.len()], &frame[..], "encrypted");
        assert_eq!(k.opener().open(&mut datagram.clone()), Ok(&frame[..]));
        for i in 0..datagram.len() {
            let mut bad = datagram.clone();
            bad[i] ^= 0x20;
            assert_eq!(
                k.opener().open(&mut bad),
                Err(OpenError::BadTag),
                "byte {i} flipped"
            );
        }
        assert_eq!(
            key(8).opener().open(&mut datagram.clone()),
            Err(OpenError::BadTag)
        );
        let mut short = datagram[..datagram.len() - 1].to_vec();
        assert_eq!(k.opener().open(&mut short), Err(OpenError::BadTag));
        assert_eq!(
            k.opener().open(&mut [0u8; TRAILER_LEN - 1]),
            Err(OpenError::BadTag)
        );
        assert_eq!(k.opener().open(&mut []), Err(OpenError::BadTag));
    }

    #[test]
    fn replays_are_refused_and_reordering_within_the_window_is_not() {
        let k = key(3);
        let mut sealer = k.sealer([9; 16]);
        let datagrams: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| sealed(&mut sealer, &i.to_le_bytes()))
            .collect();
        let mut opener = k.opener();
        // out of order within the window: all taken once
        let mut order: Vec<usize> = (0..2000).collect();
        for chunk in order.chunks_mut(500) {
            chunk.reverse();
        }
        for &i in &order {
            let frame = opener.open(&mut datagrams[i].clone()).unwrap().to_vec();
            assert_eq!(frame, (i as u32).to_le_bytes());
        }
        // every one again: replays
        for i in (0..2000).step_by(7) {
            assert_eq!(
                opener.open(&mut datagrams[i].clone()),
                Err(OpenError::Replayed),
                "{i}"
            );
        }
        // far ahead, then one older than the window
        assert!(opener.open(&mut datagrams[2999].clone()).is_ok());
        assert_eq!(
            opener.open(&mut datagrams[1500].clone()),
            Err(OpenError::Replayed)
        );
        // within the window below the new highest and never seen: taken
        assert!(opener.open(&mut datagrams[2990].clone()).is_ok());
        assert_eq!(
            opener.open(&mut datagrams[2990].clone()),
            Err(OpenError::Replayed)
        );
    }

    #[test]
    fn parties_are_told_apart_and_forged_instances_do_not_evict_real_ones() {
        let k = key(5);
        let mut a = k.sealer([1; 16]);
        let mut b = k.sealer([2; 16]);
        let mut opener = k.opener();
        // the same counter from two parties: two different nonces' subkeys, both taken
        assert!(opener.open(&mut sealed(&mut a, b"a0")).is_ok());
        assert!(opener.open(&mut sealed(&mut b, b"b0")).is_ok());
        // a flood of datagrams claiming new instances (no valid tag): refused, and a's
        // window survives
        let replay = sealed(&mut a, b"a1");
        assert!(opener.open(&mut replay.clone()).is_ok());
        for n in 0..500u32 {
            let mut forged = vec![0u8; 40 + TRAILER_LEN];
            forged[40..44].copy_from_slice(&n.to_le_bytes());
            assert_eq!(opener.open(&mut forged), Err(OpenError::BadTag));
        }
        assert_eq!(opener.open(&mut replay.clone()), Err(OpenError::Replayed));
        // more real parties than are kept: the least recently heard is forgotten
        for i in 0..(MAX_PEERS as u8 + 5) {
            let mut party = k.sealer([100 + i; 16]);
            assert!(opener.open(&mut sealed(&mut party, b"x")).is_ok());
        }
        assert!(opener.peers.len() <= MAX_PEERS);
    }

    /// RFC 4231 test case 2: the key derivation is standard HMAC-SHA256.
    #[test]
    fn the_derivation_is_standard_hmac_sha256() {
        let mut mac = HmacSha256::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn key_files_are_32_bytes_or_64_hex_digits() {
        let raw = [0xabu8; 32];
        let hex = format!("  {}\n", "ab".repeat(32));
        assert_eq!(
            ChannelKey::from_file_bytes(&raw),
            ChannelKey::from_file_bytes(hex.as_bytes())
        );
        assert_eq!(
            ChannelKey::from_file_bytes(&raw),
            Some(ChannelKey::from_secret(&raw))
        );
        for bad in [
            &b""[..],
            &[1u8; 31][..],
            &[1u8; 33][..],
            "zz".repeat(32).as_bytes(),
        ] {
            assert_eq!(ChannelKey::from_file_bytes(bad), None);
        }
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "01".repeat(32)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = ChannelKey::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let key = ChannelKey::from_file(&path).unwrap();
        assert_eq!(format!("{key:?}").len(), "ChannelKey(#)".len() + 8);
        assert!(!format!("{key:?}").contains("01010101"));
        std::fs::write(&path, "short").unwrap();
        let err = ChannelKey::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("32 bytes"), "{err}");
    }
}
