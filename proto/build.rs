//! Compiles the vendored CRI `api.proto` into tonic server and client code.
//!
//! protoc comes from `protoc-bin-vendored`: Debian's protoc 3.21 rejects the
//! `debug_redact` option that cri-api has used since Kubernetes 1.34.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing else reads the
        // environment concurrently.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?)
        };
    }
    println!("cargo:rerun-if-changed=proto/runtime/v1/api.proto");
    tonic_prost_build::configure()
        // prost ignores `debug_redact`: a derived Debug would print passwords
        // and tokens. AuthConfig gets a hand-written redacting Debug instead.
        .skip_debug(["runtime.v1.AuthConfig"])
        .compile_protos(&["proto/runtime/v1/api.proto"], &["proto"])?;
    Ok(())
}
