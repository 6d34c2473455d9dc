//! Making sled's writes really reach the disk.
//!
//! sled 0.34's `flush` writes its log with `pwrite` and then, on Linux,
//! `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)`. That starts and waits for writeback
//! of the data pages only: it does not persist the file's metadata (its size, after the log
//! grew), and it does not flush the device's volatile write cache. After a power loss the
//! acknowledged tail of the log could be gone. sled also writes values too large for its log
//! as separate files under `blobs/` without syncing them or their directory.
//!
//! So after every `flush` the ledger calls [`DiskSync::sync`], which `fsync`s (`sync_all`) the
//! log file, and any blob file that appeared since the last call together with the `blobs/`
//! directory. `fsync` on Linux persists data and metadata and issues a cache flush to the
//! device. Events are bounded (64 KiB), far below the blob threshold (segment size / 4 =
//! 128 KiB by default), but a contract's views snapshot grows past it, so a long history
//! has blobs; the check costs one `readdir` per commit.
//!
//! sled removes a blob once nothing points to it (a snapshot replaced), from its own
//! threads, at any time: a blob listed by `readdir` may be gone when it is opened. That is
//! not a failure (there is nothing left to persist); it once stopped a ledger taking writes
//! ("fsync: No such file or directory") after 1.4M events imported contract by contract.
//!
//! A blob is synced once, when first listed, so it must be whole by then. It is: sled
//! writes a blob whole in the call that stores its value, and only the writer thread
//! stores values that large (views snapshots), the same thread that calls `sync` after its
//! flush. Not covered here, and sled's own: it removes a replaced blob once the segment
//! holding the replacement is sealed, not once that is synced, so a power cut in between
//! can leave its log pointing at a removed blob. Only views snapshots are blobs; views are
//! derived, and a tree that does not read back is rebuilt from the chain.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

pub struct DiskSync {
    dir: PathBuf,
    log: File,
    known_blobs: HashSet<PathBuf>,
}

impl DiskSync {
    /// Opens sled's files in `dir` (after sled created them) and syncs the directory so the
    /// files' names are durable too.
    pub fn open(dir: &Path) -> io::Result<DiskSync> {
        let log = File::open(dir.join("db"))?;
        let mut sync = DiskSync { dir: dir.to_path_buf(), log, known_blobs: HashSet::new() };
        sync_dir(dir)?;
        if let Ok(conf) = File::open(dir.join("conf")) {
            conf.sync_all()?;
        }
        // Blobs present at open may never have been synced: sync them once now.
        sync.sync_new_blobs()?;
        Ok(sync)
    }

    /// Call after `sled::Db::flush`: persists what the flush wrote.
    pub fn sync(&mut self) -> io::Result<()> {
        self.log.sync_all()?;
        self.sync_new_blobs()
    }

    fn sync_new_blobs(&mut self) -> io::Result<()> {
        let blobs = self.dir.join("blobs");
        let entries = match std::fs::read_dir(&blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        self.sync_listed(&blobs, entries.map(|entry| entry.map(|e| e.path())))
    }

    /// Syncs the blobs of a listing of `blobs` not synced before (and then the directory),
    /// skipping any gone since it was listed, and forgets those no longer listed.
    fn sync_listed(&mut self, blobs: &Path, listed: impl Iterator<Item = io::Result<PathBuf>>) -> io::Result<()> {
        let mut present = HashSet::new();
        let mut any_new = false;
        for path in listed {
            let path = path?;
            if !self.known_blobs.contains(&path) {
                if !sync_if_present(&path)? {
                    continue;
                }
                any_new = true;
            }
            present.insert(path);
        }
        if any_new {
            sync_dir(blobs)?;
        }
        // Forget blobs sled removed, so the set stays as small as the directory.
        self.known_blobs = present;
        Ok(())
    }
}

/// fsyncs the file at `path`; `false` if it is not there (any more).
fn sync_if_present(path: &Path) -> io::Result<bool> {
    match File::open(path) {
        Ok(file) => file.sync_all().map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// fsync of a directory makes the names in it (created, renamed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_removed_between_listing_and_syncing_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), b"").unwrap();
        std::fs::create_dir(dir.path().join("blobs")).unwrap();
        let blob = dir.path().join("blobs").join("7");
        std::fs::write(&blob, b"x").unwrap();
        let mut sync = DiskSync::open(dir.path()).unwrap();
        assert!(sync.known_blobs.contains(&blob));
        assert!(sync_if_present(&blob).unwrap());
        std::fs::remove_file(&blob).unwrap();
        assert!(!sync_if_present(&blob).unwrap(), "gone: nothing to sync");
        // Blobs sled removed are forgotten; a new one is synced and remembered.
        let new = dir.path().join("blobs").join("8");
        sync.sync().unwrap();
        assert!(sync.known_blobs.is_empty());
        std::fs::write(&new, b"y").unwrap();
        sync.sync().unwrap();
        assert!(sync.known_blobs.contains(&new));
        // Listed, then removed before it is opened: skipped, not an error, not remembered.
        let listed_then_gone = dir.path().join("blobs").join("9");
        let blobs = dir.path().join("blobs");
        sync.sync_listed(&blobs, [Ok(new.clone()), Ok(listed_then_gone.clone())].into_iter()).unwrap();
        assert!(sync.known_blobs.contains(&new) && !sync.known_blobs.contains(&listed_then_gone));
        // A listing that fails still fails the sync.
        assert!(sync.sync_listed(&blobs, [Err(io::Error::other("readdir failed"))].into_iter()).is_err());
    }
}
