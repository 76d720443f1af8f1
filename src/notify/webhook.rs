//! Webhooks: each event notice (began, ended, deleted) POSTed as JSON to each
//! `[[webhooks]]` URL whose stream filter matches, signed with HMAC-SHA256
//! (`X-OxiNVR-Signature: t=<unix seconds>,v1=<hex>` over `"<t>." + body`), so
//! a receiver can check who sent it and refuse replays by the time.
//!
//! Invariants:
//! - Each hook has its own thread `webhook-N` and its own subscription to the
//!   events hub, whose queue is the hook's queue: bounded (`events::QUEUE`
//!   notices), the oldest dropped and counted when full. The store and the
//!   detector only ever take that queue's lock, so a receiver that is slow,
//!   down or never answers blocks nothing but its own hook.
//! - One delivery at a time per hook, in order: every attempt (connect, TLS,
//!   request, the answer's head) ends within `timeout_seconds`; a failure is
//!   retried after 1 s doubling to 60 s for up to [`RETRY_FOR`] after the
//!   notice was taken, then dropped and counted (`given_up`). A 2xx accepts
//!   it; any other 4xx but 408 and 429 refuses it at once (retrying cannot
//!   help). Each attempt is signed afresh with its own time.
//! - The secret is never shown (status, log, errors) and is zeroed when freed.
//! - Nothing is persisted: notices waiting at a stop are lost (the events
//!   themselves are in the index).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::base::clock::Clock;
use crate::config::WebhookConfig;
use crate::events::{Hub, Notice, Subscription};
use crate::index::db::{EventKind, EventRow};

/// How long a delivery is retried after it was taken from the queue.
pub const RETRY_FOR: Duration = Duration::from_secs(600);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// An idle hook looks for a test request this often.
const POLL: Duration = Duration::from_millis(250);
/// Finished deliveries kept for the status.
const RECENT: usize = 5;
/// The header with the signature.
pub const SIGNATURE_HEADER: &str = "X-OxiNVR-Signature";

/// How the web layer shows an event (the API's JSON of it).
pub type Render = Arc<dyn Fn(&EventRow) -> Value + Send + Sync>;

/// A `[[webhooks]]` entry made ready: the URL parsed, the secret read, TLS set up.
struct Target {
    url: url::Url,
    secret: Zeroizing<Vec<u8>>,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
}

impl Target {
    /// Why the entry cannot be used, naming the setting (`key` is `webhooks[i]`).
    fn new(c: &WebhookConfig, key: &str) -> Result<Target, String> {
        let url = crate::config::webhook_url(&c.url).map_err(|e| format!("{key}.url: {e}"))?;
        let secret = if c.secret_file.is_empty() {
            Zeroizing::new(c.secret.as_bytes().to_vec())
        } else {
            let text = Zeroizing::new(
                std::fs::read_to_string(&c.secret_file)
                    .map_err(|e| format!("{key}.secret_file {}: cannot read: {e}", c.secret_file))?,
            );
            Zeroizing::new(text.trim().as_bytes().to_vec())
        };
        if secret.len() < 16 {
            return Err(format!("{key}: the secret must be at least 16 bytes"));
        }
        let tls = match url.scheme() {
            "https" => Some(Arc::new(crate::base::httpclient::tls_client(&c.ca_file, &format!("{key}.ca_file"))?)),
            _ => None,
        };
        let timeout = Duration::from_secs(u64::from(if c.timeout_seconds == 0 { 5 } else { c.timeout_seconds }));
        Ok(Target { url, secret, tls, timeout })
    }
}

/// The signature header's value for `body` sent at `t` (Unix seconds).
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(format!("{t}.").as_bytes());
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// One attempt's or delivery's outcome, as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// `<event id>-<change>` (`test-<ms>` for a test): the same for every
    /// attempt of a delivery (header `X-OxiNVR-Delivery`), so receivers can drop repeats.
    pub delivery: String,
    /// `began`, `ended`, `deleted` or `test`.
    pub change: &'static str,
    /// When the attempt ended, epoch milliseconds.
    pub time_ms: i64,
    pub ok: bool,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// What went wrong, if anything (never the secret).
    pub error: Option<String>,
    /// Attempts made so far.
    pub attempts: u32,
}

/// A hook as `GET /api/webhooks` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub name: String,
    /// The URL without its query (which may hold a receiver's token).
    pub url: String,
    /// Only these streams' events; empty: every stream.
    pub streams: Vec<String>,
    /// `idle`, `delivering`, `retrying`, `stopped`, or `failed` (cannot start; `error` says why).
    pub state: &'static str,
    pub error: Option<String>,
    /// Notices waiting (the queue, the delivery in hand and a test).
    pub queued: usize,
    /// Notices dropped from a full queue.
    pub dropped: u64,
    pub delivered: u64,
    /// Deliveries given up (retried for 10 minutes, or refused with a 4xx).
    pub failed: u64,
    /// The last attempt.
    pub last: Option<Outcome>,
    /// The last finished deliveries, newest first.
    pub recent: Vec<Outcome>,
}

/// What one delivery carries.
struct Delivery {
    id: String,
    change: &'static str,
    body: Vec<u8>,
}

struct HookState {
    state: &'static str,
    error: Option<String>,
    in_hand: bool,
    test: Option<Delivery>,
    delivered: u64,
    failed: u64,
    last: Option<Outcome>,
    recent: VecDeque<Outcome>,
}

struct Hook {
    name: String,
    shown_url: String,
    streams: Vec<String>,
    /// None for a hook that cannot run: nothing would take its notices.
    sub: Option<Subscription>,
    st: Mutex<HookState>,
}

impl Hook {
    fn st(&self) -> MutexGuard<'_, HookState> {
        lock(&self.st)
    }

    fn wants(&self, e: &EventRow) -> bool {
        self.streams.is_empty() || self.streams.contains(&e.stream)
    }

    fn status(&self) -> Status {
        let st = self.st();
        Status {
            name: self.name.clone(),
            url: self.shown_url.clone(),
            streams: self.streams.clone(),
            state: st.state,
            error: st.error.clone(),
            queued: self.sub.as_ref().map_or(0, Subscription::waiting)
                + usize::from(st.in_hand)
                + usize::from(st.test.is_some()),
            dropped: self.sub.as_ref().map_or(0, Subscription::dropped),
            delivered: st.delivered,
            failed: st.failed,
            last: st.last.clone(),
            recent: st.recent.iter().cloned().collect(),
        }
    }

    fn finish(&self, outcome: Outcome) {
        let mut st = self.st();
        if outcome.ok {
            st.delivered += 1;
        } else {
            st.failed += 1;
        }
        st.recent.push_front(outcome);
        st.recent.truncate(RECENT);
        st.in_hand = false;
        st.state = "idle";
    }
}

/// The stop signal every hook thread waits on.
#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    cv: Condvar,
}

impl Stop {
    /// Waits `d` or until stopped; true once stopped.
    fn wait(&self, d: Duration) -> bool {
        let g = lock(&self.stopped);
        let (g, _) = self.cv.wait_timeout_while(g, d, |s| !*s).unwrap_or_else(|p| p.into_inner());
        *g
    }

    fn is_set(&self) -> bool {
        *lock(&self.stopped)
    }
}

/// Why a test cannot be sent.
#[derive(Debug, PartialEq, Eq)]
pub enum TestError {
    NoSuchHook,
    /// The hook could not start (its error says why).
    Failed(String),
}

/// The running webhooks.
pub struct Webhooks {
    hooks: Vec<Arc<Hook>>,
    clock: Arc<dyn Clock>,
    render: Render,
    stop: Arc<Stop>,
}

impl Webhooks {
    /// Subscribes one hook per entry of `configs` to `hub` and starts its thread.
    /// An entry that cannot be used (its secret file, its CA) is a hook in
    /// state `failed` that says why; the others run.
    pub fn spawn(
        configs: &[WebhookConfig],
        hub: &Hub,
        render: Render,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Arc<Webhooks>> {
        let stop = Arc::new(Stop::default());
        let mut hooks = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            let mut shown = crate::config::webhook_url(&c.url).map_or_else(|_| c.url.clone(), |u| u.to_string());
            if let Some(q) = shown.find('?') {
                shown.truncate(q);
            }
            let target = Target::new(c, &format!("webhooks[{i}]"));
            let failed = target.as_ref().err().cloned();
            let hook = Arc::new(Hook {
                name: c.name_or(i + 1),
                shown_url: shown,
                streams: c.streams.clone(),
                sub: failed.is_none().then(|| hub.subscribe()),
                st: Mutex::new(HookState {
                    state: if failed.is_some() { "failed" } else { "idle" },
                    error: failed,
                    in_hand: false,
                    test: None,
                    delivered: 0,
                    failed: 0,
                    last: None,
                    recent: VecDeque::new(),
                }),
            });
            hooks.push(hook.clone());
            let target = match target {
                Ok(t) => t,
                Err(e) => {
                    log::error!("webhook {}: {e}; it sends nothing", hook.name);
                    continue;
                }
            };
            log::info!("webhook {}: events go to {}", hook.name, hook.shown_url);
            let (stop, clock, render) = (stop.clone(), clock.clone(), render.clone());
            std::thread::Builder::new().name(format!("webhook-{}", i + 1)).stack_size(256 << 10).spawn(move || {
                crate::base::memory::set_subsystem(crate::base::memory::Subsystem::Webhooks);
                while !stop.is_set() {
                    if let Some(d) = next(&hook, &render) {
                        deliver(&hook, &target, &*clock, &stop, d);
                    }
                }
            })?;
        }
        Ok(Arc::new(Webhooks { hooks, clock, render, stop }))
    }

    pub fn status(&self) -> Vec<Status> {
        self.hooks.iter().map(|h| h.status()).collect()
    }

    /// Queues a test event for hook `name` (replacing a test not yet sent);
    /// the delivery's id.
    pub fn test(&self, name: &str) -> Result<String, TestError> {
        let hook = self.hooks.iter().find(|h| h.name == name).ok_or(TestError::NoSuchHook)?;
        let now = self.clock.now_ms();
        let event = EventRow {
            id: 0,
            stream: hook.streams.first().cloned().unwrap_or_else(|| "test".into()),
            kind: EventKind::Manual,
            label: "test".into(),
            score: 1.0,
            zones: Vec::new(),
            start_ms: now,
            end_ms: Some(now),
            best_box: None,
            snapshot: None,
            thumbnail: None,
        };
        let id = format!("test-{now}");
        let body = envelope(&id, "test", &hook.name, &(self.render)(&event));
        let mut st = hook.st();
        if st.state == "failed" {
            return Err(TestError::Failed(st.error.clone().unwrap_or_default()));
        }
        st.test = Some(Delivery { id: id.clone(), change: "test", body });
        Ok(id)
    }

    /// Tells every hook thread to stop (within `POLL`, or after the attempt in hand).
    pub fn stop(&self) {
        *lock(&self.stop.stopped) = true;
        self.stop.cv.notify_all();
        for h in &self.hooks {
            let mut st = h.st();
            if st.state != "failed" {
                st.state = "stopped";
            }
        }
    }
}

/// The next delivery of `hook`: a test first, then the queue's notices its filter takes.
fn next(hook: &Hook, render: &Render) -> Option<Delivery> {
    if let Some(t) = hook.st().test.take() {
        return Some(t);
    }
    let n = hook.sub.as_ref()?.next(POLL)?;
    hook.wants(&n.event).then(|| delivery(hook, render, &n))
}

fn delivery(hook: &Hook, render: &Render, n: &Notice) -> Delivery {
    let change = n.change.as_str();
    let id = format!("{}-{change}", n.event.id);
    let body = envelope(&id, change, &hook.name, &render(&n.event));
    Delivery { id, change, body }
}

/// The JSON a receiver gets.
fn envelope(id: &str, change: &str, hook: &str, event: &Value) -> Vec<u8> {
    json!({ "type": format!("event.{change}"), "delivery": id, "hook": hook, "event": event }).to_string().into_bytes()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sends `d` until accepted, refused, older than [`RETRY_FOR`], or stopped.
fn deliver(hook: &Hook, target: &Target, clock: &dyn Clock, stop: &Stop, d: Delivery) {
    let taken = Instant::now();
    let mut backoff = BACKOFF_MIN;
    let mut attempts = 0;
    {
        let mut st = hook.st();
        st.in_hand = true;
        st.state = "delivering";
    }
    loop {
        attempts += 1;
        let t = clock.now_ms().div_euclid(1000);
        let headers = [
            ("Content-Type", "application/json".to_string()),
            (SIGNATURE_HEADER, signature(&target.secret, t, &d.body)),
            ("X-OxiNVR-Delivery", d.id.clone()),
            ("X-OxiNVR-Event", d.change.to_string()),
        ];
        let result = crate::base::httpclient::post(&target.url, &headers, &d.body, target.timeout, target.tls.as_ref());
        let (ok, status, error) = match result {
            Ok(s) if (200..300).contains(&s) => (true, Some(s), None),
            Ok(s) => (false, Some(s), Some(format!("the receiver answered HTTP {s}"))),
            Err(e) => (false, None, Some(e)),
        };
        let outcome =
            Outcome { delivery: d.id.clone(), change: d.change, time_ms: clock.now_ms(), ok, status, error, attempts };
        hook.st().last = Some(outcome.clone());
        let refused = status.is_some_and(|s| (400..500).contains(&s) && s != 408 && s != 429);
        let too_old = taken.elapsed() + backoff > RETRY_FOR;
        if stop.is_set() && !ok {
            return;
        }
        let why = outcome.error.as_deref().unwrap_or_default();
        if ok || refused || too_old {
            if ok && attempts > 1 {
                log::info!("webhook {}: delivery {} accepted at attempt {attempts}", hook.name, d.id);
            } else if !ok {
                let after = if refused { "refused" } else { "given up" };
                log::warn!("webhook {}: delivery {} {after} after {attempts} attempt(s): {why}", hook.name, d.id);
            }
            hook.finish(outcome);
            return;
        }
        if attempts == 1 {
            log::warn!("webhook {}: delivery {} failed: {why}; retrying for up to {RETRY_FOR:?}", hook.name, d.id);
        }
        hook.st().state = "retrying";
        if stop.wait(backoff) {
            return;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::clock::SimulatedClock;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        // Python: hmac.new(key, b"1800000000." + body, hashlib.sha256).hexdigest()
        let sig = signature(b"0123456789abcdef", 1_800_000_000, br#"{"type":"event.began"}"#);
        assert_eq!(sig, "t=1800000000,v1=48cd3da104b8ecce10f3c3422fb4114076727cf5dfc3bb2280a70ff5d25c5201");
    }

    /// Each request's head and body.
    type Requests = Vec<(String, Vec<u8>)>;

    /// Answers each request with the next status of `answers`.
    fn receiver(answers: Vec<u16>) -> (String, std::thread::JoinHandle<Requests>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook?token=t", l.local_addr().expect("addr"));
        let t = std::thread::spawn(move || {
            let mut got = Vec::new();
            for status in answers {
                let (s, _) = l.accept().expect("accept");
                let mut r = BufReader::new(s);
                let mut head = String::new();
                while !head.ends_with("\r\n\r\n") {
                    assert!(r.read_line(&mut head).expect("head") > 0, "{head}");
                }
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.parse().ok())
                    .expect("length");
                let mut body = vec![0; len];
                r.read_exact(&mut body).expect("body");
                write!(r.get_mut(), "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").expect("answer");
                got.push((head, body));
            }
            got
        });
        (url, t)
    }

    #[test]
    fn a_test_event_is_retried_until_accepted_and_a_refusal_is_final() {
        let (url, rx) = receiver(vec![503, 200, 401]);
        let cfg = WebhookConfig { url, secret: "0123456789abcdef".into(), ..Default::default() };
        let clock: Arc<dyn Clock> = Arc::new(SimulatedClock::new(1_800_000_000_000));
        let hub = Hub::default();
        let render: Render = Arc::new(|e: &EventRow| json!({ "id": e.id, "label": e.label }));
        let hooks = Webhooks::spawn(&[cfg], &hub, render, clock).expect("spawn");
        let status = || hooks.status().remove(0);
        assert_eq!((status().name.as_str(), status().url.as_str()), ("webhook-1", status().url.as_str()));
        assert!(!status().url.contains("token"), "the query is not shown");
        hooks.test("webhook-1").expect("queued");
        assert_eq!(hooks.test("nope"), Err(TestError::NoSuchHook));
        let until = Instant::now() + Duration::from_secs(20);
        while status().delivered == 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        let s = status();
        assert_eq!((s.delivered, s.failed, s.last.as_ref().map(|l| l.attempts)), (1, 0, Some(2)), "{s:?}");
        hooks.test("webhook-1").expect("queued");
        while status().failed == 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        let s = status();
        assert_eq!((s.failed, s.recent[0].status, s.recent[0].attempts), (1, Some(401), 1), "refused at once: {s:?}");
        hooks.stop();
        let got = rx.join().expect("receiver");
        let (head, body) = &got[0];
        assert!(head.starts_with("POST /hook?token=t HTTP/1.1\r\n"), "{head}");
        let v: Value = serde_json::from_slice(body).expect("json");
        assert_eq!((v["type"].as_str(), v["event"]["label"].as_str()), (Some("event.test"), Some("test")), "{v}");
        let sig = head.lines().find_map(|l| l.strip_prefix("X-OxiNVR-Signature: ")).expect("signed");
        assert_eq!(sig, signature(b"0123456789abcdef", 1_800_000_000, body));
        assert_eq!(got[0].1, got[1].1, "a retry sends the same body");
    }

    /// A CA (its PEM) and a `localhost` server config with a certificate it signed.
    fn ca_and_server(name: &str) -> (String, Arc<rustls::ServerConfig>) {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, PKCS_ECDSA_P256_SHA256};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("ca key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let leaf =
            CertificateParams::new(vec!["localhost".to_string()]).expect("params").signed_by(&key, &ca).expect("leaf");
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], der.into())
            .expect("server config");
        (ca.pem(), Arc::new(server))
    }

    /// The head and as many body bytes as its Content-Length says have arrived.
    fn whole_request(got: &[u8]) -> bool {
        let text = String::from_utf8_lossy(got);
        let Some(end) = text.find("\r\n\r\n") else { return false };
        let len = text[..end].lines().find_map(|l| l.strip_prefix("Content-Length: ")).and_then(|v| v.parse().ok());
        len.is_some_and(|n: usize| got.len() >= end + 4 + n)
    }

    #[test]
    fn https_trusts_the_configured_ca_and_names_a_foreign_one() {
        let (ca_pem, server) = ca_and_server("receiver's CA");
        let (foreign_pem, _) = ca_and_server("another CA");
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca_file, foreign_file) = (dir.path().join("ca.pem"), dir.path().join("foreign.pem"));
        std::fs::write(&ca_file, ca_pem).expect("ca file");
        std::fs::write(&foreign_file, foreign_pem).expect("foreign file");
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("https://localhost:{}/in", l.local_addr().expect("addr").port());
        let tls_server = std::thread::spawn(move || {
            let mut bodies = Vec::new();
            for conn in l.incoming().take(2) {
                let tcp = conn.expect("accept");
                let tls = rustls::ServerConnection::new(server.clone()).expect("server");
                let mut s = rustls::StreamOwned::new(tls, tcp);
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                // The foreign CA's client gives up in the handshake: this read fails.
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    got.extend_from_slice(&buf[..n]);
                    if whole_request(&got) {
                        let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
                        let _ = s.flush();
                        break;
                    }
                }
                bodies.push(String::from_utf8_lossy(&got).into_owned());
            }
            bodies
        });
        let hook = |name: &str, ca: &std::path::Path| WebhookConfig {
            name: name.into(),
            url: url.clone(),
            secret: "0123456789abcdef".into(),
            ca_file: ca.display().to_string(),
            ..Default::default()
        };
        let clock: Arc<dyn Clock> = Arc::new(SimulatedClock::new(1_800_000_000_000));
        let render: Render = Arc::new(|e: &EventRow| json!({ "id": e.id }));
        let configs = [hook("ours", &ca_file), hook("theirs", &foreign_file)];
        let hooks = Webhooks::spawn(&configs, &Hub::default(), render, clock).expect("spawn");
        hooks.test("ours").expect("queued");
        let until = Instant::now() + Duration::from_secs(20);
        while hooks.status()[0].delivered == 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        hooks.test("theirs").expect("queued");
        while hooks.status()[1].last.is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        let (ours, theirs) = (hooks.status().remove(0), hooks.status().remove(1));
        hooks.stop();
        assert_eq!((ours.delivered, ours.last.as_ref().and_then(|l| l.status)), (1, Some(204)), "{ours:?}");
        let why = theirs.last.as_ref().and_then(|l| l.error.clone()).unwrap_or_default();
        assert!(why.contains("invalid peer certificate: UnknownIssuer"), "{why}");
        let bodies = tls_server.join().expect("server");
        assert!(bodies[0].starts_with("POST /in HTTP/1.1\r\nHost: localhost:"), "{}", bodies[0]);
    }
}
