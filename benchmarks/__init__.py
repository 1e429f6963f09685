"""The benchmark scripts, outside the library (nothing under `mpg/` imports this package).

- `record/`: the benchmarks whose figures the README and docs/results.md state (speed, fidelity, the
  fidelity-fluency frontier, serving load, creativity, the steering sweep);
- `experiments/`: one-off questions and probes (`experiments/probes/`: ideas measured and not adopted);
- `common.py`: what several scripts share (option blocks, the machine and command a result records,
  the result writer, the persona-vector cache, the speed floor and memory meter, the server launcher);
- `mod_style.py`: the MOD-style sequential reference the speed benchmark compares against.

Each script runs from the repository root as `python benchmarks/record/speed.py ...`; it puts the root on
`sys.path` itself to import `benchmarks.common`.
"""
