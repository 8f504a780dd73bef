//! Typed ids: integers in the database and on the wire (through [`crate::public_id`]),
//! distinct types inside so one cannot be passed for another.

/// What every typed id is: a row id under a type of its own.
pub trait TypedId: Copy + Into<i64> {
    /// The typed id of row id `raw` (the caller knows which table the number came from).
    fn from_raw(raw: i64) -> Self;
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, sqlx::Type)]
        #[sqlx(transparent)]
        pub struct $name(pub i64);

        impl TypedId for $name {
            fn from_raw(raw: i64) -> Self {
                Self(raw)
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> i64 {
                id.0
            }
        }

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
    /// One of an organisation's API keys.
    ApiKeyId
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

id_type!(
    /// A bulk recovery of an endpoint's failed deliveries.
    RecoveryId
);
id_type!(
    /// One of an organisation's caller numbers (`/v1/caller-numbers`).
    CallerNumberId
);
id_type!(
    /// An assistant (a call or SMS agent's configuration).
    AssistantId
);
id_type!(
    /// A sequence template, across its versions.
    TemplateId
);
id_type!(
    /// One version of a template (what a sequence runs).
    TemplateVersionId
);
id_type!(
    /// A sequence: one contact enrolled in one template version.
    SequenceId
);
id_type!(
    /// An encounter: one call or SMS conversation of a sequence.
    EncounterId
);
id_type!(
    /// One entry of a sequence's history.
    SequenceEventId
);
