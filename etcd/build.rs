//! Generates the etcd v3 client from our own minimal copies of etcd's API
//! (`proto/`), with protox (pure Rust) like ttm-proto: no system `protoc`,
//! so a fresh clone builds with the README's one command.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler
        .include_imports(true)
        .open_files(["etcdserverpb/rpc.proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .type_attribute(".", "#[allow(clippy::all)]")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
