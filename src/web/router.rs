//! Route matching: raw request target -> (method, resource, query).
//!
//! Invariants: the path is split on `/` *before* percent-decoding, so an
//! encoded `%2F` can never create or remove a path segment; decoded segments
//! are only ever used as database keys (stream names, segment ids), never as
//! file system paths. `HEAD` is accepted wherever `GET` is.

/// HTTP methods the API knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
}

impl Method {
    pub fn parse(s: &str) -> Option<Method> {
        match s {
            "GET" => Some(Method::Get),
            "HEAD" => Some(Method::Head),
            "POST" => Some(Method::Post),
            "PUT" => Some(Method::Put),
            "DELETE" => Some(Method::Delete),
            _ => None,
        }
    }

    /// True for methods whose request body the API reads.
    pub fn has_body(self) -> bool {
        matches!(self, Method::Post | Method::Put)
    }
}

/// What a path names; path parameters are percent-decoded but unchecked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    Health,
    OpenApi,
    AuthStatus,
    AuthSetup,
    AuthLogin,
    AuthLogout,
    Sessions,
    Session(String),
    Users,
    User(String),
    UserTotp(String),
    UserTotpConfirm(String),
    Keys,
    Key(String),
    Streams,
    Stream(String),
    Live(String),
    /// WebRTC signalling for a stream, relayed to go2rtc.
    WebRtc(String),
    Probe,
    /// WS-Discovery of ONVIF cameras (`web::onvif`).
    OnvifDiscover,
    /// One ONVIF camera's device information and profiles.
    OnvifProbe,
    /// The ONVIF camera behind a stream.
    StreamOnvif(String),
    /// Pan/tilt/zoom of a stream's ONVIF camera.
    Ptz(String),
    /// `PUT {"enabled": bool}`: a stream's detection switch (`web::detection`).
    StreamDetection(String),
    /// The newest picture a stream's detection decoded (JPEG).
    Snapshot(String),
    Recordings,
    RecordingFile(String),
    Export,
    Playback(String),
    System,
    /// Prometheus metrics (`web::metrics`).
    Metrics,
    /// The HTTPS certificate (`web.tls`).
    Tls,
    /// The memory budget (`governor::budget`).
    Memory,
    Logs,
    Settings,
    /// `GET` list, `POST` a manual or external event.
    Events,
    /// The live push of events (server-sent events).
    EventStream,
    Event(String),
    EventEnd(String),
    EventClip(String),
    /// An event's `snapshot` or `thumbnail` (the second field says which).
    EventImage(String, &'static str),
    Ota,
    /// The webhooks and their last deliveries (`notify::webhook`).
    Webhooks,
    /// `POST`: send a test event to one webhook.
    WebhookTest(String),
    /// `POST` a JPEG, get the objects in it (`web::detect`).
    Detect,
    /// Test-only: stall a part (`base::heartbeat::stall`); refused unless
    /// `OXINVR_TEST_KNOBS=1`.
    TestStall,
    /// A file of the embedded web page (any path outside `/api/`), without the leading `/`.
    Static(String),
}

impl Resource {
    /// The documented path template (openapi.json's key): the `route` label of
    /// `oxinvr_http_requests_total`, so raw names and ids never become labels.
    /// Exhaustive on purpose: a new route does not compile until it has one.
    pub fn pattern(&self) -> &'static str {
        match self {
            Resource::Health => "/api/health",
            Resource::OpenApi => "/api/openapi.json",
            Resource::AuthStatus => "/api/auth/status",
            Resource::AuthSetup => "/api/auth/setup",
            Resource::AuthLogin => "/api/auth/login",
            Resource::AuthLogout => "/api/auth/logout",
            Resource::Sessions => "/api/auth/sessions",
            Resource::Session(_) => "/api/auth/sessions/{id}",
            Resource::Users => "/api/users",
            Resource::User(_) => "/api/users/{name}",
            Resource::UserTotp(_) => "/api/users/{name}/totp",
            Resource::UserTotpConfirm(_) => "/api/users/{name}/totp/confirm",
            Resource::Keys => "/api/keys",
            Resource::Key(_) => "/api/keys/{id}",
            Resource::Streams => "/api/streams",
            Resource::Stream(_) => "/api/streams/{name}",
            Resource::Live(_) => "/api/streams/{name}/live",
            Resource::WebRtc(_) => "/api/streams/{name}/webrtc",
            Resource::Probe => "/api/probe",
            Resource::OnvifDiscover => "/api/onvif/discover",
            Resource::OnvifProbe => "/api/onvif/probe",
            Resource::StreamOnvif(_) => "/api/streams/{name}/onvif",
            Resource::Ptz(_) => "/api/streams/{name}/ptz",
            Resource::StreamDetection(_) => "/api/streams/{name}/detection",
            Resource::Snapshot(_) => "/api/streams/{name}/snapshot",
            Resource::Recordings => "/api/recordings",
            Resource::RecordingFile(_) => "/api/recordings/{id}/file",
            Resource::Export => "/api/export.mp4",
            Resource::Playback(_) => "/api/playback/{stream}.m3u8",
            Resource::System => "/api/system",
            Resource::Metrics => "/api/metrics",
            Resource::Memory => "/api/system/memory",
            Resource::Logs => "/api/system/logs",
            Resource::TestStall => "/api/system/test-stall",
            Resource::Settings => "/api/settings",
            Resource::Events => "/api/events",
            Resource::EventStream => "/api/events/stream",
            Resource::Event(_) => "/api/events/{id}",
            Resource::EventEnd(_) => "/api/events/{id}/end",
            Resource::EventClip(_) => "/api/events/{id}/clip",
            Resource::EventImage(_, "thumbnail") => "/api/events/{id}/thumbnail",
            Resource::EventImage(..) => "/api/events/{id}/snapshot",
            Resource::Ota => "/api/system/ota",
            Resource::Detect => "/api/detect",
            Resource::Tls => "/api/system/tls",
            Resource::Webhooks => "/api/webhooks",
            Resource::WebhookTest(_) => "/api/webhooks/{name}/test",
            Resource::Static(file) if file.is_empty() => "/",
            Resource::Static(_) => "/{file}",
        }
    }

    /// Methods the resource answers (HEAD implied by GET), for `Allow`.
    pub fn allowed(&self) -> &'static [Method] {
        use Method::*;
        match self {
            Resource::AuthSetup | Resource::AuthLogin | Resource::AuthLogout | Resource::Probe => &[Post],
            Resource::WebRtc(_)
            | Resource::Detect
            | Resource::OnvifDiscover
            | Resource::OnvifProbe
            | Resource::Ptz(_) => &[Post],
            Resource::StreamOnvif(_) => &[Get, Put, Delete],
            Resource::StreamDetection(_) => &[Put],
            Resource::UserTotpConfirm(_) | Resource::TestStall | Resource::WebhookTest(_) => &[Post],
            Resource::Session(_) | Resource::Key(_) => &[Delete],
            Resource::Users | Resource::Keys | Resource::Streams | Resource::Ota | Resource::Events => &[Get, Post],
            Resource::EventEnd(_) => &[Post],
            Resource::Event(_) => &[Get, Delete],
            Resource::User(_) | Resource::Stream(_) => &[Get, Put, Delete],
            Resource::Tls => &[Get, Put],
            Resource::Memory => &[Get, Put],
            Resource::UserTotp(_) => &[Post, Delete],
            _ => &[Get],
        }
    }
}

/// Who may use a route: `Public` needs no credential; the roles are ordered
/// (an admin may do what an operator may, an operator what a viewer may).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    Public,
    Viewer,
    Operator,
    Admin,
}

/// The least role that may call `method` on `resource`. Handlers of routes a
/// user may call for themselves (`User`, `UserTotp`, `Sessions`, `Keys`) also
/// check that a non-admin acts on their own account only.
pub fn access(resource: &Resource, method: Method) -> Access {
    use Resource as R;
    match (resource, method) {
        (R::Health | R::OpenApi | R::AuthStatus | R::AuthSetup | R::AuthLogin | R::Static(_), _) => Access::Public,
        (R::Users, _) | (R::User(_), Method::Delete) | (R::Tls, Method::Put) => Access::Admin,
        (R::Stream(_), Method::Delete) | (R::Logs | R::Settings | R::Ota | R::TestStall, _) => Access::Admin,
        (R::Memory, Method::Put) | (R::Event(_), Method::Delete) => Access::Admin,
        (R::Events, Method::Post) | (R::EventEnd(_), _) | (R::Detect, _) => Access::Operator,
        (R::Webhooks | R::WebhookTest(_), _) => Access::Operator,
        (R::OnvifDiscover | R::OnvifProbe | R::Ptz(_), _) => Access::Operator,
        (R::StreamOnvif(_), Method::Put | Method::Delete) | (R::StreamDetection(_), _) => Access::Operator,
        (R::Streams | R::Stream(_), Method::Post | Method::Put) | (R::Probe | R::System | R::Memory, _) => {
            Access::Operator
        }
        _ => Access::Viewer,
    }
}

/// A matched request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matched {
    /// `Head` is reported as `Get`; the server drops the body itself.
    pub method: Method,
    pub resource: Resource,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteError {
    NotFound,
    /// The value of the `Allow` header.
    MethodNotAllowed(String),
}

/// Matches a method and a path (without the query string).
pub fn route(method: &str, path: &str) -> Result<Matched, RouteError> {
    let resource = resource(path).ok_or(RouteError::NotFound)?;
    let allowed = resource.allowed();
    let method = match Method::parse(method) {
        Some(Method::Head) => Method::Get,
        Some(m) => m,
        None => return Err(RouteError::MethodNotAllowed(allow_header(allowed))),
    };
    if !allowed.contains(&method) {
        return Err(RouteError::MethodNotAllowed(allow_header(allowed)));
    }
    Ok(Matched { method, resource })
}

fn allow_header(allowed: &[Method]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for m in allowed {
        names.push(match m {
            Method::Get => "GET, HEAD",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        });
    }
    names.join(", ")
}

/// The resource a path names, if any.
fn resource(path: &str) -> Option<Resource> {
    if path != "/api" && !path.starts_with("/api/") {
        return Some(Resource::Static(decode(path.strip_prefix('/')?)));
    }
    let path = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path);
    let rest = path.strip_prefix("/api/")?;
    let segs: Vec<&str> = rest.split('/').collect();
    let r = match segs.as_slice() {
        ["health"] => Resource::Health,
        ["openapi.json"] => Resource::OpenApi,
        ["auth", "status"] => Resource::AuthStatus,
        ["auth", "setup"] => Resource::AuthSetup,
        ["auth", "login"] => Resource::AuthLogin,
        ["auth", "logout"] => Resource::AuthLogout,
        ["auth", "sessions"] => Resource::Sessions,
        ["auth", "sessions", id] => Resource::Session(decode(id)),
        ["users"] => Resource::Users,
        ["users", name] => Resource::User(decode(name)),
        ["users", name, "totp"] => Resource::UserTotp(decode(name)),
        ["users", name, "totp", "confirm"] => Resource::UserTotpConfirm(decode(name)),
        ["keys"] => Resource::Keys,
        ["keys", id] => Resource::Key(decode(id)),
        ["probe"] => Resource::Probe,
        ["streams"] => Resource::Streams,
        ["streams", name] => Resource::Stream(decode(name)),
        ["streams", name, "live"] => Resource::Live(decode(name)),
        ["streams", name, "webrtc"] => Resource::WebRtc(decode(name)),
        ["streams", name, "onvif"] => Resource::StreamOnvif(decode(name)),
        ["streams", name, "ptz"] => Resource::Ptz(decode(name)),
        ["streams", name, "detection"] => Resource::StreamDetection(decode(name)),
        ["streams", name, "snapshot"] => Resource::Snapshot(decode(name)),
        ["onvif", "discover"] => Resource::OnvifDiscover,
        ["onvif", "probe"] => Resource::OnvifProbe,
        ["recordings"] => Resource::Recordings,
        // `file.mp4`: the same, for clients that judge by extension (ffmpeg's HLS demuxer).
        ["recordings", id, "file" | "file.mp4"] => Resource::RecordingFile(decode(id)),
        ["export.mp4"] => Resource::Export,
        ["playback", file] => Resource::Playback(decode(file.strip_suffix(".m3u8")?)),
        ["system"] => Resource::System,
        ["metrics"] => Resource::Metrics,
        ["system", "ota"] => Resource::Ota,
        ["system", "tls"] => Resource::Tls,
        ["system", "memory"] => Resource::Memory,
        ["system", "logs"] => Resource::Logs,
        ["system", "test-stall"] => Resource::TestStall,
        ["settings"] => Resource::Settings,
        ["detect"] => Resource::Detect,
        ["events"] => Resource::Events,
        ["events", "stream"] => Resource::EventStream,
        ["events", id] => Resource::Event(decode(id)),
        ["events", id, "end"] => Resource::EventEnd(decode(id)),
        ["events", id, "clip" | "clip.mp4"] => Resource::EventClip(decode(id)),
        ["events", id, "snapshot"] => Resource::EventImage(decode(id), "snapshot"),
        ["events", id, "thumbnail"] => Resource::EventImage(decode(id), "thumbnail"),
        ["webhooks"] => Resource::Webhooks,
        ["webhooks", name, "test"] => Resource::WebhookTest(decode(name)),
        _ => return None,
    };
    Some(r)
}

/// Splits a request target into path and query.
pub fn split_target(target: &str) -> (&str, &str) {
    let target = target.split_once('#').map_or(target, |(t, _)| t);
    target.split_once('?').unwrap_or((target, ""))
}

/// Percent-decodes one path segment (`+` stays `+`); malformed escapes are
/// kept literally and invalid UTF-8 is replaced, so the result never matches
/// a valid name or id by accident.
pub fn decode(segment: &str) -> String {
    let b = segment.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
        match (b[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decoded query parameters, in order.
#[derive(Clone, Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(query: &str) -> Query {
        Query(url::form_urlencoded::parse(query.as_bytes()).into_owned().collect())
    }

    /// The first value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Refuses parameters not in `known` (typos would otherwise be ignored silently).
    pub fn only(&self, known: &[&str]) -> Result<(), String> {
        match self.0.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some((k, _)) if known.is_empty() => Err(format!("unknown query parameter {k:?}: this route takes none")),
            Some((k, _)) => Err(format!("unknown query parameter {k:?} (known: {})", known.join(", "))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_guard_routes() {
        let a = |m: &str, p: &str| {
            let r = route(m, p).unwrap_or_else(|e| panic!("{m} {p}: {e:?}"));
            access(&r.resource, r.method)
        };
        assert_eq!(a("GET", "/"), Access::Public);
        assert_eq!(a("GET", "/api/health"), Access::Public);
        assert_eq!(a("POST", "/api/auth/login"), Access::Public);
        assert_eq!(a("GET", "/api/streams"), Access::Viewer);
        assert_eq!(a("GET", "/api/metrics"), Access::Viewer);
        assert_eq!(a("GET", "/api/streams/front/live"), Access::Viewer);
        assert_eq!(a("PUT", "/api/streams/front"), Access::Operator);
        assert_eq!(a("DELETE", "/api/streams/front"), Access::Admin);
        assert_eq!(a("GET", "/api/settings"), Access::Admin);
        assert_eq!(a("POST", "/api/users"), Access::Admin);
        assert_eq!(a("PUT", "/api/users/bob"), Access::Viewer);
        assert_eq!(a("GET", "/api/events"), Access::Viewer);
        assert_eq!(a("GET", "/api/events/stream"), Access::Viewer);
        assert_eq!(a("POST", "/api/events"), Access::Operator);
        assert_eq!(a("POST", "/api/detect"), Access::Operator);
        assert_eq!(a("POST", "/api/events/3/end"), Access::Operator);
        assert_eq!(a("DELETE", "/api/events/3"), Access::Admin);
        assert_eq!(a("POST", "/api/onvif/discover"), Access::Operator);
        assert_eq!(a("POST", "/api/onvif/probe"), Access::Operator);
        assert_eq!(a("POST", "/api/streams/front/ptz"), Access::Operator);
        assert_eq!(a("GET", "/api/streams/front/onvif"), Access::Viewer);
        assert_eq!(a("PUT", "/api/streams/front/onvif"), Access::Operator);
        assert_eq!(a("PUT", "/api/streams/front/detection"), Access::Operator);
        assert_eq!(a("GET", "/api/events/3/clip"), Access::Viewer);
        assert_eq!(a("GET", "/api/webhooks"), Access::Operator);
        assert_eq!(a("POST", "/api/webhooks/ha/test"), Access::Operator);
        assert!(Access::Admin > Access::Operator && Access::Operator > Access::Viewer);
    }

    fn ok(method: &str, path: &str) -> Resource {
        match route(method, path) {
            Ok(m) => m.resource,
            Err(e) => panic!("{method} {path}: {e:?}"),
        }
    }

    #[test]
    fn routes_match() {
        assert_eq!(ok("GET", "/api/health"), Resource::Health);
        assert_eq!(ok("HEAD", "/api/health"), Resource::Health);
        assert_eq!(ok("GET", "/api/streams"), Resource::Streams);
        assert_eq!(ok("POST", "/api/streams/"), Resource::Streams);
        assert_eq!(ok("PUT", "/api/streams/front"), Resource::Stream("front".into()));
        assert_eq!(ok("DELETE", "/api/streams/front"), Resource::Stream("front".into()));
        assert_eq!(ok("GET", "/api/recordings"), Resource::Recordings);
        assert_eq!(ok("GET", "/api/recordings/42/file"), Resource::RecordingFile("42".into()));
        assert_eq!(ok("GET", "/api/recordings/42/file.mp4"), Resource::RecordingFile("42".into()));
        assert_eq!(ok("GET", "/api/export.mp4"), Resource::Export);
        assert_eq!(ok("GET", "/api/playback/front.m3u8"), Resource::Playback("front".into()));
        assert_eq!(ok("GET", "/api/system"), Resource::System);
    }

    #[test]
    fn unknown_routes_are_not_found() {
        for p in [
            "/api",
            "/api/",
            "/api/nope",
            "/api//health",
            "/api/health/x",
            "/api/streams/a/b",
            "/api/recordings/1",
            "/api/recordings/1/file/x",
            "/api/playback/front",
            "/api/playback/front.mp4",
            "/api/recordings/../../etc/passwd",
            "/api/streams/a/live/x",
        ] {
            assert_eq!(route("GET", p), Err(RouteError::NotFound), "{p}");
        }
    }

    #[test]
    fn wrong_methods_are_refused_with_allow() {
        assert_eq!(route("POST", "/api/health"), Err(RouteError::MethodNotAllowed("GET, HEAD".into())));
        assert_eq!(route("DELETE", "/api/streams"), Err(RouteError::MethodNotAllowed("GET, HEAD, POST".into())));
        assert_eq!(
            route("PATCH", "/api/streams/x"),
            Err(RouteError::MethodNotAllowed("GET, HEAD, PUT, DELETE".into()))
        );
    }

    #[test]
    fn encoded_slashes_stay_inside_their_segment() {
        assert_eq!(
            ok("GET", "/api/recordings/..%2F..%2Fetc%2Fpasswd/file"),
            Resource::RecordingFile("../../etc/passwd".into())
        );
        assert_eq!(ok("GET", "/api/streams/a%2Fb"), Resource::Stream("a/b".into()));
    }

    #[test]
    fn decoding_is_total() {
        assert_eq!(decode("a%20b"), "a b");
        assert_eq!(decode("a+b"), "a+b");
        assert_eq!(decode("%"), "%");
        assert_eq!(decode("%4"), "%4");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("%ff"), "\u{fffd}");
        assert_eq!(decode("%E2%82%AC"), "€");
    }

    #[test]
    fn targets_and_queries_split() {
        assert_eq!(split_target("/a?b=1#f"), ("/a", "b=1"));
        assert_eq!(split_target("/a#f?x"), ("/a", ""));
        let q = Query::parse("start=2026-01-01T00%3A00%3A00Z&stream=front&stream=back&x");
        assert_eq!(q.get("start"), Some("2026-01-01T00:00:00Z"));
        assert_eq!(q.get("stream"), Some("front"));
        assert_eq!(q.get("end"), None);
        assert!(q.only(&["start", "stream", "x"]).is_ok());
        let e = q.only(&["start", "stream"]).unwrap_err();
        assert!(e.contains("\"x\""), "{e}");
    }
}
