package tidemark.bridge;

import java.nio.charset.StandardCharsets;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.json.JsonConverter;
import org.apache.kafka.connect.source.SourceRecord;

import io.debezium.embedded.EmbeddedEngineChangeEvent;
import io.debezium.engine.ChangeEvent;
import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.format.Json;

/**
 * Runs a Debezium embedded engine on its own thread and hands its batches to Python.
 *
 * Why Java: crossing from the JVM into Python costs about 20 microseconds per call, so the
 * consumer joins each batch into one string (destination US key US value RS ...) that Python
 * fetches with a single call. Why a queue: Debezium marks records processed when the consumer
 * returns; this consumer marks nothing itself. Offsets advance only in acknowledge(), which
 * the caller invokes after the batch is durable downstream. The bounded queue blocks the engine
 * when Python falls behind (backpressure).
 *
 * Why schemas travel apart: the converter runs with schemas.enable=false (a 600-byte event
 * instead of 3.3 KB, and half the JVM's work per event), yet types must stay exact. Each
 * record's Connect schemas are at hand here, so a destination's key and value schemas are
 * sent once, in the chunk's schemas text, whenever they change (a new table version).
 */
public final class EngineBridge implements DebeziumEngine.ChangeConsumer<ChangeEvent<String, String>>,
        DebeziumEngine.CompletionCallback {

    /** Marks a null key or value in the joined payload (JSON never contains a raw NUL). */
    public static final char NULL = '\u0000';
    public static final char FIELD = '\u001f';
    public static final char RECORD = '\u001e';

    /**
     * Postgres offsets of a COMMIT (a transaction's END marker, or a heartbeat after it) are
     * stored without {@code lsn_proc}. There {@code lsn_proc} is the commit's end LSN, i.e.
     * where the next WAL record starts. On restart Debezium's WalPositionLocator looks for a
     * replicated message with exactly that LSN and resumes after it; when that record is a
     * change of a transaction still in flight at the commit, the match skips that change and
     * every earlier change of its transaction (lost for good). Without {@code lsn_proc}
     * Debezium skips the search and streams from {@code lsn} (the same commit LSN): Postgres
     * then sends every transaction committed after it whole.
     */
    static final String PG_MESSAGE_TYPE = "messageType";
    static final String PG_LSN_PROC = "lsn_proc";

    /** Connect schema as JSON, exactly as the converter embeds it with schemas.enable=true. */
    private static final JsonConverter SCHEMA_WRITER = new JsonConverter();

    /**
     * Offsets as Kafka's OffsetStorageWriter serializes them for the offsets file: schemaless
     * JSON, the key being [engine name, source partition]. offsetsFor() renders with these so
     * the caller can record, before acknowledging, exactly what the file will hold.
     */
    private static final JsonConverter OFFSET_KEYS = new JsonConverter();
    private static final JsonConverter OFFSET_VALUES = new JsonConverter();
    private static final ObjectMapper MAPPER = new ObjectMapper();

    static {
        SCHEMA_WRITER.configure(Map.of("schemas.enable", "true", "converter.type", "value",
                "replace.null.with.default", "false"));
        OFFSET_KEYS.configure(Map.of("schemas.enable", "false", "converter.type", "key"));
        OFFSET_VALUES.configure(Map.of("schemas.enable", "false", "converter.type", "value"));
    }

    /** One engine batch as Python polls it: its sequence number and joined text. */
    public static final class Chunk {
        public final long seq;
        public final int size;
        public final String payload;
        /**
         * Schema announcements, usually empty: (record index US destination US key schema US
         * value schema RS)*; from that record on, the destination's records use them.
         */
        public final String schemas;

        Chunk(long seq, int size, String payload, String schemas) {
            this.seq = seq;
            this.size = size;
            this.payload = payload;
            this.schemas = schemas;
        }
    }

    /**
     * What acknowledge() needs of a chunk until Python has committed it, and no more: a
     * backlog keeps hundreds of thousands of records unacknowledged, and holding their text or
     * every record's offset kept the collector copying them (once it filled the heap). So the
     * source partition and offset are kept only where an acknowledgement can usefully end:
     * at a transaction's COMMIT and at the last record of each partition's run. Acknowledging
     * a record in between stores the nearest earlier one; the few records after it are
     * delivered again after a restart, and the lake drops them by position. One record per
     * partition is kept as the carrier that acknowledge() passes to Debezium's committer.
     */
    static final class Pending {
        final long seq;
        final int size;
        final Map<String, ?>[] partitions;
        final Map<String, ?>[] offsets;
        final List<ChangeEvent<String, String>> carriers = new ArrayList<>(1);
        int marked;

        @SuppressWarnings("unchecked")
        Pending(long seq, int size) {
            this.seq = seq;
            this.size = size;
            this.partitions = new Map[size];
            this.offsets = new Map[size];
        }

        ChangeEvent<String, String> carrier(Map<String, ?> partition) {
            for (ChangeEvent<String, String> c : carriers) {
                if (partitionOf(c).equals(partition)) {
                    return c;
                }
            }
            return null;
        }
    }

    static Map<String, ?> partitionOf(ChangeEvent<String, String> record) {
        return sourceOf(record).sourcePartition();
    }

    static SourceRecord sourceOf(ChangeEvent<String, String> record) {
        return ((EmbeddedEngineChangeEvent<?, ?, ?>) record).sourceRecord();
    }

    private final String name;
    private final ArrayBlockingQueue<Chunk> ready;
    private final ArrayDeque<Pending> unacked = new ArrayDeque<>();
    private final DebeziumEngine<ChangeEvent<String, String>> engine;
    private final CountDownLatch finished = new CountDownLatch(1);
    private volatile DebeziumEngine.RecordCommitter<ChangeEvent<String, String>> committer;
    private volatile boolean closing;
    private volatile boolean success = true;
    private volatile String message;
    private volatile Throwable error;
    private long nextSeq = 1;
    private Thread thread;
    /** The key and value schema last announced per destination. */
    private final Map<String, Schema[]> announced = new HashMap<>();

    public EngineBridge(Properties properties, int queueChunks) {
        this.name = properties.getProperty("name", "tidemark");
        this.ready = new ArrayBlockingQueue<>(Math.max(1, queueChunks));
        this.engine = DebeziumEngine.create(Json.class)
                .using(properties)
                .using((DebeziumEngine.CompletionCallback) this)
                .notifying((DebeziumEngine.ChangeConsumer<ChangeEvent<String, String>>) this)
                .build();
    }

    /** Starts the engine on a daemon thread named tidemark-debezium. */
    public synchronized void start() {
        if (thread != null) {
            return;
        }
        thread = new Thread(() -> {
            try {
                engine.run();
            }
            catch (Throwable t) {
                handle(false, String.valueOf(t.getMessage()), t);
            }
            finally {
                finished.countDown();
            }
        }, "tidemark-debezium");
        thread.setDaemon(true);
        thread.start();
    }

    @Override
    public void handleBatch(List<ChangeEvent<String, String>> records,
                            DebeziumEngine.RecordCommitter<ChangeEvent<String, String>> committer)
            throws InterruptedException {
        this.committer = committer;
        int size = records.size();
        int estimate = 0;
        for (ChangeEvent<String, String> record : records) {
            estimate += 64 + (record.value() == null ? 1 : record.value().length())
                    + (record.key() == null ? 1 : record.key().length());
        }
        StringBuilder text = new StringBuilder(estimate);
        StringBuilder schemas = new StringBuilder();
        for (int i = 0; i < size; i++) {
            ChangeEvent<String, String> record = records.get(i);
            announce(schemas, i, record.destination(), sourceOf(record));
            text.append(record.destination()).append(FIELD);
            append(text, record.key());
            text.append(FIELD);
            append(text, record.value());
            text.append(RECORD);
        }
        long seq = nextSeq++;
        Pending pending = new Pending(seq, size);
        Map<String, ?> last = null;
        Map<String, ?> next = size == 0 ? null : sourceOf(records.get(0)).sourcePartition();
        for (int i = 0; i < size; i++) {
            ChangeEvent<String, String> record = records.get(i);
            SourceRecord source = sourceOf(record);
            Map<String, ?> partition = next;
            next = i + 1 < size ? sourceOf(records.get(i + 1)).sourcePartition() : null;
            Map<String, ?> offset = source.sourceOffset();
            if (next == null || !same(partition, next) || isCommit(offset)) {
                pending.partitions[i] = partition;
                pending.offsets[i] = offset;
            }
            if (!same(partition, last) && pending.carrier(partition) == null) {
                pending.carriers.add(record);
            }
            last = partition;
        }
        synchronized (this) {
            unacked.addLast(pending);
        }
        Chunk chunk = new Chunk(seq, size, text.toString(), schemas.toString());
        while (!ready.offer(chunk, 200, TimeUnit.MILLISECONDS)) {
            if (closing) {
                throw new InterruptedException("engine is closing");
            }
        }
    }

    /** Appends an announcement when the destination's schemas differ from the last sent. */
    private void announce(StringBuilder schemas, int index, String destination, SourceRecord source) {
        Schema key = source.keySchema();
        Schema value = source.valueSchema();
        if (value == null) {
            return; // a tombstone: nothing to decode with a schema
        }
        Schema[] last = announced.get(destination);
        if (last != null && sameSchema(last[0], key) && sameSchema(last[1], value)) {
            return;
        }
        announced.put(destination, new Schema[]{ key, value });
        schemas.append(index).append(FIELD).append(destination).append(FIELD);
        append(schemas, key == null ? null : SCHEMA_WRITER.asJsonSchema(key).toString());
        schemas.append(FIELD).append(SCHEMA_WRITER.asJsonSchema(value).toString()).append(RECORD);
    }

    private static boolean sameSchema(Schema a, Schema b) {
        return a == b || (a != null && a.equals(b));
    }

    private static void append(StringBuilder text, String value) {
        if (value == null) {
            text.append(NULL);
        }
        else {
            text.append(value);
        }
    }

    @Override
    public boolean supportsTombstoneEvents() {
        return true;
    }

    /** Chunks waiting to be polled. */
    public int backlog() {
        return ready.size();
    }

    /** The next chunk, or null after timeoutMs. */
    public Chunk poll(long timeoutMs) throws InterruptedException {
        return ready.poll(timeoutMs, TimeUnit.MILLISECONDS);
    }

    /**
     * The offsets acknowledge(seq, count) would store, without storing them: a JSON object
     * {key: value} of the offsets file's entries (as Kafka's writer serializes them) for each
     * source partition whose offset would change; "{}" when none would. The caller records
     * these in its sink before it acknowledges, so what Debezium resumes from never runs
     * ahead of what the sink holds.
     */
    public synchronized String offsetsFor(long seq, int count) throws Exception {
        Map<String, String> out = new LinkedHashMap<>();
        List<Map<String, ?>> done = new ArrayList<>(2);
        List<Pending> range = new ArrayList<>();
        List<Integer> ends = new ArrayList<>();
        collect(seq, count, range, ends);
        for (int k = range.size() - 1; k >= 0; k--) {
            Pending chunk = range.get(k);
            for (int i = ends.get(k) - 1; i >= chunk.marked; i--) {
                Map<String, ?> partition = chunk.partitions[i];
                if (partition == null || contains(done, partition)) {
                    continue;
                }
                done.add(partition);
                Map<String, Object> offset = stored(chunk.offsets[i]);
                byte[] key = OFFSET_KEYS.fromConnectData(name, null, Arrays.asList(name, partition));
                byte[] value = OFFSET_VALUES.fromConnectData(name, null, offset);
                out.put(new String(key, StandardCharsets.UTF_8), new String(value, StandardCharsets.UTF_8));
            }
        }
        return MAPPER.writeValueAsString(out);
    }

    /** The offset as acknowledge() stores it (without lsn_proc at a COMMIT: see PG_LSN_PROC). */
    private static Map<String, Object> stored(Map<String, ?> offset) {
        boolean atCommit = isCommit(offset);
        Map<String, Object> out = new HashMap<>();
        for (Map.Entry<String, ?> entry : offset.entrySet()) {
            if (atCommit && PG_LSN_PROC.equals(entry.getKey())) {
                continue;
            }
            out.put(entry.getKey(), entry.getValue());
        }
        return out;
    }

    /** The unacknowledged chunks up to (seq, count) and the end index to acknowledge in each. */
    private int collect(long seq, int count, List<Pending> range, List<Integer> ends) {
        int acked = 0;
        for (Pending chunk : unacked) {
            if (chunk.seq > seq) {
                break;
            }
            int upto = chunk.seq < seq ? chunk.size : Math.min(count, chunk.size);
            if (upto > chunk.marked) {
                range.add(chunk);
                ends.add(upto);
                acked += upto - chunk.marked;
            }
        }
        return acked;
    }

    /**
     * The entries of a Kafka FileOffsetBackingStore file as a JSON object {key: value} (the
     * stored byte strings as UTF-8 text), or null when the file is missing or empty.
     */
    @SuppressWarnings("unchecked")
    public static String readOffsetFile(String path) throws Exception {
        java.io.File file = new java.io.File(path);
        if (!file.exists() || file.length() == 0) {
            return null;
        }
        try (java.io.ObjectInputStream in = new java.io.ObjectInputStream(
                new java.io.FileInputStream(file))) {
            Map<byte[], byte[]> raw = (Map<byte[], byte[]>) in.readObject();
            Map<String, String> out = new LinkedHashMap<>();
            for (Map.Entry<byte[], byte[]> entry : raw.entrySet()) {
                if (entry.getKey() == null) {
                    continue;
                }
                out.put(new String(entry.getKey(), StandardCharsets.UTF_8),
                        entry.getValue() == null ? null : new String(entry.getValue(), StandardCharsets.UTF_8));
            }
            return MAPPER.writeValueAsString(out);
        }
        catch (java.io.EOFException e) {
            return null; // truncated by a kill during a rewrite: as good as missing
        }
    }

    /**
     * Writes a FileOffsetBackingStore file holding exactly the entries of a JSON object
     * {key: value} (written aside, synced, then renamed over the target).
     */
    @SuppressWarnings("unchecked")
    public static void writeOffsetFile(String path, String json) throws Exception {
        Map<String, String> entries = MAPPER.readValue(json, Map.class);
        HashMap<byte[], byte[]> raw = new HashMap<>();
        for (Map.Entry<String, String> entry : entries.entrySet()) {
            raw.put(entry.getKey().getBytes(StandardCharsets.UTF_8),
                    entry.getValue() == null ? null : entry.getValue().getBytes(StandardCharsets.UTF_8));
        }
        java.io.File target = new java.io.File(path);
        java.io.File partial = new java.io.File(path + ".partial");
        try (java.io.FileOutputStream file = new java.io.FileOutputStream(partial);
             java.io.ObjectOutputStream out = new java.io.ObjectOutputStream(file)) {
            out.writeObject(raw);
            out.flush();
            file.getFD().sync();
        }
        java.nio.file.Files.move(partial.toPath(), target.toPath(),
                java.nio.file.StandardCopyOption.REPLACE_EXISTING,
                java.nio.file.StandardCopyOption.ATOMIC_MOVE);
    }

    /**
     * Acknowledges every record up to chunk seq, record count (exclusive end index): stores the
     * newest acknowledged offset of each source partition and flushes the offsets. Earlier
     * chunks are acknowledged whole. Returns the number of records newly acknowledged.
     */
    public synchronized int acknowledge(long seq, int count) throws InterruptedException {
        DebeziumEngine.RecordCommitter<ChangeEvent<String, String>> c = committer;
        if (c == null) {
            return 0;
        }
        List<Map<String, ?>> done = new ArrayList<>(2);
        List<Pending> range = new ArrayList<>();
        List<Integer> ends = new ArrayList<>();
        int acked = collect(seq, count, range, ends);
        // newest first: the first offset seen per partition is the one to store
        for (int k = range.size() - 1; k >= 0; k--) {
            Pending chunk = range.get(k);
            for (int i = ends.get(k) - 1; i >= chunk.marked; i--) {
                Map<String, ?> partition = chunk.partitions[i];
                if (partition == null || contains(done, partition)) {
                    continue; // not kept (see Pending), or a newer offset was stored
                }
                done.add(partition);
                DebeziumEngine.Offsets offsets = c.buildOffsets();
                for (Map.Entry<String, Object> entry : stored(chunk.offsets[i]).entrySet()) {
                    offsets.set(entry.getKey(), entry.getValue());
                }
                c.markProcessed(chunk.carrier(partition), offsets);
            }
        }
        for (int k = 0; k < range.size(); k++) {
            range.get(k).marked = ends.get(k);
        }
        while (!unacked.isEmpty() && unacked.peekFirst().marked >= unacked.peekFirst().size) {
            unacked.pollFirst();
        }
        if (acked > 0) {
            c.markBatchFinished();
        }
        return acked;
    }

    private static boolean same(Map<String, ?> a, Map<String, ?> b) {
        return a == b || (a != null && a.equals(b));
    }

    private static boolean isCommit(Map<String, ?> offset) {
        return "COMMIT".equals(String.valueOf(offset.get(PG_MESSAGE_TYPE)));
    }

    private static boolean contains(List<Map<String, ?>> partitions, Map<String, ?> partition) {
        for (Map<String, ?> p : partitions) {
            if (p == partition || p.equals(partition)) {
                return true;
            }
        }
        return false;
    }

    @Override
    public void handle(boolean success, String message, Throwable error) {
        if (error != null || !success) {
            this.success = false;
            if (this.error == null) {
                this.error = error;
                this.message = message;
            }
        }
        else if (this.message == null) {
            this.message = message;
        }
    }

    public boolean isFinished() {
        return finished.getCount() == 0;
    }

    /** Null while running or after a clean stop; otherwise the root cause chain as text. */
    public String failure() {
        if (success) {
            return null;
        }
        StringBuilder text = new StringBuilder(String.valueOf(message));
        Throwable t = error;
        int depth = 0;
        while (t != null && depth++ < 8) {
            text.append(" | ").append(t.getClass().getName()).append(": ").append(t.getMessage());
            t = t.getCause();
        }
        return text.toString();
    }

    /** Stops the engine and waits up to timeoutMs for its thread to finish. */
    public boolean close(long timeoutMs) throws Exception {
        closing = true;
        long deadline = System.currentTimeMillis() + timeoutMs;
        if (thread != null) {
            while (!isFinished()) {
                try {
                    engine.close();
                    break;
                }
                catch (IllegalStateException e) {
                    // Starting tasks cannot be interrupted, or a stop is already under way.
                    if (System.currentTimeMillis() > deadline) {
                        break;
                    }
                    Thread.sleep(50);
                }
            }
            finished.await(Math.max(0, deadline - System.currentTimeMillis()), TimeUnit.MILLISECONDS);
        }
        else {
            engine.close();
        }
        ready.clear();
        return thread == null || isFinished();
    }
}
