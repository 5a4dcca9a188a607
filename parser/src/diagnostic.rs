//! Errors and warnings for people: each names the file, line and column, shows the source line
//! with a caret, and may carry a suggestion.

use std::fmt;

use crate::span::Span;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about a Dockerfile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    pub span: Span,
    /// A hint, such as "did you mean RUN?".
    pub help: Option<String>,
    /// A stable rule name for warnings (e.g. `MaintainerDeprecated`), as BuildKit's checks name them.
    pub rule: Option<&'static str>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>, span: Span) -> Diagnostic {
        Diagnostic { severity: Severity::Error, message: message.into(), span, help: None, rule: None }
    }

    pub fn warning(rule: &'static str, message: impl Into<String>, span: Span) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            message: message.into(),
            span,
            help: None,
            rule: Some(rule),
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// Renders the finding against its source:
    ///
    /// ```text
    /// Dockerfile:3:1: error: unknown instruction: RUNN
    ///   3 | RUNN echo hi
    ///     | ^^^^
    ///   = help: did you mean RUN?
    /// ```
    pub fn render(&self, file: &str, source: &str) -> String {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut out = format!("{file}:{}:{}: {kind}: {}", self.span.line, self.span.column, self.message);
        if let Some(rule) = self.rule {
            out.push_str(&format!(" [{rule}]"));
        }
        out.push('\n');
        if let Some(text) = self.source_line(source) {
            let gutter = self.span.line.to_string();
            let pad = " ".repeat(gutter.len());
            out.push_str(&format!(" {gutter} | {text}\n"));
            let col = self.span.column.max(1);
            let prefix: String = text.chars().take(col - 1).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
            let width = if self.span.end_line == self.span.line && self.span.end > self.span.start {
                source
                    .get(self.span.start..self.span.end)
                    .map(|s| s.chars().count())
                    .unwrap_or(1)
                    .clamp(1, text.chars().count().saturating_sub(col - 1).max(1))
            } else {
                text.chars().count().saturating_sub(col - 1).max(1)
            };
            out.push_str(&format!(" {pad} | {prefix}{}\n", "^".repeat(width)));
            if let Some(help) = &self.help {
                out.push_str(&format!(" {pad} = help: {help}\n"));
            }
        } else if let Some(help) = &self.help {
            out.push_str(&format!("  = help: {help}\n"));
        }
        out
    }
}

impl Diagnostic {
    /// The source line the span starts on. Found from the span's byte offset (so rendering many
    /// findings stays linear), falling back to counting lines when the offset does not fit.
    fn source_line<'s>(&self, source: &'s str) -> Option<&'s str> {
        let start = self.span.start;
        if self.span.line > 0 && start <= source.len() && source.is_char_boundary(start) {
            let line_start = source[..start].rfind('\n').map(|i| i + 1).unwrap_or(0);
            let line_end = source[line_start..].find('\n').map(|i| line_start + i).unwrap_or(source.len());
            let by_offset = source[line_start..line_end].trim_end_matches('\r');
            // The offset must agree with the column; spans built without offsets fall back.
            let col_ok = by_offset.chars().count() + 1 >= self.span.column;
            if (start > 0 || self.span.line == 1) && col_ok {
                return Some(by_offset);
            }
        }
        source.lines().nth(self.span.line.saturating_sub(1))
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}:{}: {}", self.span.line, self.span.column, self.message)?;
        if let Some(help) = &self.help {
            write!(f, " ({help})")?;
        }
        Ok(())
    }
}

/// A Dockerfile that cannot be parsed. Wraps the diagnostic that explains why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{diagnostic}")]
pub struct ParseError {
    pub diagnostic: Diagnostic,
}

impl ParseError {
    pub fn new(message: impl Into<String>, span: Span) -> ParseError {
        ParseError { diagnostic: Diagnostic::error(message, span) }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> ParseError {
        self.diagnostic.help = Some(help.into());
        self
    }

    pub fn span(&self) -> Span {
        self.diagnostic.span
    }

    pub fn render(&self, file: &str, source: &str) -> String {
        self.diagnostic.render(file, source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_caret_under_the_span() {
        let src = "FROM busybox\nRUNN echo hi\n";
        let d = Diagnostic::error("unknown instruction: RUNN", Span::new(13, 17, 2, 1, 2)).with_help("did you mean RUN?");
        let out = d.render("Dockerfile", src);
        assert_eq!(
            out,
            "Dockerfile:2:1: error: unknown instruction: RUNN\n 2 | RUNN echo hi\n   | ^^^^\n   = help: did you mean RUN?\n"
        );
    }
}
