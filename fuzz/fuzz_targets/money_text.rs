//! cargo-fuzz target: `dotmac_hostile::money_text` (see that function for what it drives).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dotmac_hostile::money_text(data));
