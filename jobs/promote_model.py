"""spark-submit entry: `recsys promote` (same flags, config and exit codes).

spark-submit --py-files dist/recsys_lib.zip jobs/promote_model.py ...
"""

from recsys_lib.cli import main

if __name__ == "__main__":
    import sys

    sys.exit(main(["promote", *sys.argv[1:]]))
