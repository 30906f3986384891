"""SBUF plan and roofline of the shipped checkpoints on Trainium (paper numbers, no device).

Per shipped checkpoint (worldsim/checkpoints/*/): bytes per SBUF partition of the dynamics
weights, KV cache and one block's activations against one NeuronCore's SBUF (Trn2 24 MiB
usable, Trn3 32 MiB), FLOPs and HBM bytes per frame per op, and predicted frames/s per
NeuronCore at peak (79 dense bf16 TFLOPS) for each engine config (configs/engine/).
"""

from __future__ import annotations

import argparse

from report import machine, write_report

from worldsim.kernels import plan


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out-json", default="bench/results/kernels.json", help="JSON report path")
    p.add_argument("--batch", type=int, default=1, help="worlds whose KV caches share the core")
    args = p.parse_args()
    rows = plan.shipped_plans(args.batch)
    print(plan.format_table(rows))
    report = {"bench": "kernels", "machine": machine(), "targets": plan.TARGETS, "rows": rows}
    write_report(args.out_json, report)


if __name__ == "__main__":
    main()
