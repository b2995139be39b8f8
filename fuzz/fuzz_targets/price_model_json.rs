//! cargo-fuzz target: `dotmac_hostile::price_model_json` (see that function for what it drives).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dotmac_hostile::price_model_json(data));
