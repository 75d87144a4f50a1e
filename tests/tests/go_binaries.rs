//! Go executables as nettap reads them, built by the test with the machine's
//! Go in the variants users ship: default, stripped (`-s -w`), no DWARF
//! (`-w`), PIE, and without cgo. Version and module come from the build
//! info; crypto/tls.(*Conn).Write and Read are found from the symbol table
//! or, stripped, from the pclntab, at the same file offsets; their return
//! sites are the `ret` instructions (no uretprobes on Go code), and on
//! x86_64 the calls the sensor probes instead are found in every version.

use nettap_e2e::go_build;
use nettap_sensor::probes::golang::{inspect, GoBinary};
use nettap_sensor::probes::{GoLayout, TCPCONN_TYPE_HASHES};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const FUNCTIONS: [&str; 2] = ["crypto/tls.(*Conn).Write", "crypto/tls.(*Conn).Read"];
/// What Write and Read call where the sensor probes them on x86_64.
const CALLEES: [&str; 2] = ["crypto/tls.(*Conn).writeRecordLocked", "runtime.memmove"];

/// File offsets of symbols as `nm` reads them from the symbol table.
fn nm_offsets(bin: &Path) -> HashMap<String, u64> {
    let out = Command::new("nm").arg(bin).output().expect("nm (binutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    // Go's .text is mapped at file offset + 0x400000 (non-PIE) or at the
    // section's address minus its offset: compare addresses through readelf.
    let sections = String::from_utf8_lossy(
        &Command::new("readelf").args(["-S", "-W"]).arg(bin).output().unwrap().stdout,
    )
    .into_owned();
    let text_sec = sections.lines().find(|l| l.contains(" .text ")).expect(".text");
    let fields: Vec<&str> = text_sec.split(']').nth(1).unwrap().split_whitespace().collect();
    let (addr, off) =
        (u64::from_str_radix(fields[2], 16).unwrap(), u64::from_str_radix(fields[3], 16).unwrap());
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let a = u64::from_str_radix(f.next()?, 16).ok()?;
            let name = f.nth(1)?;
            FUNCTIONS.contains(&name).then(|| (name.to_string(), a - addr + off))
        })
        .collect()
}

/// The bytes of a return instruction on the binary's architecture.
fn is_ret(data: &[u8], at: usize, arm64: bool) -> bool {
    if arm64 {
        data[at..at + 4] == 0xd65f_03c0u32.to_le_bytes()
    } else {
        data[at] == 0xc3
    }
}

/// The layout and `*net.TCPConn` itab hash as the program itself sees them
/// (`tlspeer layout`: reflect and unsafe, no DWARF involved).
fn layout_of_running(bin: &Path) -> (GoLayout, u32) {
    let out = Command::new(bin).arg("layout").output().unwrap();
    assert!(out.status.success(), "{} layout", bin.display());
    let text = String::from_utf8(out.stdout).unwrap();
    let n: Vec<u64> = text.split_whitespace().map(|w| w.parse().unwrap()).collect();
    let layout = GoLayout { conn_data: n[0] as u32, tcpconn_fd: n[1] as u32, netfd_sysfd: n[2] as u32 };
    (layout, n[3] as u32)
}

/// What nettap reads of the layout agrees with the running program: from
/// DWARF when the build has it, the itab hash from the symbol table when
/// that is there, and the hash is one the eBPF side accepts.
fn check_layout(bin: &Path, go: &GoBinary, dwarf: bool) {
    let (layout, hash) = layout_of_running(bin);
    assert!(TCPCONN_TYPE_HASHES.contains(&hash), "{} {}: hash {hash:#x}", bin.display(), go.version);
    assert_eq!(layout, nettap_sensor::probes::GO_LAYOUT_TABLE, "{}: the table holds", go.version);
    match &go.dwarf_layout {
        Some(Ok(l)) if dwarf => assert_eq!(l, &layout, "{}", bin.display()),
        None if !dwarf => {}
        other => panic!("{}: DWARF layout {other:?}, DWARF expected: {dwarf}", bin.display()),
    }
    assert_eq!(go.tcpconn_itab_hash, go.symtab.then_some(hash), "{}", bin.display());
}

fn check(bin: &Path, expect_symtab: bool) -> GoBinary {
    check_arch(bin, expect_symtab, false)
}

fn check_arch(bin: &Path, expect_symtab: bool, arm64: bool) -> GoBinary {
    let data = std::fs::read(bin).unwrap();
    let go = inspect(&data, &FUNCTIONS, &CALLEES).unwrap().expect("recognised as Go");
    assert!(go.version.starts_with("go1."), "{}", go.version);
    assert_eq!(go.module.as_deref(), Some("example.test/tlspeer"));
    assert_eq!(go.symtab, expect_symtab, "{}", bin.display());
    for f in FUNCTIONS {
        let found = go.functions.get(f).unwrap_or_else(|| panic!("{f} not found in {}", bin.display()));
        assert!(!found.returns.is_empty(), "{f} has return sites");
        for r in &found.returns {
            assert!(is_ret(&data, (found.offset + r) as usize, arm64), "{f}+{r:#x} is a ret");
        }
        assert!(found.returns.iter().all(|&r| r < found.size));
        // amd64: the entry probe is on the stack check's jbe (emulated by the
        // kernel, not single-stepped); arm64 keeps the first instruction.
        let at = (found.offset + found.entry) as usize;
        if arm64 {
            assert_eq!(found.entry, 0, "{f}");
        } else {
            assert!(found.entry > 0 && found.entry < 16, "{f}: entry at +{:#x}", found.entry);
            assert!(data[at] == 0x76 || data[at..at + 2] == [0x0f, 0x86], "{f}+{:#x} is a jbe", found.entry);
        }
    }
    check_call_sites(bin, &data, &go, arm64);
    go
}

/// x86_64: Write calls writeRecordLocked once (twice with TLS 1.0's 1/n-1
/// split) and Read calls memmove exactly once, each a `call rel32` inside
/// the function, and Read keeps its receiver in a stack slot; arm64 keeps its `ret` probes and records no calls.
fn check_call_sites(bin: &Path, data: &[u8], go: &GoBinary, arm64: bool) {
    let (write, read) = (&go.functions[FUNCTIONS[0]], &go.functions[FUNCTIONS[1]]);
    if arm64 {
        assert!(write.calls.is_empty() && read.calls.is_empty(), "{}", bin.display());
        return;
    }
    let target = |n: &str| *go.callees.get(n).unwrap_or_else(|| panic!("{n} not found in {}", bin.display()));
    let records = write.calls_to(target(CALLEES[0]));
    let copies = read.calls_to(target(CALLEES[1]));
    assert!(
        (1..=2).contains(&records.len()),
        "{} {}: writeRecordLocked calls {records:?}",
        bin.display(),
        go.version
    );
    assert_eq!(copies.len(), 1, "{} {}: memmove calls in Read", bin.display(), go.version);
    // Read's copy probe reads the receiver from its stack slot, no entry
    // probe (go_registers checks the slot against DWARF).
    assert!(read.receiver_home.is_some(), "{} {}: Read's receiver slot", bin.display(), go.version);
    for (f, at) in records.iter().map(|a| (write, a)).chain(copies.iter().map(|a| (read, a))) {
        assert_eq!(data[(f.offset + at) as usize], 0xe8, "{}: call rel32 at +{at:#x}", bin.display());
        assert!(*at < f.size);
    }
}

#[test]
fn go_executables_in_every_build_variant() {
    let dir = tempfile::tempdir().unwrap();
    let bin = |n: &str| -> PathBuf { dir.path().join(n) };
    go_build(&bin("default"), &[], &[]);
    go_build(&bin("stripped"), &["-ldflags=-s -w"], &[]);
    go_build(&bin("nodwarf"), &["-ldflags=-w"], &[]);
    go_build(&bin("pie"), &["-buildmode=pie"], &[]);
    go_build(&bin("nocgo"), &[], &[("CGO_ENABLED", "0")]);

    let default = check(&bin("default"), true);
    // Found from the symbol table, at the offsets nm gives.
    let nm = nm_offsets(&bin("default"));
    for f in FUNCTIONS {
        assert_eq!(default.functions[f].offset, nm[f], "{f}");
    }
    // Stripped: the pclntab gives the same functions at the same places
    // (the same code was linked) with the same return sites; its sizes run
    // to the next function, alignment padding included.
    let stripped = check(&bin("stripped"), false);
    for f in FUNCTIONS {
        assert_eq!(stripped.functions[f].offset, default.functions[f].offset, "{f}");
        assert_eq!(stripped.functions[f].returns, default.functions[f].returns, "{f}");
        assert_eq!(stripped.functions[f].calls, default.functions[f].calls, "{f}");
        assert!(stripped.functions[f].size >= default.functions[f].size, "{f}");
    }
    check_layout(&bin("default"), &default, true);
    check_layout(&bin("stripped"), &stripped, false);
    let nodwarf = check(&bin("nodwarf"), true);
    check_layout(&bin("nodwarf"), &nodwarf, false);
    let pie = check(&bin("pie"), true);
    check_layout(&bin("pie"), &pie, true);
    let nm = nm_offsets(&bin("pie"));
    for f in FUNCTIONS {
        assert_eq!(pie.functions[f].offset, nm[f], "{f}");
    }
    let nocgo = check(&bin("nocgo"), true);
    check_layout(&bin("nocgo"), &nocgo, true);

    // Not Go: None, not an error.
    let curl = std::fs::read("/usr/bin/curl").expect("curl");
    assert!(inspect(&curl, &FUNCTIONS, &CALLEES).unwrap().is_none());
}

#[test]
fn arm64_executables_cross_compiled() {
    let dir = tempfile::tempdir().unwrap();
    let (plain, stripped) = (dir.path().join("arm64"), dir.path().join("arm64-stripped"));
    let arm = [("GOARCH", "arm64"), ("CGO_ENABLED", "0")];
    go_build(&plain, &[], &arm);
    go_build(&stripped, &["-ldflags=-s -w"], &arm);
    let a = check_arch(&plain, true, true);
    // The program cannot run here: its DWARF must give the table, which the
    // amd64 build of the same source confirms by running (other test).
    assert_eq!(a.dwarf_layout, Some(Ok(nettap_sensor::probes::GO_LAYOUT_TABLE)));
    assert!(TCPCONN_TYPE_HASHES.contains(&a.tcpconn_itab_hash.unwrap()));
    let nm = nm_offsets(&plain);
    for f in FUNCTIONS {
        assert_eq!(a.functions[f].offset, nm[f], "{f}: offset from the symbol table");
        assert_eq!(a.functions[f].offset % 4, 0);
    }
    let s = check_arch(&stripped, false, true);
    for f in FUNCTIONS {
        assert_eq!(s.functions[f].offset, a.functions[f].offset, "{f}: the pclntab agrees");
        assert_eq!(s.functions[f].returns, a.functions[f].returns, "{f}");
    }
}

/// Go 1.18 (md5 type hashes), 1.19 (NOT-SHA-256, the 1.18-1.19 pclntab) and
/// 1.21, fetched as toolchain modules: their layout and itab hash, each read
/// by nettap and by the running program, agree.
#[test]
fn layouts_and_itab_hashes_of_older_go_releases() {
    let dir = tempfile::tempdir().unwrap();
    for (version, flags, dwarf) in [
        ("go1.18.10", &[][..], true),
        ("go1.19.13", &["-ldflags=-s -w"][..], false),
        ("go1.21.13", &[][..], true),
    ] {
        let bin = dir.path().join(version);
        go_build(&bin, flags, &[("GOTOOLCHAIN", version)]);
        let go = check(&bin, dwarf);
        assert_eq!(go.version, version);
        check_layout(&bin, &go, dwarf);
    }
}
