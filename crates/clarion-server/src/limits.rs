//! Bounds on free-form input: JSON a client may shape as it likes (an assistant's `config`,
//! enrollment `variables`) and free text (descriptions, reasons, ids). Without them such a
//! field is bounded only by the 2 MiB body, and every list page and report repeats it: issue
//! 14 measured an 88 MB list response from 45 large assistants.
//!
//! A field over its bound is refused with 422 `invalid_field` naming the field and the bound
//! it broke; never its value.

use serde_json::Value;

use crate::error::ApiError;

/// The largest request body the API reads (axum's default body limit, which every `/v1`
/// route keeps): 413 `payload_too_large` beyond it. The dashboard's CSV upload takes the same.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// How large a free-form JSON value may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonBounds {
    /// Its size written as compact JSON.
    pub max_bytes: usize,
    /// Containers nested in one another: `{}` is 1, `{"a": [1]}` is 2.
    pub max_depth: usize,
    /// Object members and array elements, at every depth, together.
    pub max_entries: usize,
}

/// An assistant's `config`: a full SMS script (50 intents of 50 keywords, about 2,600
/// entries, depth 4) or several pages of LLM prompt fit with room to spare.
pub const ASSISTANT_CONFIG: JsonBounds = JsonBounds {
    max_bytes: 64 * 1024,
    max_depth: 16,
    max_entries: 4096,
};

/// Enrollment `variables` (besides their own rules: 64 names, 1,024 characters a value,
/// 16 KiB in all): values meant for placeholders need little structure.
pub const VARIABLES: JsonBounds = JsonBounds {
    max_bytes: 16 * 1024,
    max_depth: 8,
    max_entries: 1024,
};

/// The simulator's instructions (`simulation`): a list of outcomes.
pub const SIMULATION: JsonBounds = JsonBounds {
    max_bytes: 4 * 1024,
    max_depth: 2,
    max_entries: 101,
};

/// An assistant's `custom_fields` in all (besides the per-field bounds below).
pub const CUSTOM_FIELDS: JsonBounds = JsonBounds {
    max_bytes: 64 * 1024,
    max_depth: 4,
    max_entries: 8192,
};

/// Custom analysis fields of an assistant.
pub const MAX_CUSTOM_FIELDS: usize = 50;
/// Values of an `enum` custom field, and the characters of each.
pub const MAX_ENUM_VALUES: usize = 100;
pub const MAX_ENUM_VALUE_CHARS: usize = 100;
/// Descriptions (custom fields, webhook endpoints).
pub const MAX_DESCRIPTION_CHARS: usize = 1_000;
/// Short free text: a suppression's reason, a contact's `external_id`.
pub const MAX_SHORT_TEXT_CHARS: usize = 200;

/// Checks `value` (at `field`) against `bounds`.
pub fn check_json(field: &str, value: &Value, bounds: JsonBounds) -> Result<(), ApiError> {
    let shape = measure(value, bounds);
    if shape.depth > bounds.max_depth {
        return Err(ApiError::invalid(
            field,
            format!("nested more than {} levels deep", bounds.max_depth),
        ));
    }
    if shape.entries > bounds.max_entries {
        return Err(ApiError::invalid(
            field,
            format!(
                "more than {} keys and array items in all",
                bounds.max_entries
            ),
        ));
    }
    let bytes = serde_json::to_string(value).map_or(usize::MAX, |text| text.len());
    if bytes > bounds.max_bytes {
        return Err(ApiError::invalid(
            field,
            format!("at most {} bytes of JSON", bounds.max_bytes),
        ));
    }
    Ok(())
}

/// Checks that `text` (at `field`) has at most `max_chars` characters.
pub fn check_text(field: &str, text: &str, max_chars: usize) -> Result<(), ApiError> {
    // Counting stops past the bound: a 2 MiB string is not walked to the end.
    if text.chars().nth(max_chars).is_some() {
        return Err(ApiError::invalid(
            field,
            format!("at most {max_chars} characters"),
        ));
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Shape {
    depth: usize,
    entries: usize,
}

/// The depth and entry count of `value`, with an explicit stack (no recursion on client
/// input); stops early once a bound is passed.
fn measure(value: &Value, bounds: JsonBounds) -> Shape {
    let mut shape = Shape::default();
    let mut stack: Vec<(&Value, usize)> = vec![(value, 1)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Object(object) => Box::new(object.values()),
            Value::Array(items) => Box::new(items.iter()),
            _ => continue,
        };
        shape.depth = shape.depth.max(depth);
        for child in children {
            shape.entries += 1;
            stack.push((child, depth + 1));
        }
        if shape.depth > bounds.max_depth || shape.entries > bounds.max_entries {
            break;
        }
    }
    shape
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    const SMALL: JsonBounds = JsonBounds {
        max_bytes: 64,
        max_depth: 2,
        max_entries: 4,
    };

    fn message(result: Result<(), ApiError>) -> String {
        let error = result.unwrap_err();
        format!("{} {:?}: {}", error.code, error.field, error.message)
    }

    #[test]
    fn depth_entries_and_bytes_are_each_bounded_and_named() {
        assert!(check_json("config", &json!({"a": [1, 2], "b": 3}), SMALL).is_ok());
        let deep = message(check_json("config", &json!({"a": {"b": {}}}), SMALL));
        assert!(deep.contains("nested more than 2"), "{deep}");
        assert!(deep.starts_with("invalid_field Some(\"config\")"), "{deep}");
        let wide = message(check_json("config", &json!([1, 2, 3, 4, 5]), SMALL));
        assert!(wide.contains("more than 4 keys"), "{wide}");
        let long = message(check_json("config", &json!({"a": "x".repeat(100)}), SMALL));
        assert!(long.contains("at most 64 bytes"), "{long}");
        assert!(!long.contains("xxxx"), "the value is not echoed: {long}");
    }

    #[test]
    fn text_is_counted_in_characters() {
        assert!(check_text("reason", &"é".repeat(200), 200).is_ok());
        assert!(check_text("reason", &"é".repeat(201), 200).is_err());
    }
}
