-- BitFleet schema, version 10: the seeded GPU assumption's note says what a measurement has since found.
--
-- 0003 seeded one stated GPU row (EUR 3 per hour, an assumed 1 000 000 samples/s) whose note called the throughput
-- "chosen to favour the GPU". One GPU has since been measured (Ops/bench/gpu_result_h200.txt): on one NVIDIA H200
-- the float twin of `fashion` v3 ran at 2 030 000 samples/s from host memory and 12 300 000 with its input already
-- on the GPU, so on that GPU the assumption favours BitFleet instead. The row stays (stated, same price and
-- throughput, so every figure the dashboards derive from it is unchanged); only its note is corrected, and only
-- where it is still the seeded text: a note the operator has edited is left as it is.

UPDATE bitfleet.alternatives
SET note = 'ASSUMED, not measured. Price: the low bound of the EUR 3-8 per hour per GPU instance that the seed essay '
           'states. Throughput: an assumed 1 000 000 samples/s for a small classifier on a GPU. Measured since on one '
           'NVIDIA H200 (the float twin of fashion v3, PyTorch, tf32/bf16; Ops/bench/gpu_result_h200.txt): 2 030 000 '
           'samples/s from host memory and 12 300 000 with the input already on the GPU, so for that GPU this row '
           'favours BitFleet (2x and 12x below the measured throughput), not the GPU. Replace it with a measured row '
           '(source = measured) for your model and GPU.'
WHERE model IS NULL
  AND kind = 'gpu'
  AND source = 'stated'
  AND label = 'cloud GPU instance (assumed)'
  AND note = 'ASSUMED, not measured. Price: the low bound of the EUR 3-8 per hour per GPU instance that the seed essay '
             'states. Throughput: an assumed 1 000 000 samples/s for a small classifier on a fully busy GPU, chosen to '
             'favour the GPU (no idle time, no transfer cost). Replace with a measured row (source = measured) for your '
             'model and GPU.';
