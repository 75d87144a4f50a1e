//! A static function that both forms of a TLS call go through, probed
//! instead of them (x86_64): OpenSSL's `SSL_read` and `SSL_read_ex` both
//! call `ssl_read_internal(s, buf, num, &readbytes)`, `SSL_write` and
//! `SSL_write_ex` both `ssl_write_internal`.
//!
//! Why: Debian's `SSL_read_ex` is `sub $8,%rsp; call ssl_read_internal; …`
//! and changes its result right before `ret`, so it keeps entry + uretprobe
//! on its first instruction, which the kernel single-steps (a debug trap
//! more, ~13 µs a call in our VMs: Python pays it on every read and write).
//! The internal function starts with `push`, which the kernel emulates:
//! entry + uretprobe there cost no single-step, and one such pair serves
//! both public forms (`SSL_read` otherwise takes two emulated uprobes).
//!
//! The file has no symbol for it: it is the target of the `_ex` form's
//! first call. It is used only when that is certain enough:
//! - the `_ex` form reaches that `call rel32` in a straight line without
//!   writing an argument register, so the callee gets its arguments as they
//!   came (the `_ex` signature: the count is written through the fourth);
//! - the other form calls the same function (so it needs no probe);
//! - the callee is in the same section, is none of the public functions
//!   (LibreSSL's `SSL_read_ex` calls `SSL_read`), and its first instruction
//!   is one the kernel emulates.
//!
//! Otherwise the public functions are probed as before (`uprobe_plan`).

use super::elf::FileSymbol;
use super::sites::{self, ARGS};
use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, InstructionInfoFactory, Register};
use std::collections::HashMap;

/// A shared callee and the programs that probe it.
pub struct SharedCallee {
    /// Its name in the library's source, for labels (the file has no symbol).
    pub name: &'static str,
    /// The public function whose first call it is, with the same arguments.
    pub first_call_of: &'static str,
    /// How many of those arguments the entry program reads.
    pub args: usize,
    /// Public functions that must call it too; they get no probe of their own.
    pub also_called_by: &'static [&'static str],
    /// Entry program (uprobe on its first instruction).
    pub entry: &'static str,
    /// Return program (uretprobe).
    pub uretprobe: &'static str,
}

impl SharedCallee {
    /// The public functions it stands for.
    pub fn callers(&self) -> impl Iterator<Item = &'static str> + '_ {
        std::iter::once(self.first_call_of).chain(self.also_called_by.iter().copied())
    }
}

/// The file offset of `callee` in the ELF file `data`, whose functions
/// `symbols` gives, if every condition above holds.
pub fn find(data: &[u8], symbols: &HashMap<String, FileSymbol>, callee: &SharedCallee) -> Option<u64> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    let first = symbols.get(callee.first_call_of)?;
    let section = text_range(data, first.offset)?;
    let target = first_call(code(data, first)?, first.offset, &ARGS[..callee.args])?;
    if !section.contains(&target) || symbols.values().any(|s| s.offset == target) {
        return None;
    }
    for other in callee.also_called_by {
        let s = symbols.get(*other)?;
        if !sites::direct_calls(code(data, s)?, s.offset).any(|(_, t)| t == target) {
            return None;
        }
    }
    let start = data.get(target as usize..(target as usize + 16).min(data.len()))?;
    sites::emulated(start).then_some(target)
}

/// The bytes of a function.
fn code<'d>(data: &'d [u8], s: &FileSymbol) -> Option<&'d [u8]> {
    data.get(s.offset as usize..(s.offset + s.size) as usize)
}

/// The file range of the executable section holding file offset `at`.
fn text_range(data: &[u8], at: u64) -> Option<std::ops::Range<u64>> {
    use object::{Object, ObjectSection, SectionKind};
    let obj = object::File::parse(data).ok()?;
    obj.sections().filter(|s| s.kind() == SectionKind::Text).find_map(|s| {
        let (off, size) = s.file_range()?;
        (off..off + size).contains(&at).then_some(off..off + size)
    })
}

/// The target (as a file offset: `code` decoded at `offset`) of the first
/// call in `code`, if it is a `call rel32` reached in a straight line with
/// none of `args` written before it.
fn first_call(code: &[u8], offset: u64, args: &[Register]) -> Option<u64> {
    let mut info = InstructionInfoFactory::new();
    for ins in Decoder::with_ip(64, code, offset, DecoderOptions::NONE).into_iter().take(16) {
        match ins.flow_control() {
            FlowControl::Call if ins.code() == Code::Call_rel32_64 => return Some(ins.near_branch_target()),
            FlowControl::Next if !ins.is_invalid() && !sites::writes(&mut info, &ins, args) => {}
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::openssl::SHARED_CALLEES;

    fn libssl() -> Vec<u8> {
        // ci/install.sh installs libssl-dev.
        std::fs::read("/usr/lib/x86_64-linux-gnu/libssl.so.3").expect("the system libssl.so.3")
    }

    fn symbols(data: &[u8]) -> HashMap<String, FileSymbol> {
        super::super::elf::symbol_offsets(data, &["SSL_read", "SSL_read_ex", "SSL_write", "SSL_write_ex"])
            .unwrap()
    }

    #[test]
    fn debian_libssl_has_both_internal_functions_starting_with_push() {
        let data = libssl();
        let syms = symbols(&data);
        let found: Vec<u64> = SHARED_CALLEES.iter().map(|c| find(&data, &syms, c).expect(c.name)).collect();
        assert_ne!(found[0], found[1]);
        for at in found {
            // push %r13 / push %r14 (REX.B push)
            assert_eq!(data[at as usize], 0x41, "{at:#x}");
            assert!(syms.values().all(|s| s.offset != at));
        }
    }

    #[test]
    fn a_caller_that_writes_an_argument_first_or_calls_nothing_is_refused() {
        // sub $8,%rsp; mov $1,%edx; call +0
        assert_eq!(
            first_call(&[0x48, 0x83, 0xec, 0x08, 0xba, 1, 0, 0, 0, 0xe8, 0, 0, 0, 0], 0x100, &ARGS[..4]),
            None
        );
        // sub $8,%rsp; call +0x10 → 0x100 + 9 + 0x10
        assert_eq!(
            first_call(&[0x48, 0x83, 0xec, 0x08, 0xe8, 0x10, 0, 0, 0], 0x100, &ARGS[..4]),
            Some(0x119)
        );
        // a jump before any call; an indirect call
        assert_eq!(first_call(&[0xeb, 0x00, 0xe8, 0, 0, 0, 0], 0, &ARGS[..4]), None);
        assert_eq!(first_call(&[0xff, 0xd0], 0, &ARGS[..4]), None);
        assert_eq!(first_call(&[], 0, &ARGS[..4]), None);
    }

    #[test]
    fn a_callee_that_is_a_public_function_is_refused() {
        // LibreSSL's shape: SSL_read_ex's first call is SSL_read itself.
        let data = libssl();
        let mut syms = symbols(&data);
        let internal = find(&data, &syms, &SHARED_CALLEES[1]).unwrap();
        syms.insert("SSL_peek".into(), FileSymbol { offset: internal, size: 16 });
        assert_eq!(find(&data, &syms, &SHARED_CALLEES[1]), None);
    }
}
