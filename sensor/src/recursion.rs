//! Programs the kernel skipped: a BPF program does not run on a CPU where
//! another one is running (a socket closed in softirq while a syscall's
//! program ran, for example); the kernel counts each skip in the program's
//! `recursion_misses`. Read once a second, the new skips become a `drop`
//! record, so a lost close or chunk is never silent.

use aya::Ebpf;
use nettap_core::record::DropRecord;
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use tracing::warn;

/// The `drop` reason for skipped program runs.
pub const REASON: &str = "bpf_recursion_miss";

/// `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
struct InfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The kernel's count of runs of program `fd` it skipped (0 on kernels
/// before 5.12, which do not count them).
pub fn misses_of(fd: BorrowedFd<'_>) -> std::io::Result<u64> {
    // SAFETY: a plain C struct of integers and arrays; all zeroes is valid.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoByFd {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: &mut info as *mut _ as u64,
    };
    // SAFETY: `attr` points to `info`, which outlives the call, with its size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoByFd,
            std::mem::size_of::<InfoByFd>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(info.recursion_misses)
}

/// The program for socket state changes whose skipped runs its second
/// program runs instead (tcp_conn.bpf.c), and that second program, whose own
/// skips lose nothing (the first ran).
const SET_STATE: &str = "rtp_sock_set_state";
const SET_STATE_NESTED: &str = "rtp_sock_set_state_nested";

/// What was already reported, per program.
#[derive(Default)]
pub struct RecursionMisses {
    seen: HashMap<String, u64>,
    /// Whether make-ups far beyond the skips were reported.
    excess_said: bool,
}

/// Make-ups beyond the skips read just before them that can only mean the
/// second program runs changes the first took (the stack frame both share
/// for one change, which tcp_conn.bpf.c relies on, differs on this kernel):
/// then skipped closes would be hidden. A few can come between the two reads.
const EXCESS_MAKE_UPS: u64 = 64;

/// Runs of SET_STATE the kernel skipped and SET_STATE_NESTED ran, on every CPU.
fn recovered(ebpf: &Ebpf) -> u64 {
    let Some(map) = ebpf.map("set_state_recovered") else { return 0 };
    let Ok(counts) = aya::maps::PerCpuArray::<_, u64>::try_from(map) else { return 0 };
    counts.get(&0, 0).map(|per_cpu| per_cpu.iter().sum()).unwrap_or(0)
}

impl RecursionMisses {
    /// New skips of every loaded program since the last call that nothing
    /// ran instead, as one record.
    pub fn poll(&mut self, ebpf: &Ebpf) -> Option<DropRecord> {
        let mut new = 0;
        let totals: Vec<(&str, u64)> = ebpf
            .programs()
            .filter(|(name, _)| *name != SET_STATE_NESTED)
            .filter_map(|(name, prog)| Some((name, misses_of(prog.fd().ok()?.as_fd()).ok()?)))
            .collect();
        // Read after the skips: the kernel counts a skip before the nested
        // program recovers it, so a recovery read first could miss its skip's
        // count and a skip that happened between the two reads would look lost.
        let recovered = recovered(ebpf);
        for (name, mut total) in totals {
            if name == SET_STATE {
                if recovered > total + EXCESS_MAKE_UPS && !self.excess_said {
                    self.excess_said = true;
                    warn!(
                        skipped = total,
                        made_up = recovered,
                        "the second close program ran changes the first had taken: closes the kernel skipped are not counted on this kernel"
                    );
                }
                total = total.saturating_sub(recovered);
            }
            let seen = self.seen.entry(name.to_string()).or_default();
            if total > *seen {
                warn!(
                    program = name,
                    skipped = total - *seen,
                    "the kernel skipped runs of a program (another BPF program ran on that CPU)"
                );
                new += total - *seen;
                *seen = total;
            }
        }
        (new > 0).then_some(DropRecord { count: new, bytes: 0, reason: REASON })
    }
}
