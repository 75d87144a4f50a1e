//! What the JVM agent tests need: the JDKs, the agent library, the
//! java-testapps jar (built with Maven, offline from the cache that
//! ci/install.sh fills) and Java peers started with the agent.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// JDK 17 (Debian's) and the machine's second JDK (Temurin 25), or the
/// homes listed in `$NETTAP_JDKS` (colon-separated).
pub fn jdks() -> Vec<PathBuf> {
    let list = std::env::var("NETTAP_JDKS").unwrap_or_else(|_| {
        "/usr/lib/jvm/java-17-openjdk-amd64:/usr/lib/jvm/temurin-25-jdk-amd64".to_string()
    });
    list.split(':').filter(|s| !s.is_empty()).map(PathBuf::from).collect()
}

/// The JDK home whose `bin/java` reports major version `major`.
pub fn jdk(major: u32) -> PathBuf {
    for home in jdks() {
        let out = Command::new(home.join("bin/java")).arg("-version").output();
        let Ok(out) = out else { continue };
        let text = String::from_utf8_lossy(&out.stderr);
        if text.contains(&format!("version \"{major}")) {
            return home;
        }
    }
    panic!("no JDK {major} among {:?} (ci/install.sh installs them; or set NETTAP_JDKS)", jdks());
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `target/debug/libnettap_agent.so` (or `$NETTAP_AGENT`), refused when
/// older than its sources.
pub fn agent_lib() -> PathBuf {
    if let Some(p) = std::env::var_os("NETTAP_AGENT") {
        return PathBuf::from(p);
    }
    let lib = root().join("target/debug/libnettap_agent.so");
    assert!(lib.exists(), "{} does not exist: `cargo build -p nettap-jvm-agent` first", lib.display());
    let built = std::fs::metadata(&lib).and_then(|m| m.modified()).unwrap();
    for dir in ["jvm-agent/src", "jvm-agent/java"] {
        let mut stack = vec![root().join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    let m = e.metadata().and_then(|m| m.modified()).unwrap();
                    assert!(
                        m <= built,
                        "{} is older than {}: `cargo build -p nettap-jvm-agent` first",
                        lib.display(),
                        e.path().display()
                    );
                }
            }
        }
    }
    lib
}

/// The Maven repository cache ci/install.sh fills.
pub fn maven_repo() -> PathBuf {
    std::env::var_os("NETTAP_M2")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap()).join(".cache/nettap/m2"))
}

/// `java-testapps/jdk-peers/target/jdk-peers.jar`, built once per test run
/// (`mvn -o package`, which builds `libs-peers` too).
pub fn testapps_jar() -> PathBuf {
    static JAR: OnceLock<PathBuf> = OnceLock::new();
    JAR.get_or_init(|| {
        let dir = root().join("java-testapps");
        let out = Command::new("mvn")
            .args(["-q", "-B", "-o", "-Dstyle.color=never"])
            .arg(format!("-Dmaven.repo.local={}", maven_repo().display()))
            .arg("package")
            .current_dir(&dir)
            .env("JAVA_HOME", jdk(17))
            .output()
            .expect("Maven (`mvn`) is required to build java-testapps (ci/install.sh installs it)");
        assert!(
            out.status.success(),
            "mvn -o package in java-testapps failed (ci/install.sh fills the Maven cache):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        dir.join("jdk-peers/target/jdk-peers.jar")
    })
    .clone()
}

/// Modes of `libs-peers` (OkHttp, Apache HttpClient 5, Netty, Jetty); the
/// others are `jdk-peers`'.
const LIBS_MODES: &[&str] =
    &["jetty-server", "okhttp-client", "apache-client", "netty-client", "httpclient-h2-client"];

/// `java [-agentpath:…] …` running java-testapps' `mode` on JDK `home`:
/// `jdk-peers.jar`, or `libs-peers.jar` with its libraries.
pub fn java_mode(home: &Path, agent_socket: Option<&Path>, mode: &str) -> Command {
    if !LIBS_MODES.contains(&mode) {
        let mut c = java_peer(home, agent_socket);
        c.arg(mode);
        return c;
    }
    let target = testapps_jar().parent().unwrap().join("../../libs-peers/target");
    let mut c = Command::new(home.join("bin/java"));
    if let Some(sock) = agent_socket {
        c.arg(format!("-agentpath:{}=socket={}", agent_lib().display(), sock.display()));
    }
    c.arg("-cp")
        .arg(format!("{}:{}/*", target.join("libs-peers.jar").display(), target.join("lib").display()))
        .arg("nettap.testapps.LibsMain")
        .arg(mode);
    c
}

/// `java [-agentpath:…=socket=SOCK] -jar jdk-peers.jar` of JDK `home`.
pub fn java_peer(home: &Path, agent_socket: Option<&Path>) -> Command {
    let mut c = Command::new(home.join("bin/java"));
    if let Some(sock) = agent_socket {
        c.arg(format!("-agentpath:{}=socket={}", agent_lib().display(), sock.display()));
    }
    c.arg("-jar").arg(testapps_jar());
    c
}

pub use crate::peers::{KillOnDrop, SpawnGuarded};
