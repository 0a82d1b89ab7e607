//! Progress of long admin commands on stderr: a bar (indicatif) when stderr is a
//! terminal, plain lines every few seconds otherwise (logs, CI), and one closing line
//! either way. Stdout stays the command's result.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vbs_engine::Progress;

/// How often a plain line is printed when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Shows one operation's progress until [`Shown::finish`].
pub struct Shown {
    bar: Option<ProgressBar>,
    task: tokio::task::JoinHandle<()>,
    label: &'static str,
    started: Instant,
}

fn mib(bytes: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let b = bytes as f64;
    b / 1_048_576.0
}

/// Bytes through an engine operation (`backup`, `restore`).
pub fn bytes(label: &'static str, progress: Arc<Progress>) -> Shown {
    let started = Instant::now();
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:40}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(label);
        let b = bar.clone();
        let task = tokio::spawn(async move {
            loop {
                let v = progress.view();
                b.set_length(v.bytes_total.max(v.bytes_done));
                b.set_position(v.bytes_done);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Shown {
            bar: Some(bar),
            task,
            label,
            started,
        }
    } else {
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(PLAIN_EVERY).await;
                let v = progress.view();
                eprintln!(
                    "{label}: {:.1} MiB of {:.1} MiB, {:.1} MiB/s",
                    mib(v.bytes_done),
                    mib(v.bytes_total),
                    mib(v.bytes_per_second)
                );
            }
        });
        Shown {
            bar: None,
            task,
            label,
            started,
        }
    }
}

/// Items through a loop (`verify`: backups), advanced with [`Shown::step`].
pub fn items(label: &'static str, total: u64) -> Shown {
    let started = Instant::now();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(label);
        bar
    });
    Shown {
        bar,
        task: tokio::spawn(async {}),
        label,
        started,
    }
}

/// Something without a measure (`gc`, `import-backups`): a spinner, or a line.
pub fn spinner(label: &'static str) -> Shown {
    let started = Instant::now();
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{prefix} {spinner} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(label);
        bar.enable_steady_tick(Duration::from_millis(120));
        Shown {
            bar: Some(bar),
            task: tokio::spawn(async {}),
            label,
            started,
        }
    } else {
        eprintln!("{label}: started");
        Shown {
            bar: None,
            task: tokio::spawn(async {}),
            label,
            started,
        }
    }
}

impl Shown {
    /// One more item done, named `what`.
    pub fn step(&self, what: &str) {
        match &self.bar {
            Some(b) => {
                b.set_message(what.to_owned());
                b.inc(1);
            }
            None => eprintln!("{}: {what}", self.label),
        }
    }

    /// Ends the display with one line saying how it went.
    pub fn finish(self, outcome: &str) {
        self.task.abort();
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        eprintln!(
            "{}: {outcome} in {:.1} s",
            self.label,
            self.started.elapsed().as_secs_f64()
        );
    }
}
