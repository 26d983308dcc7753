"""oar_verl: Outcome-grounded Advantage Reshaping (OAR) for verl.

`oar_verl.core` holds the algorithm and never imports verl.
"""

__version__ = "0.1.0"
PINNED_VERL = "0.9.1"  # the verl release oar_verl is built and tested against (pyproject pins it)
