//! `.dockerignore` handling must never panic: any file content becomes patterns, any pattern
//! set either compiles or gives a typed error, and matching any path returns a value or a
//! typed error. The input is `PATTERNS \0 PATH \0 PATH …`.
#![no_main]

use forge_parser::dockerignore::{clean_path, read_patterns, Filter, PatternMatcher};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.split('\0');
    let file = parts.next().unwrap_or("");
    let paths: Vec<&str> = parts.take(16).collect();
    let patterns = read_patterns(file);
    for p in &paths {
        let _ = clean_path(p);
    }
    if let Ok(m) = PatternMatcher::new(&patterns) {
        let _ = m.has_exclusions();
        for p in &paths {
            let _ = m.matches(p);
            let _ = m.matches_exact(p);
            let _ = m.matches_or_parent_matches(p);
            let _ = m.can_skip_dir(p);
        }
    }
    if let Ok(f) = Filter::excluding(&patterns) {
        for p in &paths {
            let _ = f.allows(p);
        }
        let mut walk = f.walk();
        for (i, p) in paths.iter().enumerate() {
            let _ = walk.visit(p, i % 2 == 0);
        }
    }
});
