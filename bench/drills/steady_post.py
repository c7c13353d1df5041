#!/usr/bin/env python3
"""Steady POST load for the drills.

RATE requests/s over THREADS persistent connections, open loop: request k is due at
start + k/RATE whether or not earlier ones have answered, so a slow levee shows up as
latency, not as a lower rate. The id of every 202 is appended to --ids as it arrives.
Runs until SIGTERM or SIGINT, finishes the requests in hand, then prints one JSON object
counting the outcomes ({"202": n, "503": n, "ConnectionRefusedError": n, ...}).
"""

import argparse
import collections
import http.client
import json
import signal
import threading
import time
import urllib.parse

BODY = json.dumps(
    {
        "email": "ada.lovelace@example.org",
        "name": "Ada Lovelace",
        "zip": "37415",
        "message": "Count me in, and keep me posted on the hearing.",
    }
).encode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url", help="e.g. http://127.0.0.1:8080/v1/streams/signups")
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--ids", required=True, help="file that receives every accepted id")
    args = ap.parse_args()

    url = urllib.parse.urlsplit(args.url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    lock = threading.Lock()
    outcomes = collections.Counter()
    start = time.monotonic()

    with open(args.ids, "w") as ids:

        def record(outcome, accepted_id=None):
            with lock:
                outcomes[outcome] += 1
                if accepted_id is not None:
                    ids.write(accepted_id + "\n")

        def worker(first):
            conn = None
            k = first
            while not stop.is_set():
                delay = start + k / args.rate - time.monotonic()
                k += args.threads
                if delay > 0 and stop.wait(delay):
                    break
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
                    conn.request("POST", url.path, BODY, {"Content-Type": "application/json"})
                    response = conn.getresponse()
                    data = response.read()
                    if response.status == 202:
                        record("202", json.loads(data)["id"])
                    else:
                        record(str(response.status))
                except (OSError, http.client.HTTPException) as e:
                    # The request may or may not have been accepted: it is not counted as
                    # accepted, so a row for it shows up as an extra row, never as lost.
                    record(type(e).__name__)
                    if conn is not None:
                        conn.close()
                    conn = None

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.threads)]
        for t in threads:
            t.start()
        # Signals are delivered to the main thread: wait here, not in join().
        while not stop.wait(0.2):
            pass
        for t in threads:
            t.join()
    print(json.dumps(dict(outcomes)), flush=True)


if __name__ == "__main__":
    main()
