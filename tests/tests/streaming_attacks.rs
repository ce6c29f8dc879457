//! Hostile streaming clients: what a user allowed to exec, attach or
//! port-forward can send (the kubelet and the API server relay it
//! unchanged). Each session that breaks the protocol is closed with a
//! protocol error, its memory stays bounded, and berthd keeps answering
//! CRI calls meanwhile.

use std::io::Write;
use std::time::Duration;

use berth_tests::setup::{busybox_config, setup};
use berth_tests::streams::{Spdy, ws_connect};
use cri_api::v1::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// How long a berthd that is not pinned needs at most to answer `Version`
/// (the bound); a pinned one never answers.
const ANSWER: Duration = Duration::from_secs(1);
/// How long a session that breaks the protocol may take to be closed.
const CLOSED: Duration = Duration::from_secs(20);

async fn exec_url(s: &mut berth_tests::setup::Setup, id: &str, stdin: bool) -> String {
    s.c.exec(ExecRequest {
        container_id: id.into(),
        cmd: vec!["cat".into()],
        tty: false,
        stdin,
        stdout: true,
        stderr: true,
    })
    .await
    .expect("Exec")
    .into_inner()
    .url
}

/// A SYN_STREAM frame whose header block is `block`.
fn syn_stream(id: u32, block: &[u8]) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    body.extend_from_slice(block);
    let mut f = vec![0x80, 3, 0, 1, 0];
    f.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(&body);
    f
}

async fn version_answers(s: &mut berth_tests::setup::Setup) {
    for _ in 0..3 {
        let v = tokio::time::timeout(
            ANSWER,
            s.c.version(VersionRequest {
                version: String::new(),
            }),
        )
        .await
        .expect("Version answered within a second")
        .expect("Version");
        assert_eq!(v.into_inner().runtime_name, "berth");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_block_after_the_end_of_its_zlib_stream_closes_the_session_not_the_node() {
    let mut s = setup(busybox_config()).await;
    let id = s.run(s.config("app", &["sleep", "1000"])).await;
    // zlib.compress(b"\0\0\0\0") + b"\0": the inflater says StreamEnd
    // while input remains. Two of them pinned both of berthd's worker
    // threads for ever.
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&[0, 0, 0, 0]).expect("zlib");
    let mut block = z.finish().expect("zlib");
    block.push(0);
    let mut attackers = Vec::new();
    for _ in 0..2 {
        let url = exec_url(&mut s, &id, false).await;
        let (mut c, _) = Spdy::connect(&url, "v4.channel.k8s.io")
            .await
            .expect("upgrade");
        c.raw(&syn_stream(1, &block)).await.expect("attack frame");
        attackers.push(c);
    }
    version_answers(&mut s).await;
    for mut c in attackers {
        let status = tokio::time::timeout(CLOSED, c.goaway())
            .await
            .expect("the session is closed");
        assert_eq!(status, Some(1), "GOAWAY with PROTOCOL_ERROR");
    }
    // Exec still works for everybody else.
    let url = exec_url(&mut s, &id, true).await;
    let (mut c, _) = Spdy::connect(&url, "v4.channel.k8s.io")
        .await
        .expect("upgrade");
    let _error = c.open(&[("streamtype", "error")]).await;
    let stdin = c.open(&[("streamtype", "stdin")]).await;
    let stdout = c.open(&[("streamtype", "stdout")]).await;
    let _stderr = c.open(&[("streamtype", "stderr")]).await;
    c.send(stdin, b"still here\n", true).await;
    let mut out = Vec::new();
    while let Some((sid, data, fin)) = c.next_data().await {
        if sid == stdout {
            out.extend_from_slice(&data);
            if fin {
                break;
            }
        }
    }
    assert_eq!(out, b"still here\n");
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_sent_before_the_streams_exist_is_bounded() {
    let mut s = setup(busybox_config()).await;
    let id = s.run(s.config("app", &["sleep", "1000"])).await;
    let url = exec_url(&mut s, &id, true).await;
    let (mut c, _) = Spdy::connect(&url, "v4.channel.k8s.io")
        .await
        .expect("upgrade");
    // One of the four streams, then data for streams that never come.
    c.open(&[("streamtype", "error")]).await;
    let chunk = vec![b'x'; 64 << 10];
    let mut sent = 0;
    while sent < 3 << 20 {
        if c.send_raw_data(99, &chunk).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    let status = tokio::time::timeout(CLOSED, c.goaway())
        .await
        .expect("the session is closed before its 30 s stream timeout");
    assert_eq!(status, Some(1), "GOAWAY with PROTOCOL_ERROR");
    version_answers(&mut s).await;
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_requests_that_never_pair_are_bounded() {
    let mut s = setup(busybox_config()).await;
    let url =
        s.c.port_forward(PortForwardRequest {
            pod_sandbox_id: s.pod.clone(),
            port: vec![80],
        })
        .await
        .expect("PortForward")
        .into_inner()
        .url;
    let (mut c, chosen) = Spdy::connect(&url, "portforward.k8s.io")
        .await
        .expect("upgrade");
    assert_eq!(chosen, "portforward.k8s.io");
    // Error streams only, each with its own request id: the data streams
    // that would complete them never come.
    for rid in 0..1000 {
        let rid = rid.to_string();
        let frame =
            c.syn_stream_frame(&[("streamtype", "error"), ("port", "80"), ("requestid", &rid)]);
        if c.raw(&frame).await.is_err() {
            break;
        }
    }
    let status = tokio::time::timeout(CLOSED, c.goaway())
        .await
        .expect("the session is closed");
    assert_eq!(status, Some(1), "GOAWAY with PROTOCOL_ERROR");
    version_answers(&mut s).await;
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base64_websocket_message_with_a_multibyte_channel_is_a_protocol_error() {
    let mut s = setup(busybox_config()).await;
    let id = s.run(s.config("app", &["sleep", "1000"])).await;
    let url = exec_url(&mut s, &id, true).await;
    let (mut ws, proto) = ws_connect(&url, "v4.base64.channel.k8s.io")
        .await
        .expect("connect");
    assert_eq!(proto, "v4.base64.channel.k8s.io");
    ws.send(Message::Text("é".into())).await.expect("send");
    let close = tokio::time::timeout(CLOSED, async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(f)) => return f,
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the session is closed");
    assert_eq!(
        close.map(|f| f.code),
        Some(CloseCode::Protocol),
        "closed with status 1002"
    );
    version_answers(&mut s).await;
    s.remove_all().await;
}

/// Processes of container `id` (by their cgroup) whose command line is
/// exactly `argv`.
fn processes(id: &str, argv: &[&str]) -> usize {
    let want = argv.join("\0") + "\0";
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want.as_bytes()))
        .filter(|e| std::fs::read_to_string(e.path().join("cgroup")).is_ok_and(|c| c.contains(id)))
        .count()
}

/// A client that opens an exec session and then says nothing is cut at
/// the idle timeout, and the process it started goes with it (it is not
/// left running in the container).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_exec_session_is_closed_at_the_idle_timeout_and_its_process_killed() {
    let opts = berth_tests::Options {
        config: "[streaming]\nidle_timeout = \"2s\"\n".into(),
        ..Default::default()
    };
    let mut s = berth_tests::setup::setup_opts(opts, "", busybox_config(), |_| {}).await;
    let id = s.run(s.config("app", &["sleep", "1000"])).await;
    let argv = ["sleep", "7777"];
    let url =
        s.c.exec(ExecRequest {
            container_id: id.clone(),
            cmd: argv.iter().map(|a| a.to_string()).collect(),
            tty: false,
            stdin: true,
            stdout: true,
            stderr: true,
        })
        .await
        .expect("Exec")
        .into_inner()
        .url;
    let (mut ws, _) = ws_connect(&url, "v5.channel.k8s.io")
        .await
        .expect("connect");
    // Running while the session lasts.
    let deadline = std::time::Instant::now() + CLOSED;
    while processes(&id, &argv) == 0 {
        assert!(std::time::Instant::now() < deadline, "the exec never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let closed = tokio::time::timeout(CLOSED, async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(_)) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
        true
    })
    .await
    .expect("the idle session is closed");
    assert!(closed);
    let deadline = std::time::Instant::now() + CLOSED;
    while processes(&id, &argv) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the silent session's process is still running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    version_answers(&mut s).await;
    s.remove_all().await;
}
