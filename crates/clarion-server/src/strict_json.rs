//! Request bodies read as their types say, at every depth: where a struct (a JSON object) is
//! expected, an array is refused.
//!
//! serde's derived `Deserialize` for a struct also accepts a sequence (its fields by
//! position), and `serde_json` offers one whenever the input is an array: so
//! `{"contact_caps": [null, null]}` would set both caps of `contact_caps` to nothing. The body
//! is parsed into a `serde_json::Value` first and read through [`StrictValue`], a deserializer
//! over it that answers `deserialize_struct` on an array with an error (and hands nested
//! values out wrapped the same way); everything else reads as from `serde_json`.

use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Unexpected,
    Visitor,
};
use serde_json::{Map, Value};

/// A deserializer over a parsed JSON value that refuses arrays where structs are expected.
#[derive(Debug, Clone, Copy)]
pub struct StrictValue<'a>(pub &'a Value);

type Error = serde_json::Error;

impl<'de> Deserializer<'de> for StrictValue<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => visitor.visit_seq(StrictSeq(items.iter())),
            Value::Object(map) => visitor.visit_map(StrictMap::new(map)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::Array(_) => Err(de::Error::invalid_type(Unexpected::Seq, &"a JSON object")),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            // A unit variant by name (the common case for the API's enums).
            Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            // Externally tagged data variants read as serde_json reads them.
            other => other.deserialize_enum(name, variants, visitor),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
    }
}

struct StrictSeq<'a>(std::slice::Iter<'a, Value>);

impl<'de> SeqAccess<'de> for StrictSeq<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0
            .next()
            .map(|value| seed.deserialize(StrictValue(value)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct StrictMap<'a> {
    entries: serde_json::map::Iter<'a>,
    value: Option<&'a Value>,
}

impl<'a> StrictMap<'a> {
    fn new(map: &'a Map<String, Value>) -> Self {
        Self {
            entries: map.iter(),
            value: None,
        }
    }
}

impl<'de> MapAccess<'de> for StrictMap<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(de::value::BorrowedStrDeserializer::new(key))
                    .map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(StrictValue(value)),
            None => Err(de::Error::custom(
                "a map value was asked for before its key",
            )),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Caps {
        per_day: Option<u32>,
        per_week: Option<u32>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        Call,
        Sms,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Patch {
        caps: Option<Caps>,
        kinds: Vec<Kind>,
        #[serde(default)]
        note: Option<String>,
        #[serde(default)]
        extra: serde_json::Map<String, Value>,
    }

    fn read<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, Error> {
        let value: Value = serde_json::from_str(json).unwrap();
        T::deserialize(StrictValue(&value))
    }

    #[test]
    fn objects_read_as_from_serde_json() {
        let json = r#"{"caps": {"per_day": 2, "per_week": null}, "kinds": ["call", "sms"], "note": "x", "extra": {"a": [1, {"b": true}]}}"#;
        let strict: Patch = read(json).unwrap();
        let plain: Patch = serde_json::from_str(json).unwrap();
        assert_eq!(strict, plain);
    }

    #[test]
    fn an_array_where_a_struct_belongs_is_refused_at_any_depth() {
        // serde_json alone takes the array as the struct's fields by position.
        let sneaky = r#"{"caps": [null, null], "kinds": []}"#;
        assert!(serde_json::from_str::<Patch>(sneaky).is_ok());
        let error = read::<Patch>(sneaky).unwrap_err().to_string();
        assert!(error.contains("expected a JSON object"), "{error}");
        assert!(read::<Caps>("[1, 2]").is_err());
    }
}
