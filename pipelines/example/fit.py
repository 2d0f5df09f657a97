"""Fits ridge regression: w = (X'X + lam I)^-1 X'y."""
import json
import os

from linalg import solve

train = json.load(open(os.path.join(os.environ["UMDFLOW_INPUT_SPLIT"], "train.json")))
lam = float(os.environ["UMDFLOW_PARAM_LAM"])
x, y = train["x"], train["y"]
d = len(x[0])
xtx = [[sum(r[i] * r[j] for r in x) + (lam if i == j else 0.0) for j in range(d)] for i in range(d)]
xty = [sum(r[i] * t for r, t in zip(x, y)) for i in range(d)]
w = solve(xtx, xty)
json.dump({"w": w}, open(os.path.join(os.environ["UMDFLOW_OUT"], "model.json"), "w"))
print("fitted", len(y), "rows, lam", lam)
