//! The one way OxiNVR opens an RTSP camera (retina), used by ingest (recording)
//! and by `POST /api/probe` (the connection test), and the `Source`/`Opener`
//! traits that let ingest's logic run against scripted cameras in tests.
//!
//! Invariants:
//! - Every network step (TCP connect + DESCRIBE, each SETUP, PLAY) ends within
//!   its deadline with an `OpenError` naming the step; nothing here waits for
//!   ever on a camera. Waiting for frames is the caller's (ingest's stall and
//!   first-frame deadlines, the probe's overall timeout).
//! - An RTP packet that cannot be depacketized (garbage from the camera or the
//!   network) skips video to the next keyframe, which starts a new run; the
//!   session ends only after `MAX_BAD_PACKETS` in a row.
//! - Credentials never travel in the URL retina sees; they are sent only when
//!   the camera asks.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use retina::client::{Credentials, Demuxed, PlayOptions, SessionOptions, SetupOptions, Transport};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};

use crate::recording::media::{AudioParams, Track, VideoParams};

/// Why a camera could not be opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// The camera's address refused the TCP connection (nothing listens there, e.g.
    /// while it reboots): cheap to retry soon. Other connect failures (no route, DNS)
    /// are `Failed` and back off.
    Unreachable(String),
    /// A step got no answer within its deadline.
    Timeout { step: &'static str, after: Duration },
    /// The camera answered a step with an RTSP error status.
    Status { step: &'static str, code: u16, message: String },
    /// The camera offers nothing we record, or parameters we cannot use.
    Unsupported(String),
    /// Anything else a step failed with (bad URL, protocol error).
    Failed { step: &'static str, message: String },
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Unreachable(m) => write!(f, "{m}"),
            OpenError::Timeout { step, after } => {
                write!(f, "timeout: {step} got no answer in {} ms", after.as_millis())
            }
            OpenError::Status { code: 401, .. } => write!(f, "401 unauthorized"),
            OpenError::Status { step, code: 404, .. } => {
                write!(f, "404 not found: the camera has no stream at this path ({step})")
            }
            OpenError::Status { step, code, message } => write!(f, "{step} answered {code}: {message}"),
            OpenError::Unsupported(m) => write!(f, "{m}"),
            OpenError::Failed { step, message } => write!(f, "{step} failed: {message}"),
        }
    }
}

impl OpenError {
    fn of(step: &'static str, e: &retina::Error) -> OpenError {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or("").trim().to_string();
        match e.status_code() {
            Some(code) => OpenError::Status { step, code, message: first },
            None if first.contains("Connection refused") => OpenError::Unreachable("connection refused".into()),
            None if first.contains("Unable to connect") => OpenError::Failed { step: "connect", message: first },
            None => OpenError::Failed { step, message: first },
        }
    }
}

/// `fut`, or `OpenError::Timeout` naming `step` once `limit` has passed.
async fn step<T>(
    step: &'static str,
    limit: Duration,
    fut: impl Future<Output = Result<T, retina::Error>>,
) -> Result<T, OpenError> {
    let timed_out = async {
        smol::Timer::after(limit).await;
        Err(OpenError::Timeout { step, after: limit })
    };
    smol::future::or(async { fut.await.map_err(|e| OpenError::of(step, &e)) }, timed_out).await
}

/// One media frame from a camera. Video data is length-prefixed (AVCC/HVCC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaFrame {
    pub track: Track,
    /// A random access point (IDR, or H.265 IRAP) for video; true for audio.
    pub key: bool,
    /// Ticks of the track's timescale since the session started.
    pub pts: i64,
    pub data: Vec<u8>,
    /// The video parameters changed with this frame (or it is the first).
    pub new_params: bool,
}

/// A playing camera session: frames and the codec parameters in effect.
#[allow(async_fn_in_trait)] // used with concrete types on one executor; no Send bound wanted
pub trait Source {
    fn video_params(&self) -> Option<VideoParams>;
    fn audio_params(&self) -> Option<AudioParams>;
    /// The next frame; `None` when the camera ended the session.
    async fn next(&mut self) -> Option<Result<MediaFrame, String>>;
}

/// Opens `Source`s: the real cameras (`RetinaOpener`) or scripted ones in tests.
#[allow(async_fn_in_trait)]
pub trait Opener {
    type Source: Source;
    /// Connects and starts playing; every step within its deadline.
    async fn open(&self, url: &str) -> Result<Self::Source, OpenError>;
    /// Returns once the camera's address accepts a TCP connection (the
    /// connection is closed again). Ingest asks this before a stream takes a
    /// bring-up turn, so an address that never answers (SYNs dropped) holds no
    /// turn; the caller bounds the wait.
    async fn reachable(&self, _url: &str) -> Result<(), OpenError> {
        Ok(())
    }
}

/// Opens cameras with retina over RTSP/TCP.
#[derive(Clone, Copy, Debug)]
pub struct RetinaOpener {
    /// Deadline of each network step.
    pub step: Duration,
}

impl Opener for RetinaOpener {
    type Source = RetinaSource;
    async fn open(&self, url: &str) -> Result<RetinaSource, OpenError> {
        let mut d = Described::describe(url, self.step).await?;
        d.setup(true, self.step).await?;
        d.play(self.step).await
    }

    async fn reachable(&self, url: &str) -> Result<(), OpenError> {
        let (url, _) = split_credentials(url).map_err(|message| OpenError::Failed { step: "connect", message })?;
        let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
        let port = url.port().unwrap_or(554);
        let connect = smol::net::TcpStream::connect((host.as_str(), port));
        let timed_out = async {
            smol::Timer::after(self.step).await;
            Err(OpenError::Timeout { step: "TCP connect", after: self.step })
        };
        smol::future::or(async { connect.await.map(drop).map_err(|e| connect_error(&e)) }, timed_out).await
    }
}

/// A TCP connect failure: refused is `Unreachable` (retried soon), anything else backs off.
fn connect_error(e: &std::io::Error) -> OpenError {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => OpenError::Unreachable("connection refused".into()),
        _ => OpenError::Failed { step: "connect", message: e.to_string() },
    }
}

/// A camera after DESCRIBE: which tracks we take.
pub struct Described {
    session: retina::client::Session<retina::client::Described>,
    video_i: usize,
    audio_i: Option<usize>,
    is_h265: bool,
    audio_set_up: bool,
}

impl Described {
    /// TCP connect and DESCRIBE within `limit`; picks the H.264/H.265 track and an AAC one.
    pub async fn describe(raw_url: &str, limit: Duration) -> Result<Described, OpenError> {
        let (url, creds) =
            split_credentials(raw_url).map_err(|message| OpenError::Failed { step: "DESCRIBE", message })?;
        let opts = SessionOptions::default().creds(creds).user_agent(format!("OxiNVR/{}", env!("CARGO_PKG_VERSION")));
        let session = step("DESCRIBE", limit, retina::client::Session::describe(url, opts)).await?;
        let streams = session.streams();
        let video_i = streams
            .iter()
            .position(|s| s.media() == "video" && matches!(s.encoding_name(), "h264" | "h265"))
            .ok_or_else(|| OpenError::Unsupported(no_video(streams)))?;
        let is_h265 = streams[video_i].encoding_name() == "h265";
        let audio_i = streams.iter().position(|s| s.media() == "audio" && s.encoding_name() == "mpeg4-generic");
        Ok(Described { session, video_i, audio_i, is_h265, audio_set_up: false })
    }

    /// SETUP of the video track (and the audio one, if `audio`) over TCP.
    pub async fn setup(&mut self, audio: bool, limit: Duration) -> Result<(), OpenError> {
        let opts =
            || SetupOptions::default().transport(Transport::Tcp(Default::default())).frame_format(FrameFormat::MP4);
        step("SETUP video", limit, self.session.setup(self.video_i, opts())).await?;
        if let (true, Some(a)) = (audio, self.audio_i) {
            step("SETUP audio", limit, self.session.setup(a, opts())).await?;
            self.audio_set_up = true;
        }
        Ok(())
    }

    pub fn video_params(&self) -> Option<VideoParams> {
        video_params(self.session.streams()[self.video_i].parameters())
    }

    pub fn audio_params(&self) -> Option<AudioParams> {
        self.audio_i.and_then(|a| audio_params(self.session.streams()[a].parameters()))
    }

    /// PLAY within `limit`.
    pub async fn play(self, limit: Duration) -> Result<RetinaSource, OpenError> {
        let playing = step("PLAY", limit, self.session.play(PlayOptions::default())).await?;
        let demuxed = playing.demuxed().map_err(|e| OpenError::Failed { step: "PLAY", message: e.to_string() })?;
        let audio_i = self.audio_i.filter(|_| self.audio_set_up);
        Ok(RetinaSource { demuxed, video_i: self.video_i, audio_i, is_h265: self.is_h265, bad_packets: None })
    }
}

/// Most RTP packets in a row that may fail to depacketize before the session
/// ends (a camera sending only garbage also ends at ingest's stall deadline).
const MAX_BAD_PACKETS: u32 = 1000;

/// True if retina's error is one RTP packet that could not be depacketized (the
/// interleaved framing, and so the connection, is intact). retina has no kind
/// accessor; its packet errors alone name the packet's SSRC and sequence.
fn is_packet_error(e: &retina::Error) -> bool {
    let text = e.to_string();
    text.contains("\nssrc: ") && text.contains("\nseq: ")
}

/// A playing retina session.
pub struct RetinaSource {
    demuxed: Demuxed,
    video_i: usize,
    audio_i: Option<usize>,
    is_h265: bool,
    /// Packets that failed since the last good video keyframe, if any did: video
    /// is skipped until the next keyframe, which then starts a new run.
    bad_packets: Option<u32>,
}

impl Source for RetinaSource {
    fn video_params(&self) -> Option<VideoParams> {
        video_params(self.demuxed.streams()[self.video_i].parameters())
    }

    fn audio_params(&self) -> Option<AudioParams> {
        self.audio_i.and_then(|a| audio_params(self.demuxed.streams()[a].parameters()))
    }

    async fn next(&mut self) -> Option<Result<MediaFrame, String>> {
        loop {
            let item = match self.demuxed.next().await? {
                Ok(item) => item,
                Err(e) if is_packet_error(&e) && self.bad_packets.unwrap_or(0) < MAX_BAD_PACKETS => {
                    // A corrupt packet costs its GOP, not the session: one that is
                    // redialled backs off, and the camera is back seconds late.
                    if self.bad_packets.is_none() {
                        log::warn!(
                            "{}; video skipped until the next keyframe",
                            e.to_string().lines().next().unwrap_or("")
                        );
                    }
                    *self.bad_packets.get_or_insert(0) += 1;
                    continue;
                }
                Err(e) => return Some(Err(format!("RTSP error: {e}"))),
            };
            match item {
                CodecItem::VideoFrame(f) => {
                    let mut new_params = f.has_new_parameters();
                    let pts = f.timestamp().elapsed();
                    let rap = f.is_random_access_point();
                    let data = f.into_data();
                    // retina flags only IDR pictures; an H.265 CRA (what x265 and
                    // some cameras send every GOP) is a random access point too.
                    let key = rap || (self.is_h265 && h265_irap(&data));
                    if self.bad_packets.is_some() {
                        if !key {
                            continue;
                        }
                        self.bad_packets = None;
                        new_params = true; // a new run (and file) from this keyframe
                    }
                    return Some(Ok(MediaFrame { track: Track::Video, key, pts, data, new_params }));
                }
                CodecItem::AudioFrame(f) if self.audio_i.is_some() => {
                    let pts = f.timestamp().elapsed();
                    let data = f.data().to_vec();
                    return Some(Ok(MediaFrame { track: Track::Audio, key: true, pts, data, new_params: false }));
                }
                _ => {}
            }
        }
    }
}

fn no_video(streams: &[retina::client::Stream]) -> String {
    let offered: Vec<String> = streams.iter().map(|s| format!("{}/{}", s.media(), s.encoding_name())).collect();
    let offered = if offered.is_empty() { "nothing".to_string() } else { offered.join(", ") };
    format!("no video track in H.264 or H.265 (the camera offers {offered})")
}

/// Video parameters of a retina stream, if known.
pub fn video_params(p: Option<ParametersRef<'_>>) -> Option<VideoParams> {
    let Some(ParametersRef::Video(v)) = p else { return None };
    let (width, height) = v.pixel_dimensions();
    let sample_entry = v.mp4_sample_entry().build().ok()?;
    Some(VideoParams { codec: v.rfc6381_codec().to_string(), width, height, timescale: 90_000, sample_entry })
}

/// AAC parameters of a retina stream, if known.
pub fn audio_params(p: Option<ParametersRef<'_>>) -> Option<AudioParams> {
    let Some(ParametersRef::Audio(a)) = p else { return None };
    Some(AudioParams {
        codec: a.rfc6381_codec()?.to_string(),
        timescale: a.clock_rate(),
        channels: a.channels().get(),
        frame_ticks: a.frame_length()?.get(),
        sample_entry: a.mp4_sample_entry().build().ok()?,
    })
}

/// True if a length-prefixed H.265 access unit is an IRAP picture (BLA, IDR
/// or CRA: NAL types 16..=23).
pub fn h265_irap(mut au: &[u8]) -> bool {
    while au.len() > 5 {
        let len = u32::from_be_bytes([au[0], au[1], au[2], au[3]]) as usize;
        let nal_type = (au[4] >> 1) & 0x3f;
        match nal_type {
            16..=23 => return true,
            0..=31 => return false,
            _ => {}
        }
        au = au.get(4 + len..).unwrap_or(&[]);
    }
    false
}

/// Splits `rtsp://user:pass@host/...` into the URL without credentials and the
/// credentials (percent-decoded), so they are sent only when the camera asks.
pub fn split_credentials(raw: &str) -> Result<(url::Url, Option<Credentials>), String> {
    let mut url = url::Url::parse(raw).map_err(|e| format!("bad URL: {e}"))?;
    let username = url.username().to_string();
    if username.is_empty() {
        return Ok((url, None));
    }
    // Percent-decoding only: userinfo is not a form, a `+` is a plus.
    let decode = |s: &str| percent_decode(s);
    let creds = Credentials {
        username: decode(&username).unwrap_or(username),
        password: url.password().and_then(decode).unwrap_or_default(),
    };
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok((url, Some(creds)))
}

/// `%XX` sequences decoded as UTF-8 (lossy); anything else kept as it is.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%').then(|| b.get(i + 1..i + 3)).flatten();
        match hex.and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h265_cra_and_idr_are_random_access_points() {
        let au = |types: &[u8]| -> Vec<u8> { types.iter().flat_map(|t| [0, 0, 0, 3, t << 1, 1, 0xaa]).collect() };
        assert!(h265_irap(&au(&[32, 33, 34, 39, 21]))); // VPS SPS PPS SEI CRA
        assert!(h265_irap(&au(&[20]))); // IDR_N_LP
        assert!(!h265_irap(&au(&[39, 1]))); // SEI TRAIL_R
        assert!(!h265_irap(&[0, 0, 0, 200, 42])); // truncated: no panic
        assert!(!h265_irap(&[]));
    }

    #[test]
    fn credentials_are_split_from_the_url() {
        let (u, c) = split_credentials("rtsp://ad%40min:p%3Ass@10.0.0.2:554/s?x=1").expect("ok");
        assert_eq!(u.as_str(), "rtsp://10.0.0.2:554/s?x=1");
        let c = c.expect("creds");
        assert_eq!(c.username, "ad@min");
        assert_eq!(c.password, "p:ss");
        let (_, c) = split_credentials("rtsp://admin:pa+ss%2Bw@cam/s").expect("ok");
        assert_eq!(c.expect("creds").password, "pa+ss+w", "a + in a password stays a +");
        let (_, none) = split_credentials("rtsp://10.0.0.2/s").expect("ok");
        assert!(none.is_none());
        assert!(split_credentials("not a url").is_err());
    }

    fn open(url: &str, limit: Duration) -> Result<RetinaSource, OpenError> {
        smol::block_on(async_compat::Compat::new(RetinaOpener { step: limit }.open(url)))
    }

    #[test]
    fn a_closed_port_is_unreachable_at_once() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        match open(&format!("rtsp://127.0.0.1:{port}/x"), Duration::from_secs(5)) {
            Err(OpenError::Unreachable(m)) => assert_eq!(m, "connection refused"),
            other => panic!("expected unreachable, got {:?}", other.err()),
        }
    }

    /// A camera that accepts TCP and never answers: DESCRIBE ends at its deadline.
    #[test]
    fn a_silent_camera_times_out_in_describe() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let port = listener.local_addr().expect("addr").port();
        let limit = Duration::from_millis(300);
        match open(&format!("rtsp://127.0.0.1:{port}/x"), limit) {
            Err(e @ OpenError::Timeout { step: "DESCRIBE", .. }) => {
                assert_eq!(e.to_string(), "timeout: DESCRIBE got no answer in 300 ms")
            }
            other => panic!("expected a DESCRIBE timeout, got {:?}", other.err()),
        }
        drop(listener);
    }
}
