//! `.dockerignore`: reading the file, matching paths, and filtering a tree walk.
//!
//! The rules are those of `moby/patternmatcher`, which BuildKit and Docker use:
//!
//! * [`read_patterns`] turns the file into a pattern list: `#` in column 0 starts a comment,
//!   lines are trimmed, blank lines dropped, patterns path-cleaned and made relative.
//! * [`PatternMatcher`] compiles the list. A pattern is a glob (`*` and `?` stop at `/`,
//!   `[a-z]`/`[^…]` classes, `\` escapes, `**` spans any number of directories); a leading `!`
//!   makes it an *exception* that re-includes what earlier patterns excluded. The last pattern
//!   that applies wins.
//! * [`PatternMatcher::matches_or_parent_matches`] is the rule for the build context: a path is
//!   excluded when a pattern matches it **or one of its parent directories**.
//! * [`FilterWalk`] applies include/exclude patterns during a depth-first walk the way
//!   BuildKit's context sender (fsutil) does: it carries each directory's per-pattern results to
//!   its children, prunes directories nothing inside can come back from, and tells the caller
//!   when an excluded directory must be emitted after all because something below it was
//!   re-included.
//!
//! ```
//! use forge_parser::dockerignore::{read_patterns, PatternMatcher};
//!
//! let patterns = read_patterns("# build output\ntarget/\n*.log\n!keep.log\n");
//! assert_eq!(patterns, ["target", "*.log", "!keep.log"]);
//! let pm = PatternMatcher::new(&patterns).unwrap();
//! assert!(pm.matches_or_parent_matches("target/debug/forge").unwrap());
//! assert!(pm.matches_or_parent_matches("error.log").unwrap());
//! assert!(!pm.matches_or_parent_matches("keep.log").unwrap());
//! assert!(!pm.matches_or_parent_matches("src/main.rs").unwrap());
//! ```

use std::path::{Path, PathBuf};

/// Why a pattern list cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// A pattern that is only `!`.
    #[error("illegal exclusion pattern: \"!\"")]
    IllegalExclusion,
    /// A malformed glob (bad character class, trailing `\`, …). Some patterns are accepted by
    /// the glob syntax check but fail when first used for matching, as upstream does.
    #[error("syntax error in pattern: {pattern:?}")]
    BadPattern { pattern: String },
    /// [`PatternMatcher::matches_using_parent_results`] got results for another matcher.
    #[error("wrong number of values in parent match info (expected {expected}, got {got})")]
    ParentInfoMismatch { expected: usize, got: usize },
}

/// Reads an ignore file's text into patterns, as Docker and BuildKit do.
///
/// A UTF-8 BOM is dropped; a line whose first character is `#` is a comment (so `  # x` is the
/// pattern `# x`); lines are trimmed and blank ones dropped; a leading `!` is kept but the text
/// after it is trimmed; the pattern is path-cleaned and one leading `/` removed. A lone `!` is
/// returned as is and rejected by [`PatternMatcher::new`].
pub fn read_patterns(content: &str) -> Vec<String> {
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    let mut out = Vec::new();
    for line in content.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = String::new();
        if !pattern.is_empty() {
            cleaned = clean_path(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        out.push(if invert {
            format!("!{cleaned}")
        } else {
            cleaned
        });
    }
    out
}

/// Where to look for the ignore file, best first: `<Dockerfile>.dockerignore` beside the
/// Dockerfile (e.g. `build/Dockerfile.dev.dockerignore`), then `<context>/.dockerignore`.
/// The first one that exists is used; the other is then ignored entirely.
pub fn ignore_file_candidates(context_dir: &Path, dockerfile: &Path) -> Vec<PathBuf> {
    let mut out = Vec::with_capacity(2);
    if let Some(name) = dockerfile.file_name() {
        let mut specific = name.to_os_string();
        specific.push(".dockerignore");
        out.push(dockerfile.with_file_name(specific));
    }
    out.push(context_dir.join(".dockerignore"));
    out
}

/// Go's `path.Clean` for slash-separated paths: collapses `//`, removes `.` segments, resolves
/// `..` where possible, drops a trailing `/`; the empty path becomes `.`.
pub fn clean_path(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let body = parts.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_string(),
        (false, false) => body,
    }
}

/// Could the exception pattern `pattern` match a path inside `dir` (or `dir` itself, or one of
/// its parents, which would re-include everything below)? See [`PatternMatcher::can_skip_dir`].
fn exception_may_reach(pattern: &str, dir: &str) -> bool {
    // Classes can match `/`, escapes can hide one, and `^` is an anchor, not a character.
    if pattern.contains(['[', ']', '\\', '^']) {
        return true;
    }
    let pattern_segs: Vec<&str> = pattern.split('/').collect();
    let dir_segs: Vec<&str> = dir.split('/').collect();
    for (i, seg) in pattern_segs.iter().enumerate() {
        if seg.contains("**") || i >= dir_segs.len() {
            return true;
        }
        if !segment_matches(seg, dir_segs[i]) {
            return false;
        }
    }
    // The pattern matched `dir` or one of its parents.
    true
}

/// `*` and `?` glob matching within one path segment (no classes or escapes).
fn segment_matches(glob: &str, text: &str) -> bool {
    let (g, t): (Vec<char>, Vec<char>) = (glob.chars().collect(), text.chars().collect());
    // Classic wildcard matching with one backtrack point for the last `*`.
    let (mut gi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if gi < g.len() && (g[gi] == '?' || (g[gi] != '*' && g[gi] == t[ti])) {
            gi += 1;
            ti += 1;
        } else if gi < g.len() && g[gi] == '*' {
            star = Some((gi, ti));
            gi += 1;
        } else if let Some((sg, st)) = star {
            gi = sg + 1;
            ti = st + 1;
            star = Some((sg, st + 1));
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|c| *c == '*')
}

/// Go's `filepath.Dir`: everything before the last `/`, cleaned (`.` when there is none).
fn parent_dir(path: &str) -> String {
    match path.rfind('/') {
        Some(i) => clean_path(&path[..=i]),
        None => ".".to_string(),
    }
}

/// How one pattern is tested against a path.
#[derive(Clone, Debug)]
enum Test {
    /// The path equals the text.
    Exact(String),
    /// The path starts with the text (`dir/**`).
    Prefix(String),
    /// `**<text>`: the path ends with the text, or (for `**/x`) equals `x`.
    Suffix(String),
    Regex(Regex),
    /// The glob passed the syntax check but its translation is not a valid expression; every
    /// use of the pattern fails.
    Broken,
}

/// One compiled pattern.
#[derive(Clone, Debug)]
pub struct Pattern {
    cleaned: String,
    exclusion: bool,
    dirs: usize,
    test: Test,
}

impl Pattern {
    /// The cleaned pattern text, without `!`.
    pub fn as_str(&self) -> &str {
        &self.cleaned
    }

    /// True for `!` patterns (exceptions).
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    fn matches(&self, path: &str) -> Result<bool, PatternError> {
        Ok(match &self.test {
            Test::Exact(s) => path == s,
            Test::Prefix(s) => path.starts_with(s.as_str()),
            Test::Suffix(s) => {
                path.ends_with(s.as_str()) || s.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            Test::Regex(re) => re.is_match(path),
            Test::Broken => {
                return Err(PatternError::BadPattern {
                    pattern: self.cleaned.clone(),
                })
            }
        })
    }

    /// Does the pattern match `path` or one of its parent directories?
    fn matches_self_or_parent(&self, path: &str) -> Result<bool, PatternError> {
        if self.matches(path)? {
            return Ok(true);
        }
        let parent = parent_dir(path);
        if parent == "." {
            return Ok(false);
        }
        let mut prefix_end = 0;
        let parts: Vec<&str> = parent.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            prefix_end += part.len() + usize::from(i > 0);
            if self.matches(&parent[..prefix_end]).unwrap_or(false) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Without the trailing `/**` or `/*`: the directory part fsutil compares by prefix.
    fn without_trailing_glob(&self) -> &str {
        let s = self.cleaned.strip_suffix("/**").unwrap_or(&self.cleaned);
        s.strip_suffix("/*").unwrap_or(s)
    }
}

/// Per-pattern results for a directory, handed down to its children during a walk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

/// A compiled pattern list.
#[derive(Clone, Debug, Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

impl PatternMatcher {
    /// Compiles patterns: each is trimmed (empty ones dropped), path-cleaned, split from its `!`
    /// and syntax-checked like Go's `filepath.Match`.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<PatternMatcher, PatternError> {
        let mut pm = PatternMatcher::default();
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let mut p = clean_path(p);
            let exclusion = p.starts_with('!');
            if exclusion {
                if p.len() == 1 {
                    return Err(PatternError::IllegalExclusion);
                }
                p.remove(0);
                pm.exclusions = true;
            }
            if !glob_syntax_ok(&p) {
                return Err(PatternError::BadPattern { pattern: p });
            }
            let test = compile(&p);
            pm.patterns.push(Pattern {
                dirs: p.split('/').count(),
                cleaned: p,
                exclusion,
                test,
            });
        }
        Ok(pm)
    }

    /// The compiled patterns, in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// True when some pattern is a `!` exception.
    pub fn has_exclusions(&self) -> bool {
        self.exclusions
    }

    /// The `.dockerignore` rule: is `path` (slash-separated, relative to the context, used as
    /// given) excluded? A pattern applies when it matches the path or any parent directory.
    pub fn matches_or_parent_matches(&self, path: &str) -> Result<bool, PatternError> {
        let mut matched = false;
        for pat in &self.patterns {
            if pat.exclusion != matched {
                continue;
            }
            if pat.matches_self_or_parent(path)? {
                matched = !pat.exclusion;
            }
        }
        Ok(matched)
    }

    /// Like [`PatternMatcher::matches_or_parent_matches`] but without looking at parents.
    pub fn matches_exact(&self, path: &str) -> Result<bool, PatternError> {
        let mut matched = false;
        for pat in &self.patterns {
            if pat.exclusion != matched {
                continue;
            }
            if pat.matches(path)? {
                matched = !pat.exclusion;
            }
        }
        Ok(matched)
    }

    /// The legacy rule (patternmatcher's deprecated `Matches`): the path is cleaned first
    /// (`.` never matches), and a parent directory is only tried at the pattern's own depth,
    /// so `**/dir` does not match `dir/file`. Prefer
    /// [`PatternMatcher::matches_or_parent_matches`].
    pub fn matches(&self, path: &str) -> Result<bool, PatternError> {
        let file = clean_path(path);
        if file == "." {
            return Ok(false);
        }
        let parent = parent_dir(&file);
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for pat in &self.patterns {
            if pat.exclusion != matched {
                continue;
            }
            let mut hit = pat.matches(&file)?;
            if !hit && parent != "." && pat.dirs <= parent_dirs.len() {
                hit = pat
                    .matches(&parent_dirs[..pat.dirs].join("/"))
                    .unwrap_or(false);
            }
            if hit {
                matched = !pat.exclusion;
            }
        }
        Ok(matched)
    }

    /// The walk form: decides `path` from the results of its parent directory (pass
    /// `MatchInfo::default()` for a top-level entry, or when the parent is unknown, in which
    /// case parents are checked from the path itself). Returns the decision and the info to
    /// hand to this entry's children.
    pub fn matches_using_parent_results(
        &self,
        path: &str,
        parent: &MatchInfo,
    ) -> Result<(bool, MatchInfo), PatternError> {
        let known = !parent.parent_matched.is_empty();
        if known && parent.parent_matched.len() != self.patterns.len() {
            return Err(PatternError::ParentInfoMismatch {
                expected: self.patterns.len(),
                got: parent.parent_matched.len(),
            });
        }
        let mut matched = false;
        let mut info = MatchInfo {
            parent_matched: vec![false; self.patterns.len()],
        };
        for (i, pat) in self.patterns.iter().enumerate() {
            let mut hit = known && parent.parent_matched[i];
            if !hit {
                if pat.exclusion != matched {
                    continue;
                }
                hit = if known {
                    pat.matches(path)?
                } else {
                    pat.matches_self_or_parent(path)?
                };
            }
            info.parent_matched[i] = hit;
            if hit {
                matched = !pat.exclusion;
            }
        }
        Ok((matched, info))
    }

    /// Whether an excluded directory can be skipped without walking it: true when no `!`
    /// exception could re-include anything inside it.
    ///
    /// The answer is conservative (`false` when unsure). An exception is compared with the
    /// directory one path segment at a time: a segment holding `**`, a class, an escape or `^`, an
    /// exception as short as the directory or shorter, or one that runs past it after matching
    /// every segment, may re-include something; a segment that cannot match ends the question.
    /// fsutil only prunes when every exception is a literal path; this also prunes
    /// `build` under `!*.md`.
    pub fn can_skip_dir(&self, dir: &str) -> bool {
        !self
            .patterns
            .iter()
            .any(|p| p.exclusion && exception_may_reach(&p.cleaned, dir))
    }

    /// Do all patterns of this kind (exceptions or not) have literal directory parts?
    fn only_literal(&self, exclusions: bool) -> bool {
        self.patterns
            .iter()
            .filter(|p| p.exclusion == exclusions)
            .all(|p| {
                !p.without_trailing_glob()
                    .contains(['*', '[', ']', '?', '^', '\\'])
            })
    }

    /// Is there a pattern of this kind at or below `dir`?
    fn has_pattern_under(&self, dir: &str, exclusions: bool) -> bool {
        let dir_slash = format!("{dir}/");
        self.patterns
            .iter()
            .filter(|p| p.exclusion == exclusions)
            .any(|p| format!("{}/", p.without_trailing_glob()).starts_with(&dir_slash))
    }
}

/// Include and exclude patterns applied together, as BuildKit's context transfer does:
/// an entry is kept when it (or a parent) matches an include pattern (if there are any) and
/// it is not excluded by the exclude patterns.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    include: Option<PatternMatcher>,
    exclude: Option<PatternMatcher>,
    only_prefix_includes: bool,
}

impl Filter {
    /// An empty list means "no filter" on that side.
    pub fn new<I: AsRef<str>, E: AsRef<str>>(
        include: &[I],
        exclude: &[E],
    ) -> Result<Filter, PatternError> {
        let include = if include.is_empty() {
            None
        } else {
            Some(PatternMatcher::new(include)?)
        };
        let exclude = if exclude.is_empty() {
            None
        } else {
            Some(PatternMatcher::new(exclude)?)
        };
        Ok(Filter {
            only_prefix_includes: include.as_ref().is_none_or(|m| m.only_literal(false)),
            include,
            exclude,
        })
    }

    /// A filter from `.dockerignore` patterns only.
    pub fn excluding<S: AsRef<str>>(exclude: &[S]) -> Result<Filter, PatternError> {
        Filter::new(&[] as &[&str], exclude)
    }

    /// Is `path` visible through the filter (opening it directly, not walking)?
    pub fn allows(&self, path: &str) -> Result<bool, PatternError> {
        if let Some(inc) = &self.include {
            if !inc.matches_or_parent_matches(path)? {
                return Ok(false);
            }
        }
        if let Some(exc) = &self.exclude {
            if exc.matches_or_parent_matches(path)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Starts a walk.
    pub fn walk(&self) -> FilterWalk<'_> {
        FilterWalk {
            filter: self,
            stack: Vec::new(),
        }
    }
}

/// What to do with one entry of a walk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Visit {
    /// Emit the entry.
    pub emit: bool,
    /// For a directory: walk into it. (For files this is `false`.)
    pub descend: bool,
    /// Directories, outermost first, that were held back earlier and must be emitted now,
    /// before this entry, because this entry is kept.
    pub emit_parents: Vec<String>,
}

#[derive(Debug)]
struct Visited {
    path: String,
    with_slash: String,
    include: MatchInfo,
    exclude: MatchInfo,
    emitted: bool,
}

/// The state of one filtered depth-first walk. Feed every entry, parents before children,
/// with slash-separated paths relative to the root (no leading `/`), to [`FilterWalk::visit`].
#[derive(Debug)]
pub struct FilterWalk<'a> {
    filter: &'a Filter,
    stack: Vec<Visited>,
}

impl FilterWalk<'_> {
    pub fn visit(&mut self, path: &str, is_dir: bool) -> Result<Visit, PatternError> {
        while let Some(top) = self.stack.last() {
            if path.starts_with(&top.with_slash) {
                break;
            }
            self.stack.pop();
        }
        let mut hidden = false;
        let mut include_info = MatchInfo::default();
        let mut exclude_info = MatchInfo::default();
        let prune = Visit {
            emit: false,
            descend: false,
            emit_parents: Vec::new(),
        };

        if let Some(inc) = &self.filter.include {
            let parent = self
                .stack
                .last()
                .map(|d| &d.include)
                .cloned()
                .unwrap_or_default();
            let (m, info) = inc.matches_using_parent_results(path, &parent)?;
            include_info = info;
            if !m {
                if is_dir && self.filter.only_prefix_includes && !inc.has_pattern_under(path, false)
                {
                    return Ok(prune);
                }
                hidden = true;
            }
        }
        if let Some(exc) = &self.filter.exclude {
            let parent = self
                .stack
                .last()
                .map(|d| &d.exclude)
                .cloned()
                .unwrap_or_default();
            let (m, info) = exc.matches_using_parent_results(path, &parent)?;
            exclude_info = info;
            if m {
                if is_dir && exc.can_skip_dir(path) {
                    return Ok(prune);
                }
                hidden = true;
            }
        }

        let mut visit = Visit {
            emit: !hidden,
            descend: is_dir,
            emit_parents: Vec::new(),
        };
        if !hidden {
            for dir in self.stack.iter_mut().filter(|d| !d.emitted) {
                dir.emitted = true;
                visit.emit_parents.push(dir.path.clone());
            }
        }
        if is_dir {
            self.stack.push(Visited {
                path: path.to_string(),
                with_slash: format!("{path}/"),
                include: include_info,
                exclude: exclude_info,
                emitted: !hidden,
            });
        }
        Ok(visit)
    }
}

// ---------------------------------------------------------------------------------------
// Glob syntax check (Go's filepath.Match rules) and translation.

/// Does `pattern` pass Go's `filepath.Match` syntax check? Every chunk between unbracketed
/// `*` runs is checked: classes need a body and a `]`, range ends must not be `-` or `]`,
/// escapes need a following character.
fn glob_syntax_ok(pattern: &str) -> bool {
    let chars: Vec<char> = pattern.chars().collect();
    let mut rest = &chars[..];
    while !rest.is_empty() {
        while rest.first() == Some(&'*') {
            rest = &rest[1..];
        }
        let mut in_range = false;
        let mut i = 0;
        while i < rest.len() {
            match rest[i] {
                '\\' if i + 1 < rest.len() => i += 1,
                '[' => in_range = true,
                ']' => in_range = false,
                '*' if !in_range => break,
                _ => {}
            }
            i += 1;
        }
        if !chunk_ok(&rest[..i]) {
            return false;
        }
        rest = &rest[i..];
    }
    true
}

fn chunk_ok(chunk: &[char]) -> bool {
    // One class-range endpoint; advances `i` past it.
    fn endpoint(chunk: &[char], i: &mut usize) -> bool {
        match chunk.get(*i) {
            None | Some('-') | Some(']') => return false,
            Some('\\') => {
                *i += 1;
                if *i >= chunk.len() {
                    return false;
                }
            }
            _ => {}
        }
        *i += 1;
        *i < chunk.len()
    }
    let mut i = 0;
    while i < chunk.len() {
        match chunk[i] {
            '[' => {
                i += 1;
                if chunk.get(i) == Some(&'^') {
                    i += 1;
                }
                let mut ranges = 0;
                loop {
                    if chunk.get(i) == Some(&']') && ranges > 0 {
                        i += 1;
                        break;
                    }
                    if !endpoint(chunk, &mut i) {
                        return false;
                    }
                    if chunk[i] == '-' {
                        i += 1;
                        if !endpoint(chunk, &mut i) {
                            return false;
                        }
                    }
                    ranges += 1;
                }
            }
            '\\' => {
                i += 1;
                if i >= chunk.len() {
                    return false;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    true
}

/// Translates a cleaned glob the way patternmatcher does: literal patterns become string
/// comparisons, `x/**` a prefix test, `**x` (literal x) a suffix test, everything else an
/// anchored regular expression (`*` → `[^/]*`, `?` → `[^/]`, `**/` → `(.*/)?`, trailing `**`
/// → `.*`, brackets passed through).
fn compile(pattern: &str) -> Test {
    #[derive(PartialEq)]
    enum Kind {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut re = String::from("^");
    let mut kind = Kind::Exact;
    let mut i = 0;
    let mut index = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        re.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    re.push_str("(.*/)?");
                    kind = Kind::Regex;
                }
                if index == 0 {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                kind = Kind::Regex;
            }
            '?' => {
                re.push_str("[^/]");
                kind = Kind::Regex;
            }
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                re.push('\\');
                re.push(c);
            }
            '\\' => match chars.get(i) {
                Some(&n) => {
                    i += 1;
                    re.push('\\');
                    re.push(n);
                    kind = Kind::Regex;
                }
                None => re.push('\\'),
            },
            '[' | ']' => {
                re.push(c);
                kind = Kind::Regex;
            }
            c => re.push(c),
        }
        index += 1;
    }
    match kind {
        Kind::Exact => Test::Exact(pattern.to_string()),
        Kind::Prefix => Test::Prefix(pattern[..pattern.len() - 2].to_string()),
        Kind::Suffix => Test::Suffix(pattern[2..].to_string()),
        Kind::Regex => {
            re.push('$');
            match Regex::parse(&re) {
                Some(r) => Test::Regex(r),
                None => Test::Broken,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// A small regular-expression engine for the translated globs. It understands the subset of
// Go's RE2 syntax the translation can produce (literals, escapes, `.`, classes with ranges,
// negation, POSIX names and `\d\s\w`, groups, `*`/`+`/`?`, `^`/`$`) and rejects the rest, the
// way Go's compiler would reject invalid input. Matching is a Thompson-NFA simulation, so it
// runs in time linear in the path length whatever the pattern.

#[derive(Clone, Debug)]
enum ClassItem {
    Range(char, char),
    /// A named class (`\d`, `[:alpha:]`, …), possibly negated.
    Named(fn(char) -> bool, bool),
}

#[derive(Clone, Debug)]
struct Class {
    negated: bool,
    items: Vec<ClassItem>,
}

impl Class {
    fn contains(&self, c: char) -> bool {
        let hit = self.items.iter().any(|it| match it {
            ClassItem::Range(lo, hi) => *lo <= c && c <= *hi,
            ClassItem::Named(f, neg) => f(c) != *neg,
        });
        hit != self.negated
    }
}

#[derive(Clone, Debug)]
enum Node {
    Char(char),
    /// `.`: any character but a newline.
    Any,
    Class(Class),
    Group(Vec<Node>),
    Repeat(Box<Node>, RepeatKind),
    Begin,
    End,
}

#[derive(Clone, Copy, Debug)]
enum RepeatKind {
    Star,
    Plus,
    Optional,
}

#[derive(Clone, Debug)]
enum State {
    Char(char, usize),
    Any(usize),
    Class(usize, usize),
    Split(usize, usize),
    Begin(usize),
    End(usize),
    Match,
}

/// A compiled expression.
#[derive(Clone, Debug)]
struct Regex {
    states: Vec<State>,
    classes: Vec<Class>,
    start: usize,
    /// Literal text every match begins with (after the leading `^`).
    prefix: String,
    /// Literal text every match ends with (before the trailing `$`).
    suffix: String,
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn posix_class(name: &str) -> Option<fn(char) -> bool> {
    Some(match name {
        "alnum" => |c: char| c.is_ascii_alphanumeric(),
        "alpha" => |c: char| c.is_ascii_alphabetic(),
        "ascii" => |c: char| c.is_ascii(),
        "blank" => |c: char| c == ' ' || c == '\t',
        "cntrl" => |c: char| c.is_ascii_control(),
        "digit" => |c: char| c.is_ascii_digit(),
        "graph" => |c: char| c.is_ascii_graphic(),
        "lower" => |c: char| c.is_ascii_lowercase(),
        "print" => |c: char| c.is_ascii_graphic() || c == ' ',
        "punct" => |c: char| c.is_ascii_punctuation(),
        "space" => |c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c'),
        "upper" => |c: char| c.is_ascii_uppercase(),
        "word" => is_word,
        "xdigit" => |c: char| c.is_ascii_hexdigit(),
        _ => return None,
    })
}

/// What a backslash escape stands for.
enum Escape {
    Char(char),
    Named(fn(char) -> bool, bool),
}

fn parse_escape(c: char) -> Option<Escape> {
    Some(match c {
        'a' => Escape::Char('\x07'),
        'f' => Escape::Char('\x0c'),
        't' => Escape::Char('\t'),
        'n' => Escape::Char('\n'),
        'r' => Escape::Char('\r'),
        'v' => Escape::Char('\x0b'),
        'd' | 'D' => Escape::Named(|c: char| c.is_ascii_digit(), c == 'D'),
        's' | 'S' => Escape::Named(
            |c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c'),
            c == 'S',
        ),
        'w' | 'W' => Escape::Named(is_word, c == 'W'),
        c if c.is_ascii_punctuation() => Escape::Char(c),
        _ => return None,
    })
}

impl Regex {
    fn parse(src: &str) -> Option<Regex> {
        let chars: Vec<char> = src.chars().collect();
        let mut pos = 0;
        let nodes = parse_seq(&chars, &mut pos, 0)?;
        if pos != chars.len() {
            return None;
        }
        let body: &[Node] = match nodes.first() {
            Some(Node::Begin) => &nodes[1..],
            _ => &[],
        };
        let literal = |n: &Node| {
            if let Node::Char(c) = n {
                Some(*c)
            } else {
                None
            }
        };
        let prefix: String = body.iter().map_while(literal).collect();
        let tail: &[Node] = match nodes.split_last() {
            Some((Node::End, rest)) if matches!(nodes.first(), Some(Node::Begin)) => rest,
            _ => &[],
        };
        let mut suffix: Vec<char> = tail.iter().rev().map_while(literal).collect();
        suffix.reverse();
        let mut re = Regex {
            states: Vec::new(),
            classes: Vec::new(),
            start: 0,
            prefix,
            suffix: suffix.into_iter().collect(),
        };
        let end = re.push(State::Match);
        re.start = re.compile_seq(&nodes, end);
        Some(re)
    }

    fn push(&mut self, s: State) -> usize {
        self.states.push(s);
        self.states.len() - 1
    }

    /// Compiles `nodes` so that they continue to state `next`; returns the entry state.
    fn compile_seq(&mut self, nodes: &[Node], next: usize) -> usize {
        nodes
            .iter()
            .rev()
            .fold(next, |next, node| self.compile_node(node, next))
    }

    fn compile_node(&mut self, node: &Node, next: usize) -> usize {
        match node {
            Node::Char(c) => self.push(State::Char(*c, next)),
            Node::Any => self.push(State::Any(next)),
            Node::Class(cl) => {
                self.classes.push(cl.clone());
                let idx = self.classes.len() - 1;
                self.push(State::Class(idx, next))
            }
            Node::Group(inner) => self.compile_seq(inner, next),
            Node::Begin => self.push(State::Begin(next)),
            Node::End => self.push(State::End(next)),
            Node::Repeat(inner, kind) => match kind {
                RepeatKind::Optional => {
                    let body = self.compile_node(inner, next);
                    self.push(State::Split(body, next))
                }
                RepeatKind::Star | RepeatKind::Plus => {
                    // loop: split(body → loop, next)
                    let split = self.push(State::Split(usize::MAX, next));
                    let body = self.compile_node(inner, split);
                    self.states[split] = State::Split(body, next);
                    if matches!(kind, RepeatKind::Star) {
                        split
                    } else {
                        body
                    }
                }
            },
        }
    }

    /// Adds state `s` and everything reachable from it without reading a character.
    /// `seen[s] == stamp` marks states already added for this position.
    fn add(
        &self,
        set: &mut Vec<usize>,
        seen: &mut [u32],
        stamp: u32,
        s: usize,
        at_start: bool,
        at_end: bool,
    ) {
        if seen[s] == stamp {
            return;
        }
        seen[s] = stamp;
        match self.states[s] {
            State::Split(a, b) => {
                self.add(set, seen, stamp, a, at_start, at_end);
                self.add(set, seen, stamp, b, at_start, at_end);
            }
            State::Begin(n) => {
                if at_start {
                    self.add(set, seen, stamp, n, at_start, at_end);
                }
            }
            State::End(n) => {
                if at_end {
                    self.add(set, seen, stamp, n, at_start, at_end);
                }
            }
            _ => set.push(s),
        }
    }

    fn is_match(&self, text: &str) -> bool {
        // Cheap necessary conditions first: the literal text every match starts/ends with.
        if !text.starts_with(self.prefix.as_str()) || !text.ends_with(self.suffix.as_str()) {
            return false;
        }
        let mut seen = vec![0u32; self.states.len()];
        let mut current = Vec::with_capacity(self.states.len());
        let mut next = Vec::with_capacity(self.states.len());
        self.add(
            &mut current,
            &mut seen,
            1,
            self.start,
            true,
            text.is_empty(),
        );
        let mut stamp = 1;
        for (pos, c) in text.char_indices() {
            stamp += 1;
            next.clear();
            let at_end = pos + c.len_utf8() == text.len();
            for &s in &current {
                let target = match self.states[s] {
                    State::Char(want, t) if want == c => Some(t),
                    State::Any(t) if c != '\n' => Some(t),
                    State::Class(k, t) if self.classes[k].contains(c) => Some(t),
                    _ => None,
                };
                if let Some(t) = target {
                    self.add(&mut next, &mut seen, stamp, t, false, at_end);
                }
            }
            if next.is_empty() {
                return false;
            }
            std::mem::swap(&mut current, &mut next);
        }
        current
            .iter()
            .any(|&s| matches!(self.states[s], State::Match))
    }
}

fn parse_seq(chars: &[char], pos: &mut usize, depth: usize) -> Option<Vec<Node>> {
    let mut nodes: Vec<Node> = Vec::new();
    while let Some(&c) = chars.get(*pos) {
        let node = match c {
            ')' => {
                if depth == 0 {
                    return None;
                }
                return Some(nodes);
            }
            '|' => return None, // alternation is never produced (`|` is always escaped)
            '*' | '+' | '?' => {
                let kind = match c {
                    '*' => RepeatKind::Star,
                    '+' => RepeatKind::Plus,
                    _ => RepeatKind::Optional,
                };
                *pos += 1;
                // A lazy marker is irrelevant for a yes/no match.
                if chars.get(*pos) == Some(&'?') {
                    *pos += 1;
                }
                if matches!(chars.get(*pos), Some('*' | '+' | '?')) {
                    return None; // nested repetition
                }
                match nodes.pop() {
                    None | Some(Node::Begin) | Some(Node::End) => return None,
                    Some(Node::Repeat(..)) => return None,
                    Some(prev) => nodes.push(Node::Repeat(Box::new(prev), kind)),
                }
                continue;
            }
            '^' => Node::Begin,
            '$' => Node::End,
            '.' => Node::Any,
            '(' => {
                *pos += 1;
                if chars.get(*pos) == Some(&'?') {
                    return None; // flags and non-capturing groups are never produced
                }
                let inner = parse_seq(chars, pos, depth + 1)?;
                if chars.get(*pos) != Some(&')') {
                    return None;
                }
                Node::Group(inner)
            }
            '[' => {
                *pos += 1;
                let class = parse_class(chars, pos)?;
                nodes.push(Node::Class(class));
                continue;
            }
            '\\' => {
                *pos += 1;
                let e = *chars.get(*pos)?;
                match parse_escape(e)? {
                    Escape::Char(c) => Node::Char(c),
                    Escape::Named(f, neg) => Node::Class(Class {
                        negated: false,
                        items: vec![ClassItem::Named(f, neg)],
                    }),
                }
            }
            c => Node::Char(c),
        };
        *pos += 1;
        nodes.push(node);
    }
    if depth > 0 {
        return None;
    }
    Some(nodes)
}

/// Parses a class body after `[`; leaves `pos` after the closing `]`.
fn parse_class(chars: &[char], pos: &mut usize) -> Option<Class> {
    let mut class = Class {
        negated: false,
        items: Vec::new(),
    };
    if chars.get(*pos) == Some(&'^') {
        class.negated = true;
        *pos += 1;
    }
    let mut first = true;
    loop {
        let c = *chars.get(*pos)?;
        if c == ']' && !first {
            *pos += 1;
            return Some(class);
        }
        first = false;
        if c == '[' && chars.get(*pos + 1) == Some(&':') {
            let rest: String = chars[*pos + 2..].iter().collect();
            if let Some(end) = rest.find(":]") {
                let name = &rest[..end];
                let (neg, name) = match name.strip_prefix('^') {
                    Some(n) => (true, n),
                    None => (false, name),
                };
                let f = posix_class(name)?;
                class.items.push(ClassItem::Named(f, neg));
                *pos += 2 + name.chars().count() + usize::from(neg) + 2;
                continue;
            }
        }
        let lo = match class_char(chars, pos)? {
            Escape::Char(c) => c,
            Escape::Named(f, neg) => {
                class.items.push(ClassItem::Named(f, neg));
                continue;
            }
        };
        if chars.get(*pos) == Some(&'-') && chars.get(*pos + 1).is_some_and(|c| *c != ']') {
            *pos += 1;
            let hi = match class_char(chars, pos)? {
                Escape::Char(c) => c,
                Escape::Named(..) => return None,
            };
            if hi < lo {
                return None; // invalid character class range
            }
            class.items.push(ClassItem::Range(lo, hi));
        } else {
            class.items.push(ClassItem::Range(lo, lo));
        }
    }
}

fn class_char(chars: &[char], pos: &mut usize) -> Option<Escape> {
    let c = *chars.get(*pos)?;
    *pos += 1;
    if c != '\\' {
        return Some(Escape::Char(c));
    }
    let e = *chars.get(*pos)?;
    *pos += 1;
    parse_escape(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ignored!(name, [patterns], path, expected)` checks `matches_or_parent_matches`.
    macro_rules! ignored {
        ($name:ident, [$($p:expr),*], $path:expr, $expected:expr) => {
            #[test]
            fn $name() {
                let pm = PatternMatcher::new(&[$($p),*] as &[&str]).unwrap();
                assert_eq!(pm.matches_or_parent_matches($path), Ok($expected));
            }
        };
    }

    /// `bad!(name, [patterns])`: compiling fails.
    macro_rules! bad {
        ($name:ident, [$($p:expr),*]) => {
            #[test]
            fn $name() {
                assert!(PatternMatcher::new(&[$($p),*] as &[&str]).is_err());
            }
        };
    }

    /// `clean!(name, input, expected)`.
    macro_rules! clean {
        ($name:ident, $input:expr, $expected:expr) => {
            #[test]
            fn $name() {
                assert_eq!(clean_path($input), $expected);
            }
        };
    }

    ignored!(literal_file, ["foo"], "foo", true);
    ignored!(literal_parent, ["foo"], "foo/bar/baz", true);
    ignored!(literal_not_prefix, ["foo"], "foobar", false);
    ignored!(star_stops_at_slash, ["*.go"], "a/b.go", false);
    ignored!(star_top_level, ["*.go"], "b.go", true);
    ignored!(doublestar_any_depth, ["**/*.go"], "a/b/c.go", true);
    ignored!(doublestar_zero_dirs, ["**/c.go"], "c.go", true);
    ignored!(doublestar_suffix_is_textual, ["**file"], "myfile", true);
    ignored!(trailing_doublestar_not_dir_itself, ["dir/**"], "dir", false);
    ignored!(
        exception_reincludes,
        ["*.md", "!README.md"],
        "README.md",
        false
    );
    ignored!(
        exception_then_reexclude,
        ["docs", "!docs/a", "docs/a/b"],
        "docs/a/b",
        true
    );
    ignored!(class_range, ["f[a-c]o"], "fbo", true);
    ignored!(class_negated, ["f[^a-c]o"], "fbo", false);
    ignored!(escaped_star, ["a\\*b"], "a*b", true);
    ignored!(escaped_star_not_wild, ["a\\*b"], "axb", false);
    ignored!(regex_chars_literal, ["a+b(c)"], "a+b(c)", true);
    ignored!(question_mark_one_char, ["a?c"], "abc", true);
    ignored!(question_mark_not_slash, ["a?c"], "a/c", false);
    ignored!(pattern_cleaned, ["./foo//bar/"], "foo/bar/x", true);
    ignored!(regex_escape_class_quirk, ["a\\d"], "a7", true);
    ignored!(unicode_any, ["a?b"], "a☺b", true);

    bad!(lone_bang, ["!"]);
    bad!(open_class, ["a["]);
    bad!(empty_class, ["[]"]);
    bad!(dash_first, ["[-a]"]);
    bad!(trailing_backslash, ["a\\"]);

    clean!(clean_empty, "", ".");
    clean!(clean_dots, "a/./b/../c", "a/c");
    clean!(clean_rooted_dotdot, "/../a", "/a");
    clean!(clean_relative_dotdot, "../../a", "../../a");
    clean!(clean_trailing_slash, "a/b/", "a/b");
    clean!(clean_root, "//", "/");

    #[test]
    fn inverted_range_fails_on_use_not_on_build() {
        let pm = PatternMatcher::new(&["[Local-Only]/"]).unwrap();
        assert!(matches!(
            pm.matches_or_parent_matches("x"),
            Err(PatternError::BadPattern { .. })
        ));
        assert!(
            pm.matches_or_parent_matches("x").is_err(),
            "fails every time"
        );
        // Never evaluated: an earlier match means the inclusion pattern is skipped.
        let pm = PatternMatcher::new(&["**", "[z-a]"]).unwrap();
        assert_eq!(pm.matches_or_parent_matches("x"), Ok(true));
    }

    #[test]
    fn legacy_matches_checks_parent_at_pattern_depth_only() {
        let pm = PatternMatcher::new(&["**/dir"]).unwrap();
        assert_eq!(pm.matches("dir/file"), Ok(false));
        assert_eq!(pm.matches_or_parent_matches("dir/file"), Ok(true));
        assert_eq!(PatternMatcher::new(&["*"]).unwrap().matches("."), Ok(false));
    }

    #[test]
    fn read_patterns_rules() {
        let got = read_patterns("\u{feff}# c\n  # not a comment\r\n/abs\n!  neg/./x \n\n!\n//\n");
        assert_eq!(got, ["# not a comment", "abs", "!neg/x", "!", "/"]);
    }

    #[test]
    fn parent_results_agree_with_full_check() {
        let pm = PatternMatcher::new(&["a", "!a/b", "a/b/c*", "**/z"]).unwrap();
        let paths = [
            "a", "a/b", "a/b/c1", "a/b/c1/z", "a/b/d", "a/q", "z", "y/z/w",
        ];
        for p in paths {
            let mut info = MatchInfo::default();
            let mut prefix = String::new();
            let mut last = false;
            for seg in p.split('/') {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(seg);
                let (m, i) = pm.matches_using_parent_results(&prefix, &info).unwrap();
                info = i;
                last = m;
            }
            assert_eq!(last, pm.matches_or_parent_matches(p).unwrap(), "{p}");
        }
    }

    #[test]
    fn can_skip_dir_respects_exceptions() {
        let pm = PatternMatcher::new(&["build", "!build/keep"]).unwrap();
        assert!(!pm.can_skip_dir("build"));
        assert!(pm.can_skip_dir("other"));
        let pm = PatternMatcher::new(&["build"]).unwrap();
        assert!(pm.can_skip_dir("build"));
        let pm = PatternMatcher::new(&["build", "!**/*.keep"]).unwrap();
        assert!(
            !pm.can_skip_dir("build"),
            "a wildcard exception may re-include anything"
        );
    }

    #[test]
    fn candidates_prefer_dockerfile_specific_file() {
        let c = ignore_file_candidates(Path::new("/ctx"), Path::new("/df/Dockerfile.dev"));
        assert_eq!(
            c,
            [
                PathBuf::from("/df/Dockerfile.dev.dockerignore"),
                PathBuf::from("/ctx/.dockerignore")
            ]
        );
    }

    #[test]
    fn regex_engine_basics() {
        let re = Regex::parse("^(.*/)?a[^/]*$").unwrap();
        assert!(re.is_match("a"));
        assert!(re.is_match("x/y/abc"));
        assert!(!re.is_match("x/ba"));
        assert!(Regex::parse("^a**$").is_none());
        assert!(Regex::parse("^[b-a]$").is_none());
        assert!(Regex::parse("^[a$").is_none());
    }

    #[test]
    fn never_panics_on_odd_patterns() {
        for p in [
            "[",
            "[^",
            "\\",
            "[\\",
            "[a-\\",
            "**/**/",
            "[[:alpha:]]",
            "[[:nope:]]",
            "a[]]b",
            "[*]",
            "(",
            ")",
            "*?*",
        ] {
            if let Ok(pm) = PatternMatcher::new(&[p]) {
                let _ = pm.matches_or_parent_matches("a/b");
                let _ = pm.matches("a/b");
            }
        }
    }

    /// Random patterns and paths never make compiling, matching or the walk form panic.
    /// (The walk form need not agree with the direct form here: upstream's walk form only
    /// carries results for patterns it evaluated, so an exception skipped at a parent level
    /// is not seen again, e.g. `["x/*", "!?"]` keeps `x/y` excluded in a walk.)
    #[test]
    fn random_patterns_never_panic() {
        let alphabet: Vec<char> = "*?[]^-!\\/.ab{}()+$|é ".chars().collect();
        let paths = [
            "a", "a/b", "ab/b.", "/", "a/", ".", "é/[a]", "a/b/c/d", "-", "x*y",
        ];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..5_000 {
            let mut pattern = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            for i in 0..(seed % 9) {
                pattern.push(alphabet[((seed >> (i * 5)) as usize ^ i as usize) % alphabet.len()]);
            }
            let _ = read_patterns(&pattern);
            if let Ok(pm) = PatternMatcher::new(&[pattern.as_str(), "!a/b"]) {
                for p in paths {
                    let _ = pm.matches_or_parent_matches(p);
                    let _ = pm.matches(p);
                    let _ = pm.can_skip_dir(p);
                    let mut info = MatchInfo::default();
                    let mut prefix = String::new();
                    for seg in p.split('/').filter(|s| !s.is_empty()) {
                        if !prefix.is_empty() {
                            prefix.push('/');
                        }
                        prefix.push_str(seg);
                        match pm.matches_using_parent_results(&prefix, &info) {
                            Ok((_, i)) => info = i,
                            Err(_) => break,
                        }
                    }
                }
            }
        }
    }

    /// `segment!(name, glob, text, expected)`.
    macro_rules! segment {
        ($name:ident, $glob:expr, $text:expr, $expected:expr) => {
            #[test]
            fn $name() {
                assert_eq!(segment_matches($glob, $text), $expected);
            }
        };
    }

    segment!(segment_literal, "abc", "abc", true);
    segment!(segment_star, "*.md", "README.md", true);
    segment!(segment_star_miss, "*.md", "README.txt", false);
    segment!(segment_question, "a?c", "abc", true);
    segment!(segment_backtrack, "a*b*c", "axxbyyc", true);
    segment!(segment_empty_star, "*", "", true);

    #[test]
    fn wildcard_exceptions_prune_only_unreachable_dirs() {
        let pm = PatternMatcher::new(&["*", "!*.md"]).unwrap();
        assert!(pm.can_skip_dir("build"), "`*.md` cannot match below build/");
        assert!(
            !pm.can_skip_dir("README.md"),
            "a directory named like the exception itself"
        );
        let pm = PatternMatcher::new(&["*", "!src/*/keep"]).unwrap();
        assert!(!pm.can_skip_dir("src"));
        assert!(!pm.can_skip_dir("src/a"));
        assert!(pm.can_skip_dir("docs"));
        let pm = PatternMatcher::new(&["*", "!^src"]).unwrap();
        assert!(!pm.can_skip_dir("src"), "`^` anchors; it is not a literal");
    }

    /// The walk's output equals a brute-force answer on random trees and patterns: an entry is
    /// emitted when it is allowed (included, not excluded, parents counted), plus every parent
    /// directory of an emitted entry, in walk order. Pruning must never lose an entry.
    #[test]
    fn walk_matches_brute_force_on_random_trees() {
        let names = ["a", "b", "a.md", "keep", "x.log"];
        let pattern_parts = [
            "*", "a", "b", "**", "*.md", "keep", "a/*", "**/keep", "b/**", "?",
        ];
        let mut seed: u64 = 0x1234_5678_9abc_def1;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..400 {
            // A tree of up to depth 3: (path, is_dir), parents before children, names sorted.
            let mut entries: Vec<(String, bool)> = Vec::new();
            fn grow(
                prefix: &str,
                depth: u32,
                names: &[&str],
                next: &mut dyn FnMut() -> u64,
                out: &mut Vec<(String, bool)>,
            ) {
                let mut picked: Vec<&str> = names
                    .iter()
                    .copied()
                    .filter(|_| !next().is_multiple_of(3))
                    .collect();
                picked.sort();
                for n in picked {
                    let path = if prefix.is_empty() {
                        n.to_string()
                    } else {
                        format!("{prefix}/{n}")
                    };
                    let is_dir = depth < 3 && next().is_multiple_of(2);
                    out.push((path.clone(), is_dir));
                    if is_dir {
                        grow(&path, depth + 1, names, next, out);
                    }
                }
            }
            grow("", 1, &names, &mut next, &mut entries);
            let mut exclude: Vec<String> = Vec::new();
            for _ in 0..(next() % 4) {
                let bang = if next().is_multiple_of(2) { "!" } else { "" };
                exclude.push(format!("{bang}{}", pattern_parts[(next() % 10) as usize]));
            }
            let include: Vec<String> = if next().is_multiple_of(3) {
                vec![pattern_parts[(next() % 10) as usize].to_string()]
            } else {
                vec![]
            };
            let Ok(filter) = Filter::new(&include, &exclude) else {
                continue;
            };

            let mut walk = filter.walk();
            let mut walked = Vec::new();
            let mut pruned: Vec<String> = Vec::new();
            for (path, is_dir) in &entries {
                if pruned.iter().any(|d| path.starts_with(&format!("{d}/"))) {
                    continue;
                }
                let v = walk.visit(path, *is_dir).unwrap();
                walked.extend(v.emit_parents);
                if v.emit {
                    walked.push(path.clone());
                }
                if *is_dir && !v.descend {
                    pruned.push(path.clone());
                }
            }

            // The oracle: the same per-entry decisions without pruning or lazy parents, each
            // entry decided from its parent's carried results, then closed over parents.
            let mut stack: Vec<(String, MatchInfo, MatchInfo)> = Vec::new();
            let mut allowed: Vec<String> = Vec::new();
            for (path, is_dir) in &entries {
                while stack
                    .last()
                    .is_some_and(|(d, _, _)| !path.starts_with(&format!("{d}/")))
                {
                    stack.pop();
                }
                let (inc_parent, exc_parent) = stack
                    .last()
                    .map(|(_, i, e)| (i.clone(), e.clone()))
                    .unwrap_or_default();
                let (inc_ok, inc_info) = match &filter.include {
                    Some(m) => m.matches_using_parent_results(path, &inc_parent).unwrap(),
                    None => (true, MatchInfo::default()),
                };
                let (excluded, exc_info) = match &filter.exclude {
                    Some(m) => m.matches_using_parent_results(path, &exc_parent).unwrap(),
                    None => (false, MatchInfo::default()),
                };
                if inc_ok && !excluded {
                    allowed.push(path.clone());
                }
                if *is_dir {
                    stack.push((path.clone(), inc_info, exc_info));
                }
            }
            let expected: Vec<String> = entries
                .iter()
                .map(|(p, _)| p)
                .filter(|p| {
                    allowed
                        .iter()
                        .any(|a| a == *p || a.starts_with(&format!("{p}/")))
                })
                .cloned()
                .collect();
            assert_eq!(
                walked, expected,
                "include {include:?} exclude {exclude:?} tree {entries:?}"
            );
        }
    }
}
