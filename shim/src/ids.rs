//! Fresh ids for pods, containers, exec sessions and streaming tokens.
//! (Timestamps: `berth_runtime::now_ns`, shared with the monitor.)

/// A fresh 64-hex-character id, as containerd and CRI-O make them.
pub fn random_id() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(hex::encode(b))
}
