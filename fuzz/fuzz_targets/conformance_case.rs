//! cargo-fuzz target: `dotmac_hostile::conformance_case` (see that function for what it drives).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dotmac_hostile::conformance_case(data));
