"""Scores the fitted model on the test split; metrics.json becomes the stage's metrics."""
import json
import math
import os

from linalg import predict

test = json.load(open(os.path.join(os.environ["UMDFLOW_INPUT_SPLIT"], "test.json")))
w = json.load(open(os.path.join(os.environ["UMDFLOW_INPUT_FIT"], "model.json")))["w"]
pred = predict(w, test["x"])
mse = sum((p - t) ** 2 for p, t in zip(pred, test["y"])) / len(pred)
mean = sum(test["y"]) / len(test["y"])
var = sum((t - mean) ** 2 for t in test["y"]) / len(test["y"])
metrics = {"rmse": math.sqrt(mse), "r2": 1 - mse / var}
json.dump(metrics, open(os.path.join(os.environ["UMDFLOW_OUT"], "metrics.json"), "w"), indent=2)
print(metrics)
