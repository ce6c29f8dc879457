//! The files every container of a pod mounts: hostname, hosts,
//! resolv.conf, and the pod's own /dev/shm tmpfs.

use cri_api::v1::{NamespaceMode, PodSandboxConfig};

use super::{IdMaps, PodRecord, Pods, namespace_options};

impl Pods {
    pub(super) fn write_files(
        &self,
        rec: &mut PodRecord,
        config: &PodSandboxConfig,
        hostname: &str,
        userns: Option<IdMaps>,
    ) -> Result<(), String> {
        let opts = namespace_options(config);
        let dir = self.pod_dir(&rec.id);
        // Files every container of the pod mounts.
        let node_hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let hostname = if opts.network() == NamespaceMode::Node {
            node_hostname
        } else {
            hostname.to_string()
        };
        // In a user namespace, the pod's root owns them, as it would on
        // the node.
        let owner = userns.map(|m| m.to_host(0, 0));
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| format!("{name}: {e}"))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(|e| format!("{name}: chown: {e}"))?;
            }
            Ok::<(), String>(())
        };
        write("hostname", format!("{hostname}\n"))?;
        write(
            "hosts",
            if opts.network() == NamespaceMode::Node {
                std::fs::read_to_string("/etc/hosts").unwrap_or_default()
            } else {
                let mut hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n".to_string();
                // The pod's own name resolves to its IPs.
                for ip in rec.network.iter().flat_map(|n| &n.ips) {
                    hosts.push_str(&format!("{ip}\t{hostname}\n"));
                }
                hosts
            },
        )?;
        write("resolv.conf", resolv_conf(config))?;

        // /dev/shm: the pod's own tmpfs unless it shares the node's IPC.
        if opts.ipc() != NamespaceMode::Node {
            let shm = dir.join("shm");
            std::fs::create_dir_all(&shm).map_err(|e| format!("shm: {e}"))?;
            let options = match owner {
                Some((uid, gid)) => format!("mode=1777,size=65536k,uid={uid},gid={gid}"),
                None => "mode=1777,size=65536k".to_string(),
            };
            self.host
                .mount_tmpfs(&shm, &options)
                .map_err(|e| format!("mount shm: {e}"))?;
            rec.shm_mounted = true;
        }
        Ok(())
    }
}

/// resolv.conf from the CRI DnsConfig, else the node's.
fn resolv_conf(config: &PodSandboxConfig) -> String {
    match &config.dns_config {
        Some(d) if !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()) => {
            let mut s = String::new();
            if !d.searches.is_empty() {
                s.push_str(&format!("search {}\n", d.searches.join(" ")));
            }
            for server in &d.servers {
                s.push_str(&format!("nameserver {server}\n"));
            }
            if !d.options.is_empty() {
                s.push_str(&format!("options {}\n", d.options.join(" ")));
            }
            s
        }
        _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    }
}
