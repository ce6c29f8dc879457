//! How pod and container records keep the CRI config they were made
//! from: protobuf, hex-encoded inside the JSON record (so a config that
//! a newer kubelet extends still round-trips whole).

use prost::Message;

pub fn encode<M: Message>(m: &M) -> String {
    hex::encode(m.encode_to_vec())
}

/// The config in `hex`; the default one if it cannot be read (a record
/// is never refused for it).
pub fn decode<M: Message + Default>(hex: &str) -> M {
    hex::decode(hex)
        .ok()
        .and_then(|b| M::decode(b.as_slice()).ok())
        .unwrap_or_default()
}
