"""Render the results store as the paper's tables (markdown + CSV) with plots.

    python tools/report.py --results runs/suite/results --out runs/suite/report
                           [--benchmark docs/benchmarks/pretrain_cpu_vit-base_b8.json]

Measured rows stand beside the paper's reported rows (docs/paper_results.json),
marked with the data, preset and model size they were measured at. A record
without provenance is refused.
"""

import argparse
import sys

from suite.report import ProvenanceError, write_report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--results", required=True, help="folder of result records (tools/run_suite.py --out X: X/results)"
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--benchmark", help="JSON from tools/benchmark_pretrain.py --json, for Table 1")
    args = parser.parse_args()
    try:
        report = write_report(args.results, args.out, args.benchmark)
    except ProvenanceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(report.read_text())
    print(f"[report] {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
