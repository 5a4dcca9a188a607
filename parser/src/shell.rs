//! Shell-word processing as Dockerfiles do it: quote removal, escapes and `$VAR` expansion.
//!
//! This is not a shell. It reproduces the small word language BuildKit applies to the arguments
//! of `ENV`, `ARG`, `COPY`, `FROM` and friends:
//!
//! * `'…'` keeps everything literally; `"…"` keeps everything except `$` expansions and the
//!   escapes `\"`, `\$` and `\\` (with `\` meaning the directive's escape character);
//! * outside quotes the escape character makes the next character literal, and a trailing
//!   escape character is dropped;
//! * `$NAME`, `${NAME}`, positional (`$1`, `$001`) and special (`$@ $* $# $? $- $$ $! $0`)
//!   parameters, which are simply looked up like any other name;
//! * the modifiers `${V:-w} ${V-w} ${V:+w} ${V+w} ${V:?m} ${V?m}`, the pattern trims
//!   `${V#p} ${V##p} ${V%p} ${V%%p}` and the substitutions `${V/p/r} ${V//p/r}`, where the
//!   pattern knows `*`, `?` and `\`-escapes (brackets are literal, as in BuildKit);
//! * everything else after a name (`${V=w}`, `${V:#p}`, `${V:%p}`, `${V.}`) is rejected.
//!
//! ```
//! use forge_parser::shell::Lexer;
//!
//! let env = vec![("NAME".to_string(), "world".to_string())];
//! let lex = Lexer::new('\\');
//! assert_eq!(lex.process_word("hello ${NAME:-nobody}!", &env).unwrap(), "hello world!");
//! assert_eq!(lex.process_words("a \"b c\" $NAME", &env).unwrap(), ["a", "b c", "world"]);
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// Where variable values come from.
pub trait EnvLookup {
    /// The value of `name`, or `None` when it is not set (`Some("")` means set but empty).
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl EnvLookup for [(String, String)] {
    /// A later definition of the same name wins.
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl EnvLookup for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

impl EnvLookup for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl<S: std::hash::BuildHasher> EnvLookup for HashMap<String, String, S> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl<T: EnvLookup + ?Sized> EnvLookup for &T {
    fn lookup(&self, name: &str) -> Option<&str> {
        (**self).lookup(name)
    }
}

/// An empty environment: every name is unset.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoEnv;

impl EnvLookup for NoEnv {
    fn lookup(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// A word that could not be processed.
///
/// `message` reads like BuildKit's (`failed to process "${X:?}": X: is not allowed to be unset`);
/// `offset` is the byte offset in the input word where the problem was noticed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExpandError {
    pub message: String,
    pub offset: usize,
}

/// The result of [`Lexer::process_word_with_matches`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The processed word.
    pub value: String,
    /// Names that were looked up and set (possibly to the empty string).
    pub matched: BTreeSet<String>,
    /// Names that were looked up and not set.
    pub unmatched: BTreeSet<String>,
}

/// The word processor. Cheap to clone; holds only settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_process_quotes: bool,
    skip_unset_env: bool,
}

impl Lexer {
    /// A lexer with the given escape character (`\` or `` ` ``) and default settings: quotes
    /// and escape characters are removed, unset variables expand to nothing.
    pub fn new(escape: char) -> Lexer {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// The escape character.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Keep quote characters in the output (quotes still group and still stop expansion).
    pub fn raw_quotes(mut self, yes: bool) -> Lexer {
        self.raw_quotes = yes;
        self
    }

    /// Keep escape characters in the output.
    pub fn raw_escapes(mut self, yes: bool) -> Lexer {
        self.raw_escapes = yes;
        self
    }

    /// Treat quotes as ordinary characters.
    pub fn skip_process_quotes(mut self, yes: bool) -> Lexer {
        self.skip_process_quotes = yes;
        self
    }

    /// Leave references to unset variables as written (`$X`, `${X:-w}`).
    pub fn skip_unset_env(mut self, yes: bool) -> Lexer {
        self.skip_unset_env = yes;
        self
    }

    /// Processes `word` as one word: whitespace is kept.
    pub fn process_word(&self, word: &str, env: &dyn EnvLookup) -> Result<String, ExpandError> {
        Ok(self.run(word, env)?.0.value)
    }

    /// Processes `word` and splits the result into words on unquoted whitespace, including
    /// whitespace produced by unquoted expansions.
    pub fn process_words(
        &self,
        word: &str,
        env: &dyn EnvLookup,
    ) -> Result<Vec<String>, ExpandError> {
        Ok(self.run(word, env)?.1)
    }

    /// Like [`Lexer::process_word`], also reporting which names were looked up.
    pub fn process_word_with_matches(
        &self,
        word: &str,
        env: &dyn EnvLookup,
    ) -> Result<Expansion, ExpandError> {
        Ok(self.run(word, env)?.0)
    }

    fn run(
        &self,
        word: &str,
        env: &dyn EnvLookup,
    ) -> Result<(Expansion, Vec<String>), ExpandError> {
        let mut chars: Vec<(usize, char)> = word.char_indices().collect();
        chars.push((word.len(), '\0'));
        let mut p = Processor {
            lex: self,
            env,
            chars,
            pos: 0,
            raw_escapes: self.raw_escapes,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
            depth: 0,
        };
        match p.process_until(None, self.raw_escapes) {
            Ok((value, words)) => Ok((
                Expansion {
                    value,
                    matched: p.matched,
                    unmatched: p.unmatched,
                },
                words,
            )),
            Err(e) => Err(ExpandError {
                message: format!("failed to process {}: {}", go_quote(word), e.message),
                offset: e.offset,
            }),
        }
    }
}

impl Default for Lexer {
    fn default() -> Lexer {
        Lexer::new('\\')
    }
}

/// `"…"` with `"` and `\` escaped, as Go's `%q` renders ordinary text.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// How deeply `${…}` substitutions may nest inside one another.
const MAX_NESTING: usize = 64;

/// An error before it is wrapped with the input word.
struct Fail {
    message: String,
    offset: usize,
}

type Step<T> = Result<T, Fail>;

/// Accumulates words for `process_words`.
#[derive(Default)]
struct Words {
    current: String,
    in_word: bool,
    done: Vec<String>,
}

impl Words {
    /// An unquoted character: whitespace ends the current word.
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word && !self.current.is_empty() {
                self.done.push(std::mem::take(&mut self.current));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }

    fn add_raw_char(&mut self, c: char) {
        self.current.push(c);
        self.in_word = true;
    }

    fn add_str(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_str(&mut self, s: &str) {
        self.current.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }
}

struct Processor<'a> {
    lex: &'a Lexer,
    env: &'a dyn EnvLookup,
    /// The input's characters with their byte offsets, plus a sentinel at the end.
    chars: Vec<(usize, char)>,
    pos: usize,
    raw_escapes: bool,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
    /// Current `process_until` nesting (bounded by [`MAX_NESTING`]).
    depth: usize,
}

impl Processor<'_> {
    fn peek(&self) -> Option<char> {
        if self.pos + 1 < self.chars.len() {
            Some(self.chars[self.pos].1)
        } else {
            None
        }
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn offset(&self) -> usize {
        self.chars[self.pos.min(self.chars.len() - 1)].0
    }

    fn fail<T>(&self, message: impl Into<String>) -> Step<T> {
        Err(Fail {
            message: message.into(),
            offset: self.offset(),
        })
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match self.env.lookup(name) {
            Some(v) => {
                self.matched.insert(name.to_string());
                Some(v.to_string())
            }
            None => {
                self.unmatched.insert(name.to_string());
                None
            }
        }
    }

    /// Processes characters until `stop` (consumed) or the end of input. With a `stop`
    /// character, reaching the end is an error.
    fn process_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Step<(String, Vec<String>)> {
        // `${a:-${b:-…}}` recurses once per level: bound it, or a hostile Dockerfile
        // overflows the stack (5000 levels did, on a build thread).
        if self.depth >= MAX_NESTING {
            return self.fail(format!(
                "substitutions nested more than {MAX_NESTING} levels deep"
            ));
        }
        self.depth += 1;
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let out = self.process_until_inner(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        out
    }

    fn process_until_inner(&mut self, stop: Option<char>) -> Step<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            let quotes = !self.lex.skip_process_quotes;
            if c == '$' {
                let s = self.dollar()?;
                result.push_str(&s);
                words.add_str(&s);
            } else if quotes && c == '\'' {
                let s = self.single_quoted()?;
                result.push_str(&s);
                words.add_raw_str(&s);
            } else if quotes && c == '"' {
                let s = self.double_quoted()?;
                result.push_str(&s);
                words.add_raw_str(&s);
            } else {
                self.pos += 1;
                if c == self.lex.escape {
                    if self.raw_escapes {
                        words.add_raw_char(c);
                        result.push(c);
                    }
                    match self.next() {
                        None => break,
                        Some(escaped) => {
                            words.add_raw_char(escaped);
                            result.push(escaped);
                        }
                    }
                } else {
                    words.add_char(c);
                    result.push(c);
                }
            }
        }
        match stop {
            Some(s) => self.fail(format!(
                "unexpected end of statement while looking for matching {s}"
            )),
            None => Ok((result, words.finish())),
        }
    }

    fn single_quoted(&mut self) -> Step<String> {
        let mut out = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            out.extend(open);
        }
        loop {
            match self.next() {
                None => {
                    return self.fail(
                        "unexpected end of statement while looking for matching single-quote",
                    )
                }
                Some('\'') => {
                    if self.lex.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quoted(&mut self) -> Step<String> {
        let mut out = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            out.extend(open);
        }
        loop {
            match self.peek() {
                None => {
                    return self.fail(
                        "unexpected end of statement while looking for matching double-quote",
                    )
                }
                Some('"') => {
                    self.pos += 1;
                    if self.lex.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let s = self.dollar()?;
                    out.push_str(&s);
                }
                Some(c) => {
                    self.pos += 1;
                    if c == self.lex.escape {
                        if self.raw_escapes {
                            out.push(c);
                        }
                        match self.peek() {
                            // A lone escape at the very end: the missing quote is reported next.
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.lex.escape => {
                                self.pos += 1;
                                out.push(n);
                            }
                            Some(_) => out.push(c),
                        }
                    } else {
                        out.push(c);
                    }
                }
            }
        }
    }

    /// Reads a parameter name: a run of digits, one special-parameter character, or a run
    /// of letters, digits and underscores.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_numeric() {
                while let Some(d) = self.peek().filter(|d| d.is_numeric()) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return c.to_string();
            }
            if !(c.is_alphanumeric() || c == '_') {
                break;
            }
            name.push(c);
            self.pos += 1;
        }
        name
    }

    /// Expands the `$…` at the current position.
    fn dollar(&mut self) -> Step<String> {
        self.pos += 1; // '$'
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1; // '{'
        match self.peek() {
            None => return self.fail("syntax error: missing '}'"),
            Some('{' | '}' | ':') => return self.fail("syntax error: bad substitution"),
            Some(_) => {}
        }
        let name = self.name();
        let modifier_at = self.pos;
        let first = self.next();
        match first {
            Some('}') => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':') => {
                let op = self.next();
                match op {
                    Some(op @ ('-' | '+' | '?')) => self.modifier(&name, op, true),
                    _ => {
                        let shown: String = [Some(':'), op].into_iter().flatten().collect();
                        self.pos = modifier_at;
                        self.fail(format!("unsupported modifier ({shown}) in substitution"))
                    }
                }
            }
            Some(op @ ('-' | '+' | '?' | '#' | '%')) => self.modifier(&name, op, false),
            Some('/') => self.substitute(&name),
            None => self.fail("syntax error: missing '}'"),
            other => {
                self.pos = modifier_at;
                let shown = other
                    .map(String::from)
                    .unwrap_or_else(|| "\u{fffd}".to_string());
                self.fail(format!("unsupported modifier ({shown}) in substitution"))
            }
        }
    }

    /// `${name<op>word}` after the operator; `colon` is the `:` form (empty counts as unset).
    fn modifier(&mut self, name: &str, op: char, colon: bool) -> Step<String> {
        let pattern_op = op == '#' || op == '%';
        let (word, _) = self.word_until_brace(pattern_op)?;
        let value = self.get_env(name);
        if value.is_none() && self.lex.skip_unset_env {
            let colon = if colon { ":" } else { "" };
            return Ok(format!("${{{name}{colon}{op}{word}}}"));
        }
        let empty_or_unset = match &value {
            None => true,
            Some(v) => colon && v.is_empty(),
        };
        match op {
            '-' => Ok(if empty_or_unset {
                word
            } else {
                value.unwrap_or_default()
            }),
            '+' => Ok(if empty_or_unset { String::new() } else { word }),
            '?' => {
                if empty_or_unset {
                    let message = if !word.is_empty() {
                        word
                    } else if value.is_none() {
                        "is not allowed to be unset".to_string()
                    } else {
                        "is not allowed to be empty".to_string()
                    };
                    self.fail(format!("{name}: {message}"))
                } else {
                    Ok(value.unwrap_or_default())
                }
            }
            _ => {
                let value = value.unwrap_or_default();
                // `##` / `%%`: the doubled operator is the first character of the processed word.
                let (greedy, pattern) = match word.strip_prefix(op) {
                    Some(rest) => (true, rest),
                    None => (false, word.as_str()),
                };
                let tokens = self.pattern(pattern)?;
                Ok(if op == '#' {
                    trim_prefix(&tokens, &value, greedy)
                } else {
                    trim_suffix(&tokens, &value, greedy)
                })
            }
        }
    }

    fn word_until_brace(&mut self, raw_escapes: bool) -> Step<(String, Vec<String>)> {
        match self.process_until(Some('}'), raw_escapes) {
            Err(_) if self.peek().is_none() => self.fail("syntax error: missing '}'"),
            other => other,
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}` after the first `/`.
    fn substitute(&mut self, name: &str) -> Step<String> {
        let all = self.peek() == Some('/');
        if all {
            self.pos += 1;
        }
        let pattern = match self.process_until(Some('/'), true) {
            Err(_) if self.peek().is_none() => {
                return self.fail("syntax error: missing '/' in ${}")
            }
            other => other?.0,
        };
        let (replacement, _) = self.word_until_brace(true)?;
        let value = self.get_env(name);
        let Some(value) = value else {
            if self.lex.skip_unset_env {
                return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
            }
            return Ok(String::new());
        };
        let tokens = self.pattern(&pattern)?;
        Ok(replace(&tokens, &value, &replacement, all))
    }

    fn pattern(&self, pattern: &str) -> Step<Vec<Tok>> {
        parse_pattern(pattern).map_err(|e| Fail {
            message: format!("invalid pattern ({pattern}) in substitution: {e}"),
            offset: self.offset(),
        })
    }
}

/// One element of a `${V#pattern}` shell pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `?`: any one character.
    Any,
    /// `*`: any run of characters.
    Star,
}

/// Parses a trim/substitution pattern. `\*`, `\?` and `\\` are literal; `\}` and `\/` are
/// the escaped delimiters; any other escape is an error. Brackets are ordinary characters.
fn parse_pattern(pattern: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut it = pattern.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '*' => out.push(Tok::Star),
            '?' => out.push(Tok::Any),
            '\\' => match it.peek().copied() {
                Some('}' | '/') => {}
                Some(e @ ('*' | '?' | '\\')) => {
                    it.next();
                    out.push(Tok::Lit(e));
                }
                Some(e) => return Err(format!("invalid escape '\\{e}'")),
                None => return Err("invalid escape '\\' at end of pattern".to_string()),
            },
            c => out.push(Tok::Lit(c)),
        }
    }
    Ok(out)
}

/// Where a match of `toks` starting at `start` in `text` ends, choosing among the possible
/// ends the way a backtracking regex with lazy (or greedy) stars does: the first star takes
/// the fewest (or most) characters that still let the rest match, then the next star, …
fn match_at(toks: &[Tok], text: &[char], start: usize, greedy: bool) -> Option<usize> {
    // memo[t][p]: the chosen end for tokens t.. starting at text position p.
    let mut memo: HashMap<(usize, usize), Option<usize>> = HashMap::new();
    fn go(
        toks: &[Tok],
        text: &[char],
        t: usize,
        p: usize,
        greedy: bool,
        memo: &mut HashMap<(usize, usize), Option<usize>>,
    ) -> Option<usize> {
        if let Some(r) = memo.get(&(t, p)) {
            return *r;
        }
        let r = match toks.get(t) {
            None => Some(p),
            Some(Tok::Lit(c)) => {
                if text.get(p) == Some(c) {
                    go(toks, text, t + 1, p + 1, greedy, memo)
                } else {
                    None
                }
            }
            Some(Tok::Any) => {
                if p < text.len() {
                    go(toks, text, t + 1, p + 1, greedy, memo)
                } else {
                    None
                }
            }
            Some(Tok::Star) => {
                if greedy {
                    (p..=text.len())
                        .rev()
                        .find_map(|q| go(toks, text, t + 1, q, greedy, memo))
                } else {
                    (p..=text.len()).find_map(|q| go(toks, text, t + 1, q, greedy, memo))
                }
            }
        };
        memo.insert((t, p), r);
        r
    }
    go(toks, text, 0, start, greedy, &mut memo)
}

fn trim_prefix(toks: &[Tok], value: &str, greedy: bool) -> String {
    let text: Vec<char> = value.chars().collect();
    match match_at(toks, &text, 0, greedy) {
        Some(end) => text[end..].iter().collect(),
        None => value.to_string(),
    }
}

/// Trimming a suffix is trimming a prefix of the reversed value with the reversed pattern.
fn trim_suffix(toks: &[Tok], value: &str, greedy: bool) -> String {
    let rev_toks: Vec<Tok> = toks.iter().rev().copied().collect();
    let rev_value: String = value.chars().rev().collect();
    trim_prefix(&rev_toks, &rev_value, greedy)
        .chars()
        .rev()
        .collect()
}

/// The leftmost match of `toks` in `text` at or after `from` (stars greedy).
fn find(toks: &[Tok], text: &[char], from: usize) -> Option<(usize, usize)> {
    (from..=text.len()).find_map(|s| match_at(toks, text, s, true).map(|e| (s, e)))
}

fn replace(toks: &[Tok], value: &str, replacement: &str, all: bool) -> String {
    let text: Vec<char> = value.chars().collect();
    if !all {
        return match find(toks, &text, 0) {
            Some((s, e)) => {
                let mut out: String = text[..s].iter().collect();
                out.push_str(replacement);
                out.extend(&text[e..]);
                out
            }
            None => value.to_string(),
        };
    }
    // Successive non-overlapping matches; an empty match right after a match is skipped,
    // and the search always advances by at least one character.
    let mut out = String::new();
    let mut last_end = 0;
    let mut search = 0;
    while search <= text.len() {
        let Some((s, e)) = find(toks, &text, search) else {
            break;
        };
        out.extend(&text[last_end..s]);
        if e > last_end || s == 0 {
            out.push_str(&expand_template(replacement, &text[s..e]));
        }
        last_end = e;
        search = if search + 1 > e { search + 1 } else { e };
    }
    if last_end <= text.len() {
        out.extend(&text[last_end..]);
    }
    out
}

/// BuildKit replaces every match with Go's `Regexp.ReplaceAllString`, which treats the
/// replacement as a template: `$$` is a `$`, `$0`/`${0}` the whole match, any other
/// `$name`/`${name}` the (non-existent) group of that name, i.e. nothing.
fn expand_template(template: &str, matched: &[char]) -> String {
    if !template.contains('$') {
        return template.to_string();
    }
    let t: Vec<char> = template.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < t.len() {
        if t[i] != '$' {
            out.push(t[i]);
            i += 1;
            continue;
        }
        if t.get(i + 1) == Some(&'$') {
            out.push('$');
            i += 2;
            continue;
        }
        let word = |c: &char| c.is_alphanumeric() || *c == '_';
        let (name, next) = if t.get(i + 1) == Some(&'{') {
            match t[i + 2..].iter().position(|c| *c == '}') {
                Some(len) if len > 0 && t[i + 2..i + 2 + len].iter().all(word) => (
                    t[i + 2..i + 2 + len].iter().collect::<String>(),
                    i + 3 + len,
                ),
                _ => (String::new(), i),
            }
        } else {
            let len = t[i + 1..].iter().take_while(|c| word(c)).count();
            (
                t[i + 1..i + 1 + len].iter().collect::<String>(),
                i + 1 + len,
            )
        };
        if name.is_empty() {
            // Not a valid reference: the `$` is copied as is.
            out.push('$');
            i += 1;
            continue;
        }
        if name.chars().all(|c| c.is_ascii_digit()) && name.parse::<u32>() == Ok(0) {
            out.extend(matched);
        }
        i = next;
    }
    out
}

impl fmt::Display for Expansion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(String, String)> {
        [
            ("A", "aaa"),
            ("EMPTY", ""),
            ("SP", " x  y "),
            ("P", "/a/b/c.tar.gz"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// `word!(name, input, expected)` processes one word with `\` as escape character.
    macro_rules! word {
        ($name:ident, $input:expr, $expected:expr) => {
            #[test]
            fn $name() {
                assert_eq!(
                    Lexer::new('\\').process_word($input, &env()).as_deref(),
                    Ok($expected)
                );
            }
        };
        ($name:ident, $input:expr, $expected:expr, escape = $esc:expr) => {
            #[test]
            fn $name() {
                assert_eq!(
                    Lexer::new($esc).process_word($input, &env()).as_deref(),
                    Ok($expected)
                );
            }
        };
    }

    /// `fails!(name, input, message_substring)`.
    macro_rules! fails {
        ($name:ident, $input:expr, $needle:expr) => {
            #[test]
            fn $name() {
                let err = Lexer::new('\\').process_word($input, &env()).unwrap_err();
                assert!(
                    err.message.contains($needle),
                    "{:?} lacks {:?}",
                    err.message,
                    $needle
                );
            }
        };
    }

    /// `words!(name, input, [expected words])`.
    macro_rules! words {
        ($name:ident, $input:expr, [$($w:expr),*]) => {
            #[test]
            fn $name() {
                let expected: Vec<&str> = vec![$($w),*];
                assert_eq!(Lexer::new('\\').process_words($input, &env()).unwrap(), expected);
            }
        };
    }

    word!(plain, "abc", "abc");
    word!(simple_var, "x$A.y", "xaaa.y");
    word!(braced_var, "x${A}y", "xaaay");
    word!(default_unset, "${NOPE:-d}", "d");
    word!(default_empty_colon, "${EMPTY:-d}", "d");
    word!(default_empty_no_colon, "${EMPTY-d}", "");
    word!(alt_set, "${A:+yes}", "yes");
    word!(alt_empty_no_colon, "${EMPTY+yes}", "yes");
    word!(nested_default, "${X:-${Y:-z}}", "z");
    word!(prefix_short, "${P#*/}", "a/b/c.tar.gz");
    word!(prefix_long, "${P##*/}", "c.tar.gz");
    word!(suffix_short, "${P%.*}", "/a/b/c.tar");
    word!(suffix_long, "${P%%.*}", "/a/b/c");
    word!(replace_first, "${P/\\//:}", ":a/b/c.tar.gz");
    word!(replace_all, "${P//\\//:}", ":a:b:c.tar.gz");
    word!(replace_any_char, "${A//?/x}", "xxx");
    word!(replace_empty_pattern_all, "${A///-}", "-a-a-a-");
    word!(
        replace_template_whole_match,
        "${A//a/<\\$0>}",
        "<\\a><\\a><\\a>"
    );
    word!(brackets_are_literal, "${P#[/]}", "/a/b/c.tar.gz");
    word!(backtick_escape, "a`$A`\"", "a$A\"", escape = '`');
    word!(
        backslash_is_plain_with_backtick,
        "a\\b",
        "a\\b",
        escape = '`'
    );
    word!(single_quotes_literal, "'$A\\'", "$A\\");
    word!(double_quote_escapes, "\"\\$A \\\" \\x\"", "$A \" \\x");
    word!(trailing_escape_dropped, "ab\\", "ab");
    word!(dollar_alone, "a$", "a$");
    word!(positional, "$12x", "x");
    word!(special_at, "$@@", "@");
    word!(unicode_name, "$변수x", "");

    fails!(unterminated_brace, "${A", "missing '}'");
    fails!(bad_substitution, "${:-x}", "bad substitution");
    fails!(assign_rejected, "${A=x}", "unsupported modifier (=)");
    fails!(colon_hash_rejected, "${A:#x}", "unsupported modifier (:#)");
    fails!(
        colon_percent_rejected,
        "${A:%x}",
        "unsupported modifier (:%)"
    );
    fails!(replace_without_slash, "${A//x}", "missing '/'");
    fails!(
        required_unset,
        "${NOPE:?}",
        "NOPE: is not allowed to be unset"
    );
    fails!(
        required_empty,
        "${EMPTY:?}",
        "EMPTY: is not allowed to be empty"
    );
    fails!(required_message, "${NOPE?go $A}", "NOPE: go aaa");
    fails!(invalid_pattern_escape, "${A#\\x}", "invalid escape");
    fails!(unterminated_double, "\"abc", "double-quote");
    fails!(unterminated_single, "'abc", "single-quote");
    fails!(error_names_input, "${A", "failed to process \"${A\"");

    words!(split_plain, "a  b\tc", ["a", "b", "c"]);
    words!(split_expansion, "x${SP}y", ["x", "x", "y", "y"]);
    words!(quoted_expansion_kept, "x\"${SP}\"y", ["x x  y y"]);
    words!(escaped_space, "a\\ b c", ["a b", "c"]);
    words!(empty_quotes_no_word, "'' a", ["a"]);

    #[test]
    fn matches_and_unmatched_are_recorded() {
        let e = Lexer::new('\\')
            .process_word_with_matches("${A+x}$NOPE${EMPTY}", &env())
            .unwrap();
        assert_eq!(e.value, "x");
        assert_eq!(e.matched.into_iter().collect::<Vec<_>>(), ["A", "EMPTY"]);
        assert_eq!(e.unmatched.into_iter().collect::<Vec<_>>(), ["NOPE"]);
    }

    #[test]
    fn later_definition_wins_in_vec() {
        let env = vec![
            ("X".to_string(), "1".to_string()),
            ("X".to_string(), "2".to_string()),
        ];
        assert_eq!(Lexer::new('\\').process_word("$X", &env).unwrap(), "2");
    }

    #[test]
    fn skip_unset_keeps_references() {
        let lex = Lexer::new('\\').skip_unset_env(true);
        assert_eq!(
            lex.process_word("$NOPE ${NOPE} ${NOPE:-x} $A", &env())
                .unwrap(),
            "$NOPE ${NOPE} ${NOPE:-x} aaa"
        );
    }

    #[test]
    fn raw_quotes_keep_quotes() {
        let lex = Lexer::new('\\').raw_quotes(true);
        assert_eq!(
            lex.process_word("'a' \"$A\"", &env()).unwrap(),
            "'a' \"aaa\""
        );
    }

    #[test]
    fn error_offset_points_into_the_word() {
        let err = Lexer::new('\\')
            .process_word("abc ${A=x}", &env())
            .unwrap_err();
        assert_eq!(err.offset, 7);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let lex = Lexer::new('\\');
        let ok = format!("{}x{}", "${B:-".repeat(60), "}".repeat(60));
        assert_eq!(lex.process_word(&ok, &NoEnv).unwrap(), "x");
        let deep = format!("{}x{}", "${B:-".repeat(5000), "}".repeat(5000));
        let e = lex.process_word(&deep, &NoEnv).unwrap_err();
        assert!(e.to_string().contains("nested more than"), "{e}");
    }

    #[test]
    fn never_panics_on_odd_input() {
        let samples = [
            "$", "${", "${}", "${A/", "${A//", "${A/\\", "\\", "\"\\", "${A#\\", "${A%%", "${A:",
            "'", "$\u{0}",
        ];
        for s in samples {
            let _ = Lexer::new('\\').process_words(s, &env());
            let _ = Lexer::new('`').process_word(s, &env());
        }
    }

    /// Random words over the characters that matter never make the lexer panic, and a word
    /// that expands fine also splits fine.
    #[test]
    fn random_words_never_panic() {
        let alphabet: Vec<char> = "${}:-+?#%/*\\\"'` aAB1@é\t".chars().collect();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..5_000 {
            let mut word = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            for i in 0..(seed % 14) {
                word.push(alphabet[((seed >> (i * 4)) as usize ^ i as usize) % alphabet.len()]);
            }
            for lex in [
                Lexer::new('\\'),
                Lexer::new('`'),
                Lexer::new('\\').skip_unset_env(true).raw_quotes(true),
            ] {
                let single = lex.process_word(&word, &env());
                let split = lex.process_words(&word, &env());
                assert_eq!(single.is_ok(), split.is_ok(), "{word:?}");
                if let Err(e) = single {
                    assert!(e.offset <= word.len(), "{word:?}: offset {}", e.offset);
                }
            }
        }
    }
}
