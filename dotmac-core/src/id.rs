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
