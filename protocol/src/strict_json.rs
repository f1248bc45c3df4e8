//! JSON decoding in which a struct only ever takes a JSON object.
//!
//! serde's derived structs also accept their sequence form, so with plain `serde_json`
//! `["edge-1", 60]` is a valid start request and `"limits": [5, 6]` valid limits. REST bodies
//! are documented as objects; anything else must be refused. The request types cannot simply
//! refuse sequences themselves: some (such as `Filters`) also travel to agents in postcard,
//! which encodes structs as sequences. So the refusal lives here, in the JSON reading: this
//! wrapper around a deserializer asks for a map wherever a struct is wanted, at every depth.
//!
//! Limit: values an untagged or internally tagged enum buffers (serde's private `Content`) are
//! decoded without the wrapper; no REST type puts a struct inside one.

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

/// Decodes `bytes` as `T`, refusing arrays wherever `T` (or anything in it) is a struct.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    let mut inner = serde_json::Deserializer::from_slice(bytes);
    let value = T::deserialize(Strict(&mut inner))?;
    inner.end()?;
    Ok(value)
}

/// A deserializer that reads structs as maps only.
struct Strict<D>(D);

/// Wraps a visitor so what it is handed next is strict too.
struct Wrap<V>(V);

macro_rules! forward {
    ($($method:ident),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
                self.0.$method(Wrap(visitor))
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Strict<D> {
    type Error = D::Error;

    forward!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_unit_struct(name, Wrap(visitor))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_newtype_struct(name, Wrap(visitor))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_tuple(len, Wrap(visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_tuple_struct(name, len, Wrap(visitor))
    }

    /// The point of the wrapper: a struct is read as a map, so an array is an error
    /// ("invalid type: sequence, expected struct …").
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_map(Wrap(visitor))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, Wrap(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! visit {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
                self.0.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.expecting(f)
    }

    visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.visit_some(Strict(d))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.visit_newtype_struct(Strict(d))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.0.visit_seq(Strict(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(Strict(map))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.0.visit_enum(Strict(data))
    }
}

/// Wraps a seed so the value it reads is strict.
struct Seed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(Strict(d))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Strict<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.0.next_element_seed(Seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Strict<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        self.0.next_key_seed(Seed(seed))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.next_value_seed(Seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Strict<A> {
    type Error = A::Error;
    type Variant = Strict<A::Variant>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Self::Error> {
        let (value, variant) = self.0.variant_seed(Seed(seed))?;
        Ok((value, Strict(variant)))
    }
}

/// Reads a struct variant's content as a map.
struct StructSeed<V>(V);

impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for StructSeed<V> {
    type Value = V::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Strict(d).deserialize_map(self.0)
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Strict<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        self.0.newtype_variant_seed(Seed(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.tuple_variant(len, Wrap(visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.newtype_variant_seed(StructSeed(visitor))
    }
}

#[cfg(test)]
mod tests {
    use crate::rest::{StartRequest, StopRequest};
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    enum Shape {
        Unit,
        Point { x: u8 },
    }

    /// Every REST body that is documented as an object is refused in its array form, at any
    /// depth, while the object forms (with lists, sources and arbitrary plugin config) decode.
    #[test]
    fn structs_take_objects_only() {
        for bad in [
            r#"["edge-1"]"#,
            r#"{"agent_id": "edge-1", "filters": [["ERROR"]]}"#,
            r#"{"agent_id": "edge-1", "limits": [5, 6]}"#,
            r#"{"agent_id": "edge-1", "filters": {"plugins": [["redact", {}]]}}"#,
        ] {
            let err = from_slice::<StartRequest>(bad.as_bytes()).unwrap_err();
            assert!(err.to_string().contains("invalid type"), "{bad}: {err}");
            // Plain serde_json takes them: the reason this module exists.
            assert!(serde_json::from_str::<StartRequest>(bad).is_ok(), "{bad}");
        }
        assert!(from_slice::<StopRequest>(br#"["sess_1"]"#).is_err());
        let ok: StartRequest = from_slice(
            br#"{"agent_id": "edge-1", "timeout_seconds": 60, "limits": {"lines_per_second": 5},
                "filters": {"level": ["ERROR"], "source": ["a", "b"],
                            "plugins": [{"name": "redact", "config": [[1], {"a": [2]}]}]}}"#,
        )
        .unwrap();
        assert_eq!(ok.timeout_seconds, Some(60));
        let plugins = ok.filters.unwrap().plugins.unwrap();
        assert_eq!(plugins[0].config, serde_json::json!([[1], {"a": [2]}]));
        // Unknown fields are still refused, and trailing garbage too.
        assert!(from_slice::<StopRequest>(br#"{"session_id": "s", "x": 1}"#).is_err());
        assert!(from_slice::<StopRequest>(br#"{"session_id": "s"} x"#).is_err());
        // Enums: unit and struct variants, the latter as objects only.
        assert_eq!(from_slice::<Shape>(br#""Unit""#).unwrap(), Shape::Unit);
        assert_eq!(
            from_slice::<Shape>(br#"{"Point": {"x": 1}}"#).unwrap(),
            Shape::Point { x: 1 }
        );
        assert!(from_slice::<Shape>(br#"{"Point": [1]}"#).is_err());
    }
}
