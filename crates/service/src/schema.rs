//! Request bodies checked the way Cinder's JSON schemas check them, with the messages
//! its validator gives: `Invalid input for field/attribute <key>. Value: <value>.
//! <jsonschema message>` (or the bare message at the top level), where values print as
//! Python prints them.

use serde_json::{Map, Value};

use crate::Error;

/// Cinder's `DB_MAX_INT`, the largest size a schema accepts.
pub const DB_MAX_INT: i64 = 2_147_483_647;

/// Python's `repr()` of a JSON value.
pub fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => py_str_repr(s),
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{}: {}", py_str_repr(k), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Python's `str()`: strings as they are, everything else as `repr()`.
pub fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

fn py_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// A schema failure at `key` (the last path element, `None` at the top level), where
/// the failing instance is `value`.
pub fn fail(key: Option<&str>, value: &Value, message: &str) -> Error {
    match key {
        Some(k) => Error::Invalid(format!(
            "Invalid input for field/attribute {k}. Value: {}. {message}",
            py_str(value)
        )),
        None => Error::Invalid(message.to_owned()),
    }
}

/// jsonschema's type message: `1.5 is not of type 'integer', 'string'`.
pub fn type_message(value: &Value, types: &[&str]) -> String {
    let names: Vec<String> = types.iter().map(|t| format!("'{t}'")).collect();
    format!("{} is not of type {}", py_repr(value), names.join(", "))
}

/// An object-typed member `key` of `parent` (whose own key is `parent_key`), required
/// or not; `null` is allowed only when `nullable`.
pub fn object<'a>(
    parent: &'a Map<String, Value>,
    parent_key: Option<&str>,
    key: &str,
    required: bool,
    nullable: bool,
) -> Result<Option<&'a Map<String, Value>>, Error> {
    match parent.get(key) {
        None if required => Err(fail(
            parent_key,
            &Value::Object(parent.clone()),
            &format!("'{key}' is a required property"),
        )),
        None => Ok(None),
        Some(Value::Null) if nullable => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(other) => {
            let types: &[&str] = if nullable {
                &["object", "null"]
            } else {
                &["object"]
            };
            Err(fail(Some(key), other, &type_message(other, types)))
        }
    }
}

/// The body itself must be an object.
pub fn root(body: &Value) -> Result<&Map<String, Value>, Error> {
    body.as_object()
        .ok_or_else(|| fail(None, body, &type_message(body, &["object"])))
}

/// `additionalProperties: false`: every key of `obj` must be in `allowed`.
pub fn no_extra(
    obj: &Map<String, Value>,
    obj_key: Option<&str>,
    allowed: &[&str],
) -> Result<(), Error> {
    let extra: Vec<String> = obj
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| py_str_repr(k))
        .collect();
    if extra.is_empty() {
        return Ok(());
    }
    let verb = if extra.len() == 1 { "was" } else { "were" };
    Err(fail(
        obj_key,
        &Value::Object(obj.clone()),
        &format!(
            "Additional properties are not allowed ({} {verb} unexpected)",
            extra.join(", ")
        ),
    ))
}

/// A `string` (or `null` when `nullable`) of at most `max` characters.
pub fn string<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    nullable: bool,
    min: usize,
    max: usize,
) -> Result<Option<&'a str>, Error> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::Null) if nullable => Ok(None),
        Some(v @ Value::String(s)) => {
            let len = s.chars().count();
            if len > max {
                Err(fail(Some(key), v, &format!("{} is too long", py_repr(v))))
            } else if len < min {
                Err(fail(Some(key), v, &format!("{} is too short", py_repr(v))))
            } else {
                Ok(Some(s))
            }
        }
        Some(other) => {
            let types: &[&str] = if nullable {
                &["string", "null"]
            } else {
                &["string"]
            };
            Err(fail(Some(key), other, &type_message(other, types)))
        }
    }
}

/// Cinder's `name_non_mandatory_remove_white_spaces` / `description_…`: a string or
/// null, stripped, at most 255 characters after stripping (else `InvalidInput` naming
/// `entity`). Returns the stripped value.
pub fn stripped_text(
    obj: &Map<String, Value>,
    key: &str,
    entity: &str,
) -> Result<Option<String>, Error> {
    let Some(s) = string(obj, key, true, 0, usize::MAX)? else {
        return Ok(None);
    };
    let s = s.trim();
    let len = s.chars().count();
    if len > 255 {
        return Err(Error::Invalid(format!(
            "Invalid input received: {entity} has {len} characters, more than 255."
        )));
    }
    Ok(Some(s.to_owned()))
}

/// Cinder's `description`: string or null, at most 255 printable characters.
pub fn description(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, Error> {
    let Some(s) = string(obj, key, true, 0, 255)? else {
        return Ok(None);
    };
    if s.chars().any(char::is_control) {
        let v = obj.get(key).cloned().unwrap_or(Value::Null);
        return Err(fail(
            Some(key),
            &v,
            &format!("{} does not match '^[\\s\\S]*$'", py_repr(&v)),
        ));
    }
    Ok(Some(s.to_owned()))
}

/// Cinder's default `project_id_regex`, `[0-9a-f\-]+`: what a project id may look like.
pub fn is_project_id(p: &str) -> bool {
    !p.is_empty()
        && p.bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b'-'))
}

/// Whether `s` looks like a UUID to oslo (`uuidutils.is_uuid_like`): 32 hex digits,
/// optionally with the four dashes, optionally in braces or with a `urn:uuid:` prefix.
pub fn is_uuid_like(s: &str) -> bool {
    let s = s.strip_prefix("urn:uuid:").unwrap_or(s);
    let s = s
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(s);
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let dashes = s.len() - hex.len();
    hex.len() == 32
        && hex.chars().all(|c| c.is_ascii_hexdigit())
        && (dashes == 0
            || (dashes == 4
                && s.char_indices()
                    .filter(|(_, c)| *c == '-')
                    .map(|(i, _)| i)
                    .eq([8, 13, 18, 23])))
}

/// `{'oneOf': [{'type': 'null'}, uuid]}`: null or a UUID string.
pub fn optional_uuid<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, Error> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if is_uuid_like(s) => Ok(Some(s)),
        Some(v) => Err(fail(
            Some(key),
            v,
            &format!("{} is not valid under any of the given schemas", py_repr(v)),
        )),
    }
}

/// A required UUID string (`parameter_types.uuid`).
pub fn uuid<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, Error> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if is_uuid_like(s) => Ok(Some(s)),
        Some(v @ Value::String(_)) => Err(fail(
            Some(key),
            v,
            &format!("{} is not a 'uuid'", py_repr(v)),
        )),
        Some(v) => Err(fail(Some(key), v, &type_message(v, &["string"]))),
    }
}

/// Cinder's `boolean` parameter type: JSON booleans and its list of strings.
pub fn boolean(obj: &Map<String, Value>, key: &str, nullable: bool) -> Result<Option<bool>, Error> {
    const TRUE: &[&str] = &[
        "True", "TRUE", "true", "1", "ON", "On", "on", "YES", "Yes", "yes", "y", "t",
    ];
    const FALSE: &[&str] = &[
        "False", "FALSE", "false", "0", "OFF", "Off", "off", "NO", "No", "no", "n", "f",
    ];
    match obj.get(key) {
        None => Ok(None),
        Some(Value::Null) if nullable => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if TRUE.contains(&s.as_str()) => Ok(Some(true)),
        Some(Value::String(s)) if FALSE.contains(&s.as_str()) => Ok(Some(false)),
        Some(v) => {
            let message = if nullable {
                format!("{} is not valid under any of the given schemas", py_repr(v))
            } else if matches!(v, Value::String(_)) {
                format!(
                    "{} is not one of [True, 'True', 'TRUE', 'true', '1', 'ON', 'On', 'on', \
                     'YES', 'Yes', 'yes', 'y', 't', False, 'False', 'FALSE', 'false', '0', \
                     'OFF', 'Off', 'off', 'NO', 'No', 'no', 'n', 'f']",
                    py_repr(v)
                )
            } else {
                type_message(v, &["boolean", "string"])
            };
            Err(fail(Some(key), v, &message))
        }
    }
}

/// Cinder's `volume_size`: an integer or a string of digits, 1 ≤ n ≤ `DB_MAX_INT`.
pub fn volume_size(
    obj: &Map<String, Value>,
    key: &str,
    nullable: bool,
) -> Result<Option<i64>, Error> {
    let v = match obj.get(key) {
        None => return Ok(None),
        Some(Value::Null) if nullable => return Ok(None),
        Some(v) => v,
    };
    let n: Option<i64> = match v {
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.as_i64().unwrap_or(i64::MAX)),
        Value::String(s) => {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(fail(
                    Some(key),
                    v,
                    &format!("{} does not match '^[0-9]+$'", py_repr(v)),
                ));
            }
            Some(s.parse::<i64>().unwrap_or(i64::MAX))
        }
        _ => None,
    };
    let Some(n) = n else {
        let types: &[&str] = if nullable {
            &["integer", "string", "null"]
        } else {
            &["integer", "string"]
        };
        return Err(fail(Some(key), v, &type_message(v, types)));
    };
    if n < 1 {
        return Err(fail(
            Some(key),
            v,
            &format!("{} is less than the minimum of 1", py_repr(v)),
        ));
    }
    if n > DB_MAX_INT {
        return Err(fail(
            Some(key),
            v,
            &format!("{} is greater than the maximum of {DB_MAX_INT}", py_repr(v)),
        ));
    }
    Ok(Some(n))
}

/// Cinder's `metadata_allows_null` / `extra_specs`: an object whose keys match
/// `^[a-zA-Z0-9-_:. /]{1,255}$` and whose values are strings of at most 255.
pub fn metadata(
    obj: &Map<String, Value>,
    key: &str,
    nullable: bool,
) -> Result<std::collections::BTreeMap<String, String>, Error> {
    let mut out = std::collections::BTreeMap::new();
    let m = match obj.get(key) {
        None => return Ok(out),
        Some(Value::Null) if nullable => return Ok(out),
        Some(Value::Object(m)) => m,
        Some(v) => {
            let types: &[&str] = if nullable {
                &["object", "null"]
            } else {
                &["object"]
            };
            return Err(fail(Some(key), v, &type_message(v, types)));
        }
    };
    let key_ok = |k: &str| {
        (1..=255).contains(&k.chars().count())
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_:. /".contains(c))
    };
    let bad: Vec<&String> = m.keys().filter(|k| !key_ok(k)).collect();
    if !bad.is_empty() {
        let verb = if bad.len() == 1 { "was" } else { "were" };
        let list: Vec<String> = bad.iter().map(|k| py_str_repr(k)).collect();
        return Err(fail(
            Some(key),
            &Value::Object(m.clone()),
            &format!(
                "Additional properties are not allowed ({} {verb} unexpected)",
                list.join(", ")
            ),
        ));
    }
    for (k, v) in m {
        match v {
            Value::String(s) if s.chars().count() <= 255 => {
                out.insert(k.clone(), s.clone());
            }
            Value::String(_) => {
                return Err(fail(Some(k), v, &format!("{} is too long", py_repr(v))));
            }
            other => return Err(fail(Some(k), other, &type_message(other, &["string"]))),
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: &Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn messages_read_like_cinders() {
        let o = obj(&json!({"size": 0, "s": "abc", "f": 1.5, "n": "x".repeat(256)}));
        let msg = |r: Result<Option<i64>, Error>| r.err().unwrap().to_string();
        assert_eq!(
            msg(volume_size(&o, "size", true)),
            "Invalid input for field/attribute size. Value: 0. 0 is less than the minimum of 1"
        );
        assert_eq!(
            msg(volume_size(&o, "s", true)),
            "Invalid input for field/attribute s. Value: abc. 'abc' does not match '^[0-9]+$'"
        );
        assert_eq!(
            msg(volume_size(&o, "f", true)),
            "Invalid input for field/attribute f. Value: 1.5. 1.5 is not of type 'integer', 'string', 'null'"
        );
        assert_eq!(
            stripped_text(&o, "n", "name").err().unwrap().to_string(),
            "Invalid input received: name has 256 characters, more than 255."
        );
        let e = no_extra(&obj(&json!({"a": 1, "volume": {}})), None, &["volume"]);
        assert_eq!(
            e.err().unwrap().to_string(),
            "Additional properties are not allowed ('a' was unexpected)"
        );
        assert_eq!(
            py_repr(&json!({"n": null, "source-name": "/x", "t": true})),
            "{'n': None, 'source-name': '/x', 't': True}"
        );
        assert!(is_uuid_like("11111111-1111-4111-8111-111111111111"));
        assert!(is_uuid_like("11111111111141118111111111111111"));
        assert!(!is_uuid_like("1111-1111"));
    }
}
