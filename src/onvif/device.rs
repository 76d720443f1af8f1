//! An ONVIF camera's Device, Media and PTZ services (Profile S/T core):
//! device information, the services' addresses, media profiles with their
//! stream and snapshot URIs, and pan/tilt/zoom moves and presets.
//!
//! Invariants:
//! - Every call goes through `soap::call` (a deadline, the password as a digest).
//! - Answers are read by local element names, so any prefix a camera uses works;
//!   a missing required element is an `Upstream` error naming it.
//! - PTZ speeds are clamped to ONVIF's generic space, -1..=1.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::soap::{self, child, child_text, esc, find, path, Credentials};
use crate::base::error::Error;

/// One camera, reached at its device service URL.
#[derive(Debug, Clone)]
pub struct Camera {
    /// The device service, e.g. `http://192.168.1.20/onvif/device_service`.
    pub device_url: String,
    pub creds: Option<Credentials>,
    /// Bounds the connect and each read and write of a call.
    pub deadline: Duration,
    /// Wall time of the calls' WS-Security `Created`, from the recorder's clock.
    pub now_ms: i64,
}

/// What `GetDeviceInformation` says.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    pub manufacturer: String,
    pub model: String,
    pub firmware: String,
    pub serial: String,
    pub hardware_id: String,
}

/// Where the Media, PTZ and Events services are (from `GetCapabilities`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Services {
    pub media: Option<String>,
    pub ptz: Option<String>,
    pub events: Option<String>,
}

/// A media profile (`trt:Profiles`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Profile {
    pub token: String,
    pub name: String,
    pub encoding: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// The profile has a PTZ configuration.
    pub ptz: bool,
}

/// A PTZ preset.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Preset {
    pub token: String,
    pub name: String,
}

/// Pan, tilt and zoom speeds (-1..=1).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Velocity {
    pub pan: f64,
    pub tilt: f64,
    pub zoom: f64,
}

/// Per device URL, the camera's time as `GetSystemDateAndTime` said (None:
/// it did not answer) and the monotonic instant it was read: the camera's
/// time now is that plus the time elapsed since, whatever our wall clock
/// does meanwhile (NTP may step it). A camera refuses a digest whose
/// `Created` is minutes off its own clock, and many cameras' clocks are wrong
/// (ONVIF Core 5.12.2 tells clients to follow the device's time).
static OFFSETS: Mutex<BTreeMap<String, (Option<i64>, Instant)>> = Mutex::new(BTreeMap::new());
/// How long a camera's time is trusted before the camera is asked again.
const OFFSET_TTL: Duration = Duration::from_secs(600);
/// How long a camera that did not say its time is not asked again.
const NO_TIME_TTL: Duration = Duration::from_secs(30);
/// An offset smaller than this is not worth a log line.
const OFFSET_LOG_MS: i64 = 5_000;

impl Camera {
    /// `self` with its WS-Security time on the camera's clock (asked at most
    /// once per `OFFSET_TTL` per camera; one that does not say keeps ours).
    pub fn on_camera_clock(mut self) -> Camera {
        self.now_ms += self.clock_offset_ms();
        self
    }

    fn clock_offset_ms(&self) -> i64 {
        let fresh =
            |(t, at): &(Option<i64>, Instant)| at.elapsed() < if t.is_some() { OFFSET_TTL } else { NO_TIME_TTL };
        let cached = OFFSETS.lock().unwrap_or_else(|p| p.into_inner()).get(&self.device_url).copied().filter(fresh);
        let (camera_ms, at) = match cached {
            Some(c) => c,
            None => {
                let t = self.system_time_ms().map_err(|e| {
                    log::info!(
                        "onvif {}: no camera time ({e}); WS-Security uses the recorder's clock",
                        self.device_url
                    );
                });
                let entry = (t.ok(), Instant::now());
                OFFSETS.lock().unwrap_or_else(|p| p.into_inner()).insert(self.device_url.clone(), entry);
                if let Some(off) = t.ok().map(|t| t - self.now_ms).filter(|off| off.abs() >= OFFSET_LOG_MS) {
                    let secs = off as f64 / 1000.0;
                    log::info!(
                        "onvif {}: the camera's clock is {secs:+.1} s off ours; WS-Security follows it",
                        self.device_url
                    );
                }
                entry
            }
        };
        camera_ms.map_or(0, |t| t + at.elapsed().as_millis() as i64 - self.now_ms)
    }

    /// The camera's UTC time (`GetSystemDateAndTime`, which needs no
    /// credentials so that a client can fix its clock before it signs).
    pub fn system_time_ms(&self) -> Result<i64, Error> {
        let op = "GetSystemDateAndTime";
        let xml = soap::call(&self.device_url, op, "<tds:GetSystemDateAndTime/>", None, self.now_ms, self.deadline)?;
        let doc = parse(&xml, op)?;
        let utc = required(find(doc.root(), "UTCDateTime"), op, "UTCDateTime")?;
        utc_ms(utc).ok_or_else(|| Error::upstream(format!("ONVIF {op}: UTCDateTime is not a valid date and time")))
    }

    fn call(&self, url: &str, op: &str, body: &str) -> Result<String, Error> {
        soap::call(url, op, body, self.creds.as_ref(), self.now_ms, self.deadline)
    }

    /// A call with WS-Addressing headers and its own deadline (a long poll
    /// waits longer than a plain call).
    pub fn call_addressed(
        &self,
        url: &str,
        op: &str,
        body: &str,
        action: &str,
        deadline: Duration,
    ) -> Result<String, Error> {
        let wsa = soap::Addressing { action, to: url };
        soap::call_addressed(url, op, body, self.creds.as_ref(), self.now_ms, deadline, Some(wsa))
    }

    pub fn device_information(&self) -> Result<DeviceInfo, Error> {
        let op = "GetDeviceInformation";
        let xml = self.call(&self.device_url, op, "<tds:GetDeviceInformation/>")?;
        let doc = parse(&xml, op)?;
        let r = required(find(doc.root(), "GetDeviceInformationResponse"), op, "GetDeviceInformationResponse")?;
        let text = |name: &str| child_text(r, name).unwrap_or_default().to_string();
        Ok(DeviceInfo {
            manufacturer: text("Manufacturer"),
            model: text("Model"),
            firmware: text("FirmwareVersion"),
            serial: text("SerialNumber"),
            hardware_id: text("HardwareId"),
        })
    }

    /// The Media and PTZ service addresses; a camera without Media is refused.
    pub fn services(&self) -> Result<Services, Error> {
        let op = "GetCapabilities";
        let body = "<tds:GetCapabilities><tds:Category>All</tds:Category></tds:GetCapabilities>";
        let xml = self.call(&self.device_url, op, body)?;
        let doc = parse(&xml, op)?;
        let caps = required(find(doc.root(), "Capabilities"), op, "Capabilities")?;
        let xaddr = |service: &str| {
            child(caps, service).and_then(|s| child_text(s, "XAddr")).filter(|a| !a.is_empty()).map(str::to_string)
        };
        let s = Services { media: xaddr("Media"), ptz: xaddr("PTZ"), events: xaddr("Events") };
        if s.media.is_none() {
            return Err(Error::upstream(format!("ONVIF {op} at {}: the camera has no Media service", self.device_url)));
        }
        Ok(s)
    }

    pub fn profiles(&self, media: &str) -> Result<Vec<Profile>, Error> {
        let op = "GetProfiles";
        let xml = self.call(media, op, "<trt:GetProfiles/>")?;
        let doc = parse(&xml, op)?;
        let r = required(find(doc.root(), "GetProfilesResponse"), op, "GetProfilesResponse")?;
        let profiles = r.children().filter(|c| c.is_element() && c.tag_name().name() == "Profiles");
        Ok(profiles.map(profile_of).collect())
    }

    /// The RTSP URI of a profile (RTP over RTSP, unicast).
    pub fn stream_uri(&self, media: &str, profile: &str) -> Result<String, Error> {
        let op = "GetStreamUri";
        let body = format!(
            "<trt:GetStreamUri><trt:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream><tt:Transport>\
             <tt:Protocol>RTSP</tt:Protocol></tt:Transport></trt:StreamSetup>\
             <trt:ProfileToken>{}</trt:ProfileToken></trt:GetStreamUri>",
            esc(profile)
        );
        self.media_uri(media, op, &body)
    }

    pub fn snapshot_uri(&self, media: &str, profile: &str) -> Result<String, Error> {
        let op = "GetSnapshotUri";
        let body =
            format!("<trt:GetSnapshotUri><trt:ProfileToken>{}</trt:ProfileToken></trt:GetSnapshotUri>", esc(profile));
        self.media_uri(media, op, &body)
    }

    fn media_uri(&self, media: &str, op: &str, body: &str) -> Result<String, Error> {
        let xml = self.call(media, op, body)?;
        let doc = parse(&xml, op)?;
        let uri = find(doc.root(), "MediaUri").and_then(|m| child_text(m, "Uri")).filter(|u| !u.is_empty());
        Ok(required(uri, op, "MediaUri/Uri")?.to_string())
    }

    /// Moves at `v` until `Stop` (or the camera's own timeout, if `timeout` is given).
    pub fn continuous_move(
        &self,
        ptz: &str,
        profile: &str,
        v: Velocity,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        let c = |x: f64| if x.is_finite() { x.clamp(-1.0, 1.0) } else { 0.0 };
        let timeout = timeout.map_or(String::new(), |t| format!("<tptz:Timeout>PT{}S</tptz:Timeout>", t.as_secs_f64()));
        let body = format!(
            "<tptz:ContinuousMove><tptz:ProfileToken>{}</tptz:ProfileToken><tptz:Velocity>\
             <tt:PanTilt x=\"{}\" y=\"{}\"/><tt:Zoom x=\"{}\"/></tptz:Velocity>{timeout}</tptz:ContinuousMove>",
            esc(profile),
            c(v.pan),
            c(v.tilt),
            c(v.zoom)
        );
        self.call(ptz, "ContinuousMove", &body).map(drop)
    }

    pub fn stop(&self, ptz: &str, profile: &str) -> Result<(), Error> {
        let body = format!(
            "<tptz:Stop><tptz:ProfileToken>{}</tptz:ProfileToken><tptz:PanTilt>true</tptz:PanTilt>\
             <tptz:Zoom>true</tptz:Zoom></tptz:Stop>",
            esc(profile)
        );
        self.call(ptz, "Stop", &body).map(drop)
    }

    pub fn goto_preset(&self, ptz: &str, profile: &str, preset: &str) -> Result<(), Error> {
        let body = format!(
            "<tptz:GotoPreset><tptz:ProfileToken>{}</tptz:ProfileToken><tptz:PresetToken>{}</tptz:PresetToken>\
             </tptz:GotoPreset>",
            esc(profile),
            esc(preset)
        );
        self.call(ptz, "GotoPreset", &body).map(drop)
    }

    /// Saves the current position as a new preset named `name`; returns its token.
    pub fn set_preset(&self, ptz: &str, profile: &str, name: &str) -> Result<String, Error> {
        let op = "SetPreset";
        let body = format!(
            "<tptz:SetPreset><tptz:ProfileToken>{}</tptz:ProfileToken><tptz:PresetName>{}</tptz:PresetName>\
             </tptz:SetPreset>",
            esc(profile),
            esc(name)
        );
        let xml = self.call(ptz, op, &body)?;
        let doc = parse(&xml, op)?;
        let token = find(doc.root(), "PresetToken").and_then(|t| t.text()).map(str::trim);
        Ok(required(token, op, "PresetToken")?.to_string())
    }

    pub fn presets(&self, ptz: &str, profile: &str) -> Result<Vec<Preset>, Error> {
        let op = "GetPresets";
        let body =
            format!("<tptz:GetPresets><tptz:ProfileToken>{}</tptz:ProfileToken></tptz:GetPresets>", esc(profile));
        let xml = self.call(ptz, op, &body)?;
        let doc = parse(&xml, op)?;
        let r = required(find(doc.root(), "GetPresetsResponse"), op, "GetPresetsResponse")?;
        let presets = r.children().filter(|c| c.is_element() && c.tag_name().name() == "Preset");
        Ok(presets
            .map(|p| Preset {
                token: p.attribute("token").unwrap_or_default().to_string(),
                name: child_text(p, "Name").unwrap_or_default().to_string(),
            })
            .collect())
    }
}

/// The answer parsers of this module over one document (the fuzz target).
#[doc(hidden)]
pub fn parse_all(xml: &str) {
    let Ok(doc) = roxmltree::Document::parse(xml) else { return };
    let root = doc.root();
    if let Some(r) = find(root, "GetProfilesResponse") {
        let _: Vec<Profile> = r.children().filter(|c| c.is_element()).map(profile_of).collect();
    }
    let _ = find(root, "MediaUri").and_then(|m| child_text(m, "Uri"));
    let _ = find(root, "Capabilities").and_then(|c| child(c, "PTZ")).and_then(|p| child_text(p, "XAddr"));
    let _ = path(root, &["Envelope", "Body", "GetDeviceInformationResponse", "Model"]);
}

/// `<Time><Hour/><Minute/><Second/></Time><Date><Year/><Month/><Day/></Date>` as epoch ms.
fn utc_ms(utc: roxmltree::Node<'_, '_>) -> Option<i64> {
    let num = |part: &str, name: &str| {
        child(utc, part).and_then(|p| child_text(p, name)).and_then(|t| t.trim().parse::<u8>().ok())
    };
    let year = child(utc, "Date").and_then(|d| child_text(d, "Year")).and_then(|t| t.trim().parse::<i32>().ok())?;
    let month = time::Month::try_from(num("Date", "Month")?).ok()?;
    let date = time::Date::from_calendar_date(year, month, num("Date", "Day")?).ok()?;
    let t = time::Time::from_hms(num("Time", "Hour")?, num("Time", "Minute")?, num("Time", "Second")?).ok()?;
    Some((time::PrimitiveDateTime::new(date, t).assume_utc().unix_timestamp_nanos() / 1_000_000) as i64)
}

fn parse<'a>(xml: &'a str, op: &str) -> Result<roxmltree::Document<'a>, Error> {
    roxmltree::Document::parse(xml).map_err(|e| Error::upstream(format!("ONVIF {op}: the answer is not XML: {e}")))
}

fn required<T>(v: Option<T>, op: &str, what: &str) -> Result<T, Error> {
    v.ok_or_else(|| Error::upstream(format!("ONVIF {op}: the answer has no {what}")))
}

fn profile_of(p: roxmltree::Node<'_, '_>) -> Profile {
    let enc = child(p, "VideoEncoderConfiguration");
    let res = enc.and_then(|e| child(e, "Resolution"));
    let num = |name: &str| res.and_then(|r| child_text(r, name)).and_then(|t| t.parse().ok());
    Profile {
        token: p.attribute("token").unwrap_or_default().to_string(),
        name: child_text(p, "Name").unwrap_or_default().to_string(),
        encoding: enc.and_then(|e| child_text(e, "Encoding")).map(str::to_string),
        width: num("Width"),
        height: num("Height"),
        ptz: path(p, &["PTZConfiguration"]).is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cameras_utc_time_is_read_and_a_bad_one_refused() {
        let answer = |date: &str| {
            format!(
                r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:tt="http://www.onvif.org/ver10/schema">
                <s:Body><GetSystemDateAndTimeResponse><SystemDateAndTime><tt:DateTimeType>Manual</tt:DateTimeType>
                <tt:UTCDateTime><tt:Time><tt:Hour>16</tt:Hour><tt:Minute>0</tt:Minute><tt:Second>5</tt:Second></tt:Time>
                {date}</tt:UTCDateTime></SystemDateAndTime></GetSystemDateAndTimeResponse></s:Body></s:Envelope>"#
            )
        };
        let read = |xml: &str| {
            let doc = roxmltree::Document::parse(xml).expect("xml");
            find(doc.root(), "UTCDateTime").and_then(utc_ms)
        };
        let good = answer("<tt:Date><tt:Year>2025</tt:Year><tt:Month>11</tt:Month><tt:Day>24</tt:Day></tt:Date>");
        assert_eq!(read(&good), Some(1_764_000_005_000), "2025-11-24T16:00:05Z");
        let bad = answer("<tt:Date><tt:Year>2025</tt:Year><tt:Month>13</tt:Month><tt:Day>24</tt:Day></tt:Date>");
        assert_eq!(read(&bad), None, "month 13");
        assert_eq!(read(&answer("")), None, "no date");
    }

    #[test]
    fn profiles_are_read_by_local_name() {
        // The shape of a common camera's answer (prefixes differ between vendors).
        let xml = r#"<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://www.w3.org/2003/05/soap-envelope"
            xmlns:trt="http://www.onvif.org/ver10/media/wsdl" xmlns:tt="http://www.onvif.org/ver10/schema">
            <SOAP-ENV:Body><trt:GetProfilesResponse>
            <trt:Profiles fixed="true" token="Profile_1"><tt:Name>mainStream</tt:Name>
              <tt:VideoEncoderConfiguration token="VE1"><tt:Name>VE1</tt:Name><tt:Encoding>H264</tt:Encoding>
              <tt:Resolution><tt:Width>1920</tt:Width><tt:Height>1080</tt:Height></tt:Resolution>
              </tt:VideoEncoderConfiguration><tt:PTZConfiguration token="PTZ1"/></trt:Profiles>
            <trt:Profiles token="Profile_2"><tt:Name>subStream</tt:Name></trt:Profiles>
            </trt:GetProfilesResponse></SOAP-ENV:Body></SOAP-ENV:Envelope>"#;
        let doc = roxmltree::Document::parse(xml).expect("xml");
        let r = find(doc.root(), "GetProfilesResponse").expect("response");
        let ps: Vec<Profile> = r.children().filter(|c| c.tag_name().name() == "Profiles").map(profile_of).collect();
        assert_eq!(ps.len(), 2);
        assert_eq!((ps[0].token.as_str(), ps[0].name.as_str()), ("Profile_1", "mainStream"));
        assert_eq!((ps[0].width, ps[0].height, ps[0].ptz), (Some(1920), Some(1080), true));
        assert_eq!(ps[0].encoding.as_deref(), Some("H264"));
        assert_eq!((ps[1].width, ps[1].ptz), (None, false));
    }
}
