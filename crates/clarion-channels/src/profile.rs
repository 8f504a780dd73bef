//! Who talks and to whom: the assistant's configuration and the contact's details.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The assistant that handles an encounter, as far as the simulator needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssistantProfile {
    /// The assistant's id (the report's `assistant_id`).
    pub id: i64,
    /// The assistant's name in Clarion (not spoken).
    pub name: String,
    /// What the encounter is for, as a verb phrase that follows "I'm calling to …", e.g.
    /// `confirm the upcoming appointment`.
    pub purpose: String,
    /// The organisation the assistant speaks for, e.g. `Riverside Family Clinic`.
    pub organisation_name: String,
    /// The custom analysis fields to extract; each gets one entry in `analysis.custom`.
    #[serde(default)]
    pub custom_fields: Vec<CustomField>,
}

/// One custom analysis field configured on an assistant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomField {
    /// The key in `analysis.custom`, e.g. `appointment_confirmed`.
    pub name: String,
    /// The type of its value.
    pub kind: CustomFieldKind,
    /// What the field means (for the real assistant's extraction prompt).
    #[serde(default)]
    pub description: String,
}

/// The type of a custom analysis field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "values", rename_all = "kebab-case")]
pub enum CustomFieldKind {
    /// `true`, `false` or `null`.
    Boolean,
    /// Free text or `null`.
    String,
    /// A number or `null`.
    Number,
    /// One of the listed values, or `null`.
    Enum(Vec<String>),
}

/// The contact an encounter reaches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactProfile {
    /// The contact's name; the simulator addresses them by the first word.
    pub name: Option<String>,
    /// The destination number, E.164. Never written into transcripts or summaries.
    pub phone_number: String,
    /// The enrollment's variables. The simulator uses `appointment_date`, `appointment_time`,
    /// `provider_name` and `location` (strings or numbers) when present.
    #[serde(default)]
    pub variables: Map<String, Value>,
}
