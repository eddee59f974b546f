"""spark-submit entry: the Structured Streaming job (landing folder -> events and feature tables).

spark-submit --py-files dist/recsys_lib.zip jobs/stream_features.py [--input DIR] [--available-now]
"""

from recsys_lib.cli import main

if __name__ == "__main__":
    import sys

    sys.exit(main(["stream", *sys.argv[1:]]))
