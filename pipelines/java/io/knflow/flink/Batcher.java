package io.knflow.flink;

import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.apache.flink.api.common.operators.ProcessingTimeService.ProcessingTimeCallback;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.runtime.state.StateInitializationContext;
import org.apache.flink.runtime.state.StateSnapshotContext;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;

/**
 * Packed Kafka records -> batches per source partition, so knflow's Python operator is
 * called once per batch, not once per record (each call into Python costs more than the
 * routing of one event).
 *
 * <p>A partition's batch closes when it holds {@code maxRecords} records or
 * {@code maxBytes} bytes, or {@code maxDelayMs} after the oldest open batch got its first
 * record: batching never buys throughput with more than a few milliseconds of latency.
 * Every open batch is emitted before a checkpoint barrier ({@link #prepareSnapshotPreBarrier}),
 * so the operator holds no state of its own: a checkpoint's source offsets never run ahead
 * of what reached the Python operator.
 *
 * <p>Right before the barrier it also emits a <em>marker</em> (a batch whose count is -1)
 * for every partition it emitted a batch for since the last one: the Python operator does
 * not wait for a batch's deliveries before it takes the next batch, and a marker tells it
 * to settle the partition's deliveries (or record them in its state) before the barrier
 * reaches it. This needs aligned checkpoints, which the job sets.
 *
 * <p>After a restore it sends a marker for every partition it had seen before (kept in union
 * operator state), as soon as it runs: the marker makes the Python operator resume the
 * partition's state (chains in flight run again, held retries get their timers back) even
 * when no record of that partition follows. Timers alone cannot do it: in PyFlink's
 * process mode a Python timer is registered through the task's mailbox after its bundle
 * ends, so the bundle right before a barrier (the marker's, which settles deliveries and
 * holds their retries) puts its state in the checkpoint but not its timers.
 *
 * <p>Output: {@code Row(group, batch)}, the shape PyFlink's keyed Python operators take
 * (key, value), so the job keys by group without a Python key-selector operator (each
 * Python operator in the path costs a JVM/Python round trip of its own). The group is
 * {@code "<topic>/<partition>"}; the batch is {@code str16 group | i32 count | count x
 * (i32 length | record)}.
 */
public final class Batcher extends AbstractStreamOperator<Row>
        implements OneInputStreamOperator<byte[], Row>, ProcessingTimeCallback {
    private static final long serialVersionUID = 1L;

    private final int maxRecords;
    private final int maxBytes;
    private final long maxDelayMs;
    private transient Map<String, Open> open;
    private transient Set<String> sinceCheckpoint;
    private transient boolean timerSet;
    /** Every partition this subtask has emitted a batch for; what a restore wakes. */
    private transient Set<String> seen;
    private transient ListState<String> seenState;
    private transient List<String> toWake;

    private static final class Open {
        final ByteArrayOutputStream records = new ByteArrayOutputStream();
        int count;
    }

    public Batcher(int maxRecords, int maxBytes, long maxDelayMs) {
        this.maxRecords = maxRecords;
        this.maxBytes = maxBytes;
        this.maxDelayMs = maxDelayMs;
    }

    @Override
    public void initializeState(StateInitializationContext context) throws Exception {
        super.initializeState(context);
        seen = new HashSet<>();
        toWake = new ArrayList<>();
        seenState = context.getOperatorStateStore().getUnionListState(
                new ListStateDescriptor<>("knflow-batcher-groups", String.class));
        if (context.isRestored()) {
            for (String group : seenState.get()) {  // union state: every subtask's partitions
                if (seen.add(group)) {
                    toWake.add(group);
                }
            }
        }
    }

    @Override
    public void open() throws Exception {
        super.open();
        open = new LinkedHashMap<>();
        sinceCheckpoint = new HashSet<>();
        timerSet = false;
        if (!toWake.isEmpty()) {
            ProcessingTimeCallback wake = time -> {
                for (String group : toWake) {
                    output.collect(new StreamRecord<>(Row.of(group, marker(group))));
                }
                toWake.clear();
            };
            getProcessingTimeService().registerTimer(getProcessingTimeService().getCurrentProcessingTime(), wake);
        }
    }

    @Override
    public void snapshotState(StateSnapshotContext context) throws Exception {
        super.snapshotState(context);
        seenState.update(new ArrayList<>(seen));
    }

    /** "topic/partition" of a packed in-record. */
    static String groupOf(byte[] record) {
        ByteBuffer buffer = ByteBuffer.wrap(record);
        int partition = buffer.getInt();
        buffer.position(20);
        int length = Short.toUnsignedInt(buffer.getShort());
        return new String(record, 22, length, StandardCharsets.UTF_8) + "/" + partition;
    }

    @Override
    public void processElement(StreamRecord<byte[]> element) throws Exception {
        byte[] record = element.getValue();
        String group = groupOf(record);
        Open batch = open.computeIfAbsent(group, g -> new Open());
        batch.records.write(ByteBuffer.allocate(4).putInt(record.length).array());
        batch.records.write(record);
        batch.count++;
        if (batch.count >= maxRecords || batch.records.size() >= maxBytes) {
            emit(group, open.remove(group));
        } else if (!timerSet) {
            timerSet = true;
            ProcessingTimeCallback callback = this;
            getProcessingTimeService().registerTimer(
                    getProcessingTimeService().getCurrentProcessingTime() + maxDelayMs, callback);
        }
    }

    @Override
    public void onProcessingTime(long time) throws Exception {
        timerSet = false;
        flush();
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        flush();
        for (String group : sinceCheckpoint) {
            output.collect(new StreamRecord<>(Row.of(group, marker(group))));
        }
        sinceCheckpoint.clear();
        super.prepareSnapshotPreBarrier(checkpointId);
    }

    @Override
    public void finish() throws Exception {
        flush();
        super.finish();
    }

    private void flush() {
        for (Map.Entry<String, Open> entry : open.entrySet()) {
            emit(entry.getKey(), entry.getValue());
        }
        open.clear();
    }

    /** A marker for {@code group}: a batch whose count is -1. */
    private static byte[] marker(String group) {
        byte[] name = group.getBytes(StandardCharsets.UTF_8);
        return ByteBuffer.allocate(2 + name.length + 4).putShort((short) name.length).put(name).putInt(-1).array();
    }

    private void emit(String group, Open batch) {
        sinceCheckpoint.add(group);
        seen.add(group);
        byte[] name = group.getBytes(StandardCharsets.UTF_8);
        byte[] records = batch.records.toByteArray();
        ByteBuffer out = ByteBuffer.allocate(2 + name.length + 4 + records.length);
        out.putShort((short) name.length).put(name).putInt(batch.count).put(records);
        output.collect(new StreamRecord<>(Row.of(group, out.array())));
    }
}
