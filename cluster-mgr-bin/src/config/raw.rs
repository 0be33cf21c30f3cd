//! Raw settings: `cluster_mgr.cnf` lines and command-line overrides, each remembering where it
//! came from so that every later error can name the file and line (or the flag).
//!
//! Invariant: a [`Raw`] only holds known keys, each with the last value the file gave it (as the
//! original reads a repeated key), and remembers what it let through that the original also
//! lets through but a user should hear about: repeated keys, text after a value, keys of the
//! original this manager does not use. A flag replaces the file's value but keeps its own
//! origin. No warning quotes the value of a [`keys::SECRET_KEYS`] key.

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

/// Something accepted that the user should hear about, logged at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub origin: Origin,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

/// A line setting one of [`keys::REMOVED_KEYS`]: not used, but the validator decides whether
/// it is only ignored (`meta_host`/`meta_port` may be refused).
#[derive(Debug, Clone)]
pub struct Ignored {
    pub name: &'static str,
    /// The first word after `=` (empty if none).
    pub value: String,
    pub origin: Origin,
}

/// The settings read so far, by key.
#[derive(Debug, Default)]
pub struct Raw {
    values: BTreeMap<&'static str, Setting>,
    ignored: Vec<Ignored>,
    warnings: Vec<Warning>,
}

/// What a key name in the file is.
enum Key {
    Known(&'static KeySpec),
    Removed(&'static str),
}

impl Raw {
    /// Parses the text of a cnf file; `file` is the name used in errors.
    ///
    /// Each line is blank, a `#` comment, or `name = value`. As in the original, the value is the
    /// first whitespace-free token and a repeated key's last value wins; other text after the
    /// value is ignored with a warning (silently if it is a `# comment`).
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
            let rest = rest.trim();
            let value = rest.split_whitespace().next().unwrap_or("");
            let spec = match lookup(name, &origin)? {
                Key::Known(spec) => spec,
                Key::Removed(name) => {
                    raw.ignored.push(Ignored {
                        name,
                        value: Some(value)
                            .filter(|v| !v.starts_with('#'))
                            .unwrap_or("")
                            .to_string(),
                        origin,
                    });
                    continue;
                }
            };
            if value.starts_with('#') {
                return Err(ConfigError::at(&origin, format!("{name}: missing value")));
            }
            let after = rest[value.len()..].trim_start();
            if !after.is_empty() && !after.starts_with('#') {
                let message = if keys::SECRET_KEYS.contains(&spec.name) {
                    format!(
                        "{name}: the text after the value is ignored (not shown; the value is \
                         the first word, as the original cluster_mgr reads it)"
                    )
                } else {
                    format!(
                        "{name}: the text after the value is ignored: {after:?} (the value is \
                         the first word, {value:?}, as the original cluster_mgr reads it)"
                    )
                };
                raw.warnings.push(Warning {
                    origin: origin.clone(),
                    message,
                });
            }
            if let Some(before) = raw.values.get(spec.name) {
                raw.warnings.push(Warning {
                    origin: origin.clone(),
                    message: format!(
                        "{name} is set again (before at {}): this value is used, the earlier \
                         one ignored, as the original cluster_mgr does",
                        before.origin
                    ),
                });
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
        let Key::Known(spec) = lookup(name, &origin)? else {
            return Err(ConfigError::at(&origin, format!("key {name} is not used")));
        };
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

    /// The lines setting keys this manager does not use, in file order.
    pub fn ignored(&self) -> &[Ignored] {
        &self.ignored
    }

    /// What parsing let through with a warning (repeated keys, text after a value), in order.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }
}

fn lookup(name: &str, origin: &Origin) -> Result<Key, ConfigError> {
    if let Some(spec) = keys::spec(name) {
        return Ok(Key::Known(spec));
    }
    if let Some(removed) = keys::REMOVED_KEYS.iter().find(|k| **k == name) {
        return Ok(Key::Removed(removed));
    }
    Err(ConfigError::at(origin, format!("unknown key {name:?}")))
}
