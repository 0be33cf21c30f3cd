//! What the user sees: aligned tables and `key: value` blocks for people, the API's JSON for
//! scripts. Secrets never reach the terminal: the JSON printer drops password-like keys even
//! though the daemon is not supposed to send any.

use chrono::NaiveDateTime;
use serde_json::Value;

/// Keys removed from any JSON before it is printed.
const SECRET_KEYS: &[&str] = &["passwd", "password", "meta_pwd", "secret", "private_key"];

/// Column gap of tables.
const GAP: &str = "  ";

/// A text table: a header row and data rows, each column as wide as its widest cell.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing cells print empty, extra cells are kept (and widen the table).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether no data row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as lines joined by `\n` (with a trailing newline). Cells are left-aligned,
    /// padded to the column width measured in characters; lines carry no trailing blanks.
    pub fn render(&self) -> String {
        let ncols = std::iter::once(&self.header)
            .chain(&self.rows)
            .map(Vec::len)
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; ncols];
        for line in std::iter::once(&self.header).chain(&self.rows) {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(display_width(cell));
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.header).chain(&self.rows) {
            let mut text = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = line.get(i).map(String::as_str).unwrap_or("");
                if i > 0 {
                    text.push_str(GAP);
                }
                text.push_str(&sanitize(cell));
                text.extend(std::iter::repeat_n(' ', width - display_width(cell)));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key: value` lines with the values aligned, for `show` commands.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let key = format!("{k}:");
        out.push_str(format!("{key:<width$} {}", sanitize(v)).trim_end());
        out.push('\n');
    }
    out
}

/// Width of a cell: characters after sanitising (good enough for the ASCII the API accepts).
fn display_width(s: &str) -> usize {
    sanitize(s).chars().count()
}

/// Control characters (a newline in a memo, an escape sequence) would break the layout or the
/// terminal: show them escaped.
fn sanitize(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().any(char::is_control) {
        std::borrow::Cow::Owned(
            s.chars()
                .flat_map(|c| {
                    if c.is_control() {
                        c.escape_default().collect::<Vec<_>>()
                    } else {
                        vec![c]
                    }
                })
                .collect(),
        )
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Pretty JSON of an API answer with secret-looking keys removed.
pub fn json(value: &Value) -> String {
    let mut v = value.clone();
    redact(&mut v);
    serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
}

fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|k, _| !SECRET_KEYS.contains(&k.to_ascii_lowercase().as_str()));
            map.values_mut().for_each(redact);
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// `-` for a missing value.
pub fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// A timestamp to the second, or `-`.
pub fn time(t: Option<NaiveDateTime>) -> String {
    t.map_or_else(
        || "-".to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

/// A list joined by `,`, or `-` when empty.
pub fn list<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Optional JSON (job request, memo) on one line, or `-`.
pub fn compact_json(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".to_string(),
        Some(v) => {
            let mut v = v.clone();
            redact(&mut v);
            v.to_string()
        }
    }
}

/// Milliseconds as seconds with one decimal (`1.2s`), or `-`.
pub fn millis(ms: Option<u64>) -> String {
    ms.map_or_else(
        || "-".to_string(),
        |ms| format!("{:.1}s", ms as f64 / 1000.0),
    )
}

/// The steps of a job (name, status, milliseconds, note) as a table.
pub fn steps_table<'a>(
    steps: impl Iterator<Item = (&'a str, &'a str, Option<u64>, Option<&'a str>)>,
) -> String {
    let mut t = Table::new(&["STEP", "STATUS", "TIME", "NOTE"]);
    for (name, status, ms, note) in steps {
        t.row(vec![
            name.to_string(),
            status.to_string(),
            millis(ms),
            note.unwrap_or("").to_string(),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_take_the_width_of_their_widest_cell() {
        let mut t = Table::new(&["ID", "HOST", "TYPE"]);
        t.row(vec!["1".into(), "127.0.0.2".into(), "storage".into()]);
        t.row(vec!["10".into(), "db".into(), "computer".into()]);
        assert_eq!(
            t.render(),
            "ID  HOST       TYPE\n\
             1   127.0.0.2  storage\n\
             10  db         computer\n"
        );
    }

    #[test]
    fn empty_and_ragged_tables() {
        let t = Table::new(&["A", "LONGER"]);
        assert!(t.is_empty());
        assert_eq!(t.render(), "A  LONGER\n");
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["x".into()]);
        t.row(vec!["y".into(), "z".into(), "extra".into()]);
        assert_eq!(t.render(), "A  B\nx\ny  z  extra\n");
    }

    #[test]
    fn control_characters_do_not_break_the_layout() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["a\nb".into(), "c".into()]);
        assert_eq!(t.render(), "A     B\na\\nb  c\n");
    }

    #[test]
    fn key_values_align() {
        assert_eq!(
            key_values(&[
                ("id", "1".into()),
                ("hostaddr", "h".into()),
                ("rack", String::new())
            ]),
            "id:       1\nhostaddr: h\nrack:\n"
        );
    }

    #[test]
    fn json_drops_secrets_at_any_depth() {
        let v =
            json!({"id": 1, "passwd": "s3cret", "nodes": [{"user_name": "u", "Password": "x"}]});
        let out = json(&v);
        assert!(!out.contains("s3cret") && !out.contains("\"x\""), "{out}");
        assert!(out.contains("user_name"));
        assert!(!compact_json(Some(&v)).contains("s3cret"));
    }

    #[test]
    fn small_formatters() {
        assert_eq!(opt::<i64>(None), "-");
        assert_eq!(opt(Some(3)), "3");
        assert_eq!(list::<u16>(&[]), "-");
        assert_eq!(list(&[1u16, 2]), "1,2");
        let t = NaiveDateTime::parse_from_str("2026-11-25 12:07:14.123", "%Y-%m-%d %H:%M:%S%.f")
            .unwrap();
        assert_eq!(time(Some(t)), "2026-11-25 12:07:14");
        assert_eq!(compact_json(None), "-");
        assert_eq!(millis(Some(1234)), "1.2s");
        assert_eq!(millis(None), "-");
    }

    #[test]
    fn steps_render_as_a_table() {
        let t = steps_table(
            [
                ("plan", "done", Some(3), None),
                (
                    "start compute 127.0.0.2:47001",
                    "running",
                    None,
                    Some("wait_ready"),
                ),
            ]
            .into_iter(),
        );
        assert_eq!(
            t,
            "STEP                           STATUS   TIME  NOTE\n\
             plan                           done     0.0s\n\
             start compute 127.0.0.2:47001  running  -     wait_ready\n"
        );
    }
}
