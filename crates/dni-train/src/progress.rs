//! Live progress: an indicatif bar with the latest metrics on a terminal, plain log lines otherwise
//! (CI logs and redirected output would fill up with bar redraws).

use std::fmt::Display;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A bar when stderr is a terminal, else lines.
    Auto,
    Bar,
    Lines,
    /// Nothing (tests).
    #[cfg(test)]
    Quiet,
}

/// Named metric values in display order, e.g. `level N=3`, `bits 0.120`.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    items: Vec<(String, String)>,
}

impl Metrics {
    pub fn new() -> Self {
        Metrics::default()
    }

    /// Adds `name value`; format floats before passing them to choose the precision.
    pub fn push(&mut self, name: &str, value: impl Display) -> &mut Self {
        self.items.push((name.to_string(), value.to_string()));
        self
    }

    /// `name value | name value`.
    pub fn text(&self) -> String {
        self.items
            .iter()
            .map(|(n, v)| format!("{n} {v}"))
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

/// Progress over a known number of steps.
pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    title: String,
    total: u64,
    started: Instant,
    last_line: Option<Instant>,
    /// Line mode prints at most one line per interval (plus the last step), whatever the log rate.
    line_interval: Duration,
}

impl Progress {
    /// A bar on a terminal, lines otherwise.
    pub fn new(title: &str, total_steps: u64) -> Progress {
        Progress::with_mode(title, total_steps, Mode::Auto)
    }

    pub fn with_mode(title: &str, total_steps: u64, mode: Mode) -> Progress {
        let mode = match mode {
            Mode::Auto if std::io::stderr().is_terminal() => Mode::Bar,
            Mode::Auto => Mode::Lines,
            m => m,
        };
        let bar = (mode == Mode::Bar).then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total_steps), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} ({eta}) {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style.progress_chars("=> "));
            bar.set_prefix(title.to_string());
            bar
        });
        Progress {
            bar,
            lines: mode == Mode::Lines,
            title: title.to_string(),
            total: total_steps,
            started: Instant::now(),
            last_line: None,
            line_interval: Duration::from_secs(2),
        }
    }

    /// Line mode: at most one line per `interval` (default 2 s), e.g. for hour-long sweeps.
    pub fn every(mut self, interval: Duration) -> Progress {
        self.line_interval = interval;
        self
    }

    /// Moves the bar to `step` (cheap; call every step). Line mode waits for [`Progress::update`].
    pub fn set_step(&self, step: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(step);
        }
    }

    /// Shows the latest metrics at `step`.
    pub fn update(&mut self, step: u64, metrics: &Metrics) {
        if let Some(bar) = &self.bar {
            bar.set_position(step);
            bar.set_message(metrics.text());
        } else if self.lines {
            let due = self
                .last_line
                .is_none_or(|t| t.elapsed() >= self.line_interval);
            if due || step >= self.total {
                self.last_line = Some(Instant::now());
                eprintln!("{}", self.line(step, metrics));
            }
        }
    }

    /// One log line: `[title] step 150/3000 (5%) 12.3s | level N=3 | bits 0.120`.
    fn line(&self, step: u64, metrics: &Metrics) -> String {
        let pct = (100 * step).checked_div(self.total).unwrap_or(100);
        let mut s = format!(
            "[{}] step {step}/{} ({pct}%) {:.1}s",
            self.title,
            self.total,
            self.started.elapsed().as_secs_f64()
        );
        let m = metrics.text();
        if !m.is_empty() {
            s.push_str(" | ");
            s.push_str(&m);
        }
        s
    }

    /// Prints a message without breaking the bar (e.g. "level passed", evaluation results).
    pub fn println(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.println(msg),
            None if self.lines => eprintln!("[{}] {msg}", self.title),
            None => {}
        }
    }

    /// Ends the display with a final message.
    pub fn finish(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.finish_with_message(msg.to_string()),
            None if self.lines => eprintln!("[{}] done: {msg}", self.title),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_text_and_line_format() {
        let mut m = Metrics::new();
        m.push("level", "N=3")
            .push("bits", format!("{:.3}", 0.1204));
        assert_eq!(m.text(), "level N=3 | bits 0.120");
        let p = Progress::with_mode("copy-dni-T5", 3000, Mode::Quiet);
        let line = p.line(150, &m);
        assert!(
            line.starts_with("[copy-dni-T5] step 150/3000 (5%) "),
            "{line}"
        );
        assert!(line.ends_with("s | level N=3 | bits 0.120"), "{line}");
    }
}
