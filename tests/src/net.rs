//! A private CNI bridge network for a test: Debian's plugins (bridge,
//! host-local, loopback, portmap) linked into berthd's CNI bin dir.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Berthd;

pub const PLUGINS: &str = "/usr/lib/cni";

/// A private bridge network for one test: its name, bridge, subnet and
/// IPAM data dir, removed (bridge included) on drop.
pub struct TestNet {
    pub name: String,
    pub bridge: String,
    pub subnet_prefix: String,
    pub ipam_dir: PathBuf,
}

impl TestNet {
    /// Installs the plugins into berthd's CNI bin dir and writes a
    /// bridge + host-local conflist (plus `extra` plugins) into its conf dir.
    pub fn install(b: &Berthd, n: u32, extra: &[serde_json::Value]) -> TestNet {
        let d = b.dir.path();
        for p in ["bridge", "host-local", "loopback", "portmap"] {
            let link = d.join("cni-bin").join(p);
            let _ = std::os::unix::fs::symlink(Path::new(PLUGINS).join(p), link);
        }
        let tag = std::process::id() % 10_000;
        let net = TestNet {
            name: format!("berth-test-{tag}-{n}"),
            bridge: format!("bt{tag}x{n}"),
            subnet_prefix: format!("10.213.{}", (tag % 100) * 2 + n),
            ipam_dir: d.join("ipam"),
        };
        let mut plugins = vec![serde_json::json!({
            "type": "bridge",
            "bridge": net.bridge,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "dataDir": net.ipam_dir,
                "ranges": [[{"subnet": format!("{}.0/24", net.subnet_prefix)}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        })];
        plugins.extend_from_slice(extra);
        let list = serde_json::json!({"cniVersion": "1.0.0", "name": net.name, "plugins": plugins});
        std::fs::write(d.join("net.d/10-test.conflist"), list.to_string()).expect("conflist");
        net
    }

    /// The network berth installs by default (`manifests/10-berth.conflist`:
    /// bridge with host-local, portmap, bandwidth), on this test's own
    /// bridge, subnet and IPAM directory, its plugins linked into berthd's
    /// CNI bin dir; the bridge masquerades only if `masquerade`.
    pub fn install_default(b: &Berthd, n: u32, masquerade: bool) -> TestNet {
        let net = TestNet::install(b, n, &[]);
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/10-berth.conflist"),
        )
        .expect("manifests/10-berth.conflist");
        let mut list: serde_json::Value = serde_json::from_str(&text).expect("conflist");
        list["name"] = net.name.clone().into();
        let plugins = list["plugins"].as_array_mut().expect("plugins");
        for p in plugins.iter() {
            let kind = p["type"].as_str().expect("type");
            let link = b.dir.path().join("cni-bin").join(kind);
            let _ = std::os::unix::fs::symlink(Path::new(PLUGINS).join(kind), link);
        }
        let bridge = &mut plugins[0];
        bridge["bridge"] = net.bridge.clone().into();
        if !masquerade {
            bridge["ipMasq"] = false.into();
        }
        bridge["ipam"]["dataDir"] = serde_json::json!(net.ipam_dir);
        bridge["ipam"]["ranges"] =
            serde_json::json!([[{"subnet": format!("{}.0/24", net.subnet_prefix)}]]);
        std::fs::write(
            b.dir.path().join("net.d/10-test.conflist"),
            list.to_string(),
        )
        .expect("conflist");
        net
    }

    /// IPs host-local has handed out and not released.
    pub fn allocated(&self) -> Vec<String> {
        let mut ips: Vec<String> = std::fs::read_dir(self.ipam_dir.join(&self.name))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&self.subnet_prefix))
            .collect();
        ips.sort();
        ips
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}
