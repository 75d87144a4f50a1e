//! Two things come from the JDK at build time: Rust types for `jvmti.h`
//! (bindgen, so no function-table index is written by hand) and the bytecode
//! of `nettap.agent.Hooks` (javac), which the agent defines in the JVM at
//! run time. The JDK is `$JAVA_HOME`, else the one whose `javac` is on PATH.

use std::path::{Path, PathBuf};
use std::process::Command;

fn jdk_home() -> PathBuf {
    if let Some(home) = std::env::var_os("JAVA_HOME").map(PathBuf::from) {
        if home.join("include/jvmti.h").exists() {
            return home;
        }
    }
    let javac = Command::new("sh")
        .args(["-c", "command -v javac"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let javac = javac.unwrap_or_else(|| {
        panic!("a JDK is required to build the JVM agent (javac and include/jvmti.h): set JAVA_HOME or put javac on PATH")
    });
    let home = std::fs::canonicalize(&javac).unwrap().parent().unwrap().parent().unwrap().to_path_buf();
    assert!(home.join("include/jvmti.h").exists(), "{} has no include/jvmti.h", home.display());
    home
}

fn main() {
    println!("cargo:rerun-if-env-changed=JAVA_HOME");
    let jdk = jdk_home();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());

    let include = jdk.join("include");
    bindgen::Builder::default()
        .header(include.join("jvmti.h").display().to_string())
        .clang_arg(format!("-I{}", include.display()))
        .clang_arg(format!("-I{}", include.join("linux").display()))
        .allowlist_type("jvmti.*|_jvmtiEnv|jvmtiInterface_1_")
        .allowlist_var("JVMTI_.*|JNI_.*")
        .derive_default(true)
        .generate()
        .expect("bindgen reads jvmti.h")
        .write_to_file(out.join("jvmti.rs"))
        .unwrap();

    let src = Path::new("java/nettap/agent/Hooks.java");
    println!("cargo:rerun-if-changed={}", src.display());
    let classes = out.join("classes");
    let status = Command::new(jdk.join("bin/javac"))
        .args(["--release", "11", "-nowarn", "-d"])
        .arg(&classes)
        .arg(src)
        .status()
        .expect("javac runs");
    assert!(status.success(), "javac {} failed", src.display());
}
