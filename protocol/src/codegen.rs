//! The Rust code generated from the Cap'n Proto schema (feature `schema-codegen`, ADR
//! 0009): the committed `src/records/records_capnp.rs` is what this produces from
//! `schema/*.capnp`, checked by a test and rewritten by the `regenerate_schema` example.
//! Nothing else builds the compiler: a default build compiles the committed file.

use std::path::Path;

/// The schema files, relative to the crate.
pub const SCHEMAS: [&str; 1] = ["schema/records.capnp"];

/// Where the generated code is committed, relative to the crate.
pub const GENERATED: &str = "src/records/records_capnp.rs";

/// Why the code could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    /// The schema compiler failed (a syntax or type error in the schema).
    #[error("compiling the schema: {0}")]
    Compile(String),
    /// The Rust generator failed, or its output could not be read.
    #[error("generating Rust code: {0}")]
    Generate(String),
}

/// Compiles the schemas under `crate_root` with the Cap'n Proto compiler embedded as
/// WebAssembly and returns the generated Rust code, as committed.
pub fn generate(crate_root: &Path) -> Result<String, CodegenError> {
    let mut command = capnpc_embedded::CompileCommand::new();
    command.src_prefix(crate_root.join("schema"));
    for schema in SCHEMAS {
        command.file(crate_root.join(schema));
    }
    let request = command
        .compile()
        .map_err(|e| CodegenError::Compile(e.to_string()))?;
    let out = tempfile_dir()?;
    capnpc::codegen::CodeGenerationCommand::new()
        .output_directory(&out)
        .default_parent_module(vec!["records".into()])
        .run(&request[..])
        .map_err(|e| CodegenError::Generate(e.to_string()))?;
    let code = std::fs::read_to_string(out.join("records_capnp.rs"))
        .map_err(|e| CodegenError::Generate(e.to_string()));
    let _ = std::fs::remove_dir_all(&out);
    code
}

/// A fresh private directory for the generator's output.
fn tempfile_dir() -> Result<std::path::PathBuf, CodegenError> {
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let dir = base.join(format!("mdi-codegen-{}-{attempt}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(CodegenError::Generate(e.to_string())),
        }
    }
    Err(CodegenError::Generate("no temporary directory".into()))
}
