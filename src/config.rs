//! Configuration: one TOML file, read with serde, with the defaults embedded in
//! the binary (`src/default-config.toml`) so `oxinvr run` works with no file.
//!
//! Invariants: a `Config` that exists has been validated; unknown keys and bad
//! values are refused with a message naming the key (and its line when known).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::index::db::{RecordMode, StreamSpec, Zone};

/// The embedded default configuration file (also printed by `oxinvr config`).
pub const DEFAULT_TOML: &str = include_str!("default-config.toml");

#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub web: WebConfig,
    #[serde(default)]
    pub memory: MemoryConfig,
    #[serde(default)]
    pub streams: Vec<StreamConfig>,
    #[serde(default)]
    pub system: SystemConfig,
    #[serde(default)]
    pub watchdog: WatchdogConfig,
    #[serde(default)]
    pub go2rtc: Go2rtcConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub events: EventsConfig,
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// `[[webhooks]]`: URLs each event is POSTed to, signed (`notify::webhook`).
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    #[serde(default)]
    pub detect: DetectConfig,
    #[serde(default)]
    pub onvif: OnvifConfig,
    /// `[replicate]`: closed segments uploaded to an S3-compatible bucket (`replicate`).
    #[serde(default)]
    pub replicate: ReplicateConfig,
    /// `[archive]`: `oxinvr archive` indexes a bucket and serves its recordings (`archive`).
    #[serde(default)]
    pub archive: ArchiveConfig,
    /// The file it was read from (or `<embedded defaults>`).
    #[serde(skip_deserializing)]
    pub source: String,
}

/// `[memory]`: the budget every stream is admitted into (`governor::budget`),
/// the pressure ladder's thresholds (`governor::pressure`) and the swapfile
/// (`governor::swap`).
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// MiB the process may use; 0 derives it from the machine's MemTotal.
    pub budget_mb: u32,
    /// The ladder climbs when PSI memory `some avg10` reaches this (percent)...
    pub pressure_some_percent: f32,
    /// ... or `full avg10` reaches this ...
    pub pressure_full_percent: f32,
    /// ... or, on a kernel without PSI, MemAvailable falls below this share of MemTotal,
    pub available_percent: f32,
    /// for this many seconds (per step).
    pub climb_seconds: u32,
    /// It descends one step after this many seconds of calm.
    pub calm_seconds: u32,
    /// Swapfile size (MiB) turned on at ladder step 3; 0: no swap.
    pub swap_file_mb: u32,
    /// The swapfile; empty: `<data_dir>/oxinvr.swap` (never an SD card unless set here).
    pub swap_file: String,
    /// Written to /proc/self/oom_score_adj at start (-1000..=1000), so the kernel
    /// kills something else first.
    pub oom_score_adj: i32,
    /// mlock each stream's ring (it is in the budget) so it is never swapped out.
    pub lock_rings: bool,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            budget_mb: 0,
            pressure_some_percent: 10.0,
            pressure_full_percent: 5.0,
            available_percent: 10.0,
            climb_seconds: 5,
            calm_seconds: 60,
            swap_file_mb: 0,
            swap_file: String::new(),
            oom_score_adj: -500,
            lock_rings: true,
        }
    }
}

impl MemoryConfig {
    /// The swapfile's path and whether it was configured explicitly.
    pub fn swap_path(&self, data_dir: &Path) -> (PathBuf, bool) {
        match self.swap_file.as_str() {
            "" => (data_dir.join("oxinvr.swap"), false),
            p => (PathBuf::from(p), true),
        }
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let (b, (lo, hi)) = (self.budget_mb, BUDGET_MB_RANGE);
        if b != 0 && !(lo..=hi).contains(&b) {
            return Err((
                "memory.budget_mb".into(),
                format!("{b} is out of range {lo}..={hi} (0 derives it from MemTotal)"),
            ));
        }
        for (key, v) in [
            ("memory.pressure_some_percent", self.pressure_some_percent),
            ("memory.pressure_full_percent", self.pressure_full_percent),
            ("memory.available_percent", self.available_percent),
        ] {
            if !(v > 0.0 && v <= 100.0) {
                return Err((key.into(), format!("{v} is not a percentage above 0 and at most 100")));
            }
        }
        if self.available_percent * 1.5 > 100.0 {
            return Err(("memory.available_percent".into(), "at most 66 (calm is 1.5 times it)".into()));
        }
        range("memory.climb_seconds", self.climb_seconds, 1, 600)?;
        range("memory.calm_seconds", self.calm_seconds, 1, 3600)?;
        if self.swap_file_mb != 0 {
            range("memory.swap_file_mb", self.swap_file_mb, 1, 65_536)?;
        }
        if !(-1000..=1000).contains(&self.oom_score_adj) {
            return Err((
                "memory.oom_score_adj".into(),
                format!("{} is out of range -1000..=1000", self.oom_score_adj),
            ));
        }
        if !self.swap_file.is_empty() && !Path::new(&self.swap_file).is_absolute() {
            return Err(("memory.swap_file".into(), format!("{:?} must be an absolute path", self.swap_file)));
        }
        Ok(())
    }
}

/// `[watchdog]`: the hardware watchdog fed while every part makes progress
/// (`governor::watchdog`).
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchdogConfig {
    /// The watchdog device (e.g. `/dev/watchdog`); empty: no watchdog.
    pub device: String,
    /// Seconds without a feed before the board resets (set with WDIOC_SETTIMEOUT).
    pub timeout_s: u32,
    /// A part whose heartbeat has not moved for this long is stuck: feeding stops.
    pub stuck_s: u32,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig { device: String::new(), timeout_s: 60, stuck_s: 30 }
    }
}

/// `[events]`: how long events (and their snapshots) are kept (`events::expire`).
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Events that ended more than this many days ago are deleted with their files.
    pub retention_days: u32,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig { retention_days: 30 }
    }
}

/// `[mqtt]`: the MQTT client with Home Assistant discovery (`notify::mqtt`).
/// An empty `url` connects to nothing.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `mqtt://host:port` (port 1883 if left out) or `mqtts://host:port` (8883; rustls).
    pub url: String,
    pub user: String,
    pub password: String,
    /// PEM file of the CA that signed an `mqtts://` broker's certificate; empty: the system's roots.
    pub ca_file: String,
    /// The box's name in topics, ids and Home Assistant; empty: the host name.
    pub name: String,
    /// Empty: `oxinvr-<name>`.
    pub client_id: String,
    /// Empty: `oxinvr/<name>`.
    pub topic_prefix: String,
    pub discovery_prefix: String,
}

/// Most `[[webhooks]]` entries (each has a thread and a queue).
pub const MAX_WEBHOOKS: usize = 16;

/// One `[[webhooks]]` entry: where events are POSTed and the key they are signed with.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Its name in the API and the log; empty: `webhook-<n>` (1-based).
    pub name: String,
    /// `http://` or `https://` (rustls; `ca_file` or the system's roots).
    pub url: String,
    /// Only events of these streams; empty: every stream.
    pub streams: Vec<String>,
    /// The HMAC-SHA256 key (at least 16 bytes); or `secret_file`, a file holding it.
    pub secret: String,
    pub secret_file: String,
    /// PEM file of the CA that signed an `https://` receiver's certificate.
    pub ca_file: String,
    /// Seconds one attempt (connect, send, the answer's head) may take, 1..=60 (default 5).
    pub timeout_seconds: u32,
}

impl WebhookConfig {
    /// The name it goes by: `name`, or `webhook-<n>` for the n-th entry (1-based).
    pub fn name_or(&self, n: usize) -> String {
        if self.name.is_empty() {
            format!("webhook-{n}")
        } else {
            self.name.clone()
        }
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        webhook_url(&self.url).map_err(|e| ("url", e))?;
        let name_ok = self.name.len() <= 64 && self.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
        if !name_ok {
            return Err(("name", format!("{:?} must be up to 64 letters, digits, '-' or '_'", self.name)));
        }
        match (self.secret.is_empty(), self.secret_file.is_empty()) {
            (true, true) => return Err(("secret", "is required (or secret_file): events are signed with it".into())),
            (false, false) => return Err(("secret_file", "give secret or secret_file, not both".into())),
            (false, true) if self.secret.len() < 16 => {
                return Err(("secret", "must be at least 16 bytes (a random string)".into()))
            }
            (true, false) if !Path::new(&self.secret_file).is_absolute() => {
                return Err(("secret_file", format!("{:?} must be an absolute path", self.secret_file)))
            }
            _ => {}
        }
        if !self.ca_file.is_empty() && !self.url.starts_with("https://") {
            return Err(("ca_file", "is only used with an https:// url".into()));
        }
        for s in &self.streams {
            crate::index::db::validate_stream_name(s).map_err(|e| ("streams", e))?;
        }
        let t = if self.timeout_seconds == 0 { 5 } else { self.timeout_seconds };
        if !(1..=60).contains(&t) {
            return Err(("timeout_seconds", format!("{t} is out of range 1..=60")));
        }
        Ok(())
    }
}

/// `[onvif]`: finding ONVIF cameras (WS-Discovery) and talking to them (`onvif`).
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnvifConfig {
    /// Where the Probe goes: WS-Discovery's multicast group, or one address (unicast).
    pub discovery_target: String,
    /// The IPv4 address of the interface to probe from; `0.0.0.0`: the route's.
    pub interface: String,
    /// How long a discovery waits for answers.
    pub discovery_ms: u32,
    /// Deadline of each SOAP call to a camera (connect, each read and write).
    pub timeout_ms: u32,
    /// Long-poll timeout of an event subscription's PullMessages (`onvif::watch`).
    pub pull_seconds: u32,
}

impl Default for OnvifConfig {
    fn default() -> Self {
        OnvifConfig {
            discovery_target: "239.255.255.250:3702".into(),
            interface: "0.0.0.0".into(),
            discovery_ms: 3000,
            timeout_ms: 5000,
            pull_seconds: 10,
        }
    }
}

impl OnvifConfig {
    fn validate(&self) -> Result<(), (String, String)> {
        self.discovery_target.parse::<std::net::SocketAddrV4>().map_err(|_| {
            ("onvif.discovery_target".to_string(), format!("{:?} is not an IPv4 address:port", self.discovery_target))
        })?;
        self.interface
            .parse::<std::net::Ipv4Addr>()
            .map_err(|_| ("onvif.interface".to_string(), format!("{:?} is not an IPv4 address", self.interface)))?;
        range("onvif.discovery_ms", self.discovery_ms, 100, 30_000)?;
        range("onvif.timeout_ms", self.timeout_ms, 100, 60_000)?;
        range("onvif.pull_seconds", self.pull_seconds, 1, 60)?;
        Ok(())
    }
}

/// A webhook's URL: http or https, a host, no credentials (the URL is shown in
/// the API and the log; receivers authenticate the box by the signature).
pub fn webhook_url(u: &str) -> Result<url::Url, String> {
    let parsed = url::Url::parse(u).map_err(|e| format!("{u:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("scheme {:?} is not supported (use http:// or https://)", parsed.scheme()));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not hold credentials (receivers check the signature made with secret)".into());
    }
    Ok(parsed)
}

/// `[go2rtc]`: go2rtc run and watched by OxiNVR (`governor::go2rtc`).
/// An empty `binary` supervises nothing (`web.go2rtc_api` may still name a
/// go2rtc started some other way).
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Go2rtcConfig {
    /// Absolute path of the go2rtc executable; empty: not supervised.
    pub binary: String,
    /// Its HTTP API, bound to 127.0.0.1 (go2rtc trusts local clients).
    pub api_port: u16,
    /// Its RTSP server, bound to 127.0.0.1.
    pub rtsp_port: u16,
    /// Its WebRTC media port (TCP and UDP, all interfaces: the browser's media
    /// comes here directly).
    pub webrtc_port: u16,
    /// RSS above which it is killed and started again; also its reservation
    /// in the memory budget.
    pub max_rss_mb: u32,
}

impl Default for Go2rtcConfig {
    fn default() -> Self {
        Go2rtcConfig { binary: String::new(), api_port: 1984, rtsp_port: 8554, webrtc_port: 8555, max_rss_mb: 40 }
    }
}

/// `[metrics]`: Prometheus metrics (`web::metrics`). `GET /api/metrics` needs a
/// viewer's credential; `listen` adds an address that serves them without one.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// An address (`127.0.0.1:9100`) answering `GET /metrics` with no
    /// credential, for a scraper; empty: none.
    pub listen: String,
}

/// `[replicate]`: every closed segment of a stream that does not opt out
/// (`replicate = false`) is uploaded to an S3-compatible bucket with a JSON
/// sidecar (`replicate`). An empty `endpoint` turns it off. The secret is
/// never shown: `Debug` and `GET /api/settings` mask it.
#[derive(Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicateConfig {
    /// `http://host:port` or `https://host:port` of the S3 API (path-style requests).
    pub endpoint: String,
    pub bucket: String,
    /// The signing region (Garage's default is "garage", AWS's "us-east-1").
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// A TOML file holding `access_key` and `secret_key` (instead of the two keys here).
    pub credentials_file: String,
    /// Put before every object name (`<prefix>/<box>/<stream>/...`); may be empty.
    pub prefix: String,
    /// This box's name in object names; empty: the host name.
    #[serde(rename = "box")]
    pub box_name: String,
    /// Upload rate limit, kbit/s; 0: unlimited.
    pub bandwidth_kbps: u32,
    /// Retention deletes a segment only once it is uploaded (unless the disk is full).
    pub keep_until_replicated: bool,
    /// Segments at least this large (KiB) go up as a multipart upload.
    pub multipart_threshold_kb: u32,
    /// Size of each part but the last, KiB (S3 itself wants at least 5120).
    pub part_size_kb: u32,
    /// PEM file of the CA of an `https://` endpoint; empty: the system's roots.
    pub ca_file: String,
    /// Objects uploaded at once (each a whole segment or snapshot); one
    /// connection cannot keep up with many streams on a far or busy bucket.
    pub parallel_uploads: u32,
}

impl Default for ReplicateConfig {
    fn default() -> Self {
        ReplicateConfig {
            endpoint: String::new(),
            bucket: String::new(),
            region: "garage".into(),
            access_key: String::new(),
            secret_key: String::new(),
            credentials_file: String::new(),
            prefix: String::new(),
            box_name: String::new(),
            bandwidth_kbps: 0,
            keep_until_replicated: false,
            multipart_threshold_kb: 16 << 10,
            part_size_kb: 8 << 10,
            ca_file: String::new(),
            parallel_uploads: 4,
        }
    }
}

impl std::fmt::Debug for ReplicateConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicateConfig")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .field("secret_key", &if self.secret_key.is_empty() { "" } else { "***" })
            .field("credentials_file", &self.credentials_file)
            .field("prefix", &self.prefix)
            .field("box", &self.box_name)
            .field("bandwidth_kbps", &self.bandwidth_kbps)
            .field("keep_until_replicated", &self.keep_until_replicated)
            .field("parallel_uploads", &self.parallel_uploads)
            .finish_non_exhaustive()
    }
}

/// Characters `replicate.prefix` and `replicate.box` may hold: they become
/// object names as they are, with no encoding.
fn object_name_ok(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) && !s.split('/').any(|p| p == "..")
}

impl ReplicateConfig {
    pub fn enabled(&self) -> bool {
        !self.endpoint.is_empty()
    }

    /// (access key, secret key): from this table or from `credentials_file`.
    pub fn credentials(&self) -> Result<(String, String), (String, String)> {
        if self.credentials_file.is_empty() {
            return Ok((self.access_key.clone(), self.secret_key.clone()));
        }
        let key = || "replicate.credentials_file".to_string();
        let text = std::fs::read_to_string(&self.credentials_file)
            .map_err(|e| (key(), format!("{}: {e}", self.credentials_file)))?;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Creds {
            access_key: String,
            secret_key: String,
        }
        // The parser's message may quote the file: it holds the secret, so only the line is told.
        let c: Creds = toml::from_str(&text).map_err(|e| {
            let at = e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            (key(), format!("{}: not a TOML file with access_key and secret_key (line {at:?})", self.credentials_file))
        })?;
        Ok((c.access_key, c.secret_key))
    }

    /// The box's name in object names.
    pub fn box_or_host(&self, host: impl FnOnce() -> String) -> String {
        if self.box_name.is_empty() {
            host()
        } else {
            self.box_name.clone()
        }
    }

    fn validate(&self) -> Result<(), (String, String)> {
        if !self.enabled() {
            return Ok(());
        }
        let err = |k: &str, m: String| Err((format!("replicate.{k}"), m));
        match url::Url::parse(&self.endpoint) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()) => {
                if !matches!(u.path(), "" | "/") || u.query().is_some() || !u.username().is_empty() {
                    return err(
                        "endpoint",
                        format!("{:?}: only scheme, host and port (no path, query or user)", self.endpoint),
                    );
                }
            }
            _ => return err("endpoint", format!("{:?} is not a URL like http://host:3900", self.endpoint)),
        }
        let bucket_ok = (3..=63).contains(&self.bucket.len())
            && self.bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c));
        if !bucket_ok {
            return err("bucket", format!("{:?} must be 3-63 of a-z, 0-9, '-' and '.'", self.bucket));
        }
        if self.region.is_empty() || !self.region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return err("region", format!("{:?} must be letters, digits and '-' (e.g. garage)", self.region));
        }
        let keys_here = !self.access_key.is_empty() || !self.secret_key.is_empty();
        if !self.credentials_file.is_empty() && keys_here {
            return err("credentials_file", "is set together with access_key/secret_key: use one of them".into());
        }
        let (access, secret) = self.credentials()?;
        if access.is_empty() || secret.is_empty() {
            return err("access_key", "access_key and secret_key (or credentials_file) are needed".into());
        }
        if !object_name_ok(&self.prefix) || self.prefix.starts_with('/') {
            return err("prefix", format!("{:?} may hold only A-Z a-z 0-9 - _ . / (not leading, no ..)", self.prefix));
        }
        if !object_name_ok(&self.box_name) || self.box_name.contains('/') || self.box_name.len() > 64 {
            return err("box", format!("{:?} must be at most 64 of A-Z a-z 0-9 - _ .", self.box_name));
        }
        range("replicate.part_size_kb", self.part_size_kb, 16, 5 << 20)?;
        range("replicate.multipart_threshold_kb", self.multipart_threshold_kb, self.part_size_kb, 5 << 20)?;
        range("replicate.parallel_uploads", self.parallel_uploads, 1, 16)?;
        if !self.ca_file.is_empty() && !Path::new(&self.ca_file).is_file() {
            return err("ca_file", format!("{}: no such file", self.ca_file));
        }
        Ok(())
    }
}

/// `[archive]`: what `oxinvr archive` reads. A server (no cameras) lists the
/// bucket boxes replicate into (`[replicate]` of each box), indexes every
/// sidecar under `prefix` into its own database (`index`) and serves their
/// recordings from the bucket. An empty `endpoint` turns it off; `oxinvr run`
/// refuses a file that sets it. The secret is never shown.
#[derive(Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// `http://host:port` or `https://host:port` of the S3 API.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// A TOML file holding `access_key` and `secret_key` (instead of the two keys here).
    pub credentials_file: String,
    /// The boxes' `replicate.prefix`: only objects under `<prefix>/` are indexed.
    pub prefix: String,
    /// PEM file of the CA of an `https://` endpoint; empty: the system's roots.
    pub ca_file: String,
    /// Seconds between two listings of the bucket.
    pub poll_seconds: u32,
    /// Objects asked for per listing page (ListObjectsV2 `max-keys`, at most 1000).
    pub page_keys: u32,
    /// The archive's SQLite index; empty: `archive.db` in `storage.data_dir`.
    pub index: String,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            endpoint: String::new(),
            bucket: String::new(),
            region: "garage".into(),
            access_key: String::new(),
            secret_key: String::new(),
            credentials_file: String::new(),
            prefix: String::new(),
            ca_file: String::new(),
            poll_seconds: 10,
            page_keys: 1000,
            index: String::new(),
        }
    }
}

impl std::fmt::Debug for ArchiveConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveConfig")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .field("secret_key", &if self.secret_key.is_empty() { "" } else { "***" })
            .field("credentials_file", &self.credentials_file)
            .field("prefix", &self.prefix)
            .field("poll_seconds", &self.poll_seconds)
            .field("page_keys", &self.page_keys)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl ArchiveConfig {
    pub fn enabled(&self) -> bool {
        !self.endpoint.is_empty()
    }

    /// The same bucket settings as a `[replicate]` table (one set of checks
    /// and one credentials reader for both).
    pub fn as_replicate(&self) -> ReplicateConfig {
        ReplicateConfig {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            region: self.region.clone(),
            access_key: self.access_key.clone(),
            secret_key: self.secret_key.clone(),
            credentials_file: self.credentials_file.clone(),
            prefix: self.prefix.clone(),
            ca_file: self.ca_file.clone(),
            ..ReplicateConfig::default()
        }
    }

    /// (access key, secret key): from this table or from `credentials_file`.
    pub fn credentials(&self) -> Result<(String, String), (String, String)> {
        self.as_replicate().credentials().map_err(renamed)
    }

    /// The index file.
    pub fn index_path(&self, data_dir: &Path) -> PathBuf {
        if self.index.is_empty() {
            data_dir.join("archive.db")
        } else {
            PathBuf::from(&self.index)
        }
    }

    fn validate(&self) -> Result<(), (String, String)> {
        if !self.enabled() {
            return Ok(());
        }
        self.as_replicate().validate().map_err(renamed)?;
        range("archive.poll_seconds", self.poll_seconds, 1, 3600)?;
        range("archive.page_keys", self.page_keys, 1, 1000)
    }
}

/// A `replicate.*` key of an error about `[archive]` named `archive.*`.
fn renamed((k, m): (String, String)) -> (String, String) {
    (k.replacen("replicate.", "archive.", 1), m)
}

/// Smallest and largest `go2rtc.max_rss_mb`: go2rtc (Go) starts at about
/// 10 MiB, so less would kill it at once.
pub const GO2RTC_RSS_MB_RANGE: (u32, u32) = (16, 4096);

/// Smallest and largest `memory.budget_mb` (0 aside): below 16 MiB not even
/// the process's own fixed reservations fit.
pub const BUDGET_MB_RANGE: (u32, u32) = (16, 1 << 20);

#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub segment_seconds: u32,
    pub sync_seconds: u32,
    pub min_free_percent: u8,
    pub ring_dir: String,
    pub ring_seconds: u32,
    /// `data_dir` must be a mount point (the data disk), else nothing records.
    pub require_mount: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./oxinvr-data"),
            segment_seconds: 300,
            sync_seconds: 10,
            min_free_percent: 10,
            ring_dir: String::new(),
            ring_seconds: 8,
            require_mount: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    pub listen: String,
    pub threads: u8,
    pub max_body_bytes: u32,
    /// Believe X-Forwarded-Proto/-For from a reverse proxy (Secure cookies behind TLS).
    pub trust_proxy: bool,
    /// PBKDF2-HMAC-SHA256 rounds for new password hashes (old hashes keep theirs).
    pub pbkdf2_iterations: u32,
    /// A login session ends this long after it began.
    pub session_seconds: u32,
    /// Failed logins (per user name, and per client address) before a lockout.
    pub login_attempts: u32,
    /// How long a lockout lasts; failures older than this are forgotten.
    pub lockout_seconds: u32,
    /// Live-view clients served at once (each holds a thread and a ring cursor).
    pub max_live_clients: u32,
    /// Long answers (files, exports, anything over 256 KiB) sent at once, each
    /// on its own `send-N` thread; more get 503 with Retry-After.
    pub max_senders: u32,
    /// Connections open at once, in total and from one client address; more
    /// are answered 503 and closed by the accept thread.
    pub max_connections: u32,
    pub max_connections_per_address: u32,
    /// One socket write (or body read) that makes no progress for this long
    /// ends the connection.
    pub io_timeout_seconds: u32,
    /// A request line and headers must arrive within this of their first byte.
    pub head_timeout_seconds: u32,
    /// A keep-alive connection with no request under way is closed after this.
    pub idle_timeout_seconds: u32,
    /// go2rtc's HTTP API on this machine (e.g. `http://127.0.0.1:1984`): the page
    /// then offers WebRTC live view, its signalling relayed through OxiNVR's auth.
    /// Empty: live view is fMP4 over WebSocket from the ring only.
    pub go2rtc_api: String,
    /// Serve HTTPS on `tls_listen` (certificate in `<data_dir>/tls`, self-signed
    /// at first start); plain HTTP then redirects there (308), except health
    /// and the console.
    pub tls: bool,
    pub tls_listen: String,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: "0.0.0.0:8080".into(),
            threads: 4,
            max_body_bytes: 65536,
            trust_proxy: false,
            pbkdf2_iterations: 60_000,
            session_seconds: 7 * 24 * 3600,
            login_attempts: 5,
            lockout_seconds: 300,
            max_live_clients: 8,
            max_senders: 16,
            max_connections: 256,
            max_connections_per_address: 64,
            io_timeout_seconds: 10,
            head_timeout_seconds: 10,
            idle_timeout_seconds: 15,
            go2rtc_api: String::new(),
            tls: false,
            tls_listen: "0.0.0.0:8443".into(),
        }
    }
}

/// The appliance: A/B root file system slots, the boot selector state, OTA
/// verification, network settings file. See docs/APPLIANCE.md.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SystemConfig {
    /// Bundles for another board are refused.
    pub board: String,
    /// Block device (or file) of root file system slot A.
    pub slot_a: PathBuf,
    pub slot_b: PathBuf,
    /// The boot selector state (`BOOT_ORDER`, `BOOT_A_LEFT`, `BOOT_B_LEFT`).
    pub boot_env: PathBuf,
    /// ed25519 public key that signs OTA bundles (64 hex digits or 32 raw bytes).
    pub ota_public_key: PathBuf,
    /// Boots a new slot gets to report healthy before the old one comes back.
    pub boot_limit: u32,
    /// ifupdown-style file the UART shell's `network dhcp|static` rewrites.
    pub network_interfaces: PathBuf,
}

impl Default for SystemConfig {
    fn default() -> Self {
        SystemConfig {
            board: "generic".into(),
            slot_a: PathBuf::from("/dev/vda2"),
            slot_b: PathBuf::from("/dev/vda3"),
            boot_env: PathBuf::from("/boot/boot.env"),
            ota_public_key: PathBuf::from("/etc/oxinvr/ota.pub"),
            boot_limit: 3,
            network_interfaces: PathBuf::from("/etc/network/interfaces"),
        }
    }
}

#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    pub name: String,
    pub url: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub record: RecordMode,
    pub retention_days: Option<u32>,
    pub max_storage_mb: Option<u64>,
    #[serde(default)]
    pub priority: i32,
    pub bitrate_kbps: Option<u32>,
    /// `record = "events"`: seconds kept before an event (the ring is sized for them).
    #[serde(default = "pre_seconds")]
    pub pre_seconds: u32,
    /// `record = "events"`: seconds recorded after the last event ended.
    #[serde(default = "post_seconds")]
    pub post_seconds: u32,
    /// Days recordings overlapping an event are kept (at least `retention_days`).
    #[serde(default = "event_retention_days")]
    pub event_retention_days: u32,
    /// Detectors to run on this stream: `[]` (off), `["motion"]` or `["motion", "objects"]`.
    #[serde(default)]
    pub detect: Vec<String>,
    /// Polygons (normalised `[x, y]` points, 0..=1, y down) where motion is ignored.
    #[serde(default)]
    pub motion_mask: Vec<Vec<[f64; 2]>>,
    /// Weekly schedule, e.g. `["mon-fri 07:00-19:00 continuous", "daily 19:00-07:00 events"]`
    /// in the box's local time: the first covering entry's mode replaces `record`.
    #[serde(default)]
    pub schedule: Vec<String>,
    /// The camera's low-resolution stream (`rtsp://`): a second session with a
    /// small ring of its own, for detection and the live grid (not recorded).
    #[serde(default)]
    pub sub_url: Option<String>,
    /// The camera's JPEG snapshot (`http://`, credentials in the URL): what
    /// detection polls when the stream has no H.264 source (H.265 cameras).
    #[serde(default)]
    pub snapshot_url: Option<String>,
    /// Named areas for object detection (`[[streams.zones]]`): see `index::db::Zone`.
    #[serde(default)]
    pub zones: Vec<Zone>,
    /// `false`: its segments are not uploaded by `[replicate]`.
    #[serde(default = "yes")]
    pub replicate: bool,
}

/// Entries a stream's `schedule` may hold (a week of distinct windows is far fewer).
pub const MAX_SCHEDULE_ENTRIES: usize = 32;

/// Detector names `detect` accepts.
pub const DETECTORS: &[&str] = &["motion", "objects"];

/// The 80 COCO labels the object detector (NanoDet-g, `detect::objects`)
/// knows, in the model's class order: `detect.labels` and `detect.scores` name them.
pub const OBJECT_LABELS: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// `[detect]`: decoding rate and size, the motion detector's tunables
/// (`detect::motion`) and the object detector (`detect::objects`: model,
/// backend, scores, labels). Per stream: `detect` and `motion_mask` in `[[streams]]`.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// Frames decoded per second at most, besides every keyframe.
    pub fps: u32,
    /// Width of the luma picture detection works on (height from the aspect ratio).
    pub width: u32,
    /// A pixel changed when it differs from the background by more than this (1..=254).
    pub pixel_threshold: u32,
    /// Cell edge in pixels of the small picture.
    pub cell: u32,
    /// A cell changed when this percentage of its pixels changed.
    pub cell_percent: u32,
    /// A frame moves when this many cells changed.
    pub min_cells: u32,
    /// Background learning rate: 1/2^shift per decoded frame.
    pub background_shift: u32,
    /// Moving frames in a row before motion starts.
    pub start_frames: u32,
    /// Quiet seconds after the last movement before motion ends.
    pub end_seconds: u32,
    /// The object detector's ONNX model (NanoDet-g, models/README.md); empty: none.
    pub model: String,
    /// `"local"` (run `model` here) or a remote OxiNVR's `http://HOST:PORT/api/detect`.
    pub backend: String,
    /// The remote detector's API key (operator role); or `api_key_file`.
    #[serde(skip_serializing)]
    pub api_key: String,
    /// A file holding the remote detector's API key (first line).
    pub api_key_file: String,
    /// The model's square input in pixels (multiple of 32, 160..=640).
    pub input_size: u32,
    /// Lowest score of a detection (0..=1), unless `scores` names its label.
    pub min_score: f32,
    /// Per-label lowest score, e.g. `person = 0.5`.
    pub scores: std::collections::BTreeMap<String, f32>,
    /// Labels that matter (empty: all 80).
    pub labels: Vec<String>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            fps: 5,
            width: 160,
            pixel_threshold: 25,
            cell: 8,
            cell_percent: 25,
            min_cells: 2,
            background_shift: 3,
            start_frames: 2,
            end_seconds: 5,
            model: String::new(),
            backend: "local".into(),
            api_key: String::new(),
            api_key_file: String::new(),
            input_size: 416,
            min_score: 0.5,
            scores: Default::default(),
            labels: Vec::new(),
        }
    }
}

impl DetectConfig {
    fn validate(&self) -> Result<(), (String, String)> {
        range("detect.fps", self.fps, 1, 30)?;
        range("detect.width", self.width, 32, 640)?;
        range("detect.pixel_threshold", self.pixel_threshold, 1, 254)?;
        range("detect.cell", self.cell, 2, 64)?;
        range("detect.cell_percent", self.cell_percent, 1, 100)?;
        range("detect.min_cells", self.min_cells, 1, 10_000)?;
        range("detect.background_shift", self.background_shift, 0, 8)?;
        range("detect.start_frames", self.start_frames, 1, 100)?;
        range("detect.end_seconds", self.end_seconds, 1, 3600)?;
        self.validate_objects().map_err(|(k, m)| (format!("detect.{k}"), m))
    }

    /// The object detector's settings; the model file only if it is used here.
    fn validate_objects(&self) -> Result<(), (&'static str, String)> {
        range("input_size", self.input_size, 160, 640).map_err(|(_, m)| ("input_size", m))?;
        if self.input_size % 32 != 0 {
            return Err(("input_size", format!("{} is not a multiple of 32", self.input_size)));
        }
        let score_ok = |v: f32| (0.0..=1.0).contains(&v);
        if !score_ok(self.min_score) {
            return Err(("min_score", format!("{} is out of range 0..=1", self.min_score)));
        }
        for (label, v) in &self.scores {
            if !OBJECT_LABELS.contains(&label.as_str()) {
                return Err(("scores", format!("{label:?} is not a COCO label (e.g. \"person\", \"car\")")));
            }
            if !score_ok(*v) {
                return Err(("scores", format!("{label} = {v} is out of range 0..=1")));
            }
        }
        if let Some(l) = self.labels.iter().find(|l| !OBJECT_LABELS.contains(&l.as_str())) {
            return Err(("labels", format!("{l:?} is not a COCO label (e.g. \"person\", \"car\")")));
        }
        if self.backend != "local" {
            remote_detector(&self.backend).map_err(|m| ("backend", m))?;
            if self.api_key.is_empty() && self.api_key_file.is_empty() {
                return Err((
                    "api_key",
                    format!("the remote detector {} needs an API key (api_key or api_key_file)", self.backend),
                ));
            }
        }
        if !self.model.is_empty() {
            check_model_file(std::path::Path::new(&self.model)).map_err(|m| ("model", m))?;
        }
        Ok(())
    }
}

/// A remote detector's URL split: (host:port, path). Plain `http://` on the
/// LAN (the crate's HTTP client has no TLS), a host, and a path.
pub fn remote_detector(u: &str) -> Result<(String, String), String> {
    let bad = |why: &str| {
        format!("{u:?} is neither \"local\" nor a remote detector URL like http://HOST:PORT/api/detect: {why}")
    };
    let parsed = url::Url::parse(u).map_err(|e| bad(&e.to_string()))?;
    match parsed.scheme() {
        "http" => {}
        "https" => return Err(bad("https is not supported (the client speaks plain HTTP; use http:// on the LAN)")),
        other => return Err(bad(&format!("scheme {other:?}"))),
    }
    let host = parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(|| bad("no host"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("credentials go in detect.api_key, not the URL"));
    }
    let port = parsed.port_or_known_default().unwrap_or(80);
    let path = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_string(),
    };
    Ok((format!("{host}:{port}"), path))
}

/// Checks that `path` is a readable ONNX file (a protobuf whose first field is
/// `ir_version`), naming the path when it is not.
pub fn check_model_file(path: &std::path::Path) -> Result<(), String> {
    use std::io::Read;
    let shown = path.display();
    let mut head = [0u8; 2];
    let mut f = std::fs::File::open(path).map_err(|e| format!("cannot open the model {shown}: {e}"))?;
    let n = f.read(&mut head).map_err(|e| format!("cannot read the model {shown}: {e}"))?;
    // ONNX ModelProto: field 1 (ir_version, varint) comes first: tag byte 0x08.
    if n < 2 || head[0] != 0x08 {
        return Err(format!("{shown} is not an ONNX model (see models/README.md)"));
    }
    Ok(())
}

/// Most polygons in a motion mask, and most zones of a stream.
pub const MAX_POLYGONS: usize = 32;

/// Checks a stream's `detect` list and `motion_mask` polygons.
fn validate_detect(detect: &[String], mask: &[Vec<[f64; 2]>]) -> Result<(), (&'static str, String)> {
    for d in detect {
        if !DETECTORS.contains(&d.as_str()) {
            return Err(("detect", format!("{d:?} is not a detector (known: {DETECTORS:?})")));
        }
    }
    if mask.len() > MAX_POLYGONS {
        return Err(("motion_mask", format!("{} polygons; at most {MAX_POLYGONS}", mask.len())));
    }
    for (i, poly) in mask.iter().enumerate() {
        validate_polygon(poly).map_err(|m| ("motion_mask", format!("polygon {i}: {m}")))?;
    }
    Ok(())
}

/// 3 to 64 points, each in 0..=1 (normalised x, y).
fn validate_polygon(poly: &[[f64; 2]]) -> Result<(), String> {
    if !(3..=64).contains(&poly.len()) {
        return Err(format!("{} points; a polygon needs 3 to 64", poly.len()));
    }
    match poly.iter().enumerate().find(|(_, p)| !p.iter().all(|v| (0.0..=1.0).contains(v))) {
        Some((i, p)) => Err(format!("point {i} {p:?} is outside 0..=1 (normalised x, y)")),
        None => Ok(()),
    }
}

/// Checks a stream's zones: names, polygons, known labels, scores. Zones may
/// share a name: together they are one zone of several polygons (the API's
/// document cannot say "unique by name", so nothing it allows is refused).
fn validate_zones(zones: &[Zone]) -> Result<(), (&'static str, String)> {
    let bad = |m: String| ("zones", m);
    if zones.len() > MAX_POLYGONS {
        return Err(bad(format!("{} zones; at most {MAX_POLYGONS}", zones.len())));
    }
    for (i, z) in zones.iter().enumerate() {
        let chars = z.name.chars().count();
        if chars == 0 || chars > 64 || z.name.chars().any(char::is_control) {
            return Err(bad(format!("zone {i}: name {:?} must be 1 to 64 characters, no control characters", z.name)));
        }
        validate_polygon(&z.polygon).map_err(|m| bad(format!("zone {:?}: polygon: {m}", z.name)))?;
        if let Some(l) = z.labels.iter().find(|l| !OBJECT_LABELS.contains(&l.as_str())) {
            return Err(bad(format!("zone {:?}: label {l:?} is not one the object detector knows", z.name)));
        }
        if let Some(s) = z.min_score.filter(|s| !(0.0..=1.0).contains(s)) {
            return Err(bad(format!("zone {:?}: min_score {s} is outside 0..=1", z.name)));
        }
    }
    Ok(())
}

fn yes() -> bool {
    true
}
fn pre_seconds() -> u32 {
    crate::index::db::DEFAULT_PRE_SECONDS
}
fn post_seconds() -> u32 {
    crate::index::db::DEFAULT_POST_SECONDS
}
fn event_retention_days() -> u32 {
    crate::index::db::DEFAULT_EVENT_RETENTION_DAYS
}

/// Most seconds of pre-buffer a stream may ask for (its ring holds them in RAM).
pub const MAX_PRE_SECONDS: u32 = 30;
/// Most seconds recorded after the last event.
pub const MAX_POST_SECONDS: u32 = 600;

impl StreamConfig {
    /// Checks one stream's values (shared by the config file and the API).
    /// Returns the field at fault and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        validate_stream_name(&self.name).map_err(|m| ("name", m))?;
        validate_stream_url(&self.url).map_err(|m| ("url", m))?;
        if let Some(sub) = &self.sub_url {
            validate_stream_url(sub).map_err(|m| ("sub_url", m))?;
            if *sub == self.url {
                return Err((
                    "sub_url",
                    "is the main stream's url; give the camera's second (low-resolution) stream or leave it out".into(),
                ));
            }
        }
        if let Some(snap) = &self.snapshot_url {
            validate_snapshot_url(snap).map_err(|m| ("snapshot_url", m))?;
        }
        if let Some(b) = self.bitrate_kbps.filter(|b| !(64..=100_000).contains(b)) {
            return Err(("bitrate_kbps", format!("{b} is out of range 64..=100000")));
        }
        if self.retention_days.is_some_and(|d| !(1..=MAX_RETENTION_DAYS).contains(&d)) {
            return Err((
                "retention_days",
                format!("must be 1..={MAX_RETENTION_DAYS} (leave it out to keep until space runs out)"),
            ));
        }
        if self.max_storage_mb.is_some_and(|mb| !(1..=MAX_STORAGE_MB).contains(&mb)) {
            return Err(("max_storage_mb", format!("must be 1..={MAX_STORAGE_MB} (leave it out for no quota)")));
        }
        if self.pre_seconds > MAX_PRE_SECONDS {
            let why = "the ring holds them in RAM";
            return Err(("pre_seconds", format!("{} is out of range 0..={MAX_PRE_SECONDS} ({why})", self.pre_seconds)));
        }
        if self.post_seconds > MAX_POST_SECONDS {
            return Err(("post_seconds", format!("{} is out of range 0..={MAX_POST_SECONDS}", self.post_seconds)));
        }
        if !(1..=MAX_RETENTION_DAYS).contains(&self.event_retention_days) {
            let d = self.event_retention_days;
            return Err(("event_retention_days", format!("{d} is out of range 1..={MAX_RETENTION_DAYS}")));
        }
        if self.schedule.len() > MAX_SCHEDULE_ENTRIES {
            return Err(("schedule", format!("{} entries, at most {MAX_SCHEDULE_ENTRIES}", self.schedule.len())));
        }
        crate::index::schedule::parse(&self.schedule).map_err(|e| ("schedule", e))?;
        validate_detect(&self.detect, &self.motion_mask)?;
        validate_zones(&self.zones)
    }

    /// The spec the file gives a stream at start-up over what is `stored`:
    /// the file's fields win, except detection settings the file leaves
    /// empty (`detect`, `motion_mask`, `zones`), which keep what the API (the
    /// page's zone editor) stored. An empty list in the file cannot clear
    /// them: the API can.
    pub fn to_spec_over(&self, stored: Option<&StreamSpec>) -> StreamSpec {
        let mut spec = self.to_spec("config");
        if let Some(old) = stored {
            if spec.detect.is_empty() {
                spec.detect = old.detect.clone();
            }
            if spec.motion_mask.is_empty() {
                spec.motion_mask = old.motion_mask.clone();
            }
            if spec.zones.is_empty() {
                spec.zones = old.zones.clone();
            }
        }
        spec
    }

    pub fn to_spec(&self, source: &str) -> StreamSpec {
        StreamSpec {
            name: self.name.clone(),
            url: self.url.clone(),
            enabled: self.enabled,
            record: self.record,
            retention_days: self.retention_days,
            max_storage_mb: self.max_storage_mb,
            priority: self.priority,
            bitrate_kbps: self.bitrate_kbps,
            pre_seconds: self.pre_seconds,
            post_seconds: self.post_seconds,
            event_retention_days: self.event_retention_days,
            schedule: self.schedule.clone(),
            sub_url: self.sub_url.clone(),
            snapshot_url: self.snapshot_url.clone(),
            detect: self.detect.clone(),
            motion_mask: self.motion_mask.clone(),
            zones: self.zones.clone(),
            replicate: self.replicate,
            source: source.into(),
        }
    }
}

/// A configuration error that names the key and, when known, its line.
#[derive(Debug)]
pub struct ConfigError {
    pub file: String,
    pub key: Option<String>,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A configuration that cannot be used is the user's to fix: `InvalidInput`
/// (a file that cannot be read included; the message says which and why).
impl From<ConfigError> for crate::base::error::Error {
    fn from(e: ConfigError) -> Self {
        crate::base::error::Error::wrap(crate::base::error::Kind::InvalidInput, e)
    }
}

impl Config {
    /// Reads `path`, or the embedded defaults when `path` is None.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            None => Config::parse(DEFAULT_TOML, "<embedded defaults>"),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                    file: p.display().to_string(),
                    key: None,
                    line: None,
                    message: format!("cannot read: {e}"),
                })?;
                Config::parse(&text, &p.display().to_string())
            }
        }
    }

    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            // serde's type errors do not name the key: quote the line they are on.
            let quoted = line.and_then(|l| text.lines().nth(l - 1)).map(str::trim).filter(|l| !l.is_empty());
            let message = match quoted {
                Some(q) => format!("{} (in `{q}`)", e.message()),
                None => e.message().to_string(),
            };
            ConfigError { file: file.into(), key: None, line, message }
        })?;
        cfg.validate().map_err(|(key, message)| ConfigError {
            file: file.into(),
            line: line_of(text, &key),
            key: Some(key),
            message,
        })?;
        if !cfg.go2rtc.binary.is_empty() && cfg.web.go2rtc_api.is_empty() {
            // The page's WebRTC relay talks to the go2rtc we supervise.
            cfg.web.go2rtc_api = format!("http://127.0.0.1:{}", cfg.go2rtc.api_port);
        }
        cfg.source = file.to_string();
        Ok(cfg)
    }

    /// Checks values serde cannot: ranges, names, URLs. Returns (key, why).
    fn validate(&self) -> Result<(), (String, String)> {
        let s = &self.storage;
        range("storage.segment_seconds", s.segment_seconds, 2, 3600)?;
        range("storage.sync_seconds", s.sync_seconds, 1, 600)?;
        range("storage.min_free_percent", u32::from(s.min_free_percent), 0, 90)?;
        range("storage.ring_seconds", s.ring_seconds, 2, 120)?;
        range("events.retention_days", self.events.retention_days, 1, 3650)?;
        if s.data_dir.as_os_str().is_empty() {
            return Err(("storage.data_dir".into(), "must not be empty".into()));
        }
        self.web.listen.parse::<SocketAddr>().map_err(|_| {
            ("web.listen".into(), format!("{:?} is not an address like 127.0.0.1:8080", self.web.listen))
        })?;
        if self.web.tls {
            let tls = self.web.tls_listen.parse::<SocketAddr>().map_err(|_| {
                ("web.tls_listen".to_string(), format!("{:?} is not an address like 0.0.0.0:8443", self.web.tls_listen))
            })?;
            let http = self.web.listen.parse::<SocketAddr>().ok();
            if http.is_some_and(|h| h.port() == tls.port() && h.port() != 0) {
                return Err((
                    "web.tls_listen".into(),
                    format!("port {} is web.listen's; HTTPS needs its own", tls.port()),
                ));
            }
        }
        range("web.threads", u32::from(self.web.threads), 1, 32)?;
        range("web.max_body_bytes", self.web.max_body_bytes, 1024, 64 << 20)?;
        range("web.pbkdf2_iterations", self.web.pbkdf2_iterations, 1000, 10_000_000)?;
        range("web.session_seconds", self.web.session_seconds, 1, 366 * 24 * 3600)?;
        range("web.login_attempts", self.web.login_attempts, 1, 1000)?;
        range("web.lockout_seconds", self.web.lockout_seconds, 1, 7 * 24 * 3600)?;
        range("web.max_live_clients", self.web.max_live_clients, 1, 256)?;
        self.memory.validate()?;
        range("watchdog.timeout_s", self.watchdog.timeout_s, 2, 3600)?;
        range("watchdog.stuck_s", self.watchdog.stuck_s, 2, 3600)?;
        range("web.max_senders", self.web.max_senders, 1, 256)?;
        range("web.max_connections", self.web.max_connections, 8, 4096)?;
        range("web.max_connections_per_address", self.web.max_connections_per_address, 1, self.web.max_connections)?;
        range("web.io_timeout_seconds", self.web.io_timeout_seconds, 1, 600)?;
        range("web.head_timeout_seconds", self.web.head_timeout_seconds, 1, 600)?;
        range("web.idle_timeout_seconds", self.web.idle_timeout_seconds, 1, 3600)?;
        if !self.web.go2rtc_api.is_empty() {
            go2rtc_addr(&self.web.go2rtc_api).map_err(|e| ("web.go2rtc_api".to_string(), e))?;
        }
        self.validate_go2rtc()?;
        self.validate_metrics()?;
        self.validate_mqtt()?;
        self.validate_webhooks()?;
        self.detect.validate()?;
        self.onvif.validate()?;
        self.replicate.validate()?;
        self.archive.validate()?;
        let sys = &self.system;
        let board_ok = !sys.board.is_empty()
            && sys.board.len() <= 64
            && sys.board.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !board_ok {
            return Err((
                "system.board".into(),
                format!("{:?} must be 1-64 letters, digits, '-', '_' or '.'", sys.board),
            ));
        }
        range("system.boot_limit", sys.boot_limit, 1, 100)?;
        for (key, p) in [
            ("system.slot_a", &sys.slot_a),
            ("system.slot_b", &sys.slot_b),
            ("system.boot_env", &sys.boot_env),
            ("system.ota_public_key", &sys.ota_public_key),
            ("system.network_interfaces", &sys.network_interfaces),
        ] {
            if p.as_os_str().is_empty() {
                return Err((key.into(), "must not be empty".into()));
            }
        }
        if sys.slot_a == sys.slot_b {
            return Err(("system.slot_b".into(), "must differ from system.slot_a".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, st) in self.streams.iter().enumerate() {
            let key = |k: &str| format!("streams[{i}].{k}");
            st.validate().map_err(|(field, m)| (key(field), m))?;
            if !seen.insert(st.name.as_str()) {
                return Err((key("name"), format!("{:?} is used by two streams", st.name)));
            }
            let objects = st.detect.iter().any(|d| d == "objects");
            if objects && self.detect.backend == "local" && self.detect.model.is_empty() {
                return Err((
                    key("detect"),
                    "\"objects\" needs detect.model (an ONNX file) or a remote detect.backend".into(),
                ));
            }
        }
        Ok(())
    }

    /// `metrics.listen`: empty, or an address whose port is not the web server's.
    fn validate_metrics(&self) -> Result<(), (String, String)> {
        let listen = &self.metrics.listen;
        if listen.is_empty() {
            return Ok(());
        }
        let addr = listen.parse::<SocketAddr>().map_err(|_| {
            ("metrics.listen".to_string(), format!("{listen:?} is not an address like 127.0.0.1:9100 (or empty)"))
        })?;
        let web = [&self.web.listen, &self.web.tls_listen].into_iter().filter_map(|l| l.parse::<SocketAddr>().ok());
        if addr.port() != 0 && web.map(|a| a.port()).any(|p| p == addr.port()) {
            return Err(("metrics.listen".into(), format!("port {} is the web server's", addr.port())));
        }
        Ok(())
    }

    /// `[go2rtc]`: an absolute binary, three distinct ports that are not the
    /// web server's, and a `web.go2rtc_api` (if set) that is the API port.
    fn validate_go2rtc(&self) -> Result<(), (String, String)> {
        let g = &self.go2rtc;
        if g.binary.is_empty() {
            return Ok(());
        }
        if !Path::new(&g.binary).is_absolute() {
            return Err(("go2rtc.binary".into(), format!("{:?} must be an absolute path (or empty)", g.binary)));
        }
        let (lo, hi) = GO2RTC_RSS_MB_RANGE;
        range("go2rtc.max_rss_mb", g.max_rss_mb, lo, hi)?;
        let web = [&self.web.listen, &self.web.tls_listen]
            .iter()
            .filter_map(|l| l.parse::<SocketAddr>().ok())
            .map(|a| a.port())
            .collect::<Vec<_>>();
        let ports =
            [("go2rtc.api_port", g.api_port), ("go2rtc.rtsp_port", g.rtsp_port), ("go2rtc.webrtc_port", g.webrtc_port)];
        for (i, (key, port)) in ports.iter().enumerate() {
            if *port == 0 {
                return Err((key.to_string(), "must be a port from 1 to 65535".into()));
            }
            if let Some((other, _)) = ports[..i].iter().find(|(_, p)| p == port) {
                return Err((key.to_string(), format!("{port} is also {other}; each needs its own port")));
            }
            if web.contains(port) {
                return Err((key.to_string(), format!("{port} is the web server's port")));
            }
        }
        if !self.web.go2rtc_api.is_empty() {
            let addr = go2rtc_addr(&self.web.go2rtc_api).map_err(|e| ("web.go2rtc_api".to_string(), e))?;
            if addr.port() != g.api_port {
                return Err((
                    "web.go2rtc_api".into(),
                    format!(
                        "names port {} but the supervised go2rtc's API is on go2rtc.api_port {}; leave it empty",
                        addr.port(),
                        g.api_port
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `[mqtt]`: a broker URL we can dial, topic parts without wildcards.
    fn validate_mqtt(&self) -> Result<(), (String, String)> {
        let m = &self.mqtt;
        if m.url.is_empty() {
            return Ok(());
        }
        mqtt_broker(&m.url).map_err(|e| ("mqtt.url".to_string(), e))?;
        if !m.ca_file.is_empty() && !m.url.starts_with("mqtts://") {
            return Err(("mqtt.ca_file".into(), "is only used with an mqtts:// url".into()));
        }
        if m.user.is_empty() && !m.password.is_empty() {
            return Err(("mqtt.user".into(), "is empty but mqtt.password is set".into()));
        }
        let name_ok = m.name.len() <= 64 && m.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
        if !name_ok {
            return Err(("mqtt.name".into(), format!("{:?} must be up to 64 letters, digits, '-' or '_'", m.name)));
        }
        if m.client_id.len() > 64 {
            return Err(("mqtt.client_id".into(), "must be at most 64 characters".into()));
        }
        for (key, topic) in [("mqtt.topic_prefix", &m.topic_prefix), ("mqtt.discovery_prefix", &m.discovery_prefix)] {
            let bad = topic.starts_with('/') || topic.ends_with('/') || topic.contains(['+', '#', '\0']);
            if bad || topic.len() > 128 {
                return Err((
                    key.into(),
                    format!("{topic:?} must be a topic without wildcards (+ #) or a leading or trailing /"),
                ));
            }
        }
        Ok(())
    }

    /// `[[webhooks]]`: each entry's fields, at most `MAX_WEBHOOKS`, names unique.
    fn validate_webhooks(&self) -> Result<(), (String, String)> {
        if self.webhooks.len() > MAX_WEBHOOKS {
            return Err(("webhooks".into(), format!("{} entries; at most {MAX_WEBHOOKS}", self.webhooks.len())));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, w) in self.webhooks.iter().enumerate() {
            let key = |k: &str| format!("webhooks[{i}].{k}");
            w.validate().map_err(|(field, m)| (key(field), m))?;
            if !seen.insert(w.name_or(i + 1)) {
                return Err((key("name"), format!("{:?} is used by two webhooks", w.name_or(i + 1))));
            }
        }
        Ok(())
    }

    /// Where the SQLite index lives.
    /// The database: the box's index, or the archive's (`[archive] index`)
    /// when `[archive]` is set.
    pub fn db_path(&self) -> PathBuf {
        if self.archive.enabled() {
            return self.archive.index_path(&self.storage.data_dir);
        }
        self.storage.data_dir.join("oxinvr.db")
    }
}

fn range(key: &str, v: u32, lo: u32, hi: u32) -> Result<(), (String, String)> {
    if v < lo || v > hi {
        return Err((key.into(), format!("{v} is out of range {lo}..={hi}")));
    }
    Ok(())
}

pub use crate::index::db::validate_stream_name;

/// `mqtt.url` split: (TLS, host, port). `mqtt://host[:1883]` or `mqtts://host[:8883]`,
/// nothing after the port (no path, no credentials: they go in `mqtt.user`/`mqtt.password`).
pub fn mqtt_broker(u: &str) -> Result<(bool, String, u16), String> {
    let parsed = url::Url::parse(u).map_err(|e| format!("{u:?} is not a URL: {e}"))?;
    let tls = match parsed.scheme() {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        other => return Err(format!("scheme {other:?} is not supported (use mqtt:// or mqtts://)")),
    };
    let host = parsed.host_str().filter(|h| !h.is_empty()).ok_or("the URL has no host")?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("put the credentials in mqtt.user and mqtt.password, not in the URL".into());
    }
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
        return Err(format!("{u:?} has a path or query; give only mqtt://host:port"));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    Ok((tls, host, parsed.port().unwrap_or(if tls { 8883 } else { 1883 })))
}

pub fn validate_stream_url(u: &str) -> Result<(), String> {
    // The value is not quoted: it may hold a password.
    url_shape(u, &["rtsp://", "rtsps://"]).map_err(|e| format!("not a camera URL: {e}"))?;
    let parsed = url::Url::parse(u).map_err(|e| format!("{u:?} is not a URL: {e}"))?;
    match parsed.scheme() {
        "rtsp" | "rtsps" => {}
        other => return Err(format!("scheme {other:?} is not supported (use rtsp://)")),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(())
}

/// A camera's JPEG snapshot URL: `http://[user:password@]host[:port]/path`
/// (the shape of a camera URL; no TLS: the box has no client certificate
/// store for cameras, and they are on the LAN).
pub fn validate_snapshot_url(u: &str) -> Result<(), String> {
    // The value is not quoted: it may hold a password.
    if u.starts_with("https://") {
        return Err("https is not supported for snapshots; use the camera's http:// snapshot URL".into());
    }
    url_shape(u, &["http://"]).map_err(|e| format!("not a snapshot URL: {e}"))?;
    let parsed = url::Url::parse(u).map_err(|e| format!("not a URL: {e}"))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(())
}

/// Upper bounds of a stream's settings (100 years; 1 PB), as the API document states them.
pub const MAX_RETENTION_DAYS: u32 = 36_500;
pub const MAX_STORAGE_MB: u64 = 1_000_000_000;

/// The shape of a camera URL, as the API document's pattern states it (so a
/// URL the document allows is one the recorder takes, and the other way
/// round): `SCHEME://[userinfo@]host[:port][/?#rest]` (`rtsp[s]` for cameras,
/// `http` for snapshots) with a userinfo of
/// RFC 3986 characters (and `@`: the last one ends it), a host of letters,
/// digits and `._~-` or an IPv6 literal in `[ ]`, a port 1..=65535 without leading zeros, and a rest of
/// printable ASCII (percent-encode anything else).
fn url_shape(u: &str, schemes: &[&str]) -> Result<(), String> {
    let rest = schemes
        .iter()
        .find_map(|s| u.strip_prefix(s))
        .ok_or_else(|| format!("it must start with {}", schemes.join(" or ")))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if !tail.chars().all(|c| c.is_ascii_graphic()) {
        return Err("after the host only printable ASCII without spaces may follow (percent-encode the rest)".into());
    }
    let (userinfo, hostport) = authority.rsplit_once('@').unwrap_or(("", authority));
    let userinfo_ok = |c: char| c.is_ascii_alphanumeric() || "._~!$&'()*+,;=:%@-".contains(c);
    if !userinfo.chars().all(userinfo_ok) {
        return Err("the user name or password has a character that must be percent-encoded".into());
    }
    let port = match hostport.strip_prefix('[') {
        // An IPv6 literal: [hex digits, ':' and '.'] (a link-local zone is not taken).
        Some(v6) => {
            let (addr, after) = v6.split_once(']').ok_or("an IPv6 address in [ ] has no closing ]")?;
            // Exactly what the API document's pattern takes: an IPv6 address in
            // hex groups (no embedded IPv4, no zone).
            if addr.contains('.') || addr.parse::<std::net::Ipv6Addr>().is_err() {
                return Err("the host in [ ] is not an IPv6 address in hex groups".into());
            }
            match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err("only :port may follow an IPv6 address in [ ]".into()),
            }
        }
        None => {
            let (h, p) = hostport.split_once(':').map_or((hostport, None), |(h, p)| (h, Some(p)));
            if h.is_empty() || !h.chars().all(|c| c.is_ascii_alphanumeric() || "._~-".contains(c)) {
                return Err("the host must be a name, an IPv4 address or an IPv6 one in [ ] \
                            (letters, digits, '.', '_', '~', '-')"
                    .into());
            }
            p
        }
    };
    if let Some(p) = port {
        let ok = !p.starts_with('0') && p.len() <= 5 && p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n));
        if !ok || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err("the port must be a number from 1 to 65535".into());
        }
    }
    Ok(())
}

/// The loopback address of go2rtc's API from `web.go2rtc_api`. Only loopback:
/// go2rtc trusts local clients without a password, so it must not listen wider,
/// and OxiNVR relays to it only after its own authentication.
pub fn go2rtc_addr(api: &str) -> Result<std::net::SocketAddr, String> {
    let bad = || format!("{api:?} is not a loopback http URL like http://127.0.0.1:1984");
    let url = url::Url::parse(api).map_err(|_| bad())?;
    if url.scheme() != "http" || url.path() != "/" || url.query().is_some() {
        return Err(bad());
    }
    let host = match url.host() {
        Some(url::Host::Ipv4(a)) if a.is_loopback() => std::net::IpAddr::V4(a),
        Some(url::Host::Ipv6(a)) if a.is_loopback() => std::net::IpAddr::V6(a),
        Some(url::Host::Domain("localhost")) => std::net::IpAddr::from([127, 0, 0, 1]),
        _ => return Err(bad()),
    };
    Ok(std::net::SocketAddr::new(host, url.port().unwrap_or(1984)))
}

/// Best-effort line of the last path element of `key` in `text`.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let leaf = key.rsplit('.').next()?;
    let mut index = key.split('[').nth(1).and_then(|r| r.split(']').next()).and_then(|n| n.parse::<usize>().ok());
    let mut in_streams = index.is_none();
    // `streams[2].url` is in the third `[[streams]]` table (`webhooks[0].secret` likewise).
    let table = format!("[[{}]]", key.split('[').next()?);
    for (n, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with(&table) {
            match index.as_mut() {
                Some(0) => in_streams = true,
                Some(i) => *i -= 1,
                None => {}
            }
        }
        if in_streams && t.starts_with(leaf) && t[leaf.len()..].trim_start().starts_with('=') {
            return Some(n + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_urls_of_every_host_form_are_taken_and_junk_is_named() {
        for ok in [
            "rtsp://cam.local/stream1",
            "rtsp://user:p%40ss+word@192.168.1.20:554/h264?channel=1",
            "rtsps://[fd00::20]:322/live",
            "rtsp://[2001:db8::1]/",
        ] {
            assert_eq!(validate_stream_url(ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("http://cam/", "rtsp://"),
            ("rtsp://[fd00::20/x", "closing ]"),
            ("rtsp://[fd00::20]x/", "only :port"),
            ("rtsp://[5.71]/", "IPv6"),
            ("rtsp://[1::2::3]/", "IPv6"),
            ("rtsp://cam:0/", "port"),
            ("rtsp://cam:99999/", "port"),
            ("rtsp://ca m/", "host"),
            ("rtsp://cam/a b", "printable"),
        ] {
            let e = validate_stream_url(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn embedded_defaults_parse() {
        let c = Config::load(None).expect("defaults");
        assert_eq!(c.storage.segment_seconds, 300);
        assert_eq!(c.storage.sync_seconds, 10);
        assert_eq!(c.web.listen, "0.0.0.0:8080");
        assert!(c.streams.is_empty());
        assert_eq!(c.system.board, "generic");
        assert_eq!(c.system.slot_a, PathBuf::from("/dev/vda2"));
        assert_eq!(c.system.slot_b, PathBuf::from("/dev/vda3"));
        assert_eq!(c.system.boot_env, PathBuf::from("/boot/boot.env"));
        assert_eq!(c.system.ota_public_key, PathBuf::from("/etc/oxinvr/ota.pub"));
        assert_eq!(c.system.boot_limit, 3);
        // Every default is also spelled out in the embedded file.
        let d = SystemConfig::default();
        assert_eq!(c.system.network_interfaces, d.network_interfaces);
        assert_eq!(Config::parse("", "x").expect("empty").system.boot_limit, d.boot_limit);
    }

    #[test]
    fn memory_section_is_checked() {
        let c = Config::parse("", "x").expect("empty");
        assert_eq!((c.memory.climb_seconds, c.memory.calm_seconds, c.memory.oom_score_adj), (5, 60, -500));
        let (p, explicit) = c.memory.swap_path(Path::new("/data"));
        assert_eq!((p, explicit), (PathBuf::from("/data/oxinvr.swap"), false));
        for (toml, key) in [
            ("[memory]\npressure_some_percent = 0", "memory.pressure_some_percent"),
            ("[memory]\npressure_full_percent = 101", "memory.pressure_full_percent"),
            ("[memory]\navailable_percent = 70", "memory.available_percent"),
            ("[memory]\nclimb_seconds = 0", "memory.climb_seconds"),
            ("[memory]\ncalm_seconds = 4000", "memory.calm_seconds"),
            ("[memory]\nswap_file_mb = 70000", "memory.swap_file_mb"),
            ("[memory]\noom_score_adj = -1001", "memory.oom_score_adj"),
            ("[memory]\nswap_file = \"rel.swap\"", "memory.swap_file"),
        ] {
            let e = Config::parse(toml, "x").expect_err(toml).to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
        let ok = Config::parse("[memory]\nswap_file_mb = 64\nswap_file = \"/mnt/sd/s\"\nclimb_seconds = 2", "x");
        assert_eq!(ok.expect("valid").memory.swap_path(Path::new("/d")), (PathBuf::from("/mnt/sd/s"), true));
    }

    #[test]
    fn archive_section_is_checked_like_replicate() {
        let base = "[archive]\nendpoint = \"http://127.0.0.1:3900\"\nbucket = \"nvr\"\naccess_key = \"GK1\"\n";
        let ok = Config::parse(&format!("{base}secret_key = \"s3cr3t\"\npage_keys = 2"), "x").expect("valid");
        assert!(ok.archive.enabled() && ok.archive.page_keys == 2);
        assert!(ok.db_path().ends_with("archive.db"), "{:?}", ok.db_path());
        assert!(!format!("{:?}", ok.archive).contains("s3cr3t"));
        for (extra, key) in [
            ("", "archive.access_key"),
            ("secret_key = \"s\"\npage_keys = 0", "archive.page_keys"),
            ("secret_key = \"s\"\nprefix = \"../x\"", "archive.prefix"),
        ] {
            let e = Config::parse(&format!("{base}{extra}"), "x").expect_err(key).to_string();
            assert!(e.contains(key), "{extra:?}: {e}");
        }
        assert!(Config::parse("", "x").expect("empty").db_path().ends_with("oxinvr.db"));
    }

    #[test]
    fn replicate_section_is_checked_and_its_secret_never_printed() {
        let base = "[replicate]\nendpoint = \"http://127.0.0.1:3900\"\nbucket = \"nvr\"\naccess_key = \"GK1\"\n";
        let ok = Config::parse(&format!("{base}secret_key = \"s3cr3t\"\nprefix = \"site/a\""), "x").expect("valid");
        assert!(ok.replicate.enabled() && ok.replicate.region == "garage");
        assert!(!format!("{:?}", ok.replicate).contains("s3cr3t"));
        assert!(!Config::parse("", "x").expect("empty").replicate.enabled());
        for (extra, key) in [
            ("", "replicate.access_key"),
            ("secret_key = \"s\"\nprefix = \"../x\"", "replicate.prefix"),
            ("secret_key = \"s\"\nbox = \"a/b\"", "replicate.box"),
            ("secret_key = \"s\"\ncredentials_file = \"/nonexistent\"", "replicate.credentials_file"),
            ("secret_key = \"s\"\npart_size_kb = 8", "replicate.part_size_kb"),
            ("secret_key = \"s\"\nparallel_uploads = 0", "replicate.parallel_uploads"),
            ("secret_key = \"s\"\nregion = \"\"", "replicate.region"),
        ] {
            let e = Config::parse(&format!("{base}{extra}"), "x").expect_err(extra).to_string();
            assert!(e.contains(key), "{extra}: {e}");
        }
        let bad_url = "[replicate]\nendpoint = \"ftp://h\"\nbucket = \"nvr\"\naccess_key = \"a\"\nsecret_key = \"s\"";
        assert!(Config::parse(bad_url, "x").unwrap_err().to_string().contains("replicate.endpoint"));
        let bad_bucket = base.replace("\"nvr\"", "\"N V\"") + "secret_key = \"s\"";
        assert!(Config::parse(&bad_bucket, "x").unwrap_err().to_string().contains("replicate.bucket"));
        let dir = tempfile::tempdir().expect("tmp");
        let creds = dir.path().join("s3.toml");
        std::fs::write(&creds, "access_key = \"GK2\"\nsecret_key = \"from-file\"\n").expect("write");
        let text = format!(
            "[replicate]\nendpoint = \"https://s3.example:443\"\nbucket = \"nvr\"\ncredentials_file = \"{}\"",
            creds.display()
        );
        let c = Config::parse(&text, "x").expect("credentials file");
        assert_eq!(c.replicate.credentials().expect("read"), ("GK2".into(), "from-file".into()));
    }

    #[test]
    fn system_section_is_checked() {
        let e = Config::parse("[system]\nbord = \"a1\"\n", "x.toml").unwrap_err();
        assert!(e.to_string().contains("bord"), "{e}");
        let e = Config::parse("[system]\nboot_limit = 0\n", "x.toml").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("system.boot_limit"), "{e}");
        let e = Config::parse("[system]\nboard = \"a 1\"\n", "x.toml").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("system.board"), "{e}");
        let e = Config::parse("[system]\nslot_b = \"/dev/vda2\"\n", "x.toml").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("system.slot_b"), "{e}");
        let c = Config::parse("[system]\nboard = \"a1\"\nslot_a = \"/dev/mmcblk0p2\"\n", "x").expect("ok");
        assert_eq!(c.system.board, "a1");
        assert_eq!(c.system.slot_b, PathBuf::from("/dev/vda3"));
    }

    #[test]
    fn the_metrics_listener_is_off_by_default_and_checked() {
        assert_eq!(Config::parse("", "x").expect("defaults").metrics.listen, "");
        let c = Config::parse("[metrics]\nlisten = \"127.0.0.1:9100\"\n", "x").expect("ok");
        assert_eq!(c.metrics.listen, "127.0.0.1:9100");
        let e = Config::parse("[metrics]\nlisten = \"9100\"\n", "x.toml").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("metrics.listen"), "{e}");
        let e = Config::parse("[web]\nlisten = \"0.0.0.0:9100\"\n[metrics]\nlisten = \"127.0.0.1:9100\"\n", "x")
            .unwrap_err();
        assert!(e.to_string().contains("web server"), "{e}");
    }

    #[test]
    fn unknown_key_is_named_with_line() {
        let e = Config::parse("[storage]\nsegment_seconds = 60\nsegmnet_seconds = 5\n", "x.toml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("segmnet_seconds"), "{msg}");
        assert_eq!(e.line, Some(3), "{msg}");
    }

    #[test]
    fn bad_value_is_named_with_line() {
        let text = "[storage]\nsync_seconds = 0\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("storage.sync_seconds"));
        assert_eq!(e.line, Some(2));
        let text =
            "[[streams]]\nname = \"a\"\nurl = \"rtsp://h/x\"\n[[streams]]\nname = \"../etc\"\nurl = \"rtsp://h/y\"\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("streams[1].name"), "{e}");
        assert_eq!(e.line, Some(5), "{e}");
        let e = Config::parse("[[streams]]\nname = \"a\"\nurl = \"http://h/x\"\n", "x.toml").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("streams[0].url"), "{e}");
        let e = Config::parse("[[streams]]\nname = \"a\"\nurl = \"rtsp://h/x\"\nrecord = \"sometimes\"\n", "x.toml")
            .unwrap_err();
        assert!(e.to_string().contains("sometimes") || e.to_string().contains("record"), "{e}");
        assert_eq!(e.line, Some(4), "{e}");
    }

    #[test]
    fn wrong_type_names_line() {
        let e = Config::parse("[web]\nlisten = 8080\n", "x.toml").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = Config::parse("[web]\nlisten = \"everywhere\"\n", "x.toml").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("web.listen"));
    }

    #[test]
    fn go2rtc_section_is_checked_and_points_the_relay_at_it() {
        let off = Config::parse("", "x").expect("defaults");
        assert!(off.go2rtc.binary.is_empty() && off.web.go2rtc_api.is_empty(), "not supervised by default");
        let on = Config::parse("[go2rtc]\nbinary = \"/usr/bin/go2rtc\"\napi_port = 1990\n", "x").expect("ok");
        assert_eq!(on.web.go2rtc_api, "http://127.0.0.1:1990", "the WebRTC relay talks to the supervised one");
        for (text, key, says) in [
            ("[go2rtc]\nbinary = \"go2rtc\"\n", "go2rtc.binary", "absolute"),
            ("[go2rtc]\nbinary = \"/g\"\nrtsp_port = 1984\n", "go2rtc.rtsp_port", "go2rtc.api_port"),
            ("[go2rtc]\nbinary = \"/g\"\napi_port = 8080\n", "go2rtc.api_port", "web server"),
            ("[go2rtc]\nbinary = \"/g\"\nwebrtc_port = 0\n", "go2rtc.webrtc_port", "1 to 65535"),
            ("[go2rtc]\nbinary = \"/g\"\nmax_rss_mb = 4\n", "go2rtc.max_rss_mb", "16..=4096"),
            ("[web]\ngo2rtc_api = \"http://127.0.0.1:1985\"\n[go2rtc]\nbinary = \"/g\"\n", "web.go2rtc_api", "1984"),
        ] {
            let e = Config::parse(text, "x.toml").expect_err(text);
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
            assert!(e.to_string().contains(says), "{text}: {e}");
        }
        let e = Config::parse("[go2rtc]\nbinary = \"/g\"\napi_prot = 1\n", "x.toml").expect_err("typo");
        assert!(e.to_string().contains("api_prot"), "{e}");
    }

    #[test]
    fn mqtt_section_names_the_field_at_fault() {
        let off = Config::parse("", "x").expect("ok");
        assert!(off.mqtt.url.is_empty(), "off by default");
        let on = Config::parse("[mqtt]\nurl = \"mqtt://10.0.0.2\"\nuser = \"u\"\n", "x").expect("ok");
        assert_eq!(mqtt_broker(&on.mqtt.url), Ok((false, "10.0.0.2".to_string(), 1883)));
        assert_eq!(mqtt_broker("mqtts://b.lan:1"), Ok((true, "b.lan".to_string(), 1)));
        for (text, key, why) in [
            ("[mqtt]\nurl = \"http://b\"\n", "mqtt.url", "mqtt://"),
            ("[mqtt]\nurl = \"mqtt://u:p@b\"\n", "mqtt.url", "mqtt.user"),
            ("[mqtt]\nurl = \"mqtt://b\"\npassword = \"p\"\n", "mqtt.user", "password"),
            ("[mqtt]\nurl = \"mqtt://b\"\ntopic_prefix = \"a/#\"\n", "mqtt.topic_prefix", "wildcards"),
            ("[mqtt]\nurl = \"mqtt://b\"\nname = \"a b\"\n", "mqtt.name", "letters"),
            ("[mqtt]\nurl = \"mqtt://b\"\nca_file = \"/c.pem\"\n", "mqtt.ca_file", "mqtts"),
        ] {
            let e = Config::parse(text, "x").expect_err(text);
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
            assert!(e.message.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn webhooks_name_the_field_at_fault() {
        let ok = "[[webhooks]]\nurl = \"https://h.lan/in\"\nsecret = \"0123456789abcdef\"\nstreams = [\"door\"]\n";
        let c = Config::parse(ok, "x").expect("ok");
        assert_eq!((c.webhooks[0].name_or(1), c.webhooks[0].streams.len()), ("webhook-1".to_string(), 1));
        let hook = |extra: &str| format!("[[webhooks]]\nurl = \"http://h/\"\n{extra}\n");
        for (text, key, why) in [
            (hook("secret = \"short\""), "webhooks[0].secret", "16 bytes"),
            (hook(""), "webhooks[0].secret", "required"),
            ("[[webhooks]]\nurl = \"ftp://h/\"\nsecret = \"0123456789abcdef\"\n".into(), "webhooks[0].url", "http://"),
            (
                "[[webhooks]]\nurl = \"http://u:p@h/\"\nsecret = \"0123456789abcdef\"\n".into(),
                "webhooks[0].url",
                "credentials",
            ),
            (hook("secret_file = \"s.txt\""), "webhooks[0].secret_file", "absolute"),
            (hook("secret = \"0123456789abcdef\"\nca_file = \"/ca.pem\""), "webhooks[0].ca_file", "https"),
            (hook("secret = \"0123456789abcdef\"\nstreams = [\"a b\"]"), "webhooks[0].streams", "allowed"),
            (hook("secret = \"0123456789abcdef\"\ntimeout_seconds = 61"), "webhooks[0].timeout_seconds", "1..=60"),
            (
                format!(
                    "{}{}",
                    hook("secret = \"0123456789abcdef\"\nname = \"a\""),
                    hook("secret = \"0123456789abcdef\"\nname = \"a\"")
                ),
                "webhooks[1].name",
                "two",
            ),
        ] {
            let e = Config::parse(&text, "x").expect_err(&text);
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
            assert!(e.message.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn streams_parse_with_defaults() {
        let c = Config::parse("[[streams]]\nname = \"front\"\nurl = \"rtsp://u:p@10.0.0.2/s\"\n", "x").expect("ok");
        let s = &c.streams[0];
        assert!(s.enabled);
        assert_eq!(s.record, RecordMode::Continuous);
        assert_eq!(s.priority, 0);
        assert!(s.detect.is_empty() && s.motion_mask.is_empty());
        assert_eq!(c.detect.fps, 5);
    }

    #[test]
    fn detection_settings_are_checked() {
        let stream = "[[streams]]\nname = \"a\"\nurl = \"rtsp://h/s\"\n";
        let ok = format!("{stream}detect = [\"motion\"]\nmotion_mask = [[[0, 0], [0.5, 0], [0.5, 0.1]]]\n");
        let c = Config::parse(&ok, "x").expect("ok");
        assert_eq!(c.streams[0].motion_mask[0][1], [0.5, 0.0]);
        for (toml, says) in [
            (format!("{stream}detect = [\"faces\"]\n"), "streams[0].detect"),
            (format!("{stream}motion_mask = [[[0, 0], [1, 1]]]\n"), "needs 3 to 64"),
            (format!("{stream}motion_mask = [[[0, 0], [1.5, 0], [1, 1]]]\n"), "outside 0..=1"),
            ("[detect]\nfps = 0\n".to_string(), "detect.fps"),
            ("[detect]\nwidth = 4000\n".to_string(), "detect.width"),
            ("[detect]\nsharpness = 1\n".to_string(), "sharpness"),
        ] {
            let e = Config::parse(&toml, "x").expect_err(&toml).to_string();
            assert!(e.contains(says), "{toml}: {e}");
        }
    }
}
