//! Base utilities every layer may use: time, logging, memory accounting,
//! Prometheus metric primitives, the terminal line editor, an HTTP/1.1 client, file-system helpers, and the
//! error type of the glue code (`error`).

pub mod clock;
pub mod error;
pub mod fs;
pub mod heartbeat;
pub mod httpclient;
pub mod lineedit;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod shutdown;
