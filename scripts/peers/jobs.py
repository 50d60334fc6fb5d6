"""The peers of `millrace bench jobs`: one data generator, three batch queries run by DuckDB,
Polars, DataFusion and Spark (local[2]) on the same files, and a comparison of their outputs.

Run with the venv of jobs.sh (`jobs.sh setup PEER` installs it; `jobs.sh gen|run|compare …`
forwards here):

  jobs.py gen KIND OUT --rows N [--seed S] [--format csv|parquet]
      text   OUT: N lines of ~60 ASCII characters: words (Zipf-like over 50,000 distinct words,
             mostly lower-case, some Capitalized or UPPER) between spaces and punctuation.
      sales  OUT: CSV `region,product,qty,price` (20 regions, products 1..100000, qty int64,
             price float64 with 2 decimals: always written as d.dd), or Parquet (row groups of
             1,048,576 rows); the format is --format, else OUT's extension (.parquet), else CSV.
      join   OUT is a folder: orders.csv (order_id,customer_id,amount) with N rows and
             customers.csv (customer_id,name,segment) with M = max(1, N/10) rows, ids 1..M;
             an order's customer_id is uniform over 1..max(1, 12*M/10), so about 1/6 of them
             match nothing. --format parquet writes orders.parquet and customers.parquet.
      Deterministic: the bytes depend on KIND, N, S and the format only (numpy's PCG64, seeded
      per chunk). One JSON line on stdout: kind, rows, files, bytes, wall_s.

  jobs.py run PEER QUERY OUT --input PATH... [--memory-limit BYTES]
      PEER: duckdb, polars, datafusion, spark. QUERY (inputs by extension: .parquet is
      Parquet, anything else CSV with a header; wordcount reads any non-Parquet file as lines):
      wordcount  --input TEXT           words = runs of letters and digits ([\\p{L}\\p{N}]+;
                                        anything else separates), lower-cased; count per word
                                        -> `word,n` sorted by word
      groupby    --input SALES          per region: count(*), sum(qty), avg(price),
                                        min(price), max(price)
                                        -> `region,n,qty,avg_price,min_price,max_price` by region
      join       --input ORDERS CUSTOMERS   orders JOIN customers USING (customer_id), per
                                        segment: count(*), sum(amount) -> `segment,n,amount`
      OUT is one CSV file with that header, rows sorted by the key (byte order), written under
      a temp name next to OUT and renamed into place (Spark writes a folder of parts, which are
      concatenated in name order, one header kept). --memory-limit: DuckDB `SET memory_limit`
      (spilling to a temp folder next to OUT), DataFusion a fair spill pool of that size
      (spilling to the same), Spark the driver's heap (-Xmx; at least 512 MiB); Polars has
      none ("memory_limit": "unsupported"). Without it Spark's heap is PEER_HEAP (default 8g).
      Threads: the cores (DuckDB threads, DataFusion target partitions, Polars'
      POLARS_MAX_THREADS); Spark runs local[2] with 4 shuffle partitions.
      One JSON line on stdout: peer, query, status ("ok"), version, wall_s (engine import,
      start, query and output written: the clock starts before the engine's import),
      startup_s (import and session start, within wall_s), cpu_s (user + system of this process and its reaped
      children, Spark's JVM included, all of the run), rows_out, memory_limit, threads, input,
      output; Spark adds driver_memory and max_heap_bytes. When the engine fails, the line
      has status "out_of_memory" (the engine refused to exceed the limit; exit 4) or "error"
      (exit 1), error (its message), wall_s, memory_limit; one line on stderr too. Bad
      arguments or inputs: one line on stderr, exit 2.

  jobs.py compare A B [C...] [--json]
      Every output against every other: equal headers and the same multiset of rows; cells
      equal as text, or as numbers (integers exactly, floats within 1e-9 relative). An output
      is a CSV file with a header, or a folder of CSV part files (millrace's sink, Spark's
      write), concatenated in name order with one header. Exit 0 with one line on stdout, or 1
      with each difference on stderr; --json prints one JSON line instead (same, outputs with
      their rows, pairs, differences with a, b and what).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import resource
import shutil
import sys
import time
from pathlib import Path

# --------------------------------------------------------------------------------------------
# Schemas and the queries' SQL (DuckDB, DataFusion); Polars and Spark say the same in their APIs.

SALES = [("region", "string"), ("product", "int64"), ("qty", "int64"), ("price", "float64")]
ORDERS = [("order_id", "int64"), ("customer_id", "int64"), ("amount", "float64")]
CUSTOMERS = [("customer_id", "int64"), ("name", "string"), ("segment", "string")]

HEADERS = {
    "wordcount": ["word", "n"],
    "groupby": ["region", "n", "qty", "avg_price", "min_price", "max_price"],
    "join": ["segment", "n", "amount"],
}
WORD = r"[\p{L}\p{N}]+"  # a word: a run of letters and digits (Unicode classes; data is ASCII)
NOT_WORD = r"[^\p{L}\p{N}]+"

GROUPBY_SQL = """SELECT region, count(*) AS n, sum(qty) AS qty, avg(price) AS avg_price,
                        min(price) AS min_price, max(price) AS max_price
                 FROM sales GROUP BY region ORDER BY region"""
JOIN_SQL = """SELECT c.segment AS segment, count(*) AS n, sum(o.amount) AS amount
              FROM orders o JOIN customers c ON o.customer_id = c.customer_id
              GROUP BY c.segment ORDER BY c.segment"""

PEERS = ("duckdb", "polars", "datafusion", "spark")
QUERIES = tuple(HEADERS)
SPARK_MIN_HEAP = 512 << 20


def fail(message: str, code: int = 2) -> None:
    print(f"jobs.py: {message}", file=sys.stderr)
    sys.exit(code)


def quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def is_parquet(path: str) -> bool:
    return path.lower().endswith(".parquet")


# --------------------------------------------------------------------------------------------
# gen

CHUNK = 1 << 20  # rows per generated chunk (and Parquet row group)
TEXT_CHUNK = 1 << 17  # lines per generated text chunk
VOCABULARY = 50_000
REGIONS = [
    "amsterdam", "athens", "berlin", "bogota", "cairo", "delhi", "dublin", "helsinki",
    "jakarta", "lagos", "lima", "lisbon", "madrid", "nairobi", "oslo", "paris", "quito",
    "seoul", "sydney", "tokyo",
]  # fmt: skip
SEGMENTS = ["consumer", "corporate", "enterprise", "home_office", "small_business"]
SEGMENT_WEIGHTS = [0.40, 0.25, 0.10, 0.15, 0.10]
SEPARATORS = {
    " ": 0.70, ", ": 0.09, ". ": 0.05, "; ": 0.02, ": ": 0.02, " - ": 0.02, "! ": 0.01,
    "? ": 0.01, " (": 0.02, ") ": 0.02, "_": 0.01, "/": 0.01, "\t": 0.01, "'": 0.01,
}  # fmt: skip
LINE_ENDS = {".\n": 0.60, "\n": 0.20, "!\n": 0.05, "?\n": 0.10, ";\n": 0.05}


def rng_for(seed: int, stream: int, chunk: int = 0):
    import numpy as np

    return np.random.default_rng([seed, stream, chunk])


def vocabulary(seed: int) -> list[bytes]:
    """50,000 distinct words: 49,000 of 2..12 lower-case letters (mean 5.5), 1,000 numbers;
    in random order, so a word's Zipf rank says nothing about it."""
    import numpy as np

    rng = rng_for(seed, 1)
    letters, numbers = VOCABULARY - 1000, 1000
    words: list[bytes] = []
    while len(words) < letters:  # once, in practice: ~2% of 60,000 candidates are duplicates
        n = 60_000
        lengths = 2 + rng.binomial(10, 0.35, n)
        grid = rng.integers(ord("a"), ord("z") + 1, (n, 12), dtype=np.uint8)
        grid[np.arange(12)[None, :] >= lengths[:, None]] = 0
        candidates = grid.view("S12").ravel()
        _, first = np.unique(candidates, return_index=True)
        seen = set(words)
        for word in candidates[np.sort(first)].tolist():
            if word not in seen:
                seen.add(word)
                words.append(word)
    words = words[:letters]
    words += [str(v).encode() for v in rng.choice(100_000, numbers, replace=False).tolist()]
    return [words[i] for i in rng.permutation(len(words)).tolist()]


def gen_text(out: Path, rows: int, seed: int) -> int:
    import numpy as np

    vocab = vocabulary(seed)
    v = len(vocab)
    seps, sep_p = list(SEPARATORS), np.array(list(SEPARATORS.values()))
    ends, end_p = list(LINE_ENDS), np.array(list(LINE_ENDS.values()))
    # Pieces: words lower-case, Capitalized, UPPER; separators; line ends.
    pieces = (
        vocab + [w.capitalize() for w in vocab] + [w.upper() for w in vocab]
        + [s.encode() for s in seps] + [e.encode() for e in ends]
    )  # fmt: skip
    blob = np.frombuffer(b"".join(pieces), dtype=np.uint8)
    lengths = np.array([len(p) for p in pieces], dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    # Zipf-like ranks (s = 1): rank k has probability ln((k + 1) / k) / ln(v + 1), the
    # inverse of the continuous 1/x law, ~1/(k ln v); the top word is 6.4% of all words.
    log_range = np.log(v + 1)
    written = 0
    with open(out, "wb") as f:
        for chunk, first in enumerate(range(0, rows, TEXT_CHUNK)):
            lines = min(TEXT_CHUNK, rows - first)
            rng = rng_for(seed, 2, chunk)
            per_line = rng.integers(5, 13, lines)  # 8.5 words of ~7 characters with separator
            tokens = int(per_line.sum())
            word = np.minimum(np.exp(rng.random(tokens) * log_range).astype(np.int64) - 1, v - 1)
            case = rng.choice(3, tokens, p=[0.85, 0.12, 0.03])
            line_start = np.cumsum(per_line) - per_line
            case[line_start] = np.maximum(case[line_start], 1)  # lines start Capitalized
            sep = 3 * v + rng.choice(len(seps), tokens, p=sep_p)
            line_end = np.cumsum(per_line) - 1
            sep[line_end] = 3 * v + len(seps) + rng.choice(len(ends), lines, p=end_p)
            ids = np.empty(2 * tokens, dtype=np.int64)
            ids[0::2] = case * v + word
            ids[1::2] = sep
            # The bytes of the pieces ids, gathered from blob: the index runs +1 within a piece
            # and jumps to the next piece's start at its first byte (one cumsum).
            n = lengths[ids]
            first_byte = np.cumsum(n) - n
            step = np.ones(int(n.sum()), dtype=np.int32)
            piece_start = starts[ids]
            step[first_byte[1:]] = piece_start[1:] - (piece_start[:-1] + n[:-1]) + 1
            step[0] = piece_start[0]
            data = blob[np.cumsum(step, dtype=np.int32)].tobytes()
            f.write(data)
            written += len(data)
    return written


def money(cents):
    """Cents (int64 numpy) -> (float64 array, Arrow strings d.dd)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    units = pa.array(cents // 100).cast(pa.string())
    hundredths = pc.utf8_lpad(pa.array(cents % 100).cast(pa.string()), 2, "0")
    return cents / 100, pc.binary_join_element_wise(units, hundredths, ".")


class TableWriter:
    """Writes chunks of one table to CSV (a header line, no quotes, money as d.dd) or Parquet
    (a row group per chunk)."""

    def __init__(self, path: Path, columns: list[tuple[str, str]], parquet: bool):
        import pyarrow as pa

        self.path, self.parquet = path, parquet
        self.schema = pa.schema([(name, pa.type_for_alias(kind)) for name, kind in columns])
        if parquet:
            import pyarrow.parquet as pq

            self.writer = pq.ParquetWriter(str(path), self.schema, compression="snappy")
        else:
            import pyarrow.csv as pacsv

            self.sink = pa.OSFile(str(path), "wb")
            self.sink.write(",".join(name for name, _ in columns).encode() + b"\n")
            options = pacsv.WriteOptions(include_header=False, quoting_style="none")
            # Floats are written as d.dd strings (Arrow would write 3.0 as "3").
            self.text_schema = pa.schema(
                [(f.name, pa.string() if f.type == pa.float64() else f.type) for f in self.schema]
            )
            self.writer = pacsv.CSVWriter(self.sink, self.text_schema, write_options=options)

    def write(self, values: dict, texts: dict) -> None:
        import pyarrow as pa

        if self.parquet:
            table = pa.table(values, schema=self.schema)
            self.writer.write_table(table, row_group_size=CHUNK)
        else:
            arrays = {**values, **texts}
            table = pa.table({f.name: arrays[f.name] for f in self.schema})
            self.writer.write_table(table.cast(self.text_schema))

    def close(self) -> None:
        self.writer.close()
        if not self.parquet:
            self.sink.close()


def gen_sales(out: Path, rows: int, seed: int, parquet: bool) -> None:
    import numpy as np

    weights = 1.0 / np.arange(1, len(REGIONS) + 1) ** 0.8
    weights /= weights.sum()
    regions = np.array(REGIONS, dtype=object)
    writer = TableWriter(out, SALES, parquet)
    for chunk, first in enumerate(range(0, rows, CHUNK)):
        n = min(CHUNK, rows - first)
        rng = rng_for(seed, 3, chunk)
        region = regions[rng.choice(len(REGIONS), n, p=weights)]
        product = rng.integers(1, 100_001, n)
        qty = rng.geometric(0.3, n).astype(np.int64)
        price, price_text = money(rng.integers(99, 100_000, n))
        values = {"region": region, "product": product, "qty": qty, "price": price}
        writer.write(values, {"price": price_text})
    writer.close()


def gen_join(out: Path, rows: int, seed: int, parquet: bool) -> list[Path]:
    ext = ".parquet" if parquet else ".csv"
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"orders{ext}", out / f"customers{ext}"]
    temps = [p.with_name(f".{p.name}.tmp-{os.getpid()}") for p in paths]
    try:
        write_join(temps, rows, seed, parquet)
        for temp, path in zip(temps, paths):
            os.replace(temp, path)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    return paths


def write_join(temps: list[Path], rows: int, seed: int, parquet: bool) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    customers = max(1, rows // 10)
    ids_range = max(1, (customers * 12) // 10)
    segments = np.array(SEGMENTS, dtype=object)
    writer = TableWriter(temps[0], ORDERS, parquet)
    for chunk, first in enumerate(range(0, rows, CHUNK)):
        n = min(CHUNK, rows - first)
        rng = rng_for(seed, 4, chunk)
        customer = rng.integers(1, ids_range + 1, n)
        amount, amount_text = money(rng.integers(100, 500_001, n))
        order_id = np.arange(first + 1, first + n + 1, dtype=np.int64)
        values = {"order_id": order_id, "customer_id": customer, "amount": amount}
        writer.write(values, {"amount": amount_text})
    writer.close()
    writer = TableWriter(temps[1], CUSTOMERS, parquet)
    for chunk, first in enumerate(range(0, customers, CHUNK)):
        n = min(CHUNK, customers - first)
        rng = rng_for(seed, 5, chunk)
        ids = np.arange(first + 1, first + n + 1, dtype=np.int64)
        name = pc.binary_join_element_wise("customer-", pa.array(ids).cast(pa.string()), "")
        segment = segments[rng.choice(len(SEGMENTS), n, p=SEGMENT_WEIGHTS)]
        writer.write({"customer_id": ids, "name": name, "segment": segment}, {})
    writer.close()


def gen(args) -> None:
    started = time.perf_counter()
    out = Path(args.out)
    if args.rows < 0:
        fail("--rows must be 0 or more")
    fmt = args.format or ("parquet" if is_parquet(args.out) else "csv")
    if args.kind == "text" and fmt != "csv":
        fail("text has no Parquet format")
    if args.kind == "join":
        files = gen_join(out, args.rows, args.seed, fmt == "parquet")
    else:
        temp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        try:
            if args.kind == "text":
                gen_text(temp, args.rows, args.seed)
            else:
                gen_sales(temp, args.rows, args.seed, fmt == "parquet")
            os.replace(temp, out)
        finally:
            temp.unlink(missing_ok=True)
        files = [out]
    report = {
        "kind": args.kind,
        "rows": args.rows,
        "seed": args.seed,
        "format": "text" if args.kind == "text" else fmt,
        "files": [str(f) for f in files],
        "bytes": sum(f.stat().st_size for f in files),
        "wall_s": round(time.perf_counter() - started, 3),
    }
    print(json.dumps(report))


# --------------------------------------------------------------------------------------------
# run: one function per peer, writing the query's result as CSV to `target`; returns
# (version, startup seconds since `started`, details for the JSON line).


def duckdb_source(path: str, columns, text: bool = False) -> str:
    if text:
        return (
            f"read_csv({quoted(path)}, columns = {{'line': 'VARCHAR'}}, header = false, "
            "delim = '\x01', quote = '', escape = '', auto_detect = false)"
        )
    if is_parquet(path):
        return f"read_parquet({quoted(path)})"
    types = {"string": "VARCHAR", "int64": "BIGINT", "float64": "DOUBLE"}
    spec = ", ".join(f"'{name}': '{types[kind]}'" for name, kind in columns)
    return f"read_csv({quoted(path)}, header = true, columns = {{{spec}}}, auto_detect = false)"


def run_duckdb(query, inputs, target, memory, scratch, started):
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {os.cpu_count() or 1}")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"SET temp_directory = {quoted(str(scratch))}")
    if memory is not None:
        con.execute(f"SET memory_limit = '{memory}B'")
    startup = time.perf_counter() - started
    if query == "wordcount":
        sql = f"""SELECT word, count(*) AS n
                  FROM (SELECT unnest(regexp_extract_all(lower(line), '{WORD}')) AS word
                        FROM {duckdb_source(inputs[0], None, text=True)})
                  GROUP BY word ORDER BY word"""
    elif query == "groupby":
        sql = GROUPBY_SQL.replace("FROM sales", f"FROM {duckdb_source(inputs[0], SALES)}")
    else:
        sql = JOIN_SQL.replace("FROM orders", f"FROM {duckdb_source(inputs[0], ORDERS)}").replace(
            "JOIN customers", f"JOIN {duckdb_source(inputs[1], CUSTOMERS)}"
        )
    con.execute(f"COPY ({sql}) TO {quoted(str(target))} (FORMAT csv, HEADER true)")
    return duckdb.__version__, startup, {"memory_limit": memory}


def polars_source(pl, path: str, columns):
    if is_parquet(path):
        return pl.scan_parquet(path)
    types = {"string": pl.String, "int64": pl.Int64, "float64": pl.Float64}
    return pl.scan_csv(path, schema={name: types[kind] for name, kind in columns})


def run_polars(query, inputs, target, memory, scratch, started):
    import polars as pl

    startup = time.perf_counter() - started
    if query == "wordcount":
        lines = pl.scan_csv(
            inputs[0], has_header=False, separator="\x01", quote_char=None,
            schema={"line": pl.String},
        )  # fmt: skip
        plan = (
            lines.select(word=pl.col("line").str.to_lowercase().str.extract_all(WORD))
            .explode("word")
            .filter(pl.col("word").is_not_null())
            .group_by("word")
            .agg(n=pl.len())
            .sort("word")
        )
    elif query == "groupby":
        plan = (
            polars_source(pl, inputs[0], SALES)
            .group_by("region")
            .agg(
                n=pl.len(),
                qty=pl.col("qty").sum(),
                avg_price=pl.col("price").mean(),
                min_price=pl.col("price").min(),
                max_price=pl.col("price").max(),
            )
            .sort("region")
        )
    else:
        orders = polars_source(pl, inputs[0], ORDERS)
        customers = polars_source(pl, inputs[1], CUSTOMERS)
        plan = (
            orders.join(customers, on="customer_id", how="inner")
            .group_by("segment")
            .agg(n=pl.len(), amount=pl.col("amount").sum())
            .sort("segment")
        )
    plan.sink_csv(str(target), engine="streaming")
    return pl.__version__, startup, {"memory_limit": None if memory is None else "unsupported"}


def run_datafusion(query, inputs, target, memory, scratch, started):
    import datafusion
    import pyarrow as pa
    from datafusion import (
        CsvReadOptions, DataFrameWriteOptions, RuntimeEnvBuilder, SessionConfig, SessionContext,
    )  # fmt: skip

    config = SessionConfig().with_target_partitions(os.cpu_count() or 1)
    runtime = RuntimeEnvBuilder().with_disk_manager_specified(str(scratch))
    if memory is not None:
        runtime = runtime.with_fair_spill_pool(memory)
    ctx = SessionContext(config, runtime)
    startup = time.perf_counter() - started

    def register(name: str, path: str, columns) -> None:
        suffix = Path(path).suffix or ""
        if is_parquet(path):
            ctx.register_parquet(name, path, file_extension=suffix)
            return
        types = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64()}
        schema = pa.schema([(n, types[k]) for n, k in columns])
        ctx.register_csv(
            name, path,
            options=CsvReadOptions(has_header=True, schema=schema, file_extension=suffix),
        )  # fmt: skip

    if query == "wordcount":
        # No quote character: \x02 never occurs in text.
        options = CsvReadOptions(
            has_header=False, delimiter="\x01", quote="\x02",
            schema=pa.schema([("line", pa.string())]), file_extension=Path(inputs[0]).suffix,
        )  # fmt: skip
        ctx.register_csv("lines", inputs[0], options=options)
        sql = f"""SELECT word, count(*) AS n
                  FROM (SELECT unnest(string_to_array(
                                 regexp_replace(lower(line), '{NOT_WORD}', ' ', 'g'), ' ')) AS word
                        FROM lines)
                  WHERE word <> '' GROUP BY word ORDER BY word"""
    elif query == "groupby":
        register("sales", inputs[0], SALES)
        sql = GROUPBY_SQL
    else:
        register("orders", inputs[0], ORDERS)
        register("customers", inputs[1], CUSTOMERS)
        sql = JOIN_SQL
    ctx.sql(sql).write_csv(
        str(target), with_header=True, write_options=DataFrameWriteOptions(single_file_output=True)
    )
    return datafusion.__version__, startup, {"memory_limit": memory}


def run_spark(query, inputs, target, memory, scratch, started):
    heap = memory if memory is not None else os.environ.get("PEER_HEAP", "8g")
    if isinstance(heap, int):
        if heap < SPARK_MIN_HEAP:
            fail(f"spark: --memory-limit {heap} is below 512 MiB (the driver refuses less heap)")
        heap = f"{heap >> 20}m"
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    log4j = Path(__file__).resolve().parent / "log4j2.properties"
    java_options = (
        f"-XX:+UseParallelGC -Dlog4j2.configurationFile=file:{log4j} "
        f"-Dlog4j.configurationFile=file:{log4j}"
    )
    import pyspark
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    spark = (
        SparkSession.builder.master("local[2]")
        .appName(f"millrace-jobs-{query}")
        .config("spark.driver.memory", heap)  # passed to spark-submit before the JVM starts
        .config("spark.driver.extraJavaOptions", java_options)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.local.dir", str(scratch))
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    startup = time.perf_counter() - started

    def source(path: str, columns):
        if is_parquet(path):
            return spark.read.parquet(path)
        types = {"string": "STRING", "int64": "BIGINT", "float64": "DOUBLE"}
        ddl = ", ".join(f"{name} {types[kind]}" for name, kind in columns)
        return spark.read.csv(path, header=True, schema=ddl)

    try:
        if query == "wordcount":
            words = spark.read.text(inputs[0]).select(
                F.explode(F.split(F.lower(F.col("value")), NOT_WORD)).alias("word")
            )
            result = (
                words.where(F.col("word") != "").groupBy("word").agg(F.count("*").alias("n"))
            ).orderBy("word")
        elif query == "groupby":
            source(inputs[0], SALES).createOrReplaceTempView("sales")
            result = spark.sql(GROUPBY_SQL)
        else:
            source(inputs[0], ORDERS).createOrReplaceTempView("orders")
            source(inputs[1], CUSTOMERS).createOrReplaceTempView("customers")
            result = spark.sql(JOIN_SQL)
        parts = scratch / "parts"
        result.write.option("header", True).mode("overwrite").csv(str(parts))
        concatenate(sorted(parts.glob("part-*")), target)
        max_heap = spark.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory()
    finally:
        # Stopping is cleanup (not in wall_s). The JVM is ended and waited for, so that its CPU
        # time counts in cpu_s (and in the rusage of whoever waits for this process).
        done = time.perf_counter()
        gateway = spark.sparkContext._gateway
        spark.stop()
        stop_jvm(gateway)
    details = {"memory_limit": memory, "driver_memory": heap, "max_heap_bytes": max_heap}
    return pyspark.__version__, startup, details, done


def stop_jvm(gateway) -> None:
    """Ends the JVM pyspark started (it exits at the end of its stdin) and reaps it."""
    import subprocess

    proc = getattr(gateway, "proc", None)
    try:
        gateway.shutdown()
    except Exception:  # noqa: BLE001 - already down
        pass
    if proc is None:
        return
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def concatenate(parts: list[Path], target: Path) -> None:
    """Spark's part files in name order (its range partitions, in key order) -> one CSV file
    with the first header only."""
    header = None
    with open(target, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                first = f.readline()
                if not first:
                    continue
                if header is None:
                    header = first
                    out.write(first)
                elif first != header:
                    fail(f"spark: {part} starts with {first!r}, not the header {header!r}", 1)
                shutil.copyfileobj(f, out)


def count_rows(path: Path) -> int:
    with open(path, "rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return max(0, lines - 1)


OUT_OF_MEMORY = ("out of memory", "outofmemory", "resources exhausted", "memory limit")


def engine_failed(args, error: Exception, started: float) -> None:
    """An engine's error: one JSON line with status "out_of_memory" (exit 4; DuckDB, DataFusion
    and Spark refusing to go past the limit) or "error" (exit 1, with the traceback)."""
    message = " ".join(str(error).split())
    oom = any(word in message.lower() for word in OUT_OF_MEMORY)
    report = {
        "peer": args.peer,
        "query": args.query,
        "status": "out_of_memory" if oom else "error",
        "error": message[:2000],
        "wall_s": round(time.perf_counter() - started, 4),
        "memory_limit": args.memory_limit,
    }
    print(json.dumps(report))
    if not oom:
        import traceback

        traceback.print_exc()
    print(f"jobs.py: {args.peer} {args.query} failed: {message[:500]}", file=sys.stderr)
    sys.exit(4 if oom else 1)


def run(args) -> None:
    started = time.perf_counter()
    inputs = args.input
    wanted = 2 if args.query == "join" else 1
    if len(inputs) != wanted:
        names = "ORDERS CUSTOMERS" if wanted == 2 else "one file"
        fail(f"{args.query} takes --input {names}, got {len(inputs)} path(s)")
    for path in inputs:
        if not os.path.isfile(path):
            fail(f"input {path} is not a file")
    if args.query == "wordcount" and is_parquet(inputs[0]):
        fail("wordcount reads text, not Parquet")
    if args.memory_limit is not None and args.memory_limit <= 0:
        fail("--memory-limit must be positive")
    out = Path(args.out)
    if out.is_dir():
        fail(f"output {out} is a folder")
    temp = out.with_name(f".{out.name}.tmp-{os.getpid()}.csv")
    scratch = out.with_name(f".{out.name}.scratch-{os.getpid()}")
    scratch.mkdir(parents=True)
    runner = {
        "duckdb": run_duckdb, "polars": run_polars, "datafusion": run_datafusion,
        "spark": run_spark,
    }[args.peer]  # fmt: skip
    try:
        try:
            result = runner(args.query, inputs, temp, args.memory_limit, scratch, started)
        except Exception as error:  # noqa: BLE001 - the engine's, reported in one JSON line
            engine_failed(args, error, started)
        version, startup, details = result[:3]
        os.replace(temp, out)
        done = result[3] if len(result) > 3 else time.perf_counter()
    finally:
        temp.unlink(missing_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)
    with open(out, "rb") as f:
        header = f.readline().decode().rstrip("\r\n")
    if header != ",".join(HEADERS[args.query]):
        fail(f"{args.peer} wrote the header {header!r}, not {','.join(HEADERS[args.query])!r}", 1)
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    report = {
        "peer": args.peer,
        "query": args.query,
        "status": "ok",
        "version": version,
        "wall_s": round(done - started, 4),
        "startup_s": round(startup, 4),
        "cpu_s": round(sum(u.ru_utime + u.ru_stime for u in usage), 3),
        "rows_out": count_rows(out),
        **details,
        "threads": 2 if args.peer == "spark" else os.cpu_count(),
        "input": inputs,
        "output": str(out),
    }
    print(json.dumps(report))


# --------------------------------------------------------------------------------------------
# compare

INTEGER = re.compile(r"^[+-]?\d+$")
# Only digits make a float: words such as "nan", "inf" and "infinity" (the word count has them)
# are text, or rows would sort by NaN keys in any order.
FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def number(cell: str):
    if INTEGER.match(cell):
        return int(cell)
    if FLOAT.match(cell):
        return float(cell)
    return None


def same(a: str, b: str) -> bool:
    if a == b:
        return True
    x, y = number(a), number(b)
    if x is None or y is None:
        return False
    if isinstance(x, int) and isinstance(y, int):
        return x == y
    x, y = float(x), float(y)
    return abs(x - y) <= 1e-9 * max(abs(x), abs(y))


def row_key(row: list[str]):
    """Sorts by the cells that are not floats (exact), then by the floats (near-equal floats
    of otherwise equal rows may still land in either order; the keys of our outputs are
    unique)."""
    exact, floats = [], []
    for cell in row:
        value = number(cell)
        if isinstance(value, float):
            exact.append((1, ""))
            floats.append(value)
        elif isinstance(value, int):
            exact.append((0, value))
        else:
            exact.append((2, cell))
    return exact, floats


class Unreadable(Exception):
    """An output that is no CSV with a header: a difference, not a crash."""


def output_files(path: str) -> list[Path]:
    """A CSV file, or a folder's part files in name order (not names starting with `.` or
    `_`: checksums and markers)."""
    p = Path(path)
    if not p.is_dir():
        return [p]
    return sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith((".", "_")))


def read_rows(path: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of a CSV file, or of a folder of CSV parts concatenated (each part
    starts with the same header; empty parts are skipped, as a subtask that got no rows may
    write one)."""
    header, rows = None, []
    files = output_files(path)
    if not files:
        raise Unreadable(f"{path} holds no part files")
    for part in files:
        try:
            with open(part, newline="", encoding="utf-8") as f:
                reader = csv.reader(f)
                first = next(reader, None)
                if first is None:
                    continue
                if header is None:
                    header = first
                elif first != header:
                    raise Unreadable(f"{part} starts with {first}, not the header {header}")
                rows.extend(reader)
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            raise Unreadable(f"cannot read {part}: {error}") from error
    if header is None:
        raise Unreadable(f"{path} is empty (no header)")
    return header, rows


def difference(a: str, table_a, b: str, table_b) -> str | None:
    """None when the two (header, rows sorted by row_key) tables are the same, else the first
    difference."""
    (header_a, rows_a), (header_b, rows_b) = table_a, table_b
    if header_a != header_b:
        return f"headers differ: {a} has {header_a}, {b} has {header_b}"
    if len(rows_a) != len(rows_b):
        return f"row counts differ: {a} has {len(rows_a)}, {b} has {len(rows_b)}"
    if rows_a == rows_b:
        return None
    for row_a, row_b in zip(rows_a, rows_b):
        if len(row_a) != len(row_b) or not all(map(same, row_a, row_b)):
            return f"first difference (rows in sorted order): {a}: {row_a}; {b}: {row_b}"
    return None


def compare(args) -> None:
    """Every output against every other. Without --json (two outputs, as before): one line on
    stdout when all are the same (exit 0), else each difference on stderr (exit 1). With
    --json: one JSON line on stdout, {"same", "outputs": [{"path", "rows"} or {"path",
    "error"}], "pairs", "differences": [{"a", "b", "what"}]}, exit 0 or 1 the same way."""
    paths = args.paths
    if len(paths) < 2:
        fail("compare takes two outputs or more")
    tables, outputs, differences = {}, [], []
    for path in paths:
        try:
            header, rows = read_rows(path)
        except Unreadable as error:
            outputs.append({"path": path, "error": str(error)})
            differences.append({"a": path, "b": None, "what": str(error)})
            continue
        rows.sort(key=row_key)
        tables[path] = (header, rows)
        outputs.append({"path": path, "rows": len(rows), "columns": len(header)})
    readable = [p for p in paths if p in tables]
    pairs = 0
    for i, a in enumerate(readable):
        for b in readable[i + 1 :]:
            pairs += 1
            what = difference(a, tables[a], b, tables[b])
            if what is not None:
                differences.append({"a": a, "b": b, "what": what})
    if args.json:
        report = {"same": not differences, "outputs": outputs, "pairs": pairs}
        print(json.dumps({**report, "differences": differences}))
    elif not differences:
        header, rows = tables[paths[0]]
        names = " and ".join(paths) if len(paths) == 2 else f"{len(paths)} outputs"
        print(f"same: {names}, {len(rows)} rows of {len(header)} columns")
    else:
        for d in differences:
            print(f"jobs.py: {d['what']}", file=sys.stderr)
    sys.exit(0 if not differences else 1)


# --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    g = sub.add_parser("gen", help="generate a data set")
    g.add_argument("kind", choices=("text", "sales", "join"))
    g.add_argument("out")
    g.add_argument("--rows", type=int, required=True)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--format", choices=("csv", "parquet"))
    r = sub.add_parser("run", help="run one query on one peer")
    r.add_argument("peer", choices=PEERS)
    r.add_argument("query", choices=QUERIES)
    r.add_argument("out")
    r.add_argument("--input", nargs="+", action="extend", required=True)
    r.add_argument("--memory-limit", type=int)
    c = sub.add_parser("compare", help="compare outputs, each with each")
    c.add_argument("paths", nargs="+", metavar="OUTPUT")
    c.add_argument("--json", action="store_true")
    args = parser.parse_args()
    {"gen": gen, "run": run, "compare": compare}[args.action](args)


if __name__ == "__main__":
    main()
