//! Prometheus primitives: a lock-free duration histogram any layer records
//! into, and a writer of the text exposition format 0.0.4 (`web::metrics`
//! renders the recorder's figures with it).
//!
//! Invariants:
//! - Recording a duration takes an uncontended mutex and two adds: cheap
//!   enough for the storage thread's every fsync. Buckets are stored
//!   non-cumulative and summed when written, so `le="+Inf"` always equals
//!   `_count`.
//! - The writer emits each family's `# HELP` and `# TYPE` once, before its
//!   samples, and escapes label values and help text as the format requires,
//!   so no stream name can break a scrape.

use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of a histogram's buckets, `+Inf` aside.
pub const DURATION_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Durations counted into `DURATION_BUCKETS`.
pub struct Histogram {
    counts: Mutex<Counts>,
}

/// Per bucket, not cumulative (the last one is `+Inf`), and the sum in µs.
/// Behind a mutex, not atomics: MIPS32 has no 64-bit atomics, and a 32-bit
/// sum of microseconds would wrap after 71 minutes of fsyncs.
struct Counts {
    buckets: [u64; DURATION_BUCKETS.len() + 1],
    sum_us: u64,
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram { counts: Mutex::new(Counts { buckets: [0; DURATION_BUCKETS.len() + 1], sum_us: 0 }) }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = DURATION_BUCKETS.iter().position(|le| secs <= *le).unwrap_or(DURATION_BUCKETS.len());
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.buckets[i] += 1;
        c.sum_us = c.sum_us.saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// (cumulative count per bucket including `+Inf`, sum in seconds).
    pub fn snapshot(&self) -> (Vec<u64>, f64) {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = 0;
        let cumulative = c
            .buckets
            .iter()
            .map(|b| {
                total += b;
                total
            })
            .collect();
        (cumulative, c.sum_us as f64 / 1e6)
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

/// The kinds of metric families the recorder exposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A text exposition being written.
#[derive(Default)]
pub struct Text {
    out: String,
    /// The family whose samples follow.
    family: String,
}

impl Text {
    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {}", kind.name());
        self.family = name.to_string();
        self
    }

    /// A sample of the current family.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        let name = std::mem::take(&mut self.family);
        self.sample_named(&name, labels, value);
        self.family = name;
        self
    }

    /// A whole family of one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) -> &mut Self {
        self.family(name, kind, help).sample(&[], value)
    }

    /// A histogram family of one series from `Histogram::snapshot`.
    pub fn histogram(&mut self, name: &str, help: &str, (cumulative, sum): (Vec<u64>, f64)) -> &mut Self {
        self.family(name, Kind::Histogram, help);
        for (i, n) in cumulative.iter().enumerate() {
            let le = DURATION_BUCKETS.get(i).map_or("+Inf".to_string(), |b| b.to_string());
            self.sample_named(&format!("{name}_bucket"), &[("le", &le)], *n as f64);
        }
        self.sample_named(&format!("{name}_sum"), &[], sum);
        self.sample_named(&format!("{name}_count"), &[], cumulative.last().copied().unwrap_or(0) as f64);
        self
    }

    fn sample_named(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(self.out, "{}{k}=\"{v}\"", if i > 0 { "," } else { "" });
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// A value as the format writes it (Go's float syntax: `NaN`, `+Inf`, integers without `.0`).
fn number(v: f64) -> String {
    match v {
        v if v.is_nan() => "NaN".into(),
        v if v == f64::INFINITY => "+Inf".into(),
        v if v == f64::NEG_INFINITY => "-Inf".into(),
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_into_cumulative_buckets() {
        let h = Histogram::new();
        for ms in [0, 3, 3, 40, 20_000] {
            h.observe(Duration::from_millis(ms));
        }
        let (buckets, sum) = h.snapshot();
        assert_eq!(buckets.len(), DURATION_BUCKETS.len() + 1);
        // <= 0.5 ms: 1; <= 5 ms: 3; <= 50 ms: 4; +Inf: 5.
        assert_eq!((buckets[0], buckets[3], buckets[6], buckets[13], buckets[14]), (1, 3, 4, 4, 5));
        assert!((sum - 20.046).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn the_text_escapes_labels_and_names_each_family_once() {
        let mut t = Text::default();
        t.family("x_total", Kind::Counter, "Things.\nMore.")
            .sample(&[("stream", "a\"b\\c\nd")], 3.0)
            .sample(&[("stream", "e")], 0.5);
        t.single("up", Kind::Gauge, "Up.", f64::NAN);
        let text = t.finish();
        assert_eq!(
            text,
            "# HELP x_total Things.\\nMore.\n# TYPE x_total counter\nx_total{stream=\"a\\\"b\\\\c\\nd\"} 3\n\
             x_total{stream=\"e\"} 0.5\n# HELP up Up.\n# TYPE up gauge\nup NaN\n"
        );
    }

    #[test]
    fn a_histogram_family_ends_with_inf_sum_and_count() {
        let h = Histogram::new();
        h.observe(Duration::from_millis(2));
        let mut t = Text::default();
        t.histogram("d_seconds", "D.", h.snapshot());
        let text = t.finish();
        assert!(text.contains("d_seconds_bucket{le=\"0.0025\"} 1\n"), "{text}");
        assert!(text.contains("d_seconds_bucket{le=\"+Inf\"} 1\nd_seconds_sum 0.002\nd_seconds_count 1\n"), "{text}");
    }
}
