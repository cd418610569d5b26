package io.knflow.flink;

import java.nio.ByteBuffer;

import org.apache.flink.api.common.functions.FlatMapFunction;
import org.apache.flink.util.Collector;

/** A batch ({@code str16 group | i32 count | count x (i32 length | record)}) -> its records, one element each (before the Kafka sink). */
public final class Unbatch implements FlatMapFunction<byte[], byte[]> {
    private static final long serialVersionUID = 1L;

    @Override
    public void flatMap(byte[] batch, Collector<byte[]> out) {
        ByteBuffer buffer = ByteBuffer.wrap(batch);
        buffer.position(2 + Short.toUnsignedInt(buffer.getShort(0)));  // skip the group
        int count = buffer.getInt();
        for (int i = 0; i < count; i++) {
            byte[] record = new byte[buffer.getInt()];
            buffer.get(record);
            out.collect(record);
        }
    }
}
