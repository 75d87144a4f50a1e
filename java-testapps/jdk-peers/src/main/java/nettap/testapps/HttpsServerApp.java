package nettap.testapps;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpsConfigurator;
import com.sun.net.httpserver.HttpsServer;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * com.sun.net.httpserver.HttpsServer (SSLEngine over NIO): the same
 * {@code POST /echo/N} service as {@link SocketServer}; exits after
 * {@code --requests} requests (0: never), served by {@code --threads} threads.
 */
final class HttpsServerApp {
    private HttpsServerApp() {}

    static void run(Args a) throws Exception {
        int requests = a.integer("requests");
        // --requests 0: until killed.
        CountDownLatch done = new CountDownLatch(requests == 0 ? 1 : requests);
        HttpsServer server = HttpsServer.create(new InetSocketAddress("127.0.0.1", a.integer("port")), 16);
        server.setHttpsConfigurator(new HttpsConfigurator(Tls.server(a.get("cert"), a.get("key"))));
        server.createContext("/echo/", (HttpExchange x) -> {
            int size = Integer.parseInt(x.getRequestURI().getPath().substring("/echo/".length()));
            byte[] body;
            try (InputStream in = x.getRequestBody()) {
                body = in.readAllBytes();
            }
            boolean ok = Arrays.equals(body, Bodies.pattern("req", size));
            byte[] answer = ok ? Bodies.pattern("resp", size) : "bad body".getBytes(StandardCharsets.US_ASCII);
            x.getResponseHeaders().set("Content-Type", "application/octet-stream");
            // -1: no body (Content-Length: 0); 0 would mean chunked.
            x.sendResponseHeaders(ok ? 200 : 400, answer.length == 0 ? -1 : answer.length);
            try (OutputStream out = x.getResponseBody()) {
                out.write(answer);
            }
            if (requests != 0) {
                done.countDown();
            }
        });
        ExecutorService pool = Executors.newFixedThreadPool(Integer.parseInt(a.get("threads", "1")));
        server.setExecutor(pool);
        server.start();
        Files.writeString(Path.of(a.get("ready")), "ready\n");
        done.await();
        server.stop(1);
        pool.shutdown();
    }
}
