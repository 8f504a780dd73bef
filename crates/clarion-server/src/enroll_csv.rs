//! Enrollment from a CSV file: the header's columns, each row's batch item and each row's
//! error, shared by `clarion enroll FILE.csv` and the dashboard's upload, so that one file
//! reads the same through either.
//!
//! The header names the columns in any order and case: `phone_number` and `time_zone`
//! (required) and `name`, `external_id` and `contact_state` (optional; the contact's US
//! state, `contact.state` in the API — not `state`, which existing files use as a template
//! variable) fill the contact; every other column is a template variable (an empty cell
//! leaves it out). A row's error names the column,
//! never a cell's value, which may be PHI.

use std::io::Read;

use serde_json::{Map, Value};

/// The columns that fill the contact; every other column is a variable.
pub const PHONE: &str = "phone_number";
pub const ZONE: &str = "time_zone";
pub const NAME: &str = "name";
pub const EXTERNAL_ID: &str = "external_id";
/// The contact's US state (`contact.state`).
pub const CONTACT_STATE: &str = "contact_state";

/// A header the file cannot be read with (the whole file is refused).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HeaderError(String);

/// Where each column goes.
#[derive(Debug, Clone)]
pub struct Columns {
    len: usize,
    phone: usize,
    zone: usize,
    name: Option<usize>,
    external_id: Option<usize>,
    contact_state: Option<usize>,
    /// (column, variable name)
    variables: Vec<(usize, String)>,
}

/// One data row of the file, read: its batch item, or why it has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    /// The row's `POST /v1/sequences/batch` item (`{"contact", "variables"}`), as JSON text.
    Item { line: u64, json: String },
    /// The row could not be read (error code `invalid_csv`); `message` names no value.
    Rejected { line: u64, message: String },
}

impl Row {
    pub fn line(&self) -> u64 {
        match self {
            Self::Item { line, .. } | Self::Rejected { line, .. } => *line,
        }
    }
}

/// The reader both callers use: a header row, cells trimmed.
pub fn reader<R: Read>(input: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(input)
}

impl Columns {
    pub fn from_header(header: &csv::ByteRecord) -> Result<Self, HeaderError> {
        let fail = |message: String| Err(HeaderError(message));
        if header.is_empty() || header.iter().all(<[u8]>::is_empty) {
            return fail(format!(
                "the file has no header row (expected at least {PHONE},{ZONE})"
            ));
        }
        let mut names = Vec::with_capacity(header.len());
        for (i, cell) in header.iter().enumerate() {
            let Ok(name) = std::str::from_utf8(cell) else {
                return fail(format!("column {} of the header is not valid UTF-8", i + 1));
            };
            let name = name.trim_start_matches('\u{feff}').trim();
            if name.is_empty() {
                return fail(format!("column {} of the header has no name", i + 1));
            }
            // Columns by number, never by name: a file without a header row has its first
            // patient's cells read as the header, and an error message may reach a log.
            if let Some(first) = names
                .iter()
                .position(|n: &String| n.eq_ignore_ascii_case(name))
            {
                return fail(format!(
                    "columns {} and {} of the header have the same name",
                    first + 1,
                    i + 1
                ));
            }
            names.push(name.to_owned());
        }
        let find = |wanted: &str| names.iter().position(|n| n.eq_ignore_ascii_case(wanted));
        let (Some(phone), Some(zone)) = (find(PHONE), find(ZONE)) else {
            let missing: Vec<String> = [PHONE, ZONE]
                .into_iter()
                .filter(|c| find(c).is_none())
                .map(|c| format!("`{c}`"))
                .collect();
            return fail(format!(
                "missing required column{} {} in the header row (is the first row a header?)",
                if missing.len() > 1 { "s" } else { "" },
                missing.join(", "),
            ));
        };
        let (name, external_id) = (find(NAME), find(EXTERNAL_ID));
        let contact_state = find(CONTACT_STATE);
        let variables = names
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                ![Some(phone), Some(zone), name, external_id, contact_state].contains(&Some(*i))
            })
            .map(|(i, n)| (i, n.clone()))
            .collect();
        Ok(Self {
            len: names.len(),
            phone,
            zone,
            name,
            external_id,
            contact_state,
            variables,
        })
    }

    /// Reads the header of `reader`.
    pub fn read<R: Read>(reader: &mut csv::Reader<R>) -> Result<Self, HeaderError> {
        let header = reader
            .byte_headers()
            .map_err(|e| HeaderError(format!("the header row could not be read ({e})")))?;
        Self::from_header(header)
    }

    /// The batch item of one row, as JSON text; an error names the column, never the value.
    pub fn item(&self, record: &csv::ByteRecord) -> Result<String, String> {
        let cell = |i: usize| -> Result<&str, String> {
            std::str::from_utf8(record.get(i).unwrap_or_default())
                .map_err(|_| format!("column {} is not valid UTF-8", i + 1))
        };
        let optional = |i: Option<usize>| -> Result<Option<String>, String> {
            match i {
                None => Ok(None),
                Some(i) => Ok(Some(cell(i)?.to_owned()).filter(|v| !v.is_empty())),
            }
        };
        let mut contact = Map::new();
        contact.insert(PHONE.into(), cell(self.phone)?.into());
        contact.insert(ZONE.into(), cell(self.zone)?.into());
        if let Some(name) = optional(self.name)? {
            contact.insert(NAME.into(), name.into());
        }
        if let Some(external_id) = optional(self.external_id)? {
            contact.insert(EXTERNAL_ID.into(), external_id.into());
        }
        if let Some(state) = optional(self.contact_state)? {
            contact.insert("state".into(), state.into());
        }
        let mut variables = Map::new();
        for (i, name) in &self.variables {
            let value = cell(*i)?;
            if !value.is_empty() {
                variables.insert(name.clone(), value.into());
            }
        }
        let mut item = Map::new();
        item.insert("contact".into(), Value::Object(contact));
        item.insert("variables".into(), Value::Object(variables));
        serde_json::to_string(&item).map_err(|_| "the row could not be encoded".to_owned())
    }

    /// The next data row of `reader` (`record` is the caller's buffer): `Ok(None)` at the end;
    /// `Err` only when the file cannot be read on (not CSV from there on).
    pub fn next_row<R: Read>(
        &self,
        reader: &mut csv::Reader<R>,
        record: &mut csv::ByteRecord,
    ) -> Result<Option<Row>, csv::Error> {
        match reader.read_byte_record(record) {
            Ok(false) => Ok(None),
            Ok(true) => {
                let line = record.position().map_or(0, csv::Position::line);
                Ok(Some(match self.item(record) {
                    Ok(json) => Row::Item { line, json },
                    Err(message) => Row::Rejected { line, message },
                }))
            }
            Err(error) => match error.kind() {
                csv::ErrorKind::UnequalLengths { pos, len, .. } => Ok(Some(Row::Rejected {
                    line: pos.as_ref().map_or(0, csv::Position::line),
                    message: format!(
                        "the row has {len} field{}, the header {}",
                        if *len == 1 { "" } else { "s" },
                        self.len
                    ),
                })),
                _ => Err(error),
            },
        }
    }
}

/// A batch item's error field without its item (`items[3].contact.phone_number` →
/// `contact.phone_number`): the column a row's error is about.
pub fn item_field(field: &str) -> &str {
    field
        .strip_prefix("items[")
        .and_then(|rest| rest.split_once("]."))
        .map_or(field, |(_, rest)| rest)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn contact_state_fills_the_contacts_state_and_a_state_column_stays_a_variable() {
        let mut reader = reader(
            "phone_number,time_zone,contact_state,state\n+13055550100,America/New_York,FL,Ohio\n"
                .as_bytes(),
        );
        let columns = Columns::read(&mut reader).unwrap();
        let record = reader.byte_records().next().unwrap().unwrap();
        let item: Value = serde_json::from_str(&columns.item(&record).unwrap()).unwrap();
        assert_eq!(item["contact"]["state"], "FL");
        assert_eq!(item["variables"], serde_json::json!({ "state": "Ohio" }));
    }

    /// A file without its header row has its first patient read as the header: the error
    /// says what is missing, by column names and numbers, never by that patient's cells.
    #[test]
    fn a_header_error_never_quotes_the_cells_it_read() {
        let headerless = "+13055550100,America/New_York,Ana Lopez\n";
        let Err(HeaderError(missing)) = Columns::read(&mut reader(headerless.as_bytes())) else {
            panic!("a file without a header row was read");
        };
        assert!(
            missing.contains("missing required columns `phone_number`, `time_zone`"),
            "{missing}"
        );
        let twice = "+13055550100,Ana Lopez,ana lopez\n";
        let Err(HeaderError(duplicate)) = Columns::read(&mut reader(twice.as_bytes())) else {
            panic!("a header naming a column twice was read");
        };
        assert_eq!(
            duplicate,
            "columns 2 and 3 of the header have the same name"
        );
        for message in [&missing, &duplicate] {
            for cell in ["+13055550100", "America/New_York", "Ana", "Lopez"] {
                assert!(!message.contains(cell), "{message}");
            }
        }
    }
}
