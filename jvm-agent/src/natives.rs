//! `nettap.agent.Hooks.data`, the one native method the instrumented JSSE
//! code reaches: it copies the plaintext out of the Java array (only when it
//! would be queued) and queues it. It never throws into Java and never panics.

use crate::sender::{Chunk, ConnKey};
use jni::objects::{JByteArray, JClass};
use jni::sys::jint;
use jni::JNIEnv;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Registers `data` on the defined `Hooks` class.
pub fn register(env: &mut JNIEnv<'_>, hooks: &JClass<'_>) -> Result<(), String> {
    let method = jni::NativeMethod {
        name: "data".into(),
        sig: "(III[BI[BI[BII)V".into(),
        fn_ptr: data as *mut std::ffi::c_void,
    };
    env.register_native_methods(hooks, &[method]).map_err(|e| {
        let _ = env.exception_clear();
        format!("cannot register the native method: {e}")
    })
}

fn ip(env: &mut JNIEnv<'_>, a: &JByteArray<'_>) -> Vec<u8> {
    if a.is_null() {
        return Vec::new();
    }
    env.convert_byte_array(a).unwrap_or_default()
}

fn boot_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[allow(clippy::too_many_arguments)]
extern "system" fn data<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    hook: jint,
    direction: jint,
    role: jint,
    local_ip: JByteArray<'l>,
    local_port: jint,
    remote_ip: JByteArray<'l>,
    remote_port: jint,
    b: JByteArray<'l>,
    off: jint,
    n: jint,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let Some(sender) = crate::sender() else { return };
        if n <= 0 || off < 0 {
            return;
        }
        let len = n as usize;
        let conn = ConnKey {
            local_ip: ip(&mut env, &local_ip),
            local_port: local_port as u16,
            remote_ip: ip(&mut env, &remote_ip),
            remote_port: remote_port as u16,
        };
        let mut payload = Vec::new();
        if sender.wants(len) {
            let mut buf = vec![0i8; len];
            if env.get_byte_array_region(&b, off, &mut buf).is_ok() {
                // i8 → u8 of the same bytes.
                payload = buf.into_iter().map(|x| x as u8).collect();
            } else {
                let _ = env.exception_clear();
            }
        }
        let chunk = Chunk {
            conn,
            role,
            direction,
            hook,
            ts_boot_ns: boot_ns(),
            // SAFETY: gettid has no failure mode.
            tid: unsafe { libc::gettid() } as u64,
        };
        sender.push(chunk, len, payload);
    }));
}
