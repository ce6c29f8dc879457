//! Bounds on what a pull may make of an image (berthd's `[images]` config):
//! how many bytes and entries one layer may unpack to, how large a
//! manifest, index or config blob may be, and how much free space of the
//! image filesystem a pull must leave. Images are hostile input: without
//! these a 339-byte gzip layer unpacks to gigabytes.

use std::fmt;
use std::path::Path;

/// The limits, with the defaults documented in the README.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes one layer may unpack to: the uncompressed tar stream and
    /// the apparent size of its files (sparse holes included) are each
    /// bounded by it, and so is the compressed blob.
    pub max_layer_unpacked_size: u64,
    /// Most entries (files, directories, links, whiteouts...) per layer.
    pub max_layer_entries: u64,
    /// Most layers per image (overlayfs stacks at most 500 lower layers).
    pub max_layers: u64,
    /// Most bytes of a manifest or an index.
    pub max_manifest_size: u64,
    /// Most bytes of an image config blob.
    pub max_config_size: u64,
    /// Free space of the image filesystem a pull may not eat into.
    pub min_free_space: FreeSpace,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_layer_unpacked_size: 32 << 30,
            max_layer_entries: 1_000_000,
            max_layers: 128,
            max_manifest_size: 4 << 20,
            max_config_size: 8 << 20,
            min_free_space: FreeSpace::Percent(5),
        }
    }
}

/// A free-space reserve: bytes, or a percentage of the filesystem's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeSpace {
    Bytes(u64),
    Percent(u8),
}

impl fmt::Display for FreeSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FreeSpace::Bytes(b) => write!(f, "{}", Size(*b)),
            FreeSpace::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl FreeSpace {
    /// Parses `"5%"` or a size (see [`parse_size`]).
    pub fn parse(s: &str) -> Result<FreeSpace, String> {
        match s.trim().strip_suffix('%') {
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= 100 => Ok(FreeSpace::Percent(p)),
                _ => Err(format!("{s:?} is not a percentage from 0% to 100%")),
            },
            None => parse_size(s).map(FreeSpace::Bytes),
        }
    }

    /// Refuses if writing `more` bytes into the filesystem holding `dir`
    /// would leave less free than the reserve.
    pub fn check(&self, dir: &Path, more: u64) -> Result<(), FreeSpaceError> {
        if *self == FreeSpace::Bytes(0) || *self == FreeSpace::Percent(0) {
            return Ok(());
        }
        let st = nix::sys::statvfs::statvfs(dir).map_err(|e| FreeSpaceError::Statvfs(e.into()))?;
        let frsize = st.fragment_size() as u64;
        let avail = (st.blocks_available() as u64).saturating_mul(frsize);
        let reserve = match *self {
            FreeSpace::Bytes(b) => b,
            FreeSpace::Percent(p) => {
                let total = (st.blocks() as u64).saturating_mul(frsize);
                (u128::from(total) * u128::from(p) / 100) as u64
            }
        };
        if avail.saturating_sub(more) < reserve {
            let what = if more == 0 {
                format!("the image filesystem has only {avail} bytes free")
            } else {
                format!(
                    "writing {more} bytes would leave {} of the {avail} bytes free on the image filesystem",
                    avail.saturating_sub(more)
                )
            };
            return Err(FreeSpaceError::Exceeded(Exceeded {
                what,
                key: "min_free_space",
                limit: format!("\"{self}\""),
            }));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FreeSpaceError {
    #[error(transparent)]
    Exceeded(Exceeded),
    #[error("statvfs of the image filesystem: {0}")]
    Statvfs(std::io::Error),
}

/// A limit was crossed: what happened, the `[images]` key and its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} (limit: [images] {key} = {limit})")]
pub struct Exceeded {
    pub what: String,
    pub key: &'static str,
    pub limit: String,
}

impl Exceeded {
    /// "`what` more than `limit` bytes".
    pub fn bytes(what: &str, key: &'static str, limit: u64) -> Exceeded {
        Exceeded {
            what: format!("{what} more than {} bytes", limit),
            key,
            limit: format!("\"{}\"", Size(limit)),
        }
    }
}

/// A byte count shown the way it may be written in the config.
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
            if n >= 1 << shift && n.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", n >> shift);
            }
        }
        write!(f, "{n}")
    }
}

/// Parses a size: plain bytes (`"1048576"`) or a number with a unit, `B`,
/// `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024) or `KB`/`MB`/`GB`/`TB`
/// (powers of 1000), optionally separated by a space: `"64MiB"`, `"4 GB"`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a size such as \"1048576\", \"64MiB\" or \"4GiB\"");
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits == 0 {
        return Err(bad());
    }
    let n: u64 = t[..digits].parse().map_err(|_| bad())?;
    let mult: u64 = match t[digits..].trim_start() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("4 GiB"), Ok(4 << 30));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert_eq!(parse_size("3KiB"), Ok(3 << 10));
        assert_eq!(parse_size("5GB"), Ok(5_000_000_000));
        assert_eq!(parse_size("7kB"), Ok(7_000));
        assert_eq!(parse_size("12B"), Ok(12));
        for bad in ["", "MiB", "-1", "1.5GiB", "4 gigs", "99999999999TiB", " "] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains("is not a size"), "{bad}: {e}");
        }
        assert_eq!(Size(32 << 30).to_string(), "32GiB");
        assert_eq!(Size(1000).to_string(), "1000");
        assert_eq!(Size(3 << 10).to_string(), "3KiB");
    }

    #[test]
    fn free_space() {
        assert_eq!(FreeSpace::parse("5%"), Ok(FreeSpace::Percent(5)));
        assert_eq!(FreeSpace::parse("1GiB"), Ok(FreeSpace::Bytes(1 << 30)));
        assert!(FreeSpace::parse("101%").is_err());
        assert!(FreeSpace::parse("x%").is_err());
        let tmp = std::env::temp_dir();
        FreeSpace::Percent(0).check(&tmp, u64::MAX).unwrap();
        FreeSpace::Bytes(1).check(&tmp, 0).unwrap();
        // More than any disk has.
        let e = FreeSpace::Percent(100).check(&tmp, 1).unwrap_err();
        assert!(
            e.to_string().contains("[images] min_free_space = \"100%\""),
            "{e}"
        );
        let e = FreeSpace::Bytes(1).check(&tmp, u64::MAX).unwrap_err();
        assert!(matches!(e, FreeSpaceError::Exceeded(_)), "{e}");
    }
}
