//! Generates the inference server (and a client, for tests) from `proto/inference.proto`.
//!
//! The client half is generated too because the round-trip tests talk to the
//! server over loopback. Needs `protoc`: `PROTOC` if set, else `protoc`
//! on `PATH`, else `/usr/bin/protoc` (Debian's `protobuf-compiler`).

use std::path::{Path, PathBuf};

fn main() {
    let proto_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let proto = proto_dir.join("inference.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    println!("cargo:rerun-if-env-changed=PROTOC");

    let protoc = find_protoc().unwrap_or_else(|| {
        panic!(
            "protoc (the protobuf compiler) was not found: set PROTOC to its path, or install it \
             with `apt-get install protobuf-compiler` (it is needed to compile proto/inference.proto)"
        )
    });
    // SAFETY: build scripts are single-threaded at this point; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", &protoc) };

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&[proto], &[proto_dir])
        .unwrap_or_else(|e| {
            panic!(
                "compiling proto/inference.proto with {}: {e}",
                protoc.display()
            )
        });
}

/// `PROTOC` if set, else the first `protoc` on `PATH`, else `/usr/bin/protoc`.
fn find_protoc() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROTOC") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("protoc"))
        .chain(std::iter::once(PathBuf::from("/usr/bin/protoc")))
        .find(|p| p.is_file())
}
