//! Ids: a leaf module, so that every other module can name them without importing the crate
//! root.

dotmac_core::define_id! {
    /// A reseller or referral partner.
    PartnerId
}
