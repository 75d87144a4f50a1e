package nettap.testapps;

import java.nio.charset.StandardCharsets;

/** The bodies the peers send: {@code tag + "0123456789"} repeated to n bytes (as the Rust harness makes them). */
final class Bodies {
    private Bodies() {}

    static byte[] pattern(String tag, int n) {
        byte[] unit = (tag + "0123456789").getBytes(StandardCharsets.US_ASCII);
        byte[] out = new byte[n];
        for (int i = 0; i < n; i++) {
            out[i] = unit[i % unit.length];
        }
        return out;
    }
}
