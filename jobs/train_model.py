"""spark-submit entry: `recsys train` (same flags, config and exit codes).

spark-submit --py-files dist/recsys_lib.zip jobs/train_model.py ...
"""

from recsys_lib.cli import main

if __name__ == "__main__":
    import sys

    sys.exit(main(["train", *sys.argv[1:]]))
