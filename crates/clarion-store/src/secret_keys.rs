//! Webhook endpoint secrets at rest: sealed with XChaCha20-Poly1305 under the deployment's
//! secret key, so a copy of the database (a backup, a stolen disk, a support dump) does not
//! hand out the keys that sign reports.
//!
//! The key is 32 random bytes, written in standard base64 (`openssl rand -base64 32`), given
//! as `CLARION_SECRET_KEY`. On SQLite it may be left unset: the first start then draws one
//! into a file beside the database (see [`key_file_beside`]). PostgreSQL requires it, since
//! its nodes must share it and a file on one of them would not do.
//!
//! **Rotation.** [`SecretKeys`] is a key ring: the current key seals, the previous ones still
//! open. Every connect re-seals whatever is sealed under a previous key (or not sealed at all:
//! secrets written before sealing existed) under the current one, so once every node has
//! started with the new key the old one can be dropped. A secret sealed under a key the ring
//! does not hold stops the connect, loudly, instead of leaving deliveries unsigned.
//!
//! Each sealed value is bound to its endpoint (the endpoint id and key id are the cipher's
//! associated data): a sealed secret copied onto another endpoint's row does not open. An
//! organisation's eligibility hook secret is sealed the same way, bound to the organisation
//! under a prefix of its own ([`Binding`]), so neither kind opens as the other.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::{EndpointId, OrgId, Result, StoreError};

/// Bytes in a secret key.
pub const SECRET_KEY_LEN: usize = 32;
/// Bytes in an XChaCha20 nonce, drawn at random for every seal.
const NONCE_LEN: usize = 24;
/// Domain separation for the associated data (a version, so a future format can differ).
const AAD_PREFIX: &[u8] = b"clarion/webhook-endpoint-secret/v1";
/// The same for an organisation's eligibility hook secret.
const HOOK_AAD_PREFIX: &[u8] = b"clarion/eligibility-hook-secret/v1";

/// What a sealed secret belongs to: its associated data, so it opens only there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Binding {
    /// A webhook endpoint's signing secret.
    Endpoint(EndpointId),
    /// An organisation's eligibility hook secret.
    EligibilityHook(OrgId),
}

impl From<EndpointId> for Binding {
    fn from(endpoint: EndpointId) -> Self {
        Self::Endpoint(endpoint)
    }
}

/// One 32-byte key. `Debug` shows its id, never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; SECRET_KEY_LEN]);

impl SecretKey {
    /// A fresh key from the operating system's generator.
    pub fn generate() -> Self {
        let mut bytes = [0u8; SECRET_KEY_LEN];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The key in the form `CLARION_SECRET_KEY` takes (standard base64).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// A short public name for the key (the first 8 bytes of a SHA-256 of it, in hex): stored
    /// beside each sealed secret so the right key opens it, and safe to show in logs.
    pub fn id(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"clarion secret key id")
            .chain_update(self.0)
            .finalize();
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.0).into())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.id())
    }
}

/// Why a key was refused. Never carries the key's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a secret key is 32 bytes in standard base64 (`openssl rand -base64 32`)")]
pub struct InvalidSecretKey;

impl FromStr for SecretKey {
    type Err = InvalidSecretKey;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes = STANDARD.decode(text.trim()).map_err(|_| InvalidSecretKey)?;
        <[u8; SECRET_KEY_LEN]>::try_from(bytes.as_slice())
            .map(Self)
            .map_err(|_| InvalidSecretKey)
    }
}

/// The key ring: the key that seals, and earlier keys that still open during a rotation.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKeys {
    current: SecretKey,
    previous: Vec<SecretKey>,
}

impl SecretKeys {
    /// A ring of one key.
    pub fn new(current: SecretKey) -> Self {
        Self {
            current,
            previous: Vec::new(),
        }
    }

    /// Adds keys that open (but no longer seal) secrets, for a rotation.
    #[must_use]
    pub fn with_previous(mut self, previous: impl IntoIterator<Item = SecretKey>) -> Self {
        self.previous
            .extend(previous.into_iter().filter(|key| *key != self.current));
        self
    }

    /// The key that seals.
    pub fn current(&self) -> &SecretKey {
        &self.current
    }

    fn by_id(&self, id: &str) -> Option<&SecretKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|key| key.id() == id)
    }

    /// Seals `plaintext` for `endpoint` (or another [`Binding`]) under the current key.
    pub(crate) fn seal(
        &self,
        endpoint: impl Into<Binding>,
        plaintext: &str,
    ) -> Result<SealedSecret> {
        let endpoint = endpoint.into();
        let key_id = self.current.id();
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = associated_data(endpoint, &key_id);
        // Encryption fails only for messages of gigabytes; a secret is 50 bytes.
        let ciphertext = self
            .current
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| StoreError::Corrupt("secret too large to seal"))?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(SealedSecret {
            text: STANDARD.encode(sealed),
            key_id,
        })
    }

    /// Opens a stored secret. `key_id` `None` marks a secret stored before sealing existed
    /// (its text is the secret); the connect-time pass re-seals those.
    pub(crate) fn open(
        &self,
        endpoint: impl Into<Binding>,
        key_id: Option<&str>,
        text: &str,
    ) -> Result<String, OpenError> {
        let endpoint = endpoint.into();
        let Some(key_id) = key_id else {
            return Ok(text.to_owned());
        };
        let key = self
            .by_id(key_id)
            .ok_or_else(|| OpenError::UnknownKey(key_id.to_owned()))?;
        let sealed = STANDARD.decode(text).map_err(|_| OpenError::Damaged)?;
        if sealed.len() < NONCE_LEN {
            return Err(OpenError::Damaged);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let plaintext = key
            .cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &associated_data(endpoint, key_id),
                },
            )
            .map_err(|_| OpenError::Damaged)?;
        String::from_utf8(plaintext).map_err(|_| OpenError::Damaged)
    }
}

impl SecretKeys {
    /// Opens a secret read with [`STORED_SECRET_SQL`] (`key_id:sealed`).
    pub(crate) fn open_stored(
        &self,
        endpoint: EndpointId,
        stored: &str,
    ) -> Result<String, OpenError> {
        let (key_id, text) = stored.split_once(':').ok_or(OpenError::Damaged)?;
        self.open(endpoint, Some(key_id).filter(|id| !id.is_empty()), text)
    }

    /// An endpoint's current secret as read (`key_id:sealed`), opened; one that does not open
    /// is a corrupt row (the API shows it, so it cannot be left out).
    pub(crate) fn open_current(
        &self,
        endpoint: EndpointId,
        stored: Option<String>,
    ) -> Result<Option<String>> {
        stored
            .map(|stored| {
                self.open_stored(endpoint, &stored)
                    .map_err(|_| StoreError::Corrupt("endpoint secret does not open"))
            })
            .transpose()
    }

    /// The secrets that sign an attempt: each that opens. One that does not is left out with
    /// a warning (the attempt then fails as `no-signing-secret` if none is left) rather than
    /// failing the whole claim: a bad row never stops the dispatcher.
    pub(crate) fn open_signing(&self, endpoint: EndpointId, stored: Vec<String>) -> Vec<String> {
        stored
            .iter()
            .filter_map(|stored| match self.open_stored(endpoint, stored) {
                Ok(secret) => Some(secret),
                Err(error) => {
                    tracing::warn!(endpoint_id = endpoint.0, %error, "an endpoint secret does not open");
                    None
                }
            })
            .collect()
    }

    /// What the connect-time pass rewrites: every stored secret not sealed under the current
    /// key, re-sealed under it. Secrets under a key the ring lacks make the whole pass fail
    /// (the operator must supply the key); a damaged one is left as it is, with a warning.
    pub(crate) fn reseal(&self, stored: Vec<StoredSecret>) -> Result<Vec<Resealed>> {
        let mut resealed = Vec::with_capacity(stored.len());
        let mut unknown: Option<(String, u64)> = None;
        for row in stored {
            match self.open(row.binding, row.key_id.as_deref(), &row.sealed_secret) {
                Ok(secret) => resealed.push(Resealed {
                    id: row.id,
                    sealed: self.seal(row.binding, &secret)?,
                    previous_key_id: row.key_id,
                }),
                Err(OpenError::UnknownKey(key_id)) => match &mut unknown {
                    Some((_, count)) => *count += 1,
                    None => unknown = Some((key_id, 1)),
                },
                Err(error @ OpenError::Damaged) => {
                    tracing::warn!(binding = ?row.binding, %error, "a sealed secret does not open; left as it is");
                }
            }
        }
        match unknown {
            Some((key_id, count)) => Err(StoreError::UnknownSecretKey { key_id, count }),
            None => Ok(resealed),
        }
    }
}

/// How both backends read a stored secret in one text column: `key_id:sealed` (the key id is
/// empty for a secret stored before sealing). Reads from `webhook_endpoint_secrets s`.
pub(crate) const STORED_SECRET_SQL: &str = "COALESCE(s.key_id, '') || ':' || s.sealed_secret";

/// One stored secret as the re-sealing pass reads it (`id` is the row's: the secret's for an
/// endpoint, the organisation's for a hook).
#[derive(Debug)]
pub(crate) struct StoredSecret {
    pub(crate) id: i64,
    pub(crate) binding: Binding,
    pub(crate) sealed_secret: String,
    pub(crate) key_id: Option<String>,
}

impl StoredSecret {
    /// An organisation's hook secret, from the columns `id, eligibility_hook_secret,
    /// eligibility_hook_key_id`.
    pub(crate) fn of_hook((org, sealed_secret, key_id): (i64, String, Option<String>)) -> Self {
        Self {
            id: org,
            binding: Binding::EligibilityHook(OrgId(org)),
            sealed_secret,
            key_id,
        }
    }
}

impl From<(i64, i64, String, Option<String>)> for StoredSecret {
    /// From the columns `id, endpoint_id, sealed_secret, key_id`.
    fn from((id, endpoint_id, sealed_secret, key_id): (i64, i64, String, Option<String>)) -> Self {
        Self {
            id,
            binding: Binding::Endpoint(EndpointId(endpoint_id)),
            sealed_secret,
            key_id,
        }
    }
}

/// A re-sealed secret, written only if the row still holds what was read
/// (`key_id IS previous_key_id`), so two nodes re-sealing at once do not clash.
#[derive(Debug)]
pub(crate) struct Resealed {
    pub(crate) id: i64,
    pub(crate) sealed: SealedSecret,
    pub(crate) previous_key_id: Option<String>,
}

impl fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKeys")
            .field("current", &self.current)
            .field("previous", &self.previous)
            .finish()
    }
}

/// A secret as stored: the sealed text and the id of the key that sealed it.
#[derive(Debug, Clone)]
pub(crate) struct SealedSecret {
    pub(crate) text: String,
    pub(crate) key_id: String,
}

/// Why a stored secret did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OpenError {
    /// Sealed under a key the ring does not hold.
    #[error("sealed under key {0}, which is not configured")]
    UnknownKey(String),
    /// Not a value this key sealed for this endpoint (altered, truncated or moved).
    #[error("does not open")]
    Damaged,
}

fn associated_data(binding: Binding, key_id: &str) -> Vec<u8> {
    let (prefix, id) = match binding {
        Binding::Endpoint(endpoint) => (AAD_PREFIX, endpoint.0),
        Binding::EligibilityHook(org) => (HOOK_AAD_PREFIX, org.0),
    };
    let mut aad = Vec::with_capacity(prefix.len() + 8 + key_id.len());
    aad.extend_from_slice(prefix);
    aad.extend_from_slice(&id.to_be_bytes());
    aad.extend_from_slice(key_id.as_bytes());
    aad
}

/// The key file for a SQLite database at `database`: `<database>.secret-key`, beside it.
pub fn key_file_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".secret-key");
    PathBuf::from(name)
}

/// The key in a key file written by [`key_file_beside`] (or by hand: the key in base64).
/// The error names the file, never its content.
pub fn read_key_file(path: &Path) -> Result<SecretKey> {
    let text = std::fs::read_to_string(path).map_err(|source| StoreError::SecretKeyFile {
        path: path.to_owned(),
        source,
    })?;
    text.parse().map_err(|_| StoreError::SecretKeyFile {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, InvalidSecretKey),
    })
}

/// The key of a SQLite installation started without `CLARION_SECRET_KEY`: read from the file
/// beside the database, or drawn and written there (mode 0600, created exclusively so two
/// processes starting at once agree on one key) on the first start, with a loud warning.
pub(crate) fn key_file_beside(database: &Path) -> Result<SecretKeys> {
    let path = key_file_path(database);
    let read = |path: &Path| read_key_file(path).map(SecretKeys::new);
    if path.exists() {
        return read(&path);
    }
    let key = SecretKey::generate();
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    match file.open(&path) {
        Ok(mut file) => {
            file.write_all(format!("{}\n", key.to_base64()).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|source| StoreError::SecretKeyFile {
                    path: path.clone(),
                    source,
                })?;
            tracing::warn!(
                key_file = %path.display(),
                key_id = %key.id(),
                "CLARION_SECRET_KEY is not set: generated a secret key into the file beside the \
                 database. Webhook endpoint secrets are sealed with it; without it they cannot be \
                 read. Back it up apart from the database, or set CLARION_SECRET_KEY instead"
            );
            Ok(SecretKeys::new(key))
        }
        // Another process drew it first: use theirs.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => read(&path),
        Err(source) => Err(StoreError::SecretKeyFile { path, source }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ring() -> SecretKeys {
        SecretKeys::new(SecretKey::generate())
    }

    #[test]
    fn a_sealed_secret_opens_to_itself_and_hides_it() {
        let keys = ring();
        let sealed = keys
            .seal(EndpointId(7), "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=")
            .unwrap();
        assert!(!sealed.text.contains("whsec_"));
        assert_eq!(sealed.key_id, keys.current().id());
        let opened = keys.open(EndpointId(7), Some(&sealed.key_id), &sealed.text);
        assert_eq!(opened.unwrap(), "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=");
    }

    #[test]
    fn two_seals_of_one_secret_differ() {
        let keys = ring();
        let first = keys.seal(EndpointId(1), "whsec_x").unwrap();
        let second = keys.seal(EndpointId(1), "whsec_x").unwrap();
        assert_ne!(first.text, second.text, "a fresh nonce every time");
    }

    #[test]
    fn a_secret_moved_to_another_endpoint_or_altered_does_not_open() {
        let keys = ring();
        let sealed = keys.seal(EndpointId(1), "whsec_x").unwrap();
        let key_id = Some(sealed.key_id.as_str());
        assert_eq!(
            keys.open(EndpointId(2), key_id, &sealed.text),
            Err(OpenError::Damaged)
        );
        let mut bytes = STANDARD.decode(&sealed.text).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(
            keys.open(EndpointId(1), key_id, &STANDARD.encode(bytes)),
            Err(OpenError::Damaged)
        );
        assert_eq!(
            keys.open(EndpointId(1), key_id, "not base64!"),
            Err(OpenError::Damaged)
        );
    }

    #[test]
    fn a_previous_key_still_opens_and_an_unknown_one_is_named() {
        let old = SecretKey::generate();
        let sealed = SecretKeys::new(old.clone())
            .seal(EndpointId(3), "whsec_y")
            .unwrap();
        let rotated = SecretKeys::new(SecretKey::generate()).with_previous([old.clone()]);
        assert_eq!(
            rotated
                .open(EndpointId(3), Some(&sealed.key_id), &sealed.text)
                .unwrap(),
            "whsec_y"
        );
        let stranger = ring();
        assert_eq!(
            stranger.open(EndpointId(3), Some(&sealed.key_id), &sealed.text),
            Err(OpenError::UnknownKey(old.id()))
        );
    }

    #[test]
    fn keys_parse_from_base64_and_show_only_their_id() {
        let key = SecretKey::generate();
        let text = key.to_base64();
        assert_eq!(text.parse::<SecretKey>().unwrap(), key);
        assert_eq!(format!(" {text}\n").parse::<SecretKey>().unwrap(), key);
        assert!(!format!("{key:?}").contains(&text));
        assert!(!format!("{:?}", SecretKeys::new(key.clone())).contains(&text));
        assert_eq!(key.id().len(), 16);
        assert_eq!("c2hvcnQ=".parse::<SecretKey>(), Err(InvalidSecretKey));
        assert_eq!("not base64".parse::<SecretKey>(), Err(InvalidSecretKey));
    }

    #[test]
    fn the_key_file_is_drawn_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("clarion.db");
        let first = key_file_beside(&database).unwrap();
        let again = key_file_beside(&database).unwrap();
        assert_eq!(first, again);
        let path = key_file_path(&database);
        assert_eq!(path, dir.path().join("clarion.db.secret-key"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
