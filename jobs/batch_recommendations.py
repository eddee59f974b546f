"""spark-submit entry: `recsys recommendations` (same flags, config and exit codes).

spark-submit --py-files dist/recsys_lib.zip jobs/batch_recommendations.py ...
"""

from recsys_lib.cli import main

if __name__ == "__main__":
    import sys

    sys.exit(main(["recommendations", *sys.argv[1:]]))
