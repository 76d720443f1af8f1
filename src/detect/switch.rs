//! The per-stream detection switch an operator flips at run time (the page's
//! toggle through `PUT /api/streams/{name}/detection`, MQTT's
//! `<stream>/detection/set`): one table both read and write, so the API,
//! MQTT's retained state and the detection threads agree.
//!
//! Invariants: a stream is on until switched off (a fresh start is on: the
//! switch is not saved); switching off stops new events, it never stops
//! decoding or recording; a deleted stream's entry is forgotten, so a new
//! stream of that name starts on.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

/// Detection on/off per stream name.
#[derive(Default)]
pub struct Switch {
    off: Mutex<BTreeMap<String, bool>>,
}

impl Switch {
    /// Whether detection makes events for `stream` (on unless switched off).
    pub fn enabled(&self, stream: &str) -> bool {
        self.table().get(stream).copied().unwrap_or(true)
    }

    /// Switches `stream` on or off; true if that changed its state.
    pub fn set(&self, stream: &str, on: bool) -> bool {
        self.table().insert(stream.to_string(), on).unwrap_or(true) != on
    }

    /// Drops `stream`'s entry (it was deleted).
    pub fn forget(&self, stream: &str) {
        self.table().remove(stream);
    }

    fn table(&self) -> MutexGuard<'_, BTreeMap<String, bool>> {
        self.off.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::Switch;

    #[test]
    fn a_stream_is_on_until_switched_off_and_forgetting_turns_it_on_again() {
        let s = Switch::default();
        assert!(s.enabled("door"));
        assert!(s.set("door", false), "on -> off is a change");
        assert!(!s.set("door", false), "off -> off is none");
        assert!(!s.enabled("door") && s.enabled("yard"));
        s.forget("door");
        assert!(s.enabled("door"));
    }
}
