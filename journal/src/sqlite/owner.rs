//! The owner lock of a SQLite journal: one process, one journal handle, owns the file.
//!
//! The lock is an exclusive `flock` on the database file itself, so the same file reached
//! through a symlink, a hard link or another spelling of its path has one owner. On
//! Linux, `flock` locks are independent of the POSIX record locks SQLite takes on the same
//! file. A file with several names (hard links) is refused outright: SQLite's
//! write-ahead log is named after the name used, so names would not see each other's
//! latest commits.
//!
//! One hazard shapes this module: closing *any* descriptor of a file releases every POSIX
//! lock the process holds on it, including SQLite's. So a descriptor of the database file
//! is never opened and closed while this process may have SQLite connections to it:
//! - a second owner in this process is refused from a registry of owned files (by device
//!   and inode), before any descriptor is opened;
//! - an owner keeps its descriptor until its journal is closed (after its pools);
//! - the probe of a read-only handle keeps one descriptor for the handle's lifetime.

use std::collections::HashSet;
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{JournalError, Result};

/// Which file: device and inode (every path to it gives the same).
type FileId = (u64, u64);

/// Files owned by a journal handle of this process.
static OWNED: Mutex<Option<HashSet<FileId>>> = Mutex::new(None);

#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn file_id(_meta: &std::fs::Metadata) -> FileId {
    (0, 0)
}

/// Refuses a file with more than one name (see [`JournalError::HardLinked`]).
pub(super) fn one_name(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if meta.nlink() > 1 {
            return Err(JournalError::HardLinked {
                path: path.to_owned(),
                links: meta.nlink(),
            });
        }
    }
    let _ = (path, meta);
    Ok(())
}

fn owned_here(id: FileId) -> bool {
    OWNED
        .lock()
        .map(|o| o.as_ref().is_some_and(|s| s.contains(&id)))
        .unwrap_or(false)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The exclusive owner lock of a journal file, held until dropped.
#[derive(Debug)]
pub(super) struct OwnerLock {
    file: File,
    id: FileId,
}

impl OwnerLock {
    /// Takes the lock on the file at `path` (created empty if missing), or fails with
    /// [`JournalError::Locked`] if this or another process owns it. Blocking.
    pub(super) fn take(path: &Path) -> Result<OwnerLock> {
        let mut owned = OWNED
            .lock()
            .map_err(|_| JournalError::Internal("the owner-lock registry is poisoned".into()))?;
        let owned = owned.get_or_insert_with(HashSet::new);
        let locked = || JournalError::Locked {
            path: path.to_owned(),
        };
        if let Ok(meta) = std::fs::metadata(path)
            && owned.contains(&file_id(&meta))
        {
            return Err(locked());
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io(path))?;
        let meta = file.metadata().map_err(io(path))?;
        // No SQLite connection of this process is on the file (it is not owned here), so
        // closing the descriptor on refusal releases nothing of SQLite's.
        one_name(path, &meta)?;
        let id = file_id(&meta);
        // A probe holds a shared lock for a moment: look a few times before giving up.
        for attempt in 0..5 {
            match file.try_lock() {
                Ok(()) => {
                    owned.insert(id);
                    return Ok(OwnerLock { file, id });
                }
                Err(TryLockError::WouldBlock) if attempt < 4 => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                // Another process owns it; this process has no connection to the file,
                // so closing the descriptor releases nothing of SQLite's.
                Err(TryLockError::WouldBlock) => break,
                Err(TryLockError::Error(e)) => return Err(io(path)(e)),
            }
        }
        Err(locked())
    }
}

impl Drop for OwnerLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
        if let Ok(mut owned) = OWNED.lock()
            && let Some(owned) = owned.as_mut()
        {
            owned.remove(&self.id);
        }
    }
}

/// Looks whether some process owns a journal file, for handles that do not own it.
#[derive(Debug)]
pub(super) struct OwnerProbe {
    path: PathBuf,
    /// Opened at the first look and kept (see the module's hazard).
    file: Mutex<Option<File>>,
}

impl OwnerProbe {
    /// A probe of the file at `path`.
    pub(super) fn new(path: PathBuf) -> Self {
        OwnerProbe {
            path,
            file: Mutex::new(None),
        }
    }

    /// Whether this or another process owns the file now. Blocking.
    pub(super) fn owned(&self) -> Result<bool> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io(&self.path)(e)),
        };
        if owned_here(file_id(&meta)) {
            return Ok(true);
        }
        let mut file = self
            .file
            .lock()
            .map_err(|_| JournalError::Internal("the owner probe is poisoned".into()))?;
        if file.is_none() {
            *file = Some(File::open(&self.path).map_err(io(&self.path))?);
        }
        let Some(file) = file.as_ref() else {
            return Ok(false);
        };
        match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                Ok(false)
            }
            Err(TryLockError::WouldBlock) => Ok(true),
            Err(TryLockError::Error(e)) => Err(io(&self.path)(e)),
        }
    }
}
