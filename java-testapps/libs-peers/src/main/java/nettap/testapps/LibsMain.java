package nettap.testapps;

import java.util.Arrays;

/** Entry point of the library peers: {@code MODE [--key value]...}. */
public final class LibsMain {
    private LibsMain() {}

    public static void main(String[] args) throws Exception {
        if (args.length == 0) {
            throw new IllegalArgumentException("modes: jetty-server, okhttp-client, apache-client, netty-client, httpclient-h2-client");
        }
        Args a = new Args(Arrays.copyOfRange(args, 1, args.length));
        switch (args[0]) {
            case "jetty-server":
                JettyServer.run(a);
                break;
            case "okhttp-client":
                Clients.okhttp(a);
                break;
            case "apache-client":
                Clients.apache(a);
                break;
            case "netty-client":
                NettyClient.run(a);
                break;
            case "httpclient-h2-client":
                Clients.httpClientH2(a);
                break;
            default:
                throw new IllegalArgumentException("unknown mode " + args[0]);
        }
    }
}
