//! Generates the gRPC client and server from `inference.proto`.
//!
//! Both halves: the host is a client (and runs a server in its unit tests),
//! `lumilio-infer` is a server (and a client in its round-trip tests). protoc
//! is `PROTOC` if set, else the binary that `protoc-bin-vendored` ships, so a
//! fresh machine needs no protobuf-compiler package.

use std::path::{Path, PathBuf};

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let proto = dir.join("inference.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    println!("cargo:rerun-if-env-changed=PROTOC");

    let protoc = match std::env::var_os("PROTOC") {
        Some(p) => PathBuf::from(p),
        None => protoc_bin_vendored::protoc_bin_path().unwrap_or_else(|e| {
            panic!("protoc-bin-vendored has no protoc for this platform ({e}): set PROTOC to a protoc binary")
        }),
    };
    // SAFETY: build scripts are single-threaded at this point; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", &protoc) };

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&[proto.clone()], &[dir.to_path_buf()])
        .unwrap_or_else(|e| panic!("compiling proto/inference.proto with {}: {e}", protoc.display()));
}
