//! Native trace documents, as `POST /traces` takes them: the JSON depth guard, parsing,
//! normalization and assembly, one trace or a batch.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use tracellm_core::{NormalizeOptions, PriceTable};
use tracellm_server::{Limits, normalize_body};

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static PRICES: PriceTable = PriceTable::builtin();
    }
    // Token estimation loads the tokenizer tables; the counts are not what is fuzzed here.
    let opts = NormalizeOptions { estimate_tokens: false, ..Default::default() };
    let limits = Limits::default();
    PRICES.with(|prices| {
        if let Ok(traces) = normalize_body(data, "default", prices, &opts, &limits) {
            for t in &traces {
                common::check_trace(t);
            }
        }
    });
});
