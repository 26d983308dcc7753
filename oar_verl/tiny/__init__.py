"""Small models on the CPU: a byte-level tokenizer and Qwen2 built from a config
(`models.py`), generated arithmetic in verl's GSM8K format (`arithmetic.py`), supervised
warm-starts (`sft.py`, `warmstart.py`), and launching verl's trainer on them (`launch.py`).
For tests, benchmarks, the main job and the studies: nothing here comes from a hub.
Importing the package imports none of them (the command-line modules stay light).
"""
