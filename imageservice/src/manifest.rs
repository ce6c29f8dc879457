//! OCI and Docker schema 2 manifests, indexes and image configs: the fields
//! berth reads, and the platform choice for multi-arch images.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// What berth asks registries for, best first. Schema 1 is listed so that a
/// registry holding only that answers with it and we can say why we refuse.
pub const ACCEPT: &[&str] = &[
    OCI_INDEX,
    DOCKER_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1_SIGNED,
    DOCKER_SCHEMA1,
];

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Default)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug)]
pub enum Parsed {
    Index(Index),
    Manifest(Manifest),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error(
        "the registry serves a Docker schema 1 manifest, which berth does not support (deprecated since 2017: push the image again with a current tool)"
    )]
    Schema1,
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedType(String),
    #[error("malformed manifest: {0}")]
    Malformed(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    schema_version: i64,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
}

/// Parses a manifest or index; the body's own `mediaType` wins over the
/// Content-Type the registry sent (which some registries get wrong).
pub fn parse(content_type: &str, body: &[u8]) -> Result<Parsed, ManifestError> {
    let malformed = |e: serde_json::Error| ManifestError::Malformed(e.to_string());
    let probe: Probe = serde_json::from_slice(body).map_err(malformed)?;
    if probe.schema_version == 1 {
        return Err(ManifestError::Schema1);
    }
    let content_type = content_type.split(';').next().unwrap_or("").trim();
    let kind = match probe.media_type.as_deref() {
        Some(t) if !t.is_empty() => t.to_string(),
        // OCI allows omitting mediaType: an index is what has "manifests".
        _ if probe.manifests.is_some() => OCI_INDEX.to_string(),
        _ => content_type.to_string(),
    };
    match kind.as_str() {
        OCI_INDEX | DOCKER_LIST => Ok(Parsed::Index(
            serde_json::from_slice(body).map_err(malformed)?,
        )),
        OCI_MANIFEST | DOCKER_MANIFEST | "application/json" | "" => Ok(Parsed::Manifest(
            serde_json::from_slice(body).map_err(malformed)?,
        )),
        DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => Err(ManifestError::Schema1),
        other => Err(ManifestError::UnsupportedType(other.to_string())),
    }
}

/// The platform of this node, in OCI terms.
pub fn host_platform() -> Platform {
    let (architecture, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        "s390x" => ("s390x", None),
        "riscv64" => ("riscv64", None),
        other => (other, None),
    };
    Platform {
        architecture: architecture.into(),
        os: std::env::consts::OS.into(),
        variant: variant.map(Into::into),
    }
}

/// Picks the manifest for `want` from an index, as containerd's platform
/// matcher does: os and architecture must match; the exact variant is
/// preferred, then an entry without variant (arm64's "v8" is implied).
pub fn select<'a>(index: &'a Index, want: &Platform) -> Option<&'a Descriptor> {
    let candidates = || {
        index.manifests.iter().filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == want.os && p.architecture == want.architecture)
        })
    };
    let variant = |d: &Descriptor| d.platform.as_ref().and_then(|p| p.variant.clone());
    candidates()
        .find(|d| variant(d) == want.variant)
        .or_else(|| candidates().find(|d| variant(d).is_none()))
        .or_else(|| {
            // A node that has no variant (amd64) takes any variant listed.
            want.variant
                .is_none()
                .then(|| candidates().next())
                .flatten()
        })
}

/// The parts of an image config berth uses.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(arch: &str, variant: Option<&str>, n: u8) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: format!("sha256:{}", format!("{n:02x}").repeat(32)),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(Into::into),
            }),
        }
    }

    #[test]
    fn platform_selection() {
        let index = Index {
            manifests: vec![
                desc("arm", Some("v6"), 1),
                desc("arm", Some("v7"), 2),
                desc("arm64", None, 3),
                desc("amd64", None, 4),
            ],
        };
        let p = |a: &str, v: Option<&str>| Platform {
            architecture: a.into(),
            os: "linux".into(),
            variant: v.map(Into::into),
        };
        assert_eq!(
            select(&index, &p("amd64", None)).unwrap(),
            &index.manifests[3]
        );
        assert_eq!(
            select(&index, &p("arm", Some("v7"))).unwrap(),
            &index.manifests[1]
        );
        assert_eq!(
            select(&index, &p("arm64", Some("v8"))).unwrap(),
            &index.manifests[2]
        );
        assert!(select(&index, &p("s390x", None)).is_none());
        assert!(select(&index, &p("arm", Some("v5"))).is_none());
    }

    #[test]
    fn kinds_and_schema1() {
        let idx = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(parse("", idx), Ok(Parsed::Index(_))));
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"x","digest":"sha256:00","size":1},"layers":[]}"#;
        assert!(matches!(parse(OCI_INDEX, m), Ok(Parsed::Manifest(_))));
        let s1 = br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
        assert_eq!(
            parse(DOCKER_SCHEMA1_SIGNED, s1).unwrap_err(),
            ManifestError::Schema1
        );
        assert!(matches!(
            parse(
                "text/html",
                br#"{"schemaVersion":2,"mediaType":"text/html"}"#
            ),
            Err(ManifestError::UnsupportedType(_))
        ));
        assert!(matches!(
            parse("", b"<html>"),
            Err(ManifestError::Malformed(_))
        ));
    }
}
