//! Key material of the audit log. The master key (key-encryption key) comes from
//! `LETHE_MASTER_KEY` / `LETHE_MASTER_KEY_FILE`, or is generated once into
//! `.lethe/master.key`. It wraps the random data keys kept in the store: one per data
//! subject, plus the system key, the MAC key and the index key.

use std::path::{Path, PathBuf};

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};

use crate::crypto::{CryptoError, SecretKey, Signer};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the master key must be 32 bytes, written as 64 hex digits or base64")]
    MasterFormat,
    #[error(
        "wrong master key: the store's keys are wrapped under master key {expected}, but the configured key is {actual}; nothing was written"
    )]
    WrongMaster { expected: String, actual: String },
    #[error(
        "no master key: the store's keys are wrapped under master key {expected}, but {path} does not exist and LETHE_MASTER_KEY / LETHE_MASTER_KEY_FILE are not set; restore that key file from its backup or point LETHE_MASTER_KEY_FILE at it. No new key was written"
    )]
    MissingMaster { expected: String, path: PathBuf },
    #[error("the signing key is not an Ed25519 PKCS#8 key")]
    SigningFormat,
    #[error("key file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Where keys come from.
#[derive(Debug, Clone)]
pub struct KeySource {
    pub master: Option<SecretString>,
    pub signing: Option<SecretString>,
    /// Directory for generated key files (`.lethe`).
    pub dir: PathBuf,
}

/// The key-encryption key.
pub struct MasterKey {
    key: SecretKey,
    /// The file it was read from, when it came from the key directory.
    pub file: Option<PathBuf>,
}

impl MasterKey {
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let t = text.trim();
        let bytes = if t.len() == 64 && t.chars().all(|c| c.is_ascii_hexdigit()) {
            hex::decode(t).map_err(|_| KeyError::MasterFormat)?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .map_err(|_| KeyError::MasterFormat)?
        };
        Ok(Self {
            key: SecretKey::from_slice(&bytes).map_err(|_| KeyError::MasterFormat)?,
            file: None,
        })
    }

    pub fn generate() -> Result<Self, KeyError> {
        Ok(Self {
            key: SecretKey::generate()?,
            file: None,
        })
    }

    /// The configured key, else `dir/master.key`, else a new one written there (0600).
    pub fn load_or_create(source: &KeySource) -> Result<Self, KeyError> {
        Self::load_or_create_for(source, None)
    }

    /// [`MasterKey::load_or_create`] for a store whose keys are wrapped under master key
    /// `stored` (None for a new store): a missing key file is then an error, and no new
    /// key is written; a key that is not `stored` is refused.
    pub fn load_or_create_for(source: &KeySource, stored: Option<&str>) -> Result<Self, KeyError> {
        let check = |key: Self| match stored {
            Some(expected) if expected != key.id() => Err(KeyError::WrongMaster {
                expected: expected.to_owned(),
                actual: key.id(),
            }),
            _ => Ok(key),
        };
        if let Some(s) = &source.master {
            return check(Self::parse(s.expose_secret())?);
        }
        let path = source.dir.join("master.key");
        if path.exists() {
            let text = read_key_file(&path)?;
            let mut key = Self::parse(&text)?;
            key.file = Some(path);
            // A rotation cut short leaves the new key beside the file: checked later.
            if path_next(&source.dir).exists() {
                return Ok(key);
            }
            return check(key);
        }
        if let Some(expected) = stored {
            return Err(KeyError::MissingMaster {
                expected: expected.to_owned(),
                path,
            });
        }
        let mut key = Self::generate()?;
        write_key_file(&path, &key.to_hex())?;
        tracing::warn!(
            path = %path.display(),
            "GENERATED A NEW MASTER KEY: without it the audit log cannot be decrypted. Back it up, or set LETHE_MASTER_KEY_FILE"
        );
        key.file = Some(path);
        Ok(key)
    }

    /// A public name of this key, stored beside everything it wraps.
    pub fn id(&self) -> String {
        self.key.fingerprint()
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.key.expose())
    }

    /// Seals a data key; the key id is bound as additional data.
    pub fn wrap(&self, data_key: &SecretKey, key_id: &str) -> Result<Vec<u8>, KeyError> {
        Ok(self
            .key
            .aead()?
            .seal(data_key.expose(), key_id.as_bytes())?)
    }

    pub fn unwrap(&self, wrapped: &[u8], key_id: &str) -> Result<SecretKey, KeyError> {
        let plain = self.key.aead()?.open(wrapped, key_id.as_bytes())?;
        Ok(SecretKey::from_slice(&plain)?)
    }
}

/// The checkpoint signing key: configured, else `dir/signing.key`, else generated there.
pub fn load_or_create_signer(source: &KeySource) -> Result<Signer, KeyError> {
    let decode = |t: &str| hex::decode(t.trim()).map_err(|_| KeyError::SigningFormat);
    if let Some(s) = &source.signing {
        return Signer::from_pkcs8(&decode(s.expose_secret())?)
            .map_err(|_| KeyError::SigningFormat);
    }
    let path = source.dir.join("signing.key");
    let pkcs8 = if path.exists() {
        decode(&read_key_file(&path)?)?
    } else {
        let pkcs8 = Signer::generate_pkcs8()?;
        write_key_file(&path, &hex::encode(&pkcs8))?;
        tracing::warn!(path = %path.display(), "generated a new checkpoint signing key");
        pkcs8
    };
    Signer::from_pkcs8(&pkcs8).map_err(|_| KeyError::SigningFormat)
}

/// Where a rotation leaves the new master key until it is committed.
fn path_next(dir: &Path) -> PathBuf {
    dir.join("master.key.next")
}

fn read_key_file(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::File {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a key file readable by its owner only, atomically (temp file, then rename).
pub fn write_key_file(path: &Path, text: &str) -> Result<(), KeyError> {
    let err = |source| KeyError::File {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    crate::store::files::write_private(&tmp, format!("{text}\n").as_bytes()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_keys_parse_from_hex_or_base64_only_at_32_bytes() {
        let hex_key = "00".repeat(32);
        assert!(MasterKey::parse(&hex_key).is_ok());
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(MasterKey::parse(&b64).is_ok());
        assert!(matches!(
            MasterKey::parse("abcd"),
            Err(KeyError::MasterFormat)
        ));
        assert!(matches!(
            MasterKey::parse(&"00".repeat(31)),
            Err(KeyError::MasterFormat)
        ));
    }

    #[test]
    fn a_generated_master_key_is_private_to_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let source = KeySource {
            master: None,
            signing: None,
            dir: dir.path().join(".lethe"),
        };
        let first = MasterKey::load_or_create(&source).unwrap();
        let again = MasterKey::load_or_create(&source).unwrap();
        assert_eq!(first.id(), again.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(".lethe/master.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let data = SecretKey::generate().unwrap();
        let wrapped = first.wrap(&data, "k1").unwrap();
        assert_eq!(
            again.unwrap(&wrapped, "k1").unwrap().expose(),
            data.expose()
        );
        assert!(again.unwrap(&wrapped, "k2").is_err());
        assert!(
            MasterKey::generate()
                .unwrap()
                .unwrap(&wrapped, "k1")
                .is_err()
        );
    }
}
