package nettap.testapps;

import java.io.BufferedInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Locale;
import javax.net.ssl.SSLServerSocket;
import javax.net.ssl.SSLSocket;

/**
 * An HTTP/1.1 server on a JSSE SSLServerSocket (SSLSocket's application
 * streams on the server side). {@code POST /echo/N} with the body
 * {@code pattern("req", N)} is answered 200 with {@code pattern("resp", N)};
 * any other body is a 400. Exits after {@code --requests} requests (0: never).
 */
final class SocketServer {
    private SocketServer() {}

    static void run(Args a) throws Exception {
        int requests = a.integer("requests");
        SSLServerSocket server = (SSLServerSocket) Tls.server(a.get("cert"), a.get("key"))
                .getServerSocketFactory()
                .createServerSocket(a.integer("port"), 16, InetAddress.getByName("127.0.0.1"));
        Files.writeString(Path.of(a.get("ready")), "ready\n");
        int served = 0;
        // --requests 0: until killed.
        while (requests == 0 || served < requests) {
            try (SSLSocket s = (SSLSocket) server.accept()) {
                served += serve(s, requests == 0 ? Integer.MAX_VALUE : requests - served);
            } catch (IOException e) {
                if (requests != 0) {
                    throw e;
                }
            }
        }
        server.close();
    }

    /** Serves one connection's requests (at most {@code max}); returns how many. */
    private static int serve(SSLSocket s, int max) throws IOException {
        InputStream in = new BufferedInputStream(s.getInputStream());
        OutputStream out = s.getOutputStream();
        int n = 0;
        while (n < max) {
            String head = readHead(in);
            if (head == null) {
                break;
            }
            String[] lines = head.split("\r\n");
            String[] start = lines[0].split(" ");
            int length = 0;
            for (String l : lines) {
                if (l.toLowerCase(Locale.ROOT).startsWith("content-length:")) {
                    length = Integer.parseInt(l.substring(15).trim());
                }
            }
            byte[] body = in.readNBytes(length);
            int size = Integer.parseInt(start[1].substring("/echo/".length()));
            boolean ok = Arrays.equals(body, Bodies.pattern("req", size));
            byte[] answer = ok ? Bodies.pattern("resp", size) : "bad body".getBytes(StandardCharsets.US_ASCII);
            String status = ok ? "200 OK" : "400 Bad Request";
            out.write(("HTTP/1.1 " + status + "\r\nContent-Type: application/octet-stream\r\nContent-Length: "
                    + answer.length + "\r\n\r\n").getBytes(StandardCharsets.US_ASCII));
            out.write(answer);
            out.flush();
            n++;
        }
        return n;
    }

    /** The request head up to the blank line, or null at the end of the connection. */
    private static String readHead(InputStream in) throws IOException {
        ByteArrayOutputStream head = new ByteArrayOutputStream();
        int matched = 0;
        byte[] end = {'\r', '\n', '\r', '\n'};
        while (matched < 4) {
            int b = in.read();
            if (b < 0) {
                return null;
            }
            head.write(b);
            matched = b == end[matched] ? matched + 1 : (b == '\r' ? 1 : 0);
        }
        return head.toString(StandardCharsets.US_ASCII);
    }
}
