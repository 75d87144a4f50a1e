//! Go executables: the build info (Go version, main module) and where given
//! functions are and where they return, found from the symbol table or, in
//! stripped binaries, from the pclntab the Go runtime itself needs (so it is
//! always there). Go's goroutine stacks move, so a uretprobe is never safe
//! on Go code: the return probes go on the functions' return instructions.

use super::go_layout::{self, GoLayout};
use object::{Object, ObjectSection, ObjectSymbol};
use std::collections::HashMap;

/// Why a Go executable cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum GoError {
    /// Not a parsable object file.
    #[error("not an ELF object: {0}")]
    Elf(#[from] object::Error),
    /// Built by a Go release whose layout we do not read.
    #[error("Go build info or pclntab of an unsupported layout ({0}); Go 1.18 or later is needed")]
    Unsupported(String),
    /// A table points outside the file.
    #[error("truncated or corrupt {0}")]
    Corrupt(&'static str),
}

/// A function found in the executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoFunction {
    /// File offset of its first instruction (where an entry uprobe goes).
    pub offset: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Where its entry uprobe goes, from its first byte (see [`entry_site`]).
    pub entry: u64,
    /// Offsets of its return instructions from its first byte.
    pub returns: Vec<u64>,
    /// Its direct calls (x86_64; empty elsewhere), in address order.
    pub calls: Vec<DirectCall>,
    /// Where its receiver stays on the stack (see [`receiver_home`]).
    pub receiver_home: Option<u32>,
}

/// A `call rel32` inside a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectCall {
    /// Where the call instruction is, from the function's first byte.
    pub at: u64,
    /// The virtual address it calls.
    pub target: u64,
}

impl GoFunction {
    /// Where it calls the function at `target`, from its first byte.
    pub fn calls_to(&self, target: u64) -> Vec<u64> {
        self.calls.iter().filter(|c| c.target == target).map(|c| c.at).collect()
    }
}

/// What a Go executable says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoBinary {
    /// `go1.22.5`.
    pub version: String,
    /// The main module's path, when built from a module.
    pub module: Option<String>,
    /// Whether the symbol table was there (else the pclntab served).
    pub symtab: bool,
    /// The wanted functions it has, by name.
    pub functions: HashMap<String, GoFunction>,
    /// The addresses of the wanted callees it has, by name.
    pub callees: HashMap<String, u64>,
    /// The tls.Conn → fd offsets from DWARF: `None` without DWARF (or
    /// without the wanted functions), an error when DWARF is there but does
    /// not give them.
    pub dwarf_layout: Option<Result<GoLayout, String>>,
    /// The (`*net.TCPConn`, `net.Conn`) itab's type hash, from the symbol table.
    pub tcpconn_itab_hash: Option<u32>,
}

const BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";

/// Reads `data` as a Go executable; `None` when it is not one. `wanted`:
/// the functions to probe; `callees`: functions whose calls from them
/// matter (only their addresses are kept).
pub fn inspect(data: &[u8], wanted: &[&str], callees: &[&str]) -> Result<Option<GoBinary>, GoError> {
    let obj = object::File::parse(data)?;
    let Some(info) = obj.section_by_name(".go.buildinfo").and_then(|s| s.data().ok()) else {
        return Ok(None);
    };
    let (version, module) = buildinfo(info)?;
    let mut symtab = false;
    let mut found: HashMap<String, (u64, u64)> = HashMap::new(); // name → (address, size)
    let mut itab = None;
    for sym in obj.symbols() {
        symtab = true;
        if let Ok(name) = sym.name() {
            if (wanted.contains(&name) || callees.contains(&name)) && sym.size() > 0 {
                found.insert(name.to_string(), (sym.address(), sym.size()));
            } else if go_layout::TCPCONN_ITAB_SYMBOLS.contains(&name) {
                itab = Some(sym.address());
            }
        }
    }
    if !symtab {
        let names: Vec<&str> = wanted.iter().chain(callees).copied().collect();
        found = pclntab_functions(&obj, &names)?;
    }
    let mut functions = HashMap::new();
    let mut callee_addresses = HashMap::new();
    for (name, (address, size)) in found {
        if !wanted.contains(&name.as_str()) {
            callee_addresses.insert(name, address);
            continue;
        }
        let Some((offset, code)) = file_bytes(&obj, data, address, size) else { continue };
        let returns = return_offsets(obj.architecture(), code);
        let entry = entry_site(obj.architecture(), code);
        let calls = direct_calls(obj.architecture(), code, address);
        let receiver_home = receiver_home(obj.architecture(), code);
        functions.insert(name, GoFunction { offset, size, entry, returns, calls, receiver_home });
    }
    // Only a program with the functions is probed and needs its layout;
    // reading DWARF is most of the time a held program waits.
    let dwarf_layout = if functions.is_empty() { None } else { go_layout::from_dwarf(&obj) };
    // `hash` follows the itab's `inter` and `_type` words.
    let tcpconn_itab_hash = itab
        .and_then(|a| file_bytes(&obj, data, a + 16, 4))
        .and_then(|(_, b)| Some(u32::from_le_bytes(b.try_into().ok()?)));
    Ok(Some(GoBinary {
        version,
        module,
        symtab,
        functions,
        callees: callee_addresses,
        dwarf_layout,
        tcpconn_itab_hash,
    }))
}

/// Version and main module from `.go.buildinfo` (Go 1.18+: inline strings).
fn buildinfo(sec: &[u8]) -> Result<(String, Option<String>), GoError> {
    if sec.len() < 32 || !sec.starts_with(BUILDINFO_MAGIC) {
        return Err(GoError::Corrupt("build info"));
    }
    let flags = sec[15];
    if flags & 2 == 0 {
        return Err(GoError::Unsupported("build info with pointers, before Go 1.18".into()));
    }
    let mut rest = &sec[32..];
    let version = read_string(&mut rest).ok_or(GoError::Corrupt("build info"))?;
    let modinfo = read_string(&mut rest).unwrap_or_default();
    let module = modinfo
        .lines()
        .find_map(|l| l.strip_prefix("mod\t"))
        .and_then(|l| l.split('\t').next())
        .map(str::to_string);
    Ok((version, module))
}

/// A uvarint-length-prefixed string.
fn read_string(rest: &mut &[u8]) -> Option<String> {
    let (mut len, mut shift, mut used) = (0u64, 0u32, 0usize);
    loop {
        let b = *rest.get(used)?;
        used += 1;
        len |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    let end = used.checked_add(usize::try_from(len).ok()?)?;
    let s = rest.get(used..end)?;
    *rest = &rest[end..];
    Some(String::from_utf8_lossy(s).into_owned())
}

/// Functions by name from `.gopclntab` (Go 1.18–1.19 magic 0xfffffff0,
/// 1.20+ 0xfffffff1): address and size (to the next function).
fn pclntab_functions(
    obj: &object::File<'_>,
    wanted: &[&str],
) -> Result<HashMap<String, (u64, u64)>, GoError> {
    let tab = obj
        .section_by_name(".gopclntab")
        .and_then(|s| s.data().ok())
        .ok_or(GoError::Unsupported("no .gopclntab section".into()))?;
    let little = obj.is_little_endian();
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = tab.get(at..at + 4)?.try_into().ok()?;
        Some(if little { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
    };
    let magic = u32_at(0).ok_or(GoError::Corrupt("pclntab"))?;
    if magic != 0xffff_fff0 && magic != 0xffff_fff1 {
        return Err(GoError::Unsupported(format!("pclntab magic {magic:#x}")));
    }
    let ptr = usize::from(*tab.get(7).ok_or(GoError::Corrupt("pclntab"))?);
    if ptr != 4 && ptr != 8 {
        return Err(GoError::Corrupt("pclntab"));
    }
    let word = |i: usize| -> Option<u64> {
        let at = 8 + i * ptr;
        let b = tab.get(at..at + ptr)?;
        let mut v = [0u8; 8];
        if little {
            v[..ptr].copy_from_slice(b);
            Some(u64::from_le_bytes(v))
        } else {
            v[8 - ptr..].copy_from_slice(b);
            Some(u64::from_be_bytes(v))
        }
    };
    let corrupt = || GoError::Corrupt("pclntab");
    let nfunc = usize::try_from(word(0).ok_or_else(corrupt)?).map_err(|_| corrupt())?;
    let text_start = word(2).ok_or_else(corrupt)?;
    let funcnames = usize::try_from(word(3).ok_or_else(corrupt)?).map_err(|_| corrupt())?;
    let functab = usize::try_from(word(7).ok_or_else(corrupt)?).map_err(|_| corrupt())?;
    // The linker leaves textStart 0 for the runtime to fill in: then it is
    // the start of .text, where runtime.text is.
    let base = match text_start {
        0 => obj.section_by_name(".text").map(|s| s.address()).ok_or_else(corrupt)?,
        t => t,
    };
    let mut out = HashMap::new();
    for i in 0..nfunc {
        let (entry, funcoff) = (u32_at(functab + 8 * i).ok_or_else(corrupt)?, u32_at(functab + 8 * i + 4));
        let funcoff = funcoff.ok_or_else(corrupt)? as usize;
        let name_off = u32_at(functab + funcoff + 4).ok_or_else(corrupt)? as usize;
        let start = funcnames + name_off;
        let name = tab.get(start..).and_then(|s| s.split(|&b| b == 0).next()).ok_or_else(corrupt)?;
        let Some(&w) = wanted.iter().find(|w| w.as_bytes() == name) else { continue };
        let next = u32_at(functab + 8 * (i + 1)).ok_or_else(corrupt)?;
        out.insert(w.to_string(), (base + u64::from(entry), u64::from(next.saturating_sub(entry))));
    }
    Ok(out)
}

/// The file offset and bytes of `size` bytes at virtual address `addr`.
fn file_bytes<'d>(obj: &object::File<'_>, data: &'d [u8], addr: u64, size: u64) -> Option<(u64, &'d [u8])> {
    let sec = obj.sections().find(|s| s.address() <= addr && addr + size <= s.address() + s.size())?;
    let (off, _) = sec.file_range()?;
    let at = off + (addr - sec.address());
    Some((at, data.get(at as usize..(at + size) as usize)?))
}

/// Where the entry uprobe of a Go function goes, from its first byte. On
/// x86_64 a uprobe on the first instruction of Go's stack check (`cmp
/// 0x10(%r14),%rsp`, or `lea -N(%rsp),%r12` then `cmp 0x10(%r14),%r12`) is
/// single-stepped: a debug trap more on every call (~13 µs in our VMs). The
/// `jbe` to `morestack` right after it is a conditional jump, which the
/// kernel emulates, and there the argument registers and the goroutine (r14)
/// are still as at entry (the prologue only wrote r12 and the flags). After
/// a stack growth the function starts again and the probe fires once more,
/// with the same arguments. Any other prologue (and other architectures):
/// the first byte.
pub fn entry_site(arch: object::Architecture, code: &[u8]) -> u64 {
    use iced_x86::{Mnemonic, OpKind, Register};
    if arch != object::Architecture::X86_64 {
        return 0;
    }
    let mut insns =
        iced_x86::Decoder::with_ip(64, code, 0, iced_x86::DecoderOptions::NONE).into_iter().take(3);
    let Some(mut i) = insns.next() else { return 0 };
    let mut guarded = Register::RSP;
    if i.mnemonic() == Mnemonic::Lea && i.op0_register() == Register::R12 && i.memory_base() == Register::RSP
    {
        guarded = Register::R12;
        let Some(next) = insns.next() else { return 0 };
        i = next;
    }
    let stack_check = i.mnemonic() == Mnemonic::Cmp
        && i.op0_kind() == OpKind::Register
        && i.op0_register() == guarded
        && i.op1_kind() == OpKind::Memory
        && i.memory_base() == Register::R14
        && i.memory_index() == Register::None
        && i.memory_displacement64() == 0x10;
    match insns.next() {
        Some(j) if stack_check && j.mnemonic() == Mnemonic::Jbe => j.ip(),
        _ => 0,
    }
}

/// Where a function keeps its first argument (the receiver) for its whole
/// body, as an offset from the stack pointer after its prologue: Go's
/// register ABI gives each register argument a home slot above the return
/// address, and a function that needs the argument after a call spills it
/// there once (`mov %rax,F+16(%rsp)` after `push %rbp; sub $F,%rsp`; F+8
/// where the prologue saves rbp inside the frame, before Go 1.21). `None`
/// unless that store comes before the first call, with rax still the
/// argument, and nothing else in the function writes over the slot: then a
/// probe on any call inside it can read the receiver there instead of
/// taking it from a probe at the entry. Only x86_64.
pub fn receiver_home(arch: object::Architecture, code: &[u8]) -> Option<u32> {
    use iced_x86::{FlowControl, Mnemonic, OpKind, Register};
    if arch != object::Architecture::X86_64 {
        return None;
    }
    let insns: Vec<_> =
        iced_x86::Decoder::with_ip(64, code, 0, iced_x86::DecoderOptions::NONE).into_iter().collect();
    let writes_memory = |i: &iced_x86::Instruction, base: Register| {
        i.op_count() > 0
            && i.op0_kind() == OpKind::Memory
            && i.memory_base() == base
            && i.memory_index() == Register::None
            && !matches!(i.mnemonic(), Mnemonic::Cmp | Mnemonic::Test)
    };
    let writes_rsp_slot = |i: &iced_x86::Instruction| writes_memory(i, Register::RSP);
    let (mut pushed_bp, mut frame, mut home) = (false, None, None);
    for (n, i) in insns.iter().enumerate() {
        if matches!(i.flow_control(), FlowControl::Call | FlowControl::IndirectCall) {
            break;
        }
        match (i.mnemonic(), frame) {
            (Mnemonic::Push, None) if i.op0_register() == Register::RBP => pushed_bp = true,
            (Mnemonic::Sub, None)
                if i.op0_register() == Register::RSP
                    && matches!(i.op1_kind(), OpKind::Immediate8to64 | OpKind::Immediate32to64) =>
            {
                frame = Some(i.immediate(1));
            }
            (Mnemonic::Mov, Some(f)) if writes_rsp_slot(i) && i.op1_kind() == OpKind::Register => {
                let want = f + 8 + if pushed_bp { 8 } else { 0 };
                if i.op1_register() == Register::RAX && i.memory_displacement64() == want {
                    home = Some((n, want));
                    break;
                }
            }
            _ => {}
        }
        // rax no longer the argument
        if i.op_count() > 0
            && i.op0_kind() == OpKind::Register
            && i.op0_register().full_register() == Register::RAX
            && !matches!(i.mnemonic(), Mnemonic::Cmp | Mnemonic::Test)
        {
            return None;
        }
    }
    let (at, slot) = home?;
    // The slot is rbp+16 too (rbp is rsp+F, or rsp+F-8 where it is saved
    // inside the frame).
    let overlaps = |i: &iced_x86::Instruction, slot: i64| {
        let start = i.memory_displacement64() as i64;
        start < slot + 8 && slot < start + i.memory_size().size() as i64
    };
    let overwritten = insns.iter().enumerate().any(|(n, i)| {
        n != at
            && (writes_rsp_slot(i) && overlaps(i, slot as i64)
                || writes_memory(i, Register::RBP) && overlaps(i, 16))
    });
    (!overwritten).then(|| u32::try_from(slot).ok()).flatten()
}

/// Offsets of the return instructions in `code`.
fn return_offsets(arch: object::Architecture, code: &[u8]) -> Vec<u64> {
    match arch {
        object::Architecture::X86_64 => {
            let decoder = iced_x86::Decoder::with_ip(64, code, 0, iced_x86::DecoderOptions::NONE);
            decoder
                .into_iter()
                .filter(|i| i.flow_control() == iced_x86::FlowControl::Return)
                .map(|i| i.ip())
                .collect()
        }
        object::Architecture::Aarch64 => code
            .as_chunks::<4>()
            .0
            .iter()
            .enumerate()
            .filter(|(_, w)| u32::from_le_bytes(**w) == 0xd65f_03c0) // ret (x30)
            .map(|(i, _)| i as u64 * 4)
            .collect(),
        _ => Vec::new(),
    }
}

/// The `call rel32` instructions of `code` (linked at `address`). Only
/// x86_64: there a probe on a call is emulated where one on a `ret` is
/// single-stepped; arm64's uprobes simulate `ret` too.
fn direct_calls(arch: object::Architecture, code: &[u8], address: u64) -> Vec<DirectCall> {
    if arch != object::Architecture::X86_64 {
        return Vec::new();
    }
    super::sites::direct_calls(code, address)
        .map(|(ip, target)| DirectCall { at: ip - address, target })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_site_is_the_stack_check_jump() {
        use object::Architecture::{Aarch64, X86_64};
        // cmp 0x10(%r14),%rsp; jbe …; push %rbp (crypto/tls.(*Conn).Read, Go 1.26)
        let small = [0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0x7a, 0x03, 0x00, 0x00, 0x55];
        assert_eq!(entry_site(X86_64, &small), 4);
        // lea -0x48(%rsp),%r12; cmp 0x10(%r14),%r12; jbe …; push %rbp ((*Conn).Write)
        let large =
            [0x4c, 0x8d, 0x64, 0x24, 0xb8, 0x4d, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0x93, 0x07, 0x00, 0x00, 0x55];
        assert_eq!(entry_site(X86_64, &large), 9);
        // jbe with an 8-bit displacement
        assert_eq!(entry_site(X86_64, &[0x49, 0x3b, 0x66, 0x10, 0x76, 0x20]), 4);
        // cmp of r12 without the lea that set it; another guard offset; no jbe
        assert_eq!(entry_site(X86_64, &[0x4d, 0x3b, 0x66, 0x10, 0x76, 0x20]), 0);
        assert_eq!(entry_site(X86_64, &[0x49, 0x3b, 0x66, 0x18, 0x76, 0x20]), 0);
        assert_eq!(entry_site(X86_64, &[0x49, 0x3b, 0x66, 0x10, 0x55]), 0);
        // push %rbp first (no stack check), too short, another architecture
        assert_eq!(entry_site(X86_64, &[0x55, 0x48, 0x89, 0xe5]), 0);
        assert_eq!(entry_site(X86_64, &[0x49, 0x3b]), 0);
        assert_eq!(entry_site(Aarch64, &small), 0);
    }

    #[test]
    fn the_receiver_home_is_its_spill_slot_when_nothing_overwrites_it() {
        use object::Architecture::{Aarch64, X86_64};
        // crypto/tls.(*Conn).Read, Go 1.26: stack check; push %rbp; mov %rsp,%rbp;
        // sub $0x58,%rsp; movq %xmm15,0x50(%rsp); mov %rax,0x68(%rsp);
        // mov %rcx,0x78(%rsp); mov %rbx,0x70(%rsp)
        let go126: &[u8] = &[
            0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0x7a, 0x03, 0x00, 0x00, 0x55, 0x48, 0x89, 0xe5, 0x48, 0x83,
            0xec, 0x58, 0x66, 0x44, 0x0f, 0xd6, 0x7c, 0x24, 0x50, 0x48, 0x89, 0x44, 0x24, 0x68, 0x48, 0x89,
            0x4c, 0x24, 0x78, 0x48, 0x89, 0x5c, 0x24, 0x70,
        ];
        let call = [0xe8, 0, 0, 0, 0];
        let with = |parts: &[&[u8]]| parts.concat();
        assert_eq!(receiver_home(X86_64, &with(&[go126, &call])), Some(0x68));
        // Go 1.18: rbp saved inside the frame (sub $0x68,%rsp; mov %rbp,0x60(%rsp);
        // lea 0x60(%rsp),%rbp; …; mov %rax,0x70(%rsp))
        let go118: &[u8] = &[
            0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0xc2, 0x03, 0x00, 0x00, 0x48, 0x83, 0xec, 0x68, 0x48, 0x89,
            0x6c, 0x24, 0x60, 0x48, 0x8d, 0x6c, 0x24, 0x60, 0x49, 0xc7, 0xc5, 0x00, 0x00, 0x00, 0x00, 0x4c,
            0x89, 0x6c, 0x24, 0x58, 0x48, 0x89, 0x8c, 0x24, 0x80, 0x00, 0x00, 0x00, 0x48, 0x89, 0x5c, 0x24,
            0x78, 0x48, 0x89, 0x44, 0x24, 0x70,
        ];
        assert_eq!(receiver_home(X86_64, &with(&[go118, &call])), Some(0x70));
        // The slot written over later (movups %xmm15,0x60(%rsp) covers it;
        // mov %rcx,0x10(%rbp) is it)
        let movups = [0x44, 0x0f, 0x11, 0x7c, 0x24, 0x60];
        assert_eq!(receiver_home(X86_64, &with(&[go126, &call, &movups])), None);
        let through_rbp = [0x48, 0x89, 0x4d, 0x10];
        assert_eq!(receiver_home(X86_64, &with(&[go126, &call, &through_rbp])), None);
        // … but not a neighbour (mov %rcx,0x18(%rbp): b's slot)
        assert_eq!(receiver_home(X86_64, &with(&[go126, &call, &[0x48, 0x89, 0x4d, 0x18]])), Some(0x68));
        // rax changed before the store (xor %eax,%eax), or a call first
        let (head, tail) = go126.split_at(25);
        assert_eq!(receiver_home(X86_64, &with(&[head, &[0x31, 0xc0], tail])), None);
        assert_eq!(receiver_home(X86_64, &with(&[head, &call, tail])), None);
        // no store at all; another architecture
        assert_eq!(receiver_home(X86_64, &with(&[head, &call])), None);
        assert_eq!(receiver_home(Aarch64, go126), None);
    }

    #[test]
    fn build_info_strings() {
        let mut sec = BUILDINFO_MAGIC.to_vec();
        sec.extend([8, 2]);
        sec.resize(32, 0);
        sec.push(8);
        sec.extend(b"go1.22.5");
        let mods = "\u{0}path\texample.test/x\nmod\texample.test/x\t(devel)\t\n";
        sec.push(mods.len() as u8);
        sec.extend(mods.as_bytes());
        let (v, m) = buildinfo(&sec).unwrap();
        assert_eq!(v, "go1.22.5");
        assert_eq!(m.as_deref(), Some("example.test/x"));
        assert!(matches!(buildinfo(b"not build info at all, 32 bytes.."), Err(GoError::Corrupt(_))));
        let mut old = BUILDINFO_MAGIC.to_vec();
        old.extend([8, 0]);
        old.resize(32, 0);
        assert!(matches!(buildinfo(&old), Err(GoError::Unsupported(_))));
    }

    #[test]
    fn a_non_go_file_is_none_and_garbage_an_error() {
        let libssl = std::fs::read("/usr/lib/x86_64-linux-gnu/libssl.so.3").expect("the system libssl.so.3");
        assert_eq!(inspect(&libssl, &["x"], &[]).unwrap(), None);
        assert!(inspect(b"garbage", &["x"], &[]).is_err());
    }

    #[test]
    fn varints_past_the_end_are_refused() {
        let mut s: &[u8] = &[0x80, 0x80];
        assert_eq!(read_string(&mut s), None);
        let mut s: &[u8] = &[5, b'a'];
        assert_eq!(read_string(&mut s), None);
    }
}
