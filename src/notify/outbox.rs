//! The MQTT outbox: what waits for the broker, bounded whatever the broker does.
//!
//! Invariants: retained state (availability, discovery configs, stream status,
//! motion, switches, box figures) is coalesced, one entry per topic, the newest
//! payload wins: it never grows past the number of topics, and a reconnect sends
//! all of it again (`resend_all`). Events are a FIFO of at most `cap` messages;
//! a push into a full FIFO drops the oldest, counted in `dropped`. `pop` hands
//! out availability and discovery first, then events in order, then state.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// One message for the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// The order retained state is (re)sent in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    Availability,
    Discovery,
    State,
}

pub struct Outbox {
    latest: BTreeMap<(Class, String), Vec<u8>>,
    dirty: BTreeSet<(Class, String)>,
    events: VecDeque<Message>,
    cap: usize,
    dropped: u64,
}

impl Outbox {
    pub fn new(cap: usize) -> Outbox {
        Outbox { latest: BTreeMap::new(), dirty: BTreeSet::new(), events: VecDeque::new(), cap: cap.max(1), dropped: 0 }
    }

    /// Retained state of `topic`; sent only if it differs from what it was.
    pub fn set(&mut self, class: Class, topic: &str, payload: impl Into<Vec<u8>>) {
        let key = (class, topic.to_string());
        let payload = payload.into();
        if self.latest.get(&key) != Some(&payload) {
            self.latest.insert(key.clone(), payload);
            self.dirty.insert(key);
        }
    }

    /// The retained payload of `topic`, if any.
    pub fn get(&self, class: Class, topic: &str) -> Option<&[u8]> {
        self.latest.get(&(class, topic.to_string())).map(Vec::as_slice)
    }

    /// An event: sent once, in order; the oldest is dropped when `cap` wait.
    pub fn push_event(&mut self, msg: Message) {
        if self.events.len() >= self.cap {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back(msg);
    }

    /// Everything retained is sent again (a new session; Home Assistant restarted).
    pub fn resend_all(&mut self) {
        self.dirty = self.latest.keys().cloned().collect();
    }

    pub fn pop(&mut self) -> Option<Message> {
        let first = self.dirty.first().map(|k| k.0);
        let key = match first {
            Some(c) if c < Class::State || self.events.is_empty() => self.dirty.pop_first(),
            _ => return self.events.pop_front(),
        }?;
        let payload = self.latest.get(&key).cloned().unwrap_or_default();
        Some(Message { topic: key.1, payload, retain: true })
    }

    /// Messages waiting (state to send plus events).
    pub fn waiting(&self) -> usize {
        self.dirty.len() + self.events.len()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> Message {
        Message { topic: "p/e".into(), payload: n.to_string().into_bytes(), retain: false }
    }

    fn drain(o: &mut Outbox) -> Vec<String> {
        std::iter::from_fn(|| o.pop()).map(|m| format!("{}={}", m.topic, String::from_utf8_lossy(&m.payload))).collect()
    }

    #[test]
    fn state_is_coalesced_and_events_drop_the_oldest() {
        let mut o = Outbox::new(2);
        o.set(Class::State, "p/s", "1");
        o.set(Class::State, "p/s", "2");
        for n in 0..5 {
            o.push_event(event(n));
        }
        assert_eq!(o.dropped(), 3);
        assert_eq!(o.waiting(), 3);
        assert_eq!(drain(&mut o), ["p/e=3", "p/e=4", "p/s=2"], "events in order, then the newest state");
        o.set(Class::State, "p/s", "2");
        assert_eq!(o.pop(), None, "an unchanged state is not sent again");
    }

    #[test]
    fn a_reconnect_sends_availability_then_discovery_then_the_rest() {
        let mut o = Outbox::new(8);
        o.set(Class::State, "a/state", "x");
        o.set(Class::Discovery, "z/config", "{}");
        o.set(Class::Availability, "q/availability", "online");
        drain(&mut o);
        o.push_event(event(7));
        o.resend_all();
        assert_eq!(drain(&mut o), ["q/availability=online", "z/config={}", "p/e=7", "a/state=x"]);
    }
}
