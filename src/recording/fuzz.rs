//! Entry points of the coverage-guided fuzz targets of this layer (fuzz/,
//! docs/FUZZING.md): the MP4 box reader, the start-up recovery of torn
//! segment files, and a camera's RTSP/SDP/RTP answers through retina.
//!
//! Invariant: each entry point takes arbitrary bytes, panics only when the
//! code under test broke one of its documented promises (never on the input
//! itself), and leaves nothing behind (temporary files are removed).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::index::fragments::FragmentEntry;
use crate::recording::{mp4, storage};

/// Every box of `data` read as a buffer of boxes: each `moof` parsed and
/// patched as export does, each `moov` read for its timescales, and the whole
/// input read as a sample entry.
pub fn mp4(data: &[u8]) {
    let _ = mp4::codec_string(data);
    let _ = mp4::timescale_of(data, 1);
    let _ = mp4::moof_size(data);
    let end = data.len() as u64;
    let mut pos = 0u64;
    while let Some(h) = data.get(pos as usize..).and_then(|rest| mp4::BoxHeader::parse(rest, pos, end)) {
        let bytes = &data[h.offset as usize..h.end() as usize];
        if &h.kind == b"moof" {
            let parsed = mp4::parse_moof(bytes);
            let _ = mp4::moof_sequence(bytes);
            let mut copy = bytes.to_vec();
            let patched = mp4::patch_moof(&mut copy, 7, |track, old| old.wrapping_add(u64::from(track)));
            // A moof that parses can be patched unless a 32-bit tfdt overflows.
            if parsed.is_ok() && patched.is_ok() {
                assert_eq!(copy.len(), bytes.len(), "patch_moof changed the size of a moof");
                assert_eq!(mp4::moof_sequence(&copy), Some(7), "patch_moof did not set the sequence");
            }
        }
        if h.size == 0 {
            break;
        }
        pos = h.end();
    }
}

/// A unique temporary path (the replay test runs targets on several threads).
fn temp_path(what: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = ["/dev/shm"].iter().map(PathBuf::from).find(|d| d.is_dir()).unwrap_or_else(std::env::temp_dir);
    dir.join(format!("oxinvr-fuzz-{}-{what}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)))
}

/// `data` as a segment file found open at start-up: recovered (torn tail cut),
/// turned into the row progress that reconciliation stores, and scanned again.
/// A recovered file must scan whole and identical; its fragment index must
/// survive the database's encoding.
pub fn recover(data: &[u8]) {
    let path = temp_path("segment.mp4");
    if std::fs::write(&path, data).is_err() {
        return; // no temporary space: nothing to test
    }
    if let Ok((scan, cut)) = mp4::recover_file(&path) {
        assert_eq!(scan.file_len + cut, data.len() as u64, "recovery cut more than the file");
        let again = mp4::scan_file(&path).expect("a recovered file scans again");
        assert_eq!(again.valid_len, again.file_len, "a recovered file still has a torn tail");
        assert_eq!(again, scan, "a recovered file scans differently");
        let progress = storage::progress_from_scan(1_800_000_000_000, &scan);
        let blob = FragmentEntry::encode_all(&progress.fragments);
        assert_eq!(FragmentEntry::decode_all(&blob).as_deref(), Some(&progress.fragments[..]), "fragment index");
    }
    let _ = std::fs::remove_file(&path);
}

/// The fake camera's answers for one input: the SDP of DESCRIBE, and the
/// bytes sent after the PLAY answer (interleaved RTP/RTCP, or anything).
struct CameraScript {
    sdp: Vec<u8>,
    stream: Vec<u8>,
}

/// A loopback RTSP "camera" serving one connection per script it is given.
struct Camera {
    port: u16,
    scripts: std::sync::Mutex<std::sync::mpsc::Sender<CameraScript>>,
}

fn camera() -> &'static Camera {
    static CAMERA: std::sync::OnceLock<Camera> = std::sync::OnceLock::new();
    CAMERA.get_or_init(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("the fuzz camera binds a loopback port");
        let port = listener.local_addr().expect("the fuzz camera's port").port();
        let (tx, rx) = std::sync::mpsc::channel::<CameraScript>();
        std::thread::Builder::new()
            .name("fuzz-camera".into())
            .spawn(move || {
                for script in rx {
                    if let Ok((conn, _)) = listener.accept() {
                        let _ = serve_camera(conn, port, &script);
                    }
                }
            })
            .expect("the fuzz camera's thread starts");
        Camera { port, scripts: std::sync::Mutex::new(tx) }
    })
}

/// The head of one RTSP request: (method, CSeq, Transport).
fn read_request(r: &mut impl std::io::BufRead) -> std::io::Result<Option<(String, String, String)>> {
    let (mut method, mut cseq, mut transport) = (String::new(), String::new(), String::new());
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let l = line.trim_end();
        if l.is_empty() {
            return Ok(Some((method, cseq, transport)));
        }
        if method.is_empty() {
            method = l.split(' ').next().unwrap_or("").to_string();
        } else if let Some((k, v)) = l.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "cseq" => cseq = v.trim().to_string(),
                "transport" => transport = v.trim().to_string(),
                _ => {}
            }
        }
    }
}

/// Answers DESCRIBE with the script's SDP, SETUP with the transport asked
/// for, PLAY with 200 followed by the script's stream, then closes.
fn serve_camera(conn: std::net::TcpStream, port: u16, script: &CameraScript) -> std::io::Result<()> {
    use std::io::Write;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    // Each answer goes out in one write, without Nagle's delay: small writes
    // waiting for a delayed ACK cost 40 ms an input.
    conn.set_nodelay(true)?;
    let mut w = conn.try_clone()?;
    let mut r = std::io::BufReader::new(conn);
    while let Some((method, cseq, transport)) = read_request(&mut r)? {
        let mut out = format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 12345678;timeout=60\r\n").into_bytes();
        let play = method == "PLAY";
        match method.as_str() {
            "DESCRIBE" => {
                let base = format!("Content-Base: rtsp://127.0.0.1:{port}/cam/\r\nContent-Type: application/sdp\r\n");
                write!(out, "{base}Content-Length: {}\r\n\r\n", script.sdp.len())?;
                out.extend_from_slice(&script.sdp);
            }
            "SETUP" => write!(out, "Transport: {transport}\r\n\r\n")?,
            "PLAY" => {
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&script.stream);
            }
            _ => out.extend_from_slice(b"\r\n"),
        }
        w.write_all(&out)?;
        if play {
            break;
        }
    }
    Ok(())
}

/// A camera answering with `data`: its first two bytes are the length of
/// the SDP that follows; the rest is what the camera sends once playing.
/// The session is opened and read as ingest does, every frame checked as
/// ingest does; the codec parameters retina derives must make a sample
/// entry our MP4 reader understands.
pub fn rtsp(data: &[u8]) {
    use crate::recording::rtsp::{Opener, RetinaOpener, Source};
    let (len, rest) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])).min(rest.len()), rest),
        _ => return,
    };
    let script = CameraScript { sdp: rest[..len].to_vec(), stream: rest[len..].to_vec() };
    let cam = camera();
    if cam.scripts.lock().map(|tx| tx.send(script)).is_err() {
        return;
    }
    let url = format!("rtsp://u:p@127.0.0.1:{}/cam", cam.port);
    let opener = RetinaOpener { step: std::time::Duration::from_secs(5) };
    smol::block_on(async_compat::Compat::new(async {
        let mut source = match opener.open(&url).await {
            Ok(s) => s,
            Err(_) => return,
        };
        for _ in 0..10_000 {
            let video = source.video_params();
            if let Some(v) = &video {
                assert!(mp4::codec_string(&v.sample_entry).is_some(), "retina's sample entry is unreadable: {v:?}");
            }
            let _ = source.audio_params();
            match source.next().await {
                Some(Ok(frame)) => {
                    let _ = crate::recording::rtsp::h265_irap(&frame.data);
                }
                Some(Err(_)) | None => break,
            }
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::rtsp::{OpenError, Opener, RetinaOpener, Source};

    /// Found by the `rtsp` fuzz target: sdp-types 0.1.8 (retina's SDP parser)
    /// asserted that the line after a malformed one is an m= line, so a camera
    /// whose DESCRIBE answer had a bad line followed by an attribute panicked
    /// the ingest thread (and aborted the MIPS build, panic = "abort"). The
    /// vendored sdp-types refuses it: DESCRIBE fails with a message.
    #[test]
    fn a_malformed_sdp_line_fails_describe_instead_of_panicking() {
        let sdp = b"v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=cam\r\nt=0 0\r\nnot a line\r\na=tool:x\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
        describe_fails(sdp, "line 6");
    }

    /// Found by the `rtsp` fuzz target: retina unwraps the first format of an
    /// m= line, so "m=audio 0 RTP/AVP " (no format) panicked the ingest thread.
    /// The vendored sdp-types refuses an m= line without a format.
    #[test]
    fn a_media_line_without_a_format_fails_describe_instead_of_panicking() {
        let sdp = b"v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=cam\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\nm=audio 0 RTP/AVP \r\n";
        describe_fails(sdp, "line 7");
    }

    /// The camera serves scripts in the order given: one test at a time.
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// One interleaved RTP packet (channel 0, payload type 96, SSRC 1).
    fn rtp(seq: u16, ts: u32, mark: bool, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 96 | if mark { 0x80 } else { 0 }];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&1u32.to_be_bytes());
        p.extend_from_slice(payload);
        let mut out = vec![b'$', 0];
        out.extend_from_slice(&(p.len() as u16).to_be_bytes());
        out.extend_from_slice(&p);
        out
    }

    /// Seen in CI (tests/camera_faults.rs, garbage RTP): a packet with a new
    /// timestamp finishes the frame before it, then fails to depacketize.
    /// retina 0.4.21 returned the error with that frame still queued, and the
    /// next packet hit its "push with data already pending" panic, which took
    /// down every stream (and aborted the MIPS build). The vendored retina
    /// hands out the queued frame first: the bad packet costs only itself.
    #[test]
    fn a_bad_packet_right_after_a_finished_frame_costs_that_packet_only() {
        let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
        let sdp = b"v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=cam\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\n\
            a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1;\
            sprop-parameter-sets=Z0LACtxCbARAAAADAEAAAAMAo8SJ4A==,aM4PyA==\r\na=control:trackID=0\r\n";
        let idr = [0x65, 0x88, 0x84, 0x3a, 0x0c, 0x60, 0x00, 0x80];
        let mut stream = rtp(1, 90_000, false, &idr); // no mark: finished by the next timestamp
        stream.extend(rtp(2, 93_000, false, &[0x81, 0x9a, 0x00])); // F bit set: cannot depacketize
        stream.extend(rtp(3, 93_000, true, &[0x41, 0x9a, 0x00, 0x01])); // a P frame (skipped: no key yet)
        stream.extend(rtp(4, 96_000, true, &idr));
        let cam = camera();
        cam.scripts.lock().expect("camera").send(CameraScript { sdp: sdp.to_vec(), stream }).expect("send");
        let url = format!("rtsp://127.0.0.1:{}/cam", cam.port);
        let opener = RetinaOpener { step: std::time::Duration::from_secs(5) };
        let keys = smol::block_on(async_compat::Compat::new(async {
            let mut source = opener.open(&url).await.expect("the session opens");
            let mut keys = Vec::new();
            while let Some(Ok(frame)) = source.next().await {
                assert!(frame.key, "a frame without a keyframe before it was passed on");
                keys.push(frame.pts);
            }
            keys
        }));
        assert_eq!(keys.len(), 2, "both keyframes, the one finished by the bad packet too: {keys:?}");
    }

    /// Opens the fuzz camera serving `sdp`: DESCRIBE must fail, naming `line`.
    fn describe_fails(sdp: &[u8], line: &str) {
        let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
        let cam = camera();
        cam.scripts.lock().expect("camera").send(CameraScript { sdp: sdp.to_vec(), stream: Vec::new() }).expect("send");
        let url = format!("rtsp://127.0.0.1:{}/cam", cam.port);
        let opener = RetinaOpener { step: std::time::Duration::from_secs(5) };
        let got = smol::block_on(async_compat::Compat::new(opener.open(&url)));
        // retina reports it with the answer's status (200) and the line at fault.
        match got {
            Err(e @ OpenError::Status { step: "DESCRIBE", .. }) => {
                let text = e.to_string();
                assert!(text.contains("Unable to parse SDP") && text.contains(line), "{text}");
            }
            Err(e) => panic!("expected DESCRIBE to fail on the SDP, got: {e}"),
            Ok(_) => panic!("a malformed SDP was accepted"),
        }
    }
}
