//! API keys: the file that names who holds which key (`--api-keys-file`), and the timing-safe lookup of a
//! presented key.
//!
//! The file holds no key, only its SHA-256 digest, one entry a line:
//!
//! ```text
//! # identity   digest of the key
//! ci-bot       sha256:b48ac4f6e8e8a8efa3c6df982bb8ce596dfb32c360c72af478dbfcccd19dd6f5
//! ```
//!
//! Keys are random secrets (32 random bytes, hex- or base64-encoded, say), not passwords, so an unsalted
//! digest is enough: nobody can guess a key from it. One identity may hold several keys (to rotate them);
//! one key may not name two identities.

use std::{path::Path, sync::Arc};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The largest API keys file Ferry reads.
pub const MAX_KEYS_FILE_BYTES: u64 = 1024 * 1024;
/// The most entries an API keys file may hold.
pub const MAX_KEYS: usize = 10_000;
/// The longest identity name, in bytes (in key files, policies and the mTLS identity).
pub const MAX_IDENTITY_BYTES: usize = 128;

/// The digest prefix of a key file entry, naming the hash.
const SHA256_PREFIX: &str = "sha256:";

/// The SHA-256 digest of an API key, as a key file entry writes it (`sha256:<64 hex digits>`); the same as
/// `printf %s "$KEY" | sha256sum`.
pub fn hash_key(key: &[u8]) -> String {
    let digest = Sha256::digest(key);
    let mut text = String::with_capacity(SHA256_PREFIX.len() + 64);
    text.push_str(SHA256_PREFIX);
    for byte in digest {
        text.push(char::from(HEX[usize::from(byte >> 4)]));
        text.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    text
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The API keys Ferry accepts, as digests, with the identity each one names.
#[derive(Debug, Clone, Default)]
pub struct KeyStore {
    entries: Vec<(Arc<str>, [u8; 32])>,
}

impl KeyStore {
    /// Reads a key file, refusing one larger than [`MAX_KEYS_FILE_BYTES`] before reading it.
    pub fn load(path: &Path) -> Result<Self, String> {
        let shown = path.display();
        let size = std::fs::metadata(path)
            .map_err(|error| format!("cannot read the API keys file {shown}: {error}"))?
            .len();
        if size > MAX_KEYS_FILE_BYTES {
            return Err(format!(
                "the API keys file {shown} is {size} bytes, over the limit of {MAX_KEYS_FILE_BYTES}"
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read the API keys file {shown}: {error}"))?;
        Self::parse(&text).map_err(|error| format!("{shown}: {error}"))
    }

    /// Parses a key file's text: `<identity> sha256:<hex>` a line, `#` comments and blank lines ignored.
    /// The error names the line and what is wrong with it, never the digest.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries: Vec<(Arc<str>, [u8; 32])> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(name), Some(digest), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err(format!(
                    "line {number}: expected '<identity> sha256:<64 hex digits>', got {} fields",
                    line.split_whitespace().count()
                ));
            };
            check_identity_name(name).map_err(|error| format!("line {number}: {error}"))?;
            let digest = parse_digest(digest).map_err(|error| format!("line {number}: {error}"))?;
            if let Some((other, _)) = entries.iter().find(|(_, known)| *known == digest) {
                return Err(format!(
                    "line {number}: this key is already the key of '{other}'; a key names one identity"
                ));
            }
            if entries.len() == MAX_KEYS {
                return Err(format!("more than {MAX_KEYS} keys"));
            }
            entries.push((Arc::from(name), digest));
        }
        Ok(KeyStore { entries })
    }

    /// The identity `key` names, if any. The key's digest is compared with every entry's in constant time,
    /// and every entry is compared, so how long this takes says nothing of which digest, or how much of it,
    /// matched.
    pub fn identify(&self, key: &[u8]) -> Option<Arc<str>> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        let mut found = None;
        for (name, known) in &self.entries {
            if bool::from(known.ct_eq(&digest)) {
                found = Some(Arc::clone(name));
            }
        }
        found
    }

    /// How many keys the store holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Accepts an identity name: 1 to [`MAX_IDENTITY_BYTES`] bytes of printable ASCII without spaces, and
/// neither `*` nor `anonymous`, which policies reserve.
pub fn check_identity_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_IDENTITY_BYTES {
        return Err(format!(
            "an identity name is 1 to {MAX_IDENTITY_BYTES} bytes, got {} bytes",
            name.len()
        ));
    }
    if let Some(bad) = name.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "an identity name is printable ASCII without spaces, got {bad:?}"
        ));
    }
    if name == "*" || name == "anonymous" {
        return Err(format!(
            "'{name}' is reserved for policies and cannot name an identity"
        ));
    }
    Ok(())
}

/// Reads `sha256:<64 hex digits>`.
fn parse_digest(text: &str) -> Result<[u8; 32], String> {
    let Some(hex) = text.strip_prefix(SHA256_PREFIX) else {
        return Err(
            "a key is given by its digest, 'sha256:<64 hex digits>' (the key itself never goes in the file)"
                .to_owned(),
        );
    };
    if hex.len() != 64 {
        return Err(format!(
            "a SHA-256 digest is 64 hex digits, got {} characters",
            hex.len()
        ));
    }
    let mut digest = [0u8; 32];
    for (slot, pair) in digest.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        let high = hex_value(pair[0]);
        let low = hex_value(pair[1]);
        let (Some(high), Some(low)) = (high, low) else {
            return Err("a SHA-256 digest is 64 hex digits (0-9, a-f)".to_owned());
        };
        *slot = high << 4 | low;
    }
    Ok(digest)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest of "test", as `printf %s test | sha256sum` prints it.
    const TEST_DIGEST: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn hashes_as_sha256sum_does() {
        assert_eq!(hash_key(b"test"), TEST_DIGEST);
    }

    #[test]
    fn identifies_the_holder_of_a_key_and_no_one_else() {
        let text = format!(
            "# keys\n\nci-bot {TEST_DIGEST}\n  alice   {}  \nalice {}\n",
            hash_key(b"alice-1"),
            hash_key(b"alice-2")
        );
        let store = KeyStore::parse(&text).expect("parses");
        assert_eq!(store.len(), 3);
        assert_eq!(store.identify(b"test").as_deref(), Some("ci-bot"));
        assert_eq!(store.identify(b"alice-1").as_deref(), Some("alice"));
        assert_eq!(store.identify(b"alice-2").as_deref(), Some("alice"));
        assert_eq!(store.identify(b"tes"), None);
        assert_eq!(store.identify(b""), None);
    }

    #[test]
    fn refuses_malformed_entries_without_echoing_digests() {
        let cases = [
            (
                "bot",
                "line 1: expected '<identity> sha256:<64 hex digits>', got 1 fields",
            ),
            ("bot sha256:00 extra", "got 3 fields"),
            ("bot test", "the key itself never goes in the file"),
            ("bot sha256:abc", "64 hex digits, got 3 characters"),
            ("anonymous sha256:00", "reserved"),
        ];
        for (text, expected) in cases {
            let error = KeyStore::parse(text).expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
        let bad_hex = format!("bot sha256:{}", "g".repeat(64));
        assert!(KeyStore::parse(&bad_hex).expect_err("hex").contains("0-9, a-f"));
        let twice = format!("a {TEST_DIGEST}\nb {TEST_DIGEST}");
        let error = KeyStore::parse(&twice).expect_err("one key, two names");
        assert!(error.contains("line 2") && error.contains("'a'"), "{error}");
        assert!(!error.contains("9f86"), "{error}");
    }
}
