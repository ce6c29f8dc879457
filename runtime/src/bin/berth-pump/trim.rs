//! Dropping the pages the pump's start-up touched. Starting a process maps
//! pages of the dynamic loader, glibc and the pump's own text that are
//! never used again once the pump waits in its loop (symbol lookup,
//! relocation, argument parsing), and the kernel maps file pages in 64 KiB
//! runs around each one touched. Those pages are shared and stay in the page
//! cache, so they cost the node little (the pump's PSS), but they count in
//! every pump's RSS and keep the page cache mapped 250 times over.
//!
//! [`trim`] unmaps them: for each file mapping that holds no private copy
//! of a page (text and read-only data that was never written; smaps says
//! `Anonymous: 0 kB`), `MADV_DONTNEED` drops its page table entries, and
//! the pages the loop uses come back on their next touch, from the page
//! cache. A mapping with a private page (relocated data, `.data`) is left
//! alone: dropping it would lose what was written.

use std::io::Read;

/// Unmaps the clean file pages of the pump's mappings (see the module).
/// Best effort: a mapping that cannot be read or dropped stays as it is.
pub fn trim() {
    let mut smaps = String::new();
    if std::fs::File::open("/proc/self/smaps")
        .and_then(|f| f.take(1 << 20).read_to_string(&mut smaps))
        .is_err()
    {
        return;
    }
    for (start, end) in clean_file_mappings(&smaps) {
        let Some(addr) = std::ptr::NonNull::new(start as *mut std::ffi::c_void) else {
            continue;
        };
        #[allow(unsafe_code)]
        // SAFETY: the range is one whole mapping of this process, backed by
        // a file, holding no private (written) page: dropping its page table
        // entries loses nothing, the next access faults the same bytes back
        // from the file's pages.
        let _ = unsafe {
            nix::sys::mman::madvise(addr, end - start, nix::sys::mman::MmapAdvise::MADV_DONTNEED)
        };
    }
}

/// The address ranges of the file mappings in `smaps` that have no
/// anonymous (private, written) page and are not written to: the ones whose
/// pages can be dropped and faulted back unchanged.
fn clean_file_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    // The mapping being read: its range, while it is still a candidate.
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        if let Some((range, rest)) = line.split_once(' ')
            && let Some((a, b)) = range.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            // A mapping's header: `start-end perms offset dev inode path`.
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let perms = fields.first().copied().unwrap_or("");
            let path = fields.get(4).copied().unwrap_or("");
            let candidate = perms.starts_with('r')
                && !perms.contains('w')
                && perms.ends_with('p')
                && path.starts_with('/');
            current = candidate.then_some((a, b));
            continue;
        }
        if let Some(v) = line.strip_prefix("Anonymous:")
            && let Some(range) = current.take()
            && v.trim() == "0 kB"
        {
            out.push(range);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::clean_file_mappings;

    const SMAPS: &str = "\
55d0a0000000-55d0a0010000 r--p 00000000 00:01 1 /memfd:berth-pump (deleted)
Size:                 64 kB
Rss:                  64 kB
Anonymous:             0 kB
55d0a0010000-55d0a0080000 r-xp 00010000 00:01 1 /memfd:berth-pump (deleted)
Size:                448 kB
Anonymous:             0 kB
55d0a0080000-55d0a0090000 r--p 00080000 00:01 1 /memfd:berth-pump (deleted)
Size:                 64 kB
Anonymous:            12 kB
55d0a0090000-55d0a0091000 rw-p 00090000 00:01 1 /memfd:berth-pump (deleted)
Anonymous:             4 kB
55d0a1000000-55d0a1021000 rw-p 00000000 00:00 0 [heap]
Anonymous:             8 kB
7f0000000000-7f0000001000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
7f0000010000-7f0000020000 rw-s 00000000 00:05 7 /dev/shm/x
Anonymous:             0 kB
";

    #[test]
    fn only_clean_read_only_file_mappings_are_dropped() {
        // The text and the untouched rodata, not the relocated data (a
        // private copy), the writable data, the heap, the vDSO or a shared
        // writable mapping.
        assert_eq!(
            clean_file_mappings(SMAPS),
            vec![
                (0x55d0a0000000, 0x55d0a0010000),
                (0x55d0a0010000, 0x55d0a0080000)
            ]
        );
    }
}
