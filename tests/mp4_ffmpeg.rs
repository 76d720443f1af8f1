//! The mp4 writer against real parts: ffmpeg encodes a 4 s H.264 clip and an
//! AAC track, we mux them with `init_segment` and the fragmenter (one fragment
//! per GOP, as segment files are), and ffprobe/ffmpeg must read the result
//! without complaint. The same goes for an "export" made of later fragments
//! patched with `patch_moof`, and for a file whose audio has a gap (later audio
//! keeps its time).
//!
//! ffmpeg is required (scripts/test installs it): without it the test fails.

use std::path::Path;
use std::process::{Command, Output};

use std::ops::Range;

use oxinvr::recording::fragmenter::{Cut, Fragmenter};
use oxinvr::recording::media::{AudioParams, RunStart, VideoParams};
use oxinvr::recording::mp4::{self, BoxHeader};

const FPS: u32 = 25;
const VIDEO_TIMESCALE: u32 = 90_000;
const SAMPLE_RATE: u32 = 48_000;
const AAC_FRAME: u32 = 1024;

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (install ffmpeg; scripts/test does)"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn ffprobe(path: &Path, args: &[&str]) -> String {
    let out = run(Command::new("ffprobe").args(["-v", "error"]).args(args).arg(path));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Asserts ffmpeg decodes the whole file without printing a single error.
fn assert_decodes_cleanly(path: &Path) {
    let out = run(Command::new("ffmpeg").args(["-v", "error", "-i"]).arg(path).args(["-f", "null", "-"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.trim().is_empty(), "ffmpeg reported errors decoding {}:\n{stderr}", path.display());
}

/// The NAL units of an Annex B stream, without start codes or trailing zeros.
fn nal_units(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::new();
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(data.len(), |&next| next - 3);
        let mut nal = &data[start..end];
        while let [rest @ .., 0] = nal {
            nal = rest;
        }
        nals.push(nal);
    }
    nals
}

/// One access unit in MP4 form (4-byte length prefixes).
struct AccessUnit {
    data: Vec<u8>,
    key: bool,
}

/// Groups NAL units into access units, dropping AUD/SPS/PPS (they go into the
/// avcC) and returning the last SPS and PPS seen.
fn access_units(nals: &[&[u8]]) -> (Vec<u8>, Vec<u8>, Vec<AccessUnit>) {
    let (mut sps, mut pps) = (Vec::new(), Vec::new());
    let mut units = Vec::new();
    let mut current = AccessUnit { data: Vec::new(), key: false };
    let mut has_slice = false;
    for nal in nals.iter().filter(|n| !n.is_empty()) {
        let kind = nal[0] & 0x1f;
        let slice = kind == 1 || kind == 5;
        // SEI, SPS, PPS, AUD, or a slice with first_mb_in_slice == 0, start a new unit.
        let first_slice = slice && nal.get(1).is_some_and(|b| b & 0x80 != 0);
        if has_slice && (matches!(kind, 6..=9) || first_slice) {
            units.push(std::mem::replace(&mut current, AccessUnit { data: Vec::new(), key: false }));
            has_slice = false;
        }
        match kind {
            7 => sps = nal.to_vec(),
            8 => pps = nal.to_vec(),
            9 => {}
            _ => {
                current.data.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                current.data.extend_from_slice(nal);
                current.key |= kind == 5;
                has_slice |= slice;
            }
        }
    }
    if has_slice {
        units.push(current);
    }
    (sps, pps, units)
}

fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
    out
}

/// `avc1` sample entry with an avcC built from the SPS and PPS.
fn avc1_entry(sps: &[u8], pps: &[u8], width: u16, height: u16) -> Vec<u8> {
    let mut avcc = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    avcc.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(sps);
    avcc.push(1);
    avcc.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(pps);
    if sps[1] == 100 {
        avcc.extend_from_slice(&[0xfd, 0xf8, 0xf8, 0]); // High: 4:2:0, 8-bit, no SPS extension
    }
    let mut body = vec![0; 6];
    body.extend_from_slice(&1u16.to_be_bytes()); // data reference index
    body.extend_from_slice(&[0; 16]);
    body.extend_from_slice(&width.to_be_bytes());
    body.extend_from_slice(&height.to_be_bytes());
    body.extend_from_slice(&[0, 0x48, 0, 0, 0, 0x48, 0, 0, 0, 0, 0, 0, 0, 1]); // 72 dpi, frame count 1
    body.extend_from_slice(&[0; 32]); // compressor name
    body.extend_from_slice(&[0, 0x18, 0xff, 0xff]); // depth, pre_defined
    body.extend_from_slice(&mp4_box(b"avcC", &avcc));
    mp4_box(b"avc1", &body)
}

/// `mp4a` sample entry for an AudioSpecificConfig.
fn mp4a_entry(asc: [u8; 2], channels: u16, rate: u32) -> Vec<u8> {
    #[rustfmt::skip]
    let esds = [
        0, 0, 0, 0, // version, flags
        0x03, 25, 0, 0, 0, // ES_Descriptor
        0x04, 17, 0x40, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // DecoderConfig: AAC, audio
        0x05, 2, asc[0], asc[1], // AudioSpecificConfig
        0x06, 1, 2, // SLConfig
    ];
    let mut body = vec![0; 6];
    body.extend_from_slice(&1u16.to_be_bytes());
    body.extend_from_slice(&[0; 8]);
    body.extend_from_slice(&channels.to_be_bytes());
    body.extend_from_slice(&16u16.to_be_bytes());
    body.extend_from_slice(&[0; 4]);
    body.extend_from_slice(&(rate << 16).to_be_bytes());
    body.extend_from_slice(&mp4_box(b"esds", &esds));
    mp4_box(b"mp4a", &body)
}

/// Raw AAC frames of an ADTS stream, its AudioSpecificConfig and channel count.
fn adts_frames(data: &[u8]) -> (Vec<&[u8]>, [u8; 2], u16) {
    let mut frames = Vec::new();
    let mut config = None;
    let mut pos = 0;
    while pos + 7 <= data.len() {
        let h = &data[pos..];
        assert!(h[0] == 0xff && h[1] & 0xf0 == 0xf0, "lost ADTS sync at byte {pos}");
        let header_len = if h[1] & 1 == 1 { 7 } else { 9 };
        let object_type = u16::from(h[2] >> 6) + 1;
        let rate_index = u16::from(h[2] >> 2 & 0xf);
        let channels = u16::from(h[2] & 1) << 2 | u16::from(h[3] >> 6);
        let len = usize::from(h[3] & 3) << 11 | usize::from(h[4]) << 3 | usize::from(h[5] >> 5);
        let asc = (object_type << 11 | rate_index << 7 | channels << 3).to_be_bytes();
        config = Some((asc, channels));
        frames.push(&data[pos + header_len..pos + len]);
        pos += len;
    }
    let (asc, channels) = config.expect("no ADTS frames");
    (frames, asc, channels)
}

/// The session clock's reading at the clip's first frame (pts are not 0-based).
const SESSION_SECS: i64 = 7;

/// Muxes the clip with [`Fragmenter`] in GOP mode, as the segment writer does:
/// video at 25 fps and AAC on the same session clock, each audio frame pushed
/// after the video frame it starts under; `lost` audio frames are left out.
fn mux(run: &RunStart, units: &[AccessUnit], audio: &[&[u8]], lost: Range<usize>) -> Vec<u8> {
    let mut file = mp4::init_segment(run);
    let mut f = Fragmenter::new(run, Cut::Gop);
    let video_pts = |i: usize| SESSION_SECS * i64::from(VIDEO_TIMESCALE) + (i as u32 * VIDEO_TIMESCALE / FPS) as i64;
    let audio_pts = |n: usize| SESSION_SECS * i64::from(SAMPLE_RATE) + (n as u32 * AAC_FRAME) as i64;
    let mut write = |frag: &oxinvr::recording::fragmenter::Fragment| {
        file.extend_from_slice(&frag.header);
        file.extend_from_slice(frag.video);
        file.extend_from_slice(frag.audio);
    };
    let mut next_audio = 0;
    for (i, u) in units.iter().enumerate() {
        let pts = video_pts(i);
        if f.cuts_before(u.key, pts) {
            f.finish(Some(pts), &mut write);
        }
        f.push_video(u.key, pts, &u.data);
        let last = i + 1 == units.len();
        while next_audio < audio.len()
            && (last || (next_audio as u64 * u64::from(AAC_FRAME * FPS)) < (i as u64 + 1) * u64::from(SAMPLE_RATE))
        {
            if !lost.contains(&next_audio) {
                assert!(f.push_audio(audio_pts(next_audio), audio[next_audio]));
            }
            next_audio += 1;
        }
    }
    f.finish(None, &mut write);
    file
}

/// A 4 s clip encoded by ffmpeg: H.264 (25 fps, a keyframe each second, no
/// B-frames) and stereo AAC at 48 kHz, as raw Annex B and ADTS bytes.
fn encode_clip(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let h264 = dir.join("x.h264");
    let aac = dir.join("x.aac");
    run(Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "4"])
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-bf", "0", "-g", "25", "-f", "h264"])
        .arg(&h264));
    run(Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "4"])
        .args(["-ac", "2", "-c:a", "aac", "-f", "adts"])
        .arg(&aac));
    (std::fs::read(&h264).expect("read h264"), std::fs::read(&aac).expect("read aac"))
}

/// The run of the clip: codec parameters from its SPS/PPS and ADTS headers.
fn clip_run(sps: &[u8], pps: &[u8], asc: [u8; 2], channels: u16) -> RunStart {
    RunStart {
        video: VideoParams {
            codec: format!("avc1.{:02x}{:02x}{:02x}", sps[1], sps[2], sps[3]),
            width: 320,
            height: 240,
            timescale: VIDEO_TIMESCALE,
            sample_entry: avc1_entry(sps, pps, 320, 240),
        },
        audio: Some(AudioParams {
            codec: "mp4a.40.2".into(),
            timescale: SAMPLE_RATE,
            channels,
            frame_ticks: AAC_FRAME,
            sample_entry: mp4a_entry(asc, channels, SAMPLE_RATE),
        }),
        anchor_pts: 0,
        anchor_wall_ms: 1_700_000_000_000,
        time_unknown: false,
    }
}

#[test]
fn ffmpeg_reads_what_we_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (h264, aac) = encode_clip(dir.path());
    let (sps, pps, units) = access_units(&nal_units(&h264));
    assert_eq!(units.len(), 100, "access units in the clip");
    assert!(units[0].key);
    let (audio_frames, asc, channels) = adts_frames(&aac);
    let run_start = clip_run(&sps, &pps, asc, channels);
    let codec = run_start.video.codec.clone();

    // One fragment per GOP, built by the fragmenter as the segment writer does.
    let file = mux(&run_start, &units, &audio_frames, 0..0);
    let gop_starts: Vec<usize> = (0..units.len()).filter(|&i| units[i].key).collect();
    let out = dir.path().join("out.mp4");
    std::fs::write(&out, &file).expect("write mp4");

    // ffprobe and ffmpeg agree with what we wrote.
    let video_info = ffprobe(
        &out,
        &["-count_frames", "-select_streams", "v:0", "-show_entries", "stream=codec_name,width,height,nb_read_frames"],
    );
    for expected in ["codec_name=h264", "width=320", "height=240", "nb_read_frames=100"] {
        assert!(video_info.contains(expected), "{expected} not in ffprobe output:\n{video_info}");
    }
    let audio_info = ffprobe(
        &out,
        &["-count_frames", "-select_streams", "a:0", "-show_entries", "stream=codec_name,nb_read_frames"],
    );
    assert!(audio_info.contains("codec_name=aac"), "{audio_info}");
    assert!(audio_info.contains(&format!("nb_read_frames={}", audio_frames.len())), "{audio_info}");
    let duration: f64 =
        ffprobe(&out, &["-show_entries", "format=duration", "-of", "csv=p=0"]).parse().expect("duration");
    assert!((duration - 4.0).abs() < 0.1, "duration {duration}");
    assert_decodes_cleanly(&out);

    // Our own scan agrees too.
    let scan = mp4::scan_file(&out).expect("scan");
    assert_eq!(scan.codec, codec);
    assert_eq!((scan.width, scan.height, scan.video_timescale), (320, 240, VIDEO_TIMESCALE));
    assert_eq!((scan.has_audio, scan.audio_timescale), (true, Some(SAMPLE_RATE)));
    assert_eq!(scan.fragments.len(), gop_starts.len());
    assert!(scan.fragments.iter().all(|f| f.key));
    assert_eq!(scan.fragments.iter().map(|f| f.frames).sum::<u32>(), 100);
    assert_eq!(scan.audio_frames, audio_frames.len() as u64);
    assert_eq!((scan.valid_len, scan.file_len), (file.len() as u64, file.len() as u64));

    // An export of the second half: fragments patched to count from sequence 1 and time 0.
    let half = &scan.fragments[scan.fragments.len() / 2..];
    let audio_base = {
        let bytes = &file[half[0].offset as usize..];
        let moof = BoxHeader::parse(bytes, 0, bytes.len() as u64).expect("moof header");
        let trafs = mp4::parse_moof(&bytes[..moof.size as usize]).expect("parse moof");
        trafs.iter().find(|t| t.track_id == mp4::AUDIO_TRACK_ID).expect("audio traf").base_decode_time
    };
    let mut export = file[..scan.init_len as usize].to_vec();
    for (n, f) in half.iter().enumerate() {
        let mut fragment = file[f.offset as usize..][..f.size as usize].to_vec();
        let moof_len = BoxHeader::parse(&fragment, 0, fragment.len() as u64).expect("moof header").size as usize;
        let video_base = half[0].start_ticks;
        mp4::patch_moof(&mut fragment[..moof_len], n as u32 + 1, |track, t| {
            t - if track == mp4::VIDEO_TRACK_ID { video_base } else { audio_base }
        })
        .expect("patch moof");
        export.extend_from_slice(&fragment);
    }
    let export_path = dir.path().join("export.mp4");
    std::fs::write(&export_path, &export).expect("write export");
    let frames: u32 = half.iter().map(|f| f.frames).sum();
    let info =
        ffprobe(&export_path, &["-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames"]);
    assert!(info.contains(&format!("nb_read_frames={frames}")), "{info}");
    let start: f64 =
        ffprobe(&export_path, &["-show_entries", "format=start_time", "-of", "csv=p=0"]).parse().expect("start");
    assert!(start.abs() < 0.05, "export starts at {start}");
    let duration: f64 =
        ffprobe(&export_path, &["-show_entries", "format=duration", "-of", "csv=p=0"]).parse().expect("duration");
    assert!((duration - f64::from(frames) / f64::from(FPS)).abs() < 0.1, "export duration {duration}");
    assert_decodes_cleanly(&export_path);
    let rescan = mp4::scan_file(&export_path).expect("scan export");
    assert_eq!(rescan.fragments[0].start_ticks, 0);
    assert_eq!(rescan.fragments.len(), half.len());
}

/// Audio frames lost in the middle (a camera that dropped audio packets): the
/// fragmenter places every later frame at its own pts, so ffprobe reads each
/// packet at the time it was captured, the gap stays a gap, and nothing after
/// it moves earlier.
#[test]
fn an_audio_gap_keeps_later_audio_at_its_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (h264, aac) = encode_clip(dir.path());
    let (sps, pps, units) = access_units(&nal_units(&h264));
    let (audio_frames, asc, channels) = adts_frames(&aac);
    // 40 frames (0.85 s) from 1.07 s: across the fragment boundary at 2 s too.
    let lost = 50..90;
    let file = mux(&clip_run(&sps, &pps, asc, channels), &units, &audio_frames, lost.clone());
    let out = dir.path().join("gap.mp4");
    std::fs::write(&out, &file).expect("write mp4");

    let pts = ffprobe(&out, &["-select_streams", "a:0", "-show_entries", "packet=pts", "-of", "csv=p=0"]);
    let got: Vec<u64> = pts.lines().map(|l| l.trim().parse().expect("a pts")).collect();
    let expected: Vec<u64> =
        (0..audio_frames.len()).filter(|n| !lost.contains(n)).map(|n| n as u64 * u64::from(AAC_FRAME)).collect();
    assert_eq!(got, expected, "audio packet times (48 kHz ticks) after a gap of {lost:?}");
    let video = ffprobe(&out, &["-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames"]);
    assert!(video.contains("nb_read_frames=100"), "{video}");
    assert_decodes_cleanly(&out);
    let scan = mp4::scan_file(&out).expect("scan");
    assert_eq!(scan.audio_frames, expected.len() as u64);
}
