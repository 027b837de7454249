//! Compiles `schema/*.capnp` with the Cap'n Proto compiler embedded as WebAssembly
//! (`capnpc-embedded`), so a default build needs nothing beyond crates.io.

fn main() {
    let schemas = ["schema/records.capnp"];
    for schema in schemas {
        println!("cargo:rerun-if-changed={schema}");
    }
    let mut command = capnpc_embedded::CompileCommand::new();
    command.src_prefix("schema");
    for schema in schemas {
        command.file(schema);
    }
    let request = command.compile().expect("compiling the Cap'n Proto schema");
    let out_dir = std::env::var("OUT_DIR").expect("OUT_DIR is set by cargo");
    capnpc::codegen::CodeGenerationCommand::new()
        .output_directory(out_dir)
        .default_parent_module(vec!["records".into()])
        .run(&request[..])
        .expect("generating Rust code from the Cap'n Proto schema");
}
