//! Just enough class-file editing to put a prologue in front of a method's
//! code, in the form class retransformation allows: no field, method or
//! class attribute is added or removed, only the constant pool grows and
//! method bodies change. The prologue is padded to a multiple of 4 bytes so
//! `tableswitch`/`lookupswitch` padding stays right; every other offset
//! (exception table, StackMapTable, line and variable tables) moves with the
//! code, and branch offsets, being relative, need no change.

use std::fmt;

/// Why a class could not be edited (it is then left as it was).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassError {
    /// The bytes end before the structure does.
    Truncated,
    /// A constant-pool tag this parser does not know.
    UnknownTag(u8),
    /// The method to patch is not in the class.
    NoSuchMethod(String),
    /// The method has no code (abstract or native).
    NoCode(String),
    /// A structure is inconsistent.
    Malformed(&'static str),
}

impl fmt::Display for ClassError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClassError::Truncated => write!(f, "class file truncated"),
            ClassError::UnknownTag(t) => write!(f, "unknown constant-pool tag {t}"),
            ClassError::NoSuchMethod(m) => write!(f, "no method {m}"),
            ClassError::NoCode(m) => write!(f, "method {m} has no code"),
            ClassError::Malformed(what) => write!(f, "malformed class file: {what}"),
        }
    }
}

impl std::error::Error for ClassError {}

type Result<T> = std::result::Result<T, ClassError>;

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8> {
        let v = *self.b.get(self.pos).ok_or(ClassError::Truncated)?;
        self.pos += 1;
        Ok(v)
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes([self.u8()?, self.u8()?, self.u8()?, self.u8()?]))
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos + n).ok_or(ClassError::Truncated)?;
        self.pos += n;
        Ok(s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Utf8(Vec<u8>),
    Class(u16),
    NameAndType(u16, u16),
    Fieldref(u16, u16),
    Methodref(u16, u16),
    Other,
}

/// The constant pool: what the class has, plus what a patch adds.
#[derive(Debug)]
pub struct ConstPool {
    entries: Vec<Entry>, // index 0 unused; long/double take two slots
    added: Vec<u8>,
}

impl ConstPool {
    fn find(&self, e: &Entry) -> Option<u16> {
        self.entries.iter().position(|x| x == e).map(|i| i as u16)
    }

    fn add(&mut self, e: Entry) -> u16 {
        if let Some(i) = self.find(&e) {
            return i;
        }
        match &e {
            Entry::Utf8(s) => {
                self.added.push(1);
                self.added.extend_from_slice(&(s.len() as u16).to_be_bytes());
                self.added.extend_from_slice(s);
            }
            Entry::Class(n) => {
                self.added.push(7);
                self.added.extend_from_slice(&n.to_be_bytes());
            }
            Entry::NameAndType(a, b) | Entry::Fieldref(a, b) | Entry::Methodref(a, b) => {
                self.added.push(match e {
                    Entry::NameAndType(..) => 12,
                    Entry::Fieldref(..) => 9,
                    _ => 10,
                });
                self.added.extend_from_slice(&a.to_be_bytes());
                self.added.extend_from_slice(&b.to_be_bytes());
            }
            Entry::Other => unreachable!("only known entries are added"),
        }
        self.entries.push(e);
        (self.entries.len() - 1) as u16
    }

    /// Index of a UTF-8 constant.
    pub fn utf8(&mut self, s: &str) -> u16 {
        self.add(Entry::Utf8(s.as_bytes().to_vec()))
    }

    /// Index of a class constant (`a/b/C`).
    pub fn class(&mut self, name: &str) -> u16 {
        let n = self.utf8(name);
        self.add(Entry::Class(n))
    }

    fn name_and_type(&mut self, name: &str, desc: &str) -> u16 {
        let (n, d) = (self.utf8(name), self.utf8(desc));
        self.add(Entry::NameAndType(n, d))
    }

    /// Index of a method reference.
    pub fn method(&mut self, class: &str, name: &str, desc: &str) -> u16 {
        let (c, nt) = (self.class(class), self.name_and_type(name, desc));
        self.add(Entry::Methodref(c, nt))
    }

    /// Index of a field reference.
    pub fn field(&mut self, class: &str, name: &str, desc: &str) -> u16 {
        let (c, nt) = (self.class(class), self.name_and_type(name, desc));
        self.add(Entry::Fieldref(c, nt))
    }

    fn utf8_at(&self, i: u16) -> Option<&[u8]> {
        match self.entries.get(i as usize) {
            Some(Entry::Utf8(s)) => Some(s),
            _ => None,
        }
    }
}

/// A prologue: code that runs first, with `ifeq` at `branch` (an offset in
/// `code`) jumping to the method's original code, and the operand stack it needs.
#[derive(Debug, Clone)]
pub struct Prologue {
    /// The instructions; the two bytes after `code[branch]` are filled in.
    pub code: Vec<u8>,
    /// Offset of the `ifeq` (or other two-byte-offset branch) to the original code.
    pub branch: usize,
    /// Operand stack depth the prologue needs.
    pub max_stack: u16,
}

/// Parses the constant pool of `class` and returns the pool, the offset of
/// its end, and the class's own name.
fn read_pool(class: &[u8]) -> Result<(ConstPool, usize, String)> {
    let mut r = Reader { b: class, pos: 0 };
    if r.u32()? != 0xCAFE_BABE {
        return Err(ClassError::Malformed("no magic"));
    }
    r.bytes(4)?;
    let count = r.u16()?;
    let mut entries = vec![Entry::Other];
    while entries.len() < count as usize {
        let tag = r.u8()?;
        let e = match tag {
            1 => {
                let n = r.u16()? as usize;
                Entry::Utf8(r.bytes(n)?.to_vec())
            }
            7 => Entry::Class(r.u16()?),
            9 => Entry::Fieldref(r.u16()?, r.u16()?),
            10 => Entry::Methodref(r.u16()?, r.u16()?),
            12 => Entry::NameAndType(r.u16()?, r.u16()?),
            8 | 16 | 19 | 20 => {
                r.u16()?;
                Entry::Other
            }
            15 => {
                r.bytes(3)?;
                Entry::Other
            }
            3 | 4 | 11 | 17 | 18 => {
                r.u32()?;
                Entry::Other
            }
            5 | 6 => {
                r.bytes(8)?;
                entries.push(Entry::Other);
                Entry::Other
            }
            t => return Err(ClassError::UnknownTag(t)),
        };
        entries.push(e);
    }
    let end = r.pos;
    r.u16()?; // access flags
    let this = r.u16()?;
    let pool = ConstPool { entries, added: Vec::new() };
    let name = match pool.entries.get(this as usize) {
        Some(Entry::Class(n)) => pool.utf8_at(*n).map(|s| String::from_utf8_lossy(s).into_owned()),
        _ => None,
    };
    Ok((pool, end, name.ok_or(ClassError::Malformed("this_class"))?))
}

fn skip_members(r: &mut Reader<'_>) -> Result<()> {
    let n = r.u16()?;
    for _ in 0..n {
        r.bytes(6)?;
        skip_attributes(r)?;
    }
    Ok(())
}

fn skip_attributes(r: &mut Reader<'_>) -> Result<()> {
    let n = r.u16()?;
    for _ in 0..n {
        r.u16()?;
        let len = r.u32()? as usize;
        r.bytes(len)?;
    }
    Ok(())
}

/// The class's name (`a/b/C`), from its bytes.
pub fn class_name(class: &[u8]) -> Result<String> {
    read_pool(class).map(|(_, _, name)| name)
}

/// Puts a prologue in front of the code of each method `(name, descriptor)`
/// for which `prologue` gives one. Methods it names but the class lacks are
/// an error, so a JDK whose classes changed is noticed rather than half-patched.
pub fn patch(
    class: &[u8],
    methods: &[(&str, &str)],
    mut prologue: impl FnMut(&mut ConstPool, &str, &str) -> Prologue,
) -> Result<Vec<u8>> {
    let (mut pool, pool_end, _) = read_pool(class)?;
    let mut r = Reader { b: class, pos: pool_end };
    r.bytes(6)?; // access, this, super
    let n = r.u16()? as usize;
    r.bytes(2 * n)?; // interfaces
    skip_members(&mut r)?; // fields
    let methods_start = r.pos;
    let method_count = r.u16()?;
    // (start, end, replacement) of each Code attribute rewritten.
    let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    let mut found = vec![false; methods.len()];
    for _ in 0..method_count {
        r.u16()?;
        let name = r.u16()?;
        let desc = r.u16()?;
        let (name, desc) = (
            String::from_utf8_lossy(pool.utf8_at(name).ok_or(ClassError::Malformed("method name"))?)
                .into_owned(),
            String::from_utf8_lossy(pool.utf8_at(desc).ok_or(ClassError::Malformed("method descriptor"))?)
                .into_owned(),
        );
        let wanted = methods.iter().position(|(n, d)| *n == name && *d == desc);
        let attrs = r.u16()?;
        let mut had_code = false;
        for _ in 0..attrs {
            let start = r.pos;
            let attr_name = r.u16()?;
            let len = r.u32()? as usize;
            let info = r.bytes(len)?;
            if let Some(w) = wanted {
                if pool.utf8_at(attr_name) == Some(b"Code") {
                    let p = prologue(&mut pool, &name, &desc);
                    let new_info = rewrite_code(&mut pool, info, &p)?;
                    let mut attr = attr_name.to_be_bytes().to_vec();
                    attr.extend_from_slice(&(new_info.len() as u32).to_be_bytes());
                    attr.extend_from_slice(&new_info);
                    edits.push((start, r.pos, attr));
                    found[w] = true;
                    had_code = true;
                }
            }
        }
        if let (Some(_), false) = (wanted, had_code) {
            return Err(ClassError::NoCode(format!("{name}{desc}")));
        }
    }
    if let Some(i) = found.iter().position(|f| !f) {
        return Err(ClassError::NoSuchMethod(format!("{}{}", methods[i].0, methods[i].1)));
    }
    // New constants go at the end of the pool; its count grows.
    let count = pool.entries.len();
    if count > u16::MAX as usize {
        return Err(ClassError::Malformed("constant pool full"));
    }
    let mut out = Vec::with_capacity(class.len() + pool.added.len() + 64 * edits.len());
    out.extend_from_slice(&class[..8]);
    out.extend_from_slice(&(count as u16).to_be_bytes());
    out.extend_from_slice(&class[10..pool_end]);
    out.extend_from_slice(&pool.added);
    let mut pos = pool_end;
    debug_assert!(methods_start > pool_end);
    for (start, end, attr) in edits {
        out.extend_from_slice(&class[pos..start]);
        out.extend_from_slice(&attr);
        pos = end;
    }
    out.extend_from_slice(&class[pos..]);
    Ok(out)
}

fn put16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_be_bytes());
}

/// A new Code attribute body: the prologue, then the original code, with
/// every code offset outside the code itself moved.
fn rewrite_code(pool: &mut ConstPool, info: &[u8], p: &Prologue) -> Result<Vec<u8>> {
    let mut r = Reader { b: info, pos: 0 };
    let max_stack = r.u16()?;
    let max_locals = r.u16()?;
    let code_len = r.u32()? as usize;
    let code = r.bytes(code_len)?;
    // Pad at the front, so the original code starts at a multiple of 4.
    let pad = (4 - p.code.len() % 4) % 4;
    let k = p.code.len() + pad;
    if code_len + k > 65535 {
        return Err(ClassError::Malformed("code too long to patch"));
    }
    let k16 = k as u16;
    let mut new_code = vec![0u8; pad]; // nop
    new_code.extend_from_slice(&p.code);
    let branch_at = pad + p.branch;
    let offset = (k - branch_at) as i16;
    new_code[branch_at + 1..branch_at + 3].copy_from_slice(&offset.to_be_bytes());
    new_code.extend_from_slice(code);

    let mut out = Vec::with_capacity(info.len() + k + 16);
    put16(&mut out, max_stack.max(p.max_stack));
    put16(&mut out, max_locals);
    out.extend_from_slice(&(new_code.len() as u32).to_be_bytes());
    out.extend_from_slice(&new_code);
    let handlers = r.u16()?;
    put16(&mut out, handlers);
    for _ in 0..handlers {
        for _ in 0..3 {
            put16(&mut out, r.u16()? + k16);
        }
        put16(&mut out, r.u16()?); // catch type
    }
    let attrs = r.u16()?;
    let mut kept: Vec<(u16, Vec<u8>)> = Vec::new();
    let mut had_map = false;
    for _ in 0..attrs {
        let name_idx = r.u16()?;
        let len = r.u32()? as usize;
        let body = r.bytes(len)?;
        let name = pool.utf8_at(name_idx).unwrap_or(b"");
        let new = match name {
            b"LineNumberTable" => Some(shift_table(body, 4, k16)?),
            b"LocalVariableTable" | b"LocalVariableTypeTable" => Some(shift_table(body, 10, k16)?),
            b"StackMapTable" => {
                had_map = true;
                Some(shift_stack_map(body, k16)?)
            }
            // Type annotations on code name code offsets this editor does
            // not track: dropped (they do not affect execution).
            _ => None,
        };
        if let Some(body) = new {
            kept.push((name_idx, body));
        }
    }
    if !had_map {
        let name = pool.utf8("StackMapTable");
        kept.push((name, shift_stack_map(&[0, 0], k16)?));
    }
    put16(&mut out, kept.len() as u16);
    for (name, body) in kept {
        put16(&mut out, name);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
    }
    Ok(out)
}

/// LineNumberTable / LocalVariableTable: a count, then entries of `size`
/// bytes starting with a u2 start_pc.
fn shift_table(body: &[u8], size: usize, k: u16) -> Result<Vec<u8>> {
    let mut r = Reader { b: body, pos: 0 };
    let n = r.u16()?;
    let mut out = Vec::with_capacity(body.len());
    put16(&mut out, n);
    for _ in 0..n {
        put16(&mut out, r.u16()? + k);
        out.extend_from_slice(r.bytes(size - 2)?);
    }
    Ok(out)
}

/// Copies one verification_type_info, moving `Uninitialized(offset)`.
fn copy_vti(r: &mut Reader<'_>, out: &mut Vec<u8>, k: u16) -> Result<()> {
    let tag = r.u8()?;
    out.push(tag);
    match tag {
        0..=6 => {}
        7 => put16(out, r.u16()?),
        8 => put16(out, r.u16()? + k),
        _ => return Err(ClassError::Malformed("verification type")),
    }
    Ok(())
}

#[derive(Debug)]
enum FrameKind {
    Same,
    SameLocals1,
    Other(u8),
}

fn encode_frame(out: &mut Vec<u8>, kind: &FrameKind, delta: u16, rest: &[u8]) {
    match kind {
        FrameKind::Same if delta <= 63 => out.push(delta as u8),
        FrameKind::Same => {
            out.push(251);
            put16(out, delta);
        }
        FrameKind::SameLocals1 if delta <= 63 => out.push(64 + delta as u8),
        FrameKind::SameLocals1 => {
            out.push(247);
            put16(out, delta);
        }
        FrameKind::Other(t) => {
            out.push(*t);
            put16(out, delta);
        }
    }
    out.extend_from_slice(rest);
}

/// The StackMapTable for code moved by `k` bytes behind a prologue whose
/// branch lands at `k` with the method's initial frame: a `same_frame` at
/// `k` (unless the original code already has a frame at its start), then
/// the original frames, the first one's offset moved.
fn shift_stack_map(body: &[u8], k: u16) -> Result<Vec<u8>> {
    let mut r = Reader { b: body, pos: 0 };
    let n = r.u16()?;
    let mut frames = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let t = r.u8()?;
        let mut rest = Vec::new();
        let (kind, delta) = match t {
            0..=63 => (FrameKind::Same, t as u16),
            64..=127 => {
                copy_vti(&mut r, &mut rest, k)?;
                (FrameKind::SameLocals1, (t - 64) as u16)
            }
            247 => {
                let d = r.u16()?;
                copy_vti(&mut r, &mut rest, k)?;
                (FrameKind::SameLocals1, d)
            }
            248..=250 => (FrameKind::Other(t), r.u16()?),
            251 => (FrameKind::Same, r.u16()?),
            252..=254 => {
                let d = r.u16()?;
                for _ in 0..(t - 251) {
                    copy_vti(&mut r, &mut rest, k)?;
                }
                (FrameKind::Other(t), d)
            }
            255 => {
                let d = r.u16()?;
                for _ in 0..2 {
                    let count = r.u16()?;
                    put16(&mut rest, count);
                    for _ in 0..count {
                        copy_vti(&mut r, &mut rest, k)?;
                    }
                }
                (FrameKind::Other(t), d)
            }
            _ => return Err(ClassError::Malformed("stack map frame type")),
        };
        frames.push((kind, delta, rest));
    }
    let mut out = Vec::with_capacity(body.len() + 4);
    let first_at_zero = frames.first().is_some_and(|f| f.1 == 0);
    put16(&mut out, n + u16::from(!first_at_zero));
    if !first_at_zero {
        encode_frame(&mut out, &FrameKind::Same, k, &[]);
    }
    for (i, (kind, delta, rest)) in frames.iter().enumerate() {
        let delta = match (i, first_at_zero) {
            (0, true) => k,          // the original start, now at k
            (0, false) => delta - 1, // after the new frame at k
            _ => *delta,
        };
        encode_frame(&mut out, kind, delta, rest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_map_gets_a_frame_at_the_original_start() {
        // Two frames: same_frame at 10, then same_locals_1 (int) 5 later.
        let body = [0, 2, 10, 64 + 4, 1];
        let out = shift_stack_map(&body, 20).unwrap();
        assert_eq!(out, vec![0, 3, 20, 9, 64 + 4, 1]);
        // A frame at 0 becomes the frame at k, in its extended form if needed.
        let body = [0, 1, 0];
        assert_eq!(shift_stack_map(&body, 100).unwrap(), vec![0, 1, 251, 0, 100]);
        // Uninitialized(offset) moves with the code.
        let body = [0, 1, 255, 0, 30, 0, 0, 0, 1, 8, 0, 7];
        assert_eq!(shift_stack_map(&body, 8).unwrap(), vec![0, 2, 8, 255, 0, 29, 0, 0, 0, 1, 8, 0, 15]);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(class_name(b"not a class").is_err());
        assert_eq!(class_name(&[0xCA, 0xFE, 0xBA, 0xBE, 0, 0]), Err(ClassError::Truncated));
    }
}
