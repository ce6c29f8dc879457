//! Crash points: the boundaries between two steps of an operation whose
//! results are stored (a pod made but not yet recorded, an image unpacked
//! but not yet listed, ...). The crash-matrix test
//! (`tests/tests/crash.rs`) starts a debug build of berthd with
//! `BERTH_CRASH_AT=<point>`, and berthd kills itself with SIGKILL on
//! reaching that point, exactly as a `kill -9` there would leave the node.
//! Release builds have no crash points (the function is empty).

/// Dies by SIGKILL here if this debug build was started with
/// `BERTH_CRASH_AT=<name>`.
#[cfg(debug_assertions)]
pub fn point(name: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if AT
        .get_or_init(|| std::env::var("BERTH_CRASH_AT").ok())
        .as_deref()
        == Some(name)
    {
        eprintln!("berthd: crash point {name}: SIGKILL");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn point(_: &str) {}
