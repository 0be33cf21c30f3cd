//! Reading the `paras` of an Emit request as the original does: every number is a string of
//! digits, a missing or malformed para fails with that para's own 700xx code, and paras
//! nobody reads are ignored.

use serde_json::{Map, Value};

use super::codes::Code;

/// Why a request failed: the original's code and, after its message, what exactly was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail {
    pub code: Code,
    pub detail: String,
}

impl Fail {
    pub fn new(code: Code, detail: impl Into<String>) -> Fail {
        Fail {
            code,
            detail: detail.into(),
        }
    }

    /// `error_info`: the original's message, then our detail.
    pub fn info(&self) -> String {
        if self.detail.is_empty() {
            self.code.1.to_string()
        } else {
            format!("{}: {}", self.code.1, self.detail)
        }
    }
}

/// The original's upper bound for shards, nodes and comps (`1-256`); our own limits are
/// checked by the job's validation after this.
pub const MAX_COUNT: u32 = 256;

/// The `paras` object of a request (empty when absent).
pub struct Paras<'a>(pub &'a Map<String, Value>);

impl Paras<'_> {
    /// A para as text: a string, or (lenient) a JSON number; `None` when absent or null.
    pub fn text(&self, key: &str) -> Option<String> {
        match self.0.get(key)? {
            Value::String(s) => Some(s.trim().to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// A required para: absent or empty fails with `missing`.
    pub fn req(&self, key: &str, missing: Code) -> Result<String, Fail> {
        match self.text(key) {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(Fail::new(missing, format!("{key} is required"))),
        }
    }

    /// A required count `1..=256`: absent fails with `missing`, anything else but digits in
    /// range with `bad`.
    pub fn count(&self, key: &str, missing: Code, bad: Code) -> Result<u32, Fail> {
        let s = self.req(key, missing)?;
        digits(&s)
            .filter(|n| (1..=u64::from(MAX_COUNT)).contains(n))
            .map(|n| n as u32)
            .ok_or_else(|| {
                Fail::new(
                    bad,
                    format!("{key}: {s:?} is not a number 1 to {MAX_COUNT}"),
                )
            })
    }

    /// A required id (digits): absent fails with `missing`, malformed with `bad`.
    pub fn id(&self, key: &str, missing: Code, bad: Code) -> Result<i64, Fail> {
        let s = self.req(key, missing)?;
        digits(&s)
            .and_then(|n| i64::try_from(n).ok())
            .ok_or_else(|| Fail::new(bad, format!("{key}: {s:?} is not an id")))
    }

    /// An optional id: `None` when absent or empty.
    pub fn opt_id(&self, key: &str, bad: Code) -> Result<Option<i64>, Fail> {
        match self.text(key) {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(_) => self.id(key, bad, bad).map(Some),
        }
    }

    /// A required number (digits, any size that fits `i64`).
    pub fn number(&self, key: &str, missing: Code) -> Result<i64, Fail> {
        let s = self.req(key, missing)?;
        digits(&s)
            .and_then(|n| i64::try_from(n).ok())
            .ok_or_else(|| Fail::new(missing, format!("{key}: {s:?} is not a number")))
    }

    /// An optional list of strings (`storage_iplists` and the like); absent is empty.
    pub fn list(&self, key: &str, bad: Code) -> Result<Vec<String>, Fail> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                    other => Err(Fail::new(
                        bad,
                        format!("{key}: {other} is not a host address"),
                    )),
                })
                .collect(),
            Some(other) => Err(Fail::new(bad, format!("{key}: {other} is not a list"))),
        }
    }
}

/// Digits only (what the original's `CheckStringIsDigit` accepts), as a number.
pub fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `ip_port` (how the original names an instance in `manual_switch`) or `ip:port`.
pub fn host_port(s: &str) -> Option<(String, u16)> {
    let (h, p) = s.rsplit_once('_').or_else(|| s.rsplit_once(':'))?;
    let port = u16::try_from(digits(p)?).ok()?;
    (!h.is_empty()).then(|| (h.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emit::codes;
    use serde_json::json;

    fn paras(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn counts_are_digit_strings_in_range() {
        let m = paras(json!({"a": "3", "b": "0", "c": "x", "d": 4, "e": "257", "f": "-1"}));
        let p = Paras(&m);
        let (miss, bad) = (codes::CC_MISS_SHARDS, codes::CC_BAD_SHARDS);
        assert_eq!(p.count("a", miss, bad), Ok(3));
        assert_eq!(
            p.count("d", miss, bad),
            Ok(4),
            "a JSON number is read leniently"
        );
        for k in ["b", "c", "e", "f"] {
            assert_eq!(p.count(k, miss, bad).unwrap_err().code, bad, "{k}");
        }
        assert_eq!(p.count("zz", miss, bad).unwrap_err().code, miss);
    }

    #[test]
    fn lists_ids_and_instances() {
        let m = paras(json!({"l": ["127.0.0.1", " h "], "bad": "x", "id": "12", "empty": ""}));
        let p = Paras(&m);
        let bad = codes::CC_STORAGE_IPLISTS;
        assert_eq!(p.list("l", bad).unwrap(), vec!["127.0.0.1", "h"]);
        assert!(p.list("none", bad).unwrap().is_empty());
        assert_eq!(p.list("bad", bad).unwrap_err().code, bad);
        assert_eq!(p.opt_id("id", bad), Ok(Some(12)));
        assert_eq!(p.opt_id("empty", bad), Ok(None));
        assert_eq!(
            host_port("10.0.0.1_57001"),
            Some(("10.0.0.1".into(), 57001))
        );
        assert_eq!(
            host_port("10.0.0.1:57001"),
            Some(("10.0.0.1".into(), 57001))
        );
        assert_eq!(host_port("10.0.0.1"), None);
        assert_eq!(host_port("_1"), None);
    }
}
