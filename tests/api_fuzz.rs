//! The API against its own document: Schemathesis (property-based, driven by
//! GET /api/openapi.json) sends generated valid and invalid requests to every
//! operation of the real release binary, recording a real test camera, once
//! per role: unauthenticated, viewer, operator, admin (API keys of real users)
//! and the console token. It fails on any 5xx and on any answer the document
//! does not allow: an undocumented status, content type or header, a body
//! that differs from its schema, a schema-valid request refused with 400 or
//! 422 (`positive_data_acceptance`), or a schema-invalid one accepted
//! (`negative_data_rejection`).
//!
//! Schemathesis is installed by scripts/lib/deps.sh (`ensure_schemathesis`,
//! called by scripts/test and scripts/fuzz-api) into a virtualenv; the test
//! finds it through `$OXINVR_SCHEMATHESIS` or at the place deps.sh uses.
//!
//! State and destructive operations, deliberately:
//! - Pass 0 runs POST /api/auth/setup alone on the fresh recorder (no user
//!   yet), so its 201 is reached once; later passes get its 409.
//! - Pass 1, for each role, runs every operation except the ones that end the
//!   caller's own credential (`ENDS_CREDENTIALS`). Between passes the test
//!   puts the camera's stream `front` back if a pass deleted it, deletes the
//!   streams a pass created (each would start a recorder thread for a
//!   made-up camera) and checks that `front` is recording again.
//! - Pass 2 runs `ENDS_CREDENTIALS` last, role by role (viewer, operator,
//!   admin, then the console token, which no request can revoke), so a key
//!   deleted by its own holder only ends that holder's run.
//!
//! Excluded: GET /api/streams/{name}/live (`EXCLUDED`): a valid request
//! upgrades to a WebSocket, which Schemathesis' HTTP client cannot follow (it
//! reports the 101 as a failure); tests/live.rs checks the handshake, its
//! refusals and the messages. GET /api/events/stream (`eventStream`): a valid
//! request is answered by server-sent events that never end by themselves;
//! tests/events.rs follows it. The ONVIF operations that reach out to a camera
//! (`onvifDiscover`, `onvifProbe`, `putStreamOnvif`): a valid request sends UDP or
//! SOAP to whatever address it names, and an unreachable camera is a documented 502;
//! tests/onvif.rs runs them against the simulator. Checks not used: `ignored_auth` and
//! `object_level_authorization` (router-level role checks are tested in
//! tests/security.rs), `use_after_free` and `ensure_resource_availability`
//! (need links the document does not declare). `positive_data_acceptance`
//! also accepts 400 for the span routes (recordings, export, playback: `end`
//! must be after `start`, a rule between two parameters that JSON Schema
//! cannot state) and for the live view (the WebSocket handshake headers).
//!
//! `OXINVR_API_FUZZ_EXAMPLES` (default 5) bounds the generated cases per
//! operation and phase; `OXINVR_API_FUZZ_SEED` fixes the seed (default: fixed,
//! so CI is reproducible); `OXINVR_API_FUZZ_REPORT` names a JSON file that
//! receives the figures (scripts/fuzz-api writes its results from it).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::nvr::{http, Response, TempOxinvr};
use common::Camera;
use serde_json::{json, Value};

/// Operations (operationId) that can end the credential they are called with:
/// POST /api/auth/logout, DELETE /api/keys/{id}, DELETE and PUT /api/users/{name}.
const ENDS_CREDENTIALS: [&str; 4] = ["logout", "deleteKey", "deleteUser", "updateUser"];

/// Operations not fuzzed (see the top of the file).
const EXCLUDED: [&str; 5] = ["liveStream", "eventStream", "onvifDiscover", "onvifProbe", "putStreamOnvif"];

/// Operations where a schema-valid request may still get 400 for a rule JSON
/// Schema cannot state: a span's `end` after its `start`, a `shift` that
/// would move a fragment before 0, the WebSocket handshake, a TOTP code that
/// is well-formed but wrong, a body `name` that is not the path's stream, an
/// event's `until` after `since` or a start more than a day ahead, a label of
/// control characters JSON Schema's pattern dialect let through.
const SEMANTIC_400: [&str; 8] = [
    "/api/events",
    "/api/streams/{name}",
    "/api/recordings",
    "/api/export.mp4",
    "/api/playback/{stream}.m3u8",
    "/api/recordings/{id}/file",
    "/api/recordings/{id}/file.mp4",
    "/api/users/{name}/totp/confirm",
];

/// Checks run on every answer.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance,negative_data_rejection,positive_data_acceptance,\
missing_required_header,unsupported_method";

/// The Schemathesis CLI.
fn schemathesis() -> PathBuf {
    if let Some(p) = std::env::var_os("OXINVR_SCHEMATHESIS") {
        return PathBuf::from(p);
    }
    common::tool_cache().join("schemathesis/bin/st")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Fuzz {
    nvr: TempOxinvr,
    _camera: Camera,
    st: PathBuf,
    examples: u64,
    seed: u64,
    work: PathBuf,
    /// (pass, role, figures) of every run.
    runs: Vec<(String, String, Value)>,
    /// What each failed run reported.
    failed: Vec<String>,
}

/// A credential as Schemathesis' auth configuration (TOML), or none.
#[derive(Clone)]
struct Role {
    name: &'static str,
    bearer: Option<String>,
}

impl Fuzz {
    fn start() -> Fuzz {
        let st = schemathesis();
        assert!(
            st.exists(),
            "{} is missing: scripts/test installs it (source scripts/lib/deps.sh; ensure_schemathesis)",
            st.display()
        );
        let camera = Camera::start(&[]);
        let dir = tempfile::tempdir().expect("tempdir");
        let work = dir.path().join("fuzz");
        std::fs::create_dir_all(&work).expect("work dir");
        let rings = dir.path().join("rings");
        std::fs::create_dir_all(&rings).expect("ring dir");
        // Failed logins are the fuzzer's daily bread: a lockout would turn every
        // later login of the test itself into 429. The object model is there so
        // POST /api/detect answers what it is asked (no model would be a 503).
        let config = format!(
            "[storage]\ndata_dir = \"{{DATA}}\"\nring_dir = {:?}\nsegment_seconds = 4\n\n[web]\nlisten = \"127.0.0.1:{{PORT}}\"\npbkdf2_iterations = 1000\nlogin_attempts = 1000\n\n[detect]\nmodel = {:?}\n\n[[streams]]\nname = \"front\"\nurl = \"{}\"\n",
            rings.display().to_string(),
            concat!(env!("CARGO_MANIFEST_DIR"), "/models/nanodet-g.onnx"),
            camera.url("h264"),
        );
        let nvr = TempOxinvr::start(dir, &config);
        Fuzz {
            nvr,
            _camera: camera,
            st,
            examples: env_u64("OXINVR_API_FUZZ_EXAMPLES", 5),
            seed: env_u64("OXINVR_API_FUZZ_SEED", 20261202),
            work,
            runs: Vec::new(),
            failed: Vec::new(),
        }
    }

    fn console(&self, method: &str, path: &str, body: &str) -> Response {
        let headers = [("Content-Type", "application/json")];
        self.nvr.request(method, path, &headers, body.as_bytes()).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// A user of `role` and an API key of theirs (made through a login session).
    fn user_key(&self, role: &str) -> String {
        let name = format!("fuzz-{role}");
        let password = format!("{name}-password");
        let body = json!({ "username": name, "password": password, "role": role }).to_string();
        let r = self.console("POST", "/api/users", &body);
        assert_eq!(r.status, 201, "create {name}: {}", r.text());
        let login = json!({ "username": name, "password": password }).to_string();
        let r =
            http(self.nvr.port, "POST", "/api/auth/login", &[("Content-Type", "application/json")], login.as_bytes())
                .expect("login");
        assert_eq!(r.status, 200, "login {name}: {}", r.text());
        let cookie = r.header("Set-Cookie").and_then(|c| c.split(';').next()).expect("cookie").to_string();
        let csrf = r.json()["csrf"].as_str().expect("csrf").to_string();
        let headers =
            [("Content-Type", "application/json"), ("Cookie", cookie.as_str()), ("X-CSRF-Token", csrf.as_str())];
        let r = http(self.nvr.port, "POST", "/api/keys", &headers, br#"{"name":"api fuzz"}"#).expect("key");
        assert_eq!(r.status, 201, "key of {name}: {}", r.text());
        r.json()["key"].as_str().expect("key").to_string()
    }

    /// Runs Schemathesis on the operations `filter` selects, as `role`.
    fn run(&mut self, pass: &str, role: &Role, filter: &[String]) {
        let label = format!("{pass}-{}", role.name);
        let config = self.work.join(format!("{label}.toml"));
        let mut toml = String::from("[checks.positive_data_acceptance]\nexpected-statuses = [\"2xx\", \"304\", \"401\", \"403\", \"404\", \"409\", \"413\", \"415\", \"429\"]\n");
        if let Some(token) = &role.bearer {
            toml.push_str(&format!("\n[auth.openapi.bearer]\nbearer = \"{token}\"\n"));
        }
        for path in SEMANTIC_400 {
            toml.push_str(&format!(
                "\n[[operations]]\ninclude-path = \"{path}\"\nchecks.positive_data_acceptance.expected-statuses = [\"2xx\", \"400\", \"401\", \"403\", \"404\", \"409\", \"416\", \"503\"]\n"
            ));
        }
        std::fs::write(&config, toml).expect("write config");
        let report = self.work.join(format!("{label}.ndjson"));
        let began = Instant::now();
        let out = Command::new(&self.st)
            .current_dir(&self.work) // its .schemathesis cache goes there, not into the checkout
            .arg("--config-file")
            .arg(&config)
            .arg("--no-color")
            .arg("run")
            .arg(format!("http://127.0.0.1:{}/api/openapi.json", self.nvr.port))
            .args(["--checks", CHECKS, "--workers", "1", "--request-timeout", "30"])
            .args(["--phases", "examples,coverage,fuzzing"])
            .args(["--max-examples", &self.examples.to_string(), "--seed", &self.seed.to_string()])
            .args(["--generation-database", "none", "--report", "ndjson", "--report-ndjson-path"])
            .arg(&report)
            .args(filter)
            .output()
            .expect("run schemathesis");
        let secs = began.elapsed().as_secs_f64();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        std::fs::write(self.work.join(format!("{label}.log")), &text).expect("log");
        let figures = figures(&report, secs);
        eprintln!("api fuzz {label}: {figures}");
        if let Ok(keep) = std::env::var("OXINVR_API_FUZZ_KEEP") {
            let _ = std::fs::copy(&report, Path::new(&keep).join(format!("{label}.ndjson")));
        }
        self.runs.push((pass.to_string(), role.name.to_string(), figures));
        if !out.status.success() {
            self.failed.push(format!("{label}:\n{}", failures_of(&text)));
        }
    }

    /// Puts the recorder back as the next pass needs it: `front` exists and
    /// records, streams the fuzzer made are gone.
    fn restore(&self) {
        let list = self.console("GET", "/api/streams", "").json();
        for s in list["streams"].as_array().into_iter().flatten() {
            let name = s["name"].as_str().unwrap_or_default();
            if name != "front" {
                let path = format!("/api/streams/{name}?purge=true");
                let r = self.console("DELETE", &path, "");
                assert_eq!(r.status, 200, "DELETE {path}: {}", r.text());
            }
        }
        let front = json!({ "name": "front", "url": self.nvr_camera_url(), "enabled": true, "record": "continuous",
                            "retention_days": null, "max_storage_mb": null, "bitrate_kbps": null, "priority": 0 });
        let r = self.console("GET", "/api/streams/front", "");
        let r = match r.status {
            404 => self.console("POST", "/api/streams", &front.to_string()),
            _ => self.console("PUT", "/api/streams/front", &front.to_string()),
        };
        assert!(r.status == 200 || r.status == 201, "restore front: {}", r.text());
        self.nvr.wait_for("/api/streams/front", Duration::from_secs(30), "front recording again", |v| {
            v["status"]["frames"].as_u64().unwrap_or(0) > 0
        });
    }

    fn nvr_camera_url(&self) -> String {
        self._camera.url("h264")
    }
}

/// Figures of one Schemathesis run from its NDJSON events.
fn figures(report: &Path, secs: f64) -> Value {
    let text = std::fs::read_to_string(report).unwrap_or_default();
    let (mut cases, mut operations, mut failures) = (0u64, std::collections::BTreeSet::new(), 0u64);
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        if let Some(done) = v.get("ScenarioFinished") {
            if let Some(label) = done["recorder"]["label"].as_str() {
                operations.insert(label.to_string());
            }
            cases += done["recorder"]["cases"].as_object().map_or(0, |c| c.len() as u64);
            failures += done["recorder"]["checks"].as_object().map_or(0, |c| {
                c.values()
                    .filter_map(Value::as_array)
                    .flatten()
                    .filter(|x| x["status"].as_str().is_some_and(|s| s.eq_ignore_ascii_case("failure")))
                    .count() as u64
            });
        }
    }
    json!({ "seconds": (secs * 10.0).round() / 10.0, "cases": cases, "operations": operations.len(),
            "failed_checks": failures })
}

/// The FAILURES section of Schemathesis' output (or its end, if it has none).
fn failures_of(text: &str) -> String {
    let from = text.find("= FAILURES =").or_else(|| text.find("= ERRORS =")).unwrap_or(0);
    let to = text.find("= WARNINGS =").or_else(|| text.find("= SUMMARY =")).filter(|t| *t > from).unwrap_or(text.len());
    let start = text[..from].rfind('\n').unwrap_or(from);
    text[start..to].lines().filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join("\n")
}

/// Schemathesis' options selecting exactly these operations, or all but them.
fn selection(ids: &[&str], include: bool) -> Vec<String> {
    let flag = if include { "--include-operation-id" } else { "--exclude-operation-id" };
    ids.iter().flat_map(|id| [flag.to_string(), id.to_string()]).collect()
}

#[test]
fn the_api_answers_what_its_document_says() {
    let began = Instant::now();
    let mut f = Fuzz::start();
    let none = Role { name: "unauthenticated", bearer: None };
    f.run("setup", &none, &selection(&["setup"], true));
    let console = f.nvr.auth_header().1.trim_start_matches("Bearer ").to_string();
    let roles = [
        none,
        Role { name: "viewer", bearer: Some(f.user_key("viewer")) },
        Role { name: "operator", bearer: Some(f.user_key("operator")) },
        Role { name: "admin", bearer: Some(f.user_key("admin")) },
        Role { name: "console", bearer: Some(console) },
    ];
    f.nvr.wait_for("/api/recordings?stream=front", Duration::from_secs(30), "a recording of front", |v| {
        v["recordings"].as_array().is_some_and(|a| !a.is_empty())
    });
    for role in &roles {
        let skip: Vec<&str> = ENDS_CREDENTIALS.iter().chain(&EXCLUDED).copied().collect();
        f.run("all", role, &selection(&skip, false));
        f.restore();
    }
    for role in &roles {
        f.run("ending", role, &selection(&ENDS_CREDENTIALS, true));
    }
    let report = json!({
        "examples": f.examples,
        "seed": f.seed,
        "seconds": began.elapsed().as_secs(),
        "runs": f.runs.iter().map(|(p, r, v)| json!({ "pass": p, "role": r, "figures": v })).collect::<Vec<_>>(),
    });
    eprintln!("{report}");
    if let Ok(path) = std::env::var("OXINVR_API_FUZZ_REPORT") {
        std::fs::write(&path, serde_json::to_string_pretty(&report).expect("json")).expect("write report");
    }
    assert!(f.failed.is_empty(), "answers that break openapi.json:\n{}", f.failed.join("\n\n"));
}
