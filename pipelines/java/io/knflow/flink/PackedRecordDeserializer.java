package io.knflow.flink;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.kafka.shaded.org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.flink.kafka.shaded.org.apache.kafka.common.header.Header;
import org.apache.flink.util.Collector;

/** A Kafka record, with its topic, partition, offset, timestamp, key and headers, as one byte[] ("in record" of {@link Packing}). */
public final class PackedRecordDeserializer implements KafkaRecordDeserializationSchema<byte[]> {
    private static final long serialVersionUID = 1L;

    @Override
    public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<byte[]> out) {
        byte[] topic = record.topic().getBytes(StandardCharsets.UTF_8);
        List<byte[]> names = new ArrayList<>();
        List<byte[]> values = new ArrayList<>();
        int size = 4 + 8 + 8 + 2 + topic.length + Packing.sizeOf(record.key()) + Packing.sizeOf(record.value()) + 2;
        for (Header header : record.headers()) {
            byte[] name = header.key().getBytes(StandardCharsets.UTF_8);
            names.add(name);
            values.add(header.value());
            size += 2 + name.length + Packing.sizeOf(header.value());
        }
        ByteBuffer buffer = ByteBuffer.allocate(size);
        buffer.putInt(record.partition());
        buffer.putLong(record.offset());
        buffer.putLong(record.timestamp());
        Packing.putString(buffer, topic);
        Packing.putBytes(buffer, record.key());
        Packing.putBytes(buffer, record.value());
        buffer.putShort((short) names.size());
        for (int i = 0; i < names.size(); i++) {
            Packing.putString(buffer, names.get(i));
            Packing.putBytes(buffer, values.get(i));
        }
        out.collect(buffer.array());
    }

    @Override
    public TypeInformation<byte[]> getProducedType() {
        return PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO;
    }
}
