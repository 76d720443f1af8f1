//! The index: the SQLite database of streams, segments (with their fragment
//! index), users, sessions and keys. It knows nothing of RTSP or HTTP.

pub mod db;
pub mod fragments;
pub mod schedule;
