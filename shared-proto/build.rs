//! Compiles `proto/` with protox (a protobuf compiler in Rust, so no protoc
//! install) and generates the Rust types with prost-build.

fn main() {
    let files = ["proto/nettap/v1/records.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"]).expect("the .proto files compile");
    prost_build::Config::new().compile_fds(fds).expect("prost-build generates the types");
}
