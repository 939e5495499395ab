#!/usr/bin/env python3
"""Scores `bitfleet batch results` JSONL (stdin) against the demo's labels.json; prints accuracy and a few rows."""
import json
import sys

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

labels = json.load(open(sys.argv[1]))
correct = total = 0
shown = []
states = {}
for line in sys.stdin:
    item = json.loads(line)
    states[item["state"]] = states.get(item["state"], 0) + 1
    if item["state"] != "succeeded":
        continue
    truth = labels[item["custom_id"]]
    for prediction in item["result"]["predictions"]:
        top = prediction["top"][0]
        expected = truth[prediction["sample"]]
        correct += top["class"] == expected
        total += 1
        if len(shown) < 8 and prediction["sample"] < 1:
            shown.append((item["custom_id"], prediction["sample"], top["label"], top["p"], CLASSES[expected]))
print("  custom_id   sample  predicted     p      true label")
for custom_id, sample, label, p, truth_label in shown:
    print(f"  {custom_id:10s} {sample:6d}  {label:12s} {p:5.3f}  {truth_label}")
print(f"jobs by state: {json.dumps(states, sort_keys=True)}")
print(f"accuracy on {total} Fashion-MNIST test images: {100.0 * correct / max(total, 1):.2f} %")
