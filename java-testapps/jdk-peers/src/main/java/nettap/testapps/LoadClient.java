package nettap.testapps;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Load for the benchmark (bench/jvm_agent.sh): {@code --threads} threads
 * each POSTing {@code /echo/--size} over HTTP/1.1 keep-alive for
 * {@code --warmup} seconds (default 0), not counted, then for
 * {@code --seconds}; prints the requests of that window per second and this
 * process's CPU time in it. When the window starts it creates the file
 * {@code --mark} (if given), so a caller can sample other processes' CPU
 * time over the same window. A failed request fails the run.
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
        long start = System.nanoTime() + Long.parseLong(a.get("warmup", "0")) * 1_000_000_000L;
        long end = start + a.integer("seconds") * 1_000_000_000L;
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
                        if (System.nanoTime() >= start) {
                            done.incrementAndGet();
                        }
                    }
                } catch (Exception e) {
                    failed.incrementAndGet();
                }
            });
            threads[i].start();
        }
        long sleep = (start - System.nanoTime()) / 1_000_000L;
        if (sleep > 0) {
            Thread.sleep(sleep);
        }
        long cpu0 = processCpuNanos();
        String mark = a.get("mark", "");
        if (!mark.isEmpty()) {
            java.nio.file.Files.createFile(java.nio.file.Path.of(mark));
        }
        for (Thread t : threads) {
            t.join();
        }
        if (failed.get() > 0) {
            throw new IllegalStateException(failed.get() + " requests failed");
        }
        long cpu = processCpuNanos() - cpu0;
        System.out.printf("requests=%d per_second=%.0f cpu_seconds=%.3f%n", done.get(),
                done.get() / (double) a.integer("seconds"), cpu / 1e9);
    }

    /** This process's CPU time so far (user + system). */
    private static long processCpuNanos() {
        return ((com.sun.management.OperatingSystemMXBean) java.lang.management.ManagementFactory
                .getOperatingSystemMXBean()).getProcessCpuTime();
    }
}
