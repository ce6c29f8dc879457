//! The daemon itself: CRI basics over the socket, config handling, locking
//! and shutdown. Every test runs a real berthd.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use berth_tests::{Berthd, Options, TempDir};
use cri_api::v1::*;
use nix::sys::signal::Signal;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_names_berth_and_api_v1() {
    let b = Berthd::start().await;
    let v = b
        .runtime()
        .await
        .version(VersionRequest::default())
        .await
        .expect("Version")
        .into_inner();
    assert_eq!(v.runtime_name, "berth");
    assert_eq!(v.runtime_api_version, "v1");
    assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));
}

fn condition<'a>(s: &'a StatusResponse, kind: &str) -> &'a RuntimeCondition {
    s.status
        .as_ref()
        .expect("status")
        .conditions
        .iter()
        .find(|c| c.r#type == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {s:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_network_ready_follows_the_cni_config() {
    let b = Berthd::start().await;
    let mut rt = b.runtime().await;
    let status = |verbose| StatusRequest { verbose };

    // No CNI config yet: not ready, and the message says where it looked.
    let s = rt.status(status(false)).await.expect("Status").into_inner();
    let net = condition(&s, "NetworkReady");
    assert!(!net.status);
    assert_eq!(net.reason, "NetworkPluginNotReady");
    assert!(net.message.contains("net.d"), "{}", net.message);
    assert!(s.info.is_empty(), "info only when verbose");

    // A conflist whose plugin is missing: still not ready, plugin named.
    let d = b.dir.path();
    std::fs::write(
        d.join("net.d/10-pods.conflist"),
        r#"{"cniVersion":"1.0.0","name":"pods","plugins":[{"type":"bridge"}]}"#,
    )
    .expect("write conflist");
    let s = rt.status(status(false)).await.expect("Status").into_inner();
    let net = condition(&s, "NetworkReady");
    assert!(!net.status);
    assert!(net.message.contains("\"bridge\""), "{}", net.message);

    // The plugin installed: ready, read fresh on every call.
    let plugin = d.join("cni-bin/bridge");
    std::fs::write(&plugin, "#!/bin/sh\n").expect("write plugin");
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let s = rt.status(status(true)).await.expect("Status").into_inner();
    let net = condition(&s, "NetworkReady");
    assert!(net.status, "{net:?}");

    // RuntimeReady: cgroups, the state dir and berth-monitor are there.
    let run = condition(&s, "RuntimeReady");
    assert!(run.status, "{run:?}");

    // verbose: the effective config as JSON, and the network found.
    let config: serde_json::Value =
        serde_json::from_str(&s.info["config"]).expect("config is JSON");
    assert_eq!(config["root"], b.root.display().to_string());
    assert_eq!(config["socket"], b.socket.display().to_string());
    assert_eq!(config["registry"]["pull_progress_timeout"], "300s");
    let cni: serde_json::Value = serde_json::from_str(&s.info["cni"]).expect("cni is JSON");
    assert_eq!(cni["network"], "pods");

    // Handlers: the default ("") and each configured one that can run pods:
    // runc when its binary is installed (the tests install Debian's).
    let names: Vec<&str> = s.runtime_handlers.iter().map(|h| h.name.as_str()).collect();
    let runc = std::path::Path::new("/usr/sbin/runc").is_file();
    assert_eq!(
        names,
        if runc {
            vec!["", "builtin", "runc"]
        } else {
            vec!["", "builtin"]
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_up_to_16_mib_are_accepted() {
    let b = Berthd::start().await;
    // An 8 MiB id: above tonic's 4 MiB default, below the kubelet's
    // 16 MiB. The call is decoded (so it gets past the size check) and then
    // answered by the RPC itself.
    let big = "x".repeat(8 << 20);
    let req = CheckpointContainerRequest {
        container_id: big,
        ..Default::default()
    };
    let mut rt = b.runtime().await.max_encoding_message_size(32 << 20);
    let e = rt
        .checkpoint_container(req)
        .await
        .expect_err("no such container");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("container_id"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_is_0660_and_parents_are_created() {
    let b = Berthd::start().await;
    let meta = std::fs::metadata(&b.socket).expect("socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert!(b.socket.parent().expect("parent").is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_berthd_on_the_same_root_or_socket_is_refused() {
    let b = Berthd::start().await;
    let other = TempDir::new("other");

    // Same root, own socket and state.
    let sock = other.path().join("other.sock");
    let state = other.path().join("state");
    let (st, err) = b.run_to_exit(&[("--socket", &sock), ("--state", &state)]);
    assert!(!st.success());
    assert!(err.contains("in use by another berthd"), "{err}");
    assert!(err.contains(&format!("pid {}", b.pid())), "{err}");
    assert!(
        !sock.exists(),
        "the refused instance left its socket behind"
    );

    // Same socket, own root.
    let root = other.path().join("root");
    let (st, err) = b.run_to_exit(&[("--root", &root)]);
    assert!(!st.success());
    assert!(
        err.contains(&format!("socket {}", b.socket.display())),
        "{err}"
    );
    assert!(!root.exists(), "the refused instance created its root");

    // The first one is unharmed.
    b.runtime()
        .await
        .version(VersionRequest::default())
        .await
        .expect("first berthd still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_remove_the_socket_and_exit_0() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut b = Berthd::start().await;
        let status = b.stop_with(signal);
        assert!(status.success(), "{signal}: {status}\n{}", b.log());
        assert!(!b.socket.exists(), "{signal}: socket left behind");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_from_a_killed_berthd_is_replaced() {
    let mut b = Berthd::start().await;
    b.stop_with(Signal::SIGKILL);
    assert!(b.socket.exists(), "SIGKILL leaves the socket");
    // A new berthd on the same paths takes over (the harness fails fast,
    // with berthd's log, if it exits or never answers).
    b.restart().await;
    b.runtime()
        .await
        .version(VersionRequest::default())
        .await
        .expect("the restarted berthd answers");
    assert!(b.stop_with(Signal::SIGTERM).success(), "{}", b.log());
}

#[test]
fn bad_configs_are_refused_naming_file_line_and_key() {
    let dir = TempDir::new("badconfig");
    let run = |text: &str| {
        let file = dir.path().join("config.toml");
        std::fs::write(&file, text).expect("write");
        let out = std::process::Command::new(berth_tests::berthd_binary())
            .arg("--config")
            .arg(&file)
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--socket")
            .arg(dir.path().join("s.sock"))
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "accepted:\n{text}");
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert!(
            !dir.path().join("root").exists(),
            "created root despite: {err}"
        );
        err
    };
    let err = run("log_level = \"info\"\n\n[cni]\nconf_dir = \"/x\"\nbin_dir = \"/y\"\n");
    assert!(err.contains("line 5"), "{err}");
    assert!(err.contains("bin_dir"), "{err}");

    let err = run("cgroup_driver = \"cgroupv1\"\n");
    assert!(err.contains("line 1") && err.contains("cgroup"), "{err}");

    let err = run("[registry]\npull_progress_timeout = \"soon\"\n");
    assert!(err.contains("line 2") && err.contains("soon"), "{err}");

    let err = run("socket = [\n");
    assert!(err.contains("line 1"), "{err}");

    // An explicitly named file that cannot be read is an error too.
    let missing = dir.path().join("nope.toml");
    let out = std::process::Command::new(berth_tests::berthd_binary())
        .arg("--config")
        .arg(&missing)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&missing.display().to_string()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_override_the_config_file() {
    let b = Berthd::start_with(Options {
        config: "log_level = \"warn\"\nsocket = \"/nonexistent/from-file.sock\"".into(),
        ..Default::default()
    })
    .await;
    // The harness passes --socket: berthd listens there, not at the file's.
    let s = b
        .runtime()
        .await
        .status(StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner();
    let config: serde_json::Value = serde_json::from_str(&s.info["config"]).expect("JSON");
    assert_eq!(config["socket"], b.socket.display().to_string());
    assert_eq!(config["log_level"], "warn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_and_stopping() {
    let b = Berthd::start().await;
    // A second berthd on its own dirs, started as systemd would.
    let d = b.dir.path().join("notified");
    std::fs::create_dir_all(&d).expect("dir");
    let notify = std::os::unix::net::UnixDatagram::bind(d.join("notify")).expect("bind");
    notify
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let (root, state, sock) = (d.join("root"), d.join("state"), d.join("b.sock"));
    let mut child = b
        .command(&[("--root", &root), ("--state", &state), ("--socket", &sock)])
        .env("NOTIFY_SOCKET", d.join("notify"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).expect("READY");
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means serving.
    assert!(berth_tests::connect(&sock).await.is_ok());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("TERM");
    let n = notify.recv(&mut buf).expect("STOPPING");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(child.wait().expect("wait").success());
}

/// A registry holding busybox as `<repo>/busybox:1`, and that reference.
async fn registry_with_busybox(repo: &str) -> (berth_tests::registry::Registry, String) {
    let reg = berth_tests::registry::Registry::start();
    let name = format!("{repo}/busybox");
    berth_tests::fixtures::push_busybox(&reg, &name, "1", berth_tests::fixtures::Compression::Gzip)
        .await;
    let image = reg.image(&format!("{name}:1"));
    (reg, image)
}

/// gRPC C-core clients (Python's grpcio here; the C++ clients monitoring
/// agents use are the same library) send the socket's path as :authority,
/// percent-encoded: every service answers them, as containerd does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_c_core_clients_are_served_whatever_their_authority() {
    let (_reg, image) = registry_with_busybox("py").await;
    let b = Berthd::start().await;
    let dir = env!("CARGO_MANIFEST_DIR");
    let out = tokio::process::Command::new(format!("{dir}/pyclient/run.sh"))
        .args(["--script", "grpc_client.py"])
        .arg(&b.socket)
        .arg(format!("{dir}/../proto/proto"))
        .arg(&image)
        .output()
        .await
        .expect("run the Python client");
    assert!(out.status.success(), "{out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(r["Version"], "ok: berth", "{r}");
    assert_eq!(r["ListImages"], "ok: 1", "{r}");
    assert!(
        r["ContainerStatus(unknown)"]
            .as_str()
            .is_some_and(|s| s.starts_with("error: NOT_FOUND")),
        "{r}"
    );
    for (call, answer) in r.as_object().expect("object") {
        if call != "ContainerStatus(unknown)" {
            assert!(
                answer.as_str().is_some_and(|s| s.starts_with("ok: ")),
                "{call}: {answer}"
            );
        }
    }

    // A client that never ends its header block is cut off at 1 MiB, and
    // berthd goes on serving.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = tokio::net::UnixStream::connect(&b.socket)
        .await
        .expect("connect");
    // SETTINGS on stream 0, the header block on stream 1 (a SETTINGS on
    // any other stream is a protocol error that ends the connection at
    // once, before any bound is reached).
    let frame = |kind: u8, flags: u8, payload: &[u8]| {
        let stream = u8::from(kind != 0x4);
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags, 0, 0, 0, stream]);
        f.extend_from_slice(payload);
        f
    };
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    raw.write_all(&frame(0x4, 0, &[])).await.expect("settings");
    raw.write_all(&frame(0x1, 0, &[0x82]))
        .await
        .expect("headers");
    let filler = vec![0x82u8; 16_000];
    let mut cut = false;
    for _ in 0..100 {
        if raw.write_all(&frame(0x9, 0, &filler)).await.is_err() {
            cut = true;
            break;
        }
    }
    if !cut {
        let mut sink = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            raw.read_to_end(&mut sink),
        )
        .await;
        cut = matches!(read, Ok(Ok(_)) | Ok(Err(_)));
    }
    assert!(cut, "berthd kept a 1.6 MB header block open");
    let mut c = b.runtime().await;
    c.version(VersionRequest::default())
        .await
        .expect("still serving");
}

/// Drop-ins in `config.d` beside the config file merge over it in name
/// order (tables key by key, other values replaced), and `--print-config`
/// shows the result with where each value came from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_ins_merge_in_name_order_and_print_config_names_each_values_origin() {
    let b = Berthd::start().await;
    let dropins = b.config_file.with_file_name("config.d");
    std::fs::create_dir_all(&dropins).expect("config.d");
    let (a, z) = (dropins.join("10-a.toml"), dropins.join("20-z.toml"));
    std::fs::write(
        &a,
        "pinned_images = [\"a\"]\n[streaming]\nidle_timeout = \"7m\"\n",
    )
    .expect("10-a");
    std::fs::write(
        &z,
        "pinned_images = [\"z\"]\n[runtimes.crun]\ntype = \"oci\"\npath = \"/opt/crun\"\n",
    )
    .expect("20-z");
    // Not a .toml file: not read.
    std::fs::write(dropins.join("30-notes.txt"), "not = [toml").expect("notes");
    let out = b
        .command(&[])
        .arg("--print-config")
        .output()
        .expect("berthd --print-config");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let line = |needle: &str| -> String {
        text.lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{text}"))
            .to_string()
    };
    let file = |p: &std::path::Path| format!("# {}", p.display());
    assert_eq!(
        line("pinned_images ="),
        format!("pinned_images = [\"z\"]  {}", file(&z))
    );
    // Durations print in seconds.
    assert_eq!(
        line("idle_timeout ="),
        format!("idle_timeout = \"420s\"  {}", file(&a))
    );
    assert_eq!(
        line("path = \"/opt/crun\""),
        format!("path = \"/opt/crun\"  {}", file(&z))
    );
    assert!(
        line("cgroup_driver =").ends_with(&file(&b.config_file)),
        "{text}"
    );
    assert!(line("socket =").ends_with("# --socket"), "{text}");
    assert!(line("request_timeout =").ends_with("# default"), "{text}");
    assert!(text.contains("\n[runtimes.crun]\n"), "{text}");
    // What --print-config prints is a config berthd takes.
    let printed = b.dir.path().join("printed.toml");
    let body: String = text
        .lines()
        .map(|l| l.split("  # ").next().unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&printed, body).expect("printed");
    let again = b
        .command(&[("--config", &printed)])
        .arg("--print-config")
        .output()
        .expect("again");
    assert!(again.status.success(), "{again:?}");

    // A broken drop-in stops the start, naming its file and line.
    std::fs::write(
        &z,
        "pinned_images = [\"z\"]\n[streaming]\nidle_timeout = 7\n",
    )
    .expect("20-z");
    let out = b
        .command(&[])
        .arg("--print-config")
        .output()
        .expect("broken");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&z.display().to_string()) && err.contains("line 3"),
        "{err}"
    );
}

/// Sends SIGHUP and waits until the log has one more `expect` line.
async fn hup(b: &Berthd, expect: &str) {
    let before = b.log().matches(expect).count();
    nix::sys::signal::kill(b.pid(), Signal::SIGHUP).expect("SIGHUP");
    for _ in 0..200 {
        if b.log().matches(expect).count() > before {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no {expect:?} after SIGHUP:\n{}", b.log());
}

async fn rmi(
    img: &mut cri_api::v1::image_service_client::ImageServiceClient<tonic::transport::Channel>,
    image: &str,
) -> Result<(), tonic::Status> {
    img.remove_image(RemoveImageRequest {
        image: Some(ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
    })
    .await
    .map(|_| ())
}

/// SIGHUP reads the config again: `log_level` and `pinned_images` change
/// at once, other keys are logged as needing a restart, a broken file is
/// logged and the running config kept. berthd never exits on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_what_can_change_and_never_exits() {
    let (_reg, image) = registry_with_busybox("hup").await;
    let b = Berthd::start().await;
    b.pull(&image, None).await.expect("pull");
    // At the harness's level, debug, a pull logs debug lines.
    assert!(b.log().contains("DEBUG"), "{}", b.log());
    let dropins = b.config_file.with_file_name("config.d");
    std::fs::create_dir_all(&dropins).expect("config.d");
    std::fs::write(
        dropins.join("50-live.toml"),
        format!(
            "log_level = \"info\"\npinned_images = [\"{image}\"]\n[streaming]\nidle_timeout = \"9m\"\n"
        ),
    )
    .expect("drop-in");
    hup(&b, "takes effect when berthd restarts").await;
    let log = b.log();
    assert!(
        log.contains("key=\"log_level\"") || log.contains("key=log_level"),
        "{log}"
    );
    assert!(log.contains("streaming.idle_timeout"), "{log}");
    let mut img = b.image().await;
    let e = rmi(&mut img, &image)
        .await
        .expect_err("pinned since the reload");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    // Debug lines stop: berthd's own debug output (a pull logs some) is
    // gone from the log once the level is info.
    let lines = b.log().lines().count();
    b.pull(&image, None).await.expect("pull again");
    let new: Vec<String> = b.log().lines().skip(lines).map(String::from).collect();
    assert!(!new.iter().any(|l| l.contains("DEBUG")), "{new:?}");

    // A broken config: logged, and berthd goes on as it was.
    std::fs::write(dropins.join("60-broken.toml"), "pinned_images = [\n").expect("broken");
    hup(&b, "the config was not reloaded").await;
    let e = rmi(&mut img, &image).await.expect_err("still pinned");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    std::fs::remove_file(dropins.join("60-broken.toml")).expect("rm");
    std::fs::remove_file(dropins.join("50-live.toml")).expect("rm");
    hup(&b, "SIGHUP: applied").await;
    rmi(&mut img, &image).await.expect("unpinned by the reload");
    b.runtime()
        .await
        .version(VersionRequest::default())
        .await
        .expect("still serving");
}
