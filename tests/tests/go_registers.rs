//! The registers go_tls.bpf.c reads at the entry of crypto/tls.(*Conn).Write
//! and Read (`GO_ARG0`: the receiver, `GO_ARG1`: the buffer's data pointer),
//! and at Write's call of writeRecordLocked on amd64 (`GO_ARG0..3`), are
//! where Go's register ABI puts them, on amd64 and arm64: checked
//! against the parameter locations the compiler wrote into DWARF for real
//! builds (arm64 cross-compiled), read here with gimli, not by nettap.

use nettap_e2e::go_build;
use object::{Object, ObjectSection};
use std::borrow::Cow;
use std::path::Path;

/// DWARF register number of `GO_ARGn` in go_tls.bpf.c for the architecture.
fn header_register(arch_x86: bool, macro_name: &str) -> u16 {
    let header = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../sensor-ebpf/bpf/go_tls.bpf.c"),
    )
    .unwrap();
    let section = if arch_x86 { "defined(__TARGET_ARCH_x86)" } else { "defined(__TARGET_ARCH_arm64)" };
    let block = header.split(section).nth(1).unwrap().split("#e").next().unwrap();
    let line = block.lines().find(|l| l.contains(&format!("#define {macro_name}(r)"))).unwrap();
    let reg = line.split("->").nth(1).unwrap().trim_end_matches(')').trim_end_matches(')');
    if arch_x86 {
        // DWARF numbering of the x86-64 psABI.
        match reg {
            "ax" => 0,
            "dx" => 1,
            "cx" => 2,
            "bx" => 3,
            "si" => 4,
            "di" => 5,
            "r14" => 14,
            other => panic!("unexpected register {other}"),
        }
    } else {
        // regs[N] is xN, DWARF register N.
        reg.trim_start_matches("regs[").trim_end_matches(']').parse().unwrap()
    }
}

/// Registers holding each parameter piece at the function's entry, by
/// parameter name, from its DWARF location lists.
fn entry_registers(bin: &Path, function: &str) -> Vec<(String, Vec<u16>)> {
    let data = std::fs::read(bin).unwrap();
    let obj = object::File::parse(&*data).unwrap();
    let load = |id: gimli::SectionId| -> Result<Cow<'_, [u8]>, gimli::Error> {
        Ok(obj.section_by_name(id.name()).and_then(|s| s.uncompressed_data().ok()).unwrap_or_default())
    };
    let sections = gimli::DwarfSections::load(load).unwrap();
    let dwarf = sections.borrow(|s| gimli::EndianSlice::new(s, gimli::LittleEndian));
    let mut units = dwarf.units();
    while let Some(header) = units.next().unwrap() {
        let unit = dwarf.unit(header).unwrap();
        let mut entries = unit.entries();
        let mut in_function: Option<(isize, u64)> = None;
        let mut depth = 0isize;
        let mut params = Vec::new();
        while let Some((delta, e)) = entries.next_dfs().unwrap() {
            depth += delta;
            if let Some((d, _)) = in_function {
                if depth <= d {
                    return params;
                }
            }
            let name = match e.attr_value(gimli::DW_AT_name).unwrap() {
                Some(v) => {
                    dwarf.attr_string(&unit, v).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
                }
                None => String::new(),
            };
            if e.tag() == gimli::DW_TAG_subprogram && name == function {
                // The concrete function (an abstract one for inlining has no code).
                let Some(low) = e.attr_value(gimli::DW_AT_low_pc).unwrap() else { continue };
                let low = dwarf.attr_address(&unit, low).unwrap().expect("an address");
                in_function = Some((depth, low));
            } else if let (Some((d, low)), gimli::DW_TAG_formal_parameter) = (in_function, e.tag()) {
                if depth != d + 1 {
                    continue;
                }
                let Some(attr) = e.attr_value(gimli::DW_AT_location).unwrap() else { continue };
                let Some(offset) = dwarf.attr_locations_offset(&unit, attr).unwrap() else { continue };
                let mut locs = dwarf.locations(&unit, offset).unwrap();
                let mut regs = Vec::new();
                while let Some(loc) = locs.next().unwrap() {
                    if loc.range.begin <= low && low < loc.range.end {
                        let mut ops = loc.data.operations(unit.encoding());
                        while let Some(op) = ops.next().unwrap() {
                            if let gimli::Operation::Register { register } = op {
                                regs.push(register.0);
                            }
                        }
                    }
                }
                params.push((name, regs));
            }
        }
    }
    panic!("{function} not in the DWARF of {}", bin.display())
}

fn check(bin: &Path, x86: bool) {
    let (arg0, arg1) = (header_register(x86, "GO_ARG0"), header_register(x86, "GO_ARG1"));
    for f in ["crypto/tls.(*Conn).Write", "crypto/tls.(*Conn).Read"] {
        let params = entry_registers(bin, f);
        let find = |n: &str| {
            params.iter().find(|(p, _)| p == n).unwrap_or_else(|| panic!("{f}: no {n} in {params:?}"))
        };
        assert_eq!(find("c").1, vec![arg0], "{f}: receiver register, {}", bin.display());
        assert_eq!(find("b").1.first(), Some(&arg1), "{f}: buffer pointer register, {}", bin.display());
    }
    // x86_64 probes Write's call of writeRecordLocked (GO_ARG0..3: c, typ,
    // data's pointer and length) at the call: the callee's entry registers.
    if x86 {
        let f = "crypto/tls.(*Conn).writeRecordLocked";
        let params = entry_registers(bin, f);
        let find = |n: &str| {
            params
                .iter()
                .find(|(p, _)| p == n)
                .unwrap_or_else(|| panic!("{f}: no {n} in {params:?}"))
                .1
                .clone()
        };
        let (arg2, arg3) = (header_register(x86, "GO_ARG2"), header_register(x86, "GO_ARG3"));
        assert_eq!(find("c"), vec![arg0], "{f}: receiver");
        assert_eq!(find("typ"), vec![arg1], "{f}: record type");
        assert_eq!(find("data")[..2], [arg2, arg3], "{f}: data pointer and length");
    }
}

#[test]
fn go_entry_registers_match_the_register_abi_on_amd64_and_arm64() {
    let dir = tempfile::tempdir().unwrap();
    let (amd64, arm64) = (dir.path().join("amd64"), dir.path().join("arm64"));
    go_build(&amd64, &[], &[]);
    go_build(&arm64, &[], &[("GOARCH", "arm64"), ("CGO_ENABLED", "0")]);
    check(&amd64, true);
    check(&arm64, false);
}
