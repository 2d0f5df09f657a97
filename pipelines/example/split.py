"""Splits the data into train and test with the replicate's seed."""
import json
import os
import random

data = json.load(open(os.path.join(os.environ["UMDFLOW_INPUT_GENERATE"], "data.json")))
rng = random.Random(int(os.environ["UMDFLOW_PARAM_SEED"]))
order = list(range(len(data["y"])))
rng.shuffle(order)
cut = int(len(order) * float(os.environ["UMDFLOW_PARAM_TEST_FRACTION"]))
out = os.environ["UMDFLOW_OUT"]
for name, idx in (("test", order[:cut]), ("train", order[cut:])):
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump({"x": [data["x"][i] for i in idx], "y": [data["y"][i] for i in idx]}, f)
