//! The exec gate's cost to the programs it holds (issue 26). Run right after
//! start-up, a chain of programs the sensor has never seen (what a shell
//! script, a version manager's shim such as pyenv's `python3`, or a build
//! makes) must never wait for the hold limit; a script is let through at
//! once (the interpreter the kernel opens for it next is held instead), so a
//! chain of scripts costs one hold per new program, not two.
//!
//! Counted from the sensor's log, not timed: "let go before the sensor had
//! examined it" is the gate reaching its limit, and its debug line "exec
//! gate answers a held program" names the pid of each program it held.

use nettap_e2e::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// Fresh programs in the chain.
const PROGRAMS: usize = 20;

#[test]
fn fresh_programs_right_after_start_up_are_never_held_to_the_limit_and_scripts_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    // Each script runs a fresh copy of `true`: two new files per step.
    let mut scripts = Vec::new();
    for i in 0..PROGRAMS {
        let program = dir.path().join(format!("true{i}"));
        std::fs::copy("/bin/true", &program).unwrap();
        let script = dir.path().join(format!("step{i}.sh"));
        std::fs::write(&script, format!("#!/bin/sh\nexec {}\n", program.display())).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        scripts.push(script);
    }
    let sensor = Sensor::start_with_env(
        &["--port", "1"],
        &[("NETTAP_LOG", "info,nettap_sensor::probes::exec_gate=debug")],
    );
    sensor.wait_for_log(&["exec gate on"]);
    // Right after start-up, one after the other, as a script runs them.
    let mut pids = Vec::new();
    for script in &scripts {
        let mut child = Command::new(script).spawn().unwrap();
        pids.push(child.id());
        assert!(wait_child(&mut child, "a fresh script").success());
    }
    let cap = sensor.stop();

    let late: Vec<&str> =
        cap.log.lines().filter(|l| l.contains("let go before the sensor had examined it")).collect();
    assert!(late.is_empty(), "programs held to the limit: {late:?}");
    let holds_of = |pid: u32| {
        let pid = format!(" pid={pid} ");
        cap.log.lines().filter(|l| l.contains("exec gate answers a held program") && l.contains(&pid)).count()
    };
    let holds: Vec<usize> = pids.iter().map(|&p| holds_of(p)).collect();
    // Every step's fresh `true` is held (the gate is on) ...
    assert!(holds.iter().all(|&h| h >= 1), "holds per step: {holds:?}\n{}", cap.log);
    // ... its script never, and `sh` and the dynamic loader only the first
    // time they are seen.
    let total: usize = holds.iter().sum();
    assert!(total <= PROGRAMS + 3, "{total} holds for {PROGRAMS} new programs: {holds:?}");
}
