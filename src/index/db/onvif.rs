//! A stream's ONVIF camera (schema version 9): where its device service is,
//! the credentials, the media profile the stream records, and the Media and
//! PTZ service addresses learnt when it was saved.
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
            .finish()
    }
}

impl Db {
    /// Saves the ONVIF settings of stream `stream`; false if there is no such stream.
    pub fn set_onvif(&self, stream: &str, o: &OnvifRow) -> Result<bool, DbError> {
        self.write("set onvif", |tx| {
            let n = tx
                .execute(
                    "INSERT INTO onvif (stream_id, device_url, username, password, profile, media_url, ptz_url)
                     SELECT id, ?2, ?3, ?4, ?5, ?6, ?7 FROM streams WHERE name = ?1
                     ON CONFLICT (stream_id) DO UPDATE SET device_url = excluded.device_url,
                       username = excluded.username, password = excluded.password, profile = excluded.profile,
                       media_url = excluded.media_url, ptz_url = excluded.ptz_url",
                    params![stream, o.device_url, o.username, o.password, o.profile, o.media_url, o.ptz_url],
                )
                .ctx("set onvif")?;
            Ok(n > 0)
        })
    }

    /// The ONVIF settings of stream `stream`, if it has any.
    pub fn onvif_of(&self, stream: &str) -> Result<Option<OnvifRow>, DbError> {
        self.conn
            .query_row(
                "SELECT o.device_url, o.username, o.password, o.profile, o.media_url, o.ptz_url
                 FROM onvif o JOIN streams s ON s.id = o.stream_id WHERE s.name = ?1",
                [stream],
                |r| {
                    Ok(OnvifRow {
                        device_url: r.get(0)?,
                        username: r.get(1)?,
                        password: r.get(2)?,
                        profile: r.get(3)?,
                        media_url: r.get(4)?,
                        ptz_url: r.get(5)?,
                    })
                },
            )
            .optional()
            .ctx("onvif_of")
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
        };
        assert!(!db.set_onvif("nope", &row).expect("no stream"));
        assert!(db.set_onvif("cam", &row).expect("set"));
        let changed = OnvifRow { ptz_url: Some("http://h/onvif/ptz".into()), ..row };
        assert!(db.set_onvif("cam", &changed).expect("update"));
        assert_eq!(db.onvif_of("cam").expect("get"), Some(changed.clone()));
        assert!(!format!("{changed:?}").contains("pw\""));
        db.delete_stream("cam").expect("delete stream");
        assert_eq!(db.onvif_of("cam").expect("gone"), None);
    }
}
