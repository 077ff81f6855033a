//! Types shared by every kind: durations, cron schedules, time zones, references to Secrets and
//! objects, and the Kubernetes-convention `Condition` list.
//!
//! Each string type carries its own OpenAPI pattern, so the API server refuses a malformed value
//! and names the field; the operator parses the same string again with the functions here.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// API group of every kind.
pub const GROUP: &str = "opsec.x1642.dev";
/// API version of every kind.
pub const VERSION: &str = "v1alpha1";
/// Category that `kubectl get opsec` lists.
pub const CATEGORY: &str = "opsec";

use super::rules::{
    API_VERSION_PATTERN, CRON_PATTERN, KIND_PATTERN, PATH_SEGMENT_PATTERN, SECRET_KEY_PATTERN,
    cron_rules, path_segment_rule, secret_key_rule, time_zone_rule,
};

/// A status word: an enum of the values one status field takes, serialized as its variant name,
/// listed in the CRD's schema (so `kubectl explain` and the API server know every value) and
/// compared with its text (`state == "Verified"`) where a test or a message reads it.
macro_rules! status_words {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident,)+ }) => {
        $(#[$doc])*
        #[derive(
            serde::Serialize, serde::Deserialize, schemars::JsonSchema, Clone, Copy, Debug,
            Default, PartialEq, Eq, Hash,
        )]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// The value as the API writes it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => stringify!($variant),)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $(stringify!($variant) => Ok(Self::$variant),)+
                    other => Err(format!(
                        "{other:?} is not a {}",
                        stringify!($name)
                    )),
                }
            }
        }
    };
}
pub(crate) use status_words;

pub use super::rules::{DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN, DURATION_PATTERN};

/// An IANA time-zone name such as `UTC`, `Europe/Berlin` or `America/Argentina/Buenos_Aires`;
/// the schema also checks the name against the time-zone database.
pub const TIME_ZONE_PATTERN: &str = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$";

/// Implements `JsonSchema` for a string newtype: an inline string schema with a length bound
/// and a pattern, so the API server judges the value and names the field.
/// `$rules` are further CEL rules of the value.
macro_rules! string_schema {
    ($ty:ident, $max:expr, $pattern:expr, $rules:expr) => {
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                stringify!($ty).into()
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                let pattern: &str = &$pattern;
                let mut schema = json_schema!({"type": "string", "minLength": 1, "maxLength": $max, "pattern": pattern});
                for rule in $rules {
                    kube::core::validate(&mut schema, rule).expect("a rule serializes");
                }
                schema
            }
        }
    };
}

/// A Go-style duration string (`90s`, `15m`, `6h`, `168h`); see [`DURATION_PATTERN`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Duration(pub String);

impl Duration {
    /// The duration as a `std::time::Duration`.
    pub fn to_std(&self) -> Result<std::time::Duration, DurationError> {
        parse_duration(&self.0)
    }
}

impl From<&str> for Duration {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

impl std::fmt::Display for Duration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

string_schema!(
    Duration,
    64,
    DURATION_PATTERN,
    Vec::<kube::core::Rule>::new()
);

/// Why a duration string did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("duration {0:?} is empty")]
    Empty(String),
    #[error(
        "duration {0:?} is not of the form 90s, 15m, 6h or 1h30m (units h, m, s, ms, us, ns in that order, each once, at most six digits each)"
    )]
    Malformed(String),
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// [`DURATION_PATTERN`], compiled: the parser accepts exactly what the schema does.
static DURATION_REGEX: std::sync::LazyLock<regex::Regex> =
    std::sync::LazyLock::new(|| regex::Regex::new(DURATION_PATTERN).expect("a valid pattern"));

/// Parses a Go-style duration (`1h30m`, `1.5h`, `250ms`). Negative durations are refused.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty(s.into()));
    }
    let malformed = || DurationError::Malformed(s.into());
    if !DURATION_REGEX.is_match(s) {
        return Err(malformed());
    }
    let mut total_nanos: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(malformed)?;
        if num_len == 0 {
            return Err(malformed());
        }
        let number = &rest[..num_len];
        if number.starts_with('.') || number.ends_with('.') || number.matches('.').count() > 1 {
            return Err(malformed());
        }
        let value: f64 = number.parse().map_err(|_| malformed())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(malformed()),
        };
        rest = &rest[unit_len..];
        total_nanos += value * nanos_per_unit;
    }
    if !total_nanos.is_finite() || total_nanos > u64::MAX as f64 {
        return Err(DurationError::Overflow(s.into()));
    }
    Ok(std::time::Duration::from_nanos(total_nanos.round() as u64))
}

/// Formats a duration the way Go does, to the second (`1h30m0s` becomes `1h30m`): used in status
/// fields that report measured times.
pub fn format_duration(d: std::time::Duration) -> String {
    let total_ms = d.as_millis();
    if total_ms < 1000 {
        return format!("{total_ms}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let frac = (total_ms % 1000) as u64;
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || frac > 0 {
        if h == 0 && m == 0 && frac > 0 {
            out.push_str(&format!("{s}.{frac:03}s"));
        } else {
            out.push_str(&format!("{s}s"));
        }
    }
    out
}

/// A cron schedule: five fields (`0 */6 * * *`) or `@hourly`, `@daily`, `@weekly`, `@monthly`,
/// `@yearly`; see [`CRON_PATTERN`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Schedule(pub String);

impl From<&str> for Schedule {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

string_schema!(Schedule, 128, *CRON_PATTERN, cron_rules());

/// An IANA time-zone name (`UTC`, `Europe/Berlin`); see [`TIME_ZONE_PATTERN`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TimeZone(pub String);

string_schema!(TimeZone, 64, TIME_ZONE_PATTERN, [time_zone_rule()]);

/// A key of a Secret in the same namespace as the object that names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as this object (the operator never reads a
    /// Secret of another namespace on a tenant's behalf).
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY_PATTERN))]
    #[x_kube(validation = secret_key_rule())]
    pub key: String,
}

/// A reference by name to an object of a known kind in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectRef {
    /// Name of the object, in the same namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
}

/// A reference to any object in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    /// API version of the object, such as `apps/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), regex(pattern = API_VERSION_PATTERN))]
    pub api_version: Option<String>,
    /// Kind of the object, such as `Deployment`.
    #[schemars(length(min = 1, max = 63), regex(pattern = KIND_PATTERN))]
    pub kind: String,
    /// Name of the object.
    #[schemars(length(min = 1, max = 253), regex(pattern = PATH_SEGMENT_PATTERN))]
    #[x_kube(validation = path_segment_rule("name"))]
    pub name: String,
}

/// The schema of a `conditions` list, as strict as `metav1.Condition`'s own: a type, a status
/// of True, False or Unknown, a CamelCase reason, an observedGeneration of at least zero; a
/// list-map keyed by type, so that server-side apply merges conditions by type.
pub fn conditions_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Conditions, by type (Kubernetes API conventions).",
        "type": "array",
        "maxItems": 32,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["type", "status", "lastTransitionTime", "reason", "message"],
            "properties": {
                "type": {"type": "string", "maxLength": 316, "pattern": r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"},
                "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
                "lastTransitionTime": {"type": "string", "format": "date-time"},
                "reason": {"type": "string", "minLength": 1, "maxLength": 1024, "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"},
                "message": {"type": "string", "maxLength": MAX_CONDITION_MESSAGE},
            },
        },
    })
}

/// The longest condition message the schema takes; longer messages are cut at a character.
pub const MAX_CONDITION_MESSAGE: usize = 32768;

/// `message` cut to [`MAX_CONDITION_MESSAGE`] bytes at a character boundary.
fn condition_message(message: String) -> String {
    cap_message(&message, MAX_CONDITION_MESSAGE)
}

/// `message` cut to at most `max` bytes at a character boundary, ending in `...` when cut.
pub fn cap_message(message: &str, max: usize) -> String {
    if message.len() <= max {
        return message.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

/// The status of a condition: the three values the API conventions allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b { Self::True } else { Self::False }
    }
}

/// Sets (or adds) the condition of `type_` in `conditions`. `lastTransitionTime` moves only when
/// the status changes, so a status write that changes nothing else is byte-for-byte the same.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: jiff::Timestamp,
) {
    let message = condition_message(message.into());
    let status = status.as_str();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time =
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now);
                existing.status = status.into();
            }
            existing.reason = reason.into();
            existing.message = message;
            existing.observed_generation = observed_generation;
        }
        None => conditions.push(Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation,
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
        }),
    }
}

/// The condition of `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Serde default helper: `true`.
pub fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as StdDuration;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_duration("90s"), Ok(StdDuration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(StdDuration::from_secs(5400)));
        assert_eq!(parse_duration("1.5h"), Ok(StdDuration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(StdDuration::from_millis(250)));
        assert_eq!(
            parse_duration("168h"),
            Ok(StdDuration::from_secs(7 * 86400))
        );
    }

    #[test]
    fn refuses_what_go_refuses() {
        for bad in ["", "7d", "h", "10", "1x", "-5m", "5 m", "1h-3m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn schema_pattern_agrees_with_parser() {
        // The API server judges by DURATION_PATTERN, the operator by parse_duration: a string one
        // accepts and the other refuses would pass admission and then fail in the reconciler.
        let re = regex::Regex::new(DURATION_PATTERN).unwrap();
        for s in [
            "1s", "0.5h", "1h2m3s", "10ms", "3us", "7ns", "168h", "", "7d", "h", "10", "1x", "-5m",
            "5 m", "1.h", ".5h", "1µs", "1h-3m", "1H",
        ] {
            // The schema adds minLength 1 to the pattern.
            assert_eq!(
                !s.is_empty() && re.is_match(s),
                parse_duration(s).is_ok(),
                "pattern and parser disagree on {s:?}"
            );
        }
    }

    #[test]
    fn formats_measured_durations() {
        assert_eq!(format_duration(StdDuration::from_millis(420)), "420ms");
        assert_eq!(format_duration(StdDuration::from_millis(2500)), "2.500s");
        assert_eq!(format_duration(StdDuration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(StdDuration::from_secs(3661)), "1h1m1s");
    }

    #[test]
    fn condition_transition_time_moves_only_on_status_change() {
        let t0 = jiff::Timestamp::from_second(1_000).unwrap();
        let t1 = jiff::Timestamp::from_second(2_000).unwrap();
        let mut conds = vec![];
        set_condition(
            &mut conds,
            "Ready",
            ConditionStatus::True,
            "Ok",
            "fine",
            Some(1),
            t0,
        );
        set_condition(
            &mut conds,
            "Ready",
            ConditionStatus::True,
            "Ok",
            "still fine",
            Some(2),
            t1,
        );
        assert_eq!(conds[0].last_transition_time.0, t0);
        assert_eq!(conds[0].message, "still fine");
        set_condition(
            &mut conds,
            "Ready",
            ConditionStatus::False,
            "Broken",
            "no",
            Some(2),
            t1,
        );
        assert_eq!(conds[0].last_transition_time.0, t1);
        assert_eq!(conds.len(), 1);
    }
}
