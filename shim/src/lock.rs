//! Exclusive locks that keep a second berthd off a root dir or socket.
//!
//! An advisory `flock` held for the daemon's lifetime: the kernel drops it
//! when the process dies, however it dies, so a crashed berthd never leaves a
//! lock behind that a human must clear.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{what} is in use by another berthd{holder} (lock {path} is held)")]
    Held {
        what: String,
        holder: String,
        path: PathBuf,
    },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Held until dropped.
#[derive(Debug)]
pub struct PidLock {
    _lock: Flock<File>,
}

impl PidLock {
    /// Takes the lock at `path` (creating it and its parent) and writes our
    /// pid into it; `what` names the guarded thing in the error message.
    pub fn acquire(path: &Path, what: &str) -> Result<PidLock, LockError> {
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                let holder = if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                };
                return Err(LockError::Held {
                    what: what.to_string(),
                    holder,
                    path: path.to_path_buf(),
                });
            }
            Err((_, errno)) => return Err(io(errno.into())),
        };
        lock.set_len(0).map_err(io)?;
        lock.rewind().map_err(io)?;
        writeln!(lock, "{}", std::process::id()).map_err(io)?;
        Ok(PidLock { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_and_released_on_drop() {
        let dir = std::env::temp_dir().join(format!("berth-lock-{}", std::process::id()));
        let path = dir.join("x.lock");
        let first = PidLock::acquire(&path, "root /x").unwrap();
        let e = PidLock::acquire(&path, "root /x").unwrap_err().to_string();
        assert!(e.contains("root /x is in use by another berthd"), "{e}");
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(first);
        PidLock::acquire(&path, "root /x").unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
