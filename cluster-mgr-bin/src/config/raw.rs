//! Raw settings: `cluster_mgr.cnf` lines and command-line overrides, each remembering where it
//! came from so that every later error can name the file and line (or the flag).
//!
//! Invariant: a [`Raw`] only holds known keys, each at most once per file; a flag replaces the
//! file's value but keeps its own origin.

use std::collections::BTreeMap;
use std::fmt;

use super::keys::{self, KeySpec};
use super::ConfigError;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `file:line`.
    File { file: String, line: usize },
    /// A command-line flag, e.g. `--http-port`.
    Flag(&'static str),
    /// The built-in default.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { file, line } => write!(f, "{file}:{line}"),
            Origin::Flag(flag) => f.write_str(flag),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// A value and its origin.
#[derive(Debug, Clone)]
pub struct Setting {
    pub value: String,
    pub origin: Origin,
}

/// The settings read so far, by key.
#[derive(Debug, Default)]
pub struct Raw {
    values: BTreeMap<&'static str, Setting>,
}

impl Raw {
    /// Parses the text of a cnf file; `file` is the name used in errors.
    ///
    /// Each line is blank, a `#` comment, or `name = value`. As in the original, the value is the
    /// first whitespace-free token; a trailing `# comment` is allowed, other trailing text is not.
    pub fn parse_file(text: &str, file: &str) -> Result<Raw, ConfigError> {
        let mut raw = Raw::default();
        for (idx, line) in text.lines().enumerate() {
            let origin = Origin::File {
                file: file.to_string(),
                line: idx + 1,
            };
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some((name, rest)) = trimmed.split_once('=') else {
                return Err(ConfigError::at(&origin, "expected `name = value`"));
            };
            let name = name.trim();
            if name.is_empty() {
                return Err(ConfigError::at(&origin, "missing key name before `=`"));
            }
            let spec = lookup(name, &origin)?;
            let mut tokens = rest.split_whitespace();
            let value = tokens.next().unwrap_or("");
            if value.starts_with('#') {
                return Err(ConfigError::at(&origin, format!("{name}: missing value")));
            }
            if let Some(extra) = tokens.next() {
                if !extra.starts_with('#') {
                    return Err(ConfigError::at(
                        &origin,
                        format!("{name}: unexpected text after the value: {extra:?}"),
                    ));
                }
            }
            if let Some(first) = raw.values.get(spec.name) {
                return Err(ConfigError::at(
                    &origin,
                    format!("duplicate key {name} (first set at {})", first.origin),
                ));
            }
            raw.values.insert(
                spec.name,
                Setting {
                    value: value.to_string(),
                    origin,
                },
            );
        }
        Ok(raw)
    }

    /// Sets `name` from a command-line flag, replacing any value from the file.
    pub fn set_flag(
        &mut self,
        name: &str,
        value: &str,
        flag: &'static str,
    ) -> Result<(), ConfigError> {
        let origin = Origin::Flag(flag);
        let spec = lookup(name, &origin)?;
        self.values.insert(
            spec.name,
            Setting {
                value: value.to_string(),
                origin,
            },
        );
        Ok(())
    }

    /// The value of `spec`: the one set, or the default.
    pub fn get(&self, spec: &'static KeySpec) -> Setting {
        self.values
            .get(spec.name)
            .cloned()
            .unwrap_or_else(|| Setting {
                value: spec.default.to_string(),
                origin: Origin::Default,
            })
    }

    /// Whether the file or a flag set `name`.
    pub fn is_set(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
}

fn lookup(name: &str, origin: &Origin) -> Result<&'static KeySpec, ConfigError> {
    if let Some(spec) = keys::spec(name) {
        return Ok(spec);
    }
    if keys::REMOVED_KEYS.contains(&name) {
        return Err(ConfigError::at(
            origin,
            format!("key {name} is no longer supported; remove it"),
        ));
    }
    Err(ConfigError::at(origin, format!("unknown key {name:?}")))
}
