//! `libnettap_agent.so`: a JVMTI agent that captures the plaintext of JSSE
//! (`javax.net.ssl`) inside the JVM and streams it to the nettap sensor.
//!
//! Loaded at start (`-agentpath:/path/libnettap_agent.so[=socket=/run/nettap/agent.sock]`;
//! without `socket=` it hands a socket of its own to the sensor, see `sender`)
//! or into a running JVM (`Agent_OnAttach`). The ClassFileLoadHook gives
//! `SSLSocketImpl`'s application streams a prologue that hands each call to
//! `nettap.agent.Hooks` (defined here in the boot loader, its one native
//! method registered here); the native method copies the plaintext into a
//! bounded queue that a background thread sends (`sender`). No panic leaves
//! this library: every entry point catches them and gives up quietly.
#![deny(missing_docs)]

pub mod classfile;
mod jvmti;
mod natives;
pub mod sender;
pub mod transform;
mod wire;

use jvmti::sys;
use jvmti::Jvmti;
use sender::{Route, Sender};
use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// The bytecode of `nettap.agent.Hooks` (compiled by build.rs).
const HOOKS_CLASS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/classes/nettap/agent/Hooks.class"));

struct Agent {
    jvmti: Jvmti,
    route: Route,
    /// Set once `Hooks` is defined, its native registered and java.base may
    /// call it: only then are classes instrumented (or they would fail to link).
    hooks_ready: AtomicBool,
    sender: OnceLock<Arc<Sender>>,
}

static AGENT: OnceLock<Agent> = OnceLock::new();

/// One line on the JVM's stderr.
pub(crate) fn log(msg: &str) {
    eprintln!("nettap agent: {msg}");
}

/// Runs `f`, turning a panic into a logged line.
fn guard<T>(what: &str, f: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(_) => {
            log(&format!("giving up: a bug in {what}; the JVM runs on without capture"));
            None
        }
    }
}

/// The route from the agent's option string (comma-separated key=value):
/// `socket=PATH`, else the handoff.
pub fn parse_options(options: &str) -> Result<Route, String> {
    let mut route = Route::Handoff;
    for opt in options.split(',').filter(|o| !o.is_empty()) {
        match opt.split_once('=') {
            Some(("socket", path)) if !path.is_empty() => route = Route::Path(PathBuf::from(path)),
            _ => return Err(format!("unknown option {opt:?} (known: socket=PATH)")),
        }
    }
    Ok(route)
}

/// Called by the JVM for `-agentpath:` at start-up.
///
/// # Safety
/// Called by the JVM with its own pointers.
#[no_mangle]
pub unsafe extern "system" fn Agent_OnLoad(
    vm: *mut sys::JavaVM,
    options: *mut c_char,
    _r: *mut c_void,
) -> sys::jint {
    entry(vm, options, false);
    0 // never stop the JVM from starting
}

/// Called by the JVM when the agent is loaded into a running JVM.
///
/// # Safety
/// Called by the JVM with its own pointers.
#[no_mangle]
pub unsafe extern "system" fn Agent_OnAttach(
    vm: *mut sys::JavaVM,
    options: *mut c_char,
    _r: *mut c_void,
) -> sys::jint {
    entry(vm, options, true);
    0
}

unsafe fn entry(vm: *mut sys::JavaVM, options: *mut c_char, live: bool) {
    guard("start-up", || {
        let options = if options.is_null() {
            String::new()
        } else {
            CStr::from_ptr(options).to_string_lossy().into_owned()
        };
        if let Err(e) = start(vm, &options, live) {
            log(&format!("giving up: {e}; the JVM runs on without capture"));
        }
    });
}

unsafe fn start(vm: *mut sys::JavaVM, options: &str, live: bool) -> Result<(), String> {
    let route = parse_options(options)?;
    if AGENT.get().is_some() {
        log("already loaded in this JVM");
        return Ok(());
    }
    let jvmti = Jvmti::of(vm).map_err(|e| e.to_string())?;
    jvmti.add_capabilities().map_err(|e| e.to_string())?;
    let callbacks = sys::jvmtiEventCallbacks {
        VMInit: Some(on_vm_init),
        VMDeath: Some(on_vm_death),
        ClassFileLoadHook: Some(on_class_file_load),
        ..Default::default()
    };
    jvmti.set_callbacks(&callbacks).map_err(|e| e.to_string())?;
    let agent = Agent { jvmti, route, hooks_ready: AtomicBool::new(false), sender: OnceLock::new() };
    if AGENT.set(agent).is_err() {
        return Ok(());
    }
    jvmti.enable(sys::jvmtiEvent_JVMTI_EVENT_CLASS_FILE_LOAD_HOOK).map_err(|e| e.to_string())?;
    jvmti.enable(sys::jvmtiEvent_JVMTI_EVENT_VM_DEATH).map_err(|e| e.to_string())?;
    if !live {
        // JNI and class definition wait for the VM to be initialised.
        return jvmti.enable(sys::jvmtiEvent_JVMTI_EVENT_VM_INIT).map_err(|e| e.to_string());
    }
    let mut env: *mut c_void = std::ptr::null_mut();
    if ((**vm).GetEnv.expect("GetEnv"))(vm, &mut env, sys::JNI_VERSION_9 as sys::jint) != 0 {
        return Err("no JNI environment on the attaching thread".into());
    }
    init(env as *mut sys::JNIEnv, true)
}

/// Gives the classes already loaded their prologue by retransformation.
fn retransform_loaded(jvmti: &Jvmti) -> Result<(), String> {
    let targets = jvmti
        .loaded_classes(|sig| {
            transform::TARGETS.iter().any(|t| sig.len() > 2 && &sig[1..sig.len() - 1] == *t)
        })
        .map_err(|e| e.to_string())?;
    jvmti.retransform(&targets).map_err(|e| e.to_string())
}

unsafe extern "C" fn on_vm_init(_jvmti: *mut sys::jvmtiEnv, jni: *mut sys::JNIEnv, _thread: sys::jthread) {
    guard("VMInit", || {
        if let Err(e) = init(jni, false) {
            log(&format!("giving up: {e}; the JVM runs on without capture"));
        }
    });
}

unsafe extern "C" fn on_vm_death(_jvmti: *mut sys::jvmtiEnv, _jni: *mut sys::JNIEnv) {
    guard("VMDeath", || {
        if let Some(sender) = sender() {
            sender.flush(std::time::Duration::from_secs(2));
        }
    });
}

/// Defines `Hooks`, lets java.base read its module, starts the sender.
unsafe fn init(jni: *mut sys::JNIEnv, live: bool) -> Result<(), String> {
    let agent = AGENT.get().ok_or("not started")?;
    let mut env = jni::JNIEnv::from_raw(jni as *mut jni::sys::JNIEnv).map_err(|e| e.to_string())?;
    let hooks = match env.define_class(transform::HOOKS, &jni::objects::JObject::null(), HOOKS_CLASS) {
        Ok(c) => c,
        Err(e) => {
            let _ = env.exception_clear();
            return Err(format!("cannot define {}: {e}", transform::HOOKS));
        }
    };
    natives::register(&mut env, &hooks)?;
    let object = env.find_class("java/lang/Object").map_err(|e| e.to_string())?;
    let get_module = (**jni).GetModule.ok_or("JNI has no GetModule")?;
    let base = get_module(jni, object.as_raw() as sys::jclass);
    let ours = get_module(jni, hooks.as_raw() as sys::jclass);
    if base.is_null() || ours.is_null() {
        return Err("cannot find the modules of java.base and of the hooks".into());
    }
    agent.jvmti.add_module_reads(base, ours).map_err(|e| e.to_string())?;
    agent.hooks_ready.store(true, Ordering::Release);

    let name = agent.jvmti.property("java.vm.name").unwrap_or_default();
    let version = agent
        .jvmti
        .property("java.runtime.version")
        .or_else(|| agent.jvmti.property("java.vm.version"))
        .unwrap_or_default();
    let sender = Arc::new(Sender::new(agent.route.clone()));
    let _ = agent.sender.set(sender.clone());
    if live {
        // Before the hello (the sensor says the JVM is probed when it gets
        // it, so the hooks must be in place by then) and after the queue
        // exists (what the hooks see from now on is kept).
        retransform_loaded(&agent.jvmti)?;
    }
    let hello = nettap_shared_proto::v1::AgentHello {
        pid: std::process::id(),
        runtime: name.clone(),
        runtime_version: version.clone(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        attached_late: live,
    };
    std::thread::Builder::new()
        .name("nettap-agent-sender".into())
        .spawn(move || {
            guard("the sender thread", || sender.run(hello));
        })
        .map_err(|e| format!("cannot start the sender thread: {e}"))?;
    eprintln!("nettap agent attached: {name} {version}, {}", agent.route);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn on_class_file_load(
    _jvmti: *mut sys::jvmtiEnv,
    _jni: *mut sys::JNIEnv,
    _redefined: sys::jclass,
    _loader: sys::jobject,
    name: *const c_char,
    _pd: sys::jobject,
    len: sys::jint,
    data: *const u8,
    new_len: *mut sys::jint,
    new_data: *mut *mut u8,
) {
    if name.is_null() || data.is_null() || len <= 0 {
        return;
    }
    // Every class load passes here: a byte compare first.
    let name = CStr::from_ptr(name).to_bytes();
    if !name.starts_with(b"sun/security/ssl/") {
        return;
    }
    guard("ClassFileLoadHook", || {
        let Some(agent) = AGENT.get() else { return };
        if !agent.hooks_ready.load(Ordering::Acquire) {
            return;
        }
        let name = String::from_utf8_lossy(name);
        let bytes = std::slice::from_raw_parts(data, len as usize);
        match transform::transform(&name, bytes) {
            None => {}
            Some(Ok(new)) => match agent.jvmti.allocate_copy(&new) {
                Ok(mem) => {
                    *new_len = new.len() as sys::jint;
                    *new_data = mem;
                }
                Err(e) => log(&format!("{name} not instrumented: {e}")),
            },
            Some(Err(e)) => log(&format!("{name} not instrumented: {e}")),
        }
    });
}

/// The running agent's sender, once started.
pub(crate) fn sender() -> Option<&'static Arc<Sender>> {
    AGENT.get()?.sender.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        assert_eq!(parse_options("").unwrap(), Route::Handoff);
        assert_eq!(parse_options("socket=/tmp/a.sock").unwrap(), Route::Path("/tmp/a.sock".into()));
        assert!(parse_options("sock=/x").is_err());
        assert!(parse_options("socket=").is_err());
    }
}
