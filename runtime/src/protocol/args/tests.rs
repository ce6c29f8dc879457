//! Unit tests of the monitor's command line: every mode round-trips, and
//! what is not a command line is refused.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use super::*;

fn container(stdin: bool, once: bool, runtime: Option<&str>) -> Container {
    Container {
        id: "c1".into(),
        bundle: "/run/berth/containers/c1".into(),
        state: "/run/berth/containers/c1".into(),
        root: "/run/berth/runtime".into(),
        log: "/var/log/pods/p/c/0.log".into(),
        stdin,
        stdin_once: once,
        runtime: runtime.map(PathBuf::from),
    }
}

fn run(container: Container, aside: Option<&str>) -> Invocation {
    Invocation::Run {
        container,
        pump: "/proc/77/fd/9".into(),
        aside: aside.map(Into::into),
    }
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

#[test]
fn every_mode_round_trips() {
    let all = [
        run(container(false, false, None), None),
        run(
            container(true, true, Some("/usr/bin/runc")),
            Some("/run/berth"),
        ),
        Invocation::Pump(Pump {
            container: container(true, false, None),
            pid: 4242,
            stdin_fd: Some(7),
            tty: false,
            cgroup: Some("/kubepods/pod1/c1".into()),
            monitor_fd: 5,
        }),
        Invocation::Pump(Pump {
            container: container(false, false, Some("/usr/bin/crun")),
            pid: 1,
            stdin_fd: None,
            tty: true,
            cgroup: None,
            monitor_fd: 3,
        }),
        Invocation::Delete {
            container: container(false, true, Some("/usr/bin/runc")),
            pid: 4242,
        },
        Invocation::Exec {
            id: "c1".into(),
            root: "/run/berth/runtime".into(),
            process: "/run/berth/containers/c1/exec-1.json".into(),
            runtime: None,
            aside: Some("/run/berth".into()),
        },
        Invocation::Exec {
            id: "c1".into(),
            root: "/run/berth/containers/c1/oci".into(),
            process: "/p.json".into(),
            runtime: Some("/usr/bin/runc".into()),
            aside: None,
        },
        Invocation::Checkpoint(Checkpoint {
            id: "c1".into(),
            root: "/run/berth/runtime".into(),
            images: "/var/lib/kubelet/checkpoints/.berth-checkpoint-1/checkpoint".into(),
            work: "/var/lib/kubelet/checkpoints/.berth-checkpoint-1".into(),
            runtime: None,
        }),
        Invocation::Checkpoint(Checkpoint {
            id: "c1".into(),
            root: "/run/berth/containers/c1/oci".into(),
            images: "/i".into(),
            work: "/w".into(),
            runtime: Some("/usr/bin/runc".into()),
        }),
        Invocation::Pause {
            pid_file: "/run/berth/ns/p/infra.pid".into(),
            userns: None,
        },
        Invocation::Pause {
            pid_file: "/run/berth/ns/p/infra.pid".into(),
            userns: Some("/run/berth/ns/p/user".into()),
        },
        Invocation::PauseInit {
            pid_file: "/run/berth/ns/p/infra.pid".into(),
        },
    ];
    for inv in all {
        let args = inv.to_args();
        assert_eq!(Invocation::parse(&args), Ok(inv.clone()), "{args:?}");
    }
}

#[test]
fn the_command_line_is_as_documented() {
    let args = run(
        container(true, true, Some("/usr/bin/runc")),
        Some("/run/berth"),
    )
    .to_args();
    assert_eq!(
        args,
        os(&[
            "run",
            "c1",
            "/run/berth/containers/c1",
            "/run/berth/containers/c1",
            "/run/berth/runtime",
            "/var/log/pods/p/c/0.log",
            "/proc/77/fd/9",
            "--stdin",
            "--stdin-once",
            "--runtime",
            "/usr/bin/runc",
            "--aside",
            "/run/berth",
        ])
    );
    let args = Invocation::PauseInit {
        pid_file: "/x/infra.pid".into(),
    }
    .to_args();
    assert_eq!(args, os(&["pause-init", "/x/infra.pid"]));
}

#[test]
fn paths_that_look_like_flags_or_hold_commas_stay_paths() {
    let mut c = container(false, false, Some("/opt/a,b/runc"));
    c.log = "--tty".into();
    c.bundle = PathBuf::from(OsString::from_vec(b"/b\xff".to_vec()));
    let inv = run(c, None);
    assert_eq!(Invocation::parse(&inv.to_args()), Ok(inv));
}

#[test]
fn bad_command_lines_are_refused() {
    // Each a command line, its words split at spaces.
    let bad: &[&str] = &[
        "",
        "nonsense",
        // An id alone was the old command line: a mode is required now.
        "c1 /b /s /r /l",
        "run c1 /b /s /r /l",
        "run c1 /b /s /r /l /p --bogus",
        "run c1 /b /s /r /l /p --runtime",
        "run c1 /b /s /r /l /p --tty",
        "pump c1 /b /s /r /l notapid 3",
        "pump c1 /b /s /r /l 12",
        "pump c1 /b /s /r /l 12 x",
        "pump c1 /b /s /r /l 12 3 --stdin-fd x",
        "pump c1 /b /s /r /l 12 3 --stdin-fd",
        "pump c1 /b /s /r /l 12 3 --cgroup",
        "delete c1 /b /s /r /l",
        "delete c1 /b /s /r /l 12 --tty",
        "exec c1 /root",
        "exec c1 /root /p.json extra",
        "pause",
        "pause /pid --userns",
        "pause-init",
        "pause-init /pid /more",
    ];
    let empty_id: &[&str] = &["run", "", "/b", "/s", "/r", "/l", "/p"];
    let split = bad.iter().map(|l| l.split_whitespace().collect::<Vec<_>>());
    for args in split.chain([empty_id.to_vec()]) {
        let e = Invocation::parse(&os(&args)).expect_err(&format!("{args:?}"));
        assert!(e.to_string().contains("usage:"), "{e}");
    }
    let non_utf8_id = vec![
        OsString::from("exec"),
        OsString::from_vec(vec![0xff]),
        "/r".into(),
        "/p".into(),
    ];
    assert!(Invocation::parse(&non_utf8_id).is_err());
}
