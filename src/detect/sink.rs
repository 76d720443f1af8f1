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
//! - An object event's `zones` are every zone its label was seen in while it
//!   was open (a person walking into the drive adds "drive"), so
//!   `GET /api/events?zone=` finds it whichever zone it started in.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

use super::motion::MotionChange;
use super::picture::Rgb;
use super::worker::{Motion, MotionSink, Zoned};
use crate::events::{Store, StoreError};
use crate::index::db::{EventKind, NewEvent};

/// Widest thumbnail (the Events grid's tiles).
pub const THUMBNAIL_WIDTH: u32 = 192;

/// Whether detection is switched on for a stream (MQTT's switch; always on without it).
pub type Enabled = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// An open `object` event.
struct OpenObject {
    id: i64,
    /// When its label was last seen.
    last_ms: i64,
    /// The zones it has been in.
    zones: Vec<String>,
}

/// Motion of one stream into the events store.
pub struct EventSink {
    store: Arc<Store>,
    enabled: Enabled,
    open: Cell<Option<i64>>,
    /// Open `object` events by label.
    objects: RefCell<HashMap<&'static str, OpenObject>>,
    /// A label unseen this long ends its event.
    object_end_ms: i64,
}

impl EventSink {
    pub fn new(store: Arc<Store>, enabled: Enabled) -> Self {
        EventSink { store, enabled, open: Cell::new(None), objects: RefCell::default(), object_end_ms: 5_000 }
    }

    /// Object events end when their label has been unseen for `ms` (`detect.end_seconds`).
    pub fn object_end_ms(mut self, ms: i64) -> Self {
        self.object_end_ms = ms;
        self
    }

    /// Pictures of `p`: the snapshot and its thumbnail as JPEG.
    fn jpegs(stream: &str, p: &Rgb) -> Option<(Vec<u8>, Vec<u8>)> {
        match (p.to_jpeg(80), p.scaled(THUMBNAIL_WIDTH).to_jpeg(70)) {
            (Ok(s), Ok(t)) => Some((s, t)),
            (Err(e), _) | (_, Err(e)) => {
                log::warn!("stream {stream}: event pictures: {e}");
                None
            }
        }
    }

    /// Ends the object events whose label was last seen before `before_ms`.
    fn end_objects(&self, before_ms: i64) {
        let mut open = self.objects.borrow_mut();
        let gone: Vec<&'static str> = open.iter().filter(|(_, o)| o.last_ms < before_ms).map(|(l, _)| *l).collect();
        for label in gone {
            if let Some(o) = open.remove(label) {
                self.finish(o.id, o.last_ms);
            }
        }
    }

    fn start(&self, stream: &str, m: &Motion<'_>, at_ms: i64) {
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
            score: m.score,
            zones: m.zones.clone(),
            start_ms: at_ms,
            end_ms: None,
            best_box: m.area.map(|[x, y, w, h]| serde_json::json!({ "x": x, "y": y, "w": w, "h": h })),
        };
        let jpegs = m.picture.and_then(|p| Self::jpegs(stream, p));
        let pictures = jpegs.as_ref().map(|(s, t)| (s.as_slice(), t.as_slice()));
        match self.store.create_with_pictures(&e, pictures) {
            Ok(row) => self.open.set(Some(row.id)),
            Err(e) => log::error!("stream {stream}: motion event not stored: {e}"),
        }
    }

    /// Adds the zones of a new sighting to an open object event.
    fn more_zones(&self, open: &mut OpenObject, zones: &[String]) {
        let before = open.zones.len();
        for z in zones {
            if !open.zones.contains(z) {
                open.zones.push(z.clone());
            }
        }
        if open.zones.len() != before {
            if let Err(e) = self.store.set_zones(open.id, &open.zones) {
                log::error!("event {}: zones not stored: {e}", open.id);
            }
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
            MotionChange::Start { at_ms, .. } => self.start(stream, m, at_ms),
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

    fn objects(&self, stream: &str, at_ms: i64, found: &[Zoned], picture: &Rgb) {
        self.end_objects(at_ms - self.object_end_ms);
        let mut jpegs = None;
        for Zoned { detection: d, zones } in found {
            if let Some(open) = self.objects.borrow_mut().get_mut(d.label) {
                open.last_ms = at_ms;
                self.more_zones(open, zones);
                continue;
            }
            if !(self.enabled)(stream) {
                continue;
            }
            // Strongest first: the first of a label is its best box in this picture.
            let [x0, y0, x1, y1] = d.bbox.map(f64::from);
            let e = NewEvent {
                stream: stream.into(),
                kind: EventKind::Object,
                label: d.label.into(),
                score: f64::from(d.score),
                zones: zones.clone(),
                start_ms: at_ms,
                end_ms: None,
                best_box: Some(serde_json::json!({ "x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0 })),
            };
            let pictures = jpegs.get_or_insert_with(|| Self::jpegs(stream, picture));
            match self.store.create_with_pictures(&e, pictures.as_ref().map(|(s, t)| (s.as_slice(), t.as_slice()))) {
                Ok(row) => {
                    let open = OpenObject { id: row.id, last_ms: at_ms, zones: zones.clone() };
                    self.objects.borrow_mut().insert(d.label, open);
                }
                Err(e) => log::error!("stream {stream}: {} event not stored: {e}", d.label),
            }
        }
    }

    fn quiet(&self, _stream: &str, _at_ms: i64) {
        self.end_objects(i64::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::objects::Detection;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn motion_opens_and_ends_one_event_with_pictures_unless_switched_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::new(&dir.path().join("oxinvr.db"), dir.path()));
        let on = Arc::new(AtomicBool::new(true));
        let flag = on.clone();
        let sink = EventSink::new(store.clone(), Arc::new(move |_: &str| flag.load(Ordering::Relaxed)));
        let picture = Rgb { width: 64, height: 36, data: vec![90; 64 * 36 * 3] };
        let start = |at_ms| Motion {
            change: MotionChange::Start { at_ms, cells: 9 },
            score: 0.25,
            picture: Some(&picture),
            area: Some([0.5, 0.25, 0.25, 0.5]),
            zones: vec!["yard".into()],
        };
        let end = |at_ms| Motion {
            change: MotionChange::End { at_ms, peak_cells: 9 },
            score: 0.0,
            picture: None,
            area: None,
            zones: Vec::new(),
        };

        sink.motion("gate", &start(1_000));
        sink.motion("gate", &end(4_000));
        let db = crate::index::db::Db::open(&dir.path().join("oxinvr.db")).expect("db");
        let first = db.event(1).expect("q").expect("event 1");
        assert_eq!(
            (first.kind, first.label.as_str(), first.start_ms, first.end_ms),
            (EventKind::Motion, "motion", 1_000, Some(4_000))
        );
        assert!((first.score - 0.25).abs() < 1e-9);
        assert_eq!(first.zones, vec!["yard".to_string()]);
        assert_eq!(first.best_box, Some(serde_json::json!({ "x": 0.5, "y": 0.25, "w": 0.25, "h": 0.5 })));
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

    #[test]
    fn objects_open_one_event_per_label_until_unseen_or_quiet() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::new(&dir.path().join("oxinvr.db"), dir.path()));
        let sink = EventSink::new(store, Arc::new(|_: &str| true)).object_end_ms(5_000);
        let picture = Rgb { width: 32, height: 18, data: vec![90; 32 * 18 * 3] };
        let zoned = |label, score, bbox, zones: &[&str]| Zoned {
            detection: Detection { label, score, bbox },
            zones: zones.iter().map(|z| z.to_string()).collect(),
        };
        let person = zoned("person", 0.8, [0.1, 0.2, 0.3, 0.6], &["path"]);
        let car = zoned("car", 0.6, [0.5, 0.5, 0.9, 0.8], &[]);
        sink.objects("gate", 1_000, &[person.clone(), car], &picture);
        sink.objects("gate", 4_000, &[zoned("person", 0.7, [0.4, 0.2, 0.6, 0.9], &["drive"])], &picture);
        sink.objects("gate", 7_500, std::slice::from_ref(&person), &picture);
        let db = crate::index::db::Db::open(&dir.path().join("oxinvr.db")).expect("db");
        let (p, c) = (db.event(1).expect("q").expect("person"), db.event(2).expect("q").expect("car"));
        assert_eq!((p.kind, p.label.as_str(), p.end_ms), (EventKind::Object, "person", None), "still seen");
        assert_eq!((c.label.as_str(), c.end_ms), ("car", Some(1_000)), "unseen for 5 s: ended when last seen");
        assert_eq!(p.best_box.as_ref().and_then(|b| b["h"].as_f64()).map(|h| (h * 10.0).round()), Some(4.0));
        assert!(p.thumbnail.is_some());
        assert_eq!(p.zones, vec!["path".to_string(), "drive".to_string()], "every zone it was seen in");
        assert_eq!(db.event(3).expect("q"), None, "no second person event");
        sink.quiet("gate", 10_000);
        assert_eq!(db.event(1).expect("q").expect("person").end_ms, Some(7_500));
    }
}
