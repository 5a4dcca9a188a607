//! `--explain`: why a step missed the cache.
//!
//! After a step runs, the solver remembers the fields its key was made of, under the step's
//! position in the Dockerfile (not under its key). When the same position misses later, the
//! old and new fields are compared and the difference is told in words: which file changed,
//! which ARG or ENV value changed, that an earlier step changed, or that nothing was cached yet.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What was remembered about a step.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepMemory {
    pub key: String,
    pub fields: Vec<(String, String)>,
    /// For COPY/ADD: source label → content hash (hex, short).
    pub files: BTreeMap<String, String>,
}

fn env_map(v: &str) -> BTreeMap<String, String> {
    // Fields hold lists rendered with `{:?}`; parse back the KEY=VALUE items leniently.
    let mut out = BTreeMap::new();
    let trimmed = v.trim_start_matches('[').trim_end_matches(']');
    for item in trimmed.split("\", \"") {
        let item = item.trim_matches('"');
        if let Some((k, val)) = item.split_once('=') {
            out.insert(k.to_string(), val.to_string());
        }
    }
    out
}

/// Explains the difference between what a step was last time and what it is now.
pub fn explain(previous: Option<&StepMemory>, now: &StepMemory, no_cache: bool) -> String {
    if no_cache {
        return "the cache is disabled for this step (--no-cache / --no-cache-filter)".into();
    }
    let Some(prev) = previous else {
        return "nothing was cached for this step yet".into();
    };
    if prev.key == now.key {
        return "the cache record for this step is gone (pruned, or made by another store)".into();
    }
    let mut reasons = Vec::new();
    let old: BTreeMap<&str, &str> = prev.fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    for (tag, value) in &now.fields {
        let Some(before) = old.get(tag.as_str()) else {
            reasons.push(format!("{tag} is new"));
            continue;
        };
        if *before == value {
            continue;
        }
        match tag.as_str() {
            "parent" => reasons.push("an earlier step changed".to_string()),
            "env" | "args" => {
                let (a, b) = (env_map(before), env_map(value));
                let mut changed = Vec::new();
                for (k, v) in &b {
                    match a.get(k) {
                        Some(o) if o == v => {}
                        Some(o) => changed.push(format!("{k} changed from {o:?} to {v:?}")),
                        None => changed.push(format!("{k} was added ({v:?})")),
                    }
                }
                for k in a.keys().filter(|k| !b.contains_key(*k)) {
                    changed.push(format!("{k} was removed"));
                }
                if changed.is_empty() {
                    reasons.push(format!("the {tag} changed"));
                } else {
                    reasons.push(changed.join(", "));
                }
            }
            "content" => {
                let mut files = Vec::new();
                for (f, h) in &now.files {
                    match prev.files.get(f) {
                        Some(o) if o == h => {}
                        Some(_) => files.push(format!("{f} changed")),
                        None => files.push(format!("{f} was added")),
                    }
                }
                for f in prev.files.keys().filter(|f| !now.files.contains_key(*f)) {
                    files.push(format!("{f} was removed"));
                }
                if files.is_empty() {
                    reasons.push("the copied files' modes or owners changed".to_string());
                } else {
                    let more = files.len().saturating_sub(5);
                    let mut shown: Vec<String> = files.into_iter().take(5).collect();
                    if more > 0 {
                        shown.push(format!("and {more} more"));
                    }
                    reasons.push(shown.join(", "));
                }
            }
            _ => reasons.push(format!("{tag} changed from {before} to {value}")),
        }
    }
    // An earlier step changing is only worth saying when nothing more specific is known.
    if reasons.len() > 1 {
        reasons.retain(|r| r != "an earlier step changed");
    }
    if reasons.is_empty() {
        "the step's definition changed".into()
    } else {
        reasons.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(key: &str, fields: &[(&str, &str)], files: &[(&str, &str)]) -> StepMemory {
        StepMemory {
            key: key.into(),
            fields: fields.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
            files: files.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
        }
    }

    #[test]
    fn names_the_changed_file() {
        let a = mem("1", &[("parent", "p"), ("content", "x")], &[("app/main.py", "aa"), ("req.txt", "bb")]);
        let b = mem("2", &[("parent", "p"), ("content", "y")], &[("app/main.py", "cc"), ("req.txt", "bb")]);
        assert_eq!(explain(Some(&a), &b, false), "app/main.py changed");
    }

    #[test]
    fn names_the_changed_arg() {
        let a = mem("1", &[("parent", "p"), ("env", "[\"V=1\", \"W=2\"]")], &[]);
        let b = mem("2", &[("parent", "p"), ("env", "[\"V=3\", \"W=2\"]")], &[]);
        assert_eq!(explain(Some(&a), &b, false), "V changed from \"1\" to \"3\"");
    }

    #[test]
    fn parent_and_first_build() {
        let a = mem("1", &[("parent", "p")], &[]);
        let b = mem("2", &[("parent", "q")], &[]);
        assert_eq!(explain(Some(&a), &b, false), "an earlier step changed");
        assert_eq!(explain(None, &b, false), "nothing was cached for this step yet");
        assert!(explain(Some(&a), &b, true).contains("--no-cache"));
    }
}
