//! Generates two things:
//! - server and client stubs for Temporal's `WorkflowService` and `OperatorService`, from the
//!   descriptor set that `temporalio-protos` builds (its messages are reused, not regenerated);
//! - Chronicle's internal protos from `proto/`, compiled with protox (no protoc needed).

use std::{env, fs, path::PathBuf};

use prost::Message;
use protox::file::{
    ChainFileResolver, DescriptorSetFileResolver, GoogleFileResolver, IncludeFileResolver,
};

const TEMPORAL_SERVICES: &[&str] = &[
    "temporal/api/workflowservice/v1/service.proto",
    "temporal/api/operatorservice/v1/service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let descriptor_path = env::var("DEP_TEMPORALIO_PROTOS_DESCRIPTOR_PATH")
        .expect("temporalio-protos exports its descriptor set path");
    println!("cargo:rerun-if-changed={descriptor_path}");
    let temporal_bytes = fs::read(&descriptor_path)?;
    // Kept for gRPC reflection of Temporal's services.
    fs::write(
        PathBuf::from(env::var("OUT_DIR")?).join("temporal_descriptor.bin"),
        &temporal_bytes,
    )?;
    let temporal = prost_types::FileDescriptorSet::decode(temporal_bytes.as_slice())?;

    // 1. Temporal's services only: every message comes from temporalio-protos.
    let services = prost_types::FileDescriptorSet {
        file: temporal
            .file
            .iter()
            .filter(|f| TEMPORAL_SERVICES.contains(&f.name()))
            .cloned()
            .collect(),
    };
    assert_eq!(
        services.file.len(),
        TEMPORAL_SERVICES.len(),
        "service files missing from descriptor set"
    );
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // RPCs Chronicle does not serve yet answer Unimplemented instead of failing the build.
        .generate_default_stubs(true)
        .extern_path(".temporal.api", "::temporalio_protos::temporal::api")
        .compile_fds(services)?;

    // 2. Internal protos, importing Temporal's messages from the same descriptor set.
    let proto_root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());
    let mut resolver = ChainFileResolver::new();
    resolver.add(IncludeFileResolver::new(proto_root.clone()));
    resolver.add(DescriptorSetFileResolver::decode(
        temporal_bytes.as_slice(),
    )?);
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    // prost needs every referenced message in the set; the Temporal and Google files it then
    // also generates land in their own directory and are never included.
    compiler.include_imports(true);
    let mut internal_files = Vec::new();
    collect_protos(&proto_root, &proto_root, &mut internal_files)?;
    internal_files.sort();
    compiler.open_files(&internal_files)?;
    let internal = compiler.file_descriptor_set();
    let internal_out = PathBuf::from(env::var("OUT_DIR")?).join("internal");
    fs::create_dir_all(&internal_out)?;
    let internal_set_path = PathBuf::from(env::var("OUT_DIR")?).join("chronicle_descriptor.bin");
    fs::write(&internal_set_path, compiler.encode_file_descriptor_set())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .out_dir(&internal_out)
        // Ordered maps: a HashMap's iteration order (and so its encoding) differs between
        // processes and even between maps, and the state a command writes must be the same
        // bytes on every replica (`chronicle_storage::digest`).
        .btree_map(".chronicle")
        .extern_path(".temporal.api", "::temporalio_protos::temporal::api")
        // temporalio-protos builds its messages on prost-wkt-types; ours must embed the same.
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::prost_wkt_types")
        .compile_fds(internal)?;
    Ok(())
}

fn collect_protos(root: &PathBuf, dir: &PathBuf, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(
                path.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    Ok(())
}
