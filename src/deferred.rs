//! A part of a sealed program that a kept program (`program_cache.rs`)
//! holds in its encoded form until something reads it.
//!
//! A resume decodes the whole kept program, but runs only the steps its
//! earlier processes did not complete: for a completed call, the scheduler
//! needs the step's name and what it waits for, never its arguments. Parts
//! like those are kept as their own postcard bytes inside the kept program
//! and decoded on first read, so a resume of a long run does not build (and
//! free) thousands of expressions it never evaluates. A program `check`
//! seals holds them decoded from the start.

use std::fmt;
use std::sync::OnceLock;

use serde::de::{DeserializeOwned, Error as _, Visitor};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub struct Deferred<T> {
    value: OnceLock<T>,
    /// The postcard form `value` is decoded from; empty when it was made
    /// decoded.
    encoded: Box<[u8]>,
}

impl<T> Deferred<T> {
    pub fn new(value: T) -> Deferred<T> {
        Deferred {
            value: OnceLock::from(value),
            encoded: Box::default(),
        }
    }
}

impl<T: DeserializeOwned> Deferred<T> {
    /// The value, decoded the first time it is read.
    pub fn get(&self) -> &T {
        self.value.get_or_init(|| {
            // Only a kept program holds encoded parts, and it is decoded
            // only when its checksum holds and this executable wrote it
            // (`program_cache::decode`): these are bytes this code encoded
            // from a value of this type.
            postcard::from_bytes(&self.encoded)
                .expect("a kept program's deferred part decodes (its checksum held)")
        })
    }
}

/// As the value itself, so a kept program reads back with the `Debug` form
/// of the program that was sealed.
impl<T: DeserializeOwned + fmt::Debug> fmt::Debug for Deferred<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

impl<T: Serialize + DeserializeOwned> Serialize for Deferred<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let encoded = postcard::to_allocvec(self.get()).map_err(S::Error::custom)?;
        s.serialize_bytes(&encoded)
    }
}

impl<'de, T> Deserialize<'de> for Deferred<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Deferred<T>, D::Error> {
        struct Encoded;
        impl Visitor<'_> for Encoded {
            type Value = Box<[u8]>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a deferred part's bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Box<[u8]>, E> {
                Ok(bytes.into())
            }
        }
        let encoded = d.deserialize_bytes(Encoded)?;
        if encoded.is_empty() {
            // Nothing encodes to no bytes in postcard except a unit-like
            // value, which is never deferred: an empty part is damage.
            return Err(D::Error::custom("an empty deferred part"));
        }
        Ok(Deferred {
            value: OnceLock::new(),
            encoded,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Deferred;

    /// Read back from its encoded form, a part is not decoded until read,
    /// and then is the value that was encoded.
    #[test]
    fn a_part_read_back_is_decoded_when_first_read() {
        let kept = postcard::to_allocvec(&Deferred::new(vec!["x".to_string(), "y".into()]))
            .expect("encodes");
        let back: Deferred<Vec<String>> = postcard::from_bytes(&kept).expect("decodes");
        assert!(back.value.get().is_none());
        assert_eq!(back.get(), &["x", "y"]);
        assert_eq!(format!("{back:?}"), r#"["x", "y"]"#);
    }
}
