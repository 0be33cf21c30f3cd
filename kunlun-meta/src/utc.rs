//! Serde for the UTC timestamps of the API types: written as RFC 3339 with a `Z` offset
//! (`2026-12-05T11:50:17.017145123Z`), as the OpenAPI document's `format: date-time` promises.
//!
//! Invariant: every `NaiveDateTime` in a type the API sends holds UTC (the store writes
//! `Utc::now().naive_utc()`), so the `Z` is true. Reading accepts any RFC 3339 offset (converted
//! to UTC) and, for answers of a daemon from before this change, a naive timestamp taken as UTC.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// The wire form of `t` (UTC): RFC 3339, `Z`, always nine fraction digits, so the text sorts as the time does.
pub fn format(t: &NaiveDateTime) -> String {
    t.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Parses the wire form: RFC 3339 with any offset, or a naive `YYYY-MM-DDTHH:MM:SS[.f]` as UTC.
pub fn parse(s: &str) -> Option<NaiveDateTime> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc).naive_utc());
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok()
}

pub fn serialize<S: Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(t))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDateTime, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 timestamp: {s:?}")))
}

/// The same for `Option<NaiveDateTime>` (`null` when absent); use with `#[serde(default)]`.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<NaiveDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveDateTime>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => parse(&s).map(Some).ok_or_else(|| {
                serde::de::Error::custom(format!("not an RFC 3339 timestamp: {s:?}"))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct T {
        #[serde(with = "crate::utc")]
        at: NaiveDateTime,
        #[serde(default, with = "crate::utc::option")]
        maybe: Option<NaiveDateTime>,
    }

    fn t0() -> NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(2026, 12, 5)
            .and_then(|d| d.and_hms_nano_opt(11, 50, 17, 17_145_123))
            .expect("valid time")
    }

    #[test]
    fn written_as_rfc3339_utc_and_read_back() {
        let v = T {
            at: t0(),
            maybe: Some(t0()),
        };
        let json = serde_json::to_value(&v).expect("serialize");
        assert_eq!(json["at"], "2026-12-05T11:50:17.017145123Z");
        assert_eq!(json["maybe"], "2026-12-05T11:50:17.017145123Z");
        // Every written value is RFC 3339 as chrono's strict parser reads it.
        for k in ["at", "maybe"] {
            let s = json[k].as_str().expect("string");
            assert!(DateTime::parse_from_rfc3339(s).is_ok(), "{s}");
        }
        let back: T = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, v);
        let none: T = serde_json::from_str(r#"{"at":"2026-12-05T11:50:17Z"}"#).expect("no maybe");
        assert_eq!(none.maybe, None);
        assert_eq!(
            serde_json::to_value(&none).expect("ser")["maybe"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn other_offsets_become_utc_and_old_naive_answers_still_read() {
        let v: T = serde_json::from_str(
            r#"{"at":"2026-12-05T19:50:17.017145123+08:00","maybe":"2026-12-05T11:50:17.017145123"}"#,
        )
        .expect("deserialize");
        assert_eq!(v.at, t0());
        assert_eq!(v.maybe, Some(t0()));
        assert!(serde_json::from_str::<T>(r#"{"at":"yesterday"}"#).is_err());
    }
}
