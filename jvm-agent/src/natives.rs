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
    let methods = [
        jni::NativeMethod {
            name: "data".into(),
            sig: "(III[BI[BI[BII)V".into(),
            fn_ptr: data as *mut std::ffi::c_void,
        },
        jni::NativeMethod {
            name: "engineData".into(),
            sig: "(IIIII[BI)V".into(),
            fn_ptr: engine_data as *mut std::ffi::c_void,
        },
        jni::NativeMethod {
            name: "enabled".into(),
            sig: "()Z".into(),
            fn_ptr: enabled as *mut std::ffi::c_void,
        },
    ];
    env.register_native_methods(hooks, &methods).map_err(|e| {
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
            object_id: 0,
            peer_port: 0,
        };
        queue(&mut env, sender, conn, [hook, direction, role], &b, off, len);
    }));
}

/// Copies `b[off, off+len)` (when it would be queued) and queues it.
fn queue(
    env: &mut JNIEnv<'_>,
    sender: &crate::sender::Sender,
    conn: ConnKey,
    [hook, direction, role]: [jint; 3],
    b: &JByteArray<'_>,
    off: jint,
    len: usize,
) {
    let mut payload = Vec::new();
    if sender.wants(len) {
        let mut buf = vec![0i8; len];
        if env.get_byte_array_region(b, off, &mut buf).is_ok() {
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
}

extern "system" fn enabled<'l>(_env: JNIEnv<'l>, _class: JClass<'l>) -> jni::sys::jboolean {
    let on = catch_unwind(|| crate::sender().is_some_and(|s| s.wants(1))).unwrap_or(false);
    on as jni::sys::jboolean
}

#[allow(clippy::too_many_arguments)]
extern "system" fn engine_data<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    hook: jint,
    direction: jint,
    role: jint,
    engine: jint,
    peer_port: jint,
    b: JByteArray<'l>,
    n: jint,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let Some(sender) = crate::sender() else { return };
        if n <= 0 || !(1..=65535).contains(&peer_port) {
            return; // an engine with no peer port cannot be matched to a connection
        }
        let conn = ConnKey {
            local_ip: Vec::new(),
            local_port: 0,
            remote_ip: Vec::new(),
            remote_port: 0,
            // The identity hash with a bit set, so it is never 0 ("none").
            object_id: u64::from(engine as u32) | 1 << 32,
            peer_port: peer_port as u16,
        };
        queue(&mut env, sender, conn, [hook, direction, role], &b, 0, n as usize);
    }));
}
