//! Integrations that tell the outside world what the recorder does: MQTT with
//! Home Assistant discovery (`mqtt`, its `outbox` and `discovery` messages)
//! and signed webhooks (`webhook`).
//!
//! Invariant: nothing here is on the recording path. The recorder is read and
//! commanded only through `mqtt::Host` (implemented by the web layer, which
//! owns the recorder's shared state), and a broker that is slow, down or
//! refusing never makes a caller wait: every call into this layer takes a
//! short lock on an in-memory queue and returns (webhooks: the events hub's
//! bounded queue of each hook's subscription).

pub mod discovery;
pub mod mqtt;
pub mod outbox;
pub mod webhook;
