package io.knflow.flink;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;

import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.flink.kafka.shaded.org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.flink.kafka.shaded.org.apache.kafka.common.header.Header;
import org.apache.flink.kafka.shaded.org.apache.kafka.common.header.internals.RecordHeader;

/** An "out record" of {@link Packing} (topic, key, value, headers) -> the Kafka record the sink writes. */
public final class PackedRecordSerializer implements KafkaRecordSerializationSchema<byte[]> {
    private static final long serialVersionUID = 1L;

    @Override
    public ProducerRecord<byte[], byte[]> serialize(byte[] element, KafkaSinkContext context, Long timestamp) {
        ByteBuffer buffer = ByteBuffer.wrap(element);
        String topic = Packing.getString(buffer);
        byte[] key = Packing.getBytes(buffer);
        byte[] value = Packing.getBytes(buffer);
        int count = Short.toUnsignedInt(buffer.getShort());
        List<Header> headers = new ArrayList<>(count);
        for (int i = 0; i < count; i++) {
            String name = Packing.getString(buffer);
            headers.add(new RecordHeader(name, Packing.getBytes(buffer)));
        }
        return new ProducerRecord<>(topic, null, null, key, value, headers);
    }
}
