//! The run's trace context: its trace id, and the W3C `traceparent` an
//! outgoing call carries.

/// The trace id of a run: FNV-1a (128-bit) of its id, never zero. Every
/// process of a run (a resume, a worker) computes the same one from what the
/// store keeps, with nothing to coordinate.
pub fn trace_id(run_id: &str) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h = OFFSET;
    for b in run_id.bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h.max(1)
}

/// A W3C `traceparent` header value naming span `span` of trace `trace`.
pub fn traceparent(trace: u128, span: u64, sampled: bool) -> String {
    // Written digit by digit: every outgoing call sends one, and `format!`'s
    // padded hex of a `u128` cost more than the rest of the header.
    let mut header = String::with_capacity(55);
    header.push_str("00-");
    push_hex(&mut header, trace, 32);
    header.push('-');
    push_hex(&mut header, u128::from(span), 16);
    header.push_str(if sampled { "-01" } else { "-00" });
    header
}

/// The low `digits` hex digits of `n`, zero-padded, lower case.
fn push_hex(out: &mut String, n: u128, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..digits).rev() {
        out.push(char::from(HEX[((n >> (shift * 4)) & 0xf) as usize]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_w3c() {
        let t = trace_id("r1");
        let header = traceparent(t, 0xabc, true);
        assert_eq!(header.len(), 55);
        assert!(header.starts_with("00-"));
        assert!(header.ends_with("-0000000000000abc-01"));
        assert_eq!(trace_id("r1"), t);
        assert_ne!(trace_id("r2"), t);
        for (trace, span) in [(0, 0), (u128::MAX, u64::MAX), (t, 1 << 63), (1 << 64, 0xf0)] {
            assert_eq!(
                traceparent(trace, span, false),
                format!("00-{trace:032x}-{span:016x}-00")
            );
        }
    }
}
