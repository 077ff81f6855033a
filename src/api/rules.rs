//! Admission rules every kind shares: the patterns and CEL rules that let the API server refuse an
//! invalid value and name its field before the operator ever sees it.
//!
//! One place for each class of value (durations, cron schedules, time zones, label selectors and
//! keys, object names, Secret keys, quantities, image references, free templates), so that a class
//! is judged the same way wherever a kind uses it. The CEL uses only libraries every API server
//! from Kubernetes 1.31 on offers to new CRDs (strings v2, lists, regex, URLs, quantities, IPs).
//! What CEL cannot judge (a template's body, a schedule's exact gaps) the operator checks again
//! and reports as a condition naming the field.

use std::sync::LazyLock;

use kube::core::Rule;
use schemars::{Schema, SchemaGenerator, json_schema};

/// A Go-style duration with its units in falling order, each at most once, each number of at
/// most six digits before the point (`90s`, `1h30m`, `1.5h`, `168h`, `250ms`). Bounded this way
/// no duration overflows CEL's `duration()`, so a rule never fails with a conversion error.
/// Days are not a unit: write `168h` for a week, as `metav1.Duration` and CEL do.
pub const DURATION_PATTERN: &str = r"^([0-9]{1,6}(\.[0-9]{1,9})?h)?([0-9]{1,6}(\.[0-9]{1,9})?m)?([0-9]{1,6}(\.[0-9]{1,9})?s)?([0-9]{1,6}(\.[0-9]{1,9})?ms)?([0-9]{1,6}(\.[0-9]{1,9})?us)?([0-9]{1,6}(\.[0-9]{1,9})?ns)?$";

/// A DNS-1123 label: the shape of namespace names and most object names.
pub const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A DNS-1123 subdomain: the shape of Secret, ConfigMap and custom-resource names.
pub const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A label (or annotation) key: an optional DNS-subdomain prefix and `/`, then a name of 1 to 63
/// characters. The prefix's own limit of 253 characters is checked by [`label_key_rule`].
pub const LABEL_KEY_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";

/// A label value: empty, or 1 to 63 letters, digits, `-`, `_` and `.`, starting and ending with
/// a letter or digit.
pub const LABEL_VALUE_PATTERN: &str = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$";

/// A key of a Secret or ConfigMap (`[-._a-zA-Z0-9]+`, and neither `.`, `..` nor `..`-prefixed,
/// which [`secret_key_rule`] adds).
pub const SECRET_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";

/// A name that is a path segment (RBAC roles and bindings, and the generic object name): no `/`
/// or `%`, not `.` or `..` (checked by [`path_segment_rule`]).
pub const PATH_SEGMENT_PATTERN: &str = r"^[^/%\s]+$";

/// A kind (`ConfigMap`, `NetworkPolicy`).
pub const KIND_PATTERN: &str = "^[A-Z][A-Za-z0-9]*$";

/// An apiVersion (`v1`, `apps/v1`, `opsec.x1642.dev/v1alpha1`).
pub const API_VERSION_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?v[0-9]+((alpha|beta)[0-9]+)?$";

/// A kind in a filter: `ConfigMap`, `configmaps`, `apps/Deployment`, `apps/v1/Deployment`,
/// `v1/ConfigMap`, or a resource and its group as kubectl writes it (`deployments.apps`).
pub const KIND_FILTER_PATTERN: &str = r"^((([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(v[0-9]+((alpha|beta)[0-9]+)?/)?)?[A-Za-z][A-Za-z0-9]*|[a-z][a-z0-9]*\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)$";

/// A kind as a restore names it: `ConfigMap`, `apps/Deployment`, `apps/v1/Deployment`,
/// `v1/Secret`.
pub const KIND_REF_PATTERN: &str = r"^(([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(v[0-9]+((alpha|beta)[0-9]+)?/)?)?[A-Z][A-Za-z0-9]*$";

/// Text that a person reads: anything, as long as it is not only blanks.
pub const NOT_BLANK_PATTERN: &str = r"\S";

/// An image reference as the container runtime parses it (distribution's reference grammar):
/// `[registry[:port]/]path[:tag][@digest]`, path components lower-case.
pub const IMAGE_PATTERN: &str = r"^((([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(\.([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[a-fA-F0-9:]+\])(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?/)?[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}))?$";

/// A TCP port, 1 to 65535.
pub const PORT_PATTERN: &str =
    r"(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?";

/// An image's name (before its tag and digest) is at most 255 characters.
pub fn image_name_rule() -> Rule {
    Rule::new("size(self.split('@')[0]) <= 255 || (self.split('@')[0].lastIndexOf(':') > self.split('@')[0].lastIndexOf('/') && self.split('@')[0].lastIndexOf(':') <= 255)")
        .message("an image's name (before the tag and digest) must be at most 255 characters")
}

/// Kinds a free template may never render, by API group and kind: every cluster-scoped kind the
/// API server serves (and the cluster-scoped kinds of this operator and of the policy-report
/// API). A cluster-scoped kind of another CRD is refused by the operator when it renders, from
/// discovery.
pub const CLUSTER_SCOPED_KINDS: &[(&str, &str)] = &[
    ("apiregistration.k8s.io", "APIService"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("certificates.k8s.io", "ClusterTrustBundle"),
    ("wgpolicyk8s.io", "ClusterPolicyReport"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("", "ComponentStatus"),
    ("storage.k8s.io", "CSIDriver"),
    ("storage.k8s.io", "CSINode"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("resource.k8s.io", "DeviceClass"),
    ("resource.k8s.io", "DeviceTaintRule"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("networking.k8s.io", "IngressClass"),
    ("networking.k8s.io", "IPAddress"),
    ("admissionregistration.k8s.io", "MutatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "MutatingAdmissionPolicyBinding",
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
    ("resource.k8s.io", "ResourceSlice"),
    ("node.k8s.io", "RuntimeClass"),
    ("opsec.x1642.dev", "SecurityBaseline"),
    ("authorization.k8s.io", "SelfSubjectAccessReview"),
    ("authentication.k8s.io", "SelfSubjectReview"),
    ("authorization.k8s.io", "SelfSubjectRulesReview"),
    ("networking.k8s.io", "ServiceCIDR"),
    ("storage.k8s.io", "StorageClass"),
    ("internal.apiserver.k8s.io", "StorageVersion"),
    ("storagemigration.k8s.io", "StorageVersionMigration"),
    ("authorization.k8s.io", "SubjectAccessReview"),
    ("authentication.k8s.io", "TokenReview"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    ("storage.k8s.io", "VolumeAttachment"),
    ("storage.k8s.io", "VolumeAttributesClass"),
];

/// Whether `(group, kind)` is a cluster-scoped kind of [`CLUSTER_SCOPED_KINDS`].
pub fn is_cluster_scoped(group: &str, kind: &str) -> bool {
    CLUSTER_SCOPED_KINDS
        .iter()
        .any(|(g, k)| *g == group && *k == kind)
}

// ---------------------------------------------------------------------------------------------
// Durations

/// The CEL guard before `duration(expr)`: the value has the shape of [`DURATION_PATTERN`] (so the
/// call cannot fail) and is not empty.
pub fn duration_guard(expr: &str) -> String {
    format!("({expr} != '' && {expr}.matches(r'{DURATION_PATTERN}'))")
}

/// `field` lies between `min` and `max` (inclusive).
pub fn duration_between(field: &str, min: &str, max: &str) -> Rule {
    Rule::new(format!(
        "!{guard} || (duration(self) >= duration('{min}') && duration(self) <= duration('{max}'))",
        guard = duration_guard("self")
    ))
    .message(&*format!("{field} must be between {min} and {max}"))
}

// ---------------------------------------------------------------------------------------------
// Cron schedules

const MINUTE: &str = "[0-5]?[0-9]";
const HOUR: &str = "[01]?[0-9]|2[0-3]";
const DAY: &str = "0?[1-9]|[12][0-9]|3[01]";
const MONTH: &str = "0?[1-9]|1[0-2]|[Jj][Aa][Nn]|[Ff][Ee][Bb]|[Mm][Aa][Rr]|[Aa][Pp][Rr]|[Mm][Aa][Yy]|[Jj][Uu][Nn]|[Jj][Uu][Ll]|[Aa][Uu][Gg]|[Ss][Ee][Pp]|[Oo][Cc][Tt]|[Nn][Oo][Vv]|[Dd][Ee][Cc]";
const WEEKDAY: &str = "[0-7]|[Ss][Uu][Nn]|[Mm][Oo][Nn]|[Tt][Uu][Ee]|[Ww][Ee][Dd]|[Tt][Hh][Uu]|[Ff][Rr][Ii]|[Ss][Aa][Tt]";

/// One cron field: a comma-separated list of `*`, `*/step`, `v`, `v-v` and `v-v/step`, each
/// value within the field's range and each step at most the field's size; `extra` are further
/// alternatives for one element (`L`, `15W`, `5#3`).
fn cron_field(value: &str, step: &str, extra: &str) -> String {
    let element = format!(r"(\*(/({step}))?|({value})(-({value})(/({step}))?)?{extra})");
    format!("{element}(,{element})*")
}

/// Five cron fields (minute hour day-of-month month day-of-week), each within its range, separated
/// by single spaces; or one of the macros `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`,
/// `@annually`. Day of month may also be `?`, `L` (last day), `LW` or `<day>W` (nearest weekday);
/// day of week `?`, `<day>L` (the last of the month) or `<day>#<1-5>` (the n-th).
pub static CRON_PATTERN: LazyLock<String> = LazyLock::new(|| {
    let minute = cron_field(MINUTE, "[1-9]|[1-5][0-9]", "");
    let hour = cron_field(HOUR, "[1-9]|1[0-9]|2[0-3]", "");
    let day = format!(
        r"\?|{}",
        cron_field(DAY, "[1-9]|[12][0-9]|3[01]", &format!("|L|LW|({DAY})W"))
    );
    let month = cron_field(MONTH, "[1-9]|1[0-2]", "");
    let weekday = format!(
        r"\?|{}",
        cron_field(
            WEEKDAY,
            "[1-7]",
            &format!("|({WEEKDAY})L|({WEEKDAY})#[1-5]")
        )
    );
    format!(
        "^(@(yearly|annually|monthly|weekly|daily|hourly)|({minute}) ({hour}) ({day}) ({month}) ({weekday}))$"
    )
});

/// CEL: field `i` (0 to 4) of the five-field cron string `expr`, in lower case (fields are
/// separated by single spaces; only read once [`cron_guard`] holds).
fn cron_part(expr: &str, i: usize) -> String {
    format!("{expr}.lowerAscii().split(' ')[{i}]")
}

/// CEL: the five fields of a cron string (minute, hour, day of month, month, day of week).
fn cron_parts(expr: &str) -> [String; 5] {
    std::array::from_fn(|i| cron_part(expr, i))
}

/// CEL: the weekday field `w` with its names as numbers (`sun` ending a range as 7, as cron
/// reads `FRI-SUN`).
fn weekday_numbers(w: &str) -> String {
    [
        ("-sun", "-7"),
        ("sun", "0"),
        ("mon", "1"),
        ("tue", "2"),
        ("wed", "3"),
        ("thu", "4"),
        ("fri", "5"),
        ("sat", "6"),
    ]
    .iter()
    .fold(w.to_string(), |acc, (name, n)| {
        format!("{acc}.replace('{name}', '{n}')")
    })
}

/// CEL: a day field left open (`*` or `?`).
fn open(f: &str) -> String {
    format!("({f} == '*' || {f} == '?')")
}

/// How one cron field counts: its first and last values (what `*` spans), and whether it is the
/// weekday field (Sunday is 0 or 7).
#[derive(Clone, Copy)]
struct Unit {
    first: u32,
    last: u32,
    weekday: bool,
}

const MINUTES: Unit = Unit {
    first: 0,
    last: 59,
    weekday: false,
};
const HOURS: Unit = Unit {
    first: 0,
    last: 23,
    weekday: false,
};
const DAYS: Unit = Unit {
    first: 1,
    last: 31,
    weekday: false,
};
const WEEKDAYS: Unit = Unit {
    first: 0,
    last: 6,
    weekday: true,
};

/// What stands for "no such gap" in a minimum.
const NONE: &str = "100000000";

impl Unit {
    /// CEL: the number of value `x` (digits; weekday names are numbers by then, see
    /// [`weekday_numbers`]).
    fn number(&self, x: &str) -> String {
        format!("({x}.matches(r'^[0-9]{{1,2}}$') ? int({x}) : 0)")
    }
    /// CEL: the first value of element `e` (`5`, `1-5`, `1-30/5`, `*`, `*/15`); Sunday as 0.
    fn start(&self, e: &str) -> String {
        let n = self.number(&format!("{e}.split('/')[0].split('-')[0]"));
        let n = if self.weekday {
            format!("({n} % 7)")
        } else {
            n
        };
        format!("({e}.startsWith('*') ? {} : {n})", self.first)
    }
    /// CEL: the end of element `e`'s range (Sunday at a range's end as 7).
    fn end(&self, e: &str) -> String {
        let x = format!("{e}.split('/')[0].split('-')[1]");
        let end = self.number(&x);
        format!(
            "({e}.startsWith('*') ? {last} : {e}.split('/')[0].contains('-') ? {end} : {start})",
            last = self.last,
            start = self.start(e)
        )
    }
    /// CEL: the step of element `e` (1 without one).
    fn step(&self, e: &str) -> String {
        format!("({e}.contains('/') ? int({e}.split('/')[1]) : 1)")
    }
    /// CEL: whether the field `f` is a list of values, ranges, `*` and steps this module reads.
    fn readable(&self, f: &str) -> String {
        let element = r"(\*|[0-9]{1,2}(-[0-9]{1,2})?)(/(0?[1-9]|[1-9][0-9]))?";
        format!("{f}.matches(r'^{element}(,{element})*$')")
    }
    /// CEL: the elements of field `f` as `[first, last value fired, step]` triples, read once
    /// so that the rules below compare numbers.
    fn triples(&self, f: &str) -> String {
        format!(
            "{f}.split(',').map(e, [{s}, {end}, {step}]).map(p, [p[0], p[0] + ((p[1] - p[0]) / p[2]) * p[2], p[2]])",
            s = self.start("e"),
            end = self.end("e"),
            step = self.step("e"),
        )
    }
    /// CEL: the shortest gap in this field's unit, or more (an upper bound): a step inside an
    /// element, or from an element's last value to the next value any element fires at,
    /// wrapping into the next turn (`cycle` values on) when `wraps` (that turn surely fires).
    fn shortest(&self, f: &str, wraps: &str, cycle: &str) -> String {
        let t = self.triples(f);
        format!(
            "({readable} ? ({t}.map(p, p[1] > p[0] ? p[2] : {NONE}) + {t}.map(p, {t}.map(x, x[0] > p[1] ? x[0] : x[1] > p[1] ? x[1] : ({wraps} ? x[0] + {cycle} : {NONE})).min() - p[1])).min() : {NONE})",
            readable = self.readable(f),
        )
    }
    /// CEL: a gap in this field's unit that surely occurs, or less (a lower bound of the longest):
    /// from an element's last value to the next value, around the cycle; the step of a lone
    /// stepped element; 0 when unreadable.
    fn longest(&self, f: &str, cycle: &str) -> String {
        let t = self.triples(f);
        format!(
            "({readable} ? [{t}.map(p, {t}.map(x, x[0] > p[1] ? x[0] : x[1] > p[1] ? p[1] + 1 : x[0] + {cycle}).min() - p[1]).max(), size({t}) == 1 && {t}[0][1] > {t}[0][0] ? {t}[0][2] : 0].max() : 0)",
            readable = self.readable(f),
        )
    }
    /// CEL: the values one turn of the field `f` spans from its first to its last firing, or
    /// the whole turn when unreadable.
    fn span(&self, f: &str) -> String {
        let t = self.triples(f);
        format!(
            "({readable} ? {t}.map(p, p[1]).max() - {t}.map(p, p[0]).min() : {whole})",
            readable = self.readable(f),
            whole = self.last - self.first,
        )
    }
}

/// CEL: the days from a day of month to the same day of the next month that surely occur for
/// the day-of-month field `f`: 28 (February to March) when every day it names comes in
/// February, else 31 (January to February).
fn month_days(f: &str) -> String {
    format!(
        "(({readable} ? {t}.map(p, p[1]).max() : 31) <= 28 ? 28 : 31)",
        readable = DAYS.readable(f),
        t = DAYS.triples(f),
    )
}

/// Day-of-month fields that name only days after the 29th (`30`, `31W`, `30,31`, `30-31`).
const LATE_DAYS: &str = r"(30|31)W?([,-](30|31)W?)*";
/// February, as a list.
const FEBRUARY: &str = r"(0?2|[Ff][Ee][Bb])(,(0?2|[Ff][Ee][Bb]))*";
/// Months that have fewer than 31 days, by number or name, as a list.
const SHORT_MONTHS: &str = r"(0?2|0?4|0?6|0?9|11|[Ff][Ee][Bb]|[Aa][Pp][Rr]|[Jj][Uu][Nn]|[Ss][Ee][Pp]|[Nn][Oo][Vv])(,(0?2|0?4|0?6|0?9|11|[Ff][Ee][Bb]|[Aa][Pp][Rr]|[Jj][Uu][Nn]|[Ss][Ee][Pp]|[Nn][Oo][Vv]))*";

/// The rules of a cron string of its own: ranges run from low to high (`FRI-SUN` counts Sunday
/// as 7, as cron does), and the days it names occur in the months it names (with the day of
/// week left open, a day of month that never comes in the named months means the schedule never
/// fires).
pub fn cron_rules() -> Vec<Rule> {
    let names = "{'jan': 1, 'feb': 2, 'mar': 3, 'apr': 4, 'may': 5, 'jun': 6, 'jul': 7, 'aug': 8, 'sep': 9, 'oct': 10, 'nov': 11, 'dec': 12, 'sun': 0, 'mon': 1, 'tue': 2, 'wed': 3, 'thu': 4, 'fri': 5, 'sat': 6}";
    let number = |x: &str| {
        format!("({x}.matches(r'^[0-9]{{1,2}}$') ? int({x}) : {x} in {names} ? {names}[{x}] : 0)")
    };
    let ranges = format!(
        "self.lowerAscii().findAll(r'[0-9a-z]+-[0-9a-z]+').all(r, {a} <= (r.split('-')[1] == 'sun' ? 7 : {b}))",
        a = number("r.split('-')[0]"),
        b = number("r.split('-')[1]"),
    );
    let never = format!(
        r"!self.matches(r'^[^ ]+ [^ ]+ {LATE_DAYS} {FEBRUARY} [*?]$') && !self.matches(r'^[^ ]+ [^ ]+ 31W?(,31W?)* {SHORT_MONTHS} [*?]$')"
    );
    vec![
        Rule::new(ranges)
            .message("a cron range must run from low to high (1-5, MON-FRI), never wrap around"),
        Rule::new(never).message(
            "the schedule names only days that never occur in the months it names (such as 30 February)",
        ),
    ]
}

/// CEL: whether a weekday field uses `#` or `L` (a weekday of the month), and whether a day of
/// month field uses `L` or `W`: days about a month apart.
fn monthly_weekday(w: &str) -> String {
    format!("{w}.matches(r'^([0-7]|sun|mon|tue|wed|thu|fri|sat)(l|#[1-5])$')")
}
fn monthly_day(d: &str) -> String {
    format!("({d} == 'l' || {d} == 'lw' || {d}.matches(r'^[0-9]{{1,2}}w$'))")
}

/// CEL: minutes between two firings of the cron string `expr` that come one after the other,
/// or longer: an upper bound of the shortest gap. Read from every field's values, lists,
/// ranges, `*` and steps; `L`, `W` and `#` count as their shortest month (28 days).
pub fn cron_shortest_gap_bound(expr: &str) -> String {
    let [minute, hour, day, month, weekday] = cron_parts(expr);
    let every_day = format!("({} && {})", open(&day), open(&weekday));
    let by_weekday = format!(
        "({m} ? 28 : {g})",
        m = monthly_weekday(&weekday),
        g = WEEKDAYS.shortest(&weekday_numbers(&weekday), "true", "7"),
    );
    let by_day = format!(
        "({m} ? 28 : {g})",
        m = monthly_day(&day),
        g = DAYS.shortest(&day, &format!("({month} == '*')"), &month_days(&day)),
    );
    // Both day fields limited: a day fires when either matches, and over the years every day
    // of the month falls on every weekday, so two fire on days next to each other.
    let days = format!(
        "({every_day} ? 1 : {od} ? {by_weekday} : {ow} ? {by_day} : 1)",
        od = open(&day),
        ow = open(&weekday),
    );
    // A gap across midnight is real when two days next to each other fire; across the hour
    // when two hours next to each other do (a plain range or `*` has them).
    let next_to =
        |f: &str| format!("({f} == '*' || {f}.matches(r'(^|,)[0-9a-z]+-[0-9a-z]+(,|$)'))");
    let days_next_to = format!(
        "({every_day} || ({od} && {w_next}) || ({ow} && {d_next}) || (!{od} && !{ow}))",
        od = open(&day),
        ow = open(&weekday),
        w_next = next_to(&weekday),
        d_next = next_to(&day),
    );
    let hours = HOURS.shortest(&hour, &days_next_to, "24");
    let minutes = MINUTES.shortest(&minute, &next_to(&hour), "60");
    // A month named alone comes once a year (29 February once in four); lists of months are
    // left to the days.
    let months = format!(
        "({month} != '*' && {month}.matches(r'^([0-9]{{1,2}}|[a-z]{{3}})$') && !({month} in ['2', '02', 'feb'] && {day}.matches(r'(^|[^0-9])29([^0-9]|$)')) ? 365 : {NONE})"
    );
    format!(
        "({expr} == '@hourly' ? 60 : {expr} == '@daily' ? 1440 : {expr} == '@weekly' ? 10080 : {expr} == '@monthly' ? 40320 : ({expr} == '@yearly' || {expr} == '@annually') ? 525600 : [{minutes}, {hours} * 60, {days} * 1440, {months} * 1440].min())"
    )
}

/// CEL: minutes that some gap between firings of the cron string `expr` is at least: a lower
/// bound of the longest gap. Read from every field's values, lists, ranges, `*` and steps, less
/// the part of the day (or hour) the firings spread over; `L`, `W` and `#` count as their
/// longest month.
pub fn cron_longest_gap_bound(expr: &str) -> String {
    let [minute, hour, day, month, weekday] = cron_parts(expr);
    let minute_span = MINUTES.span(&minute);
    let day_span = format!("({} * 60 + {minute_span})", HOURS.span(&hour));
    let by_day = format!(
        "({m} ? (({day} == 'l') ? 31 : 26) : {day}.matches(r'^(29|30|31)$') ? 59 : {g})",
        m = monthly_day(&day),
        g = DAYS.longest(&day, "31"),
    );
    let by_weekday = format!(
        "({m} ? 35 : {g})",
        m = monthly_weekday(&weekday),
        g = WEEKDAYS.longest(&weekday_numbers(&weekday), "7"),
    );
    // Both day fields limited: days of the month add at most a few days a month, so a few
    // plain days leave the longest weekday gap (it comes four times a month) somewhere.
    let few_days = format!("{day}.matches(r'^[0-9]{{1,2}}(,[0-9]{{1,2}}){{0,2}}$')");
    let days = format!(
        "(({od} || (!{ow} && {few_days})) ? {by_weekday} : {ow} ? {by_day} : 0)",
        od = open(&day),
        ow = open(&weekday),
    );
    format!(
        "({expr} == '@hourly' ? 60 : {expr} == '@daily' ? 1440 : {expr} == '@weekly' ? 10080 : {expr} == '@monthly' ? 44640 : ({expr} == '@yearly' || {expr} == '@annually') ? 525600 : [\
         {minutes}, \
         {hours} * 60 - {minute_span}, \
         {days} * 1440 - {day_span}, \
         {month}.matches(r'^([0-9]{{1,2}}|[a-z]{{3}})$') ? 308 * 1440 : 0\
         ].max())",
        minutes = MINUTES.longest(&minute, "60"),
        hours = HOURS.longest(&hour, "24"),
    )
}

/// The guard before [`cron_shortest_gap_bound`] and [`cron_longest_gap_bound`]: the string is a
/// macro or five fields (the pattern judges the fields; the bounds only read shapes they know).
pub fn cron_guard(expr: &str) -> String {
    format!(
        "{expr}.matches(r'^(@(yearly|annually|monthly|weekly|daily|hourly)|[^ ]+( [^ ]+){{4}})$')"
    )
}

// ---------------------------------------------------------------------------------------------
// Time zones

/// Every name of the IANA time-zone database bundled with the operator (the same database it
/// computes schedules with), sorted.
pub fn time_zone_names() -> Vec<String> {
    let mut names: Vec<String> = jiff::tz::TimeZoneDatabase::bundled()
        .available()
        .map(|n| n.as_str().to_string())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A time zone is one the database knows.
pub fn time_zone_rule() -> Rule {
    let list = time_zone_names()
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    Rule::new(format!("self in [{list}]"))
        .message("timeZone must be a name of the IANA time-zone database, such as UTC, Europe/Berlin or America/Argentina/Buenos_Aires")
}

// ---------------------------------------------------------------------------------------------
// Names and keys

/// CEL: the string `expr` is a label key (the pattern, and a prefix of at most 253 characters).
fn label_key_ok(expr: &str) -> String {
    format!(
        "({expr}.matches(r'{LABEL_KEY_PATTERN}') && (!{expr}.contains('/') || {expr}.indexOf('/') <= 253))"
    )
}

/// A label key's prefix is at most 253 characters (the pattern checks the rest).
pub fn label_key_rule(field: &str) -> Rule {
    Rule::new("!self.contains('/') || self.indexOf('/') <= 253").message(&*format!(
        "{field}: the prefix before '/' must be at most 253 characters"
    ))
}

/// A Secret or ConfigMap key is not `.`, `..` or `..`-prefixed.
pub fn secret_key_rule() -> Rule {
    Rule::new("self != '.' && !self.startsWith('..')")
        .message("key must not be '.' or start with '..'")
}

/// A path-segment name is not `.` or `..`.
pub fn path_segment_rule(field: &str) -> Rule {
    Rule::new("self != '.' && self != '..'").message(&*format!("{field} must not be '.' or '..'"))
}

// ---------------------------------------------------------------------------------------------
// Label selectors

const SELECTOR_KEYS_MESSAGE: &str = "matchLabels: every key must be a label key: an optional DNS subdomain prefix (at most 253 characters) and '/', then a name of 1 to 63 letters, digits, '-', '_' or '.' that starts and ends with a letter or digit";

/// The schema of a `metav1.LabelSelector` whose keys, values and operators the API server checks
/// as it checks its own selectors: an unknown operator, a key or value that is not a label key or
/// value, `In` without values or `Exists` with values are refused, naming the field.
pub fn label_selector(_: &mut SchemaGenerator) -> Schema {
    let mut key = json_schema!({
        "description": "The label key.",
        "type": "string",
        "maxLength": 317,
        "pattern": LABEL_KEY_PATTERN,
    });
    kube::core::validate(&mut key, label_key_rule("matchExpressions.key"))
        .expect("a rule serializes");
    json_schema!({
        "description": "A label selector: matchLabels and matchExpressions, ANDed.",
        "type": "object",
        "properties": {
            "matchLabels": {
                "description": "Labels that must all be present with these values.",
                "type": "object",
                "maxProperties": 64,
                "additionalProperties": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN},
                "x-kubernetes-validations": [{
                    "rule": format!("self.all(k, {})", label_key_ok("k")),
                    "message": SELECTOR_KEYS_MESSAGE,
                }],
            },
            "matchExpressions": {
                "description": "Requirements that must all hold.",
                "type": "array",
                "maxItems": 32,
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": key,
                        "operator": {
                            "description": "In, NotIn, Exists or DoesNotExist.",
                            "type": "string",
                            "enum": ["In", "NotIn", "Exists", "DoesNotExist"],
                        },
                        "values": {
                            "description": "Values for In and NotIn; none for Exists and DoesNotExist.",
                            "type": "array",
                            "maxItems": 64,
                            "items": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN},
                        },
                    },
                    "x-kubernetes-validations": [{
                        "rule": "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : (!has(self.values) || size(self.values) == 0)",
                        "message": "matchExpressions: In and NotIn need at least one value, Exists and DoesNotExist take none",
                    }],
                },
            },
        },
        "x-kubernetes-map-type": "atomic",
    })
}

/// [`label_selector`] for an optional field (it may be `null`).
pub fn optional_label_selector(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = label_selector(generator);
    schema.insert("nullable".into(), true.into());
    schema
}

/// A selector that must select something narrower than everything: an empty one would match
/// every namespace (or every workload), which is never what a guard means.
pub fn non_empty_selector(what: &str) -> Rule {
    Rule::new("(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)")
        .message(&*format!("{what} must not be empty: give matchLabels or matchExpressions (an empty selector matches everything)"))
}

// ---------------------------------------------------------------------------------------------
// Quantities

/// A quantity of at least zero (`8`, `500m`, `1.5`, `32Gi`, `1e3`), as `resource.Quantity` parses
/// it, without a sign.
pub const QUANTITY_PATTERN: &str =
    r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][-+]?[0-9]+)?$";

/// The schema of one quantity: an integer of at least zero, or a string of [`QUANTITY_PATTERN`]
/// (`minimum` judges only numbers, `pattern` and `maxLength` only strings).
fn quantity_value() -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
        "minimum": 0,
        "maxLength": 64,
        "pattern": QUANTITY_PATTERN,
    })
}

/// The schema of a map from resource names (`requests.cpu`, `count/deployments.apps`) to
/// quantities (`"8"`, `32Gi`, `100`), as in `ResourceQuota.spec.hard`.
pub fn quantity_map(_: &mut SchemaGenerator) -> Schema {
    quantity_map_schema()
}

fn quantity_map_schema() -> Schema {
    json_schema!({
        "description": "Resource names and their quantities.",
        "type": "object",
        "maxProperties": 32,
        "additionalProperties": quantity_value(),
        "x-kubernetes-validations": [
            {"rule": format!("self.all(k, {})", label_key_ok("k")), "message": "every key must be a resource name, such as requests.cpu, limits.memory, pods or count/deployments.apps"},
        ],
    })
}

/// The schema of `LimitRange.spec.limits`, with every quantity checked.
pub fn limit_range_items(_: &mut SchemaGenerator) -> Schema {
    let mut quantities = quantity_map_schema();
    quantities.insert("nullable".into(), true.into());
    json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": 16,
        "items": {
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {"type": "string", "enum": ["Container", "Pod", "PersistentVolumeClaim"]},
                "max": quantities.clone(),
                "min": quantities.clone(),
                "default": quantities.clone(),
                "defaultRequest": quantities.clone(),
                "maxLimitRequestRatio": quantities,
            },
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Free templates

/// CEL: `expr` with the variables of `vars` replaced by a letter of the case the variable's value
/// has (`x`, but `X` for `${workloadKind}`, which is always `Deployment`, `StatefulSet` or
/// `DaemonSet`), to check the shape a rendered name will have; `$${` (a literal `${`) dropped.
fn with_variables_replaced(expr: &str, vars: &[&str]) -> String {
    vars.iter()
        .fold(format!("{expr}.replace('$${{', '')"), |acc, v| {
            let by = if *v == "workloadKind" { "X" } else { "x" };
            format!("{acc}.replace('${{{v}}}', '{by}')")
        })
}

/// CEL: the string `expr` uses only the variables `vars`, each closed, read exactly as the
/// renderer reads it: `${name}` is a variable, a run of two or more `$` before `{` is literal
/// `$`s and a literal `${`, any other `$` is itself.
fn variables_ok(expr: &str, vars: &[&str]) -> String {
    format!(
        "{expr}.matches(r'^([^$]|[$][$]+[{{]|[$][{{]({names})[}}]|[$]+[^${{]|[$]+$)*$')",
        names = vars.join("|")
    )
}

/// Every string of a list uses only the variables `vars`, each closed.
pub fn variables_rule(field: &str, vars: &[&str]) -> Rule {
    let list = vars
        .iter()
        .map(|v| format!("${{{v}}}"))
        .collect::<Vec<_>>()
        .join(", ");
    Rule::new(format!("self.all(s, {})", variables_ok("s", vars))).message(&*format!(
        "{field}: a variable is not defined or not closed: the variables are {list}; write $${{ for a literal ${{"
    ))
}

/// The rules of one free template (`list` names its list in messages; `vars` are the variables
/// it may use): a namespaced kind, a `metadata.name` that is a valid name once variables are
/// replaced, no `metadata.namespace` of its own, and in its metadata only variables that exist,
/// each closed, and label keys and values that stay valid.
pub fn template_rules(list: &str, vars: &[&str]) -> Vec<Rule> {
    let forbidden = CLUSTER_SCOPED_KINDS
        .iter()
        .map(|(g, k)| format!("'{g}/{k}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let name = with_variables_replaced("self.metadata.name", vars);
    let meta_vars = format!(
        "(!has(self.metadata.name) || {name_ok}) && (!has(self.metadata.labels) || self.metadata.labels.all(k, {k_ok} && {v_ok})) && (!has(self.metadata.annotations) || self.metadata.annotations.all(k, {k_ok}))",
        name_ok = variables_ok("self.metadata.name", vars),
        k_ok = variables_ok("k", vars),
        v_ok = variables_ok("self.metadata.labels[k]", vars),
    );
    let label_shapes = format!(
        "(!has(self.metadata.labels) || self.metadata.labels.all(k, {key} && {value}.matches(r'{LABEL_VALUE_PATTERN}'))) && (!has(self.metadata.annotations) || self.metadata.annotations.all(k, {key}))",
        key = label_key_ok(&with_variables_replaced("k", vars)),
        value = with_variables_replaced("self.metadata.labels[k]", vars),
    );
    let vars_list = vars
        .iter()
        .map(|v| format!("${{{v}}}"))
        .collect::<Vec<_>>()
        .join(", ");
    vec![
        Rule::new("has(self.metadata.name) && self.metadata.name != ''")
            .message(&*format!("{list}: every template needs metadata.name")),
        Rule::new("!has(self.metadata.generateName)")
            .message(&*format!("{list}: metadata.generateName is not supported: the operator keeps each object by its metadata.name")),
        Rule::new(format!("!((self.apiVersion.contains('/') ? self.apiVersion.split('/')[0] : '') + '/' + self.kind in [{forbidden}])"))
            .message(&*format!("{list}: cluster-scoped kinds cannot be rendered into a namespace")),
        Rule::new("!has(self.metadata.namespace) || self.metadata.namespace == '${namespace}'")
            .message(&*format!("{list}: leave metadata.namespace out: the operator renders each template into every selected namespace")),
        Rule::new(meta_vars)
            .message(&*format!("{list}: metadata uses a variable that is not defined or not closed: the variables are {vars_list}; write $${{ for a literal ${{")),
        Rule::new(format!(
            "!has(self.metadata.name) || (self.kind in ['Role', 'RoleBinding'] ? (!{name}.contains('/') && !{name}.contains('%') && {name} != '.' && {name} != '..') : self.kind == 'Service' ? ({name}.matches(r'^[a-z]([-a-z0-9]*[a-z0-9])?$') && size({name}) <= 63) : ({name}.matches(r'{DNS_SUBDOMAIN_PATTERN}') && size({name}) <= 253))"
        ))
        .message(&*format!("{list}: metadata.name must be a valid object name once variables are replaced: a DNS subdomain (lower-case letters, digits, '-' and '.'; at most 253 characters), for a Service a DNS label starting with a letter (at most 63), for Role and RoleBinding any name without '/' or '%'")),
        Rule::new("!self.kind.endsWith('List') || (self.apiVersion.contains('/') && self.apiVersion.split('/')[0].contains('.') && !self.apiVersion.split('/')[0].endsWith('.k8s.io'))")
            .message(&*format!("{list}: a List is not one object: give each item as a template of its own")),
        Rule::new(label_shapes)
            .message(&*format!("{list}: metadata.labels and metadata.annotations need label keys, and labels label values (at most 63 letters, digits, '-', '_' or '.'), once variables are replaced")),
    ]
}

/// The schema of one free template: any namespaced object, with `apiVersion`, `kind` and
/// `metadata` checked here (not as an embedded resource, so that metadata may hold variables),
/// and [`template_rules`].
fn template_object_with(list: &str, vars: &[&str]) -> Schema {
    let labels = json_schema!({
        "type": "object",
        "maxProperties": 32,
        "additionalProperties": {"type": "string", "maxLength": 128},
    });
    let annotations = json_schema!({
        "type": "object",
        "maxProperties": 32,
        "additionalProperties": {"type": "string", "maxLength": 8192},
    });
    let mut schema = json_schema!({
        "description": "Any namespaced Kubernetes object, as a template: apiVersion, kind and metadata.name are required; string values may use the variables.",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata"],
        "properties": {
            "apiVersion": {"type": "string", "maxLength": 253, "pattern": API_VERSION_PATTERN},
            "kind": {"type": "string", "maxLength": 63, "pattern": KIND_PATTERN},
            "metadata": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 253},
                    "generateName": {"type": "string", "maxLength": 253},
                    "namespace": {"type": "string", "maxLength": 63},
                    "labels": labels,
                    "annotations": annotations,
                },
                "x-kubernetes-preserve-unknown-fields": true,
            },
        },
        "x-kubernetes-preserve-unknown-fields": true,
    });
    for rule in template_rules(list, vars) {
        kube::core::validate(&mut schema, rule).expect("a rule serializes");
    }
    schema
}

/// The schema of a free template of a SecurityBaseline.
pub fn template_object(_: &mut SchemaGenerator) -> Schema {
    template_object_with("templates", NAMESPACE_VARIABLES)
}

/// The variables of a namespace template.
pub const NAMESPACE_VARIABLES: &[&str] = &["namespace", "tenant", "baseline"];
/// The variables of a workload template.
pub const WORKLOAD_VARIABLES: &[&str] = &[
    "namespace",
    "tenant",
    "baseline",
    "workload",
    "workloadKind",
];

/// A list of templates renders each kind and name once.
fn templates_unique(list: &str) -> Rule {
    Rule::new("self.all(a, !has(a.metadata.name) || self.exists_one(b, has(b.metadata.name) && b.kind == a.kind && b.metadata.name == a.metadata.name))")
        .message(&*format!("{list}: two templates render the same kind and name"))
}

/// The schema of `spec.templates` of a SecurityBaseline.
pub fn namespace_templates(_: &mut SchemaGenerator) -> Schema {
    let mut schema = json_schema!({
        "type": "array",
        "maxItems": 32,
        "items": template_object_with("templates", NAMESPACE_VARIABLES),
    });
    kube::core::validate(&mut schema, templates_unique("templates")).expect("a rule serializes");
    schema
}

/// The schema of `templates` of a workload template.
pub fn workload_templates(_: &mut SchemaGenerator) -> Schema {
    let mut schema = json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": 16,
        "items": template_object_with("workloadTemplates.templates", WORKLOAD_VARIABLES),
    });
    kube::core::validate(&mut schema, templates_unique("workloadTemplates.templates"))
        .expect("a rule serializes");
    schema
}

// ---------------------------------------------------------------------------------------------
// Status

/// A status, once written, is never removed (the rules on its fields compare old and new only
/// while both exist).
pub fn status_kept(kind: &str) -> Rule {
    Rule::new("!has(oldSelf.status) || has(self.status)")
        .message(&*format!(
            "the status of this {kind} is evidence: once written it is never removed"
        ))
        .field_path(".status")
}

// ---------------------------------------------------------------------------------------------
// Object names used as label values

/// The object's own name is at most 63 characters, because the operator writes it into a label
/// value (`label`) on what it makes. `kind` names the object in the message.
pub fn name_is_label_value(kind: &str, label: &str) -> Rule {
    Rule::new("size(self.metadata.name) <= 63")
        .message(&*format!(
            "metadata.name of a {kind} must be at most 63 characters: it is the value of the label {label} on every object it makes"
        ))
        .field_path(".metadata.name")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn cron_ok(s: &str) -> bool {
        regex::Regex::new(&CRON_PATTERN).unwrap().is_match(s)
    }

    #[test]
    fn cron_pattern_accepts_what_the_scheduler_runs() {
        for s in [
            "0 2 * * *",
            "*/15 * * * *",
            "0 */6 * * *",
            "0 2 * * 6",
            "0 2 * * SAT",
            "0 2 * * mon-fri",
            "0 10 1 */3 *",
            "0 0 L * *",
            "0 0 LW * *",
            "0 0 15W * *",
            "0 0 ? * 5L",
            "0 0 ? * 5#3",
            "0 0 ? * MON#1",
            "0 0 * * friL",
            "0 2 * * FRI-SUN",
            "0 0 1 JAN,Jul *",
            "0 0 29 2 *",
            "0-30/10 8-18 * * 1-5",
            "@daily",
            "@annually",
        ] {
            assert!(cron_ok(s), "the pattern refuses {s:?}");
            assert!(croner::Cron::from_str(s).is_ok(), "croner refuses {s:?}");
        }
    }

    #[test]
    fn cron_pattern_refuses_out_of_range_and_unknown_fields() {
        for s in [
            "60 * * * *",
            "0 24 * * *",
            "0 0 0 * *",
            "0 0 32 * *",
            "0 0 * 0 *",
            "0 0 * 13 *",
            "0 0 * * 8",
            "0 0 * * FUNDAY",
            "0 0 * JANUARY *",
            "*/0 * * * *",
            "*/60 * * * *",
            "5/15 * * * *",
            "0 0 1-31/40 * *",
            "0 0 * * L",
            "0 0 * * 6#0",
            "0 0 * * 6#6",
            "0 0 ?/2 * *",
            "0 0 * * * *",
            "0 0 * *",
            "0\t0 * * *",
            // One space between fields: the rules that read fields split on single spaces.
            "0  0 * * *",
            "@midnight",
            "every day",
            "",
        ] {
            assert!(!cron_ok(s), "the pattern accepts {s:?}");
        }
    }

    #[test]
    fn duration_pattern_is_bounded_and_ordered() {
        let re = regex::Regex::new(DURATION_PATTERN).unwrap();
        for s in [
            "90s",
            "1h30m",
            "1.5h",
            "250ms",
            "168h",
            "999999h",
            "1h2m3s4ms5us6ns",
        ] {
            assert!(re.is_match(s), "{s:?}");
        }
        for s in [
            "1000000h",
            "30m1h",
            "1h1h",
            "7d",
            "-5m",
            "1.h",
            "1.0000000001s",
        ] {
            assert!(!re.is_match(s), "{s:?}");
        }
    }

    #[test]
    fn image_pattern_follows_the_reference_grammar() {
        let re = regex::Regex::new(IMAGE_PATTERN).unwrap();
        for s in [
            "nginx",
            "nginx:1.27",
            "library/nginx:1.27-alpine",
            "registry.example/app:1.2.3",
            "localhost:5000/team/app:v1",
            "Registry.Example:443/app",
            "[::1]:5000/app:1",
            "ghcr.io/org/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "app__x/a-b.c:tag_1",
        ] {
            assert!(re.is_match(s), "refuses {s:?}");
        }
        for s in [
            "App:1",
            "registry.example/App:1",
            "app:",
            "app::1",
            "app:-x",
            "/app",
            "app/",
            "app//x",
            "app@sha256:123",
            "app:1 ",
            "app..x",
            "https://registry.example/app",
        ] {
            assert!(!re.is_match(s), "accepts {s:?}");
        }
    }

    #[test]
    fn the_time_zone_list_is_the_scheduler_s() {
        let names = time_zone_names();
        assert!(names.len() > 300, "only {} time zones", names.len());
        for n in ["UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires"] {
            assert!(names.iter().any(|x| x == n), "{n} missing");
        }
        for n in &names {
            assert!(!n.contains('\''), "{n} would break the CEL list");
            assert!(jiff::tz::TimeZone::get(n).is_ok(), "{n} does not load");
        }
    }
}
