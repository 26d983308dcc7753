"""oar_verl: Outcome-grounded Advantage Reshaping (OAR) for verl.

`oar_verl.core` holds the algorithm and never imports verl.
"""

__version__ = "0.1.0"
