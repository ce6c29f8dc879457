//! Reference parsing tests: tables of valid and invalid references, the
//! messages, defaults, and the digest helpers.

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
        msg(&format!("img@md5:{}", &H256[..32])).contains("unsupported digest algorithm \"md5\"")
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
