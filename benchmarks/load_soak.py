"""HTTP load and soak of `genre serve` on loopback (a benchmark, bounded in count and time).

* load: POST /recommend (50-item history, MMR top-10) from 1, 4 and 16 concurrent keep-alive
  connections, for a fixed number of requests each: throughput, p50/p95/p99, errors;
* soak: N requests mixing recommend (90%), add (5%) and remove (5%, of items the soak added) over 4
  connections, sampling the server's RSS and open file descriptors; reports RSS growth after
  warm-up, fd growth, and p99 per tenth of the run (is latency stable?).

The server runs as a real `genre serve` subprocess on a private copy of the bundle and a fresh
state folder. Writes ``<out>/load-soak-<name>.json`` / ``.md`` / ``.png``.

    python benchmarks/load_soak.py --bundle runs/quickstart/bundle --soak-requests 200000
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine, machine_markdown  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc(pid: int) -> tuple[float, int]:
    """(RSS MiB, open fds) of a process."""
    rss = 0.0
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for t in os.listdir(f"/proc/{pid}/task")
                for x in open(f"/proc/{pid}/task/{t}/children").read().split()]
    except OSError:
        return []


def _tree(pid: int) -> tuple[float, int]:
    """(RSS MiB, open fds) of a process and its children (the workers of `genre serve --workers N`)."""
    rss, fds = _proc(pid)
    for c in _children(pid):
        try:
            r, f = _proc(c)
        except OSError:
            continue
        rss, fds = rss + r, fds + f
    return rss, fds


def _cli_writes(bundle: Path, env: dict, profile: str, window: int, n: int, out: list) -> None:
    """``n`` item additions through `genre items add` (another process, same state folder); acknowledged
    ids go to ``out``."""
    for k in range(n):
        iid = f"cli-{window}-{k}"
        p = subprocess.run([sys.executable, "-m", "genre_edge.cli", "items", "add", "--bundle", str(bundle), "--profile",
                            profile, "--id", iid, "--title", f"CLI film {iid}", "--categories", "Comedy", "--year", "1999"],
                           env=env, capture_output=True, text=True, timeout=120)
        if p.returncode == 0:
            out.append(iid)
        else:
            print(f"  genre items add {iid} failed: {p.stderr.strip()[-300:]}", flush=True)


class Client:
    def __init__(self, port: int):
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method: str, path: str, body=None) -> int:
        data = json.dumps(body).encode() if body is not None else None
        self.c.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        r = self.c.getresponse()
        text = r.read()
        return r.status, (text.decode(errors="replace") if r.status >= 400 else "")


def _worker(port, jobs, out, lock):
    cl = Client(port)
    lat, errors, seen = [], 0, []
    for method, path, body, ok in jobs:
        t = time.perf_counter()
        detail = ""
        try:
            status, detail = cl.call(method, path, body)
        except (OSError, http.client.HTTPException) as exc:
            status, cl, detail = 0, Client(port), repr(exc)
        lat.append((time.perf_counter() - t) * 1e3)
        if status not in ok:
            errors += 1
            if len(seen) < 5:
                seen.append(f"{method} {path} -> {status}: {detail[:200]}")
    with lock:
        out.append((lat, errors, seen))


def run_parallel(port, jobs_per_conn: list[list]) -> dict:
    out, lock = [], threading.Lock()
    ths = [threading.Thread(target=_worker, args=(port, j, out, lock)) for j in jobs_per_conn]
    t0 = time.perf_counter()
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.concatenate([np.array(x[0]) for x in out])
    return {"requests": int(len(lat)), "errors": int(sum(x[1] for x in out)), "seconds": wall,
            "error_examples": [e for x in out for e in x[2]][:5],
            "rps": len(lat) / wall, "p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
            "p99": float(np.percentile(lat, 99)), "lat": lat}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--profile", default="x86-avx512-vnni")
    ap.add_argument("--name", default=None)
    ap.add_argument("--load-requests", type=int, default=5000, help="per concurrency level")
    ap.add_argument("--soak-requests", type=int, default=200_000)
    ap.add_argument("--workers", type=int, default=1, help="genre serve --workers")
    ap.add_argument("--cli-writes", type=int, default=3, help="`genre items add` runs per tenth of the soak")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    a = ap.parse_args(argv)
    if not (Path(a.bundle) / "manifest.json").is_file():
        ap.error(f"--bundle {a.bundle}: no manifest.json there")
    if a.load_requests < 100 or a.soak_requests < 1000:
        ap.error("--load-requests must be >= 100 and --soak-requests >= 1000")
    name = a.name or Path(a.bundle).resolve().name
    rng = random.Random(0)
    items = json.loads((Path(a.bundle) / json.loads((Path(a.bundle) / "manifest.json").read_text())["catalog"]["items"])
                       .read_text())["ids"]

    def rec_job():
        return ("POST", "/recommend", {"history": rng.sample(items, min(50, len(items))), "k": 10, "mmr_lambda": 0.7},
                (200,))

    with tempfile.TemporaryDirectory() as tmp:
        b = Path(tmp) / "bundle"
        shutil.copytree(a.bundle, b)
        port = _free_port()
        env = {**os.environ, "GENRE_STATE_DIR": str(Path(tmp) / "state")}
        srv_log = open(Path(tmp) / "server.log", "w+")  # a file, not a pipe: a full pipe would stall the server
        srv = subprocess.Popen([sys.executable, "-m", "genre_edge.cli", "serve", "--bundle", str(b), "--profile",
                                a.profile, "--port", str(port), "--workers", str(a.workers)], env=env,
                               stdout=srv_log, stderr=subprocess.STDOUT)
        try:
            for _ in range(300):
                try:
                    if Client(port).call("GET", "/health")[0] == 200:
                        break
                except OSError:
                    time.sleep(0.1)
            else:
                raise SystemExit("genre serve did not come up: " + (Path(tmp) / "server.log").read_text()[-3000:])
            run_parallel(port, [[rec_job() for _ in range(300)]])  # warm-up
            load = {}
            for conc in (1, 4, 16):
                print(f"load: {a.load_requests} requests over {conc} connection(s) ...", flush=True)
                per = a.load_requests // conc
                r = run_parallel(port, [[rec_job() for _ in range(per)] for _ in range(conc)])
                r.pop("lat")
                load[conc] = r
            # soak: recommend / add / remove, 4 connections, in 10 windows
            print(f"soak: {a.soak_requests} requests ...", flush=True)
            windows, samples, n_add = [], [], 0
            pending: list[str] = []
            removed: set[str] = set()
            cli_added: list[str] = []
            for w in range(10):
                conns = [[] for _ in range(4)]
                for j in range(a.soak_requests // 10):
                    x = rng.random()
                    if x < 0.05:
                        n_add += 1
                        iid = f"soak-{n_add}"
                        pending.append(iid)
                        job = ("POST", "/items", {"items": [{"id": iid, "title": f"Soak test film {n_add}",
                                                             "categories": ["Drama"], "year": 2001}]}, (200,))
                    elif x < 0.10 and pending:
                        removed.add(pending[0])
                        job = ("DELETE", f"/items/{pending.pop(0)}", None, (200,))
                    else:
                        job = rec_job()
                    # catalog updates all go through connection 0, in order: a remove never overtakes its add
                    conns[0 if job[0] != "POST" or job[1] != "/recommend" else j % 4].append(job)
                cli = threading.Thread(target=_cli_writes, args=(b, env, a.profile, w, a.cli_writes, cli_added))
                cli.start()  # `genre items add` in other processes while the server writes too
                r = run_parallel(port, conns)
                cli.join()
                lat = r.pop("lat")
                rss, fds = _tree(srv.pid)
                windows.append({**r, "rss_mib": rss, "fds": fds})
                samples.append(lat)
                print(f"  window {w + 1}/10: {r['rps']:.0f} req/s, p99 {r['p99']:.2f} ms, RSS {rss:.1f} MiB, "
                      f"{fds} fds, errors {r['errors']}", flush=True)
            worker_rss = [_proc(c)[0] for c in _children(srv.pid)] or [rss]
        finally:
            srv.terminate()
            srv.wait(30)
        server_log = (Path(tmp) / "server.log").read_text(errors="replace")
        # every acknowledged write is there after the server stopped (HTTP adds not removed, CLI adds)
        from genre_edge.recommender import Recommender

        cat = Recommender.load(b, a.profile, state_dir=Path(tmp) / "state").catalog
        want = [i for i in (f"soak-{k}" for k in range(1, n_add + 1)) if i not in removed] + cli_added
        lost = [i for i in want if i not in cat.index or not cat.active[cat.index[i]]]
        back = [i for i in removed if i in cat.index and cat.active[cat.index[i]]]
    base_rss, base_fd = windows[0]["rss_mib"], windows[0]["fds"]  # after the first tenth (warm)
    soak = {"requests": sum(w["requests"] for w in windows), "errors": sum(w["errors"] for w in windows),
            "items_added": n_add, "rss_growth": windows[-1]["rss_mib"] / base_rss - 1,
            "fd_growth": windows[-1]["fds"] - base_fd, "windows": windows,
            "p99_first_last": [windows[0]["p99"], windows[-1]["p99"]], "cli_writes": len(cli_added),
            "lost_acknowledged_writes": len(lost) + len(back), "worker_rss_mib": worker_rss,
            "server_log_tail": server_log[-4000:]}
    res = {"name": name, "profile": a.profile, "workers": a.workers, "load": load, "soak": soak, "machine": machine(),
           "command": "python benchmarks/load_soak.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    md = [f"# HTTP load and soak: {name}", "", f"`genre serve --workers {a.workers}` with profile `{a.profile}` "
          "on loopback; the client runs on the same 2 cores.", "", machine_markdown(res["machine"]), "",
          f"Command: `{res['command']}`", "", "## Load: POST /recommend (50-item history, MMR top-10)", "",
          "| connections | requests | errors | req/s | p50 ms | p95 ms | p99 ms |", "|---|---|---|---|---|---|---|"]
    for c, r in load.items():
        md.append(f"| {c} | {r['requests']} | {r['errors']} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p95']:.2f} | "
                  f"{r['p99']:.2f} |")
    md += ["", f"## Soak: {soak['requests']} requests (90% recommend, 5% add, 5% remove), 4 connections", "",
           f"Errors: {soak['errors']}. Items added over HTTP: {n_add}, by `genre items add` in other processes: "
           f"{len(cli_added)}; acknowledged writes lost: {soak['lost_acknowledged_writes']}. RSS (all server "
           f"processes) growth after the first tenth: {soak['rss_growth']:+.1%}; per worker at the end: "
           + ", ".join(f"{x:.0f}" for x in worker_rss) + f" MiB. Open fds: {base_fd} -> {windows[-1]['fds']}.", "",
           "| tenth | req/s | p50 ms | p99 ms | RSS MiB | fds | errors |", "|---|---|---|---|---|---|---|"]
    for i, w in enumerate(windows, 1):
        md.append(f"| {i} | {w['rps']:.0f} | {w['p50']:.2f} | {w['p99']:.2f} | {w['rss_mib']:.1f} | {w['fds']} | "
                  f"{w['errors']} |")
    md.append("")
    from genre_edge.fsutil import atomic_write_json, atomic_write_text

    out = Path(a.out)
    atomic_write_json(out / f"load-soak-{name}.json", res)
    atomic_write_text(out / f"load-soak-{name}.md", "\n".join(md))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3))
        ax.plot(range(1, 11), [w["p50"] for w in windows], "o-", label="p50")
        ax.plot(range(1, 11), [w["p99"] for w in windows], "o-", label="p99")
        ax2 = ax.twinx()
        ax2.plot(range(1, 11), [w["rss_mib"] for w in windows], "k--", label="RSS MiB")
        ax.set_xlabel("tenth of the soak")
        ax.set_ylabel("ms")
        ax2.set_ylabel("RSS MiB")
        ax.legend(loc="upper left")
        ax.set_title(f"soak: {soak['requests']} requests, {name}")
        fig.tight_layout()
        fig.savefig(out / f"load-soak-{name}.png", dpi=110)
        plt.close(fig)
    except ImportError:
        pass
    print("\n".join(md))
    ok = soak["errors"] == 0 and all(r["errors"] == 0 for r in load.values()) and soak["rss_growth"] < 0.05 \
        and soak["fd_growth"] <= 2 * a.workers and soak["lost_acknowledged_writes"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
