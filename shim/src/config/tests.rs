//! Unit tests of `config`.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/berth/config.toml"), text)
}

#[test]
fn empty_file_is_the_defaults() {
    assert_eq!(parse("").unwrap(), Config::default());
}

#[test]
fn the_documented_example_parses() {
    let c = parse(
        r#"
socket = "/run/x/berth.sock"
root = "/srv/berth"
state = "/run/x"
log_level = "debug"
cgroup_driver = "systemd"
pinned_images = ["registry.k8s.io/pause:*"]
[registry]
config_path = "/etc/containerd/certs.d"
pull_progress_timeout = "1m30s"
pull_min_rate = 4096
request_timeout = "20s"
[cni]
conf_dir = "/etc/cni/net.d"
bin_dirs = ["/opt/cni/bin"]
[streaming]
address = "127.0.0.1"
port = 10010
[runtimes.crun]
type = "oci"
path = "/usr/bin/crun"
"#,
    )
    .unwrap();
    assert_eq!(c.cgroup_driver, CgroupDriver::Systemd);
    assert_eq!(c.registry.pull_progress_timeout, Duration::from_secs(90));
    assert_eq!(c.registry.pull_min_rate, 4096);
    assert_eq!(c.registry.request_timeout, Duration::from_secs(20));
    assert_eq!(c.streaming.port, 10010);
    assert_eq!(c.runtimes.len(), 3, "crun is added to builtin and runc");
    assert_eq!(
        c.runtimes["crun"],
        RuntimeHandler::Oci {
            path: "/usr/bin/crun".into()
        }
    );
}

#[test]
fn unknown_key_names_line_and_key() {
    let e = parse("root = \"/x\"\n\nsockett = \"/y\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("/etc/berth/config.toml"), "{e}");
    assert!(e.contains("line 3"), "{e}");
    assert!(e.contains("sockett"), "{e}");
}

#[test]
fn unknown_nested_key_and_bad_values_are_refused() {
    for text in [
        "[cni]\nconf_dirs = \"/x\"\n",
        "cgroup_driver = \"cgroupv1\"\n",
        "[registry]\npull_progress_timeout = \"5 minutes\"\n",
        "[runtimes.x]\ntype = \"oci\"\n",
        "[streaming]\nport = 70000\n",
    ] {
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains("line "), "{text}: {e}");
    }
}

#[test]
fn validation_catches_relative_paths_and_bad_levels() {
    let path = Path::new("/c.toml");
    let c = Config {
        root: "relative".into(),
        ..Default::default()
    };
    assert!(c.validate(path).unwrap_err().to_string().contains("`root`"));
    let c = Config {
        log_level: "loud=[".into(),
        ..Default::default()
    };
    assert!(
        c.validate(path)
            .unwrap_err()
            .to_string()
            .contains("log_level")
    );
    let mut c = Config::default();
    c.runtimes
        .insert("builtin".into(), RuntimeHandler::Oci { path: "/x".into() });
    assert!(c.validate(path).is_err());
}

#[test]
fn overrides_win() {
    let mut c = Config::default();
    c.apply(&Overrides {
        socket: Some("/tmp/s.sock".into()),
        log_level: Some("debug".into()),
        ..Default::default()
    });
    assert_eq!(c.socket, Path::new("/tmp/s.sock"));
    assert_eq!(c.log_level, "debug");
    assert_eq!(c.root, Path::new("/var/lib/berth"));
}

#[test]
fn images_limits_take_sizes_and_percentages() {
    let c = parse(
        "[images]\nmax_layer_unpacked_size = \"1GiB\"\nmax_layer_entries = 10\n\
         max_manifest_size = 65536\nmax_config_size = \"2 MiB\"\nmin_free_space = \"10%\"\n",
    )
    .unwrap();
    let l = c.images.limits();
    assert_eq!(l.max_layer_unpacked_size, 1 << 30);
    assert_eq!(l.max_layer_entries, 10);
    assert_eq!(l.max_manifest_size, 65536);
    assert_eq!(l.max_config_size, 2 << 20);
    assert_eq!(l.min_free_space, FreeSpace::Percent(10));
    let c = parse("[images]\nmin_free_space = \"2GiB\"\n").unwrap();
    assert_eq!(c.images.min_free_space, FreeSpace::Bytes(2 << 30));
    assert_eq!(parse("").unwrap().images.limits(), Limits::default());
    for text in [
        "[images]\nmax_layer_unpacked_size = \"lots\"\n",
        "[images]\nmin_free_space = \"150%\"\n",
        "[images]\nmax_layer_entries = -1\n",
        "[images]\nmax_unpacked = 1\n",
    ] {
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{text}: {e}");
    }
}

#[test]
fn durations() {
    assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
    assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
    for bad in ["", "5", "m", "5x", "-5s", "1.5s"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_shipped_config_file_parses() {
    let text = include_str!("../../../manifests/config.toml");
    let c = Config::parse(Path::new("manifests/config.toml"), text).unwrap();
    assert!(c.runtimes.contains_key("crun"));
    // Its commented defaults, uncommented, are the defaults.
    let defaults: String = text
        .lines()
        .skip_while(|l| !l.contains("--- defaults"))
        .skip(1)
        .take_while(|l| !l.contains("--- end of defaults"))
        .map(|l| l.strip_prefix("# ").or(l.strip_prefix("#")).unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        Config::parse(Path::new("defaults"), &defaults).unwrap(),
        Config::default()
    );
}

#[test]
fn rlimits_parse_as_cri_o_writes_them() {
    assert_eq!(
        parse_rlimit("nofile=1024:4096").unwrap(),
        ("RLIMIT_NOFILE".into(), 1024, 4096)
    );
    assert_eq!(
        parse_rlimit("CORE=unlimited").unwrap(),
        ("RLIMIT_CORE".into(), u64::MAX, u64::MAX)
    );
    assert_eq!(
        parse_rlimit("nproc=-1:-1").unwrap(),
        ("RLIMIT_NPROC".into(), u64::MAX, u64::MAX)
    );
    for bad in [
        "nofile",
        "files=1",
        "nofile=a",
        "nofile=10:5",
        "nofile=1:2:3",
    ] {
        assert!(parse_rlimit(bad).is_err(), "{bad} was taken");
    }
}

#[test]
fn merged_tables_keep_keys_and_origins_name_the_last_file() {
    let mut merged = toml::Table::new();
    let mut origins = Origins::default();
    for (file, text) in [
        (
            "main",
            "log_level = \"warn\"\npinned_images = [\"a\"]\n[cni]\nconf_dir = \"/c\"\n",
        ),
        (
            "10-x",
            "pinned_images = [\"b\"]\n[cni]\nbin_dirs = [\"/b\"]\n",
        ),
    ] {
        merge(
            &mut merged,
            toml::from_str(text).unwrap(),
            "",
            file,
            &mut origins,
        );
    }
    let c = Config::from_table(Path::new("main"), merged).unwrap();
    assert_eq!(c.pinned_images, ["b"]);
    assert_eq!(c.cni.conf_dir, Path::new("/c"));
    assert_eq!(c.cni.bin_dirs, [PathBuf::from("/b")]);
    assert_eq!(origins.of("log_level"), "main");
    assert_eq!(origins.of("pinned_images"), "10-x");
    assert_eq!(origins.of("cni.conf_dir"), "main");
    assert_eq!(origins.of("cni.bin_dirs"), "10-x");
    assert_eq!(origins.of("registry.request_timeout"), "default");
    // What a reload compares.
    let mut d = c.clone();
    d.log_level = "debug".into();
    d.cni.bin_dirs.push("/more".into());
    assert_eq!(changed_keys(&c, &d), ["cni.bin_dirs", "log_level"]);
    assert!(changed_keys(&c, &c).is_empty());
}
