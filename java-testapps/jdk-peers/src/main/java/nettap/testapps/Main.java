package nettap.testapps;

import java.util.Arrays;

/** Entry point: {@code java -jar jdk-peers.jar MODE ARGS...}. */
public final class Main {
    private Main() {}

    public static void main(String[] args) throws Exception {
        if (args.length == 0) {
            throw new IllegalArgumentException("usage: MODE [--key value]...; modes: socket-server, url-client, https-server, httpclient-client");
        }
        Args a = new Args(Arrays.copyOfRange(args, 1, args.length));
        switch (args[0]) {
            case "socket-server":
                SocketServer.run(a);
                break;
            case "url-client":
                UrlClient.run(a);
                break;
            case "https-server":
                HttpsServerApp.run(a);
                break;
            case "httpclient-client":
                HttpClientApp.run(a);
                break;
            case "load-client":
                LoadClient.run(a);
                break;
            default:
                throw new IllegalArgumentException("unknown mode " + args[0]);
        }
    }
}
