//! Progress on stderr: a bar on a terminal; elsewhere (a log file, a pipe, a batch job) a
//! plain line every few seconds, as cargo and pip do, so a long run is never silent.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a line is written when stderr is not a terminal (and after how long the first).
pub const LINE_EVERY: Duration = Duration::from_secs(5);

/// A progress bar of `len` steps counted in `unit` (`points`, `runs`), labelled `what`;
/// hidden unless `show`.
pub fn bar(len: usize, show: bool, what: &str, unit: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let terminal = std::io::stderr().is_terminal();
    let (pb, template) = if terminal {
        (
            ProgressBar::new(len as u64),
            format!("{{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit}, {{per_sec}}, eta {{eta}}"),
        )
    } else {
        (
            ProgressBar::with_draw_target(
                Some(len as u64),
                ProgressDrawTarget::term_like(Box::new(Lines::new())),
            ),
            format!("{{msg}}: {{pos}}/{{len}} {unit}, {{per_sec}}, eta {{eta}}"),
        )
    };
    pb.set_style(
        ProgressStyle::with_template(&template)
            .expect("a valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// A draw target that writes the bar's text as a line on stderr at most every
/// [`LINE_EVERY`], the first after [`LINE_EVERY`] (a short run writes nothing).
#[derive(Debug)]
struct Lines {
    state: Mutex<(Instant, String)>,
}

impl Lines {
    fn new() -> Lines {
        Lines {
            state: Mutex::new((Instant::now(), String::new())),
        }
    }
}

impl TermLike for Lines {
    fn width(&self) -> u16 {
        // Wide enough that indicatif never wraps a line.
        500
    }

    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write_str(s)?;
        self.write_str(" ")
    }

    fn write_str(&self, s: &str) -> std::io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.1.push_str(s);
        Ok(())
    }

    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }

    /// One drawing is complete: written when it is time for a line.
    fn flush(&self) -> std::io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let text = std::mem::take(&mut st.1);
        let text = text.trim();
        if !text.is_empty() && st.0.elapsed() >= LINE_EVERY {
            eprintln!("{text}");
            st.0 = Instant::now();
        }
        Ok(())
    }
}
