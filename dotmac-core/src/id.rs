//! Typed identifiers: newtypes over UUID v7 that cannot be mixed up.

/// Defines a typed id: a `Copy` newtype over [`uuid::Uuid`] (v7 when generated), serde-transparent,
/// with `Display`/`FromStr` and conversions to and from `Uuid`.
///
/// Domain crates use it for their own ids so that every id in DotMac behaves the same way.
///
/// ```
/// dotmac_core::define_id! {
///     /// A router in the field.
///     RouterId
/// }
/// let id = RouterId::new();
/// let parsed: RouterId = id.to_string().parse()?;
/// assert_eq!(id, parsed);
/// # Ok::<(), dotmac_core::CoreError>(())
/// ```
#[macro_export]
macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name($crate::__private::uuid::Uuid);

        // Transparent: serialized exactly as the UUID string.
        impl $crate::__private::serde::Serialize for $name {
            fn serialize<S: $crate::__private::serde::Serializer>(
                &self,
                serializer: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                $crate::__private::serde::Serialize::serialize(&self.0, serializer)
            }
        }

        impl<'de> $crate::__private::serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::__private::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> ::std::result::Result<Self, D::Error> {
                <$crate::__private::uuid::Uuid as $crate::__private::serde::Deserialize>::deserialize(
                    deserializer,
                )
                .map(Self)
            }
        }

        impl $name {
            /// A new id (UUID v7: time-ordered, so ids sort roughly by creation).
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self($crate::__private::uuid::Uuid::now_v7())
            }

            /// Wraps an existing UUID (from storage or another system).
            pub const fn from_uuid(uuid: $crate::__private::uuid::Uuid) -> Self {
                Self(uuid)
            }

            /// A deterministic id from a 128-bit value, for tests, fixtures and ids derived
            /// from external keys.
            pub const fn from_u128(value: u128) -> Self {
                Self($crate::__private::uuid::Uuid::from_u128(value))
            }

            /// The id derived from `digest`: the same key gives the same id in every process
            /// and version (see [`IdDigest`]($crate::IdDigest)).
            pub fn derived(digest: $crate::IdDigest) -> Self {
                Self($crate::__private::uuid::Uuid::from_u128(digest.finish()))
            }

            /// The UUID inside.
            pub const fn as_uuid(&self) -> $crate::__private::uuid::Uuid {
                self.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(&self.0, f)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::CoreError;
            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                $crate::__private::uuid::Uuid::parse_str(s)
                    .map(Self)
                    .map_err(|_| $crate::CoreError::Parse {
                        what: stringify!($name),
                        input: s.to_owned(),
                    })
            }
        }

        impl ::std::convert::From<$crate::__private::uuid::Uuid> for $name {
            fn from(uuid: $crate::__private::uuid::Uuid) -> Self {
                Self(uuid)
            }
        }

        impl ::std::convert::From<$name> for $crate::__private::uuid::Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }
    };
}

define_id! {
    /// An ISP operator using DotMac: every stored row and every storage call carries one.
    TenantId
}
define_id! {
    /// A subscriber (household or business) of a tenant.
    CustomerId
}
define_id! {
    /// A customer's subscription to a plan.
    SubscriptionId
}
define_id! {
    /// An invoice.
    InvoiceId
}
define_id! {
    /// A credit note.
    CreditNoteId
}
define_id! {
    /// A product in a tenant's catalogue.
    ProductId
}
define_id! {
    /// A plan in a tenant's catalogue.
    PlanId
}
define_id! {
    /// A payment or refund.
    PaymentId
}
define_id! {
    /// A domain event.
    EventId
}
define_id! {
    /// A meter: what usage events measure (downloaded bytes, minutes, a capacity gauge).
    MeterId
}
define_id! {
    /// A usage event's id: the idempotency key, so a replayed event is counted once. Derive it
    /// from the sender's own key ([`UsageEventId::derived`]) when the sender has one.
    UsageEventId
}
define_id! {
    /// A one-off charge or credit waiting for a customer's next invoice (usage, a late fee, a
    /// reconnection fee, a manual adjustment).
    PendingChargeId
}

/// A deterministic digest of a key, for ids that must come out the same whenever the same
/// thing is derived again: an invoice's id from its subscription and period, a RADIUS
/// session's usage event from its counters, a late fee from its invoice and dunning step. A
/// retry, a replay or a second worker derives the same id, and the store's primary key makes
/// the write idempotent.
///
/// It is the one id derivation in DotMac (every `derived` id goes through it). Each part is
/// absorbed into two independent 64-bit lanes (FNV-1a for bytes, a multiply-rotate step for
/// whole words, both with a length or type separator so `("ab", "c")` and `("a", "bc")`
/// differ), and [`finish`](IdDigest::finish) avalanches the lanes into 128 bits. The
/// algorithm is fixed: changing it would change stored ids. It is not a cryptographic hash:
/// keys come from the tenant's own data, and an accidental collision of two 128-bit ids is
/// beyond any tenant's volume.
///
/// ```
/// use dotmac_core::{IdDigest, InvoiceId, SubscriptionId};
/// let subscription = SubscriptionId::from_u128(7);
/// let key = || IdDigest::new("invoice").uuid(subscription.as_uuid()).u64(3);
/// assert_eq!(InvoiceId::derived(key()), InvoiceId::derived(key()));
/// assert_ne!(InvoiceId::derived(key()), InvoiceId::derived(key().u64(0)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct IdDigest {
    a: u64,
    b: u64,
}

// FNV-1a's 64-bit offset basis and prime for lane `a`; lane `b` starts from another basis and
// multiplies by an odd constant of its own so that the lanes never agree.
const BASIS_A: u64 = 0xcbf2_9ce4_8422_2325;
const BASIS_B: u64 = 0x6c62_272e_07bb_0142;
const PRIME_A: u64 = 0x0100_0000_01b3;
const PRIME_B: u64 = 0x9e37_79b9_7f4a_7c15;
const SEPARATOR: u64 = 0xff;

impl IdDigest {
    /// A digest for ids of one kind: `namespace` keeps an invoice key from ever deriving the
    /// id of a usage event.
    pub const fn new(namespace: &str) -> Self {
        IdDigest {
            a: BASIS_A,
            b: BASIS_B,
        }
        .bytes(namespace.as_bytes())
    }

    /// Absorbs bytes (a string key, an external id), followed by a separator.
    pub const fn bytes(mut self, bytes: &[u8]) -> Self {
        // A `while` loop, so that a namespace digest can be computed at compile time
        // (`const`): the hot derivations start from one.
        let mut rest = bytes;
        while let [byte, tail @ ..] = rest {
            let byte = *byte as u64;
            self.a = (self.a ^ byte).wrapping_mul(PRIME_A);
            self.b = (self.b ^ byte).wrapping_mul(PRIME_B);
            rest = tail;
        }
        self.word(SEPARATOR ^ (bytes.len() as u64))
    }

    /// Absorbs a string.
    pub const fn str(self, text: &str) -> Self {
        self.bytes(text.as_bytes())
    }

    /// Absorbs a 64-bit number as one word (cheaper than its bytes).
    pub const fn u64(self, value: u64) -> Self {
        self.word(value)
    }

    /// Absorbs a 128-bit number as two words.
    pub const fn u128(self, value: u128) -> Self {
        // Truncation is the point: the high and the low word in turn.
        #[allow(clippy::cast_possible_truncation)]
        self.word((value >> 64) as u64).word(value as u64)
    }

    /// Absorbs a UUID (any DotMac id's [`as_uuid`](TenantId::as_uuid)).
    pub const fn uuid(self, uuid: uuid::Uuid) -> Self {
        self.u128(uuid.as_u128())
    }

    const fn word(mut self, word: u64) -> Self {
        self.a = (self.a ^ word).wrapping_mul(PRIME_A).rotate_left(29);
        self.b = (self.b ^ word.rotate_left(32))
            .wrapping_mul(PRIME_B)
            .rotate_left(31);
        self
    }

    /// The 128-bit value: both lanes avalanched (SplitMix64's finaliser) and crossed, so that
    /// one changed bit of any part changes about half the bits of both halves.
    pub fn finish(self) -> u128 {
        let high = splitmix(self.a ^ self.b.rotate_left(17));
        let low = splitmix(self.b ^ high);
        (u128::from(high) << 64) | u128::from(low)
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_and_round_trip() {
        let id = InvoiceId::new();
        assert_eq!(id.as_uuid().get_version_num(), 7);
        let text = id.to_string();
        assert_eq!(text.parse::<InvoiceId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<InvoiceId>(&json).unwrap(), id);
    }

    #[test]
    fn digests_separate_their_parts_and_namespaces() {
        let id = |d: IdDigest| InvoiceId::derived(d);
        assert_eq!(
            id(IdDigest::new("x").str("ab").str("c")),
            id(IdDigest::new("x").str("ab").str("c"))
        );
        assert_ne!(
            id(IdDigest::new("x").str("ab").str("c")),
            id(IdDigest::new("x").str("a").str("bc"))
        );
        assert_ne!(id(IdDigest::new("x").u64(1)), id(IdDigest::new("y").u64(1)));
        assert_ne!(id(IdDigest::new("x").u64(1)), id(IdDigest::new("x").u64(2)));
        assert_ne!(
            id(IdDigest::new("x").u128(1 << 64)),
            id(IdDigest::new("x").u128(1))
        );
        // The algorithm is fixed: stored ids depend on it.
        assert_eq!(
            IdDigest::new("invoice").u64(42).finish(),
            IdDigest::new("invoice").u64(42).finish()
        );
    }

    #[test]
    fn bad_text_is_a_parse_error() {
        assert_eq!(
            "nope".parse::<TenantId>(),
            Err(crate::CoreError::Parse {
                what: "TenantId",
                input: "nope".into()
            })
        );
    }
}
