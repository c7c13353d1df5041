#!/usr/bin/env python3
"""bench/cms helper: time CMS saves until the new post is visible in the local store.

Creates two blogs through the content API, preloads them (SMALL and LARGE posts; the large
one with concurrent requests, not measured), then makes SAVES sequential saves to each,
alternating between the blogs so drift on a shared machine hits both alike. A save is timed
from sending POST /v1/admin/blogs/{slug}/posts until its id is in
<store>/blogs/{slug}/latest.json read from disk (polled every POLL_MS after the response).
Every SCAN_EVERY-th save also stats the blog's files in the store (its folder and its
header sidecars under .levee/headers/) before and after, outside the timed window, and
counts the files whose inode, mtime or size changed and their bytes.

Standard library only.   saves.py URL TOKEN STORE_DIR
"""

import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor


def env_int(name, default):
    return int(os.environ.get(name, default))


SAVES = env_int("SAVES", 500)
SMALL = env_int("SMALL", 10)
LARGE = env_int("LARGE", 10000)
CONCURRENCY = env_int("CONCURRENCY", 16)
SCAN_EVERY = env_int("SCAN_EVERY", 10)
POLL_MS = float(os.environ.get("POLL_MS", "1"))
VISIBLE_TIMEOUT = 30.0
GOAL_P50_MS = 100.0

BODY = (
    "A short update for post {n}. We met at the **library** on Tuesday and talked about "
    "the next steps for the campaign: door knocking on Saturday, phone banking on Sunday "
    "evening, and a [sign-up sheet](https://example.org/signup) for volunteers.\n\n"
    "- bring water\n- bring a charged phone\n- wear good shoes\n\n"
    "Thanks to everyone who came. _See you there._"
)


class Api:
    """One keep-alive connection to levee's content API."""

    def __init__(self, url, token):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
        }
        self.conn = None

    def post(self, path, payload):
        body = json.dumps(payload).encode()
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                self.conn.request("POST", path, body, self.headers)
                response = self.conn.getresponse()
                data = response.read()
                break
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        if response.status != 201:
            raise SystemExit(f"POST {path}: {response.status} {data[:300]!r}")
        return json.loads(data)


def new_post(api, slug, n):
    return api.post(
        f"/v1/admin/blogs/{slug}/posts",
        {"title": f"Post {n} of {slug}", "body_markdown": BODY.format(n=n)},
    )


def latest_ids(path):
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except (FileNotFoundError, ValueError):
        return set(), None
    return {p["id"] for p in doc.get("posts", [])}, doc.get("total")


def scan(store, slug):
    """{path: (inode, mtime_ns, size)} of the blog's files and their header sidecars."""
    files = {}
    stack = [
        os.path.join(store, "blogs", slug),
        os.path.join(store, ".levee", "headers", "blogs", slug),
    ]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except FileNotFoundError:
            continue
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                stack.append(e.path)
            else:
                s = e.stat(follow_symlinks=False)
                files[e.path] = (s.st_ino, s.st_mtime_ns, s.st_size)
    return files


def changed(before, after):
    paths = [p for p, v in after.items() if before.get(p) != v]
    return len(paths), sum(after[p][2] for p in paths), paths


def percentile(values, q):
    """Nearest rank."""
    s = sorted(values)
    k = max(1, -(-len(s) * q // 100))
    return s[int(k) - 1]


class Blog:
    def __init__(self, slug, store):
        self.slug = slug
        self.latest = os.path.join(store, "blogs", slug, "latest.json")
        self.visible_ms = []
        self.response_ms = []
        self.pending = 0
        self.polls_after_response = 0
        self.scans = []  # (files, bytes)
        self.sample_paths = None
        self.start_total = None


def timed_save(api, blog, store, n, do_scan):
    before = scan(store, blog.slug) if do_scan else None
    t0 = time.perf_counter()
    answer = new_post(api, blog.slug, n)
    t1 = time.perf_counter()
    post_id = answer["id"]
    if answer.get("publish") != "done":
        blog.pending += 1
    deadline = t1 + VISIBLE_TIMEOUT
    polls = 0
    while True:
        ids, _ = latest_ids(blog.latest)
        if post_id in ids:
            t2 = time.perf_counter()
            break
        polls += 1
        if time.perf_counter() > deadline:
            raise SystemExit(f"{blog.slug}: post {post_id} not in latest.json after {VISIBLE_TIMEOUT}s")
        time.sleep(POLL_MS / 1000)
    blog.response_ms.append((t1 - t0) * 1000)
    blog.visible_ms.append((t2 - t0) * 1000)
    if polls:
        blog.polls_after_response += 1
    if do_scan:
        count, size, paths = changed(before, scan(store, blog.slug))
        blog.scans.append((count, size))
        if blog.sample_paths is None:
            blog.sample_paths = sorted(os.path.relpath(p, store) for p in paths)


def preload(url, token, slug, start, count, workers):
    local = threading.local()

    def one(n):
        if not hasattr(local, "api"):
            local.api = Api(url, token)
        new_post(local.api, slug, n)

    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(one, range(start, start + count)):
            pass


def main():
    url, token, store = sys.argv[1:4]
    api = Api(url, token)
    small, large = Blog("small", store), Blog("large", store)

    for blog, posts in ((small, SMALL), (large, LARGE)):
        api.post("/v1/admin/blogs", {"slug": blog.slug, "title": f"Blog {blog.slug}"})
        t = time.perf_counter()
        if posts <= 100:
            for n in range(1, posts + 1):
                new_post(api, blog.slug, n)
        else:
            preload(url, token, blog.slug, 1, posts, CONCURRENCY)
        took = time.perf_counter() - t
        _, total = latest_ids(blog.latest)
        blog.start_total = total
        print(
            f"preload {blog.slug}: {posts} posts in {took:.1f} s "
            f"({posts / took:.0f} saves/s, {CONCURRENCY if posts > 100 else 1} at a time); "
            f"latest.json total = {total}",
            flush=True,
        )
        if total != posts:
            raise SystemExit(f"{blog.slug}: expected {posts} posts, latest.json says {total}")

    t = time.perf_counter()
    for i in range(SAVES):
        do_scan = SCAN_EVERY > 0 and i % SCAN_EVERY == 0
        for blog, base in ((small, SMALL), (large, LARGE)):
            timed_save(api, blog, store, base + 1 + i, do_scan)
    took = time.perf_counter() - t
    print(f"measured: {SAVES} saves per blog, alternating, in {took:.1f} s", flush=True)

    print()
    print(
        f"{'blog':<6} {'posts':>11} {'saves':>5} | {'POST->201 ms':>17} | "
        f"{'save -> visible in latest.json, ms':>34} | {'rewritten per save':>22}"
    )
    print(
        f"{'':<6} {'(start)':>11} {'':>5} | {'p50':>8} {'p99':>8} | "
        f"{'p50':>10} {'p99':>10} {'max':>12} | {'files':>9} {'KB':>12}"
    )
    for blog in (small, large):
        files = sorted({c for c, _ in blog.scans})
        kb = [b / 1024 for _, b in blog.scans]
        files_text = "-".join(str(x) for x in (files[0], files[-1])) if files else "-"
        if files and files[0] == files[-1]:
            files_text = str(files[0])
        kb_text = f"{min(kb):.1f}-{max(kb):.1f}" if kb else "-"
        print(
            f"{blog.slug:<6} {blog.start_total:>11} {len(blog.visible_ms):>5} | "
            f"{percentile(blog.response_ms, 50):>8.1f} {percentile(blog.response_ms, 99):>8.1f} | "
            f"{percentile(blog.visible_ms, 50):>10.1f} {percentile(blog.visible_ms, 99):>10.1f} "
            f"{max(blog.visible_ms):>12.1f} | {files_text:>9} {kb_text:>12}"
        )
    print()
    for blog in (small, large):
        p50 = percentile(blog.visible_ms, 50)
        verdict = "PASS" if p50 <= GOAL_P50_MS else "FAIL"
        print(
            f"goal p50 <= {GOAL_P50_MS:.0f} ms, {blog.slug} ({blog.start_total} posts): "
            f"{p50:.1f} ms {verdict}; publish pending: {blog.pending}/{len(blog.visible_ms)}; "
            f"saves not yet visible at the first read after 201: {blog.polls_after_response}"
        )
    for blog in (small, large):
        if blog.sample_paths:
            print(f"files one {blog.slug} save rewrote: {', '.join(blog.sample_paths)}")
    print(f"(rewritten = files under blogs/<slug>/ and .levee/headers/blogs/<slug>/ whose inode, "
          f"mtime or size changed, sampled on every {SCAN_EVERY}th save: {len(small.scans)} per blog)")


if __name__ == "__main__":
    main()
