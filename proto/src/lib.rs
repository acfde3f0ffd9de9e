//! The `ttm.v1` gRPC API of `ttmd`, generated from `proto/ttm/v1/ttm.proto`,
//! and the conventions client and daemon must agree on beyond the messages:
//! where the socket lives and which API generation is spoken.

pub mod channel;
pub mod headers;
pub mod paths;

/// Generated messages, client and server for `package ttm.v1`.
pub mod v1 {
    tonic::include_proto!("ttm.v1");
}

/// The encoded `google.protobuf.FileDescriptorSet` of `ttm/v1/ttm.proto`
/// (comments included), for gRPC server reflection: `ttmd` serves it so
/// generic clients (grpcurl, Postman, grpcio's reflection client) can list
/// and describe the API without the .proto file.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ttm_v1_descriptor.bin"));

/// The API generation of this crate (`ttm.v1`). Client and daemon exchange it
/// in `Hello`; it changes only if the package is ever renamed to `ttm.v2`.
pub const API_VERSION: u32 = 1;

/// The package version shared by `ttmd` and `ttmctl` built from this tree.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
