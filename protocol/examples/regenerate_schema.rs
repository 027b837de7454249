//! Rewrites `protocol/src/records/records_capnp.rs` from `protocol/schema/*.capnp` (ADR
//! 0009): `cargo run -p mdi-protocol --features schema-codegen --example regenerate_schema`.
//! The test `generated_code_is_what_the_schema_generates` fails until this has been run
//! after a schema change.

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let code = mdi_protocol::codegen::generate(root).unwrap_or_else(|e| {
        eprintln!("regenerate_schema: {e}");
        std::process::exit(1);
    });
    let path = root.join(mdi_protocol::codegen::GENERATED);
    std::fs::write(&path, code).unwrap_or_else(|e| {
        eprintln!("regenerate_schema: writing {}: {e}", path.display());
        std::process::exit(1);
    });
    println!("wrote {}", path.display());
}
