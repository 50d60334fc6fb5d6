// Flink TeraSort on gensort binary records: DataStream API in BATCH execution mode,
// parallelism 2; a source of 32 MB chunks, range partitioning by sampled splitters
// (partitionCustom), fullWindowPartition().sortPartition on the 10-byte key (managed-memory
// sorter), sort-merge blocking shuffle without compression, raw output part files.
// Usage: FlinkTeraSort INPUT OUTPUT_DIR TMP_DIR
import java.io.BufferedOutputStream;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.io.RandomAccessFile;
import java.util.Arrays;

import org.apache.flink.api.common.RuntimeExecutionMode;
import org.apache.flink.api.common.functions.FlatMapFunction;
import org.apache.flink.api.common.functions.Partitioner;
import org.apache.flink.api.common.operators.Order;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.util.Collector;

public class FlinkTeraSort {
    static final int PARALLELISM = 2;
    static final int CHUNK_RECORDS = 320_000; // 32 MB

    /** The 10-byte key as (first 8 bytes with the sign bit flipped, last 2): signed order = byte order. */
    public static final class KeyOf implements KeySelector<byte[], Tuple2<Long, Integer>> {
        @Override
        public Tuple2<Long, Integer> getKey(byte[] r) {
            return key(r);
        }
    }

    static Tuple2<Long, Integer> key(byte[] r) {
        long hi = 0;
        for (int i = 0; i < 8; i++) hi = (hi << 8) | (r[i] & 0xff);
        return Tuple2.of(hi ^ Long.MIN_VALUE, ((r[8] & 0xff) << 8) | (r[9] & 0xff));
    }

    public static final class Ranges implements Partitioner<Tuple2<Long, Integer>> {
        private final Tuple2<Long, Integer>[] splits;

        Ranges(Tuple2<Long, Integer>[] splits) {
            this.splits = splits;
        }

        @Override
        public int partition(Tuple2<Long, Integer> key, int partitions) {
            int lo = 0, hi = splits.length;
            while (lo < hi) {
                int mid = (lo + hi) >>> 1;
                Tuple2<Long, Integer> s = splits[mid];
                int c = Long.compare(s.f0, key.f0);
                if (c == 0) c = Integer.compare(s.f1, key.f1);
                if (c <= 0) lo = mid + 1; else hi = mid;
            }
            return lo;
        }
    }

    /** Chunk index -> its records. */
    public static final class ChunkReader implements FlatMapFunction<Long, byte[]> {
        private final String path;

        ChunkReader(String path) {
            this.path = path;
        }

        @Override
        public void flatMap(Long chunk, Collector<byte[]> out) throws IOException {
            try (RandomAccessFile file = new RandomAccessFile(path, "r")) {
                long start = chunk * CHUNK_RECORDS * Splitters.RECORD;
                int length = (int) Math.min((long) CHUNK_RECORDS * Splitters.RECORD, file.length() - start);
                byte[] bytes = new byte[length];
                file.seek(start);
                file.readFully(bytes);
                for (int at = 0; at + Splitters.RECORD <= length; at += Splitters.RECORD) {
                    out.collect(Arrays.copyOfRange(bytes, at, at + Splitters.RECORD));
                }
            }
        }
    }

    /** Subtask i writes part-0000i: range i in key order. */
    public static final class RawSink implements Sink<byte[]> {
        private final String output;

        RawSink(String output) {
            this.output = output;
        }

        @Override
        public SinkWriter<byte[]> createWriter(WriterInitContext context) throws IOException {
            int index = context.getTaskInfo().getIndexOfThisSubtask();
            OutputStream out = new BufferedOutputStream(
                    new FileOutputStream(new File(output, String.format("part-%05d", index))), 1 << 20);
            return new SinkWriter<byte[]>() {
                @Override public void write(byte[] record, Context c) throws IOException { out.write(record); }
                @Override public void flush(boolean endOfInput) throws IOException { out.flush(); }
                @Override public void close() throws IOException { out.close(); }
            };
        }
    }

    static void set(Configuration conf, String key, String value) {
        conf.set(ConfigOptions.key(key).stringType().noDefaultValue(), value);
    }

    @SuppressWarnings("unchecked")
    public static void main(String[] args) throws Exception {
        String input = args[0], output = args[1], tmp = args[2];
        File out = new File(output);
        if (!out.mkdirs() && !out.isDirectory()) throw new IllegalStateException("cannot create " + output);
        Configuration conf = new Configuration();
        set(conf, "io.tmp.dirs", tmp);
        set(conf, "taskmanager.numberOfTaskSlots", String.valueOf(PARALLELISM));
        set(conf, "taskmanager.memory.managed.size", System.getProperty("millrace.managed", "3g"));
        set(conf, "taskmanager.memory.network.min", "256m");
        set(conf, "taskmanager.memory.network.max", "256m");
        set(conf, "taskmanager.network.compression.codec", "NONE");
        set(conf, "taskmanager.network.batch-shuffle.compression.enabled", "false");
        set(conf, "execution.batch-shuffle-mode", "ALL_EXCHANGES_BLOCKING");
        set(conf, "rest.bind-address", "127.0.0.1");
        set(conf, "rest.address", "127.0.0.1");
        StreamExecutionEnvironment env = StreamExecutionEnvironment.createLocalEnvironment(PARALLELISM, conf);
        env.setRuntimeMode(RuntimeExecutionMode.BATCH);

        long records = new File(input).length() / Splitters.RECORD;
        long chunks = Math.max(1, (records + CHUNK_RECORDS - 1) / CHUNK_RECORDS);
        byte[][] raw = Splitters.sample(input, PARALLELISM, 100_000);
        Tuple2<Long, Integer>[] splits = new Tuple2[raw.length];
        for (int i = 0; i < raw.length; i++) splits[i] = key(raw[i]);

        env.fromSequence(0, chunks - 1)
                .flatMap(new ChunkReader(input))
                .returns(PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO)
                .partitionCustom(new Ranges(splits), new KeyOf())
                .fullWindowPartition()
                .sortPartition(new KeyOf(), Order.ASCENDING)
                .sinkTo(new RawSink(output));
        env.execute("millrace-terasort");
    }
}
