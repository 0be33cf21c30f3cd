//! [`JsonObject`]: the JSON body extractor of every write endpoint. Like `web::Json` (same
//! size limit, content type and error answers, from the app's `JsonConfig`), but the body must
//! be a JSON object: a derived request struct would also read an array positionally (`["a",
//! 1]` as its first two fields), a guess at what a malformed body meant. Unknown and repeated
//! keys stay the request type's to refuse, as before.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::Deref;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A request body that is a JSON object, read as `T`.
#[derive(Debug)]
pub struct JsonObject<T>(pub T);

impl<T> JsonObject<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for JsonObject<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// `T` read from a JSON object only.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OnlyMap<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for OnlyMap<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(OnlyMap(PhantomData)).map(Object)
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonObject<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let read = web::Json::<Object<T>>::from_request(req, payload);
        Box::pin(async move { Ok(JsonObject(read.await?.into_inner().0)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Req {
        name: String,
        #[serde(default)]
        n: u32,
    }

    fn read(s: &str) -> Result<Req, String> {
        serde_json::from_str::<Object<Req>>(s)
            .map(|o| o.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn only_objects_are_read() {
        assert_eq!(
            read(r#"{"name":"a","n":2}"#),
            Ok(Req {
                name: "a".into(),
                n: 2
            })
        );
        assert!(read(r#"["a", 2]"#)
            .unwrap_err()
            .contains("expected a JSON object"));
        assert!(read(r#""a""#).is_err());
        assert!(read("null").is_err());
        assert!(read(r#"{"name":"a","name":"b"}"#)
            .unwrap_err()
            .contains("duplicate field"));
        assert!(read(r#"{"name":"a","x":1}"#)
            .unwrap_err()
            .contains("unknown field"));
    }
}
