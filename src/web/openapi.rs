//! `GET /api/openapi.json`: the OpenAPI 3.1 document of the whole API,
//! `openapi.json` next to this file, embedded and served as is.
//!
//! Invariant: the document and the router agree. The tests route every
//! documented path and method, compare each operation's `x-oxinvr-role` and
//! `security` with `router::access`, and check that every `Resource` variant
//! (an exhaustive match in `Resource::pattern`, so a new variant does not compile until it
//! is documented) is documented with every method it answers. A further test
//! calls the real handlers and checks their JSON against the documented
//! schemas (a renamed, missing or undocumented field fails). docs/API.md says
//! how to add a route.

use super::reply::{ApiError, Reply};
use super::router::Query;

/// The document (hand-written JSON; the tests keep it true to the router).
pub const DOCUMENT: &str = include_str!("openapi.json");

pub fn document(q: &Query) -> Result<Reply, ApiError> {
    q.only(&[]).map_err(ApiError::bad_request)?;
    Ok(Reply::text(200, "application/json", DOCUMENT.to_string()))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::Value;

    use super::*;
    use crate::web::reply::Body;
    use crate::web::router::{self, Access, Method, Resource};

    /// Keys of a path item that are HTTP methods (OpenAPI's list).
    const OPERATION_KEYS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
    /// Other keys a path item may have.
    const PATH_ITEM_KEYS: [&str; 4] = ["summary", "description", "parameters", "servers"];

    fn doc() -> Value {
        serde_json::from_str(DOCUMENT).unwrap_or_else(|e| panic!("openapi.json does not parse: {e}"))
    }

    /// The sample value put in for a path parameter, by its name.
    fn value_of(param: &str) -> &'static str {
        match param {
            "name" => "n1",
            "id" => "42",
            "stream" => "cam1",
            "file" => "index.html",
            other => panic!("no sample value for path parameter {{{other}}}: add one to value_of"),
        }
    }

    /// Names of the `{parameters}` of a path template.
    fn template_params(template: &str) -> Vec<&str> {
        template.split('{').skip(1).filter_map(|s| s.split_once('}')).map(|(name, _)| name).collect()
    }

    /// A path template with sample values for its parameters.
    fn fill(template: &str) -> String {
        let mut out = template.to_string();
        for p in template_params(template) {
            out = out.replace(&format!("{{{p}}}"), value_of(p));
        }
        out
    }

    /// One resource of each variant, with the values `fill` puts in its template
    /// (`samples_cover_every_variant` checks that none is missing).
    fn samples() -> Vec<Resource> {
        let name = || value_of("name").to_string();
        let id = || value_of("id").to_string();
        vec![
            Resource::Health,
            Resource::OpenApi,
            Resource::AuthStatus,
            Resource::AuthSetup,
            Resource::AuthLogin,
            Resource::AuthLogout,
            Resource::Sessions,
            Resource::Session(id()),
            Resource::Users,
            Resource::User(name()),
            Resource::UserTotp(name()),
            Resource::UserTotpConfirm(name()),
            Resource::Keys,
            Resource::Key(id()),
            Resource::Streams,
            Resource::Stream(name()),
            Resource::Live(name()),
            Resource::WebRtc(name()),
            Resource::Probe,
            Resource::OnvifDiscover,
            Resource::OnvifProbe,
            Resource::StreamOnvif(name()),
            Resource::Ptz(name()),
            Resource::StreamDetection(name()),
            Resource::Snapshot(name()),
            Resource::Recordings,
            Resource::RecordingFile(id()),
            Resource::Export,
            Resource::Playback(value_of("stream").to_string()),
            Resource::System,
            Resource::Metrics,
            Resource::Memory,
            Resource::Logs,
            Resource::TestStall,
            Resource::Settings,
            Resource::Events,
            Resource::EventStream,
            Resource::Event(id()),
            Resource::EventEnd(id()),
            Resource::EventClip(id()),
            Resource::EventImage(id(), "snapshot"),
            Resource::EventImage(id(), "thumbnail"),
            Resource::Ota,
            Resource::Detect,
            Resource::Tls,
            Resource::Webhooks,
            Resource::WebhookTest(name()),
            Resource::Static(String::new()),
            Resource::Static(value_of("file").to_string()),
        ]
    }

    fn role_name(a: Access) -> &'static str {
        match a {
            Access::Public => "public",
            Access::Viewer => "viewer",
            Access::Operator => "operator",
            Access::Admin => "admin",
        }
    }

    /// The OpenAPI key of a method the router answers (HEAD is implied by GET).
    fn key_of(m: Method) -> &'static str {
        match m {
            Method::Get => "get",
            Method::Head => "head",
            Method::Post => "post",
            Method::Put => "put",
            Method::Delete => "delete",
        }
    }

    fn paths(doc: &Value) -> &serde_json::Map<String, Value> {
        doc["paths"].as_object().expect("paths is an object")
    }

    /// The methods (OpenAPI keys, HEAD left out) documented for a path item.
    fn documented_methods(item: &Value) -> BTreeSet<String> {
        let item = item.as_object().expect("a path item is an object");
        item.keys().filter(|k| OPERATION_KEYS.contains(&k.as_str()) && k.as_str() != "head").cloned().collect()
    }

    /// (template, method key, operation) of every documented operation but HEAD.
    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for (template, item) in paths(doc) {
            for m in documented_methods(item) {
                out.push((template.clone(), m.clone(), item[&m].clone()));
            }
        }
        out
    }

    /// `v` or, if it is a `$ref`, what it points to.
    fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let target = r.strip_prefix('#').and_then(|p| doc.pointer(p));
                target.unwrap_or_else(|| panic!("$ref {r} does not resolve"))
            }
            None => v,
        }
    }

    fn router_allowed(r: &Resource) -> BTreeSet<String> {
        r.allowed().iter().filter(|m| **m != Method::Head).map(|m| key_of(*m).to_string()).collect()
    }

    #[test]
    fn documented_operations_are_routed_with_their_role_and_security() {
        let doc = doc();
        let schemes = doc["components"]["securitySchemes"].as_object().expect("securitySchemes");
        assert!(schemes.contains_key("session") && schemes.contains_key("bearer"), "{schemes:?}");
        assert_eq!(schemes["session"]["in"], "cookie");
        assert_eq!(schemes["session"]["name"], "oxinvr_session");
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        for (template, item) in paths(&doc) {
            for key in item.as_object().expect("path item").keys() {
                assert!(
                    OPERATION_KEYS.contains(&key.as_str()) || PATH_ITEM_KEYS.contains(&key.as_str()),
                    "{template}: unexpected key {key:?}"
                );
            }
            let path = fill(template);
            let documented = documented_methods(item);
            assert!(!documented.is_empty(), "{template}: no operation");
            let mut resource: Option<Resource> = None;
            for m in &documented {
                let method = m.to_uppercase();
                let matched = router::route(&method, &path)
                    .unwrap_or_else(|e| panic!("documented {method} {template} ({path}) is not routed: {e:?}"));
                let r = matched.resource;
                if let Some(first) = &resource {
                    assert_eq!(&r, first, "{template}: methods route to different resources");
                }
                assert_eq!(
                    router_allowed(&r),
                    documented,
                    "{template}: documented methods differ from what the router answers for {r:?}"
                );
                let op = &item[m];
                let want = role_name(router::access(&r, matched.method));
                assert_eq!(op["x-oxinvr-role"], want, "{method} {template}: x-oxinvr-role, router::access says {want}");
                let security = op["security"].as_array().unwrap_or_else(|| panic!("{method} {template}: no security"));
                if want == "public" {
                    assert!(security.is_empty(), "{method} {template}: public, so security must be []");
                } else {
                    assert!(
                        !security.is_empty(),
                        "{method} {template}: needs a credential, so security must not be []"
                    );
                    for req in security {
                        let req = req.as_object().unwrap_or_else(|| panic!("{method} {template}: {req}"));
                        assert!(!req.is_empty(), "{method} {template}: an empty requirement makes the route public");
                        for scheme in req.keys() {
                            assert!(schemes.contains_key(scheme), "{method} {template}: unknown scheme {scheme}");
                        }
                    }
                }
                resource = Some(r);
            }
        }
    }

    #[test]
    fn every_route_is_documented() {
        let doc = doc();
        for r in samples() {
            let template = Resource::pattern(&r);
            let item = paths(&doc).get(template).unwrap_or_else(|| panic!("{r:?}: {template} is not in openapi.json"));
            assert_eq!(documented_methods(item), router_allowed(&r), "{template}: documented methods of {r:?}");
            let path = fill(template);
            for m in r.allowed() {
                let name = key_of(*m).to_uppercase();
                let matched = router::route(&name, &path).unwrap_or_else(|e| panic!("{name} {path}: {e:?}"));
                assert_eq!(matched.resource, r, "{name} {path}: the sample template routes elsewhere");
            }
        }
        // The alias of the recording file is documented too.
        let alias = "/api/recordings/{id}/file.mp4";
        assert!(paths(&doc).contains_key(alias), "{alias}");
    }

    /// The identifier a variant starts with (`Stream("x")` -> `Stream`).
    fn variant_name(s: &str) -> String {
        s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
    }

    #[test]
    fn samples_cover_every_variant() {
        // The variants as router.rs declares them (rustfmt puts each at four spaces).
        let src = include_str!("router.rs");
        let body = src.split("pub enum Resource {").nth(1).expect("router.rs declares `pub enum Resource {`");
        let body = &body[..body.find("\n}").expect("end of enum Resource")];
        let declared: BTreeSet<String> = body
            .lines()
            .filter_map(|l| l.strip_prefix("    "))
            .filter(|l| l.starts_with(|c: char| c.is_ascii_uppercase()))
            .map(variant_name)
            .collect();
        assert!(declared.contains("Health") && declared.contains("Static"), "parse of router.rs failed: {declared:?}");
        let sampled: BTreeSet<String> = samples().iter().map(|r| variant_name(&format!("{r:?}"))).collect();
        assert_eq!(sampled, declared, "samples() must hold one resource of every variant");
    }

    /// True for the error object `{"error": string}` or a schema that extends it (`allOf`).
    fn is_error(doc: &Value, schema: &Value) -> bool {
        let error = &doc["components"]["schemas"]["Error"];
        schema == error || schema["allOf"].as_array().is_some_and(|all| all.iter().any(|s| resolve(doc, s) == error))
    }

    #[test]
    fn operations_are_complete() {
        let doc = doc();
        let error = &doc["components"]["schemas"]["Error"];
        assert_eq!(error["properties"]["error"]["type"], "string");
        assert_eq!(error["required"], serde_json::json!(["error"]));
        let mut ids = BTreeSet::new();
        for (template, m, op) in operations(&doc) {
            let at = format!("{} {template}", m.to_uppercase());
            let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{at}: no operationId"));
            assert!(ids.insert(id.to_string()), "{at}: operationId {id} is used twice");
            assert!(op["summary"].as_str().is_some_and(|s| !s.is_empty()), "{at}: no summary");
            let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{at}: no responses"));
            for code in responses.keys() {
                let valid = code == "default" || code.parse::<u16>().is_ok_and(|c| (100..600).contains(&c));
                assert!(valid, "{at}: response key {code:?}");
            }
            assert!(
                responses.keys().any(|c| c.starts_with('2') || c == "101"),
                "{at}: no success response (2xx or 101)"
            );
            for (code, resp) in responses {
                let resp = resolve(&doc, resp);
                assert!(resp["description"].is_string(), "{at}: response {code} has no description");
                if code.starts_with('4') || code.starts_with('5') || code == "default" {
                    let schema = resolve(&doc, &resp["content"]["application/json"]["schema"]);
                    assert!(is_error(&doc, schema), "{at}: {code} must be (or extend) the error object");
                }
            }
            let role = op["x-oxinvr-role"].as_str().unwrap_or_else(|| panic!("{at}: no x-oxinvr-role"));
            assert!(["public", "viewer", "operator", "admin"].contains(&role), "{at}: role {role}");
            if role != "public" {
                assert!(responses.contains_key("401"), "{at}: needs a credential, so it may answer 401");
            }
            if role == "operator" || role == "admin" {
                assert!(responses.contains_key("403"), "{at}: a viewer is refused with 403");
            }
            if (m == "post" || m == "put") && template != "/api/system/ota" {
                assert!(responses.contains_key("413"), "{at}: bodies over web.max_body_bytes get 413");
            }
            if op.get("requestBody").is_some() {
                assert!(m == "post" || m == "put", "{at}: the server reads bodies of POST and PUT only");
            }
        }
    }

    #[test]
    fn login_and_media_document_their_special_answers() {
        let doc = doc();
        let p = paths(&doc);
        let login = &p["/api/auth/login"]["post"]["responses"];
        assert!(resolve(&doc, &login["429"])["headers"]["Retry-After"].is_object(), "429 with Retry-After");
        for t in ["/api/recordings/{id}/file", "/api/recordings/{id}/file.mp4", "/api/export.mp4"] {
            let op = &p[t]["get"];
            for code in ["200", "206"] {
                assert!(op["responses"][code]["content"]["video/mp4"].is_object(), "{t}: {code} video/mp4");
            }
            assert!(op["responses"]["206"]["headers"]["Content-Range"].is_object(), "{t}: 206 Content-Range");
            assert!(op["responses"]["416"].is_object(), "{t}: 416");
            let params = op["parameters"].as_array().expect("parameters");
            let range = params.iter().map(|v| resolve(&doc, v)).any(|v| v["name"] == "Range" && v["in"] == "header");
            assert!(range, "{t}: Range header");
        }
        let hls = &p["/api/playback/{stream}.m3u8"]["get"]["responses"]["200"]["content"];
        assert!(hls["application/vnd.apple.mpegurl"].is_object());
        let live = &p["/api/streams/{name}/live"]["get"]["responses"];
        for code in ["101", "400", "403", "404", "503"] {
            assert!(live[code].is_object(), "live: {code}");
        }
    }

    #[test]
    fn parameters_match_the_templates() {
        let doc = doc();
        for (template, m, op) in operations(&doc) {
            let at = format!("{} {template}", m.to_uppercase());
            let mut declared: BTreeMap<(String, String), Value> = BTreeMap::new();
            let item_params = paths(&doc)[&template]["parameters"].as_array().cloned().unwrap_or_default();
            let op_params = op["parameters"].as_array().cloned().unwrap_or_default();
            for p in item_params.iter().chain(op_params.iter()) {
                let p = resolve(&doc, p);
                let (name, place) = (p["name"].as_str(), p["in"].as_str());
                let (Some(name), Some(place)) = (name, place) else {
                    panic!("{at}: parameter without name or in: {p}")
                };
                assert!(["path", "query", "header", "cookie"].contains(&place), "{at}: {name} in {place}");
                assert!(p["schema"].is_object(), "{at}: {name} has no schema");
                declared.insert((place.to_string(), name.to_string()), p.clone());
            }
            let in_path: BTreeSet<&str> =
                declared.keys().filter(|(place, _)| place == "path").map(|(_, n)| n.as_str()).collect();
            let in_template: BTreeSet<&str> = template_params(&template).into_iter().collect();
            assert_eq!(in_path, in_template, "{at}: path parameters");
            for n in in_path {
                assert_eq!(declared[&("path".to_string(), n.to_string())]["required"], true, "{at}: {n} required");
            }
        }
    }

    /// Every `$ref` under `v`, with where it is.
    fn refs(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k == "$ref" {
                        out.push((at.to_string(), x.as_str().unwrap_or_default().to_string()));
                    } else {
                        refs(x, &format!("{at}/{k}"), out);
                    }
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    refs(x, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = doc();
        let mut all = Vec::new();
        refs(&doc, "", &mut all);
        assert!(all.len() > 50, "{} refs", all.len());
        for (at, r) in all {
            let target = r.strip_prefix('#').and_then(|p| doc.pointer(p));
            assert!(r.starts_with("#/components/") && target.is_some(), "{at}: $ref {r:?} does not resolve");
        }
    }

    // ---- answers of the real handlers against the documented schemas ----

    /// The JSON types a value has (an integer is also a number).
    fn type_ok(t: &str, v: &Value) -> bool {
        match t {
            "null" => v.is_null(),
            "boolean" => v.is_boolean(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "string" => v.is_string(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            other => panic!("schema type {other:?}"),
        }
    }

    /// Property names a schema declares, through `$ref` and `allOf`.
    fn declared(doc: &Value, schema: &Value, out: &mut BTreeSet<String>) {
        let schema = resolve(doc, schema);
        if let Some(props) = schema["properties"].as_object() {
            out.extend(props.keys().cloned());
        }
        for s in schema["allOf"].as_array().into_iter().flatten() {
            declared(doc, s, out);
        }
    }

    /// Checks `v` against a schema of the document (the keywords it uses:
    /// `$ref`, `type`, `const`, `enum`, `properties`, `required`, `items`,
    /// `additionalProperties`, `allOf`, `oneOf`). `strict`: an object may not
    /// have properties its schema does not declare (a renamed field fails).
    fn check(doc: &Value, schema: &Value, v: &Value, at: &str, strict: bool) -> Result<(), String> {
        let schema = resolve(doc, schema);
        match &schema["type"] {
            Value::String(t) if !type_ok(t, v) => return Err(format!("{at}: {v} is not {t}")),
            Value::Array(ts) if !ts.iter().any(|t| type_ok(t.as_str().unwrap_or("?"), v)) => {
                return Err(format!("{at}: {v} is none of {ts:?}"));
            }
            _ => {}
        }
        if let Some(c) = schema.get("const").filter(|c| *c != v) {
            return Err(format!("{at}: {v} is not {c}"));
        }
        if let Some(e) = schema["enum"].as_array().filter(|e| !e.contains(v)) {
            return Err(format!("{at}: {v} is not one of {e:?}"));
        }
        for s in schema["allOf"].as_array().into_iter().flatten() {
            check(doc, s, v, at, false)?;
        }
        if let Some(alternatives) = schema["oneOf"].as_array() {
            let errors: Vec<String> = alternatives.iter().filter_map(|s| check(doc, s, v, at, strict).err()).collect();
            if errors.len() == alternatives.len() {
                return Err(format!("{at}: matches no alternative: {}", errors.join("; ")));
            }
        }
        if let (Value::Array(items), Some(item)) = (v, schema.get("items")) {
            for (i, x) in items.iter().enumerate() {
                check(doc, item, x, &format!("{at}[{i}]"), true)?;
            }
        }
        let Value::Object(fields) = v else { return Ok(()) };
        for r in schema["required"].as_array().into_iter().flatten() {
            let r = r.as_str().unwrap_or_default();
            if !fields.contains_key(r) {
                return Err(format!("{at}: required property {r} is missing in {v}"));
            }
        }
        let props = schema["properties"].as_object();
        let mut known = BTreeSet::new();
        declared(doc, schema, &mut known);
        for (k, x) in fields {
            let at = format!("{at}.{k}");
            match (props.and_then(|p| p.get(k)), schema.get("additionalProperties")) {
                (Some(s), _) => check(doc, s, x, &at, true)?,
                (None, Some(Value::Bool(false))) => return Err(format!("{at}: not allowed")),
                (None, Some(s @ Value::Object(_))) => check(doc, s, x, &at, true)?,
                (None, _) if strict && !known.is_empty() && !known.contains(k) => {
                    return Err(format!("{at}: not documented"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    struct Api {
        _dir: tempfile::TempDir,
        nvr: crate::web::state::Nvr,
        db: crate::index::db::Db,
        me: crate::auth::Principal,
        doc: Value,
    }

    impl Api {
        fn new() -> Api {
            use crate::auth::{Principal, Role, Via};
            let dir = tempfile::tempdir().expect("tempdir");
            let (data, rings) = (dir.path().join("data"), dir.path().join("rings"));
            std::fs::create_dir_all(&rings).expect("rings");
            let toml = format!(
                "[storage]\ndata_dir = {:?}\nring_dir = {:?}\n[web]\npbkdf2_iterations = 1000\n\n[[streams]]\nname = \"door\"\nurl = \"rtsp://u:pw@h/door\"\n",
                data.display().to_string(),
                rings.display().to_string()
            );
            let cfg = crate::config::Config::parse(&toml, "test").expect("config");
            std::fs::create_dir_all(&data).expect("data");
            let now = 1_800_000_000_000;
            let nvr = crate::web::state::Nvr::new(
                cfg.clone(),
                std::sync::Arc::new(crate::base::clock::SimulatedClock::new(now)),
            );
            let db = crate::index::db::Db::open(&cfg.db_path()).expect("db");
            let admin = db.create_user("root", Role::Admin, "unused-hash", now).expect("user");
            let id = db
                .create_session(admin.id, b"token-hash", "csrf", now, now + 3_600_000, "192.0.2.1", "test")
                .expect("s");
            let me = Principal {
                user_id: admin.id,
                username: admin.name,
                role: Role::Admin,
                via: Via::Session { id, csrf: "csrf".into() },
            };
            Api { _dir: dir, nvr, db, me, doc: doc() }
        }

        /// Answers `method target` through the handlers as the admin, checks
        /// that the status is `want` and documented, and that the body is what
        /// the document says for it; returns the JSON body (or null).
        fn call(&self, method: &str, target: &str, body: &str, want: u16) -> Value {
            use crate::web::request::RequestInfo;
            use crate::web::{dispatch, Call, Ctx};
            let (path, query) = router::split_target(target);
            let matched = router::route(method, path).unwrap_or_else(|e| panic!("{method} {target}: {e:?}"));
            let (resource, m) = (matched.resource.clone(), matched.method);
            let req = RequestInfo { content_type: Some("application/json".into()), ..RequestInfo::default() };
            let c = Call {
                matched,
                query: Query::parse(query),
                range: None,
                body: body.as_bytes(),
                principal: Some(&self.me),
                req: &req,
            };
            let reply = dispatch(&Ctx { nvr: &self.nvr, db: &self.db }, &c).unwrap_or_else(Reply::from);
            let content_type = reply.headers.iter().find(|(k, _)| *k == "Content-Type").map(|(_, v)| v.clone());
            let Body::Bytes(bytes) = reply.body else { panic!("{method} {target}: bytes expected") };
            let text = String::from_utf8_lossy(&bytes).into_owned();
            assert_eq!(reply.status, want, "{method} {target}: {text}");
            let op = &self.doc["paths"][Resource::pattern(&resource)][key_of(m)];
            let documented = &op["responses"][reply.status.to_string()];
            assert!(documented.is_object(), "{method} {target}: status {} is not documented", reply.status);
            let documented = resolve(&self.doc, documented);
            let Some(ct) = content_type else {
                assert!(bytes.is_empty() && documented.get("content").is_none(), "{method} {target}: no Content-Type");
                return Value::Null;
            };
            let schema = &documented["content"][&ct]["schema"];
            assert!(schema.is_object(), "{method} {target}: {} with {ct} is not documented", reply.status);
            if ct != "application/json" {
                return Value::Null;
            }
            let v: Value = serde_json::from_slice(&bytes).expect("JSON body");
            if let Err(e) = check(&self.doc, schema, &v, "body", true) {
                panic!("{method} {target} -> {}: the answer differs from openapi.json: {e}", reply.status);
            }
            v
        }
    }

    #[test]
    fn handlers_answer_what_the_document_says() {
        let api = Api::new();
        api.call("GET", "/api/health", "", 200);
        api.call("GET", "/api/openapi.json?x=1", "", 400);
        api.call("GET", "/api/auth/status", "", 200);
        api.call("POST", "/api/auth/setup", r#"{"username":"x","password":"12345678"}"#, 409);
        api.call("POST", "/api/auth/login", r#"{"username":"root","password":"wrong-password"}"#, 401);
        // Streams (starting one makes its ring, so status and ring are filled in).
        api.call("POST", "/api/streams", r#"{"name":"cam","url":"rtsp://u:pw@h/x","bitrate_kbps":64}"#, 201);
        api.call("POST", "/api/streams", r#"{"name":"cam","url":"rtsp://h/x"}"#, 409);
        api.call("POST", "/api/streams", r#"{"name":"cam2","url":"rtsp://h/x","colour":1}"#, 400);
        let v = api.call("GET", "/api/streams", "", 200);
        assert!(v["streams"][0]["status"].is_object() && v["streams"][0]["ring"].is_object(), "{v}");
        api.call("PUT", "/api/streams/cam", r#"{"priority":2,"retention_days":7}"#, 200);
        api.call("GET", "/api/streams/cam", "", 200);
        api.call("GET", "/api/streams/nope", "", 404);
        api.call("POST", "/api/probe", r#"{"url":"http://h/x"}"#, 400);
        let v = api.call("POST", "/api/probe", r#"{"url":"rtsp://127.0.0.1:1/x","timeout_ms":500}"#, 200);
        assert_eq!(v["ok"], false, "{v}");
        // ONVIF: checked bodies, no camera behind the stream, a camera that is not there.
        api.call("POST", "/api/onvif/discover", r#"{"colour":1}"#, 400);
        let v = api.call("POST", "/api/onvif/discover", r#"{"target":"127.0.0.1:9","timeout_ms":100}"#, 200);
        assert_eq!(v["devices"], serde_json::json!([]), "{v}");
        api.call("POST", "/api/onvif/probe", r#"{"username":"u"}"#, 400);
        api.call("POST", "/api/onvif/probe", r#"{"address":"127.0.0.1:9","password":"pw"}"#, 502);
        api.call("GET", "/api/streams/cam/onvif", "", 404);
        api.call("PUT", "/api/streams/cam/onvif", r#"{"address":"127.0.0.1:9"}"#, 400);
        api.call("PUT", "/api/streams/nope/onvif", r#"{"address":"127.0.0.1:9","profile":"p"}"#, 404);
        api.call("DELETE", "/api/streams/cam/onvif", "", 404);
        api.call("POST", "/api/streams/cam/ptz", r#"{"action":"stop"}"#, 404);
        api.call("POST", "/api/streams/cam/ptz", r#"{"pan":0.5}"#, 400);
        // Recordings and gaps.
        let stream = api.db.stream_by_name("cam").expect("db").expect("cam");
        let t0 = api.nvr.clock.now_ms() - 3_600_000;
        let seg = crate::index::db::NewSegment {
            stream_id: stream.id,
            path: "recordings/cam/day/1.mp4".into(),
            start_ms: t0,
            codec: "avc1.64001e".into(),
            width: 640,
            height: 480,
            video_timescale: 90_000,
            init_len: 700,
            has_audio: false,
            trigger: "continuous".into(),
            time_unknown: false,
        };
        let id = api.db.insert_segment(&seg).expect("segment");
        api.db.insert_gap(stream.id, t0 + 60_000, t0 + 70_000, "camera unreachable").expect("gap");
        // The open segment as the storage thread reports it (ahead of its row).
        let writing = crate::recording::stream::Writing { segment_id: id, end_ms: t0 + 4_000, bytes: 90_000 };
        api.nvr.recorder.stream("cam").expect("cam runs").with_status(|s| s.writing = Some(writing));
        let v = api.call("GET", "/api/recordings?stream=cam", "", 200);
        assert!(v["recordings"][0].is_object() && v["gaps"][0].is_object(), "{v}");
        assert_eq!(v["recordings"][0]["writing"]["duration_ms"], 4_000, "{v}");
        api.call("GET", "/api/recordings?stream=nope", "", 404);
        api.call("DELETE", "/api/streams/cam", "", 409);
        api.call("POST", "/api/streams", r#"{"name":"cam2","url":"rtsp://h/x"}"#, 201);
        api.call("DELETE", "/api/streams/cam2", "", 200);
        // System.
        let v = api.call("GET", "/api/system", "", 200);
        assert_eq!(
            (&v["clock"]["trusted"], &v["clock"]["now_ms"]),
            (&serde_json::json!(true), &serde_json::json!(1_800_000_000_000i64)),
            "{v}"
        );
        assert!(v["streams"][0]["ring"].is_object(), "{v}");
        api.call("GET", "/api/metrics", "", 200);
        api.call("GET", "/api/metrics?x=1", "", 400);
        api.call("GET", "/api/system/ota", "", 200);
        // HTTPS is off here (tests/tls.rs has it on).
        assert_eq!(api.call("GET", "/api/system/tls", "", 200), serde_json::json!({"enabled": false}));
        api.call("PUT", "/api/system/tls", r#"{"certificate":"x","private_key":"y"}"#, 409);
        api.call("GET", "/api/system/logs?lines=5", "", 200);
        api.call("GET", "/api/system/logs?lines=0", "", 400);
        let v = api.call("GET", "/api/settings", "", 200);
        assert_eq!(v["config"]["streams"][0]["url"], "rtsp://u:***@h/door");
        let cam = v["streams"].as_array().and_then(|a| a.iter().find(|s| s["name"] == "cam")).expect("cam");
        assert_eq!(
            (&cam["in_effect"]["retention_days"], &cam["source"]),
            (&Value::from(7), &Value::from("api")),
            "{v}"
        );
        // Users, TOTP, sessions, keys.
        api.call("POST", "/api/users", r#"{"username":"bob","password":"bob-password","role":"viewer"}"#, 201);
        api.call("POST", "/api/users", r#"{"username":"bob","password":"bob-password","role":"viewer"}"#, 409);
        api.call("GET", "/api/users", "", 200);
        api.call("GET", "/api/users/bob", "", 200);
        api.call("PUT", "/api/users/bob", r#"{"role":"operator"}"#, 200);
        api.call("PUT", "/api/users/root", r#"{"role":"viewer"}"#, 409);
        api.call("POST", "/api/users/root/totp", "", 200);
        api.call("POST", "/api/users/root/totp/confirm", r#"{"code":"000000"}"#, 400);
        api.call("DELETE", "/api/users/root/totp", "", 200);
        api.call("DELETE", "/api/users/bob", "", 204);
        api.call("GET", "/api/users/bob", "", 404);
        api.call("GET", "/api/auth/sessions", "", 200);
        let key = api.call("POST", "/api/keys", r#"{"name":"backup script"}"#, 201);
        assert!(key["key"].as_str().is_some_and(|k| k.starts_with("oxk_")), "{key}");
        api.call("GET", "/api/keys", "", 200);
        api.call("DELETE", &format!("/api/keys/{}", key["id"]), "", 204);
        api.call("DELETE", "/api/keys/x", "", 400);
        // Events (no recording here: the clip is a 404).
        let e = api.call("POST", "/api/events", r#"{"stream":"cam","label":"bell","zones":["porch"]}"#, 201);
        let id = e["id"].as_i64().expect("id");
        api.call("POST", "/api/events", r#"{"stream":"nope"}"#, 404);
        api.call("POST", "/api/events", r#"{"stream":"cam","score":3}"#, 400);
        api.call("POST", "/api/events", r#"{"stream":"cam","kind":"external","duration_s":10}"#, 201);
        let v = api.call("GET", "/api/events?stream=cam&limit=1", "", 200);
        assert!(v["next_cursor"].is_string(), "{v}");
        api.call("GET", "/api/events?kind=sneeze", "", 400);
        api.call("GET", &format!("/api/events/{id}"), "", 200);
        api.call("GET", "/api/events/x", "", 400);
        api.call("GET", &format!("/api/events/{id}/snapshot"), "", 404);
        api.call("GET", &format!("/api/events/{id}/thumbnail"), "", 404);
        api.call("GET", &format!("/api/events/{id}/clip?pre=1"), "", 404);
        api.call("POST", &format!("/api/events/{id}/end"), "", 200);
        api.call("POST", &format!("/api/events/{id}/end"), r#"{"end_ms":5}"#, 409);
        api.call("DELETE", &format!("/api/events/{id}"), "", 200);
        api.call("DELETE", &format!("/api/events/{id}"), "", 404);
        // Webhooks (none configured here; tests/webhooks.rs has some).
        assert_eq!(api.call("GET", "/api/webhooks", "", 200), serde_json::json!({"webhooks": []}));
        api.call("POST", "/api/webhooks/n1/test", "", 404);
        api.call("POST", "/api/webhooks/n1/test", r#"{"x":1}"#, 400);
        api.call("POST", "/api/auth/logout", "", 204);
    }

    /// `GET /api/webhooks` with hooks in it (the handler test above has none):
    /// one retrying after a refused connection, one that cannot start.
    #[test]
    fn webhook_status_is_what_the_document_says() {
        use crate::config::WebhookConfig;
        use crate::notify::webhook::{Render, Webhooks};
        use std::sync::Arc;
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let configs = [
            WebhookConfig {
                name: "down".into(),
                url: format!("http://127.0.0.1:{port}/in?token=1"),
                secret: "0123456789abcdef".into(),
                streams: vec!["door".into()],
                ..Default::default()
            },
            WebhookConfig {
                url: "https://h.lan/".into(),
                secret_file: "/nonexistent/webhook.secret".into(),
                ..Default::default()
            },
        ];
        let render: Render = Arc::new(|e| serde_json::json!({ "id": e.id }));
        let clock = Arc::new(crate::base::clock::SimulatedClock::new(1_800_000_000_000));
        let hooks = Webhooks::spawn(&configs, &crate::events::Hub::default(), render, clock).expect("spawn");
        hooks.test("down").expect("queued");
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while hooks.status()[0].last.is_none() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let v = serde_json::json!({ "webhooks": hooks.status() });
        hooks.stop();
        let doc = doc();
        if let Err(e) = check(&doc, &doc["components"]["schemas"]["WebhookList"], &v, "body", true) {
            panic!("GET /api/webhooks differs from openapi.json: {e}");
        }
        let (down, failed) = (&v["webhooks"][0], &v["webhooks"][1]);
        // glibc says "Connection refused"; musl under qemu-user only the errno (111, ECONNREFUSED).
        let refused = |e: &str| e.contains("refused") || e.contains("os error 111");
        assert!(down["last"]["error"].as_str().is_some_and(refused), "{down}");
        assert_eq!((failed["name"].as_str(), failed["state"].as_str()), (Some("webhook-2"), Some("failed")), "{v}");
    }

    #[test]
    fn the_document_is_served_as_json() {
        let reply = document(&Query::parse("")).expect("document");
        assert_eq!(reply.status, 200);
        assert!(reply.headers.contains(&("Content-Type", "application/json".into())), "{:?}", reply.headers);
        let Body::Bytes(body) = reply.body else { panic!("bytes expected") };
        let served: Value = serde_json::from_slice(&body).expect("the body parses");
        assert_eq!(served, doc());
        assert!(served["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", served["openapi"]);
        assert_eq!(served["info"]["version"], env!("CARGO_PKG_VERSION"), "info.version follows Cargo.toml");
        let e = document(&Query::parse("x=1")).err().expect("unknown parameters are refused");
        assert_eq!(e.status, 400);
    }
}
