//! Container image references, parsed and normalised the way Docker and
//! containerd do it (the `github.com/distribution/reference` grammar and its
//! `ParseNormalizedNamed`, `TagNameOnly` and `FamiliarName`/`FamiliarString`
//! behaviour).
//!
//! The grammar, written out by hand here instead of with regular expressions:
//!
//! ```text
//! reference := name [ ":" tag ] [ "@" digest ]
//! name      := [ domain "/" ] path
//! domain    := host [ ":" port ]
//! host      := label ( "." label )* | "[" [a-fA-F0-9:]+ "]"
//! label     := [a-zA-Z0-9] | [a-zA-Z0-9] [a-zA-Z0-9-]* [a-zA-Z0-9]
//! port      := [0-9]+
//! path      := component ( "/" component )*
//! component := [a-z0-9]+ ( separator [a-z0-9]+ )*
//! separator := "." | "_" | "__" | "-"+
//! tag       := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest    := algorithm ":" [0-9a-fA-F]{32,}
//! algorithm := [A-Za-z][A-Za-z0-9]* ( [-_+.] [A-Za-z][A-Za-z0-9]* )*
//! ```
//!
//! Normalisation (Docker's `splitDockerDomain`): the part before the first
//! `/` is the domain only when it contains `.` or `:`, is exactly
//! `localhost`, or contains an uppercase letter; otherwise the domain is
//! `docker.io`. `index.docker.io` becomes `docker.io`, and a docker.io path
//! with a single component gets the `library/` prefix. Digests must use an
//! algorithm Docker knows (sha256, sha384, sha512) with exactly the right
//! number of lowercase hex characters.

use std::fmt;
use std::str::FromStr;

/// The registry that names without a domain refer to.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The old spelling of [`DEFAULT_DOMAIN`], normalised to it.
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// Prefix of Docker Hub's official images.
const OFFICIAL_REPO_PREFIX: &str = "library/";
/// The tag [`Reference::parse_with_default_tag`] adds.
pub const DEFAULT_TAG: &str = "latest";
/// Longest allowed repository path (domain excluded, `library/` included),
/// as in distribution/reference's `RepositoryNameTotalLengthMax`.
pub const MAX_PATH_LEN: usize = 255;
/// Longest allowed tag.
const MAX_TAG_LEN: usize = 128;
/// Digest algorithms Docker accepts, with their hex length.
const DIGEST_ALGORITHMS: &[(&str, usize)] = &[("sha256", 64), ("sha384", 96), ("sha512", 128)];

/// Why a string is not a valid image reference. Each message names the
/// input and what exactly is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference {input:?}: empty reference")]
    Empty { input: String },
    #[error(
        "invalid reference {input:?}: invalid character {ch:?} \
         (references are printable ASCII without whitespace)"
    )]
    InvalidCharacter { input: String, ch: char },
    #[error(
        "invalid reference {input:?}: cannot specify 64-byte hexadecimal strings \
         (that is an image id, not a repository name)"
    )]
    HexId { input: String },
    #[error("invalid reference {input:?}: repository name must be lowercase")]
    Uppercase { input: String },
    #[error("invalid reference {input:?}: invalid domain {domain:?}: {reason}")]
    InvalidDomain {
        input: String,
        domain: String,
        reason: &'static str,
    },
    #[error(
        "invalid reference {input:?}: invalid repository path component {component:?}: {reason}"
    )]
    InvalidPath {
        input: String,
        component: String,
        reason: &'static str,
    },
    #[error(
        "invalid reference {input:?}: reference too long (repository path is {len} characters, \
         over {MAX_PATH_LEN} characters for the name)"
    )]
    TooLong { input: String, len: usize },
    #[error("invalid reference {input:?}: invalid tag {tag:?}: {reason}")]
    InvalidTag {
        input: String,
        tag: String,
        reason: &'static str,
    },
    #[error("invalid reference {input:?}: invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        input: String,
        digest: String,
        reason: String,
    },
    #[error(
        "invalid reference {input:?}: unsupported digest algorithm {algorithm:?} \
         (supported: sha256, sha384, sha512)"
    )]
    UnsupportedDigestAlgorithm { input: String, algorithm: String },
}

/// A parsed, normalised reference: domain, path, optional tag, optional digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses and normalises a reference the way Docker's
    /// `ParseNormalizedNamed` does: `busybox` becomes
    /// `docker.io/library/busybox` (no tag is added), `user/app` becomes
    /// `docker.io/user/app`, `index.docker.io/x` becomes
    /// `docker.io/library/x`, and `localhost:5000/a`, `host:port/repo:tag`,
    /// `repo@sha256:<64 hex>` and `repo:tag@sha256:<64 hex>` keep their
    /// domain.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let input = || s.to_string();
        if s.is_empty() {
            return Err(ReferenceError::Empty { input: input() });
        }
        if let Some(ch) = s.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(ReferenceError::InvalidCharacter { input: input(), ch });
        }
        if s.len() == 64 && is_lower_hex(s) {
            return Err(ReferenceError::HexId { input: input() });
        }

        let (domain, remainder) = split_docker_domain(s);

        // Docker checks the repository part (everything before the first
        // ':') for uppercase before anything else.
        let remote = remainder.split(':').next().unwrap_or_default();
        if remote.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase { input: input() });
        }

        if let Err(reason) = check_domain(domain) {
            // Docker lowercases a reference that does not parse and, if that
            // parses, calls the problem an uppercase one.
            let lower = domain.to_ascii_lowercase();
            if lower != domain && check_component(&lower).is_ok() {
                return Err(ReferenceError::Uppercase { input: input() });
            }
            return Err(ReferenceError::InvalidDomain {
                input: input(),
                domain: domain.to_string(),
                reason,
            });
        }

        let path_end = remainder.find([':', '@']).unwrap_or(remainder.len());
        let (path, rest) = remainder.split_at(path_end);
        let (tag, digest) = if let Some(r) = rest.strip_prefix(':') {
            match r.split_once('@') {
                Some((t, d)) => (Some(t), Some(d)),
                None => (Some(r), None),
            }
        } else {
            (None, rest.strip_prefix('@'))
        };

        for component in path.split('/') {
            check_component(component).map_err(|reason| ReferenceError::InvalidPath {
                input: input(),
                component: component.to_string(),
                reason,
            })?;
        }
        if let Some(t) = tag {
            check_tag(t).map_err(|reason| ReferenceError::InvalidTag {
                input: input(),
                tag: t.to_string(),
                reason,
            })?;
        }
        if let Some(d) = digest {
            check_digest_syntax(d).map_err(|reason| ReferenceError::InvalidDigest {
                input: input(),
                digest: d.to_string(),
                reason: reason.to_string(),
            })?;
        }
        if path.len() > MAX_PATH_LEN {
            return Err(ReferenceError::TooLong {
                input: input(),
                len: path.len(),
            });
        }
        if let Some(d) = digest {
            check_digest_algorithm(d).map_err(|e| match e {
                AlgorithmProblem::Unsupported(algorithm) => {
                    ReferenceError::UnsupportedDigestAlgorithm {
                        input: input(),
                        algorithm,
                    }
                }
                AlgorithmProblem::BadEncoding(reason) => ReferenceError::InvalidDigest {
                    input: input(),
                    digest: d.to_string(),
                    reason,
                },
            })?;
        }

        Ok(Reference {
            domain: domain.to_string(),
            path: path.to_string(),
            tag: tag.map(str::to_string),
            digest: digest.map(str::to_string),
        })
    }

    /// [`parse`](Self::parse), then add the tag `latest` when neither a tag
    /// nor a digest is given (Docker's `TagNameOnly`).
    pub fn parse_with_default_tag(s: &str) -> Result<Reference, ReferenceError> {
        let mut r = Reference::parse(s)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some(DEFAULT_TAG.to_string());
        }
        Ok(r)
    }

    /// The registry: "docker.io", "localhost:5000", "127.0.0.1:5000".
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path within the registry: "library/busybox".
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, "sha256:...".
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// domain/path: "docker.io/library/busybox".
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The short name Docker shows: "busybox", "user/app",
    /// "localhost:5000/a" (Docker's `FamiliarName`).
    pub fn familiar_name(&self) -> String {
        if self.domain != DEFAULT_DOMAIN {
            return self.name();
        }
        match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
            Some(rest) if !rest.contains('/') => rest.to_string(),
            _ => self.path.clone(),
        }
    }

    /// The familiar name with tag and digest: "busybox:latest",
    /// "busybox@sha256:..." (Docker's `FamiliarString`).
    pub fn familiar_string(&self) -> String {
        let mut s = self.familiar_name();
        self.push_tag_and_digest(&mut s);
        s
    }

    /// name@digest with the tag dropped: the repo digest form
    /// "docker.io/library/busybox@sha256:...". The digest is not validated;
    /// pass one that [`is_digest`] accepts.
    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: None,
            digest: Some(digest.to_string()),
        }
    }

    /// The same reference with `tag` (any digest is kept, as in Docker's
    /// `WithTag`). The tag is not validated.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: Some(tag.to_string()),
            digest: self.digest.clone(),
        }
    }

    fn push_tag_and_digest(&self, s: &mut String) {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
    }
}

/// The full normalised string: "docker.io/library/busybox:latest",
/// "docker.io/library/busybox@sha256:...", "name:tag@sha256:...".
impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        self.push_tag_and_digest(&mut s);
        f.write_str(&s)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// Whether `s` is a digest Docker accepts: "sha256:" and 64 lowercase hex
/// characters, or sha384 with 96, or sha512 with 128.
pub fn is_digest(s: &str) -> bool {
    check_digest_syntax(s).is_ok() && check_digest_algorithm(s).is_ok()
}

/// Whether `s` is a bare image id or a prefix of one: 1 to 64 lowercase hex
/// characters.
pub fn is_image_id_prefix(s: &str) -> bool {
    (1..=64).contains(&s.len()) && is_lower_hex(s)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Docker's `splitDockerDomain`: returns the domain and the remainder
/// (path, tag and digest), with docker.io normalisation applied.
fn split_docker_domain(s: &str) -> (&str, std::borrow::Cow<'_, str>) {
    use std::borrow::Cow;
    let (domain, remote) = match s.split_once('/') {
        None => {
            return (
                DEFAULT_DOMAIN,
                Cow::Owned(format!("{OFFICIAL_REPO_PREFIX}{s}")),
            );
        }
        Some((first, rest)) => {
            if first == "localhost" {
                (first, rest)
            } else if first == LEGACY_DEFAULT_DOMAIN {
                (DEFAULT_DOMAIN, rest)
            } else if first.contains(['.', ':']) || first.bytes().any(|b| b.is_ascii_uppercase()) {
                (first, rest)
            } else {
                (DEFAULT_DOMAIN, s)
            }
        }
    };
    if domain == DEFAULT_DOMAIN && !remote.contains('/') {
        (
            domain,
            Cow::Owned(format!("{OFFICIAL_REPO_PREFIX}{remote}")),
        )
    } else {
        (domain, Cow::Borrowed(remote))
    }
}

/// domain := host [ ":" port ], host := dotted labels or a bracketed IPv6.
fn check_domain(d: &str) -> Result<(), &'static str> {
    let port = if let Some(inner) = d.strip_prefix('[') {
        let Some((addr, after)) = inner.split_once(']') else {
            return Err("unterminated '[' of an IPv6 address");
        };
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err("an IPv6 address may contain only hex digits and ':'");
        }
        after
    } else {
        let (host, port) = d.find(':').map_or((d, ""), |i| d.split_at(i));
        for label in host.split('.') {
            check_label(label)?;
        }
        port
    };
    if port.is_empty() {
        return Ok(());
    }
    match port.strip_prefix(':') {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        Some(_) => Err("the port must be one or more digits"),
        None => Err("only ':' and a port may follow the host"),
    }
}

fn check_label(label: &str) -> Result<(), &'static str> {
    let b = label.as_bytes();
    match (b.first(), b.last()) {
        (None, _) | (_, None) => Err("empty host label (leading, trailing or doubled '.')"),
        _ if !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-') => {
            Err("host labels may contain only letters, digits and '-'")
        }
        (Some(b'-'), _) | (_, Some(b'-')) => Err("host labels must not start or end with '-'"),
        _ => Ok(()),
    }
}

/// component := [a-z0-9]+ ( separator [a-z0-9]+ )*, separator := . | _ | __ | -+
fn check_component(c: &str) -> Result<(), &'static str> {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    if b.is_empty() {
        return Err(
            "empty component (missing repository name, or a leading, trailing or doubled '/')",
        );
    }
    if let Some(bad) = b
        .iter()
        .find(|&&x| !alnum(x) && !matches!(x, b'.' | b'_' | b'-'))
    {
        return Err(if bad.is_ascii_uppercase() {
            "must be lowercase"
        } else {
            "invalid character (allowed: a-z, 0-9, '.', '_', '-')"
        });
    }
    if !b.first().is_some_and(|&x| alnum(x)) || !b.last().is_some_and(|&x| alnum(x)) {
        return Err("must start and end with a lowercase letter or digit");
    }
    for sep in c.split(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit()) {
        let ok =
            sep.is_empty() || matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return Err("invalid separator (allowed: '.', '_', '__' or one or more '-')");
        }
    }
    Ok(())
}

/// tag := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
fn check_tag(t: &str) -> Result<(), &'static str> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let Some(&first) = t.as_bytes().first() else {
        return Err("empty tag");
    };
    if t.len() > MAX_TAG_LEN {
        return Err("longer than 128 characters");
    }
    if !word(first) {
        return Err("must start with a letter, digit or '_'");
    }
    if !t.bytes().all(|b| word(b) || b == b'.' || b == b'-') {
        return Err("may contain only letters, digits, '_', '.' and '-'");
    }
    Ok(())
}

/// The reference grammar's digest: algorithm ":" at least 32 hex characters.
fn check_digest_syntax(d: &str) -> Result<(), &'static str> {
    let Some((algorithm, encoded)) = d.split_once(':') else {
        return Err("expected algorithm:hex");
    };
    let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|part| {
        let b = part.as_bytes();
        b.first().is_some_and(u8::is_ascii_alphabetic) && b.iter().all(u8::is_ascii_alphanumeric)
    });
    if !algorithm_ok {
        return Err("malformed algorithm");
    }
    if encoded.len() < 32 || !encoded.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the encoded part must be at least 32 hex characters");
    }
    Ok(())
}

enum AlgorithmProblem {
    Unsupported(String),
    BadEncoding(String),
}

/// go-digest's validation: a known algorithm with exactly its number of
/// lowercase hex characters. Expects `check_digest_syntax` to have passed.
fn check_digest_algorithm(d: &str) -> Result<(), AlgorithmProblem> {
    let (algorithm, encoded) = d.split_once(':').unwrap_or((d, ""));
    let Some(&(name, len)) = DIGEST_ALGORITHMS
        .iter()
        .find(|(name, _)| *name == algorithm)
    else {
        return Err(AlgorithmProblem::Unsupported(algorithm.to_string()));
    };
    if encoded.len() != len || !is_lower_hex(encoded) {
        return Err(AlgorithmProblem::BadEncoding(format!(
            "{name} digests have {len} lowercase hex characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const H256: &str = "86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa";

    fn d256() -> String {
        format!("sha256:{H256}")
    }

    struct Valid {
        input: String,
        domain: &'static str,
        path: String,
        tag: Option<String>,
        digest: Option<String>,
        display: String,
        familiar: String,
    }

    fn v(
        input: impl Into<String>,
        domain: &'static str,
        path: impl Into<String>,
        tag: Option<&str>,
        digest: Option<&str>,
        familiar: impl Into<String>,
    ) -> Valid {
        let path = path.into();
        let mut display = format!("{domain}/{path}");
        if let Some(t) = tag {
            display = format!("{display}:{t}");
        }
        if let Some(d) = digest {
            display = format!("{display}@{d}");
        }
        Valid {
            input: input.into(),
            domain,
            path,
            tag: tag.map(str::to_string),
            digest: digest.map(str::to_string),
            display,
            familiar: familiar.into(),
        }
    }

    fn valid_cases() -> Vec<Valid> {
        let d = d256();
        let d = d.as_str();
        let h512 = "ab".repeat(64);
        let d512 = format!("sha512:{h512}");
        let h384 = "cd".repeat(48);
        let d384 = format!("sha384:{h384}");
        let tag128 = format!("v{}", "x".repeat(127));
        let long247 = "a".repeat(247);
        let long255 = "b".repeat(255);
        vec![
            v(
                "busybox",
                "docker.io",
                "library/busybox",
                None,
                None,
                "busybox",
            ),
            v(
                "busybox:1.36",
                "docker.io",
                "library/busybox",
                Some("1.36"),
                None,
                "busybox",
            ),
            v(
                "library/busybox",
                "docker.io",
                "library/busybox",
                None,
                None,
                "busybox",
            ),
            v(
                "docker.io/busybox",
                "docker.io",
                "library/busybox",
                None,
                None,
                "busybox",
            ),
            v(
                "docker.io/library/busybox:latest",
                "docker.io",
                "library/busybox",
                Some("latest"),
                None,
                "busybox",
            ),
            v(
                "index.docker.io/library/busybox",
                "docker.io",
                "library/busybox",
                None,
                None,
                "busybox",
            ),
            v(
                "index.docker.io/busybox",
                "docker.io",
                "library/busybox",
                None,
                None,
                "busybox",
            ),
            v(
                "index.docker.io/docker/docker",
                "docker.io",
                "docker/docker",
                None,
                None,
                "docker/docker",
            ),
            v("user/app", "docker.io", "user/app", None, None, "user/app"),
            v(
                "user/app:v2",
                "docker.io",
                "user/app",
                Some("v2"),
                None,
                "user/app",
            ),
            v(
                "library/foo/bar",
                "docker.io",
                "library/foo/bar",
                None,
                None,
                "library/foo/bar",
            ),
            v(
                "other/library",
                "docker.io",
                "other/library",
                None,
                None,
                "other/library",
            ),
            v(
                "localhost/foo",
                "localhost",
                "foo",
                None,
                None,
                "localhost/foo",
            ),
            v(
                "localhost:5000/foo:bar",
                "localhost:5000",
                "foo",
                Some("bar"),
                None,
                "localhost:5000/foo",
            ),
            v(
                "127.0.0.1:5000/a/b/c:v1",
                "127.0.0.1:5000",
                "a/b/c",
                Some("v1"),
                None,
                "127.0.0.1:5000/a/b/c",
            ),
            v(
                "[::1]:5000/x",
                "[::1]:5000",
                "x",
                None,
                None,
                "[::1]:5000/x",
            ),
            v("[::1]/x", "[::1]", "x", None, None, "[::1]/x"),
            v(
                "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
                "[fc00:1:2:3:4:5:6:7]:5000",
                "library/debian",
                None,
                None,
                "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
            ),
            v(
                format!("gcr.io/project/img@{d}"),
                "gcr.io",
                "project/img",
                None,
                Some(d),
                "gcr.io/project/img",
            ),
            v(
                format!("img:tag@{d}"),
                "docker.io",
                "library/img",
                Some("tag"),
                Some(d),
                "img",
            ),
            v(
                format!("busybox@{d}"),
                "docker.io",
                "library/busybox",
                None,
                Some(d),
                "busybox",
            ),
            v("a__b", "docker.io", "library/a__b", None, None, "a__b"),
            v("a--b", "docker.io", "library/a--b", None, None, "a--b"),
            v(
                "a---b/c.d_e",
                "docker.io",
                "a---b/c.d_e",
                None,
                None,
                "a---b/c.d_e",
            ),
            v(
                "ubuntu-12.04-base",
                "docker.io",
                "library/ubuntu-12.04-base",
                None,
                None,
                "ubuntu-12.04-base",
            ),
            v("Foo/bar", "Foo", "bar", None, None, "Foo/bar"),
            v(
                "LOCALDOMAIN/fooo/bar",
                "LOCALDOMAIN",
                "fooo/bar",
                None,
                None,
                "LOCALDOMAIN/fooo/bar",
            ),
            v(
                "Example.COM/x",
                "Example.COM",
                "x",
                None,
                None,
                "Example.COM/x",
            ),
            v(
                "example.com:8000/private/moonbase",
                "example.com:8000",
                "private/moonbase",
                None,
                None,
                "example.com:8000/private/moonbase",
            ),
            v(
                "registry-1.docker.io/library/x",
                "registry-1.docker.io",
                "library/x",
                None,
                None,
                "registry-1.docker.io/library/x",
            ),
            // A 64-hex name is fine once it is not the whole reference.
            v(
                format!("docker.io/{H256}"),
                "docker.io",
                format!("library/{H256}"),
                None,
                None,
                H256,
            ),
            v(
                format!("{H256}:tag"),
                "docker.io",
                format!("library/{H256}"),
                Some("tag"),
                None,
                H256,
            ),
            // No '/': the whole thing is a docker.io name, and ':' starts a tag.
            v(
                "192.168.0.1:80",
                "docker.io",
                "library/192.168.0.1",
                Some("80"),
                None,
                "192.168.0.1",
            ),
            v(
                "localhost:5000",
                "docker.io",
                "library/localhost",
                Some("5000"),
                None,
                "localhost",
            ),
            v(
                "docker.io",
                "docker.io",
                "library/docker.io",
                None,
                None,
                "docker.io",
            ),
            v(
                "img:_x",
                "docker.io",
                "library/img",
                Some("_x"),
                None,
                "img",
            ),
            v(
                "img:V1.0-RC_2",
                "docker.io",
                "library/img",
                Some("V1.0-RC_2"),
                None,
                "img",
            ),
            v(
                format!("img:{tag128}"),
                "docker.io",
                "library/img",
                Some(&tag128),
                None,
                "img",
            ),
            v(
                format!("repo@{d512}"),
                "docker.io",
                "library/repo",
                None,
                Some(&d512),
                "repo",
            ),
            v(
                format!("example.com/a@{d384}"),
                "example.com",
                "a",
                None,
                Some(&d384),
                "example.com/a",
            ),
            // 255 characters of path, counting the "library/" prefix.
            v(
                long247.clone(),
                "docker.io",
                format!("library/{long247}"),
                None,
                None,
                long247.clone(),
            ),
            // The domain does not count towards the limit.
            v(
                format!("example.com/{long255}"),
                "example.com",
                long255.clone(),
                None,
                None,
                format!("example.com/{long255}"),
            ),
        ]
    }

    #[test]
    fn valid_table() {
        let cases = valid_cases();
        assert!(cases.len() >= 40);
        for c in &cases {
            let r = Reference::parse(&c.input).unwrap_or_else(|e| panic!("{:?}: {e}", c.input));
            assert_eq!(r.domain(), c.domain, "domain of {:?}", c.input);
            assert_eq!(r.path(), c.path, "path of {:?}", c.input);
            assert_eq!(r.tag(), c.tag.as_deref(), "tag of {:?}", c.input);
            assert_eq!(r.digest(), c.digest.as_deref(), "digest of {:?}", c.input);
            assert_eq!(
                r.name(),
                format!("{}/{}", c.domain, c.path),
                "name of {:?}",
                c.input
            );
            assert_eq!(r.to_string(), c.display, "display of {:?}", c.input);
            assert_eq!(
                r.familiar_name(),
                c.familiar,
                "familiar name of {:?}",
                c.input
            );
            // Normalised and familiar strings parse back to the same reference.
            assert_eq!(
                Reference::parse(&r.to_string()),
                Ok(r.clone()),
                "reparse of {:?}",
                c.input
            );
            // (Except a bare 64-hex familiar string, which Docker refuses too.)
            if r.familiar_string() != H256 {
                assert_eq!(
                    Reference::parse(&r.familiar_string()),
                    Ok(r.clone()),
                    "familiar reparse of {:?}",
                    c.input
                );
            }
            assert_eq!(c.input.parse::<Reference>(), Ok(r.clone()));
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Kind {
        Empty,
        Char,
        HexId,
        Upper,
        Domain,
        Path,
        TooLong,
        Tag,
        Digest,
        Algo,
    }

    fn kind(e: &ReferenceError) -> Kind {
        match e {
            ReferenceError::Empty { .. } => Kind::Empty,
            ReferenceError::InvalidCharacter { .. } => Kind::Char,
            ReferenceError::HexId { .. } => Kind::HexId,
            ReferenceError::Uppercase { .. } => Kind::Upper,
            ReferenceError::InvalidDomain { .. } => Kind::Domain,
            ReferenceError::InvalidPath { .. } => Kind::Path,
            ReferenceError::TooLong { .. } => Kind::TooLong,
            ReferenceError::InvalidTag { .. } => Kind::Tag,
            ReferenceError::InvalidDigest { .. } => Kind::Digest,
            ReferenceError::UnsupportedDigestAlgorithm { .. } => Kind::Algo,
        }
    }

    #[test]
    fn invalid_table() {
        use Kind::*;
        let d = d256();
        let cases: Vec<(String, Kind)> = vec![
            (String::new(), Empty),
            ("Busybox".into(), Upper),
            ("docker/Docker".into(), Upper),
            ("docker.io/docker/Docker".into(), Upper),
            ("localhost:5000/Foo".into(), Upper),
            (format!("img@SHA256:{H256}"), Upper),
            ("Foo_Bar/x".into(), Upper),
            ("a-_b".into(), Path),
            ("-a".into(), Path),
            ("a-".into(), Path),
            ("-docker/docker".into(), Path),
            ("a___b".into(), Path),
            ("a._b".into(), Path),
            ("____/____".into(), Path),
            ("foo/".into(), Path),
            ("foo//bar".into(), Path),
            ("docker///docker".into(), Path),
            ("docker.io/docker///docker".into(), Path),
            (":tag".into(), Path),
            ("@sha256:abc".into(), Path),
            ("[fc00::1]:5000".into(), Path),
            ("a:".into(), Tag),
            ("img:-x".into(), Tag),
            ("img:.x".into(), Tag),
            ("img:tag:tag2".into(), Tag),
            (format!("img:{}", "t".repeat(129)), Tag),
            ("img@sha256:short".into(), Digest),
            (format!("img@sha256:{}", &H256[..63]), Digest),
            (format!("img@sha256:{H256}0"), Digest),
            (format!("img@sha256:{}", H256.to_ascii_uppercase()), Digest),
            ("img@sha256".into(), Digest),
            ("img:tag@".into(), Digest),
            (format!("img@1sha:{H256}"), Digest),
            (format!("img@{d}@x"), Digest),
            ("img@md5:abc".into(), Digest),
            (format!("img@md5:{}", &H256[..32]), Algo),
            (format!("img@sha1:{}", &H256[..40]), Algo),
            ("a b".into(), Char),
            (" busybox".into(), Char),
            ("busybox\n".into(), Char),
            ("héllo".into(), Char),
            (H256.into(), HexId),
            ("dock..er/docker".into(), Domain),
            ("dock_.er/docker".into(), Domain),
            ("-docker.io/docker/docker".into(), Domain),
            ("https://github.com/docker/docker".into(), Domain),
            ("fc00::1:5000/debian".into(), Domain),
            ("[fe80::1%eth0]:5000/debian".into(), Domain),
            ("[2001:db8:3:4::192.0.2.33]:5000/debian".into(), Domain),
            ("localhost:/foo".into(), Domain),
            ("localhost:50a/foo".into(), Domain),
            ("[::1]x/foo".into(), Domain),
            ("foo_bar.com/x".into(), Domain),
            ("a".repeat(248), TooLong),
            (format!("example.com/{}", "b".repeat(256)), TooLong),
        ];
        for (input, want) in &cases {
            match Reference::parse(input) {
                Ok(r) => panic!("{input:?} parsed as {r}"),
                Err(e) => {
                    assert_eq!(kind(&e), *want, "{input:?}: {e}");
                    assert!(
                        e.to_string()
                            .starts_with(&format!("invalid reference {input:?}: ")),
                        "{e}"
                    );
                }
            }
            assert!(Reference::parse_with_default_tag(input).is_err());
        }
    }

    #[test]
    fn error_messages() {
        let msg = |s: &str| Reference::parse(s).unwrap_err().to_string();
        assert_eq!(
            msg("Busybox"),
            "invalid reference \"Busybox\": repository name must be lowercase"
        );
        assert_eq!(
            msg("img:-x"),
            "invalid reference \"img:-x\": invalid tag \"-x\": must start with a letter, digit or '_'"
        );
        assert!(
            msg(&format!("img@sha256:{H256}0"))
                .ends_with(": sha256 digests have 64 lowercase hex characters")
        );
        assert_eq!(msg(""), "invalid reference \"\": empty reference");
        assert!(msg(&"a".repeat(300)).contains("reference too long"));
        assert!(msg(H256).contains("cannot specify 64-byte hexadecimal strings"));
        assert!(
            msg(&format!("img@md5:{}", &H256[..32]))
                .contains("unsupported digest algorithm \"md5\"")
        );
        assert!(msg("a-_b").contains("component \"a-_b\": invalid separator"));
        assert!(msg("a b").contains("invalid character ' '"));
    }

    #[test]
    fn default_tag() {
        let d = d256();
        let cases = [
            ("busybox", "docker.io/library/busybox:latest".to_string()),
            ("busybox:1.36", "docker.io/library/busybox:1.36".to_string()),
            ("localhost:5000/a", "localhost:5000/a:latest".to_string()),
            (
                &*format!("busybox@{d}"),
                format!("docker.io/library/busybox@{d}"),
            ),
            (
                &*format!("busybox:v1@{d}"),
                format!("docker.io/library/busybox:v1@{d}"),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                Reference::parse_with_default_tag(input)
                    .unwrap()
                    .to_string(),
                want
            );
        }
        let r = Reference::parse_with_default_tag("busybox").unwrap();
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.familiar_string(), "busybox:latest");
        assert_eq!(Reference::parse("busybox").unwrap().tag(), None);
    }

    #[test]
    fn with_tag_and_digest() {
        let d = d256();
        let r = Reference::parse_with_default_tag("busybox").unwrap();
        let rd = r.with_digest(&d);
        assert_eq!(rd.to_string(), format!("docker.io/library/busybox@{d}"));
        assert_eq!(rd.tag(), None);
        assert_eq!(rd.familiar_string(), format!("busybox@{d}"));
        assert_eq!(
            r.with_tag("1.36").to_string(),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(
            rd.with_tag("v1").to_string(),
            format!("docker.io/library/busybox:v1@{d}")
        );
        assert_eq!(Reference::parse(&rd.to_string()), Ok(rd));
    }

    #[test]
    fn digest_helpers() {
        assert!(is_digest(&d256()));
        assert!(is_digest(&format!("sha512:{}", "ab".repeat(64))));
        assert!(is_digest(&format!("sha384:{}", "ab".repeat(48))));
        assert!(!is_digest(H256));
        assert!(!is_digest(&format!("sha256:{}", H256.to_ascii_uppercase())));
        assert!(!is_digest(&format!("sha256:{}", &H256[..63])));
        assert!(!is_digest(&format!("sha512:{H256}")));
        assert!(!is_digest(&format!("md5:{}", &H256[..32])));
        assert!(!is_digest("sha256:"));
        assert!(!is_digest(""));

        assert!(is_image_id_prefix("a"));
        assert!(is_image_id_prefix("86e0e0"));
        assert!(is_image_id_prefix(H256));
        assert!(!is_image_id_prefix(""));
        assert!(!is_image_id_prefix(&format!("{H256}0")));
        assert!(!is_image_id_prefix("86E0"));
        assert!(!is_image_id_prefix("xyz"));
        assert!(!is_image_id_prefix(&d256()));
    }
}
