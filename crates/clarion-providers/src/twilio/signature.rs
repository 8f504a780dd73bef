//! `X-Twilio-Signature`: proving that a webhook request came from Twilio.
//!
//! Twilio signs every webhook (inbound SMS, status callbacks) with HMAC-SHA1 keyed by the
//! account's Auth Token. Anyone who can reach the webhook URL can POST to it, so a request whose
//! signature does not verify must be rejected before any of it is believed — above all an
//! inbound `STOP`, which changes who may be contacted, and a status callback, which changes what
//! the report says. The algorithm (twilio-python `request_validator.py`, Twilio's webhook
//! security page; `shared/reference/providers.md` §2.4):
//!
//! 1. Start with the full URL Twilio requested, query string included, exactly as configured
//!    in Twilio (not as a proxy rewrote it).
//! 2. For a form POST, take the parameter names de-duplicated and sorted by plain byte order
//!    (case-sensitive: `CallSid` < `Caller`); for each name its values de-duplicated and sorted;
//!    append `name` then `value` for each pair, with no separators.
//! 3. HMAC-SHA1 over that UTF-8 string with the Auth Token as key; Base64 (standard alphabet,
//!    padded). [`expected_signature`] computes this.
//! 4. Twilio's own back ends are inconsistent about default ports, so its helper accepts a
//!    match for the URL **with** an explicit port (`:443` for https, `:80` otherwise, added
//!    when absent) and **without** one (any port stripped when present). [`validate`] does the
//!    same. Note the consequence the reference vectors pin down: a URL with a non-default port
//!    such as `:1234` also validates against the signature of the URL without it.
//! 5. JSON bodies: Twilio appends `bodySHA256=<hex SHA-256 of the raw body>` to the query and
//!    signs only the URL (no parameters); the receiver must also check the body against that
//!    hash. [`validate_json_body`] does both.
//!
//! Comparison is constant-time (`hmac`'s `verify_slice`): the header is Base64-decoded and the
//! MAC checks the bytes, so how long a rejection takes says nothing about how close a forgery
//! was. Errors name what failed, never a parameter value, and [`AuthToken`]'s `Debug` is
//! redacted.
//!
//! Not handled here: Webhooks Rules that sign with a shared key and HMAC-SHA256 (announced in
//! `X-Twilio-Webhooks-Signature-Settings`, §2.4 item 6). Clarion does not configure them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

type HmacSha1 = Hmac<Sha1>;

/// The request header that carries the signature.
pub const HEADER: &str = "X-Twilio-Signature";

/// The query parameter Twilio adds to the URL of a JSON-bodied webhook.
pub const BODY_SHA256_PARAM: &str = "bodySHA256";

/// A Twilio Auth Token (or API Key secret), the HMAC key of every webhook signature.
///
/// `Debug` never prints the token, so the struct can sit in configuration types that are
/// logged. There is deliberately no `Display`, and no `PartialEq` (which would not be
/// constant-time).
#[derive(Clone)]
pub struct AuthToken(String);

impl AuthToken {
    /// Wraps a token as read from configuration.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, for the HTTP client's Basic auth. Keep it out of logs.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn mac(&self) -> HmacSha1 {
        // HMAC takes keys of any length; `new_from_slice` only fails for fixed-size-key MACs.
        HmacSha1::new_from_slice(self.0.as_bytes()).expect("HMAC accepts keys of any length")
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

impl From<String> for AuthToken {
    fn from(token: String) -> Self {
        Self(token)
    }
}

impl From<&str> for AuthToken {
    fn from(token: &str) -> Self {
        Self(token.to_owned())
    }
}

/// Why a webhook request failed verification. The messages name the check, never a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The request has no `X-Twilio-Signature` header, or it is blank.
    #[error("the X-Twilio-Signature header is missing")]
    Missing,
    /// The header does not match the URL and parameters under this Auth Token.
    #[error("the X-Twilio-Signature header does not match the request")]
    Mismatch,
    /// A JSON-bodied request whose URL has no `bodySHA256` parameter: the body is not covered
    /// by the signature, so it cannot be trusted.
    #[error("the URL has no bodySHA256 parameter, so the JSON body is not signed")]
    BodyHashMissing,
    /// The body's SHA-256 differs from the signed `bodySHA256` parameter.
    #[error("the request body does not match its signed bodySHA256")]
    BodyHashMismatch,
}

/// The string Twilio signs: the URL followed by each `name` + `value` pair (§2.4 item 2).
fn signing_payload(url: &str, params: &[(String, String)]) -> String {
    let mut by_name: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, value) in params {
        by_name.entry(name).or_default().insert(value);
    }
    let mut payload = url.to_owned();
    for (name, values) in by_name {
        for value in values {
            payload.push_str(name);
            payload.push_str(value);
        }
    }
    payload
}

fn mac_for(token: &AuthToken, url: &str, params: &[(String, String)]) -> HmacSha1 {
    let mut mac = token.mac();
    mac.update(signing_payload(url, params).as_bytes());
    mac
}

/// The `X-Twilio-Signature` value Twilio would send for a request to exactly `url` (no port
/// normalisation) with these form parameters. Pass no parameters for a JSON-bodied request.
///
/// Parameter order and duplicates do not matter: names are sorted and de-duplicated, and each
/// name's values too. Used by the local Twilio fake to sign the callbacks it sends.
pub fn expected_signature(token: &AuthToken, url: &str, params: &[(String, String)]) -> String {
    STANDARD.encode(mac_for(token, url, params).finalize().into_bytes())
}

/// Verifies the `X-Twilio-Signature` header of a form-encoded webhook.
///
/// `url` is the full URL Twilio requested (as configured in Twilio, query string included),
/// `params` every form parameter received, known or not, and `header` the header value if the
/// request had one. The URL is tried with and without its port (module docs, item 4).
pub fn validate(
    token: &AuthToken,
    url: &str,
    params: &[(String, String)],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let signature = decode_header(header)?;
    let (with_port, without_port) = port_variants(url);
    let matches = |candidate: &str| {
        mac_for(token, candidate, params)
            .verify_slice(&signature)
            .is_ok()
    };
    if matches(&without_port) || matches(&with_port) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Verifies a JSON-bodied webhook: the signature over the URL (which must carry
/// `bodySHA256`), then the raw `body` against that hash (module docs, item 5).
///
/// Stricter than Twilio's helper in one way: a URL without `bodySHA256` is rejected
/// ([`SignatureError::BodyHashMissing`]) because the signature would then not cover the body.
pub fn validate_json_body(
    token: &AuthToken,
    url: &str,
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    validate(token, url, &[], header)?;
    let signed_hash = query_param(url, BODY_SHA256_PARAM).ok_or(SignatureError::BodyHashMissing)?;
    if body_sha256_hex(body) == signed_hash {
        Ok(())
    } else {
        Err(SignatureError::BodyHashMismatch)
    }
}

/// The lowercase hex SHA-256 of a body, as Twilio puts it in `bodySHA256`.
pub fn body_sha256_hex(body: &[u8]) -> String {
    Sha256::digest(body)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn decode_header(header: Option<&str>) -> Result<Vec<u8>, SignatureError> {
    let header = header.map(str::trim).filter(|h| !h.is_empty());
    let header = header.ok_or(SignatureError::Missing)?;
    // Not Base64 cannot be a signature Twilio made; report it as a mismatch.
    STANDARD
        .decode(header)
        .map_err(|_| SignatureError::Mismatch)
}

/// The first value of a query parameter of `url`, percent-decoded.
fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split_once('#').map_or(query, |(query, _)| query);
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// The URL with an explicit port and without one, as Twilio's helper builds them: a missing
/// port is added (`443` for https, `80` for anything else); a present port (any number) is
/// removed. Userinfo, path, query and fragment are kept byte for byte. A string that is not
/// an absolute URL is returned unchanged in both positions.
fn port_variants(url: &str) -> (String, String) {
    let Some(scheme_end) = url.find("://") else {
        return (url.to_owned(), url.to_owned());
    };
    let scheme = &url[..scheme_end];
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |at| authority_start + at);
    let authority = &url[authority_start..authority_end];
    // The host starts after any `user:password@`.
    let host_start = authority_start + authority.rfind('@').map_or(0, |at| at + 1);
    let host_port = &url[host_start..authority_end];
    // A port is digits after the last colon, outside an IPv6 literal's brackets.
    let port_colon = host_port.rfind(':').filter(|&colon| {
        let port = &host_port[colon + 1..];
        !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
    });
    let head = &url[..host_start];
    let tail = &url[authority_end..];
    match port_colon {
        Some(colon) => {
            let without = format!("{head}{}{tail}", &host_port[..colon]);
            (url.to_owned(), without)
        }
        None => {
            let port = if scheme.eq_ignore_ascii_case("https") {
                443
            } else {
                80
            };
            let with = format!("{head}{host_port}:{port}{tail}");
            (with, url.to_owned())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // twilio-python tests/unit/test_request_validator.py, via providers.md §2.4.
    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const BASIC: &str = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";

    fn token() -> AuthToken {
        AuthToken::new(TOKEN)
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn basic_params() -> Vec<(String, String)> {
        params(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ])
    }

    #[test]
    fn the_signed_string_sorts_names_by_byte_order() {
        // Given out of order: `Caller` must come after `CallSid` ('S' < 'e').
        let mut shuffled = basic_params();
        shuffled.reverse();
        assert_eq!(
            signing_payload(URL, &shuffled),
            format!(
                "{URL}CallSidCA1234567890ABCDECaller+14158675309Digits1234\
                 From+14158675309To+18005551212"
            )
        );
    }

    #[test]
    fn vector_basic() {
        assert_eq!(expected_signature(&token(), URL, &basic_params()), BASIC);
        assert_eq!(
            validate(&token(), URL, &basic_params(), Some(BASIC)),
            Ok(())
        );
    }

    #[test]
    fn vector_https_with_explicit_443() {
        let url = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        let expected = "kvajT1Ptam85bY51eRf/AJRuM3w=";
        assert_eq!(expected_signature(&token(), url, &basic_params()), expected);
        // Twilio signed with :443 while our URL has no port: the port is added.
        assert_eq!(
            validate(&token(), URL, &basic_params(), Some(expected)),
            Ok(())
        );
        // And the reverse: Twilio signed without a port, our URL has :443.
        assert_eq!(
            validate(&token(), url, &basic_params(), Some(BASIC)),
            Ok(())
        );
    }

    #[test]
    fn vector_http_with_explicit_80() {
        let expected = "0ZXoZLH/DfblKGATFgpif+LLRf4=";
        let with_80 = "http://mycompany.com:80/myapp.php?foo=1&bar=2";
        assert_eq!(
            expected_signature(&token(), with_80, &basic_params()),
            expected
        );
        let without = "http://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            validate(&token(), without, &basic_params(), Some(expected)),
            Ok(())
        );
    }

    #[test]
    fn vector_http_with_port_1234_kept() {
        let url = "http://mycompany.com:1234/myapp.php?foo=1&bar=2";
        let expected = "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=";
        assert_eq!(expected_signature(&token(), url, &basic_params()), expected);
        assert_eq!(
            validate(&token(), url, &basic_params(), Some(expected)),
            Ok(())
        );
    }

    #[test]
    fn vector_https_with_port_1234_validates_against_the_basic_signature() {
        let url = "https://mycompany.com:1234/myapp.php?foo=1&bar=2";
        assert_eq!(
            validate(&token(), url, &basic_params(), Some(BASIC)),
            Ok(())
        );
    }

    #[test]
    fn vector_repeated_keys() {
        let repeated = params(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]);
        let expected = "IK+Dwps556ElfBT0I3Rgjkr1wJU=";
        assert_eq!(expected_signature(&token(), URL, &repeated), expected);
        assert_eq!(validate(&token(), URL, &repeated, Some(expected)), Ok(()));
    }

    #[test]
    fn vector_json_body() {
        let body = br#"{"property": "value", "boolean": true}"#;
        let hash = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
        assert_eq!(body_sha256_hex(body), hash);
        let url = format!("{URL}&bodySHA256={hash}");
        let expected = "a9nBmqA0ju/hNViExpshrM61xv4=";
        assert_eq!(expected_signature(&token(), &url, &[]), expected);
        assert_eq!(
            validate_json_body(&token(), &url, body, Some(expected)),
            Ok(())
        );
    }

    #[test]
    fn a_forged_signature_is_rejected() {
        let forged = "AAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        assert_eq!(
            validate(&token(), URL, &basic_params(), Some(forged)),
            Err(SignatureError::Mismatch)
        );
        // Right signature, wrong token.
        assert_eq!(
            validate(&AuthToken::new("54321"), URL, &basic_params(), Some(BASIC)),
            Err(SignatureError::Mismatch)
        );
        // Not even Base64.
        assert_eq!(
            validate(&token(), URL, &basic_params(), Some("not base64!")),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_tampered_parameter_is_rejected() {
        let mut tampered = basic_params();
        tampered[2].1 = "9999".to_owned();
        assert_eq!(
            validate(&token(), URL, &tampered, Some(BASIC)),
            Err(SignatureError::Mismatch)
        );
        // An added parameter is tampering too: every received parameter is signed.
        let mut added = basic_params();
        added.push(("Body".to_owned(), "STOP".to_owned()));
        assert_eq!(
            validate(&token(), URL, &added, Some(BASIC)),
            Err(SignatureError::Mismatch)
        );
        // And so is a changed URL.
        assert_eq!(
            validate(
                &token(),
                "https://mycompany.com/other.php",
                &basic_params(),
                Some(BASIC)
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_missing_or_blank_header_is_rejected() {
        assert_eq!(
            validate(&token(), URL, &basic_params(), None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            validate(&token(), URL, &basic_params(), Some("  ")),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            validate_json_body(&token(), URL, b"{}", None),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn a_tampered_json_body_is_rejected() {
        let hash = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
        let url = format!("{URL}&bodySHA256={hash}");
        let expected = "a9nBmqA0ju/hNViExpshrM61xv4=";
        assert_eq!(
            validate_json_body(&token(), &url, br#"{"property": "other"}"#, Some(expected)),
            Err(SignatureError::BodyHashMismatch)
        );
    }

    #[test]
    fn a_json_body_without_a_signed_hash_is_rejected() {
        let signature = expected_signature(&token(), URL, &[]);
        assert_eq!(
            validate_json_body(&token(), URL, b"{}", Some(&signature)),
            Err(SignatureError::BodyHashMissing)
        );
    }

    #[test]
    fn port_variants_follow_twilio_helper() {
        let cases = [
            (
                "https://a.test/x",
                "https://a.test:443/x",
                "https://a.test/x",
            ),
            (
                "http://a.test?q=1",
                "http://a.test:80?q=1",
                "http://a.test?q=1",
            ),
            (
                "https://a.test:8443/x",
                "https://a.test:8443/x",
                "https://a.test/x",
            ),
            (
                "https://u:p@a.test:1/x",
                "https://u:p@a.test:1/x",
                "https://u:p@a.test/x",
            ),
            ("https://[::1]/x", "https://[::1]:443/x", "https://[::1]/x"),
            ("https://[::1]:9/x", "https://[::1]:9/x", "https://[::1]/x"),
            ("not a url", "not a url", "not a url"),
        ];
        for (url, with, without) in cases {
            assert_eq!(
                port_variants(url),
                (with.to_owned(), without.to_owned()),
                "{url}"
            );
        }
    }

    #[test]
    fn the_token_and_errors_print_no_secret_or_value() {
        let token = AuthToken::new("super-secret-token");
        assert_eq!(format!("{token:?}"), "AuthToken(<redacted>)");
        for error in [
            SignatureError::Missing,
            SignatureError::Mismatch,
            SignatureError::BodyHashMissing,
            SignatureError::BodyHashMismatch,
        ] {
            let text = error.to_string();
            assert!(!text.contains('+') && !text.contains("secret"), "{text}");
        }
    }
}
