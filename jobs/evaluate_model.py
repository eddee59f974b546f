"""spark-submit entry: `recsys evaluate` (same flags, config and exit codes).

spark-submit --py-files dist/recsys_lib.zip jobs/evaluate_model.py ...
"""

from recsys_lib.cli import main

if __name__ == "__main__":
    import sys

    sys.exit(main(["evaluate", *sys.argv[1:]]))
