"""spark-submit entry: `recsys maintain` (same flags, config and exit codes).

spark-submit --py-files dist/recsys_lib.zip jobs/maintain_tables.py ...
"""

from recsys_lib.cli import main

if __name__ == "__main__":
    import sys

    sys.exit(main(["maintain", *sys.argv[1:]]))
