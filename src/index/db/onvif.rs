//! A stream's ONVIF camera (schema versions 10 and 11): where its device
//! service is, the credentials, the media profile the stream records, the
//! Media and PTZ service addresses learnt when it was saved, and whether the
//! camera's own motion detection is an event source (`events`).
//!
//! Invariants:
//! - At most one row per stream; deleting the stream deletes it (foreign key
//!   with `ON DELETE CASCADE`).
//! - The password is stored like a stream URL's: readable by the recorder only;
//!   `OnvifRow`'s `Debug` never prints it.

use rusqlite::{params, OptionalExtension};

use super::{Ctx, Db, DbError};

/// One stream's ONVIF settings.
#[derive(Clone, PartialEq, Eq)]
pub struct OnvifRow {
    pub device_url: String,
    pub username: String,
    pub password: String,
    pub profile: String,
    pub media_url: String,
    pub ptz_url: Option<String>,
    /// Its motion events (PullPoint) become the stream's events.
    pub events: bool,
}

impl std::fmt::Debug for OnvifRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnvifRow")
            .field("device_url", &self.device_url)
            .field("username", &self.username)
            .field("password", &"***")
            .field("profile", &self.profile)
            .field("media_url", &self.media_url)
            .field("ptz_url", &self.ptz_url)
            .field("events", &self.events)
            .finish()
    }
}

const COLUMNS: &str = "o.device_url, o.username, o.password, o.profile, o.media_url, o.ptz_url, o.events";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OnvifRow> {
    row_at(r, 0)
}

/// An `OnvifRow` from `COLUMNS` starting at column `at`.
fn row_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<OnvifRow> {
    Ok(OnvifRow {
        device_url: r.get(at)?,
        username: r.get(at + 1)?,
        password: r.get(at + 2)?,
        profile: r.get(at + 3)?,
        media_url: r.get(at + 4)?,
        ptz_url: r.get(at + 5)?,
        events: r.get(at + 6)?,
    })
}

impl Db {
    /// Saves the ONVIF settings of stream `stream`; false if there is no such stream.
    pub fn set_onvif(&self, stream: &str, o: &OnvifRow) -> Result<bool, DbError> {
        self.write("set onvif", |tx| {
            let n = tx
                .execute(
                    "INSERT INTO onvif (stream_id, device_url, username, password, profile, media_url, ptz_url, events)
                     SELECT id, ?2, ?3, ?4, ?5, ?6, ?7, ?8 FROM streams WHERE name = ?1
                     ON CONFLICT (stream_id) DO UPDATE SET device_url = excluded.device_url,
                       username = excluded.username, password = excluded.password, profile = excluded.profile,
                       media_url = excluded.media_url, ptz_url = excluded.ptz_url, events = excluded.events",
                    params![stream, o.device_url, o.username, o.password, o.profile, o.media_url, o.ptz_url, o.events],
                )
                .ctx("set onvif")?;
            Ok(n > 0)
        })
    }

    /// The ONVIF settings of stream `stream`, if it has any.
    pub fn onvif_of(&self, stream: &str) -> Result<Option<OnvifRow>, DbError> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM onvif o JOIN streams s ON s.id = o.stream_id WHERE s.name = ?1"),
                [stream],
                row,
            )
            .optional()
            .ctx("onvif_of")
    }

    /// Every stream whose camera is an event source, by name.
    pub fn onvif_event_sources(&self) -> Result<Vec<(String, OnvifRow)>, DbError> {
        let sql = format!(
            "SELECT s.name, {COLUMNS} FROM onvif o JOIN streams s ON s.id = o.stream_id WHERE o.events = 1 ORDER BY s.name"
        );
        let mut q = self.conn.prepare(&sql).ctx("onvif_event_sources")?;
        let rows = q
            .query_map([], |r| Ok((r.get(0)?, row_at(r, 1)?)))
            .ctx("onvif_event_sources")?
            .collect::<Result<Vec<_>, _>>()
            .ctx("onvif_event_sources")?;
        Ok(rows)
    }

    /// Forgets stream `stream`'s ONVIF settings; false if it had none.
    pub fn delete_onvif(&self, stream: &str) -> Result<bool, DbError> {
        let n = self
            .conn
            .execute("DELETE FROM onvif WHERE stream_id = (SELECT id FROM streams WHERE name = ?1)", [stream])
            .ctx("delete onvif")?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::db::StreamSpec;

    #[test]
    fn settings_follow_their_stream() {
        let db = Db::open_in_memory().expect("db");
        let spec: StreamSpec =
            serde_json::from_value(serde_json::json!({"name": "cam", "url": "rtsp://h/s"})).expect("spec");
        db.upsert_stream(&spec, 1).expect("stream");
        let row = OnvifRow {
            device_url: "http://h/onvif/device_service".into(),
            username: "admin".into(),
            password: "pw".into(),
            profile: "Profile_1".into(),
            media_url: "http://h/onvif/media".into(),
            ptz_url: None,
            events: false,
        };
        assert!(!db.set_onvif("nope", &row).expect("no stream"));
        assert!(db.set_onvif("cam", &row).expect("set"));
        let changed = OnvifRow { ptz_url: Some("http://h/onvif/ptz".into()), ..row };
        assert!(db.set_onvif("cam", &changed).expect("update"));
        assert_eq!(db.onvif_of("cam").expect("get"), Some(changed.clone()));
        assert_eq!(db.onvif_event_sources().expect("sources"), vec![]);
        let events = OnvifRow { events: true, ..changed.clone() };
        assert!(db.set_onvif("cam", &events).expect("events on"));
        assert_eq!(db.onvif_event_sources().expect("sources"), vec![("cam".to_string(), events)]);
        assert!(!format!("{changed:?}").contains("pw\""));
        db.delete_stream("cam").expect("delete stream");
        assert_eq!(db.onvif_of("cam").expect("gone"), None);
    }
}
