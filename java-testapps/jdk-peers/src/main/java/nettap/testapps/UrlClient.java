package nettap.testapps;

import java.io.InputStream;
import java.io.OutputStream;
import java.net.URL;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import javax.net.ssl.HttpsURLConnection;

/**
 * HttpsURLConnection (SSLSocket underneath): one {@code POST /echo/N} per
 * size, in order, over keep-alive; exits non-zero unless every answer is
 * 200 with the expected body. With {@code --wait-file F} it first makes one
 * {@code POST /echo/0} (so JSSE's classes are loaded), then writes
 * {@code F.waiting} and waits for F. {@code --repeat N} makes the requests N
 * times, {@code --until-file F} until F exists; the time they took is printed.
 */
final class UrlClient {
    private UrlClient() {}

    static void run(Args a) throws Exception {
        HttpsURLConnection.setDefaultSSLSocketFactory(Tls.client(a.get("cert")).getSocketFactory());
        String base = "https://" + a.get("host", "127.0.0.1") + ":" + a.integer("port");
        String waitFile = a.get("wait-file", "");
        if (!waitFile.isEmpty()) {
            post(base, 0);
            Files.writeString(Path.of(waitFile + ".waiting"), "waiting\n");
            Path f = Path.of(waitFile);
            long deadline = System.nanoTime() + 60_000_000_000L;
            while (!Files.exists(f)) {
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException(waitFile + " never appeared");
                }
                Thread.sleep(20);
            }
        }
        // --repeat N: the sizes N times; --until-file F: again until F exists.
        int repeat = Integer.parseInt(a.get("repeat", "1"));
        String until = a.get("until-file", "");
        long start = System.nanoTime();
        int done = 0;
        for (int round = 0; until.isEmpty() ? round < repeat : !Files.exists(Path.of(until)); round++) {
            for (int size : a.sizes()) {
                post(base, size);
                done++;
            }
        }
        long ms = (System.nanoTime() - start) / 1_000_000;
        System.out.println("url-client: " + done + " requests ok elapsed_ms=" + ms);
    }

    private static void post(String base, int size) throws Exception {
        HttpsURLConnection c = (HttpsURLConnection) new URL(base + "/echo/" + size).openConnection();
        c.setRequestMethod("POST");
        c.setDoOutput(true);
        c.setFixedLengthStreamingMode(size);
        try (OutputStream out = c.getOutputStream()) {
            out.write(Bodies.pattern("req", size));
        }
        int status = c.getResponseCode();
        byte[] body;
        try (InputStream in = c.getInputStream()) {
            body = in.readAllBytes();
        }
        if (status != 200 || !Arrays.equals(body, Bodies.pattern("resp", size))) {
            throw new IllegalStateException("POST /echo/" + size + ": status " + status + ", " + body.length + " bytes");
        }
    }
}
