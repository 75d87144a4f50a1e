//! Compiles `proto/` with protox (a protobuf compiler in Rust, so no protoc
//! install) and generates the Rust types with prost-build and the gRPC
//! service with tonic-build.

fn main() {
    let files = ["proto/nettap/v1/records.proto", "proto/nettap/v1/api.proto", "proto/nettap/v1/agent.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"]).expect("the .proto files compile");
    // Without the `grpc` feature only the messages are generated (no tonic).
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_build::configure()
        // A JVM agent's plaintext is decoded as a slice of the bytes read,
        // not copied twice into a Vec of its own.
        .bytes([".nettap.v1.AgentData.payload"])
        .build_client(grpc)
        .build_server(grpc)
        .compile_fds(fds)
        .expect("prost-build and tonic-build generate the code");
}
