//! Encryption at rest (docs/repository.md, "Encryption"). A repository is encrypted
//! when it holds a keys object ([`KEYS_KEY`]): two random 256-bit data keys wrapped
//! (AES-256-GCM) by the repository's master key, which never goes to the store.
//!
//! - Block ids are keyed BLAKE3 under the id key: the store learns nothing from them
//!   and no two repositories share one.
//! - Packs get a random 256-bit id; each pack's frames are sealed with AES-256-GCM under
//!   a key derived from the seal key and the pack id (HKDF-SHA256), the nonce being the
//!   frame's offset in its pack. A key is used for one pack only and offsets in a pack
//!   never repeat, so no nonce repeats under a key, on any node, across crashes (a
//!   retried pack gets a new id). The frame's decoded length and flags are authenticated
//!   with it.
//! - A manifest is sealed whole under a key derived from a random 256-bit salt stored in
//!   front of it, with its backup id authenticated: a manifest moved to another backup's
//!   name does not open.
//! - Rotating the master key rewraps the data keys; no data is rewritten.

use std::fmt;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::EngineError;
use crate::format::Hash;

/// Where a repository keeps its wrapped data keys.
pub const KEYS_KEY: &str = "keys.json";
/// What AES-GCM adds to each sealed object or frame.
pub const TAG_LEN: usize = 16;
/// A sealed manifest starts with this, then its salt; a plaintext one is a zstd stream.
pub const SEALED_MANIFEST_MAGIC: &[u8; 8] = b"VBSMANE1";
const SALT_LEN: usize = 32;
const WRAP_AAD: &[u8] = b"vbs repository keys v1";
const FRAME_INFO: &[u8] = b"vbs pack frame v1";
const MANIFEST_INFO: &[u8] = b"vbs manifest v1";

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The system's CSPRNG; it does not fail on any platform vbs runs on.
    SystemRandom::new()
        .fill(&mut b)
        .unwrap_or_else(|_| panic!("the system random source failed"));
    b
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

fn aead_key(bytes: &[u8]) -> LessSafeKey {
    LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, bytes).unwrap_or_else(|_| unreachable!("32-byte key")),
    )
}

/// `HKDF-SHA256(salt, ikm).expand(info)` as an AES-256-GCM key.
fn derive(ikm: &[u8; 32], salt: &[u8], info: &[u8]) -> LessSafeKey {
    struct Len;
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            32
        }
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let mut out = [0u8; 32];
    let infos = [info];
    prk.expand(&infos, Len)
        .and_then(|okm| okm.fill(&mut out))
        .unwrap_or_else(|_| unreachable!("32 bytes are within HKDF's limit"));
    aead_key(&out)
}

/// A repository's master key: 32 bytes, written as 64 hex digits in a key file or the
/// configuration. Its `Debug` shows only its fingerprint.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    pub fn generate() -> Self {
        Self(random())
    }

    /// From 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let bytes = unhex(text.trim())
            .filter(|b| b.len() == 32)
            .ok_or("a master key is 64 hex digits")?;
        let mut k = [0u8; 32];
        k.copy_from_slice(&bytes);
        Ok(Self(k))
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// A short public name of the key (not the key): which key a repository wants.
    pub fn fingerprint(&self) -> String {
        hex(&blake3::derive_key("vbs master key fingerprint v1", &self.0)[..8])
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.fingerprint())
    }
}

/// The stored keys object.
#[derive(Debug, Serialize, Deserialize)]
struct KeysFile {
    format: u32,
    cipher: String,
    kdf: String,
    /// The master key's fingerprint, to name the key a repository wants.
    master_key: String,
    nonce: String,
    /// The seal key then the id key, sealed under the master key.
    wrapped: String,
}

/// A repository's data keys, unwrapped.
pub struct DataKeys {
    seal: [u8; 32],
    id: [u8; 32],
}

impl fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKeys(****)")
    }
}

impl DataKeys {
    pub fn generate() -> Self {
        Self {
            seal: random(),
            id: random(),
        }
    }

    /// The keys object's bytes, the data keys wrapped under `master`.
    pub fn wrap(&self, master: &MasterKey) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = random();
        let mut sealed = Vec::with_capacity(64 + TAG_LEN);
        sealed.extend_from_slice(&self.seal);
        sealed.extend_from_slice(&self.id);
        aead_key(&master.0)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(WRAP_AAD),
                &mut sealed,
            )
            .unwrap_or_else(|_| unreachable!("sealing 64 bytes"));
        let file = KeysFile {
            format: 1,
            cipher: "AES-256-GCM".into(),
            kdf: "HKDF-SHA256".into(),
            master_key: master.fingerprint(),
            nonce: hex(&nonce),
            wrapped: hex(&sealed),
        };
        serde_json::to_vec_pretty(&file).unwrap_or_else(|_| unreachable!("plain struct"))
    }

    /// The data keys of a keys object; [`EngineError::Key`] when `master` is not the
    /// key they were wrapped with (or the object was altered).
    pub fn unwrap(stored: &[u8], master: &MasterKey) -> Result<Self, EngineError> {
        let corrupt = |what: &str| EngineError::Corrupt(format!("{KEYS_KEY}: {what}"));
        let file: KeysFile =
            serde_json::from_slice(stored).map_err(|e| corrupt(&format!("not JSON: {e}")))?;
        if file.format != 1 || file.cipher != "AES-256-GCM" || file.kdf != "HKDF-SHA256" {
            return Err(corrupt("unknown format, cipher or kdf"));
        }
        let nonce: [u8; NONCE_LEN] = unhex(&file.nonce)
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| corrupt("bad nonce"))?;
        let mut sealed = unhex(&file.wrapped).ok_or_else(|| corrupt("bad wrapped keys"))?;
        let plain = aead_key(&master.0)
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(WRAP_AAD),
                &mut sealed,
            )
            .map_err(|_| {
                EngineError::Key(format!(
                    "the master key given (fingerprint {}) does not open the repository's \
                     keys, which were wrapped with the key of fingerprint {}",
                    master.fingerprint(),
                    file.master_key
                ))
            })?;
        if plain.len() != 64 {
            return Err(corrupt("wrapped keys of the wrong size"));
        }
        let mut keys = Self {
            seal: [0; 32],
            id: [0; 32],
        };
        keys.seal.copy_from_slice(&plain[..32]);
        keys.id.copy_from_slice(&plain[32..]);
        Ok(keys)
    }

    /// A block's id: keyed BLAKE3.
    pub fn block_id(&self, block: &[u8]) -> Hash {
        *blake3::keyed_hash(&self.id, block).as_bytes()
    }

    /// A new pack's id (random) and the key its frames are sealed with.
    pub fn new_pack(&self) -> (String, PackKey) {
        let id: [u8; 32] = random();
        (hex(&id), PackKey(derive(&self.seal, &id, FRAME_INFO)))
    }

    /// The key of the frames of pack `pack_id` (its hex id).
    pub fn pack_key(&self, pack_id: &str) -> Result<PackKey, EngineError> {
        let id = unhex(pack_id)
            .filter(|b| b.len() == 32)
            .ok_or_else(|| EngineError::Corrupt(format!("pack id {pack_id} is not 32 bytes")))?;
        Ok(PackKey(derive(&self.seal, &id, FRAME_INFO)))
    }

    /// A manifest's stored bytes: magic, salt, then the sealed encoding.
    pub fn seal_manifest(&self, backup_id: &str, encoded: Vec<u8>) -> Vec<u8> {
        let salt: [u8; SALT_LEN] = random();
        let mut body = encoded;
        derive(&self.seal, &salt, MANIFEST_INFO)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key([0; NONCE_LEN]),
                Aad::from(backup_id.as_bytes()),
                &mut body,
            )
            .unwrap_or_else(|_| unreachable!("manifests are far below AES-GCM's limit"));
        let mut out = Vec::with_capacity(8 + SALT_LEN + body.len());
        out.extend_from_slice(SEALED_MANIFEST_MAGIC);
        out.extend_from_slice(&salt);
        out.extend_from_slice(&body);
        out
    }

    /// The encoding inside a sealed manifest; its tag must hold for `backup_id`.
    pub fn open_manifest(&self, backup_id: &str, stored: &[u8]) -> Result<Vec<u8>, EngineError> {
        let corrupt = |what: &str| EngineError::Corrupt(format!("manifest {backup_id}: {what}"));
        let rest = stored
            .strip_prefix(SEALED_MANIFEST_MAGIC.as_slice())
            .ok_or_else(|| corrupt("not a sealed manifest"))?;
        if rest.len() < SALT_LEN + TAG_LEN {
            return Err(corrupt("truncated"));
        }
        let (salt, body) = rest.split_at(SALT_LEN);
        let mut body = body.to_vec();
        let n = derive(&self.seal, salt, MANIFEST_INFO)
            .open_in_place(
                Nonce::assume_unique_for_key([0; NONCE_LEN]),
                Aad::from(backup_id.as_bytes()),
                &mut body,
            )
            .map_err(|_| corrupt("authentication failed (altered, or not this backup's)"))?
            .len();
        body.truncate(n);
        Ok(body)
    }
}

/// The key of one pack's frames.
pub struct PackKey(LessSafeKey);

fn frame_nonce(offset: u64) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[..8].copy_from_slice(&offset.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

fn frame_aad(raw_len: u32, flags: u32) -> [u8; 8] {
    let mut a = [0u8; 8];
    a[..4].copy_from_slice(&raw_len.to_le_bytes());
    a[4..].copy_from_slice(&flags.to_le_bytes());
    a
}

impl PackKey {
    /// Seals the frame in `frame`, bound for `offset` of its pack, in place; returns
    /// the tag to store after it.
    pub fn seal(&self, offset: u64, raw_len: u32, flags: u32, frame: &mut [u8]) -> [u8; TAG_LEN] {
        let tag = self
            .0
            .seal_in_place_separate_tag(
                frame_nonce(offset),
                Aad::from(frame_aad(raw_len, flags)),
                frame,
            )
            .unwrap_or_else(|_| unreachable!("frames are far below AES-GCM's limit"));
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Opens the frame stored at `offset` (its tag at the end), in place; returns the
    /// plaintext's length, or `None` when it fails authentication.
    pub fn open(&self, offset: u64, raw_len: u32, flags: u32, frame: &mut [u8]) -> Option<usize> {
        self.0
            .open_in_place(
                frame_nonce(offset),
                Aad::from(frame_aad(raw_len, flags)),
                frame,
            )
            .map(|p| p.len())
            .ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_wrap_under_one_master_key_only() {
        let master = MasterKey::generate();
        let keys = DataKeys::generate();
        let stored = keys.wrap(&master);
        let back = DataKeys::unwrap(&stored, &master).unwrap();
        assert_eq!((back.seal, back.id), (keys.seal, keys.id));
        let other = MasterKey::generate();
        match DataKeys::unwrap(&stored, &other) {
            Err(EngineError::Key(m)) => {
                assert!(m.contains(&master.fingerprint()) && m.contains(&other.fingerprint()));
            }
            r => panic!("{r:?}"),
        }
        // Rewrapped under a new key: the same data keys, the old key refused.
        let rotated = back.wrap(&other);
        assert_eq!(DataKeys::unwrap(&rotated, &other).unwrap().seal, keys.seal);
        assert!(DataKeys::unwrap(&rotated, &master).is_err());
        assert!(!format!("{master:?}").contains(&master.to_hex()));
    }

    #[test]
    fn master_keys_read_back() {
        let k = MasterKey::generate();
        assert_eq!(
            MasterKey::from_hex(&format!(" {}\n", k.to_hex())).unwrap(),
            k
        );
        assert!(MasterKey::from_hex("abc").is_err());
        assert!(MasterKey::from_hex(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn frames_open_only_where_they_were_sealed() {
        let keys = DataKeys::generate();
        let (id, key) = keys.new_pack();
        let mut frame = b"some frame bytes".to_vec();
        let tag = key.seal(8, 4096, 1, &mut frame);
        assert_ne!(&frame[..], b"some frame bytes");
        frame.extend_from_slice(&tag);
        let again = keys.pack_key(&id).unwrap();
        let mut f = frame.clone();
        assert_eq!(again.open(8, 4096, 1, &mut f), Some(16));
        assert_eq!(&f[..16], b"some frame bytes");
        for (off, raw, flags) in [(9, 4096, 1), (8, 8192, 1), (8, 4096, 0)] {
            let mut f = frame.clone();
            assert!(again.open(off, raw, flags, &mut f).is_none());
        }
        let mut flipped = frame.clone();
        flipped[3] ^= 1;
        assert!(again.open(8, 4096, 1, &mut flipped).is_none());
        let (_, other) = keys.new_pack();
        assert!(other.open(8, 4096, 1, &mut frame.clone()).is_none());
    }

    #[test]
    fn manifests_open_only_under_their_backup_id() {
        let keys = DataKeys::generate();
        let sealed = keys.seal_manifest("b1", b"manifest body".to_vec());
        assert!(sealed.starts_with(SEALED_MANIFEST_MAGIC));
        assert_eq!(keys.open_manifest("b1", &sealed).unwrap(), b"manifest body");
        assert!(keys.open_manifest("b2", &sealed).is_err());
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 0x80;
        assert!(keys.open_manifest("b1", &flipped).is_err());
        assert!(DataKeys::generate().open_manifest("b1", &sealed).is_err());
    }

    proptest::proptest! {
        /// Whatever a damaged or hostile repository holds where wrapped keys, a sealed
        /// manifest, a pack id or a sealed frame should be, decoding answers an error
        /// (never a panic) and never opens it.
        #[test]
        fn stored_bytes_never_open_nor_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            offset in 0u64..1 << 40,
            raw in 0u32..1 << 20,
            flags in 0u32..4,
            text in ".{0,80}",
        ) {
            let master = MasterKey::generate();
            proptest::prop_assert!(DataKeys::unwrap(&bytes, &master).is_err());
            let _ = MasterKey::from_hex(&text);
            let keys = DataKeys::generate();
            proptest::prop_assert!(keys.open_manifest("b1", &bytes).is_err());
            let mut magic = SEALED_MANIFEST_MAGIC.to_vec();
            magic.extend_from_slice(&bytes);
            proptest::prop_assert!(keys.open_manifest("b1", &magic).is_err());
            let _ = keys.pack_key(&text);
            let (_, key) = keys.new_pack();
            let mut frame = bytes.clone();
            proptest::prop_assert!(key.open(offset, raw, flags, &mut frame).is_none());
        }
    }

    #[test]
    fn block_ids_are_keyed() {
        let (a, b) = (DataKeys::generate(), DataKeys::generate());
        let block = [7u8; 4096];
        assert_eq!(a.block_id(&block), a.block_id(&block));
        assert_ne!(a.block_id(&block), b.block_id(&block));
        assert_ne!(a.block_id(&block), *blake3::hash(&block).as_bytes());
    }
}
