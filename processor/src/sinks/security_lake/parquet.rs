//! OCSF Detection Finding (class 2004) rows → one Parquet file. The Arrow
//! schema follows the OCSF 1.1 class for the attributes our mapping
//! (`findings::ocsf`) writes: objects are structs, arrays are lists,
//! `integer_t` is int32, `long_t` and `timestamp_t` (epoch ms) are int64,
//! `json_t` (resources[].data) is JSON text and `unmapped` is a
//! map<string,string> (nested values as JSON text), as Security Lake's own
//! OCSF tables store them.

use std::sync::Arc;

use arrow_array::{ArrayRef, Int32Array, Int64Array, ListArray, MapArray, RecordBatch, StringArray, StructArray};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use arrow_schema::{ArrowError, DataType, Field, Fields, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::Value;

/// Rows per Arrow batch (and at most per row group): bounds the memory of
/// the column builders while one file is encoded.
const BATCH_ROWS: usize = 8192;

fn s(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}
fn i32f(name: &str) -> Field {
    Field::new(name, DataType::Int32, true)
}
fn i64f(name: &str) -> Field {
    Field::new(name, DataType::Int64, true)
}
fn obj(name: &str, fields: Vec<Field>) -> Field {
    Field::new(name, DataType::Struct(Fields::from(fields)), true)
}
fn list(name: &str, item: DataType) -> Field {
    Field::new(name, DataType::List(Arc::new(Field::new("element", item, true))), true)
}
fn list_of(name: &str, fields: Vec<Field>) -> Field {
    list(name, DataType::Struct(Fields::from(fields)))
}
/// A required attribute of the class (the mapping always writes it).
fn req(f: Field) -> Field {
    f.with_nullable(false)
}

/// The Detection Finding schema, in the order OCSF lists the attributes.
pub fn schema() -> SchemaRef {
    let entries =
        Fields::from(vec![Field::new("key", DataType::Utf8, false), Field::new("value", DataType::Utf8, true)]);
    let unmapped = Field::new(
        "unmapped",
        DataType::Map(Arc::new(Field::new("entries", DataType::Struct(entries), false)), false),
        true,
    );
    Arc::new(Schema::new(vec![
        req(i32f("activity_id")),
        s("activity_name"),
        req(i32f("category_uid")),
        s("category_name"),
        req(i32f("class_uid")),
        s("class_name"),
        req(i64f("type_uid")),
        s("type_name"),
        req(i32f("severity_id")),
        s("severity"),
        i32f("status_id"),
        s("status"),
        req(i64f("time")),
        s("message"),
        req(obj(
            "metadata",
            vec![
                s("version"),
                list("profiles", DataType::Utf8),
                obj("product", vec![s("name"), s("vendor_name"), s("version")]),
            ],
        )),
        obj("cloud", vec![s("provider"), s("region"), obj("account", vec![s("uid")])]),
        req(obj(
            "finding_info",
            vec![
                s("uid"),
                s("title"),
                s("desc"),
                list("types", DataType::Utf8),
                i64f("first_seen_time"),
                i64f("last_seen_time"),
                i64f("created_time"),
                i64f("modified_time"),
                obj("analytic", vec![s("uid"), s("name"), i32f("type_id"), s("type")]),
                s("product_uid"),
                s("src_url"),
            ],
        )),
        list_of("resources", vec![s("uid"), s("type"), s("cloud_partition"), s("region"), s("data")]),
        list_of(
            "evidences",
            vec![
                obj("api", vec![s("operation"), obj("service", vec![s("name")])]),
                obj("src_endpoint", vec![s("ip"), s("domain")]),
                obj("actor", vec![obj("user", vec![s("uid"), s("type")])]),
            ],
        ),
        list_of("observables", vec![s("name"), i32f("type_id"), s("type"), s("value")]),
        obj("remediation", vec![s("desc"), list("references", DataType::Utf8)]),
        unmapped,
    ]))
}

/// Text of a JSON value for a string column: strings as they are, anything
/// else (json_t, nested unmapped values) as JSON text.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// One Arrow column of type `dt` from the values at one path of each row
/// (`None`: absent).
fn column(dt: &DataType, vals: &[Option<&Value>]) -> Result<ArrayRef, ArrowError> {
    Ok(match dt {
        DataType::Utf8 => Arc::new(StringArray::from_iter(vals.iter().map(|v| v.and_then(text)))),
        DataType::Int32 => Arc::new(Int32Array::from_iter(
            vals.iter().map(|v| v.and_then(Value::as_i64).and_then(|n| i32::try_from(n).ok())),
        )),
        DataType::Int64 => Arc::new(Int64Array::from_iter(vals.iter().map(|v| v.and_then(Value::as_i64)))),
        DataType::Struct(fields) => {
            let children = fields
                .iter()
                .map(|f| {
                    let sub: Vec<Option<&Value>> = vals.iter().map(|v| v.and_then(|v| v.get(f.name()))).collect();
                    column(f.data_type(), &sub)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let nulls = NullBuffer::from(vals.iter().map(|v| v.is_some_and(Value::is_object)).collect::<Vec<_>>());
            Arc::new(StructArray::try_new(fields.clone(), children, Some(nulls))?)
        }
        DataType::List(item) => {
            let arrays: Vec<Option<&Vec<Value>>> = vals.iter().map(|v| v.and_then(Value::as_array)).collect();
            let offsets = OffsetBuffer::from_lengths(arrays.iter().map(|a| a.map_or(0, |a| a.len())));
            let flat: Vec<Option<&Value>> = arrays.iter().flatten().flat_map(|a| a.iter().map(Some)).collect();
            let nulls = NullBuffer::from(arrays.iter().map(Option::is_some).collect::<Vec<_>>());
            Arc::new(ListArray::try_new(item.clone(), offsets, column(item.data_type(), &flat)?, Some(nulls))?)
        }
        DataType::Map(entry, ordered) => {
            let DataType::Struct(kv) = entry.data_type() else {
                return Err(ArrowError::SchemaError("map entries must be a struct".into()));
            };
            let objects: Vec<Option<&serde_json::Map<String, Value>>> =
                vals.iter().map(|v| v.and_then(Value::as_object)).collect();
            let offsets = OffsetBuffer::from_lengths(objects.iter().map(|o| o.map_or(0, |o| o.len())));
            let keys = StringArray::from_iter_values(objects.iter().flatten().flat_map(|o| o.keys()));
            let values = StringArray::from_iter(objects.iter().flatten().flat_map(|o| o.values().map(text)));
            let entries = StructArray::try_new(kv.clone(), vec![Arc::new(keys), Arc::new(values)], None)?;
            let nulls = NullBuffer::from(objects.iter().map(Option::is_some).collect::<Vec<_>>());
            Arc::new(MapArray::try_new(entry.clone(), offsets, entries, Some(nulls), *ordered)?)
        }
        other => return Err(ArrowError::NotYetImplemented(format!("OCSF column of type {other}"))),
    })
}

/// A record batch of OCSF rows (JSON objects) in `schema`.
pub fn batch(schema: &SchemaRef, rows: &[Value]) -> Result<RecordBatch, ArrowError> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let vals: Vec<Option<&Value>> = rows.iter().map(|r| r.get(f.name())).collect();
            column(f.data_type(), &vals)
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

/// The OCSF `time` of a row (epoch ms); rows without one sort first.
pub fn row_time(row: &Value) -> i64 {
    row.get("time").and_then(Value::as_i64).unwrap_or(i64::MIN)
}

/// Encodes `rows` (sorted here by `time`, stable) as one snappy-compressed
/// Parquet file written to `out`; returns the rows written.
pub fn write<W: std::io::Write + Send>(out: W, mut rows: Vec<Value>) -> Result<usize, parquet::errors::ParquetError> {
    rows.sort_by_key(row_time);
    let schema = schema();
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(BATCH_ROWS * 16))
        .set_created_by(format!("trailwatch {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut w = ArrowWriter::try_new(out, schema.clone(), Some(props))?;
    for chunk in rows.chunks(BATCH_ROWS) {
        w.write(&batch(&schema, chunk)?)?;
    }
    w.close()?;
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use serde_json::json;

    #[test]
    fn rows_become_nested_columns_and_absent_objects_nulls() {
        let rows = vec![
            json!({"activity_id": 1, "category_uid": 2, "class_uid": 2004, "type_uid": 200401, "severity_id": 4,
                   "time": 5, "metadata": {"version": "1.1.0", "profiles": ["cloud"]},
                   "finding_info": {"uid": "a", "types": ["x", "y"]},
                   "resources": [{"uid": "r1", "data": {"k": 1}}],
                   "unmapped": {"A": "b", "C": {"d": 1}}}),
            json!({"activity_id": 2, "category_uid": 2, "class_uid": 2004, "type_uid": 200402, "severity_id": 1,
                   "time": 3, "metadata": {"version": "1.1.0"}, "finding_info": {"uid": "b"}}),
        ];
        let b = batch(&schema(), &rows).unwrap();
        assert_eq!(b.num_rows(), 2);
        let fi = b.column_by_name("finding_info").unwrap().as_any().downcast_ref::<StructArray>().unwrap();
        let types = fi.column_by_name("types").unwrap().as_any().downcast_ref::<ListArray>().unwrap();
        assert_eq!(types.value_length(0), 2);
        assert!(types.is_null(1));
        let cloud = b.column_by_name("cloud").unwrap();
        assert_eq!(cloud.null_count(), 2);
        let res = b.column_by_name("resources").unwrap().as_any().downcast_ref::<ListArray>().unwrap();
        let r0 = res.value(0);
        let data = r0.as_any().downcast_ref::<StructArray>().unwrap().column_by_name("data").unwrap();
        assert_eq!(data.as_any().downcast_ref::<StringArray>().unwrap().value(0), r#"{"k":1}"#);
        let m = b.column_by_name("unmapped").unwrap().as_any().downcast_ref::<MapArray>().unwrap();
        assert_eq!(m.value_length(0), 2);
        assert!(m.is_null(1));
    }

    #[test]
    fn a_row_missing_a_required_attribute_is_an_error() {
        let rows = vec![json!({"class_uid": 2004})];
        assert!(batch(&schema(), &rows).is_err());
    }
}
