//! The OTLP path both encodings share: decode (as `POST /v1/traces` and `/v1/logs` do), map,
//! and assemble every trace the way ingest does.

use tracellm_core::otel::{map_logs, map_traces};
use tracellm_core::{Assembler, NormalizeOptions, PriceTable};
use tracellm_server::{Limits, OtlpEncoding, decode_logs_request, decode_trace_request};

use crate::common;

thread_local! {
    // Token estimation loads the tokenizer tables; the counts are not what is fuzzed here.
    static ASM: Assembler = Assembler {
        prices: PriceTable::builtin(),
        opts: NormalizeOptions { estimate_tokens: false, ..Default::default() },
    };
}

pub fn run(encoding: OtlpEncoding, data: &[u8]) {
    let limits = Limits::default();
    ASM.with(|asm| {
        if let Ok(req) = decode_trace_request(encoding, data, &limits) {
            let mapped = map_traces(req, &limits.otel);
            for b in mapped.batches {
                let mut input = b.input;
                input.id = Some(b.trace_id.clone());
                if !b.spans.is_empty()
                    && let Ok(t) = asm.partial("default", input, b.spans)
                {
                    common::check_trace(&t);
                }
            }
        }
        if let Ok(req) = decode_logs_request(encoding, data, &limits) {
            let _ = map_logs(&req, &limits.otel);
        }
    });
}
