//! Fixtures of the stage tests (classify, settle): a rendered set of one ConfigMap, live copies
//! as a cache would hold them (edited by a named field manager), and fixed clocks.

use std::collections::HashMap;
use std::time::Instant;

use jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

use super::classify::{self, Classified, Live, LiveNamespace, LiveObject, Rules};
use super::plan::{FailureReason, Unplanned};
use super::rendered::{RenderedBody, RenderedNamespace, RenderedSet};
use super::scope::{Basis, Scope};
use super::settle::Round;
use crate::api::baseline::BaselineMode;
use crate::baseline::{RenderedObject, TakeBacks};

pub const NS: &str = "t1";
pub const REVISION: &str = "sha256:r1";

/// A fixed wall clock.
pub fn at(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

/// The rendered set of one ConfigMap `tenant-info` (`data.k: v`) in [`NS`].
pub fn set() -> RenderedSet {
    let object = RenderedObject {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "tenant-info".into(),
        namespace: NS.into(),
        source: "template/0:ConfigMap/tenant-info".into(),
        object: serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "tenant-info", "namespace": NS,
                "labels": {"opsec.x1642.dev/baseline": "base"}},
            "data": {"k": "v"},
        }),
        prune: true,
    };
    RenderedSet {
        namespaces: vec![RenderedNamespace {
            namespace: NS.into(),
            objects: vec![RenderedBody::new(object)],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A set whose only namespace did not render.
pub fn failed_set() -> RenderedSet {
    RenderedSet {
        failed: vec![Unplanned {
            namespace: NS.into(),
            reason: FailureReason::RenderFailed,
            message: "spec.templates[0].data.hello: unknown variable".into(),
        }],
        ..Default::default()
    }
}

fn resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "ConfigMap"))
}

/// The caches of a test: objects by name.
#[derive(Default)]
pub struct FakeLive {
    pub objects: HashMap<String, DynamicObject>,
}

impl FakeLive {
    /// Holds `o` as rendered.
    pub fn compliant(o: &RenderedBody) -> Self {
        let live: DynamicObject = serde_json::from_str(o.text()).expect("body");
        Self {
            objects: HashMap::from([(o.name.clone(), live)]),
        }
    }

    /// Holds `o` with `data.k` changed by field manager `manager`.
    pub fn edited(o: &RenderedBody, manager: &str) -> Self {
        let mut me = Self::compliant(o);
        let live = me.objects.get_mut(&o.name).expect("object");
        live.data["data"]["k"] = "edited".into();
        live.metadata.managed_fields = Some(vec![
            serde_json::from_value(serde_json::json!({
                "manager": manager,
                "operation": "Update",
                "apiVersion": "v1",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:data": {"f:k": {}}},
            }))
            .expect("managed fields entry"),
        ]);
        me
    }
}

impl Live for FakeLive {
    fn object(&self, o: &RenderedBody) -> LiveObject {
        match self.objects.get(&o.name) {
            Some(live) => LiveObject::Present {
                object: Box::new(live.clone()),
                resource: resource(),
            },
            None => LiveObject::Absent {
                resource: resource(),
            },
        }
    }

    fn namespace(&self, _: &str) -> Option<LiveNamespace> {
        None
    }
}

/// Classifies `set` against `live`.
pub fn classify<'a>(
    set: &'a RenderedSet,
    live: &FakeLive,
    enforce: bool,
    rollout: bool,
) -> Classified<'a> {
    classify::classify(
        set,
        live,
        Rules {
            enforce,
            rollout,
            ignore_differences: &[],
        },
    )
}

/// A round of a full check in `mode` at `clock`, nothing pruned.
pub fn round<'a>(
    mode: BaselineMode,
    set: &'a RenderedSet,
    classified: Classified<'a>,
    acted: Vec<super::act::Acted<'a>>,
    take_backs: TakeBacks,
    scope: &'a Scope,
    clock: Instant,
) -> Round<'a> {
    Round {
        mode,
        revision: REVISION,
        set,
        classified,
        acted,
        pruned: Vec::new(),
        hashes_before: None,
        take_backs,
        memory: None,
        basis: Basis {
            uid: Some("u1".into()),
            revision: REVISION.into(),
            generation: Some(1),
            others: 0,
        },
        scope,
        started: clock,
        now: clock,
    }
}
