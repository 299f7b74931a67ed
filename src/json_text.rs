//! A JSON value kept as its text inside a binary encoding. A compact codec
//! (postcard, for the sealed programs the run store keeps:
//! `program_cache.rs`) reads only data whose shape its type states, and a
//! `serde_json::Value` states none; as text it reads back exactly.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

pub fn serialize<S: Serializer>(value: &Value, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&value.to_string())
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    let text = String::deserialize(d)?;
    serde_json::from_str(&text).map_err(D::Error::custom)
}

/// Named values (a model's extra parameters), each value as its text.
pub mod pairs {
    use super::*;

    pub fn serialize<S: Serializer>(pairs: &[(String, Value)], s: S) -> Result<S::Ok, S::Error> {
        let texts: Vec<(&str, String)> = pairs
            .iter()
            .map(|(name, value)| (name.as_str(), value.to_string()))
            .collect();
        texts.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, Value)>, D::Error> {
        Vec::<(String, String)>::deserialize(d)?
            .into_iter()
            .map(|(name, text)| {
                serde_json::from_str(&text)
                    .map(|value| (name, value))
                    .map_err(D::Error::custom)
            })
            .collect()
    }
}
