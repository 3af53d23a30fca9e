//! Progress of an upload: nothing for one that ends within a second; after
//! that a bar with bytes and rate on a terminal, or a plain line every few
//! seconds when the output is a file or a pipe (CI logs stay readable).

use bytes::Bytes;
use futures_util::stream;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// A transfer shorter than this shows no progress at all.
const QUIET_FOR: Duration = Duration::from_secs(1);
/// Without a terminal, at most one line per this interval.
const PLAIN_EVERY: Duration = Duration::from_secs(5);
const CHUNK: usize = 64 * 1024;

/// `bits` as a multipart part whose bytes report their progress as they
/// are sent.
pub fn upload_part(bits: Vec<u8>, label: &str) -> reqwest::multipart::Part {
    let total = bits.len() as u64;
    let mut meter = Meter::new(label, total, std::io::stderr().is_terminal());
    let bits = Bytes::from(bits);
    let chunks: Vec<Bytes> = (0..bits.len())
        .step_by(CHUNK)
        .map(|start| bits.slice(start..bits.len().min(start + CHUNK)))
        .collect();
    let body = stream::iter(chunks.into_iter().map(move |chunk| {
        meter.advance(chunk.len() as u64);
        Ok::<_, std::io::Error>(chunk)
    }));
    reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(body), total)
}

/// Counts bytes and decides what to show.
struct Meter {
    label: String,
    total: u64,
    sent: u64,
    started: Instant,
    terminal: bool,
    bar: Option<ProgressBar>,
    last_line: Option<Instant>,
}

impl Meter {
    fn new(label: &str, total: u64, terminal: bool) -> Meter {
        Meter {
            label: label.to_string(),
            total,
            sent: 0,
            started: Instant::now(),
            terminal,
            bar: None,
            last_line: None,
        }
    }

    fn advance(&mut self, n: u64) {
        self.sent += n;
        let now = Instant::now();
        if now.duration_since(self.started) < QUIET_FOR {
            return;
        }
        let done = self.sent >= self.total;
        if self.terminal {
            let bar = self.bar.get_or_insert_with(|| {
                let bar = ProgressBar::with_draw_target(
                    Some(self.total),
                    ProgressDrawTarget::stderr(),
                );
                bar.set_style(
                    ProgressStyle::with_template(
                        " {msg} {bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_message(self.label.clone());
                bar
            });
            bar.set_position(self.sent);
            if done {
                bar.finish();
            }
        } else if done
            || self
                .last_line
                .is_none_or(|t| now.duration_since(t) >= PLAIN_EVERY)
        {
            self.last_line = Some(now);
            eprintln!("{}", self.plain_line(now));
        }
    }

    /// `Uploading app files: 12.0 MiB of 40.0 MiB (5.0 MiB/s)`.
    fn plain_line(&self, now: Instant) -> String {
        let seconds = now.duration_since(self.started).as_secs_f64().max(0.001);
        let mib = |b: f64| b / (1024.0 * 1024.0);
        format!(
            "{}: {:.1} MiB of {:.1} MiB ({:.1} MiB/s)",
            self.label,
            mib(self.sent as f64),
            mib(self.total as f64),
            mib(self.sent as f64 / seconds)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_transfers_show_nothing_and_slow_ones_plain_lines() {
        let mut meter = Meter::new("Uploading app files", 3 << 20, false);
        meter.advance(1 << 20);
        assert!(meter.last_line.is_none(), "nothing within the first second");
        meter.started -= Duration::from_secs(2);
        meter.advance(1 << 20);
        let first = meter.last_line.expect("a line after a second");
        meter.advance(512 << 10);
        assert_eq!(
            meter.last_line,
            Some(first),
            "at most one line per interval"
        );
        meter.advance(512 << 10);
        assert_ne!(meter.last_line, Some(first), "the last bytes print a line");
        let line = meter.plain_line(first + Duration::from_secs(1));
        assert!(
            line.starts_with("Uploading app files: 3.0 MiB of 3.0 MiB ("),
            "{line}"
        );
    }
}
