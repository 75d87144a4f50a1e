//! Where a Go program keeps the socket fd of a `*tls.Conn`: the struct
//! offsets on the way `tls.Conn.conn` (a `net.Conn`) → `*net.TCPConn` →
//! `net.conn.fd` (`*net.netFD`) → `netFD.pfd` (`poll.FD`) → `Sysfd`. Read
//! from DWARF when the program has it; otherwise the table below, which
//! holds for every Go release from 1.18 to 1.26 on 64-bit targets.
//!
//! The `net.Conn` inside a `tls.Conn` is only followed when it is a
//! `*net.TCPConn`: its itab's type hash must be that type's. The compiler
//! hashes the type's link name ("*net.TCPConn"), with an algorithm that
//! changed twice; the three results are fixed numbers (checked against real
//! itabs of several releases in the tests).

use crate::bpf::events as ev;
use object::{Object, ObjectSection};
use std::borrow::Cow;

/// Offsets of one program (bytes), as the eBPF side reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoLayout {
    /// From a `*tls.Conn` to the data word of its `conn` interface.
    pub conn_data: u32,
    /// From a `*net.TCPConn` to its `*netFD`.
    pub tcpconn_fd: u32,
    /// From a `*netFD` to `pfd.Sysfd`.
    pub netfd_sysfd: u32,
}

/// Go 1.18–1.26, 64-bit: `conn` is `tls.Conn`'s first field (data word
/// after the itab word), `net.TCPConn{conn{fd}}`, and `poll.FD` starts with
/// `fdMutex{state uint64; rsema, wsema uint32}` (defined in `events.h`).
pub const TABLE: GoLayout = GoLayout {
    conn_data: ev::NT_GO_TABLE_CONN_DATA,
    tcpconn_fd: ev::NT_GO_TABLE_TCPCONN_FD,
    netfd_sysfd: ev::NT_GO_TABLE_NETFD_SYSFD,
};

/// `*net.TCPConn`'s type hash under each algorithm Go has used: md5 (1.18),
/// NOT-SHA-256 (1.19–1.24), SHA-256 with the first byte flipped (later),
/// as `events.h` defines them for the eBPF side.
pub const TCPCONN_TYPE_HASHES: [u32; 3] =
    [ev::NT_GO_TCPCONN_HASH_MD5, ev::NT_GO_TCPCONN_HASH_NOTSHA256, ev::NT_GO_TCPCONN_HASH_SHA256X];

/// The itab symbol of (`*net.TCPConn`, `net.Conn`) in a symbol table
/// (the separator became `:` in Go 1.20).
pub const TCPCONN_ITAB_SYMBOLS: [&str; 2] =
    ["go:itab.*net.TCPConn,net.Conn", "go.itab.*net.TCPConn,net.Conn"];

/// (struct, member) pairs read from DWARF, in the order of [`from_dwarf`]'s sums.
const MEMBERS: [(&str, &str); 5] = [
    ("crypto/tls.Conn", "conn"),
    ("net.TCPConn", "conn"),
    ("net.conn", "fd"),
    ("net.netFD", "pfd"),
    ("internal/poll.FD", "Sysfd"),
];

/// The layout from the program's DWARF: `None` without DWARF (`-w`, `-s`),
/// an error when DWARF is there but unreadable or lacks a member.
pub fn from_dwarf(obj: &object::File<'_>) -> Option<Result<GoLayout, String>> {
    obj.section_by_name(".debug_info")?;
    Some(read_members(obj).map_err(|e| e.to_string()).and_then(|found| {
        let get =
            |i: usize| found[i].ok_or_else(|| format!("DWARF has no {}.{}", MEMBERS[i].0, MEMBERS[i].1));
        Ok(GoLayout { conn_data: get(0)? + 8, tcpconn_fd: get(1)? + get(2)?, netfd_sysfd: get(3)? + get(4)? })
    }))
}

type Slice<'a> = gimli::EndianSlice<'a, gimli::LittleEndian>;

/// A DIE's DW_AT_name (Go writes them inline; `.debug_str` is read too).
fn name<'a>(
    dwarf: &gimli::Dwarf<Slice<'a>>,
    e: &gimli::DebuggingInformationEntry<'_, '_, Slice<'a>>,
) -> Option<&'a str> {
    let bytes = match e.attr_value(gimli::DW_AT_name).ok()?? {
        gimli::AttributeValue::String(s) => s,
        gimli::AttributeValue::DebugStrRef(o) => dwarf.debug_str.get_str(o).ok()?,
        _ => return None,
    };
    std::str::from_utf8(bytes.slice()).ok()
}

fn read_members(obj: &object::File<'_>) -> Result<[Option<u32>; 5], gimli::Error> {
    // Only what type DIEs need: decompressing line tables and location lists
    // would double the time a held program waits.
    let load = |id: gimli::SectionId| -> Result<Cow<'_, [u8]>, gimli::Error> {
        if !matches!(
            id,
            gimli::SectionId::DebugInfo | gimli::SectionId::DebugAbbrev | gimli::SectionId::DebugStr
        ) {
            return Ok(Cow::Borrowed(&[]));
        }
        Ok(obj.section_by_name(id.name()).and_then(|s| s.uncompressed_data().ok()).unwrap_or_default())
    };
    let sections = gimli::DwarfSections::load(load)?;
    let dwarf = sections.borrow(|s| gimli::EndianSlice::new(s, gimli::LittleEndian));
    let mut found = [None; 5];
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let abbrevs = dwarf.abbreviations(&header)?;
        let mut entries = header.entries(&abbrevs);
        // The wanted struct whose members come next, and its depth.
        let mut within: Option<(&str, isize)> = None;
        let mut depth = 0isize;
        while let Some((delta, e)) = entries.next_dfs()? {
            depth += delta;
            if within.is_some_and(|(_, d)| depth <= d) {
                within = None;
            }
            match (e.tag(), within) {
                (gimli::DW_TAG_structure_type, _) => {
                    if let Some(n) = name(&dwarf, e) {
                        within = MEMBERS.iter().find(|(s, _)| *s == n).map(|(s, _)| (*s, depth));
                    }
                }
                (gimli::DW_TAG_member, Some((s, _))) => {
                    let Some(m) = name(&dwarf, e) else { continue };
                    if let Some(i) = MEMBERS.iter().position(|p| *p == (s, m)) {
                        if let Some(gimli::AttributeValue::Udata(off)) =
                            e.attr_value(gimli::DW_AT_data_member_location)?
                        {
                            found[i] = u32::try_from(off).ok();
                        }
                    }
                }
                _ => {}
            }
            if found.iter().all(Option::is_some) {
                return Ok(found);
            }
        }
    }
    Ok(found)
}
