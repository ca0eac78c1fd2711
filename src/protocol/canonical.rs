//! A client's `data` (a frame's, or an HTTP API body's) as the relay keeps it: in canonical form (contract
//! v1.2, "Canonical data": insignificant whitespace removed, nothing else changed, so member order and the
//! text of every number and string are kept), and readable by every other client: nested at most
//! [`MAX_DATA_DEPTH`] deep, with no number beyond a double. One pass over the text does both; text that is
//! canonical already (what `JSON.stringify` writes) is kept as it came, without a copy.
//!
//! The log, welcomes, the event stream and webhooks then all carry one text, and no raw CR or LF can reach
//! a line-based consumer (inside a JSON string both are escapes).

use serde_json::value::RawValue;

use super::{ErrorCode, FrameError};

/// Deepest nesting of arrays and objects in `data`. Other clients parse what they receive, often with a
/// limit (serde_json stops at 128 levels, and a welcome nests canvas objects two levels down).
pub const MAX_DATA_DEPTH: u32 = 64;

/// `data`, valid JSON, in canonical form; refused with `invalid_json` (as a strict parser on the client
/// would call it) when it nests deeper than [`MAX_DATA_DEPTH`] or holds a number beyond the range of a
/// double (`1e400`).
pub(super) fn canonical(data: Box<RawValue>) -> Result<Box<RawValue>, FrameError> {
    let unreadable = |why: String| FrameError::new(ErrorCode::InvalidJson, format!("data cannot be relayed: {why}"));
    match scan(data.get(), Some(MAX_DATA_DEPTH)).map_err(unreadable)? {
        None => Ok(data),
        Some(text) => RawValue::from_string(text).map_err(|e| unreadable(e.to_string())),
    }
}

/// Valid JSON text without its insignificant whitespace, whatever its depth and numbers; `None` when it has
/// none. For text the relay did not canonicalize itself (written by an older build) on its way to a
/// consumer that must never see a raw line break.
pub fn without_whitespace(json: &str) -> Option<String> {
    scan(json, None).unwrap_or_default()
}

/// Walks valid JSON text once: removes the whitespace between tokens (`None` when there is none) and, with
/// a `max_depth`, refuses deeper nesting and numbers that overflow a double. Strings and numbers are
/// skipped over as written.
fn scan(text: &str, max_depth: Option<u32>) -> Result<Option<String>, String> {
    let bytes = text.as_bytes();
    let mut canonical: Option<String> = None;
    let (mut at, mut kept_from, mut depth) = (0, 0, 0u32);
    while at < bytes.len() {
        match bytes[at] {
            b'"' => at = after_string(bytes, at),
            b'[' | b'{' => {
                depth += 1;
                if max_depth.is_some_and(|max| depth > max) {
                    return Err(format!("nested deeper than {MAX_DATA_DEPTH} levels"));
                }
                at += 1;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                at += 1;
            }
            b' ' | b'\t' | b'\n' | b'\r' => {
                let out = canonical.get_or_insert_with(|| String::with_capacity(text.len()));
                out.push_str(&text[kept_from..at]);
                while at < bytes.len() && matches!(bytes[at], b' ' | b'\t' | b'\n' | b'\r') {
                    at += 1;
                }
                kept_from = at;
            }
            b'-' | b'0'..=b'9' => {
                let end = after_number(bytes, at);
                if max_depth.is_some() {
                    check_number(&text[at..end])?;
                }
                at = end;
            }
            _ => at += 1, // `,`, `:` and the letters of true, false and null
        }
    }
    if let Some(out) = canonical.as_mut() {
        out.push_str(&text[kept_from..]);
    }
    Ok(canonical)
}

/// Where the string that opens at `at` (its `"`) ends: just past its closing quote. Escapes are skipped
/// whole, so an escaped quote does not end it.
fn after_string(bytes: &[u8], at: usize) -> usize {
    let mut at = at + 1;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => at += 2,
            b'"' => return at + 1,
            _ => at += 1,
        }
    }
    bytes.len()
}

/// Where the number that starts at `at` ends.
fn after_number(bytes: &[u8], at: usize) -> usize {
    let length = bytes[at..].iter().take_while(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')).count();
    at + length
}

/// Refuses a number a double cannot hold. Only one with an exponent, or with more digits than the largest
/// double has, can overflow: the others are not parsed at all.
fn check_number(number: &str) -> Result<(), String> {
    let may_overflow = number.len() > 300 || number.bytes().any(|b| b == b'e' || b == b'E');
    match may_overflow && !number.parse::<f64>().is_ok_and(f64::is_finite) {
        true => Err(format!("number {number} is out of range of a double")),
        false => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The canonical text of `json`.
    fn canonical_of(json: &str) -> String {
        let raw = RawValue::from_string(json.to_owned()).expect("valid JSON");
        canonical(raw).expect("readable").get().to_owned()
    }

    #[test]
    fn whitespace_between_tokens_goes_and_nothing_else_changes() {
        let sent = "{\r\"b\" :\t1 ,\n \"a\":\r\n[ true , null,false ] }";
        assert_eq!(canonical_of(sent), r#"{"b":1,"a":[true,null,false]}"#, "member order kept");
        assert_eq!(canonical_of(" \"x\" "), r#""x""#);
        assert_eq!(canonical_of("[ ]"), "[]");
        assert_eq!(canonical_of("{ }"), "{}");
    }

    #[test]
    fn strings_keep_their_whitespace_and_escapes() {
        let sent = r#"{ "s" : " a  b\t\r\n \" \\ \u0041 \/ é " }"#;
        assert_eq!(canonical_of(sent), r#"{"s":" a  b\t\r\n \" \\ \u0041 \/ é "}"#);
        assert_eq!(canonical_of(r#"[ "\\" , "\"]" ]"#), r#"["\\","\"]"]"#, "an escaped quote does not end a string");
        assert_eq!(canonical_of(r#"{ "k e y" : 1 }"#), r#"{"k e y":1}"#, "names are strings too");
    }

    #[test]
    fn numbers_keep_the_text_they_were_written_as() {
        let sent = "[ 1.0 , 1e2 , 1E+2 , -0.0 , 0.10 , 5e-324 , 123456789012345678901234567890 ]";
        assert_eq!(canonical_of(sent), "[1.0,1e2,1E+2,-0.0,0.10,5e-324,123456789012345678901234567890]");
    }

    #[test]
    fn nested_structures_are_canonical_at_every_depth() {
        let sent = "{ \"a\" : [ { \"b\" : [ [ ] , { } , [ 1 , { \"c\" : \"d e\" } ] ] } ] }";
        assert_eq!(canonical_of(sent), r#"{"a":[{"b":[[],{},[1,{"c":"d e"}]]}]}"#);
    }

    #[test]
    fn canonical_text_is_kept_without_a_copy() {
        let raw = RawValue::from_string(r#"{"a":[1,"b c"]}"#.to_owned()).unwrap();
        let before = raw.get().as_ptr();
        assert_eq!(canonical(raw).unwrap().get().as_ptr(), before);
    }

    #[test]
    fn too_deep_or_out_of_range_is_refused_and_whitespace_does_not_hide_it() {
        let nested = |depth: usize| format!("{}1{}", "[ ".repeat(depth), " ]".repeat(depth));
        assert!(canonical(RawValue::from_string(nested(64)).unwrap()).is_ok());
        let error = canonical(RawValue::from_string(nested(65)).unwrap()).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidJson);
        assert!(error.message.contains("deeper than 64"), "{}", error.message);
        for number in ["1e400", "-1e400", "1e309", "[ 1E400 ]", &format!("1{}", "0".repeat(400))] {
            let error = canonical(RawValue::from_string(number.to_owned()).unwrap()).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidJson, "{number}");
        }
        assert_eq!(canonical_of("1e-400"), "1e-400", "an underflow is a zero, not an error");
    }

    #[test]
    fn without_whitespace_ignores_the_limits() {
        let deep = format!("{}1{}", "[\r".repeat(100), "]".repeat(100));
        assert_eq!(without_whitespace(&deep), Some(format!("{}1{}", "[".repeat(100), "]".repeat(100))));
        assert_eq!(without_whitespace("[1e400,\n2]").as_deref(), Some("[1e400,2]"));
        assert_eq!(without_whitespace(r#"{"a":1}"#), None);
    }
}
