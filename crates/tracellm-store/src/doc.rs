//! Span documents at rest: JSON compressed with LZ4 (the reference library, liblz4).
//!
//! LLM spans are mostly prompt and response text with repeated JSON keys; compressed, a span
//! takes about a third fewer bytes on disk, and the writer has fewer pages to write, checkpoint
//! and fsync. LZ4 rather than zstd: zstd (level 1) saved another 0.2 KB per span but was 16 % of
//! the server's CPU at ingest; LZ4 compresses several times faster. Documents written before
//! compression are TEXT and are still read as they are: a BLOB is a compressed document (its
//! uncompressed size first, 4 bytes little-endian), a TEXT value plain JSON.
//!
//! The reference library rather than lz4_flex (pure Rust, used before; the block format is the
//! same, so what it wrote reads back): over 20,000 stored span documents of `scripts/bench
//! paced` (1.7 KB of JSON each) liblz4 compresses one in 6.5–7.0 µs against 8.3–8.7 µs and 0.4 %
//! smaller, decodes one in 0.96 µs against 1.32, and keeps its hash table per thread where
//! lz4_flex allocated and zeroed 8 KB on every call.

use rusqlite::types::{ToSqlOutput, ValueRef};
use serde::de::DeserializeOwned;

use crate::{Result, StoreError};

/// Documents smaller than this are stored as plain JSON: compression would save too little.
const MIN_COMPRESS: usize = 256;

/// No span document is larger than a request body may be; a larger size in a header is damage.
const MAX_DOC_BYTES: usize = 1 << 30;

/// The stored form of a JSON document: compressed when that pays.
#[derive(Clone)]
pub enum Packed {
    Json(Vec<u8>),
    Lz4(Vec<u8>),
}

impl Packed {
    pub fn len(&self) -> usize {
        match self {
            Packed::Json(s) => s.len(),
            Packed::Lz4(b) => b.len(),
        }
    }
}

impl rusqlite::ToSql for Packed {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Packed::Json(s) => ToSqlOutput::Borrowed(ValueRef::Text(s)),
            Packed::Lz4(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

/// Compresses a serialized document when it is large enough to gain.
pub fn pack_json(json: Vec<u8>) -> Packed {
    if json.len() < MIN_COMPRESS {
        return Packed::Json(json);
    }
    let mut z = Vec::with_capacity(4 + lzzzz::lz4::max_compressed_size(json.len()));
    z.extend_from_slice(&(json.len() as u32).to_le_bytes());
    match lzzzz::lz4::compress_to_vec(&json, &mut z, lzzzz::lz4::ACC_LEVEL_DEFAULT) {
        Ok(_) if z.len() < json.len() => Packed::Lz4(z),
        _ => Packed::Json(json),
    }
}

/// Reads a stored document: a BLOB is compressed JSON, TEXT is JSON.
pub fn unpack<T: DeserializeOwned>(v: ValueRef<'_>) -> Result<T> {
    Ok(unpack_digest(v)?.0)
}

/// Reads a stored document, and the digest of its JSON text.
pub fn unpack_digest<T: DeserializeOwned>(v: ValueRef<'_>) -> Result<(T, u64)> {
    let unreadable =
        |e: &dyn std::fmt::Display| StoreError::Internal(format!("stored span is unreadable: {e}"));
    let read = |json: &[u8]| {
        serde_json::from_slice(json).map(|doc| (doc, digest(json))).map_err(|e| unreadable(&e))
    };
    match v {
        ValueRef::Text(s) => read(s),
        ValueRef::Blob(b) => {
            let Some((head, body)) = b.split_first_chunk::<4>() else {
                return Err(unreadable(&"no size header"));
            };
            // LZ4 expands at most ~255 times: a larger size is damage, not a document.
            let size = u32::from_le_bytes(*head) as usize;
            if size > MAX_DOC_BYTES || size > body.len().saturating_mul(255) + 16 {
                return Err(unreadable(&"bad size header"));
            }
            let mut json = vec![0; size];
            let n = lzzzz::lz4::decompress(body, &mut json).map_err(|e| unreadable(&e))?;
            if n != size {
                return Err(unreadable(&format!("{n} bytes where the header says {size}")));
            }
            read(&json)
        }
        other => Err(unreadable(&format!("a {:?} value", other.data_type()))),
    }
}

/// A fingerprint of a document's JSON text: a merge serializes each span of the trace, and
/// packs and writes only those whose text differs from what is stored. Serialization is
/// deterministic, so an unchanged span has the same text; compressing it just to compare was a
/// fifth of the writer's time on big traces. Fingerprints live only in memory within one
/// merge, so a fixed seed of foldhash's quality hasher is enough (SipHash was 7 % of that time).
pub fn digest(json: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(0x7472_6163_656c_6c6d).hash_one(json)
}

/// Reads back a document packed in this process (a merge reusing what it just prepared), with
/// the digest of its text (as `unpack_digest`).
pub fn unpack_packed_digest<T: DeserializeOwned>(p: &Packed) -> Result<(T, u64)> {
    match p {
        Packed::Json(s) => unpack_digest(ValueRef::Text(s)),
        Packed::Lz4(b) => unpack_digest(ValueRef::Blob(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn large_documents_are_compressed_and_read_back() {
        let doc = json!({"input": "the agent should retrieve relevant context ".repeat(40)});
        let packed = pack_json(serde_json::to_vec(&doc).unwrap());
        assert!(matches!(packed, Packed::Lz4(_)));
        assert!(packed.len() < serde_json::to_string(&doc).unwrap().len() / 4);
        assert_eq!(unpack_packed_digest::<Value>(&packed).unwrap().0, doc);
    }

    #[test]
    fn a_stored_document_reads_back_with_the_digest_of_its_text() {
        let long = json!({"input": "the agent should retrieve relevant context ".repeat(40)});
        let short = json!({"id": "a"});
        for doc in [&long, &short] {
            let text = serde_json::to_string(doc).unwrap();
            let stored = pack_json(text.clone().into_bytes());
            let raw = match &stored {
                Packed::Json(s) => ValueRef::Text(s),
                Packed::Lz4(b) => ValueRef::Blob(b),
            };
            let (back, d): (Value, u64) = unpack_digest(raw).unwrap();
            assert_eq!(&back, doc);
            assert_eq!(d, digest(text.as_bytes()), "compressed or not, the digest is the text's");
        }
        let text = |v: &Value| serde_json::to_string(v).unwrap();
        assert_ne!(digest(text(&long).as_bytes()), digest(text(&short).as_bytes()));
    }

    #[test]
    fn documents_compressed_by_the_earlier_encoder_read_back() {
        // lz4_flex's `compress_prepend_size` of this document, as stores written before hold it.
        let stored = b"\x44\x01\x00\x00\xff\x15\x7b\x22\x69\x6e\x70\x75\x74\x22\x3a\x22\x72\x65\x74\x72\x69\x65\x76\x65\x20\x72\x65\x6c\x65\x76\x61\x6e\x74\x20\x63\x6f\x6e\x74\x65\x78\x74\x20\x1a\x00\xff\x08\x60\x65\x78\x74\x20\x22\x7d";
        let doc = json!({"input": "retrieve relevant context ".repeat(12)});
        assert_eq!(unpack::<Value>(ValueRef::Blob(stored)).unwrap(), doc);
    }

    #[test]
    fn small_and_old_documents_are_plain_json() {
        let doc = json!({"id": "a"});
        assert!(matches!(pack_json(doc.to_string().into_bytes()), Packed::Json(_)));
        assert_eq!(unpack::<Value>(ValueRef::Text(br#"{"id":"a"}"#)).unwrap(), doc);
    }

    #[test]
    fn damaged_documents_are_an_error_not_a_panic() {
        assert!(unpack::<Value>(ValueRef::Blob(b"\xff\xff\xff\xff garbage")).is_err());
        assert!(unpack::<Value>(ValueRef::Blob(b"\x10\x00\x00\x00 garbage")).is_err());
        assert!(unpack::<Value>(ValueRef::Blob(b"\x01")).is_err());
        // 1 MiB claimed for 8 bytes: more than LZ4 can expand to.
        assert!(unpack::<Value>(ValueRef::Blob(b"\x00\x00\x10\x00 garbage")).is_err());
        assert!(unpack::<Value>(ValueRef::Integer(3)).is_err());
    }
}
