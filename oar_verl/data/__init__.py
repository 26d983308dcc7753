"""Datasets in verl's parquet layout."""
