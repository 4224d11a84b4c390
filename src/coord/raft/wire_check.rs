//! A structural check of a peer's raft message bytes before protobuf 2 parses them: the bytes
//! are walked as protobuf wire format against raft-rs's `eraftpb` schema (Message, Entry,
//! Snapshot, SnapshotMetadata, ConfState), and anything a well-formed raft message cannot
//! contain is refused with the byte offset, the field path and what is wrong.
//!
//! Why: RUSTSEC-2024-0437 lists every protobuf release before 3.7.2: skipping unknown *group*
//! fields had no depth limit, so a few hundred kilobytes of nested start-group tags overflow
//! the stack. That recursion is in protobuf 3's `skip_group`; the protobuf 2.28.0 raft-proto
//! links skips one group in a loop and answers a nested one with an error (a test here shows
//! it, in a child process). So this check is not what stops that bomb today: it is what keeps
//! it stopped whichever protobuf is linked, and what turns any malformed peer message into a
//! refusal naming the byte and the field. The raft schema has no groups at all, so wire types
//! 3 and 4 are refused everywhere, in known and unknown fields. The check is pure: no I/O, no
//! allocation that grows with anything the peer controls (lengths are compared, never
//! allocated), and recursion only along the schema's own nesting (Message → Snapshot →
//! SnapshotMetadata → ConfState, and Message → Entry), at most [`MAX_NESTING`] levels whatever
//! the bytes say.
//!
//! What passes: every field of the schema with its own wire type (ConfState's repeated u64 both
//! packed and one value per tag, as protobuf 2 reads both), and unknown fields of wire types 0,
//! 1, 2 and 5, which are checked for length and not descended into — protobuf 2 keeps them as
//! opaque bytes in `unknown_fields` and never parses inside them. Tags and lengths above 32
//! bits are refused, because protobuf 2 silently truncates them to 32 bits and would then read
//! the bytes differently from this check. Enum values are left to the parser (an unknown one
//! is a parse error there, not a crash). This module never parses into raft types and never
//! decides whether a message is acceptable for raft; it only guarantees that what it accepts is
//! read by protobuf 2 the same way it was walked here.

use std::fmt;

/// How many message levels lie below the top-level Message in the schema (Message → Snapshot →
/// SnapshotMetadata → ConfState); the walk never goes deeper.
pub const MAX_NESTING: usize = 3;

/// A varint never has more than this many bytes.
const MAX_VARINT_BYTES: usize = 10;

/// How a schema field is written on the wire.
#[derive(Clone, Copy)]
enum Kind {
    /// uint64, int64, bool or enum: wire type 0.
    Varint,
    /// bytes: wire type 2, not looked into.
    Bytes,
    /// A singular or repeated embedded message: wire type 2, walked against its schema.
    Message(&'static Schema),
    /// repeated uint64: wire type 0 one value per tag, or wire type 2 packed.
    RepeatedVarint,
}

struct Field {
    number: u32,
    name: &'static str,
    kind: Kind,
    /// Repeated message fields are named with their index in error paths (`entries[3]`).
    repeated: bool,
}

struct Schema {
    fields: &'static [Field],
}

impl Schema {
    /// The field with this number and its position in the table.
    fn field(&self, number: u32) -> Option<(usize, &'static Field)> {
        self.fields.iter().enumerate().find(|(_, f)| f.number == number)
    }
}

const fn field(number: u32, name: &'static str, kind: Kind) -> Field {
    Field { number, name, kind, repeated: false }
}

/// raft-proto 0.7.0 `proto/eraftpb.proto`, the messages a peer's raft Message can contain.
static MESSAGE: Schema = Schema {
    fields: &[
        field(1, "msg_type", Kind::Varint),
        field(2, "to", Kind::Varint),
        field(3, "from", Kind::Varint),
        field(4, "term", Kind::Varint),
        field(5, "log_term", Kind::Varint),
        field(6, "index", Kind::Varint),
        Field { number: 7, name: "entries", kind: Kind::Message(&ENTRY), repeated: true },
        field(8, "commit", Kind::Varint),
        field(9, "snapshot", Kind::Message(&SNAPSHOT)),
        field(10, "reject", Kind::Varint),
        field(11, "reject_hint", Kind::Varint),
        field(12, "context", Kind::Bytes),
        field(13, "request_snapshot", Kind::Varint),
        field(14, "deprecated_priority", Kind::Varint),
        field(15, "commit_term", Kind::Varint),
        field(16, "priority", Kind::Varint),
    ],
};

static ENTRY: Schema = Schema {
    fields: &[
        field(1, "entry_type", Kind::Varint),
        field(2, "term", Kind::Varint),
        field(3, "index", Kind::Varint),
        field(4, "data", Kind::Bytes),
        field(5, "sync_log", Kind::Varint),
        field(6, "context", Kind::Bytes),
    ],
};

static SNAPSHOT: Schema =
    Schema { fields: &[field(1, "data", Kind::Bytes), field(2, "metadata", Kind::Message(&SNAPSHOT_METADATA))] };

static SNAPSHOT_METADATA: Schema = Schema {
    fields: &[
        field(1, "conf_state", Kind::Message(&CONF_STATE)),
        field(2, "index", Kind::Varint),
        field(3, "term", Kind::Varint),
    ],
};

static CONF_STATE: Schema = Schema {
    fields: &[
        field(1, "voters", Kind::RepeatedVarint),
        field(2, "learners", Kind::RepeatedVarint),
        field(3, "voters_outgoing", Kind::RepeatedVarint),
        field(4, "learners_next", Kind::RepeatedVarint),
        field(5, "auto_leave", Kind::Varint),
    ],
};

/// One step into an embedded message: the field's number, and its index when it repeats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Step {
    field: u32,
    index: Option<u32>,
}

/// Where in the message tree a problem is: the embedded messages from the top-level Message
/// down (`snapshot.metadata.conf_state`, `entries[2]`). Fixed size: the schema bounds it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldPath {
    steps: [Step; MAX_NESTING],
    len: usize,
}

impl FieldPath {
    /// The path one level further down, or `None` past the schema's depth.
    fn child(self, field: u32, index: Option<u64>) -> Option<FieldPath> {
        let mut next = self;
        let index = index.map(|i| u32::try_from(i).unwrap_or(u32::MAX));
        *next.steps.get_mut(self.len)? = Step { field, index };
        next.len += 1;
        Some(next)
    }

    fn steps(&self) -> &[Step] {
        &self.steps[..self.len.min(MAX_NESTING)]
    }

    /// The schema of the message this path ends in.
    fn schema(&self) -> &'static Schema {
        self.steps().iter().fold(&MESSAGE, |schema, step| match schema.field(step.field) {
            Some((_, Field { kind: Kind::Message(inner), .. })) => inner,
            _ => schema,
        })
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == 0 {
            return f.write_str("the top-level Message");
        }
        let mut schema = &MESSAGE;
        for (i, step) in self.steps().iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            let known = schema.field(step.field).map(|(_, known)| known);
            match known {
                Some(known) => f.write_str(known.name)?,
                None => write!(f, "field {}", step.field)?,
            }
            if let Some(index) = step.index {
                write!(f, "[{index}]")?;
            }
            if let Some(Field { kind: Kind::Message(inner), .. }) = known {
                schema = inner;
            }
        }
        Ok(())
    }
}

/// Where a refused byte is: its offset in the whole message, the embedded message it is in,
/// and the number of the field it belongs to once its tag has been read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub offset: usize,
    pub path: FieldPath,
    pub field: Option<u32>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "byte {} in {}", self.offset, self.path)?;
        let Some(number) = self.field else { return f.write_str(", in a field tag") };
        match self.path.schema().field(number) {
            Some((_, known)) => write!(f, ", field {number} ({})", known.name),
            None => write!(f, ", field {number} (not in the raft schema)"),
        }
    }
}

/// Why a peer's bytes are not a raft message this member will parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireRefusal {
    #[error(
        "raft message refused at {at}: a {} tag (wire type {wire_type}); raft messages have no groups, and nested unknown groups are what RUSTSEC-2024-0437 (unbounded recursion in protobuf's group skipping) feeds on",
        if *.wire_type == 3 { "start-group" } else { "end-group" }
    )]
    Group { at: Location, wire_type: u8 },
    #[error("raft message refused at {at}: wire type {wire_type} does not exist (protobuf has 0 to 5)")]
    NoSuchWireType { at: Location, wire_type: u8 },
    #[error("raft message refused at {at}: field number 0 does not exist in protobuf")]
    FieldZero { at: Location },
    #[error("raft message refused at {at}: a tag wider than 32 bits, which protobuf 2 would truncate")]
    TagTooWide { at: Location },
    #[error("raft message refused at {at}: a varint longer than {MAX_VARINT_BYTES} bytes")]
    VarintTooLong { at: Location },
    #[error("raft message refused at {at}: a {MAX_VARINT_BYTES}-byte varint with bits beyond 64")]
    VarintOverflow { at: Location },
    #[error("raft message refused at {at}: the {within} ends inside a varint")]
    VarintTruncated { at: Location, within: &'static str },
    #[error("raft message refused at {at}: a length of {length} bytes runs past the end ({remaining} bytes remain)")]
    LengthPastEnd { at: Location, length: u64, remaining: usize },
    #[error("raft message refused at {at}: a {width}-byte fixed value, but only {remaining} bytes remain")]
    FixedTruncated { at: Location, width: usize, remaining: usize },
    #[error("raft message refused at {at}: the raft schema writes this field with wire type {expected}, found {found}")]
    WrongWireType { at: Location, expected: &'static str, found: u8 },
    #[error("raft message refused at {at}: embedded messages nest deeper than the raft schema ({MAX_NESTING} levels)")]
    TooDeep { at: Location },
}

/// What can be wrong with one varint, before it is placed.
enum VarintFault {
    TooLong,
    Overflow,
    Truncated,
}

/// Reads one embedded message's bytes; `base` is where they start in the whole message.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Cursor<'a> {
    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn varint(&mut self) -> Result<u64, VarintFault> {
        let mut value = 0u64;
        for i in 0..MAX_VARINT_BYTES {
            let Some(&b) = self.bytes.get(self.pos + i) else { return Err(VarintFault::Truncated) };
            if i == MAX_VARINT_BYTES - 1 && b > 1 {
                return Err(if b & 0x80 != 0 { VarintFault::TooLong } else { VarintFault::Overflow });
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.pos += i + 1;
                return Ok(value);
            }
        }
        Err(VarintFault::TooLong)
    }

    /// The next `n` bytes, as a cursor placed where they start, or `None` past the end.
    fn take(&mut self, n: usize) -> Option<Cursor<'a>> {
        let end = self.pos.checked_add(n).filter(|end| *end <= self.bytes.len())?;
        let inner = Cursor { bytes: &self.bytes[self.pos..end], pos: 0, base: self.offset() };
        self.pos = end;
        Some(inner)
    }
}

fn varint_refusal(fault: VarintFault, at: Location, within: &'static str) -> WireRefusal {
    match fault {
        VarintFault::TooLong => WireRefusal::VarintTooLong { at },
        VarintFault::Overflow => WireRefusal::VarintOverflow { at },
        VarintFault::Truncated => WireRefusal::VarintTruncated { at, within },
    }
}

/// Checks that `bytes` is a raft `eraftpb::Message` as protobuf 2 would read it, with no group
/// anywhere; see the module doc for what passes.
pub fn check_raft_message(bytes: &[u8]) -> Result<(), WireRefusal> {
    walk(Cursor { bytes, pos: 0, base: 0 }, &MESSAGE, FieldPath::default())
}

/// Walks one message's fields to its end. Recursion follows `schema` only.
fn walk(mut cursor: Cursor<'_>, schema: &'static Schema, path: FieldPath) -> Result<(), WireRefusal> {
    // Occurrences of each repeated message field so far, to name `entries[i]`; the schema has
    // fewer than 32 fields per message.
    let mut seen = [0u64; 32];
    while cursor.remaining() > 0 {
        let (number, wire_type, at) = read_tag(&mut cursor, path)?;
        match schema.field(number) {
            Some((slot, known)) => {
                let index = known.repeated.then(|| seen.get(slot).copied().unwrap_or(0));
                if let Some(count) = seen.get_mut(slot) {
                    *count += 1;
                }
                check_known(&mut cursor, known, wire_type, at, index)?;
            }
            None => skip_unknown(&mut cursor, wire_type, at)?,
        }
    }
    Ok(())
}

/// Reads a tag: (field number, wire type, where the tag starts). Groups, known field or not,
/// and tags protobuf cannot have are refused here, before the field is looked up.
fn read_tag(cursor: &mut Cursor<'_>, path: FieldPath) -> Result<(u32, u8, Location), WireRefusal> {
    let at = Location { offset: cursor.offset(), path, field: None };
    let tag = cursor.varint().map_err(|fault| varint_refusal(fault, at, "message"))?;
    let tag = u32::try_from(tag).map_err(|_| WireRefusal::TagTooWide { at })?;
    let number = tag >> 3;
    let wire_type = (tag & 7) as u8;
    let at = Location { field: Some(number), ..at };
    match wire_type {
        3 | 4 => Err(WireRefusal::Group { at, wire_type }),
        6 | 7 => Err(WireRefusal::NoSuchWireType { at, wire_type }),
        _ if number == 0 => Err(WireRefusal::FieldZero { at }),
        _ => Ok((number, wire_type, at)),
    }
}

/// A length-delimited payload: its length varint, then that many bytes.
fn length_delimited<'a>(cursor: &mut Cursor<'a>, at: Location) -> Result<Cursor<'a>, WireRefusal> {
    let at = Location { offset: cursor.offset(), ..at };
    let length = cursor.varint().map_err(|fault| varint_refusal(fault, at, "message"))?;
    let remaining = cursor.remaining();
    let past_end = WireRefusal::LengthPastEnd { at, length, remaining };
    // protobuf 2 reads some lengths as 32 bits: a longer one would be read differently there.
    let length = u32::try_from(length).map_err(|_| past_end)?;
    cursor.take(length as usize).ok_or(past_end)
}

fn fixed(cursor: &mut Cursor<'_>, width: usize, at: Location) -> Result<(), WireRefusal> {
    let at = Location { offset: cursor.offset(), ..at };
    let remaining = cursor.remaining();
    cursor.take(width).map(|_| ()).ok_or(WireRefusal::FixedTruncated { at, width, remaining })
}

fn varint_value(cursor: &mut Cursor<'_>, at: Location, within: &'static str) -> Result<(), WireRefusal> {
    let at = Location { offset: cursor.offset(), ..at };
    cursor.varint().map(|_| ()).map_err(|fault| varint_refusal(fault, at, within))
}

fn check_known(
    cursor: &mut Cursor<'_>,
    known: &'static Field,
    wire_type: u8,
    at: Location,
    index: Option<u64>,
) -> Result<(), WireRefusal> {
    let wrong = |expected| WireRefusal::WrongWireType { at, expected, found: wire_type };
    match (known.kind, wire_type) {
        (Kind::Varint | Kind::RepeatedVarint, 0) => varint_value(cursor, at, "message"),
        (Kind::Varint, _) => Err(wrong("0 (varint)")),
        (Kind::Bytes, 2) => length_delimited(cursor, at).map(|_| ()),
        (Kind::Message(schema), 2) => {
            let inner = length_delimited(cursor, at)?;
            let path = at.path.child(known.number, index).ok_or(WireRefusal::TooDeep { at })?;
            walk(inner, schema, path)
        }
        (Kind::Bytes | Kind::Message(_), _) => Err(wrong("2 (length-delimited)")),
        (Kind::RepeatedVarint, 2) => {
            let mut packed = length_delimited(cursor, at)?;
            while packed.remaining() > 0 {
                varint_value(&mut packed, at, "packed run")?;
            }
            Ok(())
        }
        (Kind::RepeatedVarint, _) => Err(wrong("0 (varint) or 2 (packed)")),
    }
}

/// Skips an unknown field of wire type 0, 1, 2 or 5 without looking inside it (groups never
/// reach here).
fn skip_unknown(cursor: &mut Cursor<'_>, wire_type: u8, at: Location) -> Result<(), WireRefusal> {
    match wire_type {
        0 => varint_value(cursor, at, "message"),
        1 => fixed(cursor, 8, at),
        2 => length_delimited(cursor, at).map(|_| ()),
        5 => fixed(cursor, 4, at),
        other => Err(WireRefusal::NoSuchWireType { at, wire_type: other }),
    }
}

#[cfg(test)]
mod tests;
