//! Compiles `proto/tcf/stream/v1/stream.proto` with protox (pure Rust, no
//! `protoc`) and generates the prost messages and tonic client/server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["tcf/stream/v1/stream.proto"], ["proto"])?;
    tonic_prost_build::configure()
        // Every `bytes` field becomes `bytes::Bytes`: tuples are sliced out of
        // the received frame, never copied on decode.
        .bytes(".")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}
