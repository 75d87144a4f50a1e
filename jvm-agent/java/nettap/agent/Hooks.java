package nettap.agent;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.Socket;
import java.nio.ByteBuffer;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLEngineResult;
import javax.net.ssl.SSLException;
import javax.net.ssl.SSLSocket;

/**
 * What the instrumented JSSE methods call. The agent defines this class in the
 * boot loader and registers its native method; each instrumented method
 * starts with {@code if (Hooks.enter(K)) return Hooks.xxx(this, args...);},
 * and the call below runs the method again with the flag set, so its own body
 * runs unchanged and the hook sees its arguments and result. Nothing here may
 * disturb the application: every failure of the capture is swallowed.
 */
public final class Hooks {
    private Hooks() {}

    /** Hook kinds: per-thread "inside" flags, one per kind. */
    public static final int SOCKET_READ = 0;
    public static final int SOCKET_WRITE = 1;
    public static final int ENGINE = 2;
    private static final int KINDS = 3;

    /** Set by the agent when capture stops for good. */
    static volatile boolean disabled;

    /** Per thread: which hooks are running (no subclass: one class to define). */
    private static final ThreadLocal<boolean[]> INSIDE = new ThreadLocal<>();

    private static boolean[] inside() {
        boolean[] in = INSIDE.get();
        if (in == null) {
            in = new boolean[KINDS];
            INSIDE.set(in);
        }
        return in;
    }

    /** Direction and hook numbers as agent.proto has them. */
    private static final int SEND = 0, RECV = 1;
    private static final int HOOK_SOCKET_READ = 1, HOOK_SOCKET_WRITE = 2, HOOK_ENGINE_UNWRAP = 3, HOOK_ENGINE_WRAP = 4;
    /** Roles as records.proto has them. */
    private static final int ROLE_UNKNOWN = 0, ROLE_CLIENT = 1, ROLE_SERVER = 2;

    /** True when the caller should hand the call to its hook (not already inside it). */
    public static boolean enter(int kind) {
        if (disabled) {
            return false;
        }
        return !inside()[kind];
    }

    /** SSLSocketImpl$AppInputStream.read(byte[], int, int). */
    public static int socketRead(Socket socket, InputStream in, byte[] b, int off, int len) throws IOException {
        boolean[] inside = inside();
        inside[SOCKET_READ] = true;
        int n;
        try {
            n = in.read(b, off, len);
        } finally {
            inside[SOCKET_READ] = false;
        }
        if (n > 0) {
            capture(socket, RECV, HOOK_SOCKET_READ, b, off, n);
        }
        return n;
    }

    /** SSLSocketImpl$AppOutputStream.write(byte[], int, int). */
    public static void socketWrite(Socket socket, OutputStream out, byte[] b, int off, int len) throws IOException {
        boolean[] inside = inside();
        inside[SOCKET_WRITE] = true;
        try {
            out.write(b, off, len);
        } finally {
            inside[SOCKET_WRITE] = false;
        }
        if (len > 0) {
            capture(socket, SEND, HOOK_SOCKET_WRITE, b, off, len);
        }
    }

    /** SSLEngineImpl.wrap(ByteBuffer[], int, int, ByteBuffer): the plaintext it consumed. */
    public static SSLEngineResult engineWrap(SSLEngine e, ByteBuffer[] srcs, int off, int len, ByteBuffer dst)
            throws SSLException {
        int[] before = positions(srcs, off, len);
        boolean[] inside = inside();
        inside[ENGINE] = true;
        SSLEngineResult r;
        try {
            r = e.wrap(srcs, off, len, dst);
        } finally {
            inside[ENGINE] = false;
        }
        if (r.bytesConsumed() > 0) {
            captureBuffers(e, SEND, HOOK_ENGINE_WRAP, srcs, off, len, before);
        }
        return r;
    }

    /** SSLEngineImpl.unwrap(ByteBuffer, ByteBuffer[], int, int): the plaintext it produced. */
    public static SSLEngineResult engineUnwrap(SSLEngine e, ByteBuffer src, ByteBuffer[] dsts, int off, int len)
            throws SSLException {
        int[] before = positions(dsts, off, len);
        boolean[] inside = inside();
        inside[ENGINE] = true;
        SSLEngineResult r;
        try {
            r = e.unwrap(src, dsts, off, len);
        } finally {
            inside[ENGINE] = false;
        }
        if (r.bytesProduced() > 0) {
            captureBuffers(e, RECV, HOOK_ENGINE_UNWRAP, dsts, off, len, before);
        }
        return r;
    }

    private static int[] positions(ByteBuffer[] bufs, int off, int len) {
        if (bufs == null || off < 0 || len < 0 || off > bufs.length - len) {
            return null; // the call itself will refuse these arguments
        }
        int[] pos = new int[len];
        for (int i = 0; i < len; i++) {
            pos[i] = bufs[off + i] == null ? 0 : bufs[off + i].position();
        }
        return pos;
    }

    /**
     * The bytes between each buffer's position before the call and after it,
     * in order, one chunk per buffer: straight from a heap buffer's array or
     * a direct buffer's memory, so nothing is copied in Java.
     */
    private static void captureBuffers(SSLEngine e, int direction, int hook, ByteBuffer[] bufs, int off, int len,
            int[] before) {
        try {
            if (before == null || !enabled()) {
                return;
            }
            int role = -1, id = 0, peerPort = 0;
            for (int i = 0; i < len; i++) {
                ByteBuffer b = bufs[off + i];
                int n = b.position() - before[i];
                if (n <= 0) {
                    continue;
                }
                if (role < 0) {
                    role = e.getUseClientMode() ? ROLE_CLIENT : ROLE_SERVER;
                    id = System.identityHashCode(e);
                    peerPort = e.getPeerPort();
                }
                if (b.hasArray()) {
                    engineData(hook, direction, role, id, peerPort, b.array(), b.arrayOffset() + before[i], n);
                } else if (b.isDirect()) {
                    engineDirect(hook, direction, role, id, peerPort, b, before[i], n);
                } else { // a read-only heap buffer: its array is not handed out
                    byte[] copy = new byte[n];
                    b.duplicate().position(before[i]).get(copy, 0, n);
                    engineData(hook, direction, role, id, peerPort, copy, 0, n);
                }
            }
        } catch (Throwable t) {
            // The application's call succeeded; capture is best effort.
        }
    }

    private static void capture(Socket s, int direction, int hook, byte[] b, int off, int n) {
        try {
            if (!enabled()) {
                return; // no sensor: skip the address look-ups
            }
            InetAddress local = s.getLocalAddress();
            InetAddress remote = s.getInetAddress();
            if (remote == null) {
                return;
            }
            int role = ROLE_UNKNOWN;
            if (s instanceof SSLSocket) {
                role = ((SSLSocket) s).getUseClientMode() ? ROLE_CLIENT : ROLE_SERVER;
            }
            data(hook, direction, role, local == null ? null : local.getAddress(), s.getLocalPort(),
                    remote.getAddress(), s.getPort(), b, off, n);
        } catch (Throwable t) {
            // The application's call succeeded; capture is best effort.
        }
    }

    /** Whether the agent would queue plaintext now (a sensor is connected): saves copying buffers for nothing. */
    private static native boolean enabled();

    /** Queues {@code b[off, off+n)} of an SSLEngine, named by its identity and peer port. */
    private static native void engineData(int hook, int direction, int role, int engineId, int peerPort, byte[] b,
            int off, int n);

    /** The same for a direct buffer's bytes {@code [off, off+n)}. */
    private static native void engineDirect(int hook, int direction, int role, int engineId, int peerPort,
            ByteBuffer b, int off, int n);

    /** Copies {@code b[off, off+n)} into the agent's queue (or counts it as dropped). */
    private static native void data(int hook, int direction, int role, byte[] localIp, int localPort,
            byte[] remoteIp, int remotePort, byte[] b, int off, int n);
}
