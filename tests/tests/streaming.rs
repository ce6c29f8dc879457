//! ExecSync, and exec/attach/port-forward through berth's streaming
//! server, driven by clients written to the published protocols.

use std::collections::HashMap;
use std::time::Duration;

use berth_tests::setup::{busybox_config, setup};
use cri_api::v1::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_sync_runs_in_the_container_and_honours_its_timeout() {
    let mut s = setup(busybox_config()).await;
    let mut cfg = s.config("app", &["sleep", "1000"]);
    cfg.envs = vec![KeyValue {
        key: "GREETING".into(),
        value: "hello".into(),
    }];
    cfg.working_dir = "/tmp".into();
    let id = s.run(cfg).await;
    // As the kubelet: messages up to 16 MiB.
    let client = s.c.clone().max_decoding_message_size(16 << 20);
    let exec = |cmd: &[&str], timeout: i64| {
        let (mut c, id) = (client.clone(), id.clone());
        let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        async move {
            c.exec_sync(ExecSyncRequest {
                container_id: id,
                cmd,
                timeout,
            })
            .await
            .map(|r| r.into_inner())
        }
    };
    // Its env, cwd and hostname; stdout and stderr apart; the exit code.
    let r = exec(
        &[
            "/bin/sh",
            "-c",
            "echo $GREETING; pwd; hostname; echo oops >&2; exit 7",
        ],
        0,
    )
    .await
    .expect("exec");
    assert_eq!(String::from_utf8_lossy(&r.stdout), "hello\n/tmp\npodhost\n");
    assert_eq!(String::from_utf8_lossy(&r.stderr), "oops\n");
    assert_eq!(r.exit_code, 7);
    // In the container's PID namespace: its init is PID 1.
    let r = exec(&["/bin/sh", "-c", "cat /proc/1/cmdline"], 0)
        .await
        .expect("exec");
    assert!(
        String::from_utf8_lossy(&r.stdout).starts_with("sleep"),
        "{r:?}"
    );
    // Its signals are not blocked, as a process the container started
    // itself: `kill -TERM` reaches an exec'd process.
    let r = exec(&["/bin/sh", "-c", "grep SigBlk /proc/self/status"], 0)
        .await
        .expect("exec");
    assert_eq!(
        String::from_utf8_lossy(&r.stdout).trim(),
        "SigBlk:\t0000000000000000",
        "{r:?}"
    );
    // A big output is capped, not buffered whole.
    let r = exec(&["/bin/sh", "-c", "head -c 10000000 /dev/zero"], 0)
        .await
        .expect("exec");
    assert_eq!(r.stdout.len(), 4 << 20);
    assert_eq!(r.exit_code, 0);
    // A missing binary fails the call.
    let e = exec(&["/no/such/binary"], 0).await.expect_err("no binary");
    assert!(e.message().contains("/no/such/binary"), "{e:?}");
    // The timeout kills it: only the container's own sleep is left.
    let e = exec(&["/bin/sh", "-c", "sleep 600"], 1)
        .await
        .expect_err("timeout");
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    let left = exec(&["/bin/sh", "-c", "ps -o comm | grep -c '^sleep$'"], 0)
        .await
        .expect("ps");
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "1",
        "{left:?}"
    );
    // Not running: refused.
    s.c.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .expect("stop");
    let e = exec(&["true"], 0).await.expect_err("stopped");
    assert_eq!(e.code(), Code::FailedPrecondition);
    s.remove_all().await;
}

use berth_tests::streams::{Spdy, ws_collect, ws_connect, ws_frame};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

async fn exec_url(
    s: &mut berth_tests::setup::Setup,
    id: &str,
    cmd: &[&str],
    stdin: bool,
    tty: bool,
) -> String {
    let url =
        s.c.exec(ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin,
            stdout: true,
            stderr: !tty,
        })
        .await
        .expect("Exec")
        .into_inner()
        .url;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    url
}

fn status(json: &[u8]) -> serde_json::Value {
    serde_json::from_slice(json).expect("a Status on the error channel")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_over_websocket_carries_stdin_exit_codes_and_resizes() {
    let mut s = setup(busybox_config()).await;
    let id = s.run(s.config("app", &["sleep", "1000"])).await;

    // v5: stdin echoed by cat, the stream closed with CLOSE, exit 0.
    let url = exec_url(&mut s, &id, &["cat"], true, false).await;
    let (mut ws, proto) = ws_connect(&url, "v5.channel.k8s.io, v4.channel.k8s.io")
        .await
        .expect("connect");
    assert_eq!(proto, "v5.channel.k8s.io");
    ws.send(ws_frame(0, b"hello over ws\n"))
        .await
        .expect("stdin");
    ws.send(ws_frame(255, &[0])).await.expect("close stdin");
    let out = ws_collect(&mut ws).await;
    assert_eq!(
        out.get(&1).map(|v| v.as_slice()),
        Some(&b"hello over ws\n"[..])
    );
    assert_eq!(status(&out[&3])["status"], "Success");

    // v4: stdout, stderr and a non-zero exit code as a Status.
    let url = exec_url(
        &mut s,
        &id,
        &["/bin/sh", "-c", "echo out; echo err >&2; exit 3"],
        false,
        false,
    )
    .await;
    let (mut ws, proto) = ws_connect(&url, "v4.channel.k8s.io")
        .await
        .expect("connect");
    assert_eq!(proto, "v4.channel.k8s.io");
    let out = ws_collect(&mut ws).await;
    assert_eq!(out.get(&1).map(|v| v.as_slice()), Some(&b"out\n"[..]));
    assert_eq!(out.get(&2).map(|v| v.as_slice()), Some(&b"err\n"[..]));
    let st = status(&out[&3]);
    assert_eq!(st["status"], "Failure");
    assert_eq!(st["reason"], "NonZeroExitCode");
    assert_eq!(st["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(st["details"]["causes"][0]["message"], "3");

    // A terminal: the size the client sends is what stty sees.
    let url = exec_url(
        &mut s,
        &id,
        // The resize and stdin travel apart: wait for the size.
        &[
            "/bin/sh",
            "-c",
            // busybox's stty size prints an error (and may still exit 0)
            // while the size is 0x0: wait for a number.
            "read line; until stty size 2>/dev/null | grep -q '^[1-9]'; do sleep 0.05; done; stty size",
        ],
        true,
        true,
    )
    .await;
    let (mut ws, _) = ws_connect(&url, "v4.channel.k8s.io")
        .await
        .expect("connect");
    ws.send(ws_frame(4, br#"{"Width":123,"Height":45}"#))
        .await
        .expect("resize");
    ws.send(ws_frame(0, b"go\r")).await.expect("stdin");
    let out = ws_collect(&mut ws).await;
    let text = String::from_utf8_lossy(&out[&1]).into_owned();
    assert!(text.contains("45 123"), "{text:?}");

    // base64: text frames, a channel digit then base64.
    let url = exec_url(&mut s, &id, &["echo", "b64"], false, false).await;
    let (mut ws, proto) = ws_connect(&url, "base64.channel.k8s.io")
        .await
        .expect("connect");
    assert_eq!(proto, "base64.channel.k8s.io");
    let mut text = String::new();
    while let Some(Ok(m)) = ws.next().await {
        match m {
            Message::Text(t) if t.starts_with('1') => text.push_str(&t[1..]),
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert!(text.contains("YjY0Cg=="), "{text:?}");

    // A client that goes away takes its process with it, even a silent one.
    let url = exec_url(&mut s, &id, &["sleep", "600"], false, false).await;
    let (ws, _) = ws_connect(&url, "v4.channel.k8s.io")
        .await
        .expect("connect");
    drop(ws);
    let mut left = String::new();
    for _ in 0..100 {
        let r =
            s.c.exec_sync(ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "ps -o args | grep -c '^sleep 600'".into(),
                ],
                timeout: 10,
            })
            .await
            .expect("ps")
            .into_inner();
        left = String::from_utf8_lossy(&r.stdout).trim().to_string();
        if left == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, "0", "the exec outlived its client");

    // A token is used once.
    let url = exec_url(&mut s, &id, &["true"], false, false).await;
    let (mut ws, _) = ws_connect(&url, "v4.channel.k8s.io")
        .await
        .expect("connect");
    ws_collect(&mut ws).await;
    assert!(ws_connect(&url, "v4.channel.k8s.io").await.is_err());
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_over_spdy_with_every_remotecommand_version() {
    let mut s = setup(busybox_config()).await;
    let id = s.run(s.config("app", &["sleep", "1000"])).await;
    for protocol in [
        "v4.channel.k8s.io",
        "v3.channel.k8s.io",
        "v2.channel.k8s.io",
    ] {
        let url = exec_url(
            &mut s,
            &id,
            &["/bin/sh", "-c", "cat; echo err >&2; exit 5"],
            true,
            false,
        )
        .await;
        let (mut c, chosen) = Spdy::connect(&url, protocol).await.expect("upgrade");
        assert_eq!(chosen, protocol);
        let error = c.open(&[("streamtype", "error")]).await;
        let stdin = c.open(&[("streamtype", "stdin")]).await;
        let stdout = c.open(&[("streamtype", "stdout")]).await;
        let stderr = c.open(&[("streamtype", "stderr")]).await;
        c.send(stdin, b"via spdy\n", false).await;
        c.send(stdin, b"", true).await;
        let mut got: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut finished = 0;
        while let Some((sid, data, fin)) = c.next_data().await {
            got.entry(sid).or_default().extend_from_slice(&data);
            finished += usize::from(fin);
            if finished == 3 {
                break;
            }
        }
        assert_eq!(
            got.get(&stdout).map(|v| v.as_slice()),
            Some(&b"via spdy\n"[..]),
            "{protocol}"
        );
        assert_eq!(
            got.get(&stderr).map(|v| v.as_slice()),
            Some(&b"err\n"[..]),
            "{protocol}"
        );
        let err = got.get(&error).cloned().unwrap_or_default();
        if protocol == "v4.channel.k8s.io" {
            assert_eq!(status(&err)["details"]["causes"][0]["message"], "5");
        } else {
            assert!(
                String::from_utf8_lossy(&err).contains("exit code 5"),
                "{err:?}"
            );
        }
    }
    // A protocol we do not speak is refused.
    let url = exec_url(&mut s, &id, &["true"], false, false).await;
    assert!(Spdy::connect(&url, "v9.channel.k8s.io").await.is_err());
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_follows_the_output_and_feeds_stdin_once() {
    let mut s = setup(busybox_config()).await;
    let ticker = s
        .run(s.config(
            "ticker",
            &["/bin/sh", "-c", "while true; do echo tick; sleep 0.1; done"],
        ))
        .await;
    let mut cfg = s.config(
        "reader",
        &[
            "/bin/sh",
            "-c",
            "while read l; do echo got $l; done; echo eof",
        ],
    );
    cfg.stdin = true;
    cfg.stdin_once = true;
    let reader = s.run(cfg).await;
    let attach = |id: &str, stdin: bool| {
        let (mut c, id) = (s.c.clone(), id.to_string());
        async move {
            c.attach(AttachRequest {
                container_id: id,
                stdin,
                tty: false,
                stdout: true,
                stderr: true,
            })
            .await
            .expect("Attach")
            .into_inner()
            .url
        }
    };
    // Two clients at once see the ticks (WebSocket and SPDY).
    let (mut ws, _) = ws_connect(&attach(&ticker, false).await, "v4.channel.k8s.io")
        .await
        .expect("ws");
    let (mut sp, _) = Spdy::connect(&attach(&ticker, false).await, "v4.channel.k8s.io")
        .await
        .expect("spdy");
    sp.open(&[("streamtype", "error")]).await;
    let sp_out = sp.open(&[("streamtype", "stdout")]).await;
    sp.open(&[("streamtype", "stderr")]).await;
    let mut ws_text = String::new();
    while !ws_text.contains("tick\ntick") {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) if b.first() == Some(&1) => {
                ws_text.push_str(&String::from_utf8_lossy(&b[1..]))
            }
            Some(Ok(_)) => {}
            other => panic!("ws ended: {other:?}"),
        }
    }
    let mut sp_text = String::new();
    while !sp_text.contains("tick\ntick") {
        let (sid, data, _) = sp.next_data().await.expect("spdy data");
        if sid == sp_out {
            sp_text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    drop((ws, sp));

    // stdin reaches the container; closing it ends the container's input.
    let (mut ws, _) = ws_connect(&attach(&reader, true).await, "v5.channel.k8s.io")
        .await
        .expect("ws");
    ws.send(ws_frame(0, b"one\n")).await.expect("stdin");
    ws.send(ws_frame(255, &[0])).await.expect("close stdin");
    drop(ws);
    let st = s.wait_exited(&reader).await;
    assert_eq!(st.exit_code, 0);
    let log = s.log("reader");
    assert!(log.contains("got one") && log.contains("eof"), "{log}");
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_reaches_a_server_in_the_pod_over_both_protocols() {
    let mut s = setup(busybox_config()).await;
    s.run(s.config(
        "web",
        &["busybox", "httpd", "-f", "-p", "8080", "-h", "/etc"],
    ))
    .await;
    let pf_url = |s: &berth_tests::setup::Setup| {
        let (mut c, pod) = (s.c.clone(), s.pod.clone());
        async move {
            c.port_forward(PortForwardRequest {
                pod_sandbox_id: pod,
                port: vec![8080],
            })
            .await
            .expect("PortForward")
            .into_inner()
            .url
        }
    };
    let get = b"GET /hostname HTTP/1.0\r\n\r\n";
    // SPDY: two requests at once on one connection.
    let (mut c, proto) = Spdy::connect(&pf_url(&s).await, "portforward.k8s.io")
        .await
        .expect("upgrade");
    assert_eq!(proto, "portforward.k8s.io");
    let mut data = Vec::new();
    for rid in ["1", "2"] {
        c.open(&[
            ("streamtype", "error"),
            ("port", "8080"),
            ("requestid", rid),
        ])
        .await;
        let d = c
            .open(&[("streamtype", "data"), ("port", "8080"), ("requestid", rid)])
            .await;
        data.push(d);
    }
    for d in &data {
        c.send(*d, get, false).await;
    }
    let mut got: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut done = 0;
    while done < 2 {
        let (sid, bytes, fin) = tokio::time::timeout(Duration::from_secs(20), c.next_data())
            .await
            .expect("in time")
            .expect("data");
        got.entry(sid).or_default().extend_from_slice(&bytes);
        if fin && data.contains(&sid) {
            done += 1;
        }
    }
    for d in &data {
        let text = String::from_utf8_lossy(&got[d]).into_owned();
        assert!(
            text.starts_with("HTTP/1.") && text.ends_with("podhost\n"),
            "{text:?}"
        );
    }

    // SPDY tunnelled through a WebSocket, as kubectl does through an API
    // server with PortForwardWebsockets.
    let (mut t, proto) = Spdy::tunnel(&pf_url(&s).await).await.expect("tunnel");
    assert_eq!(proto, "SPDY/3.1+portforward.k8s.io");
    t.open(&[
        ("streamtype", "error"),
        ("port", "8080"),
        ("requestid", "0"),
    ])
    .await;
    let d = t
        .open(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")])
        .await;
    t.send(d, get, false).await;
    let mut text = Vec::new();
    loop {
        let (sid, bytes, fin) = tokio::time::timeout(Duration::from_secs(20), t.next_data())
            .await
            .expect("in time")
            .expect("data");
        if sid == d {
            text.extend_from_slice(&bytes);
            if fin {
                break;
            }
        }
    }
    assert!(String::from_utf8_lossy(&text).ends_with("podhost\n"));

    // WebSocket: the port number opens both channels; the reply follows.
    let url = format!("{}?port=8080", pf_url(&s).await);
    let (mut ws, proto) = ws_connect(&url, "v4.channel.k8s.io").await.expect("ws");
    assert_eq!(proto, "v4.channel.k8s.io");
    ws.send(ws_frame(0, get)).await.expect("send");
    let mut text = String::new();
    let mut opened = 0;
    while !text.ends_with("podhost\n") {
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) if b[0] == 0 => {
                if opened == 0 {
                    assert_eq!(&b[1..], &8080u16.to_le_bytes());
                    opened += 1;
                } else {
                    text.push_str(&String::from_utf8_lossy(&b[1..]));
                }
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("ws ended: {other:?} after {text:?}"),
        }
    }
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_container_log_loses_no_line() {
    let mut s = setup(busybox_config()).await;
    let id = s
        .run(s.config(
            "count",
            &[
                "/bin/sh",
                "-c",
                "i=0; while [ $i -lt 20000 ]; do echo $i; i=$((i+1)); done; sleep 1000",
            ],
        ))
        .await;
    let log = s.b.dir.path().join("logs/count/0.log");
    // Rotate while it writes, as the kubelet does: rename, then reopen.
    while std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) < 20_000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    std::fs::rename(&log, log.with_extension("log.1")).expect("rename");
    s.c.reopen_container_log(ReopenContainerLogRequest {
        container_id: id.clone(),
    })
    .await
    .expect("reopen");
    assert!(log.exists(), "the log was not reopened");
    // Until the last number is in the new file.
    for _ in 0..600 {
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(" 19999\n")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all = std::fs::read_to_string(log.with_extension("log.1")).expect("old")
        + &std::fs::read_to_string(&log).expect("new");
    let numbers: Vec<u32> = all
        .lines()
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(numbers, (0..20000).collect::<Vec<u32>>());
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused() {
    let b = berth_tests::Berthd::start_with(berth_tests::Options {
        config: "[streaming]\ntoken_ttl = \"200ms\"\n".into(),
        ..Default::default()
    })
    .await;
    let mut c = b.runtime().await;
    let (pod, url) = pod_and_url(&mut c, "pf", 80).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let e = Spdy::connect(&url, "portforward.k8s.io")
        .await
        .err()
        .expect("expired");
    assert!(e.starts_with("HTTP/1.1 404"), "{e}");
    // A bad port is refused at once.
    let e = c
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![0],
        })
        .await
        .expect_err("port 0");
    assert_eq!(e.code(), Code::InvalidArgument);
    c.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .expect("remove");
}

/// The Kubernetes Python client (an independent implementation of the
/// WebSocket protocol, from PyPI) runs an exec through berth's URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_python_client_execs_through_berth() {
    let mut s = setup(busybox_config()).await;
    let id = s.run(s.config("app", &["sleep", "1000"])).await;
    let url = exec_url(
        &mut s,
        &id,
        &[
            "/bin/sh",
            "-c",
            "read line; echo got $line; echo oops >&2; exit 6",
        ],
        true,
        false,
    )
    .await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/pyclient/run.sh");
    let out = tokio::process::Command::new(script)
        .arg(&url)
        .arg("hello\n")
        .output()
        .await
        .expect("run the Python client");
    assert!(out.status.success(), "{out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(r["protocol"], "v5.channel.k8s.io", "{r}");
    assert_eq!(r["stdout"], "got hello\n", "{r}");
    assert_eq!(r["stderr"], "oops\n", "{r}");
    assert_eq!(r["returncode"], 6, "{r}");
    s.remove_all().await;
}

/// With a certificate configured, the URLs are https:// and the sessions
/// run over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streaming_server_can_serve_tls() {
    let dir = berth_tests::TempDir::new("streaming-tls");
    let (ca, cert, key) = berth_tests::make_certs(dir.path());
    let b = berth_tests::Berthd::start_with(berth_tests::Options {
        config: format!(
            "[streaming]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        ..Default::default()
    })
    .await;
    let mut c = b.runtime().await;
    let (pod, url) = pod_and_url(&mut c, "tls", 9).await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    // Plain HTTP is not spoken there.
    assert!(
        Spdy::connect(&url.replacen("https", "http", 1), "portforward.k8s.io")
            .await
            .is_err()
    );
    let url = pf_url(&mut c, &pod, 9).await;
    let (mut t, proto) = Spdy::connect_tls(&url, "portforward.k8s.io", &ca)
        .await
        .expect("TLS upgrade");
    assert_eq!(proto, "portforward.k8s.io");
    // Nothing listens on port 9 in the pod: the error stream says so.
    let err = t
        .open(&[("streamtype", "error"), ("port", "9"), ("requestid", "0")])
        .await;
    t.open(&[("streamtype", "data"), ("port", "9"), ("requestid", "0")])
        .await;
    let mut msg = Vec::new();
    loop {
        let (sid, bytes, fin) = tokio::time::timeout(Duration::from_secs(20), t.next_data())
            .await
            .expect("in time")
            .expect("data");
        if sid == err {
            msg.extend_from_slice(&bytes);
            if fin {
                break;
            }
        }
    }
    let msg = String::from_utf8_lossy(&msg);
    assert!(msg.contains("port 9"), "{msg}");
    c.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .expect("remove");
}

/// A bare pod (no containers, loopback only) and a PortForward URL for it.
async fn pod_and_url(
    c: &mut berth_tests::setup::Client,
    name: &str,
    port: i32,
) -> (String, String) {
    let pod = c
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: name.into(),
                    uid: format!("{name}-uid"),
                    namespace: "default".into(),
                    attempt: 0,
                }),
                ..Default::default()
            }),
            runtime_handler: String::new(),
        })
        .await
        .expect("pod")
        .into_inner()
        .pod_sandbox_id;
    let url = pf_url(c, &pod, port).await;
    (pod, url)
}

async fn pf_url(c: &mut berth_tests::setup::Client, pod: &str, port: i32) -> String {
    c.port_forward(PortForwardRequest {
        pod_sandbox_id: pod.into(),
        port: vec![port],
    })
    .await
    .expect("PortForward")
    .into_inner()
    .url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_into_a_host_network_pod_reaches_the_nodes_loopback() {
    let mut s = berth_tests::setup::setup_with(busybox_config(), |p| {
        p.linux
            .get_or_insert_with(Default::default)
            .security_context = Some(LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
    })
    .await;
    // A server on the node's loopback stands in for the pod's.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            use std::io::Write;
            let _ = conn.write_all(b"from the node\n");
        }
    });
    let url = format!(
        "{}?port={port}",
        pf_url(&mut s.c, &s.pod, i32::from(port)).await
    );
    let (mut ws, _) = ws_connect(&url, "v4.channel.k8s.io").await.expect("ws");
    let mut text = String::new();
    let mut opened = 0;
    while !text.ends_with("from the node\n") {
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) if b[0] == 0 => {
                if opened == 0 {
                    opened += 1;
                } else {
                    text.push_str(&String::from_utf8_lossy(&b[1..]));
                }
            }
            Ok(Some(Ok(Message::Binary(b)))) if b[0] == 1 && b.len() > 3 => {
                panic!("error channel: {}", String::from_utf8_lossy(&b[3..]))
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("ws ended: {other:?} after {text:?}"),
        }
    }
    s.remove_all().await;
}

/// The monitor reads its attach socket with a bounded frame decoder: a
/// peer whose frame header announces more than a frame may hold is
/// dropped at once (before, the monitor waited to buffer all 4 GiB), and
/// the container goes on logging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_drops_an_attach_peer_announcing_an_oversized_frame() {
    use std::io::{Read, Write};
    let mut s = setup(busybox_config()).await;
    let id = s
        .run(s.config(
            "ticker",
            &["/bin/sh", "-c", "while true; do echo tick; sleep 0.1; done"],
        ))
        .await;
    s.wait_log("ticker", " stdout F tick").await;
    // As berthd connects: through the state dir's descriptor (its path is
    // too long for a socket address).
    let dir = std::fs::File::open(s.b.state.join("containers").join(&id)).expect("state dir");
    let addr = format!(
        "/proc/self/fd/{}/attach.sock",
        std::os::fd::AsRawFd::as_raw_fd(&dir)
    );
    let mut peer = std::os::unix::net::UnixStream::connect(&addr).expect("attach socket");
    // Channel 0 (stdin), length u32::MAX, then some of that "data".
    peer.write_all(&[0, 0xff, 0xff, 0xff, 0xff])
        .expect("header");
    let _ = peer.write_all(&[b'x'; 4096]);
    // A liveness bound with a wide margin: the drop is immediate. Until
    // then the monitor may send it the container's output.
    peer.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 64 * 1024];
    let closed = loop {
        match peer.read(&mut buf) {
            Ok(0) => break true,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            _ if std::time::Instant::now() > deadline => break false,
            _ => {}
        }
    };
    assert!(
        closed,
        "the monitor kept a peer that sent an oversized frame"
    );
    // The container and its log are unaffected.
    let before = s.log("ticker").lines().count();
    for _ in 0..100 {
        if s.log("ticker").lines().count() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(s.log("ticker").lines().count() > before, "the log stopped");
    s.remove_all().await;
}
