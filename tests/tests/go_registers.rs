//! The registers go_tls.bpf.c reads at the entry of crypto/tls.(*Conn).Write
//! and Read (`GO_ARG0`: the receiver, `GO_ARG1`: the buffer's data pointer),
//! and at Write's call of writeRecordLocked on amd64 (`GO_ARG0..3`), are
//! where Go's register ABI puts them, on amd64 and arm64, and the stack slot
//! Read's copy probe reads its receiver from on amd64 is where it is: checked
//! against the parameter locations the compiler wrote into DWARF for real
//! builds (arm64 cross-compiled), read here with gimli, not by nettap.

use gimli::UnwindSection;
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

/// A parameter's location over one range of addresses, as DWARF says: the
/// register it is in, or the offset from the canonical frame address of the
/// stack slot it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    Register(u16),
    CfaOffset(i64),
}

/// Each parameter of `function` by name, with its locations (address range,
/// pieces), and the function's first address, from its DWARF location lists.
#[allow(clippy::type_complexity)]
fn parameter_locations(
    bin: &Path,
    function: &str,
) -> (u64, Vec<(String, Vec<(std::ops::Range<u64>, Vec<Piece>)>)>) {
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
            if let Some((d, low)) = in_function {
                if depth <= d {
                    return (low, params);
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
            } else if let (Some((d, _)), gimli::DW_TAG_formal_parameter) = (in_function, e.tag()) {
                if depth != d + 1 {
                    continue;
                }
                let Some(attr) = e.attr_value(gimli::DW_AT_location).unwrap() else { continue };
                let Some(offset) = dwarf.attr_locations_offset(&unit, attr).unwrap() else { continue };
                let mut locs = dwarf.locations(&unit, offset).unwrap();
                let mut ranges = Vec::new();
                while let Some(loc) = locs.next().unwrap() {
                    let mut ops = loc.data.operations(unit.encoding());
                    let mut pieces = Vec::new();
                    while let Some(op) = ops.next().unwrap() {
                        match op {
                            gimli::Operation::Register { register } => {
                                pieces.push(Piece::Register(register.0))
                            }
                            gimli::Operation::CallFrameCFA => pieces.push(Piece::CfaOffset(0)),
                            gimli::Operation::PlusConstant { value } => {
                                if let Some(Piece::CfaOffset(o)) = pieces.last_mut() {
                                    *o += value as i64;
                                }
                            }
                            _ => {}
                        }
                    }
                    ranges.push((loc.range.begin..loc.range.end, pieces));
                }
                params.push((name, ranges));
            }
        }
    }
    panic!("{function} not in the DWARF of {}", bin.display())
}

/// Registers holding each parameter piece at the function's entry, by
/// parameter name.
fn entry_registers(bin: &Path, function: &str) -> Vec<(String, Vec<u16>)> {
    let (low, params) = parameter_locations(bin, function);
    let at_entry = |ranges: &[(std::ops::Range<u64>, Vec<Piece>)]| {
        let pieces = ranges.iter().filter(|(r, _)| r.contains(&low)).flat_map(|(_, p)| p);
        pieces.filter_map(|p| if let Piece::Register(r) = p { Some(*r) } else { None }).collect()
    };
    params.iter().map(|(name, ranges)| (name.clone(), at_entry(ranges))).collect()
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

/// amd64: the probe on (*Conn).Read's copy call reads the receiver from
/// the stack slot nettap found in the code (`receiver_home`, an offset from
/// the stack pointer), with no probe at Read's entry. DWARF says the same:
/// at that call `c` is at an offset from the canonical frame address, which
/// .debug_frame puts at an offset from rsp there.
fn check_read_receiver_home(bin: &Path) {
    let read = "crypto/tls.(*Conn).Read";
    let memmove = "runtime.memmove";
    let data = std::fs::read(bin).unwrap();
    let go = nettap_sensor::probes::golang::inspect(&data, &[read], &[memmove]).unwrap().expect("Go");
    let f = &go.functions[read];
    let home =
        f.receiver_home.unwrap_or_else(|| panic!("{read}: receiver home not found, {}", bin.display()));
    let [copy] = f.calls_to(go.callees[memmove])[..] else { panic!("{read}: one memmove call") };
    let (low, params) = parameter_locations(bin, read);
    let pc = low + copy;

    let obj = object::File::parse(&*data).unwrap();
    let section = obj.section_by_name(".debug_frame").expect(".debug_frame").uncompressed_data().unwrap();
    let frames = gimli::DebugFrame::new(&section, gimli::LittleEndian);
    let mut unwind = gimli::UnwindContext::new();
    let row = frames
        .unwind_info_for_address(
            &gimli::BaseAddresses::default(),
            &mut unwind,
            pc,
            gimli::DebugFrame::cie_from_offset,
        )
        .unwrap();
    let gimli::CfaRule::RegisterAndOffset { register, offset: cfa_from_rsp } = *row.cfa() else {
        panic!("{read}+{copy:#x}: CFA {:?}", row.cfa())
    };
    assert_eq!(register, gimli::X86_64::RSP, "{read}+{copy:#x}: CFA register");

    let (_, c) = params.iter().find(|(n, _)| n == "c").unwrap_or_else(|| panic!("{read}: no c"));
    let at_copy: Vec<_> = c.iter().filter(|(r, _)| r.contains(&pc)).map(|(_, p)| p.clone()).collect();
    let [ref pieces] = at_copy[..] else { panic!("{read}+{copy:#x}: c's locations {c:?}") };
    let [Piece::CfaOffset(c_from_cfa)] = pieces[..] else { panic!("{read}+{copy:#x}: c at {pieces:?}") };
    assert_eq!(i64::from(home), cfa_from_rsp + c_from_cfa, "{read}: receiver home, {}", bin.display());
}

#[test]
fn go_entry_registers_match_the_register_abi_on_amd64_and_arm64() {
    let dir = tempfile::tempdir().unwrap();
    let (amd64, arm64) = (dir.path().join("amd64"), dir.path().join("arm64"));
    go_build(&amd64, &[], &[]);
    go_build(&arm64, &[], &[("GOARCH", "arm64"), ("CGO_ENABLED", "0")]);
    check(&amd64, true);
    check(&arm64, false);
    check_read_receiver_home(&amd64);
}
