//! Protobuf wire encoding of the few OTLP messages flowc sends
//! (`opentelemetry/proto/{collector/trace,trace,common,resource}/v1`), written
//! straight into one growing buffer: no message structs, no per-field
//! allocation. A message's length is written after its content (one byte is
//! reserved, and the content moved in the rare case it is 128 bytes or
//! longer), so a span is encoded in one pass.

/// Wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

pub(super) fn uint(out: &mut Vec<u8>, field: u32, v: u64) {
    tag(out, field, VARINT);
    varint(out, v);
}

/// An `int64` (two's complement: a negative number takes ten bytes).
pub(super) fn int(out: &mut Vec<u8>, field: u32, v: i64) {
    uint(out, field, v as u64);
}

pub(super) fn fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
    tag(out, field, FIXED64);
    out.extend_from_slice(&v.to_le_bytes());
}

pub(super) fn fixed32(out: &mut Vec<u8>, field: u32, v: u32) {
    tag(out, field, FIXED32);
    out.extend_from_slice(&v.to_le_bytes());
}

pub(super) fn double(out: &mut Vec<u8>, field: u32, v: f64) {
    fixed64(out, field, v.to_bits());
}

pub(super) fn bytes(out: &mut Vec<u8>, field: u32, v: &[u8]) {
    tag(out, field, LEN);
    varint(out, v.len() as u64);
    out.extend_from_slice(v);
}

/// A string made of parts (`"step " + name`) without joining them first.
pub(super) fn string_of(out: &mut Vec<u8>, field: u32, parts: &[&str]) {
    tag(out, field, LEN);
    varint(out, parts.iter().map(|p| p.len() as u64).sum());
    for p in parts {
        out.extend_from_slice(p.as_bytes());
    }
}

/// A length-delimited field whose content `content` writes.
pub(super) fn message(out: &mut Vec<u8>, field: u32, content: impl FnOnce(&mut Vec<u8>)) {
    tag(out, field, LEN);
    let at = out.len();
    out.push(0);
    content(out);
    close(out, at);
}

/// Writes the length of the content after `at` (its reserved byte).
fn close(out: &mut Vec<u8>, at: usize) {
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
        return;
    }
    let mut prefix = [0u8; 10];
    let mut n = 0;
    let mut v = len as u64;
    while v >= 0x80 {
        prefix[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    prefix[n] = v as u8;
    out[at] = prefix[0];
    out.splice(at + 1..at + 1, prefix[1..=n].iter().copied());
}

/// `AnyValue` fields.
pub(super) mod any {
    pub const STRING: u32 = 1;
    pub const BOOL: u32 = 2;
    pub const INT: u32 = 3;
    pub const DOUBLE: u32 = 4;
    pub const ARRAY: u32 = 5;
    /// `ArrayValue.values`.
    pub const ARRAY_VALUES: u32 = 1;
}

/// A `KeyValue` in field `field` (`attributes` of a span, an event or a
/// resource) whose value `value` writes as `AnyValue` fields.
pub(super) fn key_value(
    out: &mut Vec<u8>,
    field: u32,
    key: &str,
    value: impl FnOnce(&mut Vec<u8>),
) {
    message(out, field, |out| {
        bytes(out, 1, key.as_bytes());
        message(out, 2, value);
    });
}

pub(super) fn attr_str(out: &mut Vec<u8>, field: u32, key: &str, v: &str) {
    key_value(out, field, key, |out| bytes(out, any::STRING, v.as_bytes()));
}

pub(super) fn attr_int(out: &mut Vec<u8>, field: u32, key: &str, v: i64) {
    key_value(out, field, key, |out| int(out, any::INT, v));
}

pub(super) fn attr_double(out: &mut Vec<u8>, field: u32, key: &str, v: f64) {
    key_value(out, field, key, |out| double(out, any::DOUBLE, v));
}

pub(super) fn attr_bool(out: &mut Vec<u8>, field: u32, key: &str, v: bool) {
    key_value(out, field, key, |out| uint(out, any::BOOL, u64::from(v)));
}

/// `ExportTraceServiceRequest { resource_spans: [ResourceSpans { resource,
/// scope_spans: [ScopeSpans { scope, spans }] }] }` around `spans`, already
/// encoded as `ScopeSpans.spans` fields (tag 2). `resource` is an encoded
/// `Resource`, `scope` an encoded `InstrumentationScope`.
pub(super) fn request(resource: &[u8], scope: &[u8], spans: &[u8]) -> Vec<u8> {
    let scope_spans = field_len(scope.len()) + spans.len();
    let resource_spans = field_len(resource.len()) + field_len(scope_spans);
    let mut out = Vec::with_capacity(field_len(resource_spans));
    tag(&mut out, 1, LEN);
    varint(&mut out, resource_spans as u64);
    bytes(&mut out, 1, resource);
    tag(&mut out, 2, LEN);
    varint(&mut out, scope_spans as u64);
    bytes(&mut out, 1, scope);
    out.extend_from_slice(spans);
    out
}

/// The size of a length-delimited field (one-byte tag) holding `len` bytes.
fn field_len(len: usize) -> usize {
    let mut n = 1;
    let mut v = len as u64;
    while v >= 0x80 {
        n += 1;
        v >>= 7;
    }
    1 + n + len
}

/// `rejected_spans` of an `ExportTraceServiceResponse`'s `partial_success`
/// (0 when absent); `None` for bytes that are not one.
pub(super) fn rejected_spans(body: &[u8]) -> Option<u64> {
    let mut rejected = 0;
    for (field, value) in fields(body)? {
        if let (1, Field::Len(partial)) = (field, value) {
            for (field, value) in fields(partial)? {
                if let (1, Field::Varint(n)) = (field, value) {
                    rejected = n;
                }
            }
        }
    }
    Some(rejected)
}

enum Field<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Fixed,
}

/// The top-level fields of a message.
fn fields(mut body: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    fn read_varint(body: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = body.split_first()?;
            *body = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !body.is_empty() {
        let key = read_varint(&mut body)?;
        let value = match (key & 7) as u8 {
            VARINT => Field::Varint(read_varint(&mut body)?),
            LEN => {
                let len = usize::try_from(read_varint(&mut body)?).ok()?;
                let (value, rest) = (body.get(..len)?, body.get(len..)?);
                body = rest;
                Field::Len(value)
            }
            FIXED64 => {
                body = body.get(8..)?;
                Field::Fixed
            }
            FIXED32 => {
                body = body.get(4..)?;
                Field::Fixed
            }
            _ => return None,
        };
        out.push((key >> 3, value));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_get_multi_byte_lengths() {
        let mut out = Vec::new();
        message(&mut out, 1, |out| out.extend_from_slice(&[7; 300]));
        // tag 1/LEN, then 300 as a varint (0xac 0x02), then the content.
        assert_eq!(&out[..3], &[0x0a, 0xac, 0x02]);
        assert_eq!(out.len(), 3 + 300);
        let parsed = fields(&out).expect("one field");
        assert!(matches!(parsed[..], [(1, Field::Len(c))] if c.len() == 300));
    }

    #[test]
    fn request_lengths_match_the_content() {
        let mut spans = Vec::new();
        message(&mut spans, 2, |out| bytes(out, 5, &[b'x'; 200]));
        let body = request(&[1, 2], &[3], &spans);
        let top = fields(&body).expect("a request");
        let [(1, Field::Len(resource_spans))] = top[..] else {
            panic!("one ResourceSpans");
        };
        assert_eq!(resource_spans.len(), body.len() - 3);
        let inner = fields(resource_spans).expect("its fields");
        assert!(matches!(inner[1], (2, Field::Len(s)) if s.ends_with(&spans)));
    }

    #[test]
    fn partial_success_is_read() {
        assert_eq!(rejected_spans(&[]), Some(0));
        let mut body = Vec::new();
        message(&mut body, 1, |out| {
            uint(out, 1, 3);
            bytes(out, 2, b"too old");
        });
        assert_eq!(rejected_spans(&body), Some(3));
        assert_eq!(rejected_spans(&[0xff]), None);
    }
}
