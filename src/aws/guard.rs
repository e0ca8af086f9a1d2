//! The record of what one region's work has made so far, and its undoing: on failure, and on
//! Ctrl-C.
//!
//! A [`Guard`] exists from the moment before a snapshot is started (or an image registered, or
//! copied) until the result is complete (`completed` for `kiln upload`, `available` for an
//! image), so no moment in between lacks a cleanup. The work updates it as it goes: a creating
//! call in flight, what it made, or a call that failed after an attempt that may have landed.
//! Undoing removes exactly what the record holds, image before snapshot:
//!
//! - a call still in flight is waited for (briefly): its answer names what it made;
//! - StartSnapshot and CopyImage whose answers never came are sent again with the same
//!   ClientToken and parameters, and AWS answers with what the first call made;
//! - RegisterImage has no token: the image with the AMI name this run checked was free, whose
//!   root device is this run's snapshot, is the one it made.

use super::copy::{self, CopyRequest};
use super::created::{self, NewImage, NewSnapshot};
use super::retry::{CallError, Retrier};
use super::snapshot::{self, SnapshotSpec};
use super::{register, Clients};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::time::Instant;

/// How long undoing waits for a creating call already in flight to answer.
const SETTLE: Duration = Duration::from_secs(15);

/// One thing being made: how to find it if its call's answer is missing, or what was made.
#[derive(Debug, Clone)]
enum Track<T, R> {
    Nothing,
    /// The creating call is under way.
    InFlight(R),
    /// The creating call failed, but an attempt may have made it.
    Unsettled(R),
    Made(T),
}

impl<T, R> Track<T, R> {
    fn in_flight(&self) -> bool {
        matches!(self, Track::InFlight(_))
    }
}

#[derive(Debug, Clone)]
enum ImageRecovery {
    Register { name: String, snapshot: String },
    Copy(CopyRequest),
}

#[derive(Debug, Clone)]
struct Making {
    snapshot: Track<NewSnapshot, SnapshotSpec>,
    image: Track<NewImage, ImageRecovery>,
}

/// The record of one region's work in progress, registered for Ctrl-C; dropping it (or
/// [`Guard::finish`]) ends its watch.
pub struct Guard {
    state: Arc<Mutex<Making>>,
    clients: Clients,
    retrier: Retrier,
    action: crate::cleanup::ActionId,
}

impl Guard {
    /// A guard over work in `clients`' region, watching for Ctrl-C from now on.
    pub fn new(handle: &Handle, clients: &Clients, retrier: &Retrier) -> Guard {
        let state = Arc::new(Mutex::new(Making {
            snapshot: Track::Nothing,
            image: Track::Nothing,
        }));
        let (h, c, r, s) = (
            handle.clone(),
            clients.clone(),
            retrier.for_cleanup(),
            state.clone(),
        );
        let what = format!("undo this run's work in {}", clients.region);
        let action = crate::cleanup::register_action(what, move || {
            // Runs on the signal thread; the timers must be made inside the runtime.
            let r = h.block_on(async {
                tokio::time::timeout(Duration::from_secs(60), undo(&s, &c, &r)).await
            });
            match r {
                Ok(Ok(done)) if done.is_empty() => Ok(format!("nothing to undo in {}", c.region)),
                Ok(Ok(done)) => Ok(done),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(format!(
                    "undoing this run's work in {} timed out; check for snapshots and images \
                     tagged kiln:name there",
                    c.region
                )),
            }
        });
        Guard {
            state,
            clients: clients.clone(),
            retrier: retrier.clone(),
            action,
        }
    }

    fn update(&self, f: impl FnOnce(&mut Making)) {
        let mut m = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut m);
    }

    pub(super) fn starting(&self, spec: &SnapshotSpec) {
        self.update(|m| m.snapshot = Track::InFlight(spec.clone()));
    }

    pub(super) fn started(&self, s: &NewSnapshot) {
        self.update(|m| m.snapshot = Track::Made(s.clone()));
    }

    pub(super) fn start_failed(&self, spec: &SnapshotSpec, e: &CallError) {
        let t = match e.may_have_happened() {
            true => Track::Unsettled(spec.clone()),
            false => Track::Nothing,
        };
        self.update(|m| m.snapshot = t);
    }

    pub(super) fn registering(&self, name: &str, snapshot: &str) {
        let r = ImageRecovery::Register {
            name: name.to_string(),
            snapshot: snapshot.to_string(),
        };
        self.update(|m| m.image = Track::InFlight(r));
    }

    pub(super) fn copying(&self, req: &CopyRequest) {
        self.update(|m| m.image = Track::InFlight(ImageRecovery::Copy(req.clone())));
    }

    pub(super) fn image_made(&self, i: &NewImage) {
        self.update(|m| m.image = Track::Made(i.clone()));
    }

    /// The creating call of the image failed; `e` says whether it may still have made it.
    pub(super) fn image_failed(&self, e: &CallError) {
        self.update(|m| {
            if let Track::InFlight(r) = &m.image {
                m.image = match e.may_have_happened() {
                    true => Track::Unsettled(r.clone()),
                    false => Track::Nothing,
                };
            }
        })
    }

    /// The snapshot this run made, if it made one.
    pub fn snapshot(&self) -> Option<NewSnapshot> {
        match &self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot
        {
            Track::Made(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// The image this run made, if it made one.
    pub fn image(&self) -> Option<NewImage> {
        match &self.state.lock().unwrap_or_else(|e| e.into_inner()).image {
            Track::Made(i) => Some(i.clone()),
            _ => None,
        }
    }

    /// Removes everything the record holds, now (a failure's cleanup); returns what was done,
    /// as a sentence (`None`: nothing was made), or what is left to do by hand. The record is
    /// then empty.
    pub async fn undo(&self) -> Result<Option<String>, String> {
        let done = undo(&self.state, &self.clients, &self.retrier).await?;
        Ok((!done.is_empty()).then_some(done))
    }

    /// The work is complete: what it made stays, and Ctrl-C no longer removes it.
    pub fn finish(self) {}
}

impl Drop for Guard {
    fn drop(&mut self) {
        crate::cleanup::unregister_action(self.action);
    }
}

/// Removes what `state` records (image first: its snapshot cannot be deleted while an image
/// uses it), emptying the record as it goes. Returns what was done ("deregistered ami-… and
/// deleted snapshot snap-… in us-east-1"), empty when there was nothing.
async fn undo(
    state: &Mutex<Making>,
    clients: &Clients,
    retrier: &Retrier,
) -> Result<String, String> {
    let read = || state.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let t0 = Instant::now();
    while {
        let m = read();
        m.image.in_flight() || m.snapshot.in_flight()
    } && t0.elapsed() < SETTLE
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = read();
    let region = &clients.region;
    let mut done: Vec<String> = Vec::new();
    let said = |done: &[String]| match done.is_empty() {
        true => String::new(),
        false => format!("{} in {region}; ", done.join(" and ")),
    };
    let image = match m.image {
        Track::Nothing => None,
        Track::Made(i) => Some(i),
        Track::InFlight(r) | Track::Unsettled(r) => recover_image(clients, retrier, &r)
            .await
            .map_err(|e| format!("{}could not find the image being made: {e}", said(&done)))?,
    };
    if let Some(i) = image {
        match created::remove_image(clients, retrier, &i).await {
            Ok(snaps) => {
                done.push(format!("deregistered {}", i.id()));
                for s in snaps {
                    done.push(format!("deleted snapshot {s}"));
                }
            }
            Err(e) => {
                return Err(format!(
                    "{}could not remove {} ({e}); deregister it and delete its snapshots by hand",
                    said(&done),
                    i.id()
                ))
            }
        }
    }
    state.lock().unwrap_or_else(|e| e.into_inner()).image = Track::Nothing;
    let snap = match m.snapshot {
        Track::Nothing => None,
        Track::Made(s) => Some(s),
        Track::InFlight(spec) | Track::Unsettled(spec) => {
            let id = snapshot::replay_start(clients, retrier, &spec)
                .await
                .map_err(|e| {
                    format!(
                        "{}could not learn the id of the snapshot being started (ClientToken {}): \
                         {e}; AWS cancels it after {} minutes without blocks",
                        said(&done),
                        spec.client_token,
                        spec.timeout_minutes
                    )
                })?;
            Some(NewSnapshot::new(&id, region))
        }
    };
    if let Some(s) = snap {
        created::delete_snapshot(clients, retrier, &s)
            .await
            .map_err(|e| {
                format!(
                    "{}snapshot {} could not be deleted ({e}); delete it by hand",
                    said(&done),
                    s.id()
                )
            })?;
        done.push(format!("deleted snapshot {}", s.id()));
    }
    state.lock().unwrap_or_else(|e| e.into_inner()).snapshot = Track::Nothing;
    Ok(match done.is_empty() {
        true => String::new(),
        false => format!("{} in {region}", done.join(" and ")),
    })
}

async fn recover_image(
    clients: &Clients,
    retrier: &Retrier,
    r: &ImageRecovery,
) -> Result<Option<NewImage>, CallError> {
    match r {
        ImageRecovery::Register { name, snapshot } => {
            register::find_made(clients, retrier, name, snapshot).await
        }
        // Later than the call: the copy may have left `pending` since; it must still be new.
        ImageRecovery::Copy(req) => copy::send(clients, retrier, req, false).await.map(Some),
    }
}
