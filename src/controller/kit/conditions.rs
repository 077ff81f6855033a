//! Typed status conditions: a [`Conditions`] builder bound to one `now` and one
//! `observedGeneration`, so every condition a reconcile sets carries the same time and
//! generation, and a transition time changes only when the status flips (Kubernetes API
//! conventions). Condition types are enums per kind ([`ConditionType`]), never free strings.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::api::common::{ConditionStatus, set_condition};

/// A kind's condition types: an enum whose `as_str` is the `type` the API shows.
pub trait ConditionType: Copy {
    fn as_str(self) -> &'static str;
}

/// Declares an enum of condition types (`as_str` is the variant's name).
#[macro_export]
macro_rules! condition_types {
    ($(#[$doc:meta])* $vis:vis enum $name:ident { $($(#[$vdoc:meta])* $variant:ident,)+ }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        $vis enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $crate::controller::kit::ConditionType for $name {
            fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => stringify!($variant),)+
                }
            }
        }
    };
}

/// The conditions of one status, set at one `now` and one `generation`.
pub struct Conditions<'a> {
    list: &'a mut Vec<Condition>,
    now: jiff::Timestamp,
    generation: Option<i64>,
}

impl<'a> Conditions<'a> {
    pub fn new(
        list: &'a mut Vec<Condition>,
        now: jiff::Timestamp,
        generation: Option<i64>,
    ) -> Self {
        Self {
            list,
            now,
            generation,
        }
    }

    /// Sets `type_` to True or False with `reason` and `message`; the transition time moves
    /// only when the status flips.
    pub fn set(
        &mut self,
        type_: impl ConditionType,
        ok: bool,
        reason: &str,
        message: impl Into<String>,
    ) -> &mut Self {
        let status = if ok {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        self.set_status(type_, status, reason, message)
    }

    /// Sets `type_` to `status` (Unknown included).
    pub fn set_status(
        &mut self,
        type_: impl ConditionType,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
    ) -> &mut Self {
        set_condition(
            self.list,
            type_.as_str(),
            status,
            reason,
            message,
            self.generation,
            self.now,
        );
        self
    }

    /// Removes `type_` (a run starting afresh).
    pub fn remove(&mut self, type_: impl ConditionType) -> &mut Self {
        self.list.retain(|c| c.type_ != type_.as_str());
        self
    }
}

/// The status of `type_` in `list`: `Some(true)` True, `Some(false)` False, `None` absent or
/// Unknown.
pub fn is_true(list: &[Condition], type_: impl ConditionType) -> Option<bool> {
    let c = list.iter().find(|c| c.type_ == type_.as_str())?;
    match c.status.as_str() {
        "True" => Some(true),
        "False" => Some(false),
        _ => None,
    }
}

/// The condition `type_` in `list`.
pub fn find(list: &[Condition], type_: impl ConditionType) -> Option<&Condition> {
    list.iter().find(|c| c.type_ == type_.as_str())
}

/// Whether `type_` turned False between `before` and `after` (absent or True before): the
/// moment a problem is announced, once.
pub fn turned_false(before: &[Condition], after: &[Condition], type_: impl ConditionType) -> bool {
    is_true(after, type_) == Some(false) && is_true(before, type_) != Some(false)
}

/// Whether `type_` turned True after having been False: the moment a recovery is announced.
pub fn turned_true(before: &[Condition], after: &[Condition], type_: impl ConditionType) -> bool {
    is_true(after, type_) == Some(true) && is_true(before, type_) == Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::condition_types! {
        enum Kind { Ready, Healthy, }
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let t0: jiff::Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let t1: jiff::Timestamp = "2026-12-01T01:00:00Z".parse().unwrap();
        let t2: jiff::Timestamp = "2026-12-01T02:00:00Z".parse().unwrap();
        let mut list = Vec::new();
        Conditions::new(&mut list, t0, Some(1))
            .set(Kind::Ready, true, "Fine", "all good")
            .set(Kind::Healthy, false, "Sick", "no");
        let before = list.clone();
        Conditions::new(&mut list, t1, Some(2)).set(Kind::Ready, true, "Fine", "still good");
        let ready = find(&list, Kind::Ready).unwrap();
        assert_eq!(ready.last_transition_time.0, t0, "same status: time kept");
        assert_eq!(ready.observed_generation, Some(2));
        assert_eq!(ready.message, "still good");
        assert!(!turned_false(&before, &list, Kind::Ready));
        let before = list.clone();
        Conditions::new(&mut list, t2, Some(2)).set(Kind::Ready, false, "Broken", "down");
        assert_eq!(find(&list, Kind::Ready).unwrap().last_transition_time.0, t2);
        assert!(turned_false(&before, &list, Kind::Ready));
        assert!(!turned_false(&list, &list, Kind::Ready), "announced once");
        let before = list.clone();
        Conditions::new(&mut list, t2, Some(2)).set(Kind::Ready, true, "Fine", "up");
        assert!(turned_true(&before, &list, Kind::Ready));
        assert_eq!(is_true(&list, Kind::Healthy), Some(false));
        Conditions::new(&mut list, t2, None).remove(Kind::Healthy);
        assert_eq!(is_true(&list, Kind::Healthy), None);
    }
}
