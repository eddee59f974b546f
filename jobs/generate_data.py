"""Entry point: write synthetic raw logs (pure Python; spark-submit not required).

python jobs/generate_data.py --out DIR --events N [...]
"""

from recsys_lib.cli import main

if __name__ == "__main__":
    import sys

    sys.exit(main(["generate", *sys.argv[1:]]))
