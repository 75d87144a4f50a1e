//! Which JSSE methods are instrumented and the prologue each gets: the
//! method hands the call to `nettap.agent.Hooks` (unless that hook is already
//! running on this thread, when it runs its own body), so the hook sees the
//! arguments and the result without any method being added to the class.

use crate::classfile::{self, ClassError, ConstPool, Prologue};

/// The class the agent defines and the instrumented code calls.
pub const HOOKS: &str = "nettap/agent/Hooks";

const SSL_SOCKET: &str = "sun/security/ssl/SSLSocketImpl";
const APP_INPUT: &str = "sun/security/ssl/SSLSocketImpl$AppInputStream";
const APP_OUTPUT: &str = "sun/security/ssl/SSLSocketImpl$AppOutputStream";
const SSL_ENGINE: &str = "sun/security/ssl/SSLEngineImpl";
const WRAP_DESC: &str = "([Ljava/nio/ByteBuffer;IILjava/nio/ByteBuffer;)Ljavax/net/ssl/SSLEngineResult;";
const UNWRAP_DESC: &str = "(Ljava/nio/ByteBuffer;[Ljava/nio/ByteBuffer;II)Ljavax/net/ssl/SSLEngineResult;";

/// Hook kinds, as `Hooks.SOCKET_READ`… number them.
const KIND_SOCKET_READ: u8 = 0;
const KIND_SOCKET_WRITE: u8 = 1;
const KIND_ENGINE: u8 = 2;

/// Names of the classes this agent instruments (internal form).
pub const TARGETS: &[&str] = &[APP_INPUT, APP_OUTPUT, SSL_ENGINE];

// Opcodes used in prologues.
const ICONST_0: u8 = 0x03;
const ILOAD_2: u8 = 0x1c;
const ILOAD_3: u8 = 0x1d;
const ALOAD_0: u8 = 0x2a;
const ALOAD_1: u8 = 0x2b;
const ALOAD_2: u8 = 0x2c;
const ILOAD: u8 = 0x15;
const ALOAD: u8 = 0x19;
const ARETURN: u8 = 0xb0;
const IFEQ: u8 = 0x99;
const IRETURN: u8 = 0xac;
const RETURN: u8 = 0xb1;
const GETFIELD: u8 = 0xb4;
const INVOKESTATIC: u8 = 0xb8;

fn u16_be(x: u16) -> [u8; 2] {
    x.to_be_bytes()
}

/// `if (Hooks.enter(kind)) return Hooks.<hook>(this$0, this, b, off, len);`
/// for a stream's `(byte[], int, int)` method of an SSLSocketImpl inner class.
fn stream_prologue(
    pool: &mut ConstPool,
    class: &str,
    kind: u8,
    hook: &str,
    hook_desc: &str,
    ret: u8,
) -> Prologue {
    let enter = pool.method(HOOKS, "enter", "(I)Z");
    let outer = pool.field(class, "this$0", &format!("L{SSL_SOCKET};"));
    let hook = pool.method(HOOKS, hook, hook_desc);
    let mut code = vec![ICONST_0 + kind, INVOKESTATIC];
    code.extend(u16_be(enter));
    let branch = code.len();
    code.extend([IFEQ, 0, 0, ALOAD_0, GETFIELD]);
    code.extend(u16_be(outer));
    code.extend([ALOAD_0, ALOAD_1, ILOAD_2, ILOAD_3, INVOKESTATIC]);
    code.extend(u16_be(hook));
    code.push(ret);
    Prologue { code, branch, max_stack: 5 }
}

/// `if (Hooks.enter(ENGINE)) return Hooks.engineWrap(this, srcs, off, len, dst);`
/// (or `engineUnwrap(this, src, dsts, off, len)`): both take five arguments
/// whose kinds differ only in places.
fn engine_prologue(pool: &mut ConstPool, wrap: bool) -> Prologue {
    let enter = pool.method(HOOKS, "enter", "(I)Z");
    let (name, desc, args): (&str, &str, &[u8]) = if wrap {
        (
            "engineWrap",
            "(Ljavax/net/ssl/SSLEngine;[Ljava/nio/ByteBuffer;IILjava/nio/ByteBuffer;)Ljavax/net/ssl/SSLEngineResult;",
            &[ALOAD_0, ALOAD_1, ILOAD_2, ILOAD_3, ALOAD, 4],
        )
    } else {
        (
            "engineUnwrap",
            "(Ljavax/net/ssl/SSLEngine;Ljava/nio/ByteBuffer;[Ljava/nio/ByteBuffer;II)Ljavax/net/ssl/SSLEngineResult;",
            &[ALOAD_0, ALOAD_1, ALOAD_2, ILOAD_3, ILOAD, 4],
        )
    };
    let hook = pool.method(HOOKS, name, desc);
    let mut code = vec![ICONST_0 + KIND_ENGINE, INVOKESTATIC];
    code.extend(u16_be(enter));
    let branch = code.len();
    code.extend([IFEQ, 0, 0]);
    code.extend_from_slice(args);
    code.push(INVOKESTATIC);
    code.extend(u16_be(hook));
    code.push(ARETURN);
    Prologue { code, branch, max_stack: 5 }
}

/// The instrumented class for `class` (internal name), or `None` if it is
/// not a target.
pub fn transform(class: &str, bytes: &[u8]) -> Option<Result<Vec<u8>, ClassError>> {
    match class {
        APP_INPUT => Some(classfile::patch(bytes, &[("read", "([BII)I")], |pool, _, _| {
            stream_prologue(
                pool,
                APP_INPUT,
                KIND_SOCKET_READ,
                "socketRead",
                "(Ljava/net/Socket;Ljava/io/InputStream;[BII)I",
                IRETURN,
            )
        })),
        APP_OUTPUT => Some(classfile::patch(bytes, &[("write", "([BII)V")], |pool, _, _| {
            stream_prologue(
                pool,
                APP_OUTPUT,
                KIND_SOCKET_WRITE,
                "socketWrite",
                "(Ljava/net/Socket;Ljava/io/OutputStream;[BII)V",
                RETURN,
            )
        })),
        SSL_ENGINE => {
            Some(classfile::patch(bytes, &[("wrap", WRAP_DESC), ("unwrap", UNWRAP_DESC)], |pool, name, _| {
                engine_prologue(pool, name == "wrap")
            }))
        }
        _ => None,
    }
}
