//! Ingest: one retina RTSP session per stream, all on one smol `LocalExecutor`
//! (the `executor` thread). retina needs a tokio reactor; `async_compat::Compat`
//! provides it (one extra `async-compat/tokio-1` thread for all streams).
//!
//! Invariants:
//! - Ingest never waits on disk, HTTP or readers: frames go straight into the
//!   stream's ring, which overwrites its oldest records.
//! - Each run in the ring starts with a `RunStart` followed by a video keyframe.
//!   A codec parameter change or a timestamp jump starts a new run (and so a new
//!   segment) instead of ending the recording.
//! - Reconnects back off exponentially from 1 s to 30 s; a session that ran for
//!   a minute resets the backoff.
//! - Streams are brought up one at a time (in the order started, which is
//!   priority order): the next connects when the previous produced its first
//!   keyframe or after `BRING_UP_TIMEOUT`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_compat::Compat;
use futures_util::StreamExt;
use retina::client::{Credentials, PlayOptions, SessionOptions, SetupOptions, Transport};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use smol::lock::Semaphore;
use smol::{LocalExecutor, Timer};

use crate::clock::Clock;
use crate::media::{AudioParams, Frame, RunStart, Track, VideoParams};
use crate::nvr::{StreamRuntime, StreamState};

/// A session that delivers nothing for this long is dropped and reconnected.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a session checks for a stall.
const STALL_CHECK: Duration = Duration::from_secs(2);
/// How long the next stream waits for the previous one's first keyframe.
const BRING_UP_TIMEOUT: Duration = Duration::from_secs(10);
/// Video time and wall time may disagree by this much before a new run starts.
const MAX_DRIFT_MS: i64 = 10_000;
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A session that lasted this long resets the backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(60);

/// Commands to the executor thread.
pub enum Command {
    Start(Arc<StreamRuntime>),
    Stop(String),
    Shutdown,
}

/// Capped exponential backoff.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        d
    }
    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// Starts the executor thread. Streams are added and removed with `Command`s.
pub fn spawn_executor(
    clock: Arc<dyn Clock>,
) -> std::io::Result<(smol::channel::Sender<Command>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = smol::channel::unbounded::<Command>();
    let handle = std::thread::Builder::new().name("executor".into()).spawn(move || {
        crate::memory::set_subsystem(crate::memory::Subsystem::Ingest);
        let ex = LocalExecutor::new();
        let gate = Arc::new(Semaphore::new(1));
        smol::block_on(ex.run(async {
            let mut tasks: HashMap<String, smol::Task<()>> = HashMap::new();
            while let Ok(cmd) = rx.recv().await {
                match cmd {
                    Command::Start(rt) => {
                        let name = rt.name().to_string();
                        let task = ex.spawn(Compat::new(run_stream(rt, clock.clone(), gate.clone())));
                        tasks.insert(name, task);
                    }
                    Command::Stop(name) => {
                        if let Some(t) = tasks.remove(&name) {
                            t.cancel().await;
                        }
                    }
                    Command::Shutdown => break,
                }
            }
            for (_, t) in tasks.drain() {
                t.cancel().await;
            }
        }));
    })?;
    Ok((tx, handle))
}

/// One stream, forever: connect, record into the ring, back off, reconnect.
async fn run_stream(rt: Arc<StreamRuntime>, clock: Arc<dyn Clock>, gate: Arc<Semaphore>) {
    let mut backoff = Backoff::default();
    loop {
        rt.set_state(StreamState::Queued);
        let permit = gate.acquire_arc().await;
        rt.set_state(StreamState::Connecting);
        rt.with_status(|s| s.connects += 1);
        let began = Instant::now();
        let mut session = Session { rt: &rt, clock: &*clock, permit: Some(permit), began, run: None };
        let why = match session.run().await {
            Ok(()) => "the camera ended the stream".to_string(),
            Err(e) => e,
        };
        drop(session);
        rt.set_error(why, clock.now_ms());
        if began.elapsed() >= HEALTHY_SESSION {
            backoff.reset();
        }
        rt.set_state(StreamState::Backoff);
        Timer::after(backoff.next_delay()).await;
    }
}

/// State of one connected RTSP session.
struct Session<'a> {
    rt: &'a StreamRuntime,
    clock: &'a dyn Clock,
    /// Bring-up permit, released at the first keyframe or after a timeout.
    permit: Option<smol::lock::SemaphoreGuardArc>,
    began: Instant,
    run: Option<RunStart>,
}

impl Session<'_> {
    async fn run(&mut self) -> Result<(), String> {
        let (url, creds) = split_credentials(&self.rt.row.spec.url)?;
        let opts = SessionOptions::default().creds(creds).user_agent(format!("OxiNVR/{}", env!("CARGO_PKG_VERSION")));
        let mut session =
            retina::client::Session::describe(url, opts).await.map_err(|e| format!("DESCRIBE failed: {e}"))?;
        let streams = session.streams();
        let video_i = streams
            .iter()
            .position(|s| s.media() == "video" && matches!(s.encoding_name(), "h264" | "h265"))
            .ok_or_else(|| "the camera offers no H.264 or H.265 video".to_string())?;
        let is_h265 = streams[video_i].encoding_name() == "h265";
        let audio_i = streams.iter().position(|s| s.media() == "audio" && s.encoding_name() == "mpeg4-generic");
        let setup =
            || SetupOptions::default().transport(Transport::Tcp(Default::default())).frame_format(FrameFormat::MP4);
        session.setup(video_i, setup()).await.map_err(|e| format!("SETUP video failed: {e}"))?;
        if let Some(a) = audio_i {
            session.setup(a, setup()).await.map_err(|e| format!("SETUP audio failed: {e}"))?;
        }
        let playing = session.play(PlayOptions::default()).await.map_err(|e| format!("PLAY failed: {e}"))?;
        let mut demuxed = playing.demuxed().map_err(|e| format!("cannot demux: {e}"))?;
        self.rt.set_state(StreamState::Streaming);
        let mut audio: Option<AudioParams> = None;
        let mut need_run = true;
        // One long-lived timer checks for a stall: a fresh timer per frame cost
        // more reactor work than the frames themselves (see bench/results).
        let mut watchdog = Timer::interval(STALL_CHECK);
        let mut last_item = Instant::now();
        loop {
            let next = smol::future::or(async { Some(demuxed.next().await) }, async {
                watchdog.next().await;
                None
            })
            .await;
            if self.permit.is_some() && self.began.elapsed() > BRING_UP_TIMEOUT {
                self.permit = None;
            }
            let item = match next {
                None if last_item.elapsed() >= STALL_TIMEOUT => {
                    return Err(format!("no data for {} s", STALL_TIMEOUT.as_secs()))
                }
                None => continue,
                Some(None) => return Ok(()),
                Some(Some(Err(e))) => return Err(format!("RTSP error: {e}")),
                Some(Some(Ok(item))) => {
                    last_item = Instant::now();
                    item
                }
            };
            match item {
                CodecItem::VideoFrame(f) => {
                    if f.has_new_parameters() || self.run.is_none() {
                        need_run = true;
                        if audio.is_none() {
                            audio = audio_i.and_then(|a| audio_params(demuxed.streams()[a].parameters()));
                        }
                    }
                    let pts = f.timestamp().elapsed();
                    let now = self.clock.now_ms();
                    if let Some(run) = &self.run {
                        let drift = now - run.wall_ms(pts);
                        if drift.abs() > MAX_DRIFT_MS && !need_run {
                            log::warn!(
                                "stream {}: video time is {drift} ms off wall time; starting a new run",
                                self.rt.name()
                            );
                            need_run = true;
                        }
                    }
                    let data = f.data();
                    // retina flags only IDR pictures; an H.265 CRA (what x265 and
                    // some cameras send every GOP) is a random access point too.
                    let key = f.is_random_access_point() || (is_h265 && h265_irap(data));
                    if need_run {
                        if !key {
                            continue; // a run starts on a keyframe
                        }
                        let video = video_params(demuxed.streams()[video_i].parameters())
                            .ok_or_else(|| "the camera sent video without codec parameters".to_string())?;
                        self.start_run(video, audio.clone(), pts, now)?;
                        need_run = false;
                    }
                    if key {
                        self.permit = None;
                    }
                    if let Err(e) = self.rt.ring.push_frame(&Frame { track: Track::Video, key, pts, data }) {
                        self.rt.set_error(format!("frame not kept: {e}"), now);
                    }
                    self.rt.with_status(|s| s.count_video_frame(data.len(), now));
                }
                CodecItem::AudioFrame(f) => {
                    if self.run.as_ref().is_some_and(|r| r.audio.is_some()) {
                        let frame =
                            Frame { track: Track::Audio, key: true, pts: f.timestamp().elapsed(), data: f.data() };
                        // An audio frame that does not fit is dropped; video goes on.
                        let _ = self.rt.ring.push_frame(&frame);
                    }
                }
                _ => {}
            }
        }
    }

    fn start_run(&mut self, video: VideoParams, audio: Option<AudioParams>, pts: i64, now: i64) -> Result<(), String> {
        let run = RunStart { video, audio, anchor_pts: pts, anchor_wall_ms: now };
        log::info!(
            "stream {}: new run {} {}x{}{}",
            self.rt.name(),
            run.video.codec,
            run.video.width,
            run.video.height,
            run.audio.as_ref().map(|a| format!(" + {}", a.codec)).unwrap_or_default()
        );
        self.rt.ring.push_run(&run).map_err(|e| format!("cannot start a run: {e}"))?;
        self.rt.with_status(|s| {
            s.codec = Some(run.video.codec.clone());
            s.width = Some(run.video.width);
            s.height = Some(run.video.height);
            s.audio = run.audio.as_ref().map(|a| a.codec.clone());
        });
        self.run = Some(run);
        Ok(())
    }
}

/// Video parameters of a retina stream, if known (also used by `POST /api/probe`).
pub fn video_params(p: Option<ParametersRef<'_>>) -> Option<VideoParams> {
    let Some(ParametersRef::Video(v)) = p else { return None };
    let (width, height) = v.pixel_dimensions();
    let sample_entry = v.mp4_sample_entry().build().ok()?;
    Some(VideoParams { codec: v.rfc6381_codec().to_string(), width, height, timescale: 90_000, sample_entry })
}

/// AAC parameters of a retina stream, if known (also used by `POST /api/probe`).
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
    let decode = |s: &str| url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
    let creds = Credentials {
        username: decode(&username).unwrap_or(username),
        password: url.password().and_then(decode).unwrap_or_default(),
    };
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok((url, Some(creds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::default();
        let seq: Vec<u64> = (0..7).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(seq, vec![1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.next_delay().as_secs(), 1);
    }

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
        let (_, none) = split_credentials("rtsp://10.0.0.2/s").expect("ok");
        assert!(none.is_none());
        assert!(split_credentials("not a url").is_err());
    }
}
