//! Where `SSL_read`, `SSL_write` and `SSL_do_handshake` are in an x86_64 ELF
//! file that has BoringSSL linked in statically and no symbols for them
//! (gRPC's Python wheel: `cygrpc.cpython-*.so` has no `.symtab` and exports
//! no `SSL_*`; a stripped program with BoringSSL linked in, see
//! `boringssl_static`). Nothing here attaches anything: it reads bytes and
//! names addresses, or says why it will not.
//!
//! The anchor is BoringSSL's error reporting. `OPENSSL_PUT_ERROR(SSL, r)` is
//! `ERR_put_error(ERR_LIB_SSL, 0, r, __FILE__, __LINE__)`, so every report in
//! `ssl/ssl_lib.cc` is a call with the path string's address in `rcx`
//! (a RIP-relative `lea`), the reason in `edx` and the line in `r8d`, all
//! immediates. Those call sites are collected per function (function bounds
//! from `.eh_frame`, which stripping keeps), and the functions are told
//! apart by what they rely on, in this order of trust:
//!
//! - reasons, public constants of `ssl.h`/`err.h` that do not change between
//!   versions (`ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED`, `SSL_R_UNINITIALIZED`,
//!   `SSL_R_SSL_HANDSHAKE_FAILURE`, `SSL_R_CONNECTION_TYPE_NOT_SET`);
//! - the order of the checks inside one function (line numbers compared
//!   with each other, never with a number of a given release);
//! - the call graph: `SSL_read` is `SSL_peek` (which it inlines) plus
//!   consuming what was read, `SSL_write` and `ssl_read_impl` call
//!   `SSL_do_handshake`.
//!
//! Concretely (`ssl_lib.cc` has this shape from Android 13's BoringSSL of
//! 2022 to BoringSSL's 2026 source; the compiled shape is tested on
//! Android 13's build, on grpcio 1.68.1's, a BoringSSL of mid 2024, and on
//! the `boring` crate 5.4.0's, built by boring-sys with gcc 12 -O3 into a
//! Rust program (against its own symbol table), and was checked by hand on
//! grpcio's BoringSSL's libssl built with gcc 12 and clang 19 at -O2 and -Os):
//! - `SSL_write` reports QUIC misuse (`ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED`),
//!   then `SSL_R_UNINITIALIZED`, then `SSL_R_SSL_HANDSHAKE_FAILURE`, in that
//!   source order; `SSL_key_update` has the first two the other way round,
//!   `ssl_read_impl` has no QUIC check.
//! - `ssl_read_impl` (static) reports `SSL_R_UNINITIALIZED` then
//!   `SSL_R_SSL_HANDSHAKE_FAILURE` and no QUIC misuse.
//! - `SSL_peek` reports QUIC misuse and calls `ssl_read_impl`; `SSL_read`
//!   inlines `SSL_peek` (the same report, same line) and calls everything
//!   `SSL_peek` calls and more (`SSLBuffer::DiscardConsumed`), or, where
//!   it does not inline it (gcc), is `SSL_peek`'s only caller, lying among
//!   `ssl_lib.cc`'s functions and reporting nothing itself; or, where a
//!   static link dropped `SSL_peek` (the `boring` crate's BoringSSL, gcc
//!   -O3), is the one function of that shape, called from outside
//!   `ssl_lib.cc` only and alone in reporting from that line.
//! - `SSL_do_handshake` reports `SSL_R_CONNECTION_TYPE_NOT_SET`; of the
//!   functions that do (`SSL_connect` and `SSL_accept` may inline it), it is
//!   the one `SSL_write` or `ssl_read_impl` calls.
//!
//! Each of these must pick exactly one function; none or several is an
//! error naming the function and the evidence that did not single it out,
//! so another version's or compiler's code shape is refused, not guessed.
//! Calls through the PLT (a library that exports its functions, like
//! Android's `libssl.so`) are followed to the definition in the same file
//! through their GOT slot's relocation; no symbol is looked up by name.
//!
//! `bio_pair` finds the other side of the ciphertext: gRPC gives its `SSL`
//! a BIO pair (`BIO_new_bio_pair`), so the records `SSL_write` produces are
//! taken out, and the records received are put in, through the pair's
//! `bio_read` and `bio_write` (crypto/bio/pair.c, static). Their addresses
//! are in the pair's `BIO_METHOD` table, the one whose name field points at
//! the string `"BIO pair"` and whose type is `BIO_TYPE_BIO`.

use super::elf::{file_offset, unwind_functions};
use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind, Register};
use object::{Object, ObjectSection, ObjectSymbol, ObjectSymbolTable, RelocationTarget, SectionKind};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// How the path of `ssl_lib.cc` ends, whatever the build's source root
/// (`third_party/boringssl-with-bazel/src/` in gRPC, `src/` in Android),
/// stored reversed: as a literal, the linker may put it between two NULs,
/// and nettap's own files would then be taken for BoringSSL (seen: a
/// change of optimisation levels moved it there).
const SOURCE_SUFFIX_REVERSED: &[u8] = b"cc.bil_lss/lss";

/// `ssl/ssl_lib.cc`, made at run time (see `SOURCE_SUFFIX_REVERSED`).
pub fn source_suffix() -> Vec<u8> {
    SOURCE_SUFFIX_REVERSED.iter().rev().copied().collect()
}

/// `ERR_LIB_SSL` (err.h).
const ERR_LIB_SSL: u64 = 16;
/// `ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED` (err.h: `2 | ERR_R_FATAL`).
const SHOULD_NOT_HAVE_BEEN_CALLED: u32 = 66;
/// `SSL_R_CONNECTION_TYPE_NOT_SET` (ssl.h).
const CONNECTION_TYPE_NOT_SET: u32 = 134;
/// `SSL_R_SSL_HANDSHAKE_FAILURE` (ssl.h).
const SSL_HANDSHAKE_FAILURE: u32 = 215;
/// `SSL_R_UNINITIALIZED` (ssl.h).
const UNINITIALIZED: u32 = 226;

/// `BIO_TYPE_BIO` (bio.h: `19 | BIO_TYPE_SOURCE_SINK`), a BIO pair's type.
const BIO_TYPE_BIO: u64 = 0x413;
/// The name in the BIO pair's `BIO_METHOD` (crypto/bio/pair.c).
const BIO_PAIR_NAME: &[u8] = b"BIO pair";

/// Why the functions were not found.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// Not a parsable object file.
    #[error("not an ELF object: {0}")]
    Parse(#[from] object::Error),
    /// Only x86_64 code is read.
    #[error("BoringSSL's functions are only looked for in x86_64 code")]
    Architecture,
    /// No string ends in `ssl/ssl_lib.cc`.
    #[error("no BoringSSL ssl/ssl_lib.cc path string: no BoringSSL libssl in this file")]
    NoSource,
    /// No `.eh_frame`, so no function bounds.
    #[error("no unwind tables (.eh_frame): function bounds unknown")]
    NoUnwindTables,
    /// The path is there but no code reports an error with it.
    #[error("no ERR_put_error call with the ssl_lib.cc path: the code shape is unknown")]
    NoSites,
    /// No string `"BIO pair"`.
    #[error("no \"BIO pair\" string: no BoringSSL BIO pair in this file")]
    NoBioPair,
    /// The evidence picks out no function, or several, for `function`.
    #[error("{count} candidates for {function} ({evidence}; exactly one expected): {candidates:x?}")]
    Candidates {
        /// The function looked for.
        function: &'static str,
        /// How many functions fit.
        count: usize,
        /// What a function had to show to fit.
        evidence: &'static str,
        /// Their addresses (the first few).
        candidates: Vec<u64>,
    },
}

/// One function found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Its link-time address (as in `readelf`).
    pub address: u64,
    /// Its file offset (where a uprobe attaches).
    pub offset: u64,
}

/// The functions of BoringSSL's libssl found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The path of `ssl_lib.cc` as the file stores it.
    pub source: String,
    /// `SSL_read`.
    pub ssl_read: Entry,
    /// `SSL_write`.
    pub ssl_write: Entry,
    /// `SSL_peek` (what `SSL_read` was told apart from); `None` where it is
    /// only inlined into `SSL_read` (a static link dropped the unused copy).
    pub ssl_peek: Option<Entry>,
    /// `SSL_do_handshake`.
    pub ssl_do_handshake: Entry,
}

/// One `OPENSSL_PUT_ERROR` in `ssl_lib.cc`, as compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    /// The reason code.
    pub reason: u32,
    /// The source line.
    pub line: u32,
}

/// A function (bounds from `.eh_frame`) that reports errors from `ssl_lib.cc`.
#[derive(Debug, Clone)]
pub struct Reporter {
    /// Its first byte's address.
    pub start: u64,
    /// Its length in bytes.
    pub len: u64,
    /// Its reports, in code order.
    pub sites: Vec<Site>,
    /// The functions it calls directly (PLT stubs followed to their target).
    pub calls: BTreeSet<u64>,
}

impl Reporter {
    fn has(&self, reason: u32) -> bool {
        self.sites.iter().any(|s| s.reason == reason)
    }

    /// The first line reporting `reason`.
    fn line(&self, reason: u32) -> Option<u32> {
        self.sites.iter().filter(|s| s.reason == reason).map(|s| s.line).min()
    }
}

/// What the file holds of `ssl_lib.cc`: the path string and every function
/// that reports an error from it, by start address.
#[derive(Debug)]
pub struct Reporters {
    /// The path as stored.
    pub source: String,
    /// The reporting functions.
    pub functions: BTreeMap<u64, Reporter>,
}

/// Finds `SSL_read`, `SSL_write`, `SSL_peek` and `SSL_do_handshake` in `data`.
pub fn find(data: &[u8]) -> Result<Found, FindError> {
    let obj = object::File::parse(data)?;
    let (reporters, code) = analyse(&obj)?;
    let fns = &reporters.functions;
    let candidates = |function, evidence, found: Vec<&Reporter>| match found.as_slice() {
        [one] => Ok(one.start),
        _ => Err(FindError::Candidates {
            function,
            count: found.len(),
            evidence,
            candidates: found.iter().take(8).map(|r| r.start).collect(),
        }),
    };

    // QUIC misuse, then uninitialized, then handshake failure, in source order.
    let write = candidates(
        "SSL_write",
        "reports QUIC misuse, then SSL_R_UNINITIALIZED, then SSL_R_SSL_HANDSHAKE_FAILURE",
        fns.values()
            .filter(|r| {
                match (
                    r.line(SHOULD_NOT_HAVE_BEEN_CALLED),
                    r.line(UNINITIALIZED),
                    r.line(SSL_HANDSHAKE_FAILURE),
                ) {
                    (Some(a), Some(b), Some(c)) => a < b && b < c,
                    _ => false,
                }
            })
            .collect(),
    )?;
    let read_impl = candidates(
        "ssl_read_impl",
        "reports SSL_R_UNINITIALIZED, then SSL_R_SSL_HANDSHAKE_FAILURE, and no QUIC misuse",
        fns.values()
            .filter(|r| match (r.line(UNINITIALIZED), r.line(SSL_HANDSHAKE_FAILURE)) {
                (Some(b), Some(c)) => b < c && !r.has(SHOULD_NOT_HAVE_BEEN_CALLED),
                _ => false,
            })
            .collect(),
    )?;
    // SSL_peek and SSL_read (which inlines SSL_peek): the same QUIC check, and a call to ssl_read_impl.
    let peeks: Vec<&Reporter> =
        fns.values().filter(|r| r.has(SHOULD_NOT_HAVE_BEEN_CALLED) && r.calls.contains(&read_impl)).collect();
    let (read, peek) = match peeks.as_slice() {
        [a, b] if a.line(SHOULD_NOT_HAVE_BEEN_CALLED) == b.line(SHOULD_NOT_HAVE_BEEN_CALLED) => {
            if a.calls.is_superset(&b.calls) && a.calls.len() > b.calls.len() {
                (a.start, Some(b.start))
            } else if b.calls.is_superset(&a.calls) && b.calls.len() > a.calls.len() {
                (b.start, Some(a.start))
            } else {
                return Err(FindError::Candidates {
                    function: "SSL_read",
                    count: 2,
                    evidence: "calls all that SSL_peek calls and more",
                    candidates: vec![a.start, b.start],
                });
            }
        }
        // One function alone has that shape: either SSL_peek, which SSL_read calls (gcc -O2
        // does not inline it): SSL_read is then its only caller, compiled in ssl_lib.cc (within
        // the span of its reporting functions: not bio_ssl.cc's or the application's code) and
        // reporting nothing itself. Or SSL_read with SSL_peek inlined, where a static link
        // dropped SSL_peek itself (nothing called it; gcc -O3 in boring-sys): then nothing in
        // ssl_lib.cc calls it (only the application does), and no other function reports from
        // its QUIC check's line, as another copy of SSL_peek's code would (a changed SSL_read
        // beside a real SSL_peek is refused so).
        [only] => {
            let span = fns.values().map(|r| r.start).min().unwrap_or(0)
                ..fns.values().map(|r| r.start.saturating_add(r.len)).max().unwrap_or(0);
            let callers = code.callers(only.start);
            let quic_line = only.line(SHOULD_NOT_HAVE_BEEN_CALLED);
            let line_is_its_own = fns
                .values()
                .filter(|r| r.start != only.start)
                .all(|r| r.sites.iter().all(|s| Some(s.line) != quic_line));
            match callers.iter().collect::<Vec<_>>()[..] {
                [&read] if span.contains(&read) && !fns.contains_key(&read) => (read, Some(only.start)),
                ref outside if outside.iter().all(|c| !span.contains(c)) && line_is_its_own => {
                    (only.start, None)
                }
                _ => {
                    return Err(FindError::Candidates {
                        function: "SSL_read",
                        count: callers.len(),
                        evidence: "the only caller of SSL_peek (which is not inlined), within ssl_lib.cc's code and reporting no error there; or, called from outside ssl_lib.cc only and alone in reporting from its line, SSL_read itself",
                        candidates: callers.into_iter().take(8).collect(),
                    })
                }
            }
        }
        _ => {
            return Err(FindError::Candidates {
                function: "SSL_read",
                count: peeks.len(),
                evidence: "SSL_peek, and SSL_read where it inlines SSL_peek: QUIC misuse at one line and a call to ssl_read_impl",
                candidates: peeks.iter().take(8).map(|r| r.start).collect(),
            })
        }
    };
    // SSL_R_CONNECTION_TYPE_NOT_SET: SSL_do_handshake, and SSL_connect/SSL_accept where they
    // inline it; the one SSL_write or ssl_read_impl calls.
    let callers = [&fns[&write], &fns[&read_impl]];
    let handshake = candidates(
        "SSL_do_handshake",
        "reports SSL_R_CONNECTION_TYPE_NOT_SET and is called by SSL_write or ssl_read_impl",
        fns.values()
            .filter(|r| r.has(CONNECTION_TYPE_NOT_SET) && callers.iter().any(|c| c.calls.contains(&r.start)))
            .collect(),
    )?;

    let entry = |address| Entry { address, offset: file_offset(&obj, address).unwrap_or(address) };
    Ok(Found {
        source: reporters.source,
        ssl_read: entry(read),
        ssl_write: entry(write),
        ssl_peek: peek.map(entry),
        ssl_do_handshake: entry(handshake),
    })
}

/// The two halves of a BoringSSL BIO pair's I/O, from its method table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BioPair {
    /// The link-time address of the `BIO_METHOD` table (`methods_biop`).
    pub methods: u64,
    /// `bio_write(BIO *bio, const char *buf, int num)`: bytes put into `bio`'s half.
    pub bio_write: Entry,
    /// `bio_read(BIO *bio, char *buf, int size)`: bytes taken out of `bio`'s half.
    pub bio_read: Entry,
}

/// Finds the BIO pair's `bio_read` and `bio_write` in `data`: the table is
/// the one that has `BIO_TYPE_BIO` in its first field (`int type`), a
/// pointer to `"BIO pair"` in its second, code addresses in the third
/// (`bwrite`) and fourth (`bread`), and no `bputs` or `bgets` (bio.h's
/// `struct bio_method_st`: OpenSSL 1.0's layout, which BoringSSL kept and
/// OpenSSL 1.1 changed, so OpenSSL's own "BIO pair" does not fit). Pointers are read
/// from the dynamic relocations (a shared object) or from the file (an
/// executable linked at a fixed address).
pub fn bio_pair(data: &[u8]) -> Result<BioPair, FindError> {
    let obj = object::File::parse(data)?;
    if obj.architecture() != object::Architecture::X86_64 {
        return Err(FindError::Architecture);
    }
    // The name field points at these bytes exactly, whatever precedes them.
    let mut needle = BIO_PAIR_NAME.to_vec();
    needle.push(0);
    let names: Vec<u64> = read_only_data(&obj)
        .into_iter()
        .flat_map(|(base, bytes)| {
            memchr::memmem::find_iter(bytes, &needle).map(move |i| base + i as u64).collect::<Vec<_>>()
        })
        .collect();
    if names.is_empty() {
        return Err(FindError::NoBioPair);
    }
    let relocated = super::elf::relative_pointers(&obj);
    let word = |at: u64| -> Option<u64> {
        relocated.get(&at).copied().or_else(|| {
            let off = file_offset(&obj, at)? as usize;
            Some(u64::from_le_bytes(data.get(off..off + 8)?.try_into().ok()?))
        })
    };
    let is_code = |a: u64| {
        obj.sections().any(|s| {
            s.kind() == SectionKind::Text && s.address() <= a && a < s.address().saturating_add(s.size())
        })
    };
    // Every word that points at the name, relocated or written in the file.
    let mut name_words: Vec<u64> =
        relocated.iter().filter(|(_, v)| names.contains(v)).map(|(&at, _)| at).collect();
    for sec in obj.sections().filter(|s| matches!(s.kind(), SectionKind::Data | SectionKind::ReadOnlyData)) {
        let Ok(bytes) = sec.data() else { continue };
        if sec.address() % 8 != 0 {
            continue; // the table is a struct of pointers: 8-aligned
        }
        for (i, w) in bytes.as_chunks::<8>().0.iter().enumerate() {
            if names.contains(&u64::from_le_bytes(*w)) {
                name_words.push(sec.address() + 8 * i as u64);
            }
        }
    }
    name_words.sort_unstable();
    name_words.dedup();
    let tables: Vec<(u64, u64, u64)> = name_words
        .iter()
        .filter_map(|&name_at| {
            let table = name_at.checked_sub(8)?;
            let type_ok = word(table)? & 0xffff_ffff == BIO_TYPE_BIO;
            let field = |i: u64| word(table.checked_add(8 * i)?);
            let (bwrite, bread) = (field(2)?, field(3)?);
            let no_puts_gets = field(4)? == 0 && field(5)? == 0;
            let ok = type_ok && no_puts_gets && bwrite != bread && is_code(bwrite) && is_code(bread);
            ok.then_some((table, bwrite, bread))
        })
        .collect();
    let [(methods, bwrite, bread)] = tables[..] else {
        return Err(FindError::Candidates {
            function: "the BIO pair's BIO_METHOD",
            count: tables.len(),
            evidence: "type BIO_TYPE_BIO, name \"BIO pair\", bwrite and bread in code, no bputs or bgets",
            candidates: tables.iter().take(8).map(|t| t.0).collect(),
        });
    };
    let entry = |address| Entry { address, offset: file_offset(&obj, address).unwrap_or(address) };
    Ok(BioPair { methods, bio_write: entry(bwrite), bio_read: entry(bread) })
}

/// Every function of `obj` that reports an error from `ssl_lib.cc`.
pub fn reporters(obj: &object::File) -> Result<Reporters, FindError> {
    analyse(obj).map(|(reporters, _)| reporters)
}

/// The reporting functions and the file's code, the path string looked for
/// first (most files have none, and are then left before their unwind
/// tables are read).
fn analyse<'a>(obj: &object::File<'a>) -> Result<(Reporters, Code<'a>), FindError> {
    if obj.architecture() != object::Architecture::X86_64 {
        return Err(FindError::Architecture);
    }
    let sources = Sources::new(obj);
    if sources.0.is_empty() {
        return Err(FindError::NoSource);
    }
    let code = Code::new(obj);
    if code.bounds.is_empty() {
        return Err(FindError::NoUnwindTables);
    }
    let mut functions = BTreeMap::new();
    let mut source = None;
    for &(base, bytes) in &code.text {
        for (at, path) in lea_rip(bytes, base, |target| sources.path_at(target)) {
            let Some((start, len)) = code.containing(at) else { continue };
            if functions.contains_key(&start) {
                continue;
            }
            let instrs = code.decode(start, len);
            let sites = sites(&instrs, &sources);
            if sites.is_empty() {
                continue;
            }
            let calls = instrs.iter().filter_map(|i| code.call_target(i)).collect();
            functions.insert(start, Reporter { start, len, sites, calls });
            source.get_or_insert_with(|| String::from_utf8_lossy(path).into_owned());
        }
    }
    match source {
        Some(source) => Ok((Reporters { source, functions }, code)),
        None => Err(FindError::NoSites),
    }
}

/// The file's x86_64 code: its text sections, the function bounds of its
/// unwind tables and its PLT.
struct Code<'a> {
    /// (address, bytes) of every text section.
    text: Vec<(u64, &'a [u8])>,
    /// (start, length) of every function, sorted.
    bounds: Vec<(u64, u64)>,
    plt: Plt<'a>,
}

impl<'a> Code<'a> {
    fn new(obj: &object::File<'a>) -> Self {
        let text = obj
            .sections()
            .filter(|s| s.kind() == SectionKind::Text)
            .filter_map(|s| Some((s.address(), s.data().ok()?)))
            .collect();
        Code { text, bounds: unwind_functions(obj), plt: Plt::new(obj) }
    }

    /// The function that holds address `at`.
    fn containing(&self, at: u64) -> Option<(u64, u64)> {
        let i = self.bounds.partition_point(|&(s, _)| s <= at);
        let &(start, len) = self.bounds.get(i.checked_sub(1)?)?;
        (at < start.saturating_add(len)).then_some((start, len))
    }

    /// The instructions of the function at `start`, `len` bytes long.
    fn decode(&self, start: u64, len: u64) -> Vec<Instruction> {
        let Some(&(base, bytes)) = self.text.iter().find(|(a, b)| *a <= start && start < a + b.len() as u64)
        else {
            return Vec::new();
        };
        let from = (start - base) as usize;
        let bytes = &bytes[from..from.saturating_add(len as usize).min(bytes.len())];
        Decoder::with_ip(64, bytes, start, DecoderOptions::NONE).into_iter().collect()
    }

    /// Where a direct call goes (through a PLT stub to its definition).
    fn call_target(&self, i: &Instruction) -> Option<u64> {
        (i.mnemonic() == Mnemonic::Call && i.op0_kind() == OpKind::NearBranch64)
            .then(|| self.plt.resolve(i.near_branch_target()))
    }

    /// The functions that call `target` directly: a byte scan for `call
    /// rel32` (e8) landing on it or on a PLT stub of it, each confirmed by
    /// decoding its function from the start.
    fn callers(&self, target: u64) -> BTreeSet<u64> {
        let mut out = BTreeSet::new();
        for &(base, bytes) in &self.text {
            for i in memchr::memchr_iter(0xe8, bytes) {
                let Some(rel) = bytes.get(i + 1..i + 5) else { continue };
                let rel = i32::from_le_bytes([rel[0], rel[1], rel[2], rel[3]]) as i64;
                let at = base + i as u64;
                let dest = (at as i64 + 5).wrapping_add(rel) as u64;
                if dest != target && self.plt.resolve(dest) != target {
                    continue;
                }
                let Some((start, len)) = self.containing(at) else { continue };
                if out.contains(&start) {
                    continue;
                }
                let calls = self.decode(start, len);
                if calls.iter().any(|c| c.ip() == at && self.call_target(c) == Some(target)) {
                    out.insert(start);
                }
            }
        }
        out
    }
}

/// The copies of `ssl_lib.cc`'s path in read-only data (one per copy of
/// BoringSSL), each as the run of printable bytes that ends with
/// `ssl/ssl_lib.cc` and a NUL, and the address of the run's first byte.
/// Where the path starts is what the code loads: clang packs strings right
/// after binary constants, so the byte before one need not be a NUL, and a
/// printable byte there would join the run.
struct Sources<'a>(Vec<(u64, &'a [u8])>);

impl<'a> Sources<'a> {
    fn new(obj: &object::File<'a>) -> Self {
        let suffix = source_suffix();
        let mut needle = suffix.clone();
        needle.push(0);
        let mut out = Vec::new();
        for (base, bytes) in read_only_data(obj) {
            for end in memchr::memmem::find_iter(bytes, &needle) {
                let end = end + suffix.len();
                let first = bytes[..end].iter().rposition(|b| !b.is_ascii_graphic()).map_or(0, |p| p + 1);
                out.push((base + first as u64, &bytes[first..end]));
            }
        }
        Sources(out)
    }

    /// The path a load of `address` gets, if it is `ssl/ssl_lib.cc` or
    /// ends with `/ssl/ssl_lib.cc`.
    fn path_at(&self, address: u64) -> Option<&'a [u8]> {
        let suffix = source_suffix();
        self.0.iter().find_map(|&(first, run)| {
            let path = run.get(usize::try_from(address.checked_sub(first)?).ok()?..)?;
            let whole = path == suffix.as_slice()
                || path.strip_suffix(suffix.as_slice()).is_some_and(|dir| dir.ends_with(b"/"));
            whole.then_some(path)
        })
    }
}

/// (address, bytes) of every read-only data section.
fn read_only_data<'a>(obj: &object::File<'a>) -> Vec<(u64, &'a [u8])> {
    obj.sections()
        .filter(|s| matches!(s.kind(), SectionKind::ReadOnlyData | SectionKind::ReadOnlyString))
        .filter(|s| s.address() != 0)
        .filter_map(|s| Some((s.address(), s.data().ok()?)))
        .collect()
}

/// Addresses of the `lea r64, [rip + disp32]` instructions in `code` whose
/// operand `target` maps to something, with it (a byte scan: the file has
/// megabytes of code and a handful of such instructions; each is decoded
/// again, from its function's start, before it counts).
fn lea_rip<T>(code: &[u8], base: u64, target: impl Fn(u64) -> Option<T>) -> Vec<(u64, T)> {
    let mut out = Vec::new();
    for i in memchr::memchr_iter(0x8d, code) {
        if i == 0 || i + 6 > code.len() {
            continue;
        }
        // REX.W (48-4f), then 8d, then ModRM mod=00 rm=101 (RIP-relative).
        if code[i - 1] & 0xf8 != 0x48 || code[i + 1] & 0xc7 != 0x05 {
            continue;
        }
        let disp = i32::from_le_bytes([code[i + 2], code[i + 3], code[i + 4], code[i + 5]]) as i64;
        let next = base as i64 + i as i64 + 6;
        if let Some(t) = target(next.wrapping_add(disp) as u64) {
            out.push((base + i as u64 - 1, t));
        }
    }
    out
}

/// The `ERR_put_error` calls of one function whose file argument (`rcx`) is
/// `ssl_lib.cc`'s path: its reason (`edx`) and line (`r8d`) must be
/// immediates set in the same straight run of code, and its library
/// (`edi`), where known, `ERR_LIB_SSL`.
fn sites(instrs: &[Instruction], sources: &Sources) -> Vec<Site> {
    let mut out = Vec::new();
    for (k, ins) in instrs.iter().enumerate() {
        let is_source_lea = ins.mnemonic() == Mnemonic::Lea
            && ins.op0_register() == Register::RCX
            && ins.is_ip_rel_memory_operand()
            && sources.path_at(ins.ip_rel_memory_address()).is_some();
        if !is_source_lea {
            continue;
        }
        // The run of code the lea is in: it ends at the call (or at a jump
        // to a shared call) and starts after the previous branch.
        let Some(end) = instrs[k..].iter().position(|i| i.flow_control() != FlowControl::Next) else {
            continue;
        };
        let end = k + end;
        let begin =
            instrs[..k].iter().rposition(|i| i.flow_control() != FlowControl::Next).map_or(0, |p| p + 1);
        let last_imm = |reg: Register| {
            instrs[begin..end]
                .iter()
                .rev()
                .find(|i| {
                    i.op_count() > 0
                        && i.op0_kind() == OpKind::Register
                        && i.op0_register().full_register() == reg
                })
                .and_then(immediate_of)
        };
        let (Some(reason), Some(line)) = (last_imm(Register::RDX), last_imm(Register::R8)) else { continue };
        if last_imm(Register::RDI).is_some_and(|lib| lib != ERR_LIB_SSL) {
            continue;
        }
        if let (Ok(reason), Ok(line)) = (u32::try_from(reason), u32::try_from(line)) {
            out.push(Site { reason, line });
        }
    }
    out
}

/// The value `ins` puts in its first operand, if it is a constant
/// (`mov reg, imm` or `xor reg, reg`).
fn immediate_of(ins: &Instruction) -> Option<u64> {
    match ins.mnemonic() {
        Mnemonic::Mov if ins.op_count() == 2 => match ins.op1_kind() {
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate32to64
            | OpKind::Immediate64 => Some(ins.immediate(1)),
            _ => None,
        },
        Mnemonic::Xor if ins.op1_kind() == OpKind::Register && ins.op1_register() == ins.op0_register() => {
            Some(0)
        }
        _ => None,
    }
}

/// PLT stubs and what they jump to when the target is defined in the same
/// file (found through the GOT slot's dynamic relocation).
struct Plt<'a> {
    /// (address, bytes) of the `.plt*` sections.
    sections: Vec<(u64, &'a [u8])>,
    /// GOT slot → address of the definition in this file.
    slots: HashMap<u64, u64>,
}

impl<'a> Plt<'a> {
    fn new(obj: &object::File<'a>) -> Self {
        let sections = obj
            .sections()
            .filter(|s| s.name().is_ok_and(|n| n.starts_with(".plt")))
            .filter_map(|s| Some((s.address(), s.data().ok()?)))
            .collect();
        let mut slots = HashMap::new();
        let symtab = obj.dynamic_symbol_table();
        for (at, r) in obj.dynamic_relocations().into_iter().flatten() {
            let RelocationTarget::Symbol(i) = r.target() else { continue };
            let Some(sym) = symtab.as_ref().and_then(|t| t.symbol_by_index(i).ok()) else { continue };
            if !sym.is_undefined() && sym.address() != 0 {
                slots.insert(at, sym.address());
            }
        }
        Plt { sections, slots }
    }

    /// Where a call to `target` ends up: the definition behind a PLT stub
    /// when it is in this file, else `target` itself.
    fn resolve(&self, target: u64) -> u64 {
        let Some(&(base, bytes)) =
            self.sections.iter().find(|(a, b)| *a <= target && target < a + b.len() as u64)
        else {
            return target;
        };
        let stub = &bytes[(target - base) as usize..];
        Decoder::with_ip(64, &stub[..stub.len().min(16)], target, DecoderOptions::NONE)
            .into_iter()
            .take(2) // `endbr64` may come first (.plt.sec)
            .find(|i| i.mnemonic() == Mnemonic::Jmp && i.is_ip_rel_memory_operand())
            .and_then(|i| self.slots.get(&i.ip_rel_memory_address()).copied())
            .unwrap_or(target)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Android's BoringSSL with its exports (Debian's android-libboringssl,
    /// which ci/install.sh installs): the ground truth.
    const ANDROID_LIBSSL: &str = "/usr/lib/x86_64-linux-gnu/android/libssl.so.0";

    /// gRPC's Python extension (grpcio 1.68.1 in the tests' venv, made by
    /// ci/install.sh): BoringSSL linked in, no symbols for it.
    pub(crate) fn cygrpc() -> PathBuf {
        let venv = std::env::var_os("NETTAP_VENV").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/nettap/venv")
        });
        let lib = venv.join("lib");
        let found = std::fs::read_dir(&lib)
            .unwrap_or_else(|e| panic!("{}: {e}: ci/install.sh creates the venv with grpcio", lib.display()))
            .flatten()
            .map(|py| py.path().join("site-packages/grpc/_cython"))
            .filter_map(|dir| std::fs::read_dir(dir).ok())
            .flatten()
            .flatten()
            .map(|f| f.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("cygrpc.") && n.ends_with(".so"))
            });
        found.unwrap_or_else(|| {
            panic!("no grpc/_cython/cygrpc.*.so under {}: ci/install.sh installs grpcio", lib.display())
        })
    }

    fn read(path: &std::path::Path, what: &str) -> Vec<u8> {
        std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}: {what}", path.display()))
    }

    /// The address of export `name`.
    fn dynamic_symbol(data: &[u8], name: &str) -> u64 {
        let obj = object::File::parse(data).unwrap();
        obj.dynamic_symbols().find(|s| s.name() == Ok(name)).unwrap_or_else(|| panic!("no {name}")).address()
    }

    #[test]
    fn android_boringssl_matches_its_exports() {
        let data = read(std::path::Path::new(ANDROID_LIBSSL), "ci/install.sh installs android-libboringssl");
        let t = std::time::Instant::now();
        let found = find(&data).unwrap();
        eprintln!("android libssl.so.0: {found:x?} in {:?}", t.elapsed());
        // The path made at run time, as the sensor makes its needles (a
        // literal could sit between NULs in this test binary).
        let suffix = String::from_utf8(source_suffix()).unwrap();
        assert_eq!(found.source, format!("src/{suffix}"));
        for (entry, name) in [
            (found.ssl_read, "SSL_read"),
            (found.ssl_write, "SSL_write"),
            (found.ssl_peek.unwrap(), "SSL_peek"),
            (found.ssl_do_handshake, "SSL_do_handshake"),
        ] {
            assert_eq!(entry.address, dynamic_symbol(&data, name), "{name}");
            assert_eq!(
                entry.offset,
                file_offset(&object::File::parse(&*data).unwrap(), entry.address).unwrap()
            );
        }
    }

    /// Android's build again, with every export's name blanked (`.dynstr`
    /// zeroed): `strip --strip-all` changes nothing in Debian's file (it has
    /// no `.symtab`), so this is what shows that no name is read. The PLT
    /// calls (`SSL_write` → `SSL_do_handshake@plt`) still resolve: their
    /// relocations point at the symbol, whose address stays.
    #[test]
    fn android_boringssl_without_names_gives_the_same_addresses() {
        let data = read(std::path::Path::new(ANDROID_LIBSSL), "ci/install.sh installs android-libboringssl");
        let mut blank = data.clone();
        let (off, len) =
            object::File::parse(&*data).unwrap().section_by_name(".dynstr").unwrap().file_range().unwrap();
        blank[off as usize..(off + len) as usize].fill(0);
        assert!(object::File::parse(&*blank).unwrap().dynamic_symbols().all(|s| s.name() != Ok("SSL_read")));
        assert_eq!(find(&blank).unwrap(), find(&data).unwrap());
    }

    /// clang packs strings right after binary constants: the byte before
    /// the path need not be a NUL, and may even be printable. Android's
    /// build with that byte made an `X` (the code loads the path's first
    /// byte, after it) gives the same result.
    #[test]
    fn a_path_string_not_preceded_by_a_nul_is_found() {
        let mut data =
            read(std::path::Path::new(ANDROID_LIBSSL), "ci/install.sh installs android-libboringssl");
        let want = find(&data).unwrap();
        let path = [b"\0src/".as_slice(), &source_suffix(), b"\0"].concat();
        let at = memchr::memmem::find(&data, &path).expect("the path, after a NUL");
        data[at] = b'X';
        assert_eq!(find(&data).unwrap(), want);
    }

    /// grpcio 1.68.1 vendors a BoringSSL of mid 2024 (its ssl_lib.cc lines
    /// match BoringSSL commits 2fcdd11f6 to 15b580f7f): the lines each found
    /// function reports from are those of that source, which the finder
    /// itself never compares with any number.
    #[test]
    fn grpcio_cygrpc_without_symbols() {
        let path = cygrpc();
        let data = read(&path, "grpcio's extension");
        let obj = object::File::parse(&*data).unwrap();
        assert!(obj.section_by_name(".symtab").is_none(), "{} has a symbol table", path.display());
        assert!(!obj.dynamic_symbols().any(|s| s.name().is_ok_and(|n| n.starts_with("SSL_"))));
        let t = std::time::Instant::now();
        let found = find(&data).unwrap();
        eprintln!("{}: {found:x?} in {:?}", path.display(), t.elapsed());
        let suffix = String::from_utf8(source_suffix()).unwrap();
        assert_eq!(found.source, format!("third_party/boringssl-with-bazel/src/{suffix}"));
        let fns = reporters(&obj).unwrap().functions;
        let lines = |e: Entry| {
            let mut l: Vec<u32> = fns[&e.address].sites.iter().map(|s| s.line).collect();
            l.sort_unstable();
            l
        };
        // SSL_write: QUIC misuse, uninitialized, handshake failure, bad length.
        assert_eq!(lines(found.ssl_write), [1072, 1077, 1092, 1098]);
        // SSL_peek's QUIC check, in SSL_peek and inlined in SSL_read.
        assert_eq!(lines(found.ssl_peek.unwrap()), [1051]);
        assert_eq!(lines(found.ssl_read), [1051]);
        assert_eq!(lines(found.ssl_do_handshake), [855]);
        // The addresses of that wheel, checked by hand against its disassembly.
        let addrs = [found.ssl_read, found.ssl_write, found.ssl_peek.unwrap(), found.ssl_do_handshake]
            .map(|e| e.address);
        assert_eq!(addrs, [0x963520, 0x961840, 0x9632c0, 0x961240]);
    }

    /// A copy of Android's libssl whose `SSL_read` reports another reason
    /// than QUIC misuse: only `SSL_peek` keeps that shape, nothing calls
    /// `SSL_peek` (Android's `SSL_read` inlines it), so `SSL_read` is not
    /// told apart and nothing is returned for any function.
    #[test]
    fn android_boringssl_with_ssl_read_changed_is_refused() {
        let mut data =
            read(std::path::Path::new(ANDROID_LIBSSL), "ci/install.sh installs android-libboringssl");
        let read_at = found_offset(&data, |f| f.ssl_read);
        // `mov edx, 0x42` (ba 42 00 00 00) in SSL_read's first instructions.
        let code = &mut data[read_at as usize..read_at as usize + 64];
        let at = code.windows(5).position(|w| w == [0xba, 0x42, 0, 0, 0]).expect("mov edx, 0x42 in SSL_read");
        code[at + 1] = 0x43;
        match find(&data) {
            Err(FindError::Candidates { function: "SSL_read", count: 0, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    /// The shape gcc -O2 gives (BoringSSL of grpcio's version, built by
    /// hand): `SSL_read` does not inline `SSL_peek` but calls it, and
    /// reports nothing itself. Made from Android's build by two patches in
    /// its `SSL_read`: its QUIC report's `lea rcx` loads `rax` instead (no
    /// report left), and its `call ssl_read_impl` calls `SSL_peek`.
    /// `SSL_read` is then found as `SSL_peek`'s only caller.
    #[test]
    fn android_boringssl_with_ssl_read_calling_ssl_peek() {
        let mut data =
            read(std::path::Path::new(ANDROID_LIBSSL), "ci/install.sh installs android-libboringssl");
        let want = find(&data).unwrap();
        let (read_at, peek) = (want.ssl_read.address, want.ssl_peek.unwrap().address);
        let obj = object::File::parse(&*data).unwrap();
        let code = Code::new(&obj);
        let instrs: Vec<Instruction> = code.decode(read_at, code.containing(read_at).unwrap().1);
        let lea = instrs.iter().find(|i| i.mnemonic() == Mnemonic::Lea && i.op0_register() == Register::RCX);
        // ssl_read_impl reports errors too (ERR_put_error@plt, also called, does not).
        let fns = reporters(&obj).unwrap().functions;
        let call = instrs
            .iter()
            .find(|i| i.mnemonic() == Mnemonic::Call && fns.contains_key(&i.near_branch_target()));
        let (lea, call) = (lea.expect("lea rcx in SSL_read"), call.expect("call ssl_read_impl in SSL_read"));
        let at = |i: &Instruction| file_offset(&obj, i.ip()).unwrap() as usize;
        let (lea_at, call_at) = (at(lea), at(call));
        // The call's new displacement, from the end of the call to SSL_peek.
        let rel = i32::try_from(peek as i64 - call.next_ip() as i64).unwrap();
        drop(obj);
        assert_eq!(data[lea_at..lea_at + 3], [0x48, 0x8d, 0x0d], "lea rcx, [rip + disp32]");
        data[lea_at + 2] = 0x05; // lea rax, [rip + disp32]
        assert_eq!(data[call_at], 0xe8, "call rel32");
        data[call_at + 1..call_at + 5].copy_from_slice(&rel.to_le_bytes());
        let found = find(&data).unwrap();
        assert_eq!(found, want);
        assert!(!reporters(&object::File::parse(&*data).unwrap()).unwrap().functions.contains_key(&read_at));
    }

    /// The shape of a static link that dropped `SSL_peek` (boring-sys's
    /// BoringSSL, gcc -O3: `SSL_read` inlines it and nothing else calls
    /// it): made from Android's build by taking `SSL_peek`'s QUIC report
    /// away (its `lea rcx` loads `rax`). `SSL_read` alone then has the
    /// shape, is called from outside ssl_lib.cc only, and no other function
    /// reports from its line: it is found, and no `SSL_peek` with it.
    #[test]
    fn android_boringssl_without_a_reporting_ssl_peek_finds_ssl_read_alone() {
        let mut data =
            read(std::path::Path::new(ANDROID_LIBSSL), "ci/install.sh installs android-libboringssl");
        let want = find(&data).unwrap();
        let peek = want.ssl_peek.unwrap().address;
        let obj = object::File::parse(&*data).unwrap();
        let code = Code::new(&obj);
        let instrs: Vec<Instruction> = code.decode(peek, code.containing(peek).unwrap().1);
        let lea = instrs
            .iter()
            .find(|i| i.mnemonic() == Mnemonic::Lea && i.op0_register() == Register::RCX)
            .expect("lea rcx in SSL_peek");
        let lea_at = file_offset(&obj, lea.ip()).unwrap() as usize;
        drop(obj);
        assert_eq!(data[lea_at..lea_at + 3], [0x48, 0x8d, 0x0d], "lea rcx, [rip + disp32]");
        data[lea_at + 2] = 0x05; // lea rax, [rip + disp32]
        let found = find(&data).unwrap();
        assert_eq!(found, Found { ssl_peek: None, ..want });
    }

    fn found_offset(data: &[u8], f: impl Fn(&Found) -> Entry) -> u64 {
        f(&find(data).unwrap()).offset
    }

    /// Android's `BIO_new_bio_pair` (exported) inlines `bio_s_bio()`, a
    /// `lea` of the pair's method table: the table found is that one.
    #[test]
    fn android_bio_pair_is_the_table_bio_new_bio_pair_uses() {
        let data = read(
            std::path::Path::new("/usr/lib/x86_64-linux-gnu/android/libcrypto.so.0"),
            "ci/install.sh installs android-libboringssl",
        );
        let t = std::time::Instant::now();
        let pair = bio_pair(&data).unwrap();
        eprintln!("android libcrypto.so.0: {pair:x?} in {:?}", t.elapsed());
        let obj = object::File::parse(&*data).unwrap();
        let sym = obj.dynamic_symbols().find(|s| s.name() == Ok("BIO_new_bio_pair")).unwrap();
        let off = file_offset(&obj, sym.address()).unwrap() as usize;
        let code = &data[off..off + sym.size() as usize];
        let lea_table =
            Decoder::with_ip(64, code, sym.address(), DecoderOptions::NONE).into_iter().any(|i| {
                i.mnemonic() == Mnemonic::Lea
                    && i.is_ip_rel_memory_operand()
                    && i.ip_rel_memory_address() == pair.methods
            });
        assert!(lea_table, "BIO_new_bio_pair does not load {:#x}", pair.methods);
        assert_ne!(pair.bio_read, pair.bio_write);
        assert!(find(&data).is_err(), "libcrypto has no libssl");
    }

    #[test]
    fn grpcio_bio_pair() {
        let data = read(&cygrpc(), "grpcio's extension");
        let t = std::time::Instant::now();
        let pair = bio_pair(&data).unwrap();
        eprintln!("cygrpc: {pair:x?} in {:?}", t.elapsed());
        // The wheel's table, checked by hand against its relocations.
        assert_eq!(
            (pair.methods, pair.bio_write.address, pair.bio_read.address),
            (0xcbda40, 0x7ff4f0, 0x7ff3b0)
        );
    }

    #[test]
    fn other_files_are_refused_with_the_reason() {
        // OpenSSL's libssl: its path is ssl/ssl_lib.c, and it is not BoringSSL.
        let openssl =
            read(std::path::Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3"), "the system libssl");
        assert!(matches!(find(&openssl), Err(FindError::NoSource)), "{:?}", find(&openssl));
        // Android's libcrypto has BoringSSL but not its libssl.
        let crypto = read(
            std::path::Path::new("/usr/lib/x86_64-linux-gnu/android/libcrypto.so.0"),
            "ci/install.sh installs android-libboringssl",
        );
        assert!(matches!(find(&crypto), Err(FindError::NoSource)), "{:?}", find(&crypto));
        // arm64 code is not read (gcc-aarch64-linux-gnu, which ci/install.sh installs, brings this libc).
        let arm = read(std::path::Path::new("/usr/aarch64-linux-gnu/lib/libc.so.6"), "the arm64 cross libc");
        assert!(matches!(find(&arm), Err(FindError::Architecture)), "{:?}", find(&arm));
        assert!(matches!(find(b"not an elf"), Err(FindError::Parse(_))));
        assert!(matches!(bio_pair(&openssl), Err(FindError::NoBioPair)), "{:?}", bio_pair(&openssl));
        // OpenSSL's libcrypto has a "BIO pair" too, in its own BIO_METHOD
        // layout (bwrite, bwrite_old, bread, bread_old: its fifth field is set).
        let libcrypto =
            read(std::path::Path::new("/usr/lib/x86_64-linux-gnu/libcrypto.so.3"), "the system libcrypto");
        match bio_pair(&libcrypto) {
            Err(FindError::Candidates { count: 0, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(bio_pair(&arm), Err(FindError::Architecture)));
    }
}
