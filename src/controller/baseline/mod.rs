//! The SecurityBaseline controller (X.1642 8.5, 8.8, 8.1, 7.2.2.4): on every relevant change
//! and every `checkInterval` it checks each baseline in stages: [`observe`] the caches (no API
//! reads), [`plan`] what the baseline should have in the cluster (kept as text in a
//! [`rendered::RenderedSet`]), [`classify`] each object against its live copy, [`act`] (apply
//! what is missing or drifted in Enforce mode, prune what it stamped and no longer renders,
//! write the PolicyReports), then [`settle`] the findings, Events and status, written once and
//! only when it changed. A check that finds nothing to do makes no API writes at all.

pub mod act;
pub mod cache;
pub mod classify;
pub mod events;
pub mod metrics;
pub mod observe;
pub mod plan;
pub mod policy_report;
pub mod rendered;
pub mod scope;
pub mod settle;
pub mod status;
#[cfg(test)]
mod testing;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use tokio::sync::watch;

use self::cache::{ClusterCache, Trigger};
use self::plan::BaselineRef;
use self::rendered::RenderedSet;
use self::settle::{Outcome, Round};
use super::{Context, kit};
use crate::api::SecurityBaseline;
use crate::api::baseline::{BaselineMode, SecurityBaselineStatus};
use crate::api::policy_report::{POLICY_REPORT_API_VERSION, POLICY_REPORT_KIND};
use crate::baseline::{APPROVE_REVISION_ANNOTATION, TakeBacks, revision};

/// Finalizer that lets the controller remove what a deleted baseline stamped.
pub const FINALIZER: &str = "opsec.x1642.dev/baseline-cleanup";
const CONTROLLER: &str = "baseline";

/// Why a reconcile failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("finalizer of baseline {name}")]
    Finalizer {
        name: String,
        #[source]
        source: Box<kube::runtime::finalizer::Error<Error>>,
    },
    #[error(transparent)]
    Status(#[from] super::kit::StatusError),
    #[error("removing what baseline {name} stamped: {failed} deletes failed, first: {first}")]
    Cleanup {
        name: String,
        failed: usize,
        first: String,
    },
}

impl super::kit::ReconcileError for Error {
    /// A short stable category: the metric label and Event reason (a check's or cleanup's own
    /// failure, not the finalizer's wrapping of it).
    fn category(&self) -> &'static str {
        match self {
            Self::Finalizer { source, .. } => match source.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.category(),
                _ => "Finalizer",
            },
            Self::Status(_) => "StatusWrite",
            Self::Cleanup { .. } => "Cleanup",
        }
    }
}

struct State {
    ctx: Context,
    cache: Arc<ClusterCache>,
    events: kit::Events,
    metrics: Arc<metrics::BaselineMetrics>,
    /// Writes the status; the controller's cache can lag behind our own status write, and a
    /// check that started from the stale copy would take an applied revision for a new one,
    /// report a recreated object as a rollout and drop the newest history entry, so a check
    /// starts from [`kit::StatusWriter::latest`].
    statuses: kit::StatusWriter<SecurityBaseline>,
    /// What the checks of each baseline found per namespace (by name): a change in one namespace
    /// re-checks that namespace only, and the status is rebuilt from this for the others.
    memory: std::sync::Mutex<HashMap<String, scope::Memory>>,
    /// Reverts of objects other field managers changed, per baseline (by name): a manager that
    /// takes a field back after the revert is in conflict with the baseline.
    take_backs: std::sync::Mutex<HashMap<String, TakeBacks>>,
    /// The operator's signing keyring (it signs the Pod Security records), read at most every
    /// `observe::KEYRING_REFRESH`.
    keyring: tokio::sync::Mutex<Option<(Instant, Arc<crate::backup::SigningKeyring>)>>,
    /// When the PolicyReport CRD was last found missing (reports are skipped until
    /// `act::REPORT_CRD_RETRY` later).
    reports_missing: std::sync::Mutex<Option<Instant>>,
}

/// One check of one baseline: its stages, then the one status write and the Events the settle
/// stage announced.
async fn check(sb: &SecurityBaseline, st: &State) -> Result<Action, Error> {
    let now = Timestamp::now();
    // Taken first: changes arriving from here on trigger another check.
    let dirty = st.cache.trigger().take(&sb.name_any());
    let previous = st.statuses.latest(sb).unwrap_or_default();
    let (settled, next) = stages(sb, st, &previous, dirty, now).await;
    write_status(sb, st, &previous, settled.status).await?;
    st.events.announce(sb, settled.events).await;
    Ok(next)
}

/// Observe, plan, classify, act and settle; a held revision or an invalid spec settles early.
/// Returns the settled check and when to check again.
async fn stages(
    sb: &SecurityBaseline,
    st: &State,
    previous: &SecurityBaselineStatus,
    dirty: scope::Dirty,
    now: Timestamp,
) -> (settle::Settled, Action) {
    let name = sb.name_any();
    let spec = &sb.spec;
    let generation = sb.metadata.generation;
    let interval = spec
        .check_interval
        .to_std()
        .unwrap_or(Duration::from_secs(600));
    let early = |outcome| {
        let settled = settle::settle(previous, generation, now, outcome);
        (settled, Action::requeue(interval))
    };
    let rev = match revision(spec) {
        Ok(r) => r,
        Err(e) => {
            return early(Outcome::InvalidSpec {
                message: e.to_string(),
            });
        }
    };
    let new_revision = previous.revision.as_deref() != Some(rev.as_str());

    // 8.5.2 approval: a new revision waits until the annotation names it.
    if new_revision
        && spec.rollout.require_approval
        && sb.annotations().get(APPROVE_REVISION_ANNOTATION) != Some(&rev)
    {
        return early(Outcome::AwaitingApproval { revision: &rev });
    }

    // Observe and plan.
    let seen = observe::observe(st, sb, &rev, new_revision, dirty, interval).await;
    let me = BaselineRef { name: &name, spec };
    let set = RenderedSet::render(
        me,
        &seen.baselines(me),
        &seen.namespaces,
        &seen.workloads,
        rendered::Options {
            signer: seen.keyring.as_ref().map(|k| k.active()),
            keep_hashes: new_revision,
        },
    );
    let kinds = observe::kinds(st, &set).await;

    // 8.5.2 technical validation: a new revision is dry-run in every target first.
    if new_revision && spec.rollout.validate {
        let refusals = act::dry_run(&st.ctx.client, &set, &kinds).await;
        if !refusals.is_empty() {
            return early(Outcome::Refused {
                revision: &rev,
                refusals,
            });
        }
    }

    // Classify.
    let enforce = spec.mode == BaselineMode::Enforce;
    let view = observe::CacheView {
        cache: &st.cache,
        kinds: &kinds,
    };
    let mut classified = classify::classify(
        &set,
        &view,
        classify::Rules {
            enforce,
            rollout: new_revision || previous.revision.is_none(),
            ignore_differences: &spec.ignore_differences,
        },
    );
    // What this baseline had stamped before acting: the old side of the history entry.
    let hashes_before = new_revision.then(|| observe::stamped_hashes(st, &name));

    // Act: apply what is missing or drifted, then prune (Enforce only: Audit never writes).
    let writes = std::mem::take(&mut classified.writes);
    let acted = act::apply(&st.ctx.client, writes).await;
    let pruned = if spec.prune && enforce {
        act::prune(st, &name, &set, &seen.scope, &seen.namespaces).await
    } else {
        Vec::new()
    };

    // Settle. What this process saw of field managers taking back reverted fields (in memory:
    // a restart forgets a fight, which the next take-back shows again).
    let clock = Instant::now();
    let take_backs = {
        let mut all = st.take_backs.lock().unwrap_or_else(|p| p.into_inner());
        let mut mine = all.remove(&name).unwrap_or_default();
        mine.expire(clock);
        mine
    };
    let memory = st
        .memory
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&name);
    let round = Round {
        mode: spec.mode,
        revision: &rev,
        set: &set,
        classified,
        acted,
        pruned,
        hashes_before,
        take_backs,
        memory,
        basis: seen.basis,
        scope: &seen.scope,
        started: seen.started,
        now: clock,
    };
    let mut settled = settle::settle(previous, generation, now, Outcome::Checked(Box::new(round)));
    let mut next_check = interval;
    if let Some(kept) = settled.kept.take() {
        act::write_reports(st, &name, spec.mode, &set, &kept.findings, &seen.scope, now).await;
        next_check = scope::next_full(&kept.memory, Instant::now(), interval);
        st.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), kept.memory);
        st.take_backs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), kept.take_backs);
    }
    record_metrics(st, &name, &settled);
    tracing::debug!(baseline = %name, full = seen.scope.is_full(), namespaces = set.namespaces.len(), took = ?seen.started.elapsed(), "checked");
    (settled, Action::requeue(next_check))
}

/// The drift counters and the namespace gauges of a settled check.
fn record_metrics(st: &State, name: &str, settled: &settle::Settled) {
    let m = &st.metrics;
    let labels = metrics::BaselineLabels {
        baseline: name.to_string(),
    };
    m.drift_detected
        .get_or_create(&labels)
        .inc_by(settled.metrics.drift_detected);
    m.drift_reverted
        .get_or_create(&labels)
        .inc_by(settled.metrics.drift_reverted);
    let counts = &settled.status.namespaces;
    for (state, n) in [
        ("compliant", counts.compliant),
        ("drifted", counts.drifted),
        ("conflicted", counts.conflicted),
        ("failed", counts.failed),
    ] {
        let labels = metrics::BaselineStateLabels {
            baseline: name.to_string(),
            state: state.into(),
        };
        m.namespaces.get_or_create(&labels).set(n as i64);
    }
}

fn is_report(api_version: &str, kind: &str) -> bool {
    api_version == POLICY_REPORT_API_VERSION && kind == POLICY_REPORT_KIND
}

/// The SecurityBaseline controller, as [`crate::controller::CONTROLLERS`] lists it.
pub const REGISTRATION: super::Registration = super::Registration {
    name: CONTROLLER,
    kinds: &["SecurityBaseline"],
    metrics: metrics::register,
    start: run,
};

/// Starts the controller once its cluster caches are ready; it stops when `shutdown` turns
/// true. Besides changes of the baselines, a check runs when a namespace or workload it
/// concerns changes ([`Trigger`]).
pub fn run(ctx: Context, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = ctx.client.clone();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let controller = kit::controller::<SecurityBaseline>(&client);
        let cache = ClusterCache::start(client.clone(), controller.store(), Trigger::new(tx));
        tokio::select! {
            _ = cache.wait_until_ready() => {}
            _ = kit::run::stopped(shutdown.clone()) => return,
        }
        let state = Arc::new(State {
            events: ctx.events(),
            metrics: ctx.metrics.of(CONTROLLER).unwrap_or_default(),
            statuses: kit::StatusWriter::new(client),
            ctx: ctx.clone(),
            cache,
            memory: Default::default(),
            take_backs: Default::default(),
            keyring: Default::default(),
            reports_missing: Default::default(),
        });
        // The PolicyReport cache is started now rather than on the first check's first report:
        // its first list can wait a second on a freshly established CRD.
        let warm = state.clone();
        tokio::spawn(async move {
            act::report_kind(&warm).await;
        });
        let controller = controller.reconcile_on(rx.map(|r| ObjectRef::new(&r.name)));
        let kit = kit::Kit::new("SecurityBaseline", CONTROLLER, &ctx);
        kit::run(kit, controller, state, reconcile, shutdown).await;
    })
}

/// A check, behind the finalizer that lets a deleted baseline remove what it stamped.
async fn reconcile(sb: Arc<SecurityBaseline>, st: Arc<State>) -> Result<Action, Error> {
    let name = sb.name_any();
    let api: Api<SecurityBaseline> = Api::all(st.ctx.client.clone());
    let deleting = sb.metadata.deletion_timestamp.is_some();
    let result = finalizer(&api, FINALIZER, sb, |event| async {
        match event {
            Finalizer::Apply(sb) => check(&sb, &st).await,
            Finalizer::Cleanup(sb) => act::cleanup(&sb, &st).await,
        }
    })
    .await
    .map_err(|source| Error::Finalizer {
        name: name.clone(),
        source: Box::new(source),
    });
    if deleting && result.is_err() {
        // A second cleanup from a stale cache entry races the first one, whose removal of the
        // finalizer already let the baseline go: that is done, not an error.
        let released = match api.get_opt(&name).await {
            Ok(None) => true,
            Ok(Some(b)) => !b.finalizers().iter().any(|f| f == FINALIZER),
            Err(_) => false,
        };
        if released {
            return Ok(Action::await_change());
        }
    }
    result
}

/// Writes the status through the status subresource, only when it changed (the check time
/// alone is no change).
async fn write_status(
    sb: &SecurityBaseline,
    st: &State,
    previous: &SecurityBaselineStatus,
    mut status: SecurityBaselineStatus,
) -> Result<(), Error> {
    if !status::differs(&status, previous) {
        return Ok(());
    }
    status.last_check_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Timestamp::now(),
    ));
    st.statuses.write(sb, &status).await?;
    Ok(())
}
