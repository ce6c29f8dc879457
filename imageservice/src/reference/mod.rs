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

mod grammar;
#[cfg(test)]
mod tests;

use grammar::{
    AlgorithmProblem, check_component, check_digest_algorithm, check_digest_syntax, check_domain,
    check_tag, split_docker_domain,
};

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
