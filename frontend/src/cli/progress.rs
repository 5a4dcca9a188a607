//! Rendering build events: BuildKit-style numbered lines (`plain`), a live view (`tty`), or
//! nothing (`quiet`).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use forge::Event;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    Auto,
    Tty,
    Plain,
    Quiet,
}

impl ProgressMode {
    /// `auto` is a live view on a terminal, plain lines otherwise (and under CI).
    pub fn resolve(self) -> ProgressMode {
        use std::io::IsTerminal;
        match self {
            ProgressMode::Auto => {
                if std::io::stderr().is_terminal() && std::env::var_os("CI").is_none() {
                    ProgressMode::Tty
                } else {
                    ProgressMode::Plain
                }
            }
            m => m,
        }
    }
}

/// Plain rendering: `#N [stage i/n] INSTR`, log lines prefixed with `#N <seconds>`,
/// `#N CACHED`, `#N DONE 0.3s`.
pub struct Plain {
    start: Instant,
    explain: bool,
    step_start: Mutex<HashMap<usize, Instant>>,
}

impl Plain {
    pub fn new(explain: bool) -> Plain {
        Plain { start: Instant::now(), explain, step_start: Mutex::new(HashMap::new()) }
    }

    pub fn handle(&self, e: &Event) {
        let mut err = std::io::stderr().lock();
        let _ = match e {
            Event::StepStarted { id, name } => {
                self.step_start.lock().unwrap_or_else(|p| p.into_inner()).insert(*id, Instant::now());
                writeln!(err, "#{id} {name}")
            }
            Event::StepCached { id } => writeln!(err, "#{id} CACHED"),
            Event::Explain { id, reason } if self.explain => writeln!(err, "#{id} cache miss: {reason}"),
            Event::Explain { .. } => Ok(()),
            Event::Log { id, line, .. } => {
                let t = self
                    .step_start
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(id)
                    .map(|s| s.elapsed())
                    .unwrap_or_else(|| self.start.elapsed());
                writeln!(err, "#{id} {:.3} {line}", t.as_secs_f64())
            }
            Event::Progress { .. } => Ok(()),
            Event::StepDone { id, duration, cached } => {
                if *cached {
                    Ok(())
                } else {
                    writeln!(err, "#{id} DONE {:.1}s", duration.as_secs_f64())
                }
            }
            Event::StepFailed { id, message } => writeln!(err, "#{id} ERROR: {message}"),
            Event::Warning { message } => writeln!(err, "WARNING: {message}"),
        };
    }
}

struct Line {
    name: String,
    last_log: String,
    started: Instant,
    done: Option<(Duration, bool)>,
    bar: indicatif::ProgressBar,
}

/// The live view: one line per running step with its last log line and elapsed time.
pub struct Tty {
    multi: indicatif::MultiProgress,
    lines: Mutex<HashMap<usize, Line>>,
    explain: bool,
}

impl Tty {
    pub fn new(explain: bool) -> Tty {
        Tty { multi: indicatif::MultiProgress::new(), lines: Mutex::new(HashMap::new()), explain }
    }

    fn style() -> indicatif::ProgressStyle {
        indicatif::ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner())
    }

    fn bytes_style() -> indicatif::ProgressStyle {
        indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:20}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    }

    fn refresh(line: &Line) {
        let elapsed = line.started.elapsed().as_secs_f64();
        let msg = match line.done {
            Some((_, true)) => format!("{} CACHED", line.name),
            Some((d, false)) => format!("{} {:.1}s", line.name, d.as_secs_f64()),
            None if line.last_log.is_empty() => format!("{} {elapsed:.1}s", line.name),
            None => format!("{} {elapsed:.1}s\n    {}", line.name, line.last_log),
        };
        line.bar.set_message(msg);
    }

    pub fn handle(&self, e: &Event) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        match e {
            Event::StepStarted { id, name } => {
                let bar = self.multi.add(indicatif::ProgressBar::new_spinner());
                bar.set_style(Self::style());
                bar.enable_steady_tick(Duration::from_millis(120));
                let line = Line { name: format!("[+] #{id} {name}"), last_log: String::new(), started: Instant::now(), done: None, bar };
                Self::refresh(&line);
                lines.insert(*id, line);
            }
            Event::Log { id, line, .. } => {
                if let Some(l) = lines.get_mut(id) {
                    l.last_log = line.chars().take(120).collect();
                    Self::refresh(l);
                }
            }
            Event::Progress { id, current, total } => {
                if let Some(l) = lines.get_mut(id) {
                    if l.bar.length() != Some(*total) {
                        l.bar.set_style(Self::bytes_style());
                        l.bar.set_length(*total);
                    }
                    l.bar.set_position(*current);
                }
            }
            Event::StepCached { .. } => {}
            Event::Explain { id, reason } => {
                if self.explain {
                    let name = lines.get(id).map(|l| l.name.clone()).unwrap_or_default();
                    let _ = self.multi.println(format!("{name}: cache miss: {reason}"));
                }
            }
            Event::StepDone { id, duration, cached } => {
                if let Some(l) = lines.get_mut(id) {
                    l.done = Some((*duration, *cached));
                    l.last_log.clear();
                    Self::refresh(l);
                    l.bar.finish();
                }
            }
            Event::StepFailed { id, message } => {
                if let Some(l) = lines.get_mut(id) {
                    l.bar.abandon_with_message(format!("{} ERROR: {message}", l.name));
                }
            }
            Event::Warning { message } => {
                let _ = self.multi.println(format!("WARNING: {message}"));
            }
        }
    }
}
