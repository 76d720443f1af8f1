//! A camera's own motion detection as an event source: one `onvif-NAME`
//! thread per stream whose ONVIF binding has `events` on keeps a PullPoint
//! subscription (`pullpoint`) and turns the motion topics into one `motion`
//! event labelled `onvif` on the stream, so events-mode recording, MQTT and
//! webhooks follow it like the recorder's own motion.
//!
//! Invariants:
//! - At most one open event per watcher: it opens when the first motion
//!   source moves and ends when none does; it also ends (at that moment)
//!   when the subscription is lost or the watcher stops, since the camera's
//!   state is then unknown. Times are the recorder's clock on arrival
//!   (cameras' clocks drift).
//! - Every call has a deadline (`pullpoint`); the subscription is renewed at
//!   half its lifetime; a failure ends the subscription and a new one is made
//!   after a backoff of `BACKOFF_MIN` doubling to `BACKOFF_MAX`, reset once
//!   subscribed. Nothing here touches recording: a camera that goes away only
//!   stops its events.
//! - Dropping the [`Watcher`] stops the thread within one long poll (not
//!   waited for); it unsubscribes on the way out.
//! - A thread costs a 256 KiB stack and a few KiB of heap (one SOAP answer
//!   at a time), counted as `onvif` in /api/system.

use std::collections::BTreeSet;
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::device::Camera;
use super::pullpoint::{self, Motion};
use super::soap::Credentials;
use crate::base::clock::Clock;
use crate::base::error::Error;
use crate::events::Store;
use crate::index::db::EventKind;

/// The label of the events this source opens (`kind` is `motion`).
pub const LABEL: &str = "onvif";
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The subscription's lifetime asked for; renewed at half of it.
pub const LIFETIME: Duration = Duration::from_secs(60);
const STACK: usize = 256 << 10;

/// What one watcher needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub stream: String,
    pub device_url: String,
    pub creds: Option<Credentials>,
    /// Deadline of each plain call.
    pub deadline: Duration,
    /// Long-poll timeout of PullMessages.
    pub pull: Duration,
}

/// A watcher as the API shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// `subscribing`, `subscribed`, `error` (waiting to subscribe again) or `stopped`.
    pub state: &'static str,
    /// The camera's Events service, once known.
    pub events_url: Option<String>,
    pub last_error: Option<String>,
    pub last_error_ms: Option<i64>,
    /// When the current subscription was made.
    pub subscribed_ms: Option<i64>,
    /// Subscriptions made (more than one: it resubscribed).
    pub subscriptions: u64,
    pub renewals: u64,
    /// Notifications received, motion or not.
    pub messages: u64,
    /// The camera says motion now.
    pub motion: bool,
    /// The open event, while there is motion.
    pub event_id: Option<i64>,
}

/// The running watcher's handle; dropping it stops the thread.
pub struct Watcher {
    status: Arc<Mutex<Status>>,
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    _stop: mpsc::Sender<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Watcher {
    /// Starts the `onvif-NAME` thread.
    pub fn spawn(s: Settings, store: Arc<Store>, clock: Arc<dyn Clock>) -> std::io::Result<Watcher> {
        let status = Arc::new(Mutex::new(Status { state: "subscribing", ..Status::default() }));
        let (stop, stop_rx) = mpsc::channel();
        let mut w = Run {
            s,
            store: store.clone(),
            clock: clock.clone(),
            stop: stop_rx,
            status: status.clone(),
            active: BTreeSet::new(),
        };
        // Linux keeps 15 bytes of a thread's name.
        let name: String = format!("onvif-{}", w.s.stream).chars().take(15).collect();
        std::thread::Builder::new().name(name).stack_size(STACK).spawn(move || {
            crate::base::memory::set_subsystem(crate::base::memory::Subsystem::Onvif);
            w.run();
        })?;
        Ok(Watcher { status, store, clock, _stop: stop })
    }

    pub fn status(&self) -> Status {
        lock(&self.status).clone()
    }

    /// Stops now for a recorder that exits: the open event ends here rather
    /// than after the thread's long poll (which the exit does not wait for).
    pub fn stop(self) {
        let open = {
            let mut st = lock(&self.status);
            st.motion = false;
            st.event_id.take()
        };
        if let Some(id) = open {
            if let Err(e) = self.store.end(id, self.clock.now_ms()) {
                log::warn!("onvif events: event {id} not ended at stop: {e}");
            }
        }
    }
}

struct Run {
    s: Settings,
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    stop: mpsc::Receiver<()>,
    status: Arc<Mutex<Status>>,
    /// Motion sources that move now.
    active: BTreeSet<String>,
}

impl Run {
    fn camera(&self) -> Camera {
        Camera {
            device_url: self.s.device_url.clone(),
            creds: self.s.creds.clone(),
            deadline: self.s.deadline,
            now_ms: self.clock.now_ms(),
        }
        .on_camera_clock()
    }

    fn stopped(&self) -> bool {
        matches!(self.stop.try_recv(), Ok(()) | Err(TryRecvError::Disconnected))
    }

    fn run(&mut self) {
        let stream = self.s.stream.clone();
        log::info!("onvif events {stream}: subscribing at {}", self.s.device_url);
        let mut backoff = BACKOFF_MIN;
        loop {
            let done = self.session(&mut backoff);
            // The camera's state is unknown from here: an open event ends now.
            self.active.clear();
            self.follow();
            match done {
                Ok(()) => break,
                Err(e) => self.failed(&e, backoff),
            }
            match self.stop.recv_timeout(backoff) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
            lock(&self.status).state = "subscribing";
        }
        lock(&self.status).state = "stopped";
        log::info!("onvif events {stream}: stopped");
    }

    fn failed(&self, e: &Error, backoff: Duration) {
        let why = e.to_string();
        let mut st = lock(&self.status);
        if st.last_error.as_deref() != Some(why.as_str()) || st.state == "subscribed" {
            log::warn!(
                "onvif events {}: {why}; subscribing again in {backoff:?} (up to {BACKOFF_MAX:?})",
                self.s.stream
            );
        }
        st.state = "error";
        st.last_error = Some(why);
        st.last_error_ms = Some(self.clock.now_ms());
        st.subscribed_ms = None;
    }

    /// One subscription, until it fails (an error) or the watcher stops (Ok).
    fn session(&mut self, backoff: &mut Duration) -> Result<(), Error> {
        let services = self.camera().services()?;
        let events = services.events.ok_or_else(|| {
            Error::upstream(format!("ONVIF GetCapabilities at {}: the camera has no Events service", self.s.device_url))
        })?;
        lock(&self.status).events_url = Some(events.clone());
        let mut sub = pullpoint::subscribe(&self.camera(), &events, LIFETIME)?;
        *backoff = BACKOFF_MIN;
        {
            let mut st = lock(&self.status);
            st.state = "subscribed";
            st.subscriptions += 1;
            st.subscribed_ms = Some(self.clock.now_ms());
        }
        log::info!("onvif events {}: subscribed at {}", self.s.stream, sub.address);
        let mut renew_at = self.clock.mono() + half(sub.lifetime);
        loop {
            if self.stopped() {
                if let Err(e) = pullpoint::unsubscribe(&self.camera(), &sub) {
                    log::info!("onvif events {}: unsubscribe: {e}", self.s.stream);
                }
                return Ok(());
            }
            if self.clock.mono() >= renew_at {
                sub.lifetime = pullpoint::renew(&self.camera(), &sub, LIFETIME)?.or(Some(LIFETIME));
                renew_at = self.clock.mono() + half(sub.lifetime);
                lock(&self.status).renewals += 1;
            }
            // A long poll never outlasts the time to renew (a camera may give a short lifetime).
            let wait = self.s.pull.min(renew_at.saturating_sub(self.clock.mono())).max(Duration::from_secs(1));
            let pulled = pullpoint::pull(&self.camera(), &sub, wait)?;
            lock(&self.status).messages += pulled.messages as u64;
            for m in pulled.motion {
                self.apply(&m);
            }
        }
    }

    fn apply(&mut self, m: &Motion) {
        if m.moving {
            self.active.insert(m.source.clone());
        } else {
            self.active.remove(&m.source);
        }
        self.follow();
    }

    /// Opens or ends the event to match `active`.
    fn follow(&mut self) {
        let moving = !self.active.is_empty();
        let open = lock(&self.status).event_id;
        let now = self.clock.now_ms();
        let stream = &self.s.stream;
        match (moving, open) {
            (true, None) => match self.store.begin(stream, EventKind::Motion, LABEL, 1.0, now) {
                Ok(id) => {
                    log::info!("onvif events {stream}: motion (event {id})");
                    lock(&self.status).event_id = Some(id);
                }
                Err(e) => log::warn!("onvif events {stream}: the motion event was not stored: {e}"),
            },
            (false, Some(id)) => {
                if let Err(e) = self.store.end(id, now) {
                    log::warn!("onvif events {stream}: event {id} not ended: {e}");
                }
                log::info!("onvif events {stream}: motion over (event {id})");
                lock(&self.status).event_id = None;
            }
            _ => {}
        }
        lock(&self.status).motion = moving;
    }
}

/// When to renew: half the lifetime (the asked one if the camera did not
/// say), at least a second (a camera saying 0 is not renewed in a spin).
fn half(lifetime: Option<Duration>) -> Duration {
    (lifetime.unwrap_or(LIFETIME) / 2).max(Duration::from_secs(1))
}
