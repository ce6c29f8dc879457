//! The parts of a reference, checked one by one as the distribution
//! grammar has them: the domain (with Docker's defaults), path components,
//! the tag, the digest and its algorithm.

use super::{
    DEFAULT_DOMAIN, DIGEST_ALGORITHMS, LEGACY_DEFAULT_DOMAIN, MAX_TAG_LEN, OFFICIAL_REPO_PREFIX,
    is_lower_hex,
};

/// Docker's `splitDockerDomain`: returns the domain and the remainder
/// (path, tag and digest), with docker.io normalisation applied.
pub(super) fn split_docker_domain(s: &str) -> (&str, std::borrow::Cow<'_, str>) {
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
pub(super) fn check_domain(d: &str) -> Result<(), &'static str> {
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
pub(super) fn check_component(c: &str) -> Result<(), &'static str> {
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
pub(super) fn check_tag(t: &str) -> Result<(), &'static str> {
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
pub(super) fn check_digest_syntax(d: &str) -> Result<(), &'static str> {
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

pub(super) enum AlgorithmProblem {
    Unsupported(String),
    BadEncoding(String),
}

/// go-digest's validation: a known algorithm with exactly its number of
/// lowercase hex characters. Expects `check_digest_syntax` to have passed.
pub(super) fn check_digest_algorithm(d: &str) -> Result<(), AlgorithmProblem> {
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
