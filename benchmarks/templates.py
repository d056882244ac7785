"""Template mining on real logs with hand-labelled templates (Loghub-2k, Zhu et al. 2019).

    python -m benchmarks.templates [DIR] [--out benchmarks/results]

DIR (default ``<repo>/../shared/datasets/loghub``) holds ``<Name>/<Name>_2k.log_structured.csv``
files with the columns ``Content`` (the message), ``EventId`` and ``EventTemplate`` (the truth).
The files stay where they are (research licence): nothing of them is copied here, only scores.

Two miners, measured in the same run on the same messages:
- ours: the product's own path, each dataset being one service: the masks in DuckDB
  (``tools.templates.mask_sql``) over the distinct messages, then
  ``tools.templates.mine_service_templates`` over the distinct masked messages;
- drain3 with its default settings, fed every line, each line taking its cluster's final template.

Scores, per dataset and averaged over datasets:
- grouping accuracy (GA): a line is right when the set of lines of its predicted group equals
  the set of lines sharing its true EventId;
- parsing accuracy (PA): a line is right when its predicted template equals its true template
  after ``normalise_templates``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
from drain3 import TemplateMiner
from drain3.template_miner_config import TemplateMinerConfig

from tools.templates import mask_sql, mine_service_templates

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO.parent / "shared" / "datasets" / "loghub"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SUFFIX = "_2k.log_structured.csv"
# Our masks (<NUM>, <HEX>, ...), drain3's <*> and Loghub's <*>.
PLACEHOLDER = r"<(?:\*|[A-Z]+)>"


def grouping_accuracy(truth: pd.Series, predicted: pd.Series) -> float:
    """Share of lines whose predicted group holds exactly the lines of their true group.

    A line's groups are equal as sets exactly when the lines sharing both its labels are all
    the lines of its predicted group and all the lines of its true group.
    """
    frame = pd.DataFrame({"t": truth.to_numpy(), "p": predicted.to_numpy()})
    if frame.empty:
        return 0.0
    both = frame.groupby(["t", "p"], sort=False)["t"].transform("size")
    of_truth = frame.groupby("t", sort=False)["t"].transform("size")
    of_predicted = frame.groupby("p", sort=False)["p"].transform("size")
    return float(((both == of_truth) & (both == of_predicted)).mean())


def normalise_templates(templates: pd.Series) -> pd.Series:
    """One placeholder for every kind, a run of placeholders joined by punctuation without a
    space (Loghub writes ``<*>.<*>`` or ``<*>:<*>`` where a mask has one ``<NUM>`` or ``<IP>``)
    as one placeholder, and whitespace collapsed."""
    text = templates.astype(str).str.replace(PLACEHOLDER, "<*>", regex=True)
    text = text.str.replace(r"<\*>(?:[.:,/_-]*<\*>)+", "<*>", regex=True)
    return text.str.replace(r"\s+", " ", regex=True).str.strip()


def parsing_accuracy(truth: pd.Series, predicted: pd.Series) -> float:
    """Share of lines whose predicted template equals the true one once both are normalised."""
    if truth.empty:
        return 0.0
    return float((normalise_templates(truth).to_numpy() == normalise_templates(predicted).to_numpy()).mean())


def ours(messages: pd.Series, con: duckdb.DuckDBPyConnection) -> pd.Series:
    """Each message's template on the product's path (one service), on an open connection as in
    the product (opening one is not part of the work measured)."""
    con.register("lines", pd.DataFrame({"message": messages.drop_duplicates()}))
    masked = con.execute(f"SELECT message, {mask_sql('message')} AS masked FROM lines").df()
    con.unregister("lines")
    masked["template"] = mine_service_templates(["service"] * len(masked), masked["masked"].tolist())
    return messages.map(masked.set_index("message")["template"])


def drain3_default(messages: pd.Series, con: duckdb.DuckDBPyConnection) -> pd.Series:
    """Each message's final cluster template with drain3's default settings (no ini file read);
    ``con`` is unused, for the same signature as ``ours``."""
    config = TemplateMinerConfig()
    config.profiling_enabled = False
    miner = TemplateMiner(config=config)
    cluster_ids = [miner.add_log_message(m)["cluster_id"] for m in messages]
    templates = {c.cluster_id: c.get_template() for c in miner.drain.clusters}
    return pd.Series([templates[c] for c in cluster_ids], index=messages.index)


MINERS = {"ours": ours, "drain3": drain3_default}


def score_dataset(path: Path, con: duckdb.DuckDBPyConnection) -> dict:
    data = pd.read_csv(path, usecols=["Content", "EventId", "EventTemplate"], dtype=str, keep_default_na=False)
    row: dict = {"dataset": path.name.removesuffix(SUFFIX), "lines": len(data), "events": int(data["EventId"].nunique())}
    for name, miner in MINERS.items():
        started = time.perf_counter()
        templates = miner(data["Content"], con)
        seconds = time.perf_counter() - started
        row[name] = {
            "ga": round(grouping_accuracy(data["EventId"], templates), 4),
            "pa": round(parsing_accuracy(data["EventTemplate"], templates), 4),
            "groups": int(templates.nunique()),
            "seconds": round(seconds, 4),
            "messages_per_s": round(len(data) / seconds) if seconds > 0 else None,
        }
    return row


def average(rows: list[dict]) -> dict:
    out: dict = {"dataset": "average", "lines": sum(r["lines"] for r in rows), "events": sum(r["events"] for r in rows)}
    for name in MINERS:
        seconds = sum(r[name]["seconds"] for r in rows)
        out[name] = {
            "ga": round(sum(r[name]["ga"] for r in rows) / len(rows), 4),
            "pa": round(sum(r[name]["pa"] for r in rows) / len(rows), 4),
            "groups": sum(r[name]["groups"] for r in rows),
            "seconds": round(seconds, 4),
            "messages_per_s": round(out["lines"] / seconds) if seconds > 0 else None,
        }
    return out


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Template mining on Loghub-2k",
        "",
        "Made by: `python -m benchmarks.templates`  ",
        f"Generated: {meta['generated']}  ",
        f"Machine: {meta['machine']}",
        "",
        "GA: grouping accuracy; PA: parsing accuracy (templates equal after one placeholder for every kind, "
        "placeholder runs joined by punctuation merged, whitespace collapsed). Ours: the product's masks and "
        "miner, each dataset mined as one service. drain3: drain3 defaults on every line, same run. "
        "msg/s: lines divided by wall seconds (masking included for ours) on a shared 2-core machine.",
        "",
        "| dataset | lines | events | GA ours | GA drain3 | PA ours | PA drain3 | groups ours | groups drain3 | msg/s ours | msg/s drain3 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = f"**{r['dataset']}**" if r["dataset"] == "average" else r["dataset"]
        o, d = r["ours"], r["drain3"]
        lines.append(f"| {name} | {r['lines']} | {r['events']} | {o['ga']:.3f} | {d['ga']:.3f} | {o['pa']:.3f} | {d['pa']:.3f} | "
                     f"{o['groups']} | {d['groups']} | {o['messages_per_s']:,} | {d['messages_per_s']:,} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", nargs="?", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    files = sorted(args.dir.glob(f"*/*{SUFFIX}")) if args.dir.is_dir() else []
    if not files:
        print(f"skipped: no Loghub '*{SUFFIX}' files under {args.dir} (the datasets are not in the repository: "
              "pass the folder that holds them)")
        return 0
    rows = []
    con = duckdb.connect()
    for path in files:
        row = score_dataset(path, con)
        rows.append(row)
        print(f"{row['dataset']:<10} GA ours {row['ours']['ga']:.3f} drain3 {row['drain3']['ga']:.3f}   "
              f"PA ours {row['ours']['pa']:.3f} drain3 {row['drain3']['pa']:.3f}   "
              f"msg/s ours {row['ours']['messages_per_s']:,} drain3 {row['drain3']['messages_per_s']:,}", flush=True)
    con.close()
    rows.append(average(rows))
    avg = rows[-1]
    print(f"{'average':<10} GA ours {avg['ours']['ga']:.3f} drain3 {avg['drain3']['ga']:.3f}   "
          f"PA ours {avg['ours']['pa']:.3f} drain3 {avg['drain3']['pa']:.3f}")
    meta = {
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, Python {platform.python_version()}, DuckDB {duckdb.__version__}",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "templates.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    (args.out / "templates.md").write_text(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
