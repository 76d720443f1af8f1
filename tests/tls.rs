//! HTTPS (`web.tls`) with the real binary and Debian's curl and openssl as the
//! clients: the self-signed certificate made at first start is trusted
//! explicitly (`--cacert` of the box's own cert.pem) or compared by its
//! SHA-256 fingerprint, as a user would check it.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::nvr::{free_port, http, Oxinvr};

const HEAD_TIMEOUT_S: u64 = 3;
const PASSWORD: &str = "correct horse battery";

struct Box_ {
    nvr: Oxinvr,
    tls_port: u16,
    dir: PathBuf,
}

fn start(dir: &Path, threads: u32) -> Box_ {
    let tls_port = free_port();
    let body = format!(
        "[storage]\ndata_dir = \"{{DATA}}\"\n[web]\nlisten = \"127.0.0.1:{{PORT}}\"\nthreads = {threads}\n\
         tls = true\ntls_listen = \"127.0.0.1:{tls_port}\"\nhead_timeout_seconds = {HEAD_TIMEOUT_S}\n"
    );
    let nvr = Oxinvr::start(dir, &body);
    wait_listening(tls_port);
    Box_ { nvr, tls_port, dir: dir.to_path_buf() }
}

fn wait_listening(port: u16) {
    let until = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "nothing listens on HTTPS port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An answer as curl saw it.
struct Got {
    status: u16,
    head: String,
    body: String,
}

impl Got {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
            .map(|l| l[prefix.len()..].trim().to_string())
    }
}

/// curl with `args`; the answer's head and body.
fn curl(args: &[&str]) -> Got {
    let out = Command::new("curl").args(["-sS", "--max-time", "20", "-D", "-"]).args(args).output().expect("run curl");
    assert!(out.status.success(), "curl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Got { status, head: head.to_string(), body: body.to_string() }
}

impl Box_ {
    fn cert(&self) -> PathBuf {
        self.nvr.data_dir.join("tls/cert.pem")
    }

    /// `https://localhost:PORT{path}` trusting only the box's own certificate
    /// (its names are the host name and localhost).
    fn https(&self, method: &str, path: &str, extra: &[&str]) -> Got {
        let url = format!("https://localhost:{}{path}", self.tls_port);
        let resolve = format!("localhost:{}:127.0.0.1", self.tls_port);
        let cacert = self.cert().display().to_string();
        let mut args = vec!["--cacert", &cacert, "--resolve", &resolve, "-X", method];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    }

    /// The SHA-256 fingerprint of the certificate a new connection is served.
    fn served_fingerprint(&self) -> String {
        let mut s_client = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{}", self.tls_port), "-servername", "localhost"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_client");
        let mut pem = String::new();
        s_client.stdout.take().expect("stdout").read_to_string(&mut pem).expect("read s_client");
        let _ = s_client.wait();
        fingerprint_of_pem(&pem, &self.dir)
    }
}

/// `openssl x509 -fingerprint -sha256` of the (first) certificate in `pem`.
fn fingerprint_of_pem(pem: &str, tmp: &Path) -> String {
    let f = tmp.join("served.pem");
    std::fs::write(&f, pem).expect("write pem");
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&f)
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "openssl x509: {}", String::from_utf8_lossy(&out.stderr));
    text.trim().split_once('=').map(|(_, v)| v.to_string()).unwrap_or_else(|| panic!("no fingerprint: {text}"))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

/// Makes `name` an admin through the console token (over plain HTTP: the
/// console's calls are not redirected).
fn add_admin(b: &Box_, name: &str) {
    let body = serde_json::json!({ "username": name, "password": PASSWORD, "role": "admin" }).to_string();
    let r =
        b.nvr.request("POST", "/api/users", &[("Content-Type", "application/json")], body.as_bytes()).expect("POST");
    assert_eq!(r.status, 201, "{}", r.text());
}

/// Logs in over HTTPS; the session cookie's `name=value` and the answer.
fn login(b: &Box_, name: &str) -> (String, Got) {
    let body = serde_json::json!({ "username": name, "password": PASSWORD }).to_string();
    let r = b.https("POST", "/api/auth/login", &["-H", "Content-Type: application/json", "--data-binary", &body]);
    assert_eq!(r.status, 200, "login: {}", r.body);
    let cookie = r.header("Set-Cookie").expect("a session cookie");
    (cookie.split(';').next().unwrap_or_default().to_string(), r)
}

#[test]
fn https_serves_the_page_and_the_api_with_the_certificate_made_at_first_start() {
    let tmp = tempfile::tempdir().expect("tmp");
    let b = start(tmp.path(), 4);
    // The pair: key private to the recorder, certificate readable.
    let tls = b.nvr.data_dir.join("tls");
    assert_eq!(mode(&tls.join("key.pem")), 0o600, "key.pem must be 0600");
    assert_eq!(mode(&tls), 0o700);
    // The page, over TLS 1.3 and 1.2, trusting only the box's certificate.
    for version in [&["--tlsv1.3"][..], &["--tlsv1.2", "--tls-max", "1.2"][..]] {
        let page = b.https("GET", "/", version);
        assert_eq!(page.status, 200, "{version:?}: {}", page.head);
        assert!(
            page.body.contains("<html") || page.body.contains("<!doctype"),
            "{}",
            &page.body[..page.body.len().min(200)]
        );
    }
    // Login over HTTPS: the session cookie is Secure (and still HttpOnly).
    add_admin(&b, "ann");
    let (cookie, r) = login(&b, "ann");
    let set = r.header("Set-Cookie").unwrap_or_default();
    assert!(set.contains("; Secure") && set.contains("HttpOnly"), "{set}");
    // The API over HTTPS with that session; the fingerprint it reports is the
    // one of the certificate actually served.
    let info = b.https("GET", "/api/system/tls", &["-H", &format!("Cookie: {cookie}")]);
    assert_eq!(info.status, 200, "{}", info.body);
    let v = info.json();
    assert_eq!(v["source"], "self-signed", "{v}");
    assert!(v["subject"].as_str().is_some_and(|s| s.starts_with("CN=OxiNVR")), "{v}");
    assert_eq!(v["fingerprint_sha256"].as_str(), Some(b.served_fingerprint().as_str()), "{v}");
    assert!(v.get("private_key").is_none() && !info.body.contains("PRIVATE"), "{v}");
    let streams = b.https("GET", "/api/streams", &["-H", &format!("Cookie: {cookie}")]);
    assert_eq!(streams.status, 200, "{}", streams.body);
    // The fingerprint is in the recorder's log too, and in the UART shell's
    // `status` (which reaches the recorder over plain HTTP with the console token).
    let fp = v["fingerprint_sha256"].as_str().unwrap_or("?");
    assert!(b.nvr.log().contains(fp));
    let text = common::nvr::shell_output(&b.nvr.config, "status\nexit\n");
    assert!(text.contains("recorder: running"), "{text}");
    assert!(text.contains(&format!("https: port {}, self-signed certificate", b.tls_port)), "{text}");
    assert!(text.contains(&format!("SHA-256 {fp}")), "{text}");
}

#[test]
fn plain_http_redirects_to_https_except_health_and_the_console() {
    let tmp = tempfile::tempdir().expect("tmp");
    let b = start(tmp.path(), 2);
    let port = b.nvr.port;
    for (method, path) in [("GET", "/"), ("GET", "/api/streams?x=1"), ("POST", "/api/auth/login")] {
        let r = http(port, method, path, &[("Content-Type", "application/json")], b"{}").expect("HTTP");
        assert_eq!(r.status, 308, "{method} {path}: {}", r.text());
        assert_eq!(r.header("Location"), Some(format!("https://127.0.0.1:{}{path}", b.tls_port).as_str()));
    }
    // A password sent over plain HTTP is not looked at: 308, no session.
    add_admin(&b, "ann");
    let body = serde_json::json!({ "username": "ann", "password": PASSWORD }).to_string();
    let r =
        http(port, "POST", "/api/auth/login", &[("Content-Type", "application/json")], body.as_bytes()).expect("login");
    assert_eq!(r.status, 308, "{}", r.text());
    assert!(r.header("Set-Cookie").is_none());
    // Monitoring and the console (UART shell) keep plain HTTP on the box.
    assert_eq!(http(port, "GET", "/api/health", &[], b"").expect("health").status, 200);
    assert_eq!(b.nvr.get("/api/system/tls").expect("console").status, 200);
    // curl -L follows to HTTPS (the box's certificate trusted) and gets the page.
    let r = curl(&[
        "-L",
        "--cacert",
        &b.cert().display().to_string(),
        "--resolve",
        &format!("localhost:{}:127.0.0.1", b.tls_port),
        &format!("http://localhost:{port}/"),
    ]);
    assert!(r.body.contains("<html") || r.body.contains("<!doctype"), "{}", r.head);
}

/// A P-256 pair made by openssl: (certificate, key) PEM files.
fn openssl_pair(dir: &Path, name: &str, cn: &str) -> (String, String) {
    let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let st = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30"])
        .args(["-subj", &format!("/CN={cn}"), "-addext", "subjectAltName=DNS:localhost", "-keyout"])
        .arg(&k)
        .arg("-out")
        .arg(&c)
        .stderr(Stdio::null())
        .status()
        .expect("openssl req");
    assert!(st.success());
    (std::fs::read_to_string(c).expect("cert"), std::fs::read_to_string(k).expect("key"))
}

#[test]
fn an_uploaded_pair_is_served_to_new_connections_and_a_mismatched_one_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let b = start(tmp.path(), 2);
    let before = b.served_fingerprint();
    add_admin(&b, "ann");
    let (cookie, answer) = login(&b, "ann");
    let csrf = answer.json()["csrf"].as_str().expect("a CSRF token").to_string();
    let put = |body: &serde_json::Value| {
        let (cookie, csrf) = (format!("Cookie: {cookie}"), format!("X-CSRF-Token: {csrf}"));
        let json = ["-H", "Content-Type: application/json", "--data-binary", &body.to_string()].map(String::from);
        let mut args = vec!["-H", &cookie, "-H", &csrf];
        args.extend(json.iter().map(String::as_str));
        b.https("PUT", "/api/system/tls", &args)
    };
    let (cert_a, key_a) = openssl_pair(tmp.path(), "a", "nvr.example");
    let (_, key_b) = openssl_pair(tmp.path(), "b", "other.example");
    // Refused, each with what is wrong; the served certificate is unchanged.
    let r = put(&serde_json::json!({ "certificate": cert_a, "private_key": key_b }));
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.json()["error"].as_str().is_some_and(|e| e.contains("does not match the certificate")), "{}", r.body);
    let r = put(&serde_json::json!({ "certificate": "not a certificate", "private_key": key_a }));
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.json()["error"].as_str().is_some_and(|e| e.starts_with("certificate")), "{}", r.body);
    let r = put(&serde_json::json!({ "certificate": cert_a }));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["error"].as_str().is_some_and(|e| e.contains("private_key")), "{}", r.body);
    assert_eq!(b.served_fingerprint(), before);
    // Accepted: new connections get it at once, and it stays after a restart.
    let r = put(&serde_json::json!({ "certificate": cert_a, "private_key": key_a }));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!((v["source"].as_str(), v["subject"].as_str()), (Some("uploaded"), Some("CN=nvr.example")), "{v}");
    let uploaded = fingerprint_of_pem(&cert_a, tmp.path());
    assert_eq!(v["fingerprint_sha256"].as_str(), Some(uploaded.as_str()));
    assert_eq!(b.served_fingerprint(), uploaded);
    assert_eq!(mode(&b.nvr.data_dir.join("tls/key.pem")), 0o600);
    let Box_ { nvr, tls_port, dir } = b;
    let (config, data_dir, port) = (nvr.config.clone(), nvr.data_dir.clone(), nvr.port);
    nvr.terminate(Duration::from_secs(20));
    let nvr = Oxinvr::restart(&config, &data_dir, port);
    wait_listening(tls_port);
    let b = Box_ { nvr, tls_port, dir };
    assert_eq!(b.served_fingerprint(), uploaded);
    assert_eq!(b.nvr.json("/api/system/tls")["source"], "uploaded");
}

#[test]
fn a_client_that_never_sends_a_client_hello_holds_no_worker_and_is_dropped() {
    let tmp = tempfile::tempdir().expect("tmp");
    // One worker per server: a handshake on a worker would block it at once.
    let b = start(tmp.path(), 1);
    let silent: Vec<TcpStream> =
        (0..8).map(|_| TcpStream::connect(("127.0.0.1", b.tls_port)).expect("connect")).collect();
    // Half a ClientHello record header, then nothing.
    let mut partial = TcpStream::connect(("127.0.0.1", b.tls_port)).expect("connect");
    std::io::Write::write_all(&mut partial, &[0x16, 0x03]).expect("write");
    let began = Instant::now();
    // Meanwhile HTTPS and HTTP both answer.
    let h = b.https("GET", "/api/health", &[]);
    assert_eq!(h.status, 200, "{}", h.body);
    assert!(began.elapsed() < Duration::from_secs(HEAD_TIMEOUT_S), "health waited for the silent clients");
    assert_eq!(http(b.nvr.port, "GET", "/api/health", &[], b"").expect("http").status, 200);
    // Each is closed by the server once the head deadline has passed.
    for mut s in silent.into_iter().chain([partial]) {
        s.set_read_timeout(Some(Duration::from_secs(HEAD_TIMEOUT_S + 5))).expect("timeout");
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf);
        assert!(
            matches!(n, Ok(0)) || n.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "{n:?}"
        );
        let after = began.elapsed();
        assert!(after >= Duration::from_secs(HEAD_TIMEOUT_S) - Duration::from_millis(500), "dropped early: {after:?}");
    }
    assert!(began.elapsed() < Duration::from_secs(HEAD_TIMEOUT_S + 5));
    assert_eq!(b.https("GET", "/api/health", &[]).status, 200);
}

/// A rustls client trusting only the box's certificate (its name: localhost).
fn tls_connect(b: &Box_) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(b.cert()).expect("cert.pem") {
        roots.add(c.expect("a certificate")).expect("trusted");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("client");
    let sock = TcpStream::connect(("127.0.0.1", b.tls_port)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    rustls::StreamOwned::new(conn, sock)
}

#[test]
fn live_view_plays_over_https() {
    use oxinvr::web::websocket::{self, FrameReader, Message, Opcode};
    use std::io::Write;
    let tmp = tempfile::tempdir().expect("tmp");
    let cam = common::Camera::start(&["--fps", "15"]);
    let tls_port = free_port();
    let body = format!(
        "[storage]\ndata_dir = \"{{DATA}}\"\n[web]\nlisten = \"127.0.0.1:{{PORT}}\"\ntls = true\n\
         tls_listen = \"127.0.0.1:{tls_port}\"\n[[streams]]\nname = \"cam\"\nurl = \"{}\"\nbitrate_kbps = 1000\n",
        cam.url("h264")
    );
    let nvr = Oxinvr::start(tmp.path(), &body);
    wait_listening(tls_port);
    nvr.wait_for("/api/streams/cam", Duration::from_secs(30), "cam streaming", |v| v["status"]["state"] == "streaming");
    let b = Box_ { nvr, tls_port, dir: tmp.path().to_path_buf() };
    let mut s = tls_connect(&b);
    let (auth_k, auth_v) = b.nvr.auth_header();
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let req = format!(
        "GET /api/streams/cam/live HTTP/1.1\r\nHost: localhost:{tls_port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n{auth_k}: {auth_v}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).expect("send the upgrade");
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = s.read(&mut buf).expect("read the answer");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut reader = FrameReader::client(64 << 20);
    reader.push(&raw[end + 4..]);
    let mut next = |s: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>| {
        reader.read_message(s).unwrap_or_else(|e| panic!("live message over TLS: {e}"))
    };
    let Message::Text(init) = next(&mut s) else { panic!("the init text first") };
    assert!(init.contains("\"init\""), "{init}");
    let Message::Binary(mut file) = next(&mut s) else { panic!("the init segment") };
    assert_eq!(&file[4..8], b"ftyp");
    // A ping is answered through TLS too (the thread reads the client there).
    let mut ping = Vec::new();
    websocket::put_masked_frame(&mut ping, Opcode::Ping, b"tls?", websocket::random_mask());
    s.write_all(&ping).expect("ping");
    let (mut fragments, mut pong) = (0, false);
    while fragments < 30 || !pong {
        match next(&mut s) {
            Message::Binary(f) => {
                file.extend_from_slice(&f);
                fragments += 1;
            }
            Message::Pong(p) => pong = p == b"tls?",
            Message::Text(t) => panic!("unexpected text: {t}"),
            _ => {}
        }
        assert!(fragments < 200, "no pong after {fragments} fragments");
    }
    let path = tmp.path().join("live-over-tls.mp4");
    std::fs::write(&path, &file).expect("write");
    common::decode_ok(&path).expect("what came over TLS decodes");
    assert!(common::frame_count(&path) >= 30, "{} frames", common::frame_count(&path));
}
