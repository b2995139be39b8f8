//! cargo-fuzz target: `dotmac_hostile::plan_json` (see that function for what it drives).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dotmac_hostile::plan_json(data));
