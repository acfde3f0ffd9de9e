//! The Prometheus text exposition format, version 0.0.4 (what Prometheus
//! and `prometheus_client.parser` read), and the histograms behind it.
//!
//! Written here rather than with the `prometheus-client` crate: that crate
//! encodes OpenMetrics 1.0 (`# EOF`, a counter's TYPE line without its
//! `_total`), not 0.0.4, and the few kinds used here (counter, gauge,
//! histogram with fixed buckets) fit in this file.

use std::fmt::Write as _;
use std::sync::Mutex;

/// Buckets of the write-path latencies: 50 µs to 5 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

/// Buckets of stage durations: a second to a day.
pub const STAGE_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
];

/// Counts of observations per bucket (not cumulative), their sum and count.
#[derive(Debug, Clone, PartialEq)]
pub struct Counts {
    pub bounds: &'static [f64],
    pub buckets: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Counts {
    pub fn new(bounds: &'static [f64]) -> Counts {
        Counts {
            bounds,
            buckets: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.buckets[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }
}

/// A histogram shared between threads (one short lock per observation).
#[derive(Debug)]
pub struct Histogram(Mutex<Counts>);

impl Histogram {
    pub const fn new(bounds: &'static [f64]) -> Histogram {
        Histogram(Mutex::new(Counts {
            bounds,
            buckets: Vec::new(),
            sum: 0.0,
            count: 0,
        }))
    }

    /// Records one duration.
    pub fn observe(&self, d: std::time::Duration) {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if c.buckets.len() != c.bounds.len() {
            c.buckets = vec![0; c.bounds.len()];
        }
        c.observe(d.as_secs_f64());
    }

    /// Runs `f`, observing how long it took.
    pub fn time<T>(&self, f: impl FnOnce() -> T) -> T {
        let began = std::time::Instant::now();
        let out = f();
        self.observe(began.elapsed());
        out
    }

    pub fn counts(&self) -> Counts {
        let c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = c.clone();
        out.buckets.resize(out.bounds.len(), 0);
        out
    }
}

/// The kinds of metric families written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// An exposition being written.
#[derive(Debug, Default)]
pub struct Text(String);

impl Text {
    /// Starts a family: its HELP and TYPE lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample line.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.0, "{k}=\"{v}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", number(value));
    }

    /// The `_bucket` (cumulative, `le` last), `_sum` and `_count` samples
    /// of one histogram.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], c: &Counts) {
        let bucket = format!("{name}_bucket");
        let mut seen = 0;
        for (bound, n) in c.bounds.iter().zip(&c.buckets) {
            seen += n;
            let le = number(*bound);
            let mut with = labels.to_vec();
            with.push(("le", &le));
            self.sample(&bucket, &with, seen as f64);
        }
        let mut with = labels.to_vec();
        with.push(("le", "+Inf"));
        self.sample(&bucket, &with, c.count as f64);
        self.sample(&format!("{name}_sum"), labels, c.sum);
        self.sample(&format!("{name}_count"), labels, c.count as f64);
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A sample value: integers without a fraction, `+Inf`/`-Inf`/`NaN` as
/// the format spells them.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_histograms_are_laid_out_as_0_0_4() {
        let mut t = Text::default();
        t.family("ttm_x_total", Kind::Counter, "Things.\nMore");
        t.sample("ttm_x_total", &[("module", "a\"b\\c")], 3.0);
        let mut c = Counts::new(&[0.5, 1.0]);
        c.observe(0.25);
        c.observe(0.75);
        c.observe(4.0);
        t.family("ttm_d_seconds", Kind::Histogram, "D.");
        t.histogram("ttm_d_seconds", &[("m", "x")], &c);
        assert_eq!(
            t.into_string(),
            "# HELP ttm_x_total Things.\\nMore\n# TYPE ttm_x_total counter\n\
             ttm_x_total{module=\"a\\\"b\\\\c\"} 3\n\
             # HELP ttm_d_seconds D.\n# TYPE ttm_d_seconds histogram\n\
             ttm_d_seconds_bucket{m=\"x\",le=\"0.5\"} 1\n\
             ttm_d_seconds_bucket{m=\"x\",le=\"1\"} 2\n\
             ttm_d_seconds_bucket{m=\"x\",le=\"+Inf\"} 3\n\
             ttm_d_seconds_sum{m=\"x\"} 5\n\
             ttm_d_seconds_count{m=\"x\"} 3\n"
        );
    }

    #[test]
    fn a_shared_histogram_counts_durations() {
        let h = Histogram::new(LATENCY_BUCKETS);
        h.observe(std::time::Duration::from_millis(2));
        let c = h.counts();
        assert_eq!((c.count, c.buckets.iter().sum::<u64>()), (1, 1));
    }
}
