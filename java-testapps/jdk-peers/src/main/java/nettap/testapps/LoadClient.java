package nettap.testapps;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Load for the benchmark (bench/jvm_agent.sh): {@code --threads} threads
 * each POSTing {@code /echo/--size} over HTTP/1.1 keep-alive for
 * {@code --seconds}; prints requests per second. A failed request fails the run.
 */
final class LoadClient {
    private LoadClient() {}

    static void run(Args a) throws Exception {
        HttpClient client = HttpClient.newBuilder()
                .sslContext(Tls.client(a.get("cert")))
                .version(HttpClient.Version.HTTP_1_1)
                .build();
        int size = a.integer("size");
        URI uri = URI.create("https://127.0.0.1:" + a.integer("port") + "/echo/" + size);
        byte[] body = Bodies.pattern("req", size);
        long end = System.nanoTime() + a.integer("seconds") * 1_000_000_000L;
        AtomicLong done = new AtomicLong();
        AtomicLong failed = new AtomicLong();
        Thread[] threads = new Thread[a.integer("threads")];
        for (int i = 0; i < threads.length; i++) {
            threads[i] = new Thread(() -> {
                try {
                    while (System.nanoTime() < end) {
                        HttpResponse<byte[]> r = client.send(HttpRequest.newBuilder(uri)
                                .POST(HttpRequest.BodyPublishers.ofByteArray(body)).build(),
                                HttpResponse.BodyHandlers.ofByteArray());
                        if (r.statusCode() != 200 || r.body().length != size) {
                            failed.incrementAndGet();
                        }
                        done.incrementAndGet();
                    }
                } catch (Exception e) {
                    failed.incrementAndGet();
                }
            });
            threads[i].start();
        }
        for (Thread t : threads) {
            t.join();
        }
        if (failed.get() > 0) {
            throw new IllegalStateException(failed.get() + " requests failed");
        }
        System.out.printf("requests=%d per_second=%.0f%n", done.get(), done.get() / (double) a.integer("seconds"));
    }
}
