//! Where to put a function's probes so that the kernel can emulate the
//! probed instruction instead of single-stepping it out of line (x86_64).
//!
//! A uprobe on an instruction the kernel emulates (push, nop, jumps, calls)
//! costs one trap; on any other one it costs a second trap to single-step a
//! copy of the instruction, which in a VM can cost ~13 µs a call (see
//! docs/benchmarks.md). A uretprobe must sit on the function's first
//! instruction, which compilers often make `sub $n,%rsp`. So, by
//! disassembling the function: an entry site on the first emulated
//! instruction before the argument registers change, and a return site on
//! the last emulated instruction before each `ret` after which the return
//! value no longer changes. Used only when every site is emulated and the
//! first instruction is not (otherwise entry + uretprobe is as cheap).

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, OpAccess, Register,
};

/// Probe sites of one function, as offsets from its first byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sites {
    /// Where the arguments are read.
    pub entry: u64,
    /// Where the return value is read: one per return path.
    pub returns: Vec<u64>,
}

/// The System V argument registers, in order.
pub(crate) const ARGS: [Register; 6] =
    [Register::RDI, Register::RSI, Register::RDX, Register::RCX, Register::R8, Register::R9];

/// Whether the kernel's x86 uprobe code emulates the instruction `bytes`
/// begins (arch/x86/kernel/uprobes.c: branch and push emulation). Prefixed
/// forms are left out: the kernel refuses some of them.
pub(crate) fn emulated(bytes: &[u8]) -> bool {
    match bytes {
        [0x70..=0x7f, ..] | [0xe8 | 0xe9 | 0xeb | 0x90, ..] => true, // jcc8, call, jmp, nop
        [0x0f, 0x80..=0x8f, ..] | [0x0f, 0x1f, ..] => true,          // jcc32, nopl
        [0x50..=0x57, ..] | [0x41, 0x50..=0x57, ..] => true,         // push reg
        _ => false,
    }
}

/// A conditional jump or a nop: emulated, and writing no register.
fn emulated_quiet(bytes: &[u8]) -> bool {
    matches!(bytes, [0x70..=0x7f, ..] | [0x90, ..] | [0x0f, 0x80..=0x8f | 0x1f, ..])
}

struct Decoded {
    instrs: Vec<Instruction>,
    len: u64,
}

impl Decoded {
    fn bytes<'a>(&self, code: &'a [u8], i: usize) -> &'a [u8] {
        let at = self.instrs[i].ip() as usize;
        &code[at..at + self.instrs[i].len()]
    }

    fn index_of(&self, ip: u64) -> Option<usize> {
        self.instrs.binary_search_by_key(&ip, |i| i.ip()).ok()
    }

    /// Instructions after `i` are only padding, or there are none: a call
    /// there cannot return into this function (`__stack_chk_fail`).
    fn nothing_after(&self, i: usize) -> bool {
        self.instrs[i + 1..].iter().all(|ins| {
            matches!(
                ins.mnemonic(),
                iced_x86::Mnemonic::Nop | iced_x86::Mnemonic::Int3 | iced_x86::Mnemonic::Ud2
            )
        })
    }
}

/// Whether `ins` writes any of `regs` (or a part of one).
pub(crate) fn writes(info: &mut InstructionInfoFactory, ins: &Instruction, regs: &[Register]) -> bool {
    info.info(ins).used_registers().iter().any(|u| {
        !matches!(u.access(), OpAccess::Read | OpAccess::CondRead | OpAccess::NoMemAccess | OpAccess::None)
            && regs.contains(&u.register().full_register())
    })
}

/// The sites of the function whose machine code is `code`, reading its
/// first `args` arguments at entry and `%rax` at return; `None` when it
/// cannot be done safely or would not be cheaper.
pub fn x86_64_sites(code: &[u8], args: usize) -> Option<Sites> {
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut instrs = Vec::new();
    for ins in &mut decoder {
        if ins.is_invalid() {
            return None;
        }
        instrs.push(ins);
    }
    let d = Decoded { instrs, len: code.len() as u64 };
    if d.instrs.is_empty() || emulated(d.bytes(code, 0)) {
        return None; // entry + uretprobe costs no single-step already
    }
    // Every place a jump inside the function lands; a jump out of it (a
    // tail call) or through a register would skip our return sites.
    let mut targets = Vec::new();
    for ins in &d.instrs {
        match ins.flow_control() {
            FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch => {
                let t = ins.near_branch_target();
                if t >= d.len {
                    return None;
                }
                targets.push(t);
            }
            FlowControl::IndirectBranch => return None,
            _ => {}
        }
    }
    let mut info = InstructionInfoFactory::new();
    let entry = entry_site(&d, code, &targets, &ARGS[..args], &mut info)?;
    let mut returns = Vec::new();
    for (r, ins) in d.instrs.iter().enumerate() {
        if ins.flow_control() == FlowControl::Return {
            returns.push(return_site(&d, code, &targets, r, &mut info)?);
        }
    }
    (!returns.is_empty()).then_some(Sites { entry, returns })
}

/// The first emulated instruction reached from the start in a straight
/// line, with the argument registers still untouched.
fn entry_site(
    d: &Decoded,
    code: &[u8],
    targets: &[u64],
    args: &[Register],
    info: &mut InstructionInfoFactory,
) -> Option<u64> {
    for (i, ins) in d.instrs.iter().enumerate() {
        if targets.contains(&ins.ip()) {
            return None; // a jump back into the prologue would pass the site twice or never
        }
        if emulated(d.bytes(code, i)) {
            return Some(ins.ip());
        }
        if ins.flow_control() != FlowControl::Next || writes(info, ins, args) {
            return None;
        }
    }
    None
}

/// For the `ret` at index `r`: the last emulated, register-quiet
/// instruction before it with only straight-line code after it that leaves
/// `%rax` alone and that no jump enters. If it is a conditional jump, its
/// other way must also end the function with `%rax` unchanged.
fn return_site(
    d: &Decoded,
    code: &[u8],
    targets: &[u64],
    r: usize,
    info: &mut InstructionInfoFactory,
) -> Option<u64> {
    let mut j = r;
    while j > 0 {
        if targets.contains(&d.instrs[j].ip()) {
            return None; // some path reaches the ret without passing earlier instructions
        }
        j -= 1;
        let ins = &d.instrs[j];
        if emulated_quiet(d.bytes(code, j)) {
            let taken_ok = ins.flow_control() != FlowControl::ConditionalBranch
                || ends_with_rax_unchanged(d, ins.near_branch_target(), info);
            return taken_ok.then(|| ins.ip());
        }
        if ins.flow_control() != FlowControl::Next || writes(info, ins, &[Register::RAX]) {
            return None;
        }
    }
    None
}

/// From `ip` on, straight-line code reaches a `ret`, or a call that cannot
/// return here, without writing `%rax`.
fn ends_with_rax_unchanged(d: &Decoded, ip: u64, info: &mut InstructionInfoFactory) -> bool {
    let Some(start) = d.index_of(ip) else { return false };
    for (i, ins) in d.instrs.iter().enumerate().skip(start) {
        match ins.flow_control() {
            FlowControl::Return => return true,
            FlowControl::Call => return d.nothing_after(i),
            FlowControl::Next if !writes(info, ins, &[Register::RAX]) => {}
            _ => return false,
        }
    }
    false
}

/// The `call rel32` instructions of `code` decoded at `ip`: (where each
/// is, where it calls), both in the same space as `ip`.
pub(crate) fn direct_calls(code: &[u8], ip: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
    Decoder::with_ip(64, code, ip, DecoderOptions::NONE)
        .into_iter()
        .filter(|i| i.code() == iced_x86::Code::Call_rel32_64)
        .map(|i| (i.ip(), i.near_branch_target()))
}

/// The address the first `lea reg, [rip + disp]` among the first 16
/// instructions of `code` (linked at `address`) computes: where a function
/// that returns a constant string finds it.
pub fn first_rip_relative_lea(code: &[u8], address: u64) -> Option<u64> {
    Decoder::with_ip(64, code, address, DecoderOptions::NONE)
        .into_iter()
        .take(16)
        .find(|i| i.mnemonic() == iced_x86::Mnemonic::Lea && i.is_ip_rel_memory_operand())
        .map(|i| i.ip_rel_memory_address())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian 12's libssl.so.3 `SSL_read` (OpenSSL 3.0), bytes as shipped.
    const DEBIAN_SSL_READ: &[u8] = &[
        0x48, 0x83, 0xec, 0x18, // sub $0x18,%rsp
        0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0x00, 0x00, 0x00, // mov %fs:0x28,%rax
        0x48, 0x89, 0x44, 0x24, 0x08, // mov %rax,0x8(%rsp)
        0x31, 0xc0, // xor %eax,%eax
        0x85, 0xd2, // test %edx,%edx
        0x78, 0x2f, // js error (+0x47)
        0x48, 0x89, 0xe1, // mov %rsp,%rcx
        0x48, 0x63, 0xd2, // movslq %edx,%rdx
        0xe8, 0x3d, 0xfe, 0xff, 0xff, // call ssl_read_internal
        0x85, 0xc0, // test %eax,%eax
        0x7e, 0x03, // jle +0x2a
        0x8b, 0x04, 0x24, // mov (%rsp),%eax
        0x48, 0x8b, 0x54, 0x24, 0x08, // +0x2a: mov 0x8(%rsp),%rdx
        0x64, 0x48, 0x2b, 0x14, 0x25, 0x28, 0x00, 0x00, 0x00, // sub %fs:0x28,%rdx
        0x75, 0x44, // jne stack_chk_fail (+0x7e)
        0x48, 0x83, 0xc4, 0x18, // add $0x18,%rsp
        0x31, 0xd2, 0x31, 0xc9, 0x31, 0xf6, 0x31, 0xff, // xor %edx,%ecx,%esi,%edi
        0xc3, // ret
        0xe8, 0x44, 0x9f, 0xfe, 0xff, // +0x47: call ERR_new
        0x48, 0x8d, 0x15, 0x05, 0xd5, 0x04, 0x00, // lea …,%rdx
        0xbe, 0x4c, 0x07, 0x00, 0x00, // mov $0x74c,%esi
        0x48, 0x8d, 0x3d, 0x62, 0xcc, 0x04, 0x00, // lea …,%rdi
        0xe8, 0x2c, 0xa6, 0xfe, 0xff, // call ERR_set_debug
        0x31, 0xc0, 0x31, 0xd2, // xor %eax,%eax; xor %edx,%edx
        0xbe, 0x0f, 0x01, 0x00, 0x00, // mov $0x10f,%esi
        0xbf, 0x14, 0x00, 0x00, 0x00, // mov $0x14,%edi
        0xe8, 0x49, 0xa4, 0xfe, 0xff, // call ERR_set_error
        0xb8, 0xff, 0xff, 0xff, 0xff, // mov $-1,%eax
        0xeb, 0xac, // jmp +0x2a
        0xe8, 0x3d, 0xb1, 0xfe, 0xff, // +0x7e: call __stack_chk_fail
    ];

    #[test]
    fn debian_ssl_read_gets_emulated_sites() {
        let sites = x86_64_sites(DEBIAN_SSL_READ, 3).expect("sites");
        assert_eq!(sites, Sites { entry: 0x16, returns: vec![0x38] }, "js at entry, jne before the ret");
    }

    #[test]
    fn a_function_starting_with_push_keeps_its_uretprobe() {
        // push %rbp; mov %rsp,%rbp; mov $-1,%eax; pop %rbp; ret
        assert_eq!(
            x86_64_sites(&[0x55, 0x48, 0x89, 0xe5, 0xb8, 0xff, 0xff, 0xff, 0xff, 0x5d, 0xc3], 3),
            None
        );
    }

    #[test]
    fn arguments_changed_before_any_emulated_instruction_give_up() {
        // sub $8,%rsp; mov $1,%edx; call f; add $8,%rsp; ret
        let code = [0x48, 0x83, 0xec, 0x08, 0xba, 1, 0, 0, 0, 0xe8, 0, 0, 0, 0, 0x48, 0x83, 0xc4, 0x08, 0xc3];
        assert_eq!(x86_64_sites(&code, 3), None);
        // The same with only two arguments read: %rdx does not matter, but
        // the return path has no emulated instruction after the call.
        assert_eq!(x86_64_sites(&code, 2), None);
    }

    #[test]
    fn return_value_written_after_the_last_branch_gives_up() {
        // sub $8,%rsp; test %edx,%edx; js +0; mov $1,%eax; add $8,%rsp; ret
        let code =
            [0x48, 0x83, 0xec, 0x08, 0x85, 0xd2, 0x78, 0x00, 0xb8, 1, 0, 0, 0, 0x48, 0x83, 0xc4, 0x08, 0xc3];
        assert_eq!(x86_64_sites(&code, 3), None);
    }

    #[test]
    fn tail_calls_and_indirect_jumps_give_up() {
        // sub $8,%rsp; test %edx,%edx; js +5; add $8,%rsp; jmp far_away ... ret
        let tail =
            [0x48, 0x83, 0xec, 0x08, 0x85, 0xd2, 0x78, 0x05, 0x48, 0x83, 0xc4, 0x08, 0xe9, 0, 1, 0, 0, 0xc3];
        assert_eq!(x86_64_sites(&tail, 3), None);
        // sub $8,%rsp; test %edx,%edx; js +2; jmp *%rax; ret
        let indirect = [0x48, 0x83, 0xec, 0x08, 0x85, 0xd2, 0x78, 0x02, 0xff, 0xe0, 0xc3];
        assert_eq!(x86_64_sites(&indirect, 3), None);
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(x86_64_sites(&[0x0f, 0x0b, 0xff, 0xff, 0xff], 3), None);
        assert_eq!(x86_64_sites(&[], 3), None);
    }
}
