// Range splitters for the TeraSort peers: sampled from the input file, compared as unsigned
// 10-byte keys. Shared by HadoopTeraSort, SparkTeraSort and FlinkTeraSort.
import java.io.IOException;
import java.io.RandomAccessFile;
import java.util.Arrays;

public final class Splitters {
    public static final int RECORD = 100;
    public static final int KEY = 10;

    private Splitters() {}

    /** parts - 1 keys that cut a sample of up to `samples` evenly spaced records into parts ranges. */
    public static byte[][] sample(String path, int parts, int samples) throws IOException {
        try (RandomAccessFile file = new RandomAccessFile(path, "r")) {
            long records = file.length() / RECORD;
            int n = (int) Math.max(1, Math.min(records, samples));
            byte[][] keys = new byte[n][KEY];
            for (int i = 0; i < n && records > 0; i++) {
                file.seek((records * i / n) * RECORD);
                file.readFully(keys[i]);
            }
            Arrays.sort(keys, Arrays::compareUnsigned);
            byte[][] splits = new byte[parts - 1][];
            for (int p = 1; p < parts; p++) {
                splits[p - 1] = keys[(int) ((long) n * p / parts)];
            }
            return splits;
        }
    }

    /** The range of the key at `bytes[offset..offset+10]`: how many splitters are <= it. */
    public static int partition(byte[][] splits, byte[] bytes, int offset) {
        int lo = 0, hi = splits.length;
        while (lo < hi) {
            int mid = (lo + hi) >>> 1;
            if (Arrays.compareUnsigned(splits[mid], 0, KEY, bytes, offset, offset + KEY) <= 0) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        return lo;
    }

    public static String encode(byte[][] splits) {
        StringBuilder out = new StringBuilder();
        for (byte[] key : splits) {
            if (out.length() > 0) out.append(',');
            for (byte b : key) out.append(String.format("%02x", b & 0xff));
        }
        return out.toString();
    }

    public static byte[][] decode(String text) {
        if (text == null || text.isEmpty()) return new byte[0][];
        String[] parts = text.split(",");
        byte[][] splits = new byte[parts.length][KEY];
        for (int i = 0; i < parts.length; i++) {
            for (int j = 0; j < KEY; j++) {
                splits[i][j] = (byte) Integer.parseInt(parts[i].substring(2 * j, 2 * j + 2), 16);
            }
        }
        return splits;
    }
}
