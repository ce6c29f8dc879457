//! A pod's network through the CNI plugins: ADD when it is made, CHECK
//! after a berthd restart, DEL when it stops (retried until it works),
//! and the CNI runtimeConfig from the pod's config.

use std::path::Path;

use cri_api::v1::{PodSandboxConfig, Protocol};

use super::{Network, PodError, PodRecord, Pods};

impl Pods {
    /// CNI ADD (none configured: the pod keeps loopback only, and Status
    /// says the network is not ready).
    pub(super) fn attach_network(
        &self,
        rec: &mut PodRecord,
        config: &PodSandboxConfig,
    ) -> Result<(), String> {
        match crate::cni::load(&self.cni.conf_dir, &self.cni.bin_dirs) {
            Err(crate::cni::NotReady::NoConfig(dir)) => {
                tracing::warn!(pod = %rec.id, "no CNI config in {}: loopback only", dir.display());
            }
            Err(e) => return Err(format!("network: {e}")),
            Ok(net) => {
                // Host ports need a plugin that takes portMappings.
                let wants_ports = config.port_mappings.iter().any(|p| p.host_port > 0);
                let has_portmap = net.list["plugins"].as_array().is_some_and(|ps| {
                    ps.iter()
                        .any(|p| p["capabilities"]["portMappings"].as_bool() == Some(true))
                });
                if wants_ports && !has_portmap {
                    return Err(format!(
                        "network {:?}: the pod asks for host ports, but no plugin in {} handles portMappings (add portmap)",
                        net.name,
                        net.file.display()
                    ));
                }
                let netns = self.ns_dir(&rec.id).join("net");
                let mut a = attachment(&rec.id, &netns, config, self.cni.plugin_timeout);
                a.runtime_config = cni_runtime_config(config)?;
                if let Some(cidr) = self.pod_cidr() {
                    // One range set per address family, as host-local wants.
                    let ranges: Vec<serde_json::Value> = cidr
                        .split(',')
                        .map(|c| serde_json::json!([{ "subnet": c.trim() }]))
                        .collect();
                    a.runtime_config["ipRanges"] = serde_json::Value::Array(ranges);
                }
                // What DEL will need, on disk before ADD: should berthd die
                // before the pod is recorded, the start's cleanup of
                // half-made pods releases what ADD took (IPs, host ports).
                let intent = PodRecord {
                    network: Some(Network {
                        list: net.list.clone(),
                        result: serde_json::Value::Null,
                        ips: Vec::new(),
                        runtime_config: a.runtime_config.clone(),
                    }),
                    ..rec.clone()
                };
                let file = self.pod_dir(&rec.id).join(super::HALF_MADE);
                serde_json::to_vec(&intent)
                    .map_err(|e| e.to_string())
                    .and_then(|b| std::fs::write(&file, b).map_err(|e| e.to_string()))
                    .map_err(|e| format!("network: {}: {e}", file.display()))?;
                let result = crate::cni::add(&net.list, &self.cni.bin_dirs, &a)
                    .map_err(|e| format!("network {:?}: {e}", net.name))?;
                berth_db::crash::point("run_pod:network_added");
                rec.network = Some(Network {
                    ips: crate::cni::ips(&result),
                    list: net.list,
                    result,
                    runtime_config: a.runtime_config,
                });
            }
        }
        Ok(())
    }

    /// CNI DEL for the pod's network, then forgets it. Idempotent; an error
    /// keeps the network recorded, so that a retry runs DEL again.
    pub fn detach_network(&self, rec: &mut PodRecord) -> Result<(), PodError> {
        let Some(net) = rec.network.clone() else {
            return Ok(());
        };
        let config = rec.config();
        let netns = self.ns_dir(&rec.id).join("net");
        let mut a = attachment(&rec.id, &netns, &config, self.cni.plugin_timeout);
        a.runtime_config = if net.runtime_config.is_null() {
            cni_runtime_config(&config).unwrap_or_default()
        } else {
            net.runtime_config.clone()
        };
        // No result: ADD never answered (a half-made pod), DEL without one.
        let prev = Some(&net.result).filter(|r| !r.is_null());
        if let Err(e) = crate::cni::del(&net.list, prev, &self.cni.bin_dirs, &a) {
            let reason = format!("network teardown: {e}");
            rec.network_error = Some(reason.clone());
            if self.find(&rec.id)?.is_some() {
                self.save(rec)?;
            }
            return Err(PodError::Network {
                id: rec.id.clone(),
                reason,
            });
        }
        berth_db::crash::point("pod:network_deleted");
        rec.network = None;
        rec.network_error = None;
        if self.find(&rec.id)?.is_some() {
            self.save(rec)?;
        }
        Ok(())
    }

    /// CNI CHECK of the pod's network (after a berthd restart: is the
    /// attachment still what ADD made?). The outcome is recorded in
    /// `network_error`. `Ok(false)`: nothing to check, or the config's
    /// version has no CHECK.
    pub fn check_network(&self, rec: &mut PodRecord) -> Result<bool, PodError> {
        let Some(net) = rec.network.clone() else {
            return Ok(false);
        };
        let config = rec.config();
        let netns = self.ns_dir(&rec.id).join("net");
        let mut a = attachment(&rec.id, &netns, &config, self.cni.plugin_timeout);
        a.runtime_config = net.runtime_config.clone();
        let outcome = crate::cni::check(&net.list, &net.result, &self.cni.bin_dirs, &a);
        let before = rec.network_error.take();
        let checked = match outcome {
            Ok(checked) => checked,
            Err(e) => {
                rec.network_error = Some(format!("network check: {e}"));
                false
            }
        };
        if before != rec.network_error && self.find(&rec.id)?.is_some() {
            self.save(rec)?;
        }
        match &rec.network_error {
            Some(reason) => Err(PodError::Network {
                id: rec.id.clone(),
                reason: reason.clone(),
            }),
            None => Ok(checked),
        }
    }
}

/// The CNI environment for a pod (its runtime config is added by the
/// caller: [`cni_runtime_config`] for ADD, the stored one for DEL).
fn attachment<'a>(
    id: &'a str,
    netns: &'a Path,
    c: &'a PodSandboxConfig,
    timeout: std::time::Duration,
) -> crate::cni::Attachment<'a> {
    let m = c.metadata.as_ref();
    crate::cni::Attachment {
        pod_id: id,
        netns,
        pod_name: m.map(|m| m.name.as_str()).unwrap_or(""),
        pod_namespace: m.map(|m| m.namespace.as_str()).unwrap_or(""),
        pod_uid: m.map(|m| m.uid.as_str()).unwrap_or(""),
        runtime_config: serde_json::Value::Null,
        timeout,
    }
}

/// Pod annotations that ask for static addresses: `berth.io/ips`
/// (comma-separated, with prefix length) and `berth.io/mac`, given to
/// plugins with the `ips` / `mac` capabilities (the CNI conventions).
pub const IPS_ANNOTATION: &str = "berth.io/ips";
pub const MAC_ANNOTATION: &str = "berth.io/mac";

/// The CNI `runtimeConfig` for ADD, from the pod config: every key the
/// CNI conventions define that the CRI can fill. Each plugin gets only
/// the keys its `capabilities` ask for. A bad annotation is an error.
pub fn cni_runtime_config(c: &PodSandboxConfig) -> Result<serde_json::Value, String> {
    let port_mappings: Vec<serde_json::Value> = c
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| {
            let protocol = match p.protocol() {
                Protocol::Udp => "udp",
                Protocol::Sctp => "sctp",
                Protocol::Tcp => "tcp",
            };
            serde_json::json!({
                "hostPort": p.host_port,
                "containerPort": p.container_port,
                "protocol": protocol,
                "hostIP": p.host_ip,
            })
        })
        .collect();
    let mut rc = serde_json::json!({
        "portMappings": port_mappings,
        "io.kubernetes.cri.pod-annotations": c.annotations,
    });
    if let Some(d) = &c.dns_config {
        rc["dns"] =
            serde_json::json!({"servers": d.servers, "searches": d.searches, "options": d.options});
    }
    // The kubelet's bandwidth annotations, in bits per second; the burst
    // is left unbounded, as containerd does.
    let mut bandwidth = serde_json::Map::new();
    for (annotation, rate, burst) in [
        (
            "kubernetes.io/ingress-bandwidth",
            "ingressRate",
            "ingressBurst",
        ),
        (
            "kubernetes.io/egress-bandwidth",
            "egressRate",
            "egressBurst",
        ),
    ] {
        if let Some(v) = c.annotations.get(annotation) {
            let bits =
                crate::cni::quantity(v).map_err(|e| format!("annotation {annotation}: {e}"))?;
            bandwidth.insert(rate.into(), bits.into());
            bandwidth.insert(burst.into(), u64::from(u32::MAX).into());
        }
    }
    if !bandwidth.is_empty() {
        rc["bandwidth"] = serde_json::Value::Object(bandwidth);
    }
    if let Some(v) = c.annotations.get(IPS_ANNOTATION) {
        let mut ips = Vec::new();
        for ip in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (addr, prefix) = ip.split_once('/').unwrap_or((ip, ""));
            let addr: std::net::IpAddr = addr
                .parse()
                .map_err(|_| format!("annotation {IPS_ANNOTATION}: {ip:?} is not an IP address"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            if !prefix.is_empty() && !prefix.parse::<u8>().is_ok_and(|p| p <= max) {
                return Err(format!("annotation {IPS_ANNOTATION}: bad prefix in {ip:?}"));
            }
            ips.push(serde_json::Value::from(ip));
        }
        rc["ips"] = serde_json::Value::Array(ips);
    }
    if let Some(mac) = c.annotations.get(MAC_ANNOTATION) {
        let parts: Vec<&str> = mac.split(':').collect();
        if parts.len() != 6
            || !parts
                .iter()
                .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(format!(
                "annotation {MAC_ANNOTATION}: {mac:?} is not a MAC address"
            ));
        }
        rc["mac"] = mac.as_str().into();
    }
    if let Some(parent) = c
        .linux
        .as_ref()
        .map(|l| &l.cgroup_parent)
        .filter(|p| !p.is_empty())
    {
        rc["cgroupPath"] = parent.as_str().into();
    }
    Ok(rc)
}
