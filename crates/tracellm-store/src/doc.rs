//! Span documents at rest: JSON compressed with zstd.
//!
//! LLM spans are mostly prompt and response text with repeated JSON keys; compressed, a span
//! takes about half the bytes on disk, and the writer has fewer pages to write, checkpoint and
//! fsync. Documents written before compression are TEXT and are still read as they are: a BLOB
//! is a compressed document, a TEXT value plain JSON.

use rusqlite::types::ValueRef;
use serde::de::DeserializeOwned;

use crate::{Result, StoreError};

/// zstd's fastest regular level: most of the size gain of higher levels at a fraction of the CPU
/// (ingest runs at tens of thousands of spans a second on two cores).
const LEVEL: i32 = 1;

/// Documents smaller than this are stored as plain JSON: compression would save too little.
const MIN_COMPRESS: usize = 256;

/// No span document is larger than a request body may be.
const MAX_DOC_BYTES: u64 = 1 << 30;

/// The stored form of a JSON document: compressed when that pays.
pub enum Packed {
    Json(String),
    Zstd(Vec<u8>),
}

impl Packed {
    pub fn len(&self) -> usize {
        match self {
            Packed::Json(s) => s.len(),
            Packed::Zstd(b) => b.len(),
        }
    }
}

impl rusqlite::ToSql for Packed {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(match self {
            Packed::Json(s) => rusqlite::types::ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Packed::Zstd(b) => rusqlite::types::ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

/// Serializes `v` and compresses it when it is large enough to gain.
pub fn pack<T: serde::Serialize>(v: &T) -> Result<Packed> {
    let json = serde_json::to_string(v).map_err(|e| StoreError::Internal(e.to_string()))?;
    if json.len() < MIN_COMPRESS {
        return Ok(Packed::Json(json));
    }
    // A compression context is costly to set up (more than compressing one span): one per thread.
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    let z = COMPRESSOR
        .with_borrow_mut(|c| {
            if c.is_none() {
                *c = Some(zstd::bulk::Compressor::new(LEVEL)?);
            }
            c.as_mut().expect("a compressor").compress(json.as_bytes())
        })
        .map_err(|e| StoreError::Internal(format!("compressing a span: {e}")))?;
    Ok(if z.len() < json.len() { Packed::Zstd(z) } else { Packed::Json(json) })
}

/// Reads a stored document: a BLOB is compressed JSON, TEXT is JSON.
pub fn unpack<T: DeserializeOwned>(v: ValueRef<'_>) -> Result<T> {
    let unreadable =
        |e: &dyn std::fmt::Display| StoreError::Internal(format!("stored span is unreadable: {e}"));
    match v {
        ValueRef::Text(s) => serde_json::from_slice(s).map_err(|e| unreadable(&e)),
        ValueRef::Blob(b) => {
            thread_local! {
                static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
                    const { std::cell::RefCell::new(None) };
            }
            // every frame written here records its size
            let size = match zstd::zstd_safe::get_frame_content_size(b) {
                Ok(Some(n)) if n <= MAX_DOC_BYTES => n as usize,
                _ => return Err(unreadable(&"bad frame header")),
            };
            let json = DECOMPRESSOR
                .with_borrow_mut(|d| {
                    if d.is_none() {
                        *d = Some(zstd::bulk::Decompressor::new()?);
                    }
                    d.as_mut().expect("a decompressor").decompress(b, size)
                })
                .map_err(|e| unreadable(&e))?;
            serde_json::from_slice(&json).map_err(|e| unreadable(&e))
        }
        other => Err(unreadable(&format!("a {:?} value", other.data_type()))),
    }
}

/// Reads back a document packed in this process (a merge reusing what it just prepared).
pub fn unpack_packed<T: DeserializeOwned>(p: &Packed) -> Result<T> {
    match p {
        Packed::Json(s) => unpack(ValueRef::Text(s.as_bytes())),
        Packed::Zstd(b) => unpack(ValueRef::Blob(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn large_documents_are_compressed_and_read_back() {
        let doc = json!({"input": "the agent should retrieve relevant context ".repeat(40)});
        let packed = pack(&doc).unwrap();
        assert!(matches!(packed, Packed::Zstd(_)));
        assert!(packed.len() < serde_json::to_string(&doc).unwrap().len() / 4);
        assert_eq!(unpack_packed::<Value>(&packed).unwrap(), doc);
    }

    #[test]
    fn small_and_old_documents_are_plain_json() {
        let doc = json!({"id": "a"});
        assert!(matches!(pack(&doc).unwrap(), Packed::Json(_)));
        assert_eq!(unpack::<Value>(ValueRef::Text(br#"{"id":"a"}"#)).unwrap(), doc);
    }

    #[test]
    fn damaged_documents_are_an_error_not_a_panic() {
        assert!(unpack::<Value>(ValueRef::Blob(b"\x28\xb5\x2f\xfd garbage")).is_err());
        assert!(unpack::<Value>(ValueRef::Integer(3)).is_err());
    }
}
