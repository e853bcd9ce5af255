"""Start, stop and inspect the vendor sandbox (see CONTRACT.md).

    python include/sandbox/run.py start [--ajour-port 8701 --planday-port 8702] [--latency-ms 0] [--state-dir .tillflow]
    python include/sandbox/run.py status|stop [--state-dir .tillflow]
    python include/sandbox/run.py serve [--ajour-port ... --planday-port ...]   # foreground

``start`` launches ``serve`` detached (own session), waits until both ports answer, and writes
``<state-dir>/sandbox.json`` ({"ajour_url", "planday_url", "pid"}) and ``<state-dir>/sandbox.pid``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve()
START_TIMEOUT = 15.0


def _paths(state_dir: str) -> tuple[Path, Path, Path, Path]:
    base = Path(state_dir)
    return base / "sandbox.json", base / "sandbox.pid", base / "sandbox.ready.json", base / "sandbox.log"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not running
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_our_process(pid: int) -> bool:
    """Guard against a recycled pid: the process must be `run.py serve`."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the pid file
    return any(arg.endswith(b"run.py") for arg in cmdline) and b"serve" in cmdline


def _answers(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_sandbox/state", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _read_state(state_dir: str) -> dict | None:
    info_path, pid_path, _, _ = _paths(state_dir)
    try:
        info = json.loads(info_path.read_text())
        info["pid"] = int(pid_path.read_text().strip())
        return info
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _running(state_dir: str) -> dict | None:
    info = _read_state(state_dir)
    names = (
        "ajour_url",
        "planday_url",
        "kassatellen_url",
        "eitje_url",
        "shiftbase_url",
        "mpluskassa_url",
        "kashclick_url",
        "pennylane_url",
        "ccv_salespos_url",
        "eaccounting_url",
    )  # an older sandbox lacks some: replaced
    if info and _pid_alive(info["pid"]) and all(_answers(info.get(n, "")) for n in names) and _current(state_dir):
        return info
    return None


def _current(state_dir: str) -> bool:
    """False when a stand-in's code changed after the running sandbox started (it serves the old code: replaced)."""
    started = _paths(state_dir)[0].stat().st_mtime
    return all(p.stat().st_mtime <= started for p in Path(__file__).resolve().parent.glob("*.py"))


def _remove_files(state_dir: str) -> None:
    for path in _paths(state_dir)[:3]:
        path.unlink(missing_ok=True)


def _print_urls(info: dict) -> None:
    for key, value in info.items():
        print(f"{key}={value}")


def cmd_start(args) -> int:
    info = _running(args.state_dir)
    if info:
        print(f"sandbox already running (pid {info['pid']})")
        _print_urls(info)
        return 0
    stale = _read_state(args.state_dir)
    if stale and _pid_alive(stale["pid"]) and _is_our_process(stale["pid"]):
        _terminate(stale["pid"])  # alive but not answering: replace it
    _remove_files(args.state_dir)
    info_path, pid_path, ready_path, log_path = _paths(args.state_dir)
    info_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        str(HERE),
        "serve",
        "--host",
        args.host,
        "--ajour-port",
        str(args.ajour_port),
        "--planday-port",
        str(args.planday_port),
        "--kassatellen-port",
        str(args.kassatellen_port),
        "--eitje-port",
        str(args.eitje_port),
        "--shiftbase-port",
        str(args.shiftbase_port),
        "--mpluskassa-port",
        str(args.mpluskassa_port),
        "--kashclick-port",
        str(args.kashclick_port),
        "--pennylane-port",
        str(args.pennylane_port),
        "--ccv-port",
        str(args.ccv_port),
        "--eaccounting-port",
        str(args.eaccounting_port),
        "--latency-ms",
        str(args.latency_ms),
        "--ready-file",
        str(ready_path.resolve()),
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True
        )
    deadline = time.monotonic() + START_TIMEOUT
    urls = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print(f"sandbox exited with code {proc.returncode}; see {log_path}", file=sys.stderr)
            _tail(log_path)
            return 1
        if urls is None and ready_path.exists():
            try:
                urls = json.loads(ready_path.read_text())
            except ValueError:
                urls = None  # half-written; try again
        if urls and all(_answers(u, 0.5) for k, u in urls.items() if k.endswith("_url")):
            break
        time.sleep(0.05)
    else:
        print(f"sandbox did not answer within {START_TIMEOUT:.0f}s; see {log_path}", file=sys.stderr)
        _terminate(proc.pid)
        ready_path.unlink(missing_ok=True)
        return 1
    ready_path.unlink(missing_ok=True)
    info = {k: u for k, u in urls.items() if k.endswith("_url")} | {"pid": proc.pid}
    tmp = info_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, info_path)
    pid_path.write_text(f"{proc.pid}\n")
    print("sandbox started")
    _print_urls(info)
    return 0


def _tail(path: Path, lines: int = 20) -> None:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return
    for line in text:
        print(f"  {line}", file=sys.stderr)


def _terminate(pid: int, timeout: float = 5.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def cmd_stop(args) -> int:
    info = _read_state(args.state_dir)
    if info and _pid_alive(info["pid"]) and _is_our_process(info["pid"]):
        _terminate(info["pid"])
        print(f"sandbox stopped (pid {info['pid']})")
    else:
        print("sandbox not running")
    _remove_files(args.state_dir)
    return 0


def cmd_status(args) -> int:
    info = _running(args.state_dir)
    if info:
        print("sandbox running")
        _print_urls(info)
        return 0
    print("sandbox not running")
    return 1


def cmd_serve(args) -> int:
    sys.path.insert(0, str(HERE.parents[1]))
    from sandbox.server import Sandbox

    try:
        sandbox = Sandbox(
            ajour_port=args.ajour_port,
            planday_port=args.planday_port,
            kassatellen_port=args.kassatellen_port,
            eitje_port=args.eitje_port,
            shiftbase_port=args.shiftbase_port,
            mpluskassa_port=args.mpluskassa_port,
            kashclick_port=args.kashclick_port,
            pennylane_port=args.pennylane_port,
            ccv_port=args.ccv_port,
            eaccounting_port=args.eaccounting_port,
            host=args.host,
            latency_ms=args.latency_ms,
        ).start()
    except OSError as exc:
        print(
            f"cannot listen on {args.host} ports {args.ajour_port}/{args.planday_port}: {exc}"
            " (use --ajour-port/--planday-port, 0 = any free port)",
            file=sys.stderr,
        )
        return 2
    done = threading.Event()

    def _on_signal(signum, frame) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    urls = {f"{name}_url": url for name, url in sandbox.urls.items()} | {"pid": os.getpid()}
    if args.ready_file:
        ready = Path(args.ready_file)
        tmp = ready.with_suffix(".tmp")
        tmp.write_text(json.dumps(urls))
        os.replace(tmp, ready)
    print("sandbox serving: " + "  ".join(f"{n} {u}" for n, u in sandbox.urls.items()), flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        sandbox.stop()
    return 0


def _latency(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 60000:
        raise argparse.ArgumentTypeError(f"must be a number of milliseconds between 0 and 60000, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="tillflow vendor sandbox (Ajour, Planday, Kassatellen, Eitje stand-ins)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("start", "serve"):
        p = sub.add_parser(name)
        p.add_argument("--ajour-port", type=int, default=8701, help="0 = any free port")
        p.add_argument("--planday-port", type=int, default=8702, help="0 = any free port")
        p.add_argument("--kassatellen-port", type=int, default=8703, help="0 = any free port")
        p.add_argument("--eitje-port", type=int, default=8704, help="0 = any free port")
        p.add_argument("--shiftbase-port", type=int, default=8705, help="0 = any free port")
        p.add_argument("--mpluskassa-port", type=int, default=8706, help="0 = any free port (SOAP)")
        p.add_argument("--kashclick-port", type=int, default=8707, help="0 = any free port")
        p.add_argument("--pennylane-port", type=int, default=8708, help="0 = any free port")
        p.add_argument("--ccv-port", type=int, default=8709, help="0 = any free port")
        p.add_argument("--eaccounting-port", type=int, default=8710, help="0 = any free port")
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument(
            "--latency-ms", type=_latency, default=0, help="answer every API call after this long (0..60000)"
        )
        if name == "serve":
            p.add_argument("--ready-file", default=None, help=argparse.SUPPRESS)
        else:
            p.add_argument("--state-dir", default=".tillflow")
    for name in ("stop", "status"):
        sub.add_parser(name).add_argument("--state-dir", default=".tillflow")
    args = parser.parse_args(argv)
    return {"start": cmd_start, "stop": cmd_stop, "status": cmd_status, "serve": cmd_serve}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
