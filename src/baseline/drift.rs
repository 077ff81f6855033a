//! Drift detection (X.1642 8.5.3, 8.5.4): compares a rendered object with the live one under
//! server-side-apply semantics, normalises resource quantities, honours `ignoreDifferences`, and
//! names the field managers (other than the operator) that own drifted fields.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use kube::api::DynamicObject;
use serde_json::Value;

use super::FIELD_MANAGER;
use super::render::api_group;
use crate::api::baseline::IgnoreDifference;

/// At most this many differences are spelled out by [`ObjectState::message`].
const MESSAGE_MAX_DIFFS: usize = 5;
/// Longest value shown in a message, in characters.
const MESSAGE_MAX_VALUE: usize = 80;

/// Why a value is not a Kubernetes quantity.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DriftError {
    #[error("{value:?} is not a quantity: {reason}")]
    InvalidQuantity { value: String, reason: &'static str },
}

/// One field whose live value is not the desired one.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldDiff {
    /// RFC 6901 JSON pointer of the field (`/spec/hard/pods`). Lists differ as a whole, so the
    /// pointer names the list (`/spec/ingress`), not an item.
    pub pointer: String,
    /// What the baseline renders there.
    pub desired: Value,
    /// What the cluster has there; `None` when the field is missing.
    pub live: Option<Value>,
}

impl std::fmt::Display for FieldDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.live {
            Some(live) => write!(
                f,
                "{}: want {}, have {}",
                self.pointer,
                short(&self.desired),
                short(live)
            ),
            None => write!(
                f,
                "{}: want {}, missing",
                self.pointer,
                short(&self.desired)
            ),
        }
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() <= MESSAGE_MAX_VALUE {
        s
    } else {
        let cut: String = s.chars().take(MESSAGE_MAX_VALUE).collect();
        format!("{cut}...")
    }
}

/// The compliance of one rendered object.
#[derive(Debug, Clone, PartialEq)]
pub enum ObjectState {
    /// Every field the baseline sets has the desired value.
    Compliant,
    /// The object does not exist.
    Missing,
    /// Some fields differ. `managers` are the field managers other than the operator that own
    /// any of them (from `metadata.managedFields`): who drifted the object, named in status and
    /// Events (a manager that keeps taking fields back after reverts is a conflict:
    /// [`crate::baseline::TakeBacks`]).
    Drifted {
        diffs: Vec<FieldDiff>,
        managers: Vec<String>,
    },
}

impl ObjectState {
    /// `Compliant`, `Missing` or `Drifted`: the `reason` of `status.nonCompliant`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Compliant => "Compliant",
            Self::Missing => "Missing",
            Self::Drifted { .. } => "Drifted",
        }
    }

    /// A one-line message for status and Events: the first differences and who made them.
    pub fn message(&self) -> String {
        match self {
            Self::Compliant => "as rendered".into(),
            Self::Missing => "object does not exist".into(),
            Self::Drifted { diffs, managers } => {
                let mut parts: Vec<String> = diffs
                    .iter()
                    .take(MESSAGE_MAX_DIFFS)
                    .map(ToString::to_string)
                    .collect();
                if diffs.len() > MESSAGE_MAX_DIFFS {
                    parts.push(format!("and {} more", diffs.len() - MESSAGE_MAX_DIFFS));
                }
                let mut msg = parts.join("; ");
                if !managers.is_empty() {
                    msg.push_str(&format!(" (fields owned by {})", managers.join(", ")));
                }
                msg
            }
        }
    }
}

/// A Kubernetes resource quantity in canonical form: `digits × 10^exp10`, trailing zeros moved
/// into the exponent, so that `1` and `1000m`, `1Gi` and `1024Mi`, `0.5` and `500m` are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParsedQuantity {
    negative: bool,
    digits: u128,
    exp10: i64,
}

impl ParsedQuantity {
    /// Parses `<sign><number><suffix>` as the API server does: suffixes `Ki Mi Gi Ti Pi Ei`,
    /// `n u m "" k M G T P E`, or an exponent `e3`/`E-3`.
    pub fn parse(s: &str) -> Result<Self, DriftError> {
        let err = |reason| DriftError::InvalidQuantity {
            value: s.into(),
            reason,
        };
        let (negative, body) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let num_len = body
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(body.len());
        let (number, suffix) = body.split_at(num_len);
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if int.is_empty() && frac.is_empty() {
            return Err(err("no digits"));
        }
        if frac.contains('.') {
            return Err(err("more than one decimal point"));
        }
        let (mut exp10, exp2): (i64, u32) = match suffix {
            "" => (0, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            exp if exp.starts_with(['e', 'E']) => {
                let e: i64 = exp[1..]
                    .parse()
                    .map_err(|_| err("exponent is not an integer"))?;
                if e.abs() > 1000 {
                    return Err(err("exponent out of range"));
                }
                (e, 0)
            }
            _ => return Err(err("unknown suffix")),
        };
        // All digits as one integer, the decimal point moved into the exponent.
        let mut all: String = format!("{int}{frac}");
        exp10 -= frac.len() as i64;
        let trimmed = all.trim_end_matches('0');
        exp10 += (all.len() - trimmed.len()) as i64;
        all.truncate(trimmed.len());
        let all = all.trim_start_matches('0');
        if all.is_empty() {
            return Ok(Self {
                negative: false,
                digits: 0,
                exp10: 0,
            });
        }
        if all.len() > 38 {
            return Err(err("too many significant digits"));
        }
        let mut digits: u128 = all.parse().map_err(|_| err("not a number"))?;
        digits = digits
            .checked_mul(1u128 << exp2)
            .ok_or_else(|| err("too large"))?;
        while digits.is_multiple_of(10) {
            digits /= 10;
            exp10 += 1;
        }
        Ok(Self {
            negative,
            digits,
            exp10,
        })
    }
}

/// Whether two strings are the same quantity (`"1"` and `"1000m"`); false when either is not a
/// quantity.
pub fn quantities_equal(a: &str, b: &str) -> bool {
    match (ParsedQuantity::parse(a), ParsedQuantity::parse(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The differences between a rendered object (`desired`) and the live one, as server-side apply
/// sees them: only fields present in `desired` count (fields the operator does not set belong to
/// someone else, and server defaults added to `live` are not drift); maps are compared key by
/// key; lists as a whole value (same length, each item matching under the same rules, so defaults
/// inside list items are tolerated too); quantities semantically; numbers by value. A desired
/// `null` means the field must be absent. Fields at or under an `ignore` pointer are skipped;
/// a pointer into a list item makes that list compare item by item.
///
/// Quantity comparison applies everywhere except under `/metadata`, `/data`, `/stringData` and
/// `/binaryData`, where strings are compared exactly.
pub fn diff(desired: &Value, live: &Value, ignore: &[String]) -> Vec<FieldDiff> {
    let mut out = Vec::new();
    walk(desired, Some(live), "", ignore, true, &mut out);
    out
}

fn walk(
    desired: &Value,
    live: Option<&Value>,
    pointer: &str,
    ignore: &[String],
    quantities: bool,
    out: &mut Vec<FieldDiff>,
) {
    if is_ignored(pointer, ignore) {
        return;
    }
    let push = |out: &mut Vec<FieldDiff>| {
        out.push(FieldDiff {
            pointer: pointer.into(),
            desired: desired.clone(),
            live: live.cloned(),
        })
    };
    match (desired, live) {
        (Value::Null, None | Some(Value::Null)) => {}
        (_, None) => push(out),
        (Value::Object(d), Some(Value::Object(l))) => {
            for (k, dv) in d {
                let child = format!("{pointer}/{}", escape(k));
                let q = quantities && !(pointer.is_empty() && is_verbatim_root(k));
                walk(dv, l.get(k), &child, ignore, q, out);
            }
        }
        (Value::Array(d), Some(Value::Array(l))) if has_ignore_below(pointer, ignore) => {
            if d.len() != l.len() {
                push(out);
            } else {
                for (i, (dv, lv)) in d.iter().zip(l).enumerate() {
                    walk(
                        dv,
                        Some(lv),
                        &format!("{pointer}/{i}"),
                        ignore,
                        quantities,
                        out,
                    );
                }
            }
        }
        (_, Some(l)) => {
            if !contains(desired, l, quantities) {
                push(out);
            }
        }
    }
}

/// Top-level fields whose strings are data, never quantities.
fn is_verbatim_root(key: &str) -> bool {
    matches!(key, "metadata" | "data" | "stringData" | "binaryData")
}

/// Whether `live` holds everything `desired` sets (the relation [`diff`] checks, as a boolean).
fn contains(desired: &Value, live: &Value, quantities: bool) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => contains(dv, lv, quantities),
            None => dv.is_null(),
        }),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(a, b)| contains(a, b, quantities))
        }
        (Value::Number(a), Value::Number(b)) => a == b || a.as_f64() == b.as_f64(),
        (a, b) if a == b => true,
        (a, b) if quantities => match (scalar_text(a), scalar_text(b)) {
            (Some(a), Some(b)) => quantities_equal(&a, &b),
            _ => false,
        },
        _ => false,
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn is_ignored(pointer: &str, ignore: &[String]) -> bool {
    ignore.iter().any(|ig| {
        !ig.is_empty()
            && (pointer == ig
                || pointer
                    .strip_prefix(ig.as_str())
                    .is_some_and(|rest| rest.starts_with('/')))
    })
}

fn has_ignore_below(pointer: &str, ignore: &[String]) -> bool {
    ignore.iter().any(|ig| {
        ig.strip_prefix(pointer)
            .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// RFC 6901 escaping of one reference token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// RFC 6901 reference tokens of a pointer (`/a~1b/c` → `["a/b", "c"]`).
fn tokens(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// The `jsonPointers` of every `ignoreDifferences` entry that applies to the object: same kind,
/// same API group when the entry names one (`""` is the core group), same name when it names
/// one. Sorted, without repeats.
pub fn applicable_ignores(
    ignore_differences: &[IgnoreDifference],
    api_version: &str,
    kind: &str,
    name: &str,
) -> Vec<String> {
    let group = api_group(api_version);
    let pointers: BTreeSet<&String> = ignore_differences
        .iter()
        .filter(|i| i.kind == kind)
        .filter(|i| i.group.as_deref().is_none_or(|g| g == group))
        .filter(|i| i.name.as_deref().is_none_or(|n| n == name))
        .flat_map(|i| &i.json_pointers)
        .collect();
    pointers.into_iter().cloned().collect()
}

/// The field managers other than the operator ([`FIELD_MANAGER`]) that own the field at
/// `pointer`, sorted. Reads each entry's `fieldsV1`: map fields (`f:name`) are followed exactly;
/// reaching the field, or an atomic leaf (`{}`) above it, means ownership; a list is attributed
/// to every manager owning the list or any of its items (`k:{...}`, `v:...`, `i:N`); a pointer
/// into an item (`/spec/ingress/0/from`) is matched exactly against `i:0`, and otherwise
/// attributed to the owners of any `k:`/`v:` item, which cannot be matched to an index without
/// the object. Entries for a subresource (`status`) are ignored.
pub fn field_managers(managed_fields: &[ManagedFieldsEntry], pointer: &str) -> Vec<String> {
    let path = tokens(pointer);
    let owners: BTreeSet<String> = managed_fields
        .iter()
        .filter(|e| e.subresource.as_deref().is_none_or(str::is_empty))
        .filter_map(|e| {
            let manager = e.manager.as_deref()?;
            let fields = e.fields_v1.as_ref()?;
            let root = fields.0.as_object()?;
            (manager != FIELD_MANAGER && !root.is_empty() && owns(&fields.0, &path))
                .then(|| manager.to_string())
        })
        .collect();
    owners.into_iter().collect()
}

fn owns(node: &Value, path: &[String]) -> bool {
    let Some(map) = node.as_object() else {
        return false;
    };
    let Some((first, rest)) = path.split_first() else {
        return true;
    };
    if map.is_empty() {
        // An atomic field owned as a whole: everything beneath it is the manager's.
        return true;
    }
    if let Some(child) = map.get(&format!("f:{first}"))
        && owns(child, rest)
    {
        return true;
    }
    if first.parse::<usize>().is_ok() {
        if let Some(child) = map.get(&format!("i:{first}")) {
            return owns(child, rest);
        }
        // Items keyed by value or by key fields cannot be matched to an index without the
        // object: owning any of them counts. Items keyed by index (`i:N`) were matched above.
        return map
            .keys()
            .any(|k| k.starts_with("k:") || k.starts_with("v:"));
    }
    false
}

/// The compliance of one object: [`ObjectState::Missing`] without a live object, else the
/// [`diff`] of `desired` and `live` under `ignores` (from [`applicable_ignores`]), with the other
/// field managers of the drifted fields read from `live.metadata.managedFields` (unreadable
/// managedFields name no manager).
pub fn classify(desired: &Value, live: Option<&Value>, ignores: &[String]) -> ObjectState {
    let Some(live) = live else {
        return ObjectState::Missing;
    };
    let diffs = diff(desired, live, ignores);
    if diffs.is_empty() {
        return ObjectState::Compliant;
    }
    let entries: Vec<ManagedFieldsEntry> = live
        .pointer("/metadata/managedFields")
        .and_then(|m| serde_json::from_value(m.clone()).ok())
        .unwrap_or_default();
    drifted(diffs, &entries)
}

/// [`classify`] against a live object as a cache holds it, compared in place: only its
/// metadata (without managedFields) is turned into JSON, and managedFields are read only when a
/// field differs. A check compares thousands of cached objects.
pub fn classify_cached(
    desired: &Value,
    live: Option<&DynamicObject>,
    ignores: &[String],
) -> ObjectState {
    let Some(live) = live else {
        return ObjectState::Missing;
    };
    let Some(fields) = desired.as_object() else {
        return classify(desired, serde_json::to_value(live).ok().as_ref(), ignores);
    };
    let mut diffs = Vec::new();
    for (k, dv) in fields {
        let owned: Option<Value>;
        let lv = match k.as_str() {
            "apiVersion" | "kind" => {
                owned = live.types.as_ref().map(|t| {
                    Value::String(if k == "kind" {
                        t.kind.clone()
                    } else {
                        t.api_version.clone()
                    })
                });
                owned.as_ref()
            }
            "metadata" => {
                let meta = ObjectMeta {
                    managed_fields: None,
                    ..live.metadata.clone()
                };
                owned = serde_json::to_value(meta).ok();
                owned.as_ref()
            }
            _ => live.data.get(k),
        };
        walk(
            dv,
            lv,
            &format!("/{}", escape(k)),
            ignores,
            !is_verbatim_root(k),
            &mut diffs,
        );
    }
    if diffs.is_empty() {
        return ObjectState::Compliant;
    }
    drifted(
        diffs,
        live.metadata.managed_fields.as_deref().unwrap_or_default(),
    )
}

/// Differences, with the other field managers that own any of them.
fn drifted(diffs: Vec<FieldDiff>, entries: &[ManagedFieldsEntry]) -> ObjectState {
    let managers: BTreeSet<String> = diffs
        .iter()
        .flat_map(|d| field_managers(entries, &d.pointer))
        .collect();
    ObjectState::Drifted {
        diffs,
        managers: managers.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn yaml(s: &str) -> Value {
        serde_yaml::from_str(s).expect("test fixture")
    }

    #[test]
    fn quantity_equality_table() {
        let equal = [
            ("1", "1000m"),
            ("1Gi", "1024Mi"),
            ("0.5", "500m"),
            ("1.5Gi", "1536Mi"),
            ("1k", "1000"),
            ("1e3", "1k"),
            ("1E3", "1000"),
            ("1E", "1000P"),
            ("100m", "0.1"),
            ("+2", "2"),
            ("0", "0m"),
            ("-0", "0Gi"),
            ("1Ki", "1024"),
            ("1Ei", "1024Pi"),
            ("250n", "0.25u"),
            ("10.", "10"),
            (".5", "500m"),
            ("007", "7"),
        ];
        for (a, b) in equal {
            assert!(quantities_equal(a, b), "{a} == {b}");
            assert!(quantities_equal(b, a), "{b} == {a}");
        }
        let different = [
            ("1", "1001m"),
            ("1Gi", "1G"),
            ("1M", "1m"),
            ("-1", "1"),
            ("1Ki", "1k"),
            ("1E", "1e"),
            ("abc", "abc"),
            ("", ""),
        ];
        for (a, b) in different {
            assert!(!quantities_equal(a, b), "{a} != {b}");
        }
    }

    #[test]
    fn invalid_quantities() {
        for bad in [
            "", "-", "Gi", "1.2.3", "1Xi", "1 Gi", "1e", "1e1.5", "1e99999", "1g",
        ] {
            assert!(ParsedQuantity::parse(bad).is_err(), "{bad:?}");
        }
        let err = ParsedQuantity::parse("12parsecs").expect_err("invalid");
        assert!(err.to_string().contains("12parsecs"), "{err}");
    }

    #[test]
    fn diff_ignores_server_defaults_and_foreign_fields() {
        let desired = yaml(
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: opsec-isolation
  namespace: acme
  labels: {app.kubernetes.io/managed-by: opsec-operator}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress: [{ports: [{port: 80}]}]
"#,
        );
        let live = yaml(
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: opsec-isolation
  namespace: acme
  uid: 1234
  resourceVersion: "99"
  generation: 3
  labels: {app.kubernetes.io/managed-by: opsec-operator, extra: by-someone-else}
  annotations: {kubectl.kubernetes.io/last-applied-configuration: "{}"}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress: [{ports: [{port: 80, protocol: TCP}]}]
  somethingNew: true
status: {}
"#,
        );
        assert_eq!(diff(&desired, &live, &[]), vec![]);
        assert_eq!(classify(&desired, Some(&live), &[]), ObjectState::Compliant);
    }

    #[test]
    fn diff_reports_changed_missing_and_list_fields() {
        let desired = json!({
            "metadata": {"labels": {"a": "1"}},
            "spec": {"hard": {"pods": "10", "cpu": "2"}, "list": [1, 2], "gone": "x", "absent": null},
        });
        let live = json!({
            "metadata": {"labels": {"a": "1.0"}},
            "spec": {"hard": {"pods": "11", "cpu": "2000m"}, "list": [1, 2, 3]},
        });
        let diffs = diff(&desired, &live, &[]);
        assert_eq!(
            diffs,
            vec![
                FieldDiff {
                    pointer: "/metadata/labels/a".into(),
                    desired: json!("1"),
                    live: Some(json!("1.0")),
                },
                FieldDiff {
                    pointer: "/spec/gone".into(),
                    desired: json!("x"),
                    live: None,
                },
                FieldDiff {
                    pointer: "/spec/hard/pods".into(),
                    desired: json!("10"),
                    live: Some(json!("11")),
                },
                FieldDiff {
                    pointer: "/spec/list".into(),
                    desired: json!([1, 2]),
                    live: Some(json!([1, 2, 3])),
                },
            ]
        );
        // A desired null wants the field gone.
        let d = diff(&json!({"x": null}), &json!({"x": 1}), &[]);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn diff_compares_quantities_semantically_but_not_data() {
        let desired = json!({
            "spec": {"hard": {"memory": "1024Mi", "cpu": "0.5", "pods": 10}, "limits": [{"max": {"cpu": "1"}}]},
            "data": {"ratio": "1"},
        });
        let live = json!({
            "spec": {"hard": {"memory": "1Gi", "cpu": "500m", "pods": "10"}, "limits": [{"max": {"cpu": "1000m"}, "type": "Container"}]},
            "data": {"ratio": "1000m"},
        });
        let diffs = diff(&desired, &live, &[]);
        let pointers: Vec<_> = diffs.iter().map(|d| d.pointer.as_str()).collect();
        assert_eq!(pointers, ["/data/ratio"]);
        // Numbers by value.
        assert!(diff(&json!({"n": 1}), &json!({"n": 1.0}), &[]).is_empty());
    }

    #[test]
    fn ignore_differences() {
        let desired = json!({"spec": {"hard": {"pods": "10", "cpu": "2"}, "limits": [{"max": {"cpu": "1"}, "type": "Pod"}]}, "metadata": {"labels": {"a/b": "x"}}});
        let live = json!({"spec": {"hard": {"pods": "99", "cpu": "3"}, "limits": [{"max": {"cpu": "4"}, "type": "Pod"}]}, "metadata": {"labels": {"a/b": "y"}}});
        let cases: &[(&[&str], &[&str])] = &[
            (
                &[],
                &[
                    "/metadata/labels/a~1b",
                    "/spec/hard/cpu",
                    "/spec/hard/pods",
                    "/spec/limits",
                ],
            ),
            (
                &["/spec/hard/pods"],
                &["/metadata/labels/a~1b", "/spec/hard/cpu", "/spec/limits"],
            ),
            (&["/spec/hard", "/metadata"], &["/spec/limits"]),
            (&["/spec"], &["/metadata/labels/a~1b"]),
            // Not a prefix at a token boundary.
            (
                &["/spec/har"],
                &[
                    "/metadata/labels/a~1b",
                    "/spec/hard/cpu",
                    "/spec/hard/pods",
                    "/spec/limits",
                ],
            ),
            // Into a list item: the list is compared item by item.
            (
                &["/spec/limits/0/max", "/spec/hard", "/metadata/labels/a~1b"],
                &[],
            ),
            (
                &["/spec/limits/0/type", "/spec/hard", "/metadata"],
                &["/spec/limits/0/max/cpu"],
            ),
        ];
        for (ignore, want) in cases {
            let ignore: Vec<String> = ignore.iter().map(|s| s.to_string()).collect();
            let got: Vec<String> = diff(&desired, &live, &ignore)
                .into_iter()
                .map(|d| d.pointer)
                .collect();
            assert_eq!(got, *want, "ignore {ignore:?}");
        }
    }

    #[test]
    fn applicable_ignores_match_group_kind_name() {
        let ids: Vec<IgnoreDifference> = serde_yaml::from_str(
            r#"
- {kind: ResourceQuota, jsonPointers: [/spec/hard/pods]}
- {group: "", kind: ResourceQuota, name: opsec-quota, jsonPointers: [/spec/hard/cpu, /spec/hard/pods]}
- {group: apps, kind: ResourceQuota, jsonPointers: [/wrong-group]}
- {kind: ResourceQuota, name: other, jsonPointers: [/wrong-name]}
- {kind: ConfigMap, jsonPointers: [/data]}
- {group: networking.k8s.io, kind: NetworkPolicy, jsonPointers: [/spec/ingress]}
"#,
        )
        .expect("fixture");
        assert_eq!(
            applicable_ignores(&ids, "v1", "ResourceQuota", "opsec-quota"),
            ["/spec/hard/cpu", "/spec/hard/pods"]
        );
        assert_eq!(
            applicable_ignores(&ids, "v1", "ResourceQuota", "x"),
            ["/spec/hard/pods"]
        );
        assert_eq!(
            applicable_ignores(
                &ids,
                "networking.k8s.io/v1",
                "NetworkPolicy",
                "opsec-isolation"
            ),
            ["/spec/ingress"]
        );
        assert!(applicable_ignores(&ids, "v1", "Secret", "x").is_empty());
    }

    /// A NetworkPolicy applied by the operator, then `kubectl edit`ed: the edit took over
    /// `spec.ingress` and added a label.
    fn edited_network_policy() -> Value {
        yaml(
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: opsec-isolation
  namespace: acme
  labels: {app.kubernetes.io/managed-by: opsec-operator, opsec.x1642.dev/baseline: base, hack: "yes"}
  managedFields:
  - manager: opsec-operator
    operation: Apply
    apiVersion: networking.k8s.io/v1
    fieldsType: FieldsV1
    fieldsV1:
      f:metadata:
        f:labels:
          f:app.kubernetes.io/managed-by: {}
          f:opsec.x1642.dev/baseline: {}
      f:spec:
        f:podSelector: {}
        f:policyTypes: {}
  - manager: kubectl-edit
    operation: Update
    apiVersion: networking.k8s.io/v1
    time: "2025-01-01T00:00:00Z"
    fieldsType: FieldsV1
    fieldsV1:
      f:metadata:
        f:labels:
          f:hack: {}
      f:spec:
        f:ingress: {}
  - manager: kube-controller-manager
    operation: Update
    subresource: status
    fieldsType: FieldsV1
    fieldsV1:
      f:spec:
        f:ingress: {}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress: [{from: [{ipBlock: {cidr: 0.0.0.0/0}}]}]
"#,
        )
    }

    /// The NetworkPolicy the baseline renders (what [`edited_network_policy`] was applied from).
    fn desired_network_policy() -> Value {
        yaml(
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: opsec-isolation
  namespace: acme
  labels: {app.kubernetes.io/managed-by: opsec-operator, opsec.x1642.dev/baseline: base}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {}}]}]
"#,
        )
    }

    fn entries(live: &Value) -> Vec<ManagedFieldsEntry> {
        serde_json::from_value(live["metadata"]["managedFields"].clone()).expect("fixture")
    }

    #[test]
    fn a_cached_object_classifies_as_its_json() {
        let desired = desired_network_policy();
        let edited = edited_network_policy();
        let mut fixed = edited.clone();
        fixed["spec"]["ingress"] = desired["spec"]["ingress"].clone();
        let mut renamed = fixed.clone();
        renamed["kind"] = json!("Other");
        let mut relabelled = fixed.clone();
        relabelled["metadata"]["labels"]["opsec.x1642.dev/baseline"] = json!("else");
        for live in [&edited, &fixed, &renamed, &relabelled] {
            let cached: DynamicObject = serde_json::from_value(live.clone()).expect("fixture");
            for ignores in [vec![], vec!["/spec/ingress".to_string()]] {
                assert_eq!(
                    classify_cached(&desired, Some(&cached), &ignores),
                    classify(&desired, Some(live), &ignores),
                    "{live}"
                );
            }
        }
        assert!(matches!(
            classify_cached(&desired, Some(&serde_json::from_value(edited).unwrap()), &[]),
            ObjectState::Drifted { managers, .. } if managers == ["kubectl-edit"]
        ));
        assert_eq!(classify_cached(&desired, None, &[]), ObjectState::Missing);
    }

    #[test]
    fn managed_fields_attribute_kubectl_edit() {
        let live = edited_network_policy();
        let mf = entries(&live);
        let cases: &[(&str, &[&str])] = &[
            ("/spec/ingress", &["kubectl-edit"]),
            ("/spec/ingress/0/from", &["kubectl-edit"]),
            ("/spec/podSelector", &[]),
            ("/spec/egress", &[]),
            ("/metadata/labels/hack", &["kubectl-edit"]),
            ("/metadata/labels/opsec.x1642.dev~1baseline", &[]),
            ("/spec", &["kubectl-edit"]),
        ];
        for (pointer, want) in cases {
            assert_eq!(field_managers(&mf, pointer), *want, "{pointer}");
        }
    }

    #[test]
    fn managed_fields_list_items() {
        let mf: Vec<ManagedFieldsEntry> = serde_yaml::from_str(
            r#"
- manager: helm
  operation: Update
  fieldsType: FieldsV1
  fieldsV1:
    f:spec:
      f:containers:
        k:{"name":"app"}:
          .: {}
          f:image: {}
- manager: sidecar-injector
  operation: Update
  fieldsType: FieldsV1
  fieldsV1:
    f:spec:
      f:finalizers:
        v:"x": {}
      f:args:
        i:1: {}
- manager: opsec-operator
  operation: Apply
  fieldsType: FieldsV1
  fieldsV1:
    f:spec:
      f:containers: {}
- manager: empty
  operation: Update
  fieldsType: FieldsV1
  fieldsV1: {}
"#,
        )
        .expect("fixture");
        let cases: &[(&str, &[&str])] = &[
            ("/spec/containers", &["helm"]),
            ("/spec/containers/0/image", &["helm"]),
            ("/spec/finalizers", &["sidecar-injector"]),
            ("/spec/args/1", &["sidecar-injector"]),
            ("/spec/args/0", &[]),
            ("/spec/other", &[]),
        ];
        for (pointer, want) in cases {
            assert_eq!(field_managers(&mf, pointer), *want, "{pointer}");
        }
    }

    #[test]
    fn classify_states() {
        let live = edited_network_policy();
        let desired = desired_network_policy();
        assert_eq!(classify(&desired, None, &[]), ObjectState::Missing);
        let state = classify(&desired, Some(&live), &[]);
        let ObjectState::Drifted { diffs, managers } = &state else {
            panic!("expected drift, got {state:?}");
        };
        assert_eq!(diffs.len(), 1);
        assert_eq!(diffs[0].pointer, "/spec/ingress");
        assert_eq!(managers, &["kubectl-edit"]);
        assert_eq!(state.reason(), "Drifted");
        assert_eq!(
            state.message(),
            r#"/spec/ingress: want [{"from":[{"podSelector":{}}]}], have [{"from":[{"ipBlock":{"cidr":"0.0.0.0/0"}}]}] (fields owned by kubectl-edit)"#
        );
        assert_eq!(
            classify(&desired, Some(&live), &["/spec/ingress".into()]),
            ObjectState::Compliant
        );
        // Drift that no other manager owns (a field deleted, say): no managers.
        let mut gone = live.clone();
        if let Some(spec) = gone["spec"].as_object_mut() {
            spec.remove("policyTypes");
        }
        let state = classify(&desired, Some(&gone), &["/spec/ingress".into()]);
        assert!(
            matches!(&state, ObjectState::Drifted { managers, .. } if managers.is_empty()),
            "{state:?}"
        );
        assert_eq!(
            state.message(),
            r#"/spec/policyTypes: want ["Ingress"], missing"#
        );
        // Unreadable managedFields: still drift, no managers.
        let mut broken = live;
        broken["metadata"]["managedFields"] = json!("garbage");
        assert!(matches!(
            classify(&desired, Some(&broken), &[]),
            ObjectState::Drifted { managers, .. } if managers.is_empty()
        ));
    }
}
