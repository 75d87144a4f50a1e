//! `nettap.agent.Hooks`' native methods, what the instrumented JSSE code
//! reaches: they copy the plaintext out of the Java array or direct buffer
//! (only when it would be queued) and queue it. They never throw into Java
//! and never panic.

use crate::sender::{Chunk, ConnKey, Ip};
use jni::objects::{JByteArray, JByteBuffer, JClass};
use jni::sys::jint;
use jni::JNIEnv;
use std::cell::RefCell;
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

/// An address array's bytes (unknown when null or not 4 or 16 long).
fn ip(env: &mut JNIEnv<'_>, a: &JByteArray<'_>) -> Ip {
    if a.is_null() {
        return Ip::default();
    }
    let mut b = [0u8; 16];
    let len = env.get_array_length(a).unwrap_or(0) as usize;
    if !(len == 4 || len == 16) || env.get_byte_array_region(a, 0, as_i8(&mut b[..len])).is_err() {
        let _ = env.exception_clear();
        return Ip::default();
    }
    Ip::new(&b[..len])
}

/// Java's bytes are signed: the same memory seen as `jbyte`s.
fn as_i8(b: &mut [u8]) -> &mut [i8] {
    // SAFETY: i8 and u8 have the same size and alignment, and every bit pattern.
    unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr().cast::<i8>(), b.len()) }
}

thread_local! {
    /// The calling thread's id: gettid is a system call, and a JVM thread keeps its id.
    // SAFETY: gettid has no failure mode.
    static TID: u64 = unsafe { libc::gettid() } as u64;
    /// Where a Java array's bytes are copied before they are queued: kept, so
    /// a chunk costs no allocation.
    static COPY: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A thread's copy buffer keeps at most this much between chunks.
const COPY_KEEP: usize = 64 << 10;

fn boot_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What every hook shares: never unwinds into Java, does nothing without a
/// sender or with a bad range, then copies and queues.
fn hook(
    env: &mut JNIEnv<'_>,
    conn: impl FnOnce(&mut JNIEnv<'_>) -> Option<ConnKey>,
    fields: [jint; 3],
    bytes: Bytes<'_, '_>,
    n: jint,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let Some(sender) = crate::sender() else { return };
        if n <= 0 || bytes.offset() < 0 {
            return;
        }
        let Some(conn) = conn(env) else { return };
        queue(env, sender, conn, fields, bytes, n as usize);
    }));
}

#[allow(clippy::too_many_arguments)]
extern "system" fn data<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    hook_kind: jint,
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
    let conn = |env: &mut JNIEnv<'_>| {
        Some(ConnKey {
            local_ip: ip(env, &local_ip),
            local_port: local_port as u16,
            remote_ip: ip(env, &remote_ip),
            remote_port: remote_port as u16,
            object_id: 0,
            peer_port: 0,
        })
    };
    hook(&mut env, conn, [hook_kind, direction, role], Bytes::Array(&b, off), n);
}

/// Where a chunk's bytes are in the JVM.
enum Bytes<'a, 'l> {
    /// `b[off, off+len)` of a Java array.
    Array(&'a JByteArray<'l>, jint),
    /// `[off, off+len)` of a direct buffer's memory.
    Direct(&'a JByteBuffer<'l>, jint),
}

impl Bytes<'_, '_> {
    fn offset(&self) -> jint {
        match *self {
            Bytes::Array(_, off) | Bytes::Direct(_, off) => off,
        }
    }

    /// Hands `len` bytes to `with` (None when the JVM refuses them): a
    /// direct buffer's memory as it is, an array's bytes through the
    /// thread's copy buffer.
    fn with<R>(&self, env: &mut JNIEnv<'_>, len: usize, with: impl FnOnce(Option<&[u8]>) -> R) -> R {
        match *self {
            Bytes::Array(b, off) => COPY.with(|copy| {
                let Ok(mut buf) = copy.try_borrow_mut() else { return with(None) };
                buf.clear();
                buf.resize(len, 0);
                let got = if env.get_byte_array_region(b, off, as_i8(&mut buf)).is_err() {
                    let _ = env.exception_clear();
                    None
                } else {
                    Some(&buf[..])
                };
                let r = with(got);
                buf.truncate(COPY_KEEP);
                buf.shrink_to(COPY_KEEP);
                r
            }),
            Bytes::Direct(b, off) => {
                let off = off as usize;
                let base = env.get_direct_buffer_address(b).ok();
                let capacity = env.get_direct_buffer_capacity(b).ok();
                let (Some(base), Some(capacity)) = (base, capacity) else { return with(None) };
                if off.checked_add(len).is_none_or(|end| end > capacity) {
                    return with(None);
                }
                // SAFETY: [off, off+len) lies within the buffer's memory, which
                // the buffer object (a live local reference) keeps mapped.
                with(Some(unsafe { std::slice::from_raw_parts(base.add(off), len) }))
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
    let chunk = Chunk { conn, role, direction, hook, ts_boot_ns: boot_ns(), tid: TID.with(|t| *t) };
    if sender.wants(len) {
        bytes.with(env, len, |payload| sender.push(&chunk, len, payload));
    } else {
        sender.push(&chunk, len, None);
    }
}

extern "system" fn enabled<'l>(_env: JNIEnv<'l>, _class: JClass<'l>) -> jni::sys::jboolean {
    let on = catch_unwind(|| crate::sender().is_some_and(|s| s.wants(1))).unwrap_or(false);
    on as jni::sys::jboolean
}

/// An SSLEngine's connection: no endpoints, its identity and peer port.
fn engine_conn(engine: jint, peer_port: jint) -> Option<ConnKey> {
    // An engine with no peer port cannot be matched to a connection.
    (1..=65535).contains(&peer_port).then(|| ConnKey {
        local_ip: Ip::default(),
        local_port: 0,
        remote_ip: Ip::default(),
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
    hook_kind: jint,
    direction: jint,
    role: jint,
    engine: jint,
    peer_port: jint,
    b: JByteArray<'l>,
    off: jint,
    n: jint,
) {
    let conn = |_: &mut JNIEnv<'_>| engine_conn(engine, peer_port);
    hook(&mut env, conn, [hook_kind, direction, role], Bytes::Array(&b, off), n);
}

#[allow(clippy::too_many_arguments)]
extern "system" fn engine_direct<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    hook_kind: jint,
    direction: jint,
    role: jint,
    engine: jint,
    peer_port: jint,
    b: JByteBuffer<'l>,
    off: jint,
    n: jint,
) {
    let conn = |_: &mut JNIEnv<'_>| engine_conn(engine, peer_port);
    hook(&mut env, conn, [hook_kind, direction, role], Bytes::Direct(&b, off), n);
}
