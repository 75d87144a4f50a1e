//! Finds rustls's seven probe roles in a STRIPPED x86_64 executable, from
//! what stripping keeps (research: docs/rustls-without-symbols.md):
//!
//! * rustls's panic `Location`s (`{ &"…/rustls-X.Y.Z/src/F.rs", line, col }`
//!   in `.data.rel.ro`, their pointer in a RELATIVE relocation under lld):
//!   which code is rustls's, of which version, and from which source file;
//! * four rustls error messages in `.rodata`, referenced by a `lea [rip+d]`;
//! * `.eh_frame`: exact function bounds;
//! * the `PlaintextSink` vtables (`[drop, size, align, write,
//!   write_vectored, flush]`): the plaintext writes have no anchor of
//!   their own and are only ever called through them;
//! * calls through GOT slots (rustc's `-Z plt=no`), resolved through the
//!   slot's RELATIVE relocation.
//!
//! Every role must match exactly one function per rustls crate instance
//! (vtables: at most two, client and server), and that function must be
//! shaped like it (small, Locations only from its own source file, exactly
//! the expected calls through a vtable, and for the `Reader` roles a first
//! load through the `&Reader` at offset 0, the key the BPF programs read).
//! Anything else refuses the whole file with the reason: LTO builds (the
//! anchors land in callers, calls are devirtualized, arguments promoted)
//! are refused this way, never answered wrongly. arm64 is refused (no
//! decoder here yet: the research's rules hold there, 19/19).

use super::elf::{file_offset, unwind_functions};
use super::rustls_find::{missing, Found, Located, Role};
use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind, Register};
use object::{Object, ObjectSection, SectionKind};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The error messages the roles are anchored on (by a `lea` to them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Msg {
    /// `prepare_read`'s error: the deframer reads (every version).
    BufferFull,
    /// `UNEXPECTED_EOF_MESSAGE` (0.22, 0.23): `Reader::read`, `into_first_chunk`.
    Eof,
    /// `consume_first_chunk`'s panic (0.23): `<Reader as BufRead>::consume`.
    Consume,
    /// `write_to`'s sanity check (0.23.2x and later).
    WriteVectored,
}

const MESSAGES: [(Msg, &[u8]); 4] = [
    (Msg::BufferFull, b"message buffer full"),
    (Msg::Eof, b"peer closed connection without sending TLS close_notify"),
    (Msg::Consume, b"illegal `BufRead::consume` usage"),
    (Msg::WriteVectored, b"illegal write_vectored return value"),
];

/// A callee with at most this many callers is a helper of its caller
/// (`ChunkVecBuffer::read`, `prepare_read`), not shared code (panic
/// helpers have hundreds, `io::Error::new` dozens).
const PRIVATE_CALLERS: usize = 4;
/// And at most this long.
const PRIVATE_LEN: u64 = 0x200;

/// A rustls panic Location: which crate instance, which source file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Loc {
    /// "0.23.48".
    version: String,
    /// "msgs/deframer/buffers.rs".
    file: String,
}

/// What one function references and calls.
#[derive(Debug, Default)]
struct Summary {
    len: u64,
    /// Addresses of the rustls Locations it `lea`s.
    locs: Vec<u64>,
    msgs: BTreeSet<Msg>,
    /// Functions it calls or jumps to outside itself, directly or through a GOT slot
    /// (or whose address it loads from one, for a later `call reg`).
    calls: BTreeSet<u64>,
    /// Displacements of its `call [reg+disp]` / `jmp [reg+disp]`: vtable slots.
    slots: BTreeSet<u64>,
    /// Largest `sub rsp, imm`.
    frame: u64,
    /// Has a `cmp _, 0x40` (`min(64, len)` of `[IoSlice; 64]`).
    cmp64: bool,
    /// 64-bit immediates `kind << 32 | 3`: bit-packed simple `io::Error`s.
    simple_errors: BTreeSet<u64>,
    /// Is `xor eax, eax; ret` (`Ok(())` as `io::Result<()>`).
    ok_unit: bool,
}

/// Why roles were refused, one line each (a role of a crate instance with
/// more than one candidate, or a candidate not shaped like the role).
type Refusals = Vec<String>;

/// The stripped file's rustls roles, or why not (see the module comment).
/// `versions`: what its strings name.
pub fn locate(data: &[u8], versions: Vec<String>) -> Located {
    let refuse = |versions: Vec<String>, reason: String| Located::Stripped { versions, reason };
    let Ok(obj) = object::File::parse(data) else {
        return refuse(versions, "not an ELF file".into());
    };
    if obj.architecture() != object::Architecture::X86_64 {
        return refuse(
            versions,
            format!(
                "no symbol table, and functions are found without symbols on x86_64 only (this is {:?})",
                obj.architecture()
            ),
        );
    }
    match Analysis::new(&obj).and_then(|a| a.roles()) {
        Err(reason) => refuse(versions, reason),
        Ok(found) => {
            let mut functions: Vec<Found> = found
                .into_iter()
                .filter_map(|(role, address, name)| {
                    Some(Found { role, offset: file_offset(&obj, address)?, name })
                })
                .collect();
            functions.sort_by_key(|f| f.offset);
            functions.dedup_by_key(|f| f.offset);
            let missing = missing(&functions);
            if !missing.is_empty() {
                let names: Vec<&str> = missing.iter().map(|r| r.name()).collect();
                return refuse(
                    versions,
                    format!("no symbol table, and without it no {} was found", names.join(", ")),
                );
            }
            Located::Found { functions, versions, missing }
        }
    }
}

/// Everything the rules look at, read once.
struct Analysis<'a> {
    /// RELATIVE relocations: slot → value (lld leaves the slot itself zero).
    relocated: HashMap<u64, u64>,
    /// rustls Locations by address.
    locs: HashMap<u64, Loc>,
    /// Every function (FDE) with code, by start.
    info: BTreeMap<u64, Summary>,
    /// Code by function start, for the argument check.
    code: HashMap<u64, &'a [u8]>,
    /// Callers per function.
    callers: HashMap<u64, usize>,
    /// (start, version) of the functions whose Locations are all of one version.
    tagged: Vec<(u64, String)>,
    /// `.data.rel.ro`'s (address, bytes), where the vtables are.
    relro: Option<(u64, &'a [u8])>,
}

impl<'a> Analysis<'a> {
    fn new(obj: &object::File<'a>) -> Result<Self, String> {
        let relocated = super::elf::relative_pointers(obj);
        if relocated.is_empty() {
            // GNU ld writes the pointers into the section too, but a file
            // without them (non-PIE) was never examined: not guessed at.
            return Err("no symbol table and no RELATIVE relocations (not a PIE?)".into());
        }
        let locs = locations(obj, &relocated);
        if locs.is_empty() {
            return Err("no symbol table, and no rustls panic Location found (-Zlocation-detail?)".into());
        }
        let messages = messages(obj);
        let funcs = unwind_functions(obj);
        if funcs.is_empty() {
            return Err("no symbol table and no .eh_frame function bounds".into());
        }
        let starts: BTreeSet<u64> = funcs.iter().map(|&(s, _)| s).collect();
        let text: Vec<(u64, &'a [u8])> = obj
            .sections()
            .filter(|s| s.kind() == SectionKind::Text)
            .filter_map(|s| Some((s.address(), s.data().ok()?)))
            .collect();
        let mut info = BTreeMap::new();
        let mut code = HashMap::new();
        for &(start, len) in &funcs {
            let Some(bytes) = code_at(&text, start, len) else { continue };
            info.insert(start, summarize(bytes, start, &starts, &relocated, &locs, &messages));
            code.insert(start, bytes);
        }
        let mut callers: HashMap<u64, usize> = HashMap::new();
        for s in info.values() {
            for c in &s.calls {
                *callers.entry(*c).or_default() += 1;
            }
        }
        let tagged = info
            .iter()
            .filter_map(|(&f, s)| {
                let vs: BTreeSet<&str> = s.locs.iter().map(|l| locs[l].version.as_str()).collect();
                (vs.len() == 1).then(|| (f, vs.into_iter().next().unwrap_or_default().to_string()))
            })
            .collect();
        let relro = obj.section_by_name(".data.rel.ro").and_then(|s| Some((s.address(), s.data().ok()?)));
        Ok(Analysis { relocated, locs, info, code, callers, tagged, relro })
    }

    fn len(&self, f: u64) -> u64 {
        self.info.get(&f).map_or(0, |s| s.len)
    }

    fn summary(&self, f: u64) -> &Summary {
        &self.info[&f]
    }

    /// A function's rustls version: that of its own Locations, else the
    /// version tagged on both sides of it in address order (inside that
    /// crate's code: each crate's code is contiguous without LTO).
    fn version_of(&self, f: u64) -> Option<&str> {
        let own: BTreeSet<&str> =
            self.summary(f).locs.iter().map(|l| self.locs[l].version.as_str()).collect();
        if own.len() == 1 {
            return own.into_iter().next();
        }
        if !own.is_empty() {
            return None;
        }
        let i = self.tagged.partition_point(|(s, _)| *s < f);
        let (before, after) = (self.tagged.get(i.checked_sub(1)?)?, self.tagged.get(i)?);
        (before.1 == after.1).then_some(before.1.as_str())
    }

    /// The callees that are `f`'s own helpers: few callers, small.
    fn private(&self, f: u64) -> Vec<u64> {
        self.summary(f)
            .calls
            .iter()
            .copied()
            .filter(|c| self.info.contains_key(c))
            .filter(|c| {
                self.callers.get(c).copied().unwrap_or(0) <= PRIVATE_CALLERS && self.len(*c) <= PRIVATE_LEN
            })
            .collect()
    }

    /// A function's anchors with its helpers' (at `opt-level = "z"`
    /// `prepare_read`, `check_no_bytes_state`, `chunk()` stay out of line).
    fn closure(&self, f: u64) -> (BTreeSet<Msg>, Vec<&Loc>) {
        let mut msgs = BTreeSet::new();
        let mut locs = Vec::new();
        for g in std::iter::once(f).chain(self.private(f)) {
            let s = self.summary(g);
            msgs.extend(s.msgs.iter().copied());
            locs.extend(s.locs.iter().map(|l| &self.locs[l]));
        }
        (msgs, locs)
    }

    fn closure_has(&self, f: u64, msg: Msg) -> bool {
        self.closure(f).0.contains(&msg)
    }

    /// `f`'s closure references a Location of `version` whose file passes `file`.
    fn closure_loc(&self, f: u64, version: &str, file: impl Fn(&str) -> bool) -> bool {
        self.closure(f).1.iter().any(|l| l.version == version && file(&l.file))
    }

    /// Drops wrappers: a candidate that calls another candidate
    /// (`read_tls` around the deframer read) would inherit its anchors.
    fn innermost(&self, cands: Vec<u64>) -> Vec<u64> {
        let set: BTreeSet<u64> = cands.iter().copied().collect();
        cands
            .into_iter()
            .filter(|f| !self.summary(*f).calls.iter().any(|c| *c != *f && set.contains(c)))
            .collect()
    }

    /// The guard against an anchor inlined into a bigger caller: small,
    /// Locations only from the role's own files, vtable calls exactly `slots`.
    fn shaped(&self, f: u64, max_len: u64, files: &[&str], slots: &[u64]) -> bool {
        let s = self.summary(f);
        s.len <= max_len
            && self.closure(f).1.iter().all(|l| files.iter().any(|x| l.file.starts_with(x)))
            && s.slots.iter().copied().eq(slots.iter().copied())
    }

    /// The first memory access through argument `arg` (or a copy of it)
    /// loads the word at offset 0: the function takes a `&Reader` and first
    /// fetches its `received_plaintext` pointer, the key the BPF side reads.
    /// Not so for `ChunkVecBuffer::consume_first_chunk` (takes the buffer)
    /// or an LTO-promoted argument.
    fn derefs_first(&self, f: u64, arg: Register) -> bool {
        self.code.get(&f).is_some_and(|code| derefs_first(code, f, arg))
    }

    /// Its own start, if the GOT slot or pointer at `slot` holds a function.
    fn function_at(&self, slot: u64) -> Option<u64> {
        self.relocated.get(&slot).copied().filter(|t| self.info.contains_key(t))
    }

    /// Every rustls version with Locations, sorted.
    fn versions(&self) -> Vec<String> {
        let v: BTreeSet<&String> = self.locs.values().map(|l| &l.version).collect();
        v.into_iter().cloned().collect()
    }

    /// (role, address, name) of every role found, or why the file is refused.
    fn roles(&self) -> Result<Vec<(Role, u64, String)>, String> {
        let mut found = Vec::new();
        let mut refused: Refusals = Vec::new();
        for v in self.versions() {
            let Some(minor) = minor(&v) else { continue };
            if !(21..=23).contains(&minor) {
                refused.push(format!("rustls {v}: only 0.21 to 0.23 are known without symbols"));
                continue;
            }
            self.version_roles(&v, minor, &mut found, &mut refused);
        }
        self.plaintext_sinks(&mut found, &mut refused);
        if !refused.is_empty() {
            return Err(format!("no symbol table, and without it: {}", refused.join("; ")));
        }
        Ok(found)
    }

    /// The reads, `write_to` and the `Reader` roles of crate instance `v`.
    fn version_roles(
        &self,
        v: &str,
        minor: u32,
        found: &mut Vec<(Role, u64, String)>,
        refused: &mut Refusals,
    ) {
        let all: Vec<u64> = self.info.keys().copied().collect();
        let mut pick = |role: Role, cands: Vec<u64>, how: &str, refused: &mut Refusals| -> Option<u64> {
            match cands.as_slice() {
                [] => None,
                [f] => {
                    found.push((
                        role,
                        *f,
                        format!("{} (rustls {v}, found without symbols: {how})", role.name()),
                    ));
                    Some(*f)
                }
                _ => {
                    refused.push(format!(
                        "rustls {v} {}: {} candidates ({how}): {}",
                        role.name(),
                        cands.len(),
                        hexes(&cands)
                    ));
                    None
                }
            }
        };
        // TlsRead: "message buffer full" + a deframer Location of v; its own
        // `dyn Read::read` call (vtable slot 0x18).
        let deframer = |file: &str| file.starts_with("msgs/deframer");
        let c = self.innermost(
            all.iter()
                .copied()
                .filter(|&f| self.closure_has(f, Msg::BufferFull) && self.closure_loc(f, v, deframer))
                .collect(),
        );
        // 0.23 moved the buffer to msgs/deframer/buffers.rs.
        let file = if minor >= 23 { "msgs/deframer/buffers.rs" } else { "msgs/deframer.rs" };
        let c = self.guard(Role::TlsRead, v, c, 0x400, &[file], &[0x18], refused);
        pick(Role::TlsRead, c, "\"message buffer full\" + deframer Location + dyn Read call", refused);

        // TlsWrite: [IoSlice; 64] frame, cmp 64, `dyn Write::write_vectored`
        // (slot 0x20), in v's code; with the sanity message where it exists.
        let c: Vec<u64> = all
            .iter()
            .copied()
            .filter(|&f| {
                let s = self.summary(f);
                s.frame >= 0x400 && s.cmp64 && s.slots.contains(&0x20) && self.version_of(f) == Some(v)
            })
            .collect();
        let with_msg: Vec<u64> =
            c.iter().copied().filter(|&f| self.closure_has(f, Msg::WriteVectored)).collect();
        let c = if with_msg.is_empty() { c } else { with_msg };
        let c = self.guard(Role::TlsWrite, v, c, 0x800, &["vecbuf.rs"], &[0x20], refused);
        let write_to =
            pick(Role::TlsWrite, c, "[IoSlice; 64] frame + cmp 64 + dyn write_vectored call", refused);

        // Consume (0.23): "illegal `BufRead::consume` usage" + v's vecbuf.rs Location.
        let c = self.innermost(
            all.iter()
                .copied()
                .filter(|&f| {
                    self.closure_has(f, Msg::Consume) && self.closure_loc(f, v, |x| x == "vecbuf.rs")
                })
                .collect(),
        );
        let c = self.guard(Role::Consume, v, c, 0x300, &["vecbuf.rs"], &[], refused);
        let c = self.deref_guard(Role::Consume, v, c, Register::RDI, refused);
        let consume =
            pick(Role::Consume, c, "\"illegal `BufRead::consume` usage\" + vecbuf.rs Location", refused);

        // The EOF message's users (0.22, 0.23): Reader::read, into_first_chunk,
        // or check_no_bytes_state when out of line (a helper: the message, no
        // Location, no helper of its own; its callers inherit it).
        let helper = |f: u64| {
            let s = self.summary(f);
            s.msgs.contains(&Msg::Eof) && s.locs.is_empty() && self.private(f).is_empty()
        };
        let eof_all: Vec<u64> =
            all.iter().copied().filter(|&f| self.closure_has(f, Msg::Eof) && !helper(f)).collect();
        let eof: Vec<u64> =
            self.innermost(eof_all).into_iter().filter(|&f| self.version_of(f) == Some(v)).collect();
        let eof = self.guard(Role::PlaintextRead, v, eof, 0x300, &["vecbuf.rs"], &[], refused);

        // FirstChunk (0.23): the EOF user sharing chunk()'s Location with Consume.
        let mut first_chunk = Vec::new();
        if let Some(consume) = consume {
            let chunk_locs: BTreeSet<u64> = self.closure_locs(consume);
            first_chunk = eof
                .iter()
                .copied()
                .filter(|&f| f != consume && self.closure_locs(f).intersection(&chunk_locs).next().is_some())
                .collect();
        }
        // Returned through `rdi` (sret): the `&Reader` is the second argument.
        let first_chunk = self.deref_guard(Role::FirstChunk, v, first_chunk, Register::RSI, refused);
        pick(
            Role::FirstChunk,
            first_chunk.clone(),
            "EOF message + the chunk() Location Consume has",
            refused,
        );

        // PlaintextRead (0.22, 0.23): the other EOF user, with a private callee (ChunkVecBuffer::read) in v.
        let mut read: Vec<u64> = eof
            .iter()
            .copied()
            .filter(|f| !first_chunk.contains(f))
            .filter(|&f| self.private(f).into_iter().any(|c| !helper(c) && self.version_of(c) == Some(v)))
            .collect();
        if minor >= 23 && consume.is_none() && eof.len() > 1 {
            refused.push(format!(
                "rustls {v} {}: cannot be told from into_first_chunk without consume: {}",
                Role::PlaintextRead.name(),
                hexes(&eof)
            ));
            read.clear();
        }
        let helpers_in_v = all.iter().any(|&f| helper(f) && self.version_of(f) == Some(v));
        if eof.is_empty() && !helpers_in_v && minor == 21 {
            // 0.21: no message; WouldBlock and UnexpectedEof as bit-packed
            // simple io::Errors, in v's code, calling ChunkVecBuffer::read or
            // ::consume (shared with write_to, or holding v's vecbuf.rs Location).
            let shared: BTreeSet<u64> =
                write_to.map(|w| self.private(w).into_iter().collect()).unwrap_or_default();
            read = all
                .iter()
                .copied()
                .filter(|&f| self.summary(f).simple_errors.len() >= 2 && self.version_of(f) == Some(v))
                .filter(|&f| {
                    self.private(f).iter().any(|c| shared.contains(c))
                        || self.closure_loc(f, v, |x| x == "vecbuf.rs")
                })
                .collect();
        }
        let how = match minor {
            21 => "WouldBlock + UnexpectedEof io::Errors + a ChunkVecBuffer callee",
            _ => "EOF message + a private callee",
        };
        let read = self.innermost(read);
        let read = self.guard(Role::PlaintextRead, v, read, 0x300, &["vecbuf.rs"], &[], refused);
        let read = self.deref_guard(Role::PlaintextRead, v, read, Register::RDI, refused);
        pick(Role::PlaintextRead, read, how, refused);
    }

    /// The Location addresses of `f`'s closure.
    fn closure_locs(&self, f: u64) -> BTreeSet<u64> {
        std::iter::once(f).chain(self.private(f)).flat_map(|g| self.summary(g).locs.iter().copied()).collect()
    }

    /// The candidates, if all are shaped like the role; none (and a refusal) if one is not.
    #[allow(clippy::too_many_arguments)]
    fn guard(
        &self,
        role: Role,
        v: &str,
        cands: Vec<u64>,
        max_len: u64,
        files: &[&str],
        slots: &[u64],
        refused: &mut Refusals,
    ) -> Vec<u64> {
        let bad: Vec<u64> =
            cands.iter().copied().filter(|&f| !self.shaped(f, max_len, files, slots)).collect();
        if bad.is_empty() {
            return cands;
        }
        let list: Vec<String> = bad.iter().map(|f| format!("{f:#x} ({:#x} bytes)", self.len(*f))).collect();
        refused.push(format!(
            "rustls {v} {}: anchored but not shaped like it (inlined into a caller, LTO?): {}",
            role.name(),
            list.join(" ")
        ));
        Vec::new()
    }

    /// The candidates, if each first loads its `&Reader` argument `reg` at offset 0.
    fn deref_guard(
        &self,
        role: Role,
        v: &str,
        cands: Vec<u64>,
        reg: Register,
        refused: &mut Refusals,
    ) -> Vec<u64> {
        let bad: Vec<u64> = cands.iter().copied().filter(|&f| !self.derefs_first(f, reg)).collect();
        if bad.is_empty() {
            return cands;
        }
        refused.push(format!(
            "rustls {v} {}: does not take a &Reader in {reg:?} (its first access is not [{reg:?}+0]): {}",
            role.name(),
            hexes(&bad)
        ));
        Vec::new()
    }

    /// The plaintext writes, from the PlaintextSink vtables: three methods,
    /// a `ConnectionCommon`'s size, `write` and `write_vectored` reaching
    /// one rustls version and sharing their sending callee, `flush` small
    /// (`check_error`, sharing `write`'s callee, or `Ok(())`); at most two
    /// (client, server) per version.
    fn plaintext_sinks(&self, found: &mut Vec<(Role, u64, String)>, refused: &mut Refusals) {
        let mut per_version: BTreeMap<String, Vec<(u64, u64, u64)>> = BTreeMap::new();
        for (at, size, align, [write, write_vectored, flush]) in self.vtables() {
            if !(0x100..=0x4000).contains(&size) || align != 8 || self.len(flush) > 0x80 {
                continue;
            }
            let (rw, rwv) = (self.reach_versions(write), self.reach_versions(write_vectored));
            if rw.len() != 1 || rw != rwv {
                continue;
            }
            let (cw, cwv, cfl) =
                (&self.summary(write).calls, &self.summary(write_vectored).calls, &self.summary(flush).calls);
            if cw.intersection(cwv).next().is_none() {
                continue;
            }
            if cfl.intersection(cw).next().is_none() && !self.summary(flush).ok_unit {
                continue;
            }
            let v = rw.into_iter().next().unwrap_or_default();
            per_version.entry(v).or_default().push((at, write, write_vectored));
        }
        for (v, tables) in per_version {
            if tables.len() > 2 {
                let at: Vec<u64> = tables.iter().map(|t| t.0).collect();
                refused.push(format!(
                    "rustls {v}: {} PlaintextSink-shaped vtables (at most 2: client, server): {}",
                    tables.len(),
                    hexes(&at)
                ));
                continue;
            }
            for (at, write, write_vectored) in tables {
                for (role, f) in
                    [(Role::PlaintextWrite, write), (Role::PlaintextWriteVectored, write_vectored)]
                {
                    let name = format!(
                        "{} (rustls {v}, found without symbols: PlaintextSink vtable {at:#x})",
                        role.name()
                    );
                    found.push((role, f, name));
                }
            }
        }
    }

    /// The versions of the Locations `f` reaches through calls, depth ≤ 3.
    fn reach_versions(&self, f: u64) -> BTreeSet<String> {
        let mut seen = BTreeSet::from([f]);
        let mut frontier = vec![f];
        for _ in 0..3 {
            let mut next = Vec::new();
            for g in frontier {
                for &c in &self.summary(g).calls {
                    if self.info.contains_key(&c) && seen.insert(c) {
                        next.push(c);
                    }
                }
            }
            frontier = next;
        }
        seen.iter().flat_map(|g| self.summary(*g).locs.iter().map(|l| self.locs[l].version.clone())).collect()
    }

    /// (address, size, align, methods) of every vtable with exactly three
    /// methods (a PlaintextSink's shape): method slots are relocated
    /// function pointers, size and align plain integers.
    fn vtables(&self) -> Vec<(u64, u64, u64, [u64; 3])> {
        let Some((base, bytes)) = self.relro else { return Vec::new() };
        let word = |a: u64| -> Option<u64> {
            let o = usize::try_from(a.checked_sub(base)?).ok()?;
            Some(u64::from_le_bytes(bytes.get(o..o + 8)?.try_into().ok()?))
        };
        let plain = |a: u64| !self.relocated.contains_key(&a);
        // A vtable head: a function, then a plausible size and align.
        let head = |a: u64| -> Option<(u64, u64)> {
            self.function_at(a)?;
            let (size, align) = (word(a + 8)?, word(a + 16)?);
            (plain(a + 8) && plain(a + 16) && [1, 2, 4, 8, 16].contains(&align) && size > 0 && size < 1 << 20)
                .then_some((size, align))
        };
        let end = base + bytes.len() as u64;
        let mut out = Vec::new();
        let mut a = base;
        while a + 48 <= end {
            if let Some((size, align)) = head(a) {
                let mut methods = Vec::new();
                let mut m = a + 24;
                while m + 24 <= end {
                    let Some(f) = self.function_at(m) else { break };
                    if !methods.is_empty() && head(m).is_some() {
                        break; // the next vtable's drop
                    }
                    methods.push(f);
                    m += 8;
                }
                if let [w, wv, fl] = methods[..] {
                    out.push((a, size, align, [w, wv, fl]));
                }
            }
            a += 8;
        }
        out
    }
}

/// "0.23.48" → 23.
fn minor(version: &str) -> Option<u32> {
    let mut parts = version.split('.');
    (parts.next()? == "0").then_some(())?;
    parts.next()?.parse().ok()
}

fn hexes(addresses: &[u64]) -> String {
    addresses.iter().map(|a| format!("{a:#x}")).collect::<Vec<_>>().join(" ")
}

/// The bytes of function (start, len), from the code section that holds it.
fn code_at<'a>(text: &[(u64, &'a [u8])], start: u64, len: u64) -> Option<&'a [u8]> {
    let (base, code) = text.iter().find(|(b, c)| *b <= start && start + len <= b + c.len() as u64)?;
    let o = usize::try_from(start - base).ok()?;
    code.get(o..o + usize::try_from(len).ok()?)
}

/// rustls's panic Locations: a relocated pointer into a read-only section
/// to "…/rustls-X.Y.Z/src/F.rs", then its length (`{ file, line, col }`).
fn locations(obj: &object::File, relocated: &HashMap<u64, u64>) -> HashMap<u64, Loc> {
    let sections: Vec<(u64, &[u8])> = obj
        .sections()
        .filter(|s| s.address() != 0)
        .filter_map(|s| Some((s.address(), s.data().ok()?)))
        .collect();
    let bytes = |addr: u64, n: u64| -> Option<&[u8]> {
        let (b, d) = sections.iter().find(|(b, d)| *b <= addr && addr + n <= b + d.len() as u64)?;
        d.get(usize::try_from(addr - b).ok()?..usize::try_from(addr - b + n).ok()?)
    };
    let mut out = HashMap::new();
    for (&slot, &target) in relocated {
        let Some(len) = bytes(slot + 8, 8).and_then(|w| Some(u64::from_le_bytes(w.try_into().ok()?))) else {
            continue;
        };
        if len == 0 || len > 512 {
            continue;
        }
        let Some(path) = bytes(target, len).and_then(|p| std::str::from_utf8(p).ok()) else { continue };
        if let Some(loc) = rustls_path(path) {
            out.insert(slot, loc);
        }
    }
    out
}

/// The crate version and source file of a rustls path
/// ("…/rustls-0.23.48/src/msgs/deframer/buffers.rs"); not rustls-webpki's
/// or rustls-pki-types', whose Locations every rustls program has too.
fn rustls_path(path: &str) -> Option<Loc> {
    if !path.ends_with(".rs") {
        return None;
    }
    let i = path.rfind("/rustls-")?;
    let rest = &path[i + "/rustls-".len()..];
    let (version, file) = rest.split_once("/src/")?;
    if !version.starts_with(|c: char| c.is_ascii_digit())
        || !version.chars().all(|c| c.is_ascii_digit() || c == '.')
    {
        return None;
    }
    Some(Loc { version: version.to_string(), file: file.to_string() })
}

/// Every address a `lea` to one of the messages may have: its first byte,
/// or up to 2 bytes before it (a fmt template's length byte).
fn messages(obj: &object::File) -> HashMap<u64, Msg> {
    let mut out = HashMap::new();
    for s in
        obj.sections().filter(|s| matches!(s.kind(), SectionKind::ReadOnlyData | SectionKind::ReadOnlyString))
    {
        let Ok(data) = s.data() else { continue };
        for (msg, text) in MESSAGES {
            for i in memchr::memmem::find_iter(data, text) {
                for back in 0..=2u64 {
                    if let Some(a) = (s.address() + i as u64).checked_sub(back) {
                        out.insert(a, msg);
                    }
                }
            }
        }
    }
    out
}

/// What function `start` (its `code`) references, calls and computes.
fn summarize(
    code: &[u8],
    start: u64,
    starts: &BTreeSet<u64>,
    relocated: &HashMap<u64, u64>,
    locs: &HashMap<u64, Loc>,
    messages: &HashMap<u64, Msg>,
) -> Summary {
    let end = start + code.len() as u64;
    let mut s = Summary { len: code.len() as u64, ..Summary::default() };
    let mut first: Vec<Instruction> = Vec::with_capacity(2);
    for ins in Decoder::with_ip(64, code, start, DecoderOptions::NONE) {
        if first.len() < 2 {
            first.push(ins);
        }
        let flow = ins.flow_control();
        let branch = matches!(
            flow,
            FlowControl::Call
                | FlowControl::UnconditionalBranch
                | FlowControl::IndirectCall
                | FlowControl::IndirectBranch
        );
        match ins.mnemonic() {
            Mnemonic::Sub if ins.op0_register() == Register::RSP && is_immediate(ins.op1_kind()) => {
                s.frame = s.frame.max(ins.immediate(1));
            }
            Mnemonic::Cmp
                if ins.op_count() == 2 && is_immediate(ins.op1_kind()) && ins.immediate(1) == 0x40 =>
            {
                s.cmp64 = true;
            }
            Mnemonic::Mov if ins.op1_kind() == OpKind::Immediate64 => {
                let imm = ins.immediate64();
                if imm & 0xffff_ffff == 3 && imm >> 32 != 0 {
                    s.simple_errors.insert(imm);
                }
            }
            _ => {}
        }
        if ins.is_ip_rel_memory_operand() {
            let t = ins.ip_rel_memory_address();
            if ins.mnemonic() == Mnemonic::Lea {
                if locs.contains_key(&t) {
                    s.locs.push(t);
                }
                if let Some(m) = messages.get(&t) {
                    s.msgs.insert(*m);
                }
            } else if branch || ins.mnemonic() == Mnemonic::Mov {
                // A call through a GOT slot, or its address loaded for a `call reg`.
                if let Some(f) = relocated.get(&t).filter(|f| starts.contains(f)) {
                    s.calls.insert(*f);
                }
            }
            continue;
        }
        if branch && ins.op0_kind() == OpKind::Memory && ins.memory_base() != Register::None {
            s.slots.insert(ins.memory_displacement64());
        }
        if matches!(flow, FlowControl::Call | FlowControl::UnconditionalBranch)
            && matches!(ins.op0_kind(), OpKind::NearBranch64)
        {
            let t = ins.near_branch_target();
            if !(start..end).contains(&t) {
                s.calls.insert(t);
            }
        }
    }
    s.ok_unit = matches!(first.as_slice(), [x, r] if x.mnemonic() == Mnemonic::Xor
        && x.op0_register() == Register::EAX && x.op1_register() == Register::EAX
        && r.mnemonic() == Mnemonic::Ret);
    s
}

fn is_immediate(kind: OpKind) -> bool {
    matches!(
        kind,
        OpKind::Immediate8
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate32to64
            | OpKind::Immediate64
    )
}

/// Whether found function `f` of `data` (x86_64) takes what the probes of
/// its role read: the `Reader` roles first load their `&Reader` (`rdi`;
/// `into_first_chunk`'s is `rsi`, after the return slot) at offset 0.
/// Other roles are not checked here.
pub fn takes_reader(data: &[u8], f: &Found) -> bool {
    let arg = match f.role {
        Role::Consume | Role::PlaintextRead => Register::RDI,
        Role::FirstChunk => Register::RSI,
        _ => return true,
    };
    let start = f.offset as usize;
    let code = data.get(start..data.len().min(start + 0x400)).unwrap_or_default();
    derefs_first(code, f.offset, arg)
}

/// Whether the first memory operand based on `arg` (or a 64-bit register
/// `mov`ed from it) in the first 64 instructions is a plain load `mov r,
/// [reg]`.
fn derefs_first(code: &[u8], ip: u64, arg: Register) -> bool {
    let mut alias = vec![arg];
    for ins in Decoder::with_ip(64, code, ip, DecoderOptions::NONE).into_iter().take(64) {
        let memory = (0..ins.op_count()).any(|i| ins.op_kind(i) == OpKind::Memory);
        if memory && alias.contains(&ins.memory_base()) && ins.memory_index() == Register::None {
            return ins.mnemonic() == Mnemonic::Mov
                && ins.op0_kind() == OpKind::Register
                && ins.memory_displacement64() == 0;
        }
        if ins.mnemonic() == Mnemonic::Mov
            && ins.op0_kind() == OpKind::Register
            && ins.op1_kind() == OpKind::Register
            && alias.contains(&ins.op1_register())
        {
            alias.push(ins.op0_register());
            continue;
        }
        let keeps = matches!(
            ins.mnemonic(),
            Mnemonic::Cmp | Mnemonic::Test | Mnemonic::Push | Mnemonic::Call | Mnemonic::Jmp
        );
        if ins.op_count() > 0 && ins.op0_kind() == OpKind::Register && !keeps {
            let r = ins.op0_register().full_register();
            alias.retain(|a| a.full_register() != r);
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::rustls_find::locate as locate_file;
    use std::path::PathBuf;

    /// The rustls test peer's directory (`$NETTAP_RUSTLSPEER`, else the
    /// cache ci/install-rustls-peer.sh builds it in).
    fn peer_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("NETTAP_RUSTLSPEER") {
            return PathBuf::from(dir);
        }
        let cache = PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/nettap/rustlspeer");
        std::fs::read_dir(&cache)
            .into_iter()
            .flatten()
            .flatten()
            .map(|d| d.path())
            .find(|d| d.join("rustlspeer").exists() && d.join("rustlspeer-stripped").exists())
            .unwrap_or_else(|| {
                panic!("no rustls peer under {}: ci/install-rustls-peer.sh builds it", cache.display())
            })
    }

    fn read(name: &str) -> Vec<u8> {
        let path = peer_dir().join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}: ci/install-rustls-peer.sh", path.display()))
    }

    fn roles(located: &Located) -> BTreeSet<(Role, u64)> {
        match located {
            Located::Found { functions, missing, .. } => {
                assert!(missing.is_empty(), "{missing:?}");
                functions.iter().map(|f| (f.role, f.offset)).collect()
            }
            other => panic!("not found: {other:?}"),
        }
    }

    /// The CI peer (rustls 0.21.12, 0.22.4, 0.23.48; tokio-rustls, ureq):
    /// its stripped copy gives exactly what the symbols give (19 functions).
    ///
    /// Builds of the same program made for the research (not in CI, so not
    /// tested here), checked once against their unstripped copies:
    /// `opt-level = "z"` + `codegen-units = 1` + `panic = "abort"`: the
    /// same 19 (role, offset) as its symbols; fat LTO and thin LTO:
    /// refused (misshapen deframer reads / `Reader::read` candidates, and
    /// `consume` candidates failing the argument check), nothing wrong;
    /// arm64: refused (x86_64 only).
    #[test]
    fn stripped_peer_gives_what_its_symbols_give() {
        let with_symbols = locate_file(&read("rustlspeer")).unwrap();
        let t = std::time::Instant::now();
        let stripped = locate_file(&read("rustlspeer-stripped")).unwrap();
        eprintln!("stripped peer: {stripped:#x?} in {:?}", t.elapsed());
        let want = roles(&with_symbols);
        assert_eq!(want.len(), 19);
        assert_eq!(roles(&stripped), want);
        let (Located::Found { versions: a, .. }, Located::Found { versions: b, .. }) =
            (&with_symbols, &stripped)
        else {
            unreachable!()
        };
        assert_eq!(a, b);
    }

    /// A stripped executable without rustls: nothing.
    #[test]
    fn no_rustls_gives_nothing() {
        let data = std::fs::read("/bin/ls").unwrap();
        assert_eq!(locate_file(&data).unwrap(), Located::Absent);
        // Even asked directly, no Location: refused, no function.
        let got = locate(&data, Vec::new());
        assert!(
            matches!(&got, Located::Stripped { reason, .. } if reason.contains("no rustls panic Location")),
            "{got:?}"
        );
    }

    /// The stripped peer with 0.23's consume message overwritten: Consume
    /// is not found, so into_first_chunk and Reader::read (both use the EOF
    /// message) cannot be told apart, and the file is refused.
    #[test]
    fn a_lost_anchor_refuses_rather_than_guesses() {
        let mut data = read("rustlspeer-stripped");
        let at = memchr::memmem::find(&data, b"illegal `BufRead::consume` usage").expect("the message");
        data[at..at + 7].copy_from_slice(b"xxxxxxx");
        let got = locate_file(&data).unwrap();
        match &got {
            Located::Stripped { reason, versions } => {
                assert!(reason.contains("cannot be told from into_first_chunk"), "{reason}");
                assert!(versions.contains(&"0.23.48".to_string()));
            }
            other => panic!("not refused: {other:?}"),
        }
    }

    /// The argument check on hand-made code: what separates
    /// `<Reader as BufRead>::consume` from `consume_first_chunk` (thin LTO)
    /// and from an LTO-promoted `consume` (fat LTO).
    #[test]
    fn a_found_reader_role_must_take_a_reader() {
        let f = |role| Found { role, offset: 0, name: String::new() };
        // mov [rdi], rax: a store first, not a load of the Reader's first field
        let store = [0x48, 0x89, 0x07, 0xc3];
        assert!(!takes_reader(&store, &f(Role::Consume)));
        assert!(!takes_reader(&store, &f(Role::PlaintextRead)));
        assert!(takes_reader(&store, &f(Role::TlsWrite)), "not a Reader role");
        // mov rax, [rsi]: into_first_chunk's Reader is its second argument
        let load_rsi = [0x48, 0x8b, 0x06, 0xc3];
        assert!(takes_reader(&load_rsi, &f(Role::FirstChunk)));
        assert!(!takes_reader(&load_rsi, &f(Role::Consume)));
    }

    #[test]
    fn arguments_are_checked_on_the_first_load() {
        let base = 0x1000;
        // mov rax, [rdi]; ret
        assert!(derefs_first(&[0x48, 0x8b, 0x07, 0xc3], base, Register::RDI));
        // mov rax, [rdi+0x28]; ret: a ChunkVecBuffer, not a Reader
        assert!(!derefs_first(&[0x48, 0x8b, 0x47, 0x28, 0xc3], base, Register::RDI));
        // mov rbx, rdi; mov rax, [rbx]
        assert!(derefs_first(&[0x48, 0x89, 0xfb, 0x48, 0x8b, 0x03], base, Register::RDI));
        // mov rdi, rsi; mov rax, [rdi]: rdi no longer the argument
        assert!(!derefs_first(&[0x48, 0x89, 0xf7, 0x48, 0x8b, 0x07], base, Register::RDI));
        // mov [rdi], rax: a store first
        assert!(!derefs_first(&[0x48, 0x89, 0x07], base, Register::RDI));
    }

    #[test]
    fn rustls_paths_not_its_sibling_crates() {
        let loc = rustls_path("/r/.cargo/registry/src/index-1/rustls-0.23.48/src/msgs/deframer/buffers.rs")
            .unwrap();
        assert_eq!((loc.version.as_str(), loc.file.as_str()), ("0.23.48", "msgs/deframer/buffers.rs"));
        assert_eq!(rustls_path("/r/rustls-webpki-0.102.8/src/der.rs"), None);
        assert_eq!(rustls_path("/r/rustls-pki-types-1.16.0/src/lib.rs"), None);
        assert_eq!(rustls_path("/r/rustls-0.23.48/src/conn.txt"), None);
        assert_eq!(minor("0.21.12"), Some(21));
        assert_eq!(minor("1.0.0"), None);
    }
}
