//! The process: its command line (as containerd's `WithProcessArgs`), its
//! environment, working directory, terminal and rlimits; and the stop
//! signal from the image.

use std::str::FromStr as _;

use cri_api::v1::ContainerConfig;
use oci_spec::runtime::{PosixRlimitBuilder, PosixRlimitType, Spec};

use super::{Context, Error, ImageDefaults, invalid, process_mut};

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Sets `process.args`, `env`, `cwd`, `terminal` and `rlimits`.
pub fn apply(spec: &mut Spec, cx: &Context) -> Result<(), Error> {
    let args = process_args(cx.config, cx.image)?;
    let env = process_env(cx.config, cx.image, &cx.hostname)?;
    let cwd = process_cwd(cx.config, cx.image)?;
    let rlimits = cx
        .pod
        .rlimits
        .iter()
        .map(|(t, soft, hard)| {
            let typ = PosixRlimitType::from_str(t)
                .map_err(|_| invalid("runtime.default_rlimits", format!("unknown type {t:?}")))?;
            Ok(PosixRlimitBuilder::default()
                .typ(typ)
                .soft(*soft)
                .hard(*hard)
                .build()?)
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let p = process_mut(spec);
    p.set_terminal(Some(cx.config.tty));
    p.set_args(Some(args));
    p.set_env(Some(env));
    p.set_cwd(cwd.into());
    if !rlimits.is_empty() {
        p.set_rlimits(Some(rlimits));
    }
    Ok(())
}
/// The stop signal from the image config's StopSignal ("SIGTERM", "TERM",
/// "15"; case-insensitive), default 15 (SIGTERM) when empty.
pub fn stop_signal(image_stop_signal: &str) -> Result<i32, Error> {
    let raw = image_stop_signal.trim();
    if raw.is_empty() {
        return Ok(15);
    }
    let bad = || invalid("image StopSignal", format!("unknown signal {raw:?}"));
    if let Ok(n) = raw.parse::<i32>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    let upper = raw.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let n = match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "TRAP" => 5,
        "ABRT" | "IOT" => 6,
        "BUS" => 7,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        "STKFLT" => 16,
        "CHLD" | "CLD" => 17,
        "CONT" => 18,
        "STOP" => 19,
        "TSTP" => 20,
        "TTIN" => 21,
        "TTOU" => 22,
        "URG" => 23,
        "XCPU" => 24,
        "XFSZ" => 25,
        "VTALRM" => 26,
        "PROF" => 27,
        "WINCH" => 28,
        "IO" | "POLL" => 29,
        "PWR" => 30,
        "SYS" => 31,
        "RTMIN" => 34,
        "RTMAX" => 64,
        _ => {
            let (base, off) = if let Some(o) = name.strip_prefix("RTMIN+") {
                (34, o.parse::<i32>().ok().filter(|o| (1..=15).contains(o)))
            } else if let Some(o) = name.strip_prefix("RTMAX-") {
                (
                    64,
                    o.parse::<i32>()
                        .ok()
                        .filter(|o| (1..=14).contains(o))
                        .map(|o| -o),
                )
            } else {
                (0, None)
            };
            base + off.ok_or_else(bad)?
        }
    };
    Ok(n)
}

fn process_args(c: &ContainerConfig, image: &ImageDefaults) -> Result<Vec<String>, Error> {
    // containerd's WithProcessArgs (from moby's daemon/commit.go).
    let mut command = c.command.clone();
    let mut args = c.args.clone();
    if command.is_empty() {
        if args.is_empty() {
            args = image.cmd.clone();
        }
        if !(image.entrypoint.len() == 1 && image.entrypoint[0].is_empty()) {
            command = image.entrypoint.clone();
        }
    }
    command.extend(args);
    if command.is_empty() {
        return Err(Error::NoCommand);
    }
    Ok(command)
}

fn env_key(kv: &str) -> &str {
    kv.split_once('=').map_or(kv, |(k, _)| k)
}

fn replace_or_append(env: &mut Vec<String>, kv: String) {
    let key = env_key(&kv).to_string();
    match env.iter_mut().find(|e| env_key(e) == key) {
        Some(slot) => *slot = kv,
        None => env.push(kv),
    }
}

fn process_env(
    c: &ContainerConfig,
    image: &ImageDefaults,
    hostname: &str,
) -> Result<Vec<String>, Error> {
    // As containerd: default PATH, then HOSTNAME, then image env, then CRI
    // env, each replacing an earlier entry with the same key in place.
    let mut env = vec![DEFAULT_PATH.to_string()];
    replace_or_append(&mut env, format!("HOSTNAME={hostname}"));
    for kv in &image.env {
        // runc rejects entries without '='.
        if kv.contains('=') && !kv.starts_with('=') {
            replace_or_append(&mut env, kv.clone());
        }
    }
    for (i, kv) in c.envs.iter().enumerate() {
        if kv.key.is_empty() || kv.key.contains('=') || kv.key.contains('\0') {
            return Err(invalid(
                format!("envs[{i}].key"),
                format!("invalid name {:?}", kv.key),
            ));
        }
        let value = std::str::from_utf8(&kv.value)
            .map_err(|_| invalid(format!("envs[{i}].value"), "not valid UTF-8"))?;
        replace_or_append(&mut env, format!("{}={value}", kv.key));
    }
    Ok(env)
}

fn process_cwd(c: &ContainerConfig, image: &ImageDefaults) -> Result<String, Error> {
    let (field, cwd) = if !c.working_dir.is_empty() {
        ("working_dir", c.working_dir.as_str())
    } else if !image.working_dir.is_empty() {
        ("image WorkingDir", image.working_dir.as_str())
    } else {
        return Ok("/".into());
    };
    if !cwd.starts_with('/') {
        return Err(invalid(field, format!("{cwd:?} is not an absolute path")));
    }
    Ok(cwd.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{PodContext, build};
    use std::path::Path;

    #[test]
    fn stop_signals() {
        assert_eq!(stop_signal("").unwrap(), 15);
        assert_eq!(stop_signal("SIGTERM").unwrap(), 15);
        assert_eq!(stop_signal("TERM").unwrap(), 15);
        assert_eq!(stop_signal("15").unwrap(), 15);
        assert_eq!(stop_signal("sigkill").unwrap(), 9);
        assert_eq!(stop_signal("SIGQUIT").unwrap(), 3);
        assert_eq!(stop_signal("SIGRTMIN+3").unwrap(), 37);
        assert_eq!(stop_signal("RTMAX").unwrap(), 64);
        assert!(stop_signal("0").is_err());
        assert!(stop_signal("SIGBOGUS").is_err());
        assert!(stop_signal("99").is_err());
    }

    /// Every limit `runtime.default_rlimits` accepts has a typed OCI rlimit,
    /// written with the name the config gave.
    #[test]
    fn every_configurable_rlimit_is_a_typed_rlimit() {
        let c = ContainerConfig {
            command: vec!["/bin/true".into()],
            ..Default::default()
        };
        for name in crate::config::RLIMITS {
            let rl = crate::config::parse_rlimit(&format!("{name}=1:2")).unwrap();
            let pod = PodContext {
                rlimits: vec![rl.clone()],
                ..Default::default()
            };
            let spec = build(
                "abc",
                &c,
                &ImageDefaults::default(),
                &pod,
                Path::new("/nonexistent"),
            )
            .unwrap();
            let v = serde_json::to_value(&spec).unwrap();
            assert_eq!(
                v["process"]["rlimits"],
                serde_json::json!([{ "type": rl.0, "soft": 1, "hard": 2 }])
            );
        }
    }
}
