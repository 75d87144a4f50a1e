package nettap.testapps;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.util.Arrays;
import javax.net.ssl.SSLContext;
import okhttp3.MediaType;
import okhttp3.OkHttpClient;
import okhttp3.RequestBody;
import org.apache.hc.client5.http.classic.methods.HttpPost;
import org.apache.hc.client5.http.impl.classic.CloseableHttpClient;
import org.apache.hc.client5.http.impl.classic.HttpClients;
import org.apache.hc.client5.http.impl.io.PoolingHttpClientConnectionManagerBuilder;
import org.apache.hc.client5.http.ssl.SSLConnectionSocketFactoryBuilder;
import org.apache.hc.core5.http.ContentType;
import org.apache.hc.core5.http.io.entity.ByteArrayEntity;
import org.apache.hc.core5.http.io.entity.EntityUtils;

/**
 * Library clients (JDK TLS provider underneath): one {@code POST /echo/N}
 * per size, in order, on one connection; each exits non-zero unless every
 * answer is 200 with the expected body.
 */
final class Clients {
    private Clients() {}

    private static void check(int size, int status, byte[] body) {
        if (status != 200 || !Arrays.equals(body, Bodies.pattern("resp", size))) {
            throw new IllegalStateException("POST /echo/" + size + ": status " + status + ", " + body.length + " bytes");
        }
    }

    private static String base(Args a) {
        return "https://127.0.0.1:" + a.integer("port");
    }

    /** OkHttp 4 (SSLSocket; HTTP/2 when the server offers it by ALPN). */
    static void okhttp(Args a) throws Exception {
        SSLContext ctx = Tls.client(a.get("cert"));
        OkHttpClient client = new OkHttpClient.Builder()
                .sslSocketFactory(ctx.getSocketFactory(), Tls.trustManager(a.get("cert")))
                .build();
        MediaType type = MediaType.get("application/octet-stream");
        for (int size : a.sizes()) {
            okhttp3.Request req = new okhttp3.Request.Builder()
                    .url(base(a) + "/echo/" + size)
                    .post(RequestBody.create(Bodies.pattern("req", size), type))
                    .build();
            try (okhttp3.Response r = client.newCall(req).execute()) {
                check(size, r.code(), r.body().bytes());
            }
        }
        client.dispatcher().executorService().shutdown();
        client.connectionPool().evictAll();
        System.out.println("okhttp-client: ok");
    }

    /** Apache HttpClient 5, classic (SSLSocket), HTTP/1.1. */
    static void apache(Args a) throws Exception {
        var tls = SSLConnectionSocketFactoryBuilder.create().setSslContext(Tls.client(a.get("cert"))).build();
        var pool = PoolingHttpClientConnectionManagerBuilder.create().setSSLSocketFactory(tls).build();
        try (CloseableHttpClient client = HttpClients.custom().setConnectionManager(pool).build()) {
            for (int size : a.sizes()) {
                HttpPost post = new HttpPost(base(a) + "/echo/" + size);
                post.setEntity(new ByteArrayEntity(Bodies.pattern("req", size), ContentType.APPLICATION_OCTET_STREAM));
                client.execute(post, r -> {
                    check(size, r.getCode(), EntityUtils.toByteArray(r.getEntity()));
                    return null;
                });
            }
        }
        System.out.println("apache-client: ok");
    }

    /** java.net.http.HttpClient over HTTP/2 (SSLEngine, ALPN h2). */
    static void httpClientH2(Args a) throws Exception {
        HttpClient client = HttpClient.newBuilder()
                .sslContext(Tls.client(a.get("cert")))
                .version(HttpClient.Version.HTTP_2)
                .build();
        for (int size : a.sizes()) {
            HttpRequest req = HttpRequest.newBuilder(URI.create(base(a) + "/echo/" + size))
                    .POST(HttpRequest.BodyPublishers.ofByteArray(Bodies.pattern("req", size)))
                    .build();
            HttpResponse<byte[]> r = client.send(req, HttpResponse.BodyHandlers.ofByteArray());
            if (r.version() != HttpClient.Version.HTTP_2) {
                throw new IllegalStateException("not HTTP/2: " + r.version());
            }
            check(size, r.statusCode(), r.body());
        }
        System.out.println("httpclient-h2-client: ok");
    }
}
