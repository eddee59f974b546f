"""spark-submit entry: raw logs -> events + events_quarantine.

spark-submit --py-files dist/recsys_lib.zip jobs/ingest_events.py --input DIR [--conf F] [--set k=v]
"""

from recsys_lib.cli import main

if __name__ == "__main__":
    import sys

    sys.exit(main(["ingest", *sys.argv[1:]]))
