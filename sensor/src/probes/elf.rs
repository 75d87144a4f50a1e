//! Symbol → file offset in an ELF file, as a uprobe needs it. Done once per
//! file for all the functions probed there (aya would re-read and re-parse
//! the file for each attachment).

use object::{Object, ObjectKind, ObjectSection, ObjectSymbol, RelocationTarget};
use std::collections::HashMap;

/// Why offsets could not be found.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// Not a parsable object file.
    #[error("not an ELF object: {0}")]
    Parse(#[from] object::Error),
}

/// Where a function is in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSymbol {
    /// File offset of its first byte (what a uprobe attaches to).
    pub offset: u64,
    /// Its size in bytes (0 when the symbol table does not say).
    pub size: u64,
}

/// File offsets of those of `names` that the file defines (dynamic symbols
/// first, then the full symbol table, which is skipped when the dynamic
/// symbols had them all: Node.js has ~100k symbols).
pub fn symbol_offsets(data: &[u8], names: &[&str]) -> Result<HashMap<String, FileSymbol>, ElfError> {
    let obj = object::File::parse(data)?;
    let translate = matches!(obj.kind(), ObjectKind::Dynamic | ObjectKind::Executable);
    let mut out = HashMap::new();
    for sym in obj.dynamic_symbols().chain(obj.symbols()) {
        if out.len() == names.len() {
            break;
        }
        let Ok(name) = sym.name() else { continue };
        if !names.contains(&name) || out.contains_key(name) || sym.is_undefined() {
            continue;
        }
        let offset = if !translate {
            Some(sym.address())
        } else {
            sym.section_index()
                .and_then(|i| obj.section_by_index(i).ok())
                .and_then(|s| s.file_range().map(|(off, _)| sym.address() - s.address() + off))
        };
        if let Some(offset) = offset {
            out.insert(name.to_string(), FileSymbol { offset, size: sym.size() });
        }
    }
    Ok(out)
}

/// The file at `path` mapped read-only, for reading its ELF headers,
/// sections and strings (the version look-ups of every library).
pub fn map(path: &std::path::Path) -> Option<memmap2::Mmap> {
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: read-only private mapping of a file we opened; callers read
    // its headers, tables and strings, never write.
    unsafe { memmap2::Mmap::map(&file) }.ok()
}

/// The bytes of the read-only data section (`.rodata`), where a program
/// keeps its version strings; empty when there is none.
pub fn rodata(data: &[u8]) -> &[u8] {
    object::File::parse(data)
        .ok()
        .and_then(|obj| obj.section_by_name(".rodata").and_then(|s| s.file_range()))
        .and_then(|(off, len)| data.get(off as usize..(off + len) as usize))
        .unwrap_or(&[])
}

/// The shared objects a 64-bit ELF file needs (its `DT_NEEDED` names, as
/// written: `libcrypto.so.1.1`); empty when it has no dynamic section.
pub fn needed(data: &[u8]) -> Vec<String> {
    use object::read::elf::{Dyn, FileHeader};
    let names = || -> Option<Vec<String>> {
        let header = object::elf::FileHeader64::<object::Endianness>::parse(data).ok()?;
        let endian = header.endian().ok()?;
        let sections = header.sections(endian, data).ok()?;
        let (dynamic, link) = sections.dynamic(endian, data).ok()??;
        let strings = sections.strings(endian, data, link).ok()?;
        Some(
            dynamic
                .iter()
                .filter(|d| d.tag32(endian) == Some(object::elf::DT_NEEDED))
                .filter_map(|d| d.string(endian, strings).ok())
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect(),
        )
    };
    names().unwrap_or_default()
}

/// The machine code of function `name` and the address it is linked at,
/// if the file defines it with a size.
pub fn function_code<'a>(data: &'a [u8], name: &str) -> Option<(u64, &'a [u8])> {
    let obj = object::File::parse(data).ok()?;
    let sym =
        obj.dynamic_symbols().chain(obj.symbols()).find(|s| s.name() == Ok(name) && !s.is_undefined())?;
    Some((sym.address(), at_address(data, sym.address(), sym.size())?))
}

/// `len` bytes of the file at link-time address `address`, from the
/// section that holds them.
pub fn at_address(data: &[u8], address: u64, len: u64) -> Option<&[u8]> {
    let obj = object::File::parse(data).ok()?;
    let section = obj.sections().find(|s| s.address() <= address && address < s.address() + s.size())?;
    let (off, size) = section.file_range()?;
    let start = address - section.address();
    let len = len.min(size - start);
    data.get((off + start) as usize..(off + start + len) as usize)
}

/// Start and length of every function the unwind tables (`.eh_frame`)
/// describe, sorted by start: the function bounds a stripped file keeps.
pub fn unwind_functions(obj: &object::File) -> Vec<(u64, u64)> {
    use gimli::UnwindSection;
    let Some(sec) = obj.section_by_name(".eh_frame") else { return Vec::new() };
    let Ok(data) = sec.data() else { return Vec::new() };
    let eh = gimli::EhFrame::new(data, gimli::LittleEndian);
    let bases = gimli::BaseAddresses::default().set_eh_frame(sec.address());
    let mut out = Vec::new();
    let mut entries = eh.entries(&bases);
    while let Ok(Some(entry)) = entries.next() {
        if let gimli::CieOrFde::Fde(partial) = entry {
            if let Ok(fde) = partial.parse(gimli::EhFrame::cie_from_offset) {
                if fde.len() > 0 {
                    out.push((fde.initial_address(), fde.len()));
                }
            }
        }
    }
    out.sort_unstable();
    out
}

/// The file offset of link-time address `address`, from the section that holds it.
pub fn file_offset(obj: &object::File, address: u64) -> Option<u64> {
    let sec =
        obj.sections().find(|s| s.address() <= address && address < s.address().saturating_add(s.size()))?;
    let (off, _) = sec.file_range()?;
    Some(address - sec.address() + off)
}

/// The pointers the dynamic loader writes at load (RELATIVE relocations):
/// address → the address it points at. lld leaves such slots zero in the
/// file, so a stripped PIE's vtables and `&'static` data are read here.
pub fn relative_pointers(obj: &object::File) -> HashMap<u64, u64> {
    obj.dynamic_relocations()
        .into_iter()
        .flatten()
        .filter(|(_, r)| r.target() == RelocationTarget::Absolute && r.addend() != 0)
        .map(|(at, r)| (at, r.addend() as u64))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_openssl_functions_in_the_system_libssl() {
        // ci/install.sh installs libssl-dev, so the system libssl is there.
        let data = std::fs::read("/usr/lib/x86_64-linux-gnu/libssl.so.3").expect("the system libssl.so.3");
        let offs = symbol_offsets(&data, &["SSL_write", "SSL_read_ex", "no_such_symbol"]).unwrap();
        assert_eq!(offs.len(), 2, "{offs:?}");
        assert!(offs["SSL_write"].offset > 0 && offs["SSL_write"].size > 0);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(symbol_offsets(b"not an elf file at all", &["x"]).is_err());
        assert!(rodata(b"not an elf file at all").is_empty());
    }

    #[test]
    fn rodata_of_the_system_libcrypto_holds_its_version() {
        let data =
            std::fs::read("/usr/lib/x86_64-linux-gnu/libcrypto.so.3").expect("the system libcrypto.so.3");
        let ro = rodata(&data);
        assert!(!ro.is_empty() && ro.len() < data.len());
        assert!(ro.windows(8).any(|w| w == b"OpenSSL "));
    }
}
