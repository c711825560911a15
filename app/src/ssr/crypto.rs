//! Secrets at rest: XChaCha20-Poly1305 with a key from `CREVID_SECRET_KEY` or, when that
//! is unset, a key file generated on first run under the data directory (mode 0600).

use std::path::Path;

use base64::{engine::general_purpose::STANDARD, Engine};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

pub const KEY_FILE: &str = "secret.key";

#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("CREVID_SECRET_KEY must be 32 bytes in base64 (for example the output of `openssl rand -base64 32`)")]
    BadEnvKey,
    #[error("the key file {path} is not 32 bytes of base64; restore it or remove it (stored secrets are then lost)")]
    BadKeyFile { path: String },
    #[error("cannot read or create the key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl SecretBox {
    pub fn from_key_bytes(bytes: &[u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(Key::from_slice(bytes)),
        }
    }

    /// `env_key` wins; otherwise the key file under `data_dir`, created when missing.
    pub fn load(env_key: Option<&str>, data_dir: &Path) -> Result<Self, KeyError> {
        if let Some(encoded) = env_key.filter(|k| !k.trim().is_empty()) {
            return decode_key(encoded)
                .map(|k| Self::from_key_bytes(&k))
                .ok_or(KeyError::BadEnvKey);
        }
        let path = data_dir.join(KEY_FILE);
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => decode_key(&text)
                .map(|k| Self::from_key_bytes(&k))
                .ok_or_else(|| KeyError::BadKeyFile {
                    path: path.display().to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir).map_err(io)?;
                let key = XChaCha20Poly1305::generate_key(&mut OsRng);
                write_private(&path, STANDARD.encode(key).as_bytes()).map_err(io)?;
                Ok(Self {
                    cipher: XChaCha20Poly1305::new(&key),
                })
            }
            Err(e) => Err(io(e)),
        }
    }

    /// base64(nonce ‖ ciphertext).
    pub fn seal(&self, plaintext: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        // Encryption with a fresh nonce and an in-memory buffer cannot fail.
        let ciphertext = self
            .cipher
            .encrypt(&nonce, plaintext.as_bytes())
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        STANDARD.encode(out)
    }

    /// None when the value was sealed with another key or is corrupt.
    pub fn open(&self, sealed: &str) -> Option<String> {
        let raw = STANDARD.decode(sealed.trim()).ok()?;
        if raw.len() < 24 {
            return None;
        }
        let (nonce, ciphertext) = raw.split_at(24);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), ciphertext)
            .ok()?;
        String::from_utf8(plain).ok()
    }
}

fn decode_key(encoded: &str) -> Option<[u8; 32]> {
    STANDARD.decode(encoded.trim()).ok()?.try_into().ok()
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// What the UI and API show of a secret: `sk-…abcd` for long keys, never more than the
/// first three and last four characters.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() >= 12 {
        let head: String = chars[..3].iter().collect();
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("{head}…{tail}")
    } else {
        "•••• (set)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens() {
        let b = SecretBox::from_key_bytes(&[7; 32]);
        let sealed = b.seal("sk-test-123456789");
        assert!(!sealed.contains("sk-test"));
        assert_eq!(b.open(&sealed).as_deref(), Some("sk-test-123456789"));
        assert_eq!(SecretBox::from_key_bytes(&[8; 32]).open(&sealed), None);
    }

    #[test]
    fn masks() {
        assert_eq!(mask("sk-proj-abcdefghijklmnop"), "sk-…mnop");
        assert_eq!(mask("short"), "•••• (set)");
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("crevid-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = SecretBox::load(None, &dir).unwrap();
        let sealed = a.seal("x");
        let b = SecretBox::load(None, &dir).unwrap();
        assert_eq!(b.open(&sealed).as_deref(), Some("x"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            SecretBox::load(Some("nope"), &dir),
            Err(KeyError::BadEnvKey)
        ));
    }
}
