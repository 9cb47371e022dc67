#!/usr/bin/env python3
"""Tests of bench/http_load.py: the statistics helpers against hand-computed values, the HTTP /
SSE client against an in-process fake server with a known schedule, and the CLI's exit codes.

Run: python3 tests/bench/http_load_test.py
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.parse
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "bench", "http_load.py")
sys.path.insert(0, os.path.join(ROOT, "bench"))
import http_load  # noqa: E402

# The fake server's schedule: first text chunk after FIRST_MS, then one every GAP_MS.
N_CHUNKS = 5
FIRST_MS = 50
GAP_MS = 20


def sse(obj):
    return b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"


def text_event(text):
    return sse({"object": "text_completion", "choices": [{"index": 0, "text": text, "finish_reason": None}]})


def usage_event(completion_tokens):
    return sse({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": completion_tokens,
                                         "total_tokens": 11 + completion_tokens}})


class FakeServer:
    """OpenAI-ish streaming server on a background thread's event loop. The request's query
    string picks the behaviour (?mode=...); it records request bodies, headers and the largest
    number of requests it saw in flight at once."""

    def __init__(self):
        self.bodies = []
        self.headers = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _shutdown(self):
        self._server.close()
        await self._server.wait_closed()

    def url(self, mode):
        return f"http://127.0.0.1:{self.port}/v1/completions?mode={mode}"

    def _run(self):
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader, writer):
        try:
            request_line = (await reader.readline()).decode()
            if not request_line:
                return  # the tool's reachability probe connects and closes
            headers = {}
            while (line := (await reader.readline()).decode()) not in ("\r\n", ""):
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            body = json.loads(await reader.readexactly(int(headers["content-length"])))
            self.bodies.append(body)
            self.headers.append(headers)
            mode = urllib.parse.parse_qs(urllib.parse.urlsplit(request_line.split()[1]).query)["mode"][0]
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await getattr(self, "_mode_" + mode)(reader, writer)
            finally:
                self.in_flight -= 1
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    @staticmethod
    def _events(usage=N_CHUNKS, empty_chunk=False):
        events = [text_event(f" w{i}") for i in range(N_CHUNKS)]
        if empty_chunk:  # e.g. half a UTF-8 character: an event with no text is not a token
            events.insert(2, text_event(""))
        return events, ([usage_event(usage)] if usage is not None else []) + [sse(b"[DONE]")]

    @staticmethod
    async def _paced(events, tail, write):
        """FIRST_MS, then the text events GAP_MS apart, then the tail at once."""
        await asyncio.sleep(FIRST_MS / 1000)
        for i, e in enumerate(events):
            if i:
                await asyncio.sleep(GAP_MS / 1000)
            await write(e)
        for e in tail:
            await write(e)

    async def _chunked(self, writer, events, tail, split_event=None):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        await writer.drain()

        async def write(e):
            # Optionally cut one event across two HTTP chunks: the client must reassemble it.
            pieces = [e[:7], e[7:]] if split_event is not None and e == split_event else [e]
            for p in pieces:
                writer.write(b"%x\r\n%s\r\n" % (len(p), p))
            await writer.drain()

        await self._paced(events, tail, write)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def _mode_chunked(self, reader, writer):
        events, tail = self._events()
        await self._chunked(writer, events, tail, split_event=events[2])

    async def _mode_length(self, reader, writer):
        events, tail = self._events()
        total = sum(len(e) for e in events + tail)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n" % total)
        await writer.drain()

        async def write(e):
            writer.write(e)
            await writer.drain()

        await self._paced(events, tail, write)

    async def _mode_nousage(self, reader, writer):
        await self._chunked(writer, *self._events(usage=None, empty_chunk=True))

    async def _mode_usage7(self, reader, writer):
        await self._chunked(writer, *self._events(usage=7))

    async def _mode_nodone(self, reader, writer):
        events, _ = self._events()
        await self._chunked(writer, events, [])

    async def _mode_busy(self, reader, writer):
        body = json.dumps({"error": {"message": "queue is full", "type": "server_error",
                                     "param": None, "code": "queue_full"}}).encode()
        writer.write(b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()

    async def _mode_hang(self, reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        await reader.read()  # until the client gives up and closes


def one_request(url, timeout=10.0):
    target = http_load.Target(url)
    body = http_load.request_body(http_load.make_prompt(20, 1), 16, True, None)
    return asyncio.run(http_load.run_request(target, body, 1, timeout))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=timeout)


class PercentileTest(unittest.TestCase):
    def test_hand_computed(self):
        p = http_load.percentile
        # [1,2,3,4]: rank = 3p/100 -> p50 rank 1.5 -> 2.5; p90 rank 2.7 -> 3.7; p99 rank 2.97 -> 3.97
        self.assertAlmostEqual(p([1, 2, 3, 4], 50), 2.5)
        self.assertAlmostEqual(p([4, 1, 3, 2], 90), 3.7)
        self.assertAlmostEqual(p([1, 2, 3, 4], 99), 3.97)
        # [15,20,35,40,50]: p40 rank 1.6 -> 20 + 0.6*15 = 29; p75 rank 3.0 -> 40
        self.assertAlmostEqual(p([15, 20, 35, 40, 50], 40), 29.0)
        self.assertAlmostEqual(p([15, 20, 35, 40, 50], 75), 40.0)
        self.assertEqual(p([7], 99), 7)
        self.assertEqual(p([3, 1, 2], 0), 1)
        self.assertEqual(p([3, 1, 2], 100), 3)
        self.assertIsNone(p([], 50))

    def test_decode_rate(self):
        # 5 tokens, first at 50 ms, last at 130 ms: 4 tokens in 0.08 s = 50 tok/s
        self.assertAlmostEqual(http_load.decode_rate(5, 50.0, 130.0), 50.0)
        self.assertIsNone(http_load.decode_rate(1, 50.0, 50.0))

    def test_summarize_level(self):
        def rec(ok, tokens, ttft, gaps, rate, status=200, error=None):
            r = http_load.new_record(0)
            r.update(ok=ok, completion_tokens=tokens, ttft_ms=ttft, gaps_ms=gaps, decode_tok_s=rate,
                     status=status, error=error)
            return r
        records = [rec(True, 10, 100.0, [10.0, 20.0], 40.0), rec(True, 20, 300.0, [30.0, 40.0], 60.0),
                   rec(True, 30, 200.0, [], 80.0), rec(False, 0, None, [], None, 429, "queue is full")]
        s = http_load.summarize_level(4, records, 2.0)
        self.assertEqual((s["requests"], s["ok"], s["errors"]), (4, 3, 1))
        self.assertEqual(s["completion_tokens"], 60)
        self.assertAlmostEqual(s["tok_s"], 30.0)   # 60 tokens / 2 s
        self.assertAlmostEqual(s["req_s"], 1.5)    # 3 ok / 2 s
        self.assertAlmostEqual(s["ttft_ms"]["p50"], 200.0)
        self.assertAlmostEqual(s["ttft_ms"]["p90"], 280.0)   # rank 1.8 of [100,200,300]
        self.assertAlmostEqual(s["itl_ms"]["p50"], 25.0)     # [10,20,30,40], rank 1.5
        self.assertAlmostEqual(s["itl_ms"]["p99"], 39.7)     # rank 2.97
        self.assertAlmostEqual(s["decode_tok_s_median"], 60.0)
        self.assertEqual(s["error_samples"], ["429: queue is full"])


class SseParserTest(unittest.TestCase):
    def test_byte_by_byte_crlf_and_multiline(self):
        stream = b': comment\r\ndata: {"a":1}\r\n\r\nevent: x\ndata:line1\ndata: line2\n\ndata: [DONE]\n\n'
        parser = http_load.SseParser()
        events = [e for i in range(len(stream)) for e in parser.feed(stream[i:i + 1])]
        self.assertEqual(events, ['{"a":1}', "line1\nline2", "[DONE]"])


class FakeServerTest(unittest.TestCase):
    def check_timing(self, r):
        # The server cannot deliver the first text before FIRST_MS nor the end before
        # FIRST_MS + 4 gaps; upper bounds are loose for a loaded machine.
        self.assertGreaterEqual(r["ttft_ms"], FIRST_MS - 5)
        self.assertLess(r["ttft_ms"], FIRST_MS + 500)
        self.assertGreaterEqual(r["latency_ms"], FIRST_MS + (N_CHUNKS - 1) * GAP_MS - 5)
        self.assertEqual(len(r["gaps_ms"]), N_CHUNKS - 1)
        self.assertTrue(all(0 <= g < GAP_MS + 300 for g in r["gaps_ms"]), r["gaps_ms"])
        med = sorted(r["gaps_ms"])[len(r["gaps_ms"]) // 2]
        self.assertTrue(GAP_MS / 2 <= med <= GAP_MS + 150, r["gaps_ms"])

    def test_conversations_resend_their_history(self):
        # --turns 2: a worker's second request is its first prompt, the answer and new words; its
        # third starts a new conversation. TTFT is summarized per turn.
        with FakeServer() as srv:
            target = http_load.Target(srv.url("chunked"))

            def body(prompt):
                return http_load.request_body(prompt, 16, True, None)
            records, _ = asyncio.run(http_load.run_level(target, 1, 4, body, 7, 10.0, turns=2, prompt_words=12))
            prompts = [b["prompt"] for b in srv.bodies]
        self.assertEqual([r["turn"] for r in records], [0, 1, 0, 1])
        self.assertTrue(all(r["ok"] for r in records), [r["error"] for r in records])
        answer = "".join(f" w{i}" for i in range(N_CHUNKS))
        self.assertEqual(records[0]["text"], answer)
        self.assertEqual(prompts[0], http_load.make_prompt(12, 7))
        self.assertEqual(prompts[1], prompts[0] + answer + " " + http_load.make_prompt(12, 8))
        self.assertEqual(prompts[2], http_load.make_prompt(12, 9))
        self.assertTrue(prompts[3].startswith(prompts[2] + answer + " "))
        s = http_load.summarize_level(1, records, 1.0)
        self.assertEqual(len(s["ttft_p50_by_turn_ms"]), 2)
        self.assertAlmostEqual(s["ttft_p50_by_turn_ms"][0],
                               http_load.percentile([records[0]["ttft_ms"], records[2]["ttft_ms"]], 50))

    def test_chunked_with_usage(self):
        with FakeServer() as srv:
            r = one_request(srv.url("chunked"))
        self.assertTrue(r["ok"], r["error"])
        self.assertEqual((r["completion_tokens"], r["content_chunks"], r["token_source"]), (5, 5, "usage"))
        self.assertEqual(r["prompt_tokens"], 11)
        self.check_timing(r)
        body = srv.bodies[0]
        self.assertEqual((body["stream"], body["temperature"], body["ignore_eos"], body["max_tokens"]),
                         (True, 0, True, 16))
        self.assertEqual(body["stream_options"], {"include_usage": True})
        self.assertEqual(len(body["prompt"].split()), 20)

    def test_content_length(self):
        with FakeServer() as srv:
            r = one_request(srv.url("length"))
        self.assertTrue(r["ok"], r["error"])
        self.assertEqual((r["completion_tokens"], r["content_chunks"], r["token_source"]), (5, 5, "usage"))
        self.check_timing(r)

    def test_counts_text_chunks_without_usage(self):
        with FakeServer() as srv:
            r = one_request(srv.url("nousage"))
        self.assertTrue(r["ok"], r["error"])
        self.assertEqual((r["completion_tokens"], r["content_chunks"], r["token_source"]), (5, 5, "chunks"))

    def test_usage_wins_over_chunk_count(self):
        with FakeServer() as srv:
            r = one_request(srv.url("usage7"))
        self.assertEqual((r["completion_tokens"], r["content_chunks"], r["token_source"]), (7, 5, "usage"))

    def test_errors(self):
        with FakeServer() as srv:
            busy = one_request(srv.url("busy"))
            nodone = one_request(srv.url("nodone"))
            hang = one_request(srv.url("hang"), timeout=0.5)
        self.assertFalse(busy["ok"])
        self.assertEqual((busy["status"], busy["error"]), (429, "queue is full"))
        self.assertFalse(nodone["ok"])
        self.assertIn("[DONE]", nodone["error"])
        self.assertFalse(hang["ok"])
        self.assertIn("timeout", hang["error"])
        self.assertLess(hang["latency_ms"], 5000)

    def test_cli_levels_json_plot_compare(self):
        with FakeServer() as srv, tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "run.json")
            svg = os.path.join(tmp, "run.svg")
            p = run_cli("--url", srv.url("chunked"), "--concurrency", "1,4", "--requests-per-level", "8",
                        "--prompt-words", "30", "--max-tokens", "5", "--warmup", "1", "--api-key", "k1",
                        "--model", "m", "--label", "fake", "--json", out, "--plot", svg)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("| concurrency |", p.stdout)
            with open(out) as f:
                run = json.load(f)
            self.assertEqual(run["label"], "fake")
            self.assertEqual([lv["concurrency"] for lv in run["levels"]], [1, 4])
            for lv in run["levels"]:
                self.assertEqual((lv["requests"], lv["ok"], lv["errors"]), (8, 8, 0))
                self.assertEqual(lv["completion_tokens"], 8 * N_CHUNKS)
                self.assertAlmostEqual(lv["tok_s"], 8 * N_CHUNKS / lv["wall_s"])
            self.assertEqual([len(x["records"]) for x in run["raw"]], [1 * 8, 8])
            # closed loop at 4: each request lasts >= 130 ms, so all 4 overlap and never a fifth
            self.assertEqual(srv.max_in_flight, 4)
            self.assertEqual(len(srv.bodies), 1 + 16)  # warm-up + two levels
            prompts = [b["prompt"] for b in srv.bodies]
            self.assertEqual(len(set(prompts)), len(prompts))
            self.assertTrue(all(b["model"] == "m" for b in srv.bodies))
            self.assertTrue(all(h["authorization"] == "Bearer k1" for h in srv.headers))
            self.assertEqual(ET.parse(svg).getroot().tag, "{http://www.w3.org/2000/svg}svg")

            # the same run twice under another label: two lines in the comparison plot
            other = dict(run, label="other")
            out2 = os.path.join(tmp, "other.json")
            with open(out2, "w") as f:
                json.dump(other, f)
            cmp_svg = os.path.join(tmp, "cmp.svg")
            p = run_cli("--compare", out, out2, "--plot", cmp_svg)
            self.assertEqual(p.returncode, 0, p.stderr)
            root = ET.parse(cmp_svg).getroot()
            lines = root.findall("{http://www.w3.org/2000/svg}polyline")
            self.assertEqual(len(lines), 4)  # 2 runs x 2 panels
            self.assertIn("### fake", p.stdout)
            self.assertIn("### other", p.stdout)

    def test_cli_fails_when_every_request_fails(self):
        with FakeServer() as srv:
            p = run_cli("--url", srv.url("busy"), "--concurrency", "2", "--warmup", "0")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("every request at concurrency 2 failed", p.stderr)
        self.assertIn("queue is full", p.stderr)


class UnreachableTest(unittest.TestCase):
    def test_unreachable_url(self):
        p = run_cli("--url", f"http://127.0.0.1:{free_port()}", "--concurrency", "1", timeout=60)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("cannot connect", p.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
