//! Span documents at rest: JSON compressed with LZ4 (the reference library, liblz4). A trace
//! row's texts (its prompt, response, metadata and merge input: `RowTexts` in sqlite.rs) are
//! kept the same way.
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
//!
//! Documents are compressed against a dictionary: a span document is too short for LZ4 to find
//! its own repeats: every key (`"start_time":`, `"llm.token_count.completion":`) is new within one
//! document, so a third of what was stored was the same JSON skeleton again and again. The
//! dictionary, `dictionary-1.jsonl` (the span model's skeleton with the attribute keys of the
//! OTel GenAI, OpenInference and OpenLLMetry conventions, 4.3 KB, no user text), is LZ4's history
//! for every document: 866 → 573 bytes for an `otlp_load.py` span, 1,322 → 1,029 for one of
//! `scripts/bench paced`'s. Such a BLOB has the top bit of its size header set. The dictionary is
//! part of the format: stored documents need its exact bytes to be read, so it never changes (a
//! different one would need a marker of its own).

use std::cell::RefCell;

use lzzzz::lz4;
use rusqlite::types::{ToSqlOutput, ValueRef};
use serde::de::DeserializeOwned;

use crate::{Result, StoreError};

/// Documents smaller than this are stored as plain JSON: compression would save too little.
const MIN_COMPRESS: usize = 256;

/// No span document is larger than a request body may be; a larger size in a header is damage.
const MAX_DOC_BYTES: usize = 1 << 30;

/// The dictionary documents are compressed against (see the module's notes). Never edit it:
/// stored documents cannot be read without these exact bytes.
const DICTIONARY: &[u8] = include_bytes!("doc/dictionary-1.jsonl");

/// Set in the size header of a document compressed against [`DICTIONARY`].
const WITH_DICTIONARY: u32 = 1 << 31;

/// Each thread's LZ4 state: the dictionary loaded once (its hash table), and a working stream
/// that refers to it for each document.
struct Compressor {
    dictionary: lz4::Compressor<'static>,
    work: lz4::Compressor<'static>,
}

thread_local! {
    /// Made on a thread's first document; ~100 KB (two LZ4 streams and the history copy
    /// lzzzz keeps), handed back by [`release_thread_state`].
    static COMPRESSOR: RefCell<Option<Compressor>> = const { RefCell::new(None) };
}

/// Drops the calling thread's compression state, to be made again by its next document: for a
/// thread going idle after a load, whose memory should go back to the OS.
pub fn release_thread_state() {
    COMPRESSOR.take();
}

/// Appends `json` compressed against the dictionary to `z`; None when LZ4 could not set up.
fn compress_with_dictionary(json: &[u8], z: &mut Vec<u8>) -> Option<usize> {
    COMPRESSOR.with_borrow_mut(|c| {
        let c = match c {
            Some(c) => c,
            None => c.insert(Compressor {
                dictionary: lz4::Compressor::with_dict(DICTIONARY).ok()?,
                work: lz4::Compressor::new().ok()?,
            }),
        };
        // a fresh start, then the dictionary as the only history: a document must never refer
        // to the one compressed before it, which is not there when it is read
        c.work.attach_dict(None);
        c.work.attach_dict(Some(&mut c.dictionary));
        c.work.next_to_vec(json, z, lz4::ACC_LEVEL_DEFAULT).ok()
    })
}

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
    let mut z = Vec::with_capacity(4 + lz4::max_compressed_size(json.len()));
    z.extend_from_slice(&(json.len() as u32 | WITH_DICTIONARY).to_le_bytes());
    match compress_with_dictionary(&json, &mut z) {
        Some(_) if z.len() < json.len() => Packed::Lz4(z),
        _ => Packed::Json(json),
    }
}

/// Reads a stored document: a BLOB is compressed JSON, TEXT is JSON.
pub fn unpack<T: DeserializeOwned>(v: ValueRef<'_>) -> Result<T> {
    Ok(unpack_digest(v)?.0)
}

/// Reads a stored document, and the digest of its JSON text.
pub fn unpack_digest<T: DeserializeOwned>(v: ValueRef<'_>) -> Result<(T, u64)> {
    let json = json_text(v)?;
    serde_json::from_slice(&json).map(|doc| (doc, digest(&json))).map_err(|e| unreadable(&e))
}

fn unreadable(e: &dyn std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("stored document is unreadable: {e}"))
}

/// A stored document's JSON text: as stored (TEXT), or decompressed (BLOB). For a reader that
/// wants a few of its fields, borrowed.
pub fn json_text(v: ValueRef<'_>) -> Result<std::borrow::Cow<'_, [u8]>> {
    match v {
        ValueRef::Text(s) => Ok(s.into()),
        ValueRef::Blob(b) => {
            let Some((head, body)) = b.split_first_chunk::<4>() else {
                return Err(unreadable(&"no size header"));
            };
            let head = u32::from_le_bytes(*head);
            // LZ4 expands at most ~255 times: a larger size is damage, not a document.
            let size = (head & !WITH_DICTIONARY) as usize;
            if size > MAX_DOC_BYTES || size > body.len().saturating_mul(255) + 16 {
                return Err(unreadable(&"bad size header"));
            }
            let mut json = vec![0; size];
            let n = if head & WITH_DICTIONARY != 0 {
                lz4::decompress_with_dict(body, &mut json, DICTIONARY)
            } else {
                lz4::decompress(body, &mut json)
            }
            .map_err(|e| unreadable(&e))?;
            if n != size {
                return Err(unreadable(&format!("{n} bytes where the header says {size}")));
            }
            Ok(json.into())
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

    /// A span document as the store writes one for an OpenInference LLM span.
    fn span_json(prompt: &str) -> Vec<u8> {
        let doc = json!({"id": "c1c4f6269423df6d", "parent_id": "e99d5091f68ed337",
            "name": "ChatCompletion", "kind": "llm", "start_time": "2026-12-06T12:01:21.560524014Z",
            "end_time": "2026-12-06T12:01:22.410524014Z", "latency_ms": 850.0, "status": "success",
            "model": "gpt-4o-mini", "provider": "openai",
            "input": {"messages": [{"role": "user", "content": prompt}]},
            "output": {"messages": [{"role": "assistant", "content": "Refunds take 5 days."}]},
            "tool": null, "tokens": {"prompt": 132, "completion": 50, "total": 182, "estimated": false},
            "cost_usd": 0.0000498, "time_to_first_token_ms": null, "error": null,
            "attributes": {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-mini",
                "llm.provider": "openai", "llm.token_count.prompt": 132,
                "llm.token_count.completion": 50, "llm.token_count.total": 182,
                "otel.scope.name": "bench", "otel.span_kind": 3},
            "events": []});
        serde_json::to_vec(&doc).unwrap()
    }

    #[test]
    fn span_documents_are_compressed_against_the_dictionary_and_read_back() {
        let text = span_json("How long does a refund take for an order paid by card?");
        let Packed::Lz4(with) = pack_json(text.clone()) else { panic!("not compressed") };
        assert_ne!(with[3] & 0x80, 0, "the size header marks the dictionary");
        let mut without = Vec::new();
        lz4::compress_to_vec(&text, &mut without, lz4::ACC_LEVEL_DEFAULT).unwrap();
        // the JSON skeleton is in the dictionary: well under what LZ4 makes of the text alone
        assert!(with.len() * 10 < without.len() * 7, "{} against {}", with.len(), without.len());
        let (back, d): (Value, u64) = unpack_digest(ValueRef::Blob(&with)).unwrap();
        assert_eq!(back, serde_json::from_slice::<Value>(&text).unwrap());
        assert_eq!(d, digest(&text));
    }

    #[test]
    fn documents_side_by_side_in_memory_each_read_back_alone() {
        // one buffer holding many documents: each starts where the last ended, which LZ4's
        // streaming mode would take for a continuation; each must read back on its own
        let texts: Vec<Vec<u8>> = (0..300)
            .map(|i| span_json(&format!("question {i} about billing and refunds")))
            .collect();
        let all = texts.concat();
        let mut at = 0;
        for t in &texts {
            let packed = pack_json(all[at..at + t.len()].to_vec());
            at += t.len();
            assert!(matches!(packed, Packed::Lz4(_)));
            let (back, _): (Value, u64) = unpack_packed_digest(&packed).unwrap();
            assert_eq!(back, serde_json::from_slice::<Value>(t).unwrap());
        }
        // `pack_json` was handed copies; here the compressor reads the documents in place
        let mut at = 0;
        for t in &texts {
            let mut z = Vec::new();
            compress_with_dictionary(&all[at..at + t.len()], &mut z).unwrap();
            at += t.len();
            let mut json = vec![0; t.len()];
            let n = lz4::decompress_with_dict(&z, &mut json, DICTIONARY).unwrap();
            assert_eq!(&json[..n], &t[..]);
        }
    }

    #[test]
    fn a_thread_that_handed_its_state_back_compresses_as_before() {
        let text = span_json("Can I change the delivery address?");
        let first = pack_json(text.clone());
        release_thread_state();
        assert!(COMPRESSOR.with_borrow(|c| c.is_none()));
        let again = pack_json(text.clone());
        assert!(matches!((&first, &again), (Packed::Lz4(a), Packed::Lz4(b)) if a == b));
        let (back, _): (Value, u64) = unpack_packed_digest(&again).unwrap();
        assert_eq!(back, serde_json::from_slice::<Value>(&text).unwrap());
    }

    /// `span_json("Where is my parcel?")` as this version stores it.
    const GOLDEN_DICTIONARY_1: &[u8] =
        b"\x26\x03\x00\x80\x03\x85\x0e\xf2\x01\x63\x31\x63\x34\x66\x36\x32\x36\x39\x34\x32\x33\x64\
        \x66\x36\x64\x57\x0a\x05\x95\x0e\xf6\x01\x65\x39\x39\x64\x35\x30\x39\x31\x66\x36\x38\x65\
        \x64\x33\x33\x37\x4c\x0a\x0f\x67\x03\x1d\xff\x09\x31\x32\x2d\x30\x36\x54\x31\x32\x3a\x30\
        \x31\x3a\x32\x31\x2e\x35\x36\x30\x35\x32\x34\x30\x31\x34\xd0\x0b\x01\x09\x2c\x00\x47\x32\
        \x2e\x34\x31\x2c\x00\x08\xd3\x0b\x21\x38\x35\x2d\x02\x05\xd5\x0b\x0d\xae\x0e\x0f\x6f\x03\
        \x2d\x0d\x34\x03\xf2\x04\x57\x68\x65\x72\x65\x20\x69\x73\x20\x6d\x79\x20\x70\x61\x72\x63\
        \x65\x6c\x3f\x0d\x03\x02\x38\x05\x0f\xb6\x0b\x11\x06\xf2\x0b\xf2\x05\x52\x65\x66\x75\x6e\
        \x64\x73\x20\x74\x61\x6b\x65\x20\x35\x20\x64\x61\x79\x73\x2e\x4e\x00\x0f\x5b\x03\x0b\x3a\
        \x31\x33\x32\x77\x0b\x16\x35\x5e\x03\x3f\x31\x38\x32\x60\x03\x0f\x6f\x30\x30\x30\x34\x39\
        \x38\x66\x03\x83\x01\x4a\x04\x03\x02\x03\x04\x1d\x03\x01\xf1\x00\x0f\x1f\x03\x09\x2e\x35\
        \x30\x20\x00\x03\x6f\x04\x01\x11\x01\x02\x0d\x03\x08\x22\x03\x5f\x62\x65\x6e\x63\x68\x27\
        \x03\x00\x15\x33\x6e\x06\x50\x22\x3a\x5b\x5d\x7d";

    #[test]
    fn documents_stored_against_dictionary_1_read_back_forever() {
        // written by this version; if this fails, the dictionary's bytes were changed, and every
        // store holding documents compressed against it would become unreadable
        let stored = GOLDEN_DICTIONARY_1;
        let doc: Value = unpack(ValueRef::Blob(stored)).unwrap();
        assert_eq!(
            doc,
            serde_json::from_slice::<Value>(&span_json("Where is my parcel?")).unwrap()
        );
    }

    #[test]
    fn documents_compressed_without_the_dictionary_read_back() {
        let text = span_json("How long does a refund take?");
        let mut z = (text.len() as u32).to_le_bytes().to_vec();
        lz4::compress_to_vec(&text, &mut z, lz4::ACC_LEVEL_DEFAULT).unwrap();
        let doc: Value = unpack(ValueRef::Blob(&z)).unwrap();
        assert_eq!(doc, serde_json::from_slice::<Value>(&text).unwrap());
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
