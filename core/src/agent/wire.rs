//! Protobuf wire reading over one frame's bytes, by prost's rules: the
//! frame reader decodes the few fields of `agent.proto` straight from the
//! read buffer instead of building prost's owned messages (a `Vec` per
//! address, a merge loop per message) for every chunk a JVM hands over.
//! Where prost accepts a frame this reads the same values; where prost
//! refuses one this refuses it too (the fuzz target `agent_frames` holds the
//! two to that).

use std::ops::Range;

/// Why the bytes are not a message (the frame is refused whatever it is):
/// prost's words for each. One byte, so results stay in registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum Malformed {
    #[error("invalid varint")]
    Varint,
    #[error("invalid key value")]
    Key,
    #[error("invalid wire type")]
    WireType,
    #[error("invalid tag value: 0")]
    Tag,
    #[error("buffer underflow")]
    Underflow,
    #[error("invalid string value: data is not UTF-8 encoded")]
    Utf8,
    #[error("recursion limit reached")]
    Recursion,
    #[error("unexpected end group tag")]
    EndGroup,
}

/// How deep groups of unknown fields may nest, as prost counts it: the
/// frame's own fields start at this budget, each message one down.
pub(super) const RECURSION_LIMIT: u32 = 100;

/// Protobuf wire types.
pub(super) const VARINT: u8 = 0;
const FIXED64: u8 = 1;
pub(super) const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// A cursor over one message's bytes (`end` is the message's end in the
/// frame; positions are the frame's, so a field's bytes are a range of it).
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    /// The whole frame as one message.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0, end: bytes.len() }
    }

    /// Whether the message has more fields.
    #[inline(always)]
    pub fn more(&self) -> bool {
        self.pos < self.end
    }

    /// A varint: at most ten bytes, the tenth 0 or 1.
    #[inline(always)]
    pub fn varint(&mut self) -> Result<u64, Malformed> {
        let rest = &self.bytes[self.pos..self.end];
        if let Some(&byte) = rest.first() {
            if byte < 0x80 {
                self.pos += 1;
                return Ok(u64::from(byte));
            }
        }
        let mut v: u64 = 0;
        for (i, &byte) in rest.iter().take(10).enumerate() {
            if i == 9 && byte > 1 {
                break;
            }
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                self.pos += i + 1;
                return Ok(v);
            }
        }
        Err(Malformed::Varint)
    }

    /// A field's key: `(field number, wire type)`.
    #[inline(always)]
    pub fn key(&mut self) -> Result<(u32, u8), Malformed> {
        let key = self.varint()?;
        let key = u32::try_from(key).map_err(|_| Malformed::Key)?;
        let wire = (key & 7) as u8;
        if wire > FIXED32 {
            return Err(Malformed::WireType);
        }
        if key >> 3 == 0 {
            return Err(Malformed::Tag);
        }
        Ok((key >> 3, wire))
    }

    /// A varint field's value (the key said `wire`).
    #[inline(always)]
    pub fn uint(&mut self, wire: u8) -> Result<u64, Malformed> {
        if wire != VARINT {
            return Err(Malformed::WireType);
        }
        self.varint()
    }

    /// A length-delimited field's bytes, as a range of the frame.
    #[inline(always)]
    pub fn span(&mut self, wire: u8) -> Result<Range<usize>, Malformed> {
        if wire != LEN {
            return Err(Malformed::WireType);
        }
        let len = self.varint()?;
        if len > (self.end - self.pos) as u64 {
            return Err(Malformed::Underflow);
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(start..self.pos)
    }

    /// A string field: its bytes, which must be UTF-8 (prost checks every
    /// occurrence, even one a later occurrence replaces).
    #[inline(always)]
    pub fn text(&mut self, wire: u8) -> Result<Range<usize>, Malformed> {
        let span = self.span(wire)?;
        simdutf8::basic::from_utf8(&self.bytes[span.clone()]).map_err(|_| Malformed::Utf8)?;
        Ok(span)
    }

    /// A message field: a reader over its bytes, one recursion level down.
    #[inline(always)]
    pub fn message(&mut self, wire: u8, budget: u32) -> Result<(Reader<'a>, u32), Malformed> {
        if budget == 0 {
            return Err(Malformed::Recursion);
        }
        let span = self.span(wire)?;
        Ok((Reader { bytes: self.bytes, pos: span.start, end: span.end }, budget - 1))
    }

    /// Skips a field this reader does not know, as prost does: any wire
    /// type but a stray end of group, groups nested within the budget.
    pub fn skip(&mut self, field: u32, wire: u8, budget: u32) -> Result<(), Malformed> {
        if budget == 0 {
            return Err(Malformed::Recursion);
        }
        let len = match wire {
            VARINT => {
                self.varint()?;
                0
            }
            FIXED64 => 8,
            FIXED32 => 4,
            LEN => self.varint()?,
            START_GROUP => loop {
                let (inner, inner_wire) = self.key()?;
                if inner_wire == END_GROUP {
                    if inner != field {
                        return Err(Malformed::EndGroup);
                    }
                    break 0;
                }
                self.skip(inner, inner_wire, budget - 1)?;
            },
            _ => return Err(Malformed::EndGroup),
        };
        if len > (self.end - self.pos) as u64 {
            return Err(Malformed::Underflow);
        }
        self.pos += len as usize;
        Ok(())
    }
}
