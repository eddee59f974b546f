"""spark-submit entry: one model update, `recsys train --continuous --cycles 1` (same flags, config and exit codes).

Rebuilds the training set, warm-starts the champion, runs the promotion gate and exports a new champion,
holding the model-update lease (a second update exits naming the first).

spark-submit --py-files dist/recsys_lib.zip jobs/update_model.py ...
"""

from recsys_lib.cli import main

if __name__ == "__main__":
    import sys

    sys.exit(main(["train", "--continuous", "--cycles", "1", *sys.argv[1:]]))
