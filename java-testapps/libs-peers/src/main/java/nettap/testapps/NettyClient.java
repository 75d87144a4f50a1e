package nettap.testapps;

import io.netty.bootstrap.Bootstrap;
import io.netty.buffer.ByteBufUtil;
import io.netty.buffer.Unpooled;
import io.netty.channel.Channel;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.SimpleChannelInboundHandler;
import io.netty.channel.nio.NioEventLoopGroup;
import io.netty.channel.socket.SocketChannel;
import io.netty.channel.socket.nio.NioSocketChannel;
import io.netty.handler.codec.http.DefaultFullHttpRequest;
import io.netty.handler.codec.http.FullHttpResponse;
import io.netty.handler.codec.http.HttpClientCodec;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpObjectAggregator;
import io.netty.handler.codec.http.HttpVersion;
import io.netty.handler.ssl.SslContext;
import io.netty.handler.ssl.SslContextBuilder;
import io.netty.handler.ssl.SslProvider;
import java.io.File;
import java.util.Arrays;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * Netty 4 client with the JDK's SSLEngine (SslProvider.JDK), HTTP/1.1: one
 * {@code POST /echo/N} per size, in order, on one connection.
 */
final class NettyClient {
    private NettyClient() {}

    static void run(Args a) throws Exception {
        String host = "127.0.0.1";
        int port = a.integer("port");
        SslContext ssl = SslContextBuilder.forClient()
                .sslProvider(SslProvider.JDK)
                .trustManager(new File(a.get("cert")))
                .build();
        BlockingQueue<FullHttpResponse> answers = new ArrayBlockingQueue<>(1);
        EventLoopGroup group = new NioEventLoopGroup(1);
        try {
            Channel ch = new Bootstrap().group(group).channel(NioSocketChannel.class)
                    .handler(new ChannelInitializer<SocketChannel>() {
                        @Override
                        protected void initChannel(SocketChannel c) {
                            // host and port: the engine's peer, as the agent needs it.
                            c.pipeline().addLast(ssl.newHandler(c.alloc(), host, port));
                            c.pipeline().addLast(new HttpClientCodec());
                            c.pipeline().addLast(new HttpObjectAggregator(4 << 20));
                            c.pipeline().addLast(new SimpleChannelInboundHandler<FullHttpResponse>() {
                                @Override
                                protected void channelRead0(ChannelHandlerContext ctx, FullHttpResponse r) {
                                    answers.add(r.retain());
                                }
                            });
                        }
                    })
                    .connect(host, port).sync().channel();
            for (int size : a.sizes()) {
                DefaultFullHttpRequest req = new DefaultFullHttpRequest(HttpVersion.HTTP_1_1, HttpMethod.POST,
                        "/echo/" + size, Unpooled.wrappedBuffer(Bodies.pattern("req", size)));
                req.headers().set(HttpHeaderNames.HOST, host + ":" + port);
                req.headers().set(HttpHeaderNames.CONTENT_LENGTH, size);
                ch.writeAndFlush(req).sync();
                FullHttpResponse r = answers.poll(30, TimeUnit.SECONDS);
                if (r == null) {
                    throw new IllegalStateException("no answer to POST /echo/" + size);
                }
                byte[] body = ByteBufUtil.getBytes(r.content());
                r.release();
                if (r.status().code() != 200 || !Arrays.equals(body, Bodies.pattern("resp", size))) {
                    throw new IllegalStateException("POST /echo/" + size + ": status " + r.status() + ", " + body.length + " bytes");
                }
            }
            ch.close().sync();
        } finally {
            group.shutdownGracefully(0, 1, TimeUnit.SECONDS).sync();
        }
        System.out.println("netty-client: ok");
    }
}
