#!/usr/bin/python3
"""The benches' common report: each table as text, JSON and a PNG plot (gnuplot), side by side
in build/bench/ (issue 13: "make bench writes its tables as JSON and a PNG plot").

A Table has rows (what was measured: a phase, a case) and columns (who: ember, qemu, floor);
each cell holds every sample of one run series. The text shows "median (min-max)" per cell and
the ratios asked for (of the medians); the JSON keeps the samples and the statistics; the plot
draws the medians as grouped bars with min-max error bars (log scale when the values span more
than 30x). In a bench:

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))   # tests/bench
    from report import Table, write
    t = Table("restore", "snapshot restore, probe guest", unit="ms")
    t.add("load answered", "ember", samples)
    t.ratio("ember/floor", ("load->running", "ember"), ("total", "floor"), goal="<= 2")
    write("restore-probe", [t])        # build/bench/restore-probe.{txt,json} + one PNG a table

From a shell, `tests/bench/report.py build/bench/NAME.json` writes the text and the plots again
from a JSON written by write() (e.g. on a machine with gnuplot when the bench ran without)."""
import json
import math
import pathlib
import shutil
import statistics
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
OUT = REPO / "build" / "bench"


def stats(samples):
    vals = [float(x) for x in samples if x is not None and math.isfinite(float(x))]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals),
            "n": len(vals)}


def fmt(v):
    if v is None:
        return "-"
    a = abs(v)
    return f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 1 \
        else f"{v:.3f}"


class Table:
    def __init__(self, key, title, unit, notes=()):
        self.key, self.title, self.unit = key, title, unit
        self.rows, self.cols, self.cells = [], [], {}
        self.ratios, self.notes = [], list(notes)

    def add(self, row, col, samples):
        if row not in self.rows:
            self.rows.append(row)
        if col not in self.cols:
            self.cols.append(col)
        self.cells[(row, col)] = [x for x in samples]

    def median(self, row, col):
        s = stats(self.cells.get((row, col), []))
        return s["median"] if s else None

    def ratio(self, name, num, den, goal=None):
        """num/den: (row, col) cells; the ratio of their medians."""
        self.ratios.append({"name": name, "num": list(num), "den": list(den), "goal": goal})

    def to_json(self):
        cells = []
        for (row, col), samples in self.cells.items():
            cells.append({"row": row, "col": col, "samples": samples, "stats": stats(samples)})
        ratios = []
        for r in self.ratios:
            a, b = self.median(*r["num"]), self.median(*r["den"])
            ratios.append(dict(r, value=a / b if a is not None and b else None))
        return {"key": self.key, "title": self.title, "unit": self.unit, "rows": self.rows,
                "cols": self.cols, "cells": cells, "ratios": ratios, "notes": self.notes}


def from_json(d):
    t = Table(d["key"], d["title"], d["unit"], d.get("notes", ()))
    t.rows, t.cols = list(d["rows"]), list(d["cols"])
    for c in d["cells"]:
        t.cells[(c["row"], c["col"])] = c["samples"]
    for r in d.get("ratios", ()):
        t.ratio(r["name"], r["num"], r["den"], r.get("goal"))
    return t


def text(d):
    """The table of one to_json() dict as lines of text."""
    lines = [f"== {d['title']} ({d['unit']}; median (min-max) of n runs)"]
    by = {(c["row"], c["col"]): c["stats"] for c in d["cells"]}
    w0 = max([len(r) for r in d["rows"]] + [4]) + 2
    cellw = {c: max(len(c), 24) + 2 for c in d["cols"]}
    lines.append("".ljust(w0) + "".join(c.rjust(cellw[c]) for c in d["cols"]))
    for r in d["rows"]:
        line = r.ljust(w0)
        for c in d["cols"]:
            s = by.get((r, c))
            cell = (f"{fmt(s['median'])} ({fmt(s['min'])}-{fmt(s['max'])}) n={s['n']}"
                    if s else "-")
            line += cell.rjust(cellw[c])
        lines.append(line)
    for r in d["ratios"]:
        v = "-" if r["value"] is None else f"{r['value']:.2f}"
        goal = f"   (goal {r['goal']})" if r.get("goal") else ""
        lines.append(f"  {r['name']} = {v}   [{'/'.join(r['num'])} over "
                     f"{'/'.join(r['den'])}]{goal}")
    lines += [f"  note: {n}" for n in d["notes"]]
    return lines


def plot(d, png):
    """Grouped bars of the medians with min-max error bars; False when gnuplot is missing."""
    gp = shutil.which("gnuplot")
    if not gp:
        return False
    by = {(c["row"], c["col"]): c["stats"] for c in d["cells"]}
    cols = [c for c in d["cols"] if any(by.get((r, c)) for r in d["rows"])]
    if not cols:
        return False
    dat = png.with_suffix(".dat")
    vals = []
    with open(dat, "w") as f:
        for r in d["rows"]:
            f.write('"' + r.replace('"', "'") + '"')
            for c in cols:
                s = by.get((r, c))
                if s:
                    vals += [s["median"], s["min"]]
                    f.write(f" {s['median']} {s['min']} {s['max']}")
                else:
                    f.write(" NaN NaN NaN")
            f.write("\n")
    pos = [v for v in vals if v > 0]
    log = pos and max(pos) / min(pos) > 30
    plots = []
    for i, c in enumerate(cols):
        b = 2 + 3 * i
        src = f"'{dat}'" if i == 0 else "''"
        xt = ":xtic(1)" if i == 0 else ""
        plots.append(f"{src} using {b}:{b + 1}:{b + 2}{xt} title '{c}'")
    script = "\n".join([
        f"set terminal pngcairo size {max(640, 160 * len(d['rows']) + 200)},480 "
        "font 'sans,10'",
        f"set output '{png}'",
        f"set title \"{d['title']}\" noenhanced",
        f"set ylabel '{d['unit']}' noenhanced",
        "set style data histograms",
        "set style histogram errorbars gap 2 lw 1",
        "set style fill solid 0.6 border -1",
        "set key outside right top noenhanced",
        "set xtics rotate by -20 noenhanced",
        "set grid ytics",
        "set logscale y" if log else "set yrange [0:*]",
        "plot " + ", ".join(plots),
    ])
    r = subprocess.run([gp], input=script, text=True, capture_output=True)
    dat.unlink()
    if r.returncode:
        print(f"report: gnuplot failed for {png.name}: {r.stderr.strip()[:300]}",
              file=sys.stderr)
    return r.returncode == 0


def render(name, doc, out=OUT):
    """Writes NAME.txt and a PNG a table (NAME.png for one table, NAME-KEY.png otherwise)
    from a document as write() stores it; returns the text."""
    lines = [doc.get("header", "")] if doc.get("header") else []
    pngs = []
    for d in doc["tables"]:
        lines += text(d) + [""]
        png = out / (f"{name}.png" if len(doc["tables"]) == 1 else f"{name}-{d['key']}.png")
        if plot(d, png):
            pngs.append(png.name)
    lines.append(f"plots: {', '.join(pngs)}" if pngs else "plots: none (no gnuplot)")
    body = "\n".join(lines) + "\n"
    (out / f"{name}.txt").write_text(body)
    return body


def write(name, tables, header="", extra=None, out=OUT):
    """Stores the tables as build/bench/NAME.json (with extra, e.g. every raw run), then the
    text and the plots; prints the text."""
    out.mkdir(parents=True, exist_ok=True)
    doc = {"name": name, "header": header, "tables": [t.to_json() for t in tables],
           "extra": extra or {}}
    (out / f"{name}.json").write_text(json.dumps(doc, indent=1))
    body = render(name, doc, out)
    print(body, end="")
    print(f"written: {out / name}.{{json,txt}}")
    return doc


def main(argv):
    if len(argv) != 2 or not argv[1].endswith(".json"):
        print("usage: tests/bench/report.py build/bench/NAME.json", file=sys.stderr)
        return 2
    p = pathlib.Path(argv[1])
    try:
        doc = json.loads(p.read_text())
        doc["tables"] = [from_json(t).to_json() for t in doc["tables"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"report: {p}: not a report written by write(): {e}", file=sys.stderr)
        return 1
    print(render(p.stem, doc, p.parent), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
