//! `berth-monitor exec`'s descriptors beyond stdio: berthd passes a
//! control pipe (read by the monitor: [`super::Resize`] lines) and a
//! report pipe (written by the monitor: one [`Report`] line).

/// The control descriptor's number in the exec monitor.
pub const CONTROL_FD: i32 = 3;
/// The report descriptor's number in the exec monitor.
pub const REPORT_FD: i32 = 4;

/// What the exec monitor reports once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The process runs, with this pid.
    Pid(i32),
    /// It could not be started (the monitor then exits with 255).
    Error(String),
}

impl Report {
    /// `pid <n>` or `error <message>` (newlines in it become spaces),
    /// with a newline.
    pub fn to_line(&self) -> String {
        match self {
            Report::Pid(p) => format!("pid {p}\n"),
            Report::Error(m) => format!("error {}\n", m.replace('\n', " ")),
        }
    }

    /// A report line; None if it is neither (the monitor ended first).
    pub fn parse(line: &str) -> Option<Report> {
        if let Some(p) = line.strip_prefix("pid ") {
            return p.trim().parse().ok().map(Report::Pid);
        }
        line.strip_prefix("error ")
            .map(|m| Report::Error(m.trim().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        for r in [Report::Pid(42), Report::Error("no such file".into())] {
            assert_eq!(Report::parse(&r.to_line()), Some(r));
        }
        assert_eq!(
            Report::parse(&Report::Error("a\nb".into()).to_line()),
            Some(Report::Error("a b".into()))
        );
        assert_eq!(Report::parse(""), None);
        assert_eq!(Report::parse("pid x\n"), None);
    }
}
