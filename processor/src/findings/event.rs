//! The event a finding is built from, parsed down to the fields
//! [`super::build_finding`] reads.
//!
//! Building the whole `serde_json::Value` of a 1–2 KB CloudTrail record (and
//! dropping it again) was a quarter of the cost of a finding; the skipped
//! parts are still checked for valid JSON but never allocated. Whatever the
//! finding code reads must be listed in [`FIELDS`]; the test
//! `pruned_event_gives_the_same_finding` compares both on every sample.

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// A key kept from an object: `keep` with no children keeps the whole value,
/// otherwise only those children of an object value.
struct Field {
    name: &'static str,
    keep: &'static [Field],
}

const fn all(name: &'static str) -> Field {
    Field { name, keep: &[] }
}

/// Every path `build_finding` and `resources_of` read, for all event classes.
const FIELDS: &[Field] = &[
    // CloudTrail records
    all("recipientAccountId"),
    all("awsRegion"),
    all("eventTime"),
    all("eventName"),
    all("eventSource"),
    all("sourceIPAddress"),
    Field {
        name: "userIdentity",
        keep: &[
            all("accountId"),
            all("arn"),
            all("type"),
            Field { name: "sessionContext", keep: &[Field { name: "sessionIssuer", keep: &[all("arn")] }] },
        ],
    },
    Field {
        name: "requestParameters",
        keep: &[
            all("repositoryName"),
            all("registryId"),
            all("imageDigest"),
            all("layerDigest"),
            all("imageIds"),
            all("taskDefinition"),
            all("family"),
            all("cluster"),
            // CloudTrail StopLogging/StartLogging/UpdateTrail: the trail.
            all("name"),
        ],
    },
    Field { name: "responseElements", keep: &[Field { name: "taskDefinition", keep: &[all("taskDefinitionArn")] }] },
    // EventBridge events
    all("account"),
    all("region"),
    all("time"),
    all("detail-type"),
    all("resources"),
    Field {
        name: "detail",
        keep: &[
            all("severity"),
            all("findingArn"),
            all("finding-severity-counts"),
            all("resources"),
            all("repository-name"),
            all("image-digest"),
        ],
    },
];

/// Parses `json` keeping only the fields a finding reads. Objects along the
/// kept paths stay objects; anything else on such a path reads as `null`,
/// which every reader treats like the original (they only look into objects).
/// An event without an id needs [`serde_json::from_str`] instead: its
/// finding Id hashes the whole event.
pub fn parse_event(json: &str) -> serde_json::Result<Value> {
    let mut d = serde_json::Deserializer::from_str(json);
    let v = Pruned(FIELDS).deserialize(&mut d)?;
    d.end()?;
    Ok(v)
}

#[derive(Clone, Copy)]
struct Pruned(&'static [Field]);

impl<'de> DeserializeSeed<'de> for Pruned {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Pruned {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = m.next_key_seed(Key(self.0))? {
            match k {
                Some(i) => {
                    let f = &self.0[i];
                    let v =
                        if f.keep.is_empty() { m.next_value::<Value>()? } else { m.next_value_seed(Pruned(f.keep))? };
                    // Later duplicates win, as in serde_json's own Value.
                    out.insert(f.name.to_string(), v);
                }
                None => {
                    m.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Value, A::Error> {
        while s.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_str<E>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// An object key: the index of the kept field it names, if any (no
/// allocation for the keys that are skipped).
struct Key(&'static [Field]);

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Option<usize>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, k: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|f| f.name == k))
    }
}
