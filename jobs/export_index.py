"""spark-submit entry: `recsys export` (same flags, config and exit codes).

spark-submit --py-files dist/recsys_lib.zip jobs/export_index.py ...
"""

from recsys_lib.cli import main

if __name__ == "__main__":
    import sys

    sys.exit(main(["export", *sys.argv[1:]]))
