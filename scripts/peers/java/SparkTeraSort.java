// Spark TeraSort on gensort binary records, local[2]: binaryRecords(100) -> (10-byte key,
// record) -> repartitionAndSortWithinPartitions over a sampled RangePartitioner (one range per
// 32 MB split), Kryo with registered classes, shuffle compression off, raw output part files.
// Usage: SparkTeraSort INPUT OUTPUT_DIR TMP_DIR
import java.io.BufferedOutputStream;
import java.io.File;
import java.io.FileOutputStream;
import java.io.OutputStream;
import java.io.Serializable;
import java.util.Collections;
import java.util.Comparator;
import java.util.List;

import org.apache.spark.RangePartitioner;
import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaPairRDD;
import org.apache.spark.api.java.JavaSparkContext;
import scala.Tuple2;

public class SparkTeraSort {
    /** The 10-byte key: 8 bytes big-endian and 2 more, compared unsigned. */
    public static final class Key implements Serializable {
        public long hi;
        public short lo;

        public Key() {}

        static Key of(byte[] r) {
            Key k = new Key();
            long hi = 0;
            for (int i = 0; i < 8; i++) hi = (hi << 8) | (r[i] & 0xff);
            k.hi = hi;
            k.lo = (short) (((r[8] & 0xff) << 8) | (r[9] & 0xff));
            return k;
        }
    }

    public static final class KeyOrder implements Comparator<Key>, Serializable {
        @Override
        public int compare(Key a, Key b) {
            int c = Long.compareUnsigned(a.hi, b.hi);
            return c != 0 ? c : Integer.compare(a.lo & 0xffff, b.lo & 0xffff);
        }
    }

    public static void main(String[] args) throws Exception {
        String input = args[0], output = args[1], tmp = args[2];
        SparkConf conf = new SparkConf()
                .setMaster("local[2]")
                .setAppName("millrace-terasort")
                .set("spark.serializer", "org.apache.spark.serializer.KryoSerializer")
                .set("spark.shuffle.compress", "false")
                .set("spark.shuffle.spill.compress", "false")
                .set("spark.ui.enabled", "false")
                .set("spark.local.dir", tmp)
                .set("spark.driver.host", "127.0.0.1")
                .set("spark.driver.bindAddress", "127.0.0.1");
        conf.registerKryoClasses(new Class<?>[] {Key.class, byte[].class});
        File out = new File(output);
        if (!out.mkdirs() && !out.isDirectory()) throw new IllegalStateException("cannot create " + output);
        try (JavaSparkContext sc = new JavaSparkContext(conf)) {
            sc.setLogLevel("WARN");
            long bytes = new File(input).length();
            int parts = (int) Math.max(2, (bytes + (32L << 20) - 1) / (32L << 20));
            JavaPairRDD<Key, byte[]> pairs =
                    sc.binaryRecords(input, Splitters.RECORD).mapToPair(r -> new Tuple2<>(Key.of(r), r));
            KeyOrder order = new KeyOrder();
            RangePartitioner<Key, byte[]> partitioner = new RangePartitioner<>(
                    parts, pairs.rdd(), true, 20,
                    scala.math.Ordering$.MODULE$.comparatorToOrdering(order),
                    scala.reflect.ClassTag$.MODULE$.apply(Key.class));
            List<Long> written = pairs.repartitionAndSortWithinPartitions(partitioner, order)
                    .values()
                    .mapPartitionsWithIndex((index, records) -> {
                        long n = 0;
                        File part = new File(output, String.format("part-%05d", index));
                        try (OutputStream o = new BufferedOutputStream(new FileOutputStream(part), 1 << 20)) {
                            while (records.hasNext()) {
                                o.write(records.next());
                                n++;
                            }
                        }
                        return Collections.singletonList(n).iterator();
                    }, true)
                    .collect();
            long total = written.stream().mapToLong(Long::longValue).sum();
            if (total * Splitters.RECORD != bytes) {
                throw new IllegalStateException("wrote " + total + " records of " + bytes / Splitters.RECORD);
            }
        }
    }
}
