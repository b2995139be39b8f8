//! cargo-fuzz target: `dotmac_hostile::radius_attributes` (see that function for what it drives).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dotmac_hostile::radius_attributes(data));
