//! ONVIF cameras (Profile S/T core): find them on the LAN (WS-Discovery),
//! ask one with its credentials what it streams (device information, media
//! profiles, stream and snapshot URIs) and move it (PTZ), so a camera is
//! added from a list instead of a typed RTSP URL.
//!
//! Layer: above appliance, below notify and web; names `base`, and `events`
//! and `index` (the event store `watch` opens camera motion events in). The web
//! layer stores a stream's ONVIF settings (`index::db`) and calls in here.
//!
//! Invariants:
//! - Every network call has a deadline; nothing here but `watch` starts a
//!   thread or keeps a socket after returning (`watch` keeps one PullPoint
//!   subscription per stream with `events` on, in its own thread).
//! - Passwords travel only as WS-Security digests and never appear in an
//!   error, a log line or a `Debug` print (`soap::Credentials`).
//! - SOAP is parsed with an XML parser (roxmltree), never by string search.

pub mod device;
pub mod discovery;
#[doc(hidden)]
pub mod fuzz;
pub mod pullpoint;
pub mod soap;
pub mod watch;

use device::{Camera, DeviceInfo, Profile, Services};

use crate::base::error::Error;

/// A profile with the addresses to add it as a stream.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProfileUris {
    #[serde(flatten)]
    pub profile: Profile,
    pub stream_uri: Option<String>,
    pub snapshot_uri: Option<String>,
}

/// Everything a probe of one camera learnt.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Description {
    pub device: DeviceInfo,
    pub services: Services,
    pub profiles: Vec<ProfileUris>,
}

/// Asks `cam` for its device information, services, profiles and each
/// profile's stream URI (required) and snapshot URI (optional: many cameras
/// have none). Wrong credentials fail at the first call.
pub fn describe(cam: &Camera) -> Result<Description, Error> {
    let device = cam.device_information()?;
    let services = cam.services()?;
    let media = services.media.clone().unwrap_or_default();
    let mut profiles = Vec::new();
    for p in cam.profiles(&media)? {
        let stream_uri = Some(cam.stream_uri(&media, &p.token)?);
        let snapshot_uri = cam.snapshot_uri(&media, &p.token).ok();
        profiles.push(ProfileUris { profile: p, stream_uri, snapshot_uri });
    }
    Ok(Description { device, services, profiles })
}

/// `url` with `user:password@` put in (an RTSP URI from GetStreamUri has no
/// credentials; the camera wants the same ones as ONVIF). Unchanged if it
/// already has a user or is not a URL.
pub fn with_credentials(url: &str, user: &str, password: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.username().is_empty() && !user.is_empty() => {
            if u.set_username(user).is_err() || u.set_password(Some(password)).is_err() {
                return url.to_string();
            }
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_go_into_stream_urls() {
        assert_eq!(
            super::with_credentials("rtsp://10.0.0.5:554/s0", "ad min", "p@ss"),
            "rtsp://ad%20min:p%40ss@10.0.0.5:554/s0"
        );
        assert_eq!(super::with_credentials("rtsp://u:x@h/s", "a", "b"), "rtsp://u:x@h/s");
        assert_eq!(super::with_credentials("rtsp://h/s", "", ""), "rtsp://h/s");
    }
}
