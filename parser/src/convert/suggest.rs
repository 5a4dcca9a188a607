//! "Did you mean …?" suggestions by edit distance.

/// Optimal-string-alignment distance (Levenshtein plus adjacent transpositions), on
/// lower-cased characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().flat_map(char::to_lowercase).collect();
    let b: Vec<char> = b.chars().flat_map(char::to_lowercase).collect();
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[n][m]
}

/// The candidate closest to `word`, if it is close enough to be a plausible typo: at most one
/// edit for words of up to four characters, two edits for longer ones.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    if word.is_empty() || word.chars().count() > 64 {
        return None;
    }
    let limit = if word.chars().count() <= 4 { 1 } else { 2 };
    let mut best: Option<(usize, &'a str)> = None;
    for c in candidates {
        let d = edit_distance(word, c);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! suggests {
        ($($word:expr => $want:expr),* $(,)?) => {{
            let keywords = ["FROM", "RUN", "COPY", "ADD", "ENTRYPOINT", "CMD", "WORKDIR", "EXPOSE", "HEALTHCHECK"];
            $( assert_eq!(closest($word, keywords.iter().copied()), $want, "word {:?}", $word); )*
        }};
    }

    #[test]
    fn suggestions() {
        suggests! {
            "RUNN" => Some("RUN"),
            "runn" => Some("RUN"),
            "FORM" => Some("FROM"),
            "COPPY" => Some("COPY"),
            "ENTRYPIONT" => Some("ENTRYPOINT"),
            "HEALTHCHEK" => Some("HEALTHCHECK"),
            "XYZ" => None,
            "BANANA" => None,
            "" => None,
        }
    }

    #[test]
    fn distances() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("ab", "ba"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
