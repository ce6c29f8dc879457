//! berthd's Prometheus endpoint as tests and benchmarks read it.

use std::collections::HashMap;
use std::io::{Read, Write};

use crate::Berthd;

/// The metrics address berthd logged (it was started with `[metrics]
/// address`).
pub fn address(b: &Berthd) -> String {
    b.log()
        .lines()
        .filter(|l| l.contains("metrics on /metrics"))
        .find_map(|l| {
            Some(
                l.split("address=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .to_string(),
            )
        })
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{}", b.log()))
}

/// `GET /metrics`: the exposition text.
pub fn get(addr: &str) -> String {
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .expect("request");
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).expect("response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP answer");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_string()
}

/// Each sample of the exposition text, by its name and labels as written
/// (`berth_start_stage_duration_seconds_sum{stage="monitor"}`).
pub fn samples(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}
