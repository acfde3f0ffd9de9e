//! Generates the ttm.v1 code with protox (a pure-Rust proto compiler), so a
//! fresh machine needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=ttm");
    let fds = protox::compile(["ttm/v1/ttm.proto"], ["."])?;
    tonic_prost_build::configure()
        .type_attribute(".", "#[allow(clippy::all)]")
        .compile_fds(fds)?;
    Ok(())
}
