//! All cryptography of lethe, over `ring`: AES-256-GCM sealing, HMAC-SHA-256, SHA-256,
//! Ed25519 signatures and randomness. Nothing else in the crate touches `ring` directly.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use zeroize::Zeroize;

pub const KEY_LEN: usize = 32;
pub const TAG_LEN: usize = 16;
/// What sealing adds to a plaintext: the nonce in front, the tag behind.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("the system random generator failed")]
    Random,
    #[error("decryption failed: wrong key or altered data")]
    Open,
    #[error("invalid key material")]
    Key,
}

/// 32 bytes of secret key material, wiped when dropped.
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    pub fn generate() -> Result<Self, CryptoError> {
        let mut k = [0u8; KEY_LEN];
        fill_random(&mut k)?;
        Ok(Self(k))
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; KEY_LEN] = bytes.try_into().map_err(|_| CryptoError::Key)?;
        Ok(Self(arr))
    }

    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// A short public fingerprint, to name the key without revealing it.
    pub fn fingerprint(&self) -> String {
        let d = sha256(&[b"lethe-key-fingerprint", &self.0]);
        hex::encode(&d[..8])
    }

    /// An AES-256-GCM sealing key.
    pub fn aead(&self) -> Result<SealingKey, CryptoError> {
        let unbound = UnboundKey::new(&AES_256_GCM, &self.0).map_err(|_| CryptoError::Key)?;
        Ok(SealingKey(LessSafeKey::new(unbound)))
    }

    pub fn hmac(&self) -> ring::hmac::Key {
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0)
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.fingerprint())
    }
}

/// AES-256-GCM with a random 96-bit nonce per message, stored in front of the ciphertext.
pub struct SealingKey(LessSafeKey);

impl SealingKey {
    /// `nonce ‖ ciphertext ‖ tag`, authenticated together with `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[NONCE_LEN..],
            )
            .map_err(|_| CryptoError::Key)?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(CryptoError::Open);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Open)?;
        let mut buf = body.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| CryptoError::Open)?;
        Ok(plain.to_vec())
    }
}

pub fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    SystemRandom::new()
        .fill(buf)
        .map_err(|_| CryptoError::Random)
}

/// `n` random bytes, hex-encoded.
pub fn random_hex(n: usize) -> Result<String, CryptoError> {
    let mut b = vec![0u8; n];
    fill_random(&mut b)?;
    Ok(hex::encode(b))
}

/// `n` random bytes, base64url without padding (for secrets that travel in URLs).
pub fn random_base64url(n: usize) -> Result<String, CryptoError> {
    use base64::Engine;
    let mut b = vec![0u8; n];
    fill_random(&mut b)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// SHA-256 over the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

pub fn hmac_sha256(key: &ring::hmac::Key, msg: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::hmac::sign(key, msg).as_ref());
    out
}

/// Constant-time check of a tag computed by [`hmac_sha256`].
pub fn hmac_verify(key: &ring::hmac::Key, msg: &[u8], tag: &[u8]) -> bool {
    ring::hmac::verify(key, msg, tag).is_ok()
}

/// Equality of two secrets' digests in constant time (for equal lengths).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An Ed25519 key pair for signing checkpoints.
pub struct Signer(Ed25519KeyPair);

impl Signer {
    /// A new key pair as PKCS#8 bytes (what is stored).
    pub fn generate_pkcs8() -> Result<Vec<u8>, CryptoError> {
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| CryptoError::Random)
    }

    pub fn from_pkcs8(bytes: &[u8]) -> Result<Self, CryptoError> {
        Ed25519KeyPair::from_pkcs8(bytes)
            .map(Self)
            .map_err(|_| CryptoError::Key)
    }

    pub fn public_key(&self) -> Vec<u8> {
        self.0.public_key().as_ref().to_vec()
    }

    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.0.sign(msg).as_ref().to_vec()
    }
}

pub fn ed25519_verify(public_key: &[u8], msg: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(msg, signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_round_trips_and_binds_the_aad() {
        let key = SecretKey::generate().unwrap().aead().unwrap();
        let sealed = key.seal(b"personal", b"header-1").unwrap();
        assert_eq!(sealed.len(), 8 + SEAL_OVERHEAD);
        assert_eq!(key.open(&sealed, b"header-1").unwrap(), b"personal");
        assert_eq!(key.open(&sealed, b"header-2"), Err(CryptoError::Open));
        let other = SecretKey::generate().unwrap().aead().unwrap();
        assert_eq!(other.open(&sealed, b"header-1"), Err(CryptoError::Open));
        let mut flipped = sealed.clone();
        flipped[15] ^= 1;
        assert_eq!(key.open(&flipped, b"header-1"), Err(CryptoError::Open));
        assert_eq!(key.open(&sealed[..10], b"header-1"), Err(CryptoError::Open));
    }

    #[test]
    fn signatures_verify_only_their_message() {
        let signer = Signer::from_pkcs8(&Signer::generate_pkcs8().unwrap()).unwrap();
        let sig = signer.sign(b"tree head");
        assert!(ed25519_verify(&signer.public_key(), b"tree head", &sig));
        assert!(!ed25519_verify(&signer.public_key(), b"tree heaD", &sig));
    }

    #[test]
    fn hmac_verifies_in_constant_time() {
        let k = SecretKey::generate().unwrap().hmac();
        let tag = hmac_sha256(&k, b"x");
        assert!(hmac_verify(&k, b"x", &tag));
        assert!(!hmac_verify(&k, b"y", &tag));
    }
}
