package io.knflow.flink;

import java.util.Collections;
import java.util.List;
import java.util.concurrent.CompletableFuture;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.source.Boundedness;
import org.apache.flink.api.connector.source.ReaderOutput;
import org.apache.flink.api.connector.source.Source;
import org.apache.flink.api.connector.source.SourceReader;
import org.apache.flink.api.connector.source.SourceReaderContext;
import org.apache.flink.api.connector.source.SourceSplit;
import org.apache.flink.api.connector.source.SplitEnumerator;
import org.apache.flink.api.connector.source.SplitEnumeratorContext;
import org.apache.flink.api.java.typeutils.ResultTypeQueryable;
import org.apache.flink.core.io.InputStatus;
import org.apache.flink.core.io.SimpleVersionedSerializer;
import org.apache.flink.types.Row;

/**
 * An unbounded source that emits each of its keys once every time the job starts (fresh or
 * restored), as {@code Row(key, key)} (PyFlink's keyed shape), and then emits nothing and
 * never ends. It drives the PingSources' keyed function (pipelines/flink_ping.py): the
 * element arms a key's tick timer, and keyed state and timers do the rest.
 *
 * <p>Why not a bounded collection: once a bounded input ends, the operator downstream of it
 * ends too, and its pending processing-time timers never fire (measured on Flink 2.2: a
 * keyed function after {@code from_collection} gets its elements, its timers never fire and
 * the job finishes). This source holds no state: after a restore it emits its keys again
 * and the function, which finds its cursor in state, does not arm twice.
 */
public final class OncePerStart implements Source<Row, OncePerStart.NoSplit, Boolean>, ResultTypeQueryable<Row> {
    private static final long serialVersionUID = 1L;

    private final String[] keys;

    public OncePerStart(String[] keys) {
        this.keys = keys.clone();
    }

    @Override
    public Boundedness getBoundedness() {
        return Boundedness.CONTINUOUS_UNBOUNDED;
    }

    @Override
    public SourceReader<Row, NoSplit> createReader(SourceReaderContext context) {
        return new Reader(context.getIndexOfSubtask() == 0 ? keys : new String[0]);
    }

    @Override
    public SplitEnumerator<NoSplit, Boolean> createEnumerator(SplitEnumeratorContext<NoSplit> context) {
        return new Idle();
    }

    @Override
    public SplitEnumerator<NoSplit, Boolean> restoreEnumerator(SplitEnumeratorContext<NoSplit> context, Boolean checkpoint) {
        return new Idle();
    }

    @Override
    public SimpleVersionedSerializer<NoSplit> getSplitSerializer() {
        return new Empty<>(new NoSplit());
    }

    @Override
    public SimpleVersionedSerializer<Boolean> getEnumeratorCheckpointSerializer() {
        return new Empty<>(Boolean.TRUE);
    }

    @Override
    public TypeInformation<Row> getProducedType() {
        return Types.ROW(Types.STRING, Types.STRING);
    }

    /** No splits: subtask 0's reader owns every key. */
    public static final class NoSplit implements SourceSplit {
        @Override
        public String splitId() {
            return "keys";
        }
    }

    private static final class Reader implements SourceReader<Row, NoSplit> {
        private final String[] keys;
        private boolean pending = true;
        private final CompletableFuture<Void> never = new CompletableFuture<>();

        Reader(String[] keys) {
            this.keys = keys;
        }

        @Override
        public void start() {
        }

        @Override
        public InputStatus pollNext(ReaderOutput<Row> output) {
            if (pending) {
                pending = false;
                for (String key : keys) {
                    output.collect(Row.of(key, key));
                }
            }
            return InputStatus.NOTHING_AVAILABLE;
        }

        @Override
        public List<NoSplit> snapshotState(long checkpointId) {
            return Collections.emptyList();
        }

        @Override
        public CompletableFuture<Void> isAvailable() {
            return pending ? CompletableFuture.completedFuture(null) : never;
        }

        @Override
        public void addSplits(List<NoSplit> splits) {
        }

        @Override
        public void notifyNoMoreSplits() {
        }

        @Override
        public void close() {
        }
    }

    private static final class Idle implements SplitEnumerator<NoSplit, Boolean> {
        @Override
        public void start() {
        }

        @Override
        public void handleSplitRequest(int subtask, String host) {
        }

        @Override
        public void addSplitsBack(List<NoSplit> splits, int subtask) {
        }

        @Override
        public void addReader(int subtask) {
        }

        @Override
        public Boolean snapshotState(long checkpointId) {
            return Boolean.TRUE;
        }

        @Override
        public void close() {
        }
    }

    /** Serializes nothing: there is one value of each kind. */
    private static final class Empty<T> implements SimpleVersionedSerializer<T> {
        private final T value;

        Empty(T value) {
            this.value = value;
        }

        @Override
        public int getVersion() {
            return 1;
        }

        @Override
        public byte[] serialize(T ignored) {
            return new byte[0];
        }

        @Override
        public T deserialize(int version, byte[] bytes) {
            return value;
        }
    }
}
