//! The MQTT client: availability with a last will, Home Assistant discovery,
//! the streams' status, motion and switches, per stream and label the count of
//! open object events, the box's figures, events; and the
//! commands Home Assistant sends back (recording and detection on/off, a
//! manual event).
//!
//! Invariants: one thread, `mqtt`, runs a current-thread tokio runtime with two
//! tasks: the connection (rumqttc's event loop, polled to completion, never
//! cancelled mid-connect; after a failure it waits 0.5 s doubling to 15 s) and
//! the publisher (mirrors the recorder into the outbox every second or when
//! woken, sends the outbox while connected). Everything else only takes the
//! outbox's lock for a moment, so a broker that is down or slow never blocks a
//! caller, and the outbox is bounded (`outbox`). After each (re)connect every
//! retained topic is sent again, so the broker and Home Assistant end up with
//! the current state whatever was lost. Commands are taken only under the
//! box's prefix, never from a retained message, and each is logged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use serde::Serialize;
use serde_json::{json, Value};

use super::discovery::Names;
use super::outbox::{Class, Message, Outbox};
use crate::base::clock::Clock;
use crate::config::MqttConfig;

/// Events waiting for the broker at most; older ones are dropped (counted).
pub const OUTBOX_EVENTS: usize = 256;
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(15);
/// The publisher looks at the recorder this often (and when woken).
const TICK: Duration = Duration::from_secs(1);
/// The box's disk and memory figures are sent this often.
const BOX_EVERY_MS: i64 = 60_000;

/// `[mqtt]` resolved: the broker, the credentials and the names.
#[derive(Clone, Debug)]
pub struct Settings {
    pub url: String,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub ca_file: String,
    pub client_id: String,
    pub names: Names,
}

impl Settings {
    /// None when `mqtt.url` is empty; `hostname` names the box unless `mqtt.name` does.
    pub fn from_config(c: &MqttConfig, hostname: &str) -> Result<Option<Settings>, String> {
        if c.url.is_empty() {
            return Ok(None);
        }
        let (tls, host, port) = crate::config::mqtt_broker(&c.url).map_err(|e| format!("mqtt.url: {e}"))?;
        let node = if c.name.is_empty() { super::discovery::object_id(hostname) } else { c.name.clone() };
        let or = |v: &str, default: String| if v.trim().is_empty() { default } else { v.trim().to_string() };
        let names = Names {
            prefix: or(&c.topic_prefix, format!("oxinvr/{node}")),
            discovery: or(&c.discovery_prefix, "homeassistant".into()),
            node: node.clone(),
        };
        Ok(Some(Settings {
            url: c.url.clone(),
            tls,
            host,
            port,
            user: c.user.clone(),
            password: c.password.clone(),
            ca_file: c.ca_file.clone(),
            client_id: or(&c.client_id, format!("oxinvr-{node}")),
            names,
        }))
    }
}

/// The machine's host name (the box's default name), `oxinvr` if unknown.
pub fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = super::discovery::object_id(name.trim());
    if name.is_empty() {
        "oxinvr".into()
    } else {
        name
    }
}

/// A stream as MQTT shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamView {
    pub name: String,
    /// `streaming`, `backoff`, `disabled`, ... (the API's state).
    pub state: String,
    /// Its record setting is on (the switch).
    pub record: bool,
    /// Frames are being written now.
    pub recording: bool,
    pub connected: bool,
    pub fps: f32,
    pub bitrate_kbps: f32,
    /// Its detection switch is on (`detect::Switch`).
    pub detection: bool,
}

/// What the client reads from and asks of the recorder (the web layer's `Nvr`).
pub trait Host: Send + Sync {
    fn streams(&self) -> Vec<StreamView>;
    /// The box's disk and memory figures (a JSON object with `disk_free_bytes`).
    fn box_figures(&self) -> Value;
    /// Turns a stream's recording on or off the way the API does (`Recorder::edit`).
    fn set_recording(&self, stream: &str, on: bool) -> Result<(), String>;
    /// Flips a stream's detection switch (the one `PUT /api/streams/NAME/detection` flips).
    fn set_detection(&self, stream: &str, on: bool) -> Result<(), String>;
}

/// Where a manual event trigger goes: (stream, the event as JSON).
pub type TriggerHook = Box<dyn Fn(&str, &Value) + Send + Sync>;

/// What `/api/system` and the shell's `mqtt status` show.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// `connecting`, `connected`, `disconnected`, `stopped` or `failed` (cannot start).
    pub state: &'static str,
    pub broker: String,
    pub client_id: String,
    pub topic_prefix: String,
    pub last_error: Option<String>,
    pub last_error_ms: Option<i64>,
    pub connects: u64,
    pub published: u64,
    /// Messages waiting for the broker.
    pub queued: usize,
    /// Events dropped from a full outbox.
    pub dropped: u64,
}

struct Shared {
    outbox: Outbox,
    state: &'static str,
    last_error: Option<String>,
    last_error_ms: Option<i64>,
    connects: u64,
    published: u64,
    /// The open object events per stream and label (a label stays, at 0,
    /// once seen: its Home Assistant sensor exists until the stream goes).
    objects: Objects,
}

/// Stream -> label -> ids of its open object events.
type Objects = BTreeMap<String, BTreeMap<String, BTreeSet<i64>>>;

/// The running client's handle.
pub struct Mqtt {
    settings: Settings,
    clock: Arc<dyn Clock>,
    shared: Mutex<Shared>,
    wake: tokio::sync::Notify,
    connected: AtomicBool,
    stopping: AtomicBool,
    trigger: Mutex<Option<TriggerHook>>,
    done: Mutex<Option<mpsc::Receiver<()>>>,
}

impl Mqtt {
    /// Starts the `mqtt` thread. A configuration that cannot be used (a CA
    /// file that does not load) gives a handle in state `failed` saying why.
    pub fn spawn(settings: Settings, host: Arc<dyn Host>, clock: Arc<dyn Clock>) -> std::io::Result<Arc<Mqtt>> {
        let mqtt = Arc::new(Mqtt::new(settings, clock));
        let opts = match options(&mqtt.settings) {
            Ok(o) => o,
            Err(e) => {
                log::error!("mqtt: {e}");
                mqtt.failed("failed", e);
                return Ok(mqtt);
            }
        };
        let (done_tx, done_rx) = mpsc::channel();
        *lock(&mqtt.done) = Some(done_rx);
        let me = mqtt.clone();
        std::thread::Builder::new().name("mqtt".into()).stack_size(512 << 10).spawn(move || {
            crate::base::memory::set_subsystem(crate::base::memory::Subsystem::Mqtt);
            run(&me, host, opts);
            let _ = done_tx.send(());
        })?;
        log::info!(
            "mqtt: publishing to {} under {} (discovery under {})",
            mqtt.settings.url,
            mqtt.settings.names.prefix,
            mqtt.settings.names.discovery
        );
        Ok(mqtt)
    }

    fn new(settings: Settings, clock: Arc<dyn Clock>) -> Mqtt {
        let mut outbox = Outbox::new(OUTBOX_EVENTS);
        outbox.set(Class::Availability, &settings.names.availability(), "online");
        Mqtt {
            settings,
            clock,
            shared: Mutex::new(Shared {
                outbox,
                state: "connecting",
                last_error: None,
                last_error_ms: None,
                connects: 0,
                published: 0,
                objects: BTreeMap::new(),
            }),
            wake: tokio::sync::Notify::new(),
            connected: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            trigger: Mutex::new(None),
            done: Mutex::new(None),
        }
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    pub fn status(&self) -> Status {
        let sh = self.shared();
        Status {
            state: sh.state,
            broker: self.settings.url.clone(),
            client_id: self.settings.client_id.clone(),
            topic_prefix: self.settings.names.prefix.clone(),
            last_error: sh.last_error.clone(),
            last_error_ms: sh.last_error_ms,
            connects: sh.connects,
            published: sh.published,
            queued: sh.outbox.waiting(),
            dropped: sh.outbox.dropped(),
        }
    }

    /// An event (JSON) for `<prefix>/<stream>/event`, or `<prefix>/event` when it
    /// names no stream. The input the events store and detection feed.
    pub fn publish_event(&self, event: &Value) {
        let names = &self.settings.names;
        let topic = match event.get("stream").and_then(Value::as_str) {
            Some(s) if topic_part_ok(s) => names.stream(s, "event"),
            _ => format!("{}/event", names.prefix),
        };
        self.shared().outbox.push_event(Message { topic, payload: event.to_string().into_bytes(), retain: false });
        self.wake.notify_one();
    }

    /// A stream's `motion` ON/OFF (retained; OFF until detection says otherwise).
    pub fn set_motion(&self, stream: &str, on: bool) {
        if topic_part_ok(stream) {
            self.shared().outbox.set(Class::State, &self.settings.names.stream(stream, "motion"), on_off(on));
            self.wake.notify_one();
        }
    }

    /// Object event `id` of `stream` with `label` is open (began) or not
    /// (ended, deleted): `<prefix>/<stream>/objects/<label>` carries how
    /// many of that label are open (retained), and a label seen for the first
    /// time gets its Home Assistant sensor.
    pub fn object_event(&self, stream: &str, label: &str, id: i64, open: bool) {
        if !topic_part_ok(stream) || !topic_part_ok(label) {
            return;
        }
        let names = &self.settings.names;
        let mut sh = self.shared();
        let Shared { objects, outbox, .. } = &mut *sh;
        let labels = objects.entry(stream.to_string()).or_default();
        if !labels.contains_key(label) {
            let (topic, config) = names.object_config(stream, label);
            outbox.set(Class::Discovery, &topic, config.to_string());
        }
        let ids = labels.entry(label.to_string()).or_default();
        if open {
            ids.insert(id);
        } else {
            ids.remove(&id);
        }
        let count = ids.len().to_string();
        outbox.set(Class::State, &names.object_count(stream, label), count);
        drop(sh);
        self.wake.notify_one();
    }

    /// A stream's latest snapshot (JPEG) for the Home Assistant camera entity.
    pub fn publish_snapshot(&self, stream: &str, jpeg: Vec<u8>) {
        if topic_part_ok(stream) {
            self.shared().outbox.set(Class::State, &self.settings.names.stream(stream, "snapshot"), jpeg);
            self.wake.notify_one();
        }
    }

    /// Where manual event triggers (`<prefix>/<stream>/trigger`) go.
    pub fn set_trigger_hook(&self, hook: TriggerHook) {
        *lock(&self.trigger) = Some(hook);
    }

    /// Says `offline` and disconnects, waiting at most `limit` (not at all
    /// while not connected: the last will says it then).
    pub fn stop(&self, limit: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        let rx = lock(&self.done).take();
        if let (true, Some(rx)) = (self.connected.load(Ordering::SeqCst), rx) {
            let _ = rx.recv_timeout(limit);
        }
        self.shared().state = "stopped";
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    fn failed(&self, state: &'static str, why: String) {
        let now = self.clock.now_ms();
        let mut sh = self.shared();
        sh.state = state;
        sh.last_error = Some(why);
        sh.last_error_ms = Some(now);
    }

    fn on_connected(&self) {
        self.connected.store(true, Ordering::SeqCst);
        let mut sh = self.shared();
        sh.state = "connected";
        sh.connects += 1;
        sh.outbox.resend_all();
        drop(sh);
        log::info!("mqtt: connected to {}", self.settings.url);
        self.wake.notify_one();
    }

    fn on_error(&self, why: String) {
        let was = self.connected.swap(false, Ordering::SeqCst);
        let same = self.shared().last_error.as_deref() == Some(why.as_str());
        if was || !same {
            log::warn!("mqtt: {why}; retrying with a backoff of {BACKOFF_MIN:?} doubling to {BACKOFF_MAX:?}");
        }
        self.failed("disconnected", why);
    }

    /// A message on a subscribed topic: Home Assistant's birth, or a command.
    fn on_message(&self, host: &dyn Host, topic: &str, payload: &[u8], retained: bool) {
        let names = &self.settings.names;
        let text = String::from_utf8_lossy(payload);
        if topic == names.ha_status() {
            if text == "online" {
                log::info!("mqtt: Home Assistant says online: sending discovery and state again");
                self.shared().outbox.resend_all();
                self.wake.notify_one();
            }
            return;
        }
        let Some(rest) = topic.strip_prefix(&format!("{}/", names.prefix)) else { return };
        if retained {
            log::warn!("mqtt: ignored the retained command {topic} {text:?} (a command must not be retained)");
            return;
        }
        let done = match rest.split('/').collect::<Vec<_>>().as_slice() {
            [stream, "record", "set"] => parse_switch(&text)
                .and_then(|on| host.set_recording(stream, on).map(|()| format!("recording {}", on_off(on)))),
            [stream, "detection", "set"] => parse_switch(&text)
                .and_then(|on| host.set_detection(stream, on).map(|()| format!("detection {}", on_off(on)))),
            [stream, "trigger"] => self.trigger(host, stream, &text),
            _ => Err("not a command: give <stream>/record/set, <stream>/detection/set or <stream>/trigger".into()),
        };
        match done {
            Ok(what) => log::info!("mqtt: command {topic} {text:?}: {what}"),
            Err(why) => log::warn!("mqtt: command {topic} {text:?} refused: {why}"),
        }
        self.wake.notify_one();
    }

    fn trigger(&self, host: &dyn Host, stream: &str, text: &str) -> Result<String, String> {
        known_stream(host, stream)?;
        let detail = serde_json::from_str::<Value>(text).unwrap_or_else(|_| json!(text));
        let event = json!({ "stream": stream, "source": "mqtt", "detail": detail, "time_ms": self.clock.now_ms() });
        match &*lock(&self.trigger) {
            Some(hook) => {
                hook(stream, &event);
                Ok("manual event forwarded".into())
            }
            None => Ok("manual event logged (no event hook is connected)".into()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn on_off(on: bool) -> &'static str {
    if on {
        "ON"
    } else {
        "OFF"
    }
}

fn parse_switch(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        other => Err(format!("{other:?} is not ON or OFF")),
    }
}

/// A stream name is one topic level (stream names are checked where they are
/// made; this keeps a wildcard or a slash out of a topic whatever the caller).
fn topic_part_ok(s: &str) -> bool {
    !s.is_empty() && !s.contains(['/', '+', '#', '\0'])
}

fn known_stream(host: &dyn Host, stream: &str) -> Result<(), String> {
    if host.streams().iter().any(|s| s.name == stream) {
        Ok(())
    } else {
        Err(format!("no stream {stream:?}"))
    }
}

/// rumqttc's options: last will, credentials, TLS with the ring provider.
fn options(s: &Settings) -> Result<MqttOptions, String> {
    let mut o = MqttOptions::new(s.client_id.clone(), s.host.clone(), s.port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_session(true);
    // Commands are small; snapshots (JPEG) go out.
    o.set_max_packet_size(64 << 10, 4 << 20);
    o.set_last_will(LastWill::new(s.names.availability(), "offline", QoS::AtLeastOnce, true));
    if !s.user.is_empty() {
        o.set_credentials(s.user.clone(), s.password.clone());
    }
    if s.tls {
        let tls = crate::base::httpclient::tls_client(&s.ca_file, "mqtt.ca_file")?;
        o.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(tls))));
    }
    Ok(o)
}

/// Why the connection failed, in words that say what to fix.
fn describe(e: &ConnectionError, s: &Settings) -> String {
    let at = format!("{}:{}", s.host, s.port);
    match e {
        ConnectionError::ConnectionRefused(
            code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
        ) => format!("the broker at {at} refused the login ({code:?}): check mqtt.user and mqtt.password"),
        ConnectionError::ConnectionRefused(code) => format!("the broker at {at} refused the connection: {code:?}"),
        ConnectionError::Io(io) => format!("cannot talk to the broker at {at}: {io}"),
        ConnectionError::NetworkTimeout => format!("the broker at {at} did not answer within 5 s"),
        ConnectionError::Tls(t) => format!("TLS with the broker at {at} failed: {t}"),
        other => format!("the connection to the broker at {at} failed: {other}"),
    }
}

/// The `mqtt` thread: its runtime, the connection and the publisher.
fn run(mqtt: &Arc<Mqtt>, host: Arc<dyn Host>, opts: MqttOptions) {
    // DNS look-ups run on a helper thread of this runtime (named, idle ones end).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().thread_name("mqtt-dns").build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => return mqtt.failed("failed", format!("cannot start the MQTT runtime: {e}")),
    };
    rt.block_on(async {
        let (client, eventloop) = AsyncClient::new(opts, 16);
        let publisher = tokio::spawn(publish(mqtt.clone(), host.clone(), client.clone()));
        connection(mqtt, &*host, &client, eventloop).await;
        publisher.abort();
    });
}

/// Drives the connection: reconnects with a capped backoff, subscribes to the
/// commands at each connect, hands incoming messages to `on_message`.
async fn connection(mqtt: &Mqtt, host: &dyn Host, client: &AsyncClient, mut ev: EventLoop) {
    let names = &mqtt.settings.names;
    let filters: Vec<rumqttc::SubscribeFilter> =
        [names.stream("+", "record/set"), names.stream("+", "detection/set"), names.stream("+", "trigger")]
            .into_iter()
            .chain([names.ha_status()])
            .map(|t| rumqttc::SubscribeFilter::new(t, QoS::AtLeastOnce))
            .collect();
    let mut backoff = BACKOFF_MIN;
    loop {
        match ev.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = BACKOFF_MIN;
                if let Err(e) = client.try_subscribe_many(filters.clone()) {
                    log::warn!("mqtt: cannot subscribe to the commands: {e}");
                }
                mqtt.on_connected();
            }
            Ok(Event::Incoming(Packet::Publish(p))) => mqtt.on_message(host, &p.topic, &p.payload, p.retain),
            Ok(Event::Outgoing(Outgoing::Publish(_))) => mqtt.shared().published += 1,
            Ok(Event::Outgoing(Outgoing::Disconnect)) if mqtt.stopping() => {
                mqtt.connected.store(false, Ordering::SeqCst);
                return;
            }
            Ok(_) => {}
            Err(_) if mqtt.stopping() => return,
            Err(e) => {
                mqtt.on_error(describe(&e, &mqtt.settings));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Mirrors the recorder into the outbox and sends the outbox while connected.
async fn publish(mqtt: Arc<Mqtt>, host: Arc<dyn Host>, client: AsyncClient) {
    let mut mirror = Mirror::new(mqtt.settings.names.clone());
    loop {
        tokio::select! {
            _ = mqtt.wake.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
        if mqtt.stopping() {
            if mqtt.is_connected() {
                let availability = mqtt.settings.names.availability();
                let _ = client.publish(availability, QoS::AtLeastOnce, true, "offline").await;
                let _ = client.disconnect().await;
            }
            return;
        }
        let now = mqtt.clock.now_ms();
        let views = host.streams();
        let figures = mirror.box_due(now).then(|| host.box_figures());
        {
            let mut sh = mqtt.shared();
            let Shared { outbox, objects, .. } = &mut *sh;
            mirror.tick(now, &views, outbox, figures);
            forget_objects(&views, &mirror.names, objects, outbox);
        }
        while mqtt.is_connected() {
            let Some(m) = mqtt.shared().outbox.pop() else { break };
            if client.publish(m.topic, QoS::AtLeastOnce, m.retain, m.payload).await.is_err() {
                break;
            }
        }
    }
}

/// The recorder as last published: decides what changed (pure; the clock is passed in).
struct Mirror {
    names: Names,
    streams: BTreeMap<String, StreamView>,
    next_box_ms: i64,
    box_sent: bool,
}

impl Mirror {
    fn new(names: Names) -> Mirror {
        Mirror { names, streams: BTreeMap::new(), next_box_ms: 0, box_sent: false }
    }

    fn box_due(&self, now_ms: i64) -> bool {
        now_ms >= self.next_box_ms
    }

    fn tick(&mut self, now_ms: i64, views: &[StreamView], out: &mut Outbox, figures: Option<Value>) {
        let n = self.names.clone();
        if !self.box_sent {
            for (topic, config) in n.box_configs() {
                out.set(Class::Discovery, &topic, config.to_string());
            }
            self.box_sent = true;
        }
        if let Some(f) = figures {
            out.set(Class::State, &n.box_status(), f.to_string());
            self.next_box_ms = now_ms + BOX_EVERY_MS;
        }
        for v in views.iter().filter(|v| topic_part_ok(&v.name)) {
            let old = self.streams.get(&v.name);
            if old.is_none() {
                for (topic, config) in n.stream_configs(&v.name) {
                    out.set(Class::Discovery, &topic, config.to_string());
                }
                if out.get(Class::State, &n.stream(&v.name, "motion")).is_none() {
                    out.set(Class::State, &n.stream(&v.name, "motion"), "OFF");
                }
            }
            if old.is_none_or(|o| changed(o, v)) {
                out.set(Class::State, &n.stream(&v.name, "status"), status_json(v).to_string());
                out.set(Class::State, &n.stream(&v.name, "record"), on_off(v.record));
                self.streams.insert(v.name.clone(), v.clone());
            }
            out.set(Class::State, &n.stream(&v.name, "detection"), on_off(v.detection));
        }
        let gone: Vec<String> = self.streams.keys().filter(|k| !views.iter().any(|v| &v.name == *k)).cloned().collect();
        for name in gone {
            // An empty retained config removes the entity from Home Assistant.
            for (topic, _) in n.stream_configs(&name) {
                out.set(Class::Discovery, &topic, "");
            }
            for leaf in ["status", "record", "detection", "motion"] {
                out.set(Class::State, &n.stream(&name, leaf), "");
            }
            self.streams.remove(&name);
        }
    }
}

/// Removes the object counts and sensors of streams that are gone.
fn forget_objects(views: &[StreamView], names: &Names, objects: &mut Objects, out: &mut Outbox) {
    objects.retain(|stream, labels| {
        if views.iter().any(|v| &v.name == stream) {
            return true;
        }
        for label in labels.keys() {
            out.set(Class::Discovery, &names.object_config(stream, label).0, "");
            out.set(Class::State, &names.object_count(stream, label), "");
        }
        false
    });
}

/// Worth a message: a state, switch or connection change, 1 fps, or 20 % bitrate.
fn changed(old: &StreamView, new: &StreamView) -> bool {
    (old.state.as_str(), old.record, old.recording, old.connected)
        != (new.state.as_str(), new.record, new.recording, new.connected)
        || (old.fps - new.fps).abs() >= 1.0
        || (old.bitrate_kbps - new.bitrate_kbps).abs() > (old.bitrate_kbps * 0.2).max(50.0)
}

fn status_json(v: &StreamView) -> Value {
    json!({
        "state": v.state,
        "connected": v.connected,
        "record": v.record,
        "recording": v.recording,
        "fps": (v.fps * 10.0).round() / 10.0,
        "bitrate_kbps": v.bitrate_kbps.round(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names { node: "box".into(), prefix: "oxinvr/box".into(), discovery: "homeassistant".into() }
    }

    fn view(name: &str, fps: f32, kbps: f32) -> StreamView {
        StreamView {
            name: name.into(),
            state: "streaming".into(),
            record: true,
            recording: true,
            connected: true,
            fps,
            bitrate_kbps: kbps,
            detection: true,
        }
    }

    fn topics(o: &mut Outbox) -> Vec<(String, String)> {
        std::iter::from_fn(|| o.pop()).map(|m| (m.topic, String::from_utf8_lossy(&m.payload).into_owned())).collect()
    }

    #[test]
    fn a_stream_is_announced_once_and_its_status_sent_on_real_changes() {
        let (mut m, mut out) = (Mirror::new(names()), Outbox::new(8));
        m.tick(0, &[view("door", 15.0, 800.0)], &mut out, Some(json!({"disk_free_bytes": 1})));
        let first = topics(&mut out);
        let configs = first.iter().filter(|(t, _)| t.starts_with("homeassistant/")).count();
        assert_eq!(configs, 6, "box disk sensor and 5 per stream: {first:?}");
        assert!(first.contains(&("oxinvr/box/door/motion".into(), "OFF".into())));
        assert!(first.contains(&("oxinvr/box/door/record".into(), "ON".into())));
        assert!(first.contains(&("oxinvr/box/status".into(), "{\"disk_free_bytes\":1}".into())));
        // Jitter is not news; a stop of recording is.
        m.tick(1000, &[view("door", 15.4, 850.0)], &mut out, None);
        assert_eq!(topics(&mut out), vec![]);
        assert!(!m.box_due(59_999) && m.box_due(60_000), "box figures every minute");
        let mut off = view("door", 15.0, 800.0);
        off.record = false;
        off.recording = false;
        m.tick(2000, &[off], &mut out, None);
        let got = topics(&mut out);
        assert!(got.contains(&("oxinvr/box/door/record".into(), "OFF".into())), "{got:?}");
        assert!(got.iter().any(|(t, p)| t == "oxinvr/box/door/status" && p.contains("\"recording\":false")));
        // A removed stream's entities are removed from Home Assistant.
        m.tick(3000, &[], &mut out, None);
        let got = topics(&mut out);
        assert!(got.iter().filter(|(t, p)| t.ends_with("/config") && p.is_empty()).count() == 5, "{got:?}");
    }

    /// Stream `door`; records the record and detection switches it is asked to flip.
    struct OneStream(Mutex<Vec<(String, bool)>>, Mutex<Vec<(String, bool)>>);
    impl Host for OneStream {
        fn streams(&self) -> Vec<StreamView> {
            vec![view("door", 15.0, 800.0)]
        }
        fn box_figures(&self) -> Value {
            json!({})
        }
        fn set_recording(&self, stream: &str, on: bool) -> Result<(), String> {
            lock(&self.0).push((stream.to_string(), on));
            Ok(())
        }
        fn set_detection(&self, stream: &str, on: bool) -> Result<(), String> {
            if stream != "door" {
                return Err(format!("no stream {stream:?}"));
            }
            lock(&self.1).push((stream.to_string(), on));
            Ok(())
        }
    }

    #[test]
    fn commands_are_taken_under_our_prefix_only_and_never_retained() {
        let clock: Arc<dyn Clock> = Arc::new(crate::base::clock::SimulatedClock::new(1_800_000_000_000));
        let s = Settings::from_config(
            &MqttConfig { url: "mqtt://127.0.0.1".into(), name: "box".into(), ..Default::default() },
            "ignored",
        )
        .expect("valid")
        .expect("on");
        assert_eq!((s.client_id.as_str(), s.names.prefix.as_str()), ("oxinvr-box", "oxinvr/box"));
        let m = Mqtt::new(s, clock);
        let host = OneStream(Mutex::new(Vec::new()), Mutex::new(Vec::new()));
        m.on_message(&host, "oxinvr/box/door/record/set", b"OFF", false);
        m.on_message(&host, "oxinvr/box/door/record/set", b"ON", true);
        m.on_message(&host, "oxinvr/other/door/record/set", b"ON", false);
        m.on_message(&host, "oxinvr/box/door/record/set", b"maybe", false);
        assert_eq!(*lock(&host.0), vec![("door".to_string(), false)]);
        m.on_message(&host, "oxinvr/box/door/detection/set", b"off", false);
        m.on_message(&host, "oxinvr/box/yard/detection/set", b"off", false);
        assert_eq!(*lock(&host.1), vec![("door".to_string(), false)], "detection goes to the host's switch");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        m.set_trigger_hook(Box::new(move |stream, ev| lock(&s2).push((stream.to_string(), ev["detail"].clone()))));
        m.on_message(&host, "oxinvr/box/door/trigger", b"{\"label\":\"test\"}", false);
        assert_eq!(*lock(&seen), vec![("door".to_string(), json!({"label": "test"}))]);
    }

    #[test]
    fn object_counts_follow_open_events_per_label_and_go_with_their_stream() {
        let clock: Arc<dyn Clock> = Arc::new(crate::base::clock::SimulatedClock::new(1_800_000_000_000));
        let s = Settings::from_config(
            &MqttConfig { url: "mqtt://127.0.0.1".into(), name: "box".into(), ..Default::default() },
            "ignored",
        )
        .expect("valid")
        .expect("on");
        let m = Mqtt::new(s, clock);
        let count = |label: &str| {
            m.shared().outbox.get(Class::State, &format!("oxinvr/box/door/objects/{label}")).map(|p| p.to_vec())
        };
        m.object_event("door", "person", 1, true);
        m.object_event("door", "person", 2, true);
        m.object_event("door", "car", 3, true);
        assert_eq!(count("person").as_deref(), Some(&b"2"[..]));
        m.object_event("door", "person", 1, false);
        m.object_event("door", "person", 1, false);
        assert_eq!(count("person").as_deref(), Some(&b"1"[..]), "an end told twice counts once");
        m.object_event("door", "car", 3, false);
        assert_eq!(count("car").as_deref(), Some(&b"0"[..]));
        let config = "homeassistant/sensor/box/door_person_count/config";
        assert!(m.shared().outbox.get(Class::Discovery, config).is_some_and(|c| !c.is_empty()));
        m.object_event("do/or", "person", 4, true);
        assert_eq!(m.shared().objects.len(), 1, "a stream name that is not a topic level is ignored");
        let mut sh = m.shared();
        let Shared { objects, outbox, .. } = &mut *sh;
        forget_objects(&[], &names(), objects, outbox);
        assert!(objects.is_empty());
        assert!(outbox.get(Class::Discovery, config).is_some_and(<[u8]>::is_empty), "sensor removed");
    }
}
