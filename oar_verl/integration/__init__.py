"""OAR inside verl: the `oar_p` / `oar_g` advantage estimators, their settings, the
attribution role on verl's actor workers and the trainer step that turns scores into
advantages. Everything here imports verl; the maths lives in `oar_verl.core`."""

ESTIMATORS = ("oar_p", "oar_g")
WEIGHTS_FIELD = "oar_weights"  # per-token weights, the estimator's declared input on a patched verl
