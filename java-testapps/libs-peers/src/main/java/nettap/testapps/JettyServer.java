package nettap.testapps;

import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.concurrent.CountDownLatch;
import org.eclipse.jetty.alpn.server.ALPNServerConnectionFactory;
import org.eclipse.jetty.http.HttpHeader;
import org.eclipse.jetty.http2.server.HTTP2ServerConnectionFactory;
import org.eclipse.jetty.io.Content;
import org.eclipse.jetty.server.Handler;
import org.eclipse.jetty.server.HttpConfiguration;
import org.eclipse.jetty.server.HttpConnectionFactory;
import org.eclipse.jetty.server.Request;
import org.eclipse.jetty.server.Response;
import org.eclipse.jetty.server.SecureRequestCustomizer;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.eclipse.jetty.server.SslConnectionFactory;
import org.eclipse.jetty.util.Callback;
import org.eclipse.jetty.util.ssl.SslContextFactory;

/**
 * Embedded Jetty 12 (SSLEngine under its SslConnection), HTTP/2 and HTTP/1.1
 * chosen by ALPN: the same {@code POST /echo/N} service as
 * {@link SocketServer}; exits after {@code --requests} requests.
 */
final class JettyServer {
    private JettyServer() {}

    static void run(Args a) throws Exception {
        int requests = a.integer("requests");
        CountDownLatch done = new CountDownLatch(requests);
        Server server = new Server();
        SslContextFactory.Server ssl = new SslContextFactory.Server();
        ssl.setKeyStore(Tls.serverKeyStore(a.get("cert"), a.get("key")));
        ssl.setKeyStorePassword(Tls.KEY_PASSWORD);
        HttpConfiguration config = new HttpConfiguration();
        SecureRequestCustomizer secure = new SecureRequestCustomizer();
        secure.setSniHostCheck(false);
        config.addCustomizer(secure);
        HttpConnectionFactory h1 = new HttpConnectionFactory(config);
        HTTP2ServerConnectionFactory h2 = new HTTP2ServerConnectionFactory(config);
        ALPNServerConnectionFactory alpn = new ALPNServerConnectionFactory();
        alpn.setDefaultProtocol(h1.getProtocol());
        SslConnectionFactory tls = new SslConnectionFactory(ssl, alpn.getProtocol());
        ServerConnector connector = new ServerConnector(server, tls, alpn, h2, h1);
        connector.setHost("127.0.0.1");
        connector.setPort(a.integer("port"));
        server.addConnector(connector);
        server.setHandler(new Handler.Abstract() {
            @Override
            public boolean handle(Request request, Response response, Callback callback) throws Exception {
                String path = request.getHttpURI().getPath();
                int size = Integer.parseInt(path.substring("/echo/".length()));
                byte[] body;
                try (InputStream in = Content.Source.asInputStream(request)) {
                    body = in.readAllBytes();
                }
                boolean ok = Arrays.equals(body, Bodies.pattern("req", size));
                byte[] answer = ok ? Bodies.pattern("resp", size) : "bad body".getBytes(StandardCharsets.US_ASCII);
                response.setStatus(ok ? 200 : 400);
                response.getHeaders().put(HttpHeader.CONTENT_TYPE, "application/octet-stream");
                response.getHeaders().put(HttpHeader.CONTENT_LENGTH, answer.length);
                response.write(true, ByteBuffer.wrap(answer), Callback.from(() -> {
                    callback.succeeded();
                    done.countDown();
                }, callback::failed));
                return true;
            }
        });
        server.start();
        Files.writeString(Path.of(a.get("ready")), "ready\n");
        done.await();
        Thread.sleep(200); // the last response leaves before the connector closes
        server.stop();
    }
}
