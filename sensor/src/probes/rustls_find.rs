//! Finds rustls's plaintext and ciphertext functions in a Rust executable by
//! their demangled names (v0 and legacy manglings): rustls is linked in
//! statically, its generic functions monomorphized into the application's
//! crates, so the names carry hashes and type parameters and are matched
//! by shape, not looked up. Every copy is found (one per rustls version
//! linked in, and per connection type for the generic ones).
//!
//! Without a symbol table (a stripped x86_64 executable) the functions are
//! found from what stripping keeps (`rustls_stripped`): rustls's panic
//! Locations and error messages, `.eh_frame` bounds and the PlaintextSink
//! vtables, every role exactly one function of the expected shape per
//! rustls version, else the file is refused with the reason
//! (`Located::Stripped`): LTO builds (functions inlined, calls
//! devirtualized), arm64, versions other than 0.21 to 0.23.

use object::{Object, ObjectKind, ObjectSection, ObjectSymbol, SymbolKind};

/// What each found function is, and so which programs it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// `<ConnectionCommon<_> as PlaintextSink>::write`: plaintext taken for sending.
    PlaintextWrite,
    /// `<ConnectionCommon<_> as PlaintextSink>::write_vectored`: the same from
    /// `IoSlice`s (tokio-rustls's `poll_write_vectored`, which hyper uses).
    /// Optional: a program that never writes vectored may have none.
    PlaintextWriteVectored,
    /// `<Reader as io::Read>::read`: plaintext handed to the application.
    PlaintextRead,
    /// `ChunkVecBuffer::write_to`: the records to send, written to the transport.
    TlsWrite,
    /// `MessageDeframer::read` (0.21, 0.22) or `DeframerVecBuffer::read`
    /// (0.23): records read from the transport.
    TlsRead,
    /// `Reader::into_first_chunk` (0.23): the buffered plaintext a
    /// `BufRead::consume` then takes (tokio-rustls reads this way).
    FirstChunk,
    /// `<Reader as BufRead>::consume` (0.23): plaintext handed to the application.
    Consume,
}

impl Role {
    /// Every role, in the order they are reported.
    pub const ALL: [Role; 7] = [
        Role::PlaintextWrite,
        Role::PlaintextWriteVectored,
        Role::PlaintextRead,
        Role::TlsWrite,
        Role::TlsRead,
        Role::FirstChunk,
        Role::Consume,
    ];

    /// How logs name it.
    pub fn name(self) -> &'static str {
        match self {
            Role::PlaintextWrite => "rustls::conn::PlaintextSink::write",
            Role::PlaintextWriteVectored => "rustls::conn::PlaintextSink::write_vectored",
            Role::PlaintextRead => "rustls::conn::Reader::read",
            Role::TlsWrite => "rustls::vecbuf::ChunkVecBuffer::write_to",
            Role::TlsRead => "rustls::msgs::deframer read",
            Role::FirstChunk => "rustls::conn::Reader::into_first_chunk",
            Role::Consume => "rustls::conn::Reader::consume",
        }
    }

    /// Its role from a demangled name without hashes, if it is one of them.
    pub fn of(name: &str) -> Option<Role> {
        // Inherent methods: `<rustls::x::T>::f` in v0, `rustls::x::T::f` in legacy.
        let plain = name.strip_prefix('<').map(|n| n.replacen(">::", "::", 1));
        let plain = plain.as_deref().unwrap_or(name);
        if name.starts_with("<rustls::conn::ConnectionCommon<")
            && (name.ends_with(" as rustls::conn::PlaintextSink>::write")
                || name.ends_with(" as rustls::conn::connection::PlaintextSink>::write"))
        {
            return Some(Role::PlaintextWrite);
        }
        if name.starts_with("<rustls::conn::ConnectionCommon<")
            && (name.ends_with(" as rustls::conn::PlaintextSink>::write_vectored")
                || name.ends_with(" as rustls::conn::connection::PlaintextSink>::write_vectored"))
        {
            return Some(Role::PlaintextWriteVectored);
        }
        if (name.starts_with("<rustls::conn::Reader as ")
            || name.starts_with("<rustls::conn::connection::Reader as "))
            && name.ends_with("::Read>::read")
        {
            return Some(Role::PlaintextRead);
        }
        if name.starts_with("<rustls::conn::connection::Reader as ") && name.ends_with("::BufRead>::consume")
        {
            return Some(Role::Consume);
        }
        match plain {
            "rustls::vecbuf::ChunkVecBuffer::write_to" => Some(Role::TlsWrite),
            "rustls::msgs::deframer::MessageDeframer::read"
            | "rustls::msgs::deframer::buffers::DeframerVecBuffer::read" => Some(Role::TlsRead),
            "rustls::conn::connection::Reader::into_first_chunk" => Some(Role::FirstChunk),
            _ => None,
        }
    }
}

/// One function found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// What it is.
    pub role: Role,
    /// Its file offset (where a uprobe attaches).
    pub offset: u64,
    /// Its demangled name, without hashes.
    pub name: String,
}

/// What an executable holds of rustls.
#[derive(Debug, PartialEq, Eq)]
pub enum Located {
    /// No rustls in it.
    Absent,
    /// rustls is linked in (its source paths are in the file), there is no
    /// symbol table, and its functions could not be found without one:
    /// not x86_64 (arm64 is not done yet), an LTO build (functions inlined
    /// into callers, vtable calls devirtualized, arguments promoted: the
    /// shape checks refuse them), a version other than 0.21 to 0.23, or a
    /// role with more than one candidate. A stripped x86_64 non-LTO build
    /// gives `Found` instead.
    Stripped {
        /// The versions its strings name.
        versions: Vec<String>,
        /// Why its functions were not found (for the `probe attached: failed` log).
        reason: String,
    },
    /// Every function of every role found (sorted by offset), with the versions.
    Found {
        /// The functions.
        functions: Vec<Found>,
        /// The versions its strings name ("0.23.48").
        versions: Vec<String>,
        /// What is missing for both directions (see `missing`); empty: probe it.
        missing: Vec<Role>,
    },
}

/// Looks for rustls in the ELF file `data`.
pub fn locate(data: &[u8]) -> Result<Located, object::Error> {
    let obj = object::File::parse(data)?;
    // Most executables end here, before their symbols are read.
    let versions = versions(super::elf::rodata(data));
    if versions.is_empty() {
        return Ok(Located::Absent);
    }
    let translate = matches!(obj.kind(), ObjectKind::Dynamic | ObjectKind::Executable);
    let mut functions = Vec::new();
    let mut any_symbol = false;
    for sym in obj.symbols() {
        any_symbol = true;
        if sym.kind() != SymbolKind::Text || sym.is_undefined() {
            continue;
        }
        let Ok(raw) = sym.name() else { continue };
        if !raw.contains("rustls") {
            continue; // most symbols: no demangling
        }
        // Local copies carry an LLVM suffix (`….llvm.1234`) after the mangled name.
        let raw = raw.split(".llvm.").next().unwrap_or(raw);
        let Ok(demangled) = rustc_demangle::try_demangle(raw) else { continue };
        let name = format!("{demangled:#}");
        let Some(role) = Role::of(&name) else { continue };
        let offset = if translate {
            sym.section_index()
                .and_then(|i| obj.section_by_index(i).ok())
                .and_then(|s| s.file_range().map(|(off, _)| sym.address() - s.address() + off))
        } else {
            Some(sym.address())
        };
        if let Some(offset) = offset {
            functions.push(Found { role, offset, name });
        }
    }
    functions.sort_by_key(|f| f.offset);
    // Aliases of one body.
    functions.dedup_by_key(|f| f.offset);
    // A function may keep its name and still not take what its probes read:
    // under LTO `<Reader as BufRead>::consume` kept its symbol but took the
    // ChunkVecBuffer itself (argument promotion), so its key would be read
    // wrongly. Such a copy is left out (its role may then be missing, which
    // refuses that direction); docs/rustls-without-symbols.md.
    if obj.architecture() == object::Architecture::X86_64 {
        functions.retain(|f| super::rustls_stripped::takes_reader(data, f));
    }
    if functions.is_empty() {
        return Ok(match any_symbol {
            false => super::rustls_stripped::locate(data, versions),
            // Symbols, strings, none of the functions: every one inlined.
            true => Located::Found { functions, versions, missing: Role::ALL.to_vec() },
        });
    }
    let missing = missing(&functions);
    Ok(Located::Found { functions, versions, missing })
}

/// The roles without which a direction cannot be captured: writes need the
/// plaintext write and `write_to`; reads the deframer read and either
/// `Reader::read` or the `into_first_chunk` + `consume` pair. Empty when
/// both directions can be.
pub fn missing(functions: &[Found]) -> Vec<Role> {
    let has = |r: Role| functions.iter().any(|f| f.role == r);
    let mut out: Vec<Role> =
        [Role::PlaintextWrite, Role::TlsWrite, Role::TlsRead].into_iter().filter(|r| !has(*r)).collect();
    let buf_read = has(Role::FirstChunk) && has(Role::Consume);
    if !has(Role::PlaintextRead) && !buf_read {
        out.push(Role::PlaintextRead);
    }
    out
}

/// The rustls versions a file's read-only strings name: the crate's source
/// paths in panic locations (`…/rustls-0.23.48/src/…`), sorted, each once.
pub fn versions(rodata: &[u8]) -> Vec<String> {
    const NEEDLE: &[u8] = b"/rustls-0.";
    let mut out: Vec<String> = Vec::new();
    for i in memchr::memmem::find_iter(rodata, NEEDLE) {
        let start = i + b"/rustls-".len();
        let end = rodata[start..].iter().take(32).position(|&b| b == b'/').map(|e| start + e);
        let Some(v) = end.map(|end| &rodata[start..end]) else { continue };
        if v.iter().all(|b| b.is_ascii_digit() || *b == b'.') {
            let v = String::from_utf8_lossy(v).into_owned();
            if !out.contains(&v) {
                out.push(v);
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_from_v0_and_legacy_names() {
        let cases = [
            ("<rustls::conn::ConnectionCommon<rustls::server::server_conn::ServerConnectionData> as rustls::conn::connection::PlaintextSink>::write", Some(Role::PlaintextWrite)),
            ("<rustls::conn::ConnectionCommon<T> as rustls::conn::PlaintextSink>::write", Some(Role::PlaintextWrite)),
            ("<rustls::conn::ConnectionCommon<rustls::client::client_conn::ClientConnectionData> as rustls::conn::PlaintextSink>::write_vectored", Some(Role::PlaintextWriteVectored)),
            ("<rustls::conn::ConnectionCommon<rustls::server::server_conn::ServerConnectionData> as rustls::conn::connection::PlaintextSink>::write_vectored", Some(Role::PlaintextWriteVectored)),
            ("<rustls::conn::connection::Reader as alloc::io::read::Read>::read", Some(Role::PlaintextRead)),
            ("<rustls::conn::Reader as std::io::Read>::read", Some(Role::PlaintextRead)),
            ("<rustls::vecbuf::ChunkVecBuffer>::write_to", Some(Role::TlsWrite)),
            ("rustls::vecbuf::ChunkVecBuffer::write_to", Some(Role::TlsWrite)),
            ("<rustls::msgs::deframer::MessageDeframer>::read", Some(Role::TlsRead)),
            ("<rustls::msgs::deframer::buffers::DeframerVecBuffer>::read", Some(Role::TlsRead)),
            ("<rustls::vecbuf::ChunkVecBuffer>::read", None),
            ("<rustls::conn::connection::Reader as alloc::io::buf_read::BufRead>::fill_buf", None),
            ("<rustls::conn::connection::Reader>::into_first_chunk", Some(Role::FirstChunk)),
            ("<rustls::conn::connection::Reader as alloc::io::buf_read::BufRead>::consume", Some(Role::Consume)),
            ("<myrustls::vecbuf::ChunkVecBuffer>::write_to", None),
        ];
        for (name, want) in cases {
            assert_eq!(Role::of(name), want, "{name}");
        }
    }

    #[test]
    fn legacy_mangled_names_demangle_to_the_same_shape() {
        let raw = "_ZN6rustls6vecbuf14ChunkVecBuffer8write_to17h0123456789abcdefE";
        let name = format!("{:#}", rustc_demangle::try_demangle(raw).unwrap());
        assert_eq!(Role::of(&name), Some(Role::TlsWrite), "{name}");
    }

    #[test]
    fn versions_from_source_paths() {
        let data = b"xx/root/.cargo/registry/src/index-1/rustls-0.23.48/src/conn.rs\0\
                     /x/rustls-0.21.12/src/vecbuf.rs/rustls-0.23.48/src/a.rs/rustls-0.x/";
        assert_eq!(versions(data), ["0.21.12", "0.23.48"]);
    }
}
