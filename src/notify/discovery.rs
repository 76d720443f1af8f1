//! Topic names and Home Assistant MQTT discovery configs: a device per box,
//! and per stream a motion binary_sensor, a recording-state sensor, switches
//! for recording and detection, a camera fed by the snapshot topic, and a
//! sensor per object label seen on the stream (the count of open events).
//!
//! Invariants: pure (names in, JSON out); every config carries `unique_id`,
//! `device`, `availability_topic` and `state_topic`, and every topic it names is
//! under the box's prefix, so commands are only taken where the box owns them.
//! Object ids keep only `[A-Za-z0-9_-]` (Home Assistant's rule).

use serde_json::{json, Value};

/// The names a box publishes under.
#[derive(Clone, Debug)]
pub struct Names {
    /// The box (mqtt.name or the host name): the node id and the device.
    pub node: String,
    /// Topic prefix, `oxinvr/<node>` unless configured.
    pub prefix: String,
    /// `homeassistant` unless configured.
    pub discovery: String,
}

/// `[A-Za-z0-9_-]` only: Home Assistant's node and object ids.
pub fn object_id(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

impl Names {
    pub fn availability(&self) -> String {
        format!("{}/availability", self.prefix)
    }

    /// `<prefix>/status`: the box's disk and memory figures.
    pub fn box_status(&self) -> String {
        format!("{}/status", self.prefix)
    }

    /// `<prefix>/<stream>/<leaf>`.
    pub fn stream(&self, stream: &str, leaf: &str) -> String {
        format!("{}/{stream}/{leaf}", self.prefix)
    }

    /// `<prefix>/<stream>/objects/<label>`: the count of open object events
    /// (a level of its own, so no label can clash with a stream's other topics).
    pub fn object_count(&self, stream: &str, label: &str) -> String {
        format!("{}/{stream}/objects/{label}", self.prefix)
    }

    /// The sensor of a label's object count on a stream (topic, config).
    pub fn object_config(&self, stream: &str, label: &str) -> (String, Value) {
        self.config(
            "sensor",
            &format!("{stream}_{label}_count"),
            &format!("{stream} {label} count"),
            json!({ "state_topic": self.object_count(stream, label), "state_class": "measurement",
                    "unit_of_measurement": "objects", "icon": "mdi:counter" }),
        )
    }

    /// Home Assistant's birth and last will topic.
    pub fn ha_status(&self) -> String {
        format!("{}/status", self.discovery)
    }

    fn config_topic(&self, component: &str, object: &str) -> String {
        format!("{}/{component}/{}/{}/config", self.discovery, object_id(&self.node), object_id(object))
    }

    fn unique_id(&self, object: &str) -> String {
        format!("oxinvr_{}_{}", object_id(&self.node), object_id(object))
    }

    fn device(&self) -> Value {
        json!({
            "identifiers": [format!("oxinvr_{}", object_id(&self.node))],
            "name": format!("OxiNVR {}", self.node),
            "manufacturer": "OxiNVR",
            "model": "NVR",
            "sw_version": env!("CARGO_PKG_VERSION"),
        })
    }

    /// One config: the common fields plus `fields`.
    fn config(&self, component: &str, object: &str, name: &str, fields: Value) -> (String, Value) {
        let mut v = json!({
            "name": name,
            "unique_id": self.unique_id(object),
            "object_id": self.unique_id(object),
            "device": self.device(),
            "availability_topic": self.availability(),
        });
        if let (Some(m), Value::Object(extra)) = (v.as_object_mut(), fields) {
            m.extend(extra);
        }
        (self.config_topic(component, object), v)
    }

    /// The box's own entities: disk free.
    pub fn box_configs(&self) -> Vec<(String, Value)> {
        vec![self.config(
            "sensor",
            "disk_free",
            "Disk free",
            json!({
                "state_topic": self.box_status(),
                "value_template": "{{ (value_json.disk_free_bytes / 1000000000) | round(1) }}",
                "unit_of_measurement": "GB",
                "device_class": "data_size",
                "json_attributes_topic": self.box_status(),
            }),
        )]
    }

    /// A stream's entities (topic, config).
    pub fn stream_configs(&self, stream: &str) -> Vec<(String, Value)> {
        let status = self.stream(stream, "status");
        let switch = |leaf: &str| {
            json!({
                "state_topic": self.stream(stream, leaf),
                "command_topic": self.stream(stream, &format!("{leaf}/set")),
                "payload_on": "ON", "payload_off": "OFF",
            })
        };
        vec![
            self.config(
                "binary_sensor",
                &format!("{stream}_motion"),
                &format!("{stream} motion"),
                json!({ "state_topic": self.stream(stream, "motion"), "device_class": "motion",
                        "payload_on": "ON", "payload_off": "OFF" }),
            ),
            self.config(
                "sensor",
                &format!("{stream}_recording"),
                &format!("{stream} recording"),
                json!({ "state_topic": status, "json_attributes_topic": status,
                        "value_template": "{{ 'recording' if value_json.recording else value_json.state }}" }),
            ),
            self.config("switch", &format!("{stream}_record"), &format!("{stream} record"), switch("record")),
            self.config("switch", &format!("{stream}_detection"), &format!("{stream} detection"), switch("detection")),
            // Home Assistant's camera reads `topic`; `state_topic` (the stream's
            // status, ignored by Home Assistant) keeps every config alike.
            self.config(
                "camera",
                &format!("{stream}_snapshot"),
                &format!("{stream} snapshot"),
                json!({ "topic": self.stream(stream, "snapshot"), "state_topic": status }),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_config_has_the_fields_home_assistant_needs_under_our_prefix() {
        let n = Names { node: "nvr.lab".into(), prefix: "oxinvr/nvr.lab".into(), discovery: "homeassistant".into() };
        let all: Vec<_> = n
            .box_configs()
            .into_iter()
            .chain(n.stream_configs("front.door"))
            .chain([n.object_config("front.door", "person")])
            .collect();
        assert_eq!(all.len(), 7);
        let mut ids = std::collections::BTreeSet::new();
        for (topic, c) in &all {
            assert!(topic.starts_with("homeassistant/") && topic.ends_with("/config"), "{topic}");
            assert!(topic.split('/').nth(2) == Some("nvr_lab"), "node id sanitized: {topic}");
            assert!(ids.insert(c["unique_id"].as_str().expect("unique_id").to_string()), "unique: {c}");
            assert_eq!(c["availability_topic"], "oxinvr/nvr.lab/availability");
            assert!(c["state_topic"].as_str().expect("state_topic").starts_with("oxinvr/nvr.lab/"), "{c}");
            assert_eq!(c["device"]["identifiers"][0], "oxinvr_nvr_lab");
        }
        let (_, rec) = &all[3];
        assert_eq!(rec["command_topic"], "oxinvr/nvr.lab/front.door/record/set");
    }
}
