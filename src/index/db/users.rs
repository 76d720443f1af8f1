//! Users, login sessions and API keys (schema version 4).
//!
//! Invariants:
//! - At least one admin remains once one exists: demoting or deleting the
//!   last admin is refused ([`DbError::Conflict`]) inside the same
//!   transaction that would do it.
//! - The first admin is created only while the table is empty, atomically
//!   (`INSERT ... WHERE NOT EXISTS`), so two concurrent setups cannot both win.
//! - Sessions and keys go with their user (`ON DELETE CASCADE`); tokens are
//!   stored only as hashes.
//! - What grants or revokes access is committed with `synchronous=FULL`
//!   (users, roles, passwords, TOTP on/off, API keys, logouts): a power cut
//!   must neither revive a revoked key or session nor lose the first admin
//!   (which would reopen first-run setup to anyone on the network). Power cuts
//!   on the emulated board lost a new API key before this. Creating a session
//!   and the `last_*` stamps stay `NORMAL` (a lost one is a new login).

use rusqlite::{params, OptionalExtension, Row};

use super::{Ctx, Db, DbError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRow {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub password_hash: String,
    pub totp_secret: Option<Vec<u8>>,
    pub totp_pending: Option<Vec<u8>>,
    pub totp_last_step: Option<i64>,
    pub created_ms: i64,
    pub last_login_ms: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    pub id: i64,
    pub user_id: i64,
    pub user: String,
    pub csrf: String,
    pub created_ms: i64,
    pub last_seen_ms: i64,
    pub expires_ms: i64,
    pub address: String,
    pub user_agent: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRow {
    pub id: i64,
    pub user_id: i64,
    pub user: String,
    pub role: Role,
    pub name: String,
    pub prefix: String,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
}

const USER_COLS: &str = "users.id, users.name, users.role, users.password_hash, users.totp_secret, \
                         users.totp_pending, users.totp_last_step, users.created_ms, users.last_login_ms";
const SESSION_COLS: &str = "sessions.id, sessions.user_id, users.name, sessions.csrf, sessions.created_ms, \
                            sessions.last_seen_ms, sessions.expires_ms, sessions.address, sessions.user_agent";
const KEY_COLS: &str = "api_keys.id, api_keys.user_id, users.name, users.role, api_keys.name, api_keys.prefix, \
                        api_keys.created_ms, api_keys.last_used_ms";

fn role_at(r: &Row, i: usize) -> rusqlite::Result<Role> {
    let s: String = r.get(i)?;
    Role::parse(&s)
        .ok_or_else(|| rusqlite::Error::InvalidColumnType(i, format!("role {s:?}"), rusqlite::types::Type::Text))
}

fn user_from_row(r: &Row) -> rusqlite::Result<UserRow> {
    user_at(r, 0)
}

/// A user's role; ordered (an admin may do what an operator may, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// A user whose [`USER_COLS`] start at column `o`.
fn user_at(r: &Row, o: usize) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: r.get(o)?,
        name: r.get(o + 1)?,
        role: role_at(r, o + 2)?,
        password_hash: r.get(o + 3)?,
        totp_secret: r.get(o + 4)?,
        totp_pending: r.get(o + 5)?,
        totp_last_step: r.get(o + 6)?,
        created_ms: r.get(o + 7)?,
        last_login_ms: r.get(o + 8)?,
    })
}

fn session_from_row(r: &Row) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        user: r.get(2)?,
        csrf: r.get(3)?,
        created_ms: r.get(4)?,
        last_seen_ms: r.get(5)?,
        expires_ms: r.get(6)?,
        address: r.get(7)?,
        user_agent: r.get(8)?,
    })
}

fn key_from_row(r: &Row) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        user: r.get(2)?,
        role: role_at(r, 3)?,
        name: r.get(4)?,
        prefix: r.get(5)?,
        created_ms: r.get(6)?,
        last_used_ms: r.get(7)?,
    })
}

fn conflict(what: impl Into<String>) -> DbError {
    DbError::Conflict { what: what.into() }
}

fn not_found(what: String) -> DbError {
    DbError::NotFound { what }
}

/// Admins other than `name`.
fn other_admins(tx: &rusqlite::Transaction, name: &str) -> Result<i64, DbError> {
    tx.query_row("SELECT count(*) FROM users WHERE role = 'admin' AND name <> ?1", [name], |r| r.get(0))
        .ctx("count admins")
}

impl Db {
    pub fn user_count(&self) -> Result<i64, DbError> {
        self.conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0)).ctx("count users")
    }

    /// Creates the first user, an admin, only if there is no user yet
    /// (`None` if one exists).
    pub fn create_first_admin(&self, name: &str, hash: &str, now_ms: i64) -> Result<Option<UserRow>, DbError> {
        self.write_durably("create first admin", |tx| {
            let n = tx
                .execute(
                    "INSERT INTO users (name, role, password_hash, created_ms)
                     SELECT ?1, 'admin', ?2, ?3 WHERE NOT EXISTS (SELECT 1 FROM users)",
                    params![name, hash, now_ms],
                )
                .ctx("create first admin")?;
            if n == 0 {
                return Ok(None);
            }
            tx.query_row(&format!("SELECT {USER_COLS} FROM users WHERE name = ?1"), [name], user_from_row)
                .optional()
                .ctx("read new user")
        })
    }

    pub fn create_user(&self, name: &str, role: Role, hash: &str, now_ms: i64) -> Result<UserRow, DbError> {
        self.write_durably("create user", |tx| {
            let taken: bool =
                tx.query_row("SELECT count(*) FROM users WHERE name = ?1", [name], |r| r.get(0)).ctx("find user")?;
            if taken {
                return Err(conflict(format!("a user named {name:?} exists already")));
            }
            tx.execute(
                "INSERT INTO users (name, role, password_hash, created_ms) VALUES (?1, ?2, ?3, ?4)",
                params![name, role.as_str(), hash, now_ms],
            )
            .ctx("create user")?;
            tx.query_row(&format!("SELECT {USER_COLS} FROM users WHERE name = ?1"), [name], user_from_row)
                .ctx("read new user")
        })
    }

    pub fn user_by_name(&self, name: &str) -> Result<Option<UserRow>, DbError> {
        self.conn
            .query_row(&format!("SELECT {USER_COLS} FROM users WHERE name = ?1"), [name], user_from_row)
            .optional()
            .ctx("find user")
    }

    pub fn list_users(&self) -> Result<Vec<UserRow>, DbError> {
        let mut st = self.conn.prepare(&format!("SELECT {USER_COLS} FROM users ORDER BY name")).ctx("list users")?;
        let rows = st.query_map([], user_from_row).ctx("list users")?;
        rows.collect::<Result<_, _>>().ctx("list users")
    }

    /// Changes a role; refuses to demote the last admin.
    pub fn set_user_role(&self, name: &str, role: Role) -> Result<(), DbError> {
        self.write_durably("set role", |tx| {
            if role != Role::Admin && other_admins(tx, name)? == 0 && self.is_admin(tx, name)? {
                return Err(conflict(format!("{name:?} is the last admin; make another user admin first")));
            }
            let n = tx
                .execute("UPDATE users SET role = ?2 WHERE name = ?1", params![name, role.as_str()])
                .ctx("set role")?;
            if n == 0 {
                return Err(not_found(format!("user {name:?}")));
            }
            Ok(())
        })
    }

    fn is_admin(&self, tx: &rusqlite::Transaction, name: &str) -> Result<bool, DbError> {
        tx.query_row("SELECT count(*) FROM users WHERE name = ?1 AND role = 'admin'", [name], |r| r.get(0))
            .ctx("find admin")
    }

    /// Sets a new password hash and ends the user's sessions except `keep`.
    pub fn set_password(&self, name: &str, hash: &str, keep: Option<i64>) -> Result<(), DbError> {
        self.write_durably("set password", |tx| {
            let n = tx
                .execute("UPDATE users SET password_hash = ?2 WHERE name = ?1", params![name, hash])
                .ctx("set password")?;
            if n == 0 {
                return Err(not_found(format!("user {name:?}")));
            }
            tx.execute(
                "DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE name = ?1) AND id IS NOT ?2",
                params![name, keep],
            )
            .ctx("end sessions")?;
            Ok(())
        })
    }

    /// Replaces a password hash by a stronger one of the same password (sessions stay).
    pub fn rehash_password(&self, user_id: i64, hash: &str) -> Result<(), DbError> {
        self.conn
            .execute("UPDATE users SET password_hash = ?2 WHERE id = ?1", params![user_id, hash])
            .ctx("rehash password")?;
        Ok(())
    }

    /// Deletes a user with their sessions and keys; refuses the last admin.
    pub fn delete_user(&self, name: &str) -> Result<(), DbError> {
        self.write_durably("delete user", |tx| {
            if other_admins(tx, name)? == 0 && self.is_admin(tx, name)? {
                return Err(conflict(format!("{name:?} is the last admin and cannot be deleted")));
            }
            let n = tx.execute("DELETE FROM users WHERE name = ?1", [name]).ctx("delete user")?;
            if n == 0 {
                return Err(not_found(format!("user {name:?}")));
            }
            Ok(())
        })
    }

    pub fn set_last_login(&self, user_id: i64, now_ms: i64) -> Result<(), DbError> {
        self.conn
            .execute("UPDATE users SET last_login_ms = ?2 WHERE id = ?1", params![user_id, now_ms])
            .ctx("set last login")?;
        Ok(())
    }

    /// Stores a TOTP secret waiting for its first code (`None` clears it).
    pub fn set_totp_pending(&self, user_id: i64, secret: Option<&[u8]>) -> Result<(), DbError> {
        self.conn
            .execute("UPDATE users SET totp_pending = ?2 WHERE id = ?1", params![user_id, secret])
            .ctx("set pending totp")?;
        Ok(())
    }

    /// Makes the pending secret the active one (after a valid code at `step`),
    /// or with `None` turns TOTP off.
    pub fn set_totp(&self, user_id: i64, enable_at_step: Option<i64>) -> Result<(), DbError> {
        let sql = match enable_at_step {
            Some(_) => {
                "UPDATE users SET totp_secret = totp_pending, totp_pending = NULL, totp_last_step = ?2 WHERE id = ?1"
            }
            None => "UPDATE users SET totp_secret = NULL, totp_pending = NULL, totp_last_step = ?2 WHERE id = ?1",
        };
        self.write_durably("set totp", |tx| tx.execute(sql, params![user_id, enable_at_step]).ctx("set totp"))?;
        Ok(())
    }

    /// Remembers the last TOTP step used; false if `step` is not newer (a replay
    /// raced us), unless the last one is over 2 steps ahead of it (the clock was
    /// set back since: refusing would lock the user out until it caught up).
    pub fn use_totp_step(&self, user_id: i64, step: i64) -> Result<bool, DbError> {
        let n = self
            .conn
            .execute(
                "UPDATE users SET totp_last_step = ?2
                 WHERE id = ?1 AND (totp_last_step IS NULL OR totp_last_step < ?2 OR totp_last_step > ?2 + 2)",
                params![user_id, step],
            )
            .ctx("use totp step")?;
        Ok(n == 1)
    }

    // ---- sessions ----

    #[allow(clippy::too_many_arguments)]
    pub fn create_session(
        &self,
        user_id: i64,
        token_hash: &[u8],
        csrf: &str,
        now_ms: i64,
        expires_ms: i64,
        address: &str,
        user_agent: &str,
    ) -> Result<i64, DbError> {
        self.conn
            .execute(
                "INSERT INTO sessions (token_hash, user_id, csrf, created_ms, last_seen_ms, expires_ms, address, user_agent)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7)",
                params![token_hash, user_id, csrf, now_ms, expires_ms, address, user_agent],
            )
            .ctx("create session")?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The live session with this token hash and its user.
    pub fn session_by_token(&self, token_hash: &[u8], now_ms: i64) -> Result<Option<(SessionRow, UserRow)>, DbError> {
        let sql = format!(
            "SELECT {SESSION_COLS}, {USER_COLS} FROM sessions JOIN users ON users.id = sessions.user_id
             WHERE sessions.token_hash = ?1 AND sessions.expires_ms > ?2"
        );
        self.conn
            .query_row(&sql, params![token_hash, now_ms], |r| Ok((session_from_row(r)?, user_at(r, 9)?)))
            .optional()
            .ctx("find session")
    }

    /// Notes that a session was used (at most once a minute is enough for the list).
    pub fn touch_session(&self, id: i64, now_ms: i64) -> Result<(), DbError> {
        self.conn
            .execute(
                "UPDATE sessions SET last_seen_ms = ?2 WHERE id = ?1 AND last_seen_ms < ?2 - 60000",
                params![id, now_ms],
            )
            .ctx("touch session")?;
        Ok(())
    }

    /// True while session `id` exists and has not expired.
    pub fn session_alive(&self, id: i64, now_ms: i64) -> Result<bool, DbError> {
        self.conn
            .query_row("SELECT count(*) FROM sessions WHERE id = ?1 AND expires_ms > ?2", params![id, now_ms], |r| {
                r.get(0)
            })
            .ctx("check session")
    }

    /// True while API key `id` exists.
    pub fn key_alive(&self, id: i64) -> Result<bool, DbError> {
        self.conn.query_row("SELECT count(*) FROM api_keys WHERE id = ?1", [id], |r| r.get(0)).ctx("check key")
    }

    /// Live sessions, of one user or of all.
    pub fn list_sessions(&self, user_id: Option<i64>, now_ms: i64) -> Result<Vec<SessionRow>, DbError> {
        let sql = format!(
            "SELECT {SESSION_COLS} FROM sessions JOIN users ON users.id = sessions.user_id
             WHERE sessions.expires_ms > ?1 AND (?2 IS NULL OR sessions.user_id = ?2) ORDER BY sessions.id"
        );
        let mut st = self.conn.prepare(&sql).ctx("list sessions")?;
        let rows = st.query_map(params![now_ms, user_id], session_from_row).ctx("list sessions")?;
        rows.collect::<Result<_, _>>().ctx("list sessions")
    }

    /// Ends a session (of `user_id` only, if given); false if there was none.
    pub fn delete_session(&self, id: i64, user_id: Option<i64>) -> Result<bool, DbError> {
        let n = self.write_durably("delete session", |tx| {
            tx.execute("DELETE FROM sessions WHERE id = ?1 AND (?2 IS NULL OR user_id = ?2)", params![id, user_id])
                .ctx("delete session")
        })?;
        Ok(n == 1)
    }

    pub fn delete_expired_sessions(&self, now_ms: i64) -> Result<usize, DbError> {
        self.conn.execute("DELETE FROM sessions WHERE expires_ms <= ?1", [now_ms]).ctx("delete expired sessions")
    }

    // ---- API keys ----

    pub fn create_key(&self, user_id: i64, name: &str, prefix: &str, hash: &[u8], now_ms: i64) -> Result<i64, DbError> {
        self.write_durably("create key", |tx| {
            tx.execute(
                "INSERT INTO api_keys (user_id, name, prefix, secret_hash, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![user_id, name, prefix, hash, now_ms],
            )
            .ctx("create key")?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// The key with this secret hash, with its user's current role.
    pub fn key_by_secret(&self, hash: &[u8]) -> Result<Option<KeyRow>, DbError> {
        let sql =
            format!("SELECT {KEY_COLS} FROM api_keys JOIN users ON users.id = api_keys.user_id WHERE secret_hash = ?1");
        self.conn.query_row(&sql, [hash], key_from_row).optional().ctx("find key")
    }

    pub fn touch_key(&self, id: i64, now_ms: i64) -> Result<(), DbError> {
        self.conn
            .execute(
                "UPDATE api_keys SET last_used_ms = ?2 WHERE id = ?1 AND (last_used_ms IS NULL OR last_used_ms < ?2 - 60000)",
                params![id, now_ms],
            )
            .ctx("touch key")?;
        Ok(())
    }

    pub fn list_keys(&self, user_id: Option<i64>) -> Result<Vec<KeyRow>, DbError> {
        let sql = format!(
            "SELECT {KEY_COLS} FROM api_keys JOIN users ON users.id = api_keys.user_id
             WHERE ?1 IS NULL OR api_keys.user_id = ?1 ORDER BY api_keys.id"
        );
        let mut st = self.conn.prepare(&sql).ctx("list keys")?;
        let rows = st.query_map([user_id], key_from_row).ctx("list keys")?;
        rows.collect::<Result<_, _>>().ctx("list keys")
    }

    pub fn delete_key(&self, id: i64, user_id: Option<i64>) -> Result<bool, DbError> {
        let n = self.write_durably("delete key", |tx| {
            tx.execute("DELETE FROM api_keys WHERE id = ?1 AND (?2 IS NULL OR user_id = ?2)", params![id, user_id])
                .ctx("delete key")
        })?;
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Db {
        Db::open_in_memory().expect("db")
    }

    #[test]
    fn first_admin_only_once() {
        let db = db();
        assert_eq!(db.user_count().expect("n"), 0);
        let a = db.create_first_admin("root", "h", 1).expect("q").expect("created");
        assert_eq!((a.name.as_str(), a.role), ("root", Role::Admin));
        assert_eq!(db.create_first_admin("eve", "h", 2).expect("q"), None);
        assert_eq!(db.user_count().expect("n"), 1);
    }

    #[test]
    fn last_admin_is_kept() {
        let db = db();
        db.create_first_admin("root", "h", 1).expect("q");
        assert!(matches!(db.set_user_role("root", Role::Viewer), Err(DbError::Conflict { .. })));
        assert!(matches!(db.delete_user("root"), Err(DbError::Conflict { .. })));
        db.create_user("bob", Role::Admin, "h", 2).expect("bob");
        assert!(matches!(db.create_user("bob", Role::Viewer, "h", 2), Err(DbError::Conflict { .. })));
        db.set_user_role("root", Role::Viewer).expect("demote: bob is admin");
        assert!(matches!(db.delete_user("bob"), Err(DbError::Conflict { .. })));
        db.delete_user("root").expect("delete a viewer");
        assert!(matches!(db.delete_user("nobody"), Err(DbError::Conflict { .. }) | Err(DbError::NotFound { .. })));
        assert!(matches!(db.set_user_role("nobody", Role::Admin), Err(DbError::NotFound { .. })));
    }

    #[test]
    fn sessions_expire_cascade_and_end_on_password_change() {
        let db = db();
        let u = db.create_first_admin("root", "h", 1).expect("q").expect("u");
        let s1 = db.create_session(u.id, b"t1", "c1", 1000, 5000, "127.0.0.1", "ua").expect("s1");
        let s2 = db.create_session(u.id, b"t2", "c2", 1000, 9000, "127.0.0.1", "ua").expect("s2");
        let (s, user) = db.session_by_token(b"t1", 4999).expect("q").expect("live");
        assert_eq!((s.id, s.csrf.as_str(), user.name.as_str()), (s1, "c1", "root"));
        assert_eq!(db.session_by_token(b"t1", 5000).expect("q"), None, "expired");
        assert_eq!(db.list_sessions(Some(u.id), 6000).expect("list").len(), 1);
        db.set_password("root", "h2", Some(s2)).expect("pw");
        assert_eq!(db.list_sessions(None, 0).expect("list").iter().map(|s| s.id).collect::<Vec<_>>(), vec![s2]);
        let k = db.create_key(u.id, "script", "oxk_abcd", b"k", 1).expect("key");
        assert_eq!(db.key_by_secret(b"k").expect("q").map(|k| k.role), Some(Role::Admin));
        assert!(!db.delete_key(k, Some(u.id + 1)).expect("not theirs"));
        db.create_user("bob", Role::Admin, "h", 2).expect("bob");
        db.delete_user("root").expect("delete");
        assert_eq!(db.key_by_secret(b"k").expect("q"), None, "keys go with the user");
        assert_eq!(db.session_by_token(b"t2", 0).expect("q"), None, "sessions too");
    }

    #[test]
    fn totp_steps_only_move_forward() {
        let db = db();
        let u = db.create_first_admin("root", "h", 1).expect("q").expect("u");
        db.set_totp_pending(u.id, Some(b"secret")).expect("pending");
        db.set_totp(u.id, Some(10)).expect("enable");
        let u2 = db.user_by_name("root").expect("q").expect("u");
        assert_eq!(
            (u2.totp_secret.as_deref(), u2.totp_pending, u2.totp_last_step),
            (Some(&b"secret"[..]), None, Some(10))
        );
        assert!(!db.use_totp_step(u.id, 10).expect("replay"));
        assert!(db.use_totp_step(u.id, 11).expect("next"));
        assert!(!db.use_totp_step(u.id, 9).expect("older"));
        // A last use far ahead: the clock was set back since.
        assert!(db.use_totp_step(u.id, 11 - 120).expect("after the clock went back an hour"));
        db.set_totp(u.id, None).expect("off");
        assert_eq!(db.user_by_name("root").expect("q").expect("u").totp_secret, None);
    }
}
