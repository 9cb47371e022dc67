#!/usr/bin/env python3
"""Closed-loop load generator for OpenAI-compatible HTTP completion servers.

Speaks plain HTTP/1.1 over asyncio sockets (standard library only), so the same run works
against pipellm-coordinator and llama.cpp's llama-server. For each concurrency level it keeps
exactly C streaming `POST /v1/completions` requests in flight until the level's request count is
done, and reports aggregate tokens/s, requests/s, time to first token, inter-token latency and
per-stream decode speed.

  bench/http_load.py --url http://127.0.0.1:8080 --concurrency 1,16,64 --json out.json --plot out.svg
  bench/http_load.py --compare pipellm.json llama.json --plot compare.svg

Timing: every request opens its own connection (`Connection: close`); the clock starts before
connecting, so TTFT includes the (loopback) TCP setup. Gaps are measured between consecutive
SSE events that carry text, at the moment their bytes arrive.
"""

import argparse
import asyncio
import datetime
import json
import math
import random
import shlex
import ssl
import statistics
import sys
import time
import urllib.parse
from xml.sax.saxutils import escape as xml_escape

DEFAULT_PATH = "/v1/completions"
MAX_ERROR_BODY = 64 * 1024

# A fixed vocabulary keeps prompts deterministic across machines and Python versions' dicts.
WORDS = (
    "the river city market morning evening garden window story letter village mountain road "
    "teacher doctor farmer painter sailor engineer child friend neighbor stranger family kingdom "
    "history music library station bridge forest harbor island castle tower lantern journey "
    "winter summer autumn spring rain snow wind storm cloud sun moon star light shadow fire "
    "water stone iron gold silver bread apple honey salt coffee tea paper book map clock "
    "walked carried found opened closed remembered watched followed built painted wrote read "
    "answered asked waited listened traveled crossed climbed discovered gathered planted "
    "quiet bright ancient narrow gentle heavy silent golden broken distant careful curious "
    "slowly quickly often never always together alone early late again nearly almost "
    "because although while after before until when where during across through beyond"
).split()


# ---------------------------------------------------------------------------------------------
# Statistics (pure functions, tested in isolation)

def percentile(values, p):
    """p-th percentile (0..100) with linear interpolation between closest ranks (numpy's
    default 'linear' method). None for an empty input."""
    if not values:
        return None
    xs = sorted(values)
    rank = (len(xs) - 1) * p / 100.0
    lo = math.floor(rank)
    hi = math.ceil(rank)
    return xs[lo] + (xs[hi] - xs[lo]) * (rank - lo)


def pct_summary(values, ps=(50, 90, 99)):
    """{"p50": .., "p90": .., "p99": ..} (None entries where there is no data)."""
    return {f"p{p}": percentile(values, p) for p in ps}


def decode_rate(tokens, first_ms, last_ms):
    """Per-stream decode tokens/s: tokens after the first one over the time they took.
    None when it cannot be measured (fewer than two tokens or no elapsed time)."""
    if tokens is None or tokens < 2 or first_ms is None or last_ms is None or last_ms <= first_ms:
        return None
    return (tokens - 1) / ((last_ms - first_ms) / 1000.0)


def summarize_level(concurrency, records, wall_s):
    """Aggregate one level's per-request records (see run_request) into its report row.
    Throughput counts successful requests only; wall_s is the whole level's duration."""
    ok = [r for r in records if r["ok"]]
    tokens = sum(r["completion_tokens"] for r in ok)
    gaps = [g for r in ok for g in r["gaps_ms"]]
    ttfts = [r["ttft_ms"] for r in ok if r["ttft_ms"] is not None]
    rates = [r["decode_tok_s"] for r in ok if r["decode_tok_s"] is not None]
    errors = [r for r in records if not r["ok"]]
    return {
        "concurrency": concurrency,
        "requests": len(records),
        "ok": len(ok),
        "errors": len(errors),
        "error_samples": sorted({f"{r['status'] or '-'}: {r['error']}" for r in errors})[:5],
        "wall_s": wall_s,
        "completion_tokens": tokens,
        "tok_s": tokens / wall_s if wall_s > 0 else None,
        "req_s": len(ok) / wall_s if wall_s > 0 else None,
        "ttft_ms": pct_summary(ttfts),
        "itl_ms": pct_summary(gaps),
        "decode_tok_s_median": statistics.median(rates) if rates else None,
        # Conversations (--turns): TTFT p50 of each turn (a prefix cache keeps later turns flat).
        "ttft_p50_by_turn_ms": [percentile([r["ttft_ms"] for r in ok if r.get("turn") == t and r["ttft_ms"] is not None], 50)
                                for t in range(max((r.get("turn", 0) for r in records), default=0) + 1)],
    }


# ---------------------------------------------------------------------------------------------
# Prompts and request bodies

def make_prompt(n_words, seed):
    """Deterministic ~n_words English-looking prompt; the seed varies it per request so that
    prompts share no long prefix (a prefix cache would otherwise skip most of the prefill)."""
    rng = random.Random(seed)
    words = [WORDS[rng.randrange(len(WORDS))] for _ in range(max(1, n_words))]
    sentences, start = [], 0
    while start < len(words):
        length = rng.randint(8, 16)
        chunk = words[start:start + length]
        sentences.append(chunk[0].capitalize() + (" " + " ".join(chunk[1:]) if chunk[1:] else "") + ".")
        start += length
    return " ".join(sentences)


def request_body(prompt, max_tokens, ignore_eos, model):
    body = {
        "prompt": prompt,
        "max_tokens": max_tokens,
        "stream": True,
        "temperature": 0,
        "stream_options": {"include_usage": True},
    }
    if ignore_eos:
        body["ignore_eos"] = True
    if model:
        body["model"] = model
    return body


# ---------------------------------------------------------------------------------------------
# HTTP/1.1 client pieces

class Target:
    """Where requests go: parsed once from --url."""

    def __init__(self, url, api_key=None, insecure=False):
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"--url must look like http://HOST:PORT (got {url!r})")
        self.url = url
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        # A bare base URL means the completions route; an explicit path is used as given.
        self.path = u.path if u.path not in ("", "/") else DEFAULT_PATH
        if u.query:
            self.path += "?" + u.query
        self.api_key = api_key
        self.ssl = None
        if u.scheme == "https":
            self.ssl = ssl.create_default_context()
            if insecure:  # self-signed certificates of a local test server
                self.ssl.check_hostname = False
                self.ssl.verify_mode = ssl.CERT_NONE

    def host_header(self):
        default = 443 if self.ssl else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    async def connect(self):
        return await asyncio.open_connection(self.host, self.port, ssl=self.ssl)


class Unreachable(Exception):
    """The server did not accept a connection at all."""


class HttpError(Exception):
    """A response we cannot use: carries the HTTP status (None for transport problems)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def encode_request(target, body):
    payload = json.dumps(body).encode()
    lines = [
        f"POST {target.path} HTTP/1.1",
        f"Host: {target.host_header()}",
        "User-Agent: pipellm-http-load/1",
        "Accept: text/event-stream",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        "Connection: close",
    ]
    if target.api_key:
        lines.append(f"Authorization: Bearer {target.api_key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def read_response_head(reader):
    """Status code and headers (lower-case names) of a response."""
    status_line = (await reader.readline()).decode("latin-1").strip()
    if not status_line:
        raise HttpError(None, "connection closed before a response")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise HttpError(None, f"bad status line {status_line!r}")
    headers = {}
    while True:
        line = (await reader.readline()).decode("latin-1")
        if line in ("\r\n", "\n", ""):
            break
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def iter_body(reader, headers):
    """Yield the body's bytes as they arrive, undoing chunked transfer encoding, honouring
    Content-Length, or reading to EOF when neither is given."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = (await reader.readline()).decode("latin-1").strip()
            if not size_line:
                raise HttpError(None, "connection closed inside a chunked body")
            size = int(size_line.split(";", 1)[0], 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            data = await reader.readexactly(size)
            await reader.readexactly(2)  # CRLF after each chunk
            yield data
    elif "content-length" in headers:
        remaining = int(headers["content-length"])
        while remaining > 0:
            data = await reader.read(min(remaining, 65536))
            if not data:
                raise HttpError(None, f"connection closed with {remaining} body bytes missing")
            remaining -= len(data)
            yield data
    else:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            yield data


class SseParser:
    """Incremental server-sent-events parser: feed bytes, get the `data` payload of every
    complete event. Accepts LF and CRLF line ends and events split across reads."""

    def __init__(self):
        self._buf = b""
        self._data = []

    def feed(self, chunk):
        self._buf += chunk
        events = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                return events
            line = self._buf[:nl].rstrip(b"\r").decode("utf-8", "replace")
            self._buf = self._buf[nl + 1:]
            if line == "":
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
            elif line.startswith("data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(" ") else value)
            # other fields (event:, id:, retry:) and comments (":") carry nothing we use


def chunk_text(obj):
    """Text carried by one streamed chunk: completions' `text` or chat's `delta.content`."""
    choices = obj.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return ""
    c = choices[0]
    text = c.get("text")
    if text is None:
        text = (c.get("delta") or {}).get("content")
    return text or ""


def error_message(body_bytes):
    """Human-readable message of an error response (OpenAI's {"error": {"message"}} or raw)."""
    text = body_bytes.decode("utf-8", "replace").strip()
    try:
        err = json.loads(text).get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    except (ValueError, AttributeError):
        pass
    return text[:300] or "(empty body)"


# ---------------------------------------------------------------------------------------------
# One request

def new_record(seed):
    return {
        "seed": seed, "ok": False, "status": None, "error": None,
        "ttft_ms": None, "latency_ms": None, "completion_tokens": 0, "content_chunks": 0,
        "token_source": None, "prompt_tokens": None, "gaps_ms": [], "decode_tok_s": None,
        "turn": 0, "text": "",
    }


async def stream_request(target, body, record, t0):
    """Send one streaming request and fill `record` as events arrive (times relative to t0)."""
    reader, writer = await target.connect()
    try:
        writer.write(encode_request(target, body))
        await writer.drain()
        status, headers = await read_response_head(reader)
        record["status"] = status
        if status != 200:
            raw = b""
            async for data in iter_body(reader, headers):
                raw += data
                if len(raw) > MAX_ERROR_BODY:
                    break
            raise HttpError(status, error_message(raw))

        parser = SseParser()
        content_ms = []
        usage_tokens = None
        done = False
        async for data in iter_body(reader, headers):
            now_ms = (time.perf_counter() - t0) * 1000.0
            for payload in parser.feed(data):
                if payload.strip() == "[DONE]":
                    done = True
                    continue
                try:
                    obj = json.loads(payload)
                except ValueError:
                    raise HttpError(status, f"unparsable event {payload[:80]!r}")
                if not isinstance(obj, dict):
                    continue
                if obj.get("error"):
                    raise HttpError(status, "in-stream error: " + error_message(payload.encode()))
                if chunk_text(obj):
                    content_ms.append(now_ms)
                    record["text"] += chunk_text(obj)
                usage = obj.get("usage")
                if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
                    usage_tokens = int(usage["completion_tokens"])
                    record["prompt_tokens"] = usage.get("prompt_tokens")
        if not done:
            raise HttpError(status, "stream ended without data: [DONE]")
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass  # the server may already have dropped the connection

    record["content_chunks"] = len(content_ms)
    # Servers may send several tokens in one event, or an event with no text for an
    # incomplete UTF-8 sequence, so the server's own count wins when it gives one.
    if usage_tokens is not None:
        record["completion_tokens"], record["token_source"] = usage_tokens, "usage"
    else:
        record["completion_tokens"], record["token_source"] = len(content_ms), "chunks"
    if content_ms:
        record["ttft_ms"] = content_ms[0]
        record["gaps_ms"] = [b - a for a, b in zip(content_ms, content_ms[1:])]
        record["decode_tok_s"] = decode_rate(record["completion_tokens"], content_ms[0], content_ms[-1])


async def run_request(target, body, seed, timeout):
    """One request, never raising: the record says ok or carries the error."""
    record = new_record(seed)
    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(stream_request(target, body, record, t0), timeout)
        record["ok"] = True
    except asyncio.TimeoutError:
        record["error"] = f"timeout after {timeout:g} s"
    except HttpError as e:
        record["status"] = e.status if e.status is not None else record["status"]
        record["error"] = str(e)
    except (OSError, asyncio.IncompleteReadError, ValueError, ssl.SSLError) as e:
        record["error"] = f"{type(e).__name__}: {e}"
    record["latency_ms"] = (time.perf_counter() - t0) * 1000.0
    return record


# ---------------------------------------------------------------------------------------------
# Levels

async def run_level(target, concurrency, n_requests, make_body, seed_base, timeout, turns=1, prompt_words=100):
    """Closed loop: C workers, each starting its next request as soon as its last one ends,
    until n_requests have been started. With turns > 1 each worker holds conversations of that
    many requests: a turn's prompt is the previous prompt, its answer and prompt_words new words
    (as a chat client resends its history). Returns (records in start order, wall seconds)."""
    records = [None] * n_requests
    next_index = 0

    async def worker():
        nonlocal next_index
        history, turn = "", 0
        while next_index < n_requests:
            i = next_index
            next_index += 1
            seed = seed_base + i
            prompt = make_prompt(prompt_words, seed)
            if turn > 0:
                prompt = history + " " + prompt
            r = await run_request(target, make_body(prompt), seed, timeout)
            r["turn"] = turn
            records[i] = r
            history, turn = (prompt + r["text"], turn + 1) if r["ok"] else ("", 0)
            if turn >= turns:
                history, turn = "", 0

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, n_requests))))
    return records, time.perf_counter() - t0


async def check_reachable(target, timeout):
    """Fail fast with a clear message instead of a level full of connection errors."""
    try:
        _, writer = await asyncio.wait_for(target.connect(), timeout)
    except (OSError, asyncio.TimeoutError, ssl.SSLError) as e:
        reason = "timed out" if isinstance(e, asyncio.TimeoutError) else str(e)
        raise Unreachable(f"cannot connect to {target.url} ({reason})")
    writer.close()
    try:
        await writer.wait_closed()
    except (OSError, ssl.SSLError):
        pass


async def run_benchmark(args, target):
    """Warm-up, then every level in order. Returns (levels, raw records by level, failed)."""
    def make_body(prompt):
        return request_body(prompt, args.max_tokens, args.ignore_eos, args.model)

    await check_reachable(target, min(args.timeout, 10.0))
    for i in range(args.warmup):
        r = await run_request(target, make_body(make_prompt(args.prompt_words, 10**9 + i)), 10**9 + i, args.timeout)
        if not r["ok"]:
            print(f"http_load: warm-up request failed: {r['status'] or '-'} {r['error']}", file=sys.stderr)

    levels, raw = [], []
    for li, c in enumerate(args.concurrency):
        n = args.requests_per_level or max(4, 2 * c)
        records, wall = await run_level(target, c, n, make_body, (li + 1) * 1_000_000, args.timeout, args.turns,
                                        args.prompt_words)
        stats = summarize_level(c, records, wall)
        levels.append(stats)
        raw.append({"concurrency": c, "records": records})
        print(f"http_load: concurrency {c}: {stats['ok']}/{n} ok, "
              f"{fmt(stats['tok_s'], 1)} tok/s in {wall:.2f} s", file=sys.stderr)
        if stats["ok"] == 0:
            return levels, raw, f"every request at concurrency {c} failed: " + "; ".join(stats["error_samples"])
        if stats["errors"]:
            print(f"http_load: {stats['errors']} failed: " + "; ".join(stats["error_samples"]), file=sys.stderr)
    return levels, raw, None


# ---------------------------------------------------------------------------------------------
# Output: Markdown table, JSON, SVG

def fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def markdown_table(levels):
    rows = [
        "| concurrency | requests | errors | tok/s | req/s | TTFT p50 / p90 / p99 ms "
        "| inter-token p50 / p90 / p99 ms | decode tok/s per stream (median) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in levels:
        t, g = s["ttft_ms"], s["itl_ms"]
        rows.append(
            f"| {s['concurrency']} | {s['requests']} | {s['errors']} | {fmt(s['tok_s'])} | {fmt(s['req_s'], 2)} "
            f"| {fmt(t['p50'])} / {fmt(t['p90'])} / {fmt(t['p99'])} "
            f"| {fmt(g['p50'], 2)} / {fmt(g['p90'], 2)} / {fmt(g['p99'], 2)} "
            f"| {fmt(s['decode_tok_s_median'])} |")
    return "\n".join(rows)


def nice_ticks(vmax, count=5):
    """Round tick values (1, 2, 5 x 10^k steps) from 0 up to at least vmax."""
    if not vmax or vmax <= 0:
        return [0, 1]
    raw = vmax / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    n = math.ceil(vmax / step - 1e-9)
    return [round(i * step, 10) for i in range(n + 1)]


COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def svg_panel(x0, y0, w, h, title, ylabel, series, xs_all):
    """One chart: x = concurrency (log2 when it spans >= 8x), y from 0; series: [{"points": [(c, y)]}]."""
    ml, mr, mt, mb = 64, 16, 28, 44
    pw, ph = w - ml - mr, h - mt - mb
    xs_all = sorted(set(xs_all))
    use_log = xs_all[0] > 0 and xs_all[-1] / xs_all[0] >= 8
    fx = (lambda v: math.log2(v)) if use_log else float
    lo, hi = fx(xs_all[0]), fx(xs_all[-1])
    span = hi - lo or 1.0

    def px(v):
        return x0 + ml + (fx(v) - lo) / span * pw if hi > lo else x0 + ml + pw / 2

    ys = [p[1] for s in series for p in s["points"] if p[1] is not None]
    ticks = nice_ticks(max(ys) if ys else 1)
    ytop = ticks[-1] or 1

    def py(v):
        return y0 + mt + ph - v / ytop * ph

    out = [f'<text x="{x0 + w / 2}" y="{y0 + 16}" text-anchor="middle" font-weight="bold">{xml_escape(title)}</text>',
           f'<rect x="{x0 + ml}" y="{y0 + mt}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>']
    for t in ticks:
        y = py(t)
        out.append(f'<line x1="{x0 + ml}" y1="{y:.1f}" x2="{x0 + ml + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 + ml - 6}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>')
    for c in xs_all:
        x = px(c)
        out.append(f'<line x1="{x:.1f}" y1="{y0 + mt}" x2="{x:.1f}" y2="{y0 + mt + ph}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{y0 + mt + ph + 16}" text-anchor="middle">{c}</text>')
    out.append(f'<text x="{x0 + ml + pw / 2}" y="{y0 + h - 6}" text-anchor="middle">'
               f'concurrent requests{" (log scale)" if use_log else ""}</text>')
    out.append(f'<text transform="translate({x0 + 16},{y0 + mt + ph / 2}) rotate(-90)" '
               f'text-anchor="middle">{xml_escape(ylabel)}</text>')
    for i, s in enumerate(series):
        color = COLORS[i % len(COLORS)]
        pts = [(px(c), py(v)) for c, v in s["points"] if v is not None]
        if len(pts) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        out.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}"/>' for x, y in pts)
    return out


def render_svg(runs, title="OpenAI HTTP load"):
    """Two panels (aggregate tok/s, p50 inter-token ms vs concurrency), one line per run.
    runs: [{"label": str, "levels": [summarize_level rows]}]."""
    w, h = 520, 340
    legend_h = 22 * len(runs) + 10
    tok = [{"points": [(s["concurrency"], s["tok_s"]) for s in r["levels"]]} for r in runs]
    itl = [{"points": [(s["concurrency"], s["itl_ms"]["p50"]) for s in r["levels"]]} for r in runs]
    xs = [s["concurrency"] for r in runs for s in r["levels"]] or [1]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * w}" height="{h + legend_h + 24}" '
             f'font-family="sans-serif" font-size="12">',
             f'<rect width="100%" height="100%" fill="white"/>',
             f'<text x="{w}" y="18" text-anchor="middle" font-size="15" font-weight="bold">{xml_escape(title)}</text>']
    parts += svg_panel(0, 24, w, h, "aggregate generated tokens/s", "tokens/s", tok, xs)
    parts += svg_panel(w, 24, w, h, "inter-token latency p50", "ms", itl, xs)
    for i, r in enumerate(runs):
        y = 24 + h + 18 + 22 * i
        color = COLORS[i % len(COLORS)]
        parts.append(f'<line x1="70" y1="{y - 4}" x2="100" y2="{y - 4}" stroke="{color}" stroke-width="3"/>')
        parts.append(f'<text x="108" y="{y}">{xml_escape(str(r["label"]))}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_text(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def load_run(path):
    with open(path, encoding="utf-8") as f:
        run = json.load(f)
    if "levels" not in run:
        raise SystemExit(f"http_load: {path} has no 'levels' (not an http_load.py JSON file)")
    run.setdefault("label", path)
    return run


# ---------------------------------------------------------------------------------------------
# Command line

def parse_concurrency(text):
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("concurrency levels must be >= 1")
    return levels


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="server base URL (POSTs to /v1/completions) or a full endpoint URL")
    p.add_argument("--concurrency", type=parse_concurrency, default=[1, 16, 64],
                   help="comma-separated levels (default 1,16,64)")
    p.add_argument("--requests-per-level", type=int, default=0,
                   help="requests per level (default 2 x concurrency, at least 4)")
    p.add_argument("--prompt-words", type=int, default=100)
    p.add_argument("--turns", type=int, default=1,
                   help="requests per conversation: each turn resends the previous prompt and answer plus "
                        "--prompt-words new words (default 1: unrelated prompts)")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--ignore-eos", action=argparse.BooleanOptionalAction, default=True,
                   help='send "ignore_eos": true so every request generates max-tokens (default on)')
    p.add_argument("--model", help='sent as "model" (llama-server ignores it; some servers need it)')
    p.add_argument("--api-key", help="sent as Authorization: Bearer KEY")
    p.add_argument("--insecure", action="store_true", help="https: do not verify the certificate")
    p.add_argument("--warmup", type=int, default=1, help="unrecorded requests before the first level")
    p.add_argument("--timeout", type=float, default=600.0, help="per-request limit in seconds")
    p.add_argument("--label", help="name of this run in tables and plots (default: the URL)")
    p.add_argument("--json", help="write settings, per-level stats and per-request records here")
    p.add_argument("--plot", help="write an SVG of tok/s and p50 inter-token latency vs concurrency")
    p.add_argument("--compare", nargs="+", metavar="JSON",
                   help="no load: read earlier --json files and tabulate / plot them together")
    args = p.parse_args(argv)
    if not args.compare and not args.url:
        p.error("--url is required (or --compare FILES)")
    if args.requests_per_level < 0 or args.max_tokens < 1 or args.timeout <= 0 or args.warmup < 0 or args.turns < 1:
        p.error("--requests-per-level, --warmup >= 0; --max-tokens, --turns >= 1; --timeout > 0")
    return args


def compare_main(args):
    runs = [load_run(path) for path in args.compare]
    for r in runs:
        print(f"### {r['label']}\n\n{markdown_table(r['levels'])}\n")
    if args.plot:
        write_text(args.plot, render_svg(runs, args.label or "OpenAI HTTP load"))
        print(f"http_load: wrote {args.plot}", file=sys.stderr)
    return 0


def load_main(args, argv):
    try:
        target = Target(args.url, args.api_key, args.insecure)
    except ValueError as e:
        raise SystemExit(f"http_load: {e}")
    label = args.label or args.url
    try:
        levels, raw, failure = asyncio.run(run_benchmark(args, target))
    except Unreachable as e:
        print(f"http_load: error: {e}", file=sys.stderr)
        return 2

    print(f"### {label}\n\n{markdown_table(levels)}")
    if args.turns > 1:
        for lv in levels:
            by_turn = " / ".join(fmt(v) for v in lv["ttft_p50_by_turn_ms"])
            print(f"\nconcurrency {lv['concurrency']}: TTFT p50 by turn (ms): {by_turn}")
    run = {
        "tool": "bench/http_load.py",
        "command": shlex.join([sys.argv[0]] + list(argv)),
        "url": args.url,
        "endpoint": target.path,
        "label": label,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "concurrency": args.concurrency, "requests_per_level": args.requests_per_level or "2*C (min 4)",
            "prompt_words": args.prompt_words, "turns": args.turns, "max_tokens": args.max_tokens,
            "ignore_eos": args.ignore_eos,
            "model": args.model, "warmup": args.warmup, "timeout_s": args.timeout,
        },
        "levels": levels,
        "raw": raw,
    }
    if args.json:
        write_text(args.json, json.dumps(run, indent=1) + "\n")
        print(f"http_load: wrote {args.json}", file=sys.stderr)
    if args.plot:
        write_text(args.plot, render_svg([run], label))
        print(f"http_load: wrote {args.plot}", file=sys.stderr)
    if failure:
        print(f"http_load: error: {failure}", file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    return compare_main(args) if args.compare else load_main(args, argv)


if __name__ == "__main__":
    sys.exit(main())
