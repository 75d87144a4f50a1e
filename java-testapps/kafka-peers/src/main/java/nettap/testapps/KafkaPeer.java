package nettap.testapps;

import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * {@code KafkaPeer BOOTSTRAP TOPIC COMPRESSION[,…] COUNT OUT}: per
 * compression codec (none, gzip, snappy, lz4, zstd) creates topic
 * TOPIC-CODEC (one partition), produces COUNT records (key {@code key-i},
 * value {@code value-i}, a header {@code trace: t-i}; every third value
 * binary) in one batch, acks=all, idempotent, then consumes them from
 * offset 0 with assign (no group); writes the pid, and per topic its id
 * and what was consumed, to OUT as JSON.
 */
public final class KafkaPeer {
    private KafkaPeer() {}

    static byte[] value(int i) {
        if (i % 3 == 2) {
            return new byte[] {(byte) 0xff, 0, (byte) i};
        }
        return ("value-" + i).getBytes(StandardCharsets.UTF_8);
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        int count = Integer.parseInt(args[3]);
        Path out = Path.of(args[4]);
        List<String> topics = new ArrayList<>();
        for (String codec : args[2].split(",")) {
            topics.add(run(bootstrap, args[1] + "-" + codec, codec, count));
        }
        String pid = ManagementFactory.getRuntimeMXBean().getName().split("@")[0];
        write(out, "{\"pid\": " + pid + ", \"topics\": [" + String.join(", ", topics) + "]}");
    }

    static String run(String bootstrap, String topic, String compression, int count) throws Exception {

        Properties common = new Properties();
        common.put("bootstrap.servers", bootstrap);
        String topicId;
        try (Admin admin = Admin.create(common)) {
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get();
            topicId = admin.describeTopics(Set.of(topic)).allTopicNames().get().get(topic).topicId().toString();
        }

        Properties p = new Properties();
        p.putAll(common);
        p.put("client.id", "nettap-producer");
        p.put("acks", "all");
        p.put("compression.type", compression);
        p.put("linger.ms", "100");
        p.put("key.serializer", ByteArraySerializer.class.getName());
        p.put("value.serializer", ByteArraySerializer.class.getName());
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            for (int i = 0; i < count; i++) {
                ProducerRecord<byte[], byte[]> r = new ProducerRecord<>(topic, 0,
                    ("key-" + i).getBytes(StandardCharsets.UTF_8), value(i));
                r.headers().add("trace", ("t-" + i).getBytes(StandardCharsets.UTF_8));
                producer.send(r);
            }
            producer.flush();
        }

        Properties c = new Properties();
        c.putAll(common);
        c.put("client.id", "nettap-consumer");
        c.put("key.deserializer", ByteArrayDeserializer.class.getName());
        c.put("value.deserializer", ByteArrayDeserializer.class.getName());
        List<String> got = new ArrayList<>();
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(c)) {
            TopicPartition tp = new TopicPartition(topic, 0);
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
            while (got.size() < count && System.nanoTime() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(500))) {
                    StringBuilder h = new StringBuilder();
                    for (Header header : r.headers()) {
                        h.append(header.key()).append('=').append(new String(header.value(), StandardCharsets.UTF_8));
                    }
                    got.add("{\"offset\": " + r.offset() + ", \"key\": \"" + new String(r.key(), StandardCharsets.UTF_8)
                        + "\", \"value_b64\": \"" + Base64.getEncoder().encodeToString(r.value())
                        + "\", \"headers\": \"" + h + "\"}");
                }
            }
        }
        return "{\"name\": \"" + topic + "\", \"topic_id\": \"" + topicId + "\", \"consumed\": ["
            + String.join(", ", got) + "]}";
    }

    static void write(Path out, String json) throws IOException {
        Path tmp = out.resolveSibling(out.getFileName() + ".tmp");
        Files.writeString(tmp, json);
        Files.move(tmp, out);
    }
}
