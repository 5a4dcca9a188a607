//! The node tree: BuildKit's first parsing stage.
//!
//! [`parse`] turns Dockerfile text into an [`Ast`]: one [`Node`] per instruction, each holding
//! the lower-cased keyword, the `--flags`, the arguments split the way BuildKit splits them for
//! that keyword, any heredocs, and the [`Span`] of the source it came from. Nothing is validated
//! here beyond what BuildKit's own parser rejects (unknown instructions are kept; the typed
//! conversion in [`crate::parse_dockerfile`] rejects them).
//!
//! The lexer is hand-written and works one physical line at a time, because the escape
//! character may change between lines (`# escape=`), continuation and comment rules depend on
//! the line's position inside an instruction, and heredoc bodies are taken raw, line by line.
//! See the crate documentation for why no parser-combinator library is used here.

use crate::diagnostic::{Diagnostic, ParseError};
use crate::instructions::Directives;
use crate::span::Span;

/// BuildKit reads physical lines with a 64 KiB buffer; a longer line is an error there and here.
pub const MAX_LINE_LEN: usize = 65535;

/// Rule name of the empty-continuation-line warning (BuildKit: `NoEmptyContinuation`).
pub const RULE_EMPTY_CONTINUATION: &str = "NoEmptyContinuation";

/// A parsed Dockerfile at the node level.
#[derive(Clone, Debug, PartialEq)]
pub struct Ast {
    pub directives: Directives,
    /// Every parser directive found at the top of the file, in order.
    pub directive_list: Vec<Directive>,
    pub children: Vec<Node>,
    /// Non-fatal findings (empty continuation lines).
    pub warnings: Vec<Diagnostic>,
    /// From the first instruction's first line to the last instruction's last line.
    pub span: Span,
}

impl Ast {
    /// All top-level nodes in BuildKit's `result` notation, one per line, each ending in `\n`.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for child in &self.children {
            out.push('(');
            out.push_str(&child.dump());
            out.push_str(")\n");
        }
        out
    }
}

/// One parser directive line (`# syntax=…`, `# escape=…`, `# check=…`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    /// Lower-cased name.
    pub name: String,
    /// Trimmed value.
    pub value: String,
    pub span: Span,
}

/// A heredoc attached to a node, as the parser reads it (body raw, not tab-stripped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AstHeredoc {
    /// The delimiter word after quote removal.
    pub name: String,
    /// Every body line with its newline.
    pub content: String,
    /// False when any part of the delimiter was quoted.
    pub expand: bool,
    /// `<<-`.
    pub chomp: bool,
    /// The digit(s) before `<<` (0 when absent).
    pub file_descriptor: u32,
}

/// One instruction.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The keyword as written (`RUN`, `run`, `FOO`).
    pub raw_keyword: String,
    /// The keyword lower-cased (Unicode lower-case, as BuildKit does).
    pub keyword: String,
    /// The logical line: physical lines joined after continuation handling.
    pub original: String,
    /// Leading `--flag` words with quotes and escapes removed (a bare `--` ends them).
    pub flags: Vec<String>,
    /// Byte offset into [`Node::original`] where each flag word starts.
    pub flag_offsets: Vec<usize>,
    /// The text after the keyword and the flags, trimmed.
    pub rest: String,
    /// Byte offset of [`Node::rest`] in [`Node::original`].
    pub rest_offset: usize,
    /// The arguments, split as BuildKit splits them for this keyword (see the conformance notes).
    pub args: Vec<String>,
    /// ONBUILD: the wrapped instruction.
    pub nested: Option<Box<Node>>,
    /// The arguments came from a JSON array (exec form).
    pub json: bool,
    pub heredocs: Vec<AstHeredoc>,
    /// Comment lines seen since the previous instruction (text after `#`, trimmed).
    pub comments: Vec<String>,
    /// First physical line through the last one consumed (continuations, heredoc bodies).
    pub span: Span,
    /// Where the keyword sits.
    pub keyword_span: Span,
    /// Maps byte offsets of `original` back to the source: `(offset in original, offset in
    /// source, line, column of that source offset)` for the start of each joined piece.
    pieces: Vec<Piece>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    logical: usize,
    source: usize,
    line: usize,
    column: usize,
}

impl Node {
    /// This node in BuildKit's `result` notation (without the outer parentheses).
    pub fn dump(&self) -> String {
        let mut out = self.keyword.to_lowercase();
        if !self.flags.is_empty() {
            out.push_str(" [");
            for (i, f) in self.flags.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(&go_quote(f));
            }
            out.push(']');
        }
        if let Some(nested) = &self.nested {
            out.push_str(" (");
            out.push_str(&nested.dump());
            out.push(')');
        }
        for a in &self.args {
            out.push(' ');
            out.push_str(&go_quote(a));
        }
        out.trim_matches(char::is_whitespace).to_string()
    }

    /// The span of `range` (byte offsets into [`Node::original`]) in the source. Ranges that
    /// cross a continuation are cut at the end of the first physical piece.
    pub fn span_of(&self, range: std::ops::Range<usize>) -> Span {
        let Some(piece) = self
            .pieces
            .iter()
            .rev()
            .find(|p| p.logical <= range.start)
            .copied()
        else {
            return self.keyword_span;
        };
        let next_logical = self
            .pieces
            .iter()
            .find(|p| p.logical > range.start)
            .map(|p| p.logical)
            .unwrap_or(usize::MAX);
        let end_logical = range.end.max(range.start).min(next_logical);
        let start = piece.source + (range.start - piece.logical);
        let end = piece.source + (end_logical - piece.logical);
        let prefix = self.original.get(piece.logical..range.start).unwrap_or("");
        let column = piece.column + prefix.chars().count();
        Span::new(start, end, piece.line, column, piece.line)
    }

    /// The span of the first occurrence of `needle` in the arguments text (or else anywhere
    /// after the keyword), or of the whole instruction when it cannot be found.
    pub fn span_of_text(&self, needle: &str) -> Span {
        if !needle.is_empty() {
            let kw_end = self
                .keyword_span
                .end
                .saturating_sub(self.keyword_span.start);
            for from in [self.rest_offset, kw_end] {
                if let Some(pos) = self.original.get(from..).and_then(|tail| tail.find(needle)) {
                    let s = from + pos;
                    return self.span_of(s..s + needle.len());
                }
            }
        }
        self.span
    }

    /// The span of flag number `i`.
    pub fn flag_span(&self, i: usize) -> Span {
        match (self.flag_offsets.get(i), self.flags.get(i)) {
            (Some(&off), Some(flag)) => {
                let tail = self.original.get(off..).unwrap_or("");
                let len = tail
                    .find(char::is_whitespace)
                    .unwrap_or(tail.len())
                    .max(flag.len().min(tail.len()));
                self.span_of(off..off + len)
            }
            _ => self.keyword_span,
        }
    }
}

/// Which physical-line reader state we are in; kept small so [`parse`] stays readable.
struct Lines<'a> {
    source: &'a str,
    /// Byte offset of the next unread line.
    pos: usize,
    /// 1-based number of the last line read.
    number: usize,
}

struct PhysLine<'a> {
    /// The line with its trailing newline (heredoc bodies keep it).
    raw: &'a str,
    /// Without trailing `\r`/`\n` characters.
    text: &'a str,
    start: usize,
    number: usize,
}

impl<'a> Lines<'a> {
    fn next_line(&mut self) -> Option<PhysLine<'a>> {
        if self.pos >= self.source.len() {
            return None;
        }
        let mut start = self.pos;
        let rest = &self.source[start..];
        let len = rest.find('\n').map(|i| i + 1).unwrap_or(rest.len());
        let mut raw = &rest[..len];
        self.pos += len;
        self.number += 1;
        if start == 0 {
            if let Some(stripped) = raw.strip_prefix('\u{feff}') {
                raw = stripped;
                start += '\u{feff}'.len_utf8();
            }
        }
        let text = raw.trim_end_matches(['\r', '\n']);
        Some(PhysLine {
            raw,
            text,
            start,
            number: self.number,
        })
    }
}

/// Column (1-based, in characters) of byte offset `off` within `line` that starts at `line_start`.
fn column_in(line: &str, off_in_line: usize) -> usize {
    line.get(..off_in_line)
        .map(|s| s.chars().count())
        .unwrap_or(0)
        + 1
}

fn line_span(line: &PhysLine<'_>) -> Span {
    Span::new(
        line.start,
        line.start + line.text.len(),
        line.number,
        1,
        line.number,
    )
}

/// Recognises parser directives at the top of a file, as BuildKit's directive parser does.
#[derive(Default)]
struct DirectiveScanner {
    done: bool,
    lines_seen: usize,
    found: Vec<Directive>,
}

impl DirectiveScanner {
    /// Feeds one line (already left-trimmed for first lines). Returns the directive if the line
    /// is one.
    fn feed(&mut self, text: &str, span: Span) -> Result<Option<Directive>, ParseError> {
        self.lines_seen += 1;
        if self.done {
            return Ok(None);
        }
        if self.lines_seen == 1 && text.starts_with("#!") {
            return Ok(None);
        }
        let Some((name, value)) = split_directive(text) else {
            self.done = true;
            return Ok(None);
        };
        let name = name.to_ascii_lowercase();
        if !matches!(name.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(None);
        }
        if self.found.iter().any(|d| d.name == name) {
            return Err(ParseError::new(
                format!("only one {name} parser directive can be used"),
                span,
            ));
        }
        let d = Directive {
            name,
            value: value.to_string(),
            span,
        };
        self.found.push(d.clone());
        Ok(Some(d))
    }
}

/// `#` + blanks + NAME + blanks + `=` + blanks + VALUE, VALUE trimmed and non-empty.
fn split_directive(text: &str) -> Option<(&str, &str)> {
    let body = text
        .strip_prefix('#')?
        .trim_start_matches(is_go_regex_space);
    let name_len = body
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map(|(i, _)| i)
        .unwrap_or(body.len());
    if name_len == 0 {
        return None;
    }
    let (name, after) = body.split_at(name_len);
    let after = after
        .trim_start_matches(is_go_regex_space)
        .strip_prefix('=')?;
    let value = after.trim_matches(is_go_regex_space);
    if value.is_empty() {
        return None;
    }
    Some((name, value))
}

/// Go's regexp `\s`: `[\t\n\f\r ]`.
fn is_go_regex_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ')
}

/// The whitespace BuildKit splits instruction words on: `[\t\v\f\r ]`.
fn is_split_space(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

/// Reads only the parser directives at the top of `source` (the file need not contain any
/// instruction). Scanning stops at the first line that is not a known directive.
pub fn parse_directives(source: &str) -> Result<Vec<Directive>, ParseError> {
    let mut lines = Lines {
        source,
        pos: 0,
        number: 0,
    };
    let mut scanner = DirectiveScanner::default();
    while let Some(line) = lines.next_line() {
        let trimmed = line.text.trim_start_matches(char::is_whitespace);
        scanner.feed(trimmed, line_span(&line))?;
        if scanner.done {
            break;
        }
    }
    Ok(scanner.found)
}

/// A `# syntax=` (or `# check=`) directive as found by [`detect_directive`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectedDirective {
    /// The value up to the first space (the frontend image reference for `syntax`).
    pub reference: String,
    /// The whole value.
    pub cmdline: String,
    /// 1-based line.
    pub line: usize,
}

/// Finds the `syntax` or `check` directive the way BuildKit's detection does: the directive
/// block at the top (a `#!` first line is skipped), and for `syntax` only, two fallbacks: C-style
/// `//syntax=` lines and a whole-file JSON object with a string `syntax` member.
pub fn detect_directive(source: &str, name: &str) -> Option<DetectedDirective> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let wanted = name.to_ascii_lowercase();
    let make = |value: &str, line: usize| DetectedDirective {
        reference: value.split(' ').next().unwrap_or("").to_string(),
        cmdline: value.to_string(),
        line,
    };
    // `#` directives.
    for (i, text) in source.split('\n').enumerate() {
        let text = text
            .trim_end_matches(['\r', '\n'])
            .trim_start_matches(char::is_whitespace);
        if i == 0 && text.starts_with("#!") {
            continue;
        }
        match split_directive(text) {
            Some((n, v)) if n.eq_ignore_ascii_case(&wanted) => return Some(make(v, i + 1)),
            Some((n, _))
                if matches!(
                    n.to_ascii_lowercase().as_str(),
                    "syntax" | "escape" | "check"
                ) =>
            {
                continue
            }
            _ => break,
        }
    }
    if wanted != "syntax" {
        return None;
    }
    // `//` directives.
    for (i, text) in source.split('\n').enumerate() {
        let text = text
            .trim_end_matches(['\r', '\n'])
            .trim_start_matches(char::is_whitespace);
        if i == 0 && text.starts_with("#!") {
            continue;
        }
        let Some(body) = text.strip_prefix("//") else {
            break;
        };
        let fake = format!("#{body}");
        match split_directive(&fake) {
            Some((n, v)) if n.eq_ignore_ascii_case("syntax") => return Some(make(v, i + 1)),
            Some(_) => continue,
            None => break,
        }
    }
    // A JSON object.
    let trimmed = source.trim();
    if trimmed.starts_with('{') {
        if let Some(v) = json::object_string_member(trimmed, "syntax") {
            return Some(make(&v, 1));
        }
    }
    None
}

/// Parses Dockerfile text into nodes.
///
/// ```
/// let ast = forge_parser::ast::parse("FROM alpine\nRUN echo hi \\\n  there\n").unwrap();
/// assert_eq!(ast.dump(), "(from \"alpine\")\n(run \"echo hi   there\")\n");
/// ```
pub fn parse(source: &str) -> Result<Ast, ParseError> {
    let mut lines = Lines {
        source,
        pos: 0,
        number: 0,
    };
    let mut directives = Directives::default();
    let mut scanner = DirectiveScanner::default();
    let mut children: Vec<Node> = Vec::new();
    let mut warnings = Vec::new();
    let mut comments: Vec<String> = Vec::new();

    while let Some(first) = lines.next_line() {
        check_len(&first)?;
        let lead = first.text.len() - first.text.trim_start_matches(char::is_whitespace).len();
        let trimmed = &first.text[lead..];
        let is_comment = trimmed.starts_with('#');
        let directive = scanner.feed(trimmed, line_span(&first))?;
        if let Some(d) = &directive {
            apply_directive(&mut directives, d)?;
        }
        if is_comment {
            if directive.is_none() {
                let text = trimmed[1..].trim();
                if text.is_empty() {
                    comments.clear();
                } else {
                    comments.push(text.to_string());
                }
            }
            continue;
        }
        let escape = directives.escape;
        let (logical, mut ended) = trim_continuation(trimmed, escape);
        if ended && logical.is_empty() {
            continue;
        }
        let mut pieces = vec![Piece {
            logical: 0,
            source: first.start + lead,
            line: first.number,
            column: column_in(first.text, lead),
        }];
        let mut last_line = first.number;
        let mut last_end = first.start + first.text.len();
        let mut empty_continuation = false;
        let mut logical = logical.to_string();
        while !ended {
            let Some(next) = lines.next_line() else { break };
            check_len(&next)?;
            scanner.feed(next.text, line_span(&next))?;
            last_line = next.number;
            last_end = next.start + next.text.len();
            let body = next.text.trim_start_matches(char::is_whitespace);
            if body.starts_with('#') {
                continue;
            }
            if body.is_empty() {
                empty_continuation = true;
                continue;
            }
            let (piece, done) = trim_continuation(next.text, escape);
            pieces.push(Piece {
                logical: logical.len(),
                source: next.start,
                line: next.number,
                column: 1,
            });
            logical.push_str(piece);
            ended = done;
        }

        let keyword_start = pieces[0].source;
        let mut node = node_from_line(&logical, escape, std::mem::take(&mut comments), &pieces, 0)
            .map_err(|e| relocate(e, &pieces, first.number, last_line, keyword_start, last_end))?;

        if empty_continuation {
            warnings.push(
                Diagnostic::warning(
                    RULE_EMPTY_CONTINUATION,
                    format!("Empty continuation line found in: {logical}"),
                    Span::new(
                        keyword_start,
                        last_end,
                        first.number,
                        pieces[0].column,
                        last_line,
                    ),
                )
                .with_help("Empty continuation lines will become errors in a future release"),
            );
        }

        if node.can_contain_heredoc() && logical.contains("<<") {
            let docs = heredocs_from_line(&logical).map_err(|msg| {
                ParseError::new(
                    msg,
                    Span::new(
                        keyword_start,
                        last_end,
                        first.number,
                        pieces[0].column,
                        last_line,
                    ),
                )
            })?;
            for mut doc in docs {
                let mut terminated = false;
                while let Some(body) = lines.next_line() {
                    last_line = body.number;
                    last_end = body.start + body.text.len();
                    let candidate = if doc.chomp {
                        body.text.trim_start_matches('\t')
                    } else {
                        body.text
                    };
                    if candidate == doc.name {
                        terminated = true;
                        break;
                    }
                    doc.content.push_str(body.raw);
                }
                if !terminated {
                    return Err(ParseError::new(
                        format!("unterminated heredoc {}", doc.name),
                        Span::new(
                            keyword_start,
                            last_end,
                            first.number,
                            pieces[0].column,
                            last_line,
                        ),
                    )
                    .with_help(format!(
                        "add a line holding only `{}` to end the heredoc",
                        doc.name
                    )));
                }
                node.heredocs.push(doc);
            }
        }

        node.span = Span::new(
            keyword_start,
            last_end,
            first.number,
            pieces[0].column,
            last_line,
        );
        children.push(node);
    }

    let Some(first) = children.first() else {
        let end = source.len();
        return Err(ParseError::new(
            "file with no instructions",
            Span::new(end, end, lines.number.max(1), 1, lines.number.max(1)),
        ));
    };
    let last = children.last().map(|n| n.span).unwrap_or(first.span);
    let span = Span::new(
        first.span.start,
        last.end,
        first.span.line,
        first.span.column,
        last.end_line,
    );
    Ok(Ast {
        directives,
        directive_list: scanner.found,
        children,
        warnings,
        span,
    })
}

fn check_len(line: &PhysLine<'_>) -> Result<(), ParseError> {
    if line.text.len() > MAX_LINE_LEN {
        return Err(ParseError::new(
            format!("dockerfile line greater than max allowed size of {MAX_LINE_LEN}"),
            Span::new(line.start, line.start, line.number, 1, line.number),
        ));
    }
    Ok(())
}

fn apply_directive(directives: &mut Directives, d: &Directive) -> Result<(), ParseError> {
    match d.name.as_str() {
        "escape" => {
            directives.escape = match d.value.as_str() {
                "`" => '`',
                "\\" => '\\',
                other => {
                    return Err(ParseError::new(
                        format!("invalid escape token '{other}' does not match ` or \\"),
                        d.span,
                    ))
                }
            }
        }
        "syntax" => directives.syntax = Some(d.value.clone()),
        "check" => directives.check = Some(d.value.clone()),
        _ => {}
    }
    Ok(())
}

/// Errors from [`node_from_line`] carry spans relative to the logical line; map them back.
fn relocate(
    mut err: ParseError,
    pieces: &[Piece],
    first_line: usize,
    last_line: usize,
    start: usize,
    end: usize,
) -> ParseError {
    let s = err.diagnostic.span;
    if s == Span::default() {
        let column = pieces.first().map(|p| p.column).unwrap_or(1);
        err.diagnostic.span = Span::new(start, end, first_line, column, last_line);
    }
    err
}

/// Removes a trailing continuation escape. Returns the kept text and whether the line ended
/// the instruction (no continuation).
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let body = line.trim_end_matches([' ', '\t']);
    let Some(before) = body.strip_suffix(escape) else {
        return (line, true);
    };
    if before.is_empty() {
        return ("", false);
    }
    if before.ends_with(escape) {
        return (line, true);
    }
    (before, false)
}

/// How deep `ONBUILD ONBUILD …` may nest in the node tree. BuildKit rejects any chaining one
/// stage later; the limit only keeps recursion (parse, dump, drop) bounded on hostile input.
pub const MAX_ONBUILD_NESTING: usize = 8;

fn node_from_line(
    line: &str,
    escape: char,
    comments: Vec<String>,
    pieces: &[Piece],
    depth: usize,
) -> Result<Node, ParseError> {
    let lead = line.len() - line.trim_start_matches(char::is_whitespace).len();
    let trimmed = line.trim_matches(char::is_whitespace);
    let kw_len = trimmed.find(is_split_space).unwrap_or(trimmed.len());
    let raw_keyword = &trimmed[..kw_len];
    let after_kw = trimmed[kw_len..].trim_start_matches(is_split_space);
    let after_kw_offset = lead + (trimmed.len() - after_kw.len());
    let (flags, flag_offsets, rest_rel) = if kw_len < trimmed.len() {
        extract_flags(after_kw)
    } else {
        (Vec::new(), Vec::new(), after_kw.len())
    };
    let rest_untrimmed = &after_kw[rest_rel..];
    let rest_lead =
        rest_untrimmed.len() - rest_untrimmed.trim_start_matches(char::is_whitespace).len();
    let rest = rest_untrimmed.trim_matches(char::is_whitespace);
    let rest_offset = after_kw_offset + rest_rel + rest_lead;
    let keyword = raw_keyword.to_lowercase();

    let mut node = Node {
        raw_keyword: raw_keyword.to_string(),
        keyword: keyword.clone(),
        original: line.to_string(),
        flags,
        flag_offsets: flag_offsets
            .into_iter()
            .map(|o| o + after_kw_offset)
            .collect(),
        rest: rest.to_string(),
        rest_offset,
        args: Vec::new(),
        nested: None,
        json: false,
        heredocs: Vec::new(),
        comments,
        span: Span::default(),
        keyword_span: Span::default(),
        pieces: pieces.to_vec(),
    };
    node.keyword_span = node.span_of(lead..lead + kw_len);
    let kw_span = node.keyword_span;
    let err = |msg: String| ParseError::new(msg, kw_span);

    match keyword.as_str() {
        "run" | "cmd" | "entrypoint" | "shell" => {
            if !rest.is_empty() {
                match json::string_array(rest) {
                    json::ArrayResult::Strings(v) => {
                        node.args = v;
                        node.json = true;
                    }
                    json::ArrayResult::NotStrings => return Err(err(NOT_STRING_ARRAY.to_string())),
                    json::ArrayResult::NotJson => node.args = vec![rest.to_string()],
                }
            }
        }
        "add" | "copy" | "volume" => match json::string_array(rest) {
            json::ArrayResult::Strings(v) => {
                node.args = v;
                node.json = true;
            }
            json::ArrayResult::NotStrings => return Err(err(NOT_STRING_ARRAY.to_string())),
            json::ArrayResult::NotJson => node.args = split_whitespace(rest),
        },
        "from" | "expose" => node.args = split_whitespace(rest),
        "maintainer" | "user" | "workdir" | "stopsignal" => {
            if !rest.is_empty() {
                node.args = vec![rest.to_string()];
            }
        }
        "env" | "label" => {
            node.args = parse_name_val(rest, &raw_keyword.to_uppercase(), escape).map_err(err)?
        }
        "arg" => node.args = parse_words(rest, escape),
        "healthcheck" => {
            let typ_len = rest.find(char::is_whitespace).unwrap_or(rest.len());
            if typ_len > 0 {
                let cmd = rest[typ_len..].trim_start_matches(char::is_whitespace);
                node.args.push(rest[..typ_len].to_string());
                if !cmd.is_empty() {
                    match json::string_array(cmd) {
                        json::ArrayResult::Strings(v) => {
                            node.args.extend(v);
                            node.json = true;
                        }
                        json::ArrayResult::NotStrings => {
                            return Err(err(NOT_STRING_ARRAY.to_string()))
                        }
                        json::ArrayResult::NotJson => node.args.push(cmd.to_string()),
                    }
                }
            }
        }
        "onbuild" => {
            if !rest.is_empty() {
                let sub: Vec<Piece> = shift_pieces(pieces, rest_offset, line);
                if depth >= MAX_ONBUILD_NESTING {
                    return Err(err(format!(
                        "ONBUILD nested more than {MAX_ONBUILD_NESTING} levels deep"
                    )));
                }
                let inner = node_from_line(rest, escape, Vec::new(), &sub, depth + 1)?;
                node.json = inner.json;
                node.nested = Some(Box::new(inner));
            }
        }
        _ => node.args = vec![String::new()],
    }
    Ok(node)
}

/// Pieces for a sub-line that starts at `offset` of the parent's logical line.
fn shift_pieces(pieces: &[Piece], offset: usize, line: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        let next = pieces.get(i + 1).map(|n| n.logical).unwrap_or(usize::MAX);
        if next <= offset {
            continue;
        }
        if p.logical <= offset {
            let skipped = line
                .get(p.logical..offset)
                .map(|s| s.chars().count())
                .unwrap_or(0);
            out.push(Piece {
                logical: 0,
                source: p.source + (offset - p.logical),
                line: p.line,
                column: p.column + skipped,
            });
        } else {
            out.push(Piece {
                logical: p.logical - offset,
                ..*p
            });
        }
    }
    out
}

/// The error BuildKit gives for a JSON array holding something other than strings.
pub const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

impl Node {
    /// RUN, COPY, ADD (directly or under ONBUILD) in shell form may carry heredocs.
    pub fn can_contain_heredoc(&self) -> bool {
        let node = match (&self.keyword[..], &self.nested) {
            ("onbuild", Some(inner)) => inner,
            _ => self,
        };
        matches!(node.keyword.as_str(), "run" | "copy" | "add") && !node.json
    }
}

fn split_whitespace(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    rest.split(is_split_space)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Splits the leading `--flag` words off `line`. Returns the flags (quotes and `\` escapes
/// removed), their byte offsets, and the offset where the remaining text starts.
fn extract_flags(line: &str) -> (Vec<String>, Vec<usize>, usize) {
    let mut flags = Vec::new();
    let mut offsets = Vec::new();
    let mut chars = line.char_indices().peekable();
    loop {
        // Skip spaces; stop unless the next word starts with `--`.
        while let Some(&(_, c)) = chars.peek() {
            if c.is_whitespace() {
                chars.next();
            } else {
                break;
            }
        }
        let Some(&(start, _)) = chars.peek() else {
            return (flags, offsets, line.len());
        };
        if !line[start..].starts_with("--") {
            return (flags, offsets, start);
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        let mut blank_ok = false;
        let mut end = line.len();
        while let Some((i, c)) = chars.next() {
            match quote {
                None => {
                    if c.is_whitespace() {
                        end = i;
                        break;
                    }
                    if c == '\'' || c == '"' {
                        quote = Some(c);
                        blank_ok = true;
                    } else if c == '\\' {
                        if let Some((_, n)) = chars.next() {
                            word.push(n);
                        }
                    } else {
                        word.push(c);
                    }
                }
                Some(q) => {
                    if c == q {
                        quote = None;
                    } else if c == '\\' {
                        match chars.next() {
                            Some((_, n)) => word.push(n),
                            None => quote = None,
                        }
                    } else {
                        word.push(c);
                    }
                }
            }
        }
        if word == "--" {
            return (flags, offsets, end);
        }
        if blank_ok || !word.is_empty() {
            flags.push(word);
            offsets.push(start);
        }
        if end == line.len() {
            return (flags, offsets, line.len());
        }
    }
}

/// BuildKit's parser-level word splitter (used for ENV/LABEL `k=v` words and ARG): splits on
/// unquoted whitespace, keeping quotes and escape characters in the words.
pub fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if !in_word {
            if c.is_whitespace() {
                continue;
            }
            in_word = true;
        }
        match quote {
            None => {
                if c.is_whitespace() {
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    in_word = false;
                    blank_ok = false;
                    continue;
                }
                if c == '\'' || c == '"' {
                    quote = Some(c);
                    blank_ok = true;
                }
                if c == escape {
                    match chars.next() {
                        None => continue,
                        Some(n) => {
                            word.push(c);
                            word.push(n);
                            continue;
                        }
                    }
                }
                word.push(c);
            }
            Some(q) => {
                if c == q {
                    quote = None;
                }
                if c == escape && q != '\'' {
                    match chars.next() {
                        None => {
                            quote = None;
                            continue;
                        }
                        Some(n) => {
                            word.push(c);
                            word.push(n);
                            continue;
                        }
                    }
                }
                word.push(c);
            }
        }
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// ENV/LABEL: triples `key value sep` (see the conformance notes).
fn parse_name_val(rest: &str, keyword: &str, escape: char) -> Result<Vec<String>, String> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let key_len = rest.find(is_split_space).unwrap_or(rest.len());
        let value = rest[key_len..].trim_start_matches(is_split_space);
        if key_len == rest.len() {
            return Err(format!("{keyword} must have two arguments"));
        }
        return Ok(vec![
            rest[..key_len].to_string(),
            value.to_string(),
            String::new(),
        ]);
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for word in &words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                go_quote(word)
            ));
        };
        out.push(k.to_string());
        out.push(v.to_string());
        out.push("=".to_string());
    }
    Ok(out)
}

/// A heredoc word recognised by [`parse_heredoc_word`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeredocWord {
    pub name: String,
    pub expand: bool,
    pub chomp: bool,
    pub file_descriptor: u32,
}

/// Classifies one shell word (quotes kept): `Ok(Some(_))` for `[n]<<[-]WORD`, `Ok(None)` for
/// anything else, `Err` for a heredoc word with unbalanced quotes.
pub fn parse_heredoc_word(word: &str) -> Result<Option<HeredocWord>, String> {
    let digits = word.len() - word.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let Some(after) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, name_part) = match after.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, after),
    };
    if name_part.is_empty() || name_part.contains('<') {
        return Ok(None);
    }
    let fd = word[..digits].parse::<u32>().unwrap_or(0);
    let cooked = shell_words(name_part, false)?;
    if cooked.len() != 1 {
        return Ok(None);
    }
    let raw = shell_words(name_part, true)?;
    let count = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    let expand = raw.len() == 1 && count(&cooked[0]) == count(&raw[0]);
    Ok(Some(HeredocWord {
        name: cooked[0].clone(),
        expand,
        chomp,
        file_descriptor: fd,
    }))
}

/// The heredocs named on a logical line, in order.
pub fn heredocs_from_line(line: &str) -> Result<Vec<AstHeredoc>, String> {
    let Ok(words) = shell_words_raw_line(line) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for w in words {
        if let Some(h) = parse_heredoc_word(&w)? {
            out.push(AstHeredoc {
                name: h.name,
                content: String::new(),
                expand: h.expand,
                chomp: h.chomp,
                file_descriptor: h.file_descriptor,
            });
        }
    }
    Ok(out)
}

/// Splits a line into shell words keeping quotes and escapes (BuildKit's lexer with raw quotes
/// and raw escapes). Whitespace right after `<<` or `<<-` stays in the word, so `<< EOF` is one
/// word.
fn shell_words_raw_line(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                word.push(c);
                let mut closed = false;
                while let Some(n) = chars.next() {
                    word.push(n);
                    if n == c {
                        closed = true;
                        break;
                    }
                    if c == '"' && n == '\\' {
                        if let Some(&m) = chars.peek() {
                            if matches!(m, '"' | '$' | '\\') {
                                word.push(m);
                                chars.next();
                            }
                        }
                    }
                }
                if !closed {
                    return Err(
                        "unexpected end of statement while looking for matching quote".into(),
                    );
                }
            }
            '\\' => {
                word.push(c);
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            c if c.is_whitespace() => {
                if is_open_heredoc_word(&word) {
                    word.push(c);
                } else if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    Ok(words)
}

/// `[n]<<` or `[n]<<-`, possibly followed by whitespace already glued on.
fn is_open_heredoc_word(word: &str) -> bool {
    let t = word.trim_start_matches(|d: char| d.is_ascii_digit());
    let Some(r) = t.strip_prefix("<<") else {
        return false;
    };
    let r = r.strip_prefix('-').unwrap_or(r);
    r.chars().all(char::is_whitespace)
}

/// Processes a heredoc delimiter into words: escapes removed, quotes removed unless `raw_quotes`,
/// `$` left literal (variables are never expanded in delimiters).
fn shell_words(src: &str, raw_quotes: bool) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                if raw_quotes {
                    word.push(c);
                }
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err(
                            "unexpected end of statement while looking for matching single-quote"
                                .into(),
                        ),
                        Some('\'') => {
                            if raw_quotes {
                                word.push('\'');
                            }
                            break;
                        }
                        Some(n) => word.push(n),
                    }
                }
            }
            '"' => {
                if raw_quotes {
                    word.push(c);
                }
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err(
                            "unexpected end of statement while looking for matching double-quote"
                                .into(),
                        ),
                        Some('"') => {
                            if raw_quotes {
                                word.push('"');
                            }
                            break;
                        }
                        Some('\\') => match chars.peek() {
                            None => {}
                            Some(&m) if matches!(m, '"' | '$' | '\\') => {
                                word.push(m);
                                chars.next();
                            }
                            Some(_) => word.push('\\'),
                        },
                        Some(n) => word.push(n),
                    }
                }
            }
            '\\' => {
                if let Some(n) = chars.next() {
                    word.push(n);
                    in_word = true;
                }
            }
            c if c.is_whitespace() => {
                if in_word && !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                in_word = false;
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    Ok(words)
}

/// What `<<-` does to a heredoc body when it is used: every line loses its leading TABs.
pub fn strip_leading_tabs(body: &str) -> String {
    body.split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

/// Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Go's `strconv.IsPrint` (letters, marks, numbers, punctuation, symbols and the ASCII space).
/// Without a Unicode category table this treats every assigned-looking code point as printable
/// except controls, non-ASCII spaces, line/paragraph separators, the common format characters,
/// private-use areas and noncharacters.
fn is_go_printable(c: char) -> bool {
    let u = c as u32;
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let format = matches!(u,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x890..=0x891 | 0x8E2 | 0x180E
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF
        | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F);
    let private = matches!(u, 0xE000..=0xF8FF | 0xF0000..=0x10FFFF);
    let nonchar = matches!(u, 0xFDD0..=0xFDEF) || (u & 0xFFFE) == 0xFFFE;
    !(format || private || nonchar)
}

/// A small strict JSON reader: enough to tell a JSON array of strings from everything else,
/// with Go's `encoding/json` acceptance rules.
pub mod json {
    /// What [`string_array`] found.
    #[derive(Debug, PartialEq, Eq)]
    pub enum ArrayResult {
        /// A JSON array whose elements are all strings.
        Strings(Vec<String>),
        /// Valid JSON array, but some element is not a string (a hard error in BuildKit).
        NotStrings,
        /// Not a JSON array (falls back to shell form).
        NotJson,
    }

    /// Go's decoder refuses nesting deeper than this.
    const MAX_DEPTH: usize = 10000;

    /// Reads `text` (leading whitespace ignored) as a JSON array of strings.
    pub fn string_array(text: &str) -> ArrayResult {
        let text = text.trim_start_matches(char::is_whitespace);
        if !text.starts_with('[') {
            return ArrayResult::NotJson;
        }
        let mut r = Reader {
            s: text.as_bytes(),
            text,
            i: 0,
        };
        r.ws();
        if !r.eat(b'[') {
            return ArrayResult::NotJson;
        }
        let mut out = Vec::new();
        let mut all_strings = true;
        r.ws();
        if !r.eat(b']') {
            loop {
                r.ws();
                if r.peek() == Some(b'"') {
                    match r.string() {
                        Some(s) => out.push(s),
                        None => return ArrayResult::NotJson,
                    }
                } else {
                    all_strings = false;
                    if r.value(1).is_none() {
                        return ArrayResult::NotJson;
                    }
                }
                r.ws();
                if r.eat(b',') {
                    continue;
                }
                if r.eat(b']') {
                    break;
                }
                return ArrayResult::NotJson;
            }
        }
        r.ws();
        if r.i != r.s.len() {
            return ArrayResult::NotJson;
        }
        if all_strings {
            ArrayResult::Strings(out)
        } else {
            ArrayResult::NotStrings
        }
    }

    /// When `text` is exactly one JSON object whose `key` member is a string, that string.
    pub fn object_string_member(text: &str, key: &str) -> Option<String> {
        let mut r = Reader {
            s: text.as_bytes(),
            text,
            i: 0,
        };
        r.ws();
        if !r.eat(b'{') {
            return None;
        }
        let mut found = None;
        r.ws();
        if !r.eat(b'}') {
            loop {
                r.ws();
                let k = r.string()?;
                r.ws();
                if !r.eat(b':') {
                    return None;
                }
                r.ws();
                if k == key && r.peek() == Some(b'"') {
                    found = Some(r.string()?);
                } else {
                    r.value(1)?;
                }
                r.ws();
                if r.eat(b',') {
                    continue;
                }
                if r.eat(b'}') {
                    break;
                }
                return None;
            }
        }
        r.ws();
        if r.i != r.s.len() {
            return None;
        }
        found
    }

    struct Reader<'a> {
        s: &'a [u8],
        text: &'a str,
        i: usize,
    }

    impl Reader<'_> {
        fn peek(&self) -> Option<u8> {
            self.s.get(self.i).copied()
        }
        fn eat(&mut self, b: u8) -> bool {
            if self.peek() == Some(b) {
                self.i += 1;
                true
            } else {
                false
            }
        }
        fn ws(&mut self) {
            while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.i += 1;
            }
        }
        fn lit(&mut self, word: &[u8]) -> Option<()> {
            if self.s.get(self.i..self.i + word.len())? == word {
                self.i += word.len();
                Some(())
            } else {
                None
            }
        }
        /// Skips one value. Iterative for arrays/objects so deep nesting cannot overflow the stack.
        fn value(&mut self, depth: usize) -> Option<()> {
            // Stack of open containers: b'[' or b'{'.
            let mut stack: Vec<u8> = Vec::new();
            loop {
                self.ws();
                // Parse one scalar or open a container.
                match self.peek()? {
                    b'"' => {
                        self.string()?;
                    }
                    b't' => self.lit(b"true")?,
                    b'f' => self.lit(b"false")?,
                    b'n' => self.lit(b"null")?,
                    b'-' | b'0'..=b'9' => self.number()?,
                    b'[' => {
                        self.i += 1;
                        stack.push(b'[');
                        if depth + stack.len() > MAX_DEPTH {
                            return None;
                        }
                        self.ws();
                        if self.eat(b']') {
                            stack.pop();
                        } else {
                            continue;
                        }
                    }
                    b'{' => {
                        self.i += 1;
                        stack.push(b'{');
                        if depth + stack.len() > MAX_DEPTH {
                            return None;
                        }
                        self.ws();
                        if self.eat(b'}') {
                            stack.pop();
                        } else {
                            self.key()?;
                            continue;
                        }
                    }
                    _ => return None,
                }
                // After a value: close containers or move to the next element.
                loop {
                    let Some(&top) = stack.last() else {
                        return Some(());
                    };
                    self.ws();
                    if self.eat(b',') {
                        if top == b'{' {
                            self.ws();
                            self.key()?;
                        }
                        break;
                    }
                    let close = if top == b'[' { b']' } else { b'}' };
                    if self.eat(close) {
                        stack.pop();
                        continue;
                    }
                    return None;
                }
            }
        }
        fn key(&mut self) -> Option<()> {
            if self.peek() != Some(b'"') {
                return None;
            }
            self.string()?;
            self.ws();
            if self.eat(b':') {
                Some(())
            } else {
                None
            }
        }
        fn number(&mut self) -> Option<()> {
            let start = self.i;
            self.eat(b'-');
            match self.peek()? {
                b'0' => self.i += 1,
                b'1'..=b'9' => {
                    while matches!(self.peek(), Some(b'0'..=b'9')) {
                        self.i += 1;
                    }
                }
                _ => return None,
            }
            if self.eat(b'.') {
                if !matches!(self.peek(), Some(b'0'..=b'9')) {
                    return None;
                }
                while matches!(self.peek(), Some(b'0'..=b'9')) {
                    self.i += 1;
                }
            }
            if matches!(self.peek(), Some(b'e' | b'E')) {
                self.i += 1;
                if matches!(self.peek(), Some(b'+' | b'-')) {
                    self.i += 1;
                }
                if !matches!(self.peek(), Some(b'0'..=b'9')) {
                    return None;
                }
                while matches!(self.peek(), Some(b'0'..=b'9')) {
                    self.i += 1;
                }
            }
            // Go decodes numbers into float64 and fails on overflow.
            let n: f64 = self.text.get(start..self.i)?.parse().ok()?;
            if n.is_finite() {
                Some(())
            } else {
                None
            }
        }
        fn hex4(&mut self) -> Option<u32> {
            let h = self.text.get(self.i..self.i + 4)?;
            if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            self.i += 4;
            u32::from_str_radix(h, 16).ok()
        }
        fn string(&mut self) -> Option<String> {
            if !self.eat(b'"') {
                return None;
            }
            let mut out = String::new();
            loop {
                let rest = self.text.get(self.i..)?;
                let c = rest.chars().next()?;
                self.i += c.len_utf8();
                match c {
                    '"' => return Some(out),
                    '\\' => {
                        let e = self.peek()?;
                        self.i += 1;
                        match e {
                            b'"' => out.push('"'),
                            b'\\' => out.push('\\'),
                            b'/' => out.push('/'),
                            b'b' => out.push('\x08'),
                            b'f' => out.push('\x0c'),
                            b'n' => out.push('\n'),
                            b'r' => out.push('\r'),
                            b't' => out.push('\t'),
                            b'u' => {
                                let hi = self.hex4()?;
                                if (0xD800..0xDC00).contains(&hi) {
                                    // A surrogate pair, when the low half follows.
                                    let save = self.i;
                                    if self.text.get(self.i..self.i + 2) == Some("\\u") {
                                        self.i += 2;
                                        if let Some(lo) = self.hex4() {
                                            if (0xDC00..0xE000).contains(&lo) {
                                                let cp =
                                                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                                                out.push(char::from_u32(cp).unwrap_or('\u{fffd}'));
                                                continue;
                                            }
                                        }
                                    }
                                    self.i = save;
                                    out.push('\u{fffd}');
                                } else {
                                    out.push(char::from_u32(hi).unwrap_or('\u{fffd}'));
                                }
                            }
                            _ => return None,
                        }
                    }
                    c if (c as u32) < 0x20 => return None,
                    c => out.push(c),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(src: &str) -> String {
        parse(src)
            .map(|a| a.dump())
            .unwrap_or_else(|e| format!("ERR {}", e.diagnostic.message))
    }

    macro_rules! dumps {
        ($($name:ident: $src:expr => $want:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(dump($src), $want);
            }
        )*};
    }

    dumps! {
        unknown_instruction_keeps_an_empty_arg: "FOO bar\n" => "(foo \"\")\n";
        keyword_is_case_insensitive: "fRoM alpine\n" => "(from \"alpine\")\n";
        lone_escape_line_starts_a_continuation: "\\\nRUN x\n" => "(run \"x\")\n";
        escape_directive_changes_continuation: "# escape=`\nRUN a `\n b\n" => "(run \"a  b\")\n";
        late_escape_directive_is_a_comment: "# hi\n# escape=`\nRUN a `\nRUN b\n" => "(run \"a `\")\n(run \"b\")\n";
        double_escape_is_not_a_continuation: "RUN a \\\\\nRUN b\n" => "(run \"a \\\\\\\\\")\n(run \"b\")\n";
        crlf_is_stripped: "FROM a\r\nRUN b \\\r\n c\r\n" => "(from \"a\")\n(run \"b  c\")\n";
        bom_is_dropped: "\u{feff}FROM a\n" => "(from \"a\")\n";
        nested_json_is_an_error: "CMD [\"a\", [\"b\"]]\n" => format!("ERR {NOT_STRING_ARRAY}");
        invalid_json_falls_back: "CMD [\"a\"\n" => "(cmd \"[\\\"a\\\"\")\n";
        empty_file_is_an_error: "" => "ERR file with no instructions";
        comments_only_is_an_error: "# a\n\n# b\n" => "ERR file with no instructions";
        env_without_value: "ENV PATH\n" => "ERR ENV must have two arguments";
        repeated_directive: "# escape=\\\n# escape=`\nFROM a\n" => "ERR only one escape parser directive can be used";
        bad_escape_directive: "# escape=x\nFROM a\n" => "ERR invalid escape token 'x' does not match ` or \\";
        onbuild_nests: "ONBUILD --f RUN [\"a\"]\n" => "(onbuild [\"--f\"] (run \"a\"))\n";
        onbuild_chain_dumps: "ONBUILD ONBUILD RUN x\n" => "(onbuild (onbuild (run \"x\")))\n";
        onbuild_nesting_is_bounded: &("ONBUILD ".repeat(5000) + "RUN x\n") => "ERR ONBUILD nested more than 8 levels deep";
        heredoc_body_is_skipped: "RUN <<EOF\nFROM x\nEOF\nRUN y\n" => "(run \"<<EOF\")\n(run \"y\")\n";
        unterminated_heredoc: "RUN <<EOF\nabc\n" => "ERR unterminated heredoc EOF";
        json_heredoc_is_not_heredoc: "RUN [\"<<EOF\"]\nEOF\n" => "(run \"<<EOF\")\n(eof \"\")\n";
        flag_quotes_removed: "COPY --from='a b' x y\n" => "(copy [\"--from=a b\"] \"x\" \"y\")\n";
        nonprintable_quoted: "RUN x\u{a0}\u{200b}y\n" => "(run \"x\\u00a0\\u200by\")\n";
        big_number_falls_back: "CMD [1e999]\n" => "(cmd \"[1e999]\")\n";
    }

    #[test]
    fn spans_cover_continuations_and_heredocs() {
        let src = "FROM a\n\n  RUN x \\\n   y\nCOPY <<E /d\nbody\nE\n";
        let ast = parse(src).unwrap();
        let spans: Vec<(usize, usize, usize)> = ast
            .children
            .iter()
            .map(|n| (n.span.line, n.span.column, n.span.end_line))
            .collect();
        assert_eq!(spans, vec![(1, 1, 1), (3, 3, 4), (5, 1, 7)]);
        assert_eq!(
            &src[ast.children[1].span.start..ast.children[1].span.end],
            "RUN x \\\n   y"
        );
        assert_eq!(ast.children[2].heredocs[0].content, "body\n");
    }

    #[test]
    fn span_of_maps_back_through_continuations() {
        let src = "RUN --a=1 \\\n  --bogus x\n";
        let ast = parse(src).unwrap();
        let n = &ast.children[0];
        assert_eq!(n.flags, vec!["--a=1", "--bogus"]);
        let s = n.flag_span(1);
        assert_eq!((s.line, s.column), (2, 3));
        assert_eq!(&src[s.start..s.end], "--bogus");
    }

    #[test]
    fn heredoc_words() {
        let ok = |w: &str| {
            parse_heredoc_word(w)
                .unwrap()
                .map(|h| (h.name, h.expand, h.chomp, h.file_descriptor))
        };
        assert_eq!(ok("<<EOF"), Some(("EOF".into(), true, false, 0)));
        assert_eq!(ok("3<<-'E F'"), Some(("E F".into(), false, true, 3)));
        assert_eq!(ok("<<EOF sh"), None);
        assert_eq!(ok("<<<EOF"), None);
        assert!(parse_heredoc_word("<<'EOF").is_err());
    }

    #[test]
    fn json_arrays() {
        use json::{string_array, ArrayResult::*};
        assert_eq!(string_array("[]"), Strings(vec![]));
        assert_eq!(
            string_array(" [\"a\" , \"\\u00e9\\ud83d\\ude00\"] "),
            Strings(vec!["a".into(), "é😀".into()])
        );
        assert_eq!(
            string_array("[\"a\", {\"b\": [1, 2.5e3, null]}]"),
            NotStrings
        );
        assert_eq!(string_array("[\"a\", {\"b\" 1}]"), NotJson);
        assert_eq!(string_array("['a']"), NotJson);
        assert_eq!(string_array("[01]"), NotJson);
        let deep = "[".repeat(20000) + &"]".repeat(20000);
        assert_eq!(string_array(&deep), NotJson);
    }

    #[test]
    fn go_quote_matches_go() {
        assert_eq!(
            go_quote("a\"b\\c\u{0}\u{7f}\u{1b}é☃"),
            "\"a\\\"b\\\\c\\x00\\x7f\\x1bé☃\""
        );
        assert_eq!(go_quote("\u{e000}\u{f0000}"), "\"\\ue000\\U000f0000\"");
    }
}
