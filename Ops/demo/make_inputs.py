#!/usr/bin/env python3
"""Writes the demo's inputs from the real Fashion-MNIST test set (Debian's dataset-fashion-mnist package).

    python3 Ops/demo/make_inputs.py OUT_DIR --files 100 --per-file 100

OUT_DIR/inputs/test-NNNN.npy   uint8 [per_file, 784] images, as a client would upload them
OUT_DIR/inputs/test-NNNN.json  (every tenth file) the same images as a JSON array of [0, 1] floats
OUT_DIR/labels.json            {"test-NNNN": [labels…]} to score the predictions
OUT_DIR/batch.jsonl            {"custom_id": "test-NNNN", "url": "/inputs/…"} lines (URL path; the caller adds the host)
"""
import argparse
import gzip
import json
import os

import numpy as np

DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--per-file", type=int, default=100)
    args = parser.parse_args()
    images = read_idx(os.path.join(DATA, "t10k-images-idx3-ubyte.gz")).reshape(-1, 784)
    labels = read_idx(os.path.join(DATA, "t10k-labels-idx1-ubyte.gz"))
    os.makedirs(os.path.join(args.out, "inputs"), exist_ok=True)
    # the engine's own benchmark runs on the same kind of data (bitfleet bench --inputs)
    np.save(os.path.join(args.out, "engine-inputs.npy"), np.ascontiguousarray(images[:1024]))
    truth = {}
    with open(os.path.join(args.out, "batch.jsonl"), "w") as batch:
        for index in range(args.files):
            start = index * args.per_file % len(images)
            chunk = images[start:start + args.per_file]
            name = f"test-{index:04d}"
            if index % 10 == 9:
                path = f"inputs/{name}.json"
                with open(os.path.join(args.out, path), "w") as handle:
                    json.dump((chunk.astype(np.float32) / 255.0).round(6).tolist(), handle)
            else:
                path = f"inputs/{name}.npy"
                np.save(os.path.join(args.out, path), chunk)
            truth[name] = labels[start:start + len(chunk)].tolist()
            batch.write(json.dumps({"custom_id": name, "url": "/" + path}) + "\n")
    with open(os.path.join(args.out, "labels.json"), "w") as handle:
        json.dump(truth, handle)


if __name__ == "__main__":
    main()
