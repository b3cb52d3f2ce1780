//! The keys file: a JSON array of named entries with scopes and the SHA-256 of the
//! key. Parsing is entry by entry, so one malformed entry costs only that entry (the
//! caller logs and counts it) while the valid ones apply; only text that is not a
//! JSON array at all is refused as a whole. The keys in force are kept with the keys
//! a reload removed, for the `revoked` outcome. Also key generation for `create-key`.

use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The api-service's read routes.
    Read,
    /// data-ingestion's routes.
    Ingest,
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Scope::Read),
            "ingest" => Ok(Scope::Ingest),
            other => Err(format!("unknown scope {other:?}: expected read or ingest")),
        }
    }
}

impl Scope {
    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Ingest => "ingest",
        }
    }
}

/// One stored key, as written in the keys file or variable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Who holds the key (`dashboard`, `robots-fac-001`); appears in logs and metrics.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    /// Requests per second for this key (default: the configured rate).
    #[serde(default)]
    pub rate_per_sec: Option<f64>,
    /// Burst for this key (default: the configured burst).
    #[serde(default)]
    pub burst: Option<f64>,
}

/// A valid entry with its decoded hash.
pub(super) struct StoredKey {
    pub(super) entry: KeyEntry,
    pub(super) hash: [u8; 32],
}

/// The valid keys.
#[derive(Default)]
pub struct KeySet {
    pub(super) keys: Vec<StoredKey>,
}

impl KeySet {
    /// Parses a JSON array of [`KeyEntry`], refusing it if any entry is invalid
    /// (`create-key` checks the entry it prints with this).
    pub fn parse(json: &str) -> Result<Self, String> {
        let (set, errors) = Self::parse_entries(json)?;
        match errors.into_iter().next() {
            Some(first) => Err(first),
            None => Ok(set),
        }
    }

    /// Parses a JSON array of [`KeyEntry`] entry by entry: the valid entries, and one
    /// message per invalid entry (naming its position and, when readable, its name).
    /// `Err` only when the text is not a JSON array.
    pub fn parse_entries(json: &str) -> Result<(Self, Vec<String>), String> {
        let items: Vec<serde_json::Value> = serde_json::from_str(json)
            .map_err(|e| format!("expected a JSON array of {{name, scopes, sha256}}: {e}"))?;
        let mut keys = Vec::with_capacity(items.len());
        let mut errors = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            match stored_key(item) {
                Ok(key) => keys.push(key),
                Err(reason) => errors.push(format!("entry {index}: {reason}")),
            }
        }
        Ok((Self { keys }, errors))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a key with this hash is in the set.
    pub(super) fn contains_hash(&self, hash: &[u8; 32]) -> bool {
        self.keys.iter().any(|k| &k.hash == hash)
    }

    /// The entry whose hash matches `presented`. Every stored hash is compared, in
    /// constant time, so timing tells nothing about which keys exist.
    pub(super) fn find(&self, presented: &str) -> Option<&KeyEntry> {
        let digest = digest(presented);
        let mut found = None;
        for key in &self.keys {
            if constant_time_eq(&digest, &key.hash) {
                found = Some(&key.entry);
            }
        }
        found
    }
}

/// Removed keys remembered for the `revoked` outcome; the oldest are forgotten first.
const MAX_REVOKED: usize = 1000;

/// The keys in force, and the hashes of keys a reload removed with their former names
/// (only names that were once configured, so the `key` label stays bounded).
#[derive(Default)]
pub(super) struct KeyState {
    pub(super) valid: KeySet,
    revoked: Vec<([u8; 32], String)>,
}

impl KeyState {
    /// The state after `next` replaces the current keys: keys missing from `next`
    /// join the revoked list, keys present in it leave it.
    pub(super) fn replaced_by(&self, next: KeySet) -> (Self, Vec<String>) {
        let mut revoked: Vec<([u8; 32], String)> = self
            .revoked
            .iter()
            .filter(|(hash, _)| !next.contains_hash(hash))
            .cloned()
            .collect();
        let mut removed = Vec::new();
        for key in &self.valid.keys {
            if !next.contains_hash(&key.hash) && !revoked.iter().any(|(h, _)| *h == key.hash) {
                removed.push(key.entry.name.clone());
                revoked.push((key.hash, key.entry.name.clone()));
            }
        }
        let excess = revoked.len().saturating_sub(MAX_REVOKED);
        revoked.drain(..excess);
        (
            Self {
                valid: next,
                revoked,
            },
            removed,
        )
    }

    /// The former name of a removed key, compared in constant time like valid keys.
    pub(super) fn revoked_name(&self, presented: &str) -> Option<&str> {
        let digest = digest(presented);
        let mut found = None;
        for (hash, name) in &self.revoked {
            if constant_time_eq(&digest, hash) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

fn stored_key(item: serde_json::Value) -> Result<StoredKey, String> {
    let name = item
        .get("name")
        .and_then(|n| n.as_str())
        .map(|n| format!("key {n:?}: "))
        .unwrap_or_default();
    let entry: KeyEntry = serde_json::from_value(item)
        .map_err(|e| format!("{name}expected {{name, scopes, sha256}}: {e}"))?;
    let hash = decode_hex32(&entry.sha256)
        .ok_or_else(|| format!("key {:?}: sha256 must be 64 hex characters", entry.name))?;
    if entry.name.is_empty()
        || entry.name.len() > 64
        || !entry.name.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(format!(
            "key {:?}: name must be 1 to 64 visible ASCII characters",
            entry.name
        ));
    }
    if entry.scopes.is_empty() {
        return Err(format!(
            "key {:?}: needs at least one scope (read, ingest)",
            entry.name
        ));
    }
    Ok(StoredKey { entry, hash })
}

/// SHA-256 of a presented key.
pub(super) fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Compares two hashes without an early exit.
pub(super) fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Hex SHA-256 of a key: what is stored.
pub fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new random key (`mrk_` + 43 characters of base64url: 256 bits).
pub fn generate_key() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let mut out = String::from("mrk_");
    let mut acc = 0u32;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

/// The text `create-key` prints: the key once, and the entry to store.
pub fn create_key_text(name: &str, scopes: &[Scope]) -> Result<String, String> {
    let key = generate_key();
    let entry = serde_json::json!({
        "name": name,
        "scopes": scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "sha256": hash_key(&key),
    });
    KeySet::parse(&format!("[{entry}]"))?;
    Ok(format!(
        "API key for {name:?} (shown once; give it to the client, store it nowhere else):\n\n  {key}\n\n\
         Add this entry to the keys file (a JSON array; the Helm chart's auth Secret) and keep the old \
         entries until their clients have moved:\n\n  {entry}\n"
    ))
}

#[cfg(test)]
pub(in crate::auth) mod tests {
    use super::*;

    fn entry(name: &str, scope: &str, key: &str) -> String {
        format!(
            r#"{{"name":"{name}","scopes":["{scope}"],"sha256":"{}"}}"#,
            hash_key(key)
        )
    }

    pub(in crate::auth) fn keys_json(entries: &[(&str, &str, &str)]) -> String {
        let items: Vec<String> = entries
            .iter()
            .map(|(name, scope, key)| entry(name, scope, key))
            .collect();
        format!("[{}]", items.join(","))
    }

    #[test]
    fn keys_are_found_by_hash_only() {
        let set = KeySet::parse(&keys_json(&[
            ("dash", "read", "k1"),
            ("robots", "ingest", "k2"),
        ]))
        .expect("parses");
        assert_eq!(set.find("k1").map(|e| e.name.as_str()), Some("dash"));
        assert_eq!(set.find("k2").map(|e| e.name.as_str()), Some("robots"));
        assert!(set.find("k3").is_none());
        assert!(set.find("").is_none());
    }

    #[test]
    fn bad_entries_are_refused_with_a_reason() {
        for (json, reason) in [
            ("{}", "JSON array"),
            (
                r#"[{"name":"a","scopes":["read"],"sha256":"abc"}]"#,
                "64 hex",
            ),
            (r#"[{"name":"a","scopes":[],"sha256":"00"}]"#, "64 hex"),
            (
                r#"[{"name":"a","scopes":["write"],"sha256":"00"}]"#,
                "unknown variant",
            ),
            (
                r#"[{"name":"","scopes":["read"],"sha256":"0000000000000000000000000000000000000000000000000000000000000000"}]"#,
                "name",
            ),
            (
                r#"[{"name":"a","scopes":[],"sha256":"0000000000000000000000000000000000000000000000000000000000000000"}]"#,
                "scope",
            ),
        ] {
            let err = KeySet::parse(json).err().unwrap_or_default();
            assert!(err.contains(reason), "{json}: {err}");
        }
    }

    #[test]
    fn one_bad_entry_costs_only_that_entry() {
        let mixed = format!(
            r#"[{}, {{"name":"typo","scopes":["read"],"sha256":"xyz"}}, 42, {}]"#,
            entry("dash", "read", "k1"),
            entry("robots", "ingest", "k2"),
        );
        let (set, errors) = KeySet::parse_entries(&mixed).expect("an array");
        assert_eq!(set.len(), 2, "{mixed}");
        assert!(set.find("k1").is_some() && set.find("k2").is_some());
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("entry 1: key \"typo\""), "{errors:?}");
        assert!(errors[1].starts_with("entry 2: "), "{errors:?}");

        let (empty, errors) = KeySet::parse_entries("[]").expect("an array");
        assert!(empty.is_empty() && errors.is_empty());
        assert!(KeySet::parse_entries("{\"name\":1}").is_err());
        assert!(KeySet::parse_entries("[{},").is_err());
    }

    #[test]
    fn removed_keys_are_remembered_by_former_name_until_they_come_back() {
        let one = KeyState::default()
            .replaced_by(
                KeySet::parse(&keys_json(&[("a", "read", "ka"), ("b", "read", "kb")]))
                    .expect("keys"),
            )
            .0;
        let (two, removed) = one.replaced_by(KeySet::parse("[]").expect("keys"));
        assert_eq!(removed, ["a", "b"]);
        assert_eq!(two.revoked_name("kb"), Some("b"));
        assert_eq!(two.revoked_name("kc"), None);
        let (three, removed) =
            two.replaced_by(KeySet::parse(&keys_json(&[("b2", "read", "kb")])).expect("keys"));
        assert!(removed.is_empty());
        assert_eq!(three.revoked_name("kb"), None, "back in force");
        assert_eq!(three.revoked_name("ka"), Some("a"));
    }

    #[test]
    fn generated_keys_are_long_random_and_hash_to_64_hex() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a, b);
        assert!(a.starts_with("mrk_") && a.len() == 4 + 43, "{a}");
        assert_eq!(hash_key(&a).len(), 64);
        let text = create_key_text("dashboard", &[Scope::Read]).expect("text");
        assert!(text.contains("\"scopes\":[\"read\"]"), "{text}");
    }
}
