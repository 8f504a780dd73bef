//! `clarion enroll --template ID FILE.csv`: bulk enrollment from a CSV file through
//! `POST /v1/sequences/batch`. The file is read as the dashboard's upload reads it
//! (`clarion_server::enroll_csv`: columns, items, each row's error).
//!
//! The file is streamed: a blocking reader parses rows into batches (at most [`MAX_ROWS`]
//! rows, and about [`MAX_BATCH_BYTES`] of JSON, so the request stays well under the server's
//! body limit) and hands them over a channel of one slot, so at most a few batches are in
//! memory whatever the file's size. Each rejected row is printed as soon as its batch is
//! answered (line number, error code, field, message: never a cell's value, which may be
//! PHI), then the totals.
//!
//! Exit codes: 0 every row enrolled, 1 some rows rejected, 2 usage or connection errors and
//! answers that refuse a whole batch (401, a bad template, ...).

use std::fmt::Write as _;
use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clarion_server::enroll_csv::{self, Columns, Row};
use serde::Deserialize;
use tokio::sync::mpsc;

/// Most rows in one batch request (the API's limit).
const MAX_ROWS: usize = 1000;
/// A batch is sent once its items' JSON reaches this size (the server takes 2 MB bodies).
const MAX_BATCH_BYTES: usize = 1024 * 1024;
#[derive(Clone, clap::Args)]
pub struct EnrollArgs {
    /// The sequence template every row is enrolled in.
    #[arg(long, value_name = "ID")]
    pub template: i64,
    /// The Clarion API.
    #[arg(long, env = "CLARION_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The organisation's API key.
    #[arg(long, env = "CLARION_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// A CSV file with a header row: phone_number and time_zone (required), name,
    /// external_id and contact_state (optional); every other column is a template variable.
    #[arg(value_name = "FILE.csv")]
    pub file: PathBuf,
}

impl std::fmt::Debug for EnrollArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollArgs")
            .field("template", &self.template)
            .field("url", &self.url)
            .field("api_key", &"<redacted>")
            .field("file", &self.file)
            .finish()
    }
}

/// One row sent in a batch.
#[derive(Debug)]
struct Item {
    line: u64,
    json: String,
}

/// A rejected row: what the summary prints about it.
#[derive(Debug)]
struct Rejected {
    line: u64,
    code: String,
    field: Option<String>,
    message: String,
}

/// Consecutive rows of the file: those to send, and those that did not parse.
#[derive(Debug, Default)]
struct Batch {
    items: Vec<Item>,
    bytes: usize,
    rejected: Vec<Rejected>,
    /// The first line of the batch (for a resumption hint when it fails).
    first_line: u64,
    /// The file offset just past the batch's last row.
    end: u64,
}

impl Batch {
    fn note_line(&mut self, line: u64) {
        if self.first_line == 0 {
            self.first_line = line;
        }
    }

    fn is_full(&self) -> bool {
        self.items.len() + self.rejected.len() >= MAX_ROWS || self.bytes >= MAX_BATCH_BYTES
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty() && self.rejected.is_empty()
    }
}

/// Reads the rows into batches and sends them down the channel. Stops quietly when the
/// receiver is gone (the run stopped on an error); fails only when the file cannot be read.
fn read_batches(
    mut reader: csv::Reader<File>,
    columns: &Columns,
    batches: &mpsc::Sender<Batch>,
) -> anyhow::Result<()> {
    let mut record = csv::ByteRecord::new();
    let mut batch = Batch::default();
    loop {
        match columns.next_row(&mut reader, &mut record) {
            Ok(None) => break,
            Ok(Some(Row::Item { line, json })) => {
                batch.note_line(line);
                batch.bytes += json.len() + 1;
                batch.items.push(Item { line, json });
            }
            Ok(Some(Row::Rejected { line, message })) => {
                batch.note_line(line);
                batch.rejected.push(Rejected {
                    line,
                    code: "invalid_csv".into(),
                    field: None,
                    message,
                });
            }
            Err(error) => {
                return Err(anyhow!(error)).context(format!(
                    "reading the file near line {}",
                    reader.position().line()
                ));
            }
        }
        if batch.is_full() {
            batch.end = reader.position().byte();
            if batches.blocking_send(std::mem::take(&mut batch)).is_err() {
                return Ok(());
            }
        }
    }
    if !batch.is_empty() {
        batch.end = reader.position().byte();
        let _ = batches.blocking_send(batch);
    }
    Ok(())
}

/// The error shape of every API answer.
#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    error: ApiError,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    code: String,
    message: String,
    field: Option<String>,
}

/// `POST /v1/sequences/batch`'s answer; each item's `sequence` is skipped.
#[derive(Debug, Deserialize)]
struct BatchAnswer {
    data: Vec<ItemResult>,
}

#[derive(Debug, Deserialize)]
struct ItemResult {
    index: usize,
    status: u16,
    error: Option<ApiError>,
}

struct Api {
    http: reqwest::Client,
    batch_url: String,
    key: String,
}

impl Api {
    /// Sends one batch; `Err` when the whole batch was refused or never arrived.
    async fn send(&self, template: i64, items: &[Item]) -> anyhow::Result<Vec<ItemResult>> {
        let mut body =
            String::with_capacity(items.iter().map(|i| i.json.len() + 1).sum::<usize>() + 64);
        let _ = write!(body, r#"{{"template_id":{template},"items":["#);
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&item.json);
        }
        body.push_str("]}");
        let response = self
            .http
            .post(&self.batch_url)
            .bearer_auth(&self.key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .with_context(|| format!("could not reach the API at {}", self.batch_url))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("reading the API's answer ({status})"))?;
        if status != reqwest::StatusCode::OK {
            return Err(match serde_json::from_slice::<ErrorAnswer>(&bytes) {
                Ok(ErrorAnswer { error }) => anyhow!(
                    "the API refused the batch (HTTP {}): {}{}: {}",
                    status.as_u16(),
                    error.code,
                    error.field.map(|f| format!(" ({f})")).unwrap_or_default(),
                    error.message
                ),
                Err(_) => anyhow!("the API answered HTTP {status} to the batch"),
            });
        }
        let answer: BatchAnswer = serde_json::from_slice(&bytes)
            .context("the API's answer to the batch was not understood")?;
        if answer.data.len() != items.len() || answer.data.iter().any(|r| r.index >= items.len()) {
            bail!(
                "the API answered {} results for {} rows",
                answer.data.len(),
                items.len()
            );
        }
        Ok(answer.data)
    }
}

fn print_rejected(rejected: &Rejected) {
    match &rejected.field {
        Some(field) => println!(
            "line {}: {} ({field}): {}",
            rejected.line, rejected.code, rejected.message
        ),
        None => println!(
            "line {}: {}: {}",
            rejected.line, rejected.code, rejected.message
        ),
    }
}

pub async fn run(args: EnrollArgs) -> anyhow::Result<ExitCode> {
    let file =
        File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
    let size = file
        .metadata()
        .ok()
        .filter(std::fs::Metadata::is_file)
        .map(|m| m.len());
    let mut reader = enroll_csv::reader(file);
    let header = reader
        .byte_headers()
        .with_context(|| format!("reading the header row of {}", args.file.display()))?;
    let columns =
        Columns::from_header(header).with_context(|| format!("{}", args.file.display()))?;

    let api = Api {
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .build()
            .context("building the HTTP client")?,
        batch_url: format!("{}/v1/sequences/batch", args.url.trim_end_matches('/')),
        key: args.api_key.clone(),
    };

    let progress = match size {
        Some(size) if size > 0 => indicatif::ProgressBar::new(size).with_style(
            indicatif::ProgressStyle::with_template("  {bar:40} {msg} ({percent}%, {elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        ),
        _ => indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("  {spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        ),
    };
    progress.set_message("0 rows sent");

    let (sender, mut batches) = mpsc::channel::<Batch>(1);
    let reading = tokio::task::spawn_blocking(move || read_batches(reader, &columns, &sender));

    let (mut sent, mut enrolled, mut rejected) = (0_u64, 0_u64, 0_u64);
    let stopped = |line: u64, enrolled: u64, rejected: u64| {
        format!(
            "stopped at the batch starting on line {line} \
             ({enrolled} rows enrolled and {rejected} rejected before it)"
        )
    };
    while let Some(batch) = batches.recv().await {
        let mut failed = batch.rejected;
        if !batch.items.is_empty() {
            let results = match api.send(args.template, &batch.items).await {
                Ok(results) => results,
                Err(error) => {
                    progress.abandon();
                    return Err(error.context(stopped(batch.first_line, enrolled, rejected)));
                }
            };
            sent += batch.items.len() as u64;
            for result in results {
                if result.status == 201 {
                    enrolled += 1;
                    continue;
                }
                let line = batch.items.get(result.index).map_or(0, |i| i.line);
                failed.push(match result.error {
                    Some(error) => Rejected {
                        line,
                        code: error.code,
                        field: error
                            .field
                            .as_deref()
                            .map(enroll_csv::item_field)
                            .map(str::to_owned),
                        message: error.message,
                    },
                    None => Rejected {
                        line,
                        code: format!("http_{}", result.status),
                        field: None,
                        message: "rejected without a reason".into(),
                    },
                });
            }
        }
        rejected += failed.len() as u64;
        failed.sort_by_key(|r| r.line);
        progress.suspend(|| failed.iter().for_each(print_rejected));
        progress.set_position(batch.end);
        progress.set_message(format!("{sent} rows sent"));
    }
    let read = reading.await.context("the CSV reader stopped");
    if let Err(error) = read.and_then(|r| r) {
        progress.abandon();
        return Err(error.context(format!(
            "{enrolled} rows enrolled and {rejected} rejected before the error"
        )));
    }
    progress.finish_and_clear();
    println!("enrolled {enrolled}, rejected {rejected}");
    Ok(if rejected == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Property tests of the CSV parser (issue 14, "Build into CI"): the file is the operator's,
/// but it comes from elsewhere (an export, a spreadsheet), so no byte sequence may panic the
/// reader, and every row written by a CSV writer reaches its batch item unchanged.
#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod properties {
    use std::io::{Seek, Write};

    use clarion_server::enroll_csv::{NAME, PHONE, ZONE};
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    /// Reads `bytes` as `run` does, up to the batches; `None` when the header is refused.
    fn parse(bytes: &[u8]) -> Option<anyhow::Result<Vec<Batch>>> {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        file.rewind().unwrap();
        let mut reader = enroll_csv::reader(file);
        let header = reader.byte_headers().ok()?.clone();
        let columns = Columns::from_header(&header).ok()?;
        // Room for every batch the inputs here can make, so that no send waits.
        let (sender, mut receiver) = mpsc::channel(64);
        let result = read_batches(reader, &columns, &sender);
        drop(sender);
        let mut batches = Vec::new();
        while let Ok(batch) = receiver.try_recv() {
            batches.push(batch);
        }
        Some(result.map(|()| batches))
    }

    /// A cell value that the reader's trimming leaves as it is: no space at either end.
    fn cell() -> impl Strategy<Value = String> {
        "[A-Za-z0-9,;\"'é+/][A-Za-z0-9 ,;\"'\n\té+/]{0,10}[A-Za-z0-9,;\"'é+/]|[A-Za-z0-9é]"
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn the_csv_reader_never_panics_on_bytes(
            header in prop_oneof![
                Just(b"phone_number,time_zone,name,appointment\n".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..64),
            ],
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut bytes = header;
            bytes.extend_from_slice(&body);
            let _ = parse(&bytes);
        }

        #[test]
        fn every_row_reaches_its_item_with_its_values(
            variable_names in proptest::collection::btree_set("v_[a-z0-9]{1,6}", 0..3),
            rows in proptest::collection::vec(
                (cell(), cell(), proptest::option::of(cell()), proptest::collection::vec(cell(), 3)),
                1..20,
            ),
        ) {
            let variable_names: Vec<String> = variable_names.into_iter().collect();
            let mut writer = csv::Writer::from_writer(Vec::new());
            let mut header = vec![PHONE.to_owned(), ZONE.to_owned(), NAME.to_owned()];
            header.extend(variable_names.iter().cloned());
            writer.write_record(&header).unwrap();
            for (phone, zone, name, variables) in &rows {
                let mut record = vec![phone.clone(), zone.clone(), name.clone().unwrap_or_default()];
                record.extend(variables.iter().take(variable_names.len()).cloned());
                writer.write_record(&record).unwrap();
            }
            let bytes = writer.into_inner().unwrap();

            let batches = parse(&bytes).unwrap().unwrap();
            let items: Vec<&Item> = batches.iter().flat_map(|b| &b.items).collect();
            prop_assert_eq!(items.len(), rows.len());
            prop_assert!(batches.iter().all(|b| b.rejected.is_empty()));
            for (item, (phone, zone, name, variables)) in items.iter().zip(&rows) {
                let item: Value = serde_json::from_str(&item.json).unwrap();
                prop_assert_eq!(&item["contact"][PHONE], phone.as_str());
                prop_assert_eq!(&item["contact"][ZONE], zone.as_str());
                match name {
                    Some(name) => prop_assert_eq!(&item["contact"][NAME], name.as_str()),
                    None => prop_assert!(item["contact"].get(NAME).is_none()),
                }
                for (variable, value) in variable_names.iter().zip(variables) {
                    prop_assert_eq!(&item["variables"][variable], value.as_str());
                }
            }
        }
    }
}
