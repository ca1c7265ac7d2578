//! The shipped unit file: `systemd-analyze verify` accepts it and
//! `systemd-analyze security --offline=true` rates it 2.0 or lower.
//!
//! Needs `systemd-analyze` (Debian package `systemd`); without it the test
//! is skipped unless `TRIBUTARY_REQUIRE_SYSTEMD` is set (CI sets it).

use std::path::{Path, PathBuf};
use std::process::Command;

const UNIT: &str = include_str!("../../systemd/tributary.service");

fn systemd_analyze() -> Option<PathBuf> {
    let found = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("TRIBUTARY_REQUIRE_SYSTEMD").is_none(),
            "systemd-analyze is required (apt-get install systemd)"
        );
        eprintln!("skipped: systemd-analyze not installed");
    }
    found
}

/// The unit with ExecStart pointing at the binary under test: `verify`
/// insists that the executable exists.
fn unit_copy(dir: &Path) -> PathBuf {
    let exec = UNIT
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("unit has ExecStart");
    let binary = exec
        .trim_start_matches("ExecStart=")
        .split_whitespace()
        .next()
        .expect("ExecStart names a binary");
    assert_eq!(binary, "/usr/local/bin/tributary", "README's install path");
    let text = UNIT.replace(
        &format!("ExecStart={binary} "),
        &format!("ExecStart={} ", env!("CARGO_BIN_EXE_tributary")),
    );
    let path = dir.join("tributary.service");
    std::fs::write(&path, text).expect("write unit");
    path
}

#[test]
fn unit_file_verifies_and_is_rated_at_most_2_0() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_copy(dir.path());

    let verify = Command::new(&analyze)
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("run systemd-analyze verify");
    let said = String::from_utf8_lossy(&verify.stderr).into_owned()
        + &String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "verify failed:\n{said}");
    assert!(
        !said.contains("tributary.service"),
        "verify complained about the unit:\n{said}"
    );

    let security = Command::new(&analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("run systemd-analyze security");
    let out = String::from_utf8_lossy(&security.stdout).into_owned();
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure line in:\n{out}\n{}",
                String::from_utf8_lossy(&security.stderr)
            )
        });
    let score: f64 = line
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    eprintln!("{line}");
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{out}");
}

/// The unit keeps the promises the daemon relies on.
#[test]
fn unit_is_notify_with_watchdog_and_reload() {
    for needle in [
        "Type=notify\n",
        "ExecReload=/bin/kill -HUP $MAINPID\n",
        "WatchdogSec=",
        "DynamicUser=yes\n",
        "StateDirectory=tributary\n",
        "ConfigurationDirectory=tributary\n",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service\n",
        "MemoryDenyWriteExecute=yes\n",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n",
    ] {
        assert!(UNIT.contains(needle), "unit lacks {needle:?}");
    }
    // Outbound fetches must work: no blanket IP deny.
    assert!(!UNIT.contains("IPAddressDeny=any"));
}
