// Hadoop MapReduce TeraSort on gensort binary records, run with the local job runner:
// fixed-length 100-byte records (10-byte key, 90-byte value), a sampled total-order
// partitioner, identity map and reduce, io.sort.mb 256, 2 reducers, raw output part files.
// Usage: HadoopTeraSort INPUT OUTPUT_DIR TMP_DIR
import java.io.IOException;

import org.apache.hadoop.conf.Configurable;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.LocalFileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.io.Text;
import org.apache.hadoop.mapreduce.InputSplit;
import org.apache.hadoop.mapreduce.Job;
import org.apache.hadoop.mapreduce.Mapper;
import org.apache.hadoop.mapreduce.Partitioner;
import org.apache.hadoop.mapreduce.RecordReader;
import org.apache.hadoop.mapreduce.RecordWriter;
import org.apache.hadoop.mapreduce.Reducer;
import org.apache.hadoop.mapreduce.TaskAttemptContext;
import org.apache.hadoop.mapreduce.lib.input.FileInputFormat;
import org.apache.hadoop.mapreduce.lib.input.FileSplit;
import org.apache.hadoop.mapreduce.lib.output.FileOutputFormat;

public class HadoopTeraSort {
    static final int REDUCERS = 2;

    /** 100-byte records; a split starts at its first whole record. */
    public static class RecordInput extends FileInputFormat<Text, Text> {
        @Override
        public RecordReader<Text, Text> createRecordReader(InputSplit split, TaskAttemptContext context) {
            return new RecordReader<Text, Text>() {
                private FSDataInputStream in;
                private long start, pos, end;
                private final byte[] buffer = new byte[Splitters.RECORD];
                private final Text key = new Text(), value = new Text();

                @Override
                public void initialize(InputSplit s, TaskAttemptContext c) throws IOException {
                    FileSplit fileSplit = (FileSplit) s;
                    Path path = fileSplit.getPath();
                    long first = fileSplit.getStart();
                    start = (first + Splitters.RECORD - 1) / Splitters.RECORD * Splitters.RECORD;
                    end = first + fileSplit.getLength();
                    pos = start;
                    in = path.getFileSystem(c.getConfiguration()).open(path, 1 << 20);
                    in.seek(start);
                }

                @Override
                public boolean nextKeyValue() throws IOException {
                    if (pos >= end) return false;
                    in.readFully(buffer);
                    key.set(buffer, 0, Splitters.KEY);
                    value.set(buffer, Splitters.KEY, Splitters.RECORD - Splitters.KEY);
                    pos += Splitters.RECORD;
                    return true;
                }

                @Override public Text getCurrentKey() { return key; }
                @Override public Text getCurrentValue() { return value; }
                @Override public float getProgress() {
                    return end == start ? 1f : (pos - start) / (float) (end - start);
                }
                @Override public void close() throws IOException { if (in != null) in.close(); }
            };
        }
    }

    /** Key and value bytes back to back: the 100-byte record, no separators, no checksums. */
    public static class RawOutput extends FileOutputFormat<Text, Text> {
        @Override
        public RecordWriter<Text, Text> getRecordWriter(TaskAttemptContext context) throws IOException {
            Path file = getDefaultWorkFile(context, "");
            FileSystem fs = file.getFileSystem(context.getConfiguration());
            if (fs instanceof LocalFileSystem) fs = ((LocalFileSystem) fs).getRaw();
            FSDataOutputStream out = fs.create(file, false, 1 << 20);
            return new RecordWriter<Text, Text>() {
                @Override
                public void write(Text key, Text value) throws IOException {
                    out.write(key.getBytes(), 0, key.getLength());
                    out.write(value.getBytes(), 0, value.getLength());
                }

                @Override
                public void close(TaskAttemptContext c) throws IOException { out.close(); }
            };
        }
    }

    /** Total order: the sampled splitters in the job configuration. */
    public static class RangePartitioner extends Partitioner<Text, Text> implements Configurable {
        private Configuration conf;
        private byte[][] splits;

        @Override
        public void setConf(Configuration conf) {
            this.conf = conf;
            splits = Splitters.decode(conf.get("millrace.splits"));
        }

        @Override public Configuration getConf() { return conf; }

        @Override
        public int getPartition(Text key, Text value, int partitions) {
            return Splitters.partition(splits, key.getBytes(), 0);
        }
    }

    public static void main(String[] args) throws Exception {
        String input = args[0], output = args[1], tmp = args[2];
        Configuration conf = new Configuration();
        conf.set("mapreduce.framework.name", "local");
        conf.set("fs.defaultFS", "file:///");
        conf.set("hadoop.tmp.dir", tmp);
        conf.setInt("mapreduce.local.map.tasks.maximum", 2);
        conf.setInt("mapreduce.local.reduce.tasks.maximum", 2);
        conf.setInt("mapreduce.task.io.sort.mb", 256);
        conf.setInt("mapreduce.task.io.sort.factor", 100);
        conf.setLong("mapreduce.input.fileinputformat.split.minsize", 128L << 20);
        conf.setBoolean("mapreduce.map.output.compress", false);
        // Keep merged map outputs in the reducer's heap instead of writing them to disk first.
        conf.setFloat("mapreduce.reduce.input.buffer.percent", 0.6f);
        conf.setBoolean("mapreduce.fileoutputcommitter.marksuccessfuljobs", false);
        conf.setInt("io.file.buffer.size", 1 << 20);
        conf.set("millrace.splits", Splitters.encode(Splitters.sample(input, REDUCERS, 100_000)));

        Job job = Job.getInstance(conf, "millrace-terasort");
        job.setInputFormatClass(RecordInput.class);
        job.setOutputFormatClass(RawOutput.class);
        job.setMapperClass(Mapper.class);
        job.setReducerClass(Reducer.class);
        job.setMapOutputKeyClass(Text.class);
        job.setMapOutputValueClass(Text.class);
        job.setOutputKeyClass(Text.class);
        job.setOutputValueClass(Text.class);
        job.setPartitionerClass(RangePartitioner.class);
        job.setNumReduceTasks(REDUCERS);
        FileInputFormat.addInputPath(job, new Path(input));
        FileOutputFormat.setOutputPath(job, new Path(output));
        System.exit(job.waitForCompletion(false) ? 0 : 1);
    }
}
