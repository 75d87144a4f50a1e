package nettap.testapps;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.util.Arrays;

/**
 * java.net.http.HttpClient (SSLEngine over NIO), HTTP/1.1: one
 * {@code POST /echo/N} per size, in order; exits non-zero unless every
 * answer is 200 with the expected body.
 */
final class HttpClientApp {
    private HttpClientApp() {}

    static void run(Args a) throws Exception {
        HttpClient client = HttpClient.newBuilder()
                .sslContext(Tls.client(a.get("cert")))
                .version(HttpClient.Version.HTTP_1_1)
                .build();
        String base = "https://" + a.get("host", "127.0.0.1") + ":" + a.integer("port");
        for (int size : a.sizes()) {
            HttpRequest req = HttpRequest.newBuilder(URI.create(base + "/echo/" + size))
                    .POST(HttpRequest.BodyPublishers.ofByteArray(Bodies.pattern("req", size)))
                    .build();
            HttpResponse<byte[]> r = client.send(req, HttpResponse.BodyHandlers.ofByteArray());
            if (r.statusCode() != 200 || !Arrays.equals(r.body(), Bodies.pattern("resp", size))) {
                throw new IllegalStateException("POST /echo/" + size + ": status " + r.statusCode() + ", "
                        + r.body().length + " bytes");
            }
        }
        System.out.println("httpclient-client: " + a.sizes().size() + " requests ok");
    }
}
