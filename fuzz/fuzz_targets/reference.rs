//! Image reference parsing (`Reference::parse`, as for a CRI `image` field).
//!
//! Asserts: no panic; a parsed reference prints as a string that parses back
//! to the same reference, in both its full and (where Docker's is unambiguous)
//! its familiar (`busybox`) form;
//! `parse_with_default_tag` agrees with `parse` up to the added `latest` tag.
#![no_main]

use berth_imageservice::reference::Reference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = berth_imageservice::reference::is_digest(s);
    let _ = berth_imageservice::reference::is_image_id_prefix(s);
    let parsed = Reference::parse(s);
    let defaulted = Reference::parse_with_default_tag(s);
    let Ok(r) = parsed else {
        assert!(
            defaulted.is_err(),
            "{s:?}: only parse_with_default_tag accepts it"
        );
        return;
    };
    let full = r.to_string();
    assert_eq!(
        Reference::parse(&full).as_ref(),
        Ok(&r),
        "{s:?} -> {full:?}"
    );
    let familiar = r.familiar_string();
    // Docker's FamiliarString is ambiguous for a Docker Hub repository whose
    // first component looks like a domain (`docker.io/a.io/b` -> `a.io/b`);
    // berth follows it and only displays familiar strings.
    let first = r.familiar_name();
    let first = first.split('/').next().unwrap_or_default();
    let ambiguous = r.domain() == "docker.io"
        && r.familiar_name().contains('/')
        && (first.contains(['.', ':']) || first == "localhost");
    // `library/<64 hex>` is `<64 hex>` in familiar form, which Docker (and
    // berth) refuse as a reference: it would be an image id.
    let short = r.familiar_name();
    let image_id = short.len() == 64 && short.bytes().all(|b| b.is_ascii_hexdigit());
    if !ambiguous && !image_id {
        assert_eq!(
            Reference::parse(&familiar).as_ref(),
            Ok(&r),
            "{s:?} -> {familiar:?}"
        );
    }
    let name = r.name();
    let named = Reference::parse(&name).expect("the name of a reference parses");
    assert_eq!((named.domain(), named.path()), (r.domain(), r.path()));
    assert_eq!((named.tag(), named.digest()), (None, None));
    let d = defaulted.expect("parse_with_default_tag accepts what parse accepts");
    if r.tag().is_none() && r.digest().is_none() {
        assert_eq!(d, r.with_tag("latest"));
    } else {
        assert_eq!(d, r);
    }
});
