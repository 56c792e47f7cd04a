"""Simulate thousands of pithnode nodes running the shipped peer logic over an
in-memory network, in virtual time (pithnode/testing/sim.py; results in docs/SCALE.md).

    python scripts/simulate.py --nodes 1000 --byzantine 0.3 --seed 1 --json
    python scripts/simulate.py --sweep nodes --out docs/scale   # a series of docs/SCALE.md
    python scripts/simulate.py --plot --out docs/scale          # its plots (the [bench] extra)

Deterministic for a --seed. Prints one JSON object (--json) or a short summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pithnode.testing.sim import simulate  # noqa: E402


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1)")
    return value


SERIES: dict[str, tuple[str, list[dict[str, Any]]]] = {  # name: (x label, runs as keyword arguments of simulate)
    "nodes": ("nodes (30% Byzantine, a partition of half healed)",
              [dict(nodes=n, byzantine=0.3, partition=0.5, lockstep=ls) for n in (100, 300, 1000, 3000)
               for ls in (True, False)]),
    "byzantine": ("Byzantine share (300 nodes)",
                  [dict(nodes=300, byzantine=f, lockstep=ls) for f in (0, .1, .2, .3, .4, .5) for ls in (True, False)]),
    "degree": ("peer list size (300 nodes, 30% Byzantine)",
               [dict(nodes=300, degree=k, byzantine=0.3) for k in (4, 8, 16, 32, 64)]),
    "events_per_round": ("new events per round in the whole network (300 nodes)",
             [dict(nodes=300, byzantine=f, events_per_round=r, lockstep=ls) for f in (0, 0.3) for r in (1, 4, 12)
              for ls in (True, False)]),
    "fanout": ("learned peers per round (300 nodes, no Byzantine node)",
               [dict(nodes=300, fanout=f, lockstep=ls) for f in (2, 4, 16) for ls in (True, False)]),
}


def sweep(out_dir: Path, name: str, seed: int) -> None:
    """One series of docs/SCALE.md as JSON lines in DIR/<name>.jsonl (10,000 nodes: --nodes 10000 --json)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / f"{name}.jsonl").open("a") as log:
        for kw in SERIES[name][1]:
            res = {"series": name, **simulate(seed=seed, **kw)}  # type: ignore[arg-type]
            log.write(json.dumps(res) + "\n")
            log.flush()


COLUMNS = (("nodes", "nodes"), ("degree", "peers"), ("fanout", "peers/round"), ("byzantine", "Byzantine"),
           ("lockstep", "lockstep"),
           ("rounds_to_all_honest", "rounds: event"), ("equivocation_known_by_all_honest_rounds", "rounds: fork"),
           ("eclipsed_node_rounds", "rounds: eclipsed node"), ("heal", "rounds after heal"),
           ("messages_per_node_per_round", "messages/node/round"), ("bytes_ratio_to_event", "bytes/event ÷ size"),
           ("honest_exchanges_ratio_to_event", "among honest ÷ size"),
           ("idle_bytes_per_node_per_round", "idle bytes/node/round"),
           ("over_cap_bytes_per_honest_node", "over-cap bytes/honest node"), ("cpu_seconds", "CPU s"))


def table(runs: list[dict]) -> str:
    """A markdown table of runs."""
    def cell(r: dict, key: str) -> str:
        value = (r.get("after_heal") or {}).get("rounds_to_all_honest") if key == "heal" else r.get(key)
        if value is None:
            return "-"
        return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)

    lines = ["| " + " | ".join(h for _k, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r, k) for k, _h in COLUMNS) + " |" for r in runs]
    return "\n".join(lines)


def breakdown(runs: list[dict]) -> str:
    """A markdown table of the steady phase's bytes per event taken in, by message kind, one column per run."""
    kinds = sorted({k for r in runs for k in r["bytes_by_kind"]}, key=lambda k: ("Byzantine" in k, k))
    head = [f"{r['byzantine']:.0%} Byzantine, {'lockstep' if r['lockstep'] else 'jittered'}" for r in runs]
    lines = ["| bytes per event taken in | " + " | ".join(head) + " |", "|---|" + "---:|" * len(runs)]
    lines += [f"| {k} | " + " | ".join(f"{r['bytes_by_kind'].get(k, 0):,}" for r in runs) + " |" for k in kinds]
    lines.append("| **all** (÷ event size) | " + " | ".join(
        f"**{r['bytes_per_node_per_event']:,}** ({r['bytes_ratio_to_event']})" for r in runs) + " |")
    return "\n".join(lines)


def plot(out_dir: Path) -> None:
    """DIR/rounds-vs-<series>.png from DIR/<series>.jsonl, and the tables on stdout."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, (xlabel, _runs) in SERIES.items():
        path = out_dir / f"{name}.jsonl"
        if not path.exists():
            continue
        runs = sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda r: r[name])
        print(f"\n{name}:\n{table(runs)}")
        if name == "byzantine":
            print(f"\nbytes by kind:\n{breakdown([r for r in runs if r['byzantine'] in (0, 0.3)])}")
        if name == "events_per_round":
            bytes_plot(plt, out_dir, runs, name, xlabel, [(f"{f:.0%} Byzantine", f) for f in (0, 0.3)])
            continue
        fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=80)
        for lockstep, style in ((True, "-o"), (False, "--s")):
            mine = [r for r in runs if r["lockstep"] == lockstep]
            xs = [r[name] for r in mine]
            label = "lockstep" if lockstep else "jittered"
            ax.plot(xs, [r["rounds_to_all_honest"] or 0 for r in mine], style, label=f"new event ({label})")
            ax.plot(xs, [r["equivocation_known_by_all_honest_rounds"] or 0 for r in mine], style, alpha=0.45,
                    label=f"fork known ({label})")
            if name == "nodes":
                ax.plot(xs, [(r.get("after_heal") or {}).get("rounds_to_all_honest") or 0 for r in mine], style,
                        alpha=0.3, label=f"after heal ({label})")
        if name == "nodes":
            ax.set_xscale("log")
            xs = sorted({r["nodes"] for r in runs})
            ax.plot(xs, [math.log2(x) + 2 for x in xs], ":", color="grey", label="log2(n)+2")
        finish(plt, fig, ax, xlabel, "rounds until all honest nodes", out_dir / f"rounds-vs-{name}.png")
        if name == "byzantine":
            bytes_plot(plt, out_dir, runs, name, xlabel, [("", None)])


def bytes_plot(plt: Any, out_dir: Path, runs: list[dict], name: str, xlabel: str,
               groups: list[tuple[str, float | None]]) -> None:
    """DIR/bytes-vs-<series>.png: the bytes per event (all, all but pushes at us, among honest nodes)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=80)
    for group, share in groups:
        for lockstep, style in ((True, "-o"), (False, "--s")):
            mine = [r for r in runs if r["lockstep"] == lockstep and share in (None, r["byzantine"])]
            label = ", ".join(x for x in (group, "lockstep" if lockstep else "jittered") if x)
            for key, what, alpha in (("bytes_ratio_to_event", "all", 1.0),
                                     ("solicited_ratio_to_event", "all but pushes at us", 0.6),
                                     ("honest_exchanges_ratio_to_event", "among honest nodes", 0.35)):
                if share == 0 and key != "bytes_ratio_to_event":
                    continue  # the same without Byzantine nodes
                ax.plot([r[name] for r in mine], [r[key] for r in mine], style, alpha=alpha, label=f"{what} ({label})")
    ax.axhline(2, linestyle=":", color="grey", label="goal: 2x")
    finish(plt, fig, ax, xlabel, "bytes per event a node took in ÷ its size", out_dir / f"bytes-vs-{name}.png")


def finish(plt: Any, fig: Any, ax: Any, xlabel: str, ylabel: str, path: Path) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--degree", type=int, default=16, help="learned peers a node keeps (its peer list)")
    p.add_argument("--fanout", type=int, default=4, help="learned peers reconciled with per round")
    p.add_argument("--byzantine", type=fraction, default=0.0, help="share of Byzantine nodes")
    p.add_argument("--churn", type=fraction, default=0.0, help="share of honest nodes offline at any time")
    p.add_argument("--partition", type=fraction, default=0.0, help="share of nodes cut off, then healed")
    p.add_argument("--partition-rounds", type=int, default=10)
    p.add_argument("--jittered", action="store_true",
                   help="serve what arrives at once (independent timers) instead of from the next round")
    p.add_argument("--events-per-round", type=int, default=1,
                   help="new events per round in the whole network while the bytes per event are measured (1-12)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true")
    p.add_argument("--sweep", choices=sorted(SERIES), help="run one series of docs/SCALE.md into --out")
    p.add_argument("--plot", action="store_true", help="plot the series found in --out")
    p.add_argument("--out", type=Path, default=Path("docs/scale"))
    args = p.parse_args(argv)
    if args.nodes < 4 or args.degree < 1 or args.fanout < 1 or not 1 <= args.events_per_round <= 12:
        p.error("--nodes must be at least 4, --degree and --fanout at least 1, --events-per-round 1 to 12")
    if args.sweep or args.plot:
        if args.sweep:
            sweep(args.out, args.sweep, args.seed)
        if args.plot:
            plot(args.out)
        return 0
    res = simulate(nodes=args.nodes, degree=args.degree, fanout=args.fanout, byzantine=args.byzantine,
                   churn=args.churn, partition=args.partition, partition_rounds=args.partition_rounds,
                   seed=args.seed, lockstep=not args.jittered, events_per_round=args.events_per_round)
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
