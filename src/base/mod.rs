//! Base utilities every layer may use: time, logging, memory accounting, the
//! terminal line editor, an HTTP/1.1 client, file-system helpers.

pub mod clock;
pub mod fs;
pub mod httpclient;
pub mod lineedit;
pub mod logging;
pub mod memory;
pub mod shutdown;
