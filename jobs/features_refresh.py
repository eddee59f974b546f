"""spark-submit entry: `recsys features` (same flags, config and exit codes).

spark-submit --py-files dist/recsys_lib.zip jobs/features_refresh.py ...
"""

from recsys_lib.cli import main

if __name__ == "__main__":
    import sys

    sys.exit(main(["features", "refresh", *sys.argv[1:]]))
