//! List pages of ConfigMaps and Secrets in the API server's protobuf encoding, decoded into the
//! raw JSON fields a backup exports ([`super::export::export_raw`]).
//!
//! ConfigMaps and Secrets are most of a namespace's bytes. The API server encodes them as
//! protobuf for about half the CPU it spends on JSON (measured on this project's control plane:
//! 9.5 against 18 ms a page of 500), and the pages are a quarter smaller. The decoded objects
//! are written as the same JSON a list in JSON gives, up to string escaping: map keys sorted,
//! empty fields omitted as the API's `omitempty` omits them, bytes as base64.
//!
//! Decisions:
//! - Only the fields the export keeps or reads are written: `metadata.{name, generateName,
//!   namespace, labels, annotations, ownerReferences, finalizers}` and every top-level field. The
//!   other `ObjectMeta` fields (`uid`, `resourceVersion`, timestamps, `managedFields`, ...) are
//!   stripped by the export anyway: they are skipped unread ([`METADATA_SKIPPED`]).
//! - A field number this decoder does not know (a newer API server's field) is an error, never
//!   a silent loss: the caller lists that page again as JSON.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::export::{JsonText, RawListPage, RawObject, write_json_str};

/// The media type of the API server's protobuf encoding.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The four bytes every protobuf-encoded API response starts with.
const MAGIC: &[u8] = b"k8s\0";

/// Why a page could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtobufError {
    #[error("not a Kubernetes protobuf response (no k8s\\0 prefix)")]
    NoPrefix,
    #[error("malformed protobuf in {0}")]
    Malformed(&'static str),
    #[error("{message} has field {field}, unknown to this decoder")]
    UnknownField { message: &'static str, field: u32 },
    #[error("the response is a {found}, not a {expected}")]
    UnexpectedKind { expected: String, found: String },
    #[error("content encoding {0:?} is not supported")]
    ContentEncoding(String),
}

/// The kinds whose lists are decoded here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtobufKind {
    ConfigMap,
    Secret,
}

impl ProtobufKind {
    /// The kind of `apiVersion`/`kind`, when its lists are decoded here.
    pub fn of(api_version: &str, kind: &str) -> Option<Self> {
        match (api_version, kind) {
            ("v1", "ConfigMap") => Some(Self::ConfigMap),
            ("v1", "Secret") => Some(Self::Secret),
            _ => None,
        }
    }

    fn list_kind(self) -> &'static str {
        match self {
            Self::ConfigMap => "ConfigMapList",
            Self::Secret => "SecretList",
        }
    }
}

/// `ObjectMeta` fields skipped unread, by field number: each one is in the export's
/// `METADATA_STRIPPED` (a test holds the two lists together).
pub const METADATA_SKIPPED: &[(u32, &str)] = &[
    (4, "selfLink"),
    (5, "uid"),
    (6, "resourceVersion"),
    (7, "generation"),
    (8, "creationTimestamp"),
    (9, "deletionTimestamp"),
    (10, "deletionGracePeriodSeconds"),
    (17, "managedFields"),
];

/// Decodes a list response of `kind` into the page a JSON list gives.
pub fn parse_list(kind: ProtobufKind, body: &[u8]) -> Result<RawListPage, ProtobufError> {
    let message = body.strip_prefix(MAGIC).ok_or(ProtobufError::NoPrefix)?;
    // runtime.Unknown: typeMeta = 1, raw = 2, contentEncoding = 3, contentType = 4.
    let (mut found, mut raw, mut encoding) = (String::new(), &[][..], String::new());
    let mut r = Reader::new(message, "runtime.Unknown");
    while let Some((field, wire)) = r.tag()? {
        match field {
            1 => found = type_meta_kind(r.bytes()?)?,
            2 => raw = r.bytes()?,
            3 => encoding = r.string()?,
            4 => r.skip(wire)?,
            _ => return Err(r.unknown(field)),
        }
    }
    if found != kind.list_kind() {
        return Err(ProtobufError::UnexpectedKind {
            expected: kind.list_kind().into(),
            found,
        });
    }
    if !encoding.is_empty() {
        return Err(ProtobufError::ContentEncoding(encoding));
    }
    // XList: metadata = 1 (ListMeta), items = 2.
    let (mut continue_token, mut items) = (None, Vec::new());
    let mut r = Reader::new(raw, kind.list_kind());
    while let Some((field, _)) = r.tag()? {
        match field {
            1 => continue_token = list_continue(r.bytes()?)?,
            2 => items.push(match kind {
                ProtobufKind::ConfigMap => config_map(r.bytes()?)?,
                ProtobufKind::Secret => secret(r.bytes()?)?,
            }),
            _ => return Err(r.unknown(field)),
        }
    }
    Ok(RawListPage::new(
        continue_token.filter(|t: &String| !t.is_empty()),
        items,
    ))
}

/// TypeMeta: apiVersion = 1, kind = 2.
fn type_meta_kind(bytes: &[u8]) -> Result<String, ProtobufError> {
    let mut kind = String::new();
    let mut r = Reader::new(bytes, "TypeMeta");
    while let Some((field, wire)) = r.tag()? {
        match field {
            1 => r.skip(wire)?,
            2 => kind = r.string()?,
            _ => return Err(r.unknown(field)),
        }
    }
    Ok(kind)
}

/// ListMeta: selfLink = 1, resourceVersion = 2, continue = 3, remainingItemCount = 4.
fn list_continue(bytes: &[u8]) -> Result<Option<String>, ProtobufError> {
    let mut token = None;
    let mut r = Reader::new(bytes, "ListMeta");
    while let Some((field, wire)) = r.tag()? {
        match field {
            1 | 2 | 4 => r.skip(wire)?,
            3 => token = Some(r.string()?),
            _ => return Err(r.unknown(field)),
        }
    }
    Ok(token)
}

/// ConfigMap: metadata = 1, data = 2, binaryData = 3, immutable = 4.
fn config_map(bytes: &[u8]) -> Result<RawObject, ProtobufError> {
    let mut object = RawObject::new();
    let (mut data, mut binary) = (Entries::default(), Entries::default());
    let mut immutable = None;
    let mut r = Reader::new(bytes, "ConfigMap");
    while let Some((field, _)) = r.tag()? {
        match field {
            1 => put(&mut object, "metadata", object_meta(r.bytes()?)?),
            2 => data.push(map_entry(r.bytes()?, "ConfigMap.data")?),
            3 => binary.push(map_entry(r.bytes()?, "ConfigMap.binaryData")?),
            4 => immutable = Some(r.varint()? != 0),
            _ => return Err(r.unknown(field)),
        }
    }
    put_map(&mut object, "data", data, Value::Text);
    put_map(&mut object, "binaryData", binary, Value::Base64);
    put_flag(&mut object, "immutable", immutable);
    Ok(object)
}

/// Secret: metadata = 1, data = 2, type = 3, stringData = 4, immutable = 5.
fn secret(bytes: &[u8]) -> Result<RawObject, ProtobufError> {
    let mut object = RawObject::new();
    let (mut data, mut string_data) = (Entries::default(), Entries::default());
    let (mut type_, mut immutable) = (String::new(), None);
    let mut r = Reader::new(bytes, "Secret");
    while let Some((field, _)) = r.tag()? {
        match field {
            1 => put(&mut object, "metadata", object_meta(r.bytes()?)?),
            2 => data.push(map_entry(r.bytes()?, "Secret.data")?),
            3 => type_ = r.string()?,
            4 => string_data.push(map_entry(r.bytes()?, "Secret.stringData")?),
            5 => immutable = Some(r.varint()? != 0),
            _ => return Err(r.unknown(field)),
        }
    }
    put_map(&mut object, "data", data, Value::Base64);
    put_map(&mut object, "stringData", string_data, Value::Text);
    if !type_.is_empty() {
        put(&mut object, "type", json_string(&type_));
    }
    put_flag(&mut object, "immutable", immutable);
    Ok(object)
}

/// ObjectMeta as JSON: name = 1, generateName = 2, namespace = 3, labels = 11,
/// annotations = 12, ownerReferences = 13, finalizers = 14; [`METADATA_SKIPPED`] unread.
fn object_meta(bytes: &[u8]) -> Result<Vec<u8>, ProtobufError> {
    let mut strings: [(&str, String); 3] = [
        ("name", String::new()),
        ("generateName", String::new()),
        ("namespace", String::new()),
    ];
    let (mut labels, mut annotations) = (Entries::default(), Entries::default());
    let (mut owners, mut finalizers) = (Vec::new(), Vec::new());
    let mut r = Reader::new(bytes, "ObjectMeta");
    while let Some((field, wire)) = r.tag()? {
        match field {
            1..=3 => strings[field as usize - 1].1 = r.string()?,
            11 => labels.push(map_entry(r.bytes()?, "ObjectMeta.labels")?),
            12 => annotations.push(map_entry(r.bytes()?, "ObjectMeta.annotations")?),
            13 => owners.push(owner_reference(r.bytes()?)?),
            14 => finalizers.push(json_string(&r.string()?)),
            f if METADATA_SKIPPED.iter().any(|(n, _)| *n == f) => r.skip(wire)?,
            _ => return Err(r.unknown(field)),
        }
    }
    let mut out = JsonObject::default();
    for (name, value) in &strings {
        if !value.is_empty() {
            out.field(name).extend_from_slice(&json_string(value));
        }
    }
    if !labels.is_empty() {
        out.field("labels")
            .extend_from_slice(&labels.write(Value::Text));
    }
    if !annotations.is_empty() {
        out.field("annotations")
            .extend_from_slice(&annotations.write(Value::Text));
    }
    if !owners.is_empty() {
        out.field("ownerReferences")
            .extend_from_slice(&json_array(&owners));
    }
    if !finalizers.is_empty() {
        out.field("finalizers")
            .extend_from_slice(&json_array(&finalizers));
    }
    Ok(out.finish())
}

/// OwnerReference: kind = 1, name = 3, uid = 4, apiVersion = 5, controller = 6,
/// blockOwnerDeletion = 7.
fn owner_reference(bytes: &[u8]) -> Result<Vec<u8>, ProtobufError> {
    let mut strings: [(&str, String); 4] = [
        ("apiVersion", String::new()),
        ("kind", String::new()),
        ("name", String::new()),
        ("uid", String::new()),
    ];
    let (mut controller, mut block) = (None, None);
    let mut r = Reader::new(bytes, "OwnerReference");
    while let Some((field, _)) = r.tag()? {
        match field {
            1 => strings[1].1 = r.string()?,
            3 => strings[2].1 = r.string()?,
            4 => strings[3].1 = r.string()?,
            5 => strings[0].1 = r.string()?,
            6 => controller = Some(r.varint()? != 0),
            7 => block = Some(r.varint()? != 0),
            _ => return Err(r.unknown(field)),
        }
    }
    // The API writes these four even when empty (no omitempty).
    let mut out = JsonObject::default();
    for (name, value) in &strings {
        out.field(name).extend_from_slice(&json_string(value));
    }
    for (name, flag) in [("controller", controller), ("blockOwnerDeletion", block)] {
        if let Some(flag) = flag {
            out.field(name)
                .extend_from_slice(flag.to_string().as_bytes());
        }
    }
    Ok(out.finish())
}

/// One map entry (key = 1, value = 2), either possibly absent (then empty).
fn map_entry<'a>(
    bytes: &'a [u8],
    message: &'static str,
) -> Result<(&'a [u8], &'a [u8]), ProtobufError> {
    let (mut key, mut value) = (&[][..], &[][..]);
    let mut r = Reader::new(bytes, message);
    while let Some((field, _)) = r.tag()? {
        match field {
            1 => key = r.bytes()?,
            2 => value = r.bytes()?,
            _ => return Err(r.unknown(field)),
        }
    }
    Ok((key, value))
}

/// How a map's values are written.
#[derive(Clone, Copy)]
enum Value {
    /// A string (see [`text`]).
    Text,
    /// Bytes, as base64.
    Base64,
}

/// A map's entries as decoded.
#[derive(Default)]
struct Entries<'a>(Vec<(&'a [u8], &'a [u8])>);

impl<'a> Entries<'a> {
    fn push(&mut self, entry: (&'a [u8], &'a [u8])) {
        self.0.push(entry);
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The map as a JSON object: keys sorted (the API server sends them sorted already), the
    /// last of duplicate keys kept (as a protobuf decoder does).
    fn write(mut self, value: Value) -> Vec<u8> {
        if !self.0.is_sorted_by(|a, b| a.0 < b.0) {
            // Stable: among equal keys the last one decoded stays last.
            self.0.sort_by(|a, b| a.0.cmp(b.0));
            let entries = std::mem::take(&mut self.0);
            for entry in entries {
                match self.0.last_mut() {
                    Some(last) if last.0 == entry.0 => *last = entry,
                    _ => self.0.push(entry),
                }
            }
        }
        // Room for the escapes of text (a newline every few dozen bytes) or for base64.
        let value_len = |n: usize| match value {
            Value::Text => n + n / 16,
            Value::Base64 => n.div_ceil(3) * 4,
        };
        let size: usize = self
            .0
            .iter()
            .map(|(k, v)| k.len() + value_len(v.len()) + 8)
            .sum();
        let mut out = JsonObject::with_capacity(size + 2);
        for (key, v) in &self.0 {
            let buf = out.field(&text(key));
            match value {
                Value::Text => write_json_str(&text(v), buf),
                Value::Base64 => {
                    buf.push(b'"');
                    let start = buf.len();
                    buf.resize(start + base64::encoded_len(v.len(), true).unwrap_or(0), 0);
                    let written = B64.encode_slice(v, &mut buf[start..]).unwrap_or(0);
                    buf.truncate(start + written);
                    buf.push(b'"');
                }
            }
        }
        out.finish()
    }
}

/// A JSON object written field by field.
#[derive(Default)]
struct JsonObject {
    out: Vec<u8>,
}

impl JsonObject {
    fn with_capacity(n: usize) -> Self {
        Self {
            out: Vec::with_capacity(n),
        }
    }

    /// Writes `"name":` and returns the buffer for the value.
    fn field(&mut self, name: &str) -> &mut Vec<u8> {
        self.out.push(if self.out.is_empty() { b'{' } else { b',' });
        write_json_str(name, &mut self.out);
        self.out.push(b':');
        &mut self.out
    }

    fn finish(mut self) -> Vec<u8> {
        if self.out.is_empty() {
            self.out.push(b'{');
        }
        self.out.push(b'}');
        self.out
    }
}

fn json_string(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    write_json_str(s, &mut out);
    out
}

fn json_array(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![b'['];
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.push(b']');
    out
}

/// Adds a map field, unless it is empty (the API's `omitempty`).
fn put_map(object: &mut RawObject, name: &str, entries: Entries<'_>, value: Value) {
    if !entries.is_empty() {
        put(object, name, entries.write(value));
    }
}

/// Adds an optional boolean field when it is set.
fn put_flag(object: &mut RawObject, name: &str, flag: Option<bool>) {
    if let Some(flag) = flag {
        put(object, name, flag.to_string().into_bytes());
    }
}

/// A protobuf string's bytes as text: invalid UTF-8 replaced by U+FFFD, as the API server's JSON
/// encoder does (checked first with the fast `from_utf8`, which almost always succeeds).
fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Adds a field's JSON text (written above, so valid UTF-8 and valid JSON).
fn put(object: &mut RawObject, name: &str, json: Vec<u8>) {
    let text = String::from_utf8(json).unwrap_or_else(|e| {
        // Unreachable: every piece written above is UTF-8 (strings pass through
        // `from_utf8_lossy`); kept lossless of panics all the same.
        String::from_utf8_lossy(e.as_bytes()).into_owned()
    });
    object.insert(name.to_string(), JsonText::written(text));
}

/// A cursor over one protobuf message.
struct Reader<'a> {
    buf: &'a [u8],
    message: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], message: &'static str) -> Self {
        Self { buf, message }
    }

    fn malformed(&self) -> ProtobufError {
        ProtobufError::Malformed(self.message)
    }

    fn unknown(&self, field: u32) -> ProtobufError {
        ProtobufError::UnknownField {
            message: self.message,
            field,
        }
    }

    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut value = 0u64;
        for (i, &b) in self.buf.iter().enumerate().take(10) {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        Err(self.malformed())
    }

    /// The next field's number and wire type, `None` at the end of the message.
    fn tag(&mut self) -> Result<Option<(u32, u8)>, ProtobufError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let field = u32::try_from(tag >> 3).map_err(|_| self.malformed())?;
        if field == 0 {
            return Err(self.malformed());
        }
        Ok(Some((field, (tag & 7) as u8)))
    }

    fn bytes(&mut self) -> Result<&'a [u8], ProtobufError> {
        let len = usize::try_from(self.varint()?).map_err(|_| self.malformed())?;
        if len > self.buf.len() {
            return Err(self.malformed());
        }
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(head)
    }

    /// A string field (invalid UTF-8 replaced, as the API server's JSON encoder does).
    fn string(&mut self) -> Result<String, ProtobufError> {
        Ok(text(self.bytes()?).into_owned())
    }

    fn skip(&mut self, wire: u8) -> Result<(), ProtobufError> {
        let n = match wire {
            0 => return self.varint().map(drop),
            1 => 8,
            2 => return self.bytes().map(drop),
            5 => 4,
            _ => return Err(self.malformed()),
        };
        if n > self.buf.len() {
            return Err(self.malformed());
        }
        self.buf = &self.buf[n..];
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal protobuf writer for the tests.
    #[derive(Default)]
    struct W(Vec<u8>);

    impl W {
        fn varint(mut self, field: u32, v: u64) -> Self {
            put_varint(&mut self.0, u64::from(field) << 3);
            put_varint(&mut self.0, v);
            self
        }
        fn bytes(mut self, field: u32, b: &[u8]) -> Self {
            put_varint(&mut self.0, (u64::from(field) << 3) | 2);
            put_varint(&mut self.0, b.len() as u64);
            self.0.extend_from_slice(b);
            self
        }
        fn msg(self, field: u32, m: W) -> Self {
            self.bytes(field, &m.0)
        }
        fn entry(self, field: u32, k: &str, v: &[u8]) -> Self {
            self.msg(field, W::default().bytes(1, k.as_bytes()).bytes(2, v))
        }
    }

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn response(list_kind: &str, list: W) -> Vec<u8> {
        let unknown = W::default()
            .msg(
                1,
                W::default().bytes(1, b"v1").bytes(2, list_kind.as_bytes()),
            )
            .bytes(2, &list.0)
            .bytes(4, CONTENT_TYPE.as_bytes());
        [MAGIC, &unknown.0].concat()
    }

    fn meta(name: &str) -> W {
        W::default()
            .bytes(1, name.as_bytes())
            .bytes(3, b"tenant")
            .bytes(5, b"0b6c-uid")
            .bytes(6, b"1234")
            .msg(8, W::default().varint(1, 1_700_000_000))
            .msg(17, W::default().bytes(1, b"kubectl"))
    }

    fn fields(obj: &RawObject) -> serde_json::Value {
        serde_json::Value::Object(
            obj.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        serde_json::from_str(v.get())
                            .unwrap_or_else(|e| panic!("{e}: {}", v.get())),
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn a_config_map_page_decodes_to_what_a_json_list_holds() {
        let cm = W::default()
            .msg(
                1,
                meta("app")
                    .entry(11, "tier", b"web")
                    .entry(11, "app", b"shop")
                    .entry(12, "note", b"<b>&\"q\"")
                    .bytes(14, b"example.com/keep"),
            )
            .entry(2, "b.conf", b"line\none\ttab \x01")
            .entry(2, "a.conf", b"")
            .entry(3, "bin", &[0, 1, 2, 255])
            .varint(4, 1);
        let list = W::default()
            .msg(1, W::default().bytes(2, b"99").bytes(3, b"next-page"))
            .msg(2, cm)
            .msg(2, W::default().msg(1, W::default().bytes(1, b"empty")));
        let page = parse_list(ProtobufKind::ConfigMap, &response("ConfigMapList", list)).unwrap();
        assert_eq!(page.continue_token(), Some("next-page"));
        let items = page.into_items();
        assert_eq!(
            fields(&items[0]),
            serde_json::json!({
                "metadata": {"name": "app", "namespace": "tenant",
                    "labels": {"app": "shop", "tier": "web"},
                    "annotations": {"note": "<b>&\"q\""},
                    "finalizers": ["example.com/keep"]},
                "data": {"a.conf": "", "b.conf": "line\none\ttab \u{1}"},
                "binaryData": {"bin": "AAEC/w=="},
                "immutable": true,
            })
        );
        // Keys sorted, as the API server's JSON has them.
        assert!(
            items[0]["data"]
                .get()
                .starts_with(r#"{"a.conf":"","b.conf""#)
        );
        assert_eq!(
            fields(&items[1]),
            serde_json::json!({"metadata": {"name": "empty"}})
        );
    }

    #[test]
    fn a_secret_page_decodes_with_base64_data_and_owner_references() {
        let owner = W::default()
            .bytes(1, b"Deployment")
            .bytes(3, b"web")
            .bytes(4, b"u-1")
            .bytes(5, b"apps/v1")
            .varint(6, 1);
        let secret = W::default()
            .msg(1, meta("tls").msg(13, owner))
            .entry(2, "tls.key", b"\x00secret")
            .bytes(3, b"kubernetes.io/tls");
        let list = W::default().msg(1, W::default()).msg(2, secret);
        let page = parse_list(ProtobufKind::Secret, &response("SecretList", list)).unwrap();
        assert_eq!(page.continue_token(), None);
        assert_eq!(
            fields(&page.into_items()[0]),
            serde_json::json!({
                "metadata": {"name": "tls", "namespace": "tenant", "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u-1",
                     "controller": true}]},
                "data": {"tls.key": "AHNlY3JldA=="},
                "type": "kubernetes.io/tls",
            })
        );
    }

    #[test]
    fn duplicate_map_keys_keep_the_last_value() {
        let cm = W::default()
            .msg(1, W::default().bytes(1, b"d"))
            .entry(2, "k", b"first")
            .entry(2, "a", b"x")
            .entry(2, "k", b"last");
        let list = W::default().msg(2, cm);
        let page = parse_list(ProtobufKind::ConfigMap, &response("ConfigMapList", list)).unwrap();
        assert_eq!(
            page.into_items()[0]["data"].get(),
            r#"{"a":"x","k":"last"}"#
        );
    }

    #[test]
    fn an_unknown_field_is_an_error_not_a_silent_loss() {
        let cm = W::default()
            .msg(1, W::default().bytes(1, b"n"))
            .bytes(9, b"new");
        let list = W::default().msg(2, cm);
        assert_eq!(
            parse_list(ProtobufKind::ConfigMap, &response("ConfigMapList", list)).unwrap_err(),
            ProtobufError::UnknownField {
                message: "ConfigMap",
                field: 9
            }
        );
        let meta = W::default().bytes(1, b"n").bytes(15, b"clusterName");
        let list = W::default().msg(2, W::default().msg(1, meta));
        assert!(matches!(
            parse_list(ProtobufKind::Secret, &response("SecretList", list)),
            Err(ProtobufError::UnknownField {
                message: "ObjectMeta",
                field: 15
            })
        ));
    }

    #[test]
    fn malformed_or_foreign_responses_are_refused() {
        assert_eq!(
            parse_list(ProtobufKind::Secret, b"{\"kind\":\"SecretList\"}").unwrap_err(),
            ProtobufError::NoPrefix
        );
        let list = W::default().msg(2, W::default());
        assert_eq!(
            parse_list(ProtobufKind::Secret, &response("ConfigMapList", list)).unwrap_err(),
            ProtobufError::UnexpectedKind {
                expected: "SecretList".into(),
                found: "ConfigMapList".into()
            }
        );
        let mut truncated = response("SecretList", W::default().msg(2, meta("x")));
        truncated.truncate(truncated.len() - 3);
        assert!(matches!(
            parse_list(ProtobufKind::Secret, &truncated),
            Err(ProtobufError::Malformed(_))
        ));
        let gzip = W::default()
            .msg(1, W::default().bytes(2, b"SecretList"))
            .bytes(3, b"gzip");
        assert_eq!(
            parse_list(ProtobufKind::Secret, &[MAGIC, &gzip.0].concat()).unwrap_err(),
            ProtobufError::ContentEncoding("gzip".into())
        );
    }

    #[test]
    fn skipped_metadata_is_what_the_export_strips() {
        for (_, name) in METADATA_SKIPPED {
            assert!(
                super::super::export::METADATA_STRIPPED.contains(name),
                "{name} is skipped unread but kept by the export"
            );
        }
    }
}
