//! OTLP/JSON decoding into the protobuf types, following the OTLP spec's JSON rules: keys are
//! lowerCamelCase (unknown keys are ignored, as the spec requires), trace and span ids are hex,
//! 64-bit integers may be strings or numbers, enums are integers (their names are accepted too,
//! as protobuf's JSON mapping allows). Structural errors name the path at fault.

use base64::Engine;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span::Event};
use serde_json::{Map, Value};

use crate::json_type;
use crate::normalize::ValidationError;

type R<T> = Result<T, ValidationError>;

fn err(path: &str, msg: impl Into<String>) -> ValidationError {
    ValidationError { field: path.to_string(), message: msg.into() }
}

fn obj<'a>(v: &'a Value, path: &str) -> R<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| err(path, format!("expected an object, got {}", json_type(v))))
}

fn arr<'a>(o: &'a Map<String, Value>, key: &str, path: &str) -> R<&'a [Value]> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(err(
            &format!("{path}.{key}"),
            format!("expected an array, got {}", json_type(other)),
        )),
    }
}

fn string(o: &Map<String, Value>, key: &str, path: &str) -> R<String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(err(
            &format!("{path}.{key}"),
            format!("expected a string, got {}", json_type(other)),
        )),
    }
}

fn u64_field(o: &Map<String, Value>, key: &str, path: &str) -> R<u64> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
            err(&format!("{path}.{key}"), format!("{n} is not an unsigned 64-bit integer"))
        }),
        Some(Value::String(s)) => s.parse().map_err(|_| {
            err(&format!("{path}.{key}"), format!("{s:?} is not an unsigned 64-bit integer"))
        }),
        Some(other) => Err(err(
            &format!("{path}.{key}"),
            format!("expected an integer, got {}", json_type(other)),
        )),
    }
}

fn i64_value(v: &Value, path: &str) -> R<i64> {
    match v {
        Value::Number(n) => {
            n.as_i64().ok_or_else(|| err(path, format!("{n} is not a 64-bit integer")))
        }
        Value::String(s) => {
            s.parse().map_err(|_| err(path, format!("{s:?} is not a 64-bit integer")))
        }
        other => Err(err(path, format!("expected an integer, got {}", json_type(other)))),
    }
}

fn enum_field(o: &Map<String, Value>, key: &str, path: &str, names: &[&str]) -> R<i32> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|i| i32::try_from(i).ok())
            .ok_or_else(|| err(&format!("{path}.{key}"), format!("{n} is not an enum value"))),
        Some(Value::String(s)) => {
            names.iter().position(|n| n.eq_ignore_ascii_case(s)).map(|i| i as i32).ok_or_else(
                || {
                    err(
                        &format!("{path}.{key}"),
                        format!(
                            "unknown value {s:?}; expected an integer or one of {}",
                            names.join(", ")
                        ),
                    )
                },
            )
        }
        Some(other) => Err(err(
            &format!("{path}.{key}"),
            format!("expected an integer, got {}", json_type(other)),
        )),
    }
}

/// Ids are hex in OTLP/JSON; length is checked later, per span, so that one bad span does not
/// refuse its neighbours.
fn hex_id(o: &Map<String, Value>, key: &str, path: &str) -> R<Vec<u8>> {
    let s = string(o, key, path)?;
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err(
            &format!("{path}.{key}"),
            format!("{s:?} is not hex (OTLP/JSON ids are hex, not base64)"),
        ));
    }
    Ok((0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or(0)).collect())
}

fn any_value(v: &Value, path: &str, depth: usize) -> R<AnyValue> {
    use any_value::Value as V;
    if depth > 64 {
        return Err(err(path, "value nested more than 64 levels deep"));
    }
    let o = obj(v, path)?;
    let value = if let Some(s) = o.get("stringValue") {
        Some(V::StringValue(
            s.as_str()
                .ok_or_else(|| err(&format!("{path}.stringValue"), "expected a string"))?
                .to_string(),
        ))
    } else if let Some(b) = o.get("boolValue") {
        Some(V::BoolValue(
            b.as_bool().ok_or_else(|| err(&format!("{path}.boolValue"), "expected a boolean"))?,
        ))
    } else if let Some(i) = o.get("intValue") {
        Some(V::IntValue(i64_value(i, &format!("{path}.intValue"))?))
    } else if let Some(d) = o.get("doubleValue") {
        let f = match d {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        };
        Some(V::DoubleValue(
            f.ok_or_else(|| err(&format!("{path}.doubleValue"), "expected a number"))?,
        ))
    } else if let Some(b) = o.get("bytesValue") {
        let s = b
            .as_str()
            .ok_or_else(|| err(&format!("{path}.bytesValue"), "expected a base64 string"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| err(&format!("{path}.bytesValue"), format!("invalid base64: {e}")))?;
        Some(V::BytesValue(bytes))
    } else if let Some(a) = o.get("arrayValue") {
        let a = obj(a, &format!("{path}.arrayValue"))?;
        let values = arr(a, "values", &format!("{path}.arrayValue"))?
            .iter()
            .enumerate()
            .map(|(i, x)| any_value(x, &format!("{path}.arrayValue.values[{i}]"), depth + 1))
            .collect::<R<Vec<_>>>()?;
        Some(V::ArrayValue(ArrayValue { values }))
    } else if let Some(kv) = o.get("kvlistValue") {
        let kv = obj(kv, &format!("{path}.kvlistValue"))?;
        let values = key_values(kv, "values", &format!("{path}.kvlistValue"), depth + 1)?;
        Some(V::KvlistValue(KeyValueList { values }))
    } else {
        None
    };
    Ok(AnyValue { value })
}

fn key_values(o: &Map<String, Value>, key: &str, path: &str, depth: usize) -> R<Vec<KeyValue>> {
    arr(o, key, path)?
        .iter()
        .enumerate()
        .map(|(i, kv)| {
            let p = format!("{path}.{key}[{i}]");
            let kvo = obj(kv, &p)?;
            let value = match kvo.get("value") {
                None | Some(Value::Null) => None,
                Some(v) => Some(any_value(v, &format!("{p}.value"), depth)?),
            };
            Ok(KeyValue { key: string(kvo, "key", &p)?, value, ..Default::default() })
        })
        .collect()
}

fn resource(o: &Map<String, Value>, path: &str) -> R<Option<Resource>> {
    match o.get("resource") {
        None | Some(Value::Null) => Ok(None),
        Some(r) => {
            let p = format!("{path}.resource");
            let ro = obj(r, &p)?;
            Ok(Some(Resource {
                attributes: key_values(ro, "attributes", &p, 0)?,
                ..Default::default()
            }))
        }
    }
}

fn scope(o: &Map<String, Value>, path: &str) -> R<Option<InstrumentationScope>> {
    match o.get("scope") {
        None | Some(Value::Null) => Ok(None),
        Some(s) => {
            let p = format!("{path}.scope");
            let so = obj(s, &p)?;
            Ok(Some(InstrumentationScope {
                name: string(so, "name", &p)?,
                version: string(so, "version", &p)?,
                attributes: key_values(so, "attributes", &p, 0)?,
                dropped_attributes_count: 0,
            }))
        }
    }
}

const SPAN_KINDS: &[&str] = &[
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];
const STATUS_CODES: &[&str] = &["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];

fn span(v: &Value, path: &str) -> R<Span> {
    let o = obj(v, path)?;
    let events = arr(o, "events", path)?
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let p = format!("{path}.events[{i}]");
            let eo = obj(e, &p)?;
            Ok(Event {
                time_unix_nano: u64_field(eo, "timeUnixNano", &p)?,
                name: string(eo, "name", &p)?,
                attributes: key_values(eo, "attributes", &p, 0)?,
                dropped_attributes_count: 0,
            })
        })
        .collect::<R<Vec<_>>>()?;
    let status = match o.get("status") {
        None | Some(Value::Null) => None,
        Some(s) => {
            let p = format!("{path}.status");
            let so = obj(s, &p)?;
            Some(Status {
                message: string(so, "message", &p)?,
                code: enum_field(so, "code", &p, STATUS_CODES)?,
            })
        }
    };
    Ok(Span {
        trace_id: hex_id(o, "traceId", path)?,
        span_id: hex_id(o, "spanId", path)?,
        parent_span_id: hex_id(o, "parentSpanId", path)?,
        trace_state: string(o, "traceState", path)?,
        flags: 0,
        name: string(o, "name", path)?,
        kind: enum_field(o, "kind", path, SPAN_KINDS)?,
        start_time_unix_nano: u64_field(o, "startTimeUnixNano", path)?,
        end_time_unix_nano: u64_field(o, "endTimeUnixNano", path)?,
        attributes: key_values(o, "attributes", path, 0)?,
        dropped_attributes_count: 0,
        events,
        dropped_events_count: 0,
        links: Vec::new(),
        dropped_links_count: 0,
        status,
    })
}

/// Decodes an OTLP/JSON `ExportTraceServiceRequest`.
pub fn trace_request(v: &Value) -> R<ExportTraceServiceRequest> {
    let root = obj(v, "$")?;
    let mut resource_spans = Vec::new();
    for (i, rs) in arr(root, "resourceSpans", "$")?.iter().enumerate() {
        let p = format!("resourceSpans[{i}]");
        let rso = obj(rs, &p)?;
        let mut scope_spans = Vec::new();
        for (j, ss) in arr(rso, "scopeSpans", &p)?.iter().enumerate() {
            let sp = format!("{p}.scopeSpans[{j}]");
            let sso = obj(ss, &sp)?;
            let spans = arr(sso, "spans", &sp)?
                .iter()
                .enumerate()
                .map(|(k, s)| span(s, &format!("{sp}.spans[{k}]")))
                .collect::<R<Vec<_>>>()?;
            scope_spans.push(ScopeSpans {
                scope: scope(sso, &sp)?,
                spans,
                schema_url: string(sso, "schemaUrl", &sp)?,
            });
        }
        resource_spans.push(ResourceSpans {
            resource: resource(rso, &p)?,
            scope_spans,
            schema_url: string(rso, "schemaUrl", &p)?,
        });
    }
    Ok(ExportTraceServiceRequest { resource_spans })
}

/// Decodes an OTLP/JSON `ExportLogsServiceRequest`.
pub fn logs_request(v: &Value) -> R<ExportLogsServiceRequest> {
    let root = obj(v, "$")?;
    let mut resource_logs = Vec::new();
    for (i, rl) in arr(root, "resourceLogs", "$")?.iter().enumerate() {
        let p = format!("resourceLogs[{i}]");
        let rlo = obj(rl, &p)?;
        let mut scope_logs = Vec::new();
        for (j, sl) in arr(rlo, "scopeLogs", &p)?.iter().enumerate() {
            let sp = format!("{p}.scopeLogs[{j}]");
            let slo = obj(sl, &sp)?;
            let mut log_records = Vec::new();
            for (k, r) in arr(slo, "logRecords", &sp)?.iter().enumerate() {
                let rp = format!("{sp}.logRecords[{k}]");
                let ro = obj(r, &rp)?;
                log_records.push(LogRecord {
                    time_unix_nano: u64_field(ro, "timeUnixNano", &rp)?,
                    observed_time_unix_nano: u64_field(ro, "observedTimeUnixNano", &rp)?,
                    severity_number: enum_field(ro, "severityNumber", &rp, &[])?,
                    severity_text: string(ro, "severityText", &rp)?,
                    body: match ro.get("body") {
                        None | Some(Value::Null) => None,
                        Some(b) => Some(any_value(b, &format!("{rp}.body"), 0)?),
                    },
                    attributes: key_values(ro, "attributes", &rp, 0)?,
                    dropped_attributes_count: 0,
                    flags: 0,
                    trace_id: hex_id(ro, "traceId", &rp)?,
                    span_id: hex_id(ro, "spanId", &rp)?,
                    event_name: string(ro, "eventName", &rp)?,
                });
            }
            scope_logs.push(ScopeLogs {
                scope: scope(slo, &sp)?,
                log_records,
                schema_url: string(slo, "schemaUrl", &sp)?,
            });
        }
        resource_logs.push(ResourceLogs {
            resource: resource(rlo, &p)?,
            scope_logs,
            schema_url: string(rlo, "schemaUrl", &p)?,
        });
    }
    Ok(ExportLogsServiceRequest { resource_logs })
}
