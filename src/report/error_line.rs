//! The one line an error is printed as. anyhow's `{:#}` joins the causes with ": ", but a
//! cause may span lines: candle appends its backtrace to its message when `RUST_BACKTRACE`
//! is set, and some readers quote multi-line text. Each cause contributes its first
//! non-empty line, so the README's "one line" holds whatever the environment.

/// `e` and its causes on one line, `cause: cause: ...`.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let first = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("")
            .to_string();
        // A context that formatted its cause inline already holds that cause's first line.
        if first.is_empty() || parts.last().is_some_and(|p| p.ends_with(&first)) {
            continue;
        }
        parts.push(first);
    }
    parts.join(": ")
}
