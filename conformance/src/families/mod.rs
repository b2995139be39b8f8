//! One runner per family: a typed `Case` (deserialized with `deny_unknown_fields`, so an unknown
//! field is an error) and a `run` function that maps it to DotMac's public API. The case formats
//! are documented in the shared README, which is their spec (the repository's own families,
//! [`LOCAL_FAMILIES`](crate::LOCAL_FAMILIES), in `docs/`: `fup` in `docs/conformance-fup.md`); the types here mirror it field for
//! field and are not documented twice.

pub mod billing;
pub mod commission;
pub mod dunning;
pub mod fup;
pub mod invoice;
pub mod periods;
pub mod pricing;
pub mod radius;
pub mod sla;
pub mod usage;
