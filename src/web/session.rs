//! Authentication of every API request (`admit`) and the routes of logins,
//! users, TOTP and API keys.
//!
//! Invariants:
//! - A route whose `router::access` is not `Public` answers 401 without a
//!   valid credential and 403 to a role below it, before its handler runs.
//! - A request authenticated by the session cookie that changes state
//!   (POST/PUT/DELETE) must carry the session's `X-CSRF-Token`; API keys and
//!   the console token are not ambient (a browser never adds them), so they
//!   need none. Login and setup take JSON only, which an HTML form cannot send.
//! - Cookies are `HttpOnly; SameSite=Strict; Path=/`, `Secure` over TLS.
//! - A non-admin acts on their own account only (sessions, keys, password, TOTP).
//! - Login answers the same "wrong user name or password" whether the user
//!   exists or not, after the same PBKDF2 work.

use serde::Deserialize;
use serde_json::{json, Value};

use super::reply::{ApiError, Reply};
use super::request::{RequestInfo, SESSION_COOKIE};
use super::router::{access, Access, Matched, Method, Resource};
use super::{Call, Ctx};
use crate::auth::{self, password, totp, Principal, Role, Via};
use crate::base::clock::rfc3339;
use crate::index::db::{Db, KeyRow, SessionRow, UserRow};
use crate::web::state::Nvr;

/// Checks the credential of a request against what its route needs.
pub fn admit(nvr: &Nvr, db: &Db, req: &RequestInfo, m: &Matched) -> Result<Option<Principal>, ApiError> {
    let need = access(&m.resource, m.method);
    let now = nvr.clock.now_ms();
    let who = identify(nvr, db, req, now, media_read(m));
    if need == Access::Public {
        return Ok(who.ok().flatten());
    }
    let p = who?.ok_or_else(|| match m.resource {
        // Media players (VLC, ffplay) send URL credentials only when challenged for Basic;
        // the page's own requests always carry its cookie, so no browser dialog pops up there.
        _ if media_read(m) && req.session.is_none() && !req.browser => ApiError::new(
            401,
            "send an API key: 'Authorization: Bearer <key>', or http://NAME:<key>@host/... in a player",
        )
        .with_header("WWW-Authenticate", "Basic realm=\"oxinvr: any name, an API key as the password\"".into()),
        _ => unauthorized("log in, or send an API key as 'Authorization: Bearer <key>'"),
    })?;
    if !allows(p.role, need) {
        return Err(ApiError::new(
            403,
            format!(
                "{} ({}) may not use {} {}: it needs the {} role",
                p.username,
                p.role.as_str(),
                method_name(m.method),
                path_of(&m.resource),
                need_name(need)
            ),
        ));
    }
    if let Via::Session { csrf, .. } = &p.via {
        let changes = matches!(m.method, Method::Post | Method::Put | Method::Delete);
        let sent = req.csrf.as_deref().unwrap_or("");
        if changes && !auth::same(sent.as_bytes(), csrf.as_bytes()) {
            return Err(ApiError::new(403, "missing or wrong X-CSRF-Token header (GET /api/auth/status gives it)"));
        }
    }
    Ok(Some(p))
}

fn unauthorized(msg: &str) -> ApiError {
    ApiError::new(401, msg).with_header("WWW-Authenticate", "Bearer realm=\"oxinvr\"".into())
}

fn allows(role: Role, need: Access) -> bool {
    let have = match role {
        Role::Viewer => Access::Viewer,
        Role::Operator => Access::Operator,
        Role::Admin => Access::Admin,
    };
    have >= need
}

fn need_name(a: Access) -> &'static str {
    match a {
        Access::Public => "public",
        Access::Viewer => "viewer",
        Access::Operator => "operator",
        Access::Admin => "admin",
    }
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Get | Method::Head => "GET",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
    }
}

/// A short name of the route for messages.
fn path_of(r: &Resource) -> String {
    format!("{r:?}").split('(').next().unwrap_or("").to_lowercase()
}

/// "Last seen/used" is written at most this often: most requests only read the database.
const TOUCH_EVERY_MS: i64 = 60_000;

/// A read of recorded media: the only requests an API key may authenticate
/// through HTTP Basic (a player's URL credentials). Anywhere else a cached Basic
/// credential would act like a cookie without CSRF protection.
fn media_read(m: &Matched) -> bool {
    matches!(m.method, Method::Get | Method::Head)
        && matches!(m.resource, Resource::Playback(_) | Resource::RecordingFile(_) | Resource::Export)
}

/// Who sent the request: a Bearer key (or, for media reads, a Basic one) wins over the cookie.
fn identify(nvr: &Nvr, db: &Db, req: &RequestInfo, now: i64, media: bool) -> Result<Option<Principal>, ApiError> {
    let key = req.bearer.as_ref().or(req.basic.as_ref().filter(|_| media));
    if let Some(token) = key {
        if nvr.auth.is_console(token) {
            let p = Principal { user_id: 0, username: "console".into(), role: Role::Admin, via: Via::Console };
            return Ok(Some(p));
        }
        let key =
            db.key_by_secret(&auth::token_hash(token))?.ok_or_else(|| unauthorized("the API key is not valid"))?;
        if key.last_used_ms.is_none_or(|t| now - t >= TOUCH_EVERY_MS) {
            db.touch_key(key.id, now)?;
        }
        return Ok(Some(Principal {
            user_id: key.user_id,
            username: key.user,
            role: key.role,
            via: Via::ApiKey { id: key.id },
        }));
    }
    let Some(token) = &req.session else { return Ok(None) };
    let (s, u) = db
        .session_by_token(&auth::token_hash(token), now)?
        .ok_or_else(|| unauthorized("your session has ended (expired, revoked or logged out); log in again"))?;
    if now - s.last_seen_ms >= TOUCH_EVERY_MS {
        db.touch_session(s.id, now)?;
    }
    Ok(Some(Principal { user_id: u.id, username: u.name, role: u.role, via: Via::Session { id: s.id, csrf: s.csrf } }))
}

/// The auth, user and key routes.
pub fn dispatch(ctx: &Ctx, c: &Call) -> Result<Reply, ApiError> {
    let q = &c.query;
    q.only(&[]).map_err(ApiError::bad_request)?;
    let p = c.principal;
    let me = || p.ok_or_else(|| unauthorized("log in first"));
    match (&c.matched.resource, c.matched.method) {
        (Resource::AuthStatus, _) => status(ctx, p, None),
        (Resource::AuthSetup, _) => setup(ctx, c),
        (Resource::AuthLogin, _) => login(ctx, c),
        (Resource::AuthLogout, _) => logout(ctx, c, me()?),
        (Resource::Sessions, _) => list_sessions(ctx, me()?),
        (Resource::Session(id), _) => delete_session(ctx, me()?, id),
        (Resource::Users, Method::Post) => create_user(ctx, c),
        (Resource::Users, _) => list_users(ctx),
        (Resource::User(name), Method::Put) => update_user(ctx, c, me()?, name),
        (Resource::User(name), Method::Delete) => delete_user(ctx, name),
        (Resource::User(name), _) => get_user(ctx, me()?, name),
        (Resource::UserTotp(name), Method::Post) => totp_begin(ctx, me()?, name),
        (Resource::UserTotp(name), _) => totp_off(ctx, me()?, name),
        (Resource::UserTotpConfirm(name), _) => totp_confirm(ctx, c, me()?, name),
        (Resource::Keys, Method::Post) => create_key(ctx, c, me()?),
        (Resource::Keys, _) => list_keys(ctx, me()?),
        (Resource::Key(id), _) => delete_key(ctx, me()?, id),
        _ => Err(ApiError::internal("not an auth route")),
    }
}

fn body<'a, T: Deserialize<'a>>(c: &Call<'a>) -> Result<T, ApiError> {
    if !c.req.is_json() {
        return Err(ApiError::new(415, "send the body as JSON with 'Content-Type: application/json'"));
    }
    // Through `json_object`: serde's derived structs would also take an array
    // of the fields in order (`[null, null]` was a valid PUT /api/users/x).
    let fields = super::api::json_object(c.body)?;
    T::deserialize(serde_json::Value::Object(fields)).map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))
}

fn status(ctx: &Ctx, p: Option<&Principal>, csrf: Option<&str>) -> Result<Reply, ApiError> {
    let setup_required = ctx.db.user_count()? == 0;
    let user = match p {
        Some(p) if p.user_id != 0 => ctx.db.user_by_name(&p.username)?.map(|u| user_json(&u)),
        Some(p) => Some(json!({ "name": p.username, "role": p.role.as_str(), "totp": false })),
        None => None,
    };
    let csrf = csrf.map(str::to_string).or_else(|| match p.map(|p| &p.via) {
        Some(Via::Session { csrf, .. }) => Some(csrf.clone()),
        _ => None,
    });
    let webrtc = !ctx.nvr.config.web.go2rtc_api.is_empty();
    let body = json!({ "setup_required": setup_required, "user": user, "csrf": csrf, "webrtc": webrtc });
    Ok(Reply::json(200, &body))
}

fn user_json(u: &UserRow) -> Value {
    json!({
        "name": u.name,
        "role": u.role.as_str(),
        "totp": u.totp_secret.is_some(),
        "created": rfc3339(u.created_ms),
        "last_login": u.last_login_ms.map(rfc3339),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    username: String,
    password: String,
    #[serde(default)]
    totp: Option<String>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn setup_hosts() {
        use super::host_is_address as ok;
        for h in ["127.0.0.1:8080", "192.168.1.5", "localhost:80", "[::1]:8080", "[fe80::1]"] {
            assert!(ok(Some(h)), "{h}");
        }
        for h in ["nvr.local:8080", "evil.example", "", "[nope]:1", "1.2.3.4.example"] {
            assert!(!ok(Some(h)), "{h}");
        }
        assert!(!ok(None));
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FirstAdmin {
    username: String,
    password: String,
}

fn setup(ctx: &Ctx, c: &Call) -> Result<Reply, ApiError> {
    let b: FirstAdmin = body(c)?;
    auth::check_username(&b.username).map_err(ApiError::bad_request)?;
    password::check_new(&b.password).map_err(ApiError::bad_request)?;
    if ctx.db.user_count()? > 0 {
        return Err(ApiError::conflict("setup is done: an admin exists already; log in"));
    }
    if !host_is_address(c.req.host.as_deref()) {
        return Err(ApiError::new(
            403,
            "first-run setup is only offered at the box's IP address (http://<address>:<port>/), \
             not at a host name (a web page could point its own name at the box); \
             or run `oxinvr user add NAME --role admin` on a console",
        ));
    }
    let hash = password::hash(&b.password, ctx.nvr.config.web.pbkdf2_iterations).map_err(ApiError::internal)?;
    let now = ctx.nvr.clock.now_ms();
    let user = ctx
        .db
        .create_first_admin(&b.username, &hash, now)?
        .ok_or_else(|| ApiError::conflict("setup is done: an admin exists already; log in"))?;
    log::info!("first-run setup: admin {:?} created from {}", user.name, addr(c.req));
    let reply = start_session(ctx, c.req, &user, 201)?;
    Ok(reply)
}

/// True for a `Host` that is an IP address or `localhost` (with or without a
/// port): a DNS-rebinding page can only reach the box under its own name.
fn host_is_address(host: Option<&str>) -> bool {
    let Some(host) = host.map(str::trim) else { return false };
    let name = match host.strip_prefix('[') {
        Some(v6) => return v6.split(']').next().is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok()),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

fn addr(req: &RequestInfo) -> String {
    req.peer.map_or_else(|| "?".into(), |a| a.to_string())
}

/// A hash of a password nobody knows, so a login for a missing user costs the same.
fn dummy_hash(iterations: u32) -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| password::hash("no such user", iterations).unwrap_or_default())
}

fn login(ctx: &Ctx, c: &Call) -> Result<Reply, ApiError> {
    let b: Credentials = body(c)?;
    let web = &ctx.nvr.config.web;
    let now = ctx.nvr.clock.now_ms();
    // A name that cannot exist counts against the address only (and never
    // grows the lockout table by an arbitrary string).
    let name_ok = auth::check_username(&b.username).is_ok();
    let user_key = format!("user:{}", if name_ok { b.username.as_str() } else { "" });
    let keys = [user_key, format!("addr:{}", addr(c.req))];
    let shown: String = b.username.chars().take(64).collect();
    let lockout = &ctx.nvr.auth.lockout;
    if let Some(left) = keys.iter().filter_map(|k| lockout.locked(k, now)).max() {
        return Err(locked(left));
    }
    let user = if name_ok { ctx.db.user_by_name(&b.username)? } else { None };
    let ok = match &user {
        Some(u) => password::verify(&u.password_hash, &b.password),
        None => {
            let _ = password::verify(dummy_hash(web.pbkdf2_iterations), &b.password);
            false
        }
    };
    let window = i64::from(web.lockout_seconds) * 1000;
    let fail = |msg: &str, totp_required: bool| -> ApiError {
        let mut locked_now = false;
        for k in keys.iter().filter(|k| k.as_str() != "user:") {
            locked_now |= lockout.fail(k, now, web.login_attempts, window);
        }
        log::warn!("failed login for {shown:?} from {}{}", addr(c.req), if locked_now { " (locked out)" } else { "" });
        let mut e = unauthorized(msg);
        if totp_required {
            e.extra = Some(json!({ "totp_required": true }));
        }
        e
    };
    let (true, Some(user)) = (ok, user) else { return Err(fail("wrong user name or password", false)) };
    if let Some(secret) = &user.totp_secret {
        let Some(code) = b.totp.as_deref().filter(|c| !c.trim().is_empty()) else {
            let mut e = unauthorized("this account needs a TOTP code from its authenticator app");
            e.extra = Some(json!({ "totp_required": true }));
            return Err(e);
        };
        let step = totp::verify(secret, code, now, user.totp_last_step);
        if !step.is_some_and(|s| ctx.db.use_totp_step(user.id, s).unwrap_or(false)) {
            return Err(fail("wrong or already used TOTP code", true));
        }
    }
    // Only the user's own count: an attacker with an account of their own
    // must not reset the address's count by logging in between guesses.
    lockout.clear(&keys[0]);
    if password::iterations(&user.password_hash).is_some_and(|n| n < web.pbkdf2_iterations) {
        if let Ok(h) = password::hash(&b.password, web.pbkdf2_iterations) {
            // Same password, stronger hash: the user's other sessions stay.
            ctx.db.rehash_password(user.id, &h)?;
        }
    }
    ctx.db.set_last_login(user.id, now)?;
    log::info!("login: {:?} from {}", user.name, addr(c.req));
    start_session(ctx, c.req, &user, 200)
}

fn locked(left_ms: i64) -> ApiError {
    let secs = (left_ms + 999) / 1000;
    ApiError::new(429, format!("too many failed logins: locked for {secs} more seconds"))
        .with_header("Retry-After", secs.to_string())
}

fn start_session(ctx: &Ctx, req: &RequestInfo, user: &UserRow, status_code: u16) -> Result<Reply, ApiError> {
    let web = &ctx.nvr.config.web;
    let now = ctx.nvr.clock.now_ms();
    let token = auth::new_token().map_err(ApiError::internal)?;
    let csrf = auth::new_token().map_err(ApiError::internal)?;
    let expires = now + i64::from(web.session_seconds) * 1000;
    let id =
        ctx.db.create_session(user.id, &auth::token_hash(&token), &csrf, now, expires, &addr(req), &req.user_agent)?;
    let _ = ctx.db.delete_expired_sessions(now);
    let p = Principal {
        user_id: user.id,
        username: user.name.clone(),
        role: user.role,
        via: Via::Session { id, csrf: csrf.clone() },
    };
    let mut reply = status(ctx, Some(&p), Some(&csrf))?;
    reply.status = status_code;
    Ok(reply.with_header("Set-Cookie", cookie(&token, i64::from(web.session_seconds), req.secure)))
}

fn cookie(value: &str, max_age: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

fn logout(ctx: &Ctx, c: &Call, p: &Principal) -> Result<Reply, ApiError> {
    if let Via::Session { id, .. } = p.via {
        ctx.db.delete_session(id, None)?;
    }
    Ok(no_content().with_header("Set-Cookie", cookie("", 0, c.req.secure)))
}

fn no_content() -> Reply {
    Reply { status: 204, headers: Vec::new(), body: super::reply::Body::Bytes(Vec::new()) }
}

/// `None` for an admin (sees everyone's), else the caller's user id.
fn scope(p: &Principal) -> Option<i64> {
    (p.role != Role::Admin).then_some(p.user_id)
}

fn list_sessions(ctx: &Ctx, p: &Principal) -> Result<Reply, ApiError> {
    let now = ctx.nvr.clock.now_ms();
    let current = match p.via {
        Via::Session { id, .. } => Some(id),
        _ => None,
    };
    let rows = ctx.db.list_sessions(scope(p), now)?;
    let list: Vec<Value> = rows.iter().map(|s| session_json(s, current)).collect();
    Ok(Reply::json(200, &json!({ "sessions": list })))
}

fn session_json(s: &SessionRow, current: Option<i64>) -> Value {
    json!({
        "id": s.id,
        "user": s.user,
        "created": rfc3339(s.created_ms),
        "last_seen": rfc3339(s.last_seen_ms),
        "expires": rfc3339(s.expires_ms),
        "address": s.address,
        "user_agent": s.user_agent,
        "current": Some(s.id) == current,
    })
}

fn parse_id(s: &str, what: &str) -> Result<i64, ApiError> {
    s.parse().map_err(|_| ApiError::bad_request(format!("{s:?} is not a {what} id (a number)")))
}

fn delete_session(ctx: &Ctx, p: &Principal, id: &str) -> Result<Reply, ApiError> {
    let id = parse_id(id, "session")?;
    match ctx.db.delete_session(id, scope(p))? {
        true => Ok(no_content()),
        false => Err(ApiError::not_found(format!("no session {id} of yours"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    password: String,
    role: String,
}

fn parse_role(s: &str) -> Result<Role, ApiError> {
    Role::parse(s).ok_or_else(|| ApiError::bad_request(format!("role {s:?} is not one of viewer, operator, admin")))
}

fn create_user(ctx: &Ctx, c: &Call) -> Result<Reply, ApiError> {
    let b: NewUser = body(c)?;
    auth::check_username(&b.username).map_err(ApiError::bad_request)?;
    password::check_new(&b.password).map_err(ApiError::bad_request)?;
    let role = parse_role(&b.role)?;
    let hash = password::hash(&b.password, ctx.nvr.config.web.pbkdf2_iterations).map_err(ApiError::internal)?;
    let u = ctx.db.create_user(&b.username, role, &hash, ctx.nvr.clock.now_ms())?;
    Ok(Reply::json(201, &user_json(&u)))
}

fn list_users(ctx: &Ctx) -> Result<Reply, ApiError> {
    let users: Vec<Value> = ctx.db.list_users()?.iter().map(user_json).collect();
    Ok(Reply::json(200, &json!({ "users": users })))
}

/// The named user, if the caller may see or change them (themselves, or an admin).
fn target(ctx: &Ctx, p: &Principal, name: &str) -> Result<UserRow, ApiError> {
    if p.role != Role::Admin && p.username != name {
        return Err(ApiError::new(403, format!("{} may only act on their own account, not {name:?}", p.username)));
    }
    ctx.db.user_by_name(name)?.ok_or_else(|| ApiError::not_found(format!("no user {name:?}")))
}

fn get_user(ctx: &Ctx, p: &Principal, name: &str) -> Result<Reply, ApiError> {
    Ok(Reply::json(200, &user_json(&target(ctx, p, name)?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserChange {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    current_password: Option<String>,
}

fn update_user(ctx: &Ctx, c: &Call, p: &Principal, name: &str) -> Result<Reply, ApiError> {
    let b: UserChange = body(c)?;
    let u = target(ctx, p, name)?;
    // Everything is checked before anything is written: a refused request changes nothing.
    let role = match &b.role {
        Some(_) if p.role != Role::Admin => return Err(ApiError::new(403, "only an admin may change roles")),
        Some(r) => Some(parse_role(r)?),
        None => None,
    };
    let own = p.username == name && p.via != Via::Console;
    let hash = match &b.password {
        Some(new) => {
            password::check_new(new).map_err(ApiError::bad_request)?;
            if own && !b.current_password.as_deref().is_some_and(|cur| password::verify(&u.password_hash, cur)) {
                return Err(ApiError::new(403, "current_password is missing or wrong"));
            }
            Some(password::hash(new, ctx.nvr.config.web.pbkdf2_iterations).map_err(ApiError::internal)?)
        }
        None => None,
    };
    if let Some(role) = role {
        ctx.db.set_user_role(name, role)?;
    }
    if let Some(hash) = hash {
        let keep = match (&p.via, own) {
            (Via::Session { id, .. }, true) => Some(*id),
            _ => None,
        };
        ctx.db.set_password(name, &hash, keep)?;
    }
    get_user(ctx, p, name)
}

fn delete_user(ctx: &Ctx, name: &str) -> Result<Reply, ApiError> {
    ctx.db.delete_user(name)?;
    Ok(no_content())
}

/// TOTP changes: only for oneself (an admin may switch someone's off).
fn own(p: &Principal, name: &str) -> Result<(), ApiError> {
    match p.username == name && p.user_id != 0 {
        true => Ok(()),
        false => Err(ApiError::new(403, format!("TOTP is enrolled by the user themself, not by {}", p.username))),
    }
}

fn totp_begin(ctx: &Ctx, p: &Principal, name: &str) -> Result<Reply, ApiError> {
    own(p, name)?;
    let secret: [u8; totp::SECRET_LEN] = auth::random_bytes().map_err(ApiError::internal)?;
    ctx.db.set_totp_pending(p.user_id, Some(&secret))?;
    let uri = totp::uri(name, &secret);
    let svg = totp::qr_svg(&uri).map_err(ApiError::internal)?;
    Ok(Reply::json(200, &json!({ "secret": totp::base32(&secret), "uri": uri, "qr_svg": svg })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Code {
    code: String,
}

fn totp_confirm(ctx: &Ctx, c: &Call, p: &Principal, name: &str) -> Result<Reply, ApiError> {
    own(p, name)?;
    let b: Code = body(c)?;
    let u = target(ctx, p, name)?;
    let pending =
        u.totp_pending.ok_or_else(|| ApiError::conflict("no TOTP enrolment is pending: POST .../totp first"))?;
    let step = totp::verify(&pending, &b.code, ctx.nvr.clock.now_ms(), None)
        .ok_or_else(|| ApiError::bad_request("the code does not match: check the authenticator app's clock"))?;
    ctx.db.set_totp(u.id, Some(step))?;
    get_user(ctx, p, name)
}

fn totp_off(ctx: &Ctx, p: &Principal, name: &str) -> Result<Reply, ApiError> {
    if p.role != Role::Admin {
        own(p, name)?;
    }
    let u = target(ctx, p, name)?;
    ctx.db.set_totp(u.id, None)?;
    get_user(ctx, p, name)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
}

fn create_key(ctx: &Ctx, c: &Call, p: &Principal) -> Result<Reply, ApiError> {
    let b: NewKey = body(c)?;
    // As the document says (maxLength 64, pattern `[^ ]`): characters, not
    // bytes, and not only spaces; spaces around the name are dropped.
    let name = b.name.trim_matches(' ');
    if name.is_empty() || b.name.chars().count() > 64 {
        return Err(ApiError::bad_request("name: give the key a name of 1-64 characters, not only spaces"));
    }
    if p.user_id == 0 {
        return Err(ApiError::new(403, "the console has no user account to own a key; use a user's login"));
    }
    let (key, prefix, hash) = auth::new_api_key().map_err(ApiError::internal)?;
    let id = ctx.db.create_key(p.user_id, name, &prefix, &hash, ctx.nvr.clock.now_ms())?;
    Ok(Reply::json(201, &json!({ "id": id, "name": name, "key": key })))
}

fn key_json(k: &KeyRow) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "user": k.user,
        "role": k.role.as_str(),
        "created": rfc3339(k.created_ms),
        "last_used": k.last_used_ms.map(rfc3339),
        "prefix": k.prefix,
    })
}

fn list_keys(ctx: &Ctx, p: &Principal) -> Result<Reply, ApiError> {
    let keys: Vec<Value> = ctx.db.list_keys(scope(p))?.iter().map(key_json).collect();
    Ok(Reply::json(200, &json!({ "keys": keys })))
}

fn delete_key(ctx: &Ctx, p: &Principal, id: &str) -> Result<Reply, ApiError> {
    let id = parse_id(id, "key")?;
    match ctx.db.delete_key(id, scope(p))? {
        true => Ok(no_content()),
        false => Err(ApiError::not_found(format!("no API key {id} of yours"))),
    }
}

/// For the JSON fuzz target (`web::fuzz`): `body` read as each auth body,
/// with the checks each handler makes before it touches the database.
pub(super) fn check_bodies(body: &[u8]) {
    if let Ok(b) = serde_json::from_slice::<Credentials>(body) {
        let _ = auth::check_username(&b.username);
        let secret = [0x5a; 20];
        let _ = b.totp.as_deref().map(|code| totp::verify(&secret, code, 1_800_000_000_000, Some(0)));
    }
    if let Ok(b) = serde_json::from_slice::<FirstAdmin>(body) {
        let _ = (auth::check_username(&b.username), password::check_new(&b.password));
    }
    if let Ok(b) = serde_json::from_slice::<NewUser>(body) {
        let _ = (auth::check_username(&b.username), password::check_new(&b.password), parse_role(&b.role));
    }
    if let Ok(b) = serde_json::from_slice::<UserChange>(body) {
        let _ = (b.role.as_deref().map(parse_role), b.password.as_deref().map(password::check_new));
    }
    let _ = serde_json::from_slice::<Code>(body);
    let _ = serde_json::from_slice::<NewKey>(body);
}
