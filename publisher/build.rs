//! With the `dpdk` feature: compiles the C shim over DPDK (`dpdk/shim.c`) against the
//! system's libdpdk (pkg-config; Debian: `libdpdk-dev`) and generates its bindings.
//! Without it: nothing.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "dpdk")]
    dpdk::build();
}

#[cfg(feature = "dpdk")]
mod dpdk {
    use std::path::PathBuf;
    use std::process::Command;

    fn pkg_config(args: &[&str]) -> Vec<String> {
        let output = Command::new("pkg-config")
            .args(args)
            .arg("libdpdk")
            .output()
            .unwrap_or_else(|e| panic!("the dpdk feature needs pkg-config ({e}): apt-get install pkg-config libdpdk-dev"));
        assert!(
            output.status.success(),
            "the dpdk feature needs libdpdk (pkg-config libdpdk failed: {}): apt-get install libdpdk-dev",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        // `-include rte_config.h` is one flag in two words
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let mut flags = Vec::new();
        let mut words = text.split_whitespace();
        while let Some(word) = words.next() {
            if word == "-include" {
                if let Some(file) = words.next() {
                    flags.push(format!("-include{file}"));
                }
            } else {
                flags.push(word.to_owned());
            }
        }
        flags
    }

    pub fn build() {
        println!("cargo:rerun-if-changed=dpdk/shim.c");
        println!("cargo:rerun-if-changed=dpdk/shim.h");
        let cflags = pkg_config(&["--cflags"]);
        let mut shim = cc::Build::new();
        shim.file("dpdk/shim.c").opt_level(3).warnings(true);
        for flag in &cflags {
            shim.flag(flag);
        }
        shim.compile("mdi_dpdk_shim");
        for flag in pkg_config(&["--libs"]) {
            if let Some(dir) = flag.strip_prefix("-L") {
                println!("cargo:rustc-link-search=native={dir}");
            } else if let Some(lib) = flag.strip_prefix("-l") {
                println!("cargo:rustc-link-lib={lib}");
            }
        }
        let bindings = bindgen::Builder::default()
            .header("dpdk/shim.h")
            .allowlist_function("mdi_dpdk_.*")
            .opaque_type("rte_.*")
            .generate()
            .expect("generating the DPDK shim bindings");
        let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
        bindings
            .write_to_file(out.join("dpdk_shim.rs"))
            .expect("writing the DPDK shim bindings");
    }
}
