//! The `hosts.toml` format: the TOML as containerd reads it (ordered
//! `[host."…"]` tables, one-or-many values, client certificate pairs), and
//! URLs, paths and capabilities checked into hosts; errors name file and line.

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use toml::Spanned;

use super::{Capabilities, Entry, HostsError, Scheme};

/// Settings shared by the top level (the server) and each `[host."…"]`.
#[derive(Debug, Default, Deserialize)]
struct RawHost {
    capabilities: Option<Vec<Spanned<String>>>,
    ca: Option<OneOrMany>,
    client: Option<ClientList>,
    skip_verify: Option<bool>,
    header: Option<OrderedMap<OneOrMany>>,
    override_path: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct RawFile {
    server: Option<Spanned<String>>,
    host: Option<OrderedMap<RawHost>>,
    // The server's settings, spelled out rather than `#[serde(flatten)]`:
    // flattening would drop the spans that keep header order.
    capabilities: Option<Vec<Spanned<String>>>,
    ca: Option<OneOrMany>,
    client: Option<ClientList>,
    skip_verify: Option<bool>,
    header: Option<OrderedMap<OneOrMany>>,
    override_path: Option<bool>,
}

/// A TOML table in document order (first appearance of each key), whatever
/// map type the `toml` crate was built with: keys are ordered by their span.
#[derive(Debug, Default)]
struct OrderedMap<V>(Vec<(Spanned<String>, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for V_<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut v: Vec<(Spanned<String>, V)> = Vec::new();
                while let Some((k, val)) = m.next_entry::<Spanned<String>, V>()? {
                    v.push((k, val));
                }
                v.sort_by_key(|(k, _)| k.span().start);
                Ok(OrderedMap(v))
            }
        }
        d.deserialize_map(V_(std::marker::PhantomData))
    }
}

/// `"x"` or `["x", "y"]`.
#[derive(Debug)]
struct OneOrMany(Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_;
        impl<'de> Visitor<'de> for V_ {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(OneOrMany(vec![s.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = a.next_element::<String>()? {
                    v.push(s);
                }
                Ok(OneOrMany(v))
            }
        }
        d.deserialize_any(V_)
    }
}

/// `client`: `"both.pem"`, `["a.pem", "b.pem"]` or `[["a.cert", "a.key"], …]`
/// (the forms may be mixed in one array, as in containerd).
#[derive(Debug)]
struct ClientList(Vec<(String, Option<String>)>);

struct ClientItem((String, Option<String>));

impl<'de> Deserialize<'de> for ClientItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_;
        impl<'de> Visitor<'de> for V_ {
            type Value = ClientItem;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path or a [cert, key] pair of paths")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(ClientItem((s.to_string(), None)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut v: Vec<String> = Vec::new();
                while let Some(s) = a.next_element::<String>()? {
                    v.push(s);
                }
                match <[String; 2]>::try_from(v) {
                    Ok([cert, key]) => Ok(ClientItem((cert, Some(key).filter(|k| !k.is_empty())))),
                    Err(v) => Err(de::Error::invalid_length(v.len(), &"a [cert, key] pair")),
                }
            }
        }
        d.deserialize_any(V_)
    }
}

impl<'de> Deserialize<'de> for ClientList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_;
        impl<'de> Visitor<'de> for V_ {
            type Value = ClientList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path, an array of paths, or an array of [cert, key] pairs")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(ClientList(vec![(s.to_string(), None)]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some(ClientItem(p)) = a.next_element::<ClientItem>()? {
                    v.push(p);
                }
                Ok(ClientList(v))
            }
        }
        d.deserialize_any(V_)
    }
}

/// 1-based line of byte offset `pos` in `text`.
fn line_of(text: &str, pos: usize) -> usize {
    text.as_bytes()[..pos.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

pub(crate) fn parse_hosts_file(
    file: &Path,
    dir: &Path,
    text: &str,
) -> Result<Vec<Entry>, HostsError> {
    let raw: RawFile = toml::from_str(text).map_err(|source| HostsError::Parse {
        path: file.to_path_buf(),
        source,
    })?;
    // `pos`: where the problem is, if known more precisely than the entry.
    let invalid = |label: &str, entry_pos: Option<usize>, pos: Option<usize>, what: String| {
        HostsError::Invalid {
            path: file.to_path_buf(),
            line: pos.or(entry_pos).map(|p| line_of(text, p)),
            what: format!("{label}: {what}"),
        }
    };

    let mut out = Vec::new();
    for (name, cfg) in raw.host.unwrap_or_default().0 {
        let label = format!("host {:?}", name.get_ref());
        let fail =
            |pos: Option<usize>, what: String| invalid(&label, Some(name.span().start), pos, what);
        out.push(build_entry(Some(name.get_ref()), dir, cfg, &fail)?);
    }

    let server = raw.server.filter(|s| !s.get_ref().is_empty());
    let top = RawHost {
        capabilities: raw.capabilities,
        ca: raw.ca,
        client: raw.client,
        skip_verify: raw.skip_verify,
        header: raw.header,
        override_path: raw.override_path,
    };
    let label = match &server {
        Some(s) => format!("server {:?}", s.get_ref()),
        None => "server".to_string(),
    };
    let fail = |pos: Option<usize>, what: String| {
        invalid(&label, server.as_ref().map(|s| s.span().start), pos, what)
    };
    out.push(build_entry(
        server.as_ref().map(|s| s.get_ref().as_str()),
        dir,
        top,
        &fail,
    )?);
    Ok(out)
}

fn build_entry(
    url: Option<&str>,
    dir: &Path,
    cfg: RawHost,
    fail: &dyn Fn(Option<usize>, String) -> HostsError,
) -> Result<Entry, HostsError> {
    let override_path = cfg.override_path.unwrap_or(false);
    let mut e = Entry::default();
    if let Some(url) = url {
        let (scheme, host, path) = parse_url(url, override_path).map_err(|w| fail(None, w))?;
        e.scheme = scheme;
        e.host = host;
        e.path = path;
    }
    e.skip_verify = cfg.skip_verify.unwrap_or(false);
    match cfg.capabilities {
        Some(caps) if !caps.is_empty() => {
            e.capabilities = Capabilities::NONE;
            for c in caps {
                match c.get_ref().to_ascii_lowercase().as_str() {
                    "pull" => e.capabilities.pull = true,
                    "resolve" => e.capabilities.resolve = true,
                    "push" => e.capabilities.push = true,
                    "referrers" => e.capabilities.referrers = true,
                    _ => {
                        return Err(fail(
                            Some(c.span().start),
                            format!("unknown capability {:?}", c.get_ref()),
                        ));
                    }
                }
            }
        }
        // Absent or `[]`: everything, as in containerd.
        _ => e.capabilities = Capabilities::ALL,
    }
    let abs = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            dir.join(p)
        }
    };
    if let Some(OneOrMany(cas)) = cfg.ca {
        e.ca = cas.iter().map(|p| abs(p)).collect();
    }
    if let Some(ClientList(pairs)) = cfg.client {
        e.client_certs = pairs
            .iter()
            .map(|(c, k)| (abs(c), k.as_deref().map(&abs)))
            .collect();
    }
    if let Some(h) = cfg.header {
        for (k, OneOrMany(vals)) in h.0 {
            for v in vals {
                e.headers.push((k.get_ref().clone(), v));
            }
        }
    }
    Ok(e)
}

/// containerd's URL rule: no scheme → `https://` is prepended; the
/// path is cleaned and `/v2` appended unless it already ends in `/v2` or
/// `override_path` is set (then it is used as-is, possibly empty).
fn parse_url(url: &str, override_path: bool) -> Result<(Scheme, String, String), String> {
    // containerd tests for a leading "http"; looking for "://" agrees on
    // every URL containerd handles and also takes `HTTPS://h` and `httpbin:5000`.
    let full = if url.contains("://") {
        url.to_string()
    } else {
        format!("https://{url}")
    };
    let (scheme, rest) = full
        .split_once("://")
        .ok_or_else(|| format!("invalid URL {url:?}"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(format!("unsupported scheme {other:?} (want http or https)")),
    };
    // Query and fragment are not part of the API root.
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, raw_path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err("credentials in the URL are not supported".to_string());
    }
    if authority.is_empty()
        || authority
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("invalid host in URL {url:?}"));
    }
    let mut path = if raw_path.is_empty() {
        String::new()
    } else {
        clean_path(raw_path)
    };
    if path == "/" {
        path.clear();
    }
    if !override_path && !path.ends_with("/v2") {
        path.push_str("/v2");
    }
    Ok((scheme, authority.to_string(), path))
}

/// Lexical clean of an absolute URL path, like Go's `path.Clean`.
fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Go's `net.SplitHostPort` for `host:port` and `[v6]:port`; `None` when
/// there is no port (`localhost`, `::1`, `[::1]`).
pub(super) fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return Some((h, port));
    }
    let (h, port) = s.rsplit_once(':')?;
    if h.contains(':') {
        return None; // bare IPv6
    }
    Some((h, port))
}
