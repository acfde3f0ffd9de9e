//! Generates the ttm.v1 code with protox (a pure-Rust proto compiler), so a
//! fresh machine needs no system `protoc`. Also writes the encoded
//! `FileDescriptorSet` (with comments) that `ttmd` serves through gRPC server
//! reflection, exported as `ttm_proto::FILE_DESCRIPTOR_SET`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=ttm");
    let mut compiler = protox::Compiler::new(["."])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(["ttm/v1/ttm.proto"])?;
    let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    std::fs::write(
        out.join("ttm_v1_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        .type_attribute(".", "#[allow(clippy::all)]")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
