//! CRI `RuntimeConfig`: tells the kubelet which cgroup driver to use.

use cri_api::v1::{
    CgroupDriver, LinuxRuntimeConfiguration, RuntimeConfigRequest, RuntimeConfigResponse,
};

use crate::config;
use crate::daemon::Daemon;

pub fn runtime_config(daemon: &Daemon, _: RuntimeConfigRequest) -> RuntimeConfigResponse {
    let driver = match daemon.config.cgroup_driver {
        // `auto` is resolved at start; never seen here.
        config::CgroupDriver::Cgroupfs | config::CgroupDriver::Auto => CgroupDriver::Cgroupfs,
        config::CgroupDriver::Systemd => CgroupDriver::Systemd,
    };
    RuntimeConfigResponse {
        linux: Some(LinuxRuntimeConfiguration {
            cgroup_driver: driver as i32,
        }),
    }
}
