//! What the kernel side costs per call, from the kernel's own BPF statistics
//! (`kernel.bpf_stats_enabled`, `run_time_ns`/`run_cnt` in the fdinfo of the
//! sensor's program fds): a fixed plaintext TCP workload, the run time of
//! every program of the sensor, and the chosen path's data programs must be
//! the ones that ran. Run on the host (tracepoints) and in the 6.1 guest
//! (kprobes, and tracepoints by override) by kernel_matrix_vm.rs; the
//! `nettap-report` lines are its numbers.

use nettap_e2e::*;
use std::collections::BTreeMap;

/// Calls of the workload: messages each way.
const MESSAGES: usize = 400;

/// (runs, run time ns) of every program the process `pid` holds, by name
/// (`bpftool` gives both once the statistics are on; the fdinfo of the
/// process's program fds says which programs are its own).
fn program_stats(pid: u32) -> BTreeMap<String, (u64, u64)> {
    let mut own = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        if !std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().contains("bpf-prog")) {
            continue;
        }
        let info =
            std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy()))
                .unwrap_or_default();
        if let Some(id) = info.lines().find_map(|l| l.strip_prefix("prog_id:")) {
            own.push(id.trim().parse::<u64>().unwrap());
        }
    }
    let out = std::process::Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("bpftool is required (ci/install.sh installs it)");
    assert!(out.status.success(), "bpftool prog show: {}", String::from_utf8_lossy(&out.stderr));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut stats = BTreeMap::new();
    for p in all.as_array().unwrap().iter().filter(|p| own.contains(&p["id"].as_u64().unwrap())) {
        let name = p["name"].as_str().unwrap_or("").to_string();
        let e = stats.entry(name).or_insert((0, 0));
        e.0 += p["run_cnt"].as_u64().unwrap_or(0);
        e.1 += p["run_time_ns"].as_u64().unwrap_or(0);
    }
    stats
}

#[test]
fn bpf_run_time_per_call_of_the_chosen_path() {
    let stats_switch = "/proc/sys/kernel/bpf_stats_enabled";
    let before = std::fs::read_to_string(stats_switch).unwrap();
    std::fs::write(stats_switch, "1").unwrap();
    let port = free_port();
    let port_s = port.to_string();
    let sensor = Sensor::start(&["--port", &port_s, "--raw"]);
    let sizes = vec![100; MESSAGES];
    let (_server, _client, _dir) =
        Exchange::start(None, "127.0.0.1", None, "127.0.0.1", port, &sizes, &[]).finish();
    let stats = program_stats(sensor.pid());
    let cap = sensor.stop();
    std::fs::write(stats_switch, before).unwrap();

    let hook = if cap.log.contains("hook=\"kprobe\"") { "kprobe" } else { "tracepoint" };
    let data = cap.records.iter().filter(|r| r["kind"] == "data").count() as u64;
    assert!(data >= 4 * MESSAGES as u64 / 2, "{data} data records for {MESSAGES} messages each way");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    // With --nocapture the harness's `test … ` has no newline yet.
    println!();
    let mut total_ns = 0;
    for (name, (runs, ns)) in &stats {
        total_ns += ns;
        println!(
            "nettap-report bpf-cost kernel={} hook={hook} program={name} runs={runs} ns_per_run={}",
            kernel.trim(),
            ns / runs.max(&1)
        );
    }
    println!(
        "nettap-report bpf-cost kernel={} hook={hook} all-programs ns_per_data_record={} data_records={data}",
        kernel.trim(),
        total_ns / data.max(1)
    );

    let runs = |name: &str| stats.get(name).map(|s| s.0).unwrap_or(0);
    let kprobe_runs: u64 =
        ["kp_tcp_sendmsg", "kr_tcp_sendmsg", "kp_tcp_recvmsg", "kr_tcp_recvmsg"].map(runs).iter().sum();
    if hook == "kprobe" {
        // Each message is at least one call each way on each end.
        for program in ["kp_tcp_sendmsg", "kr_tcp_sendmsg", "kp_tcp_recvmsg", "kr_tcp_recvmsg"] {
            assert!(runs(program) >= 2 * MESSAGES as u64, "{program}: {stats:?}");
        }
    } else {
        assert_eq!(kprobe_runs, 0, "kprobes ran on the tracepoint path: {stats:?}");
        assert!(runs("tp_exit_sendto") + runs("tp_exit_write") >= 2 * MESSAGES as u64, "{stats:?}");
    }
}
