//! Instruction flags (`--name[=value]`), as BuildKit's `BFlags` parses them.
//!
//! An instruction declares the flags it accepts with a type and default, then parses the flag
//! words the node parser split off. String and list flags need `=value`; a bool flag alone means
//! true and otherwise takes `true`/`false` (any case). A flag may appear once, except list flags.

use std::collections::BTreeMap;

use super::suggest::closest;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagKind {
    String,
    Bool,
    /// May repeat; each use appends a value (`--mount`, `--exclude`).
    Strings,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlagValue {
    String(String),
    Bool(bool),
    Strings(Vec<String>),
}

/// A flag error: the message, which flag word (by index) it is about, and an optional hint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FlagError {
    pub message: String,
    pub index: Option<usize>,
    pub help: Option<String>,
}

/// The flags one instruction accepts, and after [`FlagSet::parse`], their values.
#[derive(Clone, Debug, Default)]
pub struct FlagSet {
    decls: Vec<(String, FlagKind)>,
    values: BTreeMap<String, FlagValue>,
    used: Vec<String>,
}

impl FlagSet {
    pub fn new() -> FlagSet {
        FlagSet::default()
    }

    pub fn add_string(&mut self, name: &str, default: &str) -> &mut Self {
        self.decls.push((name.to_string(), FlagKind::String));
        self.values
            .insert(name.to_string(), FlagValue::String(default.to_string()));
        self
    }

    pub fn add_bool(&mut self, name: &str, default: bool) -> &mut Self {
        self.decls.push((name.to_string(), FlagKind::Bool));
        self.values
            .insert(name.to_string(), FlagValue::Bool(default));
        self
    }

    pub fn add_strings(&mut self, name: &str) -> &mut Self {
        self.decls.push((name.to_string(), FlagKind::Strings));
        self.values
            .insert(name.to_string(), FlagValue::Strings(Vec::new()));
        self
    }

    /// The declared names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.decls.iter().map(|(n, _)| n.as_str())
    }

    /// Parses flag words such as `--from=build` or `--link`.
    pub fn parse(&mut self, args: &[String]) -> Result<(), FlagError> {
        for (index, arg) in args.iter().enumerate() {
            let err = |message: String| FlagError {
                message,
                index: Some(index),
                help: None,
            };
            let Some(body) = arg.strip_prefix("--") else {
                return Err(err(format!("arg should start with -- : {arg}")));
            };
            if body.is_empty() {
                // A bare `--` ends the flags.
                return Ok(());
            }
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(kind) = self.decls.iter().find(|(n, _)| n == name).map(|(_, k)| *k) else {
                let help = closest(name, self.names()).map(|s| format!("did you mean --{s}?"));
                return Err(FlagError {
                    message: format!("unknown flag: --{name}"),
                    index: Some(index),
                    help,
                });
            };
            if kind != FlagKind::Strings && self.used.iter().any(|u| u == name) {
                return Err(err(format!("duplicate flag specified: --{name}")));
            }
            let new = match (kind, value) {
                (FlagKind::Bool, None) => FlagValue::Bool(true),
                (FlagKind::Bool, Some("")) => {
                    return Err(err(format!("missing a value on flag: {arg}")))
                }
                (FlagKind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                    "true" => FlagValue::Bool(true),
                    "false" => FlagValue::Bool(false),
                    _ => {
                        return Err(err(format!(
                            "expecting boolean value for flag {name}, not: {v}"
                        )))
                    }
                },
                (_, None) => return Err(err(format!("missing a value on flag: {arg}"))),
                (FlagKind::String, Some(v)) => FlagValue::String(v.to_string()),
                (FlagKind::Strings, Some(v)) => {
                    let mut list = match self.values.remove(name) {
                        Some(FlagValue::Strings(l)) => l,
                        _ => Vec::new(),
                    };
                    list.push(v.to_string());
                    FlagValue::Strings(list)
                }
            };
            self.values.insert(name.to_string(), new);
            if !self.used.iter().any(|u| u == name) {
                self.used.push(name.to_string());
            }
        }
        Ok(())
    }

    pub fn value(&self, name: &str) -> Option<&FlagValue> {
        self.values.get(name)
    }

    /// A string flag's value (its default when not used).
    pub fn string(&self, name: &str) -> &str {
        match self.values.get(name) {
            Some(FlagValue::String(s)) => s,
            _ => "",
        }
    }

    /// A string flag's value when it was given and is not empty.
    pub fn opt_string(&self, name: &str) -> Option<String> {
        Some(self.string(name))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    pub fn bool(&self, name: &str) -> bool {
        matches!(self.values.get(name), Some(FlagValue::Bool(true)))
    }

    /// A bool flag's value when it was given.
    pub fn opt_bool(&self, name: &str) -> Option<bool> {
        self.is_used(name).then(|| self.bool(name))
    }

    pub fn strings(&self, name: &str) -> &[String] {
        match self.values.get(name) {
            Some(FlagValue::Strings(v)) => v,
            _ => &[],
        }
    }

    pub fn is_used(&self, name: &str) -> bool {
        self.used.iter().any(|u| u == name)
    }

    /// Names of the flags that appeared, in first-use order.
    pub fn used(&self) -> &[String] {
        &self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<FlagSet, FlagError> {
        let mut f = FlagSet::new();
        f.add_string("from", "")
            .add_bool("link", false)
            .add_strings("exclude");
        f.parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        Ok(f)
    }

    macro_rules! flag_errors {
        ($($args:expr => $msg:expr, $help:expr;)*) => {$(
            let e = run(&$args).unwrap_err();
            assert_eq!((e.message.as_str(), e.help.as_deref()), ($msg, $help), "args {:?}", $args);
        )*};
    }

    #[test]
    fn errors() {
        flag_errors! {
            ["--form=a"] => "unknown flag: --form", Some("did you mean --from?");
            ["--lnk"] => "unknown flag: --lnk", Some("did you mean --link?");
            ["--zzzzzz"] => "unknown flag: --zzzzzz", None;
            ["--from"] => "missing a value on flag: --from", None;
            ["--link=yes"] => "expecting boolean value for flag link, not: yes", None;
            ["--link=true", "--link"] => "duplicate flag specified: --link", None;
            ["-x"] => "arg should start with -- : -x", None;
        }
    }

    #[test]
    fn values() {
        let f = run(&["--from=a", "--link=FALSE", "--exclude=x", "--exclude=y"]).unwrap();
        assert_eq!(f.string("from"), "a");
        assert!(!f.bool("link"));
        assert_eq!(f.opt_bool("link"), Some(false));
        assert_eq!(f.strings("exclude"), ["x", "y"]);
        assert_eq!(f.used(), ["from", "link", "exclude"]);
    }
}
