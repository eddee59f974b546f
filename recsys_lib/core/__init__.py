"""Core: typed config, table schemas and the one SparkSession builder."""
