//! Where NSS's SSL layer reads and writes plaintext, in a `libssl3.so`
//! without a symbol table (Debian strips it).
//!
//! An application reads and writes an NSS socket through NSPR (`PR_Read`,
//! `PR_Send`, …), which jumps through the top layer's `PRIOMethods` table.
//! The SSL layer's entries (`ssl_Read`, `ssl_Write`, `ssl_Recv`,
//! `ssl_Send` in sslsock.c) are static: no symbol names them. Their
//! addresses are written into the table by one function,
//! `ssl_SetupIOMethods`, which copies NSPR's default methods and then
//! stores the SSL layer's own, with the two NSPR emulations
//! (`PR_EmulateAcceptRead`, `PR_EmulateSendFile`) in their slots. That
//! function is found by those two imports, and its stores are followed by
//! a small x86_64 evaluator (lea, mov, SSE moves and unpacks, the stack).
//!
//! It refuses rather than guesses: the table must have the layered type at
//! slot 0 and both imports at exactly their `prio.h` slots, the four entries
//! must be distinct addresses in the file's code, and exactly one function
//! may produce such a table. Anything else (another compiler's code shape,
//! another architecture) is an error naming what was not found.

use super::elf::FileSymbol;
use iced_x86::{
    Decoder, DecoderOptions, Instruction, InstructionInfoFactory, Mnemonic, OpAccess, OpKind, Register,
};
use object::{Object, ObjectSection, ObjectSymbol, ObjectSymbolTable, RelocationTarget};
use std::collections::HashMap;

/// Slots of NSPR's `PRIOMethods` (prio.h; pointers of 8 bytes, the enum
/// padded to 8), part of NSPR's ABI since 4.0.
const READ: u64 = 0x10;
const WRITE: u64 = 0x18;
const RECV: u64 = 0x88;
const SEND: u64 = 0x90;
const ACCEPTREAD: u64 = 0xb0;
const SENDFILE: u64 = 0xf0;
/// `PR_DESC_LAYERED`, the SSL layer's `file_type` (slot 0).
const PR_DESC_LAYERED: u64 = 4;

/// The SSL layer's entries, as (name in logs, table slot).
pub const ENTRIES: [(&str, u64); 4] =
    [("ssl_Read", READ), ("ssl_Write", WRITE), ("ssl_Recv", RECV), ("ssl_Send", SEND)];

/// Why the SSL layer's methods were not found.
#[derive(Debug, thiserror::Error)]
pub enum MethodsError {
    /// Not a parsable object file.
    #[error("not an ELF object: {0}")]
    Parse(#[from] object::Error),
    /// Only x86_64 code is evaluated.
    #[error("the SSL layer's methods are only looked for in x86_64 code")]
    Architecture,
    /// The file does not import what NSS's libssl3 imports.
    #[error("no import of {0}: not NSS's libssl3")]
    NoImport(&'static str),
    /// No function, or more than one, fills a table that passes the checks.
    #[error("{0} functions fill an SSL I/O methods table (one expected): the code shape is unknown")]
    Tables(usize),
}

/// A value the evaluator knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Val {
    /// A link-time address (lea, or a pointer the dynamic loader relocates).
    Addr(u64),
    /// What the loader puts in the GOT slot at this address (an import).
    Slot(u64),
    /// A constant.
    Imm(u64),
}

/// What a load from a relocated word yields.
fn loaded(relocs: &HashMap<u64, Val>, at: u64) -> Option<Val> {
    relocs.get(&at).copied()
}

/// Registers, stack and stores of one straight walk through a function.
#[derive(Default)]
struct Machine {
    gpr: HashMap<Register, Val>,
    /// By register number (xmm, ymm and zmm N share slot N).
    xmm: HashMap<usize, [Option<Val>; 2]>,
    /// Words on the stack, by offset from the stack pointer at entry.
    stack: HashMap<i64, Val>,
    rsp: i64,
    /// Words stored at known addresses.
    stores: HashMap<u64, Val>,
}

enum Place {
    At(u64),
    Stack(i64),
}

impl Machine {
    fn place(&self, ins: &Instruction) -> Option<Place> {
        if ins.is_ip_rel_memory_operand() {
            return Some(Place::At(ins.ip_rel_memory_address()));
        }
        if ins.memory_index() != Register::None {
            return None;
        }
        let disp = ins.memory_displacement64() as i64;
        match ins.memory_base() {
            Register::RSP => Some(Place::Stack(self.rsp + disp)),
            base => match self.gpr.get(&base) {
                Some(Val::Addr(a)) => Some(Place::At(a.wrapping_add(disp as u64))),
                _ => None,
            },
        }
    }

    fn load(&self, ins: &Instruction, relocs: &HashMap<u64, Val>, word: u64) -> Option<Val> {
        match self.place(ins)? {
            Place::At(a) => {
                self.stores.get(&(a + word * 8)).copied().or_else(|| loaded(relocs, a + word * 8))
            }
            Place::Stack(s) => self.stack.get(&(s + word as i64 * 8)).copied(),
        }
    }

    fn store(&mut self, ins: &Instruction, word: u64, v: Option<Val>) {
        let key = |m: &Self| m.place(ins);
        match (key(self), v) {
            (Some(Place::At(a)), Some(v)) => {
                self.stores.insert(a + word * 8, v);
            }
            (Some(Place::At(a)), None) => {
                self.stores.remove(&(a + word * 8));
            }
            (Some(Place::Stack(s)), Some(v)) => {
                self.stack.insert(s + word as i64 * 8, v);
            }
            (Some(Place::Stack(s)), None) => {
                self.stack.remove(&(s + word as i64 * 8));
            }
            (None, _) => {}
        }
    }

    /// Forgets every register `ins` writes.
    fn clobber(&mut self, info: &mut InstructionInfoFactory, ins: &Instruction) {
        for u in info.info(ins).used_registers() {
            if matches!(
                u.access(),
                OpAccess::Read | OpAccess::CondRead | OpAccess::NoMemAccess | OpAccess::None
            ) {
                continue;
            }
            let r = u.register();
            if r.is_xmm() || r.is_ymm() || r.is_zmm() {
                self.xmm.remove(&r.number());
            } else {
                self.gpr.remove(&r.full_register());
            }
        }
    }

    fn step(&mut self, ins: &Instruction, relocs: &HashMap<u64, Val>, info: &mut InstructionInfoFactory) {
        let reg0 = ins.op0_kind() == OpKind::Register;
        let mem0 = ins.op0_kind() == OpKind::Memory;
        let src_reg = ins.op_count() > 1 && ins.op1_kind() == OpKind::Register;
        let src_mem = ins.op_count() > 1 && ins.op1_kind() == OpKind::Memory;
        let d = ins.op0_register();
        let s = if src_reg { ins.op1_register() } else { Register::None };
        match ins.mnemonic() {
            Mnemonic::Lea if reg0 && d.size() == 8 => {
                let v = match self.place(ins) {
                    Some(Place::At(a)) => Some(Val::Addr(a)),
                    _ => None,
                };
                self.set_gpr(d, v);
            }
            Mnemonic::Mov if reg0 && d.size() == 8 && src_mem => {
                let v = self.load(ins, relocs, 0);
                self.set_gpr(d, v);
            }
            Mnemonic::Mov if reg0 && d.size() == 8 && src_reg && s.size() == 8 => {
                let v = self.gpr.get(&s).copied();
                self.set_gpr(d, v);
            }
            Mnemonic::Mov if mem0 && src_reg && s.size() == 8 => {
                let v = self.gpr.get(&s).copied();
                self.store(ins, 0, v);
            }
            Mnemonic::Mov if mem0 && ins.op_count() > 1 && is_immediate(ins.op1_kind()) => {
                self.store(ins, 0, Some(Val::Imm(ins.immediate(1))));
            }
            Mnemonic::Mov if mem0 => self.store(ins, 0, None),
            Mnemonic::Movq if reg0 && d.is_xmm() && src_reg && s.size() == 8 => {
                let v = self.gpr.get(&s).copied();
                self.xmm.insert(d.number(), [v, Some(Val::Imm(0))]);
            }
            Mnemonic::Movq if reg0 && d.is_xmm() && src_mem => {
                let v = self.load(ins, relocs, 0);
                self.xmm.insert(d.number(), [v, Some(Val::Imm(0))]);
            }
            Mnemonic::Movq if mem0 && src_reg && s.is_xmm() => {
                let v = self.xmm.get(&s.number()).and_then(|x| x[0]);
                self.store(ins, 0, v);
            }
            Mnemonic::Movq if reg0 && d.size() == 8 && src_reg && s.is_xmm() => {
                let v = self.xmm.get(&s.number()).and_then(|x| x[0]);
                self.set_gpr(d, v);
            }
            Mnemonic::Movhps | Mnemonic::Movhpd if reg0 && d.is_xmm() && src_mem => {
                let low = self.xmm.get(&d.number()).and_then(|x| x[0]);
                let high = self.load(ins, relocs, 0);
                self.xmm.insert(d.number(), [low, high]);
            }
            Mnemonic::Movlps | Mnemonic::Movlpd if reg0 && d.is_xmm() && src_mem => {
                let high = self.xmm.get(&d.number()).and_then(|x| x[1]);
                let low = self.load(ins, relocs, 0);
                self.xmm.insert(d.number(), [low, high]);
            }
            Mnemonic::Punpcklqdq | Mnemonic::Movlhps if reg0 && src_reg => {
                let low = self.xmm.get(&d.number()).and_then(|x| x[0]);
                let high = self.xmm.get(&s.number()).and_then(|x| x[0]);
                self.xmm.insert(d.number(), [low, high]);
            }
            Mnemonic::Movaps
            | Mnemonic::Movups
            | Mnemonic::Movdqa
            | Mnemonic::Movdqu
            | Mnemonic::Movapd
            | Mnemonic::Movupd => {
                if mem0 && src_reg {
                    let x = self.xmm.get(&s.number()).copied().unwrap_or([None, None]);
                    self.store(ins, 0, x[0]);
                    self.store(ins, 1, x[1]);
                } else if reg0 && src_mem {
                    let x = [self.load(ins, relocs, 0), self.load(ins, relocs, 1)];
                    self.xmm.insert(d.number(), x);
                } else if reg0 && src_reg {
                    let x = self.xmm.get(&s.number()).copied().unwrap_or([None, None]);
                    self.xmm.insert(d.number(), x);
                }
            }
            Mnemonic::Sub | Mnemonic::Add if reg0 && d == Register::RSP && is_immediate(ins.op1_kind()) => {
                let n = ins.immediate(1) as i64;
                self.rsp += if ins.mnemonic() == Mnemonic::Sub { -n } else { n };
            }
            Mnemonic::Push => self.rsp -= 8,
            Mnemonic::Pop => {
                self.rsp += 8;
                self.clobber(info, ins);
            }
            Mnemonic::Call => {
                // The System V caller-saved registers: anything may be in them after.
                for r in [
                    Register::RAX,
                    Register::RCX,
                    Register::RDX,
                    Register::RSI,
                    Register::RDI,
                    Register::R8,
                    Register::R9,
                    Register::R10,
                    Register::R11,
                ] {
                    self.gpr.remove(&r);
                }
                self.xmm.clear();
            }
            _ => self.clobber(info, ins),
        }
    }

    fn set_gpr(&mut self, r: Register, v: Option<Val>) {
        match v {
            Some(v) => self.gpr.insert(r.full_register(), v),
            None => self.gpr.remove(&r.full_register()),
        };
    }
}

fn is_immediate(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64
    )
}

/// What the dynamic relocations put in memory: a GOT slot of an import, or
/// a pointer into the file itself. Also returns the slots of `imports`.
fn relocations(
    obj: &object::File,
    imports: &[&'static str],
) -> (HashMap<u64, Val>, HashMap<&'static str, u64>) {
    let mut words = HashMap::new();
    let mut slots = HashMap::new();
    let symtab = obj.dynamic_symbol_table();
    for (at, r) in obj.dynamic_relocations().into_iter().flatten() {
        match r.target() {
            RelocationTarget::Symbol(i) => {
                words.insert(at, Val::Slot(at));
                let name =
                    symtab.as_ref().and_then(|t| t.symbol_by_index(i).ok()).and_then(|s| s.name().ok());
                if let Some(&n) = imports.iter().find(|&&n| Some(n) == name) {
                    slots.insert(n, at);
                }
            }
            RelocationTarget::Absolute if r.has_implicit_addend() || r.addend() != 0 => {
                words.insert(at, Val::Addr(r.addend() as u64));
            }
            _ => {}
        }
    }
    (words, slots)
}

/// The SSL layer's read/write/recv/send entries of a libssl3, as file
/// offsets by their sslsock.c names (`ENTRIES`).
pub fn ssl_layer_methods(data: &[u8]) -> Result<HashMap<String, FileSymbol>, MethodsError> {
    let obj = object::File::parse(data)?;
    if obj.architecture() != object::Architecture::X86_64 {
        return Err(MethodsError::Architecture);
    }
    let (relocs, slots) = relocations(&obj, &["PR_EmulateAcceptRead", "PR_EmulateSendFile"]);
    let accept = *slots.get("PR_EmulateAcceptRead").ok_or(MethodsError::NoImport("PR_EmulateAcceptRead"))?;
    let sendfile = *slots.get("PR_EmulateSendFile").ok_or(MethodsError::NoImport("PR_EmulateSendFile"))?;
    let Some(text) = obj.section_by_name(".text") else { return Err(MethodsError::Tables(0)) };
    let (text_off, _) = text.file_range().unwrap_or((0, 0));
    let code = text.data()?;
    let in_text = |a: u64| a >= text.address() && a < text.address() + code.len() as u64;

    let mut found: Vec<[u64; 4]> = Vec::new();
    let mut info = InstructionInfoFactory::new();
    for (start, len) in super::elf::unwind_functions(&obj) {
        if !in_text(start) || !in_text(start + len - 1) {
            continue;
        }
        let bytes = &code[(start - text.address()) as usize..(start - text.address() + len) as usize];
        let instrs: Vec<Instruction> =
            Decoder::with_ip(64, bytes, start, DecoderOptions::NONE).into_iter().collect();
        let reads_slot = |i: &Instruction| {
            i.is_ip_rel_memory_operand() && [accept, sendfile].contains(&i.ip_rel_memory_address())
        };
        if !instrs.iter().any(reads_slot) {
            continue;
        }
        let mut m = Machine::default();
        for ins in &instrs {
            m.step(ins, &relocs, &mut info);
        }
        found.extend(tables(&m.stores, accept, sendfile).filter(|t| {
            let mut sorted = *t;
            sorted.sort_unstable();
            t.iter().all(|&a| in_text(a)) && sorted.windows(2).all(|w| w[0] != w[1])
        }));
    }
    found.dedup();
    match found.as_slice() {
        [one] => Ok(ENTRIES
            .iter()
            .zip(one)
            .map(|((name, _), &a)| {
                (name.to_string(), FileSymbol { offset: a - text.address() + text_off, size: 0 })
            })
            .collect()),
        _ => Err(MethodsError::Tables(found.len())),
    }
}

/// Every table in `stores` that has the layered type and both imports at
/// their slots: its `ENTRIES` addresses (where all four are known).
fn tables(stores: &HashMap<u64, Val>, accept: u64, sendfile: u64) -> impl Iterator<Item = [u64; 4]> + '_ {
    stores.iter().filter_map(move |(&base, &v)| {
        let at = |slot: u64| stores.get(&(base + slot)).copied();
        let entry = |slot: u64| match at(slot) {
            Some(Val::Addr(a)) => Some(a),
            _ => None,
        };
        let ok = v == Val::Imm(PR_DESC_LAYERED)
            && at(ACCEPTREAD) == Some(Val::Slot(accept))
            && at(SENDFILE) == Some(Val::Slot(sendfile));
        if !ok {
            return None;
        }
        Some([entry(ENTRIES[0].1)?, entry(ENTRIES[1].1)?, entry(ENTRIES[2].1)?, entry(ENTRIES[3].1)?])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ci/install.sh installs libnss3-tools, which brings libnss3 (libssl3.so).
    pub const SYSTEM: &str = "/usr/lib/x86_64-linux-gnu/libssl3.so";

    /// Every entry found is an SSL-layer method: it starts by saving
    /// registers (`push`) and, within its first instructions, checks that
    /// the descriptor's methods are of the layered type (`cmpl $4,(…)`, the
    /// inlined `ssl_GetPrivate`).
    #[test]
    fn finds_the_four_ssl_layer_entries_of_the_system_libssl3() {
        let data = std::fs::read(SYSTEM).expect("the system libssl3.so (ci/install.sh: libnss3-tools)");
        let found = ssl_layer_methods(&data).unwrap();
        assert_eq!(found.len(), 4, "{found:?}");
        let mut offsets: Vec<u64> = found.values().map(|s| s.offset).collect();
        offsets.sort_unstable();
        offsets.dedup();
        assert_eq!(offsets.len(), 4, "{found:?}");
        for (name, sym) in &found {
            let code = &data[sym.offset as usize..sym.offset as usize + 64];
            let instrs: Vec<Instruction> =
                Decoder::new(64, code, DecoderOptions::NONE).into_iter().take(10).collect();
            assert_eq!(instrs[0].mnemonic(), Mnemonic::Push, "{name}");
            let checks_layered = instrs.iter().any(|i| {
                i.mnemonic() == Mnemonic::Cmp
                    && i.op0_kind() == OpKind::Memory
                    && i.immediate(1) == PR_DESC_LAYERED
            });
            assert!(checks_layered, "{name}: {instrs:?}");
        }
    }

    #[test]
    fn other_libraries_are_refused_with_the_reason() {
        let openssl = std::fs::read("/usr/lib/x86_64-linux-gnu/libssl.so.3").unwrap();
        assert!(matches!(ssl_layer_methods(&openssl), Err(MethodsError::NoImport("PR_EmulateAcceptRead"))));
        // libnspr4 defines the emulations itself: it imports neither.
        let nspr = std::fs::read("/usr/lib/x86_64-linux-gnu/libnspr4.so").unwrap();
        assert!(matches!(ssl_layer_methods(&nspr), Err(MethodsError::NoImport(_))));
        assert!(matches!(ssl_layer_methods(b"not an elf"), Err(MethodsError::Parse(_))));
    }

    /// A copy of libssl3 whose store of `PR_EmulateSendFile` is turned into
    /// nops: the table no longer passes the checks, and nothing is probed.
    #[test]
    fn a_table_missing_an_import_is_refused() {
        let mut data = std::fs::read(SYSTEM).unwrap();
        let obj = object::File::parse(&*data).unwrap();
        let (_, slots) = relocations(&obj, &["PR_EmulateSendFile"]);
        let slot = slots["PR_EmulateSendFile"];
        let text = obj.section_by_name(".text").unwrap();
        let (off, _) = text.file_range().unwrap();
        let code = text.data().unwrap().to_vec();
        let load = Decoder::with_ip(64, &code, text.address(), DecoderOptions::NONE)
            .into_iter()
            .find(|i| i.is_ip_rel_memory_operand() && i.ip_rel_memory_address() == slot)
            .expect("a load of the PR_EmulateSendFile slot");
        let at = (load.ip() - text.address() + off) as usize;
        drop(obj);
        data[at..at + load.len()].fill(0x90);
        assert!(
            matches!(ssl_layer_methods(&data), Err(MethodsError::Tables(0))),
            "{:?}",
            ssl_layer_methods(&data)
        );
    }
}
