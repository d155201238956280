//! JSON objects that refuse duplicate keys.
//!
//! JSON parsers disagree on `{"uid": 0, "uid": 1000}`: serde_json keeps the last value,
//! others the first or refuse. An attrs file from Nix never repeats a key, so a repeated
//! one means a hand-made file whose author may have meant either value: an error names
//! it rather than picking one. serde_json's own recursion limit (128 levels) still holds.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;
use std::fmt;

/// Parses any JSON value, refusing an object (at any depth) that repeats a key.
///
/// # Errors
/// Not JSON, nested deeper than serde_json allows, or a repeated key (named).
pub fn parse_value(text: &str) -> serde_json::Result<Value> {
    serde_json::from_str::<Strict>(text).map(|s| s.0)
}

/// A top-level object: each key and its unparsed value, borrowed from the text.
pub struct TopLevel<'a>(pub BTreeMap<String, &'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for TopLevel<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TopVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for TopVisitor<'a> {
            type Value = TopLevel<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel<'a>, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value: &'a RawValue = map.next_value()?;
                    if out.contains_key(&key) {
                        return Err(de::Error::custom(format_args!("the key `{key}` appears twice")));
                    }
                    out.insert(key, value);
                }
                Ok(TopLevel(out))
            }
        }
        deserializer.deserialize_map(TopVisitor(std::marker::PhantomData))
    }
}

/// A `Value` built by a visitor that checks each object's keys.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // serde_json never hands over a non-finite number.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!("the key `{key}` appears twice")));
            }
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_values_as_serde_json_without_duplicates() {
        let text = r#"{"a": [1, -2, 3.5, "x", null, true], "b": {"c": {}}, "d": 18446744073709551615}"#;
        assert_eq!(parse_value(text).unwrap(), serde_json::from_str::<Value>(text).unwrap());
    }

    #[test]
    fn names_a_repeated_key_at_any_depth() {
        for text in [r#"{"a": 1, "a": 2}"#, r#"{"x": [{"Env": [], "Env": []}]}"#] {
            let err = parse_value(text).unwrap_err().to_string();
            assert!(err.contains("appears twice"), "{err}");
        }
        let err = serde_json::from_str::<TopLevel>(r#"{"uid": 0, "uid": 1}"#).err().unwrap().to_string();
        assert!(err.contains("`uid` appears twice"), "{err}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_value(&deep).is_err());
    }
}
