//! Security of the HTTP API against the real binary (`oxinvr run` with its own
//! temporary data dir and config, raw HTTP/1.1 from tests/common): login
//! lockout, CSRF, cookie flags, session expiry and revocation, path traversal,
//! secrets never shown, oversized bodies, the role of every documented route,
//! and TOTP end to end.
//!
//! The binary is `$OXINVR_BIN` if set, else the one cargo built.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::ops::Deref;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::nvr::{http, send_raw, Oxinvr, Response, TempOxinvr};
use oxinvr::auth::totp;
use serde_json::{json, Value};

/// The first admin's password in every test.
const PASSWORD: &str = "correct horse battery";

/// A running `oxinvr run` in its own temporary directory.
struct Nvr(TempOxinvr);

impl Deref for Nvr {
    type Target = Oxinvr;
    fn deref(&self) -> &Oxinvr {
        &self.0
    }
}

/// How a request proves who sends it.
#[derive(Clone, Copy)]
enum Cred<'a> {
    Anonymous,
    /// The console token (an admin credential).
    Console,
    /// The session cookie and its own CSRF token.
    Session(&'a Session),
    /// The session cookie without any `X-CSRF-Token`.
    SessionNoCsrf(&'a Session),
    /// The session cookie with the given `X-CSRF-Token`.
    SessionCsrf(&'a Session, &'a str),
    /// `Authorization: Bearer <key>`.
    Key(&'a str),
}

/// A login session: the cookie's value and the session's CSRF token.
#[derive(Clone, Debug)]
struct Session {
    token: String,
    csrf: String,
}

impl Session {
    /// Reads the session out of a login/setup answer (asserting it is one).
    fn of(r: &Response) -> Session {
        let set = r.header("Set-Cookie").unwrap_or_else(|| panic!("no Set-Cookie in {:?}", r.headers));
        let token = cookie_value(set);
        assert!(token.len() >= 40, "short session token {token:?}");
        let csrf = r.json()["csrf"].as_str().unwrap_or_else(|| panic!("no csrf in {}", r.text())).to_string();
        assert!(csrf.len() >= 40 && csrf != token, "csrf {csrf:?}");
        Session { token, csrf }
    }
}

/// The value of `oxinvr_session` in a `Set-Cookie` header.
fn cookie_value(set_cookie: &str) -> String {
    let first = set_cookie.split(';').next().unwrap_or("").trim();
    first
        .strip_prefix("oxinvr_session=")
        .unwrap_or_else(|| panic!("Set-Cookie is not the session cookie: {set_cookie:?}"))
        .to_string()
}

/// The attributes of a `Set-Cookie` header after the name=value pair, trimmed.
fn cookie_attrs(set_cookie: &str) -> Vec<String> {
    set_cookie.split(';').skip(1).map(|a| a.trim().to_string()).collect()
}

impl Nvr {
    /// Starts with `web` as extra lines of the `[web]` section (PBKDF2 is kept
    /// cheap); the appliance paths point into the temp dir so nothing outside
    /// it is ever touched (an OTA upload is refused: not an appliance).
    fn start(web: &str) -> Nvr {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let rings = d.join("rings");
        std::fs::create_dir_all(&rings).expect("ring dir");
        let p = |name: &str| format!("{:?}", d.join(name).display().to_string());
        let config = format!(
            "[storage]\ndata_dir = \"{{DATA}}\"\nring_dir = {}\n\n\
             [web]\nlisten = \"127.0.0.1:{{PORT}}\"\nthreads = 4\n{web}\n\n\
             [system]\nslot_a = {}\nslot_b = {}\nboot_env = {}\nota_public_key = {}\nnetwork_interfaces = {}\n",
            p("rings"),
            p("slot_a"),
            p("slot_b"),
            p("boot.env"),
            p("ota.pub"),
            p("interfaces"),
        );
        let config = if web.contains("pbkdf2_iterations") {
            config
        } else {
            config.replace("threads = 4\n", "threads = 4\npbkdf2_iterations = 1000\n")
        };
        Nvr(TempOxinvr::start(dir, &config))
    }

    /// One request; a JSON `body` is sent with `Content-Type: application/json`.
    fn call(&self, cred: Cred, method: &str, path: &str, body: Option<&Value>, extra: &[(&str, &str)]) -> Response {
        let mut h: Vec<(String, String)> = Vec::new();
        match cred {
            Cred::Anonymous => {}
            Cred::Console => h.push(self.auth_header()),
            Cred::Session(s) => {
                h.push(("Cookie".into(), format!("oxinvr_session={}", s.token)));
                h.push(("X-CSRF-Token".into(), s.csrf.clone()));
            }
            Cred::SessionNoCsrf(s) => h.push(("Cookie".into(), format!("oxinvr_session={}", s.token))),
            Cred::SessionCsrf(s, csrf) => {
                h.push(("Cookie".into(), format!("oxinvr_session={}", s.token)));
                h.push(("X-CSRF-Token".into(), csrf.to_string()));
            }
            Cred::Key(k) => h.push(("Authorization".into(), format!("Bearer {k}"))),
        }
        let bytes = body.map(|b| serde_json::to_vec(b).expect("json")).unwrap_or_default();
        if body.is_some() {
            h.push(("Content-Type".into(), "application/json".into()));
        }
        let mut all: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        all.extend_from_slice(extra);
        http(self.port, method, path, &all, &bytes).unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()))
    }

    fn raw(&self, bytes: &[u8]) -> Response {
        send_raw(self.port, bytes).unwrap_or_else(|e| panic!("raw request: {e}\n{}", self.log()))
    }

    /// POST /api/auth/setup (the first admin); asserts 201.
    fn setup(&self, user: &str) -> Session {
        let r = self.call(Cred::Anonymous, "POST", "/api/auth/setup", Some(&creds(user, PASSWORD)), &[]);
        assert_eq!(r.status, 201, "setup: {}", r.text());
        Session::of(&r)
    }

    fn login_as(&self, user: &str, password: &str, extra: &[(&str, &str)]) -> Response {
        self.call(Cred::Anonymous, "POST", "/api/auth/login", Some(&creds(user, password)), extra)
    }

    /// Logs in; asserts 200.
    fn login(&self, user: &str, password: &str) -> Session {
        let r = self.login_as(user, password, &[]);
        assert_eq!(r.status, 200, "login {user}: {}", r.text());
        Session::of(&r)
    }

    /// Creates a user with the console token; asserts 201.
    fn add_user(&self, name: &str, role: &str, password: &str) {
        let body = json!({ "username": name, "password": password, "role": role });
        let r = self.call(Cred::Console, "POST", "/api/users", Some(&body), &[]);
        assert_eq!(r.status, 201, "create {name}: {}", r.text());
    }

    /// A new API key of the session's user (POST /api/keys with the CSRF token).
    fn new_key(&self, s: &Session, name: &str) -> (i64, String) {
        let r = self.call(Cred::Session(s), "POST", "/api/keys", Some(&json!({ "name": name })), &[]);
        assert_eq!(r.status, 201, "new key: {}", r.text());
        let v = r.json();
        let key = v["key"].as_str().expect("key").to_string();
        assert!(key.starts_with("oxk_") && key.len() > 40, "{key}");
        (v["id"].as_i64().expect("id"), key)
    }

    /// The status of GET /api/auth/sessions with `cred` (200 while a session lives, 401 after).
    fn session_status(&self, s: &Session) -> u16 {
        self.call(Cred::SessionNoCsrf(s), "GET", "/api/auth/sessions", None, &[]).status
    }

    /// The id of the session `s` (the one marked current in its own list).
    fn session_id(&self, s: &Session) -> i64 {
        let r = self.call(Cred::Session(s), "GET", "/api/auth/sessions", None, &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let list = v["sessions"].as_array().expect("sessions").clone();
        let current: Vec<&Value> = list.iter().filter(|x| x["current"] == json!(true)).collect();
        assert_eq!(current.len(), 1, "exactly one current session in {v}");
        current[0]["id"].as_i64().expect("id")
    }

    /// Every live session, as the console (an admin) sees them.
    fn all_sessions(&self) -> Vec<Value> {
        let r = self.call(Cred::Console, "GET", "/api/auth/sessions", None, &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["sessions"].as_array().expect("sessions").clone()
    }

    /// Names of every user.
    fn user_names(&self) -> Vec<String> {
        let r = self.call(Cred::Console, "GET", "/api/users", None, &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["users"].as_array().expect("users").iter().map(|u| u["name"].as_str().unwrap_or("").into()).collect()
    }

    fn healthy(&self) {
        let r = self.call(Cred::Anonymous, "GET", "/api/health", None, &[]);
        assert_eq!(r.status, 200, "health after the attack: {}\n{}", r.text(), self.log());
    }
}

fn creds(user: &str, password: &str) -> Value {
    json!({ "username": user, "password": password })
}

/// The `error` message of a JSON error answer with this status.
fn assert_error(r: &Response, status: u16, needle: &str) -> Value {
    assert_eq!(r.status, status, "body: {}", r.text());
    assert!(r.header("Content-Type").is_some_and(|v| v.contains("application/json")), "{:?}", r.headers);
    let v = r.json();
    let e = v["error"].as_str().unwrap_or_else(|| panic!("no \"error\" in {v}"));
    assert!(e.contains(needle), "error {e:?} should mention {needle:?}");
    v
}

/// 401 with a challenge: Bearer, or Basic on the media routes (players put a key in
/// the URL; tests/cli.rs checks which route gets which).
fn assert_401(r: &Response) {
    assert_error(r, 401, "");
    let challenge = r.header("WWW-Authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer ") || challenge.starts_with("Basic "), "{:?}", r.headers);
}

// ---------------------------------------------------------------- 1. lockout

#[test]
fn lockout_refuses_even_the_right_password_then_ends() {
    let nvr = Nvr::start("login_attempts = 3\nlockout_seconds = 3");
    nvr.setup("boss");
    assert_eq!(nvr.all_sessions().len(), 1, "setup's own session");

    let mut locked_at = Instant::now();
    for i in 1..=3 {
        let r = nvr.login_as("boss", "wrong password!", &[]);
        assert_error(&r, 401, "wrong user name or password");
        assert!(r.header("Set-Cookie").is_none(), "failed login {i} set a cookie");
        locked_at = Instant::now();
    }
    // Locked: the right password, and a wrong one, both get 429 with Retry-After.
    for pw in [PASSWORD, "still wrong!!"] {
        let r = nvr.login_as("boss", pw, &[]);
        assert_error(&r, 429, "too many failed logins");
        let secs: u64 = r.header("Retry-After").and_then(|v| v.parse().ok()).expect("Retry-After seconds");
        assert!((1..=3).contains(&secs), "Retry-After {secs}");
        assert!(r.header("Set-Cookie").is_none(), "a locked login set a cookie");
    }
    assert_eq!(nvr.all_sessions().len(), 1, "a locked login created a session");

    // The lockout passes: the right password works again.
    std::thread::sleep((locked_at + Duration::from_millis(3300)).saturating_duration_since(Instant::now()));
    let s = nvr.login("boss", PASSWORD);
    assert_eq!(nvr.session_status(&s), 200);
    assert_eq!(nvr.all_sessions().len(), 2);

    // The per-address limit: three *different* unknown names from this address
    // (each name failed once only) lock the address, so even boss with the right
    // password is refused. X-Forwarded-For is ignored without web.trust_proxy:
    // changing it does not escape the address count.
    for (i, ghost) in ["ghost1", "ghost2", "ghost3"].iter().enumerate() {
        let xff = format!("10.1.2.{i}");
        let r = nvr.login_as(ghost, "wrong password!", &[("X-Forwarded-For", &xff)]);
        assert_error(&r, 401, "wrong user name or password");
        locked_at = Instant::now();
    }
    for user in ["boss", "ghost4"] {
        let r = nvr.login_as(user, PASSWORD, &[("X-Forwarded-For", "10.9.9.9")]);
        assert_error(&r, 429, "too many failed logins");
        assert!(r.header("Retry-After").is_some(), "{:?}", r.headers);
        assert!(r.header("Set-Cookie").is_none());
    }
    assert_eq!(nvr.all_sessions().len(), 2, "a locked login created a session");
    std::thread::sleep((locked_at + Duration::from_millis(3300)).saturating_duration_since(Instant::now()));
    nvr.login("boss", PASSWORD);
    assert_eq!(nvr.all_sessions().len(), 3);
}

/// With `trust_proxy`, the client address comes from X-Forwarded-For, which
/// lets the test use several addresses and see the two counts apart.
#[test]
fn lockout_counts_user_names_and_addresses_separately() {
    let nvr = Nvr::start("login_attempts = 3\nlockout_seconds = 30\ntrust_proxy = true");
    nvr.setup("boss");
    nvr.add_user("alice", "viewer", "alice's password");
    let from = |ip: &'static str| [("X-Forwarded-For", ip)];

    // Three wrong passwords for alice from A: alice is locked from anywhere, and A is locked.
    for _ in 0..3 {
        assert_error(&nvr.login_as("alice", "wrong password!", &from("10.0.0.1")), 401, "wrong");
    }
    assert_error(&nvr.login_as("alice", "alice's password", &from("10.0.0.2")), 429, "too many");
    assert_error(&nvr.login_as("boss", PASSWORD, &from("10.0.0.1")), 429, "too many");
    // boss from another address is neither.
    assert_eq!(nvr.login_as("boss", PASSWORD, &from("10.0.0.2")).status, 200);

    // Spraying three names once each from C locks C only.
    for ghost in ["g1", "g2", "g3"] {
        assert_error(&nvr.login_as(ghost, "wrong password!", &from("10.0.0.3")), 401, "wrong");
    }
    assert_error(&nvr.login_as("boss", PASSWORD, &from("10.0.0.3")), 429, "too many");
    assert_eq!(nvr.login_as("boss", PASSWORD, &from("10.0.0.4")).status, 200);
    // The session list records the proxy's idea of the address.
    let addrs: BTreeSet<String> =
        nvr.all_sessions().iter().map(|s| s["address"].as_str().unwrap_or("").to_string()).collect();
    assert!(addrs.contains("10.0.0.2") && addrs.contains("10.0.0.4"), "{addrs:?}");
}

/// SERVER BUG (reported): the per-address count is cleared by any successful
/// login from that address, so someone with one account of their own can spray
/// guesses at many other names from one address without ever being locked
/// (only each guessed name's own count grows).
#[test]
fn own_login_does_not_reset_the_address_count() {
    let nvr = Nvr::start("login_attempts = 3\nlockout_seconds = 30");
    nvr.setup("boss");
    nvr.add_user("mallory", "viewer", "mallory's password");
    let mut refused = false;
    for round in 0..3 {
        for ghost in ["x1", "x2"] {
            let r = nvr.login_as(&format!("{ghost}-{round}"), "guess guess", &[]);
            refused |= r.status == 429;
        }
        refused |= nvr.login_as("mallory", "mallory's password", &[]).status == 429;
    }
    assert!(refused, "6 failed logins from one address within the window were never locked out");
}

/// SERVER BUG (reported): with `trust_proxy`, the *first* X-Forwarded-For entry
/// is taken as the client. A proxy appends the address it saw, so the first
/// entry is whatever the client sent: it can pick a new one for every guess.
#[test]
fn spoofed_forwarded_for_does_not_escape_the_address_count() {
    let nvr = Nvr::start("login_attempts = 3\nlockout_seconds = 30\ntrust_proxy = true");
    nvr.setup("boss");
    // The proxy saw 10.0.0.7 each time and appended it; the client made up the first entry.
    for i in 0..3 {
        let xff = format!("192.0.2.{i}, 10.0.0.7");
        assert_eq!(nvr.login_as(&format!("g{i}"), "guess guess", &[("X-Forwarded-For", &xff)]).status, 401);
    }
    let r = nvr.login_as("boss", PASSWORD, &[("X-Forwarded-For", "192.0.2.99, 10.0.0.7")]);
    assert_eq!(r.status, 429, "the client escaped its address's lockout: {}", r.text());
}

/// A login for a user that does not exist answers the same words after the same
/// PBKDF2 work as a wrong password for one that does (no user enumeration).
/// Real PBKDF2 cost here, so the hash dominates the time.
#[test]
fn unknown_users_cost_the_same_as_wrong_passwords() {
    let nvr = Nvr::start("pbkdf2_iterations = 50000\nlogin_attempts = 1000");
    nvr.setup("boss");
    let median = |user: &str| {
        let mut times: Vec<Duration> = (0..5)
            .map(|_| {
                let began = Instant::now();
                let r = nvr.login_as(user, "wrong password!", &[]);
                let took = began.elapsed();
                assert_error(&r, 401, "wrong user name or password");
                assert_eq!(r.json()["error"], json!("wrong user name or password"), "{}", r.text());
                took
            })
            .collect();
        times.sort();
        times[2]
    };
    let _warm_up = (median("nobody"), median("boss"));
    let (known, unknown) = (median("boss"), median("nobody"));
    let floor = Duration::from_millis(2);
    assert!(known > floor, "a wrong password took {known:?}: is PBKDF2 run at all?");
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    assert!((0.5..2.0).contains(&ratio), "unknown user {unknown:?} vs wrong password {known:?}");
}

/// First-run setup can only ever make one admin, even when raced.
#[test]
fn first_run_setup_happens_once_even_when_raced() {
    let nvr = Nvr::start("");
    let port = nvr.port;
    let answers: Vec<u16> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                sc.spawn(move || {
                    let body = serde_json::to_vec(&creds(&format!("racer{i}"), PASSWORD)).expect("json");
                    let h = [("Content-Type", "application/json")];
                    http(port, "POST", "/api/auth/setup", &h, &body).expect("setup").status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    assert_eq!(answers.iter().filter(|s| **s == 201).count(), 1, "{answers:?}");
    assert!(answers.iter().all(|s| *s == 201 || *s == 409), "{answers:?}");
    let users = nvr.user_names();
    assert_eq!(users.len(), 1, "{users:?}");
    let r = nvr.call(Cred::Anonymous, "POST", "/api/auth/setup", Some(&creds("late", PASSWORD)), &[]);
    assert_error(&r, 409, "setup is done");
    let st = nvr.call(Cred::Anonymous, "GET", "/api/auth/status", None, &[]).json();
    assert_eq!(st["setup_required"], json!(false));
    assert_eq!(st["user"], Value::Null);
    assert_eq!(nvr.user_names(), users);
}

// ---------------------------------------------------------------- 2. CSRF

#[test]
fn cookie_requests_that_change_state_need_the_csrf_token() {
    let nvr = Nvr::start("");
    // Setup and login take JSON only: an HTML form (urlencoded, multipart,
    // text/plain) cannot post them cross-site.
    let json_text = serde_json::to_string(&creds("boss", PASSWORD)).expect("json");
    let form = format!("username=boss&password={}", PASSWORD.replace(' ', "+"));
    let bodies: [(&str, &str); 5] = [
        ("text/plain", json_text.as_str()),
        ("text/plain;charset=UTF-8", json_text.as_str()),
        ("application/x-www-form-urlencoded", form.as_str()),
        (
            "multipart/form-data; boundary=xyz",
            "--xyz\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nb\r\n--xyz--\r\n",
        ),
        ("", json_text.as_str()),
    ];
    for path in ["/api/auth/setup", "/api/auth/login"] {
        for (ct, body) in bodies {
            let h: Vec<(&str, &str)> = if ct.is_empty() { vec![] } else { vec![("Content-Type", ct)] };
            let r = http(nvr.port, "POST", path, &h, body.as_bytes()).expect("post");
            assert_error(&r, 415, "application/json");
            assert!(r.header("Set-Cookie").is_none(), "{path} with {ct:?} set a cookie");
        }
    }
    let st = nvr.call(Cred::Anonymous, "GET", "/api/auth/status", None, &[]).json();
    assert_eq!(st["setup_required"], json!(true), "a non-JSON setup created a user: {st}");
    assert!(nvr.user_names().is_empty());

    let s1 = nvr.setup("boss");
    let s2 = nvr.login("boss", PASSWORD);
    let s2_id = nvr.session_id(&s2);
    let new_user = json!({ "username": "eve", "password": "eve's password", "role": "admin" });

    // No token, an empty one, a wrong one, and the *other* session's token: 403, nothing done.
    let wrong = "x".repeat(s1.csrf.len());
    let refused: [(Cred, &str); 4] = [
        (Cred::SessionNoCsrf(&s1), "no header"),
        (Cred::SessionCsrf(&s1, ""), "empty header"),
        (Cred::SessionCsrf(&s1, &wrong), "wrong token"),
        (Cred::SessionCsrf(&s1, &s2.csrf), "another session's token"),
    ];
    for (cred, what) in refused {
        let r = nvr.call(cred, "POST", "/api/users", Some(&new_user), &[]);
        assert_error(&r, 403, "X-CSRF-Token");
        assert_eq!(nvr.user_names(), vec!["boss"], "POST /api/users with {what} created a user");
        let r = nvr.call(cred, "DELETE", &format!("/api/auth/sessions/{s2_id}"), None, &[]);
        assert_error(&r, 403, "X-CSRF-Token");
        assert_eq!(nvr.session_status(&s2), 200, "DELETE of a session with {what} ended it");
        let r = nvr.call(cred, "POST", "/api/auth/logout", None, &[]);
        assert_error(&r, 403, "X-CSRF-Token");
        assert_eq!(nvr.session_status(&s1), 200, "logout with {what} ended the session");
        let r = nvr.call(
            cred,
            "PUT",
            "/api/users/boss",
            Some(&json!({ "password": "new password!", "current_password": PASSWORD })),
            &[],
        );
        assert_error(&r, 403, "X-CSRF-Token");
    }
    assert_eq!(nvr.login_as("boss", PASSWORD, &[]).status, 200, "the password was changed without CSRF");
    // Reads need no token.
    assert_eq!(nvr.call(Cred::SessionNoCsrf(&s1), "GET", "/api/users", None, &[]).status, 200);

    // With the right token it works.
    let r = nvr.call(Cred::Session(&s1), "POST", "/api/users", Some(&new_user), &[]);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(nvr.user_names(), vec!["boss", "eve"]);
    let r = nvr.call(Cred::Session(&s1), "DELETE", &format!("/api/auth/sessions/{s2_id}"), None, &[]);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_401(&nvr.call(Cred::Session(&s2), "GET", "/api/auth/sessions", None, &[]));

    // An API key is not ambient (a browser never adds it): no CSRF token needed.
    let (_, key) = nvr.new_key(&s1, "script");
    let body = json!({ "username": "carol", "password": "carol's password", "role": "viewer" });
    let r = nvr.call(Cred::Key(&key), "POST", "/api/users", Some(&body), &[]);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = nvr.call(Cred::Key(&key), "DELETE", "/api/users/eve", None, &[]);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(nvr.user_names(), vec!["boss", "carol"]);
    // A key wins over a cookie: a key with a cookie and no CSRF token still works.
    let r = nvr.call(
        Cred::Key(&key),
        "DELETE",
        "/api/users/carol",
        None,
        &[("Cookie", &format!("oxinvr_session={}", s1.token))],
    );
    assert_eq!(r.status, 204, "{}", r.text());
}

// ---------------------------------------------------------------- 3. cookies

fn assert_session_cookie(r: &Response, max_age: u32, secure: bool) {
    let set = r.header("Set-Cookie").unwrap_or_else(|| panic!("no Set-Cookie: {}", r.text()));
    let attrs = cookie_attrs(set);
    for want in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attrs.iter().any(|a| a == want), "{want} missing in {set:?}");
    }
    assert!(attrs.contains(&format!("Max-Age={max_age}")), "Max-Age={max_age} missing in {set:?}");
    assert_eq!(attrs.iter().any(|a| a == "Secure"), secure, "Secure should be {secure} in {set:?}");
    assert!(!attrs.iter().any(|a| a.starts_with("Domain")), "a Domain widens the cookie: {set:?}");
}

#[test]
fn cookie_flags_and_logout_over_plain_http() {
    let nvr = Nvr::start("session_seconds = 600");
    let r = nvr.call(Cred::Anonymous, "POST", "/api/auth/setup", Some(&creds("boss", PASSWORD)), &[]);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_session_cookie(&r, 600, false);
    // Without trust_proxy a client's X-Forwarded-Proto is ignored.
    let r = nvr.login_as("boss", PASSWORD, &[("X-Forwarded-Proto", "https")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_session_cookie(&r, 600, false);
    let s = Session::of(&r);
    assert_eq!(nvr.session_status(&s), 200);
    let st = nvr.call(Cred::SessionNoCsrf(&s), "GET", "/api/auth/status", None, &[]).json();
    assert_eq!(st["user"]["name"], json!("boss"), "{st}");
    assert_eq!(st["csrf"].as_str(), Some(s.csrf.as_str()), "{st}");

    // Logout clears the cookie, and the old value is worthless.
    let r = nvr.call(Cred::Session(&s), "POST", "/api/auth/logout", None, &[]);
    assert_eq!(r.status, 204, "{}", r.text());
    let set = r.header("Set-Cookie").expect("logout clears the cookie");
    assert_eq!(cookie_value(set), "", "{set}");
    assert!(cookie_attrs(set).contains(&"Max-Age=0".to_string()), "{set}");
    assert_session_cookie(&r, 0, false);
    assert_401(&nvr.call(Cred::SessionNoCsrf(&s), "GET", "/api/auth/sessions", None, &[]));
    assert_401(&nvr.call(Cred::Session(&s), "POST", "/api/auth/logout", None, &[]));
    let st = nvr.call(Cred::SessionNoCsrf(&s), "GET", "/api/auth/status", None, &[]).json();
    assert_eq!(st["user"], Value::Null, "{st}");
    assert_eq!(st["csrf"], Value::Null, "{st}");
}

#[test]
fn secure_cookie_only_over_tls_behind_a_trusted_proxy() {
    let nvr = Nvr::start("trust_proxy = true\nsession_seconds = 900");
    let r = nvr.call(
        Cred::Anonymous,
        "POST",
        "/api/auth/setup",
        Some(&creds("boss", PASSWORD)),
        &[("X-Forwarded-Proto", "https")],
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_session_cookie(&r, 900, true);
    for (proto, secure) in [("https", true), ("HTTPS", true), ("http", false), ("", false)] {
        let h: Vec<(&str, &str)> = if proto.is_empty() { vec![] } else { vec![("X-Forwarded-Proto", proto)] };
        let r = nvr.login_as("boss", PASSWORD, &h);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_session_cookie(&r, 900, secure);
    }
    let s = nvr.login("boss", PASSWORD);
    let r = nvr.call(Cred::Session(&s), "POST", "/api/auth/logout", None, &[("X-Forwarded-Proto", "https")]);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_session_cookie(&r, 0, true);
}

// ---------------------------------------------------------------- 4. sessions

#[test]
fn sessions_expire() {
    let nvr = Nvr::start("session_seconds = 2");
    let s1 = nvr.setup("boss");
    let s2 = nvr.login("boss", PASSWORD);
    let began = Instant::now();
    assert_eq!(nvr.session_status(&s1), 200);
    assert_eq!(nvr.session_status(&s2), 200);
    std::thread::sleep((began + Duration::from_millis(3000)).saturating_duration_since(Instant::now()));
    // Using a session does not extend it past its end either.
    for s in [&s1, &s2] {
        assert_401(&nvr.call(Cred::SessionNoCsrf(s), "GET", "/api/auth/sessions", None, &[]));
        let r = nvr.call(Cred::Session(s), "POST", "/api/keys", Some(&json!({ "name": "late" })), &[]);
        assert_401(&r);
        let st = nvr.call(Cred::SessionNoCsrf(s), "GET", "/api/auth/status", None, &[]).json();
        assert_eq!(st["user"], Value::Null, "{st}");
    }
    assert!(nvr.all_sessions().is_empty(), "expired sessions listed: {:?}", nvr.all_sessions());
    let keys = nvr.call(Cred::Console, "GET", "/api/keys", None, &[]).json();
    assert_eq!(keys["keys"], json!([]), "an expired session made a key");
}

#[test]
fn sessions_are_revoked_by_delete_password_change_role_and_user_removal() {
    let nvr = Nvr::start("");
    let b1 = nvr.setup("boss");
    let b2 = nvr.login("boss", PASSWORD);
    let (b1_id, b2_id) = (nvr.session_id(&b1), nvr.session_id(&b2));
    assert_ne!(b1_id, b2_id);

    // The first session revokes the second.
    let r = nvr.call(Cred::Session(&b1), "DELETE", &format!("/api/auth/sessions/{b2_id}"), None, &[]);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_401(&nvr.call(Cred::SessionNoCsrf(&b2), "GET", "/api/auth/sessions", None, &[]));
    assert_401(&nvr.call(Cred::Session(&b2), "POST", "/api/keys", Some(&json!({ "name": "x" })), &[]));
    assert_eq!(nvr.session_status(&b1), 200);
    assert_error(&nvr.call(Cred::Session(&b1), "DELETE", &format!("/api/auth/sessions/{b2_id}"), None, &[]), 404, "");

    // A viewer sees only their own sessions and cannot end an admin's.
    nvr.add_user("vic", "viewer", "vic's password");
    let v1 = nvr.login("vic", "vic's password");
    let v2 = nvr.login("vic", "vic's password");
    let r = nvr.call(Cred::Session(&v1), "GET", "/api/auth/sessions", None, &[]);
    assert_eq!(r.status, 200);
    let list = r.json()["sessions"].as_array().expect("sessions").clone();
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.iter().all(|s| s["user"] == json!("vic")), "a viewer sees others' sessions: {list:?}");
    let r = nvr.call(Cred::Session(&v1), "DELETE", &format!("/api/auth/sessions/{b1_id}"), None, &[]);
    assert!(r.status == 404 || r.status == 403, "a viewer ended an admin's session: {} {}", r.status, r.text());
    assert_eq!(nvr.session_status(&b1), 200, "the admin's session was ended by a viewer");
    // Nor act on another account.
    let r = nvr.call(Cred::Session(&v1), "PUT", "/api/users/boss", Some(&json!({ "password": "owned owned!" })), &[]);
    assert_error(&r, 403, "");
    let r = nvr.call(Cred::Session(&v1), "PUT", "/api/users/vic", Some(&json!({ "role": "admin" })), &[]);
    assert_error(&r, 403, "");
    let me = nvr.call(Cred::Console, "GET", "/api/users/vic", None, &[]).json();
    assert_eq!(me["role"], json!("viewer"), "{me}");
    assert_eq!(nvr.login_as("boss", PASSWORD, &[]).status, 200);

    // A password change needs the current password and ends the user's other sessions.
    let change = |cur: Option<&str>| match cur {
        Some(c) => json!({ "password": "vic's new password", "current_password": c }),
        None => json!({ "password": "vic's new password" }),
    };
    for bad in [None, Some("not the password")] {
        let r = nvr.call(Cred::Session(&v1), "PUT", "/api/users/vic", Some(&change(bad)), &[]);
        assert_error(&r, 403, "current_password");
        assert_eq!(nvr.session_status(&v2), 200);
    }
    let r = nvr.call(Cred::Session(&v1), "PUT", "/api/users/vic", Some(&change(Some("vic's password"))), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_401(&nvr.call(Cred::SessionNoCsrf(&v2), "GET", "/api/auth/sessions", None, &[]));
    assert_eq!(nvr.session_status(&v1), 200, "the session that changed the password should live on");
    assert_error(&nvr.login_as("vic", "vic's password", &[]), 401, "wrong");
    let v3 = nvr.login("vic", "vic's new password");
    // An admin resetting the password ends all of them.
    let r = nvr.call(Cred::Console, "PUT", "/api/users/vic", Some(&json!({ "password": "reset by admin" })), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(nvr.session_status(&v1), 401);
    assert_eq!(nvr.session_status(&v3), 401);

    // A role change applies at once to sessions and keys; deleting a user ends both.
    nvr.add_user("otto", "operator", "otto's password");
    let o = nvr.login("otto", "otto's password");
    let (key_id, key) = nvr.new_key(&o, "otto's script");
    assert_eq!(nvr.call(Cred::Key(&key), "GET", "/api/system", None, &[]).status, 200);
    assert_eq!(nvr.call(Cred::Session(&o), "GET", "/api/system", None, &[]).status, 200);
    let r = nvr.call(Cred::Console, "PUT", "/api/users/otto", Some(&json!({ "role": "viewer" })), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_error(&nvr.call(Cred::Key(&key), "GET", "/api/system", None, &[]), 403, "operator");
    assert_error(&nvr.call(Cred::Session(&o), "GET", "/api/system", None, &[]), 403, "operator");
    // A viewer cannot delete someone else's key; the owner can; then it is dead.
    let b1_key = nvr.new_key(&b1, "boss's key");
    let r = nvr.call(Cred::Session(&o), "DELETE", &format!("/api/keys/{}", b1_key.0), None, &[]);
    assert!(r.status == 404 || r.status == 403, "{} {}", r.status, r.text());
    assert_eq!(nvr.call(Cred::Key(&b1_key.1), "GET", "/api/users", None, &[]).status, 200);
    let r = nvr.call(Cred::Session(&o), "GET", "/api/keys", None, &[]);
    let keys = r.json()["keys"].as_array().expect("keys").clone();
    assert!(keys.iter().all(|k| k["user"] == json!("otto")) && keys.len() == 1, "{keys:?}");
    let r = nvr.call(Cred::Session(&o), "DELETE", &format!("/api/keys/{key_id}"), None, &[]);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_401(&nvr.call(Cred::Key(&key), "GET", "/api/streams", None, &[]));
    let (_, key2) = nvr.new_key(&o, "second");
    assert_eq!(nvr.call(Cred::Key(&key2), "GET", "/api/streams", None, &[]).status, 200);
    let r = nvr.call(Cred::Console, "DELETE", "/api/users/otto", None, &[]);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_401(&nvr.call(Cred::Key(&key2), "GET", "/api/streams", None, &[]));
    assert_401(&nvr.call(Cred::SessionNoCsrf(&o), "GET", "/api/streams", None, &[]));
}

// ---------------------------------------------------------------- 5. traversal, secrets

#[test]
fn traversal_attempts_never_serve_files() {
    let nvr = Nvr::start("");
    let token = nvr.auth_header().1.trim_start_matches("Bearer ").to_string();
    let cargo_toml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).expect("Cargo.toml");
    let config = std::fs::read_to_string(&nvr.config).expect("config");
    // The control: the static route does serve its own page.
    let r = nvr.call(Cred::Anonymous, "GET", "/", None, &[]);
    assert_eq!(r.status, 200, "GET /: {}", r.text());
    assert!(r.header("Content-Type").is_some_and(|c| c.starts_with("text/html")), "{:?}", r.headers);
    let paths = [
        "/../../etc/passwd",
        "/../../../../../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/%2E%2E/%2E%2E/%2E%2E/%2E%2E/etc/passwd",
        "/..%2f..%2fetc%2fpasswd",
        "/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/%252e%252e/%252e%252e/etc/passwd",
        "/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
        "/..\\..\\etc\\passwd",
        "/..%5c..%5cetc%5cpasswd",
        "//etc/passwd",
        "///etc/passwd",
        "/etc/passwd",
        "/index.html/../../Cargo.toml",
        "/index.html%00/../../Cargo.toml",
        "/./Cargo.toml",
        "/Cargo.toml",
        "/%2e/Cargo.toml",
        "/src/main.rs",
        "/web-static/index.html",
        "/web-static/../Cargo.toml",
        "/data/console.token",
        "/oxinvr.toml",
        "/api/../Cargo.toml",
        "/api/%2e%2e/Cargo.toml",
        "/api/recordings/..%2F..%2Fetc%2Fpasswd/file",
        "/api/recordings/..%2F..%2Fetc%2Fpasswd/file.mp4",
        "/api/recordings/%2e%2e%2f%2e%2e%2fCargo.toml/file",
        "/api/recordings/1/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/recordings/../../etc/passwd",
        "/api/playback/..%2F..%2Fetc%2Fpasswd.m3u8",
        "/api/streams/..%2F..%2Fetc%2Fpasswd",
        "/api/export.mp4?stream=..%2F..%2Fetc%2Fpasswd&start=0&end=1000",
        "/api/export.mp4?stream=../../etc/passwd&start=0&end=1000",
        "http://127.0.0.1/../../etc/passwd",
        "/index.html?../../Cargo.toml",
    ];
    for path in paths {
        for auth in [None, Some(format!("Authorization: Bearer {token}\r\n"))] {
            let raw = format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{}\r\n",
                auth.as_deref().unwrap_or("")
            );
            let r = nvr.raw(raw.as_bytes());
            let text = r.text();
            let what = format!("GET {path} ({})", if auth.is_some() { "admin" } else { "anonymous" });
            assert!(!text.contains("root:"), "{what} served /etc/passwd");
            assert!(!text.contains("[package]") && !text.contains(cargo_toml.trim()), "{what} served Cargo.toml");
            assert!(!text.contains("[storage]") && !text.contains(config.trim()), "{what} served the config");
            assert!(!text.contains(&token), "{what} served the console token");
            if path == "/index.html?../../Cargo.toml" {
                // The query is not part of the file name: the page itself.
                assert_eq!(r.status, 200, "{what}: {text}");
                assert!(text.contains("<html"), "{what}: {text}");
                continue;
            }
            assert!((400..500).contains(&r.status), "{what}: {} {text}", r.status);
            let v = r.json();
            assert!(v["error"].is_string(), "{what}: {v}");
        }
    }
    nvr.healthy();
}

#[test]
fn passwords_keys_and_tokens_never_appear_in_answers_logs_or_the_database() {
    let nvr = Nvr::start("");
    let s = nvr.setup("boss");
    let vic_pw = "vic's secret password";
    let wrong_pw = "a wrong password 12345";
    nvr.add_user("vic", "viewer", vic_pw);
    let v = nvr.login("vic", vic_pw);
    assert_eq!(nvr.login_as("vic", wrong_pw, &[]).status, 401);
    let (_, key) = nvr.new_key(&s, "backup script");
    let (_, vkey) = nvr.new_key(&v, "vic's script");
    // A key is usable, which also records last_used.
    assert_eq!(nvr.call(Cred::Key(&key), "GET", "/api/streams", None, &[]).status, 200);
    let secrets = [PASSWORD, vic_pw, wrong_pw, &key, &vkey, &s.token, &v.token];

    // The key list shows a short prefix only.
    let r = nvr.call(Cred::Session(&s), "GET", "/api/keys", None, &[]);
    assert_eq!(r.status, 200);
    let keys = r.json()["keys"].as_array().expect("keys").clone();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for k in &keys {
        let fields: BTreeSet<&str> = k.as_object().expect("object").keys().map(String::as_str).collect();
        let want: BTreeSet<&str> = ["id", "name", "user", "role", "created", "last_used", "prefix"].into();
        assert_eq!(fields, want, "{k}");
        let prefix = k["prefix"].as_str().expect("prefix");
        assert!(prefix.starts_with("oxk_") && prefix.len() <= 12, "{prefix}");
        assert!(key.starts_with(prefix) || vkey.starts_with(prefix), "{prefix}");
    }
    let r = nvr.call(Cred::Console, "GET", "/api/users", None, &[]);
    for u in r.json()["users"].as_array().expect("users") {
        let fields: BTreeSet<&str> = u.as_object().expect("object").keys().map(String::as_str).collect();
        let want: BTreeSet<&str> = ["name", "role", "totp", "created", "last_login"].into();
        assert_eq!(fields, want, "{u}");
    }

    let mut answers: Vec<(String, Response)> = Vec::new();
    for path in [
        "/api/keys",
        "/api/users",
        "/api/users/boss",
        "/api/users/vic",
        "/api/auth/status",
        "/api/auth/sessions",
        "/api/system",
        "/api/system/logs",
        "/api/settings",
    ] {
        answers.push((format!("GET {path} (console)"), nvr.call(Cred::Console, "GET", path, None, &[])));
        answers.push((format!("GET {path} (session)"), nvr.call(Cred::Session(&s), "GET", path, None, &[])));
        answers.push((format!("GET {path} (viewer key)"), nvr.call(Cred::Key(&vkey), "GET", path, None, &[])));
    }
    let body = json!({ "username": "zed", "password": "zed's password 1", "role": "viewer" });
    answers.push(("POST /api/users".into(), nvr.call(Cred::Session(&s), "POST", "/api/users", Some(&body), &[])));
    let change = json!({ "password": "vic's 2nd password", "current_password": vic_pw });
    answers
        .push(("PUT /api/users/vic".into(), nvr.call(Cred::Session(&v), "PUT", "/api/users/vic", Some(&change), &[])));
    for (what, r) in &answers {
        assert!(r.status < 500, "{what}: {} {}", r.status, r.text());
        let text = r.text();
        for secret in secrets.iter().chain(&["zed's password 1", "vic's 2nd password"]) {
            assert!(!text.contains(secret), "{what} shows the secret {secret:?}: {text}");
        }
        assert!(!text.contains("pbkdf2-sha256$"), "{what} shows a password hash: {text}");
        assert!(!text.contains("password_hash") && !text.contains("token_hash"), "{what}: {text}");
    }
    // Nor in the process's log, nor stored in the clear.
    let log = nvr.log();
    for secret in secrets {
        assert!(!log.contains(secret), "the log shows {secret:?}");
    }
    let mut stored = Vec::new();
    for name in ["oxinvr.db", "oxinvr.db-wal"] {
        stored.extend(std::fs::read(nvr.data_dir.join(name)).unwrap_or_default());
    }
    assert!(!stored.is_empty());
    for secret in secrets {
        assert!(!stored.windows(secret.len()).any(|w| w == secret.as_bytes()), "the database holds {secret:?}");
    }
}

// ---------------------------------------------------------------- 6. bodies

/// Reads one answer from `s` (its head and `Content-Length` bytes of body),
/// waiting at most `wait`; what arrived, and whether it arrived whole.
fn read_answer(s: &mut TcpStream, wait: Duration) -> (String, bool) {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse::<usize>().ok()));
            if len.is_some_and(|n| out.len() >= end + 4 + n) {
                return (String::from_utf8_lossy(&out).into_owned(), true);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), false)
}

#[test]
fn oversized_bodies_are_refused_unread_and_long_fields_are_harmless() {
    const MAX: usize = 256 * 1024;
    let nvr = Nvr::start(&format!("max_body_bytes = {MAX}"));
    let (ak, av) = nvr.auth_header();
    let console = format!("{ak}: {av}\r\n");

    // Declared larger than the limit, body never sent: 413 at once (not read).
    for (target, auth) in [
        ("/api/auth/login", ""),
        ("/api/auth/setup", ""),
        ("/api/users", ""),
        ("/api/users", console.as_str()),
        ("/api/keys", console.as_str()),
    ] {
        for declared in [format!("{}", MAX + 1), "100000000000000".to_string()] {
            let mut s = TcpStream::connect(("127.0.0.1", nvr.port)).expect("connect");
            let head = format!(
                "POST {target} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n{{\"user"
            );
            s.write_all(head.as_bytes()).expect("write");
            // The server answers at once, without waiting for the body.
            let (got, whole) = read_answer(&mut s, Duration::from_secs(2));
            assert!(whole, "POST {target} declaring {declared}: no whole answer within 2 s: {got:?}");
            assert!(got.starts_with("HTTP/1.1 413 "), "POST {target} declaring {declared}: {got:?}");
            assert!(got.contains("max_body_bytes"), "{got:?}");
            nvr.healthy();
        }
    }
    // Sent whole (declared): 413.
    let big = format!("{{\"username\":\"boss\",\"password\":\"{}\"}}", "p".repeat(MAX));
    for target in ["/api/auth/login", "/api/auth/setup"] {
        let r = http(nvr.port, "POST", target, &[("Content-Type", "application/json")], big.as_bytes()).expect("post");
        assert_error(&r, 413, "max_body_bytes");
    }
    // Chunked, too large once read: 413.
    for (target, auth) in [("/api/auth/login", ""), ("/api/auth/setup", ""), ("/api/users", console.as_str())] {
        let mut raw = format!(
            "POST {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        let mut body =
            format!("{{\"username\":\"boss\",\"role\":\"admin\",\"password\":\"{}\"}}", "p".repeat(MAX)).into_bytes();
        while !body.is_empty() {
            let n = body.len().min(16 * 1024);
            raw.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            raw.extend(body.drain(..n));
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"0\r\n\r\n");
        assert_error(&nvr.raw(&raw), 413, "max_body_bytes");
        nvr.healthy();
    }
    assert!(nvr.user_names().is_empty(), "an oversized body created a user");

    // 100 KB names and passwords (under the limit): refused or wrong, never a crash.
    let long = "a".repeat(100 * 1024);
    let r = nvr.call(Cred::Anonymous, "POST", "/api/auth/setup", Some(&creds(&long, PASSWORD)), &[]);
    assert_error(&r, 400, "user name");
    let r = nvr.call(Cred::Anonymous, "POST", "/api/auth/setup", Some(&creds("boss", &long)), &[]);
    assert_error(&r, 400, "too long");
    assert!(nvr.user_names().is_empty());
    let s = nvr.setup("boss");
    for body in [
        json!({ "username": long, "password": PASSWORD, "role": "viewer" }),
        json!({ "username": "bob", "password": long, "role": "viewer" }),
        json!({ "username": "bob", "password": PASSWORD, "role": long }),
    ] {
        let r = nvr.call(Cred::Session(&s), "POST", "/api/users", Some(&body), &[]);
        assert_error(&r, 400, "");
    }
    assert_eq!(nvr.user_names(), vec!["boss"]);
    for (user, pw) in [(long.as_str(), PASSWORD), ("boss", long.as_str()), (long.as_str(), long.as_str())] {
        let r = nvr.login_as(user, pw, &[]);
        assert!(r.status == 400 || r.status == 401, "login with 100 KB fields: {} {}", r.status, r.text());
        assert!(r.header("Set-Cookie").is_none());
        nvr.healthy();
    }
    let r = nvr.call(Cred::Session(&s), "POST", "/api/keys", Some(&json!({ "name": long })), &[]);
    assert_error(&r, 400, "name");
    let r = nvr.call(
        Cred::Session(&s),
        "PUT",
        "/api/users/boss",
        Some(&json!({ "password": long, "current_password": PASSWORD })),
        &[],
    );
    assert_error(&r, 400, "too long");
    let r = nvr.call(Cred::Session(&s), "POST", "/api/users/boss/totp/confirm", Some(&json!({ "code": long })), &[]);
    assert!(r.status == 400 || r.status == 409, "{} {}", r.status, r.text());
    nvr.healthy();
    assert_eq!(nvr.login_as("boss", PASSWORD, &[]).status, 200);
}

// ---------------------------------------------------------------- 7. every route

/// One documented operation.
#[derive(Clone, Debug)]
struct Op {
    method: String,
    template: String,
    role: String,
}

fn rank(role: &str) -> u8 {
    match role {
        "public" => 0,
        "viewer" => 1,
        "operator" => 2,
        "admin" => 3,
        other => panic!("x-oxinvr-role {other:?} is not public|viewer|operator|admin"),
    }
}

/// Every operation of the OpenAPI document, with logout last (it ends a session).
fn operations(doc: &Value) -> Vec<Op> {
    let paths = doc["paths"].as_object().unwrap_or_else(|| panic!("no paths in the document"));
    let mut ops = Vec::new();
    for (template, item) in paths {
        let item = item.as_object().unwrap_or_else(|| panic!("{template} is not an object"));
        for (method, op) in item {
            if !["get", "put", "post", "delete", "patch", "head", "options", "trace"].contains(&method.as_str()) {
                continue;
            }
            let role = op["x-oxinvr-role"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {template} has no x-oxinvr-role"))
                .to_string();
            rank(&role);
            ops.push(Op { method: method.to_uppercase(), template: template.clone(), role });
        }
    }
    ops.sort_by_key(|o| o.template == "/api/auth/logout");
    ops
}

/// The path of an operation with harmless sample values: names and ids that do
/// not exist, except that a user acts on their own account where a non-admin
/// may (so a handler's own-account 403 is not mistaken for a role refusal).
fn fill(op: &Op, user: Option<&str>) -> String {
    let mut out = String::new();
    let mut rest = op.template.as_str();
    while let Some((before, after)) = rest.split_once('{') {
        let (param, tail) = after.split_once('}').unwrap_or_else(|| panic!("bad template {}", op.template));
        out.push_str(before);
        let users = op.template.starts_with("/api/users/");
        let value = match param {
            // DELETE /api/users/{name} (admin only): a user that does not exist.
            "name" if op.method == "DELETE" && op.template == "/api/users/{name}" => "no-such-user",
            "name" if users => user.unwrap_or("no-such-user"),
            "name" | "stream" => "no-such-cam",
            "id" => "999999",
            "file" => "index.html",
            other => panic!("no sample value for {{{other}}} of {} {}: add one", op.method, op.template),
        };
        out.push_str(value);
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Who walks the routes.
struct Walker<'a> {
    label: &'a str,
    /// The user's name and role (None: no credential).
    user: Option<(&'a str, &'a str)>,
    cred: Cred<'a>,
    /// The session's CSRF token is withheld: every state change must be 403.
    no_csrf: bool,
}

fn walk(nvr: &Nvr, ops: &[Op], w: &Walker) {
    for op in ops {
        let path = fill(op, w.user.map(|u| u.0));
        let what = format!("{} {path} (documented {}, role {}) as {}", op.method, op.template, op.role, w.label);
        let r = nvr.call(w.cred, &op.method, &path, None, &[]);
        let need = rank(&op.role);
        let changes = op.method != "GET";
        assert!(r.status != 500, "{what}: {} {}\n{}", r.status, r.text(), nvr.log());
        assert!(
            !(r.status == 404 && r.text().contains("no such route")),
            "{what}: the server does not know the route: {}",
            r.text()
        );
        match w.user {
            _ if need == 0 => {
                assert!(r.status != 401 && r.status != 403, "{what}: public, but {} {}", r.status, r.text());
            }
            None => {
                assert_eq!(r.status, 401, "{what}: {}", r.text());
                assert_401(&r);
            }
            Some((_, role)) if rank(role) < need => {
                let v = assert_error(&r, 403, "");
                let e = v["error"].as_str().unwrap_or("");
                assert!(e.contains(&format!("needs the {} role", op.role)), "{what}: {e}");
            }
            Some(_) if w.no_csrf && changes => {
                assert_error(&r, 403, "X-CSRF-Token");
            }
            Some(_) => {
                assert!(r.status != 401 && r.status != 403, "{what}: refused with {} {}", r.status, r.text());
            }
        }
    }
}

#[test]
fn every_documented_route_checks_its_role() {
    let nvr = Nvr::start("login_attempts = 1000");
    let r = nvr.call(Cred::Anonymous, "GET", "/api/openapi.json", None, &[]);
    assert_eq!(r.status, 200, "GET /api/openapi.json: {}", r.text());
    let doc = r.json();
    let ops = operations(&doc);
    let templates: BTreeSet<&str> = ops.iter().map(|o| o.template.as_str()).collect();
    for core in [
        "/api/health",
        "/api/auth/login",
        "/api/streams",
        "/api/streams/{name}",
        "/api/streams/{name}/live",
        "/api/users",
        "/api/users/{name}",
        "/api/keys",
        "/api/recordings",
        "/api/settings",
        "/api/system",
    ] {
        assert!(templates.contains(core), "{core} is not documented: {templates:?}");
    }
    assert!(ops.len() >= 30, "only {} operations documented", ops.len());
    let roles: BTreeSet<&str> = ops.iter().map(|o| o.role.as_str()).collect();
    assert_eq!(roles, ["admin", "operator", "public", "viewer"].into(), "every role is used");

    for (name, role) in [("walk-viewer", "viewer"), ("walk-operator", "operator"), ("walk-admin", "admin")] {
        nvr.add_user(name, role, "walk password");
    }
    let mut keys = Vec::new();
    for name in ["walk-viewer", "walk-operator", "walk-admin"] {
        let s = nvr.login(name, "walk password");
        keys.push(nvr.new_key(&s, "walk").1);
        let r = nvr.call(Cred::Session(&s), "POST", "/api/auth/logout", None, &[]);
        assert_eq!(r.status, 204);
    }
    let viewer_session = nvr.login("walk-viewer", "walk password");

    let walkers = [
        Walker { label: "nobody", user: None, cred: Cred::Anonymous, no_csrf: false },
        Walker {
            label: "viewer key",
            user: Some(("walk-viewer", "viewer")),
            cred: Cred::Key(&keys[0]),
            no_csrf: false,
        },
        Walker {
            label: "operator key",
            user: Some(("walk-operator", "operator")),
            cred: Cred::Key(&keys[1]),
            no_csrf: false,
        },
        Walker {
            label: "viewer session without CSRF token",
            user: Some(("walk-viewer", "viewer")),
            cred: Cred::SessionNoCsrf(&viewer_session),
            no_csrf: true,
        },
        Walker {
            label: "viewer session",
            user: Some(("walk-viewer", "viewer")),
            cred: Cred::Session(&viewer_session),
            no_csrf: false,
        },
        Walker { label: "admin key", user: Some(("walk-admin", "admin")), cred: Cred::Key(&keys[2]), no_csrf: false },
    ];
    for w in &walkers {
        walk(&nvr, &ops, w);
        nvr.healthy();
    }

    // Nothing was changed by any of it (the viewer's session ended with its logout, the last call).
    let users = nvr.call(Cred::Console, "GET", "/api/users", None, &[]).json();
    let got: Vec<(String, String, bool)> = users["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| {
            (u["name"].as_str().unwrap_or("").into(), u["role"].as_str().unwrap_or("").into(), u["totp"] == json!(true))
        })
        .collect();
    let want: Vec<(String, String, bool)> =
        [("walk-admin", "admin"), ("walk-operator", "operator"), ("walk-viewer", "viewer")]
            .iter()
            .map(|(n, r)| (n.to_string(), r.to_string(), false))
            .collect();
    assert_eq!(got, want);
    assert_eq!(nvr.call(Cred::Console, "GET", "/api/streams", None, &[]).json()["streams"], json!([]));
    let listed = nvr.call(Cred::Console, "GET", "/api/keys", None, &[]).json();
    assert_eq!(listed["keys"].as_array().map(Vec::len), Some(3), "{listed}");
    for k in &keys {
        assert_eq!(nvr.call(Cred::Key(k), "GET", "/api/streams", None, &[]).status, 200);
    }
    assert_401(&nvr.call(Cred::SessionNoCsrf(&viewer_session), "GET", "/api/streams", None, &[]));
    for name in ["walk-viewer", "walk-operator", "walk-admin"] {
        assert_eq!(nvr.login_as(name, "walk password", &[]).status, 200, "{name}'s password changed");
    }
}

// ---------------------------------------------------------------- 8. TOTP

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64
}

fn code_at(secret: &[u8], step: i64) -> String {
    format!("{:06}", totp::code(secret, step))
}

#[test]
fn totp_enrolment_login_and_replay() {
    let nvr = Nvr::start("login_attempts = 20");
    let s = nvr.setup("boss");
    nvr.add_user("vic", "viewer", "vic's password");
    let vic = nvr.login("vic", "vic's password");

    // Enrolment: only for oneself.
    let r = nvr.call(Cred::Session(&vic), "POST", "/api/users/boss/totp", None, &[]);
    assert_error(&r, 403, "");
    let r = nvr.call(Cred::Console, "POST", "/api/users/boss/totp", None, &[]);
    assert_error(&r, 403, "");
    let r = nvr.call(Cred::Session(&s), "POST", "/api/users/boss/totp", None, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let e = r.json();
    let b32 = e["secret"].as_str().expect("secret");
    let secret = totp::from_base32(b32).expect("base32 secret");
    assert_eq!(secret.len(), 20, "{b32}");
    assert!(e["uri"].as_str().is_some_and(|u| u.starts_with("otpauth://totp/") && u.contains(b32)), "{e}");
    assert!(e["qr_svg"].as_str().is_some_and(|q| q.starts_with("<svg")), "{e}");
    // Pending only: login still needs no code.
    assert_eq!(nvr.login_as("boss", PASSWORD, &[]).status, 200);

    // Confirming with a wrong code fails; the right one enables it.
    let step = unix_now() / 30;
    let wrong = format!("{:06}", (totp::code(&secret, step) + 1) % 1_000_000);
    let r = nvr.call(Cred::Session(&s), "POST", "/api/users/boss/totp/confirm", Some(&json!({ "code": wrong })), &[]);
    assert_error(&r, 400, "code");
    let enrol_code = code_at(&secret, step);
    let r =
        nvr.call(Cred::Session(&s), "POST", "/api/users/boss/totp/confirm", Some(&json!({ "code": enrol_code })), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["totp"], json!(true));
    let r = nvr.call(Cred::Session(&s), "POST", "/api/auth/logout", None, &[]);
    assert_eq!(r.status, 204);
    // vic's and the one made while TOTP was pending.
    let sessions = nvr.all_sessions().len();
    assert_eq!(sessions, 2);

    let login = |code: Option<&str>, pw: &str| {
        let mut body = creds("boss", pw);
        if let Some(c) = code {
            body["totp"] = json!(c);
        }
        nvr.call(Cred::Anonymous, "POST", "/api/auth/login", Some(&body), &[])
    };
    // Without a code, with an empty one, with a wrong one: 401 + totp_required, no session.
    for code in [None, Some(""), Some("   "), Some(wrong.as_str()), Some("12345"), Some("abcdef")] {
        let r = login(code, PASSWORD);
        let v = assert_error(&r, 401, "TOTP");
        assert_eq!(v["totp_required"], json!(true), "{v}");
        assert!(r.header("Set-Cookie").is_none());
    }
    // A wrong password does not reveal that TOTP is on.
    let r = login(Some(&code_at(&secret, step + 1)), "wrong password!");
    let v = assert_error(&r, 401, "wrong user name or password");
    assert!(v.get("totp_required").is_none(), "{v}");
    // The code used to enrol is spent.
    let r = login(Some(&enrol_code), PASSWORD);
    assert_eq!(assert_error(&r, 401, "TOTP")["totp_required"], json!(true));
    assert_eq!(nvr.all_sessions().len(), sessions, "a refused login created a session");

    // The next step's code (within the ±1 step window) logs in once; its replay fails.
    let next = code_at(&secret, step + 1);
    let r = login(Some(&next), PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text());
    let b = Session::of(&r);
    assert_eq!(r.json()["user"]["totp"], json!(true));
    let r = login(Some(&next), PASSWORD);
    let v = assert_error(&r, 401, "TOTP");
    assert_eq!(v["totp_required"], json!(true));
    assert!(r.header("Set-Cookie").is_none());
    // An older step's code is refused too (never at or before the last one used).
    let r = login(Some(&enrol_code), PASSWORD);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(nvr.all_sessions().len(), sessions + 1, "one session per successful TOTP login");

    // A viewer cannot switch another's TOTP off; an admin can, and then no code is needed.
    let r = nvr.call(Cred::Session(&vic), "DELETE", "/api/users/boss/totp", None, &[]);
    assert_error(&r, 403, "");
    assert_eq!(login(None, PASSWORD).status, 401);
    let r = nvr.call(Cred::Session(&b), "DELETE", "/api/users/boss/totp", None, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["totp"], json!(false));
    assert_eq!(login(None, PASSWORD).status, 200);
}

/// DNS rebinding: a web page that points its own name at a fresh box cannot
/// make itself the admin; setup is only offered at an address.
#[test]
fn setup_is_refused_at_a_host_name() {
    let nvr = Nvr::start("");
    let body = serde_json::to_vec(&creds("mallory", PASSWORD)).expect("json");
    let head = format!(
        "POST /api/auth/setup HTTP/1.1\r\nHost: evil.example:{}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        nvr.port,
        body.len()
    );
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&body);
    assert_error(&nvr.raw(&bytes), 403, "IP address");
    assert!(nvr.user_names().is_empty(), "{:?}", nvr.user_names());
    let r = nvr.call(Cred::Anonymous, "POST", "/api/auth/setup", Some(&creds("owner", PASSWORD)), &[]);
    assert_eq!(r.status, 201, "{}", r.text());
}

/// A proxy may add its own X-Forwarded-For line instead of extending the
/// client's: the address is the last entry of all lines.
#[test]
fn forwarded_for_on_two_lines_is_read_whole() {
    let nvr = Nvr::start("login_attempts = 3\nlockout_seconds = 30\ntrust_proxy = true");
    nvr.setup("boss");
    for i in 0..3 {
        let fake = format!("192.0.2.{i}");
        let h = [("X-Forwarded-For", fake.as_str()), ("X-Forwarded-For", "10.0.0.8")];
        assert_eq!(nvr.login_as(&format!("g{i}"), "guess guess", &h).status, 401);
    }
    let h = [("X-Forwarded-For", "192.0.2.99"), ("X-Forwarded-For", "10.0.0.8")];
    let r = nvr.login_as("boss", PASSWORD, &h);
    assert_eq!(r.status, 429, "the client escaped its address's lockout: {}", r.text());
}

/// A change that is refused in part is refused whole: nothing was written.
#[test]
fn a_refused_user_change_changes_nothing() {
    let nvr = Nvr::start("");
    nvr.setup("boss");
    nvr.add_user("alice", "operator", PASSWORD);
    let change = json!({ "role": "viewer", "password": "short" });
    let r = nvr.call(Cred::Console, "PUT", "/api/users/alice", Some(&change), &[]);
    assert_error(&r, 400, "too short");
    let alice = nvr.call(Cred::Console, "GET", "/api/users/alice", None, &[]).json();
    assert_eq!(alice["role"], json!("operator"), "the role changed although the request was refused");
    assert_eq!(nvr.login_as("alice", PASSWORD, &[]).status, 200);
}
