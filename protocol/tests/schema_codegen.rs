//! ADR 0009: the committed generated code is exactly what the schema generates.
#![cfg(feature = "schema-codegen")]

#[test]
fn generated_code_is_what_the_schema_generates() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let fresh = mdi_protocol::codegen::generate(root).expect("generating from the schema");
    let committed = std::fs::read_to_string(root.join(mdi_protocol::codegen::GENERATED))
        .expect("the committed generated code");
    assert!(
        fresh == committed,
        "{} is not what schema/*.capnp generates: run \
         `cargo run -p mdi-protocol --features schema-codegen --example regenerate_schema`",
        mdi_protocol::codegen::GENERATED
    );
}
