"""The public Python API, re-exported lazily by :mod:`noa` (``from noa import load, ...``).

Each module is a thin, typed layer over the code that the commands run, so a rollout made from
Python is the rollout the toolkit trains on and reports: :mod:`.agent` (a trained NOA),
:mod:`.inputs` (θ and ICs as the batches everything takes), :mod:`.initial` (an IC of any
family), :mod:`.ground_truth` (the CNO replay), :mod:`.tokens` (a tokenizer directory).
Reference and a runnable example: ``docs/api.md``.
"""
