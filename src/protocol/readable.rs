//! Whether a frame's `data`, valid JSON, is also JSON every other client can read: one pass over the text
//! that keeps nothing, refusing nesting past [`MAX_DATA_DEPTH`] and numbers beyond a double.

use serde_json::value::RawValue;

use super::{ErrorCode, FrameError};

/// Deepest nesting of arrays and objects in `data`. Other clients parse what they receive, often with a
/// limit (serde_json stops at 128 levels, and a welcome nests canvas objects two levels down).
pub const MAX_DATA_DEPTH: u32 = 64;

/// Refuses `data` that is valid JSON but that other clients' parsers would choke on: nesting deeper than
/// [`MAX_DATA_DEPTH`], or a number beyond the range of a double (`1e400`). One pass over the text, nothing
/// kept. Both are `invalid_json`, as a strict parser on the client would call them.
pub(super) fn check_readable(data: &RawValue) -> Result<(), FrameError> {
    let mut parser = serde_json::Deserializer::from_str(data.get());
    serde::de::DeserializeSeed::deserialize(Walk { depth_left: MAX_DATA_DEPTH }, &mut parser)
        .map_err(|e| FrameError::new(ErrorCode::InvalidJson, format!("data cannot be relayed: {e}")))
}

/// A JSON value walked and forgotten, at most `depth_left` arrays or objects deep.
#[derive(Clone, Copy)]
struct Walk {
    depth_left: u32,
}

impl<'de> serde::de::DeserializeSeed<'de> for Walk {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Walk {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a JSON value nested at most {MAX_DATA_DEPTH} levels deep")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.deeper::<A::Error>()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.deeper::<A::Error>()?;
        while map.next_key::<serde::de::IgnoredAny>()?.is_some() {
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

impl Walk {
    fn deeper<E: serde::de::Error>(self) -> Result<Walk, E> {
        match self.depth_left {
            0 => Err(E::custom(format_args!("nested deeper than {MAX_DATA_DEPTH} levels"))),
            n => Ok(Walk { depth_left: n - 1 }),
        }
    }
}
