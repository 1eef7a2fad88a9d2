//! Progress of long commands (`stowage gc`, `stowage balance`): a spinner with the figures so
//! far on a terminal (indicatif), plain lines on anything else (a log, a pipe, CI), every
//! [`PLAIN_EVERY`], always with a first and a last line. On stderr: stdout keeps the report.

use std::future::Future;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often the figures are read.
const TICK: Duration = Duration::from_millis(100);
/// How often a plain line is written.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// Runs `work`, showing `status()` (the figures so far) as it goes, under `name`.
pub(crate) async fn watched<T>(
    name: &str,
    work: impl Future<Output = T>,
    mut status: impl FnMut() -> String,
) -> T {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed}]") {
            bar.set_style(style);
        }
        bar.set_prefix(name.to_string());
        bar.enable_steady_tick(TICK);
        bar
    });
    if bar.is_none() {
        eprintln!("{name}: started");
    }
    tokio::pin!(work);
    let mut ticks = tokio::time::interval(TICK);
    let mut last_line = Instant::now();
    let done = loop {
        tokio::select! {
            done = &mut work => break done,
            _ = ticks.tick() => {
                let now = status();
                match &bar {
                    Some(bar) => bar.set_message(now),
                    None if last_line.elapsed() >= PLAIN_EVERY => {
                        eprintln!("{name}: {now}");
                        last_line = Instant::now();
                    }
                    None => {}
                }
            }
        }
    };
    let last = status();
    match bar {
        Some(bar) => bar.finish_with_message(format!("done: {last}")),
        None => eprintln!("{name}: done: {last}"),
    }
    done
}
