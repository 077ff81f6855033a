//! Leader election with a `coordination.k8s.io/v1` Lease, so that of several replicas exactly
//! one acts. The decision is a pure function of the Lease and the clock; the loop around it does
//! the reads and writes, using the Lease's resourceVersion so that two candidates can never both
//! win the same round.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{info, warn};

/// What this replica is, as far as the Lease goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The Lease has not been read yet.
    Starting,
    /// Another replica holds the Lease.
    Standby,
    /// This replica holds the Lease and may act.
    Leading,
}

/// What to do after reading the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds a valid Lease: take it.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds it until `expires_at`.
    Standby {
        holder: String,
        expires_at: Timestamp,
    },
}

/// Decides from the Lease (absent when it does not exist) what this candidate does now.
pub fn decide(
    spec: Option<&LeaseSpec>,
    me: &str,
    now: Timestamp,
    default_duration: Duration,
) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    let holder = match spec.holder_identity.as_deref() {
        None | Some("") => return Decision::Acquire,
        Some(h) => h,
    };
    if holder == me {
        return Decision::Renew;
    }
    let last = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    let Some(last) = last else {
        return Decision::Acquire;
    };
    let duration = spec
        .lease_duration_seconds
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s as u64))
        .unwrap_or(default_duration);
    let expires_at = last
        .checked_add(jiff::SignedDuration::try_from(duration).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX);
    if now >= expires_at {
        Decision::Acquire
    } else {
        Decision::Standby {
            holder: holder.to_string(),
            expires_at,
        }
    }
}

/// Why leader election stopped.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lost the leader Lease {name}: not renewed for {elapsed:?}")]
    Lost { name: String, elapsed: Duration },
    #[error("writing the leader Lease {name}")]
    Write {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Why one round of leader election failed.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error(transparent)]
    Api(kube::Error),
    #[error("the API server did not answer within {0:?}")]
    TimedOut(Duration),
}

/// A candidate for the leader Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    retry: Duration,
}

impl LeaderElector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        lease_duration: Duration,
        retry: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            lease_duration,
            retry,
        }
    }

    /// Runs until `shutdown` turns true (then releases the Lease if held, so a standby takes
    /// over at once) or until the Lease is lost (an error: the process must stop acting).
    /// Every change of role is published on `role`.
    pub async fn run(
        self,
        role: watch::Sender<Role>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), LeaseError> {
        let mut last_renew: Option<tokio::time::Instant> = None;
        // A leader that cannot renew for this long stops before its Lease can expire elsewhere.
        let renew_deadline = self.lease_duration.mul_f32(2.0 / 3.0);
        // No round may outlast the renew deadline: an API server that stops answering (a
        // stalled connection, not a refused one) would otherwise hold the leader in a request
        // past its Lease's expiry, acting while a standby takes over.
        // A leader's round may last only until that deadline.
        loop {
            let now = Timestamp::now();
            let leading = *role.borrow() == Role::Leading;
            let since_renew = last_renew.map(|t| t.elapsed()).unwrap_or_default();
            if leading && since_renew >= renew_deadline {
                return Err(LeaseError::Lost {
                    name: self.name.clone(),
                    elapsed: since_renew,
                });
            }
            let round_timeout = if leading {
                self.retry.min(renew_deadline - since_renew)
            } else {
                self.retry
            };
            let round = match tokio::time::timeout(round_timeout, self.round(now)).await {
                Ok(r) => r.map_err(RoundError::Api),
                Err(_) => Err(RoundError::TimedOut(round_timeout)),
            };
            let wait = match round {
                Ok(Decision::Renew) | Ok(Decision::Acquire) => {
                    if *role.borrow() != Role::Leading {
                        info!(lease = %self.name, identity = %self.identity, "became leader");
                    }
                    last_renew = Some(tokio::time::Instant::now());
                    role.send_replace(Role::Leading);
                    self.retry
                }
                Ok(Decision::Standby { holder, expires_at }) => {
                    if *role.borrow() == Role::Leading {
                        return Err(LeaseError::Lost {
                            name: self.name.clone(),
                            elapsed: last_renew.map(|t| t.elapsed()).unwrap_or_default(),
                        });
                    }
                    if *role.borrow() != Role::Standby {
                        info!(lease = %self.name, %holder, "standing by");
                    }
                    role.send_replace(Role::Standby);
                    // Look again at expiry at the latest, so a dead leader is replaced within
                    // the lease duration rather than up to one retry period later.
                    let until_expiry =
                        expires_at.duration_since(now).unsigned_abs() + Duration::from_millis(50);
                    until_expiry.min(self.retry)
                }
                Err(err) => {
                    warn!(lease = %self.name, error = %err, "leader election round failed");
                    // A leader tries again at once if its deadline is near.
                    let left = renew_deadline
                        .saturating_sub(last_renew.map(|t| t.elapsed()).unwrap_or_default());
                    if *role.borrow() == Role::Leading {
                        (self.retry / 2).min(left)
                    } else {
                        self.retry / 2
                    }
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {
                    if *role.borrow() == Role::Leading {
                        self.release().await;
                    }
                    return Ok(());
                }
            }
        }
    }

    /// One read-decide-write round; a conflict (someone else wrote first) reads as standby.
    async fn round(&self, now: Timestamp) -> Result<Decision, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        let decision = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            now,
            self.lease_duration,
        );
        let write = match (&decision, current) {
            (Decision::Standby { .. }, _) => return Ok(decision),
            (Decision::Acquire, None) => {
                self.api
                    .create(&PostParams::default(), &self.lease(None, now, 0))
                    .await
            }
            (Decision::Acquire, Some(existing)) => {
                let spec = existing.spec.clone().unwrap_or_default();
                let transitions = spec.lease_transitions.unwrap_or(0) + 1;
                self.api
                    .replace(
                        &self.name,
                        &PostParams::default(),
                        &self.lease(Some(existing.metadata), now, transitions),
                    )
                    .await
            }
            (Decision::Renew, Some(mut existing)) => {
                let spec = existing.spec.get_or_insert_with(Default::default);
                spec.renew_time = Some(MicroTime(now));
                spec.lease_duration_seconds = Some(self.lease_duration.as_secs().max(1) as i32);
                self.api
                    .replace(&self.name, &PostParams::default(), &existing)
                    .await
            }
            (Decision::Renew, None) => {
                self.api
                    .create(&PostParams::default(), &self.lease(None, now, 0))
                    .await
            }
        };
        match write {
            Ok(_) => Ok(decision),
            Err(kube::Error::Api(status)) if status.is_conflict() || status.is_already_exists() => {
                // Another candidate won this round; the next read shows who.
                Ok(Decision::Standby {
                    holder: String::from("(another candidate)"),
                    expires_at: now,
                })
            }
            Err(err) => Err(err),
        }
    }

    fn lease(&self, meta: Option<ObjectMeta>, now: Timestamp, transitions: i32) -> Lease {
        let metadata = meta.unwrap_or_else(|| ObjectMeta {
            name: Some(self.name.clone()),
            ..Default::default()
        });
        Lease {
            metadata,
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_duration_seconds: Some(self.lease_duration.as_secs().max(1) as i32),
                lease_transitions: Some(transitions),
                ..Default::default()
            }),
        }
    }

    /// Gives the Lease up on shutdown so that a standby does not wait for it to expire.
    async fn release(&self) {
        let result = tokio::time::timeout(self.retry, async {
            let Some(mut lease) = self.api.get_opt(&self.name).await? else {
                return Ok(());
            };
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        })
        .await
        .map_err(|_| RoundError::TimedOut(self.retry))
        .and_then(|r| r.map_err(RoundError::Api));
        match result {
            Ok(()) => info!(lease = %self.name, "released the leader Lease"),
            Err(err) => {
                warn!(lease = %self.name, error = %err, "could not release the leader Lease; it expires on its own")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn held_by(holder: &str, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(at(renewed))),
            lease_duration_seconds: Some(duration),
            ..Default::default()
        }
    }

    const D: Duration = Duration::from_secs(15);

    #[test]
    fn a_missing_or_released_lease_is_acquired() {
        assert_eq!(decide(None, "a", at(100), D), Decision::Acquire);
        let released = LeaseSpec {
            holder_identity: Some(String::new()),
            ..held_by("x", 99, 15)
        };
        assert_eq!(decide(Some(&released), "a", at(100), D), Decision::Acquire);
    }

    #[test]
    fn our_own_lease_is_renewed() {
        assert_eq!(
            decide(Some(&held_by("a", 10, 15)), "a", at(100), D),
            Decision::Renew
        );
    }

    #[test]
    fn a_valid_foreign_lease_means_standby_until_it_expires() {
        let d = decide(Some(&held_by("b", 100, 15)), "a", at(110), D);
        assert_eq!(
            d,
            Decision::Standby {
                holder: "b".into(),
                expires_at: at(115)
            }
        );
    }

    #[test]
    fn an_expired_foreign_lease_is_taken_over() {
        assert_eq!(
            decide(Some(&held_by("b", 100, 15)), "a", at(115), D),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some(&held_by("b", 100, 15)), "a", at(200), D),
            Decision::Acquire
        );
    }

    #[test]
    fn lease_without_duration_uses_ours() {
        let spec = LeaseSpec {
            lease_duration_seconds: None,
            ..held_by("b", 100, 0)
        };
        assert!(matches!(
            decide(Some(&spec), "a", at(114), D),
            Decision::Standby { .. }
        ));
        assert_eq!(decide(Some(&spec), "a", at(115), D), Decision::Acquire);
    }
}
