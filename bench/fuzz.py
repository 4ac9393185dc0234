"""A long schemathesis run against `churn serve`, spent on the scoring routes.

Builds the bench model (`bench/serving.py`'s `prepare`), starts `churn serve` with a bearer
token, then for `--minutes` keeps generating requests from the service's own OpenAPI
document: valid and invalid bodies on each scoring route, with and without the token, and
each body again under repeated and conflicting `Content-Type` and `Content-Encoding` headers.
`POST /metadata` (whose body is empty) gets a few cases per round, not a share of the time.
Reports requests per route and every 5xx or undocumented answer.

    python bench/fuzz.py [--minutes 30] [--customers 3000]
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path

import hypothesis
import schemathesis
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

HERE = Path(__file__).resolve().parent
_spec = spec_from_file_location("bench_serving", HERE / "serving.py")
bench_serving = module_from_spec(_spec)
_spec.loader.exec_module(bench_serving)
BIN = Path(sys.executable).parent
TOKEN = "fuzz-token"
HEADER_ATTACKS = [
    [("content-type", "multipart/form-data"), ("content-type", "application/json")],
    [("content-type", "application/json"), ("content-type", "text/plain")],
    [("content-type", "application/json"), ("content-encoding", "gzip")],
    [("content-type", "application/json"), ("content-encoding", "identity"),
     ("content-encoding", "br")],
]


def raw_post(port: int, path: str, headers: list[tuple[str, str]], body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.putrequest("POST", path)
        for name, value in [*headers, ("content-length", str(len(body)))]:
            conn.putheader(name, value)
        conn.endheaders(body)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def make_case_runner(url: str, port: int, token: str | None, label: str, light: bool,
                     counts: collections.Counter):
    """Calls one generated case, then (scoring routes) its body under each header attack."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    auth = [("authorization", f"Bearer {token}")] if token else []

    def run_case(case) -> None:
        counts[label] += 1
        case.call_and_validate(base_url=url, headers=headers, timeout=60,
                               excluded_checks=[positive_data_acceptance,
                                                negative_data_rejection])
        if case.method.upper() != "POST" or light:
            return
        try:
            body = json.dumps(case.body).encode()
        except TypeError:
            body = b"{}"
        for attack in HEADER_ATTACKS:
            counts[label + " (header attack)"] += 1
            status = raw_post(port, case.path, [*attack, *auth], body)
            assert status < 500, f"{attack}: {status}"

    return run_case


def fuzz_round(url: str, port: int, seed: int, examples: int, counts: collections.Counter,
               failures: list[str]) -> None:
    schema = schemathesis.openapi.from_url(url + "/docs.json")
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        light = operation.path == "/metadata" or operation.method.upper() == "GET"
        modes = [GenerationMode.POSITIVE]
        if operation.body or operation.query:
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            for token in (TOKEN, None):
                run = hypothesis.seed(seed)(hypothesis.settings(
                    max_examples=3 if light else examples, deadline=None, database=None,
                    suppress_health_check=list(hypothesis.HealthCheck))(hypothesis.given(
                        case=operation.as_strategy(generation_mode=mode))(
                        make_case_runner(url, port, token, label, light, counts))))
                try:
                    run()
                except Exception as err:  # collected, reported together
                    lines = [line.strip()[:200] for line in str(err).splitlines()
                             if line.strip() and "curl" not in line]
                    failures.append(f"{label} ({mode.value}, token={bool(token)}): "
                                    + " | ".join(lines[:6]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--examples", type=int, default=100,
                        help="Cases per scoring route, mode and token, per round.")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="churn-bench-fuzz-"))
    bench_serving.prepare(work, args.customers)
    port = bench_serving.free_port()
    os.environ["CHURN_API_TOKEN"] = TOKEN
    server = bench_serving.start(
        [str(BIN / "churn"), "serve", "--port", str(port), "--no-uplift"],
        f"http://127.0.0.1:{port}/readyz", work, "churn-serve")
    counts: collections.Counter = collections.Counter()
    failures: list[str] = []
    started, seed = time.monotonic(), 0
    try:
        while time.monotonic() - started < args.minutes * 60:
            fuzz_round(f"http://127.0.0.1:{port}", port, seed, args.examples, counts, failures)
            seed += 1
            print(f"round {seed}: {sum(counts.values()):,} requests, {len(failures)} "
                  f"failures, {time.monotonic() - started:.0f} s", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
    minutes = (time.monotonic() - started) / 60
    print(f"\n{datetime.now():%Y-%m-%d}, {platform.node()}, {os.cpu_count()} cores: "
          f"{sum(counts.values()):,} requests in {minutes:.1f} min, {seed} rounds")
    print("| route | requests |\n|---|---:|")
    for label, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"| {label} | {n:,} |")
    print(f"\nserver errors or undocumented answers: {len(failures)}")
    for failure in failures:
        print("  " + failure)


if __name__ == "__main__":
    main()
