"""Writes a synthetic linear regression data set to $UMDFLOW_OUT/data.json."""
import json
import os
import random

n = int(os.environ["UMDFLOW_PARAM_N"])
features = int(os.environ["UMDFLOW_PARAM_FEATURES"])
noise = float(os.environ["UMDFLOW_PARAM_NOISE"])
rng = random.Random(int(os.environ["UMDFLOW_PARAM_DATA_SEED"]))

true_w = [rng.gauss(0, 1) for _ in range(features)]
rows = [[rng.gauss(0, 1) for _ in range(features)] for _ in range(n)]
targets = [sum(w * x for w, x in zip(true_w, row)) + rng.gauss(0, noise) for row in rows]
with open(os.path.join(os.environ["UMDFLOW_OUT"], "data.json"), "w") as f:
    json.dump({"x": rows, "y": targets}, f)
print(f"generated {n} rows with {features} features")
