//! The controller kit every kind uses: one way to run a controller ([`run`]: a span per
//! reconcile, per-object backoff with jitter, metrics, a Warning Event for a failed reconcile,
//! readiness, shutdown, objects that cannot be parsed), one status writer ([`status`]), typed
//! conditions ([`conditions`]), one Event publisher with a reason enum per kind ([`events`])
//! and one server-side apply helper ([`apply`]).

pub mod apply;
pub mod conditions;
pub mod events;
pub mod run;
pub mod status;

pub use conditions::{ConditionType, Conditions};
pub use events::{Announce, Events, Reason};
pub use run::{Kit, ReconcileError, controller, run};
pub use status::{StatusError, StatusWriter};
