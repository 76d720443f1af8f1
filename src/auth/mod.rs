//! Who may use OxiNVR: users with roles, password hashes, login sessions, API
//! keys, TOTP and login lockout. STUB while it is written.

/// A user's role; ordered (an admin may do what an operator may, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user_id: i64,
    pub username: String,
    pub role: Role,
}
