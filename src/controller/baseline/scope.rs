//! Which namespaces a check covers. A full check covers every namespace: after a restart, for a
//! new revision or generation, when another baseline changed, and every `checkInterval`. Between
//! full checks a change (of a namespace, a workload, a stamped object) re-checks only the
//! namespace it happened in, and the status is rebuilt from what the last checks found in the
//! others, kept in memory. So a new namespace among a thousand costs one namespace's work, not a
//! thousand's. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use super::status::{Finding, FindingState};
use crate::api::baseline::ConflictRecord;

/// What changed for a baseline since its last check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dirty {
    /// Anything may have changed.
    All,
    /// Only these namespaces.
    Namespaces(BTreeSet<String>),
}

impl Default for Dirty {
    fn default() -> Self {
        Self::Namespaces(BTreeSet::new())
    }
}

impl Dirty {
    /// Records a change in `namespace`.
    pub fn add(&mut self, namespace: &str) {
        if let Self::Namespaces(set) = self {
            set.insert(namespace.to_string());
        }
    }
}

/// What a check covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    Namespaces(BTreeSet<String>),
}

impl Scope {
    /// Whether the check covers `namespace`.
    pub fn covers(&self, namespace: &str) -> bool {
        match self {
            Self::All => true,
            Self::Namespaces(set) => set.contains(namespace),
        }
    }

    pub fn is_full(&self) -> bool {
        matches!(self, Self::All)
    }
}

/// What the outcome of the other namespaces depends on: when any of it changes, a check must be
/// full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Basis {
    /// The baseline's uid (a baseline deleted and created again starts afresh).
    pub uid: Option<String>,
    pub revision: String,
    pub generation: Option<i64>,
    /// Digest of the other baselines ([`others_digest`]): their claims decide conflicts.
    pub others: u64,
}

/// Digest of the other baselines' identities and generations.
pub fn others_digest<'a>(others: impl IntoIterator<Item = (&'a str, Option<i64>)>) -> u64 {
    let mut items: Vec<(&str, Option<i64>)> = others.into_iter().collect();
    items.sort();
    let mut h = DefaultHasher::new();
    items.hash(&mut h);
    h.finish()
}

/// What the last checks found in one namespace: only what the status needs of a namespace that
/// is not re-checked (its non-compliant findings and its conflicts).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamespaceOutcome {
    pub problems: Vec<Finding>,
    pub conflicts: Vec<ConflictRecord>,
}

/// What a baseline's checks found, per selected namespace.
#[derive(Clone, Debug)]
pub struct Memory {
    pub basis: Basis,
    /// When the last full check ran.
    pub full_at: Instant,
    pub namespaces: BTreeMap<String, NamespaceOutcome>,
}

/// The scope of the next check.
pub fn decide(
    memory: Option<&Memory>,
    basis: &Basis,
    dirty: Dirty,
    now: Instant,
    interval: Duration,
) -> Scope {
    let Some(m) = memory else { return Scope::All };
    if m.basis != *basis || now.duration_since(m.full_at) >= interval {
        return Scope::All;
    }
    match dirty {
        Dirty::All => Scope::All,
        Dirty::Namespaces(set) => Scope::Namespaces(set),
    }
}

/// Whether this baseline's own claims may have changed since the check on `before` (none: the
/// first check since it appeared or the process started): it is another object (uid), or its
/// revision or generation changed. Other baselines' changes are theirs to announce.
pub fn claims_changed(before: Option<&Basis>, basis: &Basis) -> bool {
    before.is_none_or(|b| {
        b.uid != basis.uid || b.revision != basis.revision || b.generation != basis.generation
    })
}

/// When the next full check is due after a check of `scope`.
pub fn next_full(memory: &Memory, now: Instant, interval: Duration) -> Duration {
    interval
        .saturating_sub(now.duration_since(memory.full_at))
        .max(Duration::from_secs(1))
}

/// Everything the status is built from, over every selected namespace.
#[derive(Debug, Default, PartialEq)]
pub struct Merged {
    pub selected: Vec<String>,
    pub findings: Vec<Finding>,
    pub conflicts: Vec<ConflictRecord>,
}

/// Folds what a check of `scope` found into `memory` (the previous one, absent or stale after a
/// full check) and returns the whole picture. `selected` are the namespaces the check found
/// selected among those it covered.
pub fn merge(
    memory: Option<Memory>,
    basis: Basis,
    scope: &Scope,
    now: Instant,
    selected: Vec<String>,
    findings: Vec<Finding>,
    conflicts: Vec<ConflictRecord>,
) -> (Memory, Merged) {
    let (mut namespaces, full_at) = match memory {
        Some(m) if !scope.is_full() => (m.namespaces, m.full_at),
        _ => (BTreeMap::new(), now),
    };
    namespaces.retain(|ns, _| !scope.covers(ns));
    for ns in &selected {
        namespaces.entry(ns.clone()).or_default();
    }
    let mut merged = Merged::default();
    for f in findings {
        if f.state != FindingState::Compliant
            && let Some(o) = namespaces.get_mut(&f.namespace)
        {
            o.problems.push(f.clone());
        }
        merged.findings.push(f);
    }
    for c in conflicts {
        if let Some(o) = namespaces.get_mut(&c.namespace) {
            o.conflicts.push(c.clone());
        }
        merged.conflicts.push(c);
    }
    for (ns, outcome) in &namespaces {
        merged.selected.push(ns.clone());
        if !scope.covers(ns) {
            merged.findings.extend(outcome.problems.iter().cloned());
            merged.conflicts.extend(outcome.conflicts.iter().cloned());
        }
    }
    let memory = Memory {
        basis,
        full_at,
        namespaces,
    };
    (memory, merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basis(revision: &str) -> Basis {
        Basis {
            uid: Some("u1".into()),
            revision: revision.into(),
            generation: Some(1),
            others: 7,
        }
    }

    fn finding(ns: &str, object: &str, state: FindingState) -> Finding {
        Finding {
            namespace: ns.into(),
            object: object.into(),
            state,
            message: String::new(),
        }
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_new_or_changed_baseline_announces_itself_to_the_others() {
        let b = basis("r1");
        assert!(claims_changed(None, &b), "first check");
        assert!(!claims_changed(Some(&b), &b), "nothing changed");
        let others = Basis {
            others: 8,
            ..b.clone()
        };
        assert!(
            !claims_changed(Some(&b), &others),
            "another's change is its own to announce"
        );
        for changed in [
            Basis {
                generation: Some(2),
                ..b.clone()
            },
            Basis {
                revision: "r2".into(),
                ..b.clone()
            },
            Basis {
                uid: Some("u2".into()),
                ..b.clone()
            },
        ] {
            assert!(claims_changed(Some(&b), &changed), "{changed:?}");
        }
    }

    fn full_memory(now: Instant) -> Memory {
        let (m, _) = merge(
            None,
            basis("r1"),
            &Scope::All,
            now,
            vec!["a".into(), "b".into(), "c".into()],
            vec![
                finding("a", "ConfigMap/x", FindingState::Compliant),
                finding("b", "ConfigMap/x", FindingState::Drifted),
                finding("c", "ConfigMap/x", FindingState::Compliant),
            ],
            vec![ConflictRecord {
                namespace: "c".into(),
                object: "ConfigMap/y".into(),
                with: "SecurityBaseline/other".into(),
                fields: vec![],
            }],
        );
        m
    }

    #[test]
    fn without_memory_or_with_a_changed_basis_a_check_is_full() {
        let now = Instant::now();
        let dirty = Dirty::Namespaces(set(&["a"]));
        let hour = Duration::from_secs(3600);
        assert_eq!(
            decide(None, &basis("r1"), dirty.clone(), now, hour),
            Scope::All
        );
        let m = full_memory(now);
        assert_eq!(
            decide(Some(&m), &basis("r2"), dirty.clone(), now, hour),
            Scope::All
        );
        let mut other = basis("r1");
        other.others = 8;
        assert_eq!(
            decide(Some(&m), &other, dirty.clone(), now, hour),
            Scope::All
        );
        assert_eq!(
            decide(Some(&m), &basis("r1"), Dirty::All, now, hour),
            Scope::All
        );
        assert_eq!(
            decide(Some(&m), &basis("r1"), dirty, now, hour),
            Scope::Namespaces(set(&["a"]))
        );
    }

    #[test]
    fn the_periodic_check_is_full_once_the_interval_has_passed() {
        let start = Instant::now();
        let m = full_memory(start);
        let interval = Duration::from_secs(10);
        let later = start + Duration::from_secs(4);
        assert_eq!(
            decide(Some(&m), &basis("r1"), Dirty::default(), later, interval),
            Scope::Namespaces(BTreeSet::new())
        );
        assert_eq!(next_full(&m, later, interval), Duration::from_secs(6));
        let due = start + interval;
        assert_eq!(
            decide(Some(&m), &basis("r1"), Dirty::default(), due, interval),
            Scope::All
        );
    }

    #[test]
    fn a_scoped_check_replaces_only_the_namespaces_it_covered() {
        let now = Instant::now();
        let m = full_memory(now);
        // b was fixed, d is new, c is untouched (its conflict is carried over).
        let scope = Scope::Namespaces(set(&["b", "d"]));
        let (m2, merged) = merge(
            Some(m),
            basis("r1"),
            &scope,
            now + Duration::from_secs(1),
            vec!["b".into(), "d".into()],
            vec![
                finding("b", "ConfigMap/x", FindingState::Compliant),
                finding("d", "ConfigMap/x", FindingState::Missing),
            ],
            vec![],
        );
        assert_eq!(merged.selected, ["a", "b", "c", "d"]);
        let problems: Vec<_> = merged
            .findings
            .iter()
            .filter(|f| f.state != FindingState::Compliant)
            .map(|f| f.namespace.as_str())
            .collect();
        assert_eq!(problems, ["d"]);
        assert_eq!(merged.conflicts.len(), 1);
        assert_eq!(merged.conflicts[0].namespace, "c");
        assert!(m2.namespaces["b"].problems.is_empty());
        assert_eq!(m2.namespaces["d"].problems.len(), 1);
        assert_eq!(m2.full_at, now, "a scoped check is not a full one");
    }

    #[test]
    fn a_covered_namespace_no_longer_selected_leaves_the_picture() {
        let now = Instant::now();
        let m = full_memory(now);
        let (m2, merged) = merge(
            Some(m),
            basis("r1"),
            &Scope::Namespaces(set(&["b"])),
            now,
            vec![],
            vec![],
            vec![],
        );
        assert_eq!(merged.selected, ["a", "c"]);
        assert!(!m2.namespaces.contains_key("b"));
    }

    #[test]
    fn a_full_check_forgets_what_it_did_not_find_again() {
        let start = Instant::now();
        let m = full_memory(start);
        let later = start + Duration::from_secs(60);
        let (m2, merged) = merge(
            Some(m),
            basis("r1"),
            &Scope::All,
            later,
            vec!["a".into()],
            vec![finding("a", "ConfigMap/x", FindingState::Compliant)],
            vec![],
        );
        assert_eq!(merged.selected, ["a"]);
        assert!(merged.conflicts.is_empty());
        assert_eq!(m2.full_at, later);
    }

    #[test]
    fn the_digest_of_other_baselines_ignores_their_order_and_sees_a_new_generation() {
        let a = others_digest([("x", Some(1)), ("y", Some(2))]);
        assert_eq!(a, others_digest([("y", Some(2)), ("x", Some(1))]));
        assert_ne!(a, others_digest([("x", Some(1)), ("y", Some(3))]));
        assert_ne!(a, others_digest([("x", Some(1))]));
    }
}
