//! Motion into events: the [`MotionSink`] that opens a `motion` event in the
//! events store when a stream's motion starts (with a snapshot and a
//! thumbnail of the frame that started it) and ends it when motion ends.
//!
//! Invariants:
//! - One open event per stream at a time: a start while one is open (a new
//!   run after a reconnect) ends it first.
//! - A switched-off stream (MQTT's detection switch) opens nothing; an event
//!   already open still ends, so nothing stays open forever.
//! - A store error costs that event only (logged); detection goes on.

use std::cell::Cell;
use std::sync::Arc;

use super::motion::MotionChange;
use super::picture::Rgb;
use super::worker::{Motion, MotionSink};
use crate::events::{Store, StoreError};
use crate::index::db::{EventKind, NewEvent};

/// Widest thumbnail (the Events grid's tiles).
pub const THUMBNAIL_WIDTH: u32 = 192;

/// Whether detection is switched on for a stream (MQTT's switch; always on without it).
pub type Enabled = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Motion of one stream into the events store.
pub struct EventSink {
    store: Arc<Store>,
    enabled: Enabled,
    open: Cell<Option<i64>>,
}

impl EventSink {
    pub fn new(store: Arc<Store>, enabled: Enabled) -> Self {
        EventSink { store, enabled, open: Cell::new(None) }
    }

    fn start(&self, stream: &str, at_ms: i64, score: f64, picture: Option<&Rgb>) {
        if let Some(id) = self.open.take() {
            self.finish(id, at_ms);
        }
        if !(self.enabled)(stream) {
            return;
        }
        let e = NewEvent {
            stream: stream.into(),
            kind: EventKind::Motion,
            label: "motion".into(),
            score,
            zones: Vec::new(),
            start_ms: at_ms,
            end_ms: None,
            best_box: None,
        };
        let jpegs = picture.and_then(|p| match (p.to_jpeg(80), p.scaled(THUMBNAIL_WIDTH).to_jpeg(70)) {
            (Ok(s), Ok(t)) => Some((s, t)),
            (Err(e), _) | (_, Err(e)) => {
                log::warn!("stream {stream}: event pictures: {e}");
                None
            }
        });
        let pictures = jpegs.as_ref().map(|(s, t)| (s.as_slice(), t.as_slice()));
        match self.store.create_with_pictures(&e, pictures) {
            Ok(row) => self.open.set(Some(row.id)),
            Err(e) => log::error!("stream {stream}: motion event not stored: {e}"),
        }
    }

    fn finish(&self, id: i64, at_ms: i64) {
        match self.store.end(id, at_ms) {
            // Ended or deleted through the API meanwhile: nothing left to do.
            Ok(_) | Err(StoreError::Ended(_) | StoreError::NotFound(_)) => {}
            Err(e) => log::error!("event {id}: not ended: {e}"),
        }
    }
}

impl MotionSink for EventSink {
    fn motion(&self, stream: &str, m: &Motion<'_>) {
        match m.change {
            MotionChange::Start { at_ms, .. } => self.start(stream, at_ms, m.score, m.picture),
            MotionChange::End { at_ms, .. } => {
                if let Some(id) = self.open.take() {
                    self.finish(id, at_ms);
                }
            }
        }
    }

    fn wants_picture(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn motion_opens_and_ends_one_event_with_pictures_unless_switched_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::new(&dir.path().join("oxinvr.db"), dir.path()));
        let on = Arc::new(AtomicBool::new(true));
        let flag = on.clone();
        let sink = EventSink::new(store.clone(), Arc::new(move |_: &str| flag.load(Ordering::Relaxed)));
        let picture = Rgb { width: 64, height: 36, data: vec![90; 64 * 36 * 3] };
        let start =
            |at_ms| Motion { change: MotionChange::Start { at_ms, cells: 9 }, score: 0.25, picture: Some(&picture) };
        let end = |at_ms| Motion { change: MotionChange::End { at_ms, peak_cells: 9 }, score: 0.0, picture: None };

        sink.motion("gate", &start(1_000));
        sink.motion("gate", &end(4_000));
        let db = crate::index::db::Db::open(&dir.path().join("oxinvr.db")).expect("db");
        let first = db.event(1).expect("q").expect("event 1");
        assert_eq!(
            (first.kind, first.label.as_str(), first.start_ms, first.end_ms),
            (EventKind::Motion, "motion", 1_000, Some(4_000))
        );
        assert!((first.score - 0.25).abs() < 1e-9);
        let snap = std::fs::read(dir.path().join(first.snapshot.expect("snapshot"))).expect("snapshot file");
        let thumb = Rgb::from_jpeg(
            &std::fs::read(dir.path().join(first.thumbnail.expect("thumbnail"))).expect("thumb file"),
            1 << 20,
        )
        .expect("thumbnail is a JPEG");
        assert_eq!((&snap[..2], thumb.width), (&[0xff, 0xd8][..], 64), "a narrow picture is not upscaled");

        // A second start while one is open (new run) ends the first.
        sink.motion("gate", &start(10_000));
        sink.motion("gate", &start(12_000));
        assert_eq!(db.event(2).expect("q").expect("event 2").end_ms, Some(12_000));

        on.store(false, Ordering::Relaxed);
        sink.motion("gate", &end(13_000));
        assert_eq!(db.event(3).expect("q").expect("event 3").end_ms, Some(13_000), "an open event still ends");
        sink.motion("gate", &start(20_000));
        assert_eq!(db.event(4).expect("q"), None, "switched off: no event");
    }
}
