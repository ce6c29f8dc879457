//! CNI: configuration discovery, as libcni does it (the first file, in name
//! order, in the conf dir with a `.conf`, `.conflist` or `.json` suffix is
//! the pod network; every plugin it names must exist in a bin dir), and the
//! plugin exec protocol for ADD, CHECK and DEL.

use std::path::{Path, PathBuf};

/// The network berthd would use for pods.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    pub file: PathBuf,
    pub name: String,
    pub plugins: Vec<PathBuf>,
    /// The config as a list, `{cniVersion, name, plugins: [...]}`, also
    /// for a single-plugin `.conf`: what ADD ran with and DEL must reuse.
    pub list: serde_json::Value,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotReady {
    #[error("cni config uninitialized: no network config found in {0}")]
    NoConfig(PathBuf),
    #[error("cni config {file}: {reason}")]
    BadConfig { file: PathBuf, reason: String },
    #[error("cni plugin {plugin:?} (from {file}) not found in {dirs}")]
    MissingPlugin {
        file: PathBuf,
        plugin: String,
        dirs: String,
    },
}

/// Finds the pod network config and checks that its plugins are installed.
pub fn load(conf_dir: &Path, bin_dirs: &[PathBuf]) -> Result<NetworkConfig, NotReady> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(conf_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conf" | "conflist" | "json")
            ) && p.is_file()
        })
        .collect();
    files.sort();
    let file = files
        .into_iter()
        .next()
        .ok_or_else(|| NotReady::NoConfig(conf_dir.to_path_buf()))?;
    let bad = |reason: String| NotReady::BadConfig {
        file: file.clone(),
        reason,
    };
    let text = std::fs::read_to_string(&file).map_err(|e| bad(e.to_string()))?;
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let name = doc
        .get("name")
        .and_then(|n| n.as_str())
        .ok_or_else(|| bad("no \"name\"".into()))?
        .to_string();
    // A .conflist has "plugins"; a single .conf is its own plugin.
    let plugin_docs: Vec<&serde_json::Value> = match doc.get("plugins") {
        Some(serde_json::Value::Array(list)) if !list.is_empty() => list.iter().collect(),
        Some(_) => return Err(bad("\"plugins\" must be a non-empty list".into())),
        None => vec![&doc],
    };
    let mut plugins = Vec::new();
    for p in &plugin_docs {
        let ty = p
            .get("type")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty() && !t.contains('/'))
            .ok_or_else(|| bad("a plugin has no valid \"type\"".into()))?;
        let found = bin_dirs
            .iter()
            .map(|d| d.join(ty))
            .find(|p| is_executable(p));
        match found {
            Some(path) => plugins.push(path),
            None => {
                return Err(NotReady::MissingPlugin {
                    file: file.clone(),
                    plugin: ty.to_string(),
                    dirs: bin_dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
    }
    let version = doc
        .get("cniVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("0.4.0")
        .to_string();
    let list = serde_json::json!({
        "cniVersion": version,
        "name": name,
        "plugins": plugin_docs,
    });
    Ok(NetworkConfig {
        file,
        name,
        plugins,
        list,
    })
}

/// Who the network is for: the `CNI_*` environment and runtime config.
pub struct Attachment<'a> {
    pub pod_id: &'a str,
    pub netns: &'a Path,
    pub pod_name: &'a str,
    pub pod_namespace: &'a str,
    pub pod_uid: &'a str,
    /// `runtimeConfig`, given to plugins whose `capabilities` ask for a key
    /// (`portMappings`, `dns`, ...).
    pub runtime_config: serde_json::Value,
    /// How long one plugin execution may take (`cni.plugin_timeout`).
    pub timeout: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("cni plugin {plugin:?} {command}: {message}")]
pub struct ExecError {
    plugin: String,
    command: &'static str,
    message: String,
}

/// Runs ADD through the list; returns the final result. On a failure, DEL
/// runs for the whole list (as the CNI spec asks) before the error returns.
pub fn add(
    list: &serde_json::Value,
    bin_dirs: &[PathBuf],
    a: &Attachment<'_>,
) -> Result<serde_json::Value, ExecError> {
    let mut prev: Option<serde_json::Value> = None;
    for plugin in plugins_of(list) {
        match exec(list, plugin, "ADD", prev.as_ref(), bin_dirs, a) {
            Ok(result) => prev = Some(result),
            Err(e) => {
                if let Err(del_err) = del(list, prev.as_ref(), bin_dirs, a) {
                    tracing::warn!(pod = a.pod_id, "cleaning up a failed ADD: {del_err}");
                }
                return Err(e);
            }
        }
    }
    Ok(prev.unwrap_or_else(|| serde_json::json!({})))
}

/// Runs DEL through the list in reverse, with the ADD result as prevResult.
/// Every plugin is tried; the first error is returned.
pub fn del(
    list: &serde_json::Value,
    result: Option<&serde_json::Value>,
    bin_dirs: &[PathBuf],
    a: &Attachment<'_>,
) -> Result<(), ExecError> {
    let mut first = None;
    for plugin in plugins_of(list).iter().rev() {
        if let Err(e) = exec(list, plugin, "DEL", result, bin_dirs, a) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// Runs CHECK through the list with the ADD result as prevResult, as the
/// CNI spec (0.4.0 and later) defines it: an error means the attachment is
/// no longer what ADD made. `Ok(false)`: the config's version has no CHECK.
pub fn check(
    list: &serde_json::Value,
    result: &serde_json::Value,
    bin_dirs: &[PathBuf],
    a: &Attachment<'_>,
) -> Result<bool, ExecError> {
    let version = list["cniVersion"].as_str().unwrap_or("");
    if version_tuple(version) < (0, 4, 0) {
        return Ok(false);
    }
    for plugin in plugins_of(list) {
        exec(list, plugin, "CHECK", Some(result), bin_dirs, a)?;
    }
    Ok(true)
}

/// "1.0.0" → (1, 0, 0); anything unreadable sorts first.
fn version_tuple(v: &str) -> (u32, u32, u32) {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

/// A Kubernetes quantity (`10M`, `1Gi`, `500k`, `1e6`) as a whole number,
/// as the `kubernetes.io/{ingress,egress}-bandwidth` annotations give
/// bits per second.
pub fn quantity(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a quantity");
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse::<i32>().map_err(|_| bad())?),
        _ => return Err(bad()),
    };
    let v = (number * factor).ceil();
    if !v.is_finite() || v < 1.0 || v > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(v as u64)
}

fn plugins_of(list: &serde_json::Value) -> Vec<&serde_json::Value> {
    list.get("plugins")
        .and_then(|p| p.as_array())
        .map(|p| p.iter().collect())
        .unwrap_or_default()
}

/// One plugin invocation by the CNI exec protocol.
fn exec(
    list: &serde_json::Value,
    plugin: &serde_json::Value,
    command: &'static str,
    prev: Option<&serde_json::Value>,
    bin_dirs: &[PathBuf],
    a: &Attachment<'_>,
) -> Result<serde_json::Value, ExecError> {
    let ty = plugin.get("type").and_then(|t| t.as_str()).unwrap_or("");
    let fail = |message: String| ExecError {
        plugin: ty.to_string(),
        command,
        message,
    };
    let binary = bin_dirs
        .iter()
        .map(|d| d.join(ty))
        .find(|p| is_executable(p))
        .ok_or_else(|| fail("not found in the CNI bin dirs".into()))?;
    let mut conf = plugin.clone();
    if let Some(obj) = conf.as_object_mut() {
        obj.insert("name".into(), list["name"].clone());
        obj.insert("cniVersion".into(), list["cniVersion"].clone());
        if let Some(p) = prev {
            obj.insert("prevResult".into(), p.clone());
        }
        // Only the runtime config keys the plugin declares it handles.
        let wanted: Vec<String> = plugin
            .get("capabilities")
            .and_then(|c| c.as_object())
            .map(|c| {
                c.iter()
                    .filter(|(_, v)| v.as_bool() == Some(true))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        let rc: serde_json::Map<String, serde_json::Value> = wanted
            .iter()
            .filter_map(|k| a.runtime_config.get(k).map(|v| (k.clone(), v.clone())))
            .collect();
        if !rc.is_empty() {
            obj.insert("runtimeConfig".into(), serde_json::Value::Object(rc));
        }
    }
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        a.pod_namespace, a.pod_name, a.pod_id, a.pod_uid
    );
    let path = std::env::join_paths(bin_dirs).unwrap_or_default();
    let mut cmd = std::process::Command::new(&binary);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", a.pod_id)
        .env("CNI_NETNS", a.netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", args)
        .env("CNI_PATH", path);
    let started = std::time::Instant::now();
    let out = tracing::debug_span!("cni", otel.name = %format_args!("cni {ty} {command}"), plugin = ty, command)
        .in_scope(|| run_bounded(cmd, conf.to_string().into_bytes(), a.timeout));
    crate::metrics::cni(
        ty,
        command,
        out.as_ref().is_ok_and(|o| o.status.success()),
        started.elapsed(),
    );
    let out = out.map_err(|e| {
        fail(match e {
            RunError::Spawn(e) => format!("cannot run {}: {e}", binary.display()),
            RunError::Wait(e) => format!("waiting for {}: {e}", binary.display()),
            RunError::TimedOut => format!(
                "no answer within {}s (cni.plugin_timeout): its process group was killed",
                a.timeout.as_secs_f64()
            ),
        })
    })?;
    if !out.status.success() {
        // The spec's error object: {"code", "msg", "details"}.
        let stdout = String::from_utf8_lossy(&out.stdout);
        let message = serde_json::from_str::<serde_json::Value>(&stdout)
            .ok()
            .and_then(|v| {
                let msg = v.get("msg")?.as_str()?.to_string();
                let details = v.get("details").and_then(|d| d.as_str()).unwrap_or("");
                Some(if details.is_empty() {
                    msg
                } else {
                    format!("{msg}: {details}")
                })
            })
            .unwrap_or_else(|| {
                format!(
                    "{} {}",
                    stdout.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            });
        return Err(fail(format!("{} ({})", message.trim(), out.status)));
    }
    if command == "DEL" || out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::json!({}));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| fail(format!("unreadable result: {e}")))
}

enum RunError {
    Spawn(std::io::Error),
    Wait(std::io::Error),
    TimedOut,
}

/// Most bytes kept of a plugin's stdout and of its stderr.
const MAX_PLUGIN_OUTPUT: u64 = 1 << 20;

/// Runs `cmd` in a process group of its own with `input` on its stdin and
/// returns its status and (bounded) output; past `timeout`, kills the
/// whole group (a plugin's own children, such as an IPAM plugin it runs,
/// included) and says so. The pipes are read by threads that end when the
/// group is gone.
fn run_bounded(
    mut cmd: std::process::Command,
    input: Vec<u8>,
    timeout: std::time::Duration,
) -> Result<std::process::Output, RunError> {
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .process_group(0)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(RunError::Spawn)?;
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let pidfd = crate::wait::pidfd(group).ok();
    let deadline = std::time::Instant::now() + timeout;
    let kill = |child: &mut std::process::Child| {
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
        RunError::TimedOut
    };
    // stdout (0) and stderr (1), each read to its end by a thread of its
    // own; the end may come later than the plugin's exit (a child of its
    // still holding the pipe), so it is waited for until the deadline too.
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Vec<u8>)>();
    let pipes: [Option<Box<dyn Read + Send>>; 2] = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ];
    for (i, pipe) in pipes.into_iter().enumerate() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(p) = pipe {
                let _ = p.take(MAX_PLUGIN_OUTPUT).read_to_end(&mut buf);
            }
            let _ = tx.send((i, buf));
        });
    }
    drop(tx);
    if let Some(mut stdin) = child.stdin.take() {
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let status = loop {
        match child.try_wait().map_err(RunError::Wait)? {
            Some(s) => break s,
            None if std::time::Instant::now() >= deadline => return Err(kill(&mut child)),
            None => crate::wait::for_exit(pidfd.as_ref(), deadline),
        }
    };
    let mut output = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, buf)) => output[i] = buf,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return Err(kill(&mut child)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let [stdout, stderr] = output;
    Ok(std::process::Output {
        status,
        stdout,
        stderr,
    })
}

/// The pod's IPs from a CNI result: `ips[].address` (0.3.0 and later), or
/// `ip4.ip` / `ip6.ip` (0.1.0/0.2.0, which some old plugins still return).
pub fn ips(result: &serde_json::Value) -> Vec<String> {
    let strip = |a: &str| a.split('/').next().unwrap_or(a).to_string();
    if let Some(list) = result.get("ips").and_then(|i| i.as_array()) {
        return list
            .iter()
            .filter_map(|ip| ip.get("address")?.as_str())
            .map(strip)
            .collect();
    }
    ["ip4", "ip6"]
        .iter()
        .filter_map(|k| result.get(*k)?.get("ip")?.as_str())
        .map(strip)
        .collect()
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Dirs {
        top: PathBuf,
        conf: PathBuf,
        bin: PathBuf,
    }

    fn dirs(tag: &str) -> Dirs {
        let top = std::env::temp_dir().join(format!("berth-cni-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&top);
        let (conf, bin) = (top.join("net.d"), top.join("bin"));
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        Dirs { top, conf, bin }
    }

    fn plugin(d: &Dirs, name: &str) {
        let p = d.bin.join(name);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A plugin that runs `body` (a shell script), writing its pids where
    /// the test finds them.
    fn script_plugin(d: &Dirs, name: &str, body: &str) {
        let p = d.bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn run_add(
        d: &Dirs,
        ty: &str,
        timeout: std::time::Duration,
    ) -> Result<serde_json::Value, ExecError> {
        let list = serde_json::json!({
            "cniVersion": "1.0.0", "name": "n", "plugins": [{"type": ty}]
        });
        let a = Attachment {
            pod_id: "p",
            netns: Path::new("/proc/self/ns/net"),
            pod_name: "n",
            pod_namespace: "ns",
            pod_uid: "u",
            runtime_config: serde_json::Value::Null,
            timeout,
        };
        // A script just written may be busy to exec (ETXTBSY) while
        // another test thread forks with its write descriptor open.
        for _ in 0..100 {
            match add(&list, std::slice::from_ref(&d.bin), &a) {
                Err(e) if e.to_string().contains("Text file busy") => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                other => return other,
            }
        }
        add(&list, std::slice::from_ref(&d.bin), &a)
    }

    /// Gone, or a zombie nobody has reaped yet: not running.
    fn running(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
            .map(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
    }

    fn wait_gone(pid: &str) {
        for _ in 0..200 {
            if !running(pid) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("process {pid} still runs");
    }

    #[test]
    fn a_plugin_that_hangs_is_killed_with_its_children_at_the_timeout() {
        let d = dirs("hang");
        let pids = d.top.join("pids");
        script_plugin(
            &d,
            "hang",
            &format!("sleep 1000 & echo $$ $! > {}; wait", pids.display()),
        );
        let e = run_add(&d, "hang", std::time::Duration::from_millis(500)).unwrap_err();
        assert!(e.to_string().contains("cni.plugin_timeout"), "{e}");
        assert!(e.to_string().contains("\"hang\" ADD"), "{e}");
        let text = std::fs::read_to_string(&pids).unwrap();
        for pid in text.split_whitespace() {
            wait_gone(pid);
        }
    }

    #[test]
    fn a_plugin_whose_child_keeps_its_stdout_open_does_not_hang_the_call() {
        let d = dirs("daemon");
        let pids = d.top.join("pids");
        // Exits at once, but its child holds stdout: reading it to its
        // end would wait for the child.
        script_plugin(
            &d,
            "daemon",
            &format!(
                "sleep 1000 & echo $! > {}; echo '{{}}'; exit 0",
                pids.display()
            ),
        );
        let e = run_add(&d, "daemon", std::time::Duration::from_millis(500)).unwrap_err();
        assert!(e.to_string().contains("cni.plugin_timeout"), "{e}");
        wait_gone(&std::fs::read_to_string(&pids).unwrap());
        // A plugin that answers in time is not affected.
        script_plugin(
            &d,
            "quick",
            "cat > /dev/null; echo '{\"cniVersion\":\"1.0.0\"}'",
        );
        let r = run_add(&d, "quick", std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(r["cniVersion"], "1.0.0");
    }

    #[test]
    fn empty_dir_is_not_ready() {
        let d = dirs("empty");
        std::fs::write(d.conf.join("README"), "not a config").unwrap();
        assert_eq!(
            load(&d.conf, std::slice::from_ref(&d.bin)),
            Err(NotReady::NoConfig(d.conf.clone()))
        );
        std::fs::remove_dir_all(d.top).unwrap();
    }

    #[test]
    fn first_conflist_by_name_with_plugins_present_is_ready() {
        let d = dirs("ready");
        std::fs::write(
            d.conf.join("10-pods.conflist"),
            r#"{"cniVersion":"1.0.0","name":"pods","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
        )
        .unwrap();
        std::fs::write(
            d.conf.join("20-other.conf"),
            r#"{"name":"other","type":"x"}"#,
        )
        .unwrap();
        plugin(&d, "bridge");
        let e = load(&d.conf, std::slice::from_ref(&d.bin)).unwrap_err();
        assert!(e.to_string().contains("\"portmap\""), "{e}");
        plugin(&d, "portmap");
        let net = load(&d.conf, std::slice::from_ref(&d.bin)).unwrap();
        assert_eq!(net.name, "pods");
        assert_eq!(
            net.plugins,
            vec![d.bin.join("bridge"), d.bin.join("portmap")]
        );
        std::fs::remove_dir_all(d.top).unwrap();
    }

    #[test]
    fn ips_from_every_result_version() {
        let v1 = serde_json::json!({"cniVersion": "1.0.0", "ips": [
            {"address": "10.1.0.5/24", "gateway": "10.1.0.1"},
            {"address": "fd00::5/64"}]});
        assert_eq!(ips(&v1), ["10.1.0.5", "fd00::5"]);
        let v02 = serde_json::json!({"cniVersion": "0.2.0",
            "ip4": {"ip": "10.2.0.7/16"}, "ip6": {"ip": "fd01::7/64"}});
        assert_eq!(ips(&v02), ["10.2.0.7", "fd01::7"]);
        assert!(ips(&serde_json::json!({})).is_empty());
    }

    #[test]
    fn check_needs_version_0_4_0() {
        assert!(version_tuple("0.3.1") < (0, 4, 0));
        assert!(version_tuple("0.4.0") >= (0, 4, 0));
        assert!(version_tuple("1.1.0") >= (0, 4, 0));
        assert!(version_tuple("") < (0, 4, 0));
    }

    #[test]
    fn quantities_as_the_kubelet_writes_them() {
        assert_eq!(quantity("10M"), Ok(10_000_000));
        assert_eq!(quantity("1Mi"), Ok(1_048_576));
        assert_eq!(quantity("100k"), Ok(100_000));
        assert_eq!(quantity("1.5G"), Ok(1_500_000_000));
        assert_eq!(quantity("1e3"), Ok(1000));
        assert_eq!(quantity("12345"), Ok(12345));
        for bad in ["", "M", "10X", "-5M", "0", "1.2.3k"] {
            assert!(quantity(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn broken_json_is_reported_with_its_file() {
        let d = dirs("broken");
        std::fs::write(d.conf.join("10.conf"), "{").unwrap();
        let e = load(&d.conf, std::slice::from_ref(&d.bin)).unwrap_err();
        assert!(matches!(e, NotReady::BadConfig { .. }), "{e}");
        std::fs::remove_dir_all(d.top).unwrap();
    }
}
