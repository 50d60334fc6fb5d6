"""Polars peer (streaming engine): sorts a gensort ASCII file by its 10-byte key.

Usage: python polars_sort.py INPUT OUTPUT. Lines are read whole and written back with \\r\\n,
so `millrace validate` reads 100-byte records.
"""

import sys

import polars as pl


def main() -> None:
    source, target = sys.argv[1], sys.argv[2]
    lines = pl.scan_csv(
        source,
        has_header=False,
        separator="\x01",
        quote_char=None,
        schema={"line": pl.String},
        eol_char="\n",
    )
    lines.sort(pl.col("line").str.slice(0, 10)).sink_csv(
        target,
        include_header=False,
        separator="\x01",
        quote_style="never",
        line_terminator="\r\n",
    )


if __name__ == "__main__":
    main()
