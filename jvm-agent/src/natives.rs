//! `nettap.agent.Hooks`' native methods, what the instrumented JSSE code
//! reaches: they copy the plaintext out of the Java array or direct buffer
//! (only when it would be queued) and queue it. They never throw into Java
//! and never panic.

use crate::sender::{Chunk, ConnKey};
use jni::objects::{JByteArray, JByteBuffer, JClass};
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
            sig: "(IIIII[BII)V".into(),
            fn_ptr: engine_data as *mut std::ffi::c_void,
        },
        jni::NativeMethod {
            name: "engineDirect".into(),
            sig: "(IIIIILjava/nio/ByteBuffer;II)V".into(),
            fn_ptr: engine_direct as *mut std::ffi::c_void,
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

thread_local! {
    /// The calling thread's id: gettid is a system call, and a JVM thread keeps its id.
    // SAFETY: gettid has no failure mode.
    static TID: u64 = unsafe { libc::gettid() } as u64;
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
        queue(&mut env, sender, conn, [hook, direction, role], Bytes::Array(&b, off), len);
    }));
}

/// Where a chunk's bytes are in the JVM.
enum Bytes<'a, 'l> {
    /// `b[off, off+len)` of a Java array.
    Array(&'a JByteArray<'l>, jint),
    /// `[off, off+len)` of a direct buffer's memory.
    Direct(&'a JByteBuffer<'l>, usize),
}

impl Bytes<'_, '_> {
    /// The `len` bytes, copied out once; None when the JVM refuses them.
    fn copy(&self, env: &mut JNIEnv<'_>, len: usize) -> Option<Vec<u8>> {
        match *self {
            Bytes::Array(b, off) => {
                let mut buf = vec![0i8; len];
                if env.get_byte_array_region(b, off, &mut buf).is_err() {
                    let _ = env.exception_clear();
                    return None;
                }
                // i8 → u8 of the same bytes (collected in place).
                Some(buf.into_iter().map(|x| x as u8).collect())
            }
            Bytes::Direct(b, off) => {
                let base = env.get_direct_buffer_address(b).ok()?;
                let capacity = env.get_direct_buffer_capacity(b).ok()?;
                if off.checked_add(len).is_none_or(|end| end > capacity) {
                    return None;
                }
                // SAFETY: [off, off+len) lies within the buffer's memory, which
                // the buffer object (a live local reference) keeps mapped.
                Some(unsafe { std::slice::from_raw_parts(base.add(off), len) }.to_vec())
            }
        }
    }
}

/// Copies the chunk's bytes (when they would be queued) and queues them.
fn queue(
    env: &mut JNIEnv<'_>,
    sender: &crate::sender::Sender,
    conn: ConnKey,
    [hook, direction, role]: [jint; 3],
    bytes: Bytes<'_, '_>,
    len: usize,
) {
    let payload = if sender.wants(len) { bytes.copy(env, len).unwrap_or_default() } else { Vec::new() };
    let chunk = Chunk { conn, role, direction, hook, ts_boot_ns: boot_ns(), tid: TID.with(|t| *t) };
    sender.push(chunk, len, payload);
}

extern "system" fn enabled<'l>(_env: JNIEnv<'l>, _class: JClass<'l>) -> jni::sys::jboolean {
    let on = catch_unwind(|| crate::sender().is_some_and(|s| s.wants(1))).unwrap_or(false);
    on as jni::sys::jboolean
}

/// An SSLEngine's connection: no endpoints, its identity and peer port.
fn engine_conn(engine: jint, peer_port: jint) -> Option<ConnKey> {
    // An engine with no peer port cannot be matched to a connection.
    (1..=65535).contains(&peer_port).then(|| ConnKey {
        local_ip: Vec::new(),
        local_port: 0,
        remote_ip: Vec::new(),
        remote_port: 0,
        // The identity hash with a bit set, so it is never 0 ("none").
        object_id: u64::from(engine as u32) | 1 << 32,
        peer_port: peer_port as u16,
    })
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
    off: jint,
    n: jint,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let Some(sender) = crate::sender() else { return };
        let Some(conn) = engine_conn(engine, peer_port) else { return };
        if n <= 0 || off < 0 {
            return;
        }
        queue(&mut env, sender, conn, [hook, direction, role], Bytes::Array(&b, off), n as usize);
    }));
}

#[allow(clippy::too_many_arguments)]
extern "system" fn engine_direct<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    hook: jint,
    direction: jint,
    role: jint,
    engine: jint,
    peer_port: jint,
    b: JByteBuffer<'l>,
    off: jint,
    n: jint,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let Some(sender) = crate::sender() else { return };
        let Some(conn) = engine_conn(engine, peer_port) else { return };
        if n <= 0 || off < 0 {
            return;
        }
        queue(&mut env, sender, conn, [hook, direction, role], Bytes::Direct(&b, off as usize), n as usize);
    }));
}
