//! Live-view messages from ring records (no I/O): the init pair at each new
//! run, the jump notice, and one binary message per video frame holding the
//! `moof+mdat` that `recording::fragmenter` builds ([`Cut::PerFrame`]).
//!
//! Invariants:
//! - The newest video frame is held in the fragmenter until the next one is
//!   read, so its duration is the exact pts delta; a held frame that has no
//!   successor (jump, new run) gets the previous frame's duration.
//! - After each init the timeline starts again at 0 with sequence 1; it runs on
//!   without holes across jumps (the fragmenter's video tfdts are contiguous).
//! - No frame is taken until a keyframe after an init or a jump; audio waits
//!   for a held video frame, at most [`MAX_PENDING_AUDIO`] frames of it.

use serde_json::json;

use crate::recording::fragmenter::{Cut, Fragment, Fragmenter};
use crate::recording::media::RunStart;
use crate::recording::mp4;
use crate::web::websocket::{self, Opcode};

/// Audio frames kept while waiting for the next video frame (~2 s of AAC at 48 kHz).
const MAX_PENDING_AUDIO: usize = 96;

/// Counters of one client.
#[derive(Default, Debug)]
pub(super) struct FeedStats {
    pub fragments: u64,
    /// Bytes of fragment messages.
    pub bytes: u64,
    /// Seconds of video in them.
    pub media_secs: f64,
    pub jumps: u64,
}

impl FeedStats {
    /// Bytes per second of media, once half a second was sent.
    pub fn byte_rate(&self) -> Option<f64> {
        (self.media_secs >= 0.5).then(|| self.bytes as f64 / self.media_secs)
    }
}

/// The run being sent and its timeline.
struct Sending {
    run: RunStart,
    seq: u64,
    frag: Fragmenter,
}

/// Turns ring records into WebSocket messages appended to an output buffer.
#[derive(Default)]
pub(super) struct Feed {
    sending: Option<Sending>,
    /// No frame is taken until a keyframe (after an init or a jump).
    need_key: bool,
    /// The reason of a jump whose message goes out before the next fragment.
    jump: Option<String>,
    /// Wall-clock ms of the last video frame sent.
    last_sent_ms: Option<i64>,
    pub stats: FeedStats,
}

impl Feed {
    /// The run's seq and video timescale, once a run started.
    pub fn run_clock(&self) -> Option<(u64, u32)> {
        self.sending.as_ref().map(|s| (s.seq, s.run.video.timescale))
    }

    /// The newest video frame read (the held one) and its run.
    pub fn newest_video(&self) -> Option<(i64, u64)> {
        let s = self.sending.as_ref()?;
        Some((s.frag.last_pts()?, s.seq))
    }

    /// A run start: the init pair, unless it is the run already being sent
    /// (a cursor moved to a keyframe replays the run in effect there).
    pub fn on_run(&mut self, seq: u64, run: RunStart, out: &mut Vec<u8>) {
        if self.sending.as_ref().is_some_and(|s| s.seq == seq) {
            return;
        }
        self.flush_held(out);
        websocket::put_frame(out, Opcode::Text, init_message(&run).as_bytes());
        websocket::put_frame(out, Opcode::Binary, &mp4::init_segment(&run));
        let frag = Fragmenter::new(&run, Cut::PerFrame);
        self.sending = Some(Sending { run, seq, frag });
        self.need_key = true;
    }

    /// A video frame: sends the held one (its duration now known) and holds this one.
    pub fn on_video(&mut self, key: bool, pts: i64, data: &[u8], out: &mut Vec<u8>) {
        if self.sending.is_none() || (self.need_key && !key) {
            return;
        }
        self.need_key = false;
        self.emit(Some(pts), out);
        if let Some(s) = &mut self.sending {
            s.frag.push_video(key, pts, data);
        }
    }

    pub fn on_audio(&mut self, pts: i64, data: &[u8]) {
        if let Some(s) = self.sending.as_mut().filter(|s| s.frag.pending_audio() < MAX_PENDING_AUDIO) {
            s.frag.push_audio(pts, data);
        }
    }

    /// Frames are being skipped: send the held one, then wait for a keyframe.
    pub fn jump(&mut self, reason: &str, out: &mut Vec<u8>) {
        self.flush_held(out);
        self.need_key = true;
        self.stats.jumps += 1;
        self.jump.get_or_insert_with(|| reason.to_string());
    }

    /// Sends the held frame with the previous frame's duration.
    fn flush_held(&mut self, out: &mut Vec<u8>) {
        self.emit(None, out);
    }

    /// Appends the fragment of the held frame (and its audio), preceded by the
    /// jump message if one is pending. `next_pts`: the frame that follows.
    fn emit(&mut self, next_pts: Option<i64>, out: &mut Vec<u8>) {
        let Some(s) = &mut self.sending else { return };
        let Some(pts) = s.frag.first_pts() else { return };
        if let Some(reason) = self.jump.take() {
            let text = jump_message(&s.run, self.last_sent_ms, s.frag.last_duration(), pts, &reason);
            websocket::put_frame(out, Opcode::Text, text.as_bytes());
        }
        let sent = s.frag.finish(next_pts, |f| put_fragment(out, f));
        if let Some((len, duration)) = sent {
            self.stats.fragments += 1;
            self.stats.bytes += len as u64;
            self.stats.media_secs += duration as f64 / f64::from(s.run.video.timescale.max(1));
            self.last_sent_ms = Some(s.run.wall_ms(pts));
        }
    }
}

/// Appends one fragment as one binary message; returns its length and video duration.
fn put_fragment(out: &mut Vec<u8>, f: &Fragment) -> (usize, u64) {
    websocket::put_header(out, Opcode::Binary, f.len(), None);
    out.extend_from_slice(&f.header);
    out.extend_from_slice(f.video);
    out.extend_from_slice(f.audio);
    (f.len(), f.info.duration)
}

/// The jump notice before the frame at `pts`: what was skipped since the
/// last frame sent, estimated from wall time and the frame interval.
fn jump_message(run: &RunStart, last_sent_ms: Option<i64>, frame_ticks: u32, pts: i64, reason: &str) -> String {
    let frame_ms = (f64::from(frame_ticks) * 1000.0 / f64::from(run.video.timescale.max(1))).max(1.0);
    let skipped_ms = last_sent_ms.map_or(0.0, |last| (run.wall_ms(pts) - last) as f64 - frame_ms).max(0.0);
    let frames = (skipped_ms / frame_ms).round() as u64;
    json!({"type": "jump", "reason": reason, "skipped_frames": frames, "skipped_ms": skipped_ms.round() as u64})
        .to_string()
}

/// The text message announcing a run's init segment.
fn init_message(run: &RunStart) -> String {
    let audio = run.audio.as_ref().map(|a| a.codec.clone());
    let codecs = match &audio {
        Some(a) => format!("{},{a}", run.video.codec),
        None => run.video.codec.clone(),
    };
    json!({
        "type": "init",
        "mime": format!("video/mp4; codecs=\"{codecs}\""),
        "codec": run.video.codec,
        "audio": audio,
        "width": run.video.width,
        "height": run.video.height,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::media::{AudioParams, VideoParams};
    use crate::web::websocket::{FrameReader, Message};

    fn run(audio: bool) -> RunStart {
        RunStart {
            video: VideoParams {
                codec: "avc1.64001f".into(),
                width: 640,
                height: 360,
                timescale: 90_000,
                sample_entry: b"\0\0\0\x08avc1".to_vec(),
            },
            audio: audio.then(|| AudioParams {
                codec: "mp4a.40.2".into(),
                timescale: 48_000,
                channels: 1,
                frame_ticks: 1024,
                sample_entry: b"\0\0\0\x08mp4a".to_vec(),
            }),
            anchor_pts: 0,
            anchor_wall_ms: 1_700_000_000_000,
            time_unknown: false,
        }
    }

    /// A message as the client sees it.
    #[derive(Debug)]
    enum Got {
        Text(serde_json::Value),
        Init(Vec<u8>),
        /// The trafs of a fragment, and its bytes after the moof.
        Frag(Vec<mp4::TrafSummary>, Vec<u8>),
    }

    fn decode(out: &[u8]) -> Vec<Got> {
        let mut r = FrameReader::client(1 << 24);
        r.push(out);
        let mut got = Vec::new();
        while let Some(m) = r.next_message().expect("valid frames") {
            got.push(match m {
                Message::Text(t) => Got::Text(serde_json::from_str(&t).expect("JSON")),
                Message::Binary(b) if &b[4..8] == b"ftyp" => Got::Init(b),
                Message::Binary(b) => {
                    let moof_len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
                    let trafs = mp4::parse_moof(&b[..moof_len]).expect("moof");
                    Got::Frag(trafs, b[moof_len..].to_vec())
                }
                other => panic!("unexpected {other:?}"),
            });
        }
        got
    }

    fn frag(g: &Got) -> &[mp4::TrafSummary] {
        match g {
            Got::Frag(t, _) => t,
            other => panic!("fragment expected, got {other:?}"),
        }
    }

    #[test]
    fn init_message_names_codecs() {
        let v: serde_json::Value = serde_json::from_str(&init_message(&run(true))).expect("JSON");
        assert_eq!(v["type"], "init");
        assert_eq!(v["mime"], "video/mp4; codecs=\"avc1.64001f,mp4a.40.2\"");
        assert_eq!((v["codec"].as_str(), v["audio"].as_str()), (Some("avc1.64001f"), Some("mp4a.40.2")));
        assert_eq!((v["width"].as_u64(), v["height"].as_u64()), (Some(640), Some(360)));
        let v: serde_json::Value = serde_json::from_str(&init_message(&run(false))).expect("JSON");
        assert_eq!(v["mime"], "video/mp4; codecs=\"avc1.64001f\"");
        assert!(v["audio"].is_null());
    }

    #[test]
    fn fragments_start_at_a_keyframe_with_exact_durations_from_zero() {
        let mut f = Feed::default();
        let mut out = Vec::new();
        f.on_run(1, run(false), &mut out);
        let base = 1_000_000i64;
        // A P frame before the first keyframe is skipped; then K P P with uneven spacing.
        let frames =
            [(false, base - 3000), (true, base), (false, base + 3000), (false, base + 6003), (false, base + 9000)];
        for (i, (key, pts)) in frames.into_iter().enumerate() {
            let data = vec![i as u8; 10 + i];
            f.on_video(key, pts, &data, &mut out);
        }
        let got = decode(&out);
        assert!(matches!(&got[0], Got::Text(v) if v["type"] == "init"));
        assert!(matches!(&got[1], Got::Init(b) if b == &mp4::init_segment(&run(false))));
        // The newest frame is held back: three fragments for four frames.
        assert_eq!(got.len(), 5);
        let expect = [(0u64, 3000u64, true, 1u8), (3000, 3003, false, 2), (6003, 2997, false, 3)];
        for (g, (tfdt, dur, key, fill)) in got[2..].iter().zip(expect) {
            let t = frag(g);
            assert_eq!(t.len(), 1);
            assert_eq!((t[0].track_id, t[0].base_decode_time, t[0].duration, t[0].first_sync), (1, tfdt, dur, key));
            let Got::Frag(_, payload) = g else { unreachable!() };
            assert_eq!(&payload[8..], &vec![fill; 10 + fill as usize][..], "mdat payload");
        }
        assert_eq!(f.newest_video(), Some((base + 9000, 1)));
        assert_eq!(f.stats.fragments, 3);
    }

    #[test]
    fn sequence_numbers_run_on_and_restart_with_a_new_run() {
        let mut f = Feed::default();
        let mut out = Vec::new();
        f.on_run(1, run(false), &mut out);
        for i in 0..4 {
            f.on_video(i == 0, i * 3000, &[1; 5], &mut out);
        }
        // The same run replayed (after a jump) changes nothing.
        f.on_run(1, run(false), &mut out);
        f.on_run(9, run(true), &mut out);
        f.on_video(false, 50, &[2; 5], &mut out); // not a keyframe: skipped
        f.on_video(true, 100, &[3; 5], &mut out);
        f.on_video(false, 3100, &[4; 5], &mut out);
        let got = decode(&out);
        let kinds: Vec<&str> = got
            .iter()
            .map(|g| match g {
                Got::Text(_) => "text",
                Got::Init(_) => "init",
                Got::Frag(..) => "frag",
            })
            .collect();
        // init pair, 3 fragments, the held 4th flushed at the new run, init pair, 1 fragment.
        assert_eq!(kinds, ["text", "init", "frag", "frag", "frag", "frag", "text", "init", "frag"]);
        let tfdts: Vec<u64> = got
            .iter()
            .filter_map(|g| match g {
                Got::Frag(t, _) => Some(t[0].base_decode_time),
                _ => None,
            })
            .collect();
        assert_eq!(tfdts, [0, 3000, 6000, 9000, 0]);
        // The flushed frame got the previous duration.
        assert_eq!(frag(&got[5])[0].duration, 3000);
    }

    #[test]
    fn audio_rides_with_the_next_video_fragment_on_the_same_timeline() {
        let mut f = Feed::default();
        let mut out = Vec::new();
        f.on_run(1, run(true), &mut out);
        let key_pts = 900_000i64; // 10 s into the session
        let audio_at_key = 480_000i64; // the same instant at 48 kHz
        f.on_audio(audio_at_key - 1024, &[9; 7]); // before any keyframe: dropped
        f.on_video(true, key_pts, &[1; 20], &mut out);
        f.on_audio(audio_at_key - 1024, &[8; 6]); // before the keyframe's time: dropped
        f.on_audio(audio_at_key, &[7; 5]);
        f.on_audio(audio_at_key + 1024, &[6; 4]);
        f.on_video(false, key_pts + 6000, &[2; 20], &mut out);
        f.on_audio(audio_at_key + 2048, &[5; 3]);
        f.on_video(false, key_pts + 12000, &[3; 20], &mut out);
        let got = decode(&out);
        let (a, b) = (frag(&got[2]), frag(&got[3]));
        assert_eq!(a.len(), 2);
        assert_eq!((a[1].track_id, a[1].base_decode_time, a[1].samples, a[1].duration), (2, 0, 2, 2048));
        assert_eq!((b[1].base_decode_time, b[1].samples), (2048, 1));
        let Got::Frag(_, payload) = &got[2] else { unreachable!() };
        assert_eq!(&payload[8..], [vec![1u8; 20], vec![7; 5], vec![6; 4]].concat());
        assert_eq!(a[1].data_offset, Some(a[0].data_offset.expect("video offset") + 20));
    }

    #[test]
    fn a_jump_keeps_the_timeline_contiguous_and_is_announced() {
        let mut f = Feed::default();
        let mut out = Vec::new();
        f.on_run(1, run(false), &mut out);
        for i in 0..3 {
            f.on_video(i == 0, i * 3000, &[1; 5], &mut out);
        }
        f.jump("slow", &mut out);
        f.on_video(false, 30 * 3000, &[1; 5], &mut out); // waits for a keyframe
        f.on_video(true, 90 * 3000, &[2; 5], &mut out);
        f.on_video(false, 91 * 3000, &[3; 5], &mut out);
        let got = decode(&out);
        let n = got.len();
        // frags 0, 1, the held 2 (flushed at the jump), jump text, the keyframe.
        assert_eq!(frag(&got[4])[0].base_decode_time, 6000);
        let Got::Text(j) = &got[n - 2] else { panic!("jump text expected, got {:?}", got[n - 2]) };
        assert_eq!((j["type"].as_str(), j["reason"].as_str()), (Some("jump"), Some("slow")));
        // 87 frames of 1/30 s were skipped between the frames at 2 and at 90.
        assert_eq!(j["skipped_frames"].as_u64(), Some(87));
        let k = frag(&got[n - 1]);
        assert_eq!((k[0].base_decode_time, k[0].first_sync), (9000, true));
    }
}
