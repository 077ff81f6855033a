//! Conflicts (X.1642 8.5.4): when several SecurityBaselines render the same object, the highest
//! priority wins, and a tie at the top applies nobody and reports every tied baseline. A field
//! manager that keeps taking back fields a baseline reverted ([`TakeBacks`]) is a conflict too;
//! one edit is drift.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Identity of an object a baseline renders. Cluster-scoped objects (the Namespace whose Pod
/// Security labels are claimed) have an empty `namespace`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

impl ObjectKey {
    /// The key of a live or rendered object (`apiVersion`, `kind`, `metadata.name`,
    /// `metadata.namespace`, the latter empty when absent).
    pub fn from_object(object: &serde_json::Value) -> Result<Self, ConflictError> {
        let field = |pointer: &str, field: &'static str| {
            object
                .pointer(pointer)
                .and_then(serde_json::Value::as_str)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .ok_or(ConflictError::MissingField { field })
        };
        Ok(Self {
            namespace: field("/metadata/namespace", "metadata.namespace").unwrap_or_default(),
            api_version: field("/apiVersion", "apiVersion")?,
            kind: field("/kind", "kind")?,
            name: field("/metadata/name", "metadata.name")?,
        })
    }

    /// `Kind/name`, the form of `status.conflicts[].object`.
    pub fn display_name(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}/{}", self.api_version, self.kind, self.name)
        } else {
            write!(
                f,
                "{} {}/{} in {}",
                self.api_version, self.kind, self.name, self.namespace
            )
        }
    }
}

/// A baseline's wish to apply one object (see `Rendered::claims`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Name of the SecurityBaseline.
    pub baseline: String,
    /// Its `spec.priority`.
    pub priority: i32,
    pub key: ObjectKey,
}

/// Baselines tied at the top priority for one object: none of them may apply it, each reports
/// the others (`status.conflicts[].with = SecurityBaseline/<other>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub key: ObjectKey,
    /// The tied baselines, sorted, without repeats (at least two).
    pub baselines: Vec<String>,
    /// Their common priority.
    pub priority: i32,
}

impl Conflict {
    /// The baselines `baseline` is in conflict with.
    pub fn others(&self, baseline: &str) -> Vec<&str> {
        self.baselines
            .iter()
            .map(String::as_str)
            .filter(|b| *b != baseline)
            .collect()
    }
}

/// A baseline that lost an object to a higher-priority one: not applied, but worth reporting
/// (8.5.4 asks for the alarm even when priority settles the conflict).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overridden {
    pub key: ObjectKey,
    /// The baseline that lost.
    pub baseline: String,
    /// The baseline that won.
    pub by: String,
}

/// The outcome of [`resolve`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resolution {
    /// For every object with a single highest-priority claim: the baseline that applies it.
    pub winners: BTreeMap<ObjectKey, String>,
    /// Objects whose top priority is shared: nobody applies them.
    pub conflicts: Vec<Conflict>,
    /// Claims that lost to a higher priority, sorted by key then baseline.
    pub overridden: Vec<Overridden>,
}

impl Resolution {
    /// Whether `baseline` may apply the object `key` (it won it, or nobody else claimed it).
    pub fn may_apply(&self, baseline: &str, key: &ObjectKey) -> bool {
        self.winners.get(key).is_some_and(|w| w == baseline)
    }

    /// The conflicts `baseline` takes part in.
    pub fn conflicts_of<'r>(
        &'r self,
        baseline: &'r str,
    ) -> impl Iterator<Item = &'r Conflict> + 'r {
        self.conflicts
            .iter()
            .filter(move |c| c.baselines.iter().any(|b| b == baseline))
    }
}

/// Why an [`ObjectKey`] could not be read from an object ([`ObjectKey::from_object`]).
/// [`resolve`] itself cannot fail.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ConflictError {
    #[error("object has no {field}")]
    MissingField { field: &'static str },
}

/// Decides, per object key, which baseline applies it: the single highest priority wins; a tie at
/// the top gives no winner and a [`Conflict`] naming every tied baseline. Several claims of one
/// baseline on one key count once, at their highest priority. Output is deterministic.
pub fn resolve(claims: Vec<Claim>) -> Resolution {
    // key -> baseline -> priority
    let mut by_key: BTreeMap<ObjectKey, BTreeMap<String, i32>> = BTreeMap::new();
    for c in claims {
        let entry = by_key
            .entry(c.key)
            .or_default()
            .entry(c.baseline)
            .or_insert(c.priority);
        *entry = (*entry).max(c.priority);
    }
    let mut out = Resolution::default();
    for (key, baselines) in by_key {
        let Some(top) = baselines.values().copied().max() else {
            continue;
        };
        let tied: Vec<String> = baselines
            .iter()
            .filter(|(_, p)| **p == top)
            .map(|(b, _)| b.clone())
            .collect();
        if let [winner] = tied.as_slice() {
            for (b, p) in &baselines {
                if *p < top {
                    out.overridden.push(Overridden {
                        key: key.clone(),
                        baseline: b.clone(),
                        by: winner.clone(),
                    });
                }
            }
            out.winners.insert(key, winner.clone());
        } else {
            out.conflicts.push(Conflict {
                key,
                baselines: tied,
                priority: top,
            });
        }
    }
    out
}

/// How long a revert is remembered: another one from the same manager within it is a take-back.
pub const TAKE_BACK_WINDOW: Duration = Duration::from_secs(600);
/// Reverts of one object from the same managers, each within [`TAKE_BACK_WINDOW`] of the one
/// before, that make a conflict: the edit, then the manager taking the field back.
pub const TAKE_BACKS_TO_CONFLICT: u32 = 2;

/// The reverts one baseline made of objects other field managers had changed, by
/// (namespace, `Kind/name`): a manager that changes a field the baseline sets has drifted it;
/// one that changes it again after the revert is fighting the baseline.
#[derive(Debug, Default)]
pub struct TakeBacks {
    by_object: HashMap<(String, String), TakeBack>,
}

/// The reverts of one object from the same managers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakeBack {
    pub managers: Vec<String>,
    pub fields: Vec<String>,
    pub count: u32,
    pub last: Instant,
}

impl TakeBacks {
    /// Records a revert of `fields` of `object` in `namespace`, changed by `managers`.
    pub fn reverted(
        &mut self,
        namespace: &str,
        object: &str,
        managers: &[String],
        fields: &[String],
        now: Instant,
    ) {
        let key = (namespace.to_string(), object.to_string());
        let entry = self.by_object.entry(key).or_insert_with(|| TakeBack {
            managers: managers.to_vec(),
            fields: Vec::new(),
            count: 0,
            last: now,
        });
        let again = entry.managers == managers
            && entry.count > 0
            && now.saturating_duration_since(entry.last) < TAKE_BACK_WINDOW;
        entry.count = if again { entry.count + 1 } else { 1 };
        entry.managers = managers.to_vec();
        entry.fields = fields.to_vec();
        entry.last = now;
    }

    /// The fight over `object` in `namespace`, when its managers have taken it back at least
    /// [`TAKE_BACKS_TO_CONFLICT`] times and the last within [`TAKE_BACK_WINDOW`].
    pub fn fight(&self, namespace: &str, object: &str, now: Instant) -> Option<&TakeBack> {
        self.by_object
            .get(&(namespace.to_string(), object.to_string()))
            .filter(|t| {
                t.count >= TAKE_BACKS_TO_CONFLICT
                    && now.saturating_duration_since(t.last) < TAKE_BACK_WINDOW
            })
    }

    /// Forgets reverts older than the window.
    pub fn expire(&mut self, now: Instant) {
        self.by_object
            .retain(|_, t| now.saturating_duration_since(t.last) < TAKE_BACK_WINDOW);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, kind: &str, name: &str) -> ObjectKey {
        ObjectKey {
            namespace: ns.into(),
            api_version: "v1".into(),
            kind: kind.into(),
            name: name.into(),
        }
    }

    fn claim(baseline: &str, priority: i32, k: &ObjectKey) -> Claim {
        Claim {
            baseline: baseline.into(),
            priority,
            key: k.clone(),
        }
    }

    #[test]
    fn single_claims_win() {
        let a = key("ns1", "ConfigMap", "a");
        let b = key("ns2", "ConfigMap", "a");
        let r = resolve(vec![claim("x", 0, &a), claim("y", -5, &b)]);
        assert_eq!(r.winners.len(), 2);
        assert!(r.may_apply("x", &a));
        assert!(r.may_apply("y", &b));
        assert!(!r.may_apply("x", &b));
        assert!(r.conflicts.is_empty() && r.overridden.is_empty());
    }

    #[test]
    fn priority_wins_and_losers_are_reported() {
        let k = key("ns", "ResourceQuota", "opsec-quota");
        let r = resolve(vec![
            claim("low", 1, &k),
            claim("high", 10, &k),
            claim("lowest", -3, &k),
        ]);
        assert_eq!(r.winners.get(&k).map(String::as_str), Some("high"));
        assert!(r.conflicts.is_empty());
        assert_eq!(
            r.overridden,
            vec![
                Overridden {
                    key: k.clone(),
                    baseline: "low".into(),
                    by: "high".into()
                },
                Overridden {
                    key: k.clone(),
                    baseline: "lowest".into(),
                    by: "high".into()
                },
            ]
        );
    }

    #[test]
    fn tie_at_the_top_applies_nobody() {
        let k = key("ns", "NetworkPolicy", "opsec-isolation");
        let r = resolve(vec![
            claim("c", 5, &k),
            claim("a", 5, &k),
            claim("b", 5, &k),
            claim("d", 1, &k),
        ]);
        assert!(r.winners.is_empty());
        assert_eq!(
            r.conflicts,
            vec![Conflict {
                key: k.clone(),
                baselines: vec!["a".into(), "b".into(), "c".into()],
                priority: 5,
            }]
        );
        assert_eq!(r.conflicts[0].others("b"), vec!["a", "c"]);
        assert_eq!(r.conflicts_of("a").count(), 1);
        assert_eq!(r.conflicts_of("d").count(), 0);
        // The lower one neither wins nor is overridden by anyone in particular.
        assert!(r.overridden.is_empty());
        assert!(!r.may_apply("d", &k));
    }

    #[test]
    fn tie_below_the_top_is_no_conflict() {
        let k = key("ns", "LimitRange", "opsec-limits");
        let r = resolve(vec![
            claim("a", 1, &k),
            claim("b", 1, &k),
            claim("top", 2, &k),
        ]);
        assert_eq!(r.winners.get(&k).map(String::as_str), Some("top"));
        assert!(r.conflicts.is_empty());
        assert_eq!(r.overridden.len(), 2);
    }

    #[test]
    fn repeated_claims_of_one_baseline_count_once() {
        let k = key("ns", "ConfigMap", "x");
        let r = resolve(vec![
            claim("a", 1, &k),
            claim("a", 3, &k),
            claim("b", 2, &k),
        ]);
        assert_eq!(r.winners.get(&k).map(String::as_str), Some("a"));
        assert!(r.conflicts.is_empty());
    }

    #[test]
    fn key_from_object() {
        let live = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "ns"}});
        assert_eq!(
            ObjectKey::from_object(&live),
            Ok(key("ns", "ConfigMap", "x"))
        );
        let cluster = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}});
        assert_eq!(
            ObjectKey::from_object(&cluster),
            Ok(key("", "Namespace", "ns"))
        );
        let nameless = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}});
        assert_eq!(
            ObjectKey::from_object(&nameless),
            Err(ConflictError::MissingField {
                field: "metadata.name"
            })
        );
    }

    #[test]
    fn display() {
        let k = key("ns", "ConfigMap", "x");
        assert_eq!(k.to_string(), "v1 ConfigMap/x in ns");
        assert_eq!(k.display_name(), "ConfigMap/x");
        assert_eq!(key("", "Namespace", "ns").to_string(), "v1 Namespace/ns");
    }

    #[test]
    fn one_edit_is_drift_and_taking_it_back_after_the_revert_is_a_conflict() {
        let t0 = Instant::now();
        let kubectl = vec!["kubectl-edit".to_string()];
        let fields = vec!["/spec/policyTypes".to_string()];
        let mut t = TakeBacks::default();
        t.reverted("ns", "NetworkPolicy/iso", &kubectl, &fields, t0);
        assert!(
            t.fight("ns", "NetworkPolicy/iso", t0).is_none(),
            "one edit is drift"
        );
        let t1 = t0 + Duration::from_secs(5);
        t.reverted("ns", "NetworkPolicy/iso", &kubectl, &fields, t1);
        let fight = t.fight("ns", "NetworkPolicy/iso", t1).unwrap();
        assert_eq!((fight.count, &fight.managers), (2, &kubectl));
        assert!(t.fight("ns", "NetworkPolicy/other", t1).is_none());
        assert!(t.fight("other", "NetworkPolicy/iso", t1).is_none());
        // Quiet for the window: over.
        let later = t1 + TAKE_BACK_WINDOW;
        assert!(t.fight("ns", "NetworkPolicy/iso", later).is_none());
        t.expire(later);
        t.reverted("ns", "NetworkPolicy/iso", &kubectl, &fields, later);
        assert!(
            t.fight("ns", "NetworkPolicy/iso", later).is_none(),
            "counted anew"
        );
        // Another manager's edit after the revert is its own first edit.
        let helm = vec!["helm".to_string()];
        t.reverted("ns", "NetworkPolicy/iso", &helm, &fields, later);
        assert!(t.fight("ns", "NetworkPolicy/iso", later).is_none());
    }
}
