//! Source positions. Every node forge parses keeps the span it came from, so an error found
//! anywhere later (planning, a failed RUN) can point at the Dockerfile text.

/// A region of the Dockerfile source. Lines and columns are 1-based; `start..end` is a byte range
/// into the original source text. A multi-line instruction spans `line..=end_line`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub line: usize,
    pub column: usize,
    pub end_line: usize,
}

impl Span {
    pub fn new(start: usize, end: usize, line: usize, column: usize, end_line: usize) -> Span {
        Span { start, end, line, column, end_line }
    }
}
