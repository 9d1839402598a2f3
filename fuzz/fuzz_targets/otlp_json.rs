//! OTLP/JSON bodies through the hand-written decoder: decode (as `POST /v1/traces` and
//! `/v1/logs` do), map, and assemble every trace the way ingest does.
#![no_main]

#[path = "common.rs"]
mod common;
#[path = "otlp.rs"]
mod otlp;

use libfuzzer_sys::fuzz_target;
use tracellm_server::OtlpEncoding;

fuzz_target!(|data: &[u8]| otlp::run(OtlpEncoding::Json, data));
