//! RocksDB, the tick-store peer of `mdbench archive` (feature `rocksdb`): Debian's
//! `librocksdb` through its C API (`rocksdb/c.h`, stable across releases), so the peer
//! costs no C++ build. Only what the benchmark needs: open, batched puts with the WAL
//! off, a flush of the memtables to SST files, a get.
#![allow(unsafe_code)] // a foreign library's C API

use std::ffi::{CStr, CString, c_char, c_int, c_uchar, c_void};
use std::path::Path;

use anyhow::{Result, bail};

#[repr(C)]
struct Db {
    _private: [u8; 0],
}
#[repr(C)]
struct Options {
    _private: [u8; 0],
}
#[repr(C)]
struct WriteOptions {
    _private: [u8; 0],
}
#[repr(C)]
struct ReadOptions {
    _private: [u8; 0],
}
#[repr(C)]
struct FlushOptions {
    _private: [u8; 0],
}
#[repr(C)]
struct WriteBatch {
    _private: [u8; 0],
}

#[link(name = "rocksdb")]
unsafe extern "C" {
    fn rocksdb_options_create() -> *mut Options;
    fn rocksdb_options_destroy(o: *mut Options);
    fn rocksdb_options_set_create_if_missing(o: *mut Options, v: c_uchar);
    fn rocksdb_options_increase_parallelism(o: *mut Options, threads: c_int);
    fn rocksdb_open(o: *const Options, name: *const c_char, err: *mut *mut c_char) -> *mut Db;
    fn rocksdb_close(db: *mut Db);
    fn rocksdb_writeoptions_create() -> *mut WriteOptions;
    fn rocksdb_writeoptions_destroy(o: *mut WriteOptions);
    fn rocksdb_writeoptions_disable_WAL(o: *mut WriteOptions, disable: c_int);
    fn rocksdb_readoptions_create() -> *mut ReadOptions;
    fn rocksdb_readoptions_destroy(o: *mut ReadOptions);
    fn rocksdb_flushoptions_create() -> *mut FlushOptions;
    fn rocksdb_flushoptions_destroy(o: *mut FlushOptions);
    fn rocksdb_flushoptions_set_wait(o: *mut FlushOptions, wait: c_uchar);
    fn rocksdb_flush(db: *mut Db, o: *const FlushOptions, err: *mut *mut c_char);
    fn rocksdb_writebatch_create() -> *mut WriteBatch;
    fn rocksdb_writebatch_destroy(b: *mut WriteBatch);
    fn rocksdb_writebatch_clear(b: *mut WriteBatch);
    fn rocksdb_writebatch_put(
        b: *mut WriteBatch,
        key: *const c_char,
        klen: usize,
        val: *const c_char,
        vlen: usize,
    );
    fn rocksdb_write(
        db: *mut Db,
        o: *const WriteOptions,
        b: *mut WriteBatch,
        err: *mut *mut c_char,
    );
    fn rocksdb_get(
        db: *mut Db,
        o: *const ReadOptions,
        key: *const c_char,
        klen: usize,
        vlen: *mut usize,
        err: *mut *mut c_char,
    ) -> *mut c_char;
    fn rocksdb_free(p: *mut c_void);
}

/// An error string from RocksDB, taken (and freed).
fn check(err: *mut c_char, what: &str) -> Result<()> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: RocksDB set `err` to a NUL-terminated string it allocated; read once, then
    // freed with its own allocator.
    let text = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: as above, freed once.
    unsafe { rocksdb_free(err.cast()) };
    bail!("rocksdb {what}: {text}")
}

/// A database opened for the benchmark: puts go in batches with the WAL off (its
/// fastest honest setting for a store rebuilt from the ring after a crash).
#[derive(Debug)]
pub struct RocksDb {
    db: *mut Db,
    options: *mut Options,
    write: *mut WriteOptions,
    read: *mut ReadOptions,
    batch: *mut WriteBatch,
    batched: usize,
}

impl RocksDb {
    /// Opens (creates) a database in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let name = CString::new(dir.as_os_str().as_encoded_bytes())?;
        let mut err = std::ptr::null_mut();
        // SAFETY: plain constructors and setters of RocksDB's C API on the objects they
        // return; `name` and `err` outlive the call; every object is destroyed in Drop
        // (or here when the open fails).
        unsafe {
            let options = rocksdb_options_create();
            rocksdb_options_set_create_if_missing(options, 1);
            rocksdb_options_increase_parallelism(options, 2);
            let db = rocksdb_open(options, name.as_ptr(), &mut err);
            if let Err(e) = check(err, "open") {
                rocksdb_options_destroy(options);
                return Err(e);
            }
            let write = rocksdb_writeoptions_create();
            rocksdb_writeoptions_disable_WAL(write, 1);
            Ok(Self {
                db,
                options,
                write,
                read: rocksdb_readoptions_create(),
                batch: rocksdb_writebatch_create(),
                batched: 0,
            })
        }
    }

    /// Adds a put to the current batch.
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        // SAFETY: the batch is ours; RocksDB copies key and value before returning.
        unsafe {
            rocksdb_writebatch_put(
                self.batch,
                key.as_ptr().cast(),
                key.len(),
                value.as_ptr().cast(),
                value.len(),
            );
        }
        self.batched += 1;
    }

    /// Puts in the current batch so far.
    pub fn batched(&self) -> usize {
        self.batched
    }

    /// Writes the current batch.
    pub fn write_batch(&mut self) -> Result<()> {
        let mut err = std::ptr::null_mut();
        // SAFETY: database, options and batch are ours and open; `err` outlives the call.
        unsafe {
            rocksdb_write(self.db, self.write, self.batch, &mut err);
            rocksdb_writebatch_clear(self.batch);
        }
        self.batched = 0;
        check(err, "write")
    }

    /// Flushes the memtables to SST files and waits for it.
    pub fn flush(&mut self) -> Result<()> {
        let mut err = std::ptr::null_mut();
        // SAFETY: the flush options are created, used and destroyed here; the database
        // is open; `err` outlives the call.
        unsafe {
            let options = rocksdb_flushoptions_create();
            rocksdb_flushoptions_set_wait(options, 1);
            rocksdb_flush(self.db, options, &mut err);
            rocksdb_flushoptions_destroy(options);
        }
        check(err, "flush")
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut err = std::ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: the database and read options are ours and open; key, `len` and
        // `err` outlive the call.
        let value = unsafe {
            rocksdb_get(
                self.db,
                self.read,
                key.as_ptr().cast(),
                key.len(),
                &mut len,
                &mut err,
            )
        };
        check(err, "get")?;
        if value.is_null() {
            return Ok(None);
        }
        // SAFETY: RocksDB returned `len` bytes it allocated at `value`: copied, then freed
        // once with its allocator.
        let bytes = unsafe { std::slice::from_raw_parts(value.cast::<u8>(), len) }.to_vec();
        // SAFETY: as above.
        unsafe { rocksdb_free(value.cast()) };
        Ok(Some(bytes))
    }
}

impl Drop for RocksDb {
    fn drop(&mut self) {
        // SAFETY: every object was created in `open` and is destroyed once, the database
        // closed before its options go.
        unsafe {
            rocksdb_writebatch_destroy(self.batch);
            rocksdb_readoptions_destroy(self.read);
            rocksdb_writeoptions_destroy(self.write);
            rocksdb_close(self.db);
            rocksdb_options_destroy(self.options);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The peer works at all: batched puts read back after a flush.
    #[test]
    fn rocksdb_peer_puts_in_batches_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = RocksDb::open(&dir.path().join("db")).unwrap();
        for seq in 0u64..10_000 {
            db.put(&seq.to_be_bytes(), &seq.to_le_bytes().repeat(8));
            if db.batched() == 1000 {
                db.write_batch().unwrap();
            }
        }
        db.write_batch().unwrap();
        db.flush().unwrap();
        assert_eq!(
            db.get(&9_999u64.to_be_bytes()).unwrap(),
            Some(9_999u64.to_le_bytes().repeat(8))
        );
        assert_eq!(db.get(&10_000u64.to_be_bytes()).unwrap(), None);
        let err = RocksDb::open(Path::new("/proc/no/such/dir")).unwrap_err();
        assert!(err.to_string().contains("rocksdb open"), "{err}");
    }
}
