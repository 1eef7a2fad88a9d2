//! Progress of long commands (`stowage gc`, `balance`, `backup`, `restore`): a spinner with
//! the figures so far on a terminal (indicatif; a bar where the total is known), plain lines on anything else (a log, a pipe, CI), every
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
    watched_with_bar(name, work, move || (status(), None)).await
}

/// Like [`watched`], with a bar where `status()` also tells how much of how much is done.
pub(crate) async fn watched_with_bar<T>(
    name: &str,
    work: impl Future<Output = T>,
    mut status: impl FnMut() -> (String, Option<(u64, u64)>),
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
    let bar_style = ProgressStyle::with_template(
        "{spinner} {prefix}: [{bar:30}] {percent:>3}% {msg} [{elapsed}, {eta} left]",
    )
    .ok()
    .map(|s| s.progress_chars("=> "));
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
                let (now, position) = status();
                match &bar {
                    Some(bar) => {
                        if let (Some((done, total)), Some(style)) = (position, &bar_style)
                            && total > 0
                        {
                            if bar.length() != Some(total) {
                                bar.set_style(style.clone());
                                bar.set_length(total);
                            }
                            bar.set_position(done);
                        }
                        bar.set_message(now);
                    }
                    None if last_line.elapsed() >= PLAIN_EVERY => {
                        eprintln!("{name}: {now}");
                        last_line = Instant::now();
                    }
                    None => {}
                }
            }
        }
    };
    let (last, _) = status();
    match bar {
        Some(bar) => bar.finish_with_message(format!("done: {last}")),
        None => eprintln!("{name}: done: {last}"),
    }
    done
}
