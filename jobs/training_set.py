"""spark-submit entry: `recsys training-set` (same flags, config and exit codes).

spark-submit --py-files dist/recsys_lib.zip jobs/training_set.py ...
"""

from recsys_lib.cli import main

if __name__ == "__main__":
    import sys

    sys.exit(main(["training-set", "build", *sys.argv[1:]]))
