//! One Event publisher for every controller. Each kind declares its Event reasons as one enum
//! ([`event_reasons!`](crate::event_reasons)): the reason, its type (Normal or Warning), the
//! action, the detection [`Signal`] it raises (for EmergencyPlan) and what it means; the README
//! lists them all. Pure steps return [`Announce`] values; the kit publishes them after the
//! status is written. A reason that raises a signal also sends a [`Detection`] to the
//! operator's in-process bus.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};

use crate::signals::{Detection, Detections, Signal};

/// A kind's Event reasons.
pub trait Reason: Copy + Send + Sync + std::fmt::Debug + 'static {
    /// The reason as Events show it (CamelCase).
    fn as_str(self) -> &'static str;
    /// Warning (something needs attention) or Normal.
    fn is_warning(self) -> bool;
    /// What the operator was doing (the Event's `action`).
    fn action(self) -> &'static str;
    /// The detection signal this Event raises, if any.
    fn signal(self) -> Option<Signal>;
    /// What it means, for the README's list.
    fn meaning(self) -> &'static str;
    /// Every reason of the kind.
    fn all() -> &'static [Self];
}

/// Declares a kind's Event reasons:
/// `Variant => Normal|Warning, "Action", signal (an `Option<Signal>`), "what it means";`
#[macro_export]
macro_rules! event_reasons {
    ($(#[$doc:meta])* $vis:vis enum $name:ident {
        $($variant:ident => $type_:ident, $action:literal, $signal:expr, $meaning:literal;)+
    }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        $vis enum $name {
            $(#[doc = $meaning] $variant,)+
        }

        impl $crate::controller::kit::Reason for $name {
            fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => stringify!($variant),)+
                }
            }
            fn is_warning(self) -> bool {
                match self {
                    $(Self::$variant => stringify!($type_) == "Warning",)+
                }
            }
            fn action(self) -> &'static str {
                match self {
                    $(Self::$variant => $action,)+
                }
            }
            fn signal(self) -> Option<$crate::signals::Signal> {
                #[allow(unused_imports)]
                use $crate::signals::Signal;
                match self {
                    $(Self::$variant => $signal,)+
                }
            }
            fn meaning(self) -> &'static str {
                match self {
                    $(Self::$variant => $meaning,)+
                }
            }
            fn all() -> &'static [Self] {
                &[$(Self::$variant,)+]
            }
        }
    };
}

/// An Event a pure step decided on: published by the kit after the status is written.
#[derive(Clone, Debug, PartialEq)]
pub struct Announce<R> {
    pub reason: R,
    pub note: String,
    /// The object the Event is about, when it is not the one it is published on (Events about
    /// different objects are then never folded into one series).
    pub related: Option<ObjectReference>,
}

impl<R> Announce<R> {
    pub fn new(reason: R, note: impl Into<String>) -> Self {
        Self {
            reason,
            note: note.into(),
            related: None,
        }
    }

    pub fn about(reason: R, note: impl Into<String>, related: Option<ObjectReference>) -> Self {
        Self {
            reason,
            note: note.into(),
            related,
        }
    }
}

/// Publishes Events (through kube's [`Recorder`], which folds repeats into series) and the
/// detections they raise.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
    detections: Detections,
}

impl Events {
    pub fn new(recorder: Recorder, detections: Detections) -> Self {
        Self {
            recorder,
            detections,
        }
    }

    /// Publishes `reason` about `obj`.
    pub async fn publish<K, R>(
        &self,
        obj: &K,
        reason: R,
        note: impl Into<String>,
        related: Option<ObjectReference>,
    ) where
        K: Resource<DynamicType = ()>,
        R: Reason,
    {
        let reference = obj.object_ref(&());
        let note = note.into();
        self.detect(reason.signal(), &reference, &related, &note);
        self.send(
            &reference,
            reason.is_warning(),
            reason.as_str(),
            reason.action(),
            note,
            related,
        )
        .await;
    }

    /// Publishes what a pure step announced, in order.
    pub async fn announce<K, R>(&self, obj: &K, list: Vec<Announce<R>>)
    where
        K: Resource<DynamicType = ()>,
        R: Reason,
    {
        for a in list {
            self.publish(obj, a.reason, a.note, a.related).await;
        }
    }

    /// Publishes a Warning whose reason is an error's category: a failed reconcile, work that
    /// waits, or a run that failed (the same category is the Ready reason and the metric
    /// label). A failure that is a detection raises `signal`.
    pub async fn problem(
        &self,
        reference: &ObjectReference,
        category: &str,
        note: String,
        related: Option<ObjectReference>,
        signal: Option<Signal>,
    ) {
        self.detect(signal, reference, &related, &note);
        self.send(reference, true, category, "Reconcile", note, related)
            .await;
    }

    /// Raises `signal`, if any, about `reference`.
    fn detect(
        &self,
        signal: Option<Signal>,
        reference: &ObjectReference,
        related: &Option<ObjectReference>,
        note: &str,
    ) {
        if let Some(signal) = signal {
            self.detections.send(Detection {
                signal,
                object: reference.clone(),
                related: related.clone(),
                note: note.into(),
                at: jiff::Timestamp::now(),
            });
        }
    }

    async fn send(
        &self,
        reference: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
        related: Option<ObjectReference>,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(crate::api::common::cap_message(&note, MAX_NOTE)),
            action: action.into(),
            secondary: related,
        };
        if let Err(err) = self.recorder.publish(&event, reference).await {
            tracing::warn!(error = %err, reason, "could not publish an Event");
        }
    }
}

/// Longest Event note (the API server refuses more than 1 KiB).
const MAX_NOTE: usize = 1024;
