"""DuckDB peer: sorts a gensort ASCII file (lines of 98 characters + \\r\\n) by its 10-byte key.

Usage: python duckdb_sort.py INPUT OUTPUT. Lines are read whole (a delimiter and no quote that
never occur in gensort lines) and written back with their \\r\\n, so `millrace validate` reads
100-byte records.
"""

import os
import sys

import duckdb


def main() -> None:
    source, target = sys.argv[1], sys.argv[2]
    con = duckdb.connect()
    con.execute(f"SET threads = {os.cpu_count() or 1}")
    con.execute("SET preserve_insertion_order = false")
    quoted = lambda path: "'" + path.replace("'", "''") + "'"  # noqa: E731
    con.execute(
        f"""COPY (
              SELECT line || chr(13)
              FROM read_csv({quoted(source)}, columns = {{'line': 'VARCHAR'}}, header = false,
                            delim = '\x01', quote = '', escape = '', new_line = '\\r\\n',
                            auto_detect = false)
              ORDER BY substr(line, 1, 10)
            ) TO {quoted(target)} (FORMAT csv, HEADER false, DELIMITER '\x01', QUOTE '', ESCAPE '')"""
    )


if __name__ == "__main__":
    main()
