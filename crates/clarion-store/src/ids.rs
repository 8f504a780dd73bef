//! Typed ids: integers on the wire, distinct types inside so one cannot be passed for another.

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// An organisation (tenant).
    OrgId
);
id_type!(
    /// A webhook endpoint.
    EndpointId
);
id_type!(
    /// A webhook message: one report, sent to every endpoint.
    MessageId
);
id_type!(
    /// One message's delivery to one endpoint.
    DeliveryId
);
