//! Go `path.Match` semantics for COPY/ADD source patterns: `*` and `?` never cross `/`,
//! `[...]` classes with ranges and `^` negation, `\` escapes.

/// True when `pattern` contains glob metacharacters.
pub fn has_meta(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// Matches a whole slash-separated name against a pattern. Malformed patterns never match.
pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_from(&p, &n).unwrap_or(false)
}

fn match_from(p: &[char], n: &[char]) -> Option<bool> {
    let (mut pi, mut ni) = (0usize, 0usize);
    // Backtracking point for the last `*`: (pattern index after the star, name index).
    let mut star: Option<(usize, usize)> = None;
    loop {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi + 1, ni));
                    pi += 1;
                    continue;
                }
                '?' if ni < n.len() && n[ni] != '/' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' if ni < n.len() && n[ni] != '/' => {
                    let (ok, next) = class(p, pi, n[ni])?;
                    if ok {
                        pi = next;
                        ni += 1;
                        continue;
                    }
                }
                '\\' if pi + 1 < p.len() && ni < n.len() && p[pi + 1] == n[ni] => {
                    pi += 2;
                    ni += 1;
                    continue;
                }
                c if c != '*' && c != '?' && c != '[' && c != '\\' && ni < n.len() && c == n[ni] => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        } else if ni == n.len() {
            return Some(true);
        }
        // Mismatch: let the last star swallow one more character (never a '/').
        match star {
            Some((sp, sn)) if sn < n.len() && n[sn] != '/' => {
                star = Some((sp, sn + 1));
                pi = sp;
                ni = sn + 1;
            }
            _ => return Some(false),
        }
    }
}

/// Evaluates a `[...]` class at `p[start]` against `c`. Returns (matched, index after `]`),
/// or None when the class is malformed.
fn class(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = i < p.len() && p[i] == '^';
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        if i >= p.len() {
            return None;
        }
        if p[i] == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let mut lo = p[i];
        if lo == '\\' {
            i += 1;
            lo = *p.get(i)?;
        }
        i += 1;
        let mut hi = lo;
        if i + 1 < p.len() && p[i] == '-' && p[i + 1] != ']' {
            hi = p[i + 1];
            if hi == '\\' {
                hi = *p.get(i + 2)?;
                i += 1;
            }
            i += 2;
        }
        if lo <= c && c <= hi {
            matched = true;
        }
    }
    Some((matched != negate, i))
}

#[cfg(test)]
mod tests {
    use super::matches;

    macro_rules! m {
        ($p:expr, $n:expr, $want:expr) => {
            assert_eq!(matches($p, $n), $want, "pattern {:?} name {:?}", $p, $n);
        };
    }

    #[test]
    fn go_path_match_table() {
        m!("abc", "abc", true);
        m!("*", "abc", true);
        m!("*c", "abc", true);
        m!("a*", "a", true);
        m!("a*", "ab/c", false);
        m!("a*/b", "abc/b", true);
        m!("a*b*c*d*e*/f", "axbxcxdxe/f", true);
        m!("a*b*c*d*e*/f", "axbxcxdxexxx/f", true);
        m!("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false);
        m!("ab[c]", "abc", true);
        m!("ab[b-d]", "abc", true);
        m!("ab[e-g]", "abc", false);
        m!("ab[^c]", "abc", false);
        m!("ab[^e-g]", "abc", true);
        m!("a\\*b", "a*b", true);
        m!("a\\*b", "ab", false);
        m!("a?b", "a☺b", true);
        m!("a?b", "a/b", false);
        m!("*.py", "main.py", true);
        m!("src/*.py", "src/a.py", true);
        m!("[", "a", false);
    }
}
