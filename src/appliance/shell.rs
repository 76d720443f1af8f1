//! `oxinvr shell`: the console on the UART (started by init on the serial
//! port at boot), line by line: status, streams, recordings, network, logs,
//! OTA, reboot, factory reset.
//!
//! Invariants:
//! - Nothing is implemented twice: stream and recording operations are
//!   requests to the running recorder's HTTP API on loopback
//!   (`web.listen`), i.e. the very handlers the API runs; OTA calls the
//!   `ota` module as `oxinvr ota` does; reboot, factory reset and network go
//!   through `appliance`. Only `status` falls back to reading the database
//!   (read-only use) when the recorder is not running, and says so.
//! - Every failure is one line starting `error:` that names what is wrong
//!   (`error_line`, the one place a `base::error::Kind` becomes shell text);
//!   the shell goes on reading after any command's error, whatever its kind.
//!   It ends on `exit`, `quit`, end of input, or when the console itself
//!   cannot be read (then `oxinvr shell` exits with the CLI's error code).
//! - Factory reset happens only after the operator typed `YES`.

use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};

use crate::appliance::ota;
use crate::appliance::{self, NetConfig};
use crate::base::error::{Context as _, Error, Kind, Result};
use crate::base::httpclient::{self, Client, HttpError, Response};
use crate::base::lineedit::{Input, LineReader};
use crate::config::Config;

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Help(Option<String>),
    Status,
    StreamsList,
    StreamsAdd {
        name: String,
        url: String,
        fields: Vec<(String, Value)>,
    },
    StreamsRemove {
        name: String,
        purge: bool,
    },
    StreamsEnable(String, bool),
    Recordings {
        stream: Option<String>,
        count: usize,
    },
    Users,
    NetworkShow,
    NetworkSet {
        iface: String,
        config: NetConfig,
    },
    Logs(usize),
    MqttStatus,
    OtaInstall {
        source: String,
        reboot: bool,
    },
    OtaStatus,
    OtaMarkGood,
    Reboot,
    FactoryReset,
    /// `discover`: ONVIF cameras on the LAN (WS-Discovery through the API).
    Discover,
    Exit,
}

/// First words, for Tab completion and `help`.
pub const COMMANDS: &[&str] = &[
    "help",
    "status",
    "streams",
    "recordings",
    "users",
    "network",
    "logs",
    "mqtt",
    "discover",
    "ota",
    "reboot",
    "factory-reset",
    "exit",
];

const HELP: &str = "\
commands:
  status                              recorder, streams, disk, boot slot, HTTPS fingerprint
  streams [list]                      cameras with their live state
  streams add NAME URL [KEY=VALUE..]  add a camera (keys: enabled record retention_days
                                      max_storage_mb priority bitrate_kbps)
  streams remove NAME [purge]         remove a camera (purge: and its recordings)
  streams enable NAME | disable NAME  start or stop recording a camera
  recordings [STREAM] [N]             the last N (default 20) recordings of the last 24 h
  users                               user accounts (oxinvr user add|passwd|del)
  network [show]                      addresses, routes, DNS and the configured settings
  network dhcp IFACE                  get the address of IFACE by DHCP
  network static IFACE ADDR/PREFIX GW e.g. network static eth0 192.168.1.50/24 192.168.1.1
  logs [N]                            the last N (default 20) lines of the recorder's log
  mqtt [status]                       the MQTT client: broker, state, last error, dropped
  discover                            ONVIF cameras on the LAN (WS-Discovery, [onvif] config)
  ota status                          running slot, boot selector, installed versions
  ota install FILE|http://URL [--reboot]
                                      install a signed update into the other slot
  ota mark-good                       mark the running slot healthy
  reboot                              restart the box
  factory-reset                       erase all recordings and settings, then restart
  help [COMMAND]                      this text
  exit                                leave the console (init starts a new one)";

fn usage(cmd: &str) -> &'static str {
    match cmd {
        "streams" => "streams [list] | streams add NAME URL [KEY=VALUE..] | streams remove NAME [purge] | streams enable NAME | streams disable NAME",
        "recordings" => "recordings [STREAM] [N]",
        "network" => "network [show] | network dhcp IFACE | network static IFACE ADDR/PREFIX GW",
        "logs" => "logs [N]",
        "mqtt" => "mqtt [status]",
        "discover" => "discover: lists the ONVIF cameras that answer a WS-Discovery probe",
        "ota" => "ota status | ota install FILE|http://URL [--reboot] | ota mark-good",
        "users" => "users: lists the accounts; make or change them with `oxinvr user add|passwd|del` or the web page",
        "factory-reset" => "factory-reset: asks you to type YES, erases the data partition (recordings, settings), restarts",
        "reboot" => "reboot: restarts the box",
        "status" => "status: version, recorder uptime, streams, disk, boot slot, HTTPS fingerprint",
        _ => "",
    }
}

/// Splits a line into words; "double" and 'single' quotes group.
pub fn tokenize(line: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(Error::invalid(format!("unbalanced {q}")));
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// `KEY=VALUE` of `streams add`: numbers, true/false and null as JSON, the rest as text.
fn field(kv: &str) -> Result<(String, Value)> {
    let (k, v) = kv.split_once('=').ok_or_else(|| Error::invalid(format!("{kv:?} is not KEY=VALUE")))?;
    const KEYS: &[&str] = &[
        "enabled",
        "record",
        "pre_seconds",
        "post_seconds",
        "retention_days",
        "event_retention_days",
        "max_storage_mb",
        "priority",
        "bitrate_kbps",
    ];
    if !KEYS.contains(&k) {
        return Err(Error::invalid(format!("unknown key {k:?}; known: {}", KEYS.join(" "))));
    }
    let value = match v {
        "true" | "on" | "yes" => Value::Bool(true),
        "false" | "off" | "no" if k == "enabled" => Value::Bool(false),
        "null" | "none" => Value::Null,
        _ => v.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::from(v)),
    };
    Ok((k.to_string(), value))
}

fn count(arg: &str, what: &str, max: usize) -> Result<usize> {
    arg.parse::<usize>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| Error::invalid(format!("{what} {arg:?} must be a number 1..{max}")))
}

/// Parses a command line; `Ok(None)` for an empty line or a `#` comment.
pub fn parse(line: &str) -> Result<Option<Command>> {
    let words = tokenize(line)?;
    let Some(first) = words.first() else { return Ok(None) };
    if first.starts_with('#') {
        return Ok(None);
    }
    let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    let bad = |cmd: &str| Err(Error::invalid(format!("usage: {}", usage(cmd))));
    let cmd = match (first.as_str(), args.as_slice()) {
        ("help" | "?", []) => Command::Help(None),
        ("help" | "?", [c]) => Command::Help(Some(c.to_string())),
        ("status", []) => Command::Status,
        ("streams" | "stream", [] | ["list" | "ls"]) => Command::StreamsList,
        ("streams" | "stream", ["add", name, url, rest @ ..]) => Command::StreamsAdd {
            name: name.to_string(),
            url: url.to_string(),
            fields: rest.iter().map(|kv| field(kv)).collect::<Result<_, _>>()?,
        },
        ("streams" | "stream", ["remove" | "rm" | "delete", name]) => {
            Command::StreamsRemove { name: name.to_string(), purge: false }
        }
        ("streams" | "stream", ["remove" | "rm" | "delete", name, "purge" | "--purge"]) => {
            Command::StreamsRemove { name: name.to_string(), purge: true }
        }
        ("streams" | "stream", ["enable", name]) => Command::StreamsEnable(name.to_string(), true),
        ("streams" | "stream", ["disable", name]) => Command::StreamsEnable(name.to_string(), false),
        ("streams" | "stream", [sub, ..]) if !["add", "remove", "rm", "delete", "enable", "disable"].contains(sub) => {
            return Err(Error::invalid(format!("streams has no subcommand {sub:?}; usage: {}", usage("streams"))))
        }
        ("streams" | "stream", _) => return bad("streams"),
        ("recordings" | "recs", []) => Command::Recordings { stream: None, count: 20 },
        ("recordings" | "recs", [a]) if a.parse::<usize>().is_ok() => {
            Command::Recordings { stream: None, count: count(a, "N", 1000)? }
        }
        ("recordings" | "recs", [s]) => Command::Recordings { stream: Some(s.to_string()), count: 20 },
        ("recordings" | "recs", [s, n]) => {
            Command::Recordings { stream: Some(s.to_string()), count: count(n, "N", 1000)? }
        }
        ("recordings" | "recs", _) => return bad("recordings"),
        ("users" | "user", _) => Command::Users,
        ("network" | "net", [] | ["show"]) => Command::NetworkShow,
        ("network" | "net", ["dhcp", iface]) => {
            appliance::validate_iface(iface)?;
            Command::NetworkSet { iface: iface.to_string(), config: NetConfig::Dhcp }
        }
        ("network" | "net", ["static", iface, cidr, gw]) => {
            appliance::validate_iface(iface)?;
            Command::NetworkSet { iface: iface.to_string(), config: appliance::parse_static(cidr, gw)? }
        }
        ("network" | "net", _) => return bad("network"),
        ("logs" | "log", []) => Command::Logs(20),
        ("logs" | "log", [n]) => Command::Logs(count(n, "N", 500)?),
        ("logs" | "log", _) => return bad("logs"),
        ("mqtt", [] | ["status"]) => Command::MqttStatus,
        ("mqtt", _) => return bad("mqtt"),
        ("discover", []) => Command::Discover,
        ("ota", ["status"]) => Command::OtaStatus,
        ("ota", ["mark-good"]) => Command::OtaMarkGood,
        ("ota", ["install", src]) => Command::OtaInstall { source: src.to_string(), reboot: false },
        ("ota", ["install", src, "--reboot"] | ["install", "--reboot", src]) => {
            Command::OtaInstall { source: src.to_string(), reboot: true }
        }
        ("ota", _) => return bad("ota"),
        ("reboot", []) => Command::Reboot,
        ("factory-reset", []) => Command::FactoryReset,
        ("exit" | "quit" | "logout", []) => Command::Exit,
        ("status" | "reboot" | "factory-reset" | "discover" | "exit" | "quit" | "logout", _) => {
            return Err(Error::invalid(format!("{first} takes no arguments")))
        }
        (other, _) => return Err(Error::invalid(format!("unknown command {other:?}; type help for the list"))),
    };
    Ok(Some(cmd))
}

// ---- formatting ----

/// `discover`: one line per device (name, hardware, address) from `/api/onvif/discover`.
fn discovered(v: &Value) -> String {
    let devices = v["devices"].as_array().map(Vec::as_slice).unwrap_or_default();
    if devices.is_empty() {
        return "no ONVIF camera answered (check [onvif] discovery_target and interface)".into();
    }
    let mut out = format!("{} ONVIF camera(s):", devices.len());
    for d in devices {
        let name = d["name"].as_str().unwrap_or("(no name)");
        let hw = d["hardware"].as_str().unwrap_or("-");
        out.push_str(&format!("\n  {name:<24} {hw:<16} {}", s(&d["address"])));
    }
    out.push_str("\nadd one from the web page (Discover cameras), or `streams add NAME rtsp://...`");
    out
}

/// `mqtt status`: the client's line from `/api/system`'s `mqtt`.
fn mqtt_status(m: &Value) -> String {
    if m.is_null() {
        return "mqtt: off (set [mqtt] url in the config file)".into();
    }
    let mut out = format!(
        "mqtt: {} to {} as {} under {}\nconnects {}, published {}, queued {}, dropped {}",
        s(&m["state"]),
        s(&m["broker"]),
        s(&m["client_id"]),
        s(&m["topic_prefix"]),
        m["connects"],
        m["published"],
        m["queued"],
        m["dropped"]
    );
    if let Some(e) = m["last_error"].as_str() {
        out.push_str(&format!("\nlast error: {e}"));
    }
    out
}

/// 1536 -> "1.5 KiB".
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// 3725 -> "1h 02m 05s".
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h {m:02}m")
    } else if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push_str("  ");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn path_seg(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>().replace('+', "%20")
}

// ---- the shell ----

/// The console's state: the configuration and a client of the recorder's API.
pub struct Shell {
    pub cfg: Config,
    api: Client,
}

/// Reads an answer to a question (the factory reset confirmation).
pub type Ask<'a> = dyn FnMut(&str) -> Option<String> + 'a;

impl Shell {
    pub fn new(cfg: Config) -> Result<Shell> {
        let addr = httpclient::loopback_addr(&cfg.web.listen)?;
        let api = Client::with_console_token(addr, &crate::auth::console_token_path(&cfg.storage.data_dir));
        Ok(Shell { cfg, api })
    }

    fn not_running(&self, m: &str) -> Error {
        Error::unavailable(format!(
            "the recorder is not running ({m}); it serves the API on {} (see `logs`, or start `oxinvr run`)",
            self.api.addr
        ))
    }

    /// One API call; a 4xx/5xx becomes the API's error message, of the kind its status stands for.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Response> {
        let r = self.api.request(method, path, body).map_err(|e| match e {
            HttpError::NotRunning(m) => self.not_running(&m),
            HttpError::Failed(m) => Error::upstream(m),
        })?;
        if r.status >= 400 {
            return Err(r.error());
        }
        Ok(r)
    }

    /// Runs one command, writing to `out`. `Ok(false)` means leave.
    pub fn execute(&mut self, cmd: Command, out: &mut dyn Write, ask: &mut Ask<'_>) -> Result<bool> {
        let mut say = |t: &str| {
            let _ = writeln!(out, "{}", t.trim_end_matches('\n'));
        };
        match cmd {
            Command::Help(None) => say(HELP),
            Command::Help(Some(c)) => match usage(&c) {
                "" if COMMANDS.contains(&c.as_str()) => say(HELP),
                "" => return Err(Error::invalid(format!("no help for {c:?}; type help for the list"))),
                u => say(&format!("usage: {u}")),
            },
            Command::Status => say(&self.status()),
            Command::StreamsList => say(&self.streams_list()?),
            Command::StreamsAdd { name, url, fields } => {
                let mut body = json!({ "name": name, "url": url });
                for (k, v) in fields {
                    body[k] = v;
                }
                let r = self.call("POST", "/api/streams", Some(&body))?.json();
                say(&format!("added {}: {}", s(&r["name"]), stream_line(&r)));
            }
            Command::StreamsRemove { name, purge } => {
                let path = format!("/api/streams/{}{}", path_seg(&name), if purge { "?purge=true" } else { "" });
                match self.call("DELETE", &path, None) {
                    Ok(r) => {
                        let v = r.json();
                        say(&format!("removed {name} ({} recording(s) deleted)", s(&v["recordings_deleted"])));
                    }
                    Err(e) if !purge && e.kind == Kind::Conflict && e.message.contains("purge=true") => {
                        return Err(Error::conflict(format!(
                            "stream {name:?} has recordings; `streams remove {name} purge` deletes them with it"
                        )))
                    }
                    Err(e) => return Err(e),
                }
            }
            Command::StreamsEnable(name, on) => {
                let path = format!("/api/streams/{}", path_seg(&name));
                let r = self.call("PUT", &path, Some(&json!({ "enabled": on })))?.json();
                say(&format!("{} {name}: {}", if on { "enabled" } else { "disabled" }, stream_line(&r)));
            }
            Command::Recordings { stream, count } => say(&self.recordings(stream.as_deref(), count)?),
            Command::Users => say(&crate::auth::admin::list(&self.cfg)?),
            Command::NetworkShow => say(&appliance::network_show(&self.cfg.system.network_interfaces)),
            Command::NetworkSet { iface, config } => {
                say(&appliance::apply_network(&self.cfg.system.network_interfaces, &iface, &config)?)
            }
            Command::MqttStatus => say(&mqtt_status(&self.call("GET", "/api/system", None)?.json()["mqtt"])),
            Command::Discover => say(&discovered(&self.call("POST", "/api/onvif/discover", Some(&json!({})))?.json())),
            Command::Logs(n) => {
                let path = self.cfg.storage.data_dir.join("oxinvr.log");
                let lines = crate::base::logging::tail_file(&path, n).map_err(|e| {
                    let why =
                        format!("cannot read the log {}: {e} (the recorder writes it while it runs)", path.display());
                    Error::new(Kind::of_io(&e), why)
                })?;
                if lines.is_empty() {
                    say(&format!("{} is empty", path.display()));
                }
                for l in lines {
                    say(&l);
                }
            }
            Command::OtaStatus => {
                for l in ota::status(&self.cfg.system) {
                    say(&l);
                }
            }
            Command::OtaMarkGood => say(&ota::mark_good(&self.cfg.system)?),
            Command::OtaInstall { source, reboot } => {
                if reboot {
                    appliance::require_appliance("reboot")?;
                }
                ota::install_from(&self.cfg.system, &source, out)?;
                if reboot {
                    let _ = writeln!(out, "rebooting into the new slot");
                    let _ = out.flush();
                    appliance::reboot()?;
                }
            }
            Command::Reboot => {
                appliance::require_appliance("reboot")?;
                say("rebooting");
                appliance::reboot()?;
            }
            Command::FactoryReset => {
                let target = appliance::factory_reset_target(&self.cfg.storage.data_dir)?;
                let q = format!(
                    "this erases everything on {} (all recordings and settings) and restarts.\n\
                     type YES to erase all recordings and settings: ",
                    target.display()
                );
                match ask(&q) {
                    Some(a) if a.trim() == "YES" => {}
                    _ => {
                        let _ = writeln!(out, "factory reset cancelled; nothing was erased");
                        return Ok(true);
                    }
                }
                let _ = writeln!(out, "stopping the recorder, erasing {}, rebooting", target.display());
                let _ = out.flush();
                appliance::factory_reset(&target)?;
            }
            Command::Exit => return Ok(false),
        }
        Ok(true)
    }

    /// `status`: from the API, or from the database when the recorder is down.
    pub fn status(&self) -> String {
        let mut out = format!("{} console\n", crate::appliance::version_line());
        match ota::current_slot() {
            Ok((slot, _)) => {
                let env = crate::appliance::bootenv::Store::of(&self.cfg.system.boot_env).load().ok().flatten();
                let good = env.as_ref().map(|e| e.left(slot) >= self.cfg.system.boot_limit);
                let state = match (good, env.as_ref().and_then(|e| e.next_boot())) {
                    (_, Some(n)) if n != slot => format!("update in slot {n} boots next"),
                    (Some(true), _) => "marked good".into(),
                    (Some(false), _) => "not marked good yet".into(),
                    (None, _) => "boot env missing".into(),
                };
                out.push_str(&format!("slot: {slot} ({state})\n"));
            }
            Err(_) => out.push_str("slot: - (not an appliance)\n"),
        }
        let sys = self.api.request("GET", "/api/system", None);
        let no_disk = sys.as_ref().ok().filter(|r| r.status == 200).map(|r| r.json());
        if let Some(d) = no_disk.as_ref().map(|v| &v["disk"]).filter(|d| d["recording"] == "no_disk") {
            out.push_str(&format!("recorder: running WITHOUT ITS DATA DISK: NOTHING RECORDS: {}\n", s(&d["problem"])));
            return out;
        }
        match (sys, self.api.request("GET", "/api/streams", None)) {
            (Ok(sys), Ok(streams)) if sys.status == 200 && streams.status == 200 => {
                let sys = sys.json();
                let up = sys["uptime_s"].as_u64().unwrap_or(0);
                out.push_str(&format!(
                    "recorder: running, oxinvr {}, up {} (since {})\n",
                    s(&sys["version"]),
                    duration(up),
                    s(&sys["started"])
                ));
                let list = streams.json()["streams"].as_array().cloned().unwrap_or_default();
                out.push_str(&streams_summary(&list));
                let d = &sys["disk"];
                match d["free_bytes"].as_u64().zip(d["total_bytes"].as_u64()) {
                    Some((free, total)) => out.push_str(&format!(
                        "disk: {}: {} free of {} ({}%), recordings {}\n",
                        s(&d["data_dir"]),
                        size(free),
                        size(total),
                        s(&d["free_percent"]),
                        size(d["recordings_bytes"].as_u64().unwrap_or(0))
                    )),
                    None => out.push_str(&format!("disk: {}: {}\n", s(&d["data_dir"]), s(&d["error"]))),
                }
                if d["recording"] == "paused" {
                    out.push_str(&format!(
                        "RECORDING PAUSED: {} (resumes by itself when the disk accepts writes)\n",
                        s(&d["problem"])
                    ));
                }
                out.push_str(&go2rtc_line(&sys["go2rtc"]));
                out.push_str(&replicate_line(&sys["replicate"]));
            }
            (Err(HttpError::NotRunning(m)), _) | (_, Err(HttpError::NotRunning(m))) => {
                out.push_str(&format!("recorder: NOT RUNNING ({m})\n"));
                out.push_str(&self.status_from_db());
            }
            (a, b) => {
                let why = match (a, b) {
                    (Err(e), _) | (_, Err(e)) => e.to_string(),
                    (Ok(r), _) if r.status != 200 => r.error_message(),
                    (_, Ok(r)) => r.error_message(),
                };
                out.push_str(&format!("recorder: not answering properly: {why}\n"));
                out.push_str(&self.status_from_db());
            }
        }
        out.push_str(&self.https_line());
        out
    }

    /// The HTTPS certificate's fingerprint, for a user to compare with what
    /// the browser shows (trust on first use; docs/SECURITY.md, "HTTPS").
    fn https_line(&self) -> String {
        let web = &self.cfg.web;
        if !web.tls {
            return "https: off (web.tls = false)\n".into();
        }
        let port = web.tls_listen.rsplit_once(':').map_or("?", |(_, p)| p);
        match crate::auth::tls::read_info(&self.cfg.storage.data_dir) {
            Some(Ok(i)) => format!(
                "https: port {port}, {} certificate {}, valid until {}\n  SHA-256 {}\n",
                i.source.as_str(),
                i.subject,
                i.not_after,
                i.fingerprint
            ),
            Some(Err(e)) => format!("https: port {port}, certificate unreadable: {e}\n"),
            None => format!("https: port {port}, no certificate yet (the recorder makes one when it starts)\n"),
        }
    }

    /// What the database and the disk say, without the recorder.
    fn status_from_db(&self) -> String {
        let dir = &self.cfg.storage.data_dir;
        let mut out = String::new();
        let db_path = self.cfg.db_path();
        if !db_path.exists() {
            out.push_str(&format!("database: none yet at {}\n", db_path.display()));
        } else {
            match crate::index::db::Db::open(&db_path).and_then(|db| Ok((db.list_streams()?, db.stream_usage()?))) {
                Ok((rows, usage)) => {
                    out.push_str(&format!("streams (from the database): {}\n", rows.len()));
                    let mut t = Vec::new();
                    for r in rows {
                        let u = usage.iter().find(|u| u.0 == r.id).map_or((0, 0), |u| (u.1, u.2));
                        t.push(vec![
                            r.spec.name.clone(),
                            if r.spec.enabled { "enabled" } else { "disabled" }.into(),
                            format!("{} in {} recording(s)", size(u.0), u.1),
                        ]);
                    }
                    out.push_str(&table(&t));
                }
                Err(e) => out.push_str(&format!("database: {e}\n")),
            }
        }
        match crate::recording::retention::disk_usage(dir) {
            Ok(d) => out.push_str(&format!(
                "disk: {}: {} free of {}\n",
                dir.display(),
                size(d.free_bytes),
                size(d.total_bytes)
            )),
            Err(e) => out.push_str(&format!("disk: {}: {e}\n", dir.display())),
        }
        out
    }

    fn streams_list(&self) -> Result<String> {
        let v = self.call("GET", "/api/streams", None)?.json();
        let list = v["streams"].as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            return Ok("no streams; add one with: streams add NAME rtsp://...".into());
        }
        let mut rows = vec![vec![
            "NAME".to_string(),
            "ON".into(),
            "STATE".into(),
            "FPS".into(),
            "KBPS".into(),
            "RECORDED".into(),
            "URL".into(),
        ]];
        for st in &list {
            let status = &st["status"];
            rows.push(vec![
                s(&st["name"]),
                if st["enabled"].as_bool() == Some(true) { "yes" } else { "no" }.into(),
                s(&status["state"]),
                s(&status["fps"]),
                s(&status["bitrate_kbps"]),
                format!("{}/{}", size(st["storage"]["bytes"].as_u64().unwrap_or(0)), s(&st["storage"]["segments"])),
                s(&st["url"]),
            ]);
        }
        let mut out = table(&rows);
        for st in &list {
            if let Some(w) = memory_wait(&st["status"]) {
                out.push_str(&format!("  {}: {w}\n", s(&st["name"])));
            }
            if let Some(e) = st["status"]["last_error"].as_str() {
                out.push_str(&format!(
                    "  {}: last error {}: {e}\n",
                    s(&st["name"]),
                    s(&st["status"]["last_error_time"])
                ));
            }
        }
        Ok(out)
    }

    fn recordings(&self, stream: Option<&str>, count: usize) -> Result<String> {
        let path = match stream {
            Some(st) => format!("/api/recordings?stream={}", path_seg(st)),
            None => "/api/recordings".to_string(),
        };
        let v = self.call("GET", &path, None)?.json();
        let recs = v["recordings"].as_array().cloned().unwrap_or_default();
        let gaps = v["gaps"].as_array().map_or(0, Vec::len);
        let mut out =
            format!("{} recording(s), {gaps} gap(s) from {} to {}\n", recs.len(), s(&v["start"]), s(&v["end"]));
        if recs.is_empty() {
            return Ok(out);
        }
        let mut rows = vec![vec![
            "ID".to_string(),
            "STREAM".into(),
            "START".into(),
            "LENGTH".into(),
            "SIZE".into(),
            "VIDEO".into(),
        ]];
        let skip = recs.len().saturating_sub(count);
        for r in &recs[skip..] {
            let open = if r["closed"].as_bool() == Some(false) { " (recording)" } else { "" };
            rows.push(vec![
                s(&r["id"]),
                s(&r["stream"]),
                s(&r["start"]),
                format!("{}{open}", duration(r["duration_ms"].as_u64().unwrap_or(0) / 1000)),
                size(r["bytes"].as_u64().unwrap_or(0)),
                format!("{} {}x{}", s(&r["codec"]), s(&r["width"]), s(&r["height"])),
            ]);
        }
        if skip > 0 {
            out.push_str(&format!("  (the last {count}; `recordings [STREAM] N` shows more)\n"));
        }
        out.push_str(&table(&rows));
        Ok(out)
    }
}

/// `replicate: ok, backlog N segment(s) (SIZE) N snapshot(s), uploaded ...[, last: ERR]`; nothing when off.
fn replicate_line(r: &Value) -> String {
    if r.is_null() {
        return String::new();
    }
    let mut line = format!(
        "replicate: {} to {}, backlog {} segment(s) ({}) {} snapshot(s), uploaded {} ({}) {} snapshot(s) since start",
        s(&r["state"]),
        s(&r["bucket"]),
        r["backlog_segments"].as_u64().unwrap_or(0),
        size(r["backlog_bytes"].as_u64().unwrap_or(0)),
        r["backlog_events"].as_u64().unwrap_or(0),
        r["uploaded_segments"].as_u64().unwrap_or(0),
        size(r["uploaded_bytes"].as_u64().unwrap_or(0)),
        r["uploaded_events"].as_u64().unwrap_or(0),
    );
    if let Some(n) = r["deleted_unreplicated"].as_u64().filter(|n| *n > 0) {
        line.push_str(&format!(", {n} DELETED BEFORE UPLOAD (disk full)"));
    }
    if let Some(e) = r["last_error"].as_str() {
        line.push_str(&format!(", last: {e}"));
    }
    line + "\n"
}

/// The supervised go2rtc's state, or nothing when it is not supervised.
fn go2rtc_line(g: &Value) -> String {
    if g.is_null() {
        return String::new();
    }
    let mut line = format!("go2rtc: {}", s(&g["state"]));
    if let Some(pid) = g["pid"].as_u64() {
        line.push_str(&format!(", pid {pid}"));
    }
    if let Some(rss) = g["rss_bytes"].as_u64() {
        line.push_str(&format!(", RSS {} of {}", size(rss), size(g["max_rss_bytes"].as_u64().unwrap_or(0))));
    }
    if let Some(ms) = g["backoff_ms"].as_u64() {
        line.push_str(&format!(", next start in {} s", ms.div_ceil(1000)));
    }
    line.push_str(&format!(", {} restart(s)", g["restarts"].as_u64().unwrap_or(0)));
    if let Some(e) = g["last_error"].as_str() {
        line.push_str(&format!(", last: {e}"));
    }
    line + "\n"
}

/// "waiting for memory: needs X MiB, Y MiB free in the budget" of a stream
/// status whose reservation does not fit yet, or why the pressure ladder
/// stopped it ("stopped for memory pressure ...").
fn memory_wait(status: &Value) -> Option<String> {
    if let Some(why) = status["stopped_for"].as_str() {
        return Some(why.to_string());
    }
    let w = &status["memory_wait"];
    let wait = crate::governor::budget::Wait {
        needs_bytes: w["needs_bytes"].as_u64()?,
        free_bytes: w["free_bytes"].as_u64()?,
    };
    Some(wait.to_string())
}

fn stream_line(st: &Value) -> String {
    format!(
        "{} {}, {}",
        s(&st["url"]),
        if st["enabled"].as_bool() == Some(true) { "enabled" } else { "disabled" },
        s(&st["status"]["state"])
    )
}

fn streams_summary(list: &[Value]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for st in list {
        let state = s(&st["status"]["state"]);
        match counts.iter_mut().find(|c| c.0 == state) {
            Some(c) => c.1 += 1,
            None => counts.push((state, 1)),
        }
    }
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let mut out = format!(
        "streams: {}{}\n",
        list.len(),
        if parts.is_empty() { String::new() } else { format!(" ({})", parts.join(", ")) }
    );
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|st| {
            let status = &st["status"];
            vec![
                s(&st["name"]),
                s(&status["state"]),
                format!("{} fps", s(&status["fps"])),
                format!("{} kbps", s(&status["bitrate_kbps"])),
                memory_wait(status)
                    .or_else(|| status["last_error"].as_str().map(|e| format!("last error: {e}")))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&table(&rows));
    out
}

/// The shell's line for a failed command, whatever its kind: `error: ` and
/// the message (people and scripts on the UART look for that prefix). A
/// refused credential adds how the shell logs in, the one thing the message
/// from the API cannot know.
pub fn error_line(e: &Error) -> String {
    match e.kind {
        Kind::Unauthorized => format!(
            "error: {e} (the shell uses the console token the recorder writes into its data_dir: \
             give the shell the recorder's --config)"
        ),
        Kind::InvalidInput
        | Kind::Forbidden
        | Kind::NotFound
        | Kind::Conflict
        | Kind::Rejected
        | Kind::Upstream
        | Kind::Unavailable
        | Kind::Timeout
        | Kind::Io
        | Kind::Internal => format!("error: {e}"),
    }
}

/// `oxinvr shell`: the read-eval-print loop on stdin/stdout.
pub fn run(config_path: Option<&Path>) -> Result<()> {
    let cfg = Config::load(config_path)?;
    let mut shell = Shell::new(cfg)?;
    let mut reader = LineReader::new(COMMANDS.to_vec());
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "OxiNVR console ({}). Type help for the commands.", crate::appliance::version_line());
    loop {
        let input = reader.read_line("oxinvr> ").context("reading the console")?;
        let line = match input {
            Input::Line(l) => l,
            Input::Interrupted => continue,
            Input::Eof => break,
        };
        let cmd = match parse(&line) {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(e) => {
                let _ = writeln!(stdout, "{}", error_line(&e));
                continue;
            }
        };
        let mut ask = |q: &str| match reader.read_line(q) {
            Ok(Input::Line(l)) => Some(l),
            _ => None,
        };
        let mut out = stdout.lock();
        let r = shell.execute(cmd, &mut out, &mut ask);
        match r {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let _ = writeln!(out, "{}", error_line(&e));
            }
        }
        let _ = out.flush();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_says_which_streams_wait_for_memory_and_for_how_much() {
        let list = vec![
            serde_json::json!({"name": "door", "status": {"state": "streaming", "fps": 15, "bitrate_kbps": 900}}),
            serde_json::json!({"name": "yard", "status": {"state": "waiting_for_memory", "fps": 0, "bitrate_kbps": 0,
                "memory_wait": {"needs_bytes": 5 << 20, "free_bytes": 3 << 19}}}),
        ];
        let out = streams_summary(&list);
        assert!(out.starts_with("streams: 2 (1 streaming, 1 waiting_for_memory)"), "{out}");
        assert!(out.contains("waiting for memory: needs 5.0 MiB, 1.5 MiB free in the budget"), "{out}");
    }

    #[test]
    fn status_says_which_streams_memory_pressure_stopped() {
        let why =
            "stopped for memory pressure (ladder step 4: PSI memory some avg10 45.0 %, full avg10 12.0 % for 5 s)";
        let list = vec![serde_json::json!({"name": "yard", "status": {"state": "stopped", "fps": 0,
            "bitrate_kbps": 0, "stopped_for": why}})];
        let out = streams_summary(&list);
        assert!(out.contains(why), "{out}");
    }

    fn p(line: &str) -> Command {
        parse(line).unwrap_or_else(|e| panic!("{line}: {e}")).unwrap_or_else(|| panic!("{line}: nothing"))
    }

    fn err(line: &str) -> String {
        let e = parse(line).expect_err(line);
        assert_eq!(e.kind, Kind::InvalidInput, "{line}: {e}");
        e.to_string()
    }

    #[test]
    fn commands_parse() {
        assert_eq!(parse("   ").expect("blank"), None);
        assert_eq!(parse("# note").expect("comment"), None);
        assert_eq!(p("help"), Command::Help(None));
        assert_eq!(p("help streams"), Command::Help(Some("streams".into())));
        assert_eq!(p("status"), Command::Status);
        assert_eq!(p("streams"), Command::StreamsList);
        assert_eq!(p("streams list"), Command::StreamsList);
        assert_eq!(
            p("streams add cam rtsp://127.0.0.1:9/x"),
            Command::StreamsAdd { name: "cam".into(), url: "rtsp://127.0.0.1:9/x".into(), fields: vec![] }
        );
        assert_eq!(
            p("streams add 'front door' \"rtsp://u:p w@h/x\" retention_days=7 enabled=false record=off"),
            Command::StreamsAdd {
                name: "front door".into(),
                url: "rtsp://u:p w@h/x".into(),
                fields: vec![
                    ("retention_days".into(), json!(7)),
                    ("enabled".into(), json!(false)),
                    ("record".into(), json!("off"))
                ]
            }
        );
        assert_eq!(p("streams remove cam"), Command::StreamsRemove { name: "cam".into(), purge: false });
        assert_eq!(p("streams rm cam purge"), Command::StreamsRemove { name: "cam".into(), purge: true });
        assert_eq!(p("streams enable cam"), Command::StreamsEnable("cam".into(), true));
        assert_eq!(p("streams disable cam"), Command::StreamsEnable("cam".into(), false));
        assert_eq!(p("recordings"), Command::Recordings { stream: None, count: 20 });
        assert_eq!(p("recordings cam"), Command::Recordings { stream: Some("cam".into()), count: 20 });
        assert_eq!(p("recordings 5"), Command::Recordings { stream: None, count: 5 });
        assert_eq!(p("recordings cam 50"), Command::Recordings { stream: Some("cam".into()), count: 50 });
        assert_eq!(p("users"), Command::Users);
        assert_eq!(p("network"), Command::NetworkShow);
        assert_eq!(p("network dhcp eth0"), Command::NetworkSet { iface: "eth0".into(), config: NetConfig::Dhcp });
        assert!(matches!(p("network static eth0 10.0.0.2/24 10.0.0.1"), Command::NetworkSet { .. }));
        assert_eq!(p("logs"), Command::Logs(20));
        assert_eq!(p("logs 100"), Command::Logs(100));
        assert_eq!(p("ota status"), Command::OtaStatus);
        assert_eq!(p("ota install /data/u.oxb"), Command::OtaInstall { source: "/data/u.oxb".into(), reboot: false });
        assert_eq!(
            p("ota install http://10.0.0.1/u.oxb --reboot"),
            Command::OtaInstall { source: "http://10.0.0.1/u.oxb".into(), reboot: true }
        );
        assert_eq!(p("ota mark-good"), Command::OtaMarkGood);
        assert_eq!(p("reboot"), Command::Reboot);
        assert_eq!(p("factory-reset"), Command::FactoryReset);
        assert_eq!(p("exit"), Command::Exit);
        assert_eq!(p("quit"), Command::Exit);
    }

    #[test]
    fn mistakes_are_named() {
        assert!(err("frobnicate").contains("unknown command \"frobnicate\""));
        assert!(err("streams add cam").contains("usage: streams"));
        assert!(err("streams explode").contains("no subcommand \"explode\""));
        assert!(err("streams add cam rtsp://h/x colour=red").contains("unknown key \"colour\""));
        assert!(err("streams add cam rtsp://h/x retention_days").contains("KEY=VALUE"));
        assert!(err("logs 0").contains("1..500"));
        assert!(err("logs lots").contains("number"));
        assert!(err("network static eth0 10.0.0.2 10.0.0.1").contains("prefix"));
        assert!(err("network static eth0 10.0.0.2/24 10.9.0.1").contains("not in 10.0.0.0/24"));
        assert!(err("network dhcp 'eth0;reboot'").contains("not an interface name"));
        assert!(err("ota").contains("usage: ota"));
        assert!(err("reboot now").contains("takes no arguments"));
        assert!(err("streams add \"cam rtsp://x").contains("unbalanced"));
    }

    #[test]
    fn formats() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(65), "1m 05s");
        assert_eq!(duration(3725), "1h 02m 05s");
        assert_eq!(duration(90061), "1d 1h 01m");
        assert_eq!(path_seg("a b/c"), "a%20b%2Fc");
        let t = table(&[vec!["A".into(), "BB".into(), "C".into()], vec!["AAA".into(), "B".into(), "".into()]]);
        assert_eq!(t, "  A    BB  C\n  AAA  B\n");
    }

    #[test]
    fn discover_lists_devices_or_says_none() {
        assert_eq!(parse("discover").unwrap(), Some(Command::Discover));
        assert!(parse("discover now").is_err());
        assert!(discovered(&json!({"devices": []})).contains("no ONVIF camera"));
        let t = discovered(
            &json!({"devices": [{"name": "Gate", "hardware": "IPC", "address": "http://10.0.0.5/onvif/device_service"}]}),
        );
        assert!(t.starts_with("1 ONVIF camera(s):") && t.contains("Gate") && t.contains("http://10.0.0.5/"), "{t}");
    }

    #[test]
    fn replicate_line_says_the_backlog_and_the_last_error() {
        assert_eq!(replicate_line(&Value::Null), "");
        let r = json!({"state": "failing", "bucket": "b", "backlog_segments": 3, "backlog_bytes": 3 << 20,
                       "uploaded_segments": 1, "uploaded_bytes": 1024, "last_error": "connection refused",
                       "deleted_unreplicated": 0});
        let t = replicate_line(&r);
        assert!(
            t.starts_with("replicate: failing to b, backlog 3 segment(s)") && t.contains("last: connection refused"),
            "{t}"
        );
    }

    #[test]
    fn mqtt_status_says_off_or_the_state_and_the_last_error() {
        assert_eq!(parse("mqtt").unwrap(), Some(Command::MqttStatus));
        assert_eq!(parse("mqtt status").unwrap(), Some(Command::MqttStatus));
        assert!(parse("mqtt go").is_err());
        assert!(mqtt_status(&Value::Null).contains("off"));
        let m = json!({"state": "disconnected", "broker": "mqtt://b:1883", "client_id": "oxinvr-x", "topic_prefix": "oxinvr/x",
                       "connects": 1, "published": 9, "queued": 0, "dropped": 2, "last_error": "the broker refused the login"});
        let t = mqtt_status(&m);
        assert!(
            t.contains("disconnected to mqtt://b:1883") && t.contains("dropped 2") && t.contains("refused the login"),
            "{t}"
        );
    }

    #[test]
    fn without_a_recorder_status_reads_the_disk_and_commands_say_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let text =
            format!("[storage]\ndata_dir = \"{}\"\n[web]\nlisten = \"127.0.0.1:{port}\"\n", dir.path().display());
        let mut sh = Shell::new(Config::parse(&text, "t").expect("cfg")).expect("shell");
        let st = sh.status();
        assert!(st.contains("NOT RUNNING") && st.contains("database: none yet"), "{st}");
        let mut out = Vec::new();
        let e = sh.execute(p("streams list"), &mut out, &mut |_| None).unwrap_err();
        assert_eq!(e.kind, Kind::Unavailable);
        let e = error_line(&e);
        assert!(e.starts_with("error: the recorder is not running") && e.contains(&port.to_string()), "{e}");
        assert!(sh.execute(p("users"), &mut out, &mut |_| None).expect("users"));
        assert!(String::from_utf8_lossy(&out).contains("no users: open the web page"));
        let e = sh.execute(p("logs"), &mut out, &mut |_| None).unwrap_err();
        assert!(e.kind == Kind::NotFound && e.to_string().contains("oxinvr.log"), "{e}");
        assert!(!sh.execute(p("exit"), &mut out, &mut |_| None).expect("exit"));
    }
}
